//! The AWS emulator the integration tests run against, chosen by `AWS_EMULATOR`: `moto`
//! (default) or `localstack`. With LocalStack, the services it cannot serve here go to a moto
//! beside it through the SDK's per-service endpoint variables (`AWS_ENDPOINT_URL_<SERVICE>`).

use super::localstack::LocalStack;
use super::moto::{s3_get, s3_put, signed_call, Moto};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Moto,
    LocalStack,
}

pub fn kind() -> Kind {
    match std::env::var("AWS_EMULATOR").as_deref() {
        Ok("localstack") => Kind::LocalStack,
        Ok("moto") | Err(_) => Kind::Moto,
        Ok(other) => panic!("AWS_EMULATOR={other:?}: moto or localstack"),
    }
}

/// What LocalStack's community edition, offline in host mode, does not serve here, and why —
/// the one list of it (docs/local.md repeats it). These services go to moto when LocalStack is
/// chosen; LocalStack serves the rest (S3, STS, API Gateway v1, IAM).
pub const LOCALSTACK_LACKS: &[(&str, &str)] = &[
    ("ecr", "Amazon ECR is a LocalStack Pro feature"),
    (
        "lambda",
        "container-image functions (PackageType=Image) need Docker images it cannot download here",
    ),
    (
        "apigatewayv2",
        "API Gateway v2 (HTTP APIs) is a LocalStack Pro feature",
    ),
    (
        "states",
        "its Step Functions interpreter would run Lambda tasks in its own Lambda, which cannot run image functions here",
    ),
    (
        "logs",
        "CloudWatch Logs filter patterns are a LocalStack Pro feature (community lets every event through)",
    ),
];

/// Services that must sit with Lambda: moto's Lambda accepts only roles of its own IAM, so
/// where functions are created, IAM goes to moto too.
pub const WITH_LAMBDA: &[&str] = &["iam"];

/// The chosen emulator(s), started for one test.
pub struct AwsStack {
    pub moto: Moto,
    pub localstack: Option<LocalStack>,
    /// Started for `deploy batch`: see [`WITH_STATES`].
    batch: bool,
}

/// Services that must sit with Step Functions where a batch runs: its ARNs carry the account
/// STS names (deploy writes the state machine's ARN from it), and moto's Step Functions live in
/// moto's account.
pub const WITH_STATES: &[&str] = &["sts"];

impl AwsStack {
    /// `for_deploy`: moto checks that images exist in its ECR and never runs Docker.
    pub fn start(for_deploy: bool) -> Self {
        Self::start_with(if for_deploy {
            Moto::start_for_deploy()
        } else {
            Moto::start()
        })
    }

    /// For `deploy batch`: moto's Step Functions run state machines, their Lambda and S3
    /// calls going to `localhost:interpreter_port` (the data plane, which relays the rest).
    pub fn start_for_batch(interpreter_port: u16) -> Self {
        AwsStack {
            batch: true,
            ..Self::start_with(Moto::start_for_states(interpreter_port))
        }
    }

    fn start_with(moto: Moto) -> Self {
        let localstack = (kind() == Kind::LocalStack).then(LocalStack::start);
        if let Some(ls) = &localstack {
            eprintln!(
                "AWS emulator: LocalStack on {}; moto on {} for {}",
                ls.endpoint(),
                moto.endpoint(),
                LOCALSTACK_LACKS
                    .iter()
                    .map(|(s, why)| format!("{s} ({why})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        AwsStack {
            moto,
            localstack,
            batch: false,
        }
    }

    /// Whether `service` goes to moto in a stack that creates functions (`with_lambda`).
    fn to_moto(&self, service: &str, with_lambda: bool) -> bool {
        self.localstack.is_none()
            || LOCALSTACK_LACKS.iter().any(|(s, _)| *s == service)
            || (with_lambda && WITH_LAMBDA.contains(&service))
            || (self.batch && WITH_STATES.contains(&service))
    }

    /// The account STS answers for: each emulator's fixed default (moto's `DEFAULT_ACCOUNT_ID`,
    /// LocalStack's `000000000000`), so that a test names the account deploy prints.
    pub fn account(&self) -> &'static str {
        if self.to_moto("sts", false) {
            "123456789012"
        } else {
            "000000000000"
        }
    }

    /// The endpoint serving `service` (the SDK's service id, lower case).
    pub fn endpoint(&self, service: &str, with_lambda: bool) -> String {
        match &self.localstack {
            Some(ls) if !self.to_moto(service, with_lambda) => ls.endpoint(),
            _ => self.moto.endpoint(),
        }
    }

    /// The environment a process needs to reach these emulators through the AWS SDK.
    /// `with_lambda`: the process creates functions (see [`WITH_LAMBDA`]).
    pub fn env(&self, with_lambda: bool) -> Vec<(&'static str, String)> {
        let mut env = self.moto.env();
        if let Some(ls) = &self.localstack {
            for (k, v) in env.iter_mut() {
                if *k == "AWS_ENDPOINT_URL" {
                    *v = ls.endpoint();
                }
            }
            for (service, var) in [
                ("ecr", "AWS_ENDPOINT_URL_ECR"),
                ("lambda", "AWS_ENDPOINT_URL_LAMBDA"),
                ("apigatewayv2", "AWS_ENDPOINT_URL_APIGATEWAYV2"),
                ("iam", "AWS_ENDPOINT_URL_IAM"),
                ("logs", "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS"),
                ("states", "AWS_ENDPOINT_URL_SFN"),
                ("sts", "AWS_ENDPOINT_URL_STS"),
            ] {
                if self.to_moto(service, with_lambda) {
                    env.push((var, self.moto.endpoint()));
                }
            }
        }
        env.push(("AWS_CONFIG_FILE", "/dev/null".into()));
        env.push(("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()));
        env
    }

    /// A call to `service`'s API on whichever emulator serves it.
    pub fn call(
        &self,
        service: &str,
        with_lambda: bool,
        method: &str,
        path: &str,
        target: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        signed_call(
            &self.endpoint(service, with_lambda),
            service,
            method,
            path,
            target,
            body,
        )
    }

    /// What the Lambda the functions are created in records (moto's, with either emulator).
    pub fn lambda(&self) -> super::lambda_view::LambdaView {
        super::lambda_view::LambdaView::at(&self.endpoint("lambda", true))
    }

    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = self.call("s3", false, "PUT", &format!("/{bucket}"), None, None);
        assert!(
            (200..300).contains(&status),
            "create bucket {bucket}: {status} {body}"
        );
    }

    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        s3_get(&self.endpoint("s3", false), bucket, key)
    }

    /// The keys under `prefix` in `bucket` (ListObjectsV2's first page, read from its XML).
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (status, body) = self.call(
            "s3",
            false,
            "GET",
            &format!("/{bucket}?list-type=2&prefix={prefix}"),
            None,
            None,
        );
        assert_eq!(status, 200, "list {bucket}/{prefix}: {body}");
        let xml = body.as_str().unwrap_or_default();
        xml.split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(k, _)| k.to_owned()))
            .collect()
    }

    /// Puts `objects` (key, bytes) into `bucket` through the SDK-backed store.
    pub fn put(&self, bucket: &str, objects: &[(String, Vec<u8>)]) {
        s3_put(&self.endpoint("s3", false), bucket, objects)
    }
}
