//! `infra/deploy.toml`: what the pipeline creates and how, in one place.

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::image::Function;
use crate::arch::Arch;

/// Why the config could not be used.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // documented by their messages
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployConfig {
    /// The region used when the AWS configuration names none.
    pub region: String,
    /// `x86_64` or `arm64`: what build, image and all build for by default.
    pub architecture: String,
    /// `[repository]`.
    pub repository: RepositoryConfig,
    /// `[role]`.
    pub role: RoleConfig,
    /// `[bucket]`.
    pub bucket: BucketConfig,
    /// `[release]`.
    pub release: ReleaseConfig,
    /// `[functions.predict]` and `[functions.train]`.
    pub functions: BTreeMap<String, FunctionConfig>,
    /// `[api]`.
    pub api: ApiConfig,
    /// `[batch]` (a config written before it existed gets the shipped one's).
    #[serde(default = "BatchConfig::shipped")]
    pub batch: BatchConfig,
}

/// The config shipped with the deploy binary, `infra/deploy.toml`: the defaults where a
/// section is missing, and what `deploy cost` prices where there is no config to read.
pub const SHIPPED: &str = include_str!("../../../infra/deploy.toml");

/// `[batch]`: `deploy batch`'s state machine and defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// The state machine's name.
    pub state_machine: String,
    /// The state machine's role.
    pub role: String,
    /// Where results go unless --output says, with `{bucket}` for the models bucket.
    pub output: String,
    /// Keys per child.
    pub batch_size: u32,
    /// Children at once.
    pub concurrency: u32,
    /// The share of items that may fail with the run still succeeding, percent.
    pub tolerated_failure_percent: f64,
}

impl BatchConfig {
    /// The shipped config's `[batch]`.
    pub fn shipped() -> BatchConfig {
        // Only `[batch]` is read here; the other sections are ignored.
        #[derive(Deserialize)]
        struct Only {
            batch: BatchConfig,
        }
        // The compiled-in file is checked by the_shipped_config_is_valid: a broken one fails
        // this crate's tests, so the panic cannot reach a released binary.
        toml::from_str::<Only>(SHIPPED)
            .expect("infra/deploy.toml has a valid [batch]")
            .batch
    }
}

/// `[repository]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// The ECR repository of both functions' images.
    pub name: String,
    /// Images each function keeps (the lifecycle policy).
    pub keep_images: u32,
}

/// `[role]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// The execution role's name.
    pub name: String,
}

/// `[bucket]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// The models bucket's name, with `{account}` and `{region}` to fill in.
    pub name: String,
}

/// `[release]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseConfig {
    /// The alias callers use, moved after a smoke test.
    pub alias: String,
    /// The functions' log groups' retention.
    pub log_retention_days: i32,
}

/// `[functions.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    /// The Lambda function's name.
    pub name: String,
    /// MemorySize (and so its CPU share).
    pub memory_mb: i32,
    /// Timeout, seconds.
    pub timeout_s: i32,
    /// /tmp size, MB.
    pub ephemeral_mb: i32,
    /// A cap on its concurrent executions.
    #[serde(default)]
    pub reserved_concurrency: Option<i32>,
}

/// `[api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// The API's name.
    pub name: String,
    /// Its stage.
    pub stage: String,
    /// Steady requests per second.
    pub throttle_rate: f64,
    /// Burst.
    pub throttle_burst: i32,
    /// Origins CORS allows.
    pub cors_origins: Vec<String>,
    /// `none`, `iam` or `jwt`.
    pub auth: String,
    /// The JWT issuer (auth = jwt).
    #[serde(default)]
    pub jwt_issuer: String,
    /// The JWT audiences (auth = jwt).
    #[serde(default)]
    pub jwt_audience: Vec<String>,
}

