//! The seed article's Python/TensorFlow function (bench/seed: its §5.2 handler and a Keras
//! predict handler, in an image built from Debian's and PyPI's packages) released by our own
//! `deploy` on the same local Lambda as lambda-cnn — moto's control plane, the registry, the
//! data plane's RIE in Docker sized by MemorySize — and compared from the REPORT lines of both.
//! Proof that `make bench-seed` runs what it says: the seed's image passes the same smoke tests
//! as ours, trains to the seed's accuracy, and the comparison's rows are its logs' figures.

use lambda_cnn_test_kit as common;

use common::aws_emulator::AwsStack;
use common::dataplane::{docker_or_skip, DataPlane, LocalLambda};
use common::emulator::workspace_binary;
use common::image_run::deploy_image;
use common::registry::Registry;
use common::*;
use lambda_cnn::cost::{Arch, Usage};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Output;

const OURS: &str = "lambda-cnn-predict";
const SEED_PREDICT: &str = "lambda-cnn-predict-seed";
const SEED_TRAIN: &str = "lambda-cnn-train-seed";

/// The seed's images (`make seed-images`: bench/seed/build.sh), or why not.
fn seed_images() -> Option<PathBuf> {
    let dir = std::env::var_os("LAMBDA_CNN_SEED_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/seed-images"));
    if dir.join("predict/index.json").is_file() && dir.join("train/index.json").is_file() {
        return Some(dir);
    }
    lambda_cnn::simd::skip(
        "seed",
        &format!(
            "the seed's images are not at {} (`make seed-images` builds them, as root)",
            dir.display()
        ),
    );
    None
}

struct Stack {
    aws: AwsStack,
    registry: Registry,
    plane: DataPlane,
    dir: tempfile::TempDir,
}

impl Stack {
    fn deploy(&self, args: &[&str]) -> Output {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if args.contains(&"push") || args.contains(&"release") {
            all.extend(["--registry".into(), self.registry.host()]);
        }
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut env = self.aws.env(true);
        env.push(("DEPLOY_INVOKE_ENDPOINT", self.plane.endpoint()));
        deploy_with_env(&refs, &env)
    }

    fn ok(&self, args: &[&str]) -> Output {
        let o = self.deploy(args);
        assert!(
            o.status.success(),
            "deploy {args:?} failed: {}\n--- data plane:\n{}",
            stderr(&o),
            self.plane.log()
        );
        o
    }

    /// Every REPORT line CloudWatch Logs holds for `function`.
    fn reports(&self, function: &str) -> Vec<lambda_cnn::report::Report> {
        let mut lines = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut body = json!({"logGroupName": format!("/aws/lambda/{function}")});
            if let Some(t) = &token {
                body["nextToken"] = json!(t);
            }
            let (status, v) = self.aws.call(
                "logs",
                true,
                "POST",
                "/",
                Some("Logs_20140328.FilterLogEvents"),
                Some(body),
            );
            assert_eq!(status, 200, "FilterLogEvents {function}: {v}");
            for e in v["events"].as_array().into_iter().flatten() {
                if let Some(r) = lambda_cnn::report::parse(e["message"].as_str().unwrap_or("")) {
                    lines.push(r);
                }
            }
            // Follow the token while it changes (a page may be empty and still have more).
            match v["nextToken"].as_str() {
                Some(t) if Some(t) != token.as_deref() => token = Some(t.to_owned()),
                _ => break,
            }
        }
        lines
    }
}

fn close(a: Option<f64>, b: f64, what: &str) {
    let a = a.unwrap_or_else(|| panic!("{what}: missing in the table"));
    assert!(
        (a - b).abs() < 1e-6 * b.abs().max(1.0),
        "{what}: table {a}, logs {b}"
    );
}

