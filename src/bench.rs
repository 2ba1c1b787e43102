//! The figures `lambda-cnn bench` reports: training throughput, inference latency and
//! throughput, and peak memory, measured in process on the real data.

#![warn(missing_docs)]

use crate::data::{Split, IMAGE_PIXELS};
use crate::model::Cnn;
use crate::predict::predict;
use crate::train::{TrainConfig, TrainError, Trainer};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use std::time::Instant;

/// Training throughput of the seed's configuration.
#[derive(Debug, Clone, Serialize)]
pub struct TrainBench {
    /// Images per second over the timed steps.
    pub train_samples_per_second: f64,
    /// Timed optimizer steps.
    pub train_steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Peak resident memory of this process while training (data set, model, optimizer).
    pub train_peak_rss_mb: f64,
}

/// Inference speed, in process.
#[derive(Debug, Clone, Serialize)]
pub struct PredictBench {
    /// Median latency of one image, µs.
    pub predict_p50_us: f64,
    /// 99th percentile latency of one image, µs.
    pub predict_p99_us: f64,
    /// Throughput on batches of 256.
    pub batch256_images_per_second: f64,
}

/// What `lambda-cnn bench` reports: a table for people, one JSON object with `--json` (the
/// fields of [`TrainBench`] and [`PredictBench`] at its top level).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Training throughput.
    #[serde(flatten)]
    pub train: TrainBench,
    /// Untimed steps before the timed ones.
    pub warmup: usize,
    /// CPU cores available to this process.
    pub cores: usize,
    /// The kernels' instruction set (`avx512`, `avx2`, `neon`, `portable`).
    pub isa: String,
    /// The CPU ([`crate::arch::cpu_model`]): figures are of one machine.
    pub cpu: String,
    /// When, RFC 3339 (UTC).
    pub measured_at: String,
    /// Absent with `--train-only`.
    #[serde(flatten)]
    pub predict: Option<PredictBench>,
    /// Median exec → weights loaded of a fresh process; absent with `--train-only`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold_start_ms: Option<f64>,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.train;
        writeln!(
            f,
            "measured {} on {}, {} cores",
            self.measured_at, self.cpu, self.cores
        )?;
        writeln!(
            f,
            "{:<34}{:>12.0} samples/s   ({} steps of {} after {} warm-up; {} cores, {} kernels)",
            "train (Adam 1e-3, batch 32)",
            t.train_samples_per_second,
            t.train_steps,
            t.batch_size,
            self.warmup,
            self.cores,
            self.isa
        )?;
        write!(
            f,
            "{:<34}{:>12.0} MB",
            "train peak RSS", t.train_peak_rss_mb
        )?;
        if let Some(p) = &self.predict {
            write!(
                f,
                "\n{:<34}{:>12.1} µs p50, {:.1} µs p99",
                "predict, one image", p.predict_p50_us, p.predict_p99_us
            )?;
            write!(
                f,
                "\n{:<34}{:>12.0} images/s",
                "predict, batches of 256", p.batch256_images_per_second
            )?;
        }
        if let Some(ms) = self.cold_start_ms {
            write!(
                f,
                "\n{:<34}{:>12.1} ms (median of 15)",
                "cold start, exec → weights loaded", ms
            )?;
        }
        Ok(())
    }
}

/// `steps` timed optimizer steps of the seed's configuration (Adam 1e-3, batch 32) after
/// `warmup` untimed ones, over shuffled batches of `train`.
pub fn train_throughput(
    train: &Split,
    warmup: usize,
    steps: usize,
) -> Result<TrainBench, TrainError> {
    let config = TrainConfig::default();
    let mut trainer = Trainer::new(
        Cnn::init(config.seed)?,
        Box::new(crate::optim::Adam::new(config.learning_rate)),
    )?;
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(config.seed));
    let mut batches = order.chunks_exact(config.batch_size).cycle();
    let mut run = |n: usize| -> Result<(), TrainError> {
        for _ in 0..n {
            let idx = batches.next().unwrap_or_default();
            let labels: Vec<u8> = idx.iter().map(|&i| train.labels[i]).collect();
            trainer.step(idx.iter().map(|&i| train.image(i)), &labels)?;
        }
        Ok(())
    };
    run(warmup)?;
    let start = Instant::now();
    run(steps)?;
    let seconds = start.elapsed().as_secs_f64();
    Ok(TrainBench {
        train_samples_per_second: (steps * config.batch_size) as f64 / seconds,
        train_steps: steps,
        batch_size: config.batch_size,
        train_peak_rss_mb: peak_rss_mb().unwrap_or(f64::NAN),
    })
}

