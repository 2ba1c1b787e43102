//! The ECR control plane: the repository (scan on push, a lifecycle policy), registry
//! credentials, and registering a pushed manifest (for registries ECR does not front).

#![warn(missing_docs)]

use aws_sdk_ecr::types::ImageScanningConfiguration;
use base64::Engine;

use super::aws::{aws_err, Absent, AwsError};

/// A repository and the registry that serves it.
#[derive(Debug, Clone)]
pub struct Repository {
    /// The repository's name.
    pub name: String,
    /// `<account>.dkr.ecr.<region>.amazonaws.com/<name>`
    pub uri: String,
    /// `<account>.dkr.ecr.<region>.amazonaws.com`
    pub registry: String,
}

/// The tag `deploy release` puts on the image a function's alias points at.
pub fn live_tag(f: crate::image::Function) -> String {
    format!("live-{f}")
}

/// The lifecycle policy: the images the aliases point at (tagged `live-…`) never expire; of the
/// rest, each function keeps its newest `keep` (by its tag prefix), and untagged images go after
/// a day. One rule over both functions would let twenty predict pushes expire train's live
/// image, and a function whose image is gone fails every invocation. ECR: "an image that
/// matches the tagging requirements of a higher priority rule cannot be expired by a rule with
/// a lower priority".
pub fn lifecycle_policy(keep: u32) -> String {
    use crate::image::Function;
    let mut rules = vec![serde_json::json!({
        "rulePriority": 1,
        "description": "never expire what an alias points at",
        "selection": {"tagStatus": "tagged", "tagPrefixList": ["live-"], "countType": "imageCountMoreThan", "countNumber": 9999},
        "action": {"type": "expire"}
    })];
    for (i, f) in [Function::Predict, Function::Train].into_iter().enumerate() {
        rules.push(serde_json::json!({
            "rulePriority": 10 + i,
            "description": format!("keep the newest {keep} {f} images"),
            "selection": {"tagStatus": "tagged", "tagPrefixList": [format!("{f}-")], "countType": "imageCountMoreThan", "countNumber": keep},
            "action": {"type": "expire"}
        }));
    }
    rules.push(serde_json::json!({
        "rulePriority": 100,
        "description": "untagged images go after a day",
        "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1},
        "action": {"type": "expire"}
    }));
    serde_json::json!({ "rules": rules }).to_string()
}

/// The repository policy Lambda needs to pull the images when the deployer's own rights do
/// not reach (a least-privileged deployer): Lambda's service principal may read images, for
/// functions of this account and region only.
pub fn repository_policy(partition: &str, region: &str, account: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "LambdaECRImageRetrievalPolicy",
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            "Condition": {"StringLike": {"aws:sourceArn": format!("arn:{partition}:lambda:{region}:{account}:function:*")}}
        }]
    })
    .to_string()
}

/// Tags the image `digest` as `tag` too (moving the tag from whatever image had it).
pub async fn tag_image(
    ecr: &aws_sdk_ecr::Client,
    repository: &str,
    digest: &str,
    tag: &str,
) -> Result<(), AwsError> {
    let action = format!("tagging {repository}@{digest} as {tag}");
    let got = ecr
        .batch_get_image()
        .repository_name(repository)
        .image_ids(
            aws_sdk_ecr::types::ImageIdentifier::builder()
                .image_digest(digest)
                .build(),
        )
        .accepted_media_types(MANIFEST_MEDIA_TYPE)
        .send()
        .await
        .map_err(aws_err(action.clone()))?;
    let manifest = got
        .images()
        .first()
        .and_then(|i| i.image_manifest())
        .ok_or_else(|| AwsError::new(action.clone(), "ECR does not have the image"))?;
    let sent = ecr
        .put_image()
        .repository_name(repository)
        .image_manifest(manifest)
        .image_manifest_media_type(MANIFEST_MEDIA_TYPE)
        .image_digest(digest)
        .image_tag(tag)
        .send()
        .await
        .map_err(aws_err(action));
    // ImageAlreadyExists: the tag is already on this image.
    sent.already_if("ImageAlreadyExistsException").map(|_| ())
}

const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// The repository `name`, if this account has it in this region.
pub async fn find_repository(
    ecr: &aws_sdk_ecr::Client,
    name: &str,
) -> Result<Option<aws_sdk_ecr::types::Repository>, AwsError> {
    Ok(ecr
        .describe_repositories()
        .repository_names(name)
        .send()
        .await
        .map_err(aws_err(format!("looking up ECR repository {name}")))
        .absent_if("RepositoryNotFoundException")?
        .and_then(|out| out.repositories().first().cloned()))
}

