//! The train function's work, apart from the Lambda runtime: parse and check the request, load
//! MNIST once per process, train until done or until the invocation's deadline comes near, and
//! save the weights (and, in S3, their card) where the function is configured to. The binary
//! (`functions/train`) only wires this to `lambda_runtime`.

use super::train::{InvalidRequest, StopAt, TrainRequest, TrainResponse};
use crate::card::ModelCard;
use crate::data::{self, Mnist};
use crate::metrics::{self, Unit};
use crate::store::{S3Uri, Store};
use crate::train::{self, EpochMetrics, TrainObserver};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The function's errors; [`TrainFnError::error_type`] is the `errorType` a caller branches on.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TrainFnError {
    /// The event asks for something the function does not do.
    #[error("{0}")]
    InvalidRequest(String),
    /// MNIST could not be read.
    #[error("{0}")]
    DataUnavailable(String),
    /// Training itself failed.
    #[error("{0}")]
    TrainingFailed(String),
    /// The weights could not be stored.
    #[error("{0}")]
    StoreFailed(String),
}

impl TrainFnError {
    /// The `errorType` of the function error.
    pub fn error_type(&self) -> &'static str {
        match self {
            TrainFnError::InvalidRequest(_) => "InvalidRequest",
            TrainFnError::DataUnavailable(_) => "DataUnavailable",
            TrainFnError::TrainingFailed(_) => "TrainingFailed",
            TrainFnError::StoreFailed(_) => "StoreFailed",
        }
    }
}

impl From<InvalidRequest> for TrainFnError {
    fn from(e: InvalidRequest) -> Self {
        TrainFnError::InvalidRequest(e.0)
    }
}

/// Where trained weights go.
pub enum Destination {
    /// A local folder (the function's `/tmp`): the weights file only.
    Dir(PathBuf),
    /// `s3://bucket/prefix/`: the weights and their model card.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix.
        prefix: String,
        /// The client.
        store: Store,
    },
}

impl Destination {
    /// `MODEL_BUCKET` (and `MODEL_PREFIX`, default `models`) when set, else the temp folder.
    pub async fn from_env() -> Self {
        match std::env::var("MODEL_BUCKET").ok().filter(|b| !b.is_empty()) {
            Some(bucket) => Destination::S3 {
                bucket,
                prefix: std::env::var("MODEL_PREFIX").unwrap_or_else(|_| "models".into()),
                store: Store::from_env().await,
            },
            None => Destination::Dir(std::env::temp_dir()),
        }
    }

    /// Writes `bytes` as `file_name` (and the card beside it in S3); returns where the weights
    /// and the card went.
    async fn save(
        &self,
        file_name: &str,
        bytes: Vec<u8>,
        card: &ModelCard,
    ) -> Result<(String, Option<String>), TrainFnError> {
        let failed = |e: &dyn std::fmt::Display| TrainFnError::StoreFailed(e.to_string());
        match self {
            Destination::S3 {
                bucket,
                prefix,
                store,
            } => {
                let weights = S3Uri::join(bucket, prefix, file_name);
                let card_name = ModelCard::path_for(Path::new(file_name));
                let card_uri = S3Uri::join(bucket, prefix, &card_name.to_string_lossy());
                let card_json = serde_json::to_vec_pretty(card).map_err(|e| failed(&e))?;
                store
                    .put(&weights, bytes, "application/octet-stream")
                    .await
                    .map_err(|e| failed(&e))?;
                store
                    .put(&card_uri, card_json, "application/json")
                    .await
                    .map_err(|e| failed(&e))?;
                Ok((weights.to_string(), Some(card_uri.to_string())))
            }
            Destination::Dir(dir) => {
                let path = dir.join(file_name);
                std::fs::write(&path, &bytes).map_err(|e| {
                    TrainFnError::StoreFailed(format!("cannot write {}: {e}", path.display()))
                })?;
                Ok((path.display().to_string(), None))
            }
        }
    }
}

/// The weights' file name: content-addressed, so two runs never overwrite each other.
pub fn weights_file_name(sha256: &str) -> String {
    format!("mnist-cnn-{}.safetensors", &sha256[..sha256.len().min(16)])
}

/// One process's state across invocations.
pub struct TrainService {
    mnist_dir: PathBuf,
    /// Loaded by the first invocation that needs it, kept for the next ones.
    mnist: Mutex<Option<Arc<Mnist>>>,
    destination: Destination,
    /// The metrics' `FunctionName` dimension.
    fn_name: String,
}

impl TrainService {
    /// Trains on MNIST from `mnist_dir` (read once, at the first request), stores to
    /// `destination`, names itself `fn_name` in its metrics.
    pub fn new(mnist_dir: PathBuf, destination: Destination, fn_name: String) -> Self {
        Self {
            mnist_dir,
            mnist: Mutex::new(None),
            destination,
            fn_name,
        }
    }

    /// Where it reads MNIST.
    pub fn mnist_dir(&self) -> &Path {
        &self.mnist_dir
    }

