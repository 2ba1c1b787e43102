//! The data plane's HTTP front: Lambda's Invoke API
//! (`POST /2015-03-31/functions/{name}/invocations`), and every other request relayed to the
//! AWS emulator when a [`Forward`] is set (or answered 404 when not).

use super::request::{self, InvocationType, InvokeError, MAX_SYNC_PAYLOAD};
use super::{log, DataPlane};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// Not relayed: they describe one connection, not the request (RFC 9110 §7.6.1), and `host`
/// is the upstream's.
const HOP_HEADERS: [&str; 8] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "host",
];

/// How long the AWS emulator may take over a relayed request.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);

/// Where requests that are not Invokes go: a service's own endpoint, read from the SigV4
/// credential scope (`Credential=KEY/DATE/REGION/SERVICE/aws4_request`), else the default.
#[derive(Debug, Clone, Default)]
pub struct Forward {
    pub default: String,
    pub by_service: HashMap<String, String>,
}

impl Forward {
    /// Parses `SERVICE=URL`.
    pub fn add_service(&mut self, pair: &str) -> Result<(), String> {
        let (service, url) = pair
            .split_once('=')
            .filter(|(s, u)| !s.is_empty() && !u.is_empty())
            .ok_or_else(|| {
                format!("{pair:?} is not SERVICE=URL (e.g. s3=http://127.0.0.1:4566)")
            })?;
        self.by_service
            .insert(service.to_owned(), url.trim_end_matches('/').to_owned());
        Ok(())
    }

    /// The endpoint a request with this `Authorization` header goes to.
    pub fn upstream(&self, authorization: &str) -> &str {
        scope_service(authorization)
            .and_then(|s| self.by_service.get(s))
            .map_or(self.default.as_str(), String::as_str)
    }
}

/// The service of a SigV4 `Authorization` header's credential scope.
fn scope_service(authorization: &str) -> Option<&str> {
    let credential = authorization.split("Credential=").nth(1)?;
    let scope = credential.split([',', ' ']).next()?;
    let parts: Vec<&str> = scope.split('/').collect();
    (parts.len() == 5 && parts[4] == "aws4_request").then(|| parts[3])
}

/// Serves the data plane on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    plane: Arc<DataPlane>,
    forward: Option<Forward>,
) {
    let forward = Arc::new(forward);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to close.
                log(&format!("cannot accept a connection: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (plane, forward) = (plane.clone(), forward.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (plane, forward) = (plane.clone(), forward.clone());
                async move { Ok::<_, Infallible>(handle(req, &plane, forward.as_ref().as_ref()).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                log(&format!("a connection ended with an error: {e}"));
            }
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    plane: &Arc<DataPlane>,
    forward: Option<&Forward>,
) -> Response<Full<Bytes>> {
    let function = (req.method() == Method::POST)
        .then(|| request::invoke_path(req.uri().path()))
        .flatten();
    match (function, forward) {
        (Some(name), _) => match invoke(req, plane, &name).await {
            Ok(res) => res,
            Err(e) => error(&e),
        },
        (None, Some(forward)) => relay(req, plane, forward).await,
        (None, None) => error(&InvokeError::new(
            404,
            "UnknownOperationException",
            format!("no such operation: {} {}", req.method(), req.uri().path()),
        )),
    }
}

async fn invoke(
    req: Request<Incoming>,
    plane: &Arc<DataPlane>,
    name: &str,
) -> Result<Response<Full<Bytes>>, InvokeError> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let too_large = || {
        InvokeError::new(
            413,
            "RequestTooLargeException",
            format!("Request must be smaller than {MAX_SYNC_PAYLOAD} bytes for the InvokeFunction operation"),
        )
    };
    // Decided before a byte of the body is read, where the length is declared.
    if header("content-length")
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_SYNC_PAYLOAD)
    {
        return Err(too_large());
    }
    let qualifier = request::query_value(req.uri().query(), "Qualifier");
    let (function, qualifier) = request::function_and_qualifier(name, qualifier.as_deref())?;
    let kind = InvocationType::parse(header("x-amz-invocation-type").as_deref())?;
    let tail = header("x-amz-log-type").as_deref() == Some("Tail");
    let payload = Limited::new(req.into_body(), MAX_SYNC_PAYLOAD)
        .collect()
        .await
        .map_err(|_| too_large())?
        .to_bytes();
    let payload = if payload.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        payload
    };
    match kind {
        InvocationType::DryRun => {
            plane.resolve(&function, qualifier.as_deref()).await?;
            Ok(respond(204, &[], Bytes::new()))
        }
        InvocationType::Event => {
            plane.resolve(&function, qualifier.as_deref()).await?;
            let plane = plane.clone();
            tokio::spawn(async move {
                if let Err(e) = plane
                    .invoke(&function, qualifier.as_deref(), payload, false)
                    .await
                {
                    log(&format!(
                        "asynchronous invocation of {function} failed: {e}"
                    ));
                }
            });
            Ok(respond(202, &[], Bytes::new()))
        }
        InvocationType::RequestResponse => {
            // In a task of its own: hyper drops this future when the caller hangs up, and an
            // invocation dropped halfway would leave its environment busy for good.
            let plane = plane.clone();
            let answer = tokio::spawn(async move {
                plane
                    .invoke(&function, qualifier.as_deref(), payload, tail)
                    .await
            })
            .await
            .map_err(|e| {
                InvokeError::new(
                    500,
                    "ServiceException",
                    format!("the invocation failed: {e}"),
                )
            })??;
            let mut headers: Vec<(&str, String)> = answer.headers.into_iter().collect();
            headers.push(("Content-Type", "application/json".into()));
            Ok(respond(200, &headers, answer.body))
        }
    }
}

