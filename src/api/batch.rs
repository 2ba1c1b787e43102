//! predict's batch event (its wire format: [`crate::batch`]): a list of S3 images scored in
//! one direct invocation, as Step Functions' Distributed Map hands a batch to a child, with the
//! results written to S3 as one JSON-lines object per batch.
//!
//! Each image gets the API's decoder limits and pixel budget, and its object is refused from
//! its length before it is read ([`MAX_OBJECT_BYTES`]). One bad image fails its item, not the
//! batch. A batch that runs into its deadline stops fetching, writes what it did and reports
//! the keys it did not reach.

use super::predict::{PredictService, MAX_BODY_BYTES};
pub use crate::batch::*;
use crate::clip::clip;
use crate::store::{S3Uri, Store, StoreError};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The largest object an item may be: the largest body the API accepts (Lambda's 6 MB
/// request payload), so that a batch accepts exactly the images a request would.
pub const MAX_OBJECT_BYTES: u64 = MAX_BODY_BYTES as u64;
/// Objects fetched at once.
pub const CONCURRENT_GETS: usize = 8;
/// Kept back from the deadline to write the results and answer.
pub const WRITE_RESERVE: Duration = Duration::from_secs(3);

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
            first: clip(first),
            output: result.to_string(),
        });
    }
    let mut labels = BTreeMap::new();
    let mut failures = Vec::new();
    for r in &results {
        match (&r.label, &r.error) {
            (Some(l), _) => *labels.entry(l.clone()).or_insert(0) += 1,
            (None, Some(e)) => failures.push((clip(&r.key), e.clone())),
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
                    Ok(a) => ItemResult::predicted(key, a.label, a.digit, a.probabilities, model),
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

    /// A batch that reaches its deadline fetches nothing more and names every key it did not
    /// reach (here: all of them, the deadline being already within the write reserve); the
    /// store, pointing nowhere, is never called.
    #[test]
    fn a_batch_at_its_deadline_fetches_nothing_and_lists_what_it_did_not_do() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let service = PredictService::new(
            crate::net::Network::seed(crate::model::Cnn::init(1).unwrap()).unwrap(),
            "m".into(),
        )
        .unwrap();
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
        let service = PredictService::new(
            crate::net::Network::seed(crate::model::Cnn::init(1).unwrap()).unwrap(),
            "m".into(),
        )
        .unwrap();
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
}
