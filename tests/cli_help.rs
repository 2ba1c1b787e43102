//! Every `--help` of the binaries runs and explains itself, and where it names a default, a
//! limit or a format, the claim is current: each is checked here against the code that
//! enforces it, so the help cannot drift from the behaviour.

use common::*;
use lambda_cnn::train::TrainConfig;
use lambda_cnn_test_kit as common;

fn help_of(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} --help failed: {}",
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.len() > 80, "{what} --help says too little:\n{text}");
    text
}

#[test]
fn every_subcommand_of_both_binaries_explains_itself() {
    for sub in ["train", "eval", "predict", "import", "check-data", "bench"] {
        let text = help_of(cli(&[sub, "--help"], b""), &format!("lambda-cnn {sub}"));
        assert!(
            text.contains("--json"),
            "lambda-cnn {sub} --help lacks --json"
        );
    }
    for sub in [
        "build", "image", "push", "release", "api", "role", "rollback", "destroy", "monitor",
        "cost", "doctor", "all", "tune", "status", "invoke", "logs", "policy", "compare",
    ] {
        let text = help_of(deploy(&[sub, "--help"]), &format!("deploy {sub}"));
        // The global flags are offered everywhere.
        for flag in ["--json", "--dry-run", "--config"] {
            assert!(text.contains(flag), "deploy {sub} --help lacks {flag}");
        }
    }
}

/// The local stack's binary: each subcommand explains itself and points at its doc; what it
/// cannot work with is refused with what to do, before it starts anything.
#[test]
fn the_local_stack_explains_itself_and_refuses_what_it_cannot_run() {
    // Arguments as one line: none of them has a space.
    let local = |args: &str| {
        std::process::Command::new(common::emulator::workspace_binary("local"))
            .args(args.split_whitespace())
            .current_dir(common::root())
            .output()
            .unwrap()
    };
    let top = help_of(local("--help"), "local");
    assert!(top.contains("docs/local.md"), "{top}");
    for sub in ["dataplane", "run", "serve"] {
        help_of(local(&format!("{sub} --help")), &format!("local {sub}"));
    }
    let missing = local(
        "run --deploy x --predict x --train x --mnist-dir x --model /nonexistent/model.safetensors",
    );
    assert_eq!(missing.status.code(), Some(1), "{}", stderr(&missing));
    let err = stderr(&missing);
    assert!(
        err.starts_with("error: MODEL=/nonexistent/model.safetensors: no such file")
            && err.contains("lambda-cnn import"),
        "{err}"
    );
    let dataplane = "dataplane --lambda-endpoint http://127.0.0.1:9 --registry 127.0.0.1:9 \
                     --registry-password x";
    let state = std::env::temp_dir().join("lambda-cnn-no-rie");
    let no_rie = local(&format!(
        "{dataplane} --rie-dir /nonexistent --state-dir {}",
        state.display()
    ));
    assert_eq!(no_rie.status.code(), Some(1), "{}", stderr(&no_rie));
    assert!(
        stderr(&no_rie).contains("no Runtime Interface Emulator at /nonexistent/aws-lambda-rie-")
            && stderr(&no_rie).contains("run `make tools`"),
        "{}",
        stderr(&no_rie)
    );
    // A forward service that is not SERVICE=URL is a usage error, named.
    let bad = local(&format!(
        "{dataplane} --state-dir {} --forward http://127.0.0.1:9 --forward-service s3",
        state.display()
    ));
    let err = stderr(&bad);
    assert!(err.contains("\"s3\" is not SERVICE=URL"), "{err}");

    // Regression: with stdout gone (`local run | head`), the first progress line panicked, and
    // what had started stayed up. Now the run goes on to its own error, and stops.
    let work = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let closed = std::process::Command::new(common::emulator::workspace_binary("local"))
        .args([
            "run",
            "--deploy",
            "x",
            "--predict",
            "x",
            "--train",
            "x",
            "--mnist-dir",
            "x",
        ])
        .arg("--venv")
        .arg(work.path().join("no-venv"))
        .arg("--work")
        .arg(work.path())
        .env("LAMBDA_CNN_NO_DOCKER", "1")
        .current_dir(common::root())
        .stdout(writer)
        .output()
        .unwrap();
    let err = stderr(&closed);
    assert_eq!(closed.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.starts_with("error: no moto at ") && err.contains("run `make tools`"),
        "{err}"
    );
}

#[test]
fn the_train_defaults_shown_are_the_ones_training_uses() {
    let text = help_of(cli(&["train", "--help"], b""), "lambda-cnn train");
    let d = TrainConfig::default();
    for (flag, value) in [
        ("--epochs", d.epochs.to_string()),
        ("--batch-size", d.batch_size.to_string()),
        ("--optimizer", d.optimizer.to_string()),
        ("--lr", d.learning_rate.to_string()),
        ("--seed", d.seed.to_string()),
    ] {
        // The flag's block: its line and what follows up to the next flag.
        let mut block = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with(flag));
        let first = block.next().unwrap_or_default().to_owned();
        let line = first
            + &block
                .take_while(|l| {
                    !l.trim_start().starts_with('-') || l.trim_start().starts_with("- ")
                })
                .collect::<String>();
        assert!(
            line.contains(&format!("[default: {value}]")),
            "{flag}: {line:?} should show the default {value}"
        );
    }
}

