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
//!   first; "functions-states"), where moto makes it `Active` at once;
//! - `UpdateFunctionCode` sets `Architectures` (moto ignores it there: it keeps the one the
//!   function was created with), and each published version keeps the architecture it had.
//!
//! [`StrictLambda::invoke_layer`] stands in front of the endpoint that runs the images (the
//! Runtime API emulator) and fails an invocation of a function whose architecture is not its
//! image's as Lambda does: no check at create time, `Runtime.InvalidEntrypoint … exec format
//! error` at the first invoke.
//!
//! Everything else passes through unchanged.

use super::faulty_proxy::{relay, Message};
use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy)]
pub struct NewAccount {
    pub concurrency_quota: i64,
    pub max_memory_mb: i64,
}

/// What the layer remembers where moto forgets: versions not yet read, architectures.
#[derive(Default)]
struct State {
    /// `path:qualifier` of versions read at least once.
    read: std::collections::HashSet<String>,
    /// Function name → architecture of `$LATEST`.
    latest_arch: HashMap<String, String>,
    /// (function name, version) → architecture it was published with.
    version_arch: HashMap<(String, String), String>,
}

impl State {
    /// The architecture of function `name` at `qualifier`: a numbered version's own, else
    /// `$LATEST`'s (an alias is read as `$LATEST`: the layer does not follow aliases).
    fn arch(&self, name: &str, qualifier: Option<&str>) -> Option<&String> {
        match qualifier.filter(|q| q.parse::<u64>().is_ok()) {
            Some(v) => self.version_arch.get(&(name.to_owned(), v.to_owned())),
            None => self.latest_arch.get(name),
        }
    }
}

type Shared = Arc<Mutex<State>>;

pub struct StrictLambda {
    pub port: u16,
    state: Shared,
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
        let upstream_port = port_of(upstream);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let refused = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (r, s) = (refused.clone(), seen.clone());
        let state = Shared::default();
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (r, s, st) = (r.clone(), s.clone(), st.clone());
                std::thread::spawn(move || serve(conn, upstream_port, account, r, s, st));
            }
        });
        StrictLambda {
            port,
            state,
            refused,
            seen,
        }
    }

    /// A layer in front of `upstream` (`http://127.0.0.1:PORT`, serving the Invoke API by
    /// running images built for `image_arch`) that fails, as Lambda does, every invocation of
    /// a function or version this layer saw configured for another architecture.
    pub fn invoke_layer(&self, upstream: &str, image_arch: &'static str) -> InvokeLayer {
        let upstream_port = port_of(upstream);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let failed = Arc::new(Mutex::new(Vec::new()));
        let (state, f) = (self.state.clone(), failed.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (state, f) = (state.clone(), f.clone());
                std::thread::spawn(move || {
                    let on_request = |req: &Message| {
                        let (name, qualifier) = invocation(&req.first_line)?;
                        let st = state.lock().unwrap();
                        let arch = st.arch(&name, qualifier.as_deref())?;
                        if arch == image_arch {
                            return None;
                        }
                        let message = "RequestId: 3f1b0c52-7a4e-4a36-9d0e-6c1f2b8e9a11 Error: fork/exec /bootstrap: exec format error";
                        f.lock().unwrap().push(format!(
                            "{name}:{} is {arch}, its image {image_arch}",
                            qualifier.as_deref().unwrap_or("$LATEST")
                        ));
                        let body = serde_json::json!({"errorType": "Runtime.InvalidEntrypoint", "errorMessage": message}).to_string();
                        Some(
                            format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Amz-Function-Error: Unhandled\r\nX-Amz-Executed-Version: {}\r\nContent-Length: {}\r\n\r\n{body}", qualifier.as_deref().unwrap_or("$LATEST"), body.len())
                                .into_bytes(),
                        )
                    };
                    relay(conn, upstream_port, on_request, |_, resp| resp);
                });
            }
        });
        InvokeLayer { port, failed }
    }
}

/// See [`StrictLambda::invoke_layer`].
pub struct InvokeLayer {
    pub port: u16,
    /// Each invocation it failed, as `name:qualifier is ARCH, its image ARCH`.
    pub failed: Arc<Mutex<Vec<String>>>,
}

