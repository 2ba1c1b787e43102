//! `deploy release` for one function: make the function run the pushed image (by digest),
//! publish a version, smoke-test that version, and only then move the alias to it. A failed
//! smoke test leaves the alias where it was.

#![warn(missing_docs)]

use std::collections::BTreeMap;

use super::aws::{aws_err, Account, AwsError, Clients};
use super::config::DeployConfig;
use super::history::History;
use super::image::Function;
use super::lambda::{self, Change, FunctionSpec};
use super::{iam, logs, smoke};

/// Why a release stopped.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // documented by their messages
pub enum ReleaseError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(
        "{repository}@{digest} is not in ECR: push it first (deploy push --function {function})"
    )]
    NotPushed {
        function: Function,
        repository: String,
        digest: String,
    },
    #[error("{0}")]
    Model(String),
    #[error("the smoke test of {function_name} version {version} failed: {reason}; the {alias} alias still points at {live}")]
    SmokeFailed {
        function_name: String,
        version: String,
        alias: String,
        live: String,
        reason: String,
    },
}

/// What `deploy release` did for one function.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReleaseOutcome {
    /// The function's name.
    pub function: String,
    /// What it runs: `<repository uri>@sha256:…`.
    pub image_uri: String,
    /// What happened to `$LATEST`.
    pub change: Change,
    /// The version published (and smoke-tested).
    pub version: String,
    /// Where the alias pointed before.
    pub previous: Option<String>,
    /// The alias moved.
    pub alias: String,
    /// Share of traffic on `version` when released as a canary.
    pub canary: Option<f64>,
    /// What the smoke test saw.
    pub smoke: String,
    /// The weights predict serves: an `s3://` URI, or `None` for the image's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl std::fmt::Display for ReleaseOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.canary {
            Some(share) => format!("a {:.0}% canary on {}", share * 100.0, self.alias),
            None => self.alias.clone(),
        };
        write!(
            f,
            "{}: version {} is {what} ({}; smoke test: {})",
            self.function, self.version, self.image_uri, self.smoke
        )
    }
}

/// What to release.
pub struct ReleaseRequest<'a> {
    /// The function released.
    pub function: Function,
    /// The ECR repository's URI.
    pub repository_uri: &'a str,
    /// The ECR repository's name.
    pub repository: &'a str,
    /// The image's manifest digest (pushed).
    pub digest: &'a str,
    /// The weights predict serves (train ignores it).
    pub model: Model<'a>,
    /// Percent of traffic for the new version; the rest stays on the current one.
    pub canary_percent: Option<f64>,
    /// The image's own architecture (from its config): the function gets this one, whatever
    /// the config says, since Lambda checks nothing until the first invoke fails.
    pub arch: crate::arch::Arch,
}

/// Which weights a release of predict serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model<'a> {
    /// What `live` serves now: its `MODEL_S3_URI` when it has one (trained weights stay
    /// trained weights across a release of new code), else the image's own.
    KeepLive,
    /// The weights packed in the image (`MODEL_S3_URI` dropped).
    Image,
    /// Weights in the models bucket, `s3://bucket/key` (checked before anything changes).
    S3(&'a str),
}

impl<'a> Model<'a> {
    /// `--model`'s value: absent keeps the live one, `image` is the image's own, else an S3 URI.
    pub fn from_flag(flag: Option<&'a str>) -> Self {
        match flag {
            None => Model::KeepLive,
            Some("image") => Model::Image,
            Some(uri) => Model::S3(uri),
        }
    }
}

