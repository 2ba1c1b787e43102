//! `deploy doctor`: what would stop `deploy all` in this account and region, found before
//! anything is created, each with what to do. It only reads: caller identity, the account's
//! Lambda limits, the names the deploy would take (bucket, role, repository, API), the images'
//! architecture, and (where the caller may ask) whether the caller holds the permissions in
//! `infra/iam/deployer-policy.json`.

#![warn(missing_docs)]

use std::path::Path;

use super::aws::{aws_err, Account, AwsError, Clients};
use super::config::DeployConfig;
use super::image::Function;
use super::lambda::{self, NEW_ACCOUNT_MAX_MEMORY_MB};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// Nothing to do.
    Ok,
    /// The deploy goes on, with less (said what).
    Warn,
    /// The deploy would fail: `deploy all` stops.
    Fail,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, not `write_str`: the table lines align the level with `{:<5}`.
        f.pad(match self {
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        })
    }
}

/// One finding: what was checked, what was found, and what to do when it is not OK.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Check {
    /// How bad.
    pub level: Level,
    /// What was checked (a short name).
    pub check: &'static str,
    /// What was found.
    pub found: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(check: &'static str, found: impl Into<String>) -> Self {
        Check {
            level: Level::Ok,
            check,
            found: found.into(),
            fix: None,
        }
    }

    fn warn(check: &'static str, found: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            level: Level::Warn,
            check,
            found: found.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(check: &'static str, found: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            level: Level::Fail,
            check,
            found: found.into(),
            fix: Some(fix.into()),
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<5}{:<14}{}", self.level, self.check, self.found)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n{:19}→ {fix}", "")?;
        }
        Ok(())
    }
}

/// What the doctor looks at besides AWS.
pub struct Local<'a> {
    /// Where `deploy all` writes (and `release` reads) the images: DIR/<function>.
    pub images: &'a Path,
    /// The MNIST files the train image packs.
    pub mnist_dir: &'a Path,
    /// `infra/iam/deployer-policy.json`: the actions the deploy calls.
    pub deployer_policy: &'a str,
    /// A model file to ship (`--model`), checked as `deploy release --model` will.
    pub model: Option<&'a Path>,
}

/// Every check, in the order a first deploy meets them.
pub async fn examine(
    clients: &Clients,
    config: &DeployConfig,
    account: &Account,
    local: &Local<'_>,
) -> Vec<Check> {
    let mut out = vec![Check::ok("identity", account.to_string())];
    out.push(permissions(&clients.iam, account, local.deployer_policy).await);
    out.push(concurrency(&clients.lambda, config).await);
    out.extend(memory(config));
    out.push(api_timeout(config));
    out.extend(architecture(config, local.images));
    out.push(mnist(local.mnist_dir));
    out.extend(local.model.map(|m| model(m, config)));
    out.push(
        bucket(
            &clients.s3,
            &config.bucket_name(&account.id, &account.region),
            &account.id,
        )
        .await,
    );
    out.push(role(&clients.iam, &config.role.name).await);
    out.push(repository(&clients.ecr, &config.repository.name).await);
    out.push(apis(&clients.http_apis, &clients.rest_apis, &config.api.name).await);
    out
}

/// What the doctor can still say when it cannot sign in: the identity FAIL (why, and what to
/// do) and every check that needs no AWS.
pub fn without_account(config: &DeployConfig, local: &Local<'_>, why: &AwsError) -> Vec<Check> {
    let fix = explain(why).unwrap_or_else(|| {
        "sign in (aws sso login --profile NAME, aws configure, or AWS_PROFILE), then run deploy doctor again".to_owned()
    });
    let mut out = vec![Check::fail("identity", why.to_string(), fix)];
    out.extend(memory(config));
    out.push(api_timeout(config));
    out.extend(architecture(config, local.images));
    out.push(mnist(local.mnist_dir));
    out.extend(local.model.map(|m| model(m, config)));
    out
}

