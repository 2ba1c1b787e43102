//! The stand-ins `make run` starts on 127.0.0.1, as child processes logging into the state
//! directory: moto (ECR, Lambda, IAM, S3, Logs, API Gateway, Step Functions), LocalStack where
//! asked (S3, STS, IAM's role checks aside, API Gateway v1), a real OCI registry with ECR-style
//! auth, and what runs the functions: the data plane (`local dataplane`) where Docker works,
//! else the Runtime API emulator with the images' root file systems under bubblewrap.

use crate::procs::{free_port, Procs};
use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::Command;

/// The login moto's ECR hands out (GetAuthorizationToken): the registry standing in for ECR
/// takes the same, so that `deploy push` signs in as it would to ECR.
pub const ECR_USER: &str = "AWS";
/// See [`ECR_USER`].
pub const ECR_PASSWORD: &str = "123456789012-auth-token";

/// A registry's htpasswd line for `user`: bcrypt, the only scheme distribution accepts, at a
/// low cost (the registry checks it on every request, and this is a stand-in).
pub fn htpasswd_line(user: &str, password: &str) -> anyhow::Result<String> {
    let hash = bcrypt::hash(password, 5).context("cannot hash the registry's password")?;
    Ok(format!("{user}:{hash}\n"))
}

/// The deployed functions' names, by the project's function.
pub const NAMES: [(&str, &str); 2] = [
    ("predict", "lambda-cnn-predict"),
    ("train", "lambda-cnn-train"),
];

/// The Lambda name of `function`.
pub fn lambda_name(function: &str) -> &str {
    NAMES
        .iter()
        .find(|(f, _)| *f == function)
        .map_or(function, |(_, n)| n)
}

/// The tools the stack runs, found where `make tools` puts them.
pub struct Tools {
    /// .venv: moto_server, cargo-lambda.
    pub venv: PathBuf,
    /// .venv-localstack.
    pub localstack_venv: PathBuf,
    /// .rie: AWS's Runtime Interface Emulator.
    pub rie_dir: PathBuf,
    /// This binary: `local dataplane`.
    pub local: PathBuf,
}

/// The AWS emulator in front: moto alone, or LocalStack with moto serving what it lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Emulator {
    Moto,
    Localstack,
}

/// What runs the functions' code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// Each released version's image, pulled by digest, under the RIE in Docker.
    DataPlane,
    /// The images as built, under bubblewrap, against `cargo lambda watch`.
    Sandbox,
}

pub struct Stack {
    pub procs: Procs,
    pub state: PathBuf,
    pub moto_port: u16,
    pub localstack_port: Option<u16>,
    pub registry_port: u16,
    /// The Invoke API (the data plane) or the Runtime API emulator.
    pub runtime_port: u16,
    pub runner: Runner,
}

impl Stack {
    /// Nothing started yet; its processes log into `state`.
    pub fn new(state: &Path, runner: Runner) -> anyhow::Result<Self> {
        Ok(Stack {
            procs: Procs::new(state),
            state: state.to_owned(),
            moto_port: free_port()?,
            localstack_port: None,
            registry_port: free_port()?,
            runtime_port: free_port()?,
            runner,
        })
    }

    /// moto, then LocalStack where asked, then the registry (blobs kept in STATE/registry, so
    /// a second run pushes no layer bytes), then the data plane or the Runtime API emulator.
    /// What started is stopped by [`Stack::stop`], also after a failure here.
    pub async fn start(
        &mut self,
        tools: &Tools,
        emulator: Emulator,
        say: impl Fn(&str),
    ) -> anyhow::Result<()> {
        self.start_moto(tools, &say).await?;
        if emulator == Emulator::Localstack {
            self.start_localstack(tools, &say).await?;
        }
        self.start_registry(&say).await?;
        match self.runner {
            Runner::DataPlane => self.start_dataplane(tools, &say).await,
            Runner::Sandbox => {
                say(&format!(
                    "starting the Lambda Runtime API emulator on 127.0.0.1:{}",
                    self.runtime_port
                ));
                let names: Vec<&str> = NAMES.iter().map(|(_, n)| *n).collect();
                let cmd = crate::procs::runtime_api_command(
                    &installed(&tools.venv.join("bin/cargo-lambda"), "cargo-lambda")?,
                    self.runtime_port,
                    &self.state.join("runtime-api"),
                    &names,
                )?;
                self.procs.start("runtime-api", cmd)?;
                self.wait_port(
                    self.runtime_port,
                    "cargo lambda watch",
                    Duration::from_secs(90),
                )
                .await
            }
        }
    }

