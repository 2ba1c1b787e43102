//! `deploy tune` against the local stand-ins: moto as Lambda's control plane, a real OCI
//! registry as ECR, and the local data plane running each published version's image (pulled by
//! digest) under AWS's Runtime Interface Emulator in Docker, with `--memory` and `--cpus` from
//! the version's MemorySize. On this 2-core machine memory buys CPU as on Lambda (1 vCPU at 1769
//! MB), so what the tune measures is physics, not a script.

use lambda_cnn_test_kit as common;

use common::aws_emulator::AwsStack;
use common::call_recorder::Recorded;
use common::dataplane::{docker, docker_or_skip, DataPlane, LocalLambda};
use common::emulator::workspace_binary;
use common::faulty_proxy::{relay, Message};
use common::image_run::deploy_image;
use common::registry::Registry;
use common::strict_lambda::{NewAccount, StrictLambda};
use common::*;
use serde_json::Value;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Output;
use std::sync::Mutex;

const PREDICT: &str = "lambda-cnn-predict";
const TRAIN: &str = "lambda-cnn-train";

/// One stack at a time: the timings are the point, and two tunes would share the 2 cores.
/// (Under `cargo test`; nextest runs each test alone, as `.config/nextest.toml` says.)
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Stack {
    aws: AwsStack,
    registry: Registry,
    plane: DataPlane,
    dir: tempfile::TempDir,
    digests: Vec<String>,
    /// Every call `deploy` makes, for the deployer policy's check.
    recorded: Recorded,
}

impl Stack {
    /// [`Stack::start`] for a test that has this machine to itself (the lock held as long as
    /// the guard lives); `None`, after saying SKIPPED, where there is no Docker.
    fn start_alone() -> Option<(std::sync::MutexGuard<'static, ()>, Self)> {
        if !docker_or_skip("deploy tune's data plane") {
            return None;
        }
        let one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        Some((one, Stack::start()))
    }

    /// The stand-ins, both images built, pushed and released (smoke-tested through the data
    /// plane, so the release itself ran the images in Docker).
    fn start() -> Self {
        let LocalLambda {
            aws,
            registry,
            plane,
        } = LocalLambda::start();
        let dir = tempfile::tempdir().unwrap();
        let mut digests = Vec::new();
        for f in ["predict", "train"] {
            let v = deploy_image(
                f,
                &workspace_binary(f),
                &dir.path().join("images").join(f),
                &dir.path().join("cache"),
                &[],
            );
            digests.push(v["manifest_digest"].as_str().unwrap().to_owned());
        }
        let recorded = Recorded::start(aws.env(true));
        let s = Stack {
            aws,
            registry,
            plane,
            dir,
            digests,
            recorded,
        };
        s.ok(&["push"], "deploy push");
        s.ok(&["release"], "deploy release");
        s
    }

    fn images(&self) -> PathBuf {
        self.dir.path().join("images")
    }

    fn deploy(&self, args: &[&str]) -> Output {
        let images = self.images();
        let host = self.registry.host();
        let endpoint = self.plane.endpoint();
        let mut all = args.to_vec();
        match args[0] {
            "push" | "release" => {
                all.extend(["--images", images.to_str().unwrap(), "--registry", &host])
            }
            _ => {}
        }
        if ["release", "tune"].contains(&args[0]) && !args.contains(&"--invoke-endpoint") {
            all.extend(["--invoke-endpoint", &endpoint]);
        }
        deploy_with_env(&all, &self.recorded.env)
    }

    fn ok(&self, args: &[&str], what: &str) -> Output {
        let o = self.deploy(args);
        assert!(
            o.status.success(),
            "{what} failed: {}\n--- data plane:\n{}",
            stderr(&o),
            self.plane.log()
        );
        o
    }

    /// Aliases and published versions of `function`, and `$LATEST`'s memory.
    fn footprint(&self, function: &str) -> (Vec<String>, Vec<String>, i64) {
        let lambda = self.aws.lambda();
        let memory = lambda.configuration(function, None)["MemorySize"]
            .as_i64()
            .unwrap();
        (lambda.aliases(function), lambda.versions(function), memory)
    }

