//! What every AWS stage shares: the SDK configuration (the standard chain: env, profiles,
//! `AWS_ENDPOINT_URL[_<SERVICE>]`), the account, and one error type that says what was being
//! attempted.

#![warn(missing_docs)]

use aws_config::meta::region::RegionProviderChain;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::credential_feature::AwsCredentialFeature;
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

/// A call where one refusal is an answer, not an error: `Ok(Some(v))`, `Ok(None)` where the
/// service answered `code`, else the error. The one home of the find-before-create,
/// delete-if-there and create-if-missing idioms.
pub trait Absent<T> {
    /// "Not there" (`NoSuchEntity`, `ResourceNotFoundException`) is `Ok(None)`.
    fn absent_if(self, code: &str) -> Result<Option<T>, AwsError>;

    /// "Already so" (`ResourceAlreadyExistsException`, `ImageAlreadyExistsException`) is
    /// `Ok(None)`: creating what is already there changed nothing.
    fn already_if(self, code: &str) -> Result<Option<T>, AwsError>;
}

impl<T> Absent<T> for Result<T, AwsError> {
    fn absent_if(self, code: &str) -> Result<Option<T>, AwsError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is(code) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn already_if(self, code: &str) -> Result<Option<T>, AwsError> {
        self.absent_if(code)
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
                format!(
                    "HTTP {} from the service: {}",
                    raw.status().as_u16(),
                    brief(&body)
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

/// One line of an answer the SDK could not parse: an HTML page's title (a proxy's or an
/// emulator's "404 Not Found"), else the body's words, at most 200 characters — never a page
/// of markup across the user's terminal.
fn brief(body: &str) -> String {
    let lower = body.to_ascii_lowercase();
    let title = lower
        .find("<title")
        .and_then(|start| Some(start + lower[start..].find('>')? + 1))
        .and_then(|start| Some(&body[start..start + lower[start..].find("</title>")?]))
        .filter(|t| !t.trim().is_empty());
    let words: Vec<&str> = title.unwrap_or(body).split_whitespace().collect();
    words.join(" ").chars().take(200).collect()
}

/// Every AWS client the pipeline uses, made once from one configuration: the one handle that
/// each stage and operation reads the clients it needs from. Cloning is cheap (the SDK's
/// clients share their configuration).
#[derive(Clone)]
pub struct Clients {
    /// Lambda's control plane.
    pub lambda: aws_sdk_lambda::Client,
    /// Where smoke tests (and tune's invocations) go: Lambda itself, or another endpoint
    /// serving the Lambda Invoke API (a Runtime API emulator running the image).
    pub smoke: aws_sdk_lambda::Client,
    /// IAM (the execution role, the deployer's policy).
    pub iam: aws_sdk_iam::Client,
    /// CloudWatch Logs (log groups, REPORT lines).
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// S3 (the models bucket).
    pub s3: aws_sdk_s3::Client,
    /// ECR (repository, images, tags).
    pub ecr: aws_sdk_ecr::Client,
    /// API Gateway v2 (the HTTP API).
    pub http_apis: aws_sdk_apigatewayv2::Client,
    /// API Gateway v1 (the REST API).
    pub rest_apis: aws_sdk_apigateway::Client,
    /// Step Functions (`deploy batch`).
    pub states: aws_sdk_sfn::Client,
}

impl Clients {
    /// All of them from `sdk`; smoke tests go to Lambda itself.
    pub fn new(sdk: &SdkConfig) -> Self {
        let lambda = aws_sdk_lambda::Client::new(sdk);
        Clients {
            smoke: lambda.clone(),
            lambda,
            iam: aws_sdk_iam::Client::new(sdk),
            logs: aws_sdk_cloudwatchlogs::Client::new(sdk),
            // Emulators on 127.0.0.1 cannot serve bucket.127.0.0.1 (virtual-host style).
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(sdk)
                    .force_path_style(std::env::var_os("AWS_ENDPOINT_URL").is_some())
                    .build(),
            ),
            ecr: aws_sdk_ecr::Client::new(sdk),
            http_apis: aws_sdk_apigatewayv2::Client::new(sdk),
            rest_apis: aws_sdk_apigateway::Client::new(sdk),
            states: aws_sdk_sfn::Client::new(sdk),
        }
    }
}

/// Where the user pointed the deploy with flags: `--profile` and `--region` win over the
/// environment and the profile files, as they do for the AWS CLI.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// A named profile of `~/.aws/config` (else `AWS_PROFILE`, else `default`).
    pub profile: Option<String>,
    /// A region (else `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's, the instance's).
    pub region: Option<String>,
}

/// The SDK configuration of a [`Target`], and where its region came from.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The configuration every client is built from.
    pub sdk: SdkConfig,
    /// The profile the chain reads (`--profile` or `AWS_PROFILE`); `None` is `default`.
    pub profile: Option<String>,
    /// Where the region came from (`--region`, `AWS_REGION`, `profile prod`, ...).
    pub region_from: String,
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The SDK configuration for `target` from the standard chain (environment, profiles with
/// every credential source: static keys, `role_arn`, web identity, `credential_process`, IAM
/// Identity Center, `aws login`; `AWS_ENDPOINT_URL[_<SERVICE>]`); `fallback_region` when no
/// region is configured anywhere, which [`Connection::region_from`] then says.
pub async fn connect(fallback_region: &str, target: &Target) -> Connection {
    let profile = target.profile.clone().or_else(|| env_var("AWS_PROFILE"));
    let (region, region_from) = region_of(fallback_region, target, profile.as_deref()).await;
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region));
    if let Some(p) = &target.profile {
        loader = loader.profile_name(p);
    }
    Connection {
        sdk: loader.load().await,
        profile,
        region_from,
    }
}

