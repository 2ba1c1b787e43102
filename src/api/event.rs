//! The HTTP events Lambda delivers (API Gateway REST v1, HTTP API v2, Function URLs, ALB),
//! decoded by us rather than by `lambda_http`, and the responses each expects.
//!
//! Why ours: `lambda_http` turns an event into an `http::Request` with `.expect(…)`, so a query
//! string with a raw `"` or space, a Host header that is not a host, or a body marked base64
//! that is not, panic inside the runtime before any handler runs and the client gets a 502.
//! Here every field a client controls is taken as plain text: what cannot be used becomes a
//! 400 with a message, and what is not an HTTP event at all is an [`EventError`] the function
//! reports as a typed error. The query string and the Host header are never read.

use super::{clip, HttpReply};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Which integration sent the event; the response must be in the same shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// API Gateway REST API (payload format 1.0).
    RestV1,
    /// API Gateway HTTP API (payload format 2.0) and Lambda Function URLs.
    HttpV2,
    /// Application Load Balancer; `multi_value` when the target group has multi-value headers
    /// on (the response must then use `multiValueHeaders` too).
    Alb {
        /// Multi-value headers are on.
        multi_value: bool,
    },
}

/// An HTTP request taken out of its event.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpEvent {
    /// Which event carried it (the answer must match).
    pub flavour: Flavour,
    /// The HTTP method.
    pub method: String,
    /// The path without any API Gateway stage prefix.
    pub path: String,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `If-None-Match`, for the page's 304.
    pub if_none_match: Option<String>,
    /// The body as sent, or why it could not be read (a bad request, not a bad event).
    pub body: Result<Vec<u8>, String>,
}

/// The invocation is not an HTTP event of any integration (a direct invocation by mistake).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct EventError(pub String);

#[derive(Deserialize)]
struct Wire {
    version: Option<String>,
    #[serde(rename = "httpMethod")]
    http_method: Option<String>,
    path: Option<String>,
    #[serde(rename = "rawPath")]
    raw_path: Option<String>,
    #[serde(default)]
    headers: Option<HashMap<String, Option<String>>>,
    #[serde(rename = "multiValueHeaders", default)]
    multi_value_headers: Option<HashMap<String, Option<Vec<Option<String>>>>>,
    body: Option<String>,
    #[serde(rename = "isBase64Encoded", default)]
    is_base64_encoded: Option<bool>,
    #[serde(rename = "requestContext")]
    request_context: Option<WireContext>,
}

#[derive(Deserialize)]
struct WireContext {
    stage: Option<String>,
    http: Option<WireHttp>,
    elb: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct WireHttp {
    method: Option<String>,
    path: Option<String>,
}

/// What a caller is told when the event is not an HTTP event.
const EXPECTED: &str = "expected an HTTP event from API Gateway (REST or HTTP API), a Function URL or an ALB, with a method, a path and an optional body";

impl HttpEvent {
    /// Decodes an invocation payload (the raw JSON text Lambda delivered).
    pub fn parse(payload: &str) -> Result<Self, EventError> {
        let wire: Wire = serde_json::from_str(payload).map_err(|e| {
            EventError(format!(
                "the event is not an HTTP event ({}); {EXPECTED}",
                clip(&e.to_string())
            ))
        })?;
        let ctx = wire.request_context.as_ref();
        let flavour = if ctx.is_some_and(|c| c.elb.is_some()) {
            Flavour::Alb {
                multi_value: wire.multi_value_headers.is_some(),
            }
        } else if wire.version.as_deref() == Some("2.0") || ctx.is_some_and(|c| c.http.is_some()) {
            Flavour::HttpV2
        } else if wire.http_method.is_some() {
            Flavour::RestV1
        } else {
            return Err(EventError(format!(
                "the event has no HTTP method; {EXPECTED}"
            )));
        };
        let (method, raw_path) = match flavour {
            Flavour::HttpV2 => {
                let http = ctx.and_then(|c| c.http.as_ref());
                (
                    http.and_then(|h| h.method.clone()),
                    wire.raw_path
                        .clone()
                        .or_else(|| http.and_then(|h| h.path.clone())),
                )
            }
            _ => (wire.http_method.clone(), wire.path.clone()),
        };
        let method = method
            .filter(|m| !m.is_empty())
            .ok_or_else(|| EventError(format!("the event has no HTTP method; {EXPECTED}")))?;
        let raw_path = raw_path.unwrap_or_else(|| "/".into());
        let stage = match flavour {
            Flavour::Alb { .. } => None,
            _ => ctx.and_then(|c| c.stage.clone()),
        };
        let content_type = header(&wire, "content-type");
        let if_none_match = header(&wire, "if-none-match");
        let body = body_bytes(wire.body, wire.is_base64_encoded.unwrap_or(false));
        Ok(Self {
            flavour,
            method: method.to_ascii_uppercase(),
            path: without_stage(&raw_path, stage.as_deref()),
            content_type,
            if_none_match,
            body,
        })
    }
}

/// A header's value, by case-insensitive name, from `headers` or else `multiValueHeaders`
/// (the last value, as API Gateway does when it folds them).
fn header(wire: &Wire, name: &str) -> Option<String> {
    let single = wire.headers.as_ref().and_then(|h| {
        h.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.clone())
    });
    single.or_else(|| {
        wire.multi_value_headers.as_ref().and_then(|h| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.as_ref()?.iter().rev().find_map(|s| s.clone()))
        })
    })
}