/// Checks that `uri` names an object predict's role may read (the models bucket, which
/// `infra/iam/execution-policy.json` grants) and that it is there, owned by this account
/// (`ExpectedBucketOwner`), and not empty: a release of a model that does not exist would
/// publish a version that fails at init (on Lambda the smoke test then fails; on a stand-in it
/// might not be noticed).
pub async fn check_model(
    s3: &aws_sdk_s3::Client,
    uri: &str,
    models_bucket: &str,
    account_id: &str,
) -> Result<Option<crate::net::ModelSpec>, ReleaseError> {
    let parsed: crate::store::S3Uri = uri
        .parse()
        .map_err(|e: crate::store::BadS3Uri| ReleaseError::Model(e.to_string()))?;
    if parsed.bucket != models_bucket {
        return Err(ReleaseError::Model(format!(
            "{uri} is not in the models bucket {models_bucket}, the only one predict's execution role may read (infra/iam/execution-policy.json): copy it there first (aws s3 cp {uri} s3://{models_bucket}/{})",
            parsed.key
        )));
    }
    let head = s3
        .head_object()
        .bucket(&parsed.bucket)
        .key(&parsed.key)
        .expected_bucket_owner(account_id)
        .send()
        .await;
    match head {
        Ok(o) => match o.content_length() {
            Some(n) if n as u64 > crate::net::header::MAX_MODEL_BYTES => Err(ReleaseError::Model(format!(
                "{uri} is {n} bytes; predict loads at most {} (lambda-cnn import checks a model's limits)",
                crate::net::header::MAX_MODEL_BYTES
            ))),
            Some(n) if n > 0 => describe_model(s3, &parsed, account_id, n as u64).await,
            _ => Err(ReleaseError::Model(format!(
                "{uri} is empty: not a model (train writes one: deploy invoke or lambda-cnn train)"
            ))),
        },
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            let e = aws_err(format!("looking up the model {uri}"))(e);
            Err(match status {
                Some(404) => ReleaseError::Model(format!(
                    "the model {uri} does not exist: give the s3:// URI a train run printed (or --model image for the image's own weights)"
                )),
                Some(403) => ReleaseError::Model(format!(
                    "the model {uri} cannot be read as account {account_id} (not there, or the bucket is not this account's): {e}"
                )),
                _ => ReleaseError::Aws(e),
            })
        }
    }
}

/// The execution role, rendered from `infra/iam/`; returns its ARN and whether it was created.
pub async fn ensure_role(
    clients: &Clients,
    config: &DeployConfig,
    account: &Account,
    trust: &str,
    policy: &str,
) -> Result<(String, bool), AwsError> {
    let vars = super::policy::vars(config, &account.partition, &account.id, &account.region);
    iam::ensure_role(
        &clients.iam,
        &config.role.name,
        &super::policy::render(trust, &vars),
        &super::policy::render(policy, &vars),
    )
    .await
}

/// Reserves `reserved` concurrent executions for `name` when the account allows it; when it
/// does not (new accounts have a concurrency quota of 10 or 50, and Lambda keeps 100
/// unreserved), says so and goes on without the cap rather than stopping the release.
async fn cap_concurrency(
    lambda_client: &aws_sdk_lambda::Client,
    name: &str,
    reserved: i32,
    say: &(dyn Fn(String) + Sync),
) -> Result<(), AwsError> {
    let current = lambda::reserved_concurrency(lambda_client, name).await?;
    if current == Some(reserved) {
        return Ok(());
    }
    let skip = |why: String| {
        say(format!(
            "warning: {name}: no concurrency cap: {why}; until then the function shares the account's pool (deploy doctor says more)"
        ));
        Ok(())
    };
    // Emulators may not serve GetAccountSettings: then Lambda's answer to the reservation
    // itself decides.
    if let Ok(account) = lambda::account_concurrency(lambda_client).await {
        if let Err(why) = lambda::can_reserve(account, current.unwrap_or(0), reserved) {
            return skip(why);
        }
    }
    match lambda::set_reserved_concurrency(lambda_client, name, reserved).await {
        Err(e)
            if e.is("InvalidParameterValueException")
                && e.message.contains("UnreservedConcurrentExecution") =>
        {
            skip(e.message)
        }
        other => other,
    }
}

/// The description in the header of the model file at `uri` (`size` bytes), read with two
/// ranged GETs instead of the weights: `None` for the seed's plain weights. A file that is
/// no model, or whose description breaks the limits, is refused before anything changes.
pub async fn describe_model(
    s3: &aws_sdk_s3::Client,
    uri: &crate::store::S3Uri,
    account_id: &str,
    size: u64,
) -> Result<Option<crate::net::ModelSpec>, ReleaseError> {
    use crate::net::header;
    let read = |from: u64, len: u64| async move {
        let action = format!("reading the model {uri}'s header");
        let out = s3
            .get_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .range(format!("bytes={from}-{}", from + len - 1))
            .expected_bucket_owner(account_id)
            .send()
            .await
            .map_err(aws_err(action.clone()))?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| AwsError::new(action, e.to_string()))?
            .into_bytes();
        // A store that ignores Range sends the whole object: keep the part asked for.
        Ok::<_, AwsError>(bytes.get(..len as usize).unwrap_or(&bytes).to_vec())
    };
    let bad = |e: crate::net::spec::SpecError| {
        ReleaseError::Model(format!(
            "{uri} is not a model predict can serve: {e} (write one with `lambda-cnn import`, or give train's weights)"
        ))
    };
    // Checked before any read: a range of an empty object would be `bytes=0--1`.
    if size < 8 {
        return Err(bad(crate::net::spec::SpecError {
            message: format!("it is {size} bytes, shorter than a safetensors header (8)"),
        }));
    }
    let n = header::header_len(&read(0, 8).await?).map_err(bad)?;
    if 8 + n > size {
        return Err(bad(crate::net::spec::SpecError {
            message: format!("its header declares {n} bytes; the file is {size}"),
        }));
    }
    header::describe(&read(8, n).await?, size).map_err(bad)
}