/// The region and where it came from, in the SDK's order after the flag.
async fn region_of(fallback: &str, target: &Target, profile: Option<&str>) -> (String, String) {
    use aws_config::meta::region::ProvideRegion;
    if let Some(r) = &target.region {
        return (r.clone(), "--region".into());
    }
    for var in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
        if let Some(r) = env_var(var) {
            return (r, var.into());
        }
    }
    let mut from_profile = aws_config::profile::ProfileFileRegionProvider::builder();
    if let Some(p) = profile {
        from_profile = from_profile.profile_name(p);
    }
    if let Some(r) = from_profile.build().region().await {
        return (
            r.to_string(),
            format!("profile {}", profile.unwrap_or("default")),
        );
    }
    // The rest of the SDK's chain: the instance's metadata (EC2), when there is one.
    if let Some(r) = RegionProviderChain::default_provider().region().await {
        return (r.to_string(), "the instance's metadata".into());
    }
    (
        fallback.to_owned(),
        "the deploy config's fallback: no region configured (set --region or AWS_REGION)".into(),
    )
}

/// Where the deploy runs: account and region, asked of STS (so a missing or wrong credential
/// is found before anything is created), and where each came from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Account {
    /// The 12-digit account id.
    pub id: String,
    /// The region the deploy works in.
    pub region: String,
    /// `aws`, `aws-cn` or `aws-us-gov`, from the caller's own ARN: every ARN we write uses it.
    pub partition: String,
    /// Who the deploy runs as (`sts:GetCallerIdentity`).
    pub caller_arn: String,
    /// Where the region came from.
    pub region_from: String,
    /// Where the credentials came from (the source and the profile).
    pub credentials_from: String,
}

impl Account {
    /// The domain of the partition's endpoints (`amazonaws.com`, `amazonaws.com.cn` in China).
    pub fn dns_suffix(&self) -> &'static str {
        dns_suffix(&self.partition)
    }
}

impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "account {} ({}), region {} (from {}), as {} (credentials: {})",
            self.id,
            self.partition,
            self.region,
            self.region_from,
            self.caller_arn,
            self.credentials_from
        )
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

