//! `make batch`'s part of the job: `deploy batch` over real test digits stored as PNGs in the
//! local S3 (Step Functions' Distributed Map on moto's interpreter, each child invoking
//! predict:live on the data plane), and the images per second a batch size buys.

use super::deploy_cli::DeployCli;
use super::invoke::handler_ms;
use super::{say, text, RunRequest};
use crate::digits;
use crate::stack::{lambda_name, Stack};
use anyhow::Context as _;
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Instant;

const BUCKET: &str = "lambda-cnn-batch-demo";

/// What `deploy batch` did with the stored digits.
pub struct Scored {
    /// Its `--json` summary.
    pub summary: Value,
    /// How many labels its results got right.
    pub right: usize,
    pub wall_s: f64,
    pub bucket: String,
    /// The stored digits' keys, sorted.
    pub keys: Vec<String>,
}

fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let creds = aws_sdk_s3::config::Credentials::new("local", "local", None, None, "local");
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Stores `req.batch` test digits (and, with `batch_broken`, three objects that must fail
/// alone), runs `deploy batch` over them, and counts the right labels in its results.
pub async fn score_stored_digits(
    req: &RunRequest,
    deploy: &DeployCli,
    stack: &Stack,
) -> anyhow::Result<Scored> {
    let s3 = s3_client(&stack.s3());
    if let Err(e) = s3.create_bucket().bucket(BUCKET).send().await {
        let owned = e
            .as_service_error()
            .is_some_and(|e| e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists());
        if !owned {
            return Err(e)
                .with_context(|| format!("cannot create the bucket {BUCKET} in the local S3"));
        }
    }
    let mut labels = HashMap::new();
    let put = |key: String, body: Vec<u8>| {
        let s3 = s3.clone();
        async move {
            s3.put_object()
                .bucket(BUCKET)
                .key(&key)
                .body(ByteStream::from(body))
                .send()
                .await
                .with_context(|| format!("cannot store s3://{BUCKET}/{key}"))
        }
    };
    for (i, (pixels, label)) in digits::test_digits(&req.mnist_dir, req.batch)?
        .into_iter()
        .enumerate()
    {
        let key = format!("digits/{i:04}.png");
        put(key.clone(), digits::png(&pixels)?).await?;
        labels.insert(key, label);
    }
    if req.batch_broken {
        // Not an image; a PNG header that claims 100,000 × 100,000 pixels (over the pixel
        // budget); one byte over the 6 MB object cap.
        put("digits/notes.txt".into(), b"not an image".to_vec()).await?;
        put("digits/lying.png".into(), digits::lying_png(100_000)?).await?;
        put("digits/huge.png".into(), vec![0; 6 * 1024 * 1024 + 1]).await?;
    }
    say(&format!(
        "deploy batch: {} stored test digits{} (s3://{BUCKET}/digits/) through predict:live, on Step \
         Functions' Distributed Map (moto's interpreter)",
        labels.len(),
        if req.batch_broken { " and 3 broken objects" } else { "" }
    ));
    let start = Instant::now();
    let input = format!("s3://{BUCKET}/digits/");
    let output = format!("s3://{BUCKET}/results/");
    let summary = deploy
        .last_json(&[
            "batch",
            "--input",
            &input,
            "--output",
            &output,
            "--form",
            "emulator",
            "--concurrency",
            "2",
            "--json",
        ])
        .await?;
    let wall_s = start.elapsed().as_secs_f64();
    let mut right = 0;
    let listed = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix("results/")
        .send()
        .await
        .context("cannot list the batch's results")?;
    for object in listed.contents() {
        let Some(key) = object.key() else { continue };
        let body = s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .with_context(|| format!("cannot read s3://{BUCKET}/{key}"))?
            .body
            .collect()
            .await
            .with_context(|| format!("cannot read s3://{BUCKET}/{key}"))?
            .into_bytes();
        for line in String::from_utf8_lossy(&body).lines() {
            let Ok(r) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let digit = r.get("digit").and_then(Value::as_u64);
            let label = r["key"]
                .as_str()
                .and_then(|k| labels.get(k))
                .map(|&l| u64::from(l));
            right += usize::from(digit.is_some() && digit == label);
        }
    }
    let mut keys: Vec<String> = labels.into_keys().collect();
    keys.sort();
    Ok(Scored {
        summary,
        right,
        wall_s,
        bucket: BUCKET.into(),
        keys,
    })
}

/// The median of three warm REPORT durations of `event` on predict:live.
async fn median_ms(rt: &str, event: &Value) -> anyhow::Result<f64> {
    let name = lambda_name("predict");
    handler_ms(rt, name, event, Some("live")).await?; // warm the environment
    let mut ms = Vec::new();
    for _ in 0..3 {
        ms.push(handler_ms(rt, name, event, Some("live")).await?);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms[1])
}

/// Images per second of one predict environment (predict:live on the data plane, at its
/// configured memory) per batch size, from the REPORT lines of warm batch invocations; and from
/// them, on paper, 1 M and 10 M images on AWS at Lambda's default concurrency quota (1000),
/// beside the same images sent one by one through the HTTPS API.
pub async fn measure_batch_sizes(
    req: &RunRequest,
    deploy: &DeployCli,
    rt: &str,
    scored: &Scored,
    template: &Value,
) -> anyhow::Result<()> {
    crate::outln!();
    crate::outln!("batch scoring, measured here (predict:live on the data plane, warm, median of 3 REPORT durations)");
    crate::outln!(
        "  {:>10}  {:>12}  {:>24}",
        "batch size",
        "ms per batch",
        "images/s per environment"
    );
    let mut at_100 = f64::NAN;
    for size in [1usize, 10, 100, 200] {
        let items: Vec<Value> = scored
            .keys
            .iter()
            .take(size)
            .map(|k| json!({"Key": k}))
            .collect();
        let bucket = &scored.bucket;
        let event = json!({
            "Items": items,
            "BatchInput": {"bucket": bucket, "output": format!("s3://{bucket}/bench/")},
        });
        let ms = median_ms(rt, &event).await?;
        if size == 100 {
            at_100 = ms;
        }
        crate::outln!(
            "  {size:>10}  {ms:>12.1}  {:>24.0}",
            size as f64 / ms * 1000.0
        );
    }
    // The same PNG through the HTTPS API's event (POST /predict, image/png): one image a request.
    let (pixels, _) = digits::test_digits(&req.mnist_dir, 1)?
        .into_iter()
        .next()
        .context("MNIST's test split is empty")?;
    let png = base64::engine::general_purpose::STANDARD.encode(digits::png(&pixels)?);
    let event = super::predict_event(template, json!(png), true, "image/png");
    let api_ms = median_ms(rt, &event).await?;
    crate::outln!(
        "  {:>10}  {api_ms:>12.1}  {:>24.0}",
        "API, 1 PNG",
        1.0 / api_ms * 1000.0
    );
    crate::outln!("on AWS, on paper from these durations: at batch size 100, 1000 at once (Lambda's default quota)");
    for images in [1_000_000u64, 10_000_000] {
        let n = images.to_string();
        let w = deploy
            .last_json(&[
                "cost",
                "--invocations",
                &n,
                "--batch-size",
                "100",
                "--duration-ms",
                &format!("{at_100:.1}"),
                "--concurrency",
                "1000",
                "--json",
            ])
            .await?["batch"]
            .clone();
        let api = deploy
            .last_json(&[
                "cost",
                "--invocations",
                &n,
                "--duration-ms",
                &format!("{api_ms:.1}"),
                "--api",
                "http",
                "--json",
            ])
            .await?["cost"]
            .clone();
        let api_wall = images as f64 * api_ms / 1000.0 / 1000.0;
        let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
        crate::outln!(
            "  {:>10} images: deploy batch ${:.2} (Lambda ${:.2} + Step Functions ${:.2}), {:.0} s of invocations; \
             through the HTTPS API one by one ({api_ms:.0} ms each) ${:.2}, {api_wall:.0} s",
            thousands(images),
            f(&w["total_usd"]),
            f(&w["lambda"]["total"]),
            f(&w["states_usd"]),
            f(&w["wall_s"]),
            f(&api["total"])
        );
    }
    Ok(())
}

/// The batch's lines of the job's summary.
pub fn print_summary(scored: &Scored) {
    let s = &scored.summary;
    let res = &s["results"];
    let total = &s["run"]["items"]["total"];
    crate::outln!(
        "  batch: {}/{} stored images scored by `deploy batch` (Step Functions' Distributed Map on moto, each \
         child on the data plane) in {:.1} s, {} right, {} failed; into {}",
        res["succeeded"],
        total,
        scored.wall_s,
        scored.right,
        res["failed"],
        text(&s["run"]["output"])
    );
    if let Some(reasons) = res["reasons"].as_object().filter(|r| !r.is_empty()) {
        let reasons: Vec<String> = reasons
            .iter()
            .map(|(why, n)| format!("{n} × {why}"))
            .collect();
        crate::outln!("    failed: {}", reasons.join("; "));
        for failure in res["failures"].as_array().into_iter().flatten().take(5) {
            crate::outln!("      {}: {}", text(&failure[0]), text(&failure[1]));
        }
    }
    if let Some(labels) = res["labels"].as_object() {
        let labels: Vec<String> = labels
            .iter()
            .map(|(label, n)| format!("{label}: {n}"))
            .collect();
        crate::outln!("    labels: {}", labels.join(", "));
    }
    let bill = &s["bill"];
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    crate::outln!(
        "    {:.1} images/s over the run's {:.1} s (at concurrency 2, one image per child: the emulator's form); \
         cost ${:.6} = Lambda ${:.6} ({} invocations) + Step Functions ${:.6} ({} transitions)",
        f(total) / f(&s["wall_s"]).max(1e-9),
        f(&s["wall_s"]),
        f(&bill["total_usd"]),
        f(&bill["lambda"]["total"]),
        bill["invocations"],
        f(&bill["states_usd"]),
        bill["states"]["standard_transitions"]
    );
}

/// `1,000,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_are_grouped() {
        assert_eq!(super::thousands(1_000_000), "1,000,000");
        assert_eq!(super::thousands(10_000_000), "10,000,000");
        assert_eq!(super::thousands(999), "999");
    }
}
