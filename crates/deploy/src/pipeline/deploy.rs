//! Step 4: the pushed images onto Lambda. First what every release needs (the models
//! bucket, the execution role, the repository), then each function through
//! [`crate::release::release`]: function, version, smoke test, and only then the alias.

use super::{Progress, StageError, Step};
use crate::config::DeployConfig;
use crate::ecr;
use crate::image::{Function, Image};
use crate::release::{self, ReleaseOutcome, ReleaseRequest};
use crate::session::Session;

/// What a release needs before any function: the role's ARN and the repository.
pub struct Prerequisites {
    /// The execution role's ARN.
    pub role_arn: String,
    /// The ECR repository the images are in.
    pub repository: ecr::Repository,
}

/// The bucket, role and repository a release of `cfg` needs, made where missing; each thing
/// made is named in `created` (so that a later failure can say what it left).
pub async fn prerequisites(
    s: &Session,
    cfg: &DeployConfig,
    created: &mut Vec<String>,
    p: &dyn Progress,
) -> Result<Prerequisites, StageError> {
    let say = |line| p.say(line);
    // The bucket first: a name another account holds stops the release before anything of
    // ours is created.
    let bucket = cfg.bucket_name(&s.account.id, &s.account.region);
    if crate::bucket::ensure(
        &s.clients.s3,
        &bucket,
        &s.account.region,
        &s.account.id,
        Default::default(),
        &say,
    )
    .await?
    {
        p.say(format!("created bucket {bucket} (private, encrypted)"));
        created.push(format!("bucket {bucket}"));
    }
    let (role_arn, role_created) = role(s, cfg, created).await?;
    if role_created {
        created.push(format!("role {}", cfg.role.name));
    }
    let (repository, _) = ecr::ensure_repository(
        &s.clients.ecr,
        &cfg.repository.name,
        cfg.repository.keep_images,
        &s.account,
    )
    .await
    .map_err(|e| StageError::from(e).after_creating(created))?;
    Ok(Prerequisites {
        role_arn,
        repository,
    })
}

/// The execution role of `cfg`, made or brought up to date from the config's `iam/`
/// templates: its ARN, and whether it was made. A failure says what `created` holds.
pub async fn role(
    s: &Session,
    cfg: &DeployConfig,
    created: &[String],
) -> Result<(String, bool), StageError> {
    // An unreadable template is refused as it is: nothing was made for it.
    let trust = s.policy("trust-policy.json")?;
    let execution = s.policy("execution-policy.json")?;
    release::ensure_role(&s.clients, cfg, &s.account, &trust, &execution)
        .await
        .map_err(|e| StageError::from(e).after_creating(created))
}

/// `--model` names the model predict serves: a release without predict has no use for one.
pub fn refuse_model_without_predict(
    model: Option<&str>,
    functions: &[Function],
) -> Result<(), StageError> {
    if model.is_some() && !functions.contains(&Function::Predict) {
        return Err(StageError::Refused(
            "--model is the model predict serves; train has none: drop --model, or release \
             predict (--function predict)"
                .into(),
        ));
    }
    Ok(())
}

/// `--model`: `image`, an S3 URI, or a model file here (read and checked now, uploaded once
/// the bucket exists: its bytes are returned).
pub fn check_model_flag(model: Option<&str>) -> Result<Option<Vec<u8>>, StageError> {
    match model {
        None | Some("image") => Ok(None),
        Some(m) if m.starts_with("s3://") => {
            m.parse::<crate::store::S3Uri>().map_err(|e| {
                StageError::Refused(format!(
                    "--model: {e} (or `image` for the weights in the image)"
                ))
            })?;
            Ok(None)
        }
        Some(path) => Ok(Some(release::read_model_file(std::path::Path::new(path))?)),
    }
}

/// Releases each of `images` (already pushed) as its function, with `canary` percent of the
/// traffic when given, serving `model` (see [`check_model_flag`]); each outcome is reported
/// as it lands.
pub async fn deploy(
    s: &Session,
    images: &[Image],
    canary: Option<f64>,
    model: Option<&str>,
    p: &dyn Progress,
) -> Result<Vec<ReleaseOutcome>, StageError> {
    let cfg = &s.config;
    let functions: Vec<Function> = images.iter().map(|i| i.function).collect();
    refuse_model_without_predict(model, &functions)?;
    let local_model = check_model_flag(model)?;
    let say = |line| p.say(line);
    let mut created = Vec::new();
    let pre = prerequisites(s, cfg, &mut created, p).await?;
    let uploaded = match local_model {
        Some(bytes) => Some(
            release::upload_model(&s.clients.s3, &s.bucket(), &s.account.id, bytes, &say)
                .await
                .map_err(|e| StageError::from(e).after_creating(&created))?,
        ),
        None => None,
    };
    let model = uploaded.as_deref().or(model);
    let mut outcomes = Vec::new();
    for img in images {
        let req = ReleaseRequest {
            function: img.function,
            repository_uri: &pre.repository.uri,
            repository: &pre.repository.name,
            digest: &img.manifest_digest,
            model: release::Model::from_flag(model),
            canary_percent: canary,
            arch: img.arch,
        };
        let outcome = release::release(&s.clients, cfg, &s.account, &pre.role_arn, &req, &say)
            .await
            .map_err(|e| StageError::from(e).after_creating(&created))?;
        p.done(Step::Released(outcome.clone()));
        outcomes.push(outcome);
    }
    Ok(outcomes)
}
