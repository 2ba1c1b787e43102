//! Lambda: create or update a function from an image (by digest), wait until the update is
//! done, publish versions, invoke them, and move aliases — with canary weights when asked.

#![warn(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_lambda::client::Waiters;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{
    AliasRoutingConfiguration, Architecture, Environment, EphemeralStorage, FunctionCode,
    PackageType,
};

use super::aws::{aws_err, Absent, AwsError};
use crate::arch::Arch;

/// What a function should be.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// The function's name.
    pub name: String,
    /// `<repository uri>@sha256:…`: by digest, never by tag.
    pub image_uri: String,
    /// The execution role.
    pub role_arn: String,
    /// MemorySize (which also sets the CPU share).
    pub memory_mb: i32,
    /// Timeout, seconds.
    pub timeout_s: i32,
    /// EphemeralStorage (/tmp), MB.
    pub ephemeral_mb: i32,
    /// The architecture (the image's).
    pub arch: Arch,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
}

/// What [`deploy`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// The function did not exist.
    Created,
    /// Its code or configuration changed.
    Updated,
    /// It was already as asked.
    Unchanged,
}

const WAIT: Duration = Duration::from_secs(600);

fn architecture(arch: Arch) -> Architecture {
    match arch {
        Arch::X86_64 => Architecture::X8664,
        Arch::Arm64 => Architecture::Arm64,
    }
}

fn environment(spec: &FunctionSpec) -> Environment {
    let vars: HashMap<String, String> = spec.env.clone().into_iter().collect();
    Environment::builder().set_variables(Some(vars)).build()
}

fn ephemeral_storage(spec: &FunctionSpec) -> Result<EphemeralStorage, AwsError> {
    EphemeralStorage::builder()
        .size(spec.ephemeral_mb)
        .build()
        .map_err(|e| AwsError::new("building the ephemeral storage setting", e.to_string()))
}

/// Waits until Lambda reports the last update of `name` done (`LastUpdateStatus`).
pub async fn wait_updated(lambda: &aws_sdk_lambda::Client, name: &str) -> Result<(), AwsError> {
    lambda
        .wait_until_function_updated_v2()
        .function_name(name)
        .wait(WAIT)
        .await
        .map(|_| ())
        .map_err(waiting(format!(
            "waiting for {name} to finish updating (LastUpdateStatus)"
        )))
}

/// `map_err` for a waiter: what was awaited, and why it stopped (a timeout, a failed state, the
/// call itself), each cause once.
fn waiting<E: std::error::Error + 'static>(action: String) -> impl FnOnce(E) -> AwsError {
    move |e| AwsError::new(action, crate::errors::chain(&e))
}

/// How many times an update that Lambda refuses because another update is in progress
/// (`ResourceConflictException`) is tried again, each after waiting for that update.
const CONFLICT_RETRIES: usize = 3;

/// Sends an update, and when Lambda answers that another update of `name` is in progress
/// (tune, another deploy, the console), waits for it and sends again, a bounded number of times.
pub async fn update_when_free<F, Fut>(
    lambda: &aws_sdk_lambda::Client,
    name: &str,
    send: F,
) -> Result<(), AwsError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), AwsError>>,
{
    let mut tries = 0;
    loop {
        match send().await {
            Err(e) if e.is("ResourceConflictException") && tries < CONFLICT_RETRIES => {
                tries += 1;
                tracing::info!(name, tries, "another update is in progress; waiting for it");
                wait_updated(lambda, name).await?;
            }
            other => return other,
        }
    }
}