#[test]
fn predict_takes_any_picture_as_its_help_says() {
    let text = help_of(cli(&["predict", "--help"], b""), "lambda-cnn predict");
    assert!(text.contains("any size"), "{text}");
    // A test digit as a larger picture, dark on light: what the help promises to read.
    let test = mnist_test();
    let (w, h) = (120u32, 90u32);
    let img = image::GrayImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as i64 - 30, y as i64 - 10);
        if (0..70).contains(&dx) && (0..70).contains(&dy) {
            let v = test.image(0)[(dy as usize * 28 / 70) * 28 + dx as usize * 28 / 70];
            image::Luma([255 - v])
        } else {
            image::Luma([255])
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("seven.png");
    img.save(&file).unwrap();
    let weights = shipped_weights();
    let out = cli(
        &[
            "predict",
            "--weights",
            weights.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["digit"], test.labels[0], "{v}");
}

#[test]
fn the_regions_cost_names_as_priced_have_price_tables() {
    let text = help_of(deploy(&["cost", "--help"]), "deploy cost");
    let named: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| {
            let parts: Vec<&str> = w.split('-').collect();
            parts.len() == 3 && parts[2].chars().all(|c| c.is_ascii_digit()) && parts[0].len() == 2
        })
        .collect();
    assert!(named.len() >= 3, "{text}");
    let fallback = named[0];
    for region in &named {
        let (prices, note) = lambda_cnn::cost::prices_for(region);
        assert!(
            note.is_none() && prices.region == *region,
            "deploy cost --help names {region} as priced, but it has no table"
        );
    }
    assert_eq!(lambda_cnn::cost::prices_for("eu-west-1").0.region, fallback);
}

