//! The `predict` Lambda function: `GET /` (the digit page), `POST /predict` and `GET /health`
//! over API Gateway (REST v1, HTTP API v2), Function URLs and ALB. The weights are loaded once,
//! at init. The work is `lambda_cnn::api::predict_fn`; this wires it to the Lambda runtime.
//!
//! Events are decoded by `lambda_cnn::api::event`, not `lambda_http`: nothing a client sends
//! can reach a panic in a dependency (see that module). A direct invocation with a batch of S3
//! images (Step Functions' Distributed Map) is `lambda_cnn::api::batch`.

use lambda_cnn::api::batch::{self, BatchEvent};
use lambda_cnn::api::model_source;
use lambda_cnn::api::predict::PredictService;
use lambda_cnn::api::predict_fn::PredictFunction;
use lambda_cnn::store::Store;
use lambda_runtime::{service_fn, Diagnostic, Error, LambdaEvent};
use serde_json::value::RawValue;
use std::time::Instant;

// `deploy image --function predict` checks for this mark.
lambda_cnn::mark_function!("predict");

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Error> {
    let exec = Instant::now();
    lambda_cnn::runtime::init_threads();
    lambda_cnn::runtime::init_json_logging();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let loaded = model_source::from_env().await.inspect_err(|e| {
            tracing::error!(error = %e, "cannot load the model; set MODEL_PATH to a weights file or MODEL_S3_URI to s3://bucket/key");
        })?;
        let service = PredictService::new(loaded.model, loaded.id).inspect_err(|e| {
            tracing::error!(error = %e, "the model cannot answer: refusing to start");
        })?;
        let init_ms = exec.elapsed().as_secs_f64() * 1e3;
        tracing::info!(init_ms, model = service.model_id(), source = %loaded.source, "ready");
        let fn_name =
            std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "predict".into());
        let function = &PredictFunction::new(service, fn_name, init_ms);
        // Made on the first batch: an HTTP-only function never loads the S3 configuration.
        let store = &tokio::sync::OnceCell::new();
        lambda_runtime::run(service_fn(move |ev: LambdaEvent<Box<RawValue>>| async move {
            let payload = ev.payload.get();
            if batch::is_batch(payload) {
                let invalid = |e: batch::BatchError| {
                    tracing::warn!(error = %e.message(), "batch");
                    Diagnostic {
                        error_type: e.error_type().into(),
                        error_message: e.message(),
                    }
                };
                let (event, result) = BatchEvent::parse(payload).map_err(invalid)?;
                let store = store.get_or_init(Store::from_env).await;
                let deadline = lambda_cnn::runtime::deadline_instant(ev.context.deadline);
                let report = batch::run(function.service(), store, event, result, deadline)
                    .await
                    .map_err(invalid)?;
                return Ok(serde_json::to_value(report).unwrap_or_default());
            }
            function
                .invoke(payload, ev.context.deadline)
                .map_err(|e| Diagnostic {
                    error_type: "InvalidEvent".into(),
                    error_message: e.0,
                })
        }))
        .await
    })
}
