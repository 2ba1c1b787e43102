//! The batch event's wire format: what Step Functions' Distributed Map hands predict (its
//! `ItemBatcher` shape), where the results go and what each result line says. The function
//! (`api::batch`) reads and writes it; the deployer (`lambda_cnn_deploy::batch`) builds the state machine
//! that sends it and reads the results back, so both sides name each field from here.
//!
//! The event:
//!
//! ```json
//! {"Items": [{"Key": "digits/0.png", "Size": 212}, …],
//!  "BatchInput": {"bucket": "images", "output": "s3://results-bucket/run-1/"}}
//! ```
//!
//! `Items` are what Distributed Map's S3 item reader lists (`Key`, and `Size` when it lists
//! objects; other fields are ignored); `BatchInput` says where they are and where the results
//! go. The result object's name is the hash of the batch's keys, so a retried batch overwrites
//! its own result instead of adding a second one.

#![warn(missing_docs)]

use crate::clip::{clip, clip_to, MESSAGE_CHARS};
use crate::store::S3Uri;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The event's list of items (Distributed Map's name for a batch's items).
pub const ITEMS: &str = "Items";
/// The event's batch-wide input (Distributed Map's `ItemBatcher.BatchInput`).
pub const BATCH_INPUT: &str = "BatchInput";
/// The most items one batch may hold: with the function's per-object cap and its few fetches
/// in flight, a batch's memory stays bounded whatever the listing holds.
pub const MAX_BATCH_ITEMS: usize = 1000;
/// The most keys a report lists by name (the rest are counted).
pub const LISTED_KEYS: usize = 20;
/// S3's longest key, bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// The longest output prefix: S3's longest key less the `/` and the result object's name.
pub const MAX_PREFIX_BYTES: usize = MAX_KEY_BYTES - 1 - RESULT_NAME_BYTES;
/// `batch-<32 hex digits>.jsonl`.
const RESULT_NAME_BYTES: usize = RESULT_PREFIX.len() + 32 + RESULT_SUFFIX.len();
/// A result object's name starts so.
pub const RESULT_PREFIX: &str = "batch-";
/// And ends so.
pub const RESULT_SUFFIX: &str = ".jsonl";

/// Why a batch as a whole could not run (an item's own failure is in its result line).
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // documented by their messages
pub enum BatchError {
    #[error("not a batch event: {0}; expected {{\"Items\":[{{\"Key\":…}}], \"BatchInput\":{{\"bucket\":…, \"output\":\"s3://bucket/prefix/\"}}}}")]
    Invalid(String),
    #[error("cannot write the results: {0}")]
    Write(String),
    /// The deadline came first: what was done is written; the batch is a failure so that
    /// Step Functions retries it (the retry overwrites the same object) or counts its items
    /// against the tolerated failures.
    #[error("{not_done} of {items} items not reached before the deadline (first: {first}); the {done} done are in {output}: give the batch fewer items or the function more time")]
    Incomplete {
        items: usize,
        done: usize,
        not_done: usize,
        first: String,
        output: String,
    },
}

impl BatchError {
    /// The function error's `errorType`.
    pub fn error_type(&self) -> &'static str {
        match self {
            BatchError::Invalid(_) => "InvalidBatch",
            BatchError::Write(_) => "BatchWriteFailed",
            BatchError::Incomplete { .. } => "BatchIncomplete",
        }
    }

    /// The function error's message: at most [`MESSAGE_CHARS`] characters, whatever
    /// keys and answers went into it.
    pub fn message(&self) -> String {
        clip_to(&self.to_string(), MESSAGE_CHARS)
    }
}

/// One item as Distributed Map's S3 reader lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchItem {
    /// The object's key in `BatchInput.bucket`.
    #[serde(rename = "Key")]
    pub key: String,
    /// Its length, when the listing gave it: an item over the cap is refused without a GET.
    #[serde(rename = "Size", default)]
    pub size: Option<u64>,
}

/// Where the items are and where their results go.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchInput {
    /// The bucket the keys are in.
    pub bucket: String,
    /// `s3://bucket/prefix/`: the results go under it.
    pub output: String,
}

/// A batch event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchEvent {
    /// The images.
    #[serde(rename = "Items")]
    pub items: Vec<BatchItem>,
    /// Where.
    #[serde(rename = "BatchInput")]
    pub input: BatchInput,
}

/// Whether `payload` is a batch event (a top-level `Items`), as opposed to an HTTP event.
pub fn is_batch(payload: &str) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "Items")]
        items: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_str::<Probe>(payload).is_ok_and(|p| p.items.is_some())
}

