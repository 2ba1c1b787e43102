//! The functions' execution role: Lambda's trust policy and a least-privilege inline policy
//! (its own log groups, the models bucket), both from `infra/iam/`.

#![warn(missing_docs)]

use super::aws::{aws_err, Absent, AwsError};

/// The name of the execution role's inline policy.
pub const POLICY_NAME: &str = "lambda-cnn";

/// The role `name`, or `None` when there is none.
pub async fn find_role(
    iam: &aws_sdk_iam::Client,
    name: &str,
) -> Result<Option<aws_sdk_iam::types::Role>, AwsError> {
    Ok(iam
        .get_role()
        .role_name(name)
        .send()
        .await
        .map_err(aws_err(format!("looking up IAM role {name}")))
        .absent_if("NoSuchEntity")?
        .and_then(|out| out.role().cloned()))
}

/// Creates the functions' execution role when missing and (re)sets its inline policy;
/// returns (ARN, created).
pub async fn ensure_role(
    iam: &aws_sdk_iam::Client,
    name: &str,
    trust_policy: &str,
    policy: &str,
) -> Result<(String, bool), AwsError> {
    let role = Role {
        name,
        description: "Execution role of the lambda-cnn functions (created by deploy)",
        policy_name: POLICY_NAME,
    };
    ensure(iam, &role, trust_policy, policy).await
}

/// A role deploy makes: its name, description and inline policy's name.
pub struct Role<'a> {
    /// The role's name.
    pub name: &'a str,
    /// Its description in IAM.
    pub description: &'a str,
    /// Its one inline policy's name.
    pub policy_name: &'a str,
}

/// Creates `role` when missing, brings its trust policy to `trust_policy` and (re)sets its
/// inline policy to `policy`; returns (ARN, created).
pub async fn ensure(
    iam: &aws_sdk_iam::Client,
    role: &Role<'_>,
    trust_policy: &str,
    policy: &str,
) -> Result<(String, bool), AwsError> {
    let name = role.name;
    let (arn, created) = match find_role(iam, name).await? {
        Some(role) => {
            // A role made before (or by hand) may not let Lambda assume it: the trust policy is
            // brought to ours as well as the permissions.
            iam.update_assume_role_policy()
                .role_name(name)
                .policy_document(trust_policy)
                .send()
                .await
                .map_err(aws_err(format!(
                    "setting the trust policy of IAM role {name}"
                )))?;
            (Some(role.arn().to_owned()), false)
        }
        None => {
            let out = iam
                .create_role()
                .role_name(name)
                .assume_role_policy_document(trust_policy)
                .description(role.description)
                .send()
                .await
                .map_err(aws_err(format!("creating IAM role {name}")))?;
            (out.role().map(|r| r.arn().to_owned()), true)
        }
    };
    let arn =
        arn.ok_or_else(|| AwsError::new(format!("IAM role {name}"), "no ARN in the answer"))?;
    put_policy(iam, name, role.policy_name, policy).await?;
    Ok((arn, created))
}

/// Sets role `role`'s inline policy `policy_name` to `policy`.
pub async fn put_policy(
    iam: &aws_sdk_iam::Client,
    role: &str,
    policy_name: &str,
    policy: &str,
) -> Result<(), AwsError> {
    iam.put_role_policy()
        .role_name(role)
        .policy_name(policy_name)
        .policy_document(policy)
        .send()
        .await
        .map_err(aws_err(format!(
            "setting policy {policy_name} of IAM role {role}"
        )))?;
    Ok(())
}

/// Removes role `role`'s inline policy `policy_name`; a missing one (or role) is not an error.
pub async fn delete_policy(
    iam: &aws_sdk_iam::Client,
    role: &str,
    policy_name: &str,
) -> Result<bool, AwsError> {
    Ok(iam
        .delete_role_policy()
        .role_name(role)
        .policy_name(policy_name)
        .send()
        .await
        .map_err(aws_err(format!(
            "deleting policy {policy_name} of IAM role {role}"
        )))
        .absent_if("NoSuchEntity")?
        .is_some())
}

/// Removes the execution role's inline policy and the role; a missing role is not an error.
pub async fn delete_role(iam: &aws_sdk_iam::Client, name: &str) -> Result<bool, AwsError> {
    delete_role_with(iam, name, POLICY_NAME).await
}

/// Removes inline policy `policy_name` and role `name`; a missing role is not an error.
pub async fn delete_role_with(
    iam: &aws_sdk_iam::Client,
    name: &str,
    policy_name: &str,
) -> Result<bool, AwsError> {
    delete_policy(iam, name, policy_name).await?;
    Ok(iam
        .delete_role()
        .role_name(name)
        .send()
        .await
        .map_err(aws_err(format!("deleting IAM role {name}")))
        .absent_if("NoSuchEntity")?
        .is_some())
}

#[cfg(test)]
mod tests {
    use super::super::policy::render;
    use std::path::Path;

    #[test]
    fn the_shipped_policies_render_to_json_naming_only_our_resources() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/iam");
        let vars: Vec<(&'static str, String)> = [
            ("partition", "aws"),
            ("account", "123456789012"),
            ("region", "eu-west-1"),
            ("bucket", "models-bucket"),
            ("predict", "lambda-cnn-predict"),
            ("train", "lambda-cnn-train"),
        ]
        .map(|(k, v)| (k, v.to_owned()))
        .into();
        for file in ["trust-policy.json", "execution-policy.json"] {
            let text = render(&std::fs::read_to_string(dir.join(file)).unwrap(), &vars);
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(
                !text.contains("{account}") && !text.contains("\"*\""),
                "{file}: {v}"
            );
        }
        let policy = render(
            &std::fs::read_to_string(dir.join("execution-policy.json")).unwrap(),
            &vars,
        );
        assert!(policy.contains(
            "arn:aws:logs:eu-west-1:123456789012:log-group:/aws/lambda/lambda-cnn-predict:*"
        ));
        assert!(policy.contains("arn:aws:s3:::models-bucket/*"));
    }
}
