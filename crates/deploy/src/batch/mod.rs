//! `deploy batch`: every image under an S3 prefix scored by predict's released alias, on Step
//! Functions' Distributed Map — the state machine ([`definition`]), its role and the function's
//! grants ([`grants`]), the run and its progress ([`engine`]), and the summary read back from
//! the result objects ([`summary`]).
//!
//! How the listing scales: the map's S3 item reader pages ListObjectsV2 (1,000 keys a page)
//! inside Step Functions, so this command never lists the input; 10 M objects are 10,000
//! pages read by the service, then 100,000 children at the default batch of 100.

#![warn(missing_docs)]

pub mod definition;
pub mod engine;
pub mod grants;
mod run;
pub mod summary;

pub use run::{start, summarize};

use std::fmt;
use std::str::FromStr;

/// A bucket and a key prefix: `s3://bucket/prefix/` (the prefix may be empty: the whole bucket).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct S3Prefix {
    /// The bucket.
    pub bucket: String,
    /// The key prefix, empty or ending in `/`.
    pub prefix: String,
}

impl FromStr for S3Prefix {
    type Err = String;

    /// `s3://bucket[/prefix[/]]`; a prefix is a folder: a missing trailing `/` is added, so
    /// `s3://b/digits` never takes in `digits2/`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            |why: &str| format!("{s:?} is not an S3 folder ({why}); expected s3://bucket/prefix/");
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| bad("it does not start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // S3's bucket naming rules: 3-63 characters of lower-case letters, digits, dots and
        // hyphens, beginning and ending with a letter or digit.
        let name_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !name_ok {
            return Err(bad("the bucket name is not one S3 allows"));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() && prefix.split('/').any(|seg| matches!(seg, "" | "." | "..")) {
            return Err(bad("the prefix has an empty, `.` or `..` segment"));
        }
        if prefix.len() > crate::records::MAX_PREFIX_BYTES {
            return Err(bad(
                "the prefix is longer than a result key leaves room for",
            ));
        }
        Ok(S3Prefix {
            bucket: bucket.to_owned(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }
}

impl fmt::Display for S3Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

impl S3Prefix {
    /// Whether one of the two holds the other: results written under the input would be read
    /// as input by the next run.
    pub fn overlaps(&self, other: &S3Prefix) -> bool {
        self.bucket == other.bucket
            && (self.prefix.starts_with(&other.prefix) || other.prefix.starts_with(&self.prefix))
    }

    /// The ARN of the objects under it.
    pub fn objects_arn(&self, partition: &str) -> String {
        format!("arn:{partition}:s3:::{}/{}*", self.bucket, self.prefix)
    }

    /// The bucket's ARN.
    pub fn bucket_arn(&self, partition: &str) -> String {
        format!("arn:{partition}:s3:::{}", self.bucket)
    }
}

/// What a batch run is: the request, checked, with every name filled in.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchSpec {
    /// The state machine's name.
    pub state_machine: String,
    /// Its role's name.
    pub role: String,
    /// Where: partition, region, account.
    pub partition: String,
    /// The region.
    pub region: String,
    /// The account.
    pub account: String,
    /// The function's name.
    pub function: String,
    /// The alias or version the children invoke.
    pub qualifier: String,
    /// `function_arn` with the qualifier: what the children invoke.
    pub function_arn: String,
    /// The images.
    pub input: S3Prefix,
    /// Where the result objects go.
    pub output: S3Prefix,
    /// Keys per child (AWS form).
    pub batch_size: u32,
    /// Children at once.
    pub concurrency: u32,
    /// The share of items that may fail with the run still succeeding, percent.
    pub tolerated_failure_percent: f64,
    /// Which dialect the definition is in.
    pub form: definition::Form,
}

/// A request that cannot run, said before anything is created.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct BadBatch(pub String);

/// What `deploy batch` was asked, before the account fills in the names.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    /// `--input`.
    pub input: S3Prefix,
    /// `--output`.
    pub output: S3Prefix,
    /// `--batch-size`.
    pub batch_size: u32,
    /// `--concurrency`.
    pub concurrency: u32,
    /// `--tolerated-failure`.
    pub tolerated_failure_percent: f64,
    /// `--qualifier`: alias or version.
    pub qualifier: String,
    /// `--form`.
    pub form: definition::Form,
}

impl BatchRequest {
    /// Checks the request and names everything in `account`/`region`/`partition`.
    pub fn spec(
        &self,
        config: &super::config::DeployConfig,
        partition: &str,
        region: &str,
        account: &str,
    ) -> Result<BatchSpec, BadBatch> {
        if self.input.overlaps(&self.output) {
            return Err(BadBatch(format!(
                "--output {} and --input {} overlap: the results would be read as images by the next run; write them under another prefix",
                self.output, self.input
            )));
        }
        if !(1..=crate::records::MAX_BATCH_ITEMS as u32).contains(&self.batch_size) {
            return Err(BadBatch(format!(
                "--batch-size {}: 1 to {} keys a child (predict's limit per batch)",
                self.batch_size,
                crate::records::MAX_BATCH_ITEMS
            )));
        }
        if !(1..=definition::MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(BadBatch(format!(
                "--concurrency {}: 1 to {} children at once (Distributed Map's limit)",
                self.concurrency,
                definition::MAX_CONCURRENCY
            )));
        }
        if !(0.0..=100.0).contains(&self.tolerated_failure_percent) {
            return Err(BadBatch(format!(
                "--tolerated-failure {}: a percentage, 0 to 100",
                self.tolerated_failure_percent
            )));
        }
        let q = &self.qualifier;
        if q.is_empty()
            || q == "$LATEST"
            || !q
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(BadBatch(format!(
                "--qualifier {q:?}: an alias or a published version (a batch runs released code, never $LATEST)"
            )));
        }
        let function = config
            .function(super::image::Function::Predict)
            .name
            .clone();
        Ok(BatchSpec {
            state_machine: config.batch.state_machine.clone(),
            role: config.batch.role.clone(),
            partition: partition.to_owned(),
            region: region.to_owned(),
            account: account.to_owned(),
            function_arn: format!(
                "arn:{partition}:lambda:{region}:{account}:function:{function}:{q}"
            ),
            function,
            qualifier: q.clone(),
            input: self.input.clone(),
            output: self.output.clone(),
            batch_size: self.batch_size,
            concurrency: self.concurrency,
            tolerated_failure_percent: self.tolerated_failure_percent,
            form: self.form,
        })
    }
}

impl BatchSpec {
    /// The state machine's ARN.
    pub fn state_machine_arn(&self) -> String {
        format!(
            "arn:{}:states:{}:{}:stateMachine:{}",
            self.partition, self.region, self.account, self.state_machine
        )
    }