/// The doctor ran and found what would stop the deploy (`deploy doctor` exits 1; "could not
/// run" is 3).
#[derive(Debug, thiserror::Error)]
#[error("deploy doctor found {count} problem(s): {list}")]
pub struct ProblemsFound {
    /// How many FAILs.
    pub count: usize,
    /// Each one's finding and fix, joined by "; ".
    pub list: String,
}

/// An error naming every FAIL among `checks`, if any.
pub fn fail_on(checks: &[Check]) -> Result<(), ProblemsFound> {
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c.level == Level::Fail)
        .map(|c| format!("{} ({})", c.found, c.fix.as_deref().unwrap_or_default()))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(ProblemsFound {
            count: failed.len(),
            list: failed.join("; "),
        })
    }
}

/// The most serious level found.
pub fn worst(checks: &[Check]) -> Level {
    checks.iter().map(|c| c.level).max().unwrap_or(Level::Ok)
}

async fn concurrency(lambda_client: &aws_sdk_lambda::Client, config: &DeployConfig) -> Check {
    let predict = config.function(Function::Predict);
    let settings = match lambda::account_concurrency(lambda_client).await {
        Ok(s) => s,
        Err(e) => {
            return Check::warn(
                "concurrency",
                format!("cannot read the account's Lambda limits: {e}"),
                "check that lambda:GetAccountSettings is allowed",
            )
        }
    };
    let Some(wanted) = predict.reserved_concurrency else {
        return Check::ok(
            "concurrency",
            format!(
                "account limit {}, {} unreserved; no cap configured for {}",
                settings.limit, settings.unreserved, predict.name
            ),
        );
    };
    let current = lambda::reserved_concurrency(lambda_client, &predict.name)
        .await
        .ok()
        .flatten()
        .unwrap_or(0);
    match lambda::can_reserve(settings, current, wanted) {
        Ok(()) => Check::ok(
            "concurrency",
            format!(
                "account limit {}, {} unreserved: {} can be capped at {wanted}",
                settings.limit, settings.unreserved, predict.name
            ),
        ),
        Err(why) => Check::warn(
            "concurrency",
            format!("{}: {why}", predict.name),
            "deploy goes on without the cap (the public endpoint then shares the account's pool); raise \"Concurrent executions\" in Service Quotas (Lambda), or set reserved_concurrency lower in infra/deploy.toml",
        ),
    }
}

fn memory(config: &DeployConfig) -> Vec<Check> {
    [Function::Predict, Function::Train]
        .into_iter()
        .map(|f| {
            let fc = config.function(f);
            if fc.memory_mb > NEW_ACCOUNT_MAX_MEMORY_MB {
                Check::warn(
                    "memory",
                    format!(
                        "{} is configured with {} MB; new accounts are often capped at {NEW_ACCOUNT_MAX_MEMORY_MB} MB (an account-level quota)",
                        fc.name, fc.memory_mb
                    ),
                    format!("if Lambda refuses it, deploy uses {NEW_ACCOUNT_MAX_MEMORY_MB} MB and says so; to get more, open an AWS Support case to raise the account's function memory limit, or lower memory_mb in infra/deploy.toml"),
                )
            } else {
                Check::ok("memory", format!("{}: {} MB", fc.name, fc.memory_mb))
            }
        })
        .collect()
}

/// predict answers through API Gateway, which stops waiting after its integration limit: a
/// function allowed to run longer keeps running (and billing) after the caller got a 503/504.
fn api_timeout(config: &DeployConfig) -> Check {
    let fc = config.function(Function::Predict);
    let limit = super::apigw::INTEGRATION_TIMEOUT_S;
    if fc.timeout_s < limit {
        Check::ok(
            "timeout",
            format!(
                "{}: {} s, under API Gateway's {limit} s integration limit",
                fc.name, fc.timeout_s
            ),
        )
    } else {
        Check::warn(
            "timeout",
            format!(
                "{}: {} s, but API Gateway gives up after {limit} s: a slower request gets a 5xx while the function runs (and bills) on",
                fc.name, fc.timeout_s
            ),
            format!("set functions.predict.timeout_s below {limit} in infra/deploy.toml"),
        )
    }
}

