//! The seed article's pipeline, as the library runs it:
//!
//! 1. **build** the function binaries ([`crate::build`]),
//! 2. **containerize** each into an OCI image ([`containerize`]),
//! 3. **upload** the images to ECR ([`upload`]),
//! 4. **deploy** them to Lambda: role, bucket, function, version, smoke test, alias
//!    ([`deploy`], one function at a time in [`crate::release`]),
//! 5. **expose** predict through API Gateway ([`expose`]),
//!
//! and then monitor what they made ([`crate::logs`], [`crate::status`]). [`all`] is that list;
//! each step also runs alone (`deploy image`, `push`, `release`, `api`). A step takes the
//! previous one's outputs (an [`Image`], a repository), never its internals, and reports as it
//! goes through a [`Progress`]: lines for people, and each typed result as a [`Step`] that the
//! binary prints (Display, or JSON with `--json`).

#![warn(missing_docs)]

use std::path::Path;

use crate::arch::Arch;
use crate::aws::AwsError;
use crate::doctor::{Check, ProblemsFound};
use crate::image::{Function, Image, ImageError};
use crate::registry::{PushReport, RegistryError};
use crate::release::{ReleaseError, ReleaseOutcome};
use crate::session::{PolicyFileError, Session};

pub mod containerize;
pub mod deploy;
pub mod expose;
pub mod upload;

pub use containerize::{containerize, ImageMade, Sources};
pub use deploy::deploy;
pub use expose::expose;
pub use upload::upload;

/// Why a step of the pipeline stopped.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // documented by their messages
pub enum StageError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Policy(#[from] PolicyFileError),
    #[error(transparent)]
    Problems(#[from] ProblemsFound),
    #[error("deploy build failed")]
    Build(#[source] crate::build::BuildError),
    /// Not run from the project, so there is nothing to build.
    #[error(transparent)]
    Workspace(crate::build::BuildError),
    #[error("cannot read the {function} image")]
    ReadImage {
        function: Function,
        source: Box<ImageError>,
    },
    #[error("cannot build the {function} image")]
    Assemble {
        function: Function,
        source: Box<ImageError>,
    },
    #[error("cannot write the image layout to {}", path.display())]
    WriteLayout {
        path: std::path::PathBuf,
        source: Box<ImageError>,
    },
    #[error("failed to push the {function} image to {registry}/{repository}")]
    Push {
        function: Function,
        registry: String,
        repository: String,
        source: Box<RegistryError>,
    },
    /// Refused before acting, with what to do instead.
    #[error("{0}")]
    Refused(String),
    #[error("interrupted")]
    Interrupted,
    #[error("cannot write {what} to {}", path.display())]
    Write {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// `source`, while doing `what`.
    #[error("{what}")]
    During {
        what: String,
        source: Box<StageError>,
    },
    #[error(
        "failed after creating {created} (kept for the next run, which picks up from here; \
         `deploy destroy --all` removes them)"
    )]
    AfterCreating {
        created: String,
        source: Box<StageError>,
    },
}

impl StageError {
    /// The AWS error behind this one, when there is one (for the hint AWS's docs give).
    pub fn aws(&self) -> Option<&AwsError> {
        match self {
            StageError::Aws(e) => Some(e),
            StageError::Release(ReleaseError::Aws(e)) => Some(e),
            StageError::AfterCreating { source, .. } | StageError::During { source, .. } => {
                source.aws()
            }
            _ => None,
        }
    }

    /// This error, said with what this run created before it (`created`, in order), which
    /// the next run picks up.
    pub fn after_creating(self, created: &[String]) -> StageError {
        if created.is_empty() {
            return self;
        }
        StageError::AfterCreating {
            created: created.join(" and "),
            source: Box::new(self),
        }
    }
}

/// Where the pipeline reports as it goes.
pub trait Progress: Sync {
    /// A line for people (on stderr, unless quiet).
    fn say(&self, line: String);
    /// A bar counting `len` bytes of `what`; hidden unless the caller draws one.
    fn bytes(&self, len: u64, what: String) -> indicatif::ProgressBar {
        let _ = (len, what);
        indicatif::ProgressBar::hidden()
    }
    /// A bar counting `len` of `what` (invocations, say); hidden unless the caller draws one.
    fn count(&self, len: u64, what: &'static str) -> indicatif::ProgressBar {
        let _ = (len, what);
        indicatif::ProgressBar::hidden()
    }
    /// A result, as soon as it is known.
    fn done(&self, step: Step);
}

/// A result of the pipeline, in the order they come.
#[derive(Debug)]
pub enum Step {
    /// A preflight check that is not OK (`deploy all` runs the doctor first).
    Preflight(Check),
    /// What `deploy all` is about to do.
    Plan(crate::plan::Plan),
    /// An image built.
    Image(ImageMade),
    /// An image pushed.
    Pushed(PushReport),
    /// A function released.
    Released(ReleaseOutcome),
    /// The API made or updated.
    Exposed(crate::apigw::ApiOutcome),
}

/// The image of `f` in `images` (`images/<function>`, as `deploy image` writes it).
pub fn read_image(images: &Path, f: Function) -> Result<Image, StageError> {
    crate::image::read_layout(&images.join(f.name()), f).map_err(|source| StageError::ReadImage {
        function: f,
        source: Box::new(source),
    })
}

/// Every image of `functions`, read before anything is created: a missing one leaves nothing
/// half made.
pub fn read_images(images: &Path, functions: &[Function]) -> Result<Vec<Image>, StageError> {
    functions.iter().map(|&f| read_image(images, f)).collect()
}

/// What `deploy all` is asked to do.
pub struct AllRequest<'a> {
    /// The images' architecture; default: the config's.
    pub arch: Option<Arch>,
    /// Stop before the API.
    pub no_api: bool,
    /// Where the images are written (`<images>/<function>`).
    pub images: &'a Path,
    /// A registry standing in for ECR's own (see `deploy push --help`).
    pub registry: Option<&'a str>,
    /// What goes into the images besides the binaries.
    pub sources: &'a Sources,
}

