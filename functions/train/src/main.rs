//! The `train` Lambda function: a direct invocation trains the seed's CNN and answers in the
//! seed handler's shape, plus metrics. `{}` is the seed's run: 5 epochs, Adam 1e-3, batch 32.
//! The work is `lambda_cnn::api::train_service`; this wires it to the Lambda runtime.

use lambda_cnn::api::train_service::{Destination, TrainService};
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Instant;

// `deploy image --function train` checks for this mark.
lambda_cnn::mark_function!("train");

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), lambda_runtime::Error> {
    let exec = Instant::now();
    lambda_cnn::runtime::init_threads();
    lambda_cnn::runtime::init_json_logging();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let service = Arc::new(TrainService::new(
            lambda_cnn::data::dir_from_env(),
            Destination::from_env().await,
            std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "train".into()),
        ));
        let init_ms = exec.elapsed().as_secs_f64() * 1e3;
        tracing::info!(init_ms, mnist_dir = %service.mnist_dir().display(), "ready");
        // The payload as raw JSON text: what serde cannot hold is an InvalidRequest of ours,
        // not the runtime's DeserializeError.
        lambda_runtime::run(service_fn(|event: LambdaEvent<Box<RawValue>>| {
            let service = service.clone();
            async move {
                let start = Instant::now();
                let result = service
                    .handle(event.payload.get(), event.context.deadline)
                    .await;
                let duration_ms = start.elapsed().as_secs_f64() * 1e3;
                match &result {
                    Ok(r) => {
                        tracing::info!(duration_ms, completed = r.completed, outcome = "ok", "invocation")
                    }
                    Err(e) => {
                        tracing::warn!(duration_ms, outcome = e.error_type(), message = %e, "invocation failed")
                    }
                }
                result.map_err(|e| Diagnostic {
                    error_type: e.error_type().into(),
                    error_message: e.to_string(),
                })
            }
        }))
        .await
    })
}