/// Brings function `spec.name` to `spec`: creates it, or updates its code and configuration
/// where they differ; waits until Lambda reports the update done. A function still `Pending`
/// (an interrupted first deploy) or in the middle of an update is waited for first; one in
/// state `Failed` is deleted and created again, saying why (Lambda does not recover it:
/// "functions-states").
pub async fn deploy(
    lambda: &aws_sdk_lambda::Client,
    spec: &FunctionSpec,
    say: &(dyn Fn(String) + Sync),
) -> Result<Change, AwsError> {
    use aws_sdk_lambda::types::{LastUpdateStatus, State};
    let name = &spec.name;
    let get = || async {
        lambda
            .get_function()
            .function_name(name)
            .send()
            .await
            .map_err(aws_err(format!("looking up function {name}")))
    };
    let mut current = match get().await {
        Ok(out) => out,
        Err(e) if e.is("ResourceNotFoundException") => {
            create(lambda, spec).await?;
            return Ok(Change::Created);
        }
        Err(e) => return Err(e),
    };
    let conf = current.configuration();
    match conf.and_then(|c| c.state()) {
        Some(State::Failed) => {
            say(format!(
                "{name} is in state Failed ({}): Lambda does not recover such a function; deleting it and creating it again",
                conf.and_then(|c| c.state_reason()).unwrap_or("no reason given")
            ));
            lambda
                .delete_function()
                .function_name(name)
                .send()
                .await
                .map_err(aws_err(format!("deleting the failed function {name}")))?;
            create(lambda, spec).await?;
            return Ok(Change::Created);
        }
        Some(State::Pending) => {
            say(format!(
                "{name} is still Pending (being created): waiting for it"
            ));
            wait_active(lambda, name).await?;
            current = get().await?;
        }
        _ if conf.and_then(|c| c.last_update_status()) == Some(&LastUpdateStatus::InProgress) => {
            say(format!(
                "{name} is being updated by someone else: waiting for that update to finish"
            ));
            wait_updated(lambda, name).await?;
            current = get().await?;
        }
        _ => {}
    }
    let mut change = Change::Unchanged;
    let current_uri = current
        .code()
        .and_then(|c| c.image_uri())
        .unwrap_or_default();
    // The architecture is set with the code: an image of another architecture needs both, and
    // an architecture change alone is a change.
    let current_arch = current
        .configuration()
        .and_then(|c| c.architectures().first().cloned());
    if current_uri != spec.image_uri || current_arch != Some(architecture(spec.arch)) {
        update_when_free(lambda, name, || async {
            lambda
                .update_function_code()
                .function_name(name)
                .image_uri(&spec.image_uri)
                .architectures(architecture(spec.arch))
                .send()
                .await
                .map(|_| ())
                .map_err(aws_err(format!(
                    "updating the code of {name} to {}",
                    spec.image_uri
                )))
        })
        .await?;
        wait_updated(lambda, name).await?;
        change = Change::Updated;
    }
    let conf = current.configuration();
    let same_config = conf.is_some_and(|c| {
        c.memory_size() == Some(spec.memory_mb)
            && c.timeout() == Some(spec.timeout_s)
            && c.role() == Some(spec.role_arn.as_str())
            && c.ephemeral_storage().map(|e| e.size()) == Some(spec.ephemeral_mb)
            && c.environment()
                .and_then(|e| e.variables())
                .map(|v| {
                    v.iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<BTreeMap<_, _>>()
                })
                .unwrap_or_default()
                == spec.env
    });
    if !same_config {
        let storage = ephemeral_storage(spec)?;
        update_when_free(lambda, name, || async {
            lambda
                .update_function_configuration()
                .function_name(name)
                .role(&spec.role_arn)
                .memory_size(spec.memory_mb)
                .timeout(spec.timeout_s)
                .ephemeral_storage(storage.clone())
                .environment(environment(spec))
                .send()
                .await
                .map(|_| ())
                .map_err(aws_err(format!("updating the configuration of {name}")))
        })
        .await?;
        wait_updated(lambda, name).await?;
        change = Change::Updated;
    }
    Ok(change)
}

/// The memory sizes Lambda allows, MB ("128 MB to 10,240 MB, in 1-MB increments").
pub const MEMORY_MB: std::ops::RangeInclusive<i32> = 128..=10240;

/// New accounts may not configure more than this much memory (a quota AWS raises on request).
pub const NEW_ACCOUNT_MAX_MEMORY_MB: i32 = 3008;

