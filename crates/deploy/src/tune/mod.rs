//! `deploy tune`, the measuring half: for each memory size, set it on `$LATEST`, publish a
//! version, point a temporary alias at it, invoke it with `LogType=Tail` and read each REPORT
//! line from the log tail; then remove what it made and put `$LATEST` back. [`crate::judging`]
//! judges the figures.
//!
//! Cleanup runs whatever happens (an error, a failed invocation, Ctrl-C — the caller drops the
//! measuring future and calls [`Tuner::clean_up`]): only versions this run published are
//! deleted (Lambda hands back an existing version when nothing changed, and that one may be
//! live), and `$LATEST` gets its memory back.

#![warn(missing_docs)]

mod run;
pub use run::{apply, run, TuneRequest};

use std::collections::BTreeSet;
use std::sync::Mutex;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::LogType;
use base64::Engine;

use super::aws::{aws_err, AwsError};
use super::lambda;
use crate::cost::{Arch, Prices};
use crate::judging::SizeResult;
use crate::report::{self, Report};

/// What an alias runs, to release it again at another size (`deploy tune --apply`).
#[derive(Debug, Clone)]
pub struct AliasTarget {
    /// The version the alias points at.
    pub version: String,
    /// The image it runs, `sha256:…`.
    pub digest: String,
    /// The architecture it runs on.
    pub arch: Arch,
    /// predict's `MODEL_S3_URI` (weights released with `deploy release --model`), kept.
    pub model_s3_uri: Option<String>,
}

/// What `alias` of `name` runs; `None` when there is no such alias.
pub async fn alias_target(
    lambda_client: &aws_sdk_lambda::Client,
    name: &str,
    alias: &str,
) -> Result<Option<AliasTarget>, AwsError> {
    let Some(version) = lambda::alias_version(lambda_client, name, alias).await? else {
        return Ok(None);
    };
    let out = lambda::get_version(lambda_client, name, &version).await?;
    let Some(digest) = lambda::image_digest(&out) else {
        return Err(AwsError::new(
            format!("reading version {version} of {name}"),
            "it does not run an image by digest",
        ));
    };
    let Some(conf) = out.configuration() else {
        return Err(AwsError::new(
            format!("reading version {version} of {name}"),
            "no configuration in the answer",
        ));
    };
    Ok(Some(AliasTarget {
        model_s3_uri: conf
            .environment()
            .and_then(|e| e.variables())
            .and_then(|v| v.get(crate::store::MODEL_S3_URI))
            .cloned(),
        arch: lambda::arch_of(conf.architectures()),
        version,
        digest,
    }))
}

/// The temporary aliases' names: `tune-<MB>`.
pub fn alias_name(memory_mb: u32) -> String {
    format!("tune-{memory_mb}")
}

/// Whether every size is one Lambda allows ([`lambda::MEMORY_MB`]).
pub fn check_sizes(sizes: &[u32]) -> Result<(), String> {
    if sizes.is_empty() {
        return Err("no memory size to try: give --memory 128,512,...".to_owned());
    }
    let allowed = |m: u32| i32::try_from(m).is_ok_and(|m| lambda::MEMORY_MB.contains(&m));
    if let Some(bad) = sizes.iter().find(|m| !allowed(**m)) {
        return Err(format!(
            "--memory {bad}: Lambda allows {} to {} MB",
            lambda::MEMORY_MB.start(),
            lambda::MEMORY_MB.end()
        ));
    }
    Ok(())
}

/// One invocation's outcome, for the progress display.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The size being measured.
    pub memory_mb: u32,
    /// The REPORT line's figures, when the log tail had one.
    pub report: Option<Report>,
}

/// What a tuning run made and must undo.
#[derive(Default)]
struct Made {
    aliases: Vec<String>,
    versions: Vec<String>,
    /// What invocations wrote to S3 (train's weights and cards) and could not be deleted yet.
    objects: Vec<crate::store::S3Uri>,
}

