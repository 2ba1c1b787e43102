//! The few plain HTTP calls the local commands make to the stand-ins (a health check, moto's
//! configuration, an invocation of the local Lambda), over hyper's client.

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::time::Duration;

/// An answer: status, headers, body.
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `method url` with `headers` and `body`, answered within `timeout`.
pub async fn request(
    method: hyper::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
) -> anyhow::Result<Answer> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req = hyper::Request::builder().method(method.clone()).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(body))
        .with_context(|| format!("{method} {url} is not a request"))?;
    let call = async {
        let res = client.request(req).await?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, anyhow::Error>(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(timeout, call)
        .await
        .with_context(|| format!("{method} {url}: no answer within {} s", timeout.as_secs()))?
        .with_context(|| format!("{method} {url}"))
}

/// GET `url`: (status, body).
pub async fn get(url: &str) -> anyhow::Result<(u16, Bytes)> {
    let a = request(
        hyper::Method::GET,
        url,
        &[],
        Bytes::new(),
        Duration::from_secs(60),
    )
    .await?;
    Ok((a.status, a.body))
}

/// POST a JSON body to `url`; fails unless it answers 2xx.
pub async fn post_json(url: &str, body: &'static [u8]) -> anyhow::Result<Bytes> {
    let a = request(
        hyper::Method::POST,
        url,
        &[("content-type", "application/json")],
        Bytes::from_static(body),
        Duration::from_secs(5),
    )
    .await?;
    anyhow::ensure!(
        (200..300).contains(&a.status),
        "POST {url} answered {}",
        a.status
    );
    Ok(a.body)
}
