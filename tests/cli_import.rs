//! `lambda-cnn import`, then `predict --model` and `eval --model`: a Keras user's model and a
//! PyTorch user's RGB model, end to end through the binary.

use common::*;
use lambda_cnn_test_kit as common;
use std::path::Path;

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_keras_model_imports_and_predicts_and_scores_real_digits() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("seed.safetensors");
    let model = model.to_str().unwrap();
    let out = cli(
        &[
            "--json",
            "import",
            &fixture("seed-keras.keras"),
            "--out",
            model,
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json = last_json(&out);
    assert_eq!(json["seed_kernels"], true, "{json}");
    assert_eq!(json["parameters"], 693_962, "{json}");
    assert!(
        json["source"].as_str().unwrap().starts_with("keras 3"),
        "{json}"
    );

    let mut right = 0;
    for i in 0..10 {
        let (png, label) = test_digit_png(i);
        let path = dir.path().join(format!("digit-{i}.png"));
        std::fs::write(&path, &png).unwrap();
        let out = cli(&["predict", "--model", model, path.to_str().unwrap()], b"");
        assert!(out.status.success(), "{}", stderr(&out));
        let json = last_json(&out);
        assert_eq!(json["label"], json["class"].to_string(), "{json}");
        assert_eq!(json["digit"], json["class"], "{json}");
        assert_eq!(json["probabilities"].as_array().unwrap().len(), 10);
        right += (json["class"] == label as u64) as usize;
    }
    assert!(right >= 9, "{right}/10 right");

    let mnist = mnist_dir();
    let out = cli(
        &[
            "--json",
            "eval",
            "--model",
            model,
            "--mnist-dir",
            mnist.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let accuracy = last_json(&out)["test_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.95, "{accuracy}");
}

#[test]
fn an_rgb_model_answers_its_own_labels_for_a_photo_of_any_size() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("rgb.safetensors");
    let model = model.to_str().unwrap();
    let layers = fixture("rgb-torch.layers.json");
    let out = cli(
        &[
            "import",
            &fixture("rgb-torch.pt"),
            "--layers",
            &layers,
            "--mean",
            "0.485,0.456,0.406",
            "--std",
            "0.229,0.224,0.225",
            "--labels",
            "circle,square,triangle,star,heart",
            "--out",
            model,
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("labels: circle, square"),
        "{}",
        stdout(&out)
    );

    let photo = image::RgbImage::from_fn(97, 61, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 4) as u8, 90])
    });
    let path = dir.path().join("photo.png");
    photo.save(&path).unwrap();
    let out = cli(&["predict", "--model", model, path.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let json = last_json(&out);
    let labels = ["circle", "square", "triangle", "star", "heart"];
    let class = json["class"].as_u64().unwrap() as usize;
    assert_eq!(json["label"], labels[class], "{json}");
    assert!(json.get("digit").is_none(), "{json}");
    let sum: f64 = json["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .sum();
    assert!((sum - 1.0).abs() < 1e-4, "{json}");

    // A digit-only command on a model that is not a digit model: a clear refusal.
    let out = cli(
        &[
            "eval",
            "--model",
            model,
            "--mnist-dir",
            mnist_dir().to_str().unwrap(),
        ],
        b"",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("28×28×1 images and 10 classes"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn import_mistakes_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("m.safetensors");
    let out_path = out_path.to_str().unwrap();
    let out = cli(
        &["import", &fixture("seed-torch.pt"), "--out", out_path],
        b"",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--layers FILE.json"),
        "{}",
        stderr(&out)
    );

    let not_a_model = dir.path().join("notes.txt");
    std::fs::write(&not_a_model, "hello").unwrap();
    let out = cli(
        &["import", not_a_model.to_str().unwrap(), "--out", out_path],
        b"",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a format lambda-cnn imports"),
        "{}",
        stderr(&out)
    );
    assert!(
        !Path::new(out_path).exists(),
        "nothing is written on failure"
    );

    let out = cli(
        &[
            "import",
            &fixture("rgb-keras.keras"),
            "--mean",
            "0.5",
            "--out",
            out_path,
        ],
        b"",
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--std"), "{}", stderr(&out));
}
