//! A strict layer in front of the emulator's Lambda and S3 that takes the time AWS takes,
//! where moto answers at once:
//! - a function just created is `Pending` for its first reads, and one just updated reads
//!   `LastUpdateStatus: InProgress` once; an update sent while another is in progress is
//!   refused with `409 ResourceConflictException` ("functions-states",
//!   <https://docs.aws.amazon.com/lambda/latest/dg/functions-states.html>);
//! - a function the test marks failed reads `State: Failed` with a reason, until it is
//!   deleted (Lambda does not recover such a function);
//! - "someone else" (tune, the console) can be made to hold an update in progress: the next
//!   update is refused once, as Lambda refuses it;
//! - a bucket name deleted moments ago answers CreateBucket with `409 OperationAborted` for a
//!   while ("A conflicting conditional operation is currently in progress against this
//!   resource. Try again.", <https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html>).
//!
//! Everything else passes through unchanged. It counts what it did, so a test can see that
//! each state was met.

use super::faulty_proxy::{relay, Message};
use super::strict_lambda::{edit_json, response_bytes};
use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct States {
    /// Function → reads left to answer `Pending`.
    pending: HashMap<String, u32>,
    /// Function → reads left to answer `InProgress`.
    in_progress: HashMap<String, u32>,
    /// Functions in `Failed`, with the reason.
    pub failed: HashMap<String, String>,
    /// Functions whose next update is refused as conflicting with someone else's.
    pub busy: HashSet<String>,
    /// Bucket → when S3 lets the name be used again.
    deleted: HashMap<String, Instant>,
    /// Bucket → the account that owns it, when not the caller's: a request naming another
    /// `ExpectedBucketOwner` gets 403 AccessDenied, as S3 answers it
    /// (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucket-owner-condition.html>).
    owners: HashMap<String, String>,
    /// S3 requests that named no `ExpectedBucketOwner`.
    pub s3_without_owner: Vec<String>,
    /// What the layer did: "pending", "in-progress", "conflict", "failed", "aborted".
    pub served: HashMap<&'static str, u32>,
}

pub struct AwsStates {
    pub port: u16,
    pub states: Arc<Mutex<States>>,
}

impl AwsStates {
    /// In front of the emulator at `upstream`; a deleted bucket name is refused for `hold`.
    pub fn start(upstream: &str, hold: Duration) -> Self {
        let upstream_port: u16 = upstream.rsplit(':').next().unwrap().parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let states = Arc::new(Mutex::new(States::default()));
        let st = states.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || {
                    let on_request = |req: &Message| answer(req, &st, hold);
                    let on_response = |req: &Message, resp: Message| observe(req, resp, &st);
                    relay(conn, upstream_port, on_request, on_response);
                });
            }
        });
        AwsStates { port, states }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Function `name` reads `Pending` for its next `reads` reads (an interrupted first deploy).
    pub fn mark_pending(&self, name: &str, reads: u32) {
        self.states
            .lock()
            .unwrap()
            .pending
            .insert(name.to_owned(), reads);
    }

    /// Function `name` reads `Failed` (with `reason`) until it is deleted.
    pub fn mark_failed(&self, name: &str, reason: &str) {
        self.states
            .lock()
            .unwrap()
            .failed
            .insert(name.to_owned(), reason.to_owned());
    }

    /// Bucket `name` belongs to account `owner` (another account's bucket under our name).
    pub fn mark_owner(&self, bucket: &str, owner: &str) {
        self.states
            .lock()
            .unwrap()
            .owners
            .insert(bucket.to_owned(), owner.to_owned());
    }

    /// Someone else's update of `name` is in progress: the next update is refused once.
    pub fn mark_busy(&self, name: &str) {
        self.states.lock().unwrap().busy.insert(name.to_owned());
    }

    pub fn served(&self, what: &str) -> u32 {
        self.states
            .lock()
            .unwrap()
            .served
            .get(what)
            .copied()
            .unwrap_or(0)
    }
}

fn method_path(req: &Message) -> (String, String) {
    let mut parts = req.first_line.split_whitespace();
    (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    )
}

/// The function a Lambda request names, and what follows it in the path.
fn function_of(path: &str) -> Option<(String, String)> {
    let path = path.split('?').next()?;
    let rest = path.split_once("/functions/")?.1;
    let (name, sub) = rest.split_once('/').unwrap_or((rest, ""));
    Some((name.to_owned(), sub.to_owned()))
}

fn is_update(method: &str, sub: &str) -> bool {
    method == "PUT" && (sub == "code" || sub == "configuration")
}

