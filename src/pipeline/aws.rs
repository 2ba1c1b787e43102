//! What every AWS stage shares: the SDK configuration (the standard chain: env, profiles,
//! `AWS_ENDPOINT_URL[_<SERVICE>]`), the account, and one error type that says what was being
//! attempted.

#![warn(missing_docs)]

use aws_config::meta::region::RegionProviderChain;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};

/// An AWS call that failed: what was attempted, the service's error code when it sent one,
/// and its message.
#[derive(Debug, thiserror::Error)]
#[error("{action}: {}{message}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
pub struct AwsError {
    /// What was attempted ("creating function x").
    pub action: String,
    /// The service's error code, when it sent one.
    pub code: Option<String>,
    /// The service's message (or the transport's error).
    pub message: String,
}

impl AwsError {
    /// An error without a service code (a transport failure, a waiter, a local check).
    pub fn new(action: impl Into<String>, message: impl Into<String>) -> Self {
        AwsError {
            action: action.into(),
            code: None,
            message: message.into(),
        }
    }

    /// The service's error code is `code` (e.g. `ResourceNotFoundException`). Matching on the
    /// code, not on typed variants: emulators answer some errors the SDK does not model.
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

/// `map_err(aws_err("creating function x"))`.
pub fn aws_err<E>(action: impl Into<String>) -> impl FnOnce(SdkError<E>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let action = action.into();
    move |e| {
        let code = e.code().map(str::to_owned);
        let message = match (&e, e.message()) {
            (_, Some(m)) if code.is_some() => m.to_owned(),
            // An answer the SDK could not make sense of: say what came back, briefly.
            (SdkError::ServiceError(se), _) => {
                let raw = se.raw();
                let body = raw
                    .body()
                    .bytes()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                let body: String = body.chars().take(200).collect();
                format!(
                    "HTTP {} from the service: {}",
                    raw.status().as_u16(),
                    body.trim()
                )
            }
            _ => crate::errors::chain(&e),
        };
        AwsError {
            action,
            code,
            message,
        }
    }
}

/// The SDK configuration from the standard chain; `fallback_region` when none is configured.
pub async fn sdk_config(fallback_region: &str) -> SdkConfig {
    let region =
        RegionProviderChain::default_provider().or_else(Region::new(fallback_region.to_owned()));
    aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .load()
        .await
}

/// Where the deploy runs: account and region, asked of STS (so a missing or wrong credential
/// is found before anything is created).
#[derive(Debug, Clone)]
pub struct Account {
    /// The 12-digit account id.
    pub id: String,
    /// The region the deploy works in.
    pub region: String,
    /// `aws`, `aws-cn` or `aws-us-gov`, from the caller's own ARN: every ARN we write uses it.
    pub partition: String,
    /// Who the deploy runs as (`sts:GetCallerIdentity`).
    pub caller_arn: String,
}

impl Account {
    /// The domain of the partition's endpoints (`amazonaws.com`, `amazonaws.com.cn` in China).
    pub fn dns_suffix(&self) -> &'static str {
        dns_suffix(&self.partition)
    }
}

/// The partition an ARN is in (`arn:<partition>:…`); `aws` when it does not say.
pub fn partition_of(arn: &str) -> String {
    arn.split(':')
        .nth(1)
        .filter(|p| arn.starts_with("arn:") && !p.is_empty())
        .unwrap_or("aws")
        .to_owned()
}

/// The endpoint domain of a partition.
pub fn dns_suffix(partition: &str) -> &'static str {
    match partition {
        "aws-cn" => "amazonaws.com.cn",
        "aws-iso" => "c2s.ic.gov",
        "aws-iso-b" => "sc2s.sgov.gov",
        _ => "amazonaws.com",
    }
}

/// The account and region of `config`, asked of STS.
pub async fn account(config: &SdkConfig) -> Result<Account, AwsError> {
    let sts = aws_sdk_sts::Client::new(config);
    let who = sts.get_caller_identity().send().await.map_err(aws_err(
        "finding the AWS account (sts:GetCallerIdentity); are credentials configured? \
         (aws configure, AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
    ))?;
    Ok(Account {
        id: who.account().unwrap_or_default().to_owned(),
        region: config.region().map(|r| r.to_string()).unwrap_or_default(),
        partition: partition_of(who.arn().unwrap_or_default()),
        caller_arn: who.arn().unwrap_or_default().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_and_its_domain_come_from_the_callers_arn() {
        assert_eq!(
            partition_of("arn:aws:sts::123456789012:assumed-role/r/s"),
            "aws"
        );
        assert_eq!(
            partition_of("arn:aws-cn:iam::123456789012:user/u"),
            "aws-cn"
        );
        assert_eq!(
            partition_of("arn:aws-us-gov:iam::123456789012:user/u"),
            "aws-us-gov"
        );
        assert_eq!(partition_of(""), "aws");
        assert_eq!(dns_suffix("aws-cn"), "amazonaws.com.cn");
        assert_eq!(dns_suffix("aws-us-gov"), "amazonaws.com");
    }
}