fn architecture(config: &DeployConfig, images: &Path) -> Vec<Check> {
    [Function::Predict, Function::Train]
        .into_iter()
        .map(|f| match super::image::read_layout(&images.join(f.name()), f) {
            Err(_) => Check::ok(
                "architecture",
                format!("{f}: no image in {} yet (deploy all builds it for the config's architecture)", images.display()),
            ),
            Ok(img) if config.arch().ok() == Some(img.arch) => {
                Check::ok("architecture", format!("{f}: image and config are {}", img.arch))
            }
            Ok(img) => Check::warn(
                "architecture",
                format!("{f}: the image is {}, infra/deploy.toml says {}", img.arch, config.architecture),
                format!("deploy gives the function the image's architecture ({}); set architecture = \"{}\" to say so", img.arch, img.arch),
            ),
        })
        .collect()
}

/// A model file to ship: readable, within the size a function loads, its description within
/// the limits and its tensors as described (the header, as the deploy binary reads it), and
/// what it costs predict's memory.
fn model(path: &Path, config: &DeployConfig) -> Check {
    let fix = "import it again with `lambda-cnn import` (the message names the limit or the part that is wrong)";
    let bytes = match super::release::read_model_file(path) {
        Ok(b) => b,
        Err(e) => return Check::fail("model", e.to_string(), fix),
    };
    let spec = match crate::net::header::describe_file(&bytes) {
        Ok(Some(spec)) => spec,
        Ok(None) => {
            return Check::ok(
                "model",
                format!(
                    "{}: the seed's weights ({} bytes)",
                    path.display(),
                    bytes.len()
                ),
            )
        }
        Err(e) => return Check::fail("model", e.message, fix),
    };
    let plan = match spec.plan() {
        Ok(p) => p,
        Err(e) => return Check::fail("model", e.message, fix),
    };
    // What a loaded model holds (weights, and a request's images evaluated in chunks), and
    // the file's bytes while it loads.
    let need_mb =
        (bytes.len() as u64 + plan.loaded_bytes(&spec)).div_ceil(1 << 20) + PREDICT_BASE_MB;
    let fc = config.function(Function::Predict);
    let found = format!(
        "{}: {}; {} parameters, {} multiply-adds per image, {} bytes; smoke test: {}",
        path.display(),
        spec.summary(),
        plan.params,
        plan.macs,
        bytes.len(),
        if spec.sample.is_some() {
            "its stored sample"
        } else {
            "GET /health (no stored sample)"
        }
    );
    if need_mb > fc.memory_mb as u64 {
        return Check::warn(
            "model",
            format!(
                "{found}; it needs about {need_mb} MB, {} has {} MB",
                fc.name, fc.memory_mb
            ),
            format!(
                "raise [functions.predict] memory_mb to {need_mb} or more in the deploy config"
            ),
        );
    }
    Check::ok("model", found)
}

/// What predict takes without its model: the runtime, the binary, a request's buffers.
const PREDICT_BASE_MB: u64 = 64;

fn mnist(dir: &Path) -> Check {
    let missing: Vec<&str> = crate::data::FILES
        .iter()
        .map(|f| f.name)
        .filter(|name| crate::data::mnist::locate(dir, name).is_none())
        .collect();
    if missing.is_empty() {
        Check::ok(
            "mnist",
            format!("the train image's data is in {}", dir.display()),
        )
    } else {
        Check::fail(
            "mnist",
            format!("{} lacks {}", dir.display(), missing.join(", ")),
            "run `make data` (downloads and checks MNIST into data/mnist) or set MNIST_DIR",
        )
    }
}

async fn bucket(s3: &aws_sdk_s3::Client, name: &str, account_id: &str) -> Check {
    use super::bucket::BucketState;
    match super::bucket::state(s3, name, account_id).await {
        BucketState::Ours => Check::ok("bucket", format!("{name} exists and is yours")),
        BucketState::Free => Check::ok(
            "bucket",
            format!("{name} is free: deploy creates it (a name deleted recently may be refused by S3 for a while; deploy retries for 5 minutes, saying so)"),
        ),
        BucketState::Foreign => Check::fail(
            "bucket",
            format!("{name} exists and is not account {account_id}'s (bucket names are global)"),
            "set [bucket] name in infra/deploy.toml to another name ({account} and {region} are filled in)",
        ),
        BucketState::Unknown(why) => Check::warn(
            "bucket",
            format!("cannot tell whether {name} is free: {why}"),
            "check s3:ListBucket is allowed",
        ),
    }
}

