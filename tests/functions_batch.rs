//! predict's batch event (issue 27), through the real function binary under the Runtime API
//! emulator and a real S3 emulator (moto, or LocalStack with `AWS_EMULATOR=localstack`): the
//! images a Distributed Map batch names are scored and written as JSON lines, one bad image
//! fails its item only, and a retried batch overwrites its own result.

use common::aws_emulator::AwsStack;
use common::emulator::Emulator;
use common::*;
use lambda_cnn::api::batch::MAX_OBJECT_BYTES;
use lambda_cnn_test_kit as common;
use serde_json::{json, Value};

fn start_predict(aws: &AwsStack) -> Emulator {
    let mut emu = Emulator::start();
    let mut env = aws.env(false);
    env.push((
        "MODEL_PATH",
        shipped_weights().to_string_lossy().into_owned(),
    ));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    emu.start_function("predict", &env_refs);
    emu
}

fn lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[test]
fn a_batch_of_s3_images_is_scored_into_one_json_lines_object_and_bad_items_fail_alone() {
    let aws = AwsStack::start(false);
    aws.create_bucket("images");
    aws.create_bucket("results");
    let mut objects = Vec::new();
    let mut labels = Vec::new();
    for i in 0..12 {
        let (png, label) = test_digit_png(i);
        objects.push((format!("digits/{i}.png"), png));
        labels.push(label);
    }
    objects.push(("digits/notes.txt".into(), b"not an image".to_vec()));
    // One byte over the cap: refused from its length, never read.
    objects.push((
        "digits/huge.png".into(),
        vec![0u8; MAX_OBJECT_BYTES as usize + 1],
    ));
    aws.put("images", &objects);
    let emu = start_predict(&aws);

    let mut items: Vec<Value> = (0..12)
        .map(|i| json!({"Key": format!("digits/{i}.png"), "Size": objects[i].1.len()}))
        .collect();
    items.push(json!({"Key": "digits/notes.txt"}));
    items.push(json!({"Key": "digits/huge.png"}));
    items.push(json!({"Key": "digits/missing.png"}));
    // Listed over the cap: refused from the listing, without a GET (the object need not exist).
    items.push(json!({"Key": "digits/listed-big.png", "Size": MAX_OBJECT_BYTES + 1}));
    let event = json!({
        "Items": items,
        "BatchInput": {"bucket": "images", "output": "s3://results/run-1/"},
    });
    let report = emu.invoke("predict", &event);
    assert_eq!(report["items"], 16, "{report}\n{}", emu.logs());
    assert_eq!(report["failed"], 4, "{report}");
    assert_eq!(report["not_done"], 0, "{report}");
    let succeeded = report["succeeded"].as_u64().unwrap();
    assert_eq!(succeeded, 12, "{report}");
    let counted: u64 = report["labels"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(counted, 12, "{report}");

    // The result object: one line per item reached, in the batch's order.
    let output = report["output"].as_str().unwrap();
    let key = output.strip_prefix("s3://results/").unwrap();
    assert!(
        key.starts_with("run-1/batch-") && key.ends_with(".jsonl"),
        "{key}"
    );
    let written = lines(&aws.get("results", key).expect("the results are written"));
    assert_eq!(written.len(), 16);
    // Each line names the weights that answered it.
    assert!(
        written.iter().all(|l| l["model"] == report["model"]),
        "{written:?}"
    );
    let mut right = 0;
    for (i, label) in labels.iter().enumerate() {
        let line = &written[i];
        assert_eq!(line["key"], format!("digits/{i}.png"));
        assert_eq!(line["label"], line["digit"].as_u64().unwrap().to_string());
        assert_eq!(line["probabilities"].as_array().unwrap().len(), 10);
        right += usize::from(line["digit"] == json!(label));
    }
    // The shipped model on real test digits, sent as PNGs.
    assert!(right >= 11, "{right}/12 right: {written:?}");
    let error_of = |k: &str| {
        written
            .iter()
            .find(|l| l["key"] == k)
            .and_then(|l| l["error"].as_str())
            .unwrap_or_else(|| panic!("no error line for {k}: {written:?}"))
            .to_owned()
    };
    assert!(
        error_of("digits/notes.txt").contains("not a PNG or JPEG"),
        "{written:?}"
    );
    assert!(error_of("digits/huge.png").contains("over"), "{written:?}");
    assert!(error_of("digits/missing.png").contains("missing.png"));
    assert!(
        error_of("digits/listed-big.png").contains("not read"),
        "{written:?}"
    );

    // A retried batch writes the same object again, not a second one.
    let again = emu.invoke("predict", &event);
    assert_eq!(again["output"], report["output"], "{again}");
    let listed = aws.list("results", "run-1/");
    assert_eq!(listed.len(), 1, "{listed:?}");

    // The same function still answers HTTP.
    let health = emu.invoke(
        "predict",
        &json!({"version": "2.0", "rawPath": "/health",
                "requestContext": {"http": {"method": "GET", "path": "/health"}}}),
    );
    assert_eq!(health["statusCode"], 200, "{health}");
}

#[test]
fn a_malformed_batch_is_a_function_error_that_says_what_a_batch_is() {
    let aws = AwsStack::start(false);
    let emu = start_predict(&aws);
    let (status, body) = emu.invoke_raw(
        "predict",
        json!({"Items": [{"Key": "a.png"}], "BatchInput": {"bucket": "b", "output": "results/"}})
            .to_string()
            .as_bytes(),
    );
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
    assert_eq!(v["errorType"], "InvalidBatch", "{status} {v}");
    let message = v["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("s3://") && message.contains("BatchInput"),
        "{message}"
    );
}
