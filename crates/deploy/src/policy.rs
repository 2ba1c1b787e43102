//! The IAM policies of `infra/iam/`, rendered for one deploy: the names of `infra/deploy.toml`,
//! the account, region and partition filled in. The deployer's policy is scoped to those names
//! (functions, repository, execution role, bucket, log groups, the region's APIs), and passes
//! the execution role to Lambda only (`iam:PassedToService`); `deploy policy` prints it, and
//! `deploy doctor` simulates each of its statements on the ARNs it names, with the context its
//! conditions ask for, so that a policy hardened further is still checked truthfully.

#![warn(missing_docs)]

use super::config::DeployConfig;
use super::image::Function;

/// The values a policy template's `{name}` placeholders take.
pub fn vars(
    config: &DeployConfig,
    partition: &str,
    account: &str,
    region: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("partition", partition.to_owned()),
        ("account", account.to_owned()),
        ("region", region.to_owned()),
        ("bucket", config.bucket_name(account, region)),
        ("predict", config.function(Function::Predict).name.clone()),
        ("train", config.function(Function::Train).name.clone()),
        ("repository", config.repository.name.clone()),
        ("role", config.role.name.clone()),
        ("batch_state_machine", config.batch.state_machine.clone()),
        ("batch_role", config.batch.role.clone()),
    ]
}

/// `template` with every `{name}` of [`vars`] filled in.
pub fn render(template: &str, vars: &[(&'static str, String)]) -> String {
    vars.iter().fold(template.to_owned(), |t, (k, v)| {
        t.replace(&format!("{{{k}}}"), v)
    })
}

/// One Allow statement of a rendered policy, as doctor simulates it.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The statement's id.
    pub sid: String,
    /// Its actions.
    pub actions: Vec<String>,
    /// Its resources.
    pub resources: Vec<String>,
    /// The request context its conditions ask for, key → values (what the deploy's calls
    /// carry: e.g. `iam:PassedToService` = `lambda.amazonaws.com`).
    pub context: Vec<(String, Vec<String>)>,
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => vec![],
    }
}

/// The Allow statements of a policy document.
pub fn statements(policy: &str) -> Result<Vec<Statement>, String> {
    let v: serde_json::Value =
        serde_json::from_str(policy).map_err(|e| format!("the policy is not JSON: {e}"))?;
    let list = match &v["Statement"] {
        serde_json::Value::Array(a) => a.clone(),
        o @ serde_json::Value::Object(_) => vec![o.clone()],
        _ => return Err("the policy has no Statement".into()),
    };
    Ok(list
        .iter()
        .filter(|s| s["Effect"] == "Allow")
        .map(|s| Statement {
            sid: s["Sid"].as_str().unwrap_or_default().to_owned(),
            actions: strings(&s["Action"]),
            resources: strings(&s["Resource"]),
            context: s["Condition"]
                .as_object()
                .into_iter()
                .flat_map(|ops| ops.values())
                .filter_map(|keys| keys.as_object())
                .flat_map(|keys| keys.iter().map(|(k, v)| (k.clone(), strings(v))))
                .collect(),
        })
        .collect())
}

/// A concrete ARN a resource pattern matches (each `*` taken as `example`), to simulate the
/// statement on; `*` stays `*`.
pub fn example_arn(resource: &str) -> String {
    if resource == "*" {
        resource.to_owned()
    } else {
        resource.replace('*', "example")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn deployer(config: &DeployConfig) -> String {
        let template = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/iam/deployer-policy.json"),
        )
        .unwrap();
        render(&template, &vars(config, "aws", "123456789012", "eu-west-1"))
    }

    fn shipped() -> DeployConfig {
        DeployConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/deploy.toml"))
            .unwrap()
    }

    #[test]
    fn the_deployer_policy_is_scoped_to_the_configs_names() {
        let text = deployer(&shipped());
        serde_json::from_str::<serde_json::Value>(&text).unwrap();
        assert!(
            !text.contains("{account}") && !text.contains("{predict}"),
            "{text}"
        );
        let st = statements(&text).unwrap();
        // Only what AWS cannot scope (IAM's service authorization reference gives these actions
        // no resource type) is allowed on every resource.
        for s in &st {
            if s.resources.iter().any(|r| r == "*") {
                assert_eq!(
                    s.actions,
                    [
                        "sts:GetCallerIdentity",
                        "ecr:GetAuthorizationToken",
                        "lambda:GetAccountSettings",
                        "logs:DescribeLogGroups"
                    ],
                    "{s:?}"
                );
            }
        }
        let pass = st
            .iter()
            .find(|s| s.actions.contains(&"iam:PassRole".to_owned()))
            .unwrap();
        assert_eq!(pass.actions, ["iam:PassRole"]);
        assert_eq!(
            pass.resources,
            ["arn:aws:iam::123456789012:role/lambda-cnn-execution"]
        );
        assert_eq!(
            pass.context,
            [(
                "iam:PassedToService".to_owned(),
                vec!["lambda.amazonaws.com".to_owned()]
            )]
        );
        assert!(
            text.contains("arn:aws:lambda:eu-west-1:123456789012:function:lambda-cnn-predict:*")
        );
        assert!(text.contains("arn:aws:s3:::lambda-cnn-models-123456789012-eu-west-1/*"));
        assert!(text.contains("arn:aws:ecr:eu-west-1:123456789012:repository/lambda-cnn\""));
    }

    #[test]
    fn renaming_a_resource_in_the_config_renames_it_in_the_policy() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/deploy.toml"),
        )
        .unwrap()
        .replace(
            "name = \"lambda-cnn-predict\"",
            "name = \"staging-predict\"",
        )
        .replace("name = \"lambda-cnn-execution\"", "name = \"staging-exec\"");
        let policy = deployer(&DeployConfig::parse(&text).unwrap());
        assert!(policy.contains("function:staging-predict:*"));
        assert!(policy.contains("role/staging-exec\""));
        assert!(!policy.contains("lambda-cnn-predict") && !policy.contains("lambda-cnn-execution"));
    }

    #[test]
    fn a_resource_pattern_is_simulated_on_an_arn_it_matches() {
        assert_eq!(
            example_arn("arn:aws:lambda:r:1:function:f:*"),
            "arn:aws:lambda:r:1:function:f:example"
        );
        assert_eq!(example_arn("*"), "*");
    }
}
