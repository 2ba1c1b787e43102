//! `POST /predict`, `GET /health` and `GET /` (the digit page, [`super::page`]), whatever
//! Lambda event flavour carried the request. Every answer says how long the function took
//! (`Server-Timing: fn;dur=…`), which the page shows beside the round trip.
//!
//! Any model file ([`crate::net`]) answers: the seed's digits, or an imported model with its
//! own input size and labels. The answer is `{"label", "class", "probabilities", "model"}`,
//! with `"digit"` for a model whose labels are the ten digits.
//!
//! One concern per file: [`routing`] (which route answers, 404/405, CORS preflights, the page
//! and its ETag; the routes themselves are [`crate::routes`]' table), [`body`] (the request
//! body's grammar, read as a stream with every count bounded), [`budget`] (what one request may
//! cost, decided before any image is decoded), and here the service that turns decoded inputs
//! into answers. Every bad request gets a 4xx with `{"error": "<what is wrong and what is
//! expected>"}` that repeats at most [`super::ECHO_CHARS`] characters of any value; nothing a
//! client sends can panic.

mod body;
mod budget;
mod routing;

pub use budget::{
    MAX_BODY_BYTES, MAX_DECODE_TIME, MAX_INSTANCES, MAX_REQUEST_MACS, MAX_REQUEST_PIXELS,
};

use super::page::Page;
use super::HttpReply;
use crate::net::{input::image_to_input, Answer, Network, Preprocess};
use crate::predict::{image_size, image_to_pixels, InputError};
use crate::preprocess::to_model_input;
use body::{place, read_inputs, Expect, Item, RawInputs};
use budget::within_budget;
use serde_json::json;
use std::borrow::Cow;
use std::time::Instant;

/// The loaded model, its identity (the SHA-256 of its file) and its page.
pub struct PredictService {
    network: Network,
    model_id: String,
    page: Page,
    /// Images per request the model's work allows (at most [`MAX_INSTANCES`]).
    max_instances: usize,
}

/// A request already taken out of its Lambda event.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The path without any API Gateway stage prefix.
    pub path: &'a str,
    /// `Content-Type`.
    pub content_type: Option<&'a str>,
    /// `If-None-Match`: the page's ETag answers 304.
    pub if_none_match: Option<&'a str>,
    /// The body.
    pub body: &'a [u8],
}

impl PredictService {
    /// Also runs one prediction (the model's stored sample, or zeros), so that the first
    /// request does not pay for preparing the inference path; a model that cannot answer it,
    /// or answers something that is not a probability, is refused here, at init, where Lambda
    /// reports it and the release's smoke test sees it, rather than on every request.
    pub fn new(network: Network, model_id: String) -> Result<Self, crate::model::ModelError> {
        let spec = network.spec();
        let warm_up: Vec<f32> = match &spec.sample {
            Some(s) => s.pixels.iter().map(|&v| f32::from(v)).collect(),
            None => vec![0.0; spec.input_len()],
        };
        let answered = network.probabilities(&warm_up)?;
        if !answered.iter().flatten().all(|p| p.is_finite()) {
            return Err(crate::net::bad(format!(
                "the model answers {} for its warm-up input: its weights or scaling overflow",
                if answered.iter().flatten().any(|p| p.is_nan()) {
                    "NaN"
                } else {
                    "infinity"
                }
            )));
        }
        let page = Page::new(&model_id, network.spec());
        let input = &network.spec().input;
        let max_instances =
            budget::max_instances(network.plan().macs, (input.height * input.width) as u64);
        Ok(Self {
            network,
            model_id,
            page,
            max_instances,
        })
    }

    /// The SHA-256 of the model file.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The model.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Images one request may hold for this model.
    pub fn max_instances(&self) -> usize {
        self.max_instances
    }

    /// Answers `req` with at most [`MAX_DECODE_TIME`] of decoding.
    pub fn handle(&self, req: HttpRequest<'_>) -> HttpReply {
        self.handle_until(req, Instant::now() + MAX_DECODE_TIME)
    }

    /// Answers a request taken out of its Lambda event; a body the event could not deliver
    /// (bad base64) is a 400.
    pub fn handle_event(&self, http: &super::event::HttpEvent, deadline: Instant) -> HttpReply {
        match &http.body {
            Ok(body) => self.handle_until(
                HttpRequest {
                    method: &http.method,
                    path: &http.path,
                    content_type: http.content_type.as_deref(),
                    if_none_match: http.if_none_match.as_deref(),
                    body,
                },
                deadline,
            ),
            Err(message) => HttpReply::error(400, message.clone()),
        }
    }

