//! Every input the fuzzers kept (`fuzz/corpus/<target>/`) and every crash they found and we
//! fixed (`fuzz/regressions/<target>/`), replayed on the stable toolchain through the same
//! entry points as the targets in `fuzz/fuzz_targets/`: no panic, no 5xx, small errors.

use lambda_cnn::api::event::{response, HttpEvent};
use lambda_cnn::api::predict::{HttpRequest, PredictService, MAX_REQUEST_PIXELS};
use lambda_cnn::api::train::TrainRequest;
use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            out.push((
                e.path().display().to_string(),
                std::fs::read(e.path()).unwrap(),
            ));
        }
    }
    assert!(!out.is_empty(), "no corpus for {target}: run `make fuzz`");
    out
}

#[test]
fn predict_event_corpus_replays_without_a_5xx() {
    let service = PredictService::new(lambda_cnn::model::Cnn::init(1).unwrap(), "fuzz".into());
    for (name, data) in inputs("predict_event") {
        let (selector, rest) = data.split_first().unwrap_or((&0, &[]));
        let reply = if selector & 1 == 0 {
            let Ok(text) = std::str::from_utf8(rest) else {
                continue;
            };
            let Ok(ev) = HttpEvent::parse(text) else {
                continue;
            };
            let Ok(body) = &ev.body else { continue };
            let reply = service.handle(HttpRequest {
                method: &ev.method,
                path: &ev.path,
                content_type: ev.content_type.as_deref(),
                body,
            });
            let _ = response(ev.flavour, &reply);
            reply
        } else {
            let content_type = ["application/json", "image/png", "image/jpeg", "text/plain"]
                [(selector >> 1) as usize % 4];
            service.handle(HttpRequest {
                method: "POST",
                path: "/predict",
                content_type: Some(content_type),
                body: rest,
            })
        };
        assert!(
            reply.status < 500,
            "{name}: {} {}",
            reply.status,
            reply.body
        );
        assert!(
            reply.status == 200 || reply.body.to_string().len() < 1024,
            "{name}"
        );
    }
}

#[test]
fn image_decode_corpus_replays_without_a_panic() {
    for (name, data) in inputs("image_decode") {
        if let Ok(size) = lambda_cnn::predict::image_size(&data) {
            if size.pixels() <= MAX_REQUEST_PIXELS {
                if let Ok(pixels) = lambda_cnn::predict::image_to_pixels(&data) {
                    assert_eq!(pixels.len(), 784, "{name}");
                }
            }
        }
    }
}

#[test]
fn train_request_corpus_replays_without_a_panic() {
    for (name, data) in inputs("train_request") {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        match TrainRequest::parse_text(text).and_then(|r| r.config()) {
            Ok(config) => assert!(config.validate().is_ok(), "{name}"),
            Err(e) => assert!(e.0.len() < 1024, "{name}"),
        }
    }
}

#[test]
fn safetensors_load_corpus_replays_without_a_panic() {
    for (name, data) in inputs("safetensors_load") {
        if let Ok(model) = lambda_cnn::model::Cnn::from_safetensors(&data) {
            model
                .probabilities(&[0.5; 784])
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