async fn role(iam: &aws_sdk_iam::Client, name: &str) -> Check {
    match super::iam::find_role(iam, name).await {
        Ok(Some(role)) => {
            let trust = role
                .assume_role_policy_document()
                .map(percent_decode)
                .unwrap_or_default();
            if trust.contains("lambda.amazonaws.com") {
                Check::ok("role", format!("{name} exists and Lambda may assume it"))
            } else {
                Check::warn(
                    "role",
                    format!("{name} exists but its trust policy does not name lambda.amazonaws.com"),
                    "deploy release replaces its trust policy with infra/iam/trust-policy.json; if the role is used elsewhere, set [role] name in infra/deploy.toml to another",
                )
            }
        }
        Ok(None) => Check::ok("role", format!("{name} is free: deploy creates it")),
        Err(e) => Check::warn("role", e.to_string(), "check iam:GetRole is allowed"),
    }
}

/// The ECR repository: reused when it exists, but `deploy` moves the `live-<function>` tags
/// that keep live images from expiring, which a tag-immutable repository refuses
/// (`ImageTagAlreadyExistsException` on the second release).
async fn repository(ecr: &aws_sdk_ecr::Client, name: &str) -> Check {
    match super::ecr::find_repository(ecr, name).await {
        Ok(Some(repo)) => {
            let mutability = repo
                .image_tag_mutability()
                .map_or("MUTABLE", |m| m.as_str())
                .to_owned();
            if mutability == "MUTABLE" {
                Check::ok(
                    "repository",
                    format!("{name} exists: deploy pushes to it and replaces its lifecycle and repository policies"),
                )
            } else {
                Check::fail(
                    "repository",
                    format!("{name} has tag mutability {mutability}: the second release cannot move its live-<function> tags"),
                    format!("set [repository] name in infra/deploy.toml to a new name, or `aws ecr put-image-tag-mutability --repository-name {name} --image-tag-mutability MUTABLE`"),
                )
            }
        }
        Ok(None) => Check::ok("repository", format!("{name} is free: deploy creates it")),
        Err(e) => Check::warn(
            "repository",
            format!("cannot tell whether {name} is free: {e}"),
            "check ecr:DescribeRepositories is allowed",
        ),
    }
}

