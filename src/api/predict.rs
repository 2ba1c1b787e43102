//! `POST /predict`, `GET /health` and `GET /` (the digit page, [`super::page`]), whatever
//! Lambda event flavour carried the request. Every answer says how long the function took
//! (`Server-Timing: fn;dur=…`), which the page shows beside the round trip.
//!
//! Inputs: JSON `{"pixels":[784 numbers 0..=255]}` (row-major, white digit on black),
//! JSON `{"image":"<base64 PNG or JPEG>"}` (a `data:image/png;base64,` URL too), a raw
//! `image/png` or `image/jpeg` body, or `{"instances":[…up to 256 of the above…]}`.
//!
//! Every request's cost is bounded before the work starts: the body's size, the number of
//! instances and of pixels per instance are counted while the JSON is read (nothing larger is
//! kept), and every image's header is read, and the pixels of all of them summed against
//! [`MAX_REQUEST_PIXELS`], before any image is decoded. Every bad request gets a 4xx with
//! `{"error": "<what is wrong and what is expected>"}` that repeats at most
//! [`super::ECHO_CHARS`] characters of any value; nothing a client sends can panic.

use super::page::Page;
use super::{clip, Body as ReplyBody, HttpReply};
use crate::data::{IMAGE_PIXELS, IMAGE_SIDE};
use crate::model::Cnn;
use crate::predict::{
    image_size, image_to_pixels, predict, InputError, Prediction, MAX_IMAGE_SIDE,
};
use crate::preprocess::to_model_input;
use crate::routes::{self, Action, Route};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Unexpected, Visitor};
use serde_json::json;
use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, Instant};

/// Lambda's own limit for a synchronous request payload.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;
/// Images per request (`instances`).
pub const MAX_INSTANCES: usize = 256;
/// Pixels decoded per request, all images together, as their headers declare them: one
/// 2048×2048 image, or 256 of 128×128. Decoding and preprocessing this many takes ~0.2 s on
/// one core (docs/cli-and-functions.md, Limits).
pub const MAX_REQUEST_PIXELS: u64 = 2048 * 2048;
/// A request that is still decoding after this long is refused, whatever the invocation's
/// deadline; the pixel budget keeps real requests far below it.
pub const MAX_DECODE_TIME: Duration = Duration::from_secs(5);

/// The loaded model and its identity (the SHA-256 of its weights file).
pub struct PredictService {
    model: Cnn,
    model_id: String,
    page: Page,
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
    /// Also runs one prediction, so that the first request does not pay for preparing the
    /// inference path (part of being ready).
    pub fn new(model: Cnn, model_id: String) -> Self {
        if let Err(e) = model.probabilities(&[0.0; crate::data::IMAGE_PIXELS]) {
            tracing::warn!(error = %e, "warm-up prediction failed");
        }
        let page = Page::new(&model_id);
        Self {
            model,
            model_id,
            page,
        }
    }

    /// The SHA-256 of the weights file.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Answers `req` with at most [`MAX_DECODE_TIME`] of decoding.
    pub fn handle(&self, req: HttpRequest<'_>) -> HttpReply {
        self.handle_until(req, Instant::now() + MAX_DECODE_TIME)
    }