/// The partition a region is in (`cn-north-1` is in `aws-cn`).
pub fn partition_of_region(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else {
        "aws"
    }
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

/// The credential source named by the features the SDK's providers record on the credentials
/// they make (the outermost provider wins: an assumed role whose source profile has keys is
/// an assumed role), and by the caller's ARN where the features do not tell (a profile's
/// `role_arn` records only "profile").
pub fn credential_source(features: &[AwsCredentialFeature], caller_arn: &str) -> &'static str {
    use AwsCredentialFeature as F;
    let has = |f: F| features.contains(&f);
    if has(F::CredentialsSso) || has(F::CredentialsProfileSso) {
        "IAM Identity Center (SSO)"
    } else if has(F::CredentialsLogin) || has(F::CredentialsProfileLogin) {
        "aws login (console session)"
    } else if has(F::CredentialsStsAssumeRoleWebId)
        || has(F::CredentialsEnvVarsStsWebIdToken)
        || has(F::CredentialsProfileStsWebIdToken)
    {
        "web identity (sts:AssumeRoleWithWebIdentity)"
    } else if has(F::CredentialsStsAssumeRole) {
        "assumed role (role_arn, sts:AssumeRole)"
    } else if has(F::CredentialsProcess) || has(F::CredentialsProfileProcess) {
        "credential_process"
    } else if has(F::CredentialsEnvVars) {
        "environment (AWS_ACCESS_KEY_ID)"
    } else if has(F::CredentialsProfile) && caller_arn.contains(":assumed-role/") {
        "assumed role (role_arn, sts:AssumeRole)"
    } else if has(F::CredentialsProfile) {
        "static keys in the profile"
    } else if has(F::CredentialsHttp) {
        "the container's credentials endpoint"
    } else if has(F::CredentialsImds) {
        "the instance's metadata (IMDS)"
    } else {
        "the SDK's default chain"
    }
}

/// What to do when the chain found no usable credentials, from what its providers said.
/// The SDK's "no credentials found in chain" lists every provider it tried, one clause each
/// (hundreds of characters); what a person needs is the one line that says which applies.
fn short_credentials_error(why: &str, profile: Option<&str>) -> String {
    let lower = why.to_ascii_lowercase();
    if !lower.contains("no credentials found in chain") {
        return why.to_owned();
    }
    let p = profile.unwrap_or("default");
    if lower.contains("was not defined") {
        format!("profile {p} was not defined")
    } else {
        format!(
            "no credentials found (tried: environment variables, profile {p}, web identity \
             token, container and instance metadata)"
        )
    }
}

fn credentials_hint(why: &str, profile: Option<&str>) -> String {
    let p = profile.unwrap_or("default");
    let flag = profile
        .map(|p| format!(" --profile {p}"))
        .unwrap_or_default();
    let lower = why.to_ascii_lowercase();
    if lower.contains("sso") {
        format!("sign in again with `aws sso login{flag}` (the profile's IAM Identity Center session has ended or was never started)")
    } else if lower.contains("login token") {
        format!("sign in again with `aws login{flag}`")
    } else if lower.contains("credential_process")
        || lower.contains("process") && lower.contains("exit")
    {
        format!("the profile's credential_process failed: run it by hand (see `credential_process` under [profile {p}] in ~/.aws/config)")
    } else if lower.contains("not defined") {
        format!("profile {p} is not in ~/.aws/config or ~/.aws/credentials: check --profile / AWS_PROFILE (`aws configure list-profiles` lists them)")
    } else {
        "configure credentials: `aws configure`, `aws sso login --profile NAME` with AWS_PROFILE=NAME, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY".into()
    }
}

/// The account and region of `conn`: the credentials resolved first (so that a failure says
/// which source failed and what to do), then asked of STS.
pub async fn account(conn: &Connection) -> Result<Account, AwsError> {
    use aws_credential_types::provider::ProvideCredentials;
    let profile = conn.profile.as_deref();
    let region = conn.sdk.region().map(|r| r.to_string()).unwrap_or_default();
    if !is_region_name(&region) {
        return Err(AwsError::new(
            "checking the region",
            format!(
                "{region:?} (from {}) is not an AWS region name like us-east-1 or eu-west-2: \
                 give one with --region or AWS_REGION (aws account list-regions lists yours)",
                conn.region_from
            ),
        ));
    }
    let provider = conn.sdk.credentials_provider().ok_or_else(|| {
        AwsError::new(
            "finding AWS credentials",
            credentials_hint("no provider", profile),
        )
    })?;
    let creds = provider.provide_credentials().await.map_err(|e| {
        let why = short_credentials_error(&crate::errors::chain(&e), profile);
        let action = match profile {
            Some(p) => format!("finding AWS credentials (profile {p})"),
            None => "finding AWS credentials".to_owned(),
        };
        AwsError::new(
            action,
            format!("{why}; {}", credentials_hint(&why, profile)),
        )
    })?;
    let features = creds
        .get_property::<Vec<AwsCredentialFeature>>()
        .cloned()
        .unwrap_or_default();
    let from = |source: &str| match profile {
        Some(p) => format!("{source}, profile {p}"),
        None => source.to_owned(),
    };
    let region = conn.sdk.region().map(|r| r.to_string()).unwrap_or_default();
    let sts = aws_sdk_sts::Client::new(&conn.sdk);
    let who = sts.get_caller_identity().send().await.map_err(|e| {
        // No answer at all (refused, no DNS name, a timeout): name where it tried to go.
        let unreachable = matches!(e, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_));
        let mut e = aws_err(format!(
            "finding the AWS account (sts:GetCallerIdentity) with credentials from {}",
            from(credential_source(&features, ""))
        ))(e);
        if unreachable {
            e.message = format!(
                "cannot reach STS at {} (region {region}, from {}): {}; check the network \
                     (proxy, VPN, firewall) and that {region} is a region you use (--region)",
                sts_endpoint(&region),
                conn.region_from,
                e.message
            );
        }
        e
    })?;
    let credentials_from = from(credential_source(&features, who.arn().unwrap_or_default()));
    Ok(Account {
        id: who.account().unwrap_or_default().to_owned(),
        region: conn.sdk.region().map(|r| r.to_string()).unwrap_or_default(),
        partition: partition_of(who.arn().unwrap_or_default()),
        caller_arn: who.arn().unwrap_or_default().to_owned(),
        region_from: conn.region_from.clone(),
        credentials_from,
    })
}