    /// The ARN pattern of its executions (and a Distributed Map's child executions).
    pub fn executions_arn(&self) -> String {
        format!(
            "arn:{}:states:{}:{}:execution:{}:*",
            self.partition, self.region, self.account, self.state_machine
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec() -> BatchSpec {
        let config = super::super::config::DeployConfig::shipped();
        BatchRequest {
            input: "s3://images/digits".parse().unwrap(),
            output: "s3://results/run/".parse().unwrap(),
            batch_size: 100,
            concurrency: 4,
            tolerated_failure_percent: 5.0,
            qualifier: "live".into(),
            form: definition::Form::Aws,
        }
        .spec(&config, "aws", "us-east-1", "123456789012")
        .unwrap()
    }

    #[test]
    fn an_s3_folder_is_a_bucket_and_a_prefix_ending_in_a_slash() {
        let p: S3Prefix = "s3://images/digits".parse().unwrap();
        assert_eq!(
            (p.bucket.as_str(), p.prefix.as_str()),
            ("images", "digits/")
        );
        assert_eq!(p.to_string(), "s3://images/digits/");
        let whole: S3Prefix = "s3://images".parse().unwrap();
        assert_eq!(whole.prefix, "");
        for bad in [
            "images/x",
            "s3://",
            "s3://Im",
            "s3://a",
            "s3://b_c/x",
            "s3://images/a//b",
            "s3://images/../x",
            "s3://-images/",
        ] {
            assert!(bad.parse::<S3Prefix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_request_is_checked_before_anything_is_made() {
        let config = super::super::config::DeployConfig::shipped();
        let ok = BatchRequest {
            input: "s3://images/digits/".parse().unwrap(),
            output: "s3://images/results/".parse().unwrap(),
            batch_size: 100,
            concurrency: 10,
            tolerated_failure_percent: 0.0,
            qualifier: "live".into(),
            form: definition::Form::Aws,
        };
        let spec = ok
            .spec(&config, "aws-cn", "cn-north-1", "123456789012")
            .unwrap();
        assert_eq!(
            spec.function_arn,
            "arn:aws-cn:lambda:cn-north-1:123456789012:function:lambda-cnn-predict:live"
        );
        assert_eq!(
            spec.state_machine_arn(),
            "arn:aws-cn:states:cn-north-1:123456789012:stateMachine:lambda-cnn-batch"
        );
        let refused = |change: &dyn Fn(&mut BatchRequest), says: &str| {
            let mut r = ok.clone();
            change(&mut r);
            let e = r.spec(&config, "aws", "us-east-1", "1").unwrap_err();
            assert!(e.0.contains(says), "{says}: {e}");
        };
        refused(
            &|r| r.output = "s3://images/digits/out/".parse().unwrap(),
            "overlap",
        );
        refused(&|r| r.output = "s3://images".parse().unwrap(), "overlap");
        refused(&|r| r.batch_size = 0, "--batch-size");
        refused(&|r| r.batch_size = 1001, "--batch-size");
        refused(&|r| r.concurrency = 0, "--concurrency");
        refused(&|r| r.concurrency = 10_001, "--concurrency");
        refused(
            &|r| r.tolerated_failure_percent = 100.5,
            "--tolerated-failure",
        );
        refused(
            &|r| r.tolerated_failure_percent = f64::NAN,
            "--tolerated-failure",
        );
        refused(&|r| r.qualifier = "$LATEST".into(), "$LATEST");
        refused(&|r| r.qualifier = "live:x".into(), "--qualifier");
    }
}
