//! `make run` (`local run`, crates/local): the whole pipeline on the local stand-ins — moto, a
//! registry as ECR, the data plane — ends with a summary whose figures come from what ran: the
//! released versions, the predictions of real test digits, a training run and a batch scored
//! through Step Functions; and it stops everything it started.

use common::dataplane::{docker_or_skip, rie_dir};
use common::emulator::{cargo_lambda, workspace_binary};
use lambda_cnn_test_kit as common;
use std::process::Command;

#[test]
fn run_releases_both_functions_predicts_trains_scores_a_batch_and_stops_its_stand_ins() {
    if !docker_or_skip("make run's data plane") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let venv = cargo_lambda()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let out = Command::new(workspace_binary("local"))
        .current_dir(common::root())
        .arg("run")
        .arg("--deploy")
        .arg(workspace_binary("deploy"))
        .arg("--predict")
        .arg(workspace_binary("predict"))
        .arg("--train")
        .arg(workspace_binary("train"))
        .arg("--venv")
        .arg(&venv)
        .arg("--rie-dir")
        .arg(rie_dir())
        .arg("--mnist-dir")
        .arg(common::mnist_dir())
        .arg("--work")
        .arg(work.path())
        .args(["--digits", "4", "--batch", "6"])
        .output()
        .unwrap();
    let stdout = common::stdout(&out);
    assert!(
        out.status.success(),
        "local run failed: {}\n{stdout}\n{}\n--- logs:\n{}",
        out.status,
        common::stderr(&out),
        logs(work.path())
    );
    let summary = stdout
        .split_once("\nsummary\n")
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no summary: {stdout}"));
    for function in ["lambda-cnn-predict", "lambda-cnn-train"] {
        assert!(
            summary
                .lines()
                .any(|l| l.trim_start().starts_with(function) && l.contains("is live")),
            "{function} released as live: {summary}"
        );
    }
    let ran = line(summary, "  ran: ");
    assert!(
        ran.contains("pulled by digest, under AWS's RIE in Docker"),
        "{ran}"
    );
    // The seed's model gets real digits right: at least 3 of the first 4.
    let predictions = line(summary, "  predictions: ");
    let right: usize = predictions.split('/').next().unwrap().parse().unwrap();
    assert!(
        right >= 3 && predictions.contains("/4 right"),
        "{predictions}"
    );
    assert!(
        line(summary, "  training: ").contains("Test accuracy: 0."),
        "{summary}"
    );
    let batch = line(summary, "  batch: ");
    assert!(batch.starts_with("6/6 stored images scored"), "{batch}");
    assert!(
        line(summary, "  cost of 1M predictions").contains('$'),
        "{summary}"
    );
    assert!(
        stdout.trim_end().ends_with("==> stopped the stand-ins"),
        "{stdout}"
    );

    // Nothing of its run is left: moto and the registry no longer listen, no container of the
    // data plane is left, no process names the state folder (the data plane, the registry).
    for what in ["moto", "the registry"] {
        let port = port(&stdout, what);
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "{what} still listens on {port}"
        );
    }
    // No other data plane runs now: cargo test runs one test binary at a time, and nextest
    // runs the tests that start one in its `data-plane` group, one at a time.
    let containers = common::dataplane::docker(&[
        "ps",
        "-a",
        "--filter",
        "label=lambda-cnn.dataplane",
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(containers.trim(), "", "containers left");
    let state = work.path().join("stack");
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(
        !ps.lines().any(|l| l.contains(&*state.to_string_lossy())),
        "a stand-in still runs: {ps}"
    );
}

/// What follows `prefix` on the summary's line that starts with it.
fn line<'a>(summary: &'a str, prefix: &str) -> &'a str {
    summary
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in: {summary}"))
}

/// The port of `what` from its "starting WHAT on 127.0.0.1:PORT" line.
fn port(stdout: &str, what: &str) -> u16 {
    let prefix = format!("==> starting {what} on 127.0.0.1:");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} line in: {stdout}"))
}

fn logs(work: &std::path::Path) -> String {
    let Ok(dir) = std::fs::read_dir(work.join("stack")) else {
        return String::new();
    };
    dir.flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let tail: String = text
                .chars()
                .rev()
                .take(3000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("--- {}\n{tail}", e.path().display())
        })
        .collect()
}
