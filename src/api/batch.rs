//! predict's batch event: a list of S3 images scored in one direct invocation, as Step
//! Functions' Distributed Map hands a batch to a child (its `ItemBatcher` shape), with the
//! results written to S3 as one JSON-lines object per batch.
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
//! go. Each image gets the API's decoder limits and pixel budget, and its object is refused
//! from its length before it is read ([`MAX_OBJECT_BYTES`]). One bad image fails its item, not
//! the batch. A batch that runs into its deadline stops fetching, writes what it did and
//! reports the keys it did not reach. The result object's name is the hash of the batch's keys,
//! so a retried batch overwrites its own result instead of adding a second one.

use super::predict::{PredictService, MAX_BODY_BYTES};
use crate::predict::Prediction;
use crate::store::{S3Uri, Store};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The most items one batch may hold: with [`MAX_OBJECT_BYTES`] each and
/// [`CONCURRENT_GETS`] in flight, a batch's memory stays bounded whatever the listing holds.
pub const MAX_BATCH_ITEMS: usize = 1000;
/// The largest object an item may be: the largest body the API accepts (Lambda's 6 MB
/// request payload), so that a batch accepts exactly the images a request would.
pub const MAX_OBJECT_BYTES: u64 = MAX_BODY_BYTES as u64;
/// Objects fetched at once.
pub const CONCURRENT_GETS: usize = 8;
/// Kept back from the deadline to write the results and answer.
pub const WRITE_RESERVE: Duration = Duration::from_secs(3);
/// The most keys a report lists by name (the rest are counted).
const LISTED_KEYS: usize = 100;

/// Why a batch as a whole could not run (an item's own failure is in its result line).
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // documented by their messages
pub enum BatchError {
    #[error("not a batch event: {0}; expected {{\"Items\":[{{\"Key\":…}}], \"BatchInput\":{{\"bucket\":…, \"output\":\"s3://bucket/prefix/\"}}}}")]
    Invalid(String),
    #[error("cannot write the results: {0}")]
    Write(String),
}

/// One item as Distributed Map's S3 reader lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchItem {
    /// The object's key in `BatchInput.bucket`.
    #[serde(rename = "Key")]
    pub key: String,
    /// Its length, when the listing gave it: an item over the cap is refused without a GET.
    #[serde(rename = "Size", default)]
    pub size: Option<u64>,
}

/// Where the items are and where their results go.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchInput {
    /// The bucket the keys are in.
    pub bucket: String,
    /// `s3://bucket/prefix/`: the results go under it.
    pub output: String,
}

/// A batch event.
#[derive(Debug, Clone, Deserialize)]
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
        let ev: BatchEvent = serde_json::from_str(payload)
            .map_err(|e| BatchError::Invalid(super::clip(&e.to_string())))?;
        if ev.items.len() > MAX_BATCH_ITEMS {
            return Err(BatchError::Invalid(format!(
                "{} items; at most {MAX_BATCH_ITEMS} a batch (set the map's MaxItemsPerBatch lower)",
                ev.items.len()
            )));
        }
        if let Some(i) = ev.items.iter().position(|it| it.key.is_empty()) {
            return Err(BatchError::Invalid(format!("Items[{i}] has an empty Key")));
        }
        if ev.input.bucket.is_empty() {
            return Err(BatchError::Invalid("BatchInput.bucket is empty".into()));
        }
        let result = result_uri(&ev.input.output, &ev.items)?;
        Ok((ev, result))
    }
}

/// The result object of a batch of `items` under `output` (`s3://bucket/prefix/`): named by
/// the hash of the keys, so the same batch always writes the same object.
pub fn result_uri(output: &str, items: &[BatchItem]) -> Result<S3Uri, BatchError> {
    let bad = |why: &str| {
        BatchError::Invalid(format!("BatchInput.output {}: {why}", super::clip(output)))
    };
    let rest = output
        .strip_prefix("s3://")
        .ok_or_else(|| bad("it does not start with s3://"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(bad("the bucket is empty"));
    }
    let mut hash = Sha256::new();
    for it in items {
        hash.update(it.key.as_bytes());
        hash.update(b"\n");
    }
    let name = format!("batch-{}.jsonl", &hex::encode(hash.finalize())[..32]);
    Ok(S3Uri::join(bucket, prefix, &name))
}

/// What one item came to: a line of the result object.
#[derive(Debug, Clone, Serialize, PartialEq)]
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
}

impl ItemResult {
    fn predicted(key: String, p: Prediction) -> Self {
        ItemResult {
            key,
            digit: Some(p.digit),
            label: Some(p.digit.to_string()),
            probabilities: Some(p.probabilities.to_vec()),
            error: None,
        }
    }

