//! `POST /predict` and `GET /health`, whatever Lambda event flavour carried the request.
//!
//! Inputs: JSON `{"pixels":[784 numbers 0..=255]}` (row-major, white digit on black),
//! JSON `{"image":"<base64 PNG or JPEG>"}`, a raw `image/png` or `image/jpeg` body, or
//! `{"instances":[…up to 256 of the above…]}`. Every bad request gets a 4xx with
//! `{"error": "<what is wrong and what is expected>"}`; nothing a client sends can panic.

use super::HttpReply;
use crate::data::IMAGE_PIXELS;
use crate::model::Cnn;
use crate::predict::{image_to_pixels, predict, Prediction};
use base64::Engine;
use serde_json::{json, Value};

/// Lambda's own limit for a synchronous request payload.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;
pub const MAX_INSTANCES: usize = 256;

/// The loaded model and its identity (the SHA-256 of its weights file).
pub struct PredictService {
    model: Cnn,
    model_id: String,
}

/// A request already taken out of its Lambda event.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    /// The path without any API Gateway stage prefix.
    pub path: &'a str,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

impl PredictService {
    /// Also runs one prediction, so that the first request does not pay for preparing the
    /// inference path (part of being ready).
    pub fn new(model: Cnn, model_id: String) -> Self {
        if let Err(e) = model.probabilities(&[0.0; crate::data::IMAGE_PIXELS]) {
            tracing::warn!(error = %e, "warm-up prediction failed");
        }
        Self { model, model_id }
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    pub fn handle(&self, req: HttpRequest<'_>) -> HttpReply {
        let path = req.path.trim_end_matches('/');
        match (path, req.method) {
            ("/predict", "POST") => self.predict(req),
            ("/health", "GET" | "HEAD") => {
                HttpReply::ok(json!({"status": "ok", "model": self.model_id}))
            }
            ("/predict", _) => method_not_allowed(req.method, path, "POST"),
            ("/health", _) => method_not_allowed(req.method, path, "GET"),
            _ => HttpReply::error(
                404,
                format!(
                    "no route {} {}; the routes are POST /predict and GET /health",
                    req.method, req.path
                ),
            ),
        }
    }

    fn predict(&self, req: HttpRequest<'_>) -> HttpReply {
        if req.body.len() > MAX_BODY_BYTES {
            return HttpReply::error(
                413,
                format!(
                    "the body is {} bytes; the limit is {MAX_BODY_BYTES} (6 MB)",
                    req.body.len()
                ),
            );
        }
        let media = req.content_type.map(|c| {
            c.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
        let inputs = match media.as_deref() {
            Some("application/json") => parse_json(req.body),
            Some("image/png" | "image/jpeg" | "image/jpg") => decode_image(req.body, "the body").map(Inputs::One),
            other => Err(BadRequest(
                415,
                format!(
                    "unsupported content type {}; send application/json ({{\"pixels\":[…784 values…]}}, {{\"image\":\"<base64>\"}} or {{\"instances\":[…]}}), image/png or image/jpeg",
                    other.map_or("(none)".to_owned(), |c| format!("{c:?}"))
                ),
            )),
        };
        let inputs = match inputs {
            Ok(i) => i,
            Err(BadRequest(status, message)) => return HttpReply::error(status, message),
        };
        let (pixels, single) = match inputs {
            Inputs::One(p) => (p, true),
            Inputs::Many(ps) => (ps.concat(), false),
        };
        match predict(&self.model, &pixels) {
            Ok(mut preds) if single => {
                let Some(Prediction {
                    digit,
                    probabilities,
                }) = preds.pop()
                else {
                    return HttpReply::error(500, "the model returned no prediction");
                };
                HttpReply::ok(
                    json!({"digit": digit, "probabilities": probabilities, "model": self.model_id}),
                )
            }
            Ok(preds) => HttpReply::ok(json!({"predictions": preds, "model": self.model_id})),
            Err(e) => {
                tracing::error!(error = %e, "inference failed");
                HttpReply::error(500, format!("inference failed: {e}"))
            }
        }
    }
}

fn method_not_allowed(method: &str, path: &str, allow: &str) -> HttpReply {
    let mut r = HttpReply::error(
        405,
        format!("{method} is not allowed on {path}; use {allow}"),
    );
    r.headers.push(("allow", allow.to_owned()));
    r
}

struct BadRequest(u16, String);

enum Inputs {
    One(Vec<f32>),
    Many(Vec<Vec<f32>>),
}

fn bad(message: String) -> BadRequest {
    BadRequest(400, message)
}

fn parse_json(body: &[u8]) -> Result<Inputs, BadRequest> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body is not valid JSON ({e})")))?;
    let Value::Object(obj) = &value else {
        return Err(bad(
            "the body must be a JSON object with \"pixels\", \"image\" or \"instances\"".into(),
        ));
    };
    if let Some(instances) = obj.get("instances") {
        if obj.len() > 1 {
            return Err(bad("\"instances\" must be the only field".into()));
        }
        let Value::Array(items) = instances else {
            return Err(bad(
                "\"instances\" must be an array of {\"pixels\":…} or {\"image\":…} objects".into(),
            ));
        };
        if items.is_empty() {
            return Err(bad("\"instances\" is empty; send 1 to 256 items".into()));
        }
        if items.len() > MAX_INSTANCES {
            return Err(BadRequest(
                413,
                format!(
                    "{} instances; at most {MAX_INSTANCES} per request",
                    items.len()
                ),
            ));
        }
        return items
            .iter()
            .enumerate()
            .map(|(i, item)| one_input(item, &format!("instances[{i}]")))
            .collect::<Result<_, _>>()
            .map(Inputs::Many);
    }
    one_input(&value, "the body").map(Inputs::One)
}

fn one_input(value: &Value, at: &str) -> Result<Vec<f32>, BadRequest> {
    let Value::Object(obj) = value else {
        return Err(bad(format!(
            "{at} must be an object with \"pixels\" or \"image\""
        )));
    };
    if let Some(unknown) = obj.keys().find(|k| *k != "pixels" && *k != "image") {
        return Err(bad(format!(
            "{at} has an unknown field {unknown:?}; expected \"pixels\" or \"image\""
        )));
    }
    match (obj.get("pixels"), obj.get("image")) {
        (Some(p), None) => parse_pixels(p, at),
        (None, Some(Value::String(b64))) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| bad(format!("{at}: \"image\" is not valid base64 ({e})")))?;
            decode_image(&bytes, at)
        }
        (None, Some(_)) => Err(bad(format!(
            "{at}: \"image\" must be a base64 string of a PNG or JPEG"
        ))),
        (Some(_), Some(_)) => Err(bad(format!(
            "{at} has both \"pixels\" and \"image\"; send one"
        ))),
        (None, None) => Err(bad(format!(
            "{at} has neither \"pixels\" (784 values 0..=255) nor \"image\" (base64 PNG or JPEG)"
        ))),
    }
}