/// Where `deploy release --model FILE` puts a model file: under its SHA-256, so that the
/// same file is uploaded once and a release names exactly the bytes it was given.
pub const IMPORTED_PREFIX: &str = "models/imported/";

/// A model file on this machine, checked ([`crate::net::header::describe_file`]: a model
/// `lambda-cnn import` wrote, or the seed's weights) before anything is created: its bytes.
pub fn read_model_file(path: &std::path::Path) -> Result<Vec<u8>, ReleaseError> {
    use std::io::Read;
    let limit = crate::net::header::MAX_MODEL_BYTES;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
        .map_err(|e| {
            ReleaseError::Model(format!(
                "--model {}: {e} (give a model file `lambda-cnn import` wrote, s3://bucket/key, or image)",
                path.display()
            ))
        })?;
    if bytes.len() as u64 > limit {
        return Err(ReleaseError::Model(format!(
            "--model {}: over {limit} bytes, more than predict loads",
            path.display()
        )));
    }
    crate::net::header::describe_file(&bytes).map_err(|e| {
        ReleaseError::Model(format!(
            "--model {} is not a model predict can serve: {e} (write one with `lambda-cnn import`)",
            path.display()
        ))
    })?;
    Ok(bytes)
}

/// Puts a model file's `bytes` ([`read_model_file`]) in the models bucket under
/// [`IMPORTED_PREFIX`] and its SHA-256, unless an object of that name and size is there
/// already: the S3 URI predict then reads.
pub async fn upload_model(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    account_id: &str,
    bytes: Vec<u8>,
    say: &(dyn Fn(String) + Sync),
) -> Result<String, ReleaseError> {
    use sha2::Digest;
    let key = format!(
        "{IMPORTED_PREFIX}{}.safetensors",
        hex::encode(sha2::Sha256::digest(&bytes))
    );
    let uri = format!("s3://{bucket}/{key}");
    let there = s3
        .head_object()
        .bucket(bucket)
        .key(&key)
        .expected_bucket_owner(account_id)
        .send()
        .await;
    match there {
        Ok(o) if o.content_length() == Some(bytes.len() as i64) => {
            say(format!("the model is already at {uri}"));
            return Ok(uri);
        }
        Ok(_) => {}
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {}
        Err(e) => return Err(aws_err(format!("looking up {uri}"))(e).into()),
    }
    say(format!(
        "uploading the model ({} bytes) to {uri}",
        bytes.len()
    ));
    s3.put_object()
        .bucket(bucket)
        .key(&key)
        .expected_bucket_owner(account_id)
        .content_type("application/octet-stream")
        .body(bytes.into())
        .send()
        .await
        .map_err(aws_err(format!("uploading the model to {uri}")))?;
    Ok(uri)
}

/// The smoke test of `version` of `f`, for the model it serves: train's short run, the
/// seed's test digit, or an imported model's stored sample (its `MODEL_S3_URI`'s header).
pub async fn smoke_case(
    clients: &Clients,
    f: Function,
    name: &str,
    version: &str,
    account_id: &str,
) -> Result<smoke::Smoke, ReleaseError> {
    if f == Function::Train {
        return Ok(smoke::Smoke::Train);
    }
    let config = clients
        .lambda
        .get_function_configuration()
        .function_name(name)
        .qualifier(version)
        .send()
        .await
        .map_err(aws_err(format!(
            "reading {name} version {version}'s configuration"
        )))?;
    let uri = config
        .environment()
        .and_then(|e| e.variables())
        .and_then(|v| v.get(crate::store::MODEL_S3_URI))
        .cloned();
    let Some(uri) = uri else {
        return Ok(smoke::Smoke::Digit);
    };
    let parsed: crate::store::S3Uri = uri
        .parse()
        .map_err(|e: crate::store::BadS3Uri| ReleaseError::Model(e.to_string()))?;
    let head = clients
        .s3
        .head_object()
        .bucket(&parsed.bucket)
        .key(&parsed.key)
        .expected_bucket_owner(account_id)
        .send()
        .await
        .map_err(aws_err(format!("looking up the model {uri}")))?;
    let size = head.content_length().unwrap_or(0).max(0) as u64;
    let spec = describe_model(&clients.s3, &parsed, account_id, size).await?;
    Ok(smoke::Smoke::for_model(spec.as_ref()))
}

