//! An HTTP/1.1 proxy in front of a registry that answers `503 Service Unavailable` to the first
//! N blob-upload requests, passing everything else through: a registry having a bad moment.
//! [`FaultyProxy::ecr_like`] makes it answer as ECR does where the local registry is kinder:
//! a chunk `PATCH` gets `201 Created` (the distribution spec says 202), and it counts the
//! upload bytes that cross it, so a test can see each layer sent exactly once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct FaultyProxy {
    pub port: u16,
    /// How many 503s it has answered.
    pub injected: Arc<AtomicUsize>,
    /// Bytes of blob data sent in upload requests (PATCH and PUT bodies), decoded.
    pub upload_bytes: Arc<AtomicUsize>,
    /// Chunk PATCH requests seen.
    pub patches: Arc<AtomicUsize>,
}

pub struct Message {
    pub head: Vec<u8>,
    pub body: Vec<u8>,
    pub first_line: String,
    /// The body's length once any chunked transfer encoding is taken off.
    pub payload_len: usize,
}

#[derive(Clone)]
struct Counters {
    remaining: Arc<AtomicUsize>,
    injected: Arc<AtomicUsize>,
    upload_bytes: Arc<AtomicUsize>,
    patches: Arc<AtomicUsize>,
    ecr_like: bool,
}

/// Reads one HTTP message (head and body) from `r`; `None` at end of stream.
/// `no_body`: a response to HEAD, or a status that carries none.
pub fn read_message(r: &mut BufReader<TcpStream>, response_to_head: bool) -> Option<Message> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let first_line = text.lines().next().unwrap_or_default().to_owned();
    let header = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let status: u16 = first_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let is_response = first_line.starts_with("HTTP/");
    let bodiless =
        is_response && (response_to_head || status == 204 || status == 304 || status < 200);
    let mut body = Vec::new();
    let mut payload_len = 0;
    if !bodiless {
        if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(len, 0);
            r.read_exact(&mut body).ok()?;
            payload_len = len;
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size_line = String::new();
                r.read_line(&mut size_line).ok()?;
                body.extend_from_slice(size_line.as_bytes());
                let size = usize::from_str_radix(size_line.trim().split(';').next()?, 16).ok()?;
                let mut chunk = vec![0; size + 2];
                r.read_exact(&mut chunk).ok()?;
                payload_len += size;
                body.extend_from_slice(&chunk);
                if size == 0 {
                    break;
                }
            }
        }
    }
    Some(Message {
        head,
        body,
        first_line,
        payload_len,
    })
}

/// Relays one connection to 127.0.0.1:`upstream_port`, message by message. `on_request` may
/// answer a request itself (the raw response bytes) instead of passing it on; `on_response`
/// sees each upstream answer, with its request, and may rewrite it. The proxies of the tests
/// (this one, `strict_lambda`) are this loop with their own two hooks.
pub fn relay(
    client: TcpStream,
    upstream_port: u16,
    mut on_request: impl FnMut(&Message) -> Option<Vec<u8>>,
    mut on_response: impl FnMut(&Message, Message) -> Message,
) {
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
        return;
    };
    let mut client_w = client.try_clone().unwrap();
    let mut upstream_w = upstream.try_clone().unwrap();
    let mut client_r = BufReader::new(client);
    let mut upstream_r = BufReader::new(upstream);
    while let Some(req) = read_message(&mut client_r, false) {
        if let Some(answer) = on_request(&req) {
            if client_w.write_all(&answer).is_err() {
                return;
            }
            continue;
        }
        if upstream_w.write_all(&req.head).is_err() || upstream_w.write_all(&req.body).is_err() {
            return;
        }
        let head_request = req.first_line.starts_with("HEAD ");
        let Some(resp) = read_message(&mut upstream_r, head_request) else {
            return;
        };
        let resp = on_response(&req, resp);
        if client_w.write_all(&resp.head).is_err() || client_w.write_all(&resp.body).is_err() {
            return;
        }
    }
}

fn method_path(req: &Message) -> (&str, &str) {
    let mut parts = req.first_line.split_whitespace();
    (parts.next().unwrap_or(""), parts.next().unwrap_or(""))
}

fn serve(client: TcpStream, upstream_port: u16, c: Counters) {
    let on_request = |req: &Message| {
        let (method, path) = method_path(req);
        let upload = path.contains("/blobs/uploads/");
        if method == "POST"
            && upload
            && c.remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            c.injected.fetch_add(1, Ordering::SeqCst);
            return Some(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec());
        }
        if upload && (method == "PATCH" || method == "PUT") {
            c.upload_bytes.fetch_add(req.payload_len, Ordering::SeqCst);
        }
        if upload && method == "PATCH" {
            c.patches.fetch_add(1, Ordering::SeqCst);
        }
        None
    };
    let on_response = |req: &Message, mut resp: Message| {
        let (method, path) = method_path(req);
        if c.ecr_like
            && path.contains("/blobs/uploads/")
            && method == "PATCH"
            && resp.first_line.contains(" 202 ")
        {
            let head =
                String::from_utf8_lossy(&resp.head).replacen(" 202 Accepted", " 201 Created", 1);
            resp.head = head.into_bytes();
        }
        resp
    };
    relay(client, upstream_port, on_request, on_response);
}

impl FaultyProxy {
    /// Proxies to 127.0.0.1:`upstream_port`, failing the first `failures` blob uploads.
    pub fn start(upstream_port: u16, failures: usize) -> Self {
        Self::spawn(upstream_port, failures, false)
    }

    /// Proxies to 127.0.0.1:`upstream_port` answering chunk uploads as ECR does (201).
    pub fn ecr_like(upstream_port: u16) -> Self {
        Self::spawn(upstream_port, 0, true)
    }

    fn spawn(upstream_port: u16, failures: usize, ecr_like: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let counters = Counters {
            remaining: Arc::new(AtomicUsize::new(failures)),
            injected: Arc::new(AtomicUsize::new(0)),
            upload_bytes: Arc::new(AtomicUsize::new(0)),
            patches: Arc::new(AtomicUsize::new(0)),
            ecr_like,
        };
        let proxy = FaultyProxy {
            port,
            injected: counters.injected.clone(),
            upload_bytes: counters.upload_bytes.clone(),
            patches: counters.patches.clone(),
        };
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let c = counters.clone();
                std::thread::spawn(move || serve(conn, upstream_port, c));
            }
        });
        proxy
    }
}
