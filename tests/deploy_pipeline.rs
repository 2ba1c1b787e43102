//! The deploy pipeline end to end against real stand-ins, each started here on free 127.0.0.1
//! ports: the AWS emulator (moto; or LocalStack with `AWS_EMULATOR=localstack`, with moto for
//! what LocalStack lacks — see common/aws_emulator.rs), a real OCI registry with ECR-style
//! auth, and the Lambda Runtime API emulator running the functions from their images (under
//! bubblewrap), which serves the smoke tests' invocations.

use base64::Engine;
use common::aws_emulator::AwsStack;
use common::aws_states::AwsStates;
use common::call_recorder::Recorded;
use common::emulator::{workspace_binary, Emulator};
use common::faulty_proxy::FaultyProxy;
use common::image_run::{bwrap_command, deploy_image, image_config, umoci_unpack};
use common::lambda_view::LambdaView;
use common::registry::{Registry, ECR_PASSWORD, ECR_USER};
use common::strict_lambda::{InvokeLayer, NewAccount, StrictLambda};
use common::*;
use lambda_cnn_test_kit as common;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Output;

const PREDICT: &str = "lambda-cnn-predict";
/// The architecture of the images built here, as Lambda names it.
const HOST_ARCH: &str = if cfg!(target_arch = "aarch64") {
    "arm64"
} else {
    "x86_64"
};
const TRAIN: &str = "lambda-cnn-train";
fn json_lines(o: &Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed:\n{}\n{}",
        stdout(o),
        stderr(o)
    );
}

/// Builds the image of `function` into `images/<function>`; returns its manifest digest.
fn build_image(images: &Path, cache: &Path, function: &str, extra: &[&str]) -> String {
    build_image_of(images, cache, function, &workspace_binary(function), extra)
}

/// [`build_image`] from the given function binary.
fn build_image_of(
    images: &Path,
    cache: &Path,
    function: &str,
    binary: &Path,
    extra: &[&str],
) -> String {
    let out = images.join(function);
    let v = deploy_image(function, binary, &out, cache, extra);
    v["manifest_digest"].as_str().unwrap().to_owned()
}

/// The stand-ins, both images built, and both functions running from them. Every AWS call the
/// deploy makes crosses a recorder ([`Stack::assert_calls_within_the_deployer_policy`]).
struct Stack {
    aws: AwsStack,
    registry: Registry,
    emu: Emulator,
    dir: tempfile::TempDir,
    digests: [String; 2],
    /// The emulators' environment with each endpoint behind a recorder, and the deployer
    /// policy for the emulator's account.
    recorded: Recorded,
}

impl Stack {
    fn start() -> Self {
        Self::start_from(workspace_binary)
    }

    /// The stack with images of the function binaries `binary(function)` gives.
    fn start_from(binary: impl Fn(&str) -> PathBuf) -> Self {
        let aws = AwsStack::start(true);
        let registry = Registry::start(ECR_USER, ECR_PASSWORD);
        let mut emu = Emulator::start_for(&[PREDICT, TRAIN]);
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        let cache = dir.path().join("cache");
        let digests =
            ["predict", "train"].map(|f| build_image_of(&images, &cache, f, &binary(f), &[]));
        for (f, name) in [("predict", PREDICT), ("train", TRAIN)] {
            run_image(dir.path(), &mut emu, f, name);
        }
        let recorded = Recorded::start(aws.env(true));
        Stack {
            aws,
            registry,
            emu,
            dir,
            digests,
            recorded,
        }
    }

    /// Every AWS call the deploy made so far is one the deployer policy allows.
    fn assert_calls_within_the_deployer_policy(&self) {
        self.recorded
            .assert_within_the_deployer_policy(&["lambda:PublishVersion", "iam:PassRole"]);
    }

    fn images(&self) -> PathBuf {
        self.dir.path().join("images")
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        self.recorded.env.clone()
    }

    fn deploy(&self, args: &[&str]) -> Output {
        self.deploy_with(args, self.env())
    }

