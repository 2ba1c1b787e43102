//! The `predict` Lambda function: POST /predict, GET /health over API Gateway (REST v1,
//! HTTP API v2), Function URLs and ALB. The weights are loaded once, at init.

use lambda_cnn::api::predict::{HttpRequest, PredictService};
use lambda_cnn::metrics::{self, Unit};
use lambda_cnn::model::Cnn;
use lambda_http::request::RequestContext;
use lambda_http::{http::header::CONTENT_TYPE, Body, Error, Request, RequestExt, Response};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_MODEL_PATH: &str = "model-weights/mnist-cnn.safetensors";

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
    let handler = |req: Request| {
        let start = Instant::now();
        let stage_free = path_without_stage(&req);
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let body: &[u8] = match req.body() {
            Body::Empty => &[],
            Body::Text(t) => t.as_bytes(),
            Body::Binary(b) => b,
            _ => &[],
        };
        let reply = service.handle(HttpRequest {
            method: req.method().as_str(),
            path: &stage_free,
            content_type,
            body,
        });
        let ms = start.elapsed().as_secs_f64() * 1e3;
        tracing::info!(method = %req.method(), path = %stage_free, status = reply.status, duration_ms = ms, "request");
        let mut values = vec![("PredictLatencyMs", Unit::Milliseconds, ms)];
        if cold.swap(false, Ordering::Relaxed) {
            values.push(("ColdStart", Unit::Count, 1.0));
            values.push(("InitMs", Unit::Milliseconds, init_ms));
        }
        if reply.status >= 400 {
            values.push(("BadRequests", Unit::Count, 1.0));
        }
        metrics::emit(&[("FunctionName", &fn_name)], &values);
        let mut builder = Response::builder()
            .status(reply.status)
            .header(CONTENT_TYPE, "application/json");
        for (name, value) in &reply.headers {
            builder = builder.header(*name, value);
        }
        let response = builder.body(Body::Text(reply.body.to_string()));
        async move { response.map_err(Error::from) }
    };
    lambda_http::run(lambda_http::service_fn(handler)).await
}

/// Loads the weights from `MODEL_S3_URI` when set, else from `MODEL_PATH` (default: the shipped
/// weights). Returns the model, its identity (SHA-256 of the file) and where it came from.
async fn load_model() -> Result<(Cnn, String, String), Error> {
    if let Ok(uri) = std::env::var("MODEL_S3_URI") {
        let uri: lambda_cnn::store::S3Uri = uri.parse()?;
        let store = lambda_cnn::store::Store::from_env().await;
        let bytes = store.get(&uri).await?;
        let model = Cnn::from_safetensors(&bytes)?;
        return Ok((
            model,
            lambda_cnn::model::weights::sha256_hex(&bytes),
            uri.to_string(),
        ));
    }
    let path = std::env::var("MODEL_PATH").unwrap_or_else(|_| DEFAULT_MODEL_PATH.into());
    let (model, sha) = Cnn::load(std::path::Path::new(&path))?;
    Ok((model, sha, path))
}

/// The request path without the API Gateway stage: REST APIs (v1) and named HTTP API stages
/// put `/<stage>` in front of the resource path.
fn path_without_stage(req: &Request) -> String {
    let path = req.raw_http_path();
    let stage = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.stage.clone(),
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.stage.clone(),
        _ => None,
    };
    match stage.filter(|s| s != "$default") {
        Some(stage) => {
            let prefix = format!("/{stage}");
            match path.strip_prefix(&prefix) {
                Some(rest) if rest.starts_with('/') => rest.to_owned(),
                Some("") => "/".to_owned(),
                _ => path.to_owned(),
            }
        }
        None => path.to_owned(),
    }
}
