//! The `train` Lambda function: a direct invocation trains the seed's CNN and answers in the
//! seed handler's shape, plus metrics. `{}` is the seed's run: 5 epochs, Adam 1e-3, batch 32.

use lambda_cnn::api::train::{InvalidRequest, StopAt, TrainRequest, TrainResponse};
use lambda_cnn::card::ModelCard;
use lambda_cnn::data::{self, Mnist};
use lambda_cnn::metrics::{self, Unit};
use lambda_cnn::store::{S3Uri, Store};
use lambda_cnn::train::{self, EpochMetrics, TrainObserver};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::value::RawValue;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The function's errors, each with the `errorType` a caller can branch on.
#[derive(Debug)]
enum FnError {
    InvalidRequest(String),
    DataUnavailable(String),
    TrainingFailed(String),
    StoreFailed(String),
}

impl FnError {
    /// The `errorType` and `errorMessage` Lambda reports.
    fn parts(&self) -> (&'static str, &str) {
        match self {
            FnError::InvalidRequest(m) => ("InvalidRequest", m),
            FnError::DataUnavailable(m) => ("DataUnavailable", m),
            FnError::TrainingFailed(m) => ("TrainingFailed", m),
            FnError::StoreFailed(m) => ("StoreFailed", m),
        }
    }
}

impl From<FnError> for Diagnostic {
    fn from(e: FnError) -> Self {
        let (error_type, error_message) = e.parts();
        Diagnostic {
            error_type: error_type.into(),
            error_message: error_message.into(),
        }
    }
}

impl From<InvalidRequest> for FnError {
    fn from(e: InvalidRequest) -> Self {
        FnError::InvalidRequest(e.0)
    }
}

struct State {
    mnist_dir: PathBuf,
    /// Loaded on the first invocation and kept for the next ones.
    mnist: Mutex<Option<Arc<Mnist>>>,
    /// Where trained weights go: `MODEL_BUCKET` (+ `MODEL_PREFIX`), else the local /tmp.
    s3: Option<S3Target>,
    fn_name: String,
}

struct S3Target {
    bucket: String,
    prefix: String,
    store: Store,
}

fn main() -> Result<(), lambda_runtime::Error> {
    let exec = Instant::now();
    lambda_cnn::runtime::init_threads();
    lambda_cnn::runtime::init_json_logging();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let s3 = match std::env::var("MODEL_BUCKET").ok().filter(|b| !b.is_empty()) {
            Some(bucket) => Some(S3Target {
                bucket,
                prefix: std::env::var("MODEL_PREFIX").unwrap_or_else(|_| "models".into()),
                store: Store::from_env().await,
            }),
            None => None,
        };
        let state = Arc::new(State {
            mnist_dir: lambda_cnn::data::dir_from_env(),
            mnist: Mutex::new(None),
            s3,
            fn_name: std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "train".into()),
        });
        tracing::info!(init_ms = exec.elapsed().as_secs_f64() * 1e3, mnist_dir = %state.mnist_dir.display(), "ready");
        // The payload arrives as raw JSON text so that what serde cannot hold (1e400, nesting
        // past 128) is an InvalidRequest of ours, not the runtime's DeserializeError.
        lambda_runtime::run(service_fn(|event: LambdaEvent<Box<RawValue>>| {
            let state = state.clone();
            async move {
                let start = Instant::now();
                let result = handle(&state, event).await;
                let duration_ms = start.elapsed().as_secs_f64() * 1e3;
                match &result {
                    Ok(r) => tracing::info!(duration_ms, completed = r.completed, outcome = "ok", "invocation"),
                    Err(e) => {
                        let (error_type, message) = e.parts();
                        tracing::warn!(duration_ms, outcome = error_type, message, "invocation failed");
                    }
                }
                result
            }
        }))
        .await
    })
}

async fn handle(
    state: &Arc<State>,
    event: LambdaEvent<Box<RawValue>>,
) -> Result<TrainResponse, FnError> {
    let config = TrainRequest::parse_text(event.payload.get())?.config()?;
    let stop_at = StopAt::from_deadline_ms(event.context.deadline, SystemTime::now());
    let left_ms = stop_at
        .left(SystemTime::now())
        .map(|d| d.as_millis() as u64);
    tracing::info!(?config, left_ms, "training");
    let st = state.clone();
    let run_config = config.clone();
    let (model, metrics) = tokio::task::spawn_blocking(move || {
        let mnist = mnist(&st)?;
        let mut observer = Observer {
            stop_at,
            stopped_early: false,
        };
        train::train(&mnist.train, &mnist.test, &run_config, &mut observer)
            .map_err(|e| FnError::TrainingFailed(e.to_string()))
    })
    .await
    .map_err(|e| FnError::TrainingFailed(format!("the training task failed: {e}")))??;

    let bytes = model
        .to_safetensors()
        .map_err(|e| FnError::TrainingFailed(e.to_string()))?;
    let sha = lambda_cnn::model::weights::sha256_hex(&bytes);
    let file_name = format!("mnist-cnn-{}.safetensors", &sha[..16]);
    let card = ModelCard::new(&config, &metrics, std::path::Path::new(&file_name), &sha);
    let (weights, card_uri) = match &state.s3 {
        Some(S3Target {
            bucket,
            prefix,
            store,
        }) => {
            let w = S3Uri::join(bucket, prefix, &file_name);
            let c = S3Uri::join(bucket, prefix, &file_name.replace(".safetensors", ".json"));
            let card_json = serde_json::to_vec_pretty(&card)
                .map_err(|e| FnError::StoreFailed(e.to_string()))?;
            store
                .put(&w, bytes, "application/octet-stream")
                .await
                .map_err(|e| FnError::StoreFailed(e.to_string()))?;
            store
                .put(&c, card_json, "application/json")
                .await
                .map_err(|e| FnError::StoreFailed(e.to_string()))?;
            (w.to_string(), Some(c.to_string()))
        }
        None => {
            let path = std::env::temp_dir().join(&file_name);
            std::fs::write(&path, &bytes).map_err(|e| {
                FnError::StoreFailed(format!("cannot write {}: {e}", path.display()))
            })?;
            (path.display().to_string(), None)
        }
    };
    tracing::info!(test_accuracy = metrics.test_accuracy, epochs = metrics.epochs, epochs_completed = metrics.epochs_completed, completed = metrics.completed, seconds = metrics.seconds, weights = %weights, "trained");
    metrics::emit(
        &[("FunctionName", &state.fn_name)],
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

fn mnist(state: &State) -> Result<Arc<Mnist>, FnError> {
    let mut slot = state.mnist.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = slot.as_ref() {
        return Ok(m.clone());
    }
    let m = Arc::new(data::load(&state.mnist_dir).map_err(|e| {
        FnError::DataUnavailable(format!("{e} (MNIST_DIR={})", state.mnist_dir.display()))
    })?);
    *slot = Some(m.clone());
    Ok(m)
}

/// Logs each epoch and stops training while there is still time to evaluate and answer.
struct Observer {
    stop_at: StopAt,
    stopped_early: bool,
}

impl TrainObserver for Observer {
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