fn parse_pixels(value: &Value, at: &str) -> Result<Vec<f32>, BadRequest> {
    let Value::Array(items) = value else {
        return Err(bad(format!(
            "{at}: \"pixels\" must be an array of {IMAGE_PIXELS} numbers 0..=255"
        )));
    };
    if items.len() != IMAGE_PIXELS {
        return Err(bad(format!(
            "{at}: \"pixels\" has {} values; expected {IMAGE_PIXELS} (28×28, row-major, 0..=255, white digit on black)",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v.as_f64() {
            Some(x) if (0.0..=255.0).contains(&x) => Ok((x / 255.0) as f32),
            Some(x) => Err(bad(format!(
                "{at}: pixels[{i}] is {x}; values must be in 0..=255"
            ))),
            None => Err(bad(format!(
                "{at}: pixels[{i}] is {v}; values must be numbers 0..=255"
            ))),
        })
        .collect()
}

fn decode_image(bytes: &[u8], at: &str) -> Result<Vec<f32>, BadRequest> {
    use crate::predict::InputError;
    image_to_pixels(bytes).map_err(|e| match e {
        InputError::TooLarge { .. } => BadRequest(413, format!("{at}: {e}")),
        e => bad(format!("{at}: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> PredictService {
        PredictService::new(Cnn::init(1).unwrap(), "test-model".into())
    }

    fn post(s: &PredictService, ct: Option<&str>, body: &[u8]) -> HttpReply {
        s.handle(HttpRequest {
            method: "POST",
            path: "/predict",
            content_type: ct,
            body,
        })
    }

    fn err(r: &HttpReply) -> String {
        r.body["error"].as_str().unwrap_or_default().to_owned()
    }

    #[test]
    fn pixels_give_a_digit_and_ten_probabilities() {
        let s = service();
        let body = json!({"pixels": vec![0; 784]}).to_string();
        let r = post(&s, Some("application/json; charset=utf-8"), body.as_bytes());
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["probabilities"].as_array().unwrap().len(), 10);
        assert_eq!(r.body["model"], "test-model");
        assert!(r.body["digit"].as_u64().unwrap() < 10);
    }

    #[test]
    fn instances_give_a_prediction_each() {
        let s = service();
        let body = json!({"instances": [{"pixels": vec![0; 784]}, {"pixels": vec![255; 784]}]})
            .to_string();
        let r = post(&s, Some("application/json"), body.as_bytes());
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["predictions"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn routes_and_methods() {
        let s = service();
        let get = |p: &str| {
            s.handle(HttpRequest {
                method: "GET",
                path: p,
                content_type: None,
                body: b"",
            })
        };
        assert_eq!(
            get("/health").body,
            json!({"status": "ok", "model": "test-model"})
        );
        assert_eq!(get("/health/").status, 200);
        let r = get("/predict");
        assert_eq!(r.status, 405);
        assert_eq!(r.headers, vec![("allow", "POST".to_owned())]);
        assert_eq!(
            s.handle(HttpRequest {
                method: "DELETE",
                path: "/health",
                content_type: None,
                body: b""
            })
            .status,
            405
        );
        let r = get("/nope");
        assert_eq!(r.status, 404);
        assert!(err(&r).contains("POST /predict"));
    }

    #[test]
    fn every_bad_request_is_a_4xx_with_a_message() {
        let s = service();
        let many = json!({"instances": vec![json!({"pixels": vec![0; 784]}); 257]}).to_string();
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        let mut short = vec![0; 784];
        short.pop();
        let mut with_str: Vec<Value> = vec![json!(0); 784];
        with_str[5] = json!("x");
        let mut with_big: Vec<Value> = vec![json!(0); 784];
        with_big[700] = json!(256);
        let cases: Vec<(Option<&str>, Vec<u8>, u16, &str)> = vec![
            (
                Some("application/json"),
                b"{\"pixels\": [1, 2".to_vec(),
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
                "must be an array of 784",
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
                "must be a base64 string",
            ),
            (
                Some("application/json"),
                json!({"pixel": []}).to_string().into_bytes(),
                400,
                "unknown field \"pixel\"",
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
                "must be a JSON object",
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
                "must be an array",
            ),
            (
                Some("application/json"),
                json!({"instances": [1]}).to_string().into_bytes(),
                400,
                "instances[0] must be an object",
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
                Some("text/plain"),
                b"7".to_vec(),
                415,
                "unsupported content type \"text/plain\"",
            ),
            (None, b"{}".to_vec(), 415, "unsupported content type (none)"),
        ];
        for (ct, body, status, expect) in cases {
            let r = post(&s, ct, &body);
            assert_eq!(
                r.status,
                status,
                "{ct:?} {}: {}",
                String::from_utf8_lossy(&body[..body.len().min(60)]),
                r.body
            );
            assert!(
                err(&r).contains(expect),
                "expected {expect:?} in {:?}",
                err(&r)
            );
        }
    }
}