    /// Answers `req`, refusing it (413) if its images are still being decoded at `deadline`
    /// (the invocation's deadline less what answering takes).
    pub fn handle_until(&self, req: HttpRequest<'_>, deadline: Instant) -> HttpReply {
        let start = Instant::now();
        let deadline = deadline.min(start + MAX_DECODE_TIME);
        let mut reply = match routes::at(req.path) {
            None => HttpReply::error(
                404,
                format!(
                    "no route {} {}; the routes are {}",
                    clip(req.method),
                    clip(req.path),
                    routes::summary()
                ),
            ),
            Some(route) if req.method == "OPTIONS" => preflight(route),
            Some(route) if route.answers(req.method) => match route.action {
                Action::Predict => self.predict(req, deadline),
                Action::Health => HttpReply::ok(json!({"status": "ok", "model": self.model_id})),
                Action::Page => self.page(req),
            },
            Some(route) => method_not_allowed(req.method, &clip(req.path), &route.allow()),
        };
        if req.method == "HEAD" {
            reply.body = ReplyBody::Empty;
        }
        let ms = start.elapsed().as_secs_f64() * 1e3;
        reply
            .headers
            .push(("server-timing", format!("fn;dur={ms:.1};desc=\"function\"")));
        reply
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

    /// The page, or 304 when the client holds this very page.
    fn page(&self, req: HttpRequest<'_>) -> HttpReply {
        let headers = self.page.headers();
        if req.if_none_match.is_some_and(|tag| self.page.matches(tag)) {
            return HttpReply {
                status: 304,
                body: ReplyBody::Empty,
                headers,
            };
        }
        HttpReply {
            status: 200,
            body: ReplyBody::Text {
                content_type: "text/html; charset=utf-8",
                text: self.page.html.clone(),
            },
            headers,
        }
    }

    /// One PNG or JPEG, as `POST /predict` would take it alone: the same decoder limits and
    /// pixel budget, checked from the header before decoding. The error says what is wrong
    /// with the image (for a batch's result line).
    pub fn predict_image(&self, bytes: &[u8]) -> Result<Prediction, String> {
        let pixels = image_size(bytes).map_err(|e| e.to_string())?.pixels();
        within_budget(pixels).map_err(|BadRequest(_, message)| message)?;
        let input = image_to_pixels(bytes).map_err(|e| e.to_string())?;
        let mut preds =
            predict(&self.model, &input).map_err(|e| format!("inference failed: {e}"))?;
        preds
            .pop()
            .ok_or_else(|| "the model returned no prediction".to_owned())
    }

    fn predict(&self, req: HttpRequest<'_>, deadline: Instant) -> HttpReply {
        let inputs = match read_inputs(&req).and_then(|i| decode_all(i, deadline)) {
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
        format!("{} is not allowed on {path}; use {allow}", clip(method)),
    );
    r.headers.push(("allow", allow.to_owned()));
    r
}

/// A CORS preflight answered by the function itself: behind a Function URL or an ALB nothing
/// else answers it.
fn preflight(route: &Route) -> HttpReply {
    let methods = route.allow();
    HttpReply {
        status: 204,
        body: ReplyBody::Empty,
        headers: vec![
            ("allow", methods.clone()),
            ("access-control-allow-origin", "*".to_owned()),
            ("access-control-allow-methods", methods),
            ("access-control-allow-headers", "content-type".to_owned()),
            ("access-control-max-age", "86400".to_owned()),
        ],
    }
}

struct BadRequest(u16, String);

fn bad(message: String) -> BadRequest {
    BadRequest(400, message)
}

enum Inputs {
    One(Vec<f32>),
    Many(Vec<Vec<f32>>),
}

/// One input as read from the request, before any image is decoded.
enum RawInput<'a> {
    /// The 784 values, in [0, 1].
    Pixels(Vec<f32>),
    /// Encoded PNG or JPEG bytes.
    Image(Cow<'a, [u8]>),
}

struct RawInputs<'a> {
    items: Vec<RawInput<'a>>,
    single: bool,
}

fn read_inputs<'a>(req: &HttpRequest<'a>) -> Result<RawInputs<'a>, BadRequest> {
    if req.body.len() > MAX_BODY_BYTES {
        return Err(BadRequest(
            413,
            format!(
                "the body is {} bytes; the limit is {MAX_BODY_BYTES} (6 MB)",
                req.body.len()
            ),
        ));
    }
    let media = req.content_type.map(|c| {
        c.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    match media.as_deref() {
        Some("application/json") => parse_json(req.body),
        Some("image/png" | "image/jpeg" | "image/jpg") => Ok(RawInputs {
            items: vec![RawInput::Image(Cow::Borrowed(req.body))],
            single: true,
        }),
        other => Err(BadRequest(
            415,
            format!(
                "unsupported content type {}; send application/json ({{\"pixels\":[…784 values…]}}, {{\"image\":\"<base64>\"}} or {{\"instances\":[…]}}), image/png or image/jpeg",
                other.map_or("(none)".to_owned(), |c| format!("{:?}", clip(c)))
            ),
        )),
    }
}

/// Where input `i` of `n` is, for messages.
fn place(single: bool, i: usize) -> String {
    if single {
        "the body".to_owned()
    } else {
        format!("instances[{i}]")
    }
}

/// Checks the whole request's budget from the images' headers, then decodes each.
fn decode_all(raw: RawInputs<'_>, deadline: Instant) -> Result<Inputs, BadRequest> {
    let mut total = 0u64;
    for (i, item) in raw.items.iter().enumerate() {
        total += match item {
            RawInput::Pixels(_) => IMAGE_PIXELS as u64,
            RawInput::Image(bytes) => image_size(bytes)
                .map_err(|e| input_error(&place(raw.single, i), e))?
                .pixels(),
        };
    }
    within_budget(total)?;
    let mut out = Vec::with_capacity(raw.items.len());
    for (i, item) in raw.items.into_iter().enumerate() {
        if Instant::now() >= deadline {
            return Err(BadRequest(
                413,
                format!(
                    "the request took too long to decode (stopped at {}); send fewer or smaller images",
                    place(raw.single, i)
                ),
            ));
        }
        let at = place(raw.single, i);
        let pixels = match item {
            RawInput::Pixels(p) => {
                to_model_input(p, IMAGE_SIDE, IMAGE_SIDE).map_err(|e| input_error(&at, e.into()))?
            }
            RawInput::Image(bytes) => image_to_pixels(&bytes).map_err(|e| input_error(&at, e))?,
        };
        out.push(pixels);
    }
    Ok(if raw.single {
        Inputs::One(out.pop().unwrap_or_default())
    } else {
        Inputs::Many(out)
    })
}

/// A request's (or a batch item's) pixels against [`MAX_REQUEST_PIXELS`], from the images'
/// headers, before any is decoded.
fn within_budget(total: u64) -> Result<(), BadRequest> {
    if total > MAX_REQUEST_PIXELS {
        return Err(BadRequest(
            413,
            format!(
                "the images hold {total} pixels in all; at most {MAX_REQUEST_PIXELS} (one 2048×2048 image, or {MAX_INSTANCES} of 128×128) per request, each at most {MAX_IMAGE_SIDE} on a side: send smaller images or fewer per request"
            ),
        ));
    }
    Ok(())
}

fn input_error(at: &str, e: InputError) -> BadRequest {
    if e.is_size_limit() {
        BadRequest(413, format!("{at}: {e}"))
    } else {
        bad(format!("{at}: {e}"))
    }
}

/// Reads the JSON body without building a tree of it: counts are checked as the values
/// stream past, so 6 MB of JSON costs what its 784-value arrays and image strings cost.
fn parse_json(body: &[u8]) -> Result<RawInputs<'static>, BadRequest> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = de::Deserializer::deserialize_any(&mut de, BodyVisitor)
        .and_then(|b| de.end().map(|()| b))
        .map_err(|e| {
            if e.is_data() {
                bad(e.to_string())
            } else {
                bad(format!("the body is not valid JSON ({e})"))
            }
        })?;
    match parsed {
        Body::One(item) => Ok(RawInputs {
            items: vec![item],
            single: true,
        }),
        Body::Many { count, .. } if count > MAX_INSTANCES => Err(BadRequest(
            413,
            format!("{count} instances; at most {MAX_INSTANCES} per request"),
        )),
        Body::Many { count: 0, .. } => Err(bad(format!(
            "\"instances\" is empty; send 1 to {MAX_INSTANCES} items"
        ))),
        Body::Many { items, .. } => Ok(RawInputs {
            items,
            single: false,
        }),
    }
}

