//! `deploy batch` against the local stand-ins (issue 27): the state machine runs on moto's
//! Step Functions interpreter (`execute_state_machine`), whose Lambda and S3 calls go to the
//! local data plane (moto's `MOTO_PORT`): each child invokes predict's released alias, run from
//! its image by digest under AWS's RIE in Docker; everything else is relayed to moto. The map is
//! written in the emulator's form (one key per STANDARD child); the AWS form is held to AWS's
//! published rules by the unit tests of `lambda_cnn_deploy::batch::definition`.

use lambda_cnn_test_kit as common;

use common::aws_emulator::AwsStack;
use common::call_recorder::Recorded;
use common::dataplane::{docker_or_skip, DataPlane};
use common::emulator::{free_port, workspace_binary};
use common::image_run::deploy_image;
use common::registry::{Registry, ECR_PASSWORD, ECR_USER};
use common::*;
use lambda_cnn::api::batch::MAX_OBJECT_BYTES;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Output;
use std::sync::Mutex;

const STATE_MACHINE: &str = "lambda-cnn-batch";

/// One stack at a time: each runs containers on this machine's 2 cores. (Under `cargo test`;
/// nextest's `data-plane` group in `.config/nextest.toml` does it across processes.)
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Stack {
    aws: AwsStack,
    _registry: Registry,
    plane: DataPlane,
    _dir: tempfile::TempDir,
    recorded: Recorded,
}

impl Stack {
    /// moto (running state machines), the registry, the data plane in front of both, and
    /// predict built, pushed and released (smoke-tested through the data plane).
    fn start() -> Option<(std::sync::MutexGuard<'static, ()>, Self)> {
        if !docker_or_skip("deploy batch's data plane") {
            return None;
        }
        let one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let port = free_port();
        let aws = AwsStack::start_for_batch(port);
        let registry = Registry::start(ECR_USER, ECR_PASSWORD);
        let mut extra = vec![
            "--port".to_owned(),
            port.to_string(),
            "--forward".to_owned(),
            aws.moto.endpoint(),
        ];
        if aws.localstack.is_some() {
            // The images and results are on LocalStack's S3: the interpreter's listing too.
            extra.extend([
                "--forward-service".to_owned(),
                format!("s3={}", aws.endpoint("s3", false)),
            ]);
        }
        let plane = DataPlane::start_with(
            &aws.endpoint("lambda", true),
            &aws.endpoint("s3", true),
            &registry.host(),
            ECR_USER,
            ECR_PASSWORD,
            &extra,
        );
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        deploy_image(
            "predict",
            &workspace_binary("predict"),
            &images.join("predict"),
            &dir.path().join("cache"),
            &[],
        );
        let recorded = Recorded::start(aws.env(true));
        let s = Stack {
            aws,
            _registry: registry,
            plane,
            _dir: dir,
            recorded,
        };
        let (images, host) = (images.to_str().unwrap().to_owned(), s._registry.host());
        let endpoint = s.plane.endpoint();
        for args in [
            vec![
                "push",
                "--function",
                "predict",
                "--images",
                &images,
                "--registry",
                &host,
            ],
            vec![
                "release",
                "--function",
                "predict",
                "--images",
                &images,
                "--registry",
                &host,
                "--invoke-endpoint",
                &endpoint,
            ],
        ] {
            s.ok(&args);
        }
        s.aws.create_bucket("images");
        s.aws.create_bucket("results");
        Some((one, s))
    }

    fn deploy(&self, args: &[&str]) -> Output {
        deploy_with_env(args, &self.recorded.env)
    }

    fn ok(&self, args: &[&str]) -> Output {
        let o = self.deploy(args);
        assert!(
            o.status.success(),
            "deploy {}: {}\n--- data plane:\n{}",
            args.join(" "),
            stderr(&o),
            self.plane.log()
        );
        o
    }

    /// The models bucket (the release made it): where results go by default.
    fn models_bucket(&self) -> String {
        format!("lambda-cnn-models-{}-us-east-1", self.aws.account())
    }

    /// Every result line under `prefix` of `bucket`, by key (a key written twice
    /// shows as two lines).
    fn results(&self, bucket: &str, prefix: &str) -> BTreeMap<String, Vec<Value>> {
        let mut by_key: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for object in self.aws.list(bucket, prefix) {
            let bytes = self.aws.get(bucket, &object).unwrap();
            for line in String::from_utf8_lossy(&bytes).lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                by_key
                    .entry(v["key"].as_str().unwrap().to_owned())
                    .or_default()
                    .push(v);
            }
        }
        by_key
    }

    /// The execution environments the data plane started for predict.
    fn predict_environments(&self) -> usize {
        self.plane
            .log()
            .lines()
            .filter(|l| l.contains("cold start of lambda-cnn-predict:"))
            .count()
    }
}