    /// [`Stack::deploy`] with another environment (e.g. Lambda behind a strict layer).
    fn deploy_with(&self, args: &[&str], env: Vec<(&'static str, String)>) -> Output {
        let images = self.images();
        let registry = self.registry.host();
        let endpoint = self.emu.invoke_endpoint();
        let mut all: Vec<&str> = args.to_vec();
        let sub = args[0];
        if ["push", "release", "all"].contains(&sub) {
            all.extend([
                "--images",
                images.to_str().unwrap(),
                "--registry",
                &registry,
            ]);
        }
        // An environment with its own invoke endpoint (a strict layer) keeps it.
        if ["release", "rollback"].contains(&sub)
            && !env.iter().any(|(k, _)| *k == "DEPLOY_INVOKE_ENDPOINT")
        {
            all.extend(["--invoke-endpoint", &endpoint]);
        }
        deploy_with_env(&all, &env)
    }

    /// Lambda behind the strict layer of a new account (quota 10, 3008 MB cap), the images run
    /// behind its invoke layer (an invocation of a function of another architecture than
    /// this machine's images fails as on Lambda), and the environment that reaches both.
    fn as_new_account(&self) -> (StrictLambda, InvokeLayer, Vec<(&'static str, String)>) {
        self.as_new_account_running(HOST_ARCH)
    }

    /// [`Stack::as_new_account`], the images being of architecture `image_arch`.
    fn as_new_account_running(
        &self,
        image_arch: &'static str,
    ) -> (StrictLambda, InvokeLayer, Vec<(&'static str, String)>) {
        let strict = StrictLambda::start(
            &self.aws.endpoint("lambda", true),
            NewAccount {
                concurrency_quota: 10,
                max_memory_mb: 3008,
            },
        );
        let invoke = strict.invoke_layer(&self.emu.invoke_endpoint(), image_arch);
        let mut env = self.env();
        env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL_LAMBDA");
        env.push(("AWS_ENDPOINT_URL_LAMBDA", strict.endpoint()));
        env.push(("DEPLOY_INVOKE_ENDPOINT", invoke.endpoint()));
        (strict, invoke, env)
    }

    /// Nothing was pushed: ECR has no repository.
    fn assert_no_repository(&self) {
        let (_, repos) = self.aws.call(
            "ecr",
            true,
            "POST",
            "/",
            Some("AmazonEC2ContainerRegistry_V20150921.DescribeRepositories"),
            Some(json!({})),
        );
        assert_eq!(
            repos["repositories"].as_array().map(Vec::len),
            Some(0),
            "{repos}"
        );
    }

    fn live_version(&self, function: &str) -> Value {
        self.aws.lambda().alias(function, "live")
    }
}

/// Runs the image in `dir`/images/`f` as function `name` on `emu` (what Lambda would run).
fn run_image(dir: &Path, emu: &mut Emulator, f: &str, name: &str) {
    let layout = dir.join("images").join(f);
    let bundle = dir.join(format!("bundle-{f}-{}", rand_suffix()));
    let rootfs = umoci_unpack(&layout, &bundle);
    emu.start_function_command(name, bwrap_command(&rootfs, &layout, &[]));
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// The digest the registry serves for `tag` (its `Docker-Content-Digest`).
fn registry_digest(registry: &Registry, tag: &str) -> String {
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{ECR_USER}:{ECR_PASSWORD}"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent
        .head(&format!(
            "http://{}/v2/lambda-cnn/manifests/{tag}",
            registry.host()
        ))
        .header("Authorization", format!("Basic {auth}"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "HEAD manifest {tag}");
    r.headers()
        .get("Docker-Content-Digest")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn the_pipeline_deploys_by_the_real_digest_and_a_second_run_sends_nothing() {
    let s = Stack::start();
    let push = s.deploy(&["push", "--json"]);
    assert_ok(&push, "deploy push");
    let pushed = json_lines(&push);
    assert_eq!(pushed.len(), 2, "{}", stdout(&push));
    assert_eq!(pushed[0]["digest"], s.digests[0].as_str());
    assert!(
        pushed[0]["bytes_pushed"].as_u64().unwrap() > 5_000_000,
        "{}",
        pushed[0]
    );

    let release = s.deploy(&["release", "--json"]);
    assert_ok(&release, "deploy release");
    let released = json_lines(&release);
    assert_eq!(released[0]["version"], "1", "{}", stdout(&release));
    assert!(released[0]["smoke"]
        .as_str()
        .unwrap()
        .contains("came back as 7"));
    assert!(released[1]["smoke"]
        .as_str()
        .unwrap()
        .contains("Test accuracy"));

    // Lambda was given the image by the digest the registry really serves (moto's ECR would
    // report another one).
    let f = s.aws.lambda().existing(PREDICT);
    let uri = f["Code"]["ImageUri"].as_str().unwrap();
    assert!(uri.ends_with(&format!("@{}", s.digests[0])), "{uri}");
    let short = &s.digests[0]["sha256:".len().."sha256:".len() + 12];
    assert_eq!(
        registry_digest(&s.registry, &format!("predict-{short}")),
        s.digests[0]
    );
    assert_eq!(s.live_version(PREDICT)["FunctionVersion"], "1");
    assert_eq!(s.live_version(TRAIN)["FunctionVersion"], "1");
    // Configuration from infra/deploy.toml; train writes to the models bucket.
    let conf = &f["Configuration"];
    assert_eq!(conf["MemorySize"], 1024);
    assert_eq!(conf["PackageType"], "Image");
    let train = s.aws.lambda().existing(TRAIN);
    // The bucket is named after the account STS reports (moto's or LocalStack's) and exists,
    // in whichever emulator serves S3.
    let bucket = train["Configuration"]["Environment"]["Variables"]["MODEL_BUCKET"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        bucket.starts_with("lambda-cnn-models-") && bucket.ends_with("-us-east-1"),
        "{bucket}"
    );
    let (status, _) = s
        .aws
        .call("s3", true, "HEAD", &format!("/{bucket}"), None, None);
    assert_eq!(status, 200, "bucket {bucket} was not created");

    let api = s.deploy(&["api", "--json"]);
    assert_ok(&api, "deploy api");
    let api = last_json(&api);
    let id = api["api_id"].as_str().unwrap();
    let (_, routes) = s.aws.moto.call(
        "apigateway",
        "GET",
        &format!("/v2/apis/{id}/routes"),
        None,
        None,
    );
    let mut keys: Vec<&str> = routes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["routeKey"].as_str().unwrap())
        .collect();
    keys.sort();
    assert_eq!(keys, ["GET /", "GET /health", "POST /predict"]);
    // For people, the page's address comes first; running it again changes nothing.
    let again = s.deploy(&["api"]);
    assert_ok(&again, "deploy api again");
    let first_line = stdout(&again).lines().next().unwrap_or_default().to_owned();
    assert_eq!(
        first_line,
        format!("digit page: {}", api["page"].as_str().unwrap())
    );
    assert!(first_line.ends_with('/'), "{first_line}");
    // A browser signing requests for --auth iam sends these; CORS must let them through.
    let (_, api_conf) = s
        .aws
        .moto
        .call("apigateway", "GET", &format!("/v2/apis/{id}"), None, None);
    let allowed = api_conf["corsConfiguration"]["allowHeaders"].to_string();
    for h in ["x-amz-date", "x-amz-security-token", "x-amz-content-sha256"] {
        assert!(allowed.contains(h), "{h} not allowed by CORS: {api_conf}");
    }

    // Everything again: no layer bytes sent, nothing new released, the same API.
    let again = s.deploy(&["push", "--json"]);
    assert_ok(&again, "second deploy push");
    for p in json_lines(&again) {
        assert_eq!(p["bytes_pushed"], 0, "{p}");
        assert!(p["bytes_skipped"].as_u64().unwrap() > 0);
    }
    let again = s.deploy(&["release", "--json"]);
    assert_ok(&again, "second deploy release");
    for r in json_lines(&again) {
        assert_eq!(r["version"], "1", "{r}");
        assert_eq!(r["change"], "unchanged", "{r}");
    }
    let api2 = s.deploy(&["api", "--json"]);
    assert_ok(&api2, "second deploy api");
    assert_eq!(last_json(&api2)["api_id"], id);
    assert_eq!(last_json(&api2)["created"], false);

    // New weights are a new version with MODEL_S3_URI set, smoke-tested like any release.
    let bad_uri = s.deploy(&["release", "--function", "predict", "--model", "http://x/y"]);
    assert_clean_failure(&bad_uri, "s3://");
    // Regression (issue 23, item 10): a model that does not exist is refused before anything
    // changes, instead of going live.
    let model_uri = format!("s3://{bucket}/models/mnist.safetensors");
    let missing = s.deploy(&["release", "--function", "predict", "--model", &model_uri]);
    assert!(!missing.status.success(), "{}", stdout(&missing));
    assert!(
        stderr(&missing).contains("does not exist"),
        "{}",
        stderr(&missing)
    );
    assert_eq!(s.live_version(PREDICT)["FunctionVersion"], "1");
    // A model outside the models bucket, which predict's role cannot read, is refused too.
    let elsewhere = s.deploy(&[
        "release",
        "--function",
        "predict",
        "--model",
        "s3://someone-elses/mnist.safetensors",
    ]);
    assert!(
        stderr(&elsewhere).contains("only one predict's execution role may read"),
        "{}",
        stderr(&elsewhere)
    );
    s.aws.put(
        &bucket,
        &[(
            "models/mnist.safetensors".to_owned(),
            std::fs::read(shipped_weights()).unwrap(),
        )],
    );
    let model = s.deploy(&[
        "release",
        "--function",
        "predict",
        "--model",
        &model_uri,
        "--json",
    ]);
    assert_ok(&model, "release --model");
    assert_eq!(last_json(&model)["version"], "2");
    let model_env = |s: &Stack| {
        s.aws.lambda().existing(PREDICT)["Configuration"]["Environment"]["Variables"]
            ["MODEL_S3_URI"]
            .clone()
    };
    assert_eq!(model_env(&s), model_uri.as_str());
    assert_eq!(s.live_version(PREDICT)["FunctionVersion"], "2");
    // Regression (issue 23, item 7): a release without --model keeps the trained weights
    // (said), and `--model image` is the way back to the image's own.
    let kept = s.deploy(&["release", "--function", "predict", "--json"]);
    assert_ok(&kept, "release keeping the model");
    assert!(
        stderr(&kept).contains("keeping the model"),
        "{}",
        stderr(&kept)
    );
    assert_eq!(last_json(&kept)["model"], model_uri.as_str());
    assert_eq!(model_env(&s), model_uri.as_str());
    assert_eq!(
        s.live_version(PREDICT)["FunctionVersion"],
        "2",
        "nothing changed"
    );
    let image = s.deploy(&[
        "release",
        "--function",
        "predict",
        "--model",
        "image",
        "--json",
    ]);
    assert_ok(&image, "release --model image");
    assert!(model_env(&s).is_null(), "MODEL_S3_URI dropped");
    assert_eq!(s.live_version(PREDICT)["FunctionVersion"], "3");

    // A model file here that is no model (issue 26) is refused before anything is uploaded or
    // changed. (Releasing a real one, smoke-tested with its stored sample, needs the version's
    // MODEL_S3_URI honoured: tests/deploy_tune.rs does it on the data plane.)
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a model at all").unwrap();
    let refused = s.deploy(&[
        "release",
        "--function",
        "predict",
        "--model",
        junk.to_str().unwrap(),
    ]);
    assert_clean_failure(&refused, "not a model predict can serve");
    assert_eq!(s.live_version(PREDICT)["FunctionVersion"], "3");
    // Train serves no model: a --model for it alone is a mistake, refused before anything is
    // uploaded (it used to upload the file, then ignore it).
    let weights =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(lambda_cnn::SHIPPED_WEIGHTS);
    let refused = s.deploy(&[
        "release",
        "--function",
        "train",
        "--model",
        weights.to_str().unwrap(),
    ]);
    assert_clean_failure(&refused, "--model is the model predict serves");

    // Destroy: without --yes and without a terminal it refuses; with it, everything goes, and
    // a second run finds nothing left to delete.
    let refused = s.deploy(&["destroy"]);
    assert_clean_failure(&refused, "--yes");
    let gone = s.deploy(&["destroy", "--yes", "--all"]);
    assert_ok(&gone, "deploy destroy");
    let out = stdout(&gone);
    for what in [
        "deleted API lambda-cnn",
        "deleted function lambda-cnn-predict",
        "deleted role",
        "deleted ECR repository",
    ] {
        assert!(out.contains(what), "{what} missing from:\n{out}");
    }
    assert!(s.aws.lambda().function(PREDICT).is_none());
    let again = s.deploy(&["destroy", "--yes", "--all"]);
    assert_ok(&again, "second deploy destroy");
    assert_eq!(stdout(&again).trim(), "", "nothing left to delete");
    // push, release (with models), api, destroy: all within the deployer policy.
    s.assert_calls_within_the_deployer_policy();
}

/// A new account, as AWS documents it and moto does not: a concurrency quota of 10 (so no
/// reservation is possible) and a 3008 MB memory cap. The release goes through: train at
/// 3008 MB and predict without a concurrency cap, each with a warning that says why and what
/// to ask for; a second run does the same without stopping.
#[test]
fn a_new_account_gets_train_at_its_memory_cap_and_predict_without_a_concurrency_cap() {
    let s = Stack::start();
    let (strict, invoke, env) = s.as_new_account();
    assert_ok(&s.deploy_with(&["push"], env.clone()), "deploy push");
    for run in ["first", "second"] {
        let release = s.deploy_with(&["release", "--json"], env.clone());
        assert_ok(&release, &format!("{run} release on a new account"));
        let err = String::from_utf8_lossy(&release.stderr);
        assert!(err.contains("allows at most 3008 MB"), "{run}: {err}");
        assert!(
            err.contains("no concurrency cap") && err.contains("quota of at least 120"),
            "{run}: {err}"
        );
        assert_eq!(json_lines(&release).len(), 2, "{run}: both released");
    }
    let train = s.aws.lambda().existing(TRAIN);
    assert_eq!(train["Configuration"]["MemorySize"], 3008);
    assert_eq!(s.live_version(TRAIN)["FunctionVersion"], "1");
    assert_eq!(s.live_version(PREDICT)["FunctionVersion"], "1");
    // The cap was never attempted: GetAccountSettings said it would be refused.
    let refused = strict.refused.lock().unwrap().clone();
    assert!(
        !refused
            .iter()
            .any(|r| r.starts_with("PutFunctionConcurrency")),
        "{refused:?}"
    );
    assert!(
        refused.iter().any(|r| r.starts_with("CreateFunction")),
        "{refused:?}"
    );
    // Each new version was Pending at first: the release waited until it read Active.
    let polls = strict
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(line, _)| line.starts_with("GET ") && line.contains("/configuration?Qualifier="))
        .count();
    assert!(
        polls >= 4,
        "{polls} reads of new versions' state (two functions, Pending then Active)"
    );

    // A config that names another architecture than the image's: Lambda would take it and
    // fail at the first invoke (exec format error); the function gets the image's.
    let config = config_edited(
        s.dir.path(),
        "infra-arm64",
        "architecture = \"x86_64\"",
        "architecture = \"arm64\"",
    );
    let c = config.to_str().unwrap();
    let r = s.deploy_with(
        &["release", "--function", "predict", "--config", c, "--json"],
        env.clone(),
    );
    assert_ok(&r, "release with a config for arm64");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("the image is x86_64, the config says arm64"),
        "{err}"
    );
    let f = LambdaView::at(&strict.endpoint()).existing(PREDICT);
    assert_eq!(
        f["Configuration"]["Architectures"],
        json!([HOST_ARCH]),
        "{f}"
    );
    assert!(invoke.failed.lock().unwrap().is_empty());

    // Someone switches the function to the other architecture (the code stays): its next
    // invocation fails as on Lambda, and a release notices the change of architecture alone
    // and puts it back, smoke-tested.
    let other = if HOST_ARCH == "x86_64" {
        "arm64"
    } else {
        "x86_64"
    };
    let uri = f["Code"]["ImageUri"].as_str().unwrap().to_owned();
    let (status, switched) = common::moto::signed_call(
        &strict.endpoint(),
        "lambda",
        "PUT",
        &format!("/2015-03-31/functions/{PREDICT}/code"),
        None,
        Some(json!({"ImageUri": uri, "Architectures": [other]})),
    );
    assert_eq!(status, 200, "{switched}");
    assert_eq!(switched["Architectures"], json!([other]));
    let (status, failed) = post_json(
        &format!(
            "{}/2015-03-31/functions/{PREDICT}/invocations",
            invoke.endpoint()
        ),
        json!({}),
    );
    assert_eq!(status, 200);
    assert_eq!(failed["errorType"], "Runtime.InvalidEntrypoint", "{failed}");
    let live_before = s.live_version(PREDICT)["FunctionVersion"].clone();
    let r = s.deploy_with(&["release", "--function", "predict", "--json"], env.clone());
    assert_ok(&r, "release after an architecture switch");
    let released = json_lines(&r);
    assert_eq!(released[0]["change"], "updated", "{released:?}");
    let live = s.live_version(PREDICT)["FunctionVersion"].clone();
    assert_ne!(live, live_before, "a new version went live");
    let v = LambdaView::at(&strict.endpoint()).configuration(PREDICT, Some(live.as_str().unwrap()));
    assert_eq!(v["Architectures"], json!([HOST_ARCH]), "{v}");
    // Only the deliberate invocation failed: every smoke test ran on the right architecture.
    assert_eq!(invoke.failed.lock().unwrap().len(), 1);
}

/// An unsigned JSON POST (the Invoke API of the Runtime API emulator and the layer in front).
fn post_json(url: &str, body: Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `CARGO_TARGET_DIR` for a `deploy` that builds: this build's own outputs.
fn this_target_dir() -> (&'static str, String) {
    let target = workspace_binary("predict")
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_owned();
    ("CARGO_TARGET_DIR", target.display().to_string())
}

#[test]
fn deploy_all_for_arm64_cross_builds_and_gives_the_functions_the_images_architecture() {
    let (Some(_), Some(_)) = (arm64_function("predict"), arm64_function("train")) else {
        return;
    };
    // The functions run from the arm64 images under qemu, behind the invoke layer that fails
    // an invocation of a function configured for another architecture, as Lambda does.
    let s = Stack::start_from(|f| arm64_function(f).unwrap());
    let (_strict, invoke, mut env) = s.as_new_account_running("arm64");
    env.push(this_target_dir());
    let all = s.deploy_with(&["all", "--arch", "arm64"], env.clone());
    assert_ok(&all, "deploy all --arch arm64");
    assert!(invoke.failed.lock().unwrap().is_empty());
    let err = String::from_utf8_lossy(&all.stderr);
    assert!(err.contains("building the functions for arm64"), "{err}");
    for name in [PREDICT, TRAIN] {
        let conf = s.aws.lambda().configuration(name, None);
        assert_eq!(conf["Architectures"], json!(["arm64"]), "{name}: {conf}");
        assert_eq!(s.live_version(name)["FunctionVersion"], "1", "{name}");
    }
    // The images `deploy all` built, pushed and released are arm64 ones.
    for f in ["predict", "train"] {
        let config = image_config(&s.images().join(f));
        assert_eq!(config["architecture"], "arm64", "{f}: {config}");
    }
}

/// `deploy doctor` on a new account (strict layer: quota 10, 3008 MB cap) names what would
/// bite, creating nothing; missing data is a FAIL that stops `deploy all` before anything is
/// created; with the data there, `deploy all` completes.
#[test]
fn doctor_names_what_a_new_account_lacks_and_deploy_all_then_completes() {
    let s = Stack::start();
    let (_strict, invoke, mut env) = s.as_new_account();
    // The build inside `deploy all` must find this build's outputs.
    env.push(this_target_dir());

    let images = s.images();
    let doctor = deploy_with_env(&["doctor", "--images", images.to_str().unwrap()], &env);
    assert_ok(&doctor, "deploy doctor");
    let out = stdout(&doctor);
    for expect in [
        "OK   identity",
        "WARN concurrency",
        "quota of at least 120",
        "WARN memory",
        "lambda-cnn-train is configured with 3538 MB",
        "OK   architecture  predict: image and config are x86_64",
        "OK   bucket",
        "OK   role",
        "OK   repository    lambda-cnn is free",
        "OK   api           lambda-cnn is free",
    ] {
        assert!(out.contains(expect), "{expect:?} not in:\n{out}");
    }
    assert!(
        s.aws.lambda().function(PREDICT).is_none(),
        "doctor created nothing"
    );
    let json = deploy_with_env(
        &["doctor", "--json", "--images", images.to_str().unwrap()],
        &env,
    );
    let levels: Vec<String> = json_lines(&json)
        .iter()
        .map(|c| c["level"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        levels.contains(&"WARN".to_owned()) && !levels.contains(&"FAIL".to_owned()),
        "{levels:?}"
    );

    // Names the deploy would trip on: a tag-immutable repository (the second release could
    // not move its live-<function> tag) is a FAIL; two HTTP APIs of one name (API Gateway
    // allows it) a WARN.
    let (status, made) = s.aws.call(
        "ecr",
        true,
        "POST",
        "/",
        Some("AmazonEC2ContainerRegistry_V20150921.CreateRepository"),
        Some(json!({"repositoryName": "frozen", "imageTagMutability": "IMMUTABLE"})),
    );
    assert_eq!(status, 200, "{made}");
    for _ in 0..2 {
        // HTTP APIs are signed as `apigateway`, and served by moto in either stack.
        let (status, made) = common::moto::signed_call(
            &s.aws.endpoint("apigatewayv2", true),
            "apigateway",
            "POST",
            "/v2/apis",
            None,
            Some(json!({"name": "twins", "protocolType": "HTTP"})),
        );
        assert!((200..300).contains(&status), "{made}");
    }
    let renamed = config_edited(
        s.dir.path(),
        "infra-names",
        "[repository]\n# The ECR repository for both functions' images (tags say which function).\nname = \"lambda-cnn\"",
        "[repository]\nname = \"frozen\"",
    );
    let text = std::fs::read_to_string(&renamed).unwrap().replacen(
        "[api]\nname = \"lambda-cnn\"",
        "[api]\nname = \"twins\"",
        1,
    );
    assert!(text.contains("name = \"frozen\"") && text.contains("name = \"twins\""));
    std::fs::write(&renamed, text).unwrap();
    let names = deploy_with_env(
        &[
            "doctor",
            "--config",
            renamed.to_str().unwrap(),
            "--images",
            images.to_str().unwrap(),
        ],
        &env,
    );
    assert!(!names.status.success(), "a FAIL is a non-zero exit");
    let out = stdout(&names);
    for expect in [
        "FAIL repository    frozen has tag mutability IMMUTABLE",
        "put-image-tag-mutability --repository-name frozen",
        "WARN api           2 HTTP APIs are named twins",
    ] {
        assert!(out.contains(expect), "{expect:?} not in:\n{out}");
    }

    // No MNIST: a FAIL, exit status 1, and `deploy all` stops before creating anything.
    let empty = tempfile::tempdir().unwrap();
    let mut no_data = env.clone();
    no_data.push(("MNIST_DIR", empty.path().display().to_string()));
    let failed = deploy_with_env(&["doctor", "--images", images.to_str().unwrap()], &no_data);
    assert!(!failed.status.success());
    assert!(
        stdout(&failed).contains("FAIL mnist"),
        "{}",
        stdout(&failed)
    );
    let stopped = s.deploy_with(&["all"], no_data);
    let err = String::from_utf8_lossy(&stopped.stderr).into_owned();
    assert!(
        !stopped.status.success() && !err.contains("panicked"),
        "{err}"
    );
    assert!(
        err.lines()
            .last()
            .unwrap_or_default()
            .starts_with("error: deploy doctor found 1 problem(s)"),
        "{err}"
    );
    assert!(
        s.aws.lambda().function(PREDICT).is_none(),
        "nothing created after a FAIL"
    );

    // With the data: all of it, on the new account.
    let all = s.deploy_with(&["all"], env.clone());
    assert_ok(&all, "deploy all on a new account");
    assert!(invoke.failed.lock().unwrap().is_empty());
    let err = String::from_utf8_lossy(&all.stderr);
    assert!(
        err.contains("allows at most 3008 MB") && err.contains("no concurrency cap"),
        "{err}"
    );
    assert_eq!(s.live_version(PREDICT)["FunctionVersion"], "1");
    assert_eq!(s.live_version(TRAIN)["FunctionVersion"], "1");
    let train = s.aws.lambda().existing(TRAIN);
    assert_eq!(train["Configuration"]["MemorySize"], 3008);
}

/// The shipped weights with every parameter zeroed: loads fine, answers 0 for everything.
fn zero_weights(dir: &Path) -> PathBuf {
    let bytes = std::fs::read(shipped_weights()).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut zeroed = bytes.clone();
    zeroed[8 + header_len..].fill(0);
    let path = dir.join("zero.safetensors");
    std::fs::write(&path, zeroed).unwrap();
    path
}

/// A copy of the shipped config (and its IAM policies) with predict's memory changed: a new
/// configuration, so a new version.
fn config_with_memory(dir: &Path, memory_mb: u32) -> PathBuf {
    config_edited(
        dir,
        &format!("infra-{memory_mb}"),
        "memory_mb = 1024",
        &format!("memory_mb = {memory_mb}"),
    )
}

/// infra/ copied to `dir`/`name` with the first `from` in deploy.toml made `to`.
fn config_edited(dir: &Path, name: &str, from: &str, to: &str) -> PathBuf {
    let infra = Path::new(env!("CARGO_MANIFEST_DIR")).join("infra");
    let out = dir.join(name);
    std::fs::create_dir_all(out.join("iam")).unwrap();
    for f in [
        "trust-policy.json",
        "execution-policy.json",
        "deployer-policy.json",
    ] {
        std::fs::copy(infra.join("iam").join(f), out.join("iam").join(f)).unwrap();
    }
    let text = std::fs::read_to_string(infra.join("deploy.toml"))
        .unwrap()
        .replacen(from, to, 1);
    std::fs::write(out.join("deploy.toml"), text).unwrap();
    out.join("deploy.toml")
}

#[test]
fn a_failed_smoke_test_leaves_live_where_it_was_and_rollback_and_canary_move_it() {
    let mut s = Stack::start();
    assert_ok(&s.deploy(&["push", "--function", "predict"]), "push");
    assert_ok(
        &s.deploy(&["release", "--function", "predict"]),
        "release v1",
    );

    // v2: a configuration change, smoke-tested and released.
    let config = config_with_memory(s.dir.path(), 1536);
    let c = config.to_str().unwrap();
    let v2 = s.deploy(&["release", "--function", "predict", "--config", c, "--json"]);
    assert_ok(&v2, "release v2");
    assert_eq!(last_json(&v2)["version"], "2");
    assert_eq!(s.live_version(PREDICT)["FunctionVersion"], "2");

    // Rollback: live back on 1, smoke-tested first.
    let rb = s.deploy(&["rollback", "--function", "predict", "--config", c]);
    assert_ok(&rb, "rollback");
    assert!(
        stdout(&rb).contains("live → version 1 (was 2; smoke test:"),
        "{}",
        stdout(&rb)
    );
    assert!(
        stderr(&rb).contains("smoke-testing version 1"),
        "{}",
        stderr(&rb)
    );
    assert_eq!(s.live_version(PREDICT)["FunctionVersion"], "1");

    // Regression (issue 23, item 6): the same release again is version 2 again, which was
    // rolled back from: live stays on 1, and the run says why.
    let again = s.deploy(&["release", "--function", "predict", "--config", c, "--json"]);
    assert_ok(&again, "unchanged release after a rollback");
    assert!(
        stderr(&again).contains("was rolled back from"),
        "{}",
        stderr(&again)
    );
    assert_eq!(s.live_version(PREDICT)["FunctionVersion"], "1");

    // A canary of a new version (3): live stays on 1 and sends a quarter of the traffic to 3.
    let config3 = config_with_memory(s.dir.path(), 2048);
    let c3 = config3.to_str().unwrap();
    let canary = s.deploy(&[
        "release",
        "--function",
        "predict",
        "--config",
        c3,
        "--canary",
        "25",
        "--json",
    ]);
    assert_ok(&canary, "canary release");
    assert_eq!(last_json(&canary)["version"], "3");
    let alias = s.live_version(PREDICT);
    assert_eq!(alias["FunctionVersion"], "1", "{alias}");
    assert_eq!(
        alias["RoutingConfig"]["AdditionalVersionWeights"]["3"], 0.25,
        "{alias}"
    );
    // Rollback during a canary drops the canary; it does not go further back.
    let drop = s.deploy(&["rollback", "--function", "predict", "--config", c3]);
    assert_ok(&drop, "rollback of a canary");
    assert!(
        stdout(&drop).contains("dropped the canary of version 3"),
        "{}",
        stdout(&drop)
    );
    let alias = s.live_version(PREDICT);
    assert_eq!(alias["FunctionVersion"], "1", "{alias}");
    assert!(
        alias["RoutingConfig"]["AdditionalVersionWeights"]
            .as_object()
            .is_none_or(|w| w.is_empty()),
        "{alias}"
    );

    // A broken model: its image runs, answers, and gets the digit wrong. The release fails
    // and says so; live is untouched.
    let zero = zero_weights(s.dir.path());
    let bad_digest = build_image(
        &s.images(),
        &s.dir.path().join("cache"),
        "predict",
        &["--weights", zero.to_str().unwrap()],
    );
    assert_ne!(bad_digest, s.digests[0]);
    assert_ok(
        &s.deploy(&["push", "--function", "predict"]),
        "push the bad image",
    );
    s.emu.stop_function(PREDICT);
    run_image(s.dir.path(), &mut s.emu, "predict", PREDICT);
    let bad = s.deploy(&["release", "--function", "predict", "--config", c, "--json"]);
    assert!(
        !bad.status.success(),
        "a bad model was released:\n{}",
        stdout(&bad)
    );
    let err = stderr(&bad);
    assert!(
        err.contains("smoke test")
            && err.contains("came back as")
            && err.contains("still points at version 1"),
        "{err}"
    );
    let alias = s.live_version(PREDICT);
    assert_eq!(alias["FunctionVersion"], "1", "{alias}");

    // The good image again, released at 2048 MB: live moves past the failed version.
    let good = build_image(&s.images(), &s.dir.path().join("cache"), "predict", &[]);
    assert_eq!(good, s.digests[0]);
    s.emu.stop_function(PREDICT);
    run_image(s.dir.path(), &mut s.emu, "predict", PREDICT);
    let good = s.deploy(&["release", "--function", "predict", "--config", c3, "--json"]);
    assert_ok(&good, "release after the failed one");
    let good_version = last_json(&good)["version"].as_str().unwrap().to_owned();
    assert!(
        !["1", "2", "3", "4"].contains(&good_version.as_str()),
        "a new version: {good_version}"
    );
    assert_eq!(
        s.live_version(PREDICT)["FunctionVersion"],
        good_version.as_str()
    );
    // Regression (issue 23, item 6): rollback skips the version whose smoke test failed (and
    // any other that never went live) and goes to the last good one.
    let rb = s.deploy(&[
        "rollback",
        "--function",
        "predict",
        "--config",
        c3,
        "--json",
    ]);
    assert_ok(&rb, "rollback past a failed version");
    let out = last_json(&rb);
    assert_eq!(out["to"], "1", "{out}");
    assert_eq!(out["from"], good_version.as_str(), "{out}");
    assert_eq!(s.live_version(PREDICT)["FunctionVersion"], "1");

    // --to 0 is not a version.
    let zero = s.deploy(&["rollback", "--function", "predict", "--to", "0"]);
    assert_eq!(zero.status.code(), Some(2), "{}", stderr(&zero));
    // Releases, canaries, rollbacks: all within the deployer policy.
    s.assert_calls_within_the_deployer_policy();
}

/// Builds the predict image and pushes it through 127.0.0.1:`port` (a proxy before the
/// registry); returns the push's output and the image's digest.
fn push_predict_via(aws: &AwsStack, port: u16) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let digest = build_image(&images, &dir.path().join("cache"), "predict", &[]);
    let via = format!("127.0.0.1:{port}");
    let images = images.to_str().unwrap();
    let args = [
        "push",
        "--function",
        "predict",
        "--json",
        "--images",
        images,
        "--registry",
        &via,
    ];
    (deploy_with_env(&args, &aws.env(true)), digest)
}

#[test]
fn a_registry_that_fails_the_first_blob_upload_is_retried() {
    let aws = AwsStack::start(true);
    let registry = Registry::start(ECR_USER, ECR_PASSWORD);
    let proxy = FaultyProxy::start(registry.port, 1);
    let (o, digest) = push_predict_via(&aws, proxy.port);
    assert_ok(&o, "push through the faulty proxy");
    assert_eq!(proxy.injected.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(last_json(&o)["digest"], digest.as_str());
    let short = &digest["sha256:".len().."sha256:".len() + 12];
    assert_eq!(
        registry_digest(&registry, &format!("predict-{short}")),
        digest
    );
}

/// ECR answers a chunk PATCH with 201 where the distribution spec says 202, and its upload
/// `Range` is unreliable past the first chunk (aws/containers-roadmap#2831): blobs go up in one
/// PUT each, every byte crossing the wire once.
#[test]
fn blobs_cross_to_an_ecr_like_registry_exactly_once_in_one_put_each() {
    let aws = AwsStack::start(true);
    let registry = Registry::start(ECR_USER, ECR_PASSWORD);
    let proxy = FaultyProxy::ecr_like(registry.port);
    let (o, digest) = push_predict_via(&aws, proxy.port);
    assert_ok(&o, "push through an ECR-like registry");
    let out = last_json(&o);
    assert_eq!(out["digest"], digest.as_str());
    let pushed = out["bytes_pushed"].as_u64().unwrap() as usize;
    assert!(pushed > 1 << 20, "{out}");
    assert_eq!(
        proxy.patches.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no chunk PATCH"
    );
    assert_eq!(
        proxy.upload_bytes.load(std::sync::atomic::Ordering::SeqCst),
        pushed,
        "each byte once"
    );
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("not respecting"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// CloudWatch Logs' `target` (CreateLogGroup, PutLogEvents, ...) on the emulator serving it.
fn logs_call(aws: &AwsStack, target: &str, body: Value) {
    let (status, v) = aws.call(
        "logs",
        false,
        "POST",
        "/",
        Some(&format!("Logs_20140328.{target}")),
        Some(body),
    );
    assert_eq!(status, 200, "{target}: {v}");
}

#[test]
fn monitor_sums_up_real_report_lines_with_their_cost() {
    let aws = AwsStack::start(false);
    let group = format!("/aws/lambda/{PREDICT}");
    let logs = |target: &str, body: Value| logs_call(&aws, target, body);
    logs("CreateLogGroup", json!({"logGroupName": group}));
    logs(
        "CreateLogStream",
        json!({"logGroupName": group, "logStreamName": "2026/11/28/[1]abc"}),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let lines = [
        "START RequestId: 6f1c1b6e-0f39-4a63-9d62-3c2f4b8f0a11 Version: 1",
        "END RequestId: 6f1c1b6e-0f39-4a63-9d62-3c2f4b8f0a11",
        "REPORT RequestId: 6f1c1b6e-0f39-4a63-9d62-3c2f4b8f0a11\tDuration: 41.27 ms\tBilled Duration: 42 ms\tMemory Size: 1024 MB\tMax Memory Used: 53 MB\tInit Duration: 11.93 ms\t",
        "REPORT RequestId: 0b4c7f5e-5a8e-4f0e-8b7c-1d2e3f4a5b6c\tDuration: 3.05 ms\tBilled Duration: 4 ms\tMemory Size: 1024 MB\tMax Memory Used: 54 MB\t",
        "REPORT RequestId: 1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f\tDuration: 3.61 ms\tBilled Duration: 4 ms\tMemory Size: 1024 MB\tMax Memory Used: 54 MB\t",
    ];
    let events: Vec<Value> = lines
        .iter()
        .enumerate()
        .map(|(i, m)| json!({"timestamp": now - 60_000 + i as i64, "message": m}))
        .collect();
    logs(
        "PutLogEvents",
        json!({"logGroupName": group, "logStreamName": "2026/11/28/[1]abc", "logEvents": events}),
    );
    let env = aws.env(false);
    let o = deploy_with_env(
        &[
            "monitor",
            "--function",
            "predict",
            "--since",
            "1h",
            "--json",
        ],
        &env,
    );
    assert_ok(&o, "deploy monitor");
    let s = &last_json(&o)["summary"];
    assert_eq!(s["invocations"], 3, "{s}");
    assert_eq!(s["cold_starts"], 1);
    assert_eq!(s["errors"], 0);
    assert_eq!(s["duration_p50_ms"], 3.61);
    assert_eq!(s["duration_max_ms"], 41.27);
    assert_eq!(s["init_max_ms"], 11.93);
    assert_eq!(s["max_memory_used_mb"], 54);
    // By hand: billed 50 ms at 1 GB = 0.05 GB-s × $0.0000166667, plus 3 requests at
    // $0.20/M and 3 HTTP API requests at $1.00/M.
    let expected = 0.05 * 0.000_016_666_7 + 3.0 * 0.20e-6 + 3.0 * 1.0e-6;
    let total = s["cost"]["total"].as_f64().unwrap();
    assert!((total - expected).abs() < 1e-12, "{total} vs {expected}");
}

/// Issue 24, item 7: `deploy logs` prints the function's own lines, in time order, filtered
/// when asked, as JSON with `--json`.
#[test]
fn logs_prints_the_functions_own_lines_in_time_order() {
    let aws = AwsStack::start(false);
    let group = format!("/aws/lambda/{PREDICT}");
    let logs = |target: &str, body: Value| logs_call(&aws, target, body);
    logs("CreateLogGroup", json!({"logGroupName": group}));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Two environments: their streams interleave in time.
    for (stream, lines) in [
        ("2026/12/04/[1]aaa", [(0, "START one"), (20, "REPORT one")]),
        (
            "2026/12/04/[1]bbb",
            [(10, "START two"), (30, "ERROR two failed")],
        ),
    ] {
        logs(
            "CreateLogStream",
            json!({"logGroupName": group, "logStreamName": stream}),
        );
        let events: Vec<Value> = lines
            .iter()
            .map(|(t, m)| json!({"timestamp": now - 60_000 + t, "message": format!("{m}\n")}))
            .collect();
        logs(
            "PutLogEvents",
            json!({"logGroupName": group, "logStreamName": stream, "logEvents": events}),
        );
    }
    let env = aws.env(false);
    let o = deploy_with_env(&["logs", "--function", "predict", "--since", "1h"], &env);
    assert_ok(&o, "deploy logs");
    let messages: Vec<String> = stdout(&o)
        .lines()
        .map(|l| l.split_once(' ').unwrap().1.to_owned())
        .collect();
    assert_eq!(
        messages,
        ["START one", "START two", "REPORT one", "ERROR two failed"]
    );
    let o = deploy_with_env(
        &[
            "logs",
            "--function",
            "predict",
            "--since",
            "1h",
            "--filter",
            "ERROR",
            "--json",
        ],
        &env,
    );
    assert_ok(&o, "deploy logs --filter");
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 1, "{}", stdout(&o));
    assert_eq!(lines[0]["message"], "ERROR two failed");
    assert_eq!(lines[0]["stream"], "2026/12/04/[1]bbb");
    // A function never invoked has no log group: no lines, no error.
    let o = deploy_with_env(&["logs", "--function", "train"], &env);
    assert_ok(&o, "deploy logs of a function without logs");
    assert_eq!(stdout(&o), "");
}

#[test]
fn without_credentials_deploy_says_what_is_missing() {
    let o = deploy_with_env(
        &["push"],
        &[
            ("AWS_ACCESS_KEY_ID", String::new()),
            ("AWS_SECRET_ACCESS_KEY", String::new()),
            ("AWS_PROFILE", "lambda-cnn-no-such-profile".into()),
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            // Nothing can leave this machine anyway; a closed port fails fast.
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9".into()),
        ],
    );
    assert_clean_failure(&o, "credentials");
}

#[test]
fn the_cost_what_if_follows_the_price_table() {
    let o = deploy(&[
        "cost",
        "--invocations",
        "1000000",
        "--duration-ms",
        "40",
        "--memory-mb",
        "512",
        "--arch",
        "arm64",
        "--api",
        "http",
        "--json",
    ]);
    assert_ok(&o, "deploy cost");
    let c = &last_json(&o)["cost"];
    // 1e6 × 0.040 s × 0.5 GB = 20,000 GB-s × $0.0000133334 + $0.20 + $1.00.
    assert!(
        (c["total"].as_f64().unwrap() - 1.466_668).abs() < 1e-9,
        "{c}"
    );
}

/// Issue 24, item 6: `cost` prices the configured function (its memory, /tmp and the
/// architecture of `--config`) unless flags say otherwise, and a config it cannot read is an
/// error, not a silent default.
#[test]
fn the_cost_what_if_prices_the_configured_function() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("deploy.toml");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/infra/deploy.toml"))
        .unwrap()
        .replace("architecture = \"x86_64\"", "architecture = \"arm64\"")
        .replace("memory_mb = 3538", "memory_mb = 2048");
    std::fs::write(&config, text).unwrap();
    let config = config.to_str().unwrap();
    let o = deploy(&["cost", "--config", config, "--function", "train", "--json"]);
    assert_ok(&o, "deploy cost --function train");
    let usage = &last_json(&o)["usage"];
    assert_eq!(usage["memory_mb"], 2048, "{usage}");
    assert_eq!(usage["arch"], "arm64", "{usage}");
    assert!(usage["from"]
        .as_str()
        .unwrap()
        .contains("[functions.train]"));
    // A flag wins over the config.
    let o = deploy(&[
        "cost",
        "--config",
        config,
        "--function",
        "train",
        "--memory-mb",
        "512",
        "--json",
    ]);
    assert_ok(&o, "deploy cost --memory-mb");
    assert_eq!(last_json(&o)["usage"]["memory_mb"], 512);
    let missing = dir.path().join("nope.toml");
    let o = deploy(&["cost", "--config", missing.to_str().unwrap()]);
    assert_clean_failure(&o, "nope.toml");
}

#[test]
fn deploy_role_creates_the_execution_role_with_least_privilege() {
    let aws = AwsStack::start(false);
    let env = aws.env(false);
    let first = deploy_with_env(&["role", "--json"], &env);
    assert_ok(&first, "deploy role");
    let arn = last_json(&first)["arn"].as_str().unwrap().to_owned();
    assert!(arn.ends_with(":role/lambda-cnn-execution"), "{arn}");
    let again = deploy_with_env(&["role", "--json"], &env);
    assert_ok(&again, "second deploy role");
    assert_eq!(last_json(&again)["arn"], arn.as_str());
    // Read back through IAM's own (query) API.
    let iam = |query: &str| {
        let (status, v) = aws.call(
            "iam",
            false,
            "GET",
            &format!("/?Version=2010-05-08&{query}"),
            None,
            None,
        );
        assert_eq!(status, 200, "{query}: {v}");
        v.as_str().unwrap_or_default().to_owned()
    };
    let role = iam("Action=GetRole&RoleName=lambda-cnn-execution");
    assert!(role.contains("lambda.amazonaws.com"), "{role}");
    let policy = iam("Action=GetRolePolicy&RoleName=lambda-cnn-execution&PolicyName=lambda-cnn");
    for part in ["lambda-cnn-models-", "logs", "s3", "lambda-cnn-predict"] {
        assert!(policy.contains(part), "{part} not in {policy}");
    }

    // A role whose trust policy was changed (by hand, or made by another tool) gets ours back:
    // otherwise Lambda cannot assume it and every create fails.
    let ec2_trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let encoded: String = ec2_trust
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    iam(&format!(
        "Action=UpdateAssumeRolePolicy&RoleName=lambda-cnn-execution&PolicyDocument={encoded}"
    ));
    assert!(!iam("Action=GetRole&RoleName=lambda-cnn-execution").contains("lambda.amazonaws.com"));
    assert_ok(
        &deploy_with_env(&["role", "--json"], &env),
        "deploy role over a changed role",
    );
    let role = iam("Action=GetRole&RoleName=lambda-cnn-execution");
    assert!(role.contains("lambda.amazonaws.com"), "{role}");
}

/// `destroy --all` empties the bucket through every page of its listing (ListObjectsV2 answers
/// at most 1000 keys a call), so that the bucket itself can go.
#[test]
fn destroy_all_deletes_a_bucket_of_more_than_a_thousand_objects() {
    let aws = AwsStack::start(false);
    let env = aws.env(false);
    // The bucket is named after the account the emulator reports (moto's or LocalStack's).
    let role = deploy_with_env(&["role", "--json"], &env);
    assert_ok(&role, "deploy role");
    let arn = last_json(&role)["arn"].as_str().unwrap().to_owned();
    let account = arn.split(':').nth(4).unwrap().to_owned();
    let bucket = &format!("lambda-cnn-models-{account}-us-east-1");
    aws.create_bucket(bucket);
    let objects: Vec<(String, Vec<u8>)> = (0..1005)
        .map(|i| (format!("models/w-{i}.safetensors"), vec![1]))
        .collect();
    aws.put(bucket, &objects);
    let gone = deploy_with_env(&["destroy", "--yes", "--all"], &env);
    assert_ok(&gone, "destroy --all");
    assert!(
        stdout(&gone).contains(&format!("deleted bucket {bucket}")),
        "{}",
        stdout(&gone)
    );
    let (status, _) = aws.call("s3", false, "HEAD", &format!("/{bucket}"), None, None);
    assert_eq!(status, 404, "the bucket is gone");
}

#[test]
fn a_rest_api_routes_predict_and_health_to_the_live_alias() {
    // moto stands in for Lambda (and the IAM its functions need) in both modes.
    let aws = AwsStack::start(false);
    let env = aws.env(true);
    let role = deploy_with_env(&["role", "--json"], &env);
    assert_ok(&role, "deploy role");
    let arn = last_json(&role)["arn"].as_str().unwrap().to_owned();
    let lambda = |method: &str, path: &str, body: Value| {
        let (status, v) = aws.call("lambda", true, method, path, None, Some(body));
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    };
    lambda(
        "POST",
        "/2015-03-31/functions",
        json!({
            "FunctionName": PREDICT, "PackageType": "Image", "Role": arn,
            "Code": {"ImageUri": format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/lambda-cnn@sha256:{}", "0".repeat(64))},
        }),
    );
    lambda(
        "POST",
        &format!("/2015-03-31/functions/{PREDICT}/versions"),
        json!({}),
    );
    lambda(
        "POST",
        &format!("/2015-03-31/functions/{PREDICT}/aliases"),
        json!({"Name": "live", "FunctionVersion": "1"}),
    );

    // What deploy sends to API Gateway crosses a recorder.
    let recorder = StrictLambda::start(
        &aws.endpoint("apigateway", false),
        NewAccount {
            concurrency_quota: 1000,
            max_memory_mb: 10240,
        },
    );
    let mut env = env;
    env.push(("AWS_ENDPOINT_URL_API_GATEWAY", recorder.endpoint()));
    let first = deploy_with_env(&["api", "--rest", "--json"], &env);
    assert_ok(&first, "deploy api --rest");
    let api = last_json(&first);
    let id = api["api_id"].as_str().unwrap().to_owned();
    assert_eq!(api["created"], true);
    assert!(api["url"].as_str().unwrap().ends_with("/prod"), "{api}");

    let rest = |path: &str| {
        let (status, v) = aws.call("apigateway", false, "GET", path, None, None);
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    };
    let resources = rest(&format!("/restapis/{id}/resources"));
    let items = resources["item"]
        .as_array()
        .or(resources["items"].as_array())
        .unwrap()
        .clone();
    assert!(api["page"].as_str().unwrap().ends_with("/prod/"), "{api}");
    for (path, method) in [("/", "GET"), ("/predict", "POST"), ("/health", "GET")] {
        let r = items
            .iter()
            .find(|r| r["path"] == path)
            .unwrap_or_else(|| panic!("{path} missing: {resources}"));
        let rid = r["id"].as_str().unwrap();
        let integration = rest(&format!(
            "/restapis/{id}/resources/{rid}/methods/{method}/integration"
        ));
        assert_eq!(integration["type"], "AWS_PROXY", "{integration}");
        let uri = integration["uri"].as_str().unwrap();
        assert!(
            uri.contains(&format!("function:{PREDICT}:live/invocations")),
            "{uri}"
        );
    }
    let stage = rest(&format!("/restapis/{id}/stages/prod"));
    assert_eq!(
        stage["methodSettings"]["*/*"]["throttlingRateLimit"], 50.0,
        "{stage}"
    );
    // Raw image bodies must reach the function as binary (base64), not as UTF-8 text: the
    // API is created with binaryMediaTypes (moto drops the field; AWS and LocalStack keep it,
    // so what was sent is checked).
    let created = recorder
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|(line, _)| line.starts_with("POST /restapis"))
        .map(|(_, body)| serde_json::from_slice::<Value>(body).unwrap())
        .expect("a CreateRestApi call");
    assert_eq!(
        created["binaryMediaTypes"],
        json!(["image/png", "image/jpeg"]),
        "{created}"
    );

    // Again: the same API, nothing created.
    let again = deploy_with_env(&["api", "--rest", "--json"], &env);
    assert_ok(&again, "second deploy api --rest");
    assert_eq!(last_json(&again)["api_id"], id.as_str());
    assert_eq!(last_json(&again)["created"], false);
}

/// The actions of a `--dry-run --json` plan, in order.
fn plan_actions(o: &Output) -> Vec<String> {
    last_json(o)["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no plan: {}\n{}", stdout(o), stderr(o)))
        .iter()
        .map(|s| s["action"].as_str().unwrap().to_owned())
        .collect()
}

/// Issue 24, items 2, 3 and 7, through the stand-ins: a dry run reads the account and plans
/// exactly what the real run then does (creates the first time, keeps the second, stops where
/// the real run would fail and then creates nothing); `status`, `invoke` and the API's URLs
/// answer "what is deployed?"; `--stage` is another copy; `--quiet` leaves results only.
#[test]
fn a_dry_run_plans_what_the_real_run_then_does_and_status_shows_the_result() {
    let s = Stack::start();
    let status = |s: &Stack, extra: &[&str]| {
        let mut args = extra.to_vec();
        args.extend(["status", "--json"]);
        let o = s.deploy(&args);
        assert_ok(&o, "deploy status");
        last_json(&o)
    };
    let before = status(&s, &[]);
    assert_eq!(before["functions"][0]["name"], PREDICT);
    assert_eq!(before["functions"][0]["deployed"], false);
    assert!(before["api"].is_null(), "{before}");

    // An API before any release: the plan stops, and so does the real run, creating nothing.
    let plan = s.deploy(&["api", "--dry-run", "--json"]);
    assert!(!plan.status.success());
    assert_eq!(plan_actions(&plan), ["stop"]);
    let api = s.deploy(&["api", "--quiet"]);
    assert_clean_failure(&api, "run deploy release first");
    let (_, apis) = s.aws.moto.call("apigateway", "GET", "/v2/apis", None, None);
    assert_eq!(apis["items"].as_array().map(Vec::len), Some(0), "{apis}");
    // Images that are not there: push stops before creating the repository.
    let o = deploy_with_env(
        &[
            "push",
            "--quiet",
            "--images",
            "/nonexistent",
            "--registry",
            &s.registry.host(),
        ],
        &s.env(),
    );
    assert_clean_failure(&o, "/nonexistent");
    s.assert_no_repository();

    // Release before push: the plan stops, as the release would.
    let plan = s.deploy(&["release", "--dry-run", "--json"]);
    assert_eq!(plan_actions(&plan), ["stop"], "{}", stdout(&plan));
    assert_ok(&s.deploy(&["push"]), "deploy push");
    // The first release's plan, then the release: what it said it would create exists.
    let plan = s.deploy(&["release", "--dry-run", "--json"]);
    assert_ok(&plan, "release --dry-run");
    assert_eq!(
        plan_actions(&plan),
        ["create", "create", "create", "run", "create", "run"],
        "{}",
        stdout(&plan)
    );
    assert!(
        s.aws.lambda().function(PREDICT).is_none(),
        "a dry run created the function"
    );
    assert_ok(&s.deploy(&["release"]), "deploy release");
    let after = status(&s, &[]);
    let predict = &after["functions"][0];
    assert_eq!(predict["live_version"], "1", "{after}");
    assert_eq!(predict["image_digest"], s.digests[0].as_str());
    assert_eq!(predict["model"], "image");
    assert_eq!(predict["memory_mb"], 1024);
    assert_eq!(predict["architecture"], HOST_ARCH);
    assert_eq!(
        predict["last_release"],
        "version 1 passed its smoke test and is live"
    );
    assert_eq!(after["functions"][1]["image_digest"], s.digests[1].as_str());
    // The same release again: the plan keeps both functions, and the run publishes nothing.
    let plan = s.deploy(&["release", "--dry-run", "--json"]);
    assert_eq!(
        plan_actions(&plan),
        ["keep", "update", "keep", "keep"],
        "{}",
        stdout(&plan)
    );
    let again = s.deploy(&["release", "--json"]);
    for r in json_lines(&again) {
        assert_eq!(r["change"], "unchanged", "{r}");
    }

    // The API: planned, made, and then in status with its page.
    let plan = s.deploy(&["api", "--dry-run", "--json"]);
    assert_eq!(plan_actions(&plan), ["create"]);
    assert_ok(&s.deploy(&["api"]), "deploy api");
    assert_eq!(
        plan_actions(&s.deploy(&["api", "--dry-run", "--json"])),
        ["update"]
    );
    let with_api = status(&s, &[]);
    let page = with_api["api"]["page"].as_str().unwrap();
    assert!(
        page.ends_with('/') && page.contains("execute-api"),
        "{with_api}"
    );

    // Invoke the live alias with a real test digit, and with a body it refuses.
    let dir = tempfile::tempdir().unwrap();
    let (png, label) = test_digit_png(0);
    let file = dir.path().join("digit.png");
    std::fs::write(&file, &png).unwrap();
    let endpoint = s.emu.invoke_endpoint();
    let o = s.deploy(&[
        "invoke",
        "--image",
        file.to_str().unwrap(),
        "--invoke-endpoint",
        &endpoint,
        "--json",
    ]);
    assert_ok(&o, "deploy invoke --image");
    let answer = last_json(&o);
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"]["digit"], label, "{answer}");
    let o = s.deploy(&[
        "invoke",
        "--body",
        r#"{"pixels":[1,2,3]}"#,
        "--invoke-endpoint",
        &endpoint,
    ]);
    assert!(!o.status.success());
    assert!(stdout(&o).contains("answered 400"), "{}", stdout(&o));
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not an image").unwrap();
    let o = s.deploy(&[
        "invoke",
        "--quiet",
        "--image",
        text.to_str().unwrap(),
        "--invoke-endpoint",
        &endpoint,
    ]);
    assert_clean_failure(&o, "not a PNG or JPEG");

    // --quiet: results only.
    let o = s.deploy(&["status", "--quiet"]);
    assert_ok(&o, "status --quiet");
    assert!(!stderr(&o).contains("deploying to"), "{}", stderr(&o));
    assert!(stdout(&o).contains("live → version 1"), "{}", stdout(&o));
    // Another stage is another copy: nothing of it is deployed. (Its names are outside this
    // stage's deployer policy, as they should be: not through the recorder.)
    let o = deploy_with_env(&["--stage", "dev", "status", "--json"], &s.aws.env(true));
    assert_ok(&o, "status --stage dev");
    let dev = last_json(&o);
    assert_eq!(dev["functions"][0]["name"], format!("{PREDICT}-dev"));
    assert_eq!(dev["functions"][0]["deployed"], false);
    assert!(dev["api"].is_null());

    // Destroy: the plan names what exists and what --all would add; afterwards, nothing.
    let plan = s.deploy(&["destroy", "--dry-run", "--json"]);
    let text = stdout(&plan);
    assert_eq!(
        plan_actions(&plan),
        ["delete", "delete", "delete", "delete", "keep"],
        "{text}"
    );
    assert!(text.contains("--all deletes them too"), "{text}");
    assert_ok(&s.deploy(&["destroy", "--yes", "--all"]), "destroy");
    let plan = s.deploy(&["destroy", "--dry-run", "--all", "--json"]);
    assert_eq!(plan_actions(&plan), Vec::<String>::new());
    s.assert_calls_within_the_deployer_policy();
}

/// Lambda and S3 take their time, as AWS documents (common/aws_states.rs), where moto answers
/// at once. Regressions (issue 23, items 4 and 8): a release waits for a function still
/// `Pending` (an interrupted first deploy), waits out an update in progress and sends again
/// one refused as conflicting, recreates a function in state `Failed` (saying why), and
/// re-creating a bucket name deleted moments ago is retried until S3 lets it be used.
#[test]
fn a_release_waits_out_lambdas_states_and_a_recently_deleted_bucket_name() {
    let s = Stack::start();
    let lambda = AwsStates::start(
        &s.aws.endpoint("lambda", true),
        std::time::Duration::from_secs(5),
    );
    let s3 = AwsStates::start(
        &s.aws.endpoint("s3", true),
        std::time::Duration::from_secs(5),
    );
    let mut env = s.env();
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL_LAMBDA" && *k != "AWS_ENDPOINT_URL_S3");
    env.push(("AWS_ENDPOINT_URL_LAMBDA", lambda.endpoint()));
    env.push(("AWS_ENDPOINT_URL_S3", s3.endpoint()));
    let deploy = |args: &[&str]| s.deploy_with(args, env.clone());
    assert_ok(&deploy(&["push", "--function", "predict"]), "push");

    // A new function is Pending for a while: the release waits for it.
    assert_ok(&deploy(&["release", "--function", "predict"]), "release");
    assert!(lambda.served("pending") >= 1, "Pending was never read");
    assert_eq!(s.live_version(PREDICT)["FunctionVersion"], "1");

    // Someone else's update in progress: ours is refused once, waits, and goes through.
    lambda.mark_busy(PREDICT);
    let c1536 = config_with_memory(s.dir.path(), 1536);
    let o = deploy(&[
        "release",
        "--function",
        "predict",
        "--config",
        c1536.to_str().unwrap(),
    ]);
    assert_ok(&o, "release during someone else's update");
    assert_eq!(lambda.served("conflict"), 1);
    assert!(
        lambda.served("in-progress") >= 1,
        "InProgress was never read"
    );
    assert_eq!(s.live_version(PREDICT)["FunctionVersion"], "2");

    // An interrupted first deploy left it Pending: the next run waits, saying so.
    lambda.mark_pending(PREDICT, 2);
    let c2048 = config_with_memory(s.dir.path(), 2048);
    let o = deploy(&[
        "release",
        "--function",
        "predict",
        "--config",
        c2048.to_str().unwrap(),
    ]);
    assert_ok(&o, "release of a Pending function");
    assert!(stderr(&o).contains("still Pending"), "{}", stderr(&o));

    // A function in state Failed is not recovered by Lambda: deleted and created again.
    lambda.mark_failed(PREDICT, "Lambda could not access the image");
    let o = deploy(&["release", "--function", "predict"]);
    assert_ok(&o, "release of a Failed function");
    let err = stderr(&o);
    assert!(
        err.contains("is in state Failed (Lambda could not access the image)")
            && err.contains("deleting it and creating it again"),
        "{err}"
    );
    assert!(lambda.served("failed") >= 1);
    assert_eq!(
        s.live_version(PREDICT)["FunctionVersion"],
        "1",
        "a new function"
    );

    // Every S3 call named the account that must own the bucket (CreateBucket aside).
    let unguarded = s3.states.lock().unwrap().s3_without_owner.clone();
    assert!(
        unguarded.is_empty(),
        "without ExpectedBucketOwner: {unguarded:?}"
    );

    // destroy --all, then at once a new deploy: S3 holds the bucket's name for a moment.
    assert_ok(&deploy(&["destroy", "--all", "--yes"]), "destroy --all");
    assert_ok(&deploy(&["push", "--function", "predict"]), "push again");
    let o = deploy(&["release", "--function", "predict"]);
    assert_ok(&o, "release right after destroy --all");
    assert!(
        s3.served("aborted") >= 1,
        "OperationAborted was never answered"
    );
    assert!(
        stderr(&o).contains("does not let the name be used again yet"),
        "{}",
        stderr(&o)
    );
}

/// Regression (issue 23, item 5): a bucket of another account under our name, one that even
/// lets this account in, is not taken for ours: doctor says whose it is, and a release stops
/// before creating anything, instead of training into someone else's bucket.
#[test]
fn a_bucket_of_another_account_under_our_name_is_refused_before_anything_is_made() {
    let s = Stack::start();
    let s3 = AwsStates::start(
        &s.aws.endpoint("s3", true),
        std::time::Duration::from_secs(5),
    );
    let mut env = s.env();
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL_S3");
    env.push(("AWS_ENDPOINT_URL_S3", s3.endpoint()));
    let deploy = |args: &[&str]| s.deploy_with(args, env.clone());
    // The name is taken: the bucket exists (in the emulator), and S3 says it is another
    // account's whenever a request names ours as the expected owner.
    let policy_text = s.recorded.policy.to_string();
    let bucket = policy_text
        .split("arn:aws:s3:::")
        .nth(1)
        .and_then(|r| r.split(['"', '/']).next())
        .unwrap()
        .to_owned();
    s.aws.create_bucket(&bucket);
    s3.mark_owner(&bucket, "999999999999");

    let doctor = deploy(&["doctor", "--images", s.images().to_str().unwrap()]);
    assert!(!doctor.status.success(), "{}", stdout(&doctor));
    let row = stdout(&doctor)
        .lines()
        .find(|l| l.contains("bucket"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        row.starts_with("FAIL") && row.contains("is not account"),
        "{row}"
    );

    assert_ok(&deploy(&["push", "--function", "train"]), "push");
    let o = deploy(&["release", "--function", "train"]);
    assert!(
        !o.status.success(),
        "released into another account's bucket"
    );
    assert!(stderr(&o).contains("is not account"), "{}", stderr(&o));
    assert!(
        s.aws.lambda().function(TRAIN).is_none(),
        "no function was created"
    );
    assert!(s3.served("not-owner") >= 1);
}

/// `deploy ARGS` on a terminal (util-linux's `script` gives it a pty, as a person's shell
/// would), typing `answer`; whether it succeeded, and what the terminal showed.
fn on_a_terminal(args: &[&str], env: &[(&'static str, String)], answer: &str) -> (bool, String) {
    use std::io::Write;
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line = quote(workspace_binary("deploy").to_str().unwrap());
    for a in args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    let mut child = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("DEPLOY_REGISTRY")
        .env_remove("DEPLOY_INVOKE_ENDPOINT")
        .env("MNIST_DIR", mnist_dir())
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux's script runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answer.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Issue 24, items 1 and 2, on a terminal: the first `deploy all` in an account shows its plan
/// and asks before creating anything (no: nothing is created); `destroy` asks naming the
/// account, the region and what `--all` would keep.
#[test]
fn on_a_terminal_the_first_deploy_all_asks_and_destroy_names_the_account() {
    let s = Stack::start();
    let images = s.images();
    let registry = s.registry.host();
    let (ok, out) = on_a_terminal(
        &[
            "all",
            "--no-api",
            "--images",
            images.to_str().unwrap(),
            "--registry",
            &registry,
        ],
        &s.env(),
        "n\n",
    );
    assert!(!ok, "{out}");
    let account = s.aws.account();
    for said in [
        format!("deploy all would, in account {account} region us-east-1:"),
        "create ECR repository lambda-cnn".into(),
        "create function lambda-cnn-predict".into(),
        format!("nothing of lambda-cnn's is in account {account} region us-east-1 yet"),
        "nothing created (deploy all --yes skips this question)".into(),
    ] {
        assert!(out.contains(&said), "{said:?} not in:\n{out}");
    }
    s.assert_no_repository();
    let (ok, out) = on_a_terminal(&["destroy"], &s.env(), "n\n");
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "in account {account} region us-east-1: delete API lambda-cnn"
        )),
        "{out}"
    );
    assert!(out.contains("--all deletes them too"), "{out}");
    assert!(out.contains("nothing deleted"), "{out}");
}