enum Body {
    One(RawInput<'static>),
    Many {
        items: Vec<RawInput<'static>>,
        /// Every item, also those past [`MAX_INSTANCES`] (skipped, not kept).
        count: usize,
    },
}

enum Key {
    Pixels,
    Image,
    Instances,
    Other(String),
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "pixels" => Key::Pixels,
                    "image" => Key::Image,
                    "instances" => Key::Instances,
                    other => Key::Other(clip(other)),
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The fields of one input, from the top level or an item of `instances`.
#[derive(Default)]
struct Fields {
    pixels: Option<Vec<f32>>,
    image: Option<Vec<u8>>,
}

impl Fields {
    fn read<'de, A: MapAccess<'de>>(
        &mut self,
        key: Key,
        map: &mut A,
        at: &str,
    ) -> Result<(), A::Error> {
        match key {
            Key::Pixels if self.pixels.is_some() => {
                Err(de::Error::custom(format!("{at} has \"pixels\" twice")))
            }
            Key::Image if self.image.is_some() => {
                Err(de::Error::custom(format!("{at} has \"image\" twice")))
            }
            Key::Pixels => {
                self.pixels = Some(map.next_value_seed(PixelsSeed { at })?);
                Ok(())
            }
            Key::Image => {
                self.image = Some(map.next_value_seed(ImageSeed { at })?);
                Ok(())
            }
            Key::Instances => Err(de::Error::custom(format!(
                "{at}: \"instances\" must be the only field, at the top level"
            ))),
            Key::Other(name) => Err(de::Error::custom(format!(
                "{at} has an unknown field {name:?}; expected \"pixels\" or \"image\""
            ))),
        }
    }