    fn failed(key: String, error: String) -> Self {
        ItemResult {
            key,
            digit: None,
            label: None,
            probabilities: None,
            error: Some(error),
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
    /// Items not reached before the deadline (not in the result object).
    pub not_done: usize,
    /// The first of them by key: run them again in a smaller batch.
    pub not_done_keys: Vec<String>,
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

/// Scores `event`'s items with `service`, reading them from and writing the results to S3
/// through `store`, stopping [`WRITE_RESERVE`] before `deadline`.
pub async fn run(
    service: &PredictService,
    store: &Store,
    event: BatchEvent,
    result: S3Uri,
    deadline: Instant,
) -> Result<BatchReport, BatchError> {
    let start = Instant::now();
    let (results, not_done) = score(service, store, &event, deadline).await;
    let mut body = Vec::new();
    for r in &results {
        // An ItemResult always serializes.
        serde_json::to_writer(&mut body, r).map_err(|e| BatchError::Write(e.to_string()))?;
        body.push(b'\n');
    }
    store
        .put(&result, body, "application/x-ndjson")
        .await
        .map_err(|e| BatchError::Write(e.to_string()))?;
    let mut labels = BTreeMap::new();
    let mut failures = Vec::new();
    for r in &results {
        match (&r.label, &r.error) {
            (Some(l), _) => *labels.entry(l.clone()).or_insert(0) += 1,
            (None, Some(e)) => failures.push((r.key.clone(), e.clone())),
            (None, None) => {}
        }
    }
    let failed = failures.len();
    failures.truncate(LISTED_KEYS);
    let report = BatchReport {
        items: results.len() + not_done.len(),
        succeeded: results.len() - failed,
        failed,
        not_done: not_done.len(),
        not_done_keys: not_done.into_iter().take(LISTED_KEYS).collect(),
        failures,
        labels,
        output: result.to_string(),
        model: service.model_id().to_owned(),
        duration_ms: start.elapsed().as_secs_f64() * 1e3,
    };
    tracing::info!(
        items = report.items,
        succeeded = report.succeeded,
        failed = report.failed,
        not_done = report.not_done,
        output = %report.output,
        duration_ms = report.duration_ms,
        "batch"
    );
    Ok(report)
}

/// The items' results in the batch's order, and the keys not reached: a chunk of
/// [`CONCURRENT_GETS`] objects is fetched only while [`WRITE_RESERVE`] is left before
/// `deadline`.
async fn score(
    service: &PredictService,
    store: &Store,
    event: &BatchEvent,
    deadline: Instant,
) -> (Vec<ItemResult>, Vec<String>) {
    let bucket = &event.input.bucket;
    let mut results: Vec<ItemResult> = Vec::with_capacity(event.items.len());
    let mut not_done: Vec<String> = Vec::new();
    for chunk in event.items.chunks(CONCURRENT_GETS) {
        if !not_done.is_empty() || Instant::now() + WRITE_RESERVE >= deadline {
            not_done.extend(chunk.iter().map(|it| it.key.clone()));
            continue;
        }
        let mut fetches = tokio::task::JoinSet::new();
        for (i, it) in chunk.iter().enumerate() {
            let store = store.clone();
            let uri = S3Uri {
                bucket: bucket.clone(),
                key: it.key.clone(),
            };
            let listed_too_large = it.size.is_some_and(|n| n > MAX_OBJECT_BYTES);
            fetches.spawn(async move {
                let bytes = if listed_too_large {
                    Err(format!(
                        "the object is over {MAX_OBJECT_BYTES} bytes (the API's limit): not read"
                    ))
                } else {
                    store
                        .get_capped(&uri, MAX_OBJECT_BYTES)
                        .await
                        .map_err(|e| e.to_string())
                };
                (i, bytes)
            });
        }
        let mut fetched: Vec<(usize, Result<Vec<u8>, String>)> = fetches.join_all().await;
        fetched.sort_by_key(|(i, _)| *i);
        for (i, bytes) in fetched {
            let key = chunk[i].key.clone();
            results.push(match bytes.and_then(|b| service.predict_image(&b)) {
                Ok(p) => ItemResult::predicted(key, p),
                Err(e) => ItemResult::failed(key, e),
            });
        }
    }
    (results, not_done)
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

    /// A batch that reaches its deadline fetches nothing more and names every key it did not
    /// reach (here: all of them, the deadline being already within the write reserve); the
    /// store, pointing nowhere, is never called.
    #[test]
    fn a_batch_at_its_deadline_fetches_nothing_and_lists_what_it_did_not_do() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let service = PredictService::new(crate::model::Cnn::init(1).unwrap(), "m".into());
        let (event, _) = BatchEvent::parse(
            &json!({
                "Items": (0..20).map(|i| json!({"Key": format!("{i}.png")})).collect::<Vec<_>>(),
                "BatchInput": {"bucket": "b", "output": "s3://o/r/"},
            })
            .to_string(),
        )
        .unwrap();
        let (results, not_done) = rt.block_on(async {
            let store = Store::with_endpoint("http://127.0.0.1:9", "us-east-1", "k", "s").await;
            score(&service, &store, &event, Instant::now() + WRITE_RESERVE / 2).await
        });
        assert!(results.is_empty());
        assert_eq!(not_done.len(), 20);
        assert_eq!(not_done[19], "19.png");
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
        let a = result_uri("s3://out/run-1/", &items(&["a.png", "b.png"])).unwrap();
        let again = result_uri("s3://out/run-1", &items(&["a.png", "b.png"])).unwrap();
        let other = result_uri("s3://out/run-1/", &items(&["a.png", "c.png"])).unwrap();
        assert_eq!(a, again);
        assert_ne!(a, other);
        assert_eq!(a.bucket, "out");
        assert!(
            a.key.starts_with("run-1/batch-") && a.key.ends_with(".jsonl"),
            "{a}"
        );
        let root = result_uri("s3://out", &items(&["a.png"])).unwrap();
        assert!(root.key.starts_with("batch-"), "{root}");
        for bad in ["out/run", "s3:///x", "https://x/y"] {
            assert!(result_uri(bad, &items(&["a"])).is_err(), "{bad}");
        }
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
                "empty Key",
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