/// The retention periods CloudWatch Logs accepts (PutRetentionPolicy's `retentionInDays`).
pub const LOG_RETENTION_DAYS: [i32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

impl DeployConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<DeployConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// The shipped config, parsed (see [`SHIPPED`]).
    pub fn shipped() -> DeployConfig {
        // Checked by the_shipped_config_is_valid.
        Self::parse(SHIPPED).expect("infra/deploy.toml is valid")
    }

    /// Parses and checks `text`.
    pub fn parse(text: &str) -> Result<DeployConfig, String> {
        let config: DeployConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        self.arch()?;
        for f in [Function::Predict, Function::Train] {
            let fc = self
                .functions
                .get(f.name())
                .ok_or_else(|| format!("[functions.{f}] is missing"))?;
            if !super::lambda::MEMORY_MB.contains(&fc.memory_mb) {
                return Err(format!(
                    "functions.{f}.memory_mb = {}: Lambda allows {:?}",
                    fc.memory_mb,
                    super::lambda::MEMORY_MB
                ));
            }
            if !(1..=900).contains(&fc.timeout_s) {
                return Err(format!(
                    "functions.{f}.timeout_s = {}: Lambda allows 1..=900",
                    fc.timeout_s
                ));
            }
            if !(512..=10240).contains(&fc.ephemeral_mb) {
                return Err(format!(
                    "functions.{f}.ephemeral_mb = {}: Lambda allows 512..=10240",
                    fc.ephemeral_mb
                ));
            }
        }
        if !LOG_RETENTION_DAYS.contains(&self.release.log_retention_days) {
            return Err(format!(
                "release.log_retention_days = {}: CloudWatch Logs allows {}",
                self.release.log_retention_days,
                LOG_RETENTION_DAYS.map(|d| d.to_string()).join(", ")
            ));
        }
        if let Some(r) = self
            .functions
            .values()
            .find_map(|f| f.reserved_concurrency.filter(|r| *r < 0))
        {
            return Err(format!(
                "reserved_concurrency = {r}: give 0 or more, or leave it out"
            ));
        }
        if !["none", "iam", "jwt"].contains(&self.api.auth.as_str()) {
            return Err(format!("api.auth = {:?}: none, iam or jwt", self.api.auth));
        }
        if self.api.auth == "jwt"
            && (self.api.jwt_issuer.is_empty() || self.api.jwt_audience.is_empty())
        {
            return Err("api.auth = \"jwt\" needs api.jwt_issuer and api.jwt_audience".into());
        }
        let b = &self.batch;
        if !(1..=crate::records::MAX_BATCH_ITEMS as u32).contains(&b.batch_size) {
            return Err(format!(
                "batch.batch_size = {}: 1 to {}",
                b.batch_size,
                crate::records::MAX_BATCH_ITEMS
            ));
        }
        if !(1..=10_000).contains(&b.concurrency) {
            return Err(format!("batch.concurrency = {}: 1 to 10000", b.concurrency));
        }
        if !(0.0..=100.0).contains(&b.tolerated_failure_percent) {
            return Err(format!(
                "batch.tolerated_failure_percent = {}: 0 to 100",
                b.tolerated_failure_percent
            ));
        }
        Ok(())
    }

    /// `architecture`, parsed.
    pub fn arch(&self) -> Result<Arch, String> {
        self.architecture
            .parse()
            .map_err(|e| format!("architecture: {e}"))
    }

    /// The section of function `f`.
    pub fn function(&self, f: Function) -> &FunctionConfig {
        // `check` made sure both are there.
        &self.functions[f.name()]
    }

    /// The same deployment under another stage: `-STAGE` after every name the deploy creates
    /// (functions and so their log groups, repository, role, bucket, API), so that a second
    /// copy (dev, a branch, a teammate's) lives beside the first in one account and region.
    /// A stage is 1 to 16 of a-z, 0-9 and `-`, starting with a letter or digit: every
    /// name stays within AWS's limits (a bucket name's 63 characters with the longest region).
    pub fn for_stage(mut self, stage: &str) -> Result<DeployConfig, String> {
        let ok = (1..=16).contains(&stage.len())
            && stage
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !stage.starts_with('-')
            && !stage.ends_with('-');
        if !ok {
            return Err(format!(
                "--stage {stage:?}: give 1 to 16 lowercase letters, digits or '-' (not first or \
                 last), e.g. dev or alice"
            ));
        }
        let suffix = |name: &mut String| {
            name.push('-');
            name.push_str(stage);
        };
        for f in self.functions.values_mut() {
            suffix(&mut f.name);
        }
        suffix(&mut self.repository.name);
        suffix(&mut self.role.name);
        suffix(&mut self.bucket.name);
        suffix(&mut self.api.name);
        suffix(&mut self.batch.state_machine);
        suffix(&mut self.batch.role);
        Ok(self)
    }

    /// Where batch results go by default: `batch.output` with the models bucket filled in.
    pub fn batch_output(&self, account: &str, region: &str) -> String {
        self.batch
            .output
            .replace("{bucket}", &self.bucket_name(account, region))
    }

    /// The bucket name with `{account}` and `{region}` filled in.
    pub fn bucket_name(&self, account: &str, region: &str) -> String {
        self.bucket
            .name
            .replace("{account}", account)
            .replace("{region}", region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/deploy.toml"),
        )
        .unwrap()
    }

    #[test]
    fn the_shipped_config_is_valid() {
        let c = DeployConfig::parse(&shipped()).unwrap();
        assert_eq!(c.function(Function::Predict).name, "lambda-cnn-predict");
        assert_eq!(c.arch().unwrap(), Arch::X86_64);
        assert_eq!(
            c.bucket_name("123456789012", "eu-west-1"),
            "lambda-cnn-models-123456789012-eu-west-1"
        );
    }

    #[test]
    fn a_stage_renames_everything_the_deploy_creates_and_nothing_else() {
        let base = DeployConfig::parse(&shipped()).unwrap();
        let dev = base.clone().for_stage("dev").unwrap();
        assert_eq!(
            dev.function(Function::Predict).name,
            "lambda-cnn-predict-dev"
        );
        assert_eq!(dev.function(Function::Train).name, "lambda-cnn-train-dev");
        assert_eq!(dev.repository.name, "lambda-cnn-dev");
        assert_eq!(dev.role.name, "lambda-cnn-execution-dev");
        assert_eq!(dev.api.name, "lambda-cnn-dev");
        assert_eq!(dev.release.alias, base.release.alias);
        let longest = dev.clone().bucket.name.replace("-dev", "-abcdefghijklmnop");
        let filled = longest
            .replace("{account}", "123456789012")
            .replace("{region}", "ap-southeast-4");
        assert!(filled.len() <= 63, "{filled}");
        for bad in ["", "Dev", "-x", "x-", "a_b", "abcdefghijklmnopq"] {
            assert!(base.clone().for_stage(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_values_are_named() {
        let bad = shipped().replace("memory_mb = 1024", "memory_mb = 64");
        let err = DeployConfig::parse(&bad).unwrap_err();
        assert!(err.contains("functions.predict.memory_mb = 64"), "{err}");
        let bad = shipped().replace("auth = \"none\"", "auth = \"jwt\"");
        assert!(DeployConfig::parse(&bad)
            .unwrap_err()
            .contains("jwt_issuer"));
        let bad = shipped().replace("log_retention_days = 14", "log_retention_days = 10");
        assert!(DeployConfig::parse(&bad)
            .unwrap_err()
            .contains("log_retention_days = 10: CloudWatch Logs allows 1, 3, 5, 7, 14"));
        let bad = shipped().replace("[role]", "[role]\ntypo = 1");
        assert!(DeployConfig::parse(&bad).unwrap_err().contains("typo"));
    }
}
