//! The S3 model store through a real AWS API emulator (moto, or LocalStack with
//! `AWS_EMULATOR=localstack`): `train` writes weights and card to `MODEL_BUCKET`, `predict`
//! loads them from `MODEL_S3_URI`.

use common::aws_emulator::AwsStack;
use common::emulator::Emulator;
use common::*;
use lambda_cnn_test_kit as common;
use serde_json::{json, Value};
use std::time::Duration;

fn env_pairs(aws: &AwsStack) -> Vec<(&'static str, String)> {
    aws.env(false)
}

#[test]
fn train_writes_weights_and_card_to_s3_and_predict_serves_them() {
    let aws = AwsStack::start(false);
    aws.create_bucket("models");
    let mut emu = Emulator::start();
    let mut env = env_pairs(&aws);
    env.push(("MNIST_DIR", mnist_dir().to_string_lossy().into_owned()));
    env.push(("MODEL_BUCKET", "models".into()));
    env.push(("MODEL_PREFIX", "/mnist/".into()));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    emu.start_function("train", &env_refs);
    let r = emu.invoke("train", &json!({"epochs": 1, "limit": 1000}));
    assert_eq!(r["statusCode"], 200, "{r}\n{}", emu.logs());
    let sha = r["metrics"]["weights_sha256"].as_str().unwrap().to_owned();
    let weights_uri = r["metrics"]["weights"].as_str().unwrap().to_owned();
    let key = weights_uri
        .strip_prefix("s3://models/")
        .unwrap_or_else(|| panic!("{weights_uri}"));
    assert!(
        key.starts_with("mnist/mnist-cnn-") && key.ends_with(".safetensors"),
        "{key}"
    );

    let bytes = aws
        .get("models", key)
        .expect("the weights are in the bucket");
    assert_eq!(lambda_cnn::model::weights::sha256_hex(&bytes), sha);
    let card_key = r["metrics"]["card"]
        .as_str()
        .unwrap()
        .strip_prefix("s3://models/")
        .unwrap()
        .to_owned();
    let card: Value = serde_json::from_slice(&aws.get("models", &card_key).unwrap()).unwrap();
    assert_eq!(card["weights_sha256"], sha.as_str());
    assert_eq!(card["train_samples"], 1000);

    // predict loads exactly those weights at init.
    let mut env = env_pairs(&aws);
    env.push(("MODEL_S3_URI", weights_uri.clone()));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    emu.start_function("predict", &env_refs);
    let mut health: Value = serde_json::from_slice(
        &std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/events/apigw-v2-predict.json"),
        )
        .unwrap(),
    )
    .unwrap();
    health["rawPath"] = json!("/health");
    health["requestContext"]["http"]["method"] = json!("GET");
    health["requestContext"]["http"]["path"] = json!("/health");
    health["body"] = Value::Null;
    let r = emu.invoke("predict", &health);
    let body: Value = serde_json::from_str(
        r["body"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}\n{}", emu.logs())),
    )
    .unwrap();
    assert_eq!(body, json!({"status": "ok", "model": sha}));
}

#[test]
fn predict_with_a_missing_s3_model_fails_init_with_a_clear_log() {
    let aws = AwsStack::start(false);
    aws.create_bucket("models");
    let mut emu = Emulator::start();
    let mut env = env_pairs(&aws);
    env.push(("MODEL_S3_URI", "s3://models/nope.safetensors".into()));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    emu.start_function("predict", &env_refs);
    let status = emu
        .wait_exit("predict", Duration::from_secs(30))
        .expect("predict exits when its model cannot be loaded");
    assert!(!status.success());
    let log = emu.log("predict");
    assert!(
        log.contains("cannot read s3://models/nope.safetensors") && log.contains("MODEL_S3_URI"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn predict_refuses_an_s3_model_over_the_size_cap_without_reading_it() {
    let aws = AwsStack::start(false);
    aws.create_bucket("models");
    // A "model" over the cap (72 MiB): refused by its length, not read into memory.
    let big = vec![0u8; (lambda_cnn::model::weights::MAX_WEIGHTS_BYTES + 1) as usize];
    aws.put("models", &[("huge.safetensors".to_owned(), big)]);
    let mut emu = Emulator::start();
    let mut env = env_pairs(&aws);
    env.push(("MODEL_S3_URI", "s3://models/huge.safetensors".into()));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    emu.start_function("predict", &env_refs);
    let status = emu
        .wait_exit("predict", Duration::from_secs(30))
        .expect("predict exits when its model is too large");
    assert!(!status.success());
    let log = emu.log("predict");
    let cap = format!(
        "s3://models/huge.safetensors is over {} bytes",
        lambda_cnn::model::weights::MAX_WEIGHTS_BYTES
    );
    assert!(log.contains(&cap), "{log}");
}
