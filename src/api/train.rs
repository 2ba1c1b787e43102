//! The `train` function's event and response. The response keeps the seed handler's shape,
//! `{"statusCode":200,"body":"\"Test accuracy: 0.99\""}`, and adds the metrics.

use crate::train::{OptimizerKind, TrainConfig, TrainMetrics};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// The most epochs a request may ask for.
pub const MAX_EPOCHS: usize = 50;
/// The largest batch a request may ask for.
pub const MAX_BATCH: usize = 4096;

/// `{"epochs":5,"batch_size":32,"optimizer":"adam","learning_rate":0.001,"seed":42,"limit":null}`,
/// every field optional; unknown fields are refused so a typo is not silently ignored.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainRequest {
    /// Passes over the training set (1..=50; default 5).
    pub epochs: Option<usize>,
    /// Samples per step (default 32).
    pub batch_size: Option<usize>,
    /// `adam` (default) or `sgd`.
    pub optimizer: Option<OptimizerKind>,
    /// The step size (default 1e-3).
    pub learning_rate: Option<f64>,
    /// SGD's momentum.
    pub momentum: Option<f64>,
    /// The seed of initialisation and shuffling (default 42).
    pub seed: Option<u64>,
    /// Train on the first N samples only (default: all 60,000).
    pub limit: Option<usize>,
}

/// What is wrong with a request, said so the caller can fix it.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

/// The training samples MNIST has: a larger `limit` means nothing.
pub const MAX_LIMIT: usize = 60_000;

const ALLOWED: &str = "allowed fields: epochs (1..=50), batch_size (1..=4096), optimizer (\"adam\" or \"sgd\"), learning_rate (1e-7..=10), momentum (0 ≤ m < 1, sgd only), seed (integer ≥ 0), limit (1..=60000 or null)";

impl TrainRequest {
    /// Parses an invocation payload as Lambda delivered it (JSON text). Whatever is wrong with
    /// it, down to numbers out of range and nesting too deep to read, is an
    /// [`InvalidRequest`].
    pub fn parse_text(payload: &str) -> Result<Self, InvalidRequest> {
        let value: serde_json::Value = serde_json::from_str(payload).map_err(|e| {
            InvalidRequest(format!(
                "the event is not JSON this function can read ({}); send an object like {{\"epochs\":5,\"limit\":null}}",
                super::clip(&e.to_string())
            ))
        })?;
        Self::parse(&value)
    }

    /// Parses an invocation payload.
    pub fn parse(payload: &serde_json::Value) -> Result<Self, InvalidRequest> {
        let payload = if payload.is_null() {
            &serde_json::Value::Object(Default::default())
        } else {
            payload
        };
        if !payload.is_object() {
            return Err(InvalidRequest(format!(
                "the event must be a JSON object like {{\"epochs\":5,\"limit\":null}}, got {}",
                kind(payload)
            )));
        }
        Self::deserialize(payload).map_err(|e| {
            // serde repeats the offending value whole; a long one is cut.
            InvalidRequest(format!(
                "{}; {ALLOWED}",
                super::clip_to(&e.to_string(), super::ECHO_CHARS + 60)
            ))
        })
    }

