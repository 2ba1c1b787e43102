//! The digit page as a person meets it: served by the predict function through the Runtime
//! API emulator's Function URL front door (what `make serve` runs), opened in Debian's
//! Chromium driven over WebDriver (tests/browser/digit_page.py): 20 real MNIST test digits
//! drawn as pointer strokes (mouse, pen and touch), pictures uploaded, a text file refused,
//! dark mode and a phone-sized screen, and nothing failing that was not meant to.

use common::emulator::venv_tool;
use common::events::start_predict;
use lambda_cnn_test_kit as common;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const DIGITS: usize = 20;

/// Chromium and its driver, from Debian; `Err`: why the browser test cannot run here.
fn browser() -> Result<(), String> {
    for (bin, package) in [
        ("/usr/bin/chromium", "chromium"),
        ("/usr/bin/chromedriver", "chromium-driver"),
    ] {
        if !Path::new(bin).exists() {
            return Err(format!(
                "{bin} is missing and could not be installed here (`make test` installs the Debian package {package} when it runs as root)"
            ));
        }
    }
    Ok(())
}

/// A test digit as a "photo": dark ink on a light, slightly uneven background, six times
/// larger and off-centre, in a 4:3 frame.
fn photo(pixels: &[u8]) -> image::RgbImage {
    let (w, h) = (640u32, 480u32);
    let mut img = image::RgbImage::from_fn(w, h, |x, y| {
        let shade = 226 + ((x / 7 + y / 5) % 9) as u8;
        image::Rgb([shade, shade - 4, shade - 12])
    });
    let (scale, ox, oy) = (6u32, 360u32, 90u32);
    for y in 0..28 * scale {
        for x in 0..28 * scale {
            let v = pixels[(y / scale * 28 + x / scale) as usize] as u32;
            if v > 0 {
                let p = img.get_pixel_mut(ox + x, oy + y);
                for c in p.0.iter_mut() {
                    *c = ((*c as u32 * (255 - v) + 40 * v) / 255) as u8;
                }
            }
        }
    }
    img
}