/// Whether `region` has the shape of a region name (`us-east-1`, `cn-north-1`,
/// `us-gov-west-1`, `eu-central-2`): a typo such as `us-east` or `useast1` is caught before
/// it becomes a DNS failure.
pub fn is_region_name(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|n| (1..=2).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Where the SDK sends STS calls for `region`: the endpoint the environment names, else STS's
/// regional one.
fn sts_endpoint(region: &str) -> String {
    env_var("AWS_ENDPOINT_URL_STS")
        .or_else(|| env_var("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| {
            format!(
                "https://sts.{region}.{}",
                dns_suffix(partition_of_region(region))
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_is_an_answer_and_other_errors_stay_errors() {
        let not_there = || -> Result<u8, AwsError> {
            Err(AwsError {
                action: "looking".into(),
                code: Some("NoSuchEntity".into()),
                message: "gone".into(),
            })
        };
        assert_eq!(
            Ok::<u8, AwsError>(7).absent_if("NoSuchEntity").unwrap(),
            Some(7)
        );
        assert_eq!(not_there().absent_if("NoSuchEntity").unwrap(), None);
        assert!(not_there().absent_if("ResourceNotFoundException").is_err());
    }

    #[test]
    fn already_there_is_an_answer_and_other_errors_stay_errors() {
        let exists = || -> Result<u8, AwsError> {
            Err(AwsError {
                action: "creating".into(),
                code: Some("ResourceAlreadyExistsException".into()),
                message: "exists".into(),
            })
        };
        let code = "ResourceAlreadyExistsException";
        assert_eq!(Ok::<u8, AwsError>(1).already_if(code).unwrap(), Some(1));
        assert_eq!(exists().already_if(code).unwrap(), None);
        assert!(exists().already_if("ImageAlreadyExistsException").is_err());
    }

    #[test]
    fn an_unparsed_answer_is_one_short_line() {
        let page = "<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n<p>The requested URL was not found on the server.";
        assert_eq!(brief(page), "404 Not Found");
        assert_eq!(brief("  upstream\n  timed out \n"), "upstream timed out");
        assert_eq!(brief(&"x".repeat(500)).len(), 200);
        assert_eq!(brief(""), "");
        assert_eq!(brief("<TITLE lang=en> Bad Gateway </TITLE>"), "Bad Gateway");
        assert_eq!(
            brief("<title></title><p>empty title</p>"),
            "<title></title><p>empty title</p>"
        );
    }

    #[test]
    fn region_names_are_told_from_typos() {
        for ok in [
            "us-east-1",
            "eu-central-2",
            "cn-north-1",
            "us-gov-west-1",
            "ap-southeast-4",
        ] {
            assert!(is_region_name(ok), "{ok}");
        }
        for bad in [
            "",
            "us-east",
            "useast1",
            "US-EAST-1",
            "us-east-100",
            "us--1",
            "eu west 1",
        ] {
            assert!(!is_region_name(bad), "{bad}");
        }
    }

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
        assert_eq!(partition_of_region("cn-north-1"), "aws-cn");
        assert_eq!(partition_of_region("us-gov-west-1"), "aws-us-gov");
        assert_eq!(partition_of_region("eu-west-1"), "aws");
    }
}