/// Whether `e` is Lambda refusing a memory size over the account's cap:
/// `'MemorySize' value failed to satisfy constraint: Member must have value less than or equal
/// to 3008`. Returns the cap.
pub fn memory_cap(e: &AwsError) -> Option<i32> {
    if !(e.is("ValidationException") || e.is("InvalidParameterValueException")) {
        return None;
    }
    let message = e.message.to_ascii_lowercase();
    let rest = message.split("memorysize").nth(1)?;
    let rest = rest.split("less than or equal to").nth(1)?;
    rest.trim()
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

/// [`deploy`], and when Lambda refuses the memory size as over the account's cap, again at the
/// cap, saying so: a new account's first deploy goes through, slower, rather than stopping.
pub async fn deploy_within_memory_cap(
    lambda: &aws_sdk_lambda::Client,
    spec: &FunctionSpec,
    warn: &(dyn Fn(String) + Sync),
) -> Result<(Change, i32), AwsError> {
    match deploy(lambda, spec, warn).await {
        Ok(change) => Ok((change, spec.memory_mb)),
        Err(e) => match memory_cap(&e) {
            Some(cap) if cap < spec.memory_mb => {
                warn(format!(
                    "warning: {}: this account allows at most {cap} MB of memory per function (a quota: ask AWS Support to raise \"Lambda function memory\"); deploying with {cap} MB instead of {}",
                    spec.name, spec.memory_mb
                ));
                let capped = FunctionSpec {
                    memory_mb: cap,
                    ..spec.clone()
                };
                Ok((deploy(lambda, &capped, warn).await?, cap))
            }
            _ => Err(e),
        },
    }
}

/// The account's concurrency: its limit and what is not reserved by any function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct AccountConcurrency {
    /// The account's concurrent executions quota.
    pub limit: i32,
    /// What no function has reserved.
    pub unreserved: i32,
}

/// Lambda keeps at least this many executions unreserved: reserving is refused below it.
pub const MIN_UNRESERVED: i32 = 100;

/// The account's concurrency (GetAccountSettings).
pub async fn account_concurrency(
    lambda: &aws_sdk_lambda::Client,
) -> Result<AccountConcurrency, AwsError> {
    let out = lambda.get_account_settings().send().await.map_err(aws_err(
        "reading the account's Lambda limits (GetAccountSettings)",
    ))?;
    let limit = out.account_limit();
    Ok(AccountConcurrency {
        limit: limit.map_or(0, |l| l.concurrent_executions()),
        unreserved: limit
            .and_then(|l| l.unreserved_concurrent_executions())
            .unwrap_or(0),
    })
}

/// What reserving `wanted` executions for a function that has `current` reserved does, given
/// the account: `Ok` to reserve, or why not (Lambda would refuse it).
pub fn can_reserve(account: AccountConcurrency, current: i32, wanted: i32) -> Result<(), String> {
    let after = account.unreserved + current - wanted;
    if after >= MIN_UNRESERVED {
        Ok(())
    } else {
        Err(format!(
            "the account's concurrency quota is {} ({} unreserved) and Lambda keeps at least {MIN_UNRESERVED} (or, under 100, all of them) unreserved, so reserving {wanted} needs a quota of at least {} (Service Quotas: Lambda \"Concurrent executions\")",
            account.limit,
            account.unreserved,
            account.limit - after + MIN_UNRESERVED,
        ))
    }
}

/// The function's reserved concurrency, if any.
pub async fn reserved_concurrency(
    lambda: &aws_sdk_lambda::Client,
    name: &str,
) -> Result<Option<i32>, AwsError> {
    let out = lambda
        .get_function_concurrency()
        .function_name(name)
        .send()
        .await
        .map_err(aws_err(format!(
            "reading the reserved concurrency of {name}"
        )))?;
    Ok(out.reserved_concurrent_executions())
}