#[test]
fn a_person_draws_digits_and_uploads_pictures_in_chromium_and_reads_the_answers() {
    if let Err(why) = browser() {
        lambda_cnn::simd::skip("chromium", &format!("the digit page's browser test: {why}"));
        return;
    }
    let python = venv_tool("LAMBDA_CNN_PYTHON", "python", "selenium");
    let emu = start_predict();
    let base = format!("http://127.0.0.1:{}/lambda-url/predict/", emu.port);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    // The function is attached once health answers.
    let mut ready = false;
    for _ in 0..600 {
        if agent
            .get(&format!("{base}health"))
            .call()
            .is_ok_and(|r| r.status() == 200)
        {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ready, "predict did not answer {base}health");

    // The page over the wire: small, self-contained, a strict CSP, 304 when unchanged.
    let mut page = agent.get(&base).call().unwrap();
    assert_eq!(page.status(), 200);
    let header = |r: &ureq::http::Response<ureq::Body>, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header(&page, "content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    let csp = header(&page, "content-security-policy").unwrap_or_default();
    assert!(
        csp.starts_with("default-src 'none'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(header(&page, "server-timing").is_some_and(|t| t.starts_with("fn;dur=")));
    let etag = header(&page, "etag").expect("an ETag");
    let html = page.body_mut().read_to_string().unwrap();
    assert!(html.len() < 50 * 1024, "{} bytes", html.len());
    let again = agent
        .get(&base)
        .header("If-None-Match", &etag)
        .call()
        .unwrap();
    assert_eq!(again.status(), 304);

    // The cases: real test digits to draw; a photo as PNG and JPEG; a text file.
    let test = common::mnist_test();
    let dir = tempfile::tempdir().unwrap();
    let digits: Vec<Value> = (0..DIGITS)
        .map(|i| json!({"label": test.labels[i], "pixels": test.image(i)}))
        .collect();
    let photo_index = 21;
    let photo_label = test.labels[photo_index];
    let shot = photo(test.image(photo_index));
    let png = dir.path().join("photo.png");
    let jpg = dir.path().join("photo.jpg");
    shot.save(&png).unwrap();
    shot.save(&jpg).unwrap();
    let txt = dir.path().join("notes.txt");
    std::fs::write(&txt, "this is not a picture\n").unwrap();
    let uploads = json!([
        {"path": png, "label": photo_label},
        {"path": jpg, "label": photo_label},
        {"path": txt, "label": null},
    ]);
    let cases = dir.path().join("cases.json");
    std::fs::write(
        &cases,
        json!({"digits": digits, "uploads": uploads}).to_string(),
    )
    .unwrap();
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("digit-page");
    std::fs::create_dir_all(&shots).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/digit_page.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&base)
        .arg(&cases)
        .arg(&shots)
        .output()
        .expect("python starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert_eq!(r["errors"], json!([]), "{r:#}");
    assert!(r["title"].as_str().unwrap_or_default().contains("digit"));
    let tabbed = r["tab_order"].to_string();
    assert!(
        tabbed.contains("\"clear\"") && tabbed.contains("\"pick\""),
        "Tab reaches both buttons: {tabbed}"
    );

    let drawn = r["drawn"].as_array().unwrap();
    assert_eq!(drawn.len(), DIGITS);
    let right = drawn
        .iter()
        .filter(|d| d["read"].as_str() == Some(&d["label"].to_string()))
        .count();
    println!("drawn in Chromium: {right}/{DIGITS} read right");
    assert!(right >= 18, "{right}/{DIGITS} right: {drawn:#?}");

    let up = r["uploads"].as_array().unwrap();
    for photo in &up[..2] {
        assert_eq!(
            photo["read"].as_str(),
            Some(photo_label.to_string().as_str()),
            "{photo}"
        );
        assert_eq!(photo["error_shown"], false, "{photo}");
    }
    assert_eq!(up[2]["error_shown"], true, "{}", up[2]);
    assert!(
        up[2]["status"].as_str().unwrap_or_default().contains("415"),
        "{}",
        up[2]
    );
    assert_eq!(
        r["after_error"]["read"].as_str(),
        Some(r["after_error"]["label"].to_string().as_str()),
        "the page keeps working after an error"
    );

    assert_ne!(
        r["colors"]["light"], r["colors"]["dark"],
        "prefers-color-scheme"
    );
    assert!(
        r["phone_overflow_px"].as_i64().unwrap_or(1) <= 0,
        "no sideways scrolling at 320 px: {}",
        r["phone_overflow_px"]
    );
    assert!(r["phone"]["read"]
        .as_str()
        .is_some_and(|d| d.len() == 1 && d.chars().all(|c| c.is_ascii_digit())));

    // Only the deliberate failure: the text file's 415.
    let failed = r["failed_requests"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0]
        .as_str()
        .is_some_and(|f| f.starts_with("415 ") && f.ends_with("/predict")));
    for e in r["console_errors"].as_array().unwrap() {
        assert!(
            e.as_str().is_some_and(|m| m.contains("415")),
            "a console error besides the deliberate 415: {e}"
        );
    }
    for name in ["page-desktop.png", "page-phone.png"] {
        assert!(shots.join(name).exists(), "{name} written");
    }
    println!("screenshots: {}", shots.display());
}

/// An imported model's page (issue 26): a PyTorch user's five-shape RGB model served by the
/// same predict binary from MODEL_PATH. Chromium shows its labels on the bars, no drawing
/// canvas, and reads an uploaded picture as one of them.
#[test]
fn an_imported_models_page_shows_its_labels_and_answers_uploads_in_chromium() {
    if let Err(why) = browser() {
        lambda_cnn::simd::skip("chromium", &format!("the model page's browser test: {why}"));
        return;
    }
    let python = venv_tool("LAMBDA_CNN_PYTHON", "python", "selenium");
    let dir = tempfile::tempdir().unwrap();
    let model = common::imported_rgb_model(dir.path());
    let labels = common::RGB_LABELS;
    let mut emu = common::emulator::Emulator::start();
    emu.start_function("predict", &[("MODEL_PATH", model.to_str().unwrap())]);
    let base = format!("http://127.0.0.1:{}/lambda-url/predict/", emu.port);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let ready = (0..600).any(|_| {
        let up = agent
            .get(&format!("{base}health"))
            .call()
            .is_ok_and(|r| r.status() == 200);
        if !up {
            std::thread::sleep(Duration::from_millis(100));
        }
        up
    });
    assert!(ready, "predict did not answer {base}health\n{}", emu.logs());

    // A photo-sized RGB picture, and a JPEG of it: resized to the model's 24×24.
    let picture = image::RgbImage::from_fn(320, 240, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let png = dir.path().join("picture.png");
    let jpg = dir.path().join("picture.jpg");
    picture.save(&png).unwrap();
    picture.save(&jpg).unwrap();
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("model-page");
    std::fs::create_dir_all(&shots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/model_page.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&base)
        .arg(&png)
        .arg(&jpg)
        .arg(&shots)
        .output()
        .expect("python starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert_eq!(r["labels"], json!(labels), "{r:#}");
    assert_eq!(
        r["canvas_visible"], false,
        "no canvas for an RGB model: {r:#}"
    );
    assert!(
        r["status_before"]
            .as_str()
            .unwrap_or_default()
            .contains("Upload"),
        "{r:#}"
    );
    assert!(
        r["title"]
            .as_str()
            .unwrap_or_default()
            .contains("5 classes"),
        "{r:#}"
    );
    for up in r["uploads"].as_array().unwrap() {
        let read = up["read"].as_str().unwrap_or_default();
        assert!(labels.contains(&read), "{up}");
        assert_eq!(
            up["top_bar"].as_str(),
            Some(read),
            "the top bar is the answer: {up}"
        );
    }
    assert_eq!(r["console_errors"], json!([]), "{r:#}");
    assert!(shots.join("model-page.png").exists());
}
