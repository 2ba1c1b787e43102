//! One execution environment: a container of the version's image, AWS's Runtime Interface
//! Emulator bound in as its entrypoint, running `/var/runtime/bootstrap` as Lambda would: with
//! the version's memory (and CPU in proportion), /tmp size, timeout and environment, the root
//! read-only, uid 993.

use super::control::Spec;
use super::request::InvokeError;
use super::{log, Settings};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

/// Lambda: "at 1,769 MB, a function has the equivalent of one vCPU"
/// (<https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html>).
pub const ONE_VCPU_MB: f64 = 1769.0;

/// The label on every container, valued with the data plane's process id: what finds the
/// containers a killed data plane left.
pub const LABEL: &str = "lambda-cnn.dataplane";

/// How long a container has to open the RIE's port.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the REPORT line may trail the answer.
const REPORT_WAIT: Duration = Duration::from_secs(5);

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// What one invocation in an environment gave: the RIE's status, its `X-Amz-Function-Error`,
/// the body, and the lines the environment wrote meanwhile.
pub struct Outcome {
    pub status: u16,
    pub function_error: Option<String>,
    pub body: Bytes,
    pub lines: Vec<String>,
}

pub struct Environment {
    pub spec: Spec,
    pub name: String,
    /// The CloudWatch Logs stream its lines go to.
    pub stream: String,
    rie_port: u16,
    child: Mutex<Option<Child>>,
    started: AtomicBool,
    /// Set by [`Environment::stop`] under `child`'s lock: a container not yet run never is.
    stopped: AtomicBool,
    container_id: Mutex<Option<String>>,
    lines: Arc<Mutex<Vec<String>>>,
    wrote: Arc<Notify>,
    pub busy: AtomicBool,
    last_used: Mutex<Instant>,
}

impl Environment {
    /// A new environment for `spec`, not started yet.
    pub fn new(spec: Spec, name: String) -> Result<Self, InvokeError> {
        let day = humantime::format_rfc3339(std::time::SystemTime::now()).to_string();
        let day = day.get(..10).unwrap_or("1970-01-01").replace('-', "/");
        let digest = hex::encode(Sha256::digest(name.as_bytes()));
        let stream = format!("{day}/[{}]{}", spec.version, &digest[..32]);
        Ok(Environment {
            spec,
            name,
            stream,
            rie_port: free_port()?,
            child: Mutex::new(None),
            started: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            container_id: Mutex::new(None),
            lines: Arc::default(),
            wrote: Arc::default(),
            busy: AtomicBool::new(true),
            last_used: Mutex::new(Instant::now()),
        })
    }