    /// The images of the data plane's containers (`repository@sha256:…`).
    fn images_run(&self) -> Vec<String> {
        self.plane
            .containers()
            .iter()
            .map(|c| {
                docker(&["inspect", "-f", "{{.Config.Image}}", c])
                    .trim()
                    .to_owned()
            })
            .collect()
    }

    fn live(&self, function: &str) -> Value {
        let lambda = self.aws.lambda();
        let alias = lambda.alias(function, "live");
        lambda.configuration(function, Some(alias["FunctionVersion"].as_str().unwrap()))
    }
}

fn size(report: &Value, mb: u64) -> &Value {
    report["sizes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["memory_mb"] == mb)
        .unwrap_or_else(|| panic!("no {mb} MB in {report}"))
}

fn mean_ms(report: &Value, mb: u64) -> f64 {
    size(report, mb)["billed_mean_ms"].as_f64().unwrap()
}

#[test]
fn tune_measures_what_memory_buys_and_leaves_nothing_behind() {
    let Some((_one, s)) = Stack::start_alone() else {
        return;
    };
    let before = [PREDICT, TRAIN].map(|f| s.footprint(f));

    // The dry run plans, per size, the version and alias the real run makes and removes, then
    // $LATEST put back; it changes nothing.
    let plan = last_json(&s.ok(
        &[
            "tune",
            "--dry-run",
            "--function",
            "predict",
            "--memory",
            "1769,128,512",
            "--json",
        ],
        "deploy tune --dry-run",
    ));
    let actions: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no plan: {plan}"))
        .iter()
        .map(|step| step["action"].as_str().unwrap())
        .collect();
    let per_size = ["create", "run", "delete"];
    let mut expected: Vec<&str> = per_size.repeat(3);
    expected.extend(["update", "run"]);
    assert_eq!(actions, expected, "{plan}");
    assert!(plan.to_string().contains("alias tune-128"), "{plan}");
    assert_eq!([PREDICT, TRAIN].map(|f| s.footprint(f)), before);

    // predict: about a millisecond of arithmetic per digit.
    let chart = s.dir.path().join("predict.svg");
    let o = s.ok(
        &[
            "tune",
            "--function",
            "predict",
            "--memory",
            "1769,128,512",
            "--invocations",
            "5",
            "--strategy",
            "cost",
            "--chart",
            chart.to_str().unwrap(),
            "--json",
        ],
        "deploy tune predict",
    );
    let predict = last_json(&o);
    eprintln!("{}", stderr(&o));
    assert_eq!(predict["function"], PREDICT);
    // Billed ~1-2 ms at any size, so the request charge dominates and 128 or 512 MB is the
    // cheapest (at 128 MB, 0.07 vCPU, an invocation now and then waits out the rest of a
    // 100 ms CFS period); paying 14x the memory for nothing is never the pick.
    let pick = predict["recommended_mb"].as_u64().unwrap();
    assert!(pick == 128 || pick == 512, "{predict}");
    // The cold start is where a small size shows: the init (~25 ms of CPU) runs on 0.07 vCPU.
    let init = |mb| size(&predict, mb)["cold_init_ms"].as_f64().unwrap();
    assert!(init(128) > init(1769), "{predict}");
    for mb in [128, 512, 1769] {
        let sz = size(&predict, mb);
        assert!(sz["error"].is_null(), "{sz}");
        assert_eq!(sz["warm_invocations"], 4, "the cold start is apart: {sz}");
        assert!(sz["cold_init_ms"].as_f64().unwrap() > 0.0, "{sz}");
        let peak = sz["max_memory_used_mb"].as_u64().unwrap();
        // The container's cgroup peak, not the RIE's echo of the configured size.
        assert!(peak > 1 && peak < 128, "{mb} MB: peak {peak} MB: {sz}");
    }
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<circle class=\"duration\"").count(), 3);
    assert_eq!(svg.matches("<circle class=\"cost\"").count(), 3);

    // train: seconds of CPU-bound work, so each vCPU shows, up to this machine's 2.
    let payload = s.dir.path().join("train.json");
    std::fs::write(&payload, r#"{"epochs":1,"limit":20000}"#).unwrap();
    let o = s.ok(
        &[
            "tune",
            "--function",
            "train",
            "--memory",
            "512,1769,3538",
            // A cold start and two warm runs a size: the comparisons below are of means of two
            // samples, not one (a single run can land on a busy moment of the machine).
            "--invocations",
            "3",
            "--payload",
            payload.to_str().unwrap(),
            "--strategy",
            "speed",
            "--json",
        ],
        "deploy tune train",
    );
    let train = last_json(&o);
    eprintln!("{}", stderr(&o));
    let (t512, t1769, t3538) = (
        mean_ms(&train, 512),
        mean_ms(&train, 1769),
        mean_ms(&train, 3538),
    );
    // 0.29 of a vCPU against one: several times slower (not exactly 3.5: data loading and the
    // CFS period's slack).
    assert!(t512 > 2.0 * t1769, "512 MB {t512} ms vs 1769 MB {t1769} ms");
    // Two vCPUs against one: faster, if not twice.
    assert!(
        t3538 < 0.9 * t1769,
        "3538 MB {t3538} ms vs 1769 MB {t1769} ms"
    );
    assert_eq!(train["recommended_mb"], 3538, "{train}");
    // Regression (issue 23, item 9): the tune's training runs were measurements; the models
    // they wrote are deleted (the release's smoke run's too).
    let bucket = s.aws.lambda().configuration(TRAIN, None)["Environment"]["Variables"]
        ["MODEL_BUCKET"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, listing) = s.aws.call(
        "s3",
        true,
        "GET",
        &format!("/{bucket}?list-type=2&prefix=models/"),
        None,
        None,
    );
    assert_eq!(status, 200, "{listing}");
    assert!(
        !listing.to_string().contains("<Key>"),
        "left in S3: {listing}"
    );

    // A new account caps memory at 3008 MB: a larger size is a finding, not the end.
    let strict = StrictLambda::start(
        &s.aws.endpoint("lambda", true),
        NewAccount {
            concurrency_quota: 1000,
            max_memory_mb: 3008,
        },
    );
    let mut env = s.aws.env(true);
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL_LAMBDA");
    env.push(("AWS_ENDPOINT_URL_LAMBDA", strict.endpoint()));
    let o = deploy_with_env(
        &[
            "tune",
            "--function",
            "predict",
            "--memory",
            "3008,4096",
            "--invocations",
            "2",
            "--invoke-endpoint",
            &s.plane.endpoint(),
            "--json",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let capped = last_json(&o);
    assert_eq!(capped["recommended_mb"], 3008, "{capped}");
    let refused = size(&capped, 4096)["error"].as_str().unwrap().to_owned();
    assert!(refused.contains("at most 3008 MB"), "{refused}");

    // Nothing left behind: no tune-* alias, no new version, the memory as before.
    let after = [PREDICT, TRAIN].map(|f| s.footprint(f));
    assert_eq!(before, after);
    assert_eq!(after[0].2, 1024);
    assert!(after.iter().all(|(a, _, _)| a == &vec!["live".to_owned()]));
    // The data plane sends the REPORT lines to CloudWatch Logs, as Lambda does: monitor sees
    // the tune's invocations.
    let o = s.ok(
        &[
            "monitor",
            "--function",
            "predict",
            "--since",
            "1h",
            "--json",
        ],
        "deploy monitor",
    );
    let summary = &last_json(&o)["summary"];
    // The release's smoke test, and the tune's 3 sizes × 5 (each size's first a cold start).
    assert!(summary["invocations"].as_u64().unwrap() >= 16, "{summary}");
    assert!(summary["cold_starts"].as_u64().unwrap() >= 4, "{summary}");
    // Push, release, tune (memory, versions, aliases, the models train wrote), monitor: all
    // within the deployer policy.
    s.recorded.assert_within_the_deployer_policy(&[
        "lambda:CreateAlias",
        "lambda:UpdateFunctionConfiguration",
        "logs:FilterLogEvents",
    ]);
}

/// A proxy in front of the data plane that fails every invocation of a numbered version (what
/// a smoke test sends) and passes the rest (tune invokes its tune-* aliases).
fn failing_smoke_tests(upstream_port: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let on_request = |req: &Message| {
                    let numbered = req
                        .first_line
                        .split("Qualifier=")
                        .nth(1)
                        .and_then(|q| q.split([' ', '&']).next())
                        .is_some_and(|q| !q.is_empty() && q.bytes().all(|b| b.is_ascii_digit()));
                    if !numbered {
                        return None;
                    }
                    let body = r#"{"errorType":"Runtime.ExitError","errorMessage":"smoke test sabotaged by the test"}"#;
                    Some(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Amz-Function-Error: Unhandled\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes())
                };
                relay(conn, upstream_port, on_request, |_, r| r);
            });
        }
    });
    port
}