    fn finish<E: de::Error>(self, at: &str) -> Result<RawInput<'static>, E> {
        match (self.pixels, self.image) {
            (Some(p), None) => Ok(RawInput::Pixels(p)),
            (None, Some(i)) => Ok(RawInput::Image(Cow::Owned(i))),
            (Some(_), Some(_)) => Err(E::custom(format!(
                "{at} has both \"pixels\" and \"image\"; send one"
            ))),
            (None, None) => Err(E::custom(format!(
                "{at} has neither \"pixels\" ({IMAGE_PIXELS} values 0..=255) nor \"image\" (base64 PNG or JPEG)"
            ))),
        }
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Body;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the body to be a JSON object with \"pixels\", \"image\" or \"instances\"")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Body, E> {
        Err(E::invalid_type(Unexpected::Str(&clip(v)), &self))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
        let at = "the body";
        let mut fields = Fields::default();
        let mut instances = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Instances if instances.is_some() => {
                    return Err(de::Error::custom("\"instances\" appears twice"))
                }
                Key::Instances => instances = Some(map.next_value_seed(InstancesSeed)?),
                key => fields.read(key, &mut map, at)?,
            }
            if instances.is_some() && (fields.pixels.is_some() || fields.image.is_some()) {
                return Err(de::Error::custom("\"instances\" must be the only field"));
            }
        }
        match instances {
            Some((items, count)) => Ok(Body::Many { items, count }),
            None => fields.finish(at).map(Body::One),
        }
    }
}

struct InstancesSeed;

impl<'de> DeserializeSeed<'de> for InstancesSeed {
    type Value = (Vec<RawInput<'static>>, usize);
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for InstancesSeed {
    type Value = (Vec<RawInput<'static>>, usize);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("\"instances\" to be an array of {\"pixels\":…} or {\"image\":…} objects")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Err(E::invalid_type(Unexpected::Str(&clip(v)), &self))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        let mut count = 0;
        loop {
            if count < MAX_INSTANCES {
                let at = format!("instances[{count}]");
                match seq.next_element_seed(InstanceSeed { at: &at })? {
                    Some(item) => items.push(item),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            count += 1;
        }
        Ok((items, count))
    }
}

struct InstanceSeed<'s> {
    at: &'s str,
}

impl<'de> DeserializeSeed<'de> for InstanceSeed<'_> {
    type Value = RawInput<'static>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for InstanceSeed<'_> {
    type Value = RawInput<'static>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{} to be an object with \"pixels\" or \"image\"",
            self.at
        )
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Err(E::invalid_type(Unexpected::Str(&clip(v)), &self))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<Key>()? {
            fields.read(key, &mut map, self.at)?;
        }
        fields.finish(self.at)
    }
}

struct PixelsSeed<'s> {
    at: &'s str,
}