fn body_bytes(body: Option<String>, base64: bool) -> Result<Vec<u8>, String> {
    let Some(body) = body else {
        return Ok(Vec::new());
    };
    if !base64 {
        return Ok(body.into_bytes());
    }
    decode_base64(&body)
        .map_err(|e| format!("the body is marked base64 but is not valid base64 ({e})"))
}

/// Standard base64, also line-wrapped (MIME) or without padding, or URL-safe: what clients
/// and proxies send.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    let compact: std::borrow::Cow<str> = if text.bytes().any(|b| b.is_ascii_whitespace()) {
        text.chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect::<String>()
            .into()
    } else {
        text.into()
    };
    STD.decode(compact.as_bytes())
        .or_else(|e| URL.decode(compact.as_bytes()).map_err(|_| e))
}

/// REST APIs (v1) and named HTTP API stages put `/<stage>` in front of the resource path.
fn without_stage(path: &str, stage: Option<&str>) -> String {
    let path = if path.is_empty() { "/" } else { path };
    match stage.filter(|s| !s.is_empty() && *s != "$default") {
        Some(stage) => match path.strip_prefix('/').and_then(|p| p.strip_prefix(stage)) {
            Some(rest) if rest.starts_with('/') => rest.to_owned(),
            Some("") => "/".to_owned(),
            _ => path.to_owned(),
        },
        None => path.to_owned(),
    }
}