/// Invokes `version` of function `name` with `case`'s event and judges the answer:
/// `Ok(Ok(what it saw))`, `Ok(Err(why it failed))`, or the invocation's own error. What a
/// train smoke run wrote to S3 is deleted afterwards.
pub async fn smoke_test(
    clients: &Clients,
    f: Function,
    case: &smoke::Smoke,
    name: &str,
    version: &str,
    account_id: &str,
    say: &(dyn Fn(String) + Sync),
) -> Result<Result<String, String>, AwsError> {
    say(format!("{name}: smoke-testing version {version}"));
    let invoked = lambda::invoke(&clients.smoke, name, Some(version), &case.payload()).await?;
    let judged = case.judge(invoked.function_error.as_deref(), &invoked.payload);
    for uri in smoke::leftovers(f, &invoked.payload) {
        // Best effort: a test model left behind is clutter, not a failed release.
        if let Err(e) = super::bucket::delete_object(&clients.s3, &uri, account_id).await {
            say(format!(
                "{name}: could not delete the smoke run's {uri}: {e}"
            ));
        }
    }
    Ok(judged)
}

/// Releases one function: the image by digest, a version, its smoke test, then the alias.
pub async fn release(
    clients: &Clients,
    config: &DeployConfig,
    account: &Account,
    role_arn: &str,
    req: &ReleaseRequest<'_>,
    say: &(dyn Fn(String) + Sync),
) -> Result<ReleaseOutcome, ReleaseError> {
    let f = req.function;
    let fc = config.function(f);
    let name = fc.name.as_str();
    let alias = config.release.alias.as_str();
    let bucket = config.bucket_name(&account.id, &account.region);

    // Predict's weights, decided and checked before anything changes.
    let model = match (f, req.model) {
        (Function::Train, _) | (Function::Predict, Model::Image) => None,
        (Function::Predict, Model::S3(uri)) => Some(uri.to_owned()),
        (Function::Predict, Model::KeepLive) => {
            let live = super::tune::alias_target(&clients.lambda, name, alias)
                .await?
                .and_then(|t| t.model_s3_uri);
            if let Some(uri) = &live {
                say(format!(
                    "{name}: keeping the model {alias} serves, {uri} (--model image releases the image's own weights, --model s3://… others)"
                ));
            }
            live
        }
    };
    let case = match &model {
        Some(uri) => smoke::Smoke::for_model(
            check_model(&clients.s3, uri, &bucket, &account.id)
                .await?
                .as_ref(),
        ),
        None => smoke::Smoke::of(f),
    };

    // The image must be known to ECR by its real digest.
    let found = clients
        .ecr
        .describe_images()
        .repository_name(req.repository)
        .image_ids(
            aws_sdk_ecr::types::ImageIdentifier::builder()
                .image_digest(req.digest)
                .build(),
        )
        .send()
        .await
        .map_err(aws_err(format!(
            "looking up {}@{} in ECR",
            req.repository, req.digest
        )));
    let present = match found {
        Ok(out) => !out.image_details().is_empty(),
        Err(e) if e.is("ImageNotFoundException") => false,
        Err(e) => return Err(e.into()),
    };
    if !present {
        return Err(ReleaseError::NotPushed {
            function: f,
            repository: req.repository.to_owned(),
            digest: req.digest.to_owned(),
        });
    }

    logs::ensure_log_group(
        &clients.logs,
        &logs::log_group(name),
        config.release.log_retention_days,
    )
    .await?;
    let mut env = BTreeMap::new();
    env.insert(
        crate::store::BUCKET_OWNER_VAR.to_owned(),
        account.id.clone(),
    );
    match f {
        Function::Predict => {
            if let Some(uri) = &model {
                env.insert(crate::store::MODEL_S3_URI.to_owned(), uri.clone());
            }
        }
        Function::Train => {
            env.insert("MODEL_BUCKET".to_owned(), bucket.clone());
            env.insert("MODEL_PREFIX".to_owned(), "models".to_owned());
        }
    }
    let image_uri = format!("{}@{}", req.repository_uri, req.digest);
    let spec = FunctionSpec {
        name: name.to_owned(),
        image_uri: image_uri.clone(),
        role_arn: role_arn.to_owned(),
        memory_mb: fc.memory_mb,
        timeout_s: fc.timeout_s,
        ephemeral_mb: fc.ephemeral_mb,
        arch: req.arch,
        env,
    };
    if config.arch().ok() != Some(req.arch) {
        say(format!(
            "{name}: the image is {}, the config says {}: deploying as {} (the image's)",
            req.arch, config.architecture, req.arch
        ));
    }
    say(format!("{name}: bringing the function to {image_uri}"));
    let (change, _memory) = lambda::deploy_within_memory_cap(&clients.lambda, &spec, say).await?;
    // Before the alias moves and before the "already live" return: a re-run applies it too.
    if let Some(reserved) = fc.reserved_concurrency {
        cap_concurrency(&clients.lambda, name, reserved, say).await?;
    }
    let state = lambda::read_alias(&clients.lambda, name, alias).await?;
    let previous = state.as_ref().map(|s| s.version.clone());
    let mut history = state
        .as_ref()
        .map(|s| History::parse(&s.description))
        .unwrap_or_default();
    let version = lambda::publish(&clients.lambda, name, &format!("image {}", req.digest)).await?;
    // Nothing moves: the outcome says why.
    let stays = |smoke: &str| ReleaseOutcome {
        function: name.to_owned(),
        image_uri: image_uri.clone(),
        change,
        version: version.clone(),
        previous: previous.clone(),
        alias: alias.to_owned(),
        canary: None,
        smoke: smoke.to_owned(),
        model: model.clone(),
    };
    if history.was_rolled_back(&version) {
        // Same image, model and settings as a version rolled back from: Lambda hands that
        // version out again, and moving `live` to it would undo the rollback.
        say(format!(
            "{name}: version {version} (this image, model and settings) was rolled back from; {alias} stays on version {}. Release a different image or model, or `deploy rollback --to {version}` to put it back on purpose",
            previous.as_deref().unwrap_or("-")
        ));
        return Ok(stays("not released: rolled back from earlier"));
    }
    if previous.as_deref() == Some(version.as_str()) {
        say(format!(
            "{name}: version {version} is already {alias}; nothing to do"
        ));
        return Ok(stays("already live"));
    }

    let smoke = smoke_test(clients, f, &case, name, &version, &account.id, say)
        .await?
        .map_err(|reason| ReleaseError::SmokeFailed {
            function_name: name.to_owned(),
            version: version.clone(),
            alias: alias.to_owned(),
            live: previous
                .as_deref()
                .map(|v| format!("version {v}"))
                .unwrap_or_else(|| "nothing (it was not created)".to_owned()),
            reason,
        })?;
    let canary = match (req.canary_percent, &previous) {
        (Some(p), Some(old)) => {
            let share = (p / 100.0).clamp(0.0, 1.0);
            let kept = history.render();
            lambda::point_alias(
                &clients.lambda,
                name,
                alias,
                old,
                Some((&version, share)),
                Some(&kept),
            )
            .await?;
            say(format!(
                "{name}: {alias} stays on version {old}, {p}% of traffic to version {version}"
            ));
            Some(share)
        }
        (Some(p), None) => {
            say(format!(
                "{name}: no version is {alias} yet, so there is nothing to keep beside a {p}% canary: version {version} takes all the traffic"
            ));
            history.went_live(&version);
            let h = history.render();
            lambda::point_alias(&clients.lambda, name, alias, &version, None, Some(&h)).await?;
            say(format!("{name}: {alias} → version {version}"));
            None
        }
        (None, _) => {
            history.went_live(&version);
            let h = history.render();
            lambda::point_alias(&clients.lambda, name, alias, &version, None, Some(&h)).await?;
            say(format!("{name}: {alias} → version {version}"));
            None
        }
    };
    // What the alias points at (and the version a rollback would go back to) must outlive the
    // repository's lifecycle policy: `live-…` tags are never expired.
    let live = super::ecr::live_tag(f);
    if canary.is_some() {
        super::ecr::tag_image(
            &clients.ecr,
            req.repository,
            req.digest,
            &format!("{live}-canary"),
        )
        .await?;
    } else {
        super::ecr::tag_image(&clients.ecr, req.repository, req.digest, &live).await?;
        if let Some(old) = &previous {
            if let Some(digest) = lambda::version_image_digest(&clients.lambda, name, old).await? {
                if digest != req.digest {
                    super::ecr::tag_image(
                        &clients.ecr,
                        req.repository,
                        &digest,
                        &format!("{live}-previous"),
                    )
                    .await?;
                }
            }
        }
    }
    Ok(ReleaseOutcome {
        function: name.to_owned(),
        image_uri,
        change,
        version,
        previous,
        alias: alias.to_owned(),
        canary,
        smoke,
        model,
    })
}