async fn create(lambda: &aws_sdk_lambda::Client, spec: &FunctionSpec) -> Result<(), AwsError> {
    let name = &spec.name;
    // A role created seconds ago may not be assumable yet: Lambda says so, and we wait.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let sent = lambda
            .create_function()
            .function_name(name)
            .package_type(PackageType::Image)
            .code(FunctionCode::builder().image_uri(&spec.image_uri).build())
            .role(&spec.role_arn)
            .memory_size(spec.memory_mb)
            .timeout(spec.timeout_s)
            .architectures(architecture(spec.arch))
            .ephemeral_storage(ephemeral_storage(spec)?)
            .environment(environment(spec))
            .description("lambda-cnn (deployed by `deploy release`)")
            .send()
            .await
            .map_err(aws_err(format!(
                "creating function {name} from {}",
                spec.image_uri
            )));
        match sent {
            Ok(_) => break,
            Err(e)
                if e.is("InvalidParameterValueException")
                    && e.message.contains("role")
                    && attempt < 12 =>
            {
                tracing::info!(
                    attempt,
                    "the new role is not assumable yet; retrying in 5 s"
                );
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => return Err(e),
        }
    }
    wait_active(lambda, name).await
}

/// Waits until function `name` is `Active` (a new function is `Pending` first).
async fn wait_active(lambda: &aws_sdk_lambda::Client, name: &str) -> Result<(), AwsError> {
    lambda
        .wait_until_function_active_v2()
        .function_name(name)
        .wait(WAIT)
        .await
        .map(|_| ())
        .map_err(waiting(format!("waiting for {name} to become active")))
}

/// Publishes the current code and configuration as a version; returns its number. Lambda
/// returns the latest version again when nothing changed, so re-running is safe.
pub async fn publish(
    lambda: &aws_sdk_lambda::Client,
    name: &str,
    description: &str,
) -> Result<String, AwsError> {
    let version = publish_version(lambda, name, description).await?;
    wait_version_active(lambda, name, &version).await?;
    Ok(version)
}

/// PublishVersion alone: the version's number as soon as Lambda gives it, before it is
/// `Active` (so that a caller can record it, and undo it if interrupted while waiting).
pub async fn publish_version(
    lambda: &aws_sdk_lambda::Client,
    name: &str,
    description: &str,
) -> Result<String, AwsError> {
    let out = lambda
        .publish_version()
        .function_name(name)
        .description(description)
        .send()
        .await
        .map_err(aws_err(format!("publishing a version of {name}")))?;
    out.version().map(str::to_owned).ok_or_else(|| {
        AwsError::new(
            format!("publishing a version of {name}"),
            "no version in the answer",
        )
    })
}

/// Waits until `version` of `name` is `Active`.
pub async fn wait_version_active(
    lambda: &aws_sdk_lambda::Client,
    name: &str,
    version: &str,
) -> Result<(), AwsError> {
    // A new version is `Pending` while Lambda optimises its image; invoking it or pointing an
    // alias at it before it is `Active` fails (docs: "functions-states").
    lambda
        .wait_until_published_version_active()
        .function_name(name)
        .qualifier(version)
        .wait(WAIT)
        .await
        .map_err(waiting(format!(
            "waiting for version {version} of {name} to become active"
        )))?;
    Ok(())
}

/// The version `alias` points at, or None when the alias does not exist yet.
pub async fn alias_version(
    lambda: &aws_sdk_lambda::Client,
    name: &str,
    alias: &str,
) -> Result<Option<String>, AwsError> {
    Ok(read_alias(lambda, name, alias).await?.map(|a| a.version))
}

/// What an alias points at.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasState {
    /// The version taking the traffic not sent elsewhere.
    pub version: String,
    /// A canary: another version and its share of the traffic (0..1).
    pub canary: Option<(String, f64)>,
    /// The alias's description (where the release history lives).
    pub description: String,
}

