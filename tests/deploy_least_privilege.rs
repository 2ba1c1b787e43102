//! The deployer's least-privilege policy: generated from the deploy config by `deploy policy`,
//! scoped to the config's names, passing the execution role to Lambda only; accepted by
//! `deploy doctor`, which simulates each statement on the ARNs it names with the context its
//! conditions need (through a stand-in of IAM's policy simulator that evaluates policies as
//! AWS documents, in front of the AWS emulator); refused, naming the action and the resource,
//! when one action is missing; and passed by the policy auditors (cloudsplaining, parliament).

use common::iam_simulator::{evaluate, wildcard, Decision, IamSimulator};
use common::moto::Moto;
use common::sign_in::{assume_role, create_role};
use common::*;
use lambda_cnn_test_kit as common;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::Output;

const ACCOUNT: &str = "123456789012";

fn generated_policy(config: Option<&std::path::Path>) -> Value {
    let mut args = vec!["policy", "--account", ACCOUNT, "--region", "us-east-1"];
    let path;
    if let Some(c) = config {
        path = c.display().to_string();
        args.extend(["--config", &path]);
    }
    let o = deploy_with_clean_aws_env(&args, &[("AWS_EC2_METADATA_DISABLED", "true".into())]);
    assert!(o.status.success(), "deploy policy: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)))
}

/// `deploy doctor` as role `deployer` holding `policies`, IAM's simulator standing in.
fn doctor_holding(policies: Vec<Value>) -> (Output, IamSimulator) {
    let moto = Moto::start();
    let role = create_role(&moto.endpoint(), "deployer", "/teams/");
    let keys = assume_role(&moto.endpoint(), &role, "alice");
    let simulator = IamSimulator::start(&moto.endpoint(), policies);
    let o = deploy_with_clean_aws_env(
        &["doctor"],
        &[
            ("AWS_ENDPOINT_URL", moto.endpoint()),
            ("AWS_ENDPOINT_URL_IAM", simulator.endpoint()),
            ("AWS_ACCESS_KEY_ID", keys.access_key_id),
            ("AWS_SECRET_ACCESS_KEY", keys.secret_access_key),
            ("AWS_SESSION_TOKEN", keys.session_token),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ],
    );
    (o, simulator)
}

fn permissions_row(o: &Output) -> String {
    stdout(o)
        .lines()
        .skip_while(|l| !l.contains("permissions"))
        .take(2)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn deploy_policy_names_the_configs_resources_and_passes_the_role_to_lambda_only() {
    let dir = tempfile::tempdir().unwrap();
    let infra = dir.path().join("infra");
    std::fs::create_dir_all(infra.join("iam")).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in [
        "deployer-policy.json",
        "trust-policy.json",
        "execution-policy.json",
    ] {
        std::fs::copy(root.join("infra/iam").join(f), infra.join("iam").join(f)).unwrap();
    }
    let config = std::fs::read_to_string(root.join("infra/deploy.toml"))
        .unwrap()
        .replace("\"lambda-cnn-predict\"", "\"staging-predict\"")
        .replace("\"lambda-cnn-execution\"", "\"staging-exec\"");
    std::fs::write(infra.join("deploy.toml"), config).unwrap();
    let policy = generated_policy(Some(&infra.join("deploy.toml")));
    let text = policy.to_string();
    assert!(text.contains("function:staging-predict:*"), "{text}");
    assert!(!text.contains("lambda-cnn-predict"), "{text}");
    let pass: Vec<&Value> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["Action"].to_string().contains("iam:PassRole"))
        .collect();
    // Two roles are passed, each to its one service: the functions' to Lambda, the batch state
    // machine's to Step Functions.
    let passed: Vec<(String, String)> = pass
        .iter()
        .map(|s| {
            (
                s["Resource"].as_str().unwrap().to_owned(),
                s["Condition"]["StringEquals"]["iam:PassedToService"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        passed,
        [
            (
                format!("arn:aws:iam::{ACCOUNT}:role/staging-exec"),
                "lambda.amazonaws.com".to_owned()
            ),
            (
                format!("arn:aws:iam::{ACCOUNT}:role/lambda-cnn-batch"),
                "states.amazonaws.com".to_owned()
            ),
        ]
    );
    // The policy, evaluated as AWS would: the execution role may be passed to Lambda, not to
    // EC2, and no other role may be passed at all.
    let exec = format!("arn:aws:iam::{ACCOUNT}:role/staging-exec");
    let to = |service: &str| {
        HashMap::from([("iam:PassedToService".to_owned(), vec![service.to_owned()])])
    };
    let p = [policy.clone()];
    assert_eq!(
        evaluate(&p, "iam:PassRole", &exec, &to("lambda.amazonaws.com")),
        Decision::Allowed
    );
    assert_eq!(
        evaluate(&p, "iam:PassRole", &exec, &to("ec2.amazonaws.com")),
        Decision::ImplicitDeny
    );
    assert_eq!(
        evaluate(&p, "iam:PassRole", &exec, &to("states.amazonaws.com")),
        Decision::ImplicitDeny
    );
    let batch = format!("arn:aws:iam::{ACCOUNT}:role/lambda-cnn-batch");
    assert_eq!(
        evaluate(&p, "iam:PassRole", &batch, &to("lambda.amazonaws.com")),
        Decision::ImplicitDeny
    );
    assert_eq!(
        evaluate(
            &p,
            "iam:PassRole",
            &format!("arn:aws:iam::{ACCOUNT}:role/admin"),
            &to("lambda.amazonaws.com")
        ),
        Decision::ImplicitDeny
    );
    assert_eq!(
        evaluate(
            &p,
            "lambda:DeleteFunction",
            &format!("arn:aws:lambda:us-east-1:{ACCOUNT}:function:payroll"),
            &HashMap::new()
        ),
        Decision::ImplicitDeny,
        "another function of the account"
    );
    assert_eq!(
        evaluate(
            &p,
            "s3:DeleteBucket",
            "arn:aws:s3:::someone-elses-data",
            &HashMap::new()
        ),
        Decision::ImplicitDeny
    );
}

#[test]
fn doctor_accepts_a_deployer_holding_the_generated_policy() {
    let policy = generated_policy(None);
    let (o, simulator) = doctor_holding(vec![policy]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let row = permissions_row(&o);
    assert!(row.starts_with("OK"), "{row}");
    // Simulated as the role with its path, on the deploy's own ARNs, with the PassRole context.
    assert!(
        row.contains(&format!("arn:aws:iam::{ACCOUNT}:role/teams/deployer")),
        "{row}"
    );
    let sims = simulator.simulations.lock().unwrap().clone();
    assert!(sims.len() > 10, "{sims:?}");
    assert!(sims.iter().any(|s| s.resources
        == [format!(
            "arn:aws:lambda:us-east-1:{ACCOUNT}:function:lambda-cnn-predict:example"
        )]));
    let pass = sims
        .iter()
        .find(|s| s.actions == ["iam:PassRole"])
        .expect("PassRole simulated");
    assert_eq!(
        pass.context.get("iam:PassedToService"),
        Some(&vec!["lambda.amazonaws.com".to_owned()])
    );
}

#[test]
fn doctor_names_each_action_a_hardened_policy_lacks_and_its_resource() {
    let mut policy = generated_policy(None);
    for s in policy["Statement"].as_array_mut().unwrap() {
        if let Some(actions) = s["Action"].as_array_mut() {
            actions.retain(|a| a != "lambda:UpdateAlias");
        }
    }
    // And a Deny someone added on the bucket's objects.
    policy["Statement"].as_array_mut().unwrap().push(json!({
        "Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"
    }));
    let (o, _) = doctor_holding(vec![policy]);
    assert!(
        !o.status.success(),
        "doctor passed a policy lacking actions"
    );
    let row = permissions_row(&o);
    assert!(row.starts_with("FAIL"), "{row}");
    assert!(
        row.contains(&format!(
            "lambda:UpdateAlias on arn:aws:lambda:us-east-1:{ACCOUNT}:function:lambda-cnn-predict"
        )),
        "{row}"
    );
    assert!(
        row.contains(&format!(
            "s3:DeleteObject on arn:aws:s3:::lambda-cnn-models-{ACCOUNT}-us-east-1/example"
        )),
        "{row}"
    );
    assert!(
        !row.contains("lambda:GetAlias"),
        "only what is missing: {row}"
    );
}

#[test]
fn the_simulator_follows_awss_evaluation_rules() {
    let any = HashMap::new();
    assert!(wildcard("arn:aws:s3:::b/*", "arn:aws:s3:::b/k/x"));
    assert!(wildcard("lambda:get*", "lambda:getalias"));
    assert!(wildcard("a?c", "abc") && !wildcard("a?c", "ac"));
    assert!(!wildcard("arn:aws:s3:::b", "arn:aws:s3:::b/k"));
    let p = [json!({"Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:DeleteBucket", "Resource": "arn:aws:s3:::keep"},
        {"Effect": "Allow", "NotAction": "iam:*", "Resource": "arn:aws:sqs:*"},
        {"Effect": "Allow", "Action": "ec2:RunInstances", "Resource": "*",
         "Condition": {"StringNotEqualsIfExists": {"ec2:InstanceType": "p5.48xlarge"}}}
    ]})];
    assert_eq!(
        evaluate(&p, "S3:GetObject", "arn:aws:s3:::x/y", &any),
        Decision::Allowed,
        "actions ignore case"
    );
    assert_eq!(
        evaluate(&p, "s3:DeleteBucket", "arn:aws:s3:::keep", &any),
        Decision::ExplicitDeny
    );
    assert_eq!(
        evaluate(&p, "sqs:SendMessage", "arn:aws:sqs:r:1:q", &any),
        Decision::Allowed
    );
    assert_eq!(
        evaluate(&p, "iam:PassRole", "arn:aws:sqs:r:1:q", &any),
        Decision::ImplicitDeny
    );
    assert_eq!(
        evaluate(&p, "ec2:RunInstances", "*", &any),
        Decision::Allowed,
        "IfExists: absent passes"
    );
    let big = HashMap::from([(
        "ec2:InstanceType".to_owned(),
        vec!["p5.48xlarge".to_owned()],
    )]);
    assert_eq!(
        evaluate(&p, "ec2:RunInstances", "*", &big),
        Decision::ImplicitDeny
    );
}

/// A tool of the project's venv (`make test` installs them from PyPI).
fn auditor(name: &str) -> std::path::PathBuf {
    common::emulator::venv_tool(&name.to_ascii_uppercase(), name, name)
}

#[test]
fn the_generated_policy_passes_the_policy_auditors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deployer.json");
    std::fs::write(&file, generated_policy(None).to_string()).unwrap();
    // cloudsplaining: no privilege escalation, resource exposure, data exfiltration or
    // infrastructure modification on unscoped resources. ecr:GetAuthorizationToken is excluded
    // by name: ECR defines no resource for it (a registry login must be allowed on "*"), and
    // the token it returns only reaches the repositories the other statements allow.
    let exclusions = dir.path().join("exclusions.yml");
    std::fs::write(
        &exclusions,
        "exclude-actions:\n  - \"ecr:GetAuthorizationToken\"\n",
    )
    .unwrap();
    let o = std::process::Command::new(auditor("cloudsplaining"))
        .args(["scan-policy-file", "--input-file"])
        .arg(&file)
        .arg("--exclusions-file")
        .arg(&exclusions)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let report = format!("{}{}", stdout(&o), stderr(&o));
    assert!(o.status.success(), "{report}");
    assert!(report.contains("There were no results found"), "{report}");
    // parliament: the policy is well formed, every action exists and each one's resources are
    // of a type that action takes (RESOURCE_MISMATCH would mean a statement that never applies).
    let o = std::process::Command::new(auditor("parliament"))
        .arg("--string")
        .arg(std::fs::read_to_string(&file).unwrap())
        .args(["--json"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let findings = stdout(&o);
    assert!(
        o.status.success() && findings.trim().is_empty(),
        "parliament: {findings}{}",
        stderr(&o)
    );
}
