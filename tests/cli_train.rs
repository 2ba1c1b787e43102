//! `lambda-cnn train`: a short real run learns, writes weights and a card, and ends in JSON.

use common::*;
use lambda_cnn_test_kit as common;

#[test]
fn short_run_on_2000_samples_reaches_80_percent_and_saves_weights_and_card() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("quick.safetensors");
    let mnist = mnist_dir();
    let out = cli(
        &[
            "train",
            "--epochs",
            "1",
            "--limit",
            "2000",
            "--json",
            "--mnist-dir",
            mnist.to_str().unwrap(),
            "--out",
            out_path.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json = last_json(&out);
    for key in [
        "test_accuracy",
        "test_loss",
        "epochs",
        "seconds",
        "samples_per_second",
        "weights",
    ] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    let acc = json["test_accuracy"].as_f64().unwrap();
    assert!(
        acc > 0.80,
        "test accuracy {acc} after one epoch on 2000 samples"
    );
    assert_eq!(json["epochs"], 1);

    // The weights load and the card names them by their SHA-256.
    let (_, sha) = lambda_cnn::model::Cnn::load(&out_path).unwrap();
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("quick.json")).unwrap()).unwrap();
    assert_eq!(card["weights_sha256"], sha.as_str());
    assert_eq!(card["test_accuracy"].as_f64(), Some(acc));
    assert_eq!(card["data_sha256"].as_object().unwrap().len(), 4);

    // Without a terminal, progress is plain lines on stderr.
    assert!(stderr(&out).contains("epoch 1/1"), "{}", stderr(&out));
}

#[test]
fn refuses_invalid_hyper_parameters_before_loading_data() {
    let out = cli(&["train", "--lr=-0.1", "--mnist-dir", "/nonexistent"], b"");
    assert_clean_failure(&out, "learning_rate is -0.1");
    let out = cli(
        &["train", "--epochs", "0", "--mnist-dir", "/nonexistent"],
        b"",
    );
    assert_clean_failure(&out, "epochs is 0; give at least 1");
}

#[test]
fn missing_data_names_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(&["train", "--mnist-dir", dir.path().to_str().unwrap()], b"");
    assert_clean_failure(&out, "train-images-idx3-ubyte not found");
    assert!(stderr(&out).contains("MNIST_DIR"));
}

/// Issue 28: every figure says which machine it is of — the bench names the CPU as the kernel
/// does and the UTC time it measured.
#[test]
fn the_bench_says_which_machine_and_when() {
    let mnist = mnist_dir();
    let out = cli(
        &[
            "bench",
            "--train-only",
            "--steps",
            "10",
            "--warmup",
            "2",
            "--json",
            "--mnist-dir",
            mnist.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let cpu = v["cpu"].as_str().unwrap();
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if let Some(name) = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
    {
        assert_eq!(cpu, name.1.trim());
    }
    assert!(!cpu.is_empty());
    let at = v["measured_at"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(at).is_ok(), "{at}");
    assert!(v["train_samples_per_second"].as_f64().unwrap() > 0.0);
}
