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
        Self::start_with(&[])
    }

    /// A moto whose Lambda checks that images exist in its ECR and never runs Docker (the
    /// functions' code runs against the Runtime API emulator instead).
    pub fn start_for_deploy() -> Self {
        let moto = Self::start_with(&[("MOTO_LAMBDA_STUB_ECR", "false")]);
        let r = moto
            .agent
            .post(&format!("{}/moto-api/config", moto.endpoint()))
            .content_type("application/json")
            .send(r#"{"lambda":{"use_docker":false}}"#)
            .unwrap();
        assert!(r.status().is_success(), "moto config: {}", r.status());
        moto
    }

    fn start_with(env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let child = Command::new(venv_tool("MOTO_SERVER", "moto_server", "moto[server]"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
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

    /// A call to `service`'s API, with a signature moto routes by but does not check.
    /// `target`: the X-Amz-Target of JSON-protocol services (Logs); None for REST ones.
    pub fn call(
        &self,
        service: &str,
        method: &str,
        path: &str,
        target: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
        );
        let url = format!("{}{path}", self.endpoint());
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Authorization", auth);
        if let Some(t) = target {
            req = req
                .header("X-Amz-Target", t)
                .header("Content-Type", "application/x-amz-json-1.1");
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut r = self.agent.run(req.body(body).unwrap()).unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
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