/// An answer the layer gives itself, instead of the emulator's.
fn answer(req: &Message, st: &Mutex<States>, hold: Duration) -> Option<Vec<u8>> {
    let (method, path) = method_path(req);
    let mut s = st.lock().unwrap();
    if let Some((name, sub)) = function_of(&path) {
        let in_progress = s.in_progress.get(&name).is_some_and(|n| *n > 0);
        if is_update(&method, &sub) && (s.busy.remove(&name) || in_progress) {
            *s.served.entry("conflict").or_default() += 1;
            // Once refused, the other update finishes.
            s.in_progress.remove(&name);
            return Some(response_bytes(
                "409 Conflict",
                Some("ResourceConflictException"),
                &serde_json::json!({
                    "Type": "User",
                    "message": format!("The operation cannot be performed at this time. An update is in progress for resource: arn:aws:lambda:us-east-1:123456789012:function:{name}")
                }),
            ));
        }
        return None;
    }
    // S3, path style: PUT /bucket (no key, no sub-resource) is CreateBucket.
    let (p, query) = path.split_once('?').unwrap_or((&path, ""));
    let segs: Vec<&str> = p.split('/').filter(|x| !x.is_empty()).collect();
    let expected = String::from_utf8_lossy(&req.head).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("x-amz-expected-bucket-owner")
            .then(|| v.trim().to_owned())
    });
    let creating = method == "PUT" && segs.len() == 1 && query.is_empty();
    if !segs.is_empty() && !creating && expected.is_none() {
        s.s3_without_owner.push(req.first_line.clone());
    }
    if let (Some(bucket), Some(expected)) = (segs.first(), &expected) {
        if s.owners.get(*bucket).is_some_and(|owner| owner != expected) {
            *s.served.entry("not-owner").or_default() += 1;
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
            return Some(
                format!(
                    "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            );
        }
    }
    if method == "PUT" && segs.len() == 1 && query.is_empty() {
        if let Some(until) = s.deleted.get(segs[0]) {
            if Instant::now() < *until {
                *s.served.entry("aborted").or_default() += 1;
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>OperationAborted</Code><Message>A conflicting conditional operation is currently in progress against this resource. Please try again.</Message></Error>";
                return Some(
                    format!(
                        "HTTP/1.1 409 Conflict\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .into_bytes(),
                );
            }
        }
    }
    if method == "DELETE" && segs.len() == 1 && query.is_empty() {
        s.deleted.insert(segs[0].to_owned(), Instant::now() + hold);
    }
    None
}

/// A change to a function's configuration as the emulator answered it.
type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;

/// The emulator's answer, with the states AWS would report.
fn observe(req: &Message, resp: Message, st: &Mutex<States>) -> Message {
    let (method, path) = method_path(req);
    let ok = resp.first_line.contains(" 20");
    let mut s = st.lock().unwrap();
    if method == "POST" && path.split('?').next().unwrap_or("").ends_with("/functions") && ok {
        // CreateFunction: the name is in the body.
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        if let Some(n) = body["FunctionName"].as_str() {
            s.pending.insert(n.to_owned(), 2);
            s.failed.remove(n);
        }
        return resp;
    }
    let Some((name, sub)) = function_of(&path) else {
        return resp;
    };
    if method == "DELETE" && sub.is_empty() && !path.contains("Qualifier=") && ok {
        s.failed.remove(&name);
        return resp;
    }
    if is_update(&method, &sub) && ok {
        s.in_progress.insert(name.clone(), 1);
        return resp;
    }
    let reads_state = method == "GET" && (sub.is_empty() || sub == "configuration");
    if !reads_state || !ok || path.contains("Qualifier=") {
        return resp;
    }
    let failed = s.failed.get(&name).cloned();
    let pending = s.pending.get(&name).is_some_and(|n| *n > 0);
    let in_progress = s.in_progress.get(&name).is_some_and(|n| *n > 0);
    let edit: Option<(&'static str, Edit)> = if let Some(reason) = failed {
        Some((
            "failed",
            Box::new(move |c: &mut serde_json::Value| {
                c["State"] = "Failed".into();
                c["StateReason"] = reason.into();
                c["StateReasonCode"] = "ImageAccessDenied".into();
            }),
        ))
    } else if pending {
        *s.pending.get_mut(&name).unwrap() -= 1;
        Some((
            "pending",
            Box::new(|c: &mut serde_json::Value| {
                c["State"] = "Pending".into();
                c["StateReason"] = "The function is being created.".into();
                c["StateReasonCode"] = "Creating".into();
            }),
        ))
    } else if in_progress {
        *s.in_progress.get_mut(&name).unwrap() -= 1;
        Some((
            "in-progress",
            Box::new(|c: &mut serde_json::Value| {
                c["LastUpdateStatus"] = "InProgress".into();
                c["LastUpdateStatusReason"] = "The function is being updated.".into();
            }),
        ))
    } else {
        None
    };
    let Some((what, edit)) = edit else {
        return resp;
    };
    *s.served.entry(what).or_default() += 1;
    let config_only = sub == "configuration";
    edit_json(resp, move |v| {
        if config_only {
            edit(v)
        } else if v.get("Configuration").is_some() {
            edit(&mut v["Configuration"])
        }
    })
}