/// Single-image latency over `singles` test images (the whole path: pixels in, probabilities
/// out), and throughput on batches of 256.
pub fn predict_speed(
    model: &Cnn,
    test: &Split,
    singles: usize,
    batches: usize,
) -> Result<PredictBench, crate::model::ModelError> {
    let pixels: Vec<f32> = test.images.iter().map(|&p| p as f32 / 255.0).collect();
    speed(&pixels, IMAGE_PIXELS, singles, batches, |x| {
        predict(model, x).map(drop)
    })
}

/// The timing both benchmarks share: `run` over one image of `values` (`per` values each) at
/// a time, `singles` times after 50 untimed, for the median and 99th percentile, then over the
/// first 256 images, `batches` times.
fn speed(
    values: &[f32],
    per: usize,
    singles: usize,
    batches: usize,
    run: impl Fn(&[f32]) -> Result<(), crate::model::ModelError>,
) -> Result<PredictBench, crate::model::ModelError> {
    let count = values.len() / per.max(1);
    if count < 256 {
        return Err(crate::model::ModelError::BadInput {
            expected: 256 * per,
            got: values.len(),
        });
    }
    let image = |i: usize| &values[(i % count) * per..][..per];
    for i in 0..50 {
        run(image(i))?;
    }
    let mut micros: Vec<f64> = (0..singles)
        .map(|i| {
            let start = Instant::now();
            let r = run(image(i));
            let us = start.elapsed().as_secs_f64() * 1e6;
            r.map(|()| us)
        })
        .collect::<Result<_, _>>()?;
    micros.sort_by(f64::total_cmp);
    let pct = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
    let batch = &values[..256 * per];
    run(batch)?;
    let start = Instant::now();
    for _ in 0..batches {
        run(batch)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(PredictBench {
        predict_p50_us: pct(0.5),
        predict_p99_us: pct(0.99),
        batch256_images_per_second: (256 * batches) as f64 / seconds,
    })
}

/// What `lambda-cnn bench --model FILE` reports: one model file's inference speed.
#[derive(Debug, Clone, Serialize)]
pub struct ModelBenchReport {
    /// The file.
    pub model: String,
    /// Its description in one line.
    pub summary: String,
    /// Whether it runs on the seed's kernels.
    pub seed_kernels: bool,
    /// What it was timed on: "MNIST test images" or "fixed pseudo-random inputs".
    pub inputs: String,
    /// The figures.
    #[serde(flatten)]
    pub predict: PredictBench,
    /// CPU cores available to this process.
    pub cores: usize,
    /// The CPU.
    pub cpu: String,
    /// When, RFC 3339 (UTC).
    pub measured_at: String,
}

impl std::fmt::Display for ModelBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.predict;
        writeln!(
            f,
            "measured {} on {}, {} cores",
            self.measured_at, self.cpu, self.cores
        )?;
        writeln!(
            f,
            "{}: {}{}",
            self.model,
            self.summary,
            if self.seed_kernels {
                " (the seed's kernels)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "{:<34}{:>12.1} µs p50, {:.1} µs p99   ({})",
            "predict, one image", p.predict_p50_us, p.predict_p99_us, self.inputs
        )?;
        write!(
            f,
            "{:<34}{:>12.0} images/s",
            "predict, batches of 256", p.batch256_images_per_second
        )
    }
}

/// The raw inputs (0..=255, 256 images or more) a model is timed on: MNIST's test images for
/// a 28×28×1 model, else fixed pseudo-random values. Returns them and what they are.
pub fn model_inputs(
    network: &crate::net::Network,
    test: Option<&Split>,
) -> (Vec<f32>, &'static str) {
    let spec = network.spec();
    let per = spec.input_len();
    if let Some(t) = test.filter(|t| per == IMAGE_PIXELS && t.len() >= 256) {
        return (
            t.images.iter().map(|&p| f32::from(p)).collect(),
            "MNIST test images",
        );
    }
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let values = (0..256 * per)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % 256) as f32
        })
        .collect();
    (values, "fixed pseudo-random inputs")
}

/// Single-image latency over `singles` images of `raw` (the whole path: raw values in,
/// probabilities out, the model's input scaling included), and throughput on batches of 256.
pub fn network_speed(
    network: &crate::net::Network,
    raw: &[f32],
    singles: usize,
    batches: usize,
) -> Result<PredictBench, crate::model::ModelError> {
    speed(raw, network.spec().input_len(), singles, batches, |x| {
        network.probabilities(x).map(drop)
    })
}

/// This process's peak resident set size (VmHWM), in MB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The median of some measurements.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn peak_rss_is_read_from_proc() {
        let mb = peak_rss_mb().unwrap();
        assert!(mb > 1.0 && mb < 100_000.0, "{mb}");
    }
}