/// API names are not unique in API Gateway: with two APIs of one name, `deploy api` would
/// update whichever is listed first.
async fn apis(
    http: &aws_sdk_apigatewayv2::Client,
    rest: &aws_sdk_apigateway::Client,
    name: &str,
) -> Check {
    let http = super::apigw::apis_named(http, name).await;
    let rest = super::apigw_rest::rest_apis_named(rest, name).await;
    let (http, rest) = match (http, rest) {
        (Ok(h), Ok(r)) => (h, r),
        (Err(e), _) | (_, Err(e)) => {
            return Check::warn(
                "api",
                format!("cannot list the APIs named {name}: {e}"),
                "check apigateway:GET is allowed",
            )
        }
    };
    let several = |kind: &str, ids: &[String]| {
        Check::warn(
            "api",
            format!(
                "{} {kind} APIs are named {name} ({}): deploy api updates the first one listed",
                ids.len(),
                ids.join(", ")
            ),
            "delete the ones you do not use, or set [api] name in infra/deploy.toml to a new name",
        )
    };
    if http.len() > 1 {
        return several("HTTP", &http);
    }
    if rest.len() > 1 {
        return several("REST", &rest);
    }
    match (http.first(), rest.first()) {
        (None, None) => Check::ok("api", format!("{name} is free: deploy api creates it")),
        (h, r) => Check::ok(
            "api",
            format!(
                "{name} exists ({}): deploy api updates its routes",
                h.map(|id| format!("HTTP API {id}"))
                    .into_iter()
                    .chain(r.map(|id| format!("REST API {id}")))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
}

/// The IAM principal to simulate for `caller_arn`: an assumed role is simulated as its role.
pub fn principal_for_simulation(caller_arn: &str) -> Option<String> {
    // arn:<partition>:sts::<account>:assumed-role/<role>/<session>
    let mut parts = caller_arn.splitn(6, ':');
    let (arn, partition, service, _region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if arn != "arn" || service != "sts" {
        return None;
    }
    let role = resource.strip_prefix("assumed-role/")?.split('/').next()?;
    Some(format!("arn:{partition}:iam::{account}:role/{role}"))
}

/// Every action a policy allows, once each, sorted.
fn actions(policy: &str) -> Vec<String> {
    let mut out: Vec<String> = super::policy::statements(policy)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|s| s.actions)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether the caller holds the deployer policy: each of its statements simulated
/// (`iam:SimulatePrincipalPolicy`) on an ARN each of its resources names, with the request
/// context its conditions ask for, so that a policy scoped to the deploy's names, or one using
/// `iam:PassedToService`, is judged as AWS will judge the deploy's calls. `policy` is the
/// rendered deployer policy.
async fn permissions(iam: &aws_sdk_iam::Client, account: &Account, policy: &str) -> Check {
    use aws_sdk_iam::types::{ContextEntry, ContextKeyTypeEnum};
    let statements = match super::policy::statements(policy) {
        Ok(s) => s,
        Err(e) => {
            return Check::fail(
                "permissions",
                format!("infra/iam/deployer-policy.json: {e}"),
                "restore it from the repository",
            )
        }
    };
    let wanted = actions(policy).len();
    if account.caller_arn.ends_with(":root") {
        return Check::warn(
            "permissions",
            "running as the account's root user: every permission, and no limit to mistakes",
            "create an IAM user or role with the policy `deploy policy` prints and deploy as it",
        );
    }
    let principal = if account.caller_arn.contains(":sts::") {
        principal_for_simulation(&account.caller_arn)
    } else {
        Some(account.caller_arn.clone())
    };
    let not_checked = |why: String| {
        Check::warn(
            "permissions",
            format!("not checked ({why}); the deploy needs {wanted} actions"),
            "grant the policy `deploy policy` prints (it allows iam:SimulatePrincipalPolicy, so that doctor can check)",
        )
    };
    let Some(principal) = principal else {
        return not_checked(format!("{} cannot be simulated", account.caller_arn));
    };
    // A role's ARN carries its path (IAM Identity Center's roles live under
    // /aws-reserved/sso.amazonaws.com/), which the session's ARN leaves out: ask IAM for it.
    let principal = match role_name_of(&principal) {
        Some(name) => match super::iam::find_role(iam, name).await {
            Ok(Some(role)) => role.arn().to_owned(),
            _ => principal,
        },
        None => principal,
    };
    let mut denied = Vec::new();
    for st in &statements {
        let context: Vec<ContextEntry> = st
            .context
            .iter()
            .map(|(key, values)| {
                ContextEntry::builder()
                    .context_key_name(key)
                    .set_context_key_values(Some(values.clone()))
                    .context_key_type(ContextKeyTypeEnum::String)
                    .build()
            })
            .collect();
        for resource in &st.resources {
            let arn = super::policy::example_arn(resource);
            // At most 128 actions a call; a statement has far fewer.
            let mut call = iam
                .simulate_principal_policy()
                .policy_source_arn(&principal)
                .set_action_names(Some(st.actions.clone()))
                .set_context_entries(Some(context.clone()));
            if arn != "*" {
                call = call.resource_arns(&arn);
            }
            match call.send().await.map_err(aws_err(
                "simulating the deploy's permissions (iam:SimulatePrincipalPolicy)",
            )) {
                Ok(out) => denied.extend(
                    out.evaluation_results()
                        .iter()
                        .filter(|r| r.eval_decision().as_str() != "allowed")
                        .map(|r| format!("{} on {arn}", r.eval_action_name())),
                ),
                Err(e) => return not_checked(format!("for {principal}: {e}")),
            }
        }
    }
    if denied.is_empty() {
        Check::ok(
            "permissions",
            format!(
                "{principal} may call all {wanted} actions the deploy uses, on the resources it uses"
            ),
        )
    } else {
        Check::fail(
            "permissions",
            format!("{principal} may not call: {}", denied.join(", ")),
            "attach the policy `deploy policy` prints (or the missing actions, on those resources) to it",
        )
    }
}

/// The role name of a role ARN built from a session (`arn:…:iam::…:role/NAME`).
fn role_name_of(arn: &str) -> Option<&str> {
    arn.split_once(":role/").map(|(_, name)| name)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(Ok(b)) = s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The account's errors the deploy meets, as one line each: what happened and what to do.
pub fn explain(e: &AwsError) -> Option<String> {
    let code = e.code.as_deref()?;
    Some(match code {
        "ExpiredToken" | "ExpiredTokenException" => "the AWS credentials have expired: renew them (aws sso login, or new keys)".to_owned(),
        "InvalidClientTokenId" | "UnrecognizedClientException" => "the AWS access key is not known: check AWS_PROFILE / AWS_ACCESS_KEY_ID".to_owned(),
        "AccessDenied" | "AccessDeniedException" => format!("{}: not allowed; `deploy doctor` lists what the deploy needs (infra/iam/deployer-policy.json)", e.action),
        "TooManyRequestsException" | "ThrottlingException" => format!("{}: throttled by AWS; run again in a minute", e.action),
        "ResourceConflictException" => format!("{}: the function is being updated; run again when it is done", e.action),
        "CodeStorageExceededException" => "the account's Lambda code storage (75 GB) is full: delete old function versions".to_owned(),
        _ if lambda::memory_cap(e).is_some() => format!("{}: this account caps memory; lower memory_mb in infra/deploy.toml or ask AWS Support", e.action),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assumed_role_is_simulated_as_its_role() {
        assert_eq!(
            principal_for_simulation("arn:aws:sts::123456789012:assumed-role/deployer/session-1")
                .as_deref(),
            Some("arn:aws:iam::123456789012:role/deployer")
        );
        assert_eq!(
            principal_for_simulation("arn:aws-cn:sts::123:assumed-role/r/s").as_deref(),
            Some("arn:aws-cn:iam::123:role/r")
        );
        assert_eq!(principal_for_simulation("arn:aws:iam::123:user/u"), None);
    }

    #[test]
    fn the_deployer_policy_names_every_service_the_deploy_calls() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/iam/deployer-policy.json"),
        )
        .unwrap();
        let a = actions(&text);
        for needed in [
            "lambda:GetAccountSettings",
            "lambda:PutFunctionConcurrency",
            // monitor and tune read it; tune also publishes, aliases and deletes versions.
            "lambda:GetFunctionConfiguration",
            "lambda:PublishVersion",
            "lambda:DeleteAlias",
            "lambda:DeleteFunction",
            "ecr:SetRepositoryPolicy",
            "ecr:PutLifecyclePolicy",
            "iam:PassRole",
            "iam:UpdateAssumeRolePolicy",
            "apigateway:PATCH",
        ] {
            assert!(a.iter().any(|x| x == needed), "{needed} missing");
        }
        assert!(
            a.len() < 128,
            "SimulatePrincipalPolicy takes at most 128 actions a call"
        );
    }

    #[test]
    fn the_worst_level_decides_and_each_line_says_what_to_do() {
        let checks = vec![
            Check::ok("identity", "a"),
            Check::warn("memory", "b", "do c"),
        ];
        assert_eq!(worst(&checks), Level::Warn);
        assert_eq!(
            checks[1].to_string(),
            format!("WARN memory        b\n{:19}→ do c", "")
        );
        assert_eq!(percent_decode("%7B%22a%22%3A1%7D"), "{\"a\":1}");
    }
}