#[test]
fn tune_refuses_what_lambda_would_before_touching_the_function() {
    // No AWS is reachable here: each refusal must come before any call.
    let unreachable = [("AWS_ENDPOINT_URL", "http://127.0.0.1:9".to_owned())];
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    std::fs::write(&big, format!("\"{}\"", "x".repeat(6 * 1024 * 1024))).unwrap();
    let not_json = dir.path().join("event.json");
    std::fs::write(&not_json, "epochs=1").unwrap();
    for (args, says) in [
        (vec!["--memory", "64,512"], "128 to 10240"),
        (vec!["--memory", "512,20000"], "20000"),
        (vec!["--strategy", "cheap"], "cheap"),
        (vec!["--weight", "1.5"], "weight from 0 to 1"),
        (vec!["--invocations", "1"], "2..=1000"),
        (
            vec!["--payload", "/nonexistent/event.json"],
            "/nonexistent/event.json",
        ),
        (
            vec!["--payload", big.to_str().unwrap()],
            "at most 6291456 bytes",
        ),
        (vec!["--payload", not_json.to_str().unwrap()], "is not JSON"),
    ] {
        let mut all = vec!["tune", "--function", "predict"];
        all.extend(args.iter().copied());
        let o = deploy_with_env(&all, &unreachable);
        let err = stderr(&o);
        assert!(!o.status.success(), "{all:?}: {err}");
        assert!(err.contains(says), "{all:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// Issue 24, item 6: a number out of Lambda's range is a usage error (exit 2, said by clap
/// before anything runs), and what the config cannot do is refused before connecting.
#[test]
fn out_of_range_numbers_are_usage_errors_and_jwt_without_an_issuer_is_refused_first() {
    let unreachable = [("AWS_ENDPOINT_URL", "http://127.0.0.1:9".to_owned())];
    for (args, says) in [
        (
            vec!["tune", "--function", "predict", "--memory", "64"],
            "128 to 10240",
        ),
        (vec!["cost", "--memory-mb", "64"], "128 to 10240"),
        (vec!["cost", "--memory-mb", "20000"], "128 to 10240"),
        (vec!["cost", "--duration-ms", "1e9"], "900000"),
        (vec!["cost", "--invocations=-5"], "0 or more"),
        (vec!["cost", "--ephemeral-mb", "100"], "512..=10240"),
        (vec!["rollback", "--to", "0"], "1.."),
    ] {
        let o = deploy_with_env(&args, &unreachable);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let o = deploy_with_env(&["api", "--auth", "jwt"], &unreachable);
    assert_clean_failure(&o, "jwt_issuer and api.jwt_audience");
}

/// `deploy compare` reads files a person names: a missing one or one that is not a tune report
/// is a one-line error naming the file, never a panic.
#[test]
fn compare_refuses_what_is_not_a_tune_report_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let not_json = dir.path().join("notes.txt");
    std::fs::write(&not_json, "a table\n").unwrap();
    let missing = dir.path().join("missing.json");
    let o = deploy(&[
        "compare",
        "--ours",
        missing.to_str().unwrap(),
        "--theirs",
        not_json.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "cannot read the tune report");
    assert!(stderr(&o).contains("missing.json"), "{}", stderr(&o));
    let o = deploy(&[
        "compare",
        "--ours",
        not_json.to_str().unwrap(),
        "--theirs",
        not_json.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "is not a `deploy tune --json` report");
}

/// Issue 24, item 2: a plan is made from the account's state, so a dry run that cannot reach
/// AWS says so (naming where it tried) instead of printing a plan and exiting 0; and `image
/// --dry-run` writes nothing.
#[test]
fn a_dry_run_without_aws_fails_and_an_image_dry_run_writes_nothing() {
    let unreachable = [
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9".to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
    ];
    let o = deploy_with_env(
        &["api", "--dry-run", "--rest", "--auth", "iam"],
        &unreachable,
    );
    assert_clean_failure(
        &o,
        "cannot reach STS at http://127.0.0.1:9 (region us-east-1",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("img");
    let o = deploy(&[
        "--dry-run",
        "image",
        "--function",
        "predict",
        "--binary",
        "/bin/true",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("would build the predict image"),
        "{}",
        stdout(&o)
    );
    assert!(!out.exists(), "a dry run wrote {}", out.display());
}

/// Issue 24, items 4 and 7: `--version` names the git revision; completions come from the same
/// definition as the parser; a region that is no region name is refused before any call;
/// `--quiet` and `-v` are opposites.
#[test]
fn version_completions_region_typos_and_quiet() {
    let o = deploy(&["--version"]);
    let v = stdout(&o);
    assert!(v.starts_with("deploy 0.") && v.contains("(git "), "{v}");
    assert!(
        !v.contains("unknown revision"),
        "built from a git checkout: {v}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let o = deploy(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        for sub in ["status", "invoke", "logs", "rollback"] {
            assert!(stdout(&o).contains(sub), "{shell} completions lack {sub}");
        }
    }
    let keys = [
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9".to_owned()),
    ];
    let o = deploy_with_env(&["--region", "us-east", "status"], &keys);
    assert_clean_failure(&o, "\"us-east\" (from --region) is not an AWS region name");
    let o = deploy_with_env(&["--quiet", "-v", "status"], &keys);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Issue 24, item 4: the doctor prints its table also when it cannot sign in (the identity
/// FAILs, the local checks run), and tells "found problems" (1) from "could not run" (3).
#[test]
fn doctor_without_credentials_prints_its_table_and_its_exit_codes_differ() {
    let home = tempfile::tempdir().unwrap();
    let none = [
        ("HOME", home.path().display().to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9".to_owned()),
    ];
    let o = deploy_with_clean_aws_env(&["doctor"], &none);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{}", stderr(&o));
    let first = out.lines().next().unwrap_or_default();
    assert!(first.starts_with("FAIL identity"), "{out}");
    assert!(first.contains("no credentials found"), "{first}");
    assert!(first.len() < 400, "one readable line: {first}");
    for row in ["memory", "timeout", "architecture", "mnist"] {
        assert!(out.contains(row), "{row} missing:\n{out}");
    }
    let o = deploy_with_clean_aws_env(&["doctor", "--json"], &none);
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[0]["level"], "FAIL");
    assert_eq!(rows[0]["check"], "identity");
    let o = deploy_with_clean_aws_env(&["--config", "/nonexistent/deploy.toml", "doctor"], &none);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("/nonexistent/deploy.toml"),
        "{}",
        stderr(&o)
    );
}

/// Issue 24, item 7: a second copy deploys beside the first under `--stage`: every name the
/// deploy creates gets the suffix, so the policy for it names those.
#[test]
fn a_stage_renames_what_the_deploy_creates() {
    let o = deploy(&["--stage", "dev", "policy", "--account", "123456789012"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let policy = stdout(&o);
    for name in [
        "function:lambda-cnn-predict-dev",
        "repository/lambda-cnn-dev",
        "role/lambda-cnn-execution-dev",
        "/aws/lambda/lambda-cnn-train-dev",
    ] {
        assert!(policy.contains(name), "{name} not in:\n{policy}");
    }
    let o = deploy(&["--stage", "Dev!", "policy", "--account", "123456789012"]);
    assert_clean_failure(&o, "--stage");
}

/// The routes `deploy api --help` names are the ones the handler serves and the API creates:
/// every route of the one table, each with its method.
#[test]
fn the_api_help_names_every_route() {
    let text = help_of(deploy(&["api", "--help"]), "deploy api");
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for route in &lambda_cnn::routes::ROUTES {
        assert!(
            text.contains(&route.key()),
            "deploy api --help lacks {}:\n{text}",
            route.key()
        );
    }
}
