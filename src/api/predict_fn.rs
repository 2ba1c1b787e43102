//! The predict function's invocation path, apart from the Lambda runtime: the event's raw JSON
//! → [`HttpEvent`] → [`PredictService`] (with the invocation's deadline) → the integration's
//! response, with one log line and the CloudWatch metrics of each request. The binary
//! (`functions/predict`) only wires this to `lambda_runtime`.

use super::clip;
use super::event::{self, EventError, HttpEvent};
use super::predict::PredictService;
use crate::metrics::{self, Unit};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Kept back from the invocation's deadline for inference and answering.
pub const ANSWER_RESERVE: Duration = Duration::from_millis(500);

/// The predict function: the service, and what its metrics need.
pub struct PredictFunction {
    service: PredictService,
    /// The metrics' `FunctionName` dimension.
    fn_name: String,
    /// What the cold start's metrics report, once.
    init_ms: f64,
    cold: AtomicBool,
}

impl PredictFunction {
    /// The function of `service`, named `fn_name` in its metrics, whose init took `init_ms`.
    pub fn new(service: PredictService, fn_name: String, init_ms: f64) -> Self {
        Self {
            service,
            fn_name,
            init_ms,
            cold: AtomicBool::new(true),
        }
    }

    /// What answers the requests.
    pub fn service(&self) -> &PredictService {
        &self.service
    }

    /// One invocation: `payload` as Lambda delivered it, `deadline_ms` the runtime's
    /// `Lambda-Runtime-Deadline-Ms`. A payload that is no HTTP event is the typed function
    /// error `InvalidEvent` (the caller invoked the function directly by mistake); everything
    /// else is an HTTP answer.
    pub fn invoke(&self, payload: &str, deadline_ms: u64) -> Result<Value, EventError> {
        let start = Instant::now();
        let http = HttpEvent::parse(payload).inspect_err(|e| {
            tracing::warn!(error = %e, "not an HTTP event");
        })?;
        let reply = self.service.handle_event(
            &http,
            decode_deadline(deadline_ms, start, SystemTime::now()),
        );
        let ms = start.elapsed().as_secs_f64() * 1e3;
        tracing::info!(method = %clip(&http.method), path = %clip(&http.path), status = reply.status, duration_ms = ms, "request");
        self.record(ms, reply.status);
        Ok(event::response(http.flavour, &reply))
    }

    fn record(&self, ms: f64, status: u16) {
        let mut values = vec![("PredictLatencyMs", Unit::Milliseconds, ms)];
        if self.cold.swap(false, Ordering::Relaxed) {
            values.push(("ColdStart", Unit::Count, 1.0));
            values.push(("InitMs", Unit::Milliseconds, self.init_ms));
        }
        if status >= 400 {
            values.push(("BadRequests", Unit::Count, 1.0));
        }
        metrics::emit(&[("FunctionName", &self.fn_name)], &values);
    }
}

/// When decoding must stop: the invocation's deadline (epoch ms from Lambda; `cargo lambda`
/// sends the timeout itself, a small number) less [`ANSWER_RESERVE`]; an hour when there is
/// none.
fn decode_deadline(deadline_ms: u64, start: Instant, now: SystemTime) -> Instant {
    let left = crate::runtime::time_left(deadline_ms, now).unwrap_or(Duration::from_secs(3600));
    start + left.saturating_sub(ANSWER_RESERVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function() -> PredictFunction {
        let (model, id) = crate::net::file::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(crate::SHIPPED_WEIGHTS),
        )
        .unwrap();
        PredictFunction::new(
            PredictService::new(model, id).unwrap(),
            "predict".into(),
            1.0,
        )
    }

    #[test]
    fn an_http_event_gets_an_http_answer_and_anything_else_a_typed_error() {
        let f = function();
        let health = serde_json::json!({
            "version": "2.0", "rawPath": "/health",
            "requestContext": {"http": {"method": "GET", "path": "/health"}}
        });
        let r = f.invoke(&health.to_string(), 0).unwrap();
        assert_eq!(r["statusCode"], 200, "{r}");
        let bad_base64 = serde_json::json!({
            "version": "2.0", "rawPath": "/predict", "body": "%%%", "isBase64Encoded": true,
            "requestContext": {"http": {"method": "POST", "path": "/predict"}}
        });
        assert_eq!(
            f.invoke(&bad_base64.to_string(), 0).unwrap()["statusCode"],
            400
        );
        assert!(f.invoke(r#"{"epochs": 1}"#, 0).is_err());
        assert!(f.invoke("not json", 0).is_err());
    }

    #[test]
    fn the_decode_deadline_keeps_the_answer_reserve() {
        let start = Instant::now();
        let now = SystemTime::now();
        let epoch_ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let d = decode_deadline(epoch_ms + 3000, start, now);
        let left = d.duration_since(start);
        assert!(
            left <= Duration::from_millis(2500) && left > Duration::from_millis(2400),
            "{left:?}"
        );
        assert!(decode_deadline(0, start, now) >= start + Duration::from_secs(3000));
    }
}