    /// Runs the container and waits until the RIE listens.
    pub async fn start(&self, image: &str, settings: &Settings) -> Result<(), InvokeError> {
        let s = &self.spec;
        let cpus = (f64::from(s.memory) / ONE_VCPU_MB).min(settings.cpus);
        let api_port = free_port()?;
        let mut cmd = Command::new("docker");
        cmd.args(["run", "--rm", "--name", &self.name])
            .args(["--label", &format!("{LABEL}={}", std::process::id())])
            .args(["--network", "host", "--read-only"])
            .args([
                "--tmpfs",
                &format!("/tmp:rw,size={}m,mode=1777", s.ephemeral),
            ])
            .args(["--memory", &format!("{}m", s.memory)])
            .args(["--memory-swap", &format!("{}m", s.memory)])
            .args(["--cpus", &format!("{cpus:.3}")])
            .args(["--user", "993:990", "--workdir", "/var/task"])
            .arg("-v")
            .arg(format!("{}:/aws-lambda:ro", settings.rie_dir.display()))
            .args([
                "--entrypoint",
                &format!("/aws-lambda/aws-lambda-rie-{}", s.arch),
            ]);
        for (k, v) in self.environment(settings) {
            cmd.arg("-e").arg(format!("{k}={v}"));
        }
        cmd.arg(image)
            .args([
                "--runtime-interface-emulator-address",
                &format!("127.0.0.1:{}", self.rie_port),
            ])
            .args(["--runtime-api-address", &format!("127.0.0.1:{api_port}")])
            .arg("/var/runtime/bootstrap")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        log(&format!(
            "cold start of {}:{} ({} MB, {cpus:.2} vCPU, timeout {} s) from {image} as {}",
            s.function, s.version, s.memory, s.timeout, self.name
        ));
        // Under the child's lock, which stop() takes to set `stopped`: stopped before its
        // container runs (the data plane stopping while the image was pulled), it never runs.
        {
            let mut slot = lock(&self.child);
            if self.stopped.load(Ordering::SeqCst) {
                return Err(InvokeError::service(
                    "the execution environment was stopped before it started",
                ));
            }
            let mut child = cmd
                .spawn()
                .map_err(|e| InvokeError::service(format!("cannot run docker: {e}")))?;
            // Both streams into one list of lines, in the order they come.
            for out in [
                child
                    .stdout
                    .take()
                    .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
                child
                    .stderr
                    .take()
                    .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            ]
            .into_iter()
            .flatten()
            {
                let (lines, wrote) = (self.lines.clone(), self.wrote.clone());
                tokio::spawn(async move {
                    // Bytes, not lines of UTF-8: a function may print anything, and a reader that
                    // stopped would close the pipe under the docker client.
                    let mut reader = BufReader::new(out);
                    let mut buf = Vec::new();
                    while matches!(reader.read_until(b'\n', &mut buf).await, Ok(n) if n > 0) {
                        let line = String::from_utf8_lossy(&buf);
                        lock(&lines).push(line.trim_end_matches(['\n', '\r']).to_owned());
                        buf.clear();
                        wrote.notify_waiters();
                    }
                    wrote.notify_waiters();
                });
            }
            *slot = Some(child);
        }
        self.started.store(true, Ordering::SeqCst);
        let started = Instant::now();
        loop {
            if !self.alive() {
                return Err(InvokeError::service(format!(
                    "the execution environment did not start: {}",
                    super::log_lines::tail(&self.text(), 2000)
                )));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.rie_port))
                .await
                .is_ok()
            {
                break;
            }
            if started.elapsed() > START_TIMEOUT {
                self.stop().await;
                return Err(InvokeError::service(
                    "the execution environment did not start within 60 s",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let id = Command::new("docker")
            .args(["inspect", "-f", "{{.Id}}", &self.name])
            .output()
            .await
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|id| !id.is_empty());
        *lock(&self.container_id) = id;
        Ok(())
    }

    /// The version's variables and what Lambda sets beside them.
    fn environment(&self, settings: &Settings) -> Vec<(String, String)> {
        let s = &self.spec;
        let mut env: Vec<(String, String)> = s.env.clone().into_iter().collect();
        let set = [
            ("AWS_LAMBDA_FUNCTION_NAME", s.function.clone()),
            ("AWS_LAMBDA_FUNCTION_VERSION", s.version.clone()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", s.memory.to_string()),
            ("AWS_LAMBDA_FUNCTION_TIMEOUT", s.timeout.to_string()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", s.function),
            ),
            ("AWS_LAMBDA_LOG_STREAM_NAME", self.stream.clone()),
            ("AWS_REGION", settings.region.clone()),
            ("AWS_DEFAULT_REGION", settings.region.clone()),
            ("AWS_EXECUTION_ENV", "AWS_Lambda_Image".into()),
            // Lambda hands the function its role's credentials; here, the emulator's.
            ("AWS_ACCESS_KEY_ID", "local".into()),
            ("AWS_SECRET_ACCESS_KEY", "local".into()),
            ("AWS_SESSION_TOKEN", "local".into()),
        ];
        for (k, v) in set {
            env.retain(|(name, _)| name != k);
            env.push((k.to_owned(), v));
        }
        env.retain(|(name, _)| name != "AWS_ENDPOINT_URL");
        env.push((
            "AWS_ENDPOINT_URL".into(),
            settings.function_endpoint.clone(),
        ));
        env
    }

    /// One invocation, through the RIE; waits for the REPORT line that follows the answer.
    pub async fn invoke(&self, client: &HttpClient, payload: Bytes) -> Outcome {
        let start = lock(&self.lines).len();
        let url = format!(
            "http://127.0.0.1:{}/2015-03-31/functions/function/invocations",
            self.rie_port
        );
        let limit = Duration::from_secs(u64::from(self.spec.timeout) + 30);
        let answer = async {
            let req = hyper::Request::post(url)
                .body(Full::new(payload))
                .map_err(|e| e.to_string())?;
            let res = client.request(req).await.map_err(|e| e.to_string())?;
            let status = res.status().as_u16();
            let error = res
                .headers()
                .get("X-Amz-Function-Error")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = res
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, error, body))
        };
        let (status, function_error, body) = match tokio::time::timeout(limit, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                log(&format!("{}: the RIE did not answer: {e}", self.name));
                (502, None, Bytes::new())
            }
            Err(_) => {
                log(&format!(
                    "{}: the RIE did not answer within {limit:?}",
                    self.name
                ));
                (502, None, Bytes::new())
            }
        };
        let deadline = Instant::now() + REPORT_WAIT;
        loop {
            let wrote = self.wrote.notified();
            let reported = lock(&self.lines)[start..]
                .iter()
                .any(|l| l.starts_with("REPORT RequestId"));
            if reported || !self.alive() || Instant::now() > deadline {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), wrote).await;
        }
        *lock(&self.last_used) = Instant::now();
        Outcome {
            status,
            function_error,
            body,
            lines: lock(&self.lines)[start..].to_vec(),
        }
    }

    pub fn alive(&self) -> bool {
        match lock(&self.child).as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Not started yet: in the pool, its container coming.
    pub fn starting(&self) -> bool {
        !self.started.load(Ordering::SeqCst) && !self.stopped.load(Ordering::SeqCst)
    }

    pub fn idle_for(&self) -> Duration {
        lock(&self.last_used).elapsed()
    }

    pub fn release(&self) {
        *lock(&self.last_used) = Instant::now();
        self.busy.store(false, Ordering::SeqCst);
    }

    /// Everything it wrote, for an error message.
    pub fn text(&self) -> String {
        lock(&self.lines).join("\n")
    }

    /// The container's peak memory since it started (cgroup v1 or v2), in MB.
    pub fn peak_memory_mb(&self) -> Option<u32> {
        let id = lock(&self.container_id).clone()?;
        [
            format!("/sys/fs/cgroup/memory/docker/{id}/memory.max_usage_in_bytes"),
            format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/memory.peak"),
            format!("/sys/fs/cgroup/docker/{id}/memory.peak"),
        ]
        .iter()
        .find_map(|path| {
            std::fs::read_to_string(path)
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|bytes| bytes.div_ceil(1024 * 1024) as u32)
    }

    /// Removes its container (idle, evicted, dead, or the data plane stopping).
    pub async fn stop(&self) {
        let child = {
            let mut slot = lock(&self.child);
            self.stopped.store(true, Ordering::SeqCst);
            slot.take()
        };
        let Some(mut child) = child else { return };
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        // Just after `docker run`, the daemon may not have created the container yet: the first
        // `rm` then finds nothing and the container comes after; the second removes it.
        for _ in 0..2 {
            let _ = Command::new("docker")
                .args(["rm", "-f", &self.name])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await;
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = child.kill().await;
    }
}

/// A port free on 127.0.0.1 now, failing as the data plane's own error.
fn free_port() -> Result<u16, InvokeError> {
    crate::procs::free_port().map_err(|e| InvokeError::service(format!("{e:#}")))
}

/// A poisoned lock still holds good data here (lines, a child handle): take it.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