/// One function's tuning run.
pub struct Tuner<'a> {
    /// The control plane (memory, versions, aliases).
    pub lambda: &'a aws_sdk_lambda::Client,
    /// Where invocations go: Lambda, or a local data plane serving the Invoke API.
    pub invoke: &'a aws_sdk_lambda::Client,
    /// The function.
    pub name: &'a str,
    /// Its memory before the run, restored after.
    pub previous_mb: u32,
    /// What it runs on (for pricing).
    pub arch: Arch,
    /// Where train's invocations write their models, to delete them: S3 and the account
    /// that owns the bucket.
    s3: &'a aws_sdk_s3::Client,
    account_id: &'a str,
    existing: BTreeSet<String>,
    made: Mutex<Made>,
    /// What `$LATEST` ran before the run brought it to what the alias runs (to put back).
    swapped: Option<Latest>,
    /// Said when the run measures another image or environment than `$LATEST` had.
    pub measuring_alias: Option<String>,
}

/// `$LATEST`'s code and environment.
#[derive(Debug, Clone, PartialEq)]
struct Latest {
    image_uri: String,
    env: std::collections::HashMap<String, String>,
}

impl Latest {
    fn of(out: &aws_sdk_lambda::operation::get_function::GetFunctionOutput) -> Latest {
        Latest {
            image_uri: lambda::image_uri(out).unwrap_or_default(),
            env: out
                .configuration()
                .and_then(|c| c.environment())
                .and_then(|e| e.variables())
                .cloned()
                .unwrap_or_default(),
        }
    }
}

/// Brings `$LATEST` of `name` to `to`'s code and environment.
async fn bring_latest_to(
    lambda_client: &aws_sdk_lambda::Client,
    name: &str,
    to: &Latest,
) -> Result<(), AwsError> {
    lambda::update_when_free(lambda_client, name, || async {
        lambda_client
            .update_function_code()
            .function_name(name)
            .image_uri(&to.image_uri)
            .send()
            .await
            .map(|_| ())
            .map_err(aws_err(format!(
                "setting the code of {name} to {}",
                to.image_uri
            )))
    })
    .await?;
    lambda::wait_updated(lambda_client, name).await?;
    lambda::update_when_free(lambda_client, name, || async {
        lambda_client
            .update_function_configuration()
            .function_name(name)
            .environment(
                aws_sdk_lambda::types::Environment::builder()
                    .set_variables(Some(to.env.clone()))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(aws_err(format!("setting the environment of {name}")))
    })
    .await?;
    lambda::wait_updated(lambda_client, name).await
}

/// `$LATEST`'s memory and architecture, and the versions published before the run. What is
/// measured is what `alias` runs: when `$LATEST` runs another image or environment (after a
/// failed release, or a rollback), it is brought to the alias's for the run and put back after.
pub async fn start<'a>(
    lambda_client: &'a aws_sdk_lambda::Client,
    invoke: &'a aws_sdk_lambda::Client,
    s3: &'a aws_sdk_s3::Client,
    account_id: &'a str,
    name: &'a str,
    alias: &str,
) -> Result<Tuner<'a>, AwsError> {
    let latest = Latest::of(
        &lambda_client
            .get_function()
            .function_name(name)
            .send()
            .await
            .map_err(aws_err(format!("looking up function {name}")))?,
    );
    let mut swapped = None;
    let mut measuring_alias = None;
    if let Some(version) = lambda::alias_version(lambda_client, name, alias).await? {
        let live = Latest::of(&lambda::get_version(lambda_client, name, &version).await?);
        if live != latest {
            measuring_alias = Some(format!(
                "{name}: $LATEST runs other code or settings than {alias} (version {version}); measuring what {alias} runs ({}), and putting $LATEST back afterwards",
                live.image_uri
            ));
            if let Err(e) = bring_latest_to(lambda_client, name, &live).await {
                // Half-way is worse than not at all: put back what was there.
                let _ = bring_latest_to(lambda_client, name, &latest).await;
                return Err(e);
            }
            swapped = Some(latest);
        }
    }
    let conf = lambda_client
        .get_function_configuration()
        .function_name(name)
        .send()
        .await
        .map_err(aws_err(format!("reading the configuration of {name}")))?;
    let previous_mb = conf.memory_size().unwrap_or(128).max(128) as u32;
    let arch = lambda::arch_of(conf.architectures());
    let existing = lambda::versions(lambda_client, name)
        .await?
        .into_iter()
        .map(|v| v.to_string())
        .collect();
    Ok(Tuner {
        lambda: lambda_client,
        invoke,
        name,
        previous_mb,
        arch,
        s3,
        account_id,
        existing,
        made: Mutex::new(Made::default()),
        swapped,
        measuring_alias,
    })
}

