//! The `predict` Lambda function: POST /predict, GET /health over API Gateway (REST v1,
//! HTTP API v2), Function URLs and ALB. The weights are loaded once, at init.
//!
//! Events are decoded by `lambda_cnn::api::event`, not `lambda_http`: nothing a client sends
//! can reach a panic in a dependency (see that module).

use lambda_cnn::api::event::{self, HttpEvent};
use lambda_cnn::api::predict::{HttpRequest, PredictService};
use lambda_cnn::api::HttpReply;
use lambda_cnn::metrics::{self, Unit};
use lambda_cnn::model::weights::{sha256_hex, MAX_WEIGHTS_BYTES, SHIPPED_WEIGHTS};
use lambda_cnn::model::Cnn;
use lambda_runtime::{service_fn, Diagnostic, Error, LambdaEvent};
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kept back from the invocation's deadline for inference and answering.
const ANSWER_RESERVE: Duration = Duration::from_millis(500);

fn main() -> Result<(), Error> {
    let exec = Instant::now();
    lambda_cnn::runtime::init_threads();
    lambda_cnn::runtime::init_json_logging();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(exec))
}

async fn serve(exec: Instant) -> Result<(), Error> {
    let (model, model_id, source) = load_model().await.inspect_err(|e| {
        tracing::error!(error = %e, "cannot load the model; set MODEL_PATH to a weights file or MODEL_S3_URI to s3://bucket/key");
    })?;
    let service = PredictService::new(model, model_id);
    let init_ms = exec.elapsed().as_secs_f64() * 1e3;
    tracing::info!(init_ms, model = service.model_id(), source = %source, "ready");
    let cold = AtomicBool::new(true);
    let fn_name = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "predict".into());
    let handler = |ev: LambdaEvent<Box<RawValue>>| {
        let start = Instant::now();
        let result = match HttpEvent::parse(ev.payload.get()) {
            Ok(http) => {
                let reply = match &http.body {
                    Ok(body) => service.handle_until(
                        HttpRequest {
                            method: &http.method,
                            path: &http.path,
                            content_type: http.content_type.as_deref(),
                            if_none_match: http.if_none_match.as_deref(),
                            body,
                        },
                        deadline(ev.context.deadline, start),
                    ),
                    Err(message) => HttpReply::error(400, message.clone()),
                };
                let ms = start.elapsed().as_secs_f64() * 1e3;
                tracing::info!(method = %lambda_cnn::api::clip(&http.method), path = %lambda_cnn::api::clip(&http.path), status = reply.status, duration_ms = ms, "request");
                record(&fn_name, &cold, init_ms, ms, reply.status);
                Ok(event::response(http.flavour, &reply))
            }
            Err(e) => {
                tracing::warn!(error = %e, "not an HTTP event");
                Err(Diagnostic {
                    error_type: "InvalidEvent".into(),
                    error_message: e.0,
                })
            }
        };
        async move { result }
    };
    lambda_runtime::run(service_fn(handler)).await
}

/// When decoding must stop: the invocation's deadline (epoch ms from Lambda; `cargo lambda`
/// sends the timeout itself, a small number) less [`ANSWER_RESERVE`].
fn deadline(deadline_ms: u64, now: Instant) -> Instant {
    let left = lambda_cnn::runtime::time_left(deadline_ms, SystemTime::now())
        .unwrap_or(Duration::from_secs(3600));
    now + left.saturating_sub(ANSWER_RESERVE)
}

fn record(fn_name: &str, cold: &AtomicBool, init_ms: f64, ms: f64, status: u16) {
    let mut values = vec![("PredictLatencyMs", Unit::Milliseconds, ms)];
    if cold.swap(false, Ordering::Relaxed) {
        values.push(("ColdStart", Unit::Count, 1.0));
        values.push(("InitMs", Unit::Milliseconds, init_ms));
    }
    if status >= 400 {
        values.push(("BadRequests", Unit::Count, 1.0));
    }
    metrics::emit(&[("FunctionName", fn_name)], &values);
}

/// Loads the weights from `MODEL_S3_URI` when set, else from `MODEL_PATH` (default: the shipped
/// weights), at most [`MAX_WEIGHTS_BYTES`] either way; weights that are not all finite are
/// refused. Returns the model, its identity (SHA-256 of the file) and where it came from.
async fn load_model() -> Result<(Cnn, String, String), Error> {
    if let Ok(uri) = std::env::var("MODEL_S3_URI") {
        let uri: lambda_cnn::store::S3Uri = uri.parse()?;
        let store = lambda_cnn::store::Store::from_env().await;
        let bytes = store.get_capped(&uri, MAX_WEIGHTS_BYTES).await?;
        let model = Cnn::from_safetensors(&bytes)?;
        return Ok((model, sha256_hex(&bytes), uri.to_string()));
    }
    let path = std::env::var("MODEL_PATH").unwrap_or_else(|_| SHIPPED_WEIGHTS.into());
    let (model, sha) = Cnn::load(std::path::Path::new(&path))?;
    Ok((model, sha, path))
}