#[test]
fn ctrl_c_during_a_tune_removes_its_aliases_and_versions_and_restores_the_memory() {
    let Some((_one, s)) = Stack::start_alone() else {
        return;
    };
    let before = s.footprint(TRAIN);
    let payload = s.dir.path().join("train.json");
    std::fs::write(&payload, r#"{"epochs":1,"limit":20000}"#).unwrap();
    let child = std::process::Command::new(workspace_binary("deploy"))
        .args(["tune", "--function", "train", "--memory", "512,1024"])
        .args([
            "--invocations",
            "20",
            "--payload",
            payload.to_str().unwrap(),
        ])
        .args(["--invoke-endpoint", &s.plane.endpoint()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .envs(s.aws.env(true))
        .env("MNIST_DIR", mnist_dir())
        .env_remove("DEPLOY_INVOKE_ENDPOINT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupted while measuring 512 MB: its alias and version exist, $LATEST is at 512 MB.
    let start = std::time::Instant::now();
    while !s.footprint(TRAIN).0.contains(&"tune-512".to_owned()) {
        assert!(start.elapsed().as_secs() < 60, "no tune-512 alias appeared");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(s.footprint(TRAIN).2, 512);
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("interrupted") && err.contains("cleaning up"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        start.elapsed().as_secs() < 40,
        "20 invocations of 2.5 s were not waited for: {err}"
    );
    assert_eq!(s.footprint(TRAIN), before);

    // Stopped, the data plane leaves no container and no image name of its run in Docker.
    let pulled_from = format!("{}/", s.registry.host());
    drop(s);
    let images = docker(&[
        "images",
        "--digests",
        "--format",
        "{{.Repository}}@{{.Digest}}",
    ]);
    assert!(!images.contains(&pulled_from), "{images}");
    let containers = docker(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(!containers.contains("lambda-cnn-dp-"), "{containers}");
}

#[test]
fn tune_apply_moves_live_only_after_the_smoke_test_passes_and_runs_the_image_by_digest() {
    let Some((_one, s)) = Stack::start_alone() else {
        return;
    };
    let live_before = s.live(PREDICT);
    assert_eq!(live_before["MemorySize"], 1024);

    // An endpoint that runs nothing (moto's Invoke echoes, with no REPORT line): every size
    // fails with why, nothing is picked or applied, the exit status says so.
    let moto = s.aws.endpoint("lambda", true);
    let o = s.deploy(&[
        "tune",
        "--function",
        "predict",
        "--memory",
        "256",
        "--invocations",
        "2",
        "--apply",
        "--invoke-endpoint",
        &moto,
    ]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(!o.status.success(), "{out}{err}");
    assert!(
        err.contains("no memory size could be measured, so nothing was applied"),
        "{err}"
    );
    assert!(out.contains("not ranked"), "{out}");
    assert_eq!(s.live(PREDICT)["Version"], live_before["Version"]);

    // A smoke test that fails: the pick is measured, but live stays where it was.
    let sabotaged = format!("http://127.0.0.1:{}", failing_smoke_tests(s.plane.port));
    let o = s.deploy(&[
        "tune",
        "--function",
        "predict",
        "--memory",
        "256,512",
        "--invocations",
        "2",
        "--apply",
        "--invoke-endpoint",
        &sabotaged,
    ]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("smoke test") && err.contains("sabotaged"),
        "{err}"
    );
    // live serves what it served; $LATEST keeps the failed release's configuration, as
    // `deploy release` leaves it; the tune's own aliases are gone.
    let live_now = s.live(PREDICT);
    assert_eq!(live_now["Version"], live_before["Version"]);
    assert_eq!(live_now["MemorySize"], 1024);
    let (aliases, _, _) = s.footprint(PREDICT);
    assert_eq!(aliases, vec!["live".to_owned()]);

    // The same through the real data plane: live moves to a smoke-tested version at the pick.
    let o = s.ok(
        &[
            "tune",
            "--function",
            "predict",
            "--memory",
            "256,512",
            "--invocations",
            "4",
            "--parallel",
            "--apply",
            "--json",
        ],
        "deploy tune --parallel --apply",
    );
    let report = last_json(&o);
    for mb in [256, 512] {
        // The first alone (the cold start), then three at once: a busy environment makes
        // another, and a new environment's first invocation is a cold start too.
        let sz = size(&report, mb);
        assert!(sz["error"].is_null(), "{sz}");
        assert!(sz["warm_invocations"].as_u64().unwrap() >= 1, "{sz}");
    }
    let pick = report["recommended_mb"].as_i64().unwrap();
    assert!(
        report["applied"].as_str().unwrap().contains("live"),
        "{report}"
    );
    let live = s.live(PREDICT);
    assert_eq!(live["MemorySize"], pick);
    assert_ne!(live["Version"], live_before["Version"]);
    assert!(stderr(&o).contains("memory_mb"), "says how to keep it");

    // Image B in the registry too; live still runs A, pulled by its digest.
    let b = deploy_image(
        "predict",
        &workspace_binary("predict"),
        &s.dir.path().join("images-b").join("predict"),
        &s.dir.path().join("cache"),
        &["--source-date-epoch", "86400"],
    );
    let digest_b = b["manifest_digest"].as_str().unwrap().to_owned();
    assert_ne!(digest_b, s.digests[0]);
    let images_b = s.dir.path().join("images-b");
    let host = s.registry.host();
    let o = deploy_with_env(
        &[
            "push",
            "--function",
            "predict",
            "--images",
            images_b.to_str().unwrap(),
            "--registry",
            &host,
        ],
        &s.aws.env(true),
    );
    assert!(o.status.success(), "push B: {}", stderr(&o));
    let event = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/events/apigw-v2-predict-digit7.json"),
    )
    .unwrap();
    let answer = ureq::post(&format!(
        "{}/2015-03-31/functions/{PREDICT}/invocations?Qualifier=live",
        s.plane.endpoint()
    ))
    .send(&event[..])
    .unwrap()
    .into_body()
    .read_to_string()
    .unwrap();
    assert!(answer.contains("\\\"digit\\\":7"), "{answer}");
    let ran = s.images_run();
    assert!(
        ran.iter()
            .any(|i| i.ends_with(&format!("@{}", s.digests[0]))),
        "{ran:?}"
    );
    assert!(!ran.iter().any(|i| i.contains(&digest_b)), "{ran:?}");

    // Regression (issue 23, item 9): a release of B whose smoke test fails leaves $LATEST on
    // B while live runs A; a tune then measures A, the image live runs, and puts $LATEST back.
    let o = deploy_with_env(
        &[
            "release",
            "--function",
            "predict",
            "--images",
            images_b.to_str().unwrap(),
            "--registry",
            &host,
            "--invoke-endpoint",
            &sabotaged,
        ],
        &s.aws.env(true),
    );
    assert!(!o.status.success(), "B was released: {}", stderr(&o));
    let latest_image = |s: &Stack| {
        s.aws.lambda().existing(PREDICT)["Code"]["ImageUri"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        latest_image(&s).ends_with(&digest_b),
        "{}",
        latest_image(&s)
    );
    let o = s.ok(
        &[
            "tune",
            "--function",
            "predict",
            "--memory",
            "384",
            "--invocations",
            "2",
            "--json",
        ],
        "deploy tune after a failed release",
    );
    assert!(
        stderr(&o).contains("measuring what live runs"),
        "{}",
        stderr(&o)
    );
    let ran = s.images_run();
    assert!(
        !ran.iter().any(|i| i.contains(&digest_b)),
        "the tune ran B: {ran:?}"
    );
    assert!(latest_image(&s).ends_with(&digest_b), "$LATEST put back");

    // Regression (issue 23, item 10): what is released is what is smoke-tested. An object that
    // is no model is refused from its header before anything changes; weights that pass every
    // check without loading them (NaN in a tensor) go through to the smoke test, which runs the
    // new version's image by digest, with its MODEL_S3_URI, on the data plane, and fails as it
    // would on Lambda; live stays where it was.
    let bucket = s.aws.lambda().configuration(TRAIN, None)["Environment"]["Variables"]
        ["MODEL_BUCKET"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut nan = std::fs::read(shipped_weights()).unwrap();
    let header = u64::from_le_bytes(nan[..8].try_into().unwrap()) as usize;
    nan[8 + header..8 + header + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    s.aws.put(
        &bucket,
        &[
            (
                "models/not-a-model.safetensors".to_owned(),
                b"not a model".to_vec(),
            ),
            ("models/nan.safetensors".to_owned(), nan),
            ("models/empty.safetensors".to_owned(), Vec::new()),
            ("models/short.safetensors".to_owned(), b"\x10\0\0".to_vec()),
        ],
    );
    let live_before = s.live(PREDICT)["Version"].clone();
    for (key, why) in [
        ("not-a-model", "not a model predict can serve"),
        ("empty", "is empty"),
        ("short", "3 bytes, shorter than a safetensors header"),
    ] {
        let uri = format!("s3://{bucket}/models/{key}.safetensors");
        let o = s.deploy(&["release", "--function", "predict", "--model", &uri]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains(why), "{key}: {}", stderr(&o));
        assert_eq!(s.live(PREDICT)["Version"], live_before);
    }
    let uri = format!("s3://{bucket}/models/nan.safetensors");
    let o = s.deploy(&["release", "--function", "predict", "--model", &uri]);
    let err = stderr(&o);
    assert!(!o.status.success(), "a broken model was released: {err}");
    // The version's own process failed at init (loading the model), not the test's.
    assert!(
        err.contains("smoke test") && err.contains("the function failed"),
        "{err}"
    );
    assert_eq!(s.live(PREDICT)["Version"], live_before);

    // An imported model (issue 26): a model file here is uploaded under its SHA-256 and
    // released like trained weights; the new version, run by digest on the data plane with its
    // MODEL_S3_URI, must answer the sample stored in the file with the class of import time.
    let dir = tempfile::tempdir().unwrap();
    let shapes = imported_rgb_model(dir.path());
    let shapes = shapes.to_str().unwrap();
    let o = s.deploy(&[
        "release",
        "--function",
        "predict",
        "--model",
        shapes,
        "--json",
    ]);
    assert!(o.status.success(), "release --model FILE: {}", stderr(&o));
    let r = last_json(&o);
    assert!(
        r["smoke"].as_str().unwrap().contains("stored sample"),
        "{r}"
    );
    let env = s.aws.lambda().configuration(PREDICT, None)["Environment"]["Variables"]
        ["MODEL_S3_URI"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        env.starts_with(&format!("s3://{bucket}/models/imported/")),
        "{env}"
    );
    let live = s.live(PREDICT)["Version"].clone();
    assert_ne!(live, live_before, "live moved to the imported model");
    let again = s.deploy(&["release", "--function", "predict", "--model", shapes]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("already at"), "{}", stderr(&again));
    assert_eq!(s.live(PREDICT)["Version"], live, "nothing changed");
}