    /// The training configuration, with the seed's defaults for what is missing: within the
    /// function's caps (epochs, batch size, limit), then [`TrainConfig::validate`].
    pub fn config(&self) -> Result<TrainConfig, InvalidRequest> {
        let d = TrainConfig::default();
        let epochs = self.epochs.unwrap_or(d.epochs);
        if !(1..=MAX_EPOCHS).contains(&epochs) {
            return Err(InvalidRequest(format!(
                "epochs is {epochs}; allowed: 1..={MAX_EPOCHS}"
            )));
        }
        let batch_size = self.batch_size.unwrap_or(d.batch_size);
        if !(1..=MAX_BATCH).contains(&batch_size) {
            return Err(InvalidRequest(format!(
                "batch_size is {batch_size}; allowed: 1..={MAX_BATCH}"
            )));
        }
        if let Some(limit) = self.limit.filter(|l| !(1..=MAX_LIMIT).contains(l)) {
            return Err(InvalidRequest(format!(
                "limit is {limit}; allowed: 1..={MAX_LIMIT}, or null for all"
            )));
        }
        let config = TrainConfig {
            epochs,
            batch_size,
            optimizer: self.optimizer.unwrap_or(d.optimizer),
            learning_rate: self.learning_rate.unwrap_or(d.learning_rate),
            momentum: self.momentum.unwrap_or(d.momentum),
            seed: self.seed.unwrap_or(d.seed),
            limit: self.limit,
        };
        config.validate().map_err(|e| match e {
            crate::train::TrainError::InvalidConfig(m) => InvalidRequest(m),
            other => InvalidRequest(other.to_string()),
        })?;
        Ok(config)
    }
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The metrics of `lambda-cnn train --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResponseMetrics {
    /// Accuracy on the 10,000 test images.
    pub test_accuracy: f64,
    /// Mean cross-entropy on them.
    pub test_loss: f64,
    /// Epochs trained in (the last may be partial: see `epochs_completed`).
    pub epochs: usize,
    /// Passes over the training set made, fractional: 0.4 when the deadline stopped the
    /// first epoch 40 % of the way through.
    #[serde(default)]
    pub epochs_completed: f64,
    /// Training time, seconds.
    pub seconds: f64,
    /// Training throughput.
    pub samples_per_second: f64,
    /// Where the weights went: an S3 URI, or a path in the function's /tmp.
    pub weights: String,
    /// SHA-256 of the weights file.
    pub weights_sha256: String,
    /// The model card's S3 URI, when the weights went to S3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card: Option<String>,
}

/// The seed's response shape plus metrics and whether all epochs ran.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainResponse {
    /// 200.
    #[serde(rename = "statusCode")]
    pub status_code: u16,
    /// The seed's body: `"Test accuracy: 0.99"`, a JSON string.
    pub body: String,
    /// The figures.
    pub metrics: ResponseMetrics,
    /// False when the deadline cut training short.
    pub completed: bool,
}

impl TrainResponse {
    /// The answer for a run that made `metrics` and wrote its weights to `weights`.
    pub fn new(
        metrics: &TrainMetrics,
        weights: String,
        weights_sha256: String,
        card: Option<String>,
    ) -> Self {
        // The seed: json.dumps(f"Test accuracy: {test_acc:.2f}").
        let body =
            serde_json::Value::String(format!("Test accuracy: {:.2}", metrics.test_accuracy))
                .to_string();
        Self {
            status_code: 200,
            body,
            metrics: ResponseMetrics {
                test_accuracy: metrics.test_accuracy,
                test_loss: metrics.test_loss,
                epochs: metrics.epochs,
                epochs_completed: metrics.epochs_completed,
                seconds: metrics.seconds,
                samples_per_second: metrics.samples_per_second,
                weights,
                weights_sha256,
                card,
            },
            completed: metrics.completed,
        }
    }
}

/// When training must stop so that evaluating, saving and answering still fit before the
/// invocation's deadline.
#[derive(Debug, Clone, Copy)]
pub struct StopAt(pub Option<SystemTime>);

impl StopAt {
    /// At most this much is kept back from the deadline.
    pub const MAX_RESERVE: Duration = Duration::from_secs(10);

    /// From the runtime's `Lambda-Runtime-Deadline-Ms` at invocation time `now`. Lambda sends
    /// epoch milliseconds; `cargo lambda watch` sends the timeout itself (600000), so a value
    /// too small to be a date (before 2001) is taken as milliseconds from now. The reserve is
    /// 10 s, or a fifth of the time left when that is shorter.
    pub fn from_deadline_ms(ms: u64, now: SystemTime) -> Self {
        let Some(left) = crate::runtime::time_left(ms, now) else {
            return Self(None);
        };
        Self(Some(now + left - Self::MAX_RESERVE.min(left / 5)))
    }

    /// Whether training must stop at `now`.
    pub fn reached(&self, now: SystemTime) -> bool {
        self.0.is_some_and(|t| now >= t)
    }

    /// Time left until training must stop.
    pub fn left(&self, now: SystemTime) -> Option<Duration> {
        self.0.map(|t| t.duration_since(now).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<TrainConfig, InvalidRequest> {
        TrainRequest::parse(&v)?.config()
    }

    #[test]
    fn json_that_serde_cannot_hold_is_an_invalid_request_too() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for (text, expect) in [
            ("{\"epochs\": 1e400}", "number out of range"),
            (deep.as_str(), "recursion limit"),
            ("{\"epochs\": 1", "EOF"),
        ] {
            let err = TrainRequest::parse_text(text).unwrap_err();
            assert!(err.0.contains(expect), "{text}: {err}");
        }
        let long = format!("{{\"{}\": 1}}", "x".repeat(1 << 20));
        let err = TrainRequest::parse_text(&long).unwrap_err();
        assert!(
            err.0.len() < 1024 && err.0.contains("unknown field"),
            "{}",
            &err.0[..200]
        );
        assert_eq!(
            TrainRequest::parse_text("{}").unwrap(),
            TrainRequest::default()
        );
    }

    #[test]
    fn empty_event_is_the_seeds_run() {
        let c = parse(json!({})).unwrap();
        assert_eq!(
            (c.epochs, c.batch_size, c.optimizer, c.learning_rate, c.seed),
            (5, 32, OptimizerKind::Adam, 1e-3, 42)
        );
        assert_eq!(c.limit, None);
        assert_eq!(parse(json!(null)).unwrap().epochs, 5);
    }

    #[test]
    fn every_field_is_read() {
        let c = parse(json!({"epochs":2,"batch_size":64,"optimizer":"sgd","learning_rate":0.1,"momentum":0.9,"seed":7,"limit":3000})).unwrap();
        assert_eq!(
            parse(json!({"optimizer":"sgd","learning_rate":1e-7}))
                .unwrap()
                .learning_rate,
            1e-7
        );
        assert_eq!(
            (c.epochs, c.batch_size, c.optimizer, c.seed, c.limit),
            (2, 64, OptimizerKind::Sgd, 7, Some(3000))
        );
        assert_eq!((c.learning_rate, c.momentum), (0.1, 0.9));
    }

    #[test]
    fn absurd_requests_say_what_is_allowed() {
        for (event, expect) in [
            (json!({"epochs":0}), "epochs is 0; allowed: 1..=50"),
            (json!({"epochs":51}), "allowed: 1..=50"),
            (
                json!({"batch_size":5000}),
                "batch_size is 5000; allowed: 1..=4096",
            ),
            (json!({"learning_rate":0}), "learning_rate is 0"),
            (
                json!({"learning_rate":-1e-3}),
                "it must be a positive number",
            ),
            // Valid as f64, not as the f32 the optimizer uses.
            (json!({"learning_rate":1e-46}), "(0 as the f32"),
            (json!({"learning_rate":1e39}), "(inf as the f32"),
            (json!({"learning_rate":100}), "from 1e-7 to 10"),
            (
                json!({"optimizer":"sgd","momentum":0.99999999999f64}),
                "(1 as the f32",
            ),
            (json!({"momentum":0.9}), "the optimizer is adam"),
            (json!({"limit":60001}), "limit is 60001; allowed: 1..=60000"),
            (json!({"limit":10,"batch_size":32}), "larger than limit 10"),
            (
                json!({"optimizer":"rmsprop"}),
                "unknown variant `rmsprop`, expected `adam` or `sgd`",
            ),
            (json!({"epoch":5}), "unknown field `epoch`"),
            (json!({"epochs":"5"}), "invalid type: string \"5\""),
            (json!({"epochs":-1}), "invalid value: integer `-1`"),
            (json!({"limit":0}), "limit is 0"),
            (json!([1, 2]), "must be a JSON object"),
            (json!("train"), "got a string"),
        ] {
            let err = parse(event.clone()).unwrap_err();
            assert!(err.0.contains(expect), "{event}: {err}");
        }
    }

    #[test]
    fn deadline_as_lambda_sends_it_and_as_the_emulator_does() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let epoch_ms = 1_800_000_000_000 + 900_000; // 15 minutes from now, as epoch ms
        let stop = StopAt::from_deadline_ms(epoch_ms, now);
        assert_eq!(stop.left(now), Some(Duration::from_secs(890)));
        let stop = StopAt::from_deadline_ms(600_000, now); // cargo lambda watch: 600 s
        assert_eq!(stop.left(now), Some(Duration::from_secs(590)));
        // A short timeout keeps a fifth back, not 10 s.
        let stop = StopAt::from_deadline_ms(3_000, now);
        assert_eq!(stop.left(now), Some(Duration::from_millis(2_400)));
        assert!(!stop.reached(now) && stop.reached(now + Duration::from_millis(2_400)));
        assert!(!StopAt::from_deadline_ms(0, now).reached(now + Duration::from_secs(1 << 30)));
    }

    #[test]
    fn response_keeps_the_seeds_shape() {
        let m = TrainMetrics {
            test_accuracy: 0.98765,
            test_loss: 0.04,
            epochs: 5,
            epochs_completed: 5.0,
            seconds: 10.0,
            samples_per_second: 30_000.0,
            train_samples: 60_000,
            completed: true,
            per_epoch: vec![],
        };
        let r = serde_json::to_value(TrainResponse::new(&m, "/tmp/w".into(), "ab".into(), None))
            .unwrap();
        assert_eq!(r["statusCode"], 200);
        assert_eq!(r["body"], "\"Test accuracy: 0.99\"");
        assert_eq!(r["completed"], true);
        assert_eq!(r["metrics"]["epochs"], 5);
        assert!(r["metrics"].get("card").is_none());
    }
}