/// The integration's response for `reply`: JSON body, `Content-Type: application/json`.
pub fn response(flavour: Flavour, reply: &HttpReply) -> Value {
    let mut headers = Map::new();
    headers.insert("content-type".into(), json!(reply.body.content_type()));
    for (name, value) in &reply.headers {
        headers.insert((*name).into(), json!(value));
    }
    // A 204 or a 304 carries no body at all.
    let body = if reply.status == 204 || reply.status == 304 {
        String::new()
    } else {
        reply.body.to_string()
    };
    match flavour {
        Flavour::RestV1 => json!({
            "statusCode": reply.status,
            "headers": headers,
            "body": body,
            "isBase64Encoded": false,
        }),
        // Payload format 2.0 has `cookies` (readers built on aws_lambda_events, such as
        // cargo-lambda's Function URL front door, require the field).
        Flavour::HttpV2 => json!({
            "statusCode": reply.status,
            "headers": headers,
            "cookies": [],
            "body": body,
            "isBase64Encoded": false,
        }),
        Flavour::Alb { multi_value } => {
            let mut r = json!({
                "statusCode": reply.status,
                "statusDescription": format!("{} {}", reply.status, reason(reply.status)),
                "body": body,
                "isBase64Encoded": false,
            });
            if multi_value {
                let multi: Map<String, Value> =
                    headers.into_iter().map(|(k, v)| (k, json!([v]))).collect();
                r["multiValueHeaders"] = Value::Object(multi);
            } else {
                r["headers"] = Value::Object(headers);
            }
            r
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/events")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn the_recorded_events_of_every_integration_decode() {
        let v2 = HttpEvent::parse(&fixture("apigw-v2-predict.json")).unwrap();
        assert_eq!(v2.flavour, Flavour::HttpV2);
        assert_eq!((v2.method.as_str(), v2.path.as_str()), ("POST", "/predict"));
        assert_eq!(v2.content_type.as_deref(), Some("application/json"));
        let v1 = HttpEvent::parse(&fixture("apigw-v1-predict.json")).unwrap();
        assert_eq!(v1.flavour, Flavour::RestV1);
        assert_eq!(v1.method, "POST");
        let url = HttpEvent::parse(&fixture("function-url-predict.json")).unwrap();
        assert_eq!(url.flavour, Flavour::HttpV2);
    }

    fn v2(edit: impl FnOnce(&mut Value)) -> Result<HttpEvent, EventError> {
        let mut e: Value = serde_json::from_str(&fixture("apigw-v2-predict.json")).unwrap();
        edit(&mut e);
        HttpEvent::parse(&e.to_string())
    }

    #[test]
    fn what_panics_inside_lambda_http_is_plain_data_here() {
        let e = v2(|e| {
            e["rawQueryString"] = json!("a=\"<b> c");
            e["headers"]["host"] = json!("not a host/ at all");
        })
        .unwrap();
        assert_eq!(e.path, "/predict");
        let e = v2(|e| {
            e["isBase64Encoded"] = json!(true);
            e["body"] = json!("not base64!!");
        })
        .unwrap();
        assert!(e.body.unwrap_err().contains("not valid base64"));
        // Line-wrapped, unpadded and URL-safe base64 are all read.
        for text in ["aGVsbG8g\r\nd29ybGQ=", "aGVsbG8gd29ybGQ", "_-8="] {
            let e = v2(|e| {
                e["isBase64Encoded"] = json!(true);
                e["body"] = json!(text);
            })
            .unwrap();
            assert!(e.body.is_ok(), "{text}");
        }
    }

    #[test]
    fn what_is_not_an_http_event_is_an_event_error() {
        for payload in [
            "{}",
            "{\"hello\": 1}",
            "[1,2]",
            "\"predict\"",
            "{\"httpMethod\": 5}",
            "{\"httpMethod\": \"\"}",
        ] {
            let err = HttpEvent::parse(payload).unwrap_err();
            assert!(err.0.contains("expected an HTTP event"), "{payload}: {err}");
            assert!(err.0.len() < 400, "{err}");
        }
    }

    #[test]
    fn stages_are_taken_off_the_path() {
        assert_eq!(without_stage("/prod/predict", Some("prod")), "/predict");
        assert_eq!(without_stage("/prod", Some("prod")), "/");
        assert_eq!(without_stage("/production", Some("prod")), "/production");
        assert_eq!(without_stage("/predict", Some("$default")), "/predict");
        assert_eq!(without_stage("", None), "/");
    }

    #[test]
    fn alb_answers_in_its_own_shape() {
        let e = HttpEvent::parse(
            r#"{"requestContext":{"elb":{"targetGroupArn":"arn"}},"httpMethod":"GET","path":"/health",
                "multiValueHeaders":{"Content-Type":["text/plain","application/json"]},"body":"","isBase64Encoded":false}"#,
        )
        .unwrap();
        assert_eq!(e.flavour, Flavour::Alb { multi_value: true });
        assert_eq!(e.content_type.as_deref(), Some("application/json"));
        let r = response(e.flavour, &HttpReply::error(404, "no"));
        assert_eq!(r["statusDescription"], "404 Not Found");
        assert_eq!(
            r["multiValueHeaders"]["content-type"],
            json!(["application/json"])
        );
        let preflight = HttpReply {
            status: 204,
            body: crate::api::Body::Empty,
            headers: vec![],
        };
        assert_eq!(response(Flavour::RestV1, &preflight)["body"], "");
        let page = HttpReply {
            status: 200,
            body: crate::api::Body::Text {
                content_type: "text/html; charset=utf-8",
                text: "<p>hi</p>".into(),
            },
            headers: vec![],
        };
        let r = response(Flavour::HttpV2, &page);
        assert_eq!(r["body"], "<p>hi</p>");
        assert_eq!(r["headers"]["content-type"], "text/html; charset=utf-8");
        assert_eq!(r["cookies"], json!([]));
        let r = response(Flavour::HttpV2, &HttpReply::ok(json!({"a": 1})));
        assert_eq!(r["body"], "{\"a\":1}");
        assert_eq!(r["headers"]["content-type"], "application/json");
    }
}
