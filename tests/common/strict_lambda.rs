//! A strict layer in front of the Lambda API of an emulator (moto), answering as AWS does for a
//! new account where moto answers as if every account were large (AWS's documentation:
//! "configuration-concurrency", "gettingstarted-limits"):
//! - `GetAccountSettings`: the account's concurrency quota (moto does not serve it);
//! - `PutFunctionConcurrency` that would leave fewer than min(100, quota) executions
//!   unreserved: `InvalidParameterValueException`, with AWS's message;
//! - `CreateFunction` / `UpdateFunctionConfiguration` over the memory cap: the
//!   `ValidationException` new accounts get.
//!
//! - a newly published version is `Pending` at its first read (Lambda optimises the image
//!   first; "functions-states"), where moto makes it `Active` at once.
//!
//! Everything else passes through unchanged.

use super::faulty_proxy::{relay, Message};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy)]
pub struct NewAccount {
    pub concurrency_quota: i64,
    pub max_memory_mb: i64,
}

pub struct StrictLambda {
    pub port: u16,
    /// Each refusal it made, as `Operation: message`.
    pub refused: Arc<Mutex<Vec<String>>>,
    /// Every request that crossed it: request line and body. In front of another service it
    /// is a recorder: what we sent, where the emulator drops fields AWS keeps.
    pub seen: Seen,
}

impl StrictLambda {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// In front of the Lambda API at `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str, account: NewAccount) -> Self {
        let upstream_port: u16 = upstream
            .rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches('/')
            .parse()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let refused = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (r, s) = (refused.clone(), seen.clone());
        let pending = Arc::new(Mutex::new(std::collections::HashSet::new()));
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (r, s, p) = (r.clone(), s.clone(), pending.clone());
                std::thread::spawn(move || serve(conn, upstream_port, account, r, s, p));
            }
        });
        StrictLambda {
            port,
            refused,
            seen,
        }
    }
}

/// `GET …/functions/NAME/configuration?Qualifier=N` (a numbered version): its key.
fn version_read(first_line: &str) -> Option<String> {
    let path = first_line.split_whitespace().nth(1)?;
    let (path, query) = path.split_once('?')?;
    let qualifier = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("Qualifier="))?;
    (first_line.starts_with("GET ")
        && path.ends_with("/configuration")
        && qualifier.parse::<u64>().is_ok())
    .then(|| format!("{path}:{qualifier}"))
}

/// The same answer with the version's `State` as `Pending`.
fn as_pending(resp: Message) -> Message {
    let Ok(mut body) = serde_json::from_slice::<serde_json::Value>(&resp.body) else {
        return resp;
    };
    body["State"] = serde_json::json!("Pending");
    body["StateReasonCode"] = serde_json::json!("Creating");
    let body = body.to_string().into_bytes();
    let head = String::from_utf8_lossy(&resp.head)
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("content-length:") && !l.is_empty())
        .map(|l| format!("{l}\r\n"))
        .collect::<String>()
        + &format!("Content-Length: {}\r\n\r\n", body.len());
    Message {
        head: head.into_bytes(),
        payload_len: body.len(),
        body,
        first_line: resp.first_line,
    }
}

fn response_bytes(status: &str, error_type: Option<&str>, body: &serde_json::Value) -> Vec<u8> {
    let body = body.to_string();
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = error_type {
        head.push_str(&format!("X-Amzn-ErrorType: {t}\r\n"));
    }
    head.push_str("\r\n");
    [head.into_bytes(), body.into_bytes()].concat()
}

/// AWS's answer to `req` where it differs from the emulator's; `None`: pass it on.
fn strict_answer(
    req: &Message,
    account: NewAccount,
) -> Option<(
    String,
    &'static str,
    Option<&'static str>,
    serde_json::Value,
)> {
    let mut parts = req.first_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
    if method == "GET" && path.trim_end_matches('/').ends_with("/account-settings") {
        return Some((
            String::new(),
            "200 OK",
            None,
            serde_json::json!({
                "AccountLimit": {
                    "TotalCodeSize": 80530636800u64, "CodeSizeUnzipped": 262144000, "CodeSizeZipped": 52428800,
                    "ConcurrentExecutions": account.concurrency_quota,
                    "UnreservedConcurrentExecutions": account.concurrency_quota
                },
                "AccountUsage": {"TotalCodeSize": 0, "FunctionCount": 0}
            }),
        ));
    }
    if method == "PUT" && path.ends_with("/concurrency") {
        let wanted = body["ReservedConcurrentExecutions"].as_i64().unwrap_or(0);
        let minimum = account.concurrency_quota.min(100);
        if account.concurrency_quota - wanted < minimum {
            let message = format!("Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [{minimum}].");
            return Some((
                format!("PutFunctionConcurrency: {message}"),
                "400 Bad Request",
                Some("InvalidParameterValueException"),
                serde_json::json!({"Type": "User", "message": message}),
            ));
        }
    }
    let creates = method == "POST" && path.trim_end_matches('/').ends_with("/functions");
    let updates = method == "PUT" && path.ends_with("/configuration");
    if creates || updates {
        if let Some(memory) = body["MemorySize"]
            .as_i64()
            .filter(|&m| m > account.max_memory_mb)
        {
            let message = format!("1 validation error detected: Value '{memory}' at 'memorySize' failed to satisfy constraint: Member must have value less than or equal to {}", account.max_memory_mb);
            let op = if creates {
                "CreateFunction"
            } else {
                "UpdateFunctionConfiguration"
            };
            return Some((
                format!("{op}: {message}"),
                "400 Bad Request",
                Some("ValidationException"),
                serde_json::json!({"message": message}),
            ));
        }
    }
    None
}

pub type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

fn serve(
    client: TcpStream,
    upstream_port: u16,
    account: NewAccount,
    refused: Arc<Mutex<Vec<String>>>,
    seen: Seen,
    pending: Arc<Mutex<std::collections::HashSet<String>>>,
) {
    let on_request = |req: &Message| {
        seen.lock()
            .unwrap()
            .push((req.first_line.clone(), req.body.clone()));
        let (what, status, error_type, body) = strict_answer(req, account)?;
        if !what.is_empty() {
            refused.lock().unwrap().push(what);
        }
        Some(response_bytes(status, error_type, &body))
    };
    // A new version reads Pending the first time it is asked for.
    let on_response = |req: &Message, resp: Message| {
        let first =
            version_read(&req.first_line).is_some_and(|k| pending.lock().unwrap().insert(k));
        if first {
            as_pending(resp)
        } else {
            resp
        }
    };
    relay(client, upstream_port, on_request, on_response);
}
