//! Step 3: the images into the ECR repository (made when missing), tagged by digest and by
//! git revision; with `--registry`, into a stand-in registry, each manifest then registered
//! with ECR so that Lambda's control plane knows it.

use oci_client::secrets::RegistryAuth;

use super::{Progress, StageError, Step};
use crate::ecr;
use crate::image::Image;
use crate::registry::{self, Destination, PushOutcome, PushReport};
use crate::session::Session;

/// Pushes `images`; each [`PushReport`] is reported as it lands.
pub async fn upload(
    s: &Session,
    images: &[Image],
    registry: Option<&str>,
    p: &dyn Progress,
) -> Result<Vec<PushOutcome>, StageError> {
    let cfg = &s.config;
    let (repo, created) = ecr::ensure_repository(
        &s.clients.ecr,
        &cfg.repository.name,
        cfg.repository.keep_images,
        &s.account,
    )
    .await?;
    if created {
        p.say(format!("created ECR repository {}", repo.uri));
    }
    let (user, pass) = ecr::login(&s.clients.ecr).await?;
    let dest = Destination {
        registry: registry.map_or_else(|| repo.registry.clone(), str::to_owned),
        repository: repo.name.clone(),
        plain_http: registry.is_some_and(is_loopback),
    };
    let auth = RegistryAuth::Basic(user, pass);
    let revision = git_revision();
    let mut outcomes = Vec::new();
    for img in images {
        let f = img.function;
        let mut tags = vec![format!(
            "{f}-{}",
            crate::plan::short_digest(&img.manifest_digest)
        )];
        if let Some(rev) = &revision {
            tags.push(format!("{f}-git-{rev}"));
        }
        let bar = p.bytes(img.compressed_size(), format!("pushing {f}"));
        let outcome = registry::push(img, &dest, &auth, &tags, &bar)
            .await
            .map_err(|source| StageError::Push {
                function: f,
                registry: dest.registry.clone(),
                repository: dest.repository.clone(),
                source: Box::new(source),
            })?;
        bar.finish_and_clear();
        if registry.is_some() {
            ecr::register_manifest(
                &s.clients.ecr,
                &repo.name,
                &img.manifest,
                &img.manifest_digest,
                &tags[0],
            )
            .await?;
        }
        outcomes.push(outcome.clone());
        p.done(Step::Pushed(PushReport {
            function: f.name().to_owned(),
            outcome,
        }));
    }
    Ok(outcomes)
}

/// The revision checked out where deploy runs, for the `<function>-git-<rev>` tag.
fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    let rev = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !rev.is_empty()).then_some(rev)
}

/// A registry on this machine: spoken to in plain HTTP.
fn is_loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn only_this_machine_is_spoken_to_in_plain_http() {
        for r in [
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "registry:5000",
            "10.0.0.1:5000",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }
}
