//! The ECR control plane: the repository (scan on push, a lifecycle policy), registry
//! credentials, and registering a pushed manifest (for registries ECR does not front).

use aws_sdk_ecr::types::ImageScanningConfiguration;
use base64::Engine;

use super::aws::{aws_err, AwsError};

/// A repository and the registry that serves it.
#[derive(Debug, Clone)]
pub struct Repository {
    pub name: String,
    /// `<account>.dkr.ecr.<region>.amazonaws.com/<name>`
    pub uri: String,
    /// `<account>.dkr.ecr.<region>.amazonaws.com`
    pub registry: String,
}

/// The lifecycle policy: keep the newest `keep` images, expire the rest.
pub fn lifecycle_policy(keep: u32) -> String {
    serde_json::json!({
        "rules": [{
            "rulePriority": 1,
            "description": format!("keep the newest {keep} images"),
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep},
            "action": {"type": "expire"}
        }]
    })
    .to_string()
}

/// Creates the repository when missing (scan on push), and sets its lifecycle policy.
pub async fn ensure_repository(
    ecr: &aws_sdk_ecr::Client,
    name: &str,
    keep_images: u32,
) -> Result<(Repository, bool), AwsError> {
    let found = ecr
        .describe_repositories()
        .repository_names(name)
        .send()
        .await
        .map_err(aws_err(format!("looking up ECR repository {name}")));
    let (repo, created) = match found {
        Ok(out) => (out.repositories().first().cloned(), false),
        Err(e) if e.is("RepositoryNotFoundException") => {
            let out = ecr
                .create_repository()
                .repository_name(name)
                .image_scanning_configuration(
                    ImageScanningConfiguration::builder()
                        .scan_on_push(true)
                        .build(),
                )
                .send()
                .await
                .map_err(aws_err(format!("creating ECR repository {name}")))?;
            (out.repository().cloned(), true)
        }
        Err(e) => return Err(e),
    };
    let uri = repo
        .and_then(|r| r.repository_uri().map(str::to_owned))
        .ok_or_else(|| {
            AwsError::new(
                format!("ECR repository {name}"),
                "no repositoryUri in the answer",
            )
        })?;
    ecr.put_lifecycle_policy()
        .repository_name(name)
        .lifecycle_policy_text(lifecycle_policy(keep_images))
        .send()
        .await
        .map_err(aws_err(format!("setting the lifecycle policy of {name}")))?;
    let registry = uri.split('/').next().unwrap_or_default().to_owned();
    Ok((
        Repository {
            name: name.to_owned(),
            uri,
            registry,
        },
        created,
    ))
}

/// Registry credentials from `GetAuthorizationToken`: (user, password).
pub async fn login(ecr: &aws_sdk_ecr::Client) -> Result<(String, String), AwsError> {
    let out = ecr
        .get_authorization_token()
        .send()
        .await
        .map_err(aws_err("getting an ECR registry token"))?;
    let token = out
        .authorization_data()
        .first()
        .and_then(|d| d.authorization_token())
        .ok_or_else(|| AwsError::new("getting an ECR registry token", "no token in the answer"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            AwsError::new(
                "reading the ECR registry token",
                "not base64 of user:password",
            )
        })?;
    let (user, pass) = decoded
        .split_once(':')
        .ok_or_else(|| AwsError::new("reading the ECR registry token", "not user:password"))?;
    Ok((user.to_owned(), pass.to_owned()))
}

/// Tells ECR's control plane about a manifest pushed to another registry (a local one), with
/// its real digest. Against real ECR the push itself does this; an existing image is fine.
pub async fn register_manifest(
    ecr: &aws_sdk_ecr::Client,
    repository: &str,
    manifest: &[u8],
    digest: &str,
    tag: &str,
) -> Result<(), AwsError> {
    let sent = ecr
        .put_image()
        .repository_name(repository)
        .image_manifest(String::from_utf8_lossy(manifest))
        .image_manifest_media_type("application/vnd.oci.image.manifest.v1+json")
        .image_digest(digest)
        .image_tag(tag)
        .send()
        .await
        .map_err(aws_err(format!(
            "registering {digest} as {repository}:{tag} with ECR"
        )));
    match sent {
        Ok(_) => Ok(()),
        Err(e) if e.is("ImageAlreadyExistsException") => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_lifecycle_policy_keeps_the_newest_images() {
        let p: serde_json::Value = serde_json::from_str(&super::lifecycle_policy(7)).unwrap();
        assert_eq!(p["rules"][0]["selection"]["countNumber"], 7);
        assert_eq!(p["rules"][0]["action"]["type"], "expire");
    }
}