/// What `alias` of `name` points at, or None when the alias does not exist yet.
pub async fn read_alias(
    lambda: &aws_sdk_lambda::Client,
    name: &str,
    alias: &str,
) -> Result<Option<AliasState>, AwsError> {
    let Some(a) = lambda
        .get_alias()
        .function_name(name)
        .name(alias)
        .send()
        .await
        .map_err(aws_err(format!("reading alias {alias} of {name}")))
        .absent_if("ResourceNotFoundException")?
    else {
        return Ok(None);
    };
    Ok(a.function_version().map(|v| AliasState {
        version: v.to_owned(),
        canary: a
            .routing_config()
            .and_then(|r| r.additional_version_weights())
            .and_then(|w| w.iter().next())
            .map(|(v, w)| (v.clone(), *w)),
        description: a.description().unwrap_or_default().to_owned(),
    }))
}

/// Points `alias` at `version`; with `canary = Some((new, share))` the alias stays on
/// `version` and sends `share` (0..1) of the traffic to `new`. `description`, when given,
/// replaces the alias's (the release history).
pub async fn point_alias(
    lambda: &aws_sdk_lambda::Client,
    name: &str,
    alias: &str,
    version: &str,
    canary: Option<(&str, f64)>,
    description: Option<&str>,
) -> Result<(), AwsError> {
    let routing = AliasRoutingConfiguration::builder()
        .set_additional_version_weights(Some(
            canary
                .map(|(v, w)| HashMap::from([(v.to_owned(), w)]))
                .unwrap_or_default(),
        ))
        .build();
    let exists = alias_version(lambda, name, alias).await?.is_some();
    let action = format!("pointing alias {alias} of {name} at version {version}");
    if exists {
        lambda
            .update_alias()
            .function_name(name)
            .name(alias)
            .function_version(version)
            .routing_config(routing)
            .set_description(description.map(str::to_owned))
            .send()
            .await
            .map_err(aws_err(action))?;
    } else {
        lambda
            .create_alias()
            .function_name(name)
            .name(alias)
            .function_version(version)
            .routing_config(routing)
            .set_description(description.map(str::to_owned))
            .send()
            .await
            .map_err(aws_err(action))?;
    }
    Ok(())
}

/// The answer of a synchronous invocation.
#[derive(Debug, Clone)]
pub struct Invoked {
    /// `X-Amz-Function-Error` (`Unhandled`) when the function failed.
    pub function_error: Option<String>,
    /// The answer (or the error document).
    pub payload: Vec<u8>,
    /// The version that ran (`X-Amz-Executed-Version`).
    pub executed_version: Option<String>,
}

/// One synchronous invocation of `name` (at `qualifier`) with `payload`.
pub async fn invoke(
    lambda: &aws_sdk_lambda::Client,
    name: &str,
    qualifier: Option<&str>,
    payload: &[u8],
) -> Result<Invoked, AwsError> {
    let out = lambda
        .invoke()
        .function_name(name)
        .set_qualifier(qualifier.map(str::to_owned))
        .payload(Blob::new(payload))
        .send()
        .await
        .map_err(aws_err(format!(
            "invoking {name}{}",
            qualifier.map(|q| format!(":{q}")).unwrap_or_default()
        )))?;
    Ok(Invoked {
        function_error: out.function_error().map(str::to_owned),
        executed_version: out.executed_version().map(str::to_owned),
        payload: out
            .payload()
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default(),
    })
}

/// The architecture a function runs on (`$LATEST`'s), or `None` if there is no such function.
pub async fn function_arch(
    lambda: &aws_sdk_lambda::Client,
    name: &str,
) -> Result<Option<crate::arch::Arch>, AwsError> {
    let found = lambda
        .get_function_configuration()
        .function_name(name)
        .send()
        .await
        .map_err(aws_err(format!("reading the configuration of {name}")));
    let Some(conf) = found.absent_if("ResourceNotFoundException")? else {
        return Ok(None);
    };
    Ok(Some(arch_of(conf.architectures())))
}

/// Lambda's `Architectures` as ours: x86_64 when none is listed (Lambda's default).
pub fn arch_of(listed: &[Architecture]) -> Arch {
    match listed.first() {
        Some(Architecture::Arm64) => Arch::Arm64,
        _ => Arch::X86_64,
    }
}

