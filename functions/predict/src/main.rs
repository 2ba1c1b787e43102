//! The `predict` Lambda function: `GET /` (the digit page), `POST /predict` and `GET /health`
//! over API Gateway (REST v1, HTTP API v2), Function URLs and ALB. The weights are loaded once,
//! at init. The work is `lambda_cnn::api::predict_fn`; this wires it to the Lambda runtime.
//!
//! Events are decoded by `lambda_cnn::api::event`, not `lambda_http`: nothing a client sends
//! can reach a panic in a dependency (see that module).

use lambda_cnn::api::model_source;
use lambda_cnn::api::predict::PredictService;
use lambda_cnn::api::predict_fn::PredictFunction;
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
        let service = PredictService::new(loaded.model, loaded.id);
        let init_ms = exec.elapsed().as_secs_f64() * 1e3;
        tracing::info!(init_ms, model = service.model_id(), source = %loaded.source, "ready");
        let fn_name =
            std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "predict".into());
        let function = PredictFunction::new(service, fn_name, init_ms);
        lambda_runtime::run(service_fn(|ev: LambdaEvent<Box<RawValue>>| {
            let result = function
                .invoke(ev.payload.get(), ev.context.deadline)
                .map_err(|e| Diagnostic {
                    error_type: "InvalidEvent".into(),
                    error_message: e.0,
                });
            async move { result }
        }))
        .await
    })
}