/// Creates the repository when missing (scan on push), and sets its lifecycle policy.
pub async fn ensure_repository(
    ecr: &aws_sdk_ecr::Client,
    name: &str,
    keep_images: u32,
    account: &super::aws::Account,
) -> Result<(Repository, bool), AwsError> {
    let (repo, created) = match find_repository(ecr, name).await? {
        Some(repo) => (Some(repo), false),
        None => {
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
    ecr.set_repository_policy()
        .repository_name(name)
        .policy_text(repository_policy(
            &account.partition,
            &account.region,
            &account.id,
        ))
        .send()
        .await
        .map_err(aws_err(format!("letting Lambda pull from {name}")))?;
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
        .image_manifest_media_type(MANIFEST_MEDIA_TYPE)
        .image_digest(digest)
        .image_tag(tag)
        .send()
        .await
        .map_err(aws_err(format!(
            "registering {digest} as {repository}:{tag} with ECR"
        )));
    sent.already_if("ImageAlreadyExistsException").map(|_| ())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// ECR's documented lifecycle evaluation, strictly: rules in priority order; a rule selects
    /// the images its tag requirement matches (tagged with a tag starting with every prefix,
    /// untagged, or any), counts them newest first as if nothing were expired, and expires
    /// those past its count, except images a higher-priority rule's tag requirement matches.
    /// `images`: oldest first, each with its tags. Returns the indices expired.
    fn expire(policy: &str, images: &[Vec<&str>]) -> Vec<usize> {
        let p: Value = serde_json::from_str(policy).unwrap();
        let mut rules: Vec<&Value> = p["rules"].as_array().unwrap().iter().collect();
        rules.sort_by_key(|r| r["rulePriority"].as_u64().unwrap());
        let matches = |rule: &Value, tags: &Vec<&str>| {
            let sel = &rule["selection"];
            match sel["tagStatus"].as_str().unwrap() {
                "any" => true,
                "untagged" => tags.is_empty(),
                _ => sel["tagPrefixList"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|p| tags.iter().any(|t| t.starts_with(p.as_str().unwrap()))),
            }
        };
        let mut expired = Vec::new();
        for (k, rule) in rules.iter().enumerate() {
            let sel = &rule["selection"];
            if sel["countType"] != "imageCountMoreThan" {
                continue;
            }
            let keep = sel["countNumber"].as_u64().unwrap() as usize;
            let selected: Vec<usize> = (0..images.len())
                .rev()
                .filter(|&i| matches(rule, &images[i]))
                .collect();
            for &i in selected.iter().skip(keep) {
                let claimed_higher = rules[..k].iter().any(|r| matches(r, &images[i]));
                if !claimed_higher && !expired.contains(&i) {
                    expired.push(i);
                }
            }
        }
        expired.sort_unstable();
        expired
    }

    #[test]
    fn no_number_of_predict_pushes_expires_an_image_an_alias_points_at() {
        // train released once; then 25 predict releases, the last one live.
        let mut images: Vec<Vec<&str>> = vec![vec!["train-0", "live-train"]];
        let tags: Vec<String> = (0..25).map(|i| format!("predict-{i}")).collect();
        for t in &tags {
            images.push(vec![t.as_str()]);
        }
        images.last_mut().unwrap().push("live-predict");
        // The old policy, one rule over every image: train's live image would go.
        let old = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":20},"action":{"type":"expire"}}]}"#;
        assert!(expire(old, &images).contains(&0));
        let now = expire(&super::lifecycle_policy(20), &images);
        assert!(!now.contains(&0), "train's live image expired: {now:?}");
        assert!(!now.contains(&25), "predict's live image expired");
        // The five oldest predict images go; twenty stay.
        assert_eq!(now, vec![1, 2, 3, 4, 5]);
        // A live image older than every kept one stays too (a rollback target).
        images[3].push("live-predict-previous");
        assert!(!expire(&super::lifecycle_policy(20), &images).contains(&3));
    }

    #[test]
    fn lambda_may_pull_only_for_this_accounts_functions() {
        let p: Value =
            serde_json::from_str(&super::repository_policy("aws-cn", "cn-north-1", "123")).unwrap();
        let st = &p["Statement"][0];
        assert_eq!(st["Principal"]["Service"], "lambda.amazonaws.com");
        assert_eq!(
            st["Condition"]["StringLike"]["aws:sourceArn"],
            "arn:aws-cn:lambda:cn-north-1:123:function:*"
        );
    }
}
