//! LocalStack (community edition, `localstack-core` from PyPI on Python 3.13, in host mode,
//! offline) on a free 127.0.0.1 port, with its state in a temp dir; stopped on drop.

use super::emulator::free_port;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct LocalStack {
    pub port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl LocalStack {
    pub fn start() -> Self {
        let python = std::env::var_os("LOCALSTACK_PYTHON")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| crate::root().join(".venv-localstack/bin/python"));
        assert!(
            python.exists(),
            "{} not found: `make test` (or `make localstack`) installs localstack-core into .venv-localstack",
            python.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("localstack.log")).unwrap();
        let child = Command::new(python)
            .args(["-m", "localstack.runtime.main"])
            .current_dir(dir.path())
            // hypercorn binds exactly GATEWAY_LISTEN; the default server binds 0.0.0.0.
            .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("GATEWAY_SERVER", "hypercorn")
            .env("DNS_ADDRESS", "0")
            .env("DISABLE_EVENTS", "1")
            .env("OVERRIDE_IN_DOCKER", "0")
            .env("FILESYSTEM_ROOT", dir.path())
            .env("SKIP_SSL_CERT_DOWNLOAD", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("LocalStack starts");
        let mut ls = LocalStack { port, child, dir };
        // Ready when its health endpoint answers, which takes a while (~20 s here).
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let start = Instant::now();
        loop {
            let health = agent
                .get(&format!("{}/_localstack/health", ls.endpoint()))
                .call();
            if health.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if let Ok(Some(status)) = ls.child.try_wait() {
                panic!("LocalStack exited ({status}) at start:\n{}", ls.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "LocalStack did not get ready:\n{}",
                ls.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        ls
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("localstack.log")).unwrap_or_default()
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
