//! The Lambda functions' request and response types, validation, and error → status mapping.
//! The function binaries only adapt the runtime's events to these; tests reach them directly.

#[cfg(feature = "s3")]
pub mod batch;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "s3")]
pub mod model_source;
pub mod page;
pub mod predict;
pub mod predict_fn;
pub mod train;
#[cfg(feature = "s3")]
pub mod train_service;

pub(crate) use crate::clip::clip_to;
pub use crate::clip::{clip, ECHO_CHARS, MESSAGE_CHARS};

/// An HTTP answer, independent of the Lambda event flavour that carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpReply {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Body,
    /// Extra headers (e.g. `Allow` on a 405).
    pub headers: Vec<(&'static str, String)>,
}

/// What an answer carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A JSON document.
    Json(serde_json::Value),
    /// A document of another type (the page), sent as it is.
    Text {
        /// Its media type.
        content_type: &'static str,
        /// Its text.
        text: String,
    },
    /// Nothing (a 204, a 304, an answer to HEAD).
    Empty,
}

impl Body {
    /// The `Content-Type` it goes with.
    pub fn content_type(&self) -> &'static str {
        match self {
            Body::Text { content_type, .. } => content_type,
            Body::Json(_) | Body::Empty => "application/json",
        }
    }
}

impl std::fmt::Display for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Json(v) => write!(f, "{v}"),
            Body::Text { text, .. } => f.write_str(text),
            Body::Empty => Ok(()),
        }
    }
}

/// A JSON body's field, as on a `Value`; `Null` for anything else.
impl std::ops::Index<&str> for Body {
    type Output = serde_json::Value;
    fn index(&self, key: &str) -> &serde_json::Value {
        static NULL: serde_json::Value = serde_json::Value::Null;
        match self {
            Body::Json(v) => &v[key],
            _ => &NULL,
        }
    }
}

impl PartialEq<serde_json::Value> for Body {
    fn eq(&self, other: &serde_json::Value) -> bool {
        matches!(self, Body::Json(v) if v == other)
    }
}

impl HttpReply {
    /// A 200 with a JSON body.
    pub fn ok(body: serde_json::Value) -> Self {
        Self {
            status: 200,
            body: Body::Json(body),
            headers: Vec::new(),
        }
    }

    /// A 4xx/5xx with `{"error": message}`, the message cut at [`MESSAGE_CHARS`].
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            body: Body::Json(
                serde_json::json!({ "error": clip_to(&message.into(), MESSAGE_CHARS) }),
            ),
            headers: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_body_stays_small_whatever_the_message() {
        let r = HttpReply::error(400, "x".repeat(1 << 20));
        assert!(r.body.to_string().len() < 1024);
    }
}