    /// One PNG or JPEG, as `POST /predict` would take it alone: the same decoder limits and
    /// pixel budget, checked from the header before decoding. The error says what is wrong
    /// with the image (for a batch's result line).
    pub fn predict_image(&self, bytes: &[u8]) -> Result<Answer, String> {
        let pixels = image_size(bytes).map_err(|e| e.to_string())?.pixels();
        within_budget(pixels.max(self.input_pixels())).map_err(|BadRequest(_, message)| message)?;
        let input = self
            .model_input(Item::Image(Cow::Borrowed(bytes)), false)
            .map_err(|e| e.to_string())?;
        let mut answers = self
            .answers(&input)
            .map_err(|e| format!("inference failed: {e}"))?;
        answers
            .pop()
            .ok_or_else(|| "the model returned no prediction".to_owned())
    }

    /// Pixels of one model input: what any input costs at least, however small its picture
    /// (a 1×1 PNG still becomes a whole input).
    fn input_pixels(&self) -> u64 {
        let input = &self.network.spec().input;
        (input.height * input.width) as u64
    }

    /// Whether this model works in MNIST's [0, 1] values (the digit preprocessing's) rather
    /// than raw 0..=255.
    fn in_unit(&self) -> bool {
        self.network.spec().input.preprocess == Preprocess::Digit
    }

    /// One input as the model takes it ([`Self::in_unit`]'s units): the model's own
    /// preprocessing, or none (`raw`).
    fn model_input(&self, item: Item<'_>, raw: bool) -> Result<Vec<f32>, InputError> {
        let input = &self.network.spec().input;
        let unit = self.in_unit();
        match item {
            Item::Pixels(p) if unit && !raw => {
                let p = p.into_iter().map(|v| v / 255.0).collect();
                Ok(to_model_input(p, input.width, input.height)?)
            }
            Item::Pixels(p) if unit => Ok(p.into_iter().map(|v| v / 255.0).collect()),
            Item::Pixels(p) => Ok(p),
            Item::Image(bytes) if unit && !raw => image_to_pixels(&bytes),
            Item::Image(bytes) => {
                let as_is = crate::net::InputSpec {
                    preprocess: if raw {
                        Preprocess::None
                    } else {
                        input.preprocess
                    },
                    ..input.clone()
                };
                let values = image_to_input(&bytes, &as_is)?;
                Ok(if unit {
                    values.into_iter().map(|v| v / 255.0).collect()
                } else {
                    values
                })
            }
        }
    }

    /// The answers for inputs made by [`Self::model_input`], one after the other.
    fn answers(&self, values: &[f32]) -> Result<Vec<Answer>, crate::model::ModelError> {
        let probabilities = if self.in_unit() {
            self.network.probabilities_unit(values)?
        } else {
            self.network.probabilities(values)?
        };
        Ok(probabilities
            .into_iter()
            .map(|p| Answer::from_probabilities(self.network.spec(), p))
            .collect())
    }

    fn predict(&self, req: HttpRequest<'_>, deadline: Instant) -> HttpReply {
        let shape = Expect::of(self.network.spec());
        let raw = match read_inputs(&req, &shape) {
            Ok(raw) => raw,
            Err(BadRequest(status, message)) => return HttpReply::error(status, message),
        };
        if raw.items.len() > self.max_instances {
            return HttpReply::error(
                413,
                format!(
                    "{} instances; this model ({} multiply-adds and {} pixels per image) answers at most {} per request",
                    raw.items.len(),
                    self.network.plan().macs,
                    self.input_pixels(),
                    self.max_instances
                ),
            );
        }
        let single = raw.single;
        let values = match self.decode_all(raw, deadline) {
            Ok(v) => v,
            Err(BadRequest(status, message)) => return HttpReply::error(status, message),
        };
        match self.answers(&values) {
            Ok(mut answers) if single => {
                let Some(answer) = answers.pop() else {
                    return HttpReply::error(500, "the model returned no prediction");
                };
                let mut body = serde_json::to_value(answer).unwrap_or_default();
                body["model"] = json!(self.model_id);
                HttpReply::ok(body)
            }
            Ok(answers) => HttpReply::ok(json!({"predictions": answers, "model": self.model_id})),
            Err(e) => {
                tracing::error!(error = %e, "inference failed");
                HttpReply::error(500, format!("inference failed: {e}"))
            }
        }
    }