#[test]
fn the_seeds_function_runs_on_the_data_plane_and_is_compared_from_its_report_lines() {
    let Some(seed) = seed_images() else {
        return;
    };
    if !docker_or_skip("the seed's function on the data plane") {
        return;
    }
    let LocalLambda {
        aws,
        registry,
        plane,
    } = LocalLambda::start();
    let s = Stack {
        aws,
        registry,
        plane,
        dir: tempfile::tempdir().unwrap(),
    };
    let ours = s.dir.path().join("images");
    deploy_image(
        "predict",
        &workspace_binary("predict"),
        &ours.join("predict"),
        &s.dir.path().join("cache"),
        &[],
    );
    let ours_dir = ours.to_str().unwrap();
    let seed_dir = seed.to_str().unwrap();
    s.ok(&["push", "--function", "predict", "--images", ours_dir]);
    s.ok(&["release", "--function", "predict", "--images", ours_dir]);

    // The seed's two functions, released by our deploy: each new version must pass the same
    // smoke test as ours (predict: a real test 7 through API Gateway's event; train: a
    // 500-sample run answering "Test accuracy") before `live` moves.
    s.ok(&["--stage", "seed", "push", "--images", seed_dir]);
    let o = s.ok(&["--stage", "seed", "release", "--images", seed_dir, "--json"]);
    let released: Vec<Value> = stdout(&o)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for (function, passed) in [
        (SEED_PREDICT, "a test digit 7 came back as 7"),
        (SEED_TRAIN, "Test accuracy"),
    ] {
        let r = released
            .iter()
            .find(|r| r["function"] == function)
            .unwrap_or_else(|| panic!("{function} not released: {released:?}"));
        assert_eq!(r["alias"], "live", "{r}");
        assert!(r["smoke"].as_str().unwrap_or("").contains(passed), "{r}");
    }

    // The seed's training run (one epoch of the 60,000: a shortened run) reaches the seed's
    // accuracy, answered in the seed's body shape.
    let o = s.ok(&[
        "--stage",
        "seed",
        "invoke",
        "--function",
        "train",
        "--body",
        r#"{"epochs":1}"#,
        "--json",
    ]);
    let answer = last_json(&o);
    // The body, a JSON string (the seed's `json.dumps(f"Test accuracy: …")`), as read back.
    let text = answer["body"]
        .as_str()
        .unwrap_or_else(|| panic!("not the seed's body shape: {answer}"));
    let accuracy: f64 = text
        .strip_prefix("Test accuracy: ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not the seed's body: {answer}"));
    eprintln!("the seed's train, one epoch: {text}");
    assert!(accuracy >= 0.97, "{text}");

    // Both predicts tuned at the same sizes (neither the release's 1024 MB, so that every
    // REPORT line at these sizes is the tune's), then compared.
    let mut reports = Vec::new();
    for stage in [None, Some("seed")] {
        let mut args = vec![];
        if let Some(st) = stage {
            args.extend(["--stage", st]);
        }
        args.extend([
            "tune",
            "--function",
            "predict",
            "--memory",
            "1769,3008",
            "--invocations",
            "3",
            "--json",
        ]);
        let o = s.ok(&args);
        let path = s
            .dir
            .path()
            .join(format!("tune-{}.json", stage.unwrap_or("ours")));
        std::fs::write(&path, stdout(&o)).unwrap();
        reports.push(path);
    }
    let chart = s.dir.path().join("seed.svg");
    let o = s.ok(&[
        "compare",
        "--ours",
        reports[0].to_str().unwrap(),
        "--theirs",
        reports[1].to_str().unwrap(),
        "--theirs-name",
        "seed",
        "--ours-image",
        ours.join("predict").to_str().unwrap(),
        "--theirs-image",
        seed.join("predict").to_str().unwrap(),
        "--chart",
        chart.to_str().unwrap(),
        "--json",
    ]);
    let table = last_json(&o);
    eprintln!("deploy compare: {table}");
    assert_eq!(table["ours_function"], OURS);
    assert_eq!(table["theirs_function"], SEED_PREDICT);
    // TensorFlow's image is hundreds of megabytes; ours, a few.
    assert!(
        table["theirs_image_mb"].as_f64().unwrap()
            > 10.0 * table["ours_image_mb"].as_f64().unwrap(),
        "{table}"
    );
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{table}");
    for (side, function) in [("ours", OURS), ("theirs", SEED_PREDICT)] {
        let logged = s.reports(function);
        for row in rows {
            let mb = row["memory_mb"].as_u64().unwrap() as u32;
            let at: Vec<_> = logged.iter().filter(|r| r.memory_size_mb == mb).collect();
            assert_eq!(at.len(), 3, "{function} at {mb} MB: {at:?}");
            let cold: Vec<_> = at.iter().filter(|r| r.init_ms.is_some()).collect();
            assert_eq!(
                cold.len(),
                1,
                "{function} at {mb} MB: one cold start: {at:?}"
            );
            let warm: Vec<f64> = at
                .iter()
                .filter(|r| r.init_ms.is_none())
                .map(|r| r.billed_ms)
                .collect();
            let cell = &row[side];
            let what = |f: &str| format!("{function} at {mb} MB: {f}");
            close(
                cell["init_ms"].as_f64(),
                cold[0].init_ms.unwrap(),
                &what("init"),
            );
            let mean = warm.iter().sum::<f64>() / warm.len() as f64;
            close(cell["warm_ms"].as_f64(), mean, &what("warm"));
            // The cost: a million invocations of that mean at that size, at the region's prices.
            let (prices, _) = lambda_cnn::cost::prices_for("us-east-1");
            let usage = Usage::what_if(1_000_000, mean, mb, Arch::X86_64);
            close(
                cell["cost_per_million"].as_f64(),
                lambda_cnn::cost::cost(&usage, prices).total,
                &what("cost"),
            );
            assert_eq!(
                cell["peak_mb"].as_u64(),
                at.iter().map(|r| u64::from(r.max_memory_used_mb)).max(),
                "{}",
                what("peak")
            );
        }
    }
    for row in rows {
        for (ratio, field) in [
            ("warm_ratio", "warm_ms"),
            ("init_ratio", "init_ms"),
            ("cost_ratio", "cost_per_million"),
        ] {
            let of = |side: &str| row[side][field].as_f64().unwrap();
            close(row[ratio].as_f64(), of("theirs") / of("ours"), ratio);
        }
    }
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert_eq!(svg.matches(r#"class="warm theirs""#).count(), 2, "{svg}");
    assert_eq!(svg.matches(r#"class="warm ours""#).count(), 2, "{svg}");
}
