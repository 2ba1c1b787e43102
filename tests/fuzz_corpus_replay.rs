//! Every input the fuzzers kept (`fuzz/corpus/<target>/`) and every crash they found and we
//! fixed (`fuzz/regressions/<target>/`), replayed on the stable toolchain through the same
//! properties the targets in `fuzz/fuzz_targets/` check (`lambda_cnn::api::fuzzing`).

use lambda_cnn::api::fuzzing;
use std::path::Path;

fn replay(target: &str, check: impl Fn(&[u8]) -> Result<(), String>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    // The regressions folder says what it holds (its README), even while it holds nothing.
    assert!(
        root.join("regressions/README.md").is_file(),
        "fuzz/regressions/README.md is missing"
    );
    let mut inputs = 0;
    for dir in ["corpus", "regressions"] {
        let folder = root.join(dir).join(target);
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            // No crash of this target was kept: nothing of it to replay.
            Err(e) if dir == "regressions" && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("cannot read {}: {e}", folder.display()),
        };
        for e in entries {
            let e = e.unwrap_or_else(|e| panic!("cannot list {}: {e}", folder.display()));
            let data = std::fs::read(e.path()).unwrap();
            if let Err(what) = check(&data) {
                panic!("{}: {what}", e.path().display());
            }
            inputs += 1;
        }
    }
    assert!(inputs > 0, "no corpus for {target}: run `make fuzz`");
}

#[test]
fn predict_event_corpus_replays_without_a_5xx() {
    let service = lambda_cnn::api::predict::PredictService::new(
        lambda_cnn::net::Network::seed(lambda_cnn::model::Cnn::init(1).unwrap()).unwrap(),
        "fuzz".into(),
    )
    .unwrap();
    replay("predict_event", |d| fuzzing::predict_event(&service, d));
}

#[test]
fn image_decode_corpus_replays_without_a_panic() {
    replay("image_decode", fuzzing::image_decode);
}

#[test]
fn train_request_corpus_replays_without_a_panic() {
    replay("train_request", fuzzing::train_request);
}

#[test]
fn safetensors_load_corpus_replays_without_a_panic() {
    replay("safetensors_load", fuzzing::safetensors_load);
}

#[test]
fn model_import_corpus_replays_without_a_panic() {
    replay("model_import", fuzzing::model_import);
}
