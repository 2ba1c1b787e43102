//! `deploy invoke`: one synchronous invocation of a deployed function's `live` alias, with the
//! event built here from what a person has at hand — an image file or a JSON body for predict
//! (sent as API Gateway would, `POST /predict`), a JSON event for train — and the answer
//! unwrapped for reading.

#![warn(missing_docs)]

use base64::Engine;
use serde_json::{json, Value};

use super::image::Function;
use super::lambda::Invoked;

/// Lambda's limit on a synchronous invocation's request (and response) payload:
/// <https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html>.
pub const MAX_SYNC_PAYLOAD: usize = 6 * 1024 * 1024;

/// What to send.
#[derive(Debug, Clone)]
pub enum Input {
    /// A PNG or JPEG file's bytes (predict).
    Image(Vec<u8>),
    /// A JSON body: predict's request body (`{"pixels":[…]}`, `{"image":"…"}`, …), or
    /// train's event (`{"epochs":1,"limit":1000}`).
    Body(Value),
}

/// An event that cannot be sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvokeError {
    /// Not an image predict reads.
    #[error("the file is not a PNG or JPEG image (predict reads those; send other input as --body JSON)")]
    NotAnImage,
    /// Train takes a JSON event only.
    #[error(
        "train takes a JSON event, not an image: e.g. --body '{{\"epochs\":1,\"limit\":1000}}'"
    )]
    ImageToTrain,
    /// Over Lambda's payload limit.
    #[error("the event would be {0} bytes; Lambda takes at most {MAX_SYNC_PAYLOAD} bytes in a synchronous invocation")]
    TooLarge(usize),
}

/// The image's media type from its first bytes, as predict accepts them.
fn media_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else {
        None
    }
}

/// An API Gateway HTTP API (payload format 2.0) event of `POST /predict` with `body`.
fn http_event(content_type: &str, body: &[u8]) -> Value {
    json!({
        "version": "2.0",
        "routeKey": "POST /predict",
        "rawPath": "/predict",
        "rawQueryString": "",
        "headers": {"content-type": content_type, "user-agent": "lambda-cnn deploy invoke"},
        "requestContext": {
            "http": {"method": "POST", "path": "/predict", "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "lambda-cnn deploy invoke"},
            "routeKey": "POST /predict",
            "stage": "$default",
            "requestId": "deploy-invoke"
        },
        "body": base64::engine::general_purpose::STANDARD.encode(body),
        "isBase64Encoded": true
    })
}

/// The event `f` is invoked with for `input`; refused before any call when it cannot work.
pub fn event(f: Function, input: &Input) -> Result<Vec<u8>, InvokeError> {
    let event = match (f, input) {
        (Function::Predict, Input::Image(bytes)) => {
            http_event(media_type(bytes).ok_or(InvokeError::NotAnImage)?, bytes)
        }
        (Function::Predict, Input::Body(body)) => {
            http_event("application/json", body.to_string().as_bytes())
        }
        (Function::Train, Input::Image(_)) => return Err(InvokeError::ImageToTrain),
        (Function::Train, Input::Body(body)) => body.clone(),
    };
    let bytes = event.to_string().into_bytes();
    if bytes.len() > MAX_SYNC_PAYLOAD {
        return Err(InvokeError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

/// What came back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Answer {
    /// The function invoked.
    pub function: String,
    /// The alias invoked.
    pub alias: String,
    /// The version that ran (Lambda's `X-Amz-Executed-Version`).
    pub version: Option<String>,
    /// The HTTP status in the answer, for an API Gateway answer.
    pub status: Option<u16>,
    /// The answer's body: JSON where it is JSON, else text.
    pub body: Value,
    /// `Unhandled` when the function failed (the body is then the error document).
    pub function_error: Option<String>,
}

impl Answer {
    /// Reads an invocation's answer: an API Gateway answer's body is unwrapped.
    pub fn read(function: &str, alias: &str, invoked: &Invoked) -> Answer {
        let raw: Value = serde_json::from_slice(&invoked.payload).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&invoked.payload).into_owned())
        });
        let status = raw["statusCode"].as_u64().map(|s| s as u16);
        let body = match (&raw["body"], invoked.function_error.is_some()) {
            (Value::String(text), false) if status.is_some() => {
                let text = if raw["isBase64Encoded"] == true {
                    base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_else(|_| text.clone())
                } else {
                    text.clone()
                };
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            }
            _ => raw,
        };
        Answer {
            function: function.to_owned(),
            alias: alias.to_owned(),
            version: invoked.executed_version.clone(),
            status,
            body,
            function_error: invoked.function_error.clone(),
        }
    }

    /// Whether the function answered without failing (a 4xx/5xx answer counts as failing).
    pub fn succeeded(&self) -> bool {
        self.function_error.is_none() && self.status.is_none_or(|s| s < 400)
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.function, self.alias)?;
        if let Some(v) = &self.version {
            write!(f, " (version {v})")?;
        }
        if let Some(e) = &self.function_error {
            write!(f, " failed ({e})")?;
        }
        if let Some(s) = self.status {
            write!(f, " answered {s}")?;
        }
        let body = match &self.body {
            Value::String(s) => s.clone(),
            v => serde_json::to_string_pretty(v).unwrap_or_default(),
        };
        write!(f, ":\n{body}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_goes_to_predict_as_api_gateway_would_send_it() {
        let png = b"\x89PNG\r\n\x1a\nrest".to_vec();
        let e: Value =
            serde_json::from_slice(&event(Function::Predict, &Input::Image(png)).unwrap()).unwrap();
        assert_eq!(e["routeKey"], "POST /predict");
        assert_eq!(e["headers"]["content-type"], "image/png");
        assert_eq!(e["isBase64Encoded"], true);
        assert_eq!(
            event(Function::Predict, &Input::Image(b"GIF89a".to_vec())),
            Err(InvokeError::NotAnImage)
        );
        assert_eq!(
            event(Function::Train, &Input::Image(vec![0xFF, 0xD8, 0xFF])),
            Err(InvokeError::ImageToTrain)
        );
        let big = vec![0xFF; MAX_SYNC_PAYLOAD];
        let mut jpeg = vec![0xFF, 0xD8, 0xFF];
        jpeg.extend(big);
        assert!(matches!(
            event(Function::Predict, &Input::Image(jpeg)),
            Err(InvokeError::TooLarge(_))
        ));
        let train = event(Function::Train, &Input::Body(json!({"epochs": 1}))).unwrap();
        assert_eq!(train, br#"{"epochs":1}"#);
    }

    #[test]
    fn an_api_gateway_answer_is_unwrapped_and_an_error_status_is_a_failure() {
        let invoked = Invoked {
            function_error: None,
            executed_version: Some("3".into()),
            payload: br#"{"statusCode":200,"body":"{\"digit\":7}"}"#.to_vec(),
        };
        let a = Answer::read("p", "live", &invoked);
        assert_eq!(a.body["digit"], 7);
        assert!(a.succeeded());
        assert!(a.to_string().starts_with("p:live (version 3) answered 200"));
        let bad = Invoked {
            function_error: None,
            executed_version: None,
            payload: br#"{"statusCode":400,"body":"{\"error\":\"no\"}"}"#.to_vec(),
        };
        assert!(!Answer::read("p", "live", &bad).succeeded());
        let failed = Invoked {
            function_error: Some("Unhandled".into()),
            executed_version: None,
            payload: br#"{"errorType":"x","errorMessage":"y"}"#.to_vec(),
        };
        let a = Answer::read("t", "live", &failed);
        assert!(!a.succeeded());
        assert_eq!(a.body["errorMessage"], "y");
    }
}
