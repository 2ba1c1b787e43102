//! A real moto server (the AWS API emulator, from PyPI) on a free 127.0.0.1 port, stopped on
//! drop.

use super::emulator::{free_port, venv_tool, wait_for_port};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Moto {
    pub port: u16,
    child: Child,
    agent: ureq::Agent,
}

impl Moto {
    pub fn start() -> Self {
        let port = free_port();
        let child = Command::new(venv_tool("MOTO_SERVER", "moto_server", "moto[server]"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        wait_for_port(port, "moto_server", Duration::from_secs(60));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        // An open port is not a ready server: a request sent at once was seen reset. Wait for
        // moto to answer its own API.
        let start = std::time::Instant::now();
        let ready = format!("http://127.0.0.1:{port}/moto-api/data.json");
        while !agent
            .get(&ready)
            .call()
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "moto_server on {port} never answered"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto { port, child, agent }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a process needs to reach this moto through the AWS SDK.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Creates a bucket (moto accepts this one unsigned).
    pub fn create_bucket(&self, bucket: &str) {
        let r = self
            .agent
            .put(&format!("{}/{bucket}", self.endpoint()))
            .send_empty()
            .unwrap();
        assert!(
            r.status().is_success(),
            "create bucket {bucket}: {}",
            r.status()
        );
    }

    /// An object's bytes, read through the AWS SDK (moto refuses unsigned reads).
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let uri = lambda_cnn::store::S3Uri {
            bucket: bucket.into(),
            key: key.into(),
        };
        self.with_store(|store| async move { store.get(&uri).await.ok() })
    }

    fn with_store<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce(lambda_cnn::store::Store) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let endpoint = self.endpoint();
        rt.block_on(async move {
            let store = lambda_cnn::store::Store::with_endpoint(
                &endpoint,
                "us-east-1",
                "testing",
                "testing",
            )
            .await;
            f(store).await
        })
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
