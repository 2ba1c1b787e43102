//! The local Lambda data plane (`local dataplane`, crates/local): AWS's Runtime Interface
//! Emulator in Docker, one container per version and configuration, sized by MemorySize. Needs
//! a Docker engine; [`docker_or_skip`] decides.

use super::emulator::{wait_for_port, workspace_binary};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The local Lambda a test deploys to: the AWS emulator as Lambda's control plane (and S3,
/// Logs...), a registry as ECR, and the data plane running each released version's image.
pub struct LocalLambda {
    pub aws: super::aws_emulator::AwsStack,
    pub registry: super::registry::Registry,
    pub plane: DataPlane,
}

impl LocalLambda {
    /// All three started; the data plane pulls from the registry with ECR's login and hands
    /// the functions the emulator's S3.
    pub fn start() -> Self {
        use super::registry::{Registry, ECR_PASSWORD, ECR_USER};
        let aws = super::aws_emulator::AwsStack::start(true);
        let registry = Registry::start(ECR_USER, ECR_PASSWORD);
        let plane = DataPlane::start(
            &aws.endpoint("lambda", true),
            &aws.endpoint("s3", true),
            &registry.host(),
            ECR_USER,
            ECR_PASSWORD,
        );
        LocalLambda {
            aws,
            registry,
            plane,
        }
    }
}

/// Whether Docker runs here: true, or false after saying SKIPPED — and a failed test where
/// `LAMBDA_CNN_REQUIRE` names docker (CI, where the engine is there).
pub fn docker_or_skip(what: &str) -> bool {
    let engine = Command::new("docker").arg("info").output();
    let why = match &engine {
        Ok(o) if o.status.success() => return true,
        // docker info's last line of complaint, not a kilobyte of Debug.
        Ok(o) => String::from_utf8_lossy(&o.stderr)
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("no message")
            .trim()
            .to_owned(),
        Err(e) => e.to_string(),
    };
    lambda_cnn::simd::skip(
        "docker",
        &format!("{what} needs a Docker engine (`docker info` failed: {why})"),
    );
    false
}

/// What `docker ARGS` prints.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Runtime Interface Emulator binaries `make tools` extracts from PyPI's aws-sam-cli.
pub fn rie_dir() -> PathBuf {
    let dir = std::env::var_os("LAMBDA_CNN_RIE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join(".rie"));
    assert!(
        dir.join("aws-lambda-rie-x86_64").exists(),
        "no Runtime Interface Emulator in {}: run `make tools`",
        dir.display()
    );
    dir
}

pub struct DataPlane {
    pub port: u16,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl DataPlane {
    /// In front of the Lambda API at `lambda_endpoint` (moto), pulling from `registry`
    /// (`127.0.0.1:PORT`, the ECR stand-in) with `user`/`password`; the functions reach AWS
    /// (their model bucket) at `function_endpoint` — LocalStack's S3 where LocalStack serves
    /// it, so that train writes to the bucket the release created there.
    pub fn start(
        lambda_endpoint: &str,
        function_endpoint: &str,
        registry: &str,
        user: &str,
        password: &str,
    ) -> Self {
        Self::start_with(
            lambda_endpoint,
            function_endpoint,
            registry,
            user,
            password,
            &[],
        )
    }

    /// [`DataPlane::start`] with more of `local dataplane`'s flags (`--port`, `--forward`, …).
    pub fn start_with(
        lambda_endpoint: &str,
        function_endpoint: &str,
        registry: &str,
        user: &str,
        password: &str,
        extra: &[String],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dataplane.log");
        let mut child = Command::new(workspace_binary("local"))
            .arg("dataplane")
            .args(["--lambda-endpoint", lambda_endpoint, "--registry", registry])
            .args(["--function-endpoint", function_endpoint])
            .args(["--registry-user", user, "--registry-password", password])
            .arg("--rie-dir")
            .arg(rie_dir())
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("`local dataplane` runs");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let port: u16 = first
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "the data plane did not start: {first:?}; {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        wait_for_port(port, "the data plane", Duration::from_secs(30));
        DataPlane {
            port,
            child,
            log,
            _dir: dir,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The execution environments (containers) running now.
    pub fn containers(&self) -> Vec<String> {
        docker(&[
            "ps",
            "--filter",
            &format!("label=lambda-cnn.dataplane={}", self.child.id()),
            "--format",
            "{{.Names}}",
        ])
        .lines()
        .map(str::to_owned)
        .collect()
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        // SIGTERM: the data plane removes its containers before it exits.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..300 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