    /// Checks the whole request's budget from the images' headers, then makes each input, one
    /// after the other in one buffer.
    fn decode_all(&self, raw: RawInputs<'_>, deadline: Instant) -> Result<Vec<f32>, BadRequest> {
        let mut total = 0u64;
        for (i, item) in raw.items.iter().enumerate() {
            let decoded = match &item.item {
                Item::Pixels(_) => 0,
                Item::Image(bytes) => image_size(bytes)
                    .map_err(|e| input_error(&place(raw.single, i), e))?
                    .pixels(),
            };
            total += decoded.max(self.input_pixels());
        }
        within_budget(total)?;
        let len = self.network.spec().input_len();
        let mut out = Vec::with_capacity(raw.items.len() * len);
        for (i, item) in raw.items.into_iter().enumerate() {
            let at = place(raw.single, i);
            if Instant::now() >= deadline {
                return Err(BadRequest(
                    413,
                    format!(
                        "the request took too long to decode (stopped at {at}); send fewer or smaller images"
                    ),
                ));
            }
            let values = self
                .model_input(item.item, item.raw)
                .map_err(|e| input_error(&at, e))?;
            // Inputs are laid end to end: one of the wrong length would shift every answer
            // after it.
            if values.len() != len {
                return Err(bad(format!(
                    "{at} made {} values; the model takes {}",
                    values.len(),
                    Expect::of(self.network.spec()).hint
                )));
            }
            out.extend(values);
        }
        Ok(out)
    }
}

/// A refused request: its status (4xx) and what to tell the client.
struct BadRequest(u16, String);

fn bad(message: String) -> BadRequest {
    BadRequest(400, message)
}

