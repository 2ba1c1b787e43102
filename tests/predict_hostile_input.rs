//! The predict function against what an attacker or a careless client sends, through the real
//! Runtime API emulator: every request has a bounded cost, gets a 4xx with a small JSON error
//! (never a 5xx or a crash), and the same process then answers a real digit right.

use base64::Engine;
use common::emulator::Emulator;
use common::events::{event, http, start_predict, Flavour};
use common::*;
use image::{DynamicImage, GrayImage, ImageFormat, Luma, Rgba, RgbaImage};
use lambda_cnn_test_kit as common;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), format)
        .unwrap();
    out
}

fn post_json(body: &Value) -> Value {
    event(
        Flavour::HttpV2,
        "POST",
        "/predict",
        Some("application/json"),
        body.to_string().as_bytes(),
        false,
    )
}

fn post_png(png: &[u8]) -> Value {
    event(
        Flavour::HttpV2,
        "POST",
        "/predict",
        Some("image/png"),
        png,
        true,
    )
}

/// Peak resident memory of a process so far, in MB.
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

/// Sends `e`, expects `status` with a JSON error under 1 KB, then checks the same process
/// still answers a real digit right.
fn refused(emu: &mut Emulator, what: &str, e: Value, status: u64) -> (Value, Duration) {
    let pid = emu.pid("predict");
    let start = Instant::now();
    let (got, body) = http(emu, e);
    let took = start.elapsed();
    assert_eq!(got, status, "{what}: {body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.len() > 10, "{what}: no message in {body}");
    assert!(
        body.to_string().len() < 1024,
        "{what}: error body of {} bytes",
        body.to_string().len()
    );
    still_serves(emu, pid, what);
    (body, took)
}

fn still_serves(emu: &mut Emulator, pid: u32, after: &str) {
    let (png, label) = test_digit_png(3);
    let (status, r) = http(emu, post_png(&png));
    assert_eq!(
        (status, r["digit"].as_u64()),
        (200, Some(label as u64)),
        "after {after}: {r}"
    );
    assert!(emu.functions_alive(), "after {after}: {}", emu.logs());
    assert_eq!(
        emu.pid("predict"),
        pid,
        "after {after}: the process was replaced"
    );
}

/// A baseline JPEG that declares `side`×`side` and ends right after its header: 164 bytes that
/// cost a full decode of the declared size to a decoder that keeps going.
#[test]
fn requests_over_the_pixel_budget_are_refused_before_any_decoding() {
    let mut emu = start_predict();
    // 256 × a JPEG that declares 4096² (~62 KB of request).
    let tiny = b64(&jpeg_declaring(4096));
    let body = json!({"instances": vec![json!({"image": tiny}); 256]});
    let (r, took) = refused(&mut emu, "256 declared-4096² JPEGs", post_json(&body), 413);
    assert!(
        r["error"].as_str().unwrap().contains("pixels in all"),
        "{r}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    // 20 × a real 4096² PNG (blank, so it compresses).
    let png = encode(&GrayImage::new(4096, 4096).into(), ImageFormat::Png);
    let body = json!({"instances": vec![json!({"image": b64(&png)}); 20]});
    assert!(body.to_string().len() < 6 << 20);
    let (_, took) = refused(&mut emu, "20 real 4096² PNGs", post_json(&body), 413);
    assert!(took < Duration::from_secs(2), "{took:?}");
    // One image past the side limit, from its header.
    let png = encode(&GrayImage::new(4097, 1).into(), ImageFormat::Png);
    refused(&mut emu, "a 4097-wide PNG", post_png(&png), 413);
    // The declared-size JPEG alone is within the budget: decoding what it has fails cleanly.
    let (status, r) = http(&emu, post_png(&jpeg_declaring(1024)));
    assert!(status == 400 || status == 200, "{status} {r}");
}

#[test]
fn a_png_colour_profile_bomb_is_inflated_no_further_than_its_limit() {
    use std::io::Write;
    let mut emu = start_predict();
    let before = peak_rss_mb(emu.pid("predict"));
    // A PNG whose iCCP chunk inflates to 1 GB (from ~1 MB).
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 16 << 20];
    for _ in 0..64 {
        z.write_all(&zeros).unwrap();
    }
    let profile = z.finish().unwrap();
    let one = encode(
        &GrayImage::from_pixel(1, 1, Luma([9])).into(),
        ImageFormat::Png,
    );
    let mut chunk = b"iCCP".to_vec();
    chunk.extend(b"bomb\0\0");
    chunk.extend(&profile);
    let mut png = one[..33].to_vec();
    png.extend(((chunk.len() - 4) as u32).to_be_bytes());
    png.extend(&chunk);
    png.extend(crc32(&chunk).to_be_bytes());
    png.extend(&one[33..]);
    // The decoder inflates 1 MB of the profile and drops it; the 1×1 picture left is blank.
    let (r, took) = refused(&mut emu, "an iCCP bomb", post_png(&png), 400);
    assert!(r["error"].as_str().unwrap().contains("blank"), "{r}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let after = peak_rss_mb(emu.pid("predict"));
    assert!(
        after < before + 64.0,
        "peak RSS went from {before:.0} to {after:.0} MB"
    );
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn what_panicked_inside_lambda_http_is_served_or_refused_with_a_4xx() {
    let mut emu = start_predict();
    let pid = emu.pid("predict");
    let (png, label) = test_digit_png(0);
    // Raw `"`, `<`, `>` and spaces in the query string, and a Host that is not a host: the
    // function reads neither, so the digit is simply answered.
    for flavour in [Flavour::RestV1, Flavour::HttpV2, Flavour::FunctionUrl] {
        let mut e = event(flavour, "POST", "/predict", Some("image/png"), &png, true);
        e["rawQueryString"] = json!("q=\"<a b>\"&x= y");
        e["queryStringParameters"] = json!({"q": "\"<a b>\""});
        e["multiValueQueryStringParameters"] = json!({"q": ["\"<a b>\""]});
        for headers in ["headers", "multiValueHeaders"] {
            if e[headers].is_object() {
                let v = if headers == "headers" {
                    json!("exa mple.com:99999/<>")
                } else {
                    json!(["exa mple.com:99999/<>"])
                };
                e[headers]["host"] = v.clone();
                e[headers]["Host"] = v;
            }
        }
        let (status, r) = http(&emu, e);
        assert_eq!(
            (status, r["digit"].as_u64()),
            (200, Some(label as u64)),
            "{flavour:?}: {r}"
        );
    }
    // A body marked base64 that is not: a 400, not a 502.
    let mut e = post_png(&png);
    e["body"] = json!("%%% not base64 %%%");
    refused(&mut emu, "invalid base64", e, 400);
    // Line-wrapped base64 (MIME style) is read.
    let wrapped: String = b64(&png)
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
        .collect();
    let mut e = post_png(&png);
    e["body"] = json!(wrapped);
    let (status, r) = http(&emu, e);
    assert_eq!(
        (status, r["digit"].as_u64()),
        (200, Some(label as u64)),
        "{r}"
    );
    // An event that is no HTTP event: a typed function error, and the process lives on.
    for payload in [json!({"hello": 1}), json!([1, 2]), json!({"httpMethod": 7})] {
        let r = emu.invoke("predict", &payload);
        assert_eq!(r["errorType"], "InvalidEvent", "{payload}: {r}");
    }
    still_serves(&mut emu, pid, "events that are not HTTP events");
}

#[test]
fn error_messages_stay_small_whatever_the_input() {
    let mut emu = start_predict();
    let long = "A".repeat(5 << 20);
    let mut pixels: Vec<Value> = vec![json!(0); 784];
    pixels[1] = json!(long);
    for (what, body) in [
        ("a 5 MB pixel value", json!({"pixels": pixels})),
        ("a 5 MB field name", json!({ long.clone(): 1 })),
        ("a 5 MB string body", json!(long)),
    ] {
        let (r, _) = refused(&mut emu, what, post_json(&body), 400);
        assert!(!r.to_string().contains(&"A".repeat(101)), "{what}: {r}");
    }
    let e = event(
        Flavour::HttpV2,
        "POST",
        &format!("/{}", "p".repeat(100_000)),
        None,
        b"",
        false,
    );
    refused(&mut emu, "a 100 KB path", e, 404);
}

#[test]
fn real_world_inputs_get_the_right_answer_and_blank_ones_a_400() {
    let mut emu = start_predict();
    let test = common::mnist_test();
    // Blank at every size, in every form.
    refused(
        &mut emu,
        "blank pixels",
        post_json(&json!({"pixels": vec![0; 784]})),
        400,
    );
    for (w, h, v) in [(28, 28, 0u8), (28, 28, 255), (200, 100, 240)] {
        let png = encode(
            &GrayImage::from_pixel(w, h, Luma([v])).into(),
            ImageFormat::Png,
        );
        let (r, _) = refused(&mut emu, "a blank PNG", post_png(&png), 400);
        assert!(r["error"].as_str().unwrap().contains("blank"), "{r}");
    }
    let (mut inverted, mut canvas, mut rotated) = (0, 0, 0);
    let n = 20;
    for i in 0..n {
        let digit = test.image(i);
        let label = test.labels[i] as u64;
        // Dark on light, 28×28.
        let img = GrayImage::from_fn(28, 28, |x, y| Luma([255 - digit[(y * 28 + x) as usize]]));
        let (_, r) = http(&emu, post_png(&encode(&img.into(), ImageFormat::Png)));
        inverted += usize::from(r["digit"].as_u64() == Some(label));
        // A browser canvas: black strokes on a transparent background, 280×280.
        let img = RgbaImage::from_fn(280, 280, |x, y| {
            Rgba([0, 0, 0, digit[(y / 10 * 28 + x / 10) as usize]])
        });
        let data_url = format!(
            "data:image/png;base64,{}",
            b64(&encode(&img.into(), ImageFormat::Png))
        );
        let (_, r) = http(&emu, post_json(&json!({"image": data_url})));
        canvas += usize::from(r["digit"].as_u64() == Some(label));
        // A phone photo: stored sideways, with the EXIF orientation that turns it upright.
        let upright: DynamicImage = GrayImage::from_fn(112, 112, |x, y| {
            Luma([255 - digit[(y / 4 * 28 + x / 4) as usize]])
        })
        .into();
        let jpeg = jpeg_with_orientation(&upright.rotate270(), 6);
        let e = event(
            Flavour::HttpV2,
            "POST",
            "/predict",
            Some("image/jpeg"),
            &jpeg,
            true,
        );
        let (_, r) = http(&emu, e);
        rotated += usize::from(r["digit"].as_u64() == Some(label));
    }
    assert!(inverted >= n - 1, "dark-on-light 28×28: {inverted}/{n}");
    assert!(canvas >= n - 1, "canvas drawings: {canvas}/{n}");
    assert!(rotated >= n - 1, "EXIF-rotated photos: {rotated}/{n}");
}

/// A JPEG of `img` with an EXIF APP1 segment that sets `Orientation`.
fn jpeg_with_orientation(img: &DynamicImage, orientation: u16) -> Vec<u8> {
    let jpeg = encode(&DynamicImage::ImageLuma8(img.to_luma8()), ImageFormat::Jpeg);
    let exif: Vec<u8> = [
        b"Exif\0\0II*\0".as_slice(),
        &8u32.to_le_bytes(),
        &1u16.to_le_bytes(),
        &0x0112u16.to_le_bytes(),
        &3u16.to_le_bytes(),
        &1u32.to_le_bytes(),
        &orientation.to_le_bytes(),
        &[0, 0],
        &0u32.to_le_bytes(),
    ]
    .concat();
    let mut out = jpeg[..2].to_vec();
    out.extend([0xFF, 0xE1]);
    out.extend(((exif.len() + 2) as u16).to_be_bytes());
    out.extend(&exif);
    out.extend(&jpeg[2..]);
    out
}

#[test]
fn cors_preflight_is_answered_for_function_urls() {
    let emu = start_predict();
    let r = emu.invoke(
        "predict",
        &event(
            Flavour::FunctionUrl,
            "OPTIONS",
            "/predict",
            None,
            b"",
            false,
        ),
    );
    assert_eq!(r["statusCode"], 204, "{r}");
    assert_eq!(
        r["headers"]["access-control-allow-methods"],
        "POST, OPTIONS"
    );
}

#[test]
fn weights_that_are_not_finite_stop_the_function_at_init_with_a_clear_line() {
    let (model, _) = lambda_cnn::model::Cnn::load(&shipped_weights()).unwrap();
    let mut tensors = model.to_pytorch().unwrap();
    let name = tensors[3].0;
    let t = &mut tensors[3].1;
    let mut v = t.to_vec1::<f32>().unwrap();
    v[5] = f32::NAN;
    *t = candle_core::Tensor::new(v, &candle_core::Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.safetensors");
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (*n, t)), None).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let mut emu = Emulator::start();
    emu.start_function("predict", &[("MODEL_PATH", path.to_str().unwrap())]);
    let status = emu.wait_exit("predict", Duration::from_secs(30));
    assert!(status.is_some_and(|s| !s.success()), "{}", emu.logs());
    let log = emu.log("predict");
    assert!(
        log.contains(&format!("tensor {name} holds NaN at index 5")),
        "{log}"
    );
}

/// The most expensive request the limits allow, measured: one 2048² noisy PNG (~5.6 MB as an
/// event) and 256 noisy 128² PNGs. Peak RSS of the function must stay under 256 MB.
#[test]
fn the_worst_allowed_requests_stay_under_256_mb_and_are_timed() {
    let mut emu = start_predict();
    let pid = emu.pid("predict");
    let mut seed = 0x2545F491u32;
    let mut noise = |w: u32, h: u32| {
        GrayImage::from_fn(w, h, |x, y| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            // Noise on a black page with a white bar: not blank, and barely compressible.
            let bar = x.abs_diff(w / 2) < w / 20 && y.abs_diff(h / 2) < h / 3;
            Luma([if bar { 255 } else { (seed % 48) as u8 }])
        })
    };
    let big = encode(&noise(2048, 2048).into(), ImageFormat::Png);
    let e = post_png(&big);
    assert!(
        e.to_string().len() < 6 << 20,
        "{} bytes",
        e.to_string().len()
    );
    let start = Instant::now();
    let (status, r) = http(&emu, e);
    let one = start.elapsed();
    assert_eq!(status, 200, "{r}");
    let small: Vec<Value> = (0..256)
        .map(|_| json!({"image": b64(&encode(&noise(128, 128).into(), ImageFormat::Png))}))
        .collect();
    let e = post_json(&json!({ "instances": small }));
    assert!(e.to_string().len() < 6 << 20);
    let start = Instant::now();
    let (status, r) = http(&emu, e);
    let many = start.elapsed();
    assert_eq!(
        status,
        200,
        "{}",
        &r.to_string()[..200.min(r.to_string().len())]
    );
    let rss = peak_rss_mb(pid);
    println!(
        "worst allowed requests: one 2048² PNG ({} KB) {:.0} ms; 256 × 128² PNGs {:.0} ms; peak RSS {rss:.0} MB",
        big.len() / 1024,
        one.as_secs_f64() * 1e3,
        many.as_secs_f64() * 1e3
    );
    assert!(rss < 256.0, "peak RSS {rss:.0} MB");
    still_serves(&mut emu, pid, "the worst allowed requests");
}