    pub fn moto(&self) -> String {
        format!("http://127.0.0.1:{}", self.moto_port)
    }

    pub fn registry(&self) -> String {
        format!("127.0.0.1:{}", self.registry_port)
    }

    pub fn runtime_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.runtime_port)
    }

    /// Where S3 is: LocalStack's where it runs, else moto's.
    pub fn s3(&self) -> String {
        self.localstack_port
            .map_or_else(|| self.moto(), |p| format!("http://127.0.0.1:{p}"))
    }

    /// The environment a deploy command runs with: the stand-ins' endpoints, no user config.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("AWS_ENDPOINT_URL", self.s3()),
            ("AWS_ACCESS_KEY_ID", "local".into()),
            ("AWS_SECRET_ACCESS_KEY", "local".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if self.localstack_port.is_some() {
            // What LocalStack lacks here, moto serves.
            for service in [
                "ECR",
                "LAMBDA",
                "IAM",
                "APIGATEWAYV2",
                "CLOUDWATCH_LOGS",
                "SFN",
            ] {
                env.push((format!("AWS_ENDPOINT_URL_{service}"), self.moto()));
            }
        }
        env
    }

    async fn start_moto(&mut self, tools: &Tools, say: &impl Fn(&str)) -> anyhow::Result<()> {
        say(&format!("starting moto on 127.0.0.1:{}", self.moto_port));
        let mut cmd = Command::new(installed(&tools.venv.join("bin/moto_server"), "moto")?);
        cmd.args(["-H", "127.0.0.1", "-p", &self.moto_port.to_string()])
            .env("MOTO_LAMBDA_STUB_ECR", "false");
        if self.runner == Runner::DataPlane {
            // moto's Step Functions interpreter calls Lambda and S3 at localhost:MOTO_PORT: the
            // data plane's port, so that a state machine's Lambda tasks run the released images
            // there, and everything else is relayed back to moto.
            cmd.env("MOTO_PORT", self.runtime_port.to_string());
        }
        self.procs.start("moto", cmd)?;
        self.wait_port(self.moto_port, "moto", Duration::from_secs(90))
            .await?;
        let config =
            br#"{"lambda":{"use_docker":false},"stepfunctions":{"execute_state_machine":true}}"#;
        let url = format!("{}/moto-api/config", self.moto());
        for _ in 0..100 {
            if crate::http::post_json(&url, config).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("moto did not take its configuration at {url}")
    }

    async fn start_localstack(&mut self, tools: &Tools, say: &impl Fn(&str)) -> anyhow::Result<()> {
        let port = free_port()?;
        self.localstack_port = Some(port);
        say(&format!(
            "starting LocalStack on 127.0.0.1:{port} (S3, STS, API Gateway v1); moto serves ECR, \
             image Lambdas, API Gateway v2, CloudWatch Logs and the IAM its Lambda checks roles against"
        ));
        let dir = self.state.join("localstack");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut cmd = Command::new(tools.localstack_venv.join("bin/python"));
        cmd.args(["-m", "localstack.runtime.main"])
            .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("GATEWAY_SERVER", "hypercorn")
            .env("DNS_ADDRESS", "0")
            .env("DISABLE_EVENTS", "1")
            .env("OVERRIDE_IN_DOCKER", "0")
            .env("FILESYSTEM_ROOT", &dir)
            .env("SKIP_SSL_CERT_DOWNLOAD", "1")
            .current_dir(&dir);
        self.procs.start("localstack", cmd)?;
        self.wait_port(port, "LocalStack", Duration::from_secs(180))
            .await?;
        let health = format!("http://127.0.0.1:{port}/_localstack/health");
        for _ in 0..600 {
            if crate::http::get(&health)
                .await
                .is_ok_and(|(status, _)| status == 200)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        bail!("LocalStack did not answer {health}")
    }

    async fn start_registry(&mut self, say: &impl Fn(&str)) -> anyhow::Result<()> {
        let data = self.state.join("registry");
        say(&format!(
            "starting the registry on 127.0.0.1:{} (blobs kept in {})",
            self.registry_port,
            data.display()
        ));
        std::fs::create_dir_all(&data)
            .with_context(|| format!("cannot create {}", data.display()))?;
        let htpasswd = self.state.join("htpasswd");
        std::fs::write(&htpasswd, htpasswd_line(ECR_USER, ECR_PASSWORD)?)
            .with_context(|| format!("cannot write {}", htpasswd.display()))?;
        let config = self.state.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{}\nauth:\n  htpasswd:\n    realm: lambda-cnn\n    path: {}\n",
                data.display(),
                self.registry_port,
                htpasswd.display()
            ),
        )
        .with_context(|| format!("cannot write {}", config.display()))?;
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&config);
        self.procs.start("registry", cmd)?;
        self.wait_port(self.registry_port, "the registry", Duration::from_secs(90))
            .await
    }

    async fn start_dataplane(&mut self, tools: &Tools, say: &impl Fn(&str)) -> anyhow::Result<()> {
        say("starting the local Lambda data plane (each released version's image, pulled by digest, \
             under AWS's Runtime Interface Emulator in Docker, sized by its MemorySize)");
        let moto = self.moto();
        let mut cmd = Command::new(&tools.local);
        cmd.arg("dataplane")
            .args(["--port", &self.runtime_port.to_string()])
            .args(["--lambda-endpoint", &moto, "--logs-endpoint", &moto])
            .args(["--function-endpoint", &self.s3()])
            .args([
                "--registry",
                &self.registry(),
                "--registry-password",
                ECR_PASSWORD,
            ])
            .arg("--rie-dir")
            .arg(&tools.rie_dir)
            .arg("--state-dir")
            .arg(self.state.join("dataplane"))
            .args(["--forward", &moto]);
        if self.localstack_port.is_some() {
            cmd.args(["--forward-service", &format!("s3={}", self.s3())]);
        }
        self.procs.start("dataplane", cmd)?;
        self.wait_port(self.runtime_port, "the data plane", Duration::from_secs(90))
            .await
    }

    /// Waits until 127.0.0.1:`port` accepts, failing when the last process started exits.
    pub async fn wait_port(
        &mut self,
        port: u16,
        what: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some((_, status, log)) = self.procs.last_exited() {
                bail!("{what} exited at start ({status}); see {}", log.display());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!(
            "{what} did not start on 127.0.0.1:{port}; see {}/*.log",
            self.state.display()
        )
    }

    /// Everything stopped, the last started first.
    pub async fn stop(&mut self) {
        self.procs.stop_all(Duration::from_secs(10)).await;
    }
}