impl<'de> DeserializeSeed<'de> for PixelsSeed<'_> {
    type Value = Vec<f32>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PixelsSeed<'_> {
    type Value = Vec<f32>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}: \"pixels\" to be an array of {IMAGE_PIXELS} numbers 0..=255",
            self.at
        )
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Err(E::invalid_type(Unexpected::Str(&clip(v)), &self))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut values = Vec::with_capacity(IMAGE_PIXELS);
        let mut count = 0usize;
        loop {
            if count < IMAGE_PIXELS {
                match seq.next_element_seed(PixelSeed {
                    at: self.at,
                    index: count,
                })? {
                    Some(v) => values.push(v),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            count += 1;
        }
        if count != IMAGE_PIXELS {
            return Err(de::Error::custom(format!(
                "{}: \"pixels\" has {count} values; expected {IMAGE_PIXELS} (28×28, row-major, 0..=255, white digit on black)",
                self.at
            )));
        }
        Ok(values)
    }
}

struct PixelSeed<'s> {
    at: &'s str,
    index: usize,
}

impl<'de> DeserializeSeed<'de> for PixelSeed<'_> {
    type Value = f32;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<f32, D::Error> {
        d.deserialize_any(self)
    }
}

impl PixelSeed<'_> {
    fn value<E: de::Error>(&self, x: f64) -> Result<f32, E> {
        if (0.0..=255.0).contains(&x) {
            Ok((x / 255.0) as f32)
        } else {
            Err(E::custom(format!(
                "{}: pixels[{}] is {x}; values must be in 0..=255",
                self.at, self.index
            )))
        }
    }
}

impl<'de> Visitor<'de> for PixelSeed<'_> {
    type Value = f32;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}: pixels[{}] to be a number 0..=255",
            self.at, self.index
        )
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f32, E> {
        self.value(v as f64)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f32, E> {
        self.value(v as f64)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f32, E> {
        self.value(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f32, E> {
        Err(E::custom(format!(
            "{}: pixels[{}] is {:?}; values must be numbers 0..=255",
            self.at,
            self.index,
            clip(v)
        )))
    }
}

struct ImageSeed<'s> {
    at: &'s str,
}

impl<'de> DeserializeSeed<'de> for ImageSeed<'_> {
    type Value = Vec<u8>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for ImageSeed<'_> {
    type Value = Vec<u8>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}: \"image\" to be a base64 string of a PNG or JPEG",
            self.at
        )
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        // What a browser's canvas.toDataURL() gives: `data:image/png;base64,<base64>`.
        let b64 = match v.trim().strip_prefix("data:") {
            Some(url) => url.split_once(',').map_or(url, |(_, data)| data),
            None => v.trim(),
        };
        super::event::decode_base64(b64)
            .map_err(|e| E::custom(format!("{}: \"image\" is not valid base64 ({e})", self.at)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::Value;

    fn service() -> PredictService {
        PredictService::new(Cnn::init(1).unwrap(), "test-model".into())
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

    /// The bytes of a PNG that declares `width`×`height` and holds no pixel data: its header
    /// alone must be enough to refuse it.
    pub(crate) fn png_header(width: u32, height: u32) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(width.to_be_bytes());
        ihdr.extend(height.to_be_bytes());
        ihdr.extend([8, 0, 0, 0, 0]);
        out.extend(13u32.to_be_bytes());
        out.extend(&ihdr);
        out.extend(crc32(&ihdr).to_be_bytes());
        // An empty IDAT and the end: a decoder reads its header up to the first IDAT.
        for kind in [&b"IDAT"[..], b"IEND"] {
            out.extend(0u32.to_be_bytes());
            out.extend(kind);
            out.extend(crc32(kind).to_be_bytes());
        }
        out
    }

    pub(crate) fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
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