fn summary(o: &Output) -> Value {
    let out = stdout(o);
    serde_json::from_str(out.trim().lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Puts the first `n` real test digits under `digits/` of the images bucket; their labels.
fn put_digits(aws: &AwsStack, n: usize) -> BTreeMap<String, u8> {
    let mut objects = Vec::new();
    let mut labels = BTreeMap::new();
    for i in 0..n {
        let (png, label) = test_digit_png(i);
        let key = format!("digits/{i:04}.png");
        labels.insert(key.clone(), label);
        objects.push((key, png));
    }
    aws.put("images", &objects);
    labels
}

#[test]
fn every_stored_digit_is_scored_once_bad_objects_fail_alone_and_concurrency_holds() {
    let Some((_one, s)) = Stack::start() else {
        return;
    };
    let labels = put_digits(&s.aws, 200);
    s.aws.put(
        "images",
        &[
            ("digits/notes.txt".into(), b"not an image".to_vec()),
            // 65535² pixels declared in a few hundred bytes: over the pixel budget.
            ("digits/lying.jpg".into(), jpeg_declaring(65535)),
            // One byte over the size cap: refused from its listed size, never read.
            (
                "digits/huge.png".into(),
                vec![0u8; MAX_OBJECT_BYTES as usize + 1],
            ),
        ],
    );
    let before = s.predict_environments();
    let o = s.ok(&[
        "batch",
        "--input",
        "s3://images/digits/",
        "--form",
        "emulator",
        "--concurrency",
        "2",
        "--tolerated-failure",
        "5",
        "--json",
    ]);
    let sum = summary(&o);
    assert_eq!(sum["run"]["status"], "SUCCEEDED", "{sum}");
    assert_eq!(sum["run"]["items"]["total"], 203, "{sum}");

    // Every key has exactly one result line.
    // Into the default output, the models bucket, which the deployer policy lets it read.
    let results = s.results(&s.models_bucket(), "batch-results/");
    assert_eq!(
        results.len(),
        203,
        "{:?}",
        results.keys().collect::<Vec<_>>()
    );
    assert!(results.values().all(|lines| lines.len() == 1));
    let right = labels
        .iter()
        .filter(|(k, label)| results[*k][0]["digit"].as_u64() == Some(u64::from(**label)))
        .count();
    assert!(right as f64 / 200.0 >= 0.98, "{right}/200 right");

    // The three broken objects failed alone, each with its reason.
    let why = |k: &str| {
        results[k][0]["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        why("digits/notes.txt").contains("image"),
        "{}",
        why("digits/notes.txt")
    );
    assert!(
        why("digits/lying.jpg").contains("65535×65535"),
        "{}",
        why("digits/lying.jpg")
    );
    assert!(
        why("digits/huge.png").contains("bytes"),
        "{}",
        why("digits/huge.png")
    );
    assert_eq!(sum["results"]["failed"], 3, "{sum}");
    assert_eq!(sum["results"]["succeeded"], 200, "{sum}");
    let counted: u64 = sum["results"]["labels"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(counted, 200, "{sum}");

    // At concurrency 2 the data plane never needed more than 2 environments for predict (it
    // makes one only when all are busy; the release's smoke test made the first).
    let environments = s.predict_environments();
    assert!(
        environments <= 2,
        "{environments} environments (before the run: {before})"
    );
    // The bill: one invocation a child, priced, and the engine's transitions.
    assert!(sum["bill"]["invocations"].as_u64().unwrap() >= 203, "{sum}");
    assert!(sum["bill"]["total_usd"].as_f64().unwrap() > 0.0, "{sum}");
    // Every call deploy made is one the deployer policy allows.
    s.recorded.assert_within_the_deployer_policy(&[
        "states:CreateStateMachine",
        "states:StartExecution",
        "states:DescribeMapRun",
        "iam:PassRole",
    ]);
}

#[test]
fn a_second_identical_run_rewrites_its_own_results_with_the_same_state_machine() {
    let Some((_one, s)) = Stack::start() else {
        return;
    };
    let labels = put_digits(&s.aws, 12);
    let args = [
        "batch",
        "--input",
        "s3://images/digits",
        "--output",
        "s3://results/again",
        "--form",
        "emulator",
    ];
    // Started without waiting, then followed by its ARN.
    let o = s.ok(&[&args[..], &["--no-wait"]].concat());
    let arn = stdout(&o).trim().to_owned();
    assert!(arn.starts_with("arn:aws:states:"), "{arn}");
    let o = s.ok(&["batch", "status", &arn, "--json"]);
    let first = summary(&o);
    assert_eq!(first["results"]["succeeded"], 12, "{first}");
    let objects = s.aws.list("results", "again/");
    let before = s.results("results", "again/");

    let o = s.ok(&[&args[..], &["--json"]].concat());
    let second = summary(&o);
    assert!(stderr(&o).contains("up to date"), "{}", stderr(&o));
    assert_eq!(second["results"]["succeeded"], 12, "{second}");
    // The same objects, overwritten rather than added to.
    assert_eq!(s.aws.list("results", "again/"), objects);
    assert_eq!(s.results("results", "again/"), before);
    assert_eq!(before.len(), labels.len());

    // One state machine, whose role may do the three things and run its own map, no more.
    let listed = state_machines(&s.aws);
    let machines = listed["stateMachines"].as_array().unwrap();
    assert_eq!(machines.len(), 1, "{listed}");
    assert_eq!(machines[0]["name"], STATE_MACHINE);
    let policy = role_policy(&s.aws, STATE_MACHINE, "lambda-cnn-batch");
    let mut grants: Vec<(String, String)> = Vec::new();
    for st in policy["Statement"].as_array().unwrap() {
        let actions = match &st["Action"] {
            Value::String(a) => vec![a.clone()],
            v => v
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect(),
        };
        for a in actions {
            grants.push((a, st["Resource"].as_str().unwrap().to_owned()));
        }
    }
    let acct = s.aws.account();
    assert_eq!(
        grants,
        [
            (
                "lambda:InvokeFunction",
                format!("arn:aws:lambda:us-east-1:{acct}:function:lambda-cnn-predict:live")
            ),
            ("s3:ListBucket", "arn:aws:s3:::images".into()),
            (
                "states:StartExecution",
                format!("arn:aws:states:us-east-1:{acct}:stateMachine:{STATE_MACHINE}")
            ),
            (
                "states:DescribeExecution",
                format!("arn:aws:states:us-east-1:{acct}:execution:{STATE_MACHINE}:*")
            ),
            (
                "states:StopExecution",
                format!("arn:aws:states:us-east-1:{acct}:execution:{STATE_MACHINE}:*")
            ),
        ]
        .map(|(a, r)| (a.to_owned(), r))
    );
    let items = role_policy(&s.aws, "lambda-cnn-execution", "lambda-cnn-batch-items");
    assert_eq!(
        items["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .map(|st| (
                st["Action"].as_str().unwrap(),
                st["Resource"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        [
            ("s3:GetObject", "arn:aws:s3:::images/digits/*"),
            ("s3:PutObject", "arn:aws:s3:::results/again/*"),
        ]
    );

    // destroy takes the state machine, its role and predict's grants away before the
    // execution role (which could not be deleted while it held them).
    let gone = s.ok(&["destroy", "--yes"]);
    let said = stderr(&gone) + &stdout(&gone);
    for what in [
        "state machine lambda-cnn-batch",
        "IAM role lambda-cnn-batch",
        "lambda-cnn-batch-items",
    ] {
        assert!(said.contains(what), "{what}: {said}");
    }
    let listed = state_machines(&s.aws);
    assert_eq!(listed["stateMachines"], serde_json::json!([]), "{listed}");
}

/// ListStateMachines' answer, from the emulator.
fn state_machines(aws: &AwsStack) -> Value {
    let (status, listed) = aws.call(
        "states",
        true,
        "POST",
        "/",
        Some("AWSStepFunctions.ListStateMachines"),
        Some(serde_json::json!({})),
    );
    assert_eq!(status, 200, "{listed}");
    listed
}

/// Role `role`'s inline policy `name`, from the emulator's IAM.
fn role_policy(aws: &AwsStack, role: &str, name: &str) -> Value {
    let (status, body) = aws.call(
        "iam",
        true,
        "GET",
        &format!("/?Action=GetRolePolicy&RoleName={role}&PolicyName={name}&Version=2010-05-08"),
        None,
        None,
    );
    assert_eq!(status, 200, "{body}");
    let xml = body.as_str().unwrap_or_default();
    let doc = xml
        .split("<PolicyDocument>")
        .nth(1)
        .and_then(|r| r.split("</PolicyDocument>").next())
        .unwrap_or_else(|| panic!("{xml}"));
    let decoded = iam_simulator::url_decode(&doc.replace("&quot;", "\"").replace("&amp;", "&"));
    serde_json::from_str(&decoded).unwrap_or_else(|e| panic!("{e}: {decoded}"))
}

#[test]
fn a_batch_without_a_release_or_with_overlapping_prefixes_is_refused_before_anything_is_made() {
    let aws = AwsStack::start(true);
    let env = aws.env(true);
    let o = deploy_with_env(
        &[
            "batch",
            "--input",
            "s3://images/digits/",
            "--output",
            "s3://images/digits/out/",
        ],
        &env,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("overlap"), "{}", stderr(&o));
    let o = deploy_with_env(&["batch", "--input", "s3://images/digits/"], &env);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("deploy release"), "{}", stderr(&o));
    let o = deploy_with_env(&["batch", "--input", "images/digits"], &env);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("s3://bucket/prefix/"), "{}", stderr(&o));
    // Nothing was made.
    let listed = state_machines(&aws);
    assert_eq!(listed["stateMachines"], serde_json::json!([]), "{listed}");
}