    fn mnist(&self) -> Result<Arc<Mnist>, TrainFnError> {
        let mut slot = self.mnist.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let m = Arc::new(data::load(&self.mnist_dir).map_err(|e| {
            TrainFnError::DataUnavailable(format!("{e} (MNIST_DIR={})", self.mnist_dir.display()))
        })?);
        *slot = Some(m.clone());
        Ok(m)
    }

    /// One invocation: `payload` is the event's raw JSON text (so that what serde cannot hold,
    /// 1e400 or nesting past 128, is an `InvalidRequest` of ours); `deadline_ms` the runtime's
    /// `Lambda-Runtime-Deadline-Ms`. Training runs on a blocking thread.
    pub async fn handle(
        self: &Arc<Self>,
        payload: &str,
        deadline_ms: u64,
    ) -> Result<TrainResponse, TrainFnError> {
        let config = TrainRequest::parse_text(payload)?.config()?;
        let stop_at = StopAt::from_deadline_ms(deadline_ms, SystemTime::now());
        let left_ms = stop_at
            .left(SystemTime::now())
            .map(|d| d.as_millis() as u64);
        tracing::info!(?config, left_ms, "training");
        let this = self.clone();
        let run_config = config.clone();
        let (model, metrics) = tokio::task::spawn_blocking(move || {
            let mnist = this.mnist()?;
            let mut observer = DeadlineObserver {
                stop_at,
                stopped_early: false,
            };
            train::train(&mnist.train, &mnist.test, &run_config, &mut observer)
                .map_err(|e| TrainFnError::TrainingFailed(e.to_string()))
        })
        .await
        .map_err(|e| TrainFnError::TrainingFailed(format!("the training task failed: {e}")))??;

        let bytes = model
            .to_safetensors()
            .map_err(|e| TrainFnError::TrainingFailed(e.to_string()))?;
        let sha = crate::model::weights::sha256_hex(&bytes);
        let file_name = weights_file_name(&sha);
        let card = ModelCard::new(&config, &metrics, Path::new(&file_name), &sha);
        let (weights, card_uri) = self.destination.save(&file_name, bytes, &card).await?;
        tracing::info!(test_accuracy = metrics.test_accuracy, epochs = metrics.epochs, epochs_completed = metrics.epochs_completed, completed = metrics.completed, seconds = metrics.seconds, weights = %weights, "trained");
        metrics::emit(
            &[("FunctionName", &self.fn_name)],
            &[
                ("TestAccuracy", Unit::None, metrics.test_accuracy),
                ("TrainSeconds", Unit::Seconds, metrics.seconds),
                (
                    "TrainSamplesPerSecond",
                    Unit::None,
                    metrics.samples_per_second,
                ),
            ],
        );
        Ok(TrainResponse::new(&metrics, weights, sha, card_uri))
    }
}

/// Logs each epoch and stops training while there is still time to evaluate and answer.
struct DeadlineObserver {
    stop_at: StopAt,
    stopped_early: bool,
}

impl TrainObserver for DeadlineObserver {
    fn epoch_done(&mut self, m: &EpochMetrics, epochs: usize) {
        tracing::info!(
            epoch = m.epoch,
            epochs,
            train_loss = m.train_loss,
            seconds = m.seconds,
            samples_per_second = m.samples_per_second,
            "epoch done"
        );
    }

    fn should_stop(&mut self) -> bool {
        if !self.stopped_early && self.stop_at.reached(SystemTime::now()) {
            tracing::warn!("stopping training early to answer before the invocation's deadline");
            self.stopped_early = true;
        }
        self.stopped_early
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn mnist_dir() -> PathBuf {
        std::env::var_os("MNIST_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/mnist"),
            PathBuf::from,
        )
    }

    #[test]
    fn a_short_run_saves_content_addressed_weights_in_the_folder() {
        let out = tempfile::tempdir().unwrap();
        let service = Arc::new(TrainService::new(
            mnist_dir(),
            Destination::Dir(out.path().to_owned()),
            "train".into(),
        ));
        let r = run(service.handle(r#"{"epochs":1,"limit":256,"batch_size":32}"#, 0)).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        let sha = v["metrics"]["weights_sha256"].as_str().unwrap().to_owned();
        let weights = out.path().join(weights_file_name(&sha));
        assert_eq!(v["metrics"]["weights"], weights.display().to_string());
        let bytes = std::fs::read(&weights).unwrap();
        assert_eq!(crate::model::weights::sha256_hex(&bytes), sha);
    }

    #[test]
    fn bad_requests_and_missing_data_are_typed_errors() {
        let empty = tempfile::tempdir().unwrap();
        let service = Arc::new(TrainService::new(
            empty.path().to_owned(),
            Destination::Dir(empty.path().to_owned()),
            "train".into(),
        ));
        let e = run(service.handle(r#"{"epochs":0}"#, 0)).unwrap_err();
        assert_eq!(e.error_type(), "InvalidRequest");
        let e = run(service.handle("{\"limit\": 1e400}", 0)).unwrap_err();
        assert_eq!(e.error_type(), "InvalidRequest");
        let e = run(service.handle(r#"{"limit":100}"#, 0)).unwrap_err();
        assert_eq!(e.error_type(), "DataUnavailable");
        assert!(e.to_string().contains("MNIST_DIR="), "{e}");
    }
}
