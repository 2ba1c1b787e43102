//! `lambda-cnn predict` and `eval` with the shipped weights, on real test digits and bad input.

use common::*;
use lambda_cnn_test_kit as common;

#[test]
fn predicts_real_test_digits_from_files_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let weights = shipped_weights();
    for i in 0..10 {
        let (png, label) = test_digit_png(i);
        let path = dir.path().join(format!("digit-{i}.png"));
        std::fs::write(&path, &png).unwrap();
        let out = cli(
            &[
                "predict",
                "--weights",
                weights.to_str().unwrap(),
                path.to_str().unwrap(),
            ],
            b"",
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let json = last_json(&out);
        assert_eq!(json["digit"], label as u64, "test digit {i}: {json}");
        let probs: Vec<f64> = json["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        assert_eq!(probs.len(), 10);
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-4);
        assert!(probs[label as usize] > 0.5);
    }
    let (png, label) = test_digit_png(42);
    let out = cli(
        &["predict", "--weights", weights.to_str().unwrap(), "-"],
        &png,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(last_json(&out)["digit"], label as u64);
}

#[test]
fn shipped_weights_reach_98_5_percent_on_the_test_set() {
    let mnist = mnist_dir();
    let weights = shipped_weights();
    let out = cli(
        &[
            "eval",
            "--weights",
            weights.to_str().unwrap(),
            "--mnist-dir",
            mnist.to_str().unwrap(),
            "--json",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json = last_json(&out);
    assert_eq!(json["samples"], 10_000);
    let acc = json["test_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.985, "shipped weights: test accuracy {acc}");

    // The card beside the weights describes exactly this file.
    let (_, sha) = lambda_cnn::model::Cnn::load(&weights).unwrap();
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(weights.with_extension("json")).unwrap()).unwrap();
    assert_eq!(card["weights_sha256"], sha.as_str());
    assert_eq!(card["test_accuracy"].as_f64(), Some(acc));
    assert_eq!(card["epochs"], 5);
    assert_eq!(card["optimizer"], "adam");
}

#[test]
fn missing_weights_file_is_a_one_line_error() {
    let (png, _) = test_digit_png(0);
    let out = cli(
        &["predict", "--weights", "/nonexistent/w.safetensors", "-"],
        &png,
    );
    assert_clean_failure(&out, "cannot load the weights /nonexistent/w.safetensors");
    // Regression: the cause was printed twice ("…: No such file… (os error 2): No such file…").
    assert_eq!(
        stderr(&out).matches("os error 2").count(),
        1,
        "{}",
        stderr(&out)
    );
}

#[test]
fn weights_that_are_not_safetensors_are_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.safetensors");
    std::fs::write(&bogus, b"\x10\0\0\0\0\0\0\0{not json at all").unwrap();
    let (png, _) = test_digit_png(0);
    let out = cli(
        &["predict", "--weights", bogus.to_str().unwrap(), "-"],
        &png,
    );
    assert_clean_failure(&out, "not a safetensors file");
}

#[test]
fn missing_image_file_is_a_one_line_error() {
    let out = cli(&["predict", "/nonexistent/digit.png"], b"");
    assert_clean_failure(&out, "cannot read the image /nonexistent/digit.png");
}

#[test]
fn blank_and_oversized_images_are_one_line_errors() {
    let w = shipped_weights();
    let png = |img: image::GrayImage| {
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        png
    };
    let out = cli(
        &["predict", "--weights", w.to_str().unwrap(), "-"],
        &png(image::GrayImage::new(32, 20)),
    );
    assert_clean_failure(&out, "the image is blank");
    let out = cli(
        &["predict", "--weights", w.to_str().unwrap(), "-"],
        &png(image::GrayImage::new(4097, 8)),
    );
    assert_clean_failure(
        &out,
        "the image is 4097×8; the largest accepted is 4096×4096",
    );
}

#[test]
fn non_image_bytes_and_empty_stdin_are_one_line_errors() {
    let w = shipped_weights();
    let out = cli(
        &["predict", "--weights", w.to_str().unwrap(), "-"],
        b"GIF? no, plain text\n",
    );
    assert_clean_failure(&out, "not a PNG or JPEG image");
    let out = cli(&["predict", "--weights", w.to_str().unwrap(), "-"], b"");
    assert_clean_failure(&out, "no image on standard input");
}

#[test]
fn eval_on_a_corrupt_data_folder_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t10k-images-idx3-ubyte.gz"), b"not gzip").unwrap();
    let out = cli(
        &[
            "eval",
            "--weights",
            shipped_weights().to_str().unwrap(),
            "--mnist-dir",
            dir.path().to_str().unwrap(),
        ],
        b"",
    );
    assert_clean_failure(&out, "t10k-images-idx3-ubyte.gz is not a valid gzip file");
    // Regression: the gzip error's cause used to be appended a second time after the advice.
    assert!(
        stderr(&out).trim_end().ends_with("download it again"),
        "{}",
        stderr(&out)
    );
}