/// This request to the AWS emulator, and its answer back unchanged.
async fn relay(
    req: Request<Incoming>,
    plane: &DataPlane,
    forward: &Forward,
) -> Response<Full<Bytes>> {
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let upstream = forward.upstream(authorization).to_owned();
    let (parts, body) = req.into_parts();
    let target = format!(
        "{upstream}{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let what = format!("{} {}", parts.method, parts.uri.path());
    let relayed = async {
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        let mut out = Request::builder().method(parts.method.clone()).uri(&target);
        for (k, v) in &parts.headers {
            if !HOP_HEADERS.contains(&k.as_str()) {
                out = out.header(k, v);
            }
        }
        let out = out.body(Full::new(body)).map_err(|e| e.to_string())?;
        let res = plane
            .client()
            .request(out)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok::<_, String>((parts, body))
    };
    match tokio::time::timeout(FORWARD_TIMEOUT, relayed).await {
        Ok(Ok((parts, body))) => {
            let mut res = Response::new(Full::new(body));
            *res.status_mut() = parts.status;
            for (k, v) in &parts.headers {
                if !HOP_HEADERS.contains(&k.as_str()) && k != "content-length" {
                    res.headers_mut().append(k, v.clone());
                }
            }
            res
        }
        Ok(Err(e)) => {
            log(&format!("forwarding {what} to {upstream}: {e}"));
            error(&InvokeError::service(format!(
                "the AWS emulator at {upstream} did not answer: {e}"
            )))
        }
        Err(_) => error(&InvokeError::service(format!(
            "the AWS emulator at {upstream} did not answer {what} within {} s",
            FORWARD_TIMEOUT.as_secs()
        ))),
    }
}

fn error(e: &InvokeError) -> Response<Full<Bytes>> {
    respond(
        e.status,
        &[
            ("Content-Type", "application/json".into()),
            ("x-amzn-ErrorType", e.kind.clone()),
        ],
        e.body(),
    )
}

fn respond(status: u16, headers: &[(&str, String)], body: Bytes) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(v),
        ) {
            res.headers_mut().insert(k, v);
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_goes_to_its_services_endpoint() {
        let mut f = Forward {
            default: "http://127.0.0.1:5000".into(),
            ..Forward::default()
        };
        f.add_service("s3=http://127.0.0.1:4566/").unwrap();
        let s3 = "AWS4-HMAC-SHA256 Credential=local/20261207/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=ab";
        let lambda = "AWS4-HMAC-SHA256 Credential=local/20261207/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=ab";
        assert_eq!(f.upstream(s3), "http://127.0.0.1:4566");
        assert_eq!(f.upstream(lambda), "http://127.0.0.1:5000");
        assert_eq!(f.upstream(""), "http://127.0.0.1:5000");
        assert_eq!(f.upstream("Credential=broken"), "http://127.0.0.1:5000");
        assert!(f.add_service("s3").is_err());
        assert!(f.add_service("=http://x").is_err());
    }
}