impl Tuner<'_> {
    /// Sets `$LATEST`'s memory; an update still in flight (one this run sent before it was
    /// interrupted, or anyone's) is waited for rather than conflicted with.
    async fn set_memory(&self, memory_mb: u32) -> Result<(), AwsError> {
        lambda::update_when_free(self.lambda, self.name, || async {
            self.lambda
                .update_function_configuration()
                .function_name(self.name)
                .memory_size(memory_mb as i32)
                .send()
                .await
                .map(|_| ())
                .map_err(aws_err(format!(
                    "setting the memory of {} to {memory_mb} MB",
                    self.name
                )))
        })
        .await?;
        lambda::wait_updated(self.lambda, self.name).await
    }

    /// A version of `$LATEST` at `memory_mb` behind alias `tune-<MB>`; returns the alias.
    async fn prepare(&self, memory_mb: u32) -> Result<String, AwsError> {
        self.set_memory(memory_mb).await?;
        let version = lambda::publish_version(
            self.lambda,
            self.name,
            &format!("deploy tune: {memory_mb} MB (temporary)"),
        )
        .await?;
        // Recorded before waiting for it: an interruption while it becomes Active must not
        // leave it behind.
        if !self.existing.contains(&version) {
            self.made
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .versions
                .push(version.clone());
        }
        lambda::wait_version_active(self.lambda, self.name, &version).await?;
        let alias = alias_name(memory_mb);
        // Recorded before it exists: a failed create leaves nothing, and deleting a missing
        // alias is not an error.
        self.made
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .aliases
            .push(alias.clone());
        lambda::point_alias(self.lambda, self.name, &alias, &version, None, None).await?;
        Ok(alias)
    }

    /// One invocation of `alias` with `payload`; the REPORT line from the log tail, or why
    /// not.
    async fn invoke_once(&self, alias: &str, payload: &[u8]) -> Result<Report, String> {
        let out = self
            .invoke
            .invoke()
            .function_name(self.name)
            .qualifier(alias)
            .log_type(LogType::Tail)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(aws_err(format!("invoking {}:{alias}", self.name)))
            .map_err(|e| e.to_string())?;
        let tail = out
            .log_result()
            .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let found = tail.lines().rev().find_map(report::parse);
        // A training run writes its model: a tune's runs are measurements, not models.
        let answer = out.payload().map(|p| p.as_ref()).unwrap_or_default();
        for uri in super::smoke::leftovers(super::image::Function::Train, answer) {
            if super::bucket::delete_object(self.s3, &uri, self.account_id)
                .await
                .is_err()
            {
                self.made
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .objects
                    .push(uri);
            }
        }
        if let Some(kind) = out.function_error() {
            let answer = out
                .payload()
                .map(|p| String::from_utf8_lossy(p.as_ref()).into_owned())
                .unwrap_or_default();
            let answer: String = answer.chars().take(300).collect();
            return Err(format!("the function failed ({kind}): {answer}"));
        }
        found.ok_or_else(|| {
            "no REPORT line in the log tail (does the endpoint return X-Amz-Log-Result?)".to_owned()
        })
    }

    /// Measures one size: `invocations` invocations (the first is the cold start), one after
    /// another or all at once with `parallel`. A failed invocation ends the size with why.
    pub async fn measure(
        &self,
        memory_mb: u32,
        invocations: usize,
        payload: &[u8],
        parallel: bool,
        prices: &Prices,
        progress: &(dyn Fn(Invocation) + Sync),
    ) -> Result<SizeResult, AwsError> {
        let alias = match self.prepare(memory_mb).await {
            Ok(alias) => alias,
            // A size over the account's cap is a finding, not the end of the run.
            Err(e) => {
                match lambda::memory_cap(&e) {
                    Some(cap) => {
                        self.drop_size().await?;
                        return Ok(SizeResult::failed(
                        memory_mb,
                        format!("this account allows at most {cap} MB (a quota AWS raises on request)"),
                    ));
                    }
                    None => return Err(e),
                }
            }
        };
        let outcomes: Vec<Result<Report, String>> = if parallel && invocations > 1 {
            // The first alone, so that exactly one cold start leads; the rest at once.
            let first = self.invoke_once(&alias, payload).await;
            let rest = futures_util::future::join_all(
                (1..invocations).map(|_| self.invoke_once(&alias, payload)),
            )
            .await;
            let all: Vec<_> = std::iter::once(first).chain(rest).collect();
            for r in &all {
                progress(Invocation {
                    memory_mb,
                    report: r.as_ref().ok().cloned(),
                });
            }
            all
        } else {
            let mut done = Vec::new();
            for _ in 0..invocations {
                let r = self.invoke_once(&alias, payload).await;
                progress(Invocation {
                    memory_mb,
                    report: r.as_ref().ok().cloned(),
                });
                let failed = r.is_err();
                done.push(r);
                // A failed invocation ends the size.
                if failed {
                    break;
                }
            }
            done
        };
        let mut reports = Vec::new();
        let mut failure = None;
        for r in outcomes {
            match r {
                Ok(rep) => reports.push(rep),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        self.drop_size().await?;
        Ok(match failure {
            Some(why) => SizeResult::failed(memory_mb, why),
            None => SizeResult::from_reports(memory_mb, &reports, self.arch, prices),
        })
    }

    /// Removes one size's alias and version as soon as it is measured; what could not be
    /// removed stays recorded for [`Tuner::clean_up`].
    async fn drop_size(&self) -> Result<(), AwsError> {
        let made = std::mem::take(&mut *self.made.lock().unwrap_or_else(|p| p.into_inner()));
        match self.remove(&made).await {
            Ok(()) => Ok(()),
            Err(mut errors) => {
                let mut now = self.made.lock().unwrap_or_else(|p| p.into_inner());
                now.aliases.extend(made.aliases);
                now.versions.extend(made.versions);
                now.objects.extend(made.objects);
                Err(errors.remove(0))
            }
        }
    }

    async fn remove(&self, made: &Made) -> Result<(), Vec<AwsError>> {
        let mut errors = Vec::new();
        for uri in &made.objects {
            if let Err(e) = super::bucket::delete_object(self.s3, uri, self.account_id).await {
                errors.push(e);
            }
        }
        for alias in &made.aliases {
            match self
                .lambda
                .delete_alias()
                .function_name(self.name)
                .name(alias)
                .send()
                .await
                .map_err(aws_err(format!("deleting alias {alias} of {}", self.name)))
            {
                Ok(_) => {}
                Err(e) if e.is("ResourceNotFoundException") => {}
                Err(e) => errors.push(e),
            }
        }
        for version in &made.versions {
            match self
                .lambda
                .delete_function()
                .function_name(self.name)
                .qualifier(version)
                .send()
                .await
                .map_err(aws_err(format!(
                    "deleting version {version} of {}",
                    self.name
                ))) {
                Ok(_) => {}
                Err(e) if e.is("ResourceNotFoundException") => {}
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Removes every alias and version the run made and puts `$LATEST`'s memory back. Every
    /// step is tried; the errors are returned together.
    pub async fn clean_up(&self) -> Result<(), Vec<AwsError>> {
        let made = std::mem::take(&mut *self.made.lock().unwrap_or_else(|p| p.into_inner()));
        let mut errors = self.remove(&made).await.err().unwrap_or_default();
        // An update this run sent just before it was interrupted may still be in flight: the
        // memory read below must be the one it leaves.
        let _ = lambda::wait_updated(self.lambda, self.name).await;
        let current = self
            .lambda
            .get_function_configuration()
            .function_name(self.name)
            .send()
            .await
            .map_err(aws_err(format!(
                "reading the configuration of {}",
                self.name
            )));
        match current {
            Ok(c) if c.memory_size() == Some(self.previous_mb as i32) => {}
            Ok(_) => {
                if let Err(e) = self.set_memory(self.previous_mb).await {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(e),
        }
        if let Some(before) = &self.swapped {
            if let Err(e) = bring_latest_to(self.lambda, self.name, before).await {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_outside_lambdas_range_are_refused_before_anything_changes() {
        assert!(check_sizes(&[128, 1769, 10240]).is_ok());
        assert!(check_sizes(&[]).unwrap_err().contains("--memory"));
        assert!(check_sizes(&[64]).unwrap_err().contains("128 to 10240"));
        assert!(check_sizes(&[128, 20000]).unwrap_err().contains("20000"));
    }
}
