//! The Lambda functions' request and response types, validation, and error → status mapping.
//! The function binaries only adapt the runtime's events to these; tests reach them directly.

pub mod predict;
pub mod train;

/// An HTTP answer, independent of the Lambda event flavour that carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpReply {
    pub status: u16,
    pub body: serde_json::Value,
    /// Extra headers (e.g. `Allow` on a 405).
    pub headers: Vec<(&'static str, String)>,
}

impl HttpReply {
    pub fn ok(body: serde_json::Value) -> Self {
        Self {
            status: 200,
            body,
            headers: Vec::new(),
        }
    }

    /// A 4xx/5xx with `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            body: serde_json::json!({ "error": message.into() }),
            headers: Vec::new(),
        }
    }
}