impl BatchEvent {
    /// Parses and checks `payload`: at most [`MAX_BATCH_ITEMS`] items with non-empty keys, a
    /// bucket, and an output prefix `s3://bucket/prefix/`.
    pub fn parse(payload: &str) -> Result<(BatchEvent, S3Uri), BatchError> {
        let ev: BatchEvent =
            serde_json::from_str(payload).map_err(|e| BatchError::Invalid(clip(&e.to_string())))?;
        if ev.items.len() > MAX_BATCH_ITEMS {
            return Err(BatchError::Invalid(format!(
                "{} items; at most {MAX_BATCH_ITEMS} a batch (set the map's MaxItemsPerBatch lower)",
                ev.items.len()
            )));
        }
        if let Some(i) = ev
            .items
            .iter()
            .position(|it| it.key.is_empty() || it.key.len() > MAX_KEY_BYTES)
        {
            return Err(BatchError::Invalid(format!(
                "Items[{i}].Key is empty or over {MAX_KEY_BYTES} bytes (S3's longest key)"
            )));
        }
        if ev.input.bucket.is_empty() {
            return Err(BatchError::Invalid("BatchInput.bucket is empty".into()));
        }
        let result = result_uri(&ev.input.output, &ev.input.bucket, &ev.items)?;
        Ok((ev, result))
    }
}

