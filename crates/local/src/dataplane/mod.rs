//! A local Lambda data plane: the Invoke API on 127.0.0.1, running each function version as
//! Lambda would, from what the control plane (the AWS emulator: moto) records for it.
//!
//! For each invocation it reads the function's configuration at the qualifier (a version, an
//! alias — with its canary weights — or `$LATEST`), and runs that version's image in an
//! execution environment made of real parts:
//! - the image pulled **by the digest in the version's ImageUri** from the local registry (the
//!   ECR host in the URI is mapped to it), so what runs is what was released;
//! - AWS's own Runtime Interface Emulator (from PyPI's aws-sam-cli) bound in as the entrypoint:
//!   it runs /var/runtime/bootstrap, serves it the Runtime API, enforces the timeout and writes
//!   the START/END/REPORT lines;
//! - Docker with `--memory` = MemorySize and `--cpus` = MemorySize / 1769 (Lambda's 1 vCPU at
//!   1769 MB; capped at this machine's cores), `--read-only`, `--tmpfs /tmp` of
//!   EphemeralStorage, uid 993, the version's environment plus what Lambda sets.
//!
//! An environment stays warm between invocations (one invocation at a time each; a busy one
//! makes another); a new version or configuration is a cold start. Idle ones are stopped after
//! `idle_seconds`, and at most `max_environments` run at once.
//!
//! What the RIE does not do is done here ([`log_lines`]): the REPORT line's measured peak
//! memory and Init Duration; a function error (the RIE answers 200 either way) recognised by
//! the runtime's error document and flagged with `X-Amz-Function-Error: Unhandled`; the
//! invocation's lines in CloudWatch Logs under `/aws/lambda/<function>` (`deploy monitor` reads
//! them as on AWS); with `X-Amz-Log-Type: Tail`, the last 4 KB in `X-Amz-Log-Result` (`deploy
//! tune` reads them as on AWS).
//!
//! With a forward endpoint ([`server`]), every request that is not an Invoke goes on to the AWS
//! emulator: then this one port is "AWS" for a client that has one endpoint — moto's Step
//! Functions interpreter, whose Lambda tasks then run here.

pub mod control;
pub mod environment;
pub mod log_lines;
pub mod request;
pub mod server;

use base64::Engine as _;
use bytes::Bytes;
use control::{ControlPlane, Spec};
use environment::{lock, Environment, HttpClient};
use request::InvokeError;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What Lambda returns with `LogType=Tail`: the last 4 KB of the invocation's log.
pub const TAIL_BYTES: usize = 4096;

/// The architecture whose images run here (`x86_64` or `arm64`, as Lambda names them).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "x86_64",
    }
}

/// Prints one line of the data plane's own log (stderr).
pub fn log(msg: &str) {
    crate::errln!("[dataplane] {msg}");
}

/// How the data plane is set up: its control plane, its registry, its limits.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Lambda control plane (moto), `http://127.0.0.1:PORT`.
    pub lambda_endpoint: String,
    /// CloudWatch Logs, when not at `lambda_endpoint`.
    pub logs_endpoint: Option<String>,
    /// `AWS_ENDPOINT_URL` inside the functions.
    pub function_endpoint: String,
    /// The local registry that stands for ECR: `127.0.0.1:PORT`.
    pub registry: String,
    pub registry_user: String,
    pub registry_password: String,
    /// Holds `aws-lambda-rie-x86_64` and `aws-lambda-rie-arm64`.
    pub rie_dir: PathBuf,
    pub region: String,
    /// For the Docker client's registry login.
    pub state_dir: PathBuf,
    pub max_environments: usize,
    pub idle_seconds: u64,
    /// The machine's cores: the most CPU an environment gets.
    pub cpus: f64,
}

/// What one invocation answers: Lambda's headers and the function's body.
pub struct Answer {
    pub headers: BTreeMap<&'static str, String>,
    pub body: Bytes,
}

pub struct DataPlane {
    pub settings: Settings,
    control: ControlPlane,
    client: HttpClient,
    envs: Mutex<Vec<Arc<Environment>>>,
    pool_changed: tokio::sync::Notify,
    counter: AtomicU64,
    pulled: Mutex<HashSet<String>>,
    pulling: tokio::sync::Mutex<()>,
    docker_config: PathBuf,
    /// Set by [`DataPlane::stop_all`]: connections still in flight then start no container,
    /// which nothing would be left to remove.
    stopping: std::sync::atomic::AtomicBool,
}

