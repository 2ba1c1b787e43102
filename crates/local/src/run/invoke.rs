//! Invoking the local Lambda as a client of Lambda's Invoke API does: the answer, the version
//! that ran it, and (with the log tail) the handler's billed Duration from its REPORT line.

use crate::http;
use anyhow::{bail, Context as _};
use base64::Engine as _;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// Long enough for train's run (Lambda's limit is 15 minutes).
const INVOKE_TIMEOUT: Duration = Duration::from_secs(900);

/// One invocation's answer.
pub struct Invoked {
    pub answer: serde_json::Value,
    /// The round trip.
    pub ms: f64,
    /// `X-Amz-Executed-Version`.
    pub version: String,
}

async fn call(
    endpoint: &str,
    name: &str,
    payload: &serde_json::Value,
    qualifier: Option<&str>,
    tail: bool,
) -> anyhow::Result<http::Answer> {
    let query = qualifier.map_or(String::new(), |q| format!("?Qualifier={q}"));
    let url = format!("{endpoint}/2015-03-31/functions/{name}/invocations{query}");
    let headers: &[(&str, &str)] = if tail {
        &[("X-Amz-Log-Type", "Tail")]
    } else {
        &[]
    };
    let answer = http::request(
        hyper::Method::POST,
        &url,
        headers,
        Bytes::from(payload.to_string()),
        INVOKE_TIMEOUT,
    )
    .await?;
    let at = format!(
        "{name}{}",
        qualifier.map_or(String::new(), |q| format!(":{q}"))
    );
    if let Some(error) = answer.header("X-Amz-Function-Error") {
        let body = String::from_utf8_lossy(&answer.body);
        bail!(
            "{at} failed ({error}): {}",
            body.chars().take(500).collect::<String>()
        );
    }
    if answer.status != 200 {
        bail!(
            "{at}: the Invoke API answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    Ok(answer)
}

/// Invokes `name` (at `qualifier`) with `payload`; a function error is an error.
pub async fn invoke(
    endpoint: &str,
    name: &str,
    payload: &serde_json::Value,
    qualifier: Option<&str>,
) -> anyhow::Result<Invoked> {
    let start = Instant::now();
    let answer = call(endpoint, name, payload, qualifier, false).await?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    Ok(Invoked {
        answer: serde_json::from_slice(&answer.body)
            .with_context(|| format!("{name} answered what is not JSON"))?,
        ms,
        version: answer
            .header("X-Amz-Executed-Version")
            .unwrap_or_default()
            .to_owned(),
    })
}

/// One invocation's handler Duration, from the REPORT line of its log tail (what Lambda bills),
/// as `deploy tune` reads it.
pub async fn handler_ms(
    endpoint: &str,
    name: &str,
    payload: &serde_json::Value,
    qualifier: Option<&str>,
) -> anyhow::Result<f64> {
    let answer = call(endpoint, name, payload, qualifier, true).await?;
    let tail = answer
        .header("X-Amz-Log-Result")
        .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
        .map(|t| String::from_utf8_lossy(&t).into_owned())
        .unwrap_or_default();
    match tail.lines().rev().find_map(lambda_cnn_core::report::parse) {
        Some(r) => Ok(r.duration_ms),
        None => {
            bail!(
                "no REPORT line in the log tail of {name}: {}",
                crate::dataplane::log_lines::tail(&tail, 500)
            )
        }
    }
}