impl InvokeLayer {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn port_of(endpoint: &str) -> u16 {
    endpoint
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// `POST /2015-03-31/functions/NAME/invocations[?Qualifier=Q]`: (NAME, Q).
fn invocation(first_line: &str) -> Option<(String, Option<String>)> {
    let mut parts = first_line.split_whitespace();
    if parts.next()? != "POST" {
        return None;
    }
    let target = parts.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let name = path
        .strip_prefix("/2015-03-31/functions/")?
        .strip_suffix("/invocations")?;
    Some((name.to_owned(), qualifier(query).map(str::to_owned)))
}

/// The `Qualifier` parameter of a query string.
fn qualifier(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("Qualifier="))
}

/// The function named in a path under `/2015-03-31/functions/`, and what follows it.
fn function_path(path: &str) -> Option<(&str, &str)> {
    let rest = path
        .split('?')
        .next()?
        .strip_prefix("/2015-03-31/functions/")?;
    Some(rest.split_once('/').unwrap_or((rest, "")))
}

/// `GET …/functions/NAME/configuration?Qualifier=N` (a numbered version): its key.
fn version_read(first_line: &str) -> Option<String> {
    let path = first_line.split_whitespace().nth(1)?;
    let (path, query) = path.split_once('?')?;
    let qualifier = qualifier(query)?;
    (first_line.starts_with("GET ")
        && path.ends_with("/configuration")
        && qualifier.parse::<u64>().is_ok())
    .then(|| format!("{path}:{qualifier}"))
}

/// The same answer with its JSON body edited by `edit`.
pub fn edit_json(resp: Message, edit: impl FnOnce(&mut serde_json::Value)) -> Message {
    let Ok(mut body) = serde_json::from_slice::<serde_json::Value>(&resp.body) else {
        return resp;
    };
    if !body.is_object() {
        return resp;
    }
    edit(&mut body);
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

pub fn response_bytes(status: &str, error_type: Option<&str>, body: &serde_json::Value) -> Vec<u8> {
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
    state: Shared,
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
    let on_response = |req: &Message, resp: Message| {
        let ok = resp
            .first_line
            .split_whitespace()
            .nth(1)
            .is_some_and(|s| s.starts_with('2'));
        if !ok {
            return resp;
        }
        let mut st = state.lock().unwrap();
        let method = req.first_line.split_whitespace().next().unwrap_or_default();
        let path = req.first_line.split_whitespace().nth(1).unwrap_or_default();
        let sent: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let sent_arch = sent["Architectures"][0].as_str().map(str::to_owned);
        let creates = method == "POST"
            && path.split('?').next().map(|p| p.trim_end_matches('/'))
                == Some("/2015-03-31/functions");
        let resp = match (method, function_path(path)) {
            // CreateFunction: the architecture asked for, x86_64 when none.
            _ if creates => {
                if let Some(name) = sent["FunctionName"].as_str() {
                    st.latest_arch.insert(
                        name.to_owned(),
                        sent_arch.unwrap_or_else(|| "x86_64".into()),
                    );
                }
                resp
            }
            ("PUT", Some((name, "code"))) => {
                let name = name.to_owned();
                if let Some(arch) = sent_arch {
                    st.latest_arch.insert(name.clone(), arch);
                }
                let arch = st.latest_arch.get(&name).cloned();
                edit_json(resp, |b| {
                    if let Some(a) = arch {
                        b["Architectures"] = serde_json::json!([a]);
                    }
                })
            }
            ("POST", Some((name, "versions"))) => {
                let name = name.to_owned();
                let arch = st.latest_arch.get(&name).cloned();
                edit_json(resp, |b| {
                    if let (Some(a), Some(v)) = (arch, b["Version"].as_str().map(str::to_owned)) {
                        st.version_arch.insert((name, v), a.clone());
                        b["Architectures"] = serde_json::json!([a]);
                    }
                })
            }
            ("GET", Some((name, rest))) if rest.is_empty() || rest == "configuration" => {
                let query = path.split_once('?').map_or("", |(_, q)| q);
                let arch = st.arch(name, qualifier(query)).cloned();
                // A new version reads Pending the first time it is asked for.
                let first = version_read(&req.first_line).is_some_and(|k| st.read.insert(k));
                edit_json(resp, |b| {
                    let conf = if rest.is_empty() {
                        &mut b["Configuration"]
                    } else {
                        b
                    };
                    if let Some(a) = arch {
                        conf["Architectures"] = serde_json::json!([a]);
                    }
                    if first {
                        conf["State"] = serde_json::json!("Pending");
                        conf["StateReasonCode"] = serde_json::json!("Creating");
                    }
                })
            }
            _ => resp,
        };
        resp
    };
    relay(client, upstream_port, on_request, on_response);
}
