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
use crate::store::{S3Uri, Store, StoreError};
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
const LISTED_KEYS: usize = 20;
/// S3's longest key, bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// The longest output prefix: S3's longest key less the `/` and the result object's name.
pub const MAX_PREFIX_BYTES: usize = MAX_KEY_BYTES - 1 - RESULT_NAME_BYTES;
/// `batch-<32 hex digits>.jsonl`.
const RESULT_NAME_BYTES: usize = "batch-".len() + 32 + ".jsonl".len();

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

    /// The function error's message: at most [`super::MESSAGE_CHARS`] characters, whatever
    /// keys and answers went into it.
    pub fn message(&self) -> String {
        super::clip_to(&self.to_string(), super::MESSAGE_CHARS)
    }
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
    let bad = |why: &str| {
        BatchError::Invalid(format!("BatchInput.output {}: {why}", super::clip(output)))
    };
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
    let name = format!("batch-{}.jsonl", &hex::encode(hash.finalize())[..32]);
    Ok(S3Uri::join(out_bucket, prefix, &name))
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
    /// The weights that answered (their sha256): a re-run after a new release says so.
    pub model: String,
}

impl ItemResult {
    fn predicted(key: String, p: Prediction, model: &str) -> Self {
        ItemResult {
            key,
            digit: Some(p.digit),
            label: Some(p.digit.to_string()),
            probabilities: Some(p.probabilities.to_vec()),
            error: None,
            model: model.to_owned(),
        }
    }

    fn failed(key: String, error: String, model: &str) -> Self {
        ItemResult {
            key,
            digit: None,
            label: None,
            probabilities: None,
            error: Some(super::clip_to(&error, super::MESSAGE_CHARS)),
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
    // Nothing reached: writing would replace an earlier complete result with an empty one.
    if !results.is_empty() {
        let mut body = Vec::new();
        for r in &results {
            // An ItemResult always serializes.
            serde_json::to_writer(&mut body, r).map_err(|e| BatchError::Write(e.to_string()))?;
            body.push(b'\n');
        }
        tokio::time::timeout_at(
            deadline.into(),
            store.put(&result, body, "application/x-ndjson"),
        )
        .await
        .map_err(|_| BatchError::Write(format!("{result}: the deadline came first")))?
        .map_err(|e| BatchError::Write(e.to_string()))?;
    }
    if let Some(first) = not_done.first() {
        return Err(BatchError::Incomplete {
            items: results.len() + not_done.len(),
            done: results.len(),
            not_done: not_done.len(),
            first: super::clip(first),
            output: result.to_string(),
        });
    }
    let mut labels = BTreeMap::new();
    let mut failures = Vec::new();
    for r in &results {
        match (&r.label, &r.error) {
            (Some(l), _) => *labels.entry(l.clone()).or_insert(0) += 1,
            (None, Some(e)) => failures.push((super::clip(&r.key), e.clone())),
            (None, None) => {}
        }
    }
    let failed = failures.len();
    failures.truncate(LISTED_KEYS);
    let report = BatchReport {
        items: results.len(),
        succeeded: results.len() - failed,
        failed,
        not_done: 0,
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
    let model = service.model_id();
    let stop = deadline.checked_sub(WRITE_RESERVE).unwrap_or(deadline);
    let bucket = &event.input.bucket;
    let mut results: Vec<ItemResult> = Vec::with_capacity(event.items.len());
    let mut not_done: Vec<String> = Vec::new();
    for chunk in event.items.chunks(CONCURRENT_GETS) {
        if !not_done.is_empty() || Instant::now() >= stop {
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
                if listed_too_large {
                    // The store's own refusal, as if the GET had said the length.
                    let refused = StoreError::TooLarge {
                        uri: uri.to_string(),
                        max: MAX_OBJECT_BYTES,
                    };
                    return (i, Some(Err(refused.to_string())));
                }
                // A fetch still running at `stop` is abandoned: the item is not done.
                let fetched =
                    tokio::time::timeout_at(stop.into(), store.get_capped(&uri, MAX_OBJECT_BYTES))
                        .await
                        .ok()
                        .map(|r| r.map_err(|e| e.to_string()));
                (i, fetched)
            });
        }
        // Each item's fetch, in the chunk's order; `None`: never heard of (its task
        // panicked, which a fetch cannot do on its own): that item fails, not the batch.
        let mut heard: Vec<Option<Option<Fetched>>> = vec![None; chunk.len()];
        while let Some(joined) = fetches.join_next().await {
            if let Ok((i, fetched)) = joined {
                heard[i] = Some(fetched);
            }
        }
        for (it, bytes) in chunk.iter().zip(heard) {
            let key = it.key.clone();
            // Decoding is bounded per image, not per batch: past `stop`, leave the rest.
            if !not_done.is_empty() || Instant::now() >= stop {
                not_done.push(key);
                continue;
            }
            results.push(match bytes {
                None => ItemResult::failed(key, "the fetch failed unexpectedly".into(), model),
                Some(None) => {
                    not_done.push(key);
                    continue;
                }
                Some(Some(bytes)) => match bytes.and_then(|b| service.predict_image(&b)) {
                    Ok(p) => ItemResult::predicted(key, p, model),
                    Err(e) => ItemResult::failed(key, e, model),
                },
            });
        }
    }
    (results, not_done)
}

/// An object's bytes, or why they could not be read; `None` in its place: abandoned at the
/// deadline.
type Fetched = Result<Vec<u8>, String>;

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

    /// Regression: a batch that reached nothing (the deadline already within the write
    /// reserve) writes nothing and fails as incomplete, counting every item of the batch.
    #[test]
    fn a_batch_that_reached_nothing_writes_nothing_and_counts_every_item() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let service = PredictService::new(crate::model::Cnn::init(1).unwrap(), "m".into());
        let (event, result) = BatchEvent::parse(
            &json!({
                "Items": (0..20).map(|i| json!({"Key": format!("{i}.png")})).collect::<Vec<_>>(),
                "BatchInput": {"bucket": "b", "output": "s3://o/r/"},
            })
            .to_string(),
        )
        .unwrap();
        // The store points nowhere: a write would be BatchWriteFailed.
        let e = rt
            .block_on(async {
                let store = Store::with_endpoint("http://127.0.0.1:9", "us-east-1", "k", "s").await;
                run(
                    &service,
                    &store,
                    event,
                    result,
                    Instant::now() + WRITE_RESERVE / 2,
                )
                .await
            })
            .unwrap_err();
        match e {
            BatchError::Incomplete {
                items,
                done,
                not_done,
                ref first,
                ..
            } => assert_eq!(
                (items, done, not_done, first.as_str()),
                (20, 0, 20, "0.png")
            ),
            other => panic!("{other}"),
        }
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
        assert!(e.message().chars().count() < crate::api::MESSAGE_CHARS + 40);
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
