//! One connected deploy: the config, the account it acts in, and one handle for the AWS
//! clients. Every command that talks to AWS runs in a [`Session`].

#![warn(missing_docs)]

use std::path::{Path, PathBuf};

use crate::aws::{self, Account, AwsError, Clients};
use crate::config::DeployConfig;

/// The config, the account and the clients of one run.
#[derive(Clone)]
pub struct Session {
    /// The deploy config (one stage's, when `--stage` picked one).
    pub config: DeployConfig,
    /// The directory the config was read from: its `iam/` holds the policy templates.
    pub config_dir: PathBuf,
    /// Where this run acts.
    pub account: Account,
    /// One client per service, all from `sdk`.
    pub clients: Clients,
    /// The SDK configuration the clients were built from.
    pub sdk: aws_config::SdkConfig,
}

/// A policy template of the config's `iam/` that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the IAM policy {}: {source}", path.display())]
pub struct PolicyFileError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

impl Session {
    /// Connects through the standard chain (`target`'s profile and region first) and asks
    /// STS who we are: an error here is a sign-in problem, said before anything else runs.
    pub async fn connect(
        config: DeployConfig,
        config_dir: PathBuf,
        target: &aws::Target,
    ) -> Result<Self, AwsError> {
        let conn = aws::connect(&config.region, target).await;
        let account = aws::account(&conn).await?;
        let sdk = conn.sdk;
        Ok(Session {
            clients: Clients::new(&sdk),
            account,
            config,
            config_dir,
            sdk,
        })
    }

    /// The same session with smoke tests and invocations sent to `endpoint` (a Lambda Invoke
    /// API, e.g. the local data plane) when one is given.
    pub fn invoking_at(&self, endpoint: Option<&str>) -> Session {
        let mut s = self.clone();
        if let Some(url) = endpoint {
            s.clients.smoke = aws_sdk_lambda::Client::from_conf(
                aws_sdk_lambda::config::Builder::from(&self.sdk)
                    .endpoint_url(url)
                    .build(),
            );
        }
        s
    }

    /// The models bucket's name in this account and region.
    pub fn bucket(&self) -> String {
        self.config
            .bucket_name(&self.account.id, &self.account.region)
    }

    /// The policy template `file` of the config's `iam/`, as written.
    pub fn policy(&self, file: &str) -> Result<String, PolicyFileError> {
        read_policy(&self.config_dir, file)
    }

    /// The policy template `file` with this deploy's names, account, region and partition.
    pub fn rendered_policy(&self, file: &str) -> Result<String, PolicyFileError> {
        let a = &self.account;
        Ok(crate::policy::render(
            &self.policy(file)?,
            &crate::policy::vars(&self.config, &a.partition, &a.id, &a.region),
        ))
    }
}

/// The policy template `file` of `config_dir/iam/`.
pub fn read_policy(config_dir: &Path, file: &str) -> Result<String, PolicyFileError> {
    let path = config_dir.join("iam").join(file);
    std::fs::read_to_string(&path).map_err(|source| PolicyFileError { path, source })
}