/// `deploy all`: the preflight, the plan (and, the first time in an account and region,
/// `confirm`: no creates nothing), then build → containerize → upload → deploy → expose.
pub async fn all(
    s: &Session,
    req: &AllRequest<'_>,
    confirm: &(dyn Fn() -> bool + Sync),
    p: &dyn Progress,
) -> Result<(), StageError> {
    // The preflight first: nothing is created when something would stop the deploy.
    let checks = preflight(s, req.images, &req.sources.mnist_dir, None).await?;
    for c in &checks {
        if c.level != crate::doctor::Level::Ok {
            p.done(Step::Preflight(c.clone()));
        }
    }
    crate::doctor::fail_on(&checks)?;
    let arch = match req.arch {
        Some(arch) => arch,
        None => s.config.arch().map_err(StageError::Refused)?,
    };
    // The plan, then (the first time in this account and region) the caller's question.
    let state = crate::plan::read_state(&s.clients, &s.config, &s.account).await?;
    let plan = crate::plan::plan(
        &crate::plan::Request::All {
            arch,
            no_api: req.no_api,
            images_dir: req.images.display().to_string(),
        },
        &s.config,
        &s.account,
        &state,
    );
    let first_time =
        !state.repository && !state.role && state.status.functions.iter().all(|f| !f.deployed);
    p.done(Step::Plan(plan));
    if first_time && !confirm() {
        return Err(StageError::Refused(
            "nothing created (deploy all --yes skips this question)".into(),
        ));
    }
    let both = [Function::Predict, Function::Train];
    let workspace = crate::build::workspace_root().map_err(StageError::Workspace)?;
    let built = build(&workspace, arch, p)?;
    for f in both {
        let img = containerize(f, built.binary(f), None, req.sources)?;
        let made = containerize::write(&img, &req.images.join(f.name()), "latest")?;
        p.done(Step::Image(made));
    }
    // Pushed and released as `deploy push` and `deploy release` would: from the layouts.
    let images = read_images(req.images, &both)?;
    upload(s, &images, req.registry, p).await?;
    deploy(s, &images, None, None, p).await?;
    if !req.no_api {
        expose(s, None, false, p).await?;
    }
    Ok(())
}

/// Every check of `deploy doctor`, in the order a first deploy meets them: the account's
/// (identity, permissions against the deployer policy, quotas, what exists) and the local
/// files' (`images`, `mnist_dir`, and `model` when given).
pub async fn preflight(
    s: &Session,
    images: &Path,
    mnist_dir: &Path,
    model: Option<&Path>,
) -> Result<Vec<Check>, StageError> {
    Ok(crate::doctor::examine(
        &s.clients,
        &s.config,
        &s.account,
        &crate::doctor::Local {
            images,
            mnist_dir,
            deployer_policy: &s.rendered_policy("deployer-policy.json")?,
            model,
        },
    )
    .await)
}

/// Step 1: the functions' release build for `arch`, in the workspace at `root`.
pub fn build(root: &Path, arch: Arch, p: &dyn Progress) -> Result<crate::build::Built, StageError> {
    p.say(format!(
        "building the functions for {arch} (release) in {}",
        root.display()
    ));
    crate::build::build_functions(root, arch).map_err(StageError::Build)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_after_creating_names_what_was_kept_and_keeps_the_aws_error() {
        let e = StageError::from(AwsError::new("creating role r", "AccessDenied"));
        assert!(matches!(e.after_creating(&[]), StageError::Aws(_)));
        let e = StageError::from(AwsError::new("creating role r", "AccessDenied"))
            .after_creating(&["bucket b".into(), "role r".into()]);
        let line = lambda_cnn_core::errors::chain(&e);
        assert!(
            line.starts_with("failed after creating bucket b and role r (kept for the next run")
                && line.ends_with("creating role r: AccessDenied"),
            "{line}"
        );
        assert_eq!(e.aws().map(|a| a.action.as_str()), Some("creating role r"));
    }

    #[test]
    fn a_model_needs_predict_and_a_readable_flag() {
        use deploy::{check_model_flag, refuse_model_without_predict};
        assert!(refuse_model_without_predict(Some("image"), &[Function::Train]).is_err());
        assert!(refuse_model_without_predict(None, &[Function::Train]).is_ok());
        assert!(refuse_model_without_predict(Some("m"), &[Function::Predict]).is_ok());
        assert!(matches!(check_model_flag(Some("image")), Ok(None)));
        assert!(matches!(
            check_model_flag(Some("s3://b/k.safetensors")),
            Ok(None)
        ));
        let e = check_model_flag(Some("s3://")).unwrap_err().to_string();
        assert!(e.starts_with("--model: "), "{e}");
        let e = check_model_flag(Some("/nonexistent/model.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/model.safetensors"), "{e}");
    }
}