fn input_error(at: &str, e: InputError) -> BadRequest {
    if e.is_size_limit() {
        BadRequest(413, format!("{at}: {e}"))
    } else {
        bad(format!("{at}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{IMAGE_PIXELS, IMAGE_SIDE};
    use crate::predict::test_images::png_header;
    use serde_json::Value;

    fn service() -> PredictService {
        PredictService::new(
            Network::seed(crate::model::Cnn::init(1).unwrap()).unwrap(),
            "test-model".into(),
        )
        .unwrap()
    }

    fn post(s: &PredictService, ct: Option<&str>, body: &[u8]) -> HttpReply {
        s.handle(HttpRequest {
            if_none_match: None,
            method: "POST",
            path: "/predict",
            content_type: ct,
            body,
        })
    }

    fn err(r: &HttpReply) -> String {
        r.body["error"].as_str().unwrap_or_default().to_owned()
    }

    /// A vertical bar in the middle of the frame, white on black: MNIST-like, not blank.
    fn bar() -> Vec<u8> {
        (0..IMAGE_PIXELS)
            .map(|i| {
                let (x, y) = (i % IMAGE_SIDE, i / IMAGE_SIDE);
                if (13..15).contains(&x) && (5..23).contains(&y) {
                    255
                } else {
                    0
                }
            })
            .collect()
    }

    #[test]
    fn pixels_give_a_digit_and_ten_probabilities() {
        let s = service();
        let body = json!({"pixels": bar()}).to_string();
        let r = post(&s, Some("application/json; charset=utf-8"), body.as_bytes());
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["probabilities"].as_array().unwrap().len(), 10);
        assert_eq!(r.body["model"], "test-model");
        assert!(r.body["digit"].as_u64().unwrap() < 10);
    }

    #[test]
    fn instances_give_a_prediction_each() {
        let s = service();
        let body = json!({"instances": [{"pixels": bar()}, {"pixels": bar()}]}).to_string();
        let r = post(&s, Some("application/json"), body.as_bytes());
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["predictions"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn routes_methods_and_preflight() {
        let s = service();
        let call = |m: &str, p: &str| {
            s.handle(HttpRequest {
                if_none_match: None,
                method: m,
                path: p,
                content_type: None,
                body: b"",
            })
        };
        assert_eq!(
            call("GET", "/health").body,
            json!({"status": "ok", "model": "test-model"})
        );
        assert_eq!(call("GET", "/health/").status, 200);
        let r = call("GET", "/predict");
        assert_eq!(r.status, 405);
        assert!(r.headers.contains(&("allow", "POST, OPTIONS".to_owned())));
        assert_eq!(call("DELETE", "/health").status, 405);
        let r = call("GET", "/nope");
        assert_eq!(r.status, 404);
        assert!(err(&r).contains("POST /predict"));
        let r = call("OPTIONS", "/predict");
        assert_eq!(r.status, 204);
        assert!(r
            .headers
            .contains(&("access-control-allow-methods", "POST, OPTIONS".to_owned())));
        // Every route answers a preflight, the page's too, with its own methods.
        let r = call("OPTIONS", "/index.html");
        assert_eq!(r.status, 204);
        assert!(r
            .headers
            .contains(&("allow", "GET, HEAD, OPTIONS".to_owned())));
        // A 405 names the path as asked.
        let r = call("PUT", "/index.html");
        assert_eq!(r.status, 405);
        assert!(
            err(&r).contains("not allowed on /index.html"),
            "{}",
            err(&r)
        );
    }

    fn header<'a>(r: &'a HttpReply, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_page_is_served_at_the_root_with_its_etag_and_csp_and_304_when_unchanged() {
        let s = service();
        let call = |m: &str, p: &str, tag: Option<&str>| {
            s.handle(HttpRequest {
                if_none_match: tag,
                method: m,
                path: p,
                content_type: None,
                body: b"",
            })
        };
        let r = call("GET", "/", None);
        assert_eq!(r.status, 200);
        assert_eq!(r.body.content_type(), "text/html; charset=utf-8");
        assert!(r.body.to_string().starts_with("<!doctype html>"));
        assert!(
            header(&r, "content-security-policy").is_some_and(|c| c.contains("default-src 'none'"))
        );
        let etag = header(&r, "etag").unwrap().to_owned();
        let again = call("GET", "/", Some(&etag));
        assert_eq!((again.status, again.body.to_string()), (304, String::new()));
        assert_eq!(header(&again, "etag"), Some(etag.as_str()));
        assert_eq!(call("GET", "/", Some("\"other\"")).status, 200);
        assert_eq!(call("GET", "/index.html", None).status, 200);
        let head = call("HEAD", "/", None);
        assert_eq!((head.status, head.body.to_string()), (200, String::new()));
        let post = call("POST", "/", None);
        assert_eq!(post.status, 405);
        assert!(post.body.to_string().contains("GET, HEAD"));
    }

    #[test]
    fn every_answer_says_how_long_the_function_took() {
        let s = service();
        let body = json!({"pixels": bar()}).to_string();
        for r in [
            post(&s, Some("application/json"), body.as_bytes()),
            post(&s, Some("text/plain"), b"x"),
        ] {
            let timing = header(&r, "server-timing").unwrap();
            let ms: f64 = timing
                .strip_prefix("fn;dur=")
                .and_then(|t| t.split(';').next())
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("{timing}"));
            assert!((0.0..5000.0).contains(&ms), "{timing}");
        }
    }

    #[test]
    fn every_bad_request_is_a_4xx_with_a_message() {
        let s = service();
        let many = json!({"instances": vec![json!({"pixels": bar()}); 257]}).to_string();
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        let mut short = bar();
        short.pop();
        let mut with_str: Vec<Value> = bar().into_iter().map(|p| json!(p)).collect();
        with_str[5] = json!("x");
        let mut with_big: Vec<Value> = bar().into_iter().map(|p| json!(p)).collect();
        with_big[700] = json!(256);
        let mut long = bar();
        long.extend(vec![0; 100_000]);
        let cases: Vec<(Option<&str>, Vec<u8>, u16, &str)> = vec![
            (
                Some("application/json"),
                b"{\"pixels\": [1, 2".to_vec(),
                400,
                "not valid JSON",
            ),
            (
                Some("application/json"),
                format!("{} x", json!({"pixels": bar()})).into_bytes(),
                400,
                "not valid JSON",
            ),
            (
                Some("application/json"),
                json!({"pixels": short}).to_string().into_bytes(),
                400,
                "has 783 values; expected 784",
            ),
            (
                Some("application/json"),
                json!({"pixels": long}).to_string().into_bytes(),
                400,
                "has 100784 values; expected 784",
            ),
            (
                Some("application/json"),
                json!({"pixels": with_str}).to_string().into_bytes(),
                400,
                "pixels[5] is \"x\"",
            ),
            (
                Some("application/json"),
                json!({"pixels": with_big}).to_string().into_bytes(),
                400,
                "pixels[700] is 256",
            ),
            (
                Some("application/json"),
                json!({"pixels": -1}).to_string().into_bytes(),
                400,
                "to be an array of 784",
            ),
            (
                Some("application/json"),
                json!({"pixels": vec![0; 784]}).to_string().into_bytes(),
                400,
                "blank",
            ),
            (
                Some("application/json"),
                json!({"pixels": vec![255; 784]}).to_string().into_bytes(),
                400,
                "blank",
            ),
            (
                Some("application/json"),
                json!({"image": "***"}).to_string().into_bytes(),
                400,
                "not valid base64",
            ),
            (
                Some("application/json"),
                json!({"image": "aGVsbG8="}).to_string().into_bytes(),
                400,
                "not a PNG or JPEG",
            ),
            (
                Some("application/json"),
                json!({"image": 5}).to_string().into_bytes(),
                400,
                "to be a base64 string",
            ),
            (
                Some("application/json"),
                json!({"pixel": []}).to_string().into_bytes(),
                400,
                "unknown field \"pixel\"",
            ),
            (
                Some("application/json"),
                b"{\"image\":\"\",\"image\":\"\"}".to_vec(),
                400,
                "twice",
            ),
            (
                Some("application/json"),
                json!({}).to_string().into_bytes(),
                400,
                "neither \"pixels\"",
            ),
            (
                Some("application/json"),
                json!([1]).to_string().into_bytes(),
                400,
                "to be a JSON object",
            ),
            (
                Some("application/json"),
                json!({"instances": []}).to_string().into_bytes(),
                400,
                "is empty",
            ),
            (
                Some("application/json"),
                json!({"instances": {}}).to_string().into_bytes(),
                400,
                "\"instances\" to be an array",
            ),
            (
                Some("application/json"),
                json!({"instances": [1]}).to_string().into_bytes(),
                400,
                "instances[0] to be an object",
            ),
            (
                Some("application/json"),
                json!({"instances": [{"instances": []}]})
                    .to_string()
                    .into_bytes(),
                400,
                "must be the only field",
            ),
            (
                Some("application/json"),
                json!({"instances": [{"pixels": bar()}], "image": ""})
                    .to_string()
                    .into_bytes(),
                400,
                "must be the only field",
            ),
            (
                Some("application/json"),
                many.into_bytes(),
                413,
                "257 instances; at most 256",
            ),
            (Some("application/json"), big, 413, "the limit is 6291456"),
            (
                Some("image/png"),
                b"\x89PNG\r\n\x1a\n garbage".to_vec(),
                400,
                "not a PNG or JPEG",
            ),
            (
                Some("image/png"),
                png_header(4097, 10),
                413,
                "the image is 4097×10; the largest accepted is 4096×4096",
            ),
            (
                Some("image/png"),
                png_header(4096, 4096),
                413,
                "16777216 pixels in all; at most 4194304",
            ),
            (
                Some("text/plain"),
                b"7".to_vec(),
                415,
                "unsupported content type \"text/plain\"",
            ),
            (None, b"{}".to_vec(), 415, "unsupported content type (none)"),
        ];
        for (ct, body, status, expect) in cases {
            let r = post(&s, ct, &body);
            let what = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
            assert_eq!(r.status, status, "{ct:?} {what}: {}", r.body);
            if status != 200 {
                assert!(
                    err(&r).contains(expect),
                    "{what}: expected {expect:?} in {:?}",
                    err(&r)
                );
                assert!(r.body.to_string().len() < 1024, "{}", r.body);
            }
        }
    }

    #[test]
    fn the_pixel_budget_counts_every_instance_before_decoding_any() {
        let s = service();
        // 256 headers that each declare 512×512: 67 Mpx declared, 8 KB sent.
        let b64 = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            png_header(512, 512),
        );
        let body = json!({"instances": vec![json!({"image": b64}); 256]}).to_string();
        let r = post(&s, Some("application/json"), body.as_bytes());
        assert_eq!(r.status, 413, "{}", r.body);
        assert!(err(&r).contains("67108864 pixels in all"), "{}", err(&r));
        // A good first instance does not get decoded either: the budget comes first.
        let mut items = vec![json!({"pixels": bar()})];
        items.extend(vec![json!({"image": b64}); 20]);
        let r = post(
            &s,
            Some("application/json"),
            json!({"instances": items}).to_string().as_bytes(),
        );
        assert_eq!(r.status, 413, "{}", r.body);
    }

    /// A model of a `side`×`side` grey input (flatten, then two classes).
    fn service_of_side(side: usize) -> PredictService {
        use candle_core::{DType, Device, Tensor};
        let mut spec = crate::net::spec::tests_support::two_class_spec();
        (spec.input.height, spec.input.width) = (side, side);
        let zeros = |shape: &[usize]| Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap();
        let tensors = std::collections::HashMap::from([
            ("d.weight".to_owned(), zeros(&[2, side * side])),
            ("d.bias".to_owned(), zeros(&[2])),
        ]);
        PredictService::new(Network::new(spec, &tensors).unwrap(), "wide".into()).unwrap()
    }

    #[test]
    fn a_model_that_overflows_on_its_warm_up_is_refused_at_init() {
        use candle_core::{Device, Tensor};
        let mut spec = crate::net::spec::tests_support::two_class_spec();
        spec.input.offset = vec![1e30];
        let tensors = std::collections::HashMap::from([
            (
                "d.weight".to_owned(),
                Tensor::full(1e30f32, (2, 16), &Device::Cpu).unwrap(),
            ),
            (
                "d.bias".to_owned(),
                Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap(),
            ),
        ]);
        let e = PredictService::new(Network::new(spec, &tensors).unwrap(), "x".into())
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("warm-up input"), "{e}");
    }

    #[test]
    fn every_image_is_charged_at_least_the_model_input_it_becomes() {
        // 512×512: the budget holds 16 inputs, whatever their pictures' size.
        let s = service_of_side(512);
        assert_eq!(s.max_instances(), 16);
        let image = |w, h| {
            json!({"image": base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                png_header(w, h),
            )})
        };
        let r = post(
            &s,
            Some("application/json"),
            json!({"instances": vec![image(1, 1); 17]})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(r.status, 413, "{}", r.body);
        assert!(err(&r).contains("at most 16 per request"), "{}", err(&r));

        // 15 tiny pictures and a 1024×1024 one: 16 inputs, and 15 × 512² + 1024² pixels.
        let mut items = vec![image(1, 1); 15];
        items.push(image(1024, 1024));
        let r = post(
            &s,
            Some("application/json"),
            json!({"instances": items}).to_string().as_bytes(),
        );
        assert_eq!(r.status, 413, "{}", r.body);
        assert!(err(&r).contains("4980736 pixels in all"), "{}", err(&r));
    }

    #[test]
    fn a_request_past_its_deadline_is_refused_between_instances() {
        let s = service();
        let body = json!({"instances": [{"pixels": bar()}, {"pixels": bar()}]}).to_string();
        let r = s.handle_until(
            HttpRequest {
                if_none_match: None,
                method: "POST",
                path: "/predict",
                content_type: Some("application/json"),
                body: body.as_bytes(),
            },
            Instant::now(),
        );
        assert_eq!(r.status, 413, "{}", r.body);
        assert!(err(&r).contains("took too long"), "{}", err(&r));
    }

    #[test]
    fn error_messages_repeat_at_most_a_hundred_characters_of_any_value() {
        let s = service();
        let long = "A".repeat(1 << 20);
        let mut with_str: Vec<Value> = bar().into_iter().map(|p| json!(p)).collect();
        with_str[3] = json!(long);
        let bodies = [
            json!({ long.clone(): 1 }),
            json!({ "pixels": with_str }),
            json!({ "instances": [{ long.clone(): 1 }] }),
            json!(long.clone()),
            json!({ "instances": long.clone() }),
            json!({ "pixels": long.clone() }),
            json!({ "instances": [long.clone()] }),
            json!({ "image": format!("{long}!") }),
        ];
        for body in bodies {
            let r = post(&s, Some("application/json"), body.to_string().as_bytes());
            assert_eq!(r.status, 400, "{}", r.body);
            let m = err(&r);
            assert!(!m.contains(&"A".repeat(101)), "{}", &m[..m.len().min(300)]);
        }
        let r = post(&s, Some(&long), b"{}");
        assert_eq!(r.status, 415);
        assert!(!err(&r).contains(&"A".repeat(101)));
        let r = s.handle(HttpRequest {
            if_none_match: None,
            method: &long,
            path: &long,
            content_type: None,
            body: b"",
        });
        assert_eq!(r.status, 404);
        assert!(!err(&r).contains(&"A".repeat(101)));
    }
}
