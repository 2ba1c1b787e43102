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

    /// [`Moto::start_for_deploy`] whose Step Functions run state machines: its interpreter
    /// calls Lambda and S3 at `localhost:interpreter_port` (moto's `MOTO_PORT`), where the
    /// local data plane runs the Lambda tasks and relays the rest back here.
    pub fn start_for_states(interpreter_port: u16) -> Self {
        let port = interpreter_port.to_string();
        let moto = Self::start_with(&[("MOTO_LAMBDA_STUB_ECR", "false"), ("MOTO_PORT", &port)]);
        let r = moto
            .agent
            .post(&format!("{}/moto-api/config", moto.endpoint()))
            .content_type("application/json")
            .send(
                r#"{"lambda":{"use_docker":false},"stepfunctions":{"execute_state_machine":true}}"#,
            )
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

    /// A call to `service`'s API on this moto (see [`signed_call`]).
    pub fn call(
        &self,
        service: &str,
        method: &str,
        path: &str,
        target: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        signed_call(&self.endpoint(), service, method, path, target, body)
    }
}

/// An object's bytes from the S3 at `endpoint`, read through the AWS SDK.
pub fn s3_get(endpoint: &str, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let uri = lambda_cnn::store::S3Uri {
        bucket: bucket.into(),
        key: key.into(),
    };
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let endpoint = endpoint.to_owned();
        let f = |store: lambda_cnn::store::Store| async move { store.get(&uri).await.ok() };
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

/// Puts each (key, bytes) of `objects` into `bucket` at the S3 `endpoint`.
pub fn s3_put(endpoint: &str, bucket: &str, objects: &[(String, Vec<u8>)]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store =
            lambda_cnn::store::Store::with_endpoint(endpoint, "us-east-1", "testing", "testing")
                .await;
        for (key, bytes) in objects {
            let uri = lambda_cnn::store::S3Uri {
                bucket: bucket.into(),
                key: key.clone(),
            };
            store
                .put(&uri, bytes.clone(), "application/octet-stream")
                .await
                .unwrap_or_else(|e| panic!("put {uri}: {e}"));
        }
    });
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A call to `service`'s API at `endpoint`, with a SigV4-shaped header the emulators (moto,
/// LocalStack) route by but do not check. `target`: the X-Amz-Target of JSON-protocol services
/// (Logs); None for REST ones. Returns the status and the body (JSON, or the text as a string).
pub fn signed_call(
    endpoint: &str,
    service: &str,
    method: &str,
    path: &str,
    target: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
    );
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{endpoint}{path}"))
        .header("Authorization", auth);
    if let Some(t) = target {
        req = req
            .header("X-Amz-Target", t)
            .header("Content-Type", "application/x-amz-json-1.1");
    } else if body.is_some() {
        req = req.header("Content-Type", "application/json");
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut r = agent.run(req.body(body).unwrap()).unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}
