//! A real OCI registry (Debian's `docker-registry`, CNCF distribution) on a free 127.0.0.1
//! port, with ECR-style basic auth (`AWS:<token>`), storing into a temp dir; stopped on drop.

use super::emulator::{free_port, wait_for_port};
use super::system_tool;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The login moto's ECR hands out (GetAuthorizationToken): the registry standing in for ECR
/// takes the same, so that `deploy push` signs in as it would to ECR. The same pair as
/// `lambda_cnn_local::stack::ECR_USER` (`make run`'s registry), which this kit does not link
/// (see Cargo.toml).
pub const ECR_USER: &str = "AWS";
/// See [`ECR_USER`].
pub const ECR_PASSWORD: &str = "123456789012-auth-token";

pub struct Registry {
    pub port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Registry {
    /// Accepts `user`/`password` (moto's ECR token is `AWS` / `123456789012-auth-token`).
    pub fn start(user: &str, password: &str) -> Self {
        let bin = system_tool("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // bcrypt, the only scheme distribution accepts, at a low cost: the registry checks it
        // on every request.
        let hash = bcrypt::hash(password, 5).unwrap();
        std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: lambda-cnn-test\n    path: {htpasswd}\n",
            root = dir.path().join("data").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry starts");
        wait_for_port(port, "docker-registry", Duration::from_secs(30));
        Registry { port, child, dir }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