impl DataPlane {
    /// Checks the RIE is there and writes the registry login; connects to the control plane.
    pub async fn new(settings: Settings) -> anyhow::Result<Arc<Self>> {
        use anyhow::Context as _;
        let rie = settings
            .rie_dir
            .join(format!("aws-lambda-rie-{}", host_arch()));
        let executable = std::fs::metadata(&rie)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
            .unwrap_or(false);
        anyhow::ensure!(
            executable,
            "no Runtime Interface Emulator at {}: run `make tools`",
            rie.display()
        );
        let docker_config = settings.state_dir.join("docker-config");
        std::fs::create_dir_all(&docker_config)
            .with_context(|| format!("cannot create {}", docker_config.display()))?;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            settings.registry_user, settings.registry_password
        ));
        let login = serde_json::json!({"auths": {settings.registry.clone(): {"auth": auth}}});
        let path = docker_config.join("config.json");
        std::fs::write(&path, login.to_string())
            .with_context(|| format!("cannot write {}", path.display()))?;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        Ok(Arc::new(DataPlane {
            control: ControlPlane::connect(&settings).await,
            settings,
            client,
            envs: Mutex::default(),
            pool_changed: tokio::sync::Notify::new(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            counter: AtomicU64::new(0),
            pulled: Mutex::default(),
            pulling: tokio::sync::Mutex::new(()),
            docker_config,
        }))
    }

    pub(crate) fn client(&self) -> &HttpClient {
        &self.client
    }

    /// The configuration `function` at `qualifier` runs (checks it exists: `DryRun`).
    pub async fn resolve(
        &self,
        function: &str,
        qualifier: Option<&str>,
    ) -> Result<Spec, InvokeError> {
        self.control.resolve(function, qualifier).await
    }

    /// Runs one invocation in a warm environment of its configuration, or a new one.
    pub async fn invoke(
        &self,
        function: &str,
        qualifier: Option<&str>,
        payload: Bytes,
        tail: bool,
    ) -> Result<Answer, InvokeError> {
        let spec = self.resolve(function, qualifier).await?;
        if spec.arch != host_arch() {
            return Err(InvokeError::new(
                500,
                "ServiceException",
                format!(
                    "{function}:{} is {}; this data plane runs {} images only \
                     (make run ARCH=arm64 runs arm64 images under qemu instead)",
                    spec.version,
                    spec.arch,
                    host_arch()
                ),
            ));
        }
        let (env, cold) = self.acquire(&spec).await?;
        let outcome = env.invoke(&self.client, payload).await;
        let dead = !env.alive();
        self.release(&env, dead).await;

        let mut lines: Vec<String> = outcome
            .lines
            .iter()
            .filter(|l| !log_lines::is_rie_line(l))
            .cloned()
            .collect();
        let peak = env.peak_memory_mb();
        let init_ms = log_lines::init_ms(&outcome.lines);
        let mut report = None;
        let mut reported = false;
        for line in lines.iter_mut() {
            if line.starts_with("REPORT RequestId") {
                reported = true;
                // One the parser does not know is kept as the RIE wrote it.
                if let Some(r) = log_lines::lambda_report(line, init_ms, peak) {
                    *line = r.to_string();
                    report = Some(r);
                }
            }
        }
        let mut error = outcome.function_error.clone();
        let failed = outcome.status != 200
            || request::is_error_document(&outcome.body)
            || report
                .as_ref()
                .is_some_and(|r| matches!(r.status.as_deref(), Some("error" | "timeout")));
        if failed {
            error.get_or_insert_with(|| "Unhandled".into());
        }
        let mut body = outcome.body;
        if outcome.status != 200 && body.is_empty() {
            let timed_out = report
                .as_ref()
                .is_some_and(|r| r.status.as_deref() == Some("timeout"));
            let why = outcome
                .lines
                .iter()
                .rev()
                .find(|l| log_lines::is_rie_complaint(l))
                .and_then(|l| l.split_once("(rapid)"))
                .map_or("the runtime failed", |(_, why)| why.trim());
            let doc = if timed_out {
                serde_json::json!({
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": format!("Task timed out after {:.2} seconds", f64::from(spec.timeout)),
                })
            } else {
                serde_json::json!({"errorType": "Runtime.Unknown", "errorMessage": why})
            };
            body = Bytes::from(doc.to_string());
        }
        if !reported {
            // The RIE was killed with the function (out of memory, a crash).
            let r = log_lines::crashed(spec.memory, peak);
            lines.push(r.to_string());
            error.get_or_insert_with(|| "Unhandled".into());
            report = Some(r);
        }
        self.control.put_logs(function, &env.stream, &lines).await;
        let mut headers = BTreeMap::from([("X-Amz-Executed-Version", spec.version.clone())]);
        if let Some(e) = error {
            headers.insert("X-Amz-Function-Error", e);
        }
        if tail {
            let text = lines.join("\n") + "\n";
            let bytes = text.as_bytes();
            let tail = &bytes[bytes.len().saturating_sub(TAIL_BYTES)..];
            headers.insert(
                "X-Amz-Log-Result",
                base64::engine::general_purpose::STANDARD.encode(tail),
            );
        }
        let report = report.map_or_else(
            || "its REPORT line as the RIE wrote it".into(),
            |r| r.to_string(),
        );
        log(&format!(
            "{function}:{} {}: {report}",
            spec.version,
            if cold { "cold" } else { "warm" }
        ));
        Ok(Answer { headers, body })
    }

    /// The image, by digest, from the local registry (the ECR host mapped to it).
    async fn pull(&self, image_uri: &str) -> Result<String, InvokeError> {
        let (_, repo_digest) = image_uri
            .split_once('/')
            .filter(|_| image_uri.contains("@sha256:"))
            .ok_or_else(|| InvokeError::invalid(format!("{image_uri} is not pinned by digest")))?;
        let reference = format!("{}/{repo_digest}", self.settings.registry);
        let _one_at_a_time = self.pulling.lock().await;
        if lock(&self.pulled).contains(&reference) {
            return Ok(reference);
        }
        log(&format!("pulling {reference}"));
        let pulled = tokio::time::timeout(
            Duration::from_secs(600),
            tokio::process::Command::new("docker")
                .arg("--config")
                .arg(&self.docker_config)
                .args(["pull", "-q", &reference])
                .stdin(std::process::Stdio::null())
                .output(),
        )
        .await;
        match pulled {
            Ok(Ok(out)) if out.status.success() => {
                lock(&self.pulled).insert(reference.clone());
                Ok(reference)
            }
            Ok(Ok(out)) => Err(InvokeError::service(format!(
                "cannot pull {reference}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
            Ok(Err(e)) => Err(InvokeError::service(format!("cannot run docker pull: {e}"))),
            Err(_) => Err(InvokeError::service(format!(
                "cannot pull {reference}: no answer within 600 s"
            ))),
        }
    }

    /// A warm environment of `spec` not in use, or a new one (started here); at the limit, the
    /// least recently used idle one makes room, or this waits for one to free.
    async fn acquire(&self, spec: &Spec) -> Result<(Arc<Environment>, bool), InvokeError> {
        let env = loop {
            let changed = self.pool_changed.notified();
            {
                let mut envs = lock(&self.envs);
                // Read under the pool's lock, which stop_all holds while it sets the flag.
                if self.stopping.load(Ordering::SeqCst) {
                    return Err(stopping());
                }
                envs.retain(|e| e.starting() || e.alive());
                if let Some(e) = envs.iter().find(|e| {
                    &e.spec == spec
                        && e.alive()
                        && e.busy
                            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                            .is_ok()
                }) {
                    return Ok((e.clone(), false));
                }
                let mut room = envs.len() < self.settings.max_environments.max(1);
                if !room {
                    let victim = envs
                        .iter()
                        .filter(|e| !e.busy.load(Ordering::SeqCst))
                        .max_by_key(|e| e.idle_for())
                        .cloned();
                    if let Some(victim) = victim {
                        envs.retain(|e| !Arc::ptr_eq(e, &victim));
                        tokio::spawn(async move { victim.stop().await });
                        room = true;
                    }
                }
                if room {
                    let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
                    let name = format!("lambda-cnn-dp-{}-{n}", std::process::id());
                    let env = Arc::new(Environment::new(spec.clone(), name)?);
                    envs.push(env.clone());
                    break env;
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), changed).await;
        };
        let started = async {
            let image = self.pull(&spec.image_uri).await?;
            env.start(&image, &self.settings).await?;
            self.control
                .ensure_stream(&spec.function, &env.stream)
                .await;
            Ok::<_, InvokeError>(())
        };
        let started = started.await;
        // stop_all ran while this one started, and stopped it: say so, whatever start saw.
        let started = if self.stopping.load(Ordering::SeqCst) {
            Err(stopping())
        } else {
            started
        };
        if let Err(e) = started {
            self.release(&env, true).await;
            return Err(e);
        }
        Ok((env, true))
    }

    async fn release(&self, env: &Arc<Environment>, dead: bool) {
        env.release();
        if dead {
            lock(&self.envs).retain(|e| !Arc::ptr_eq(e, env));
            env.stop().await;
        }
        self.pool_changed.notify_waiters();
    }

    /// Stops the environments idle for longer than `idle_seconds`, every 5 s, for ever.
    pub async fn reap(self: Arc<Self>) {
        let idle = Duration::from_secs(self.settings.idle_seconds);
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let old: Vec<Arc<Environment>> = {
                let mut envs = lock(&self.envs);
                let (old, keep) = envs.drain(..).partition(|e| {
                    !e.starting() && !e.busy.load(Ordering::SeqCst) && e.idle_for() > idle
                });
                *envs = keep;
                old
            };
            for e in old {
                log(&format!(
                    "{}: idle for {} s, stopped",
                    e.name,
                    idle.as_secs()
                ));
                e.stop().await;
            }
        }
    }

    /// Every environment stopped, and the image names this run pulled removed: they are named
    /// after this run's registry port, so left behind each run would add names to the user's
    /// `docker images` (the layers themselves are shared).
    pub async fn stop_all(&self) {
        let envs: Vec<Arc<Environment>> = {
            let mut envs = lock(&self.envs);
            self.stopping.store(true, Ordering::SeqCst);
            envs.drain(..).collect()
        };
        // Callers waiting for room learn that there will be none.
        self.pool_changed.notify_waiters();
        // All at once: each may take 10 s (Environment::stop), and SIGKILL follows SIGTERM
        // after 10 s.
        let mut stops = tokio::task::JoinSet::new();
        for e in envs {
            stops.spawn(async move { e.stop().await });
        }
        while stops.join_next().await.is_some() {}
        // A container the daemon created only after both of stop()'s removals.
        let me = std::process::id();
        remove_containers(|owner| owner == me).await;
        let pulled: Vec<String> = lock(&self.pulled).drain().collect();
        for reference in pulled {
            let mut why = None;
            for _ in 0..3 {
                why = match tokio::process::Command::new("docker")
                    .args(["rmi", "-f", &reference])
                    .output()
                    .await
                {
                    Ok(out) if out.status.success() => None,
                    Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No such image") => {
                        None
                    }
                    Ok(out) => Some(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
                    Err(e) => Some(e.to_string()),
                };
                if why.is_none() {
                    break;
                }
                // A container of it may still be going away.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if let Some(why) = why {
                log(&format!("could not remove the image {reference}: {why}"));
            }
        }
    }
}

fn stopping() -> InvokeError {
    InvokeError::service("the local data plane is stopping")
}

/// Serves the Invoke API on 127.0.0.1:`port` (0: a free one) until SIGTERM or SIGINT, then
/// stops every environment. Prints `listening on http://127.0.0.1:PORT` once it serves: what
/// a caller that asked for a free port reads.
pub async fn run(
    settings: Settings,
    port: u16,
    forward: Option<server::Forward>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    let interrupted = crate::procs::interrupted()?;
    remove_orphans().await;
    let plane = DataPlane::new(settings).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}: choose another --port"))?;
    let address = listener
        .local_addr()
        .context("the listener has no address")?;
    crate::outln!("listening on http://{address}");
    std::io::stdout().flush().ok();
    let reaper = tokio::spawn(plane.clone().reap());
    let server = tokio::spawn(server::serve(listener, plane.clone(), forward));
    interrupted.await;
    server.abort();
    reaper.abort();
    plane.stop_all().await;
    Ok(())
}

/// Removes the containers an earlier data plane left when it was killed: those whose owner
/// (the process id on their label) is gone.
pub async fn remove_orphans() {
    remove_containers(|owner| !std::path::Path::new(&format!("/proc/{owner}")).exists()).await;
}

/// Removes the data plane's containers whose owner (the process id on their label) `matches`.
async fn remove_containers(matches: impl Fn(u32) -> bool) {
    let format = format!("{{{{.ID}}}} {{{{.Label \"{}\"}}}}", environment::LABEL);
    let Ok(out) = tokio::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label={}", environment::LABEL),
        ])
        .args(["--format", &format])
        .output()
        .await
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((id, pid)) = line.split_once(' ') else {
            continue;
        };
        if pid.parse::<u32>().is_ok_and(&matches) {
            let _ = tokio::process::Command::new("docker")
                .args(["rm", "-f", id])
                .output()
                .await;
        }
    }
}