/// Version `version` of `name`: its code location and configuration.
pub async fn get_version(
    lambda: &aws_sdk_lambda::Client,
    name: &str,
    version: &str,
) -> Result<aws_sdk_lambda::operation::get_function::GetFunctionOutput, AwsError> {
    lambda
        .get_function()
        .function_name(name)
        .qualifier(version)
        .send()
        .await
        .map_err(aws_err(format!("reading version {version} of {name}")))
}

/// The image digest a function's code location names (`…@sha256:…`): the resolved URI's when
/// there is one (what the version really runs; moto answers a version's `ImageUri` with
/// `$LATEST`'s, and its `ResolvedImageUri` with a doubled `@sha256`, hence the last `@`).
pub fn image_digest(
    out: &aws_sdk_lambda::operation::get_function::GetFunctionOutput,
) -> Option<String> {
    let code = out.code()?;
    code.resolved_image_uri()
        .or(code.image_uri())
        .and_then(|uri| uri.rsplit_once('@'))
        .map(|(_, digest)| digest.to_owned())
}

/// The image URI, by digest, that a function's code location runs (see [`image_digest`]).
pub fn image_uri(
    out: &aws_sdk_lambda::operation::get_function::GetFunctionOutput,
) -> Option<String> {
    let repository = out.code()?.image_uri()?.split('@').next()?.to_owned();
    Some(format!("{repository}@{}", image_digest(out)?))
}

/// The image digest a published version runs.
pub async fn version_image_digest(
    lambda: &aws_sdk_lambda::Client,
    name: &str,
    version: &str,
) -> Result<Option<String>, AwsError> {
    Ok(image_digest(&get_version(lambda, name, version).await?))
}

/// The published versions of a function, as numbers, ascending.
pub async fn versions(lambda: &aws_sdk_lambda::Client, name: &str) -> Result<Vec<u64>, AwsError> {
    let mut out = Vec::new();
    let mut pages = lambda
        .list_versions_by_function()
        .function_name(name)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(aws_err(format!("listing the versions of {name}")))?;
        out.extend(
            page.versions()
                .iter()
                .filter_map(|v| v.version()?.parse::<u64>().ok()),
        );
    }
    out.sort_unstable();
    Ok(out)
}

/// Reserves `reserved` concurrent executions for `name`.
pub async fn set_reserved_concurrency(
    lambda: &aws_sdk_lambda::Client,
    name: &str,
    reserved: i32,
) -> Result<(), AwsError> {
    lambda
        .put_function_concurrency()
        .function_name(name)
        .reserved_concurrent_executions(reserved)
        .send()
        .await
        .map_err(aws_err(format!(
            "reserving {reserved} concurrent executions for {name}"
        )))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_cap_is_read_from_lambdas_refusal() {
        for field in ["memorySize", "MemorySize"] {
            let e = AwsError {
                action: "creating function f".into(),
                code: Some("ValidationException".into()),
                message: format!("1 validation error detected: Value '3538' at '{field}' failed to satisfy constraint: Member must have value less than or equal to 3008"),
            };
            assert_eq!(memory_cap(&e), Some(3008));
        }
        assert_eq!(memory_cap(&AwsError::new("x", "no")), None);
    }

    #[test]
    fn reserving_leaves_a_hundred_unreserved_or_says_what_quota_it_needs() {
        let big = AccountConcurrency {
            limit: 1000,
            unreserved: 1000,
        };
        assert!(can_reserve(big, 0, 20).is_ok());
        let new = AccountConcurrency {
            limit: 10,
            unreserved: 10,
        };
        let why = can_reserve(new, 0, 20).unwrap_err();
        assert!(why.contains("at least 120"), "{why}");
        // What the function already has counts back in.
        assert!(can_reserve(
            AccountConcurrency {
                limit: 1000,
                unreserved: 100
            },
            20,
            20
        )
        .is_ok());
    }
}
