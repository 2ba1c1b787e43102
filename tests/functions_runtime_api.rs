//! The `train` and `predict` functions, release-built, as real runtime clients of the real
//! Runtime API emulator (`cargo lambda watch`), invoked over HTTP the way Lambda invokes them.

use base64::Engine;
use common::emulator::Emulator;
use common::events::{event, fixture, http, start_predict, Flavour};
use common::*;
use lambda_cnn_test_kit as common;
use serde_json::{json, Value};

#[test]
fn train_answers_in_the_seeds_shape_with_metrics() {
    let mut emu = Emulator::start();
    emu.start_function("train", &[("MNIST_DIR", mnist_dir().to_str().unwrap())]);
    let r = emu.invoke("train", &json!({"epochs": 1, "limit": 3000}));
    assert_eq!(r["statusCode"], 200, "{r}\n{}", emu.logs());
    let body = r["body"].as_str().unwrap();
    let acc_text = body
        .strip_prefix("\"Test accuracy: ")
        .and_then(|b| b.strip_suffix('"'))
        .unwrap_or_else(|| panic!("body {body:?}"));
    assert_eq!(
        acc_text.len(),
        4,
        "two decimals, as the seed's f-string: {body}"
    );
    let m = &r["metrics"];
    let acc = m["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.8, "accuracy {acc}");
    assert_eq!(acc_text, format!("{acc:.2}"));
    for key in [
        "test_loss",
        "epochs",
        "seconds",
        "samples_per_second",
        "weights",
    ] {
        assert!(!m[key].is_null(), "metrics lack {key}: {r}");
    }
    assert_eq!(r["completed"], true);
    // The weights it reports are real, loadable and match the reported hash.
    let (_, sha) =
        lambda_cnn::model::Cnn::load(std::path::Path::new(m["weights"].as_str().unwrap())).unwrap();
    assert_eq!(m["weights_sha256"], sha.as_str());
    // Structured logs and an EMF record.
    let log = emu.log("train");
    assert!(log.contains("\"requestId\""), "{log}");
    assert!(log.contains("\"TestAccuracy\""), "{log}");
    assert!(
        log.contains("\"outcome\":\"ok\"") && log.contains("\"duration_ms\""),
        "{log}"
    );
}

#[test]
fn train_refuses_bad_events_with_typed_errors_and_keeps_serving() {
    let mut emu = Emulator::start();
    emu.start_function("train", &[("MNIST_DIR", mnist_dir().to_str().unwrap())]);
    let pid = emu.pid("train");
    for (payload, expect) in [
        (json!({"epochs": 0}), "allowed: 1..=50"),
        (json!({"epochs": 51}), "allowed: 1..=50"),
        (json!({"batch_size": 0}), "allowed: 1..=4096"),
        (json!({"batch_size": 4097}), "allowed: 1..=4096"),
        (json!({"learning_rate": 0}), "positive number"),
        (json!({"learning_rate": -0.5}), "positive number"),
        (json!({"optimizer": "rmsprop"}), "expected `adam` or `sgd`"),
        (json!({"epoch": 1}), "unknown field `epoch`"),
        (json!({"epochs": "five"}), "invalid type"),
        (json!({"limit": 1.5}), "invalid type"),
        (json!([1, 2, 3]), "must be a JSON object"),
        (json!({"learning_rate": 1e-46}), "(0 as the f32"),
        (
            json!({"optimizer": "sgd", "momentum": 0.99999999999f64}),
            "(1 as the f32",
        ),
        (json!({"momentum": 0.9}), "the optimizer is adam"),
        (
            json!({"limit": 10, "batch_size": 32}),
            "larger than limit 10",
        ),
        (json!({"x".repeat(100_000): 1}), "unknown field"),
    ] {
        let r = emu.invoke("train", &payload);
        assert_eq!(r["errorType"], "InvalidRequest", "{payload}: {r}");
        let msg = r["errorMessage"].as_str().unwrap();
        assert!(msg.contains(expect), "{payload}: {msg}");
        assert!(msg.len() < 1024, "{} bytes", msg.len());
    }
    // JSON that serde cannot hold is an InvalidRequest too, not the runtime's DeserializeError.
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    for (payload, expect) in [
        (&b"{\"epochs\": 1e400}"[..], "number out of range"),
        (deep.as_bytes(), "recursion limit"),
    ] {
        let (_, body) = emu.invoke_raw("train", payload);
        let r: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(r["errorType"], "InvalidRequest", "{r}");
        assert!(r["errorMessage"].as_str().unwrap().contains(expect), "{r}");
    }
    // Not JSON at all: the runtime refuses it; the process lives on.
    let (status, _) = emu.invoke_raw("train", b"{not json");
    assert!(status >= 400);
    assert!(emu.functions_alive(), "{}", emu.logs());
    let r = emu.invoke("train", &json!({"epochs": 1, "limit": 300}));
    assert_eq!(r["statusCode"], 200, "{r}");
    assert_eq!(emu.pid("train"), pid);
    assert!(emu.functions_alive());
    // Each refusal is logged with its outcome.
    let log = emu.log("train");
    assert!(log.contains("\"outcome\":\"InvalidRequest\""), "{log}");
}

#[test]
fn train_reports_missing_data_as_a_typed_error() {
    let mut emu = Emulator::start();
    let empty = tempfile::tempdir().unwrap();
    emu.start_function("train", &[("MNIST_DIR", empty.path().to_str().unwrap())]);
    let r = emu.invoke("train", &json!({"epochs": 1, "limit": 100}));
    assert_eq!(r["errorType"], "DataUnavailable", "{r}");
    assert!(
        r["errorMessage"]
            .as_str()
            .unwrap()
            .contains("train-images-idx3-ubyte not found"),
        "{r}"
    );
    assert!(emu.functions_alive());
}

#[test]
fn predict_recognises_real_digits_in_every_input_form_and_event_flavour() {
    let emu = start_predict();
    let test = common::mnist_test();
    let (_, model_sha) = lambda_cnn::model::Cnn::load(&shipped_weights()).unwrap();
    for (n, flavour) in [Flavour::RestV1, Flavour::HttpV2, Flavour::FunctionUrl]
        .into_iter()
        .enumerate()
    {
        for k in 0..3 {
            let i = n * 3 + k;
            let (png, label) = test_digit_png(i);
            let pixels = json!({"pixels": test.image(i)}).to_string();
            let b64 = json!({"image": base64::engine::general_purpose::STANDARD.encode(&png)})
                .to_string();
            for (ct, body, base64) in [
                ("application/json", pixels.as_bytes(), false),
                ("application/json", b64.as_bytes(), false),
                ("image/png", &png[..], true),
            ] {
                let (status, r) = http(
                    &emu,
                    event(flavour, "POST", "/predict", Some(ct), body, base64),
                );
                assert_eq!(status, 200, "{flavour:?} {ct}: {r}");
                assert_eq!(r["digit"], label as u64, "{flavour:?} {ct} digit {i}: {r}");
                assert_eq!(r["probabilities"].as_array().unwrap().len(), 10);
                assert_eq!(r["model"], model_sha.as_str());
            }
        }
    }
    // A batch of instances, mixing both JSON forms.
    let instances: Vec<Value> = (20..30)
        .map(|i| {
            if i % 2 == 0 {
                json!({"pixels": test.image(i)})
            } else {
                json!({"image": base64::engine::general_purpose::STANDARD.encode(test_digit_png(i).0)})
            }
        })
        .collect();
    let body = json!({ "instances": instances }).to_string();
    let (status, r) = http(
        &emu,
        event(
            Flavour::HttpV2,
            "POST",
            "/predict",
            Some("application/json"),
            body.as_bytes(),
            false,
        ),
    );
    assert_eq!(status, 200, "{r}");
    let digits: Vec<u64> = r["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["digit"].as_u64().unwrap())
        .collect();
    let labels: Vec<u64> = (20..30).map(|i| test.labels[i] as u64).collect();
    assert_eq!(digits, labels);
    // Health, in every flavour.
    for flavour in [Flavour::RestV1, Flavour::HttpV2, Flavour::FunctionUrl] {
        let (status, r) = http(&emu, event(flavour, "GET", "/health", None, b"", false));
        assert_eq!(
            (status, r),
            (200, json!({"status": "ok", "model": model_sha})),
            "{flavour:?}"
        );
    }
    // The recorded example docs/cli-and-functions.md shows.
    let r = emu.invoke("predict", &fixture("apigw-v2-predict-digit7.json"));
    assert_eq!(
        serde_json::from_str::<Value>(r["body"].as_str().unwrap()).unwrap()["digit"],
        7
    );
    // Cold start is logged, with the time from exec to ready.
    assert!(emu.log("predict").contains("\"init_ms\""));
}

/// Method, path, content type, body, whether the event base64-encodes it, expected status.
type BadCase<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, bool, u64);

#[test]
fn predict_answers_every_bad_request_with_a_4xx_and_serves_the_next_one() {
    let mut emu = start_predict();
    let pid = emu.pid("predict");
    let (good_png, good_label) = test_digit_png(3);
    let mut short = vec![0u8; 783];
    short.push(0);
    short.pop();
    let mut nan_like = vec![json!(0); 784];
    nan_like[10] = json!("NaN");
    let mut neg = vec![json!(0); 784];
    neg[0] = json!(-1);
    let huge = image::GrayImage::new(4097, 4097);
    let mut huge_png = Vec::new();
    huge.write_to(
        &mut std::io::Cursor::new(&mut huge_png),
        image::ImageFormat::Png,
    )
    .unwrap();
    let too_many = json!({"instances": vec![json!({"pixels": vec![0; 784]}); 257]}).to_string();
    let over_6mb = vec![b'7'; 6 * 1024 * 1024 + 10];
    let json_ct = Some("application/json");
    let cases: Vec<BadCase> = vec![
        (
            "POST",
            "/predict",
            json_ct,
            b"{\"pixels\": [0, 1,".to_vec(),
            false,
            400,
        ),
        (
            "POST",
            "/predict",
            json_ct,
            json!({"pixels": short}).to_string().into_bytes(),
            false,
            400,
        ),
        (
            "POST",
            "/predict",
            json_ct,
            json!({"pixels": nan_like}).to_string().into_bytes(),
            false,
            400,
        ),
        (
            "POST",
            "/predict",
            json_ct,
            json!({"pixels": neg}).to_string().into_bytes(),
            false,
            400,
        ),
        (
            "POST",
            "/predict",
            json_ct,
            json!({"image": "%%%not base64"}).to_string().into_bytes(),
            false,
            400,
        ),
        (
            "POST",
            "/predict",
            json_ct,
            json!({"image": "aGVsbG8gd29ybGQ="})
                .to_string()
                .into_bytes(),
            false,
            400,
        ),
        (
            "POST",
            "/predict",
            Some("image/png"),
            b"this is not a png".to_vec(),
            true,
            400,
        ),
        ("POST", "/predict", Some("image/png"), huge_png, true, 413),
        (
            "POST",
            "/predict",
            json_ct,
            too_many.into_bytes(),
            false,
            413,
        ),
        ("POST", "/predict", json_ct, over_6mb, false, 413),
        (
            "POST",
            "/predict",
            Some("text/plain"),
            b"7".to_vec(),
            false,
            415,
        ),
        ("POST", "/nowhere", json_ct, b"{}".to_vec(), false, 404),
        ("GET", "/predict", None, Vec::new(), false, 405),
        ("DELETE", "/health", None, Vec::new(), false, 405),
    ];
    for (method, path, ct, body, b64, expect) in cases {
        let (status, r) = http(&emu, event(Flavour::HttpV2, method, path, ct, &body, b64));
        assert_eq!(status, expect, "{method} {path} {ct:?}: {r}");
        assert!(
            r["error"].as_str().is_some_and(|m| m.len() > 10),
            "no message: {r}"
        );
        // The same process serves the next good request.
        let (status, r) = http(
            &emu,
            event(
                Flavour::HttpV2,
                "POST",
                "/predict",
                Some("image/png"),
                &good_png,
                true,
            ),
        );
        assert_eq!(
            (status, r["digit"].as_u64()),
            (200, Some(good_label as u64)),
            "after {method} {path}"
        );
    }
    // An event that is not an HTTP event at all is a function error, not a crash.
    let (status, _) = emu.invoke_raw("predict", b"{\"hello\": 1}");
    assert!(status >= 400);
    assert!(emu.functions_alive(), "{}", emu.logs());
    assert_eq!(emu.pid("predict"), pid);
    let (status, _) = http(
        &emu,
        event(Flavour::RestV1, "GET", "/health", None, b"", false),
    );
    assert_eq!(status, 200);
}

/// The seed's own run through the function: `{}` is 5 epochs of Adam at batch 32 on all of
/// MNIST (about a minute here). Not in `make test`; run with
/// `cargo test --release --test functions_runtime_api -- --ignored`.
#[test]
#[ignore = "the full 5-epoch training run; about a minute"]
fn train_empty_event_runs_the_seeds_full_training() {
    let mut emu = Emulator::start();
    emu.start_function("train", &[("MNIST_DIR", mnist_dir().to_str().unwrap())]);
    let r = emu.invoke("train", &json!({}));
    assert_eq!(r["statusCode"], 200, "{r}\n{}", emu.logs());
    assert_eq!(r["completed"], true);
    assert_eq!(r["metrics"]["epochs"], 5);
    let acc = r["metrics"]["test_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.985, "the seed's run reached {acc}");
    assert_eq!(r["body"], format!("\"Test accuracy: {acc:.2}\""));
}

/// A PyTorch user's RGB model (24×24×3, ImageNet mean/std, five shape labels), imported with
/// `lambda-cnn import` and served by the same predict binary from MODEL_PATH: raw pixels with
/// `"preprocess": "none"` get the framework's own probabilities, an uploaded picture of any
/// size is resized, the page is an upload with the model's labels, and a request is capped by
/// the model's input size.
#[test]
fn predict_serves_an_imported_rgb_model_with_its_labels() {
    let expect: Value = serde_json::from_str(
        &std::fs::read_to_string(model_fixtures().join("rgb-torch.expect.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = imported_rgb_model(dir.path());
    let labels = RGB_LABELS;

    let mut emu = Emulator::start();
    emu.start_function("predict", &[("MODEL_PATH", model.to_str().unwrap())]);
    let post = |body: &Value| {
        http(
            &emu,
            event(
                Flavour::HttpV2,
                "POST",
                "/predict",
                Some("application/json"),
                body.to_string().as_bytes(),
                false,
            ),
        )
    };
    let inputs = expect["inputs"].as_array().unwrap();
    let framework = expect["probabilities"].as_array().unwrap();
    for (input, want) in inputs.iter().zip(framework).take(4) {
        let (status, r) = post(&json!({"pixels": input, "preprocess": "none"}));
        assert_eq!(status, 200, "{r}");
        let got = r["probabilities"].as_array().unwrap();
        assert_eq!(got.len(), 5, "{r}");
        for (g, w) in got.iter().zip(want.as_array().unwrap()) {
            let d = (g.as_f64().unwrap() - w.as_f64().unwrap()).abs();
            assert!(d <= 1e-4, "{g} vs PyTorch's {w}: {r}");
        }
        let class = r["class"].as_u64().unwrap() as usize;
        assert_eq!(r["label"], labels[class], "{r}");
        assert!(r.get("digit").is_none(), "no digit for shapes: {r}");
    }
    // A picture of another size, sent as it is: resized to 24×24 by the model's preprocessing.
    let img = image::RgbImage::from_fn(97, 61, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 4) as u8, 90])
    });
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let (status, r) = http(
        &emu,
        event(
            Flavour::RestV1,
            "POST",
            "/predict",
            Some("image/png"),
            &png,
            true,
        ),
    );
    assert_eq!(status, 200, "{r}");
    assert!(labels.contains(&r["label"].as_str().unwrap()), "{r}");
    // The same picture as it is, without resizing: refused with the model's size.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let (status, r) = post(&json!({"image": b64, "preprocess": "none"}));
    assert_eq!(status, 400, "{r}");
    assert!(r["error"].as_str().unwrap().contains("24×24"), "{r}");
    // Pixels are the model's size, not MNIST's; a preprocessing it does not have is named.
    let (status, r) = post(&json!({"pixels": vec![0; 784]}));
    assert_eq!(status, 400, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("expected 1728 (24×24×3, row-major, channels last"),
        "{r}"
    );
    let (status, r) = post(&json!({"pixels": inputs[0], "preprocess": "digit"}));
    assert_eq!(status, 400, "{r}");
    assert!(r["error"].as_str().unwrap().contains("\"resize\""), "{r}");
    // Instances answer each with its label.
    let (status, r) = post(&json!({"instances": [
        {"pixels": inputs[0], "preprocess": "none"},
        {"pixels": inputs[1], "preprocess": "none"},
    ]}));
    assert_eq!(status, 200, "{r}");
    let preds = r["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 2);
    assert!(preds
        .iter()
        .all(|p| labels.contains(&p["label"].as_str().unwrap())));
    // The page: an upload, every label, no canvas to draw on.
    let page = emu.invoke(
        "predict",
        &event(Flavour::HttpV2, "GET", "/", None, b"", false),
    );
    let html = page["body"].as_str().unwrap();
    assert!(html.contains("data-mode=\"upload\""), "{html}");
    for l in labels {
        assert!(
            html.contains(&format!("&quot;{l}&quot;")),
            "{l} on the page"
        );
    }
    assert!(emu.functions_alive(), "{}", emu.logs());
}