/// The image's entrypoint under bubblewrap as Lambda runs it: the root read-only, a fresh /tmp,
/// uid 993. An image of another architecture runs under qemu-user, bound in read-only (it is
/// static: it needs nothing from the image), with the image's own loader and libraries.
pub fn sandbox(rootfs: &Path, arch: &str, host_arch: &str) -> anyhow::Result<Command> {
    let mut cmd = Command::new("bwrap");
    cmd.args(["--die-with-parent", "--ro-bind"])
        .arg(rootfs)
        .args(["/", "--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev"])
        .args([
            "--unshare-all",
            "--share-net",
            "--uid",
            "993",
            "--gid",
            "990",
            "--chdir",
            "/var/task",
        ]);
    if arch != host_arch {
        let qemu = if arch == "arm64" {
            "qemu-aarch64-static"
        } else {
            "qemu-x86_64-static"
        };
        let path = find_in_path(qemu).with_context(|| {
            format!("an {arch} image runs here under {qemu}, which is not installed: run `make cross-tools`")
        })?;
        cmd.arg("--ro-bind")
            .arg(path)
            .args(["/dev/qemu", "/dev/qemu"]);
    }
    cmd.arg("/var/runtime/bootstrap");
    Ok(cmd)
}

/// `path`, when it is there; else what to do.
fn installed(path: &Path, what: &str) -> anyhow::Result<PathBuf> {
    if path.is_file() {
        Ok(path.to_owned())
    } else {
        bail!("no {what} at {}: run `make tools`", path.display())
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