/// The result object of a batch of `items` of `bucket` under `output` (`s3://bucket/prefix/`):
/// named by the hash of the input bucket and the keys (each length-prefixed, since a key may
/// hold any character), so the same batch always writes the same object and two batches never
/// share one.
pub fn result_uri(output: &str, bucket: &str, items: &[BatchItem]) -> Result<S3Uri, BatchError> {
    let bad = |why: &str| BatchError::Invalid(format!("BatchInput.output {}: {why}", clip(output)));
    let rest = output
        .strip_prefix("s3://")
        .ok_or_else(|| bad("it does not start with s3://"))?;
    let (out_bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if out_bucket.is_empty() {
        return Err(bad("the bucket is empty"));
    }
    let prefix = prefix.trim_end_matches('/');
    if prefix.len() > MAX_PREFIX_BYTES {
        return Err(bad(&format!(
            "the prefix is over {MAX_PREFIX_BYTES} bytes (S3's longest key less the result's name)"
        )));
    }
    if !prefix.is_empty() && prefix.split('/').any(|seg| matches!(seg, "" | "." | "..")) {
        return Err(bad("the prefix has an empty, `.` or `..` segment"));
    }
    let mut hash = Sha256::new();
    for part in std::iter::once(bucket).chain(items.iter().map(|it| it.key.as_str())) {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    let name = format!(
        "{RESULT_PREFIX}{}{RESULT_SUFFIX}",
        &hex::encode(hash.finalize())[..32]
    );
    Ok(S3Uri::join(out_bucket, prefix, &name))
}

/// What one item came to: a line of the result object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ItemResult {
    /// The object's key.
    pub key: String,
    /// The digit, where it was predicted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digit: Option<u8>,
    /// The label (the digit, as the class's name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The softmax, where it was predicted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probabilities: Option<Vec<f32>>,
    /// Why it was not, otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The weights that answered (their sha256): a re-run after a new release says so.
    pub model: String,
}

impl ItemResult {
    /// A predicted item: its label, the digit for a digit model, and the probabilities.
    pub fn predicted(
        key: String,
        label: String,
        digit: Option<u8>,
        probabilities: Vec<f32>,
        model: &str,
    ) -> Self {
        ItemResult {
            key,
            digit,
            label: Some(label),
            probabilities: Some(probabilities),
            error: None,
            model: model.to_owned(),
        }
    }

    /// A failed item and why (clipped to a message's length).
    pub fn failed(key: String, error: String, model: &str) -> Self {
        ItemResult {
            key,
            digit: None,
            label: None,
            probabilities: None,
            error: Some(clip_to(&error, MESSAGE_CHARS)),
            model: model.to_owned(),
        }
    }
}

/// What a batch did: the function's answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BatchReport {
    /// Items in the batch.
    pub items: usize,
    /// Items predicted.
    pub succeeded: usize,
    /// Items that failed, each with its reason in the result object.
    pub failed: usize,
    /// Items not reached: always 0 here, since a batch that did not reach every item is the
    /// error [`BatchError::Incomplete`] instead (kept so the answer says so outright).
    pub not_done: usize,
    /// The first failures: key and reason.
    pub failures: Vec<(String, String)>,
    /// Predictions per label.
    pub labels: BTreeMap<String, usize>,
    /// The result object.
    pub output: String,
    /// The weights' id (sha256).
    pub model: String,
    /// Wall time, ms.
    pub duration_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn items(keys: &[&str]) -> Vec<BatchItem> {
        keys.iter()
            .map(|k| BatchItem {
                key: (*k).to_owned(),
                size: None,
            })
            .collect()
    }

    #[test]
    fn batch_events_are_told_from_http_events() {
        assert!(is_batch(r#"{"Items":[],"BatchInput":{}}"#));
        assert!(!is_batch(
            r#"{"version":"2.0","rawPath":"/predict","requestContext":{}}"#
        ));
        assert!(!is_batch("[1,2]"));
        assert!(!is_batch("not json"));
    }

    #[test]
    fn the_result_object_is_named_by_the_keys_and_under_the_prefix() {
        let name = |out: &str, bucket: &str, keys: &[&str]| result_uri(out, bucket, &items(keys));
        let a = name("s3://out/run-1/", "in", &["a.png", "b.png"]).unwrap();
        let again = name("s3://out/run-1", "in", &["a.png", "b.png"]).unwrap();
        assert_eq!(a, again);
        assert_eq!(a.bucket, "out");
        assert!(
            a.key.starts_with("run-1/batch-") && a.key.ends_with(".jsonl"),
            "{a}"
        );
        // Other keys, another input bucket, keys that join to the same text: other objects.
        for other in [
            name("s3://out/run-1/", "in", &["a.png", "c.png"]),
            name("s3://out/run-1/", "other", &["a.png", "b.png"]),
            name("s3://out/run-1/", "in", &["a.png\nb.png"]),
        ] {
            assert_ne!(other.unwrap(), a);
        }
        let root = name("s3://out", "in", &["a.png"]).unwrap();
        assert!(root.key.starts_with("batch-"), "{root}");
        let long = format!("s3://out/{}", "p".repeat(MAX_PREFIX_BYTES + 1));
        for bad in [
            "out/run",
            "s3:///x",
            "https://x/y",
            "s3://out/a/../b/",
            "s3://out/a//b/",
            "s3://out/./b",
            long.as_str(),
        ] {
            assert!(name(bad, "in", &["a"]).is_err(), "{bad}");
        }
        // The longest prefix allowed still makes a key S3 takes.
        let longest = format!("s3://out/{}", "p".repeat(MAX_PREFIX_BYTES));
        let uri = name(&longest, "in", &["a"]).unwrap();
        assert!(uri.key.len() <= MAX_KEY_BYTES, "{}", uri.key.len());
    }

    #[test]
    fn errors_stay_small_whatever_went_into_them() {
        let e = BatchError::Incomplete {
            items: 1000,
            done: 1,
            not_done: 999,
            first: "k".repeat(5000),
            output: format!("s3://o/{}", "p".repeat(5000)),
        };
        assert_eq!(e.error_type(), "BatchIncomplete");
        assert!(e.message().chars().count() < MESSAGE_CHARS + 40);
    }

    #[test]
    fn a_bad_event_says_what_a_batch_is() {
        let too_many: Vec<serde_json::Value> = (0..=MAX_BATCH_ITEMS)
            .map(|i| json!({"Key": format!("{i}.png")}))
            .collect();
        for (payload, says) in [
            (json!({"Items": "x"}), "expected"),
            (
                json!({"Items": [{"Key": ""}], "BatchInput": {"bucket": "b", "output": "s3://o/"}}),
                "Key is empty",
            ),
            (
                json!({"Items": [{"Key": "k".repeat(MAX_KEY_BYTES + 1)}], "BatchInput": {"bucket": "b", "output": "s3://o/"}}),
                "S3's longest key",
            ),
            (
                json!({"Items": [], "BatchInput": {"bucket": "", "output": "s3://o/"}}),
                "bucket is empty",
            ),
            (
                json!({"Items": [], "BatchInput": {"bucket": "b", "output": "o/"}}),
                "s3://",
            ),
            (
                json!({"Items": too_many, "BatchInput": {"bucket": "b", "output": "s3://o/"}}),
                "MaxItemsPerBatch",
            ),
        ] {
            let e = BatchEvent::parse(&payload.to_string()).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
        }
        let (ev, out) = BatchEvent::parse(
            r#"{"Items":[{"Key":"d/0.png","Size":212,"Etag":"\"x\""}],"BatchInput":{"bucket":"b","output":"s3://o/r/"}}"#,
        )
        .unwrap();
        assert_eq!(ev.items[0].size, Some(212));
        assert_eq!(out.bucket, "o");
    }
}
