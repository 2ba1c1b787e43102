//! The model card: the JSON written beside a weights file, saying how it was made and how well
//! it does. The weights' SHA-256 ties the card to the exact file.

use crate::data::FILES;
use crate::train::{TrainConfig, TrainMetrics};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How a weights file was made and how well it does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelCard {
    /// The architecture, in one line.
    pub model: String,
    /// SHA-256 of the weights file: what ties the card to it.
    pub weights_sha256: String,
    /// The weights file's name.
    pub weights_file: String,
    /// Accuracy on the 10,000 MNIST test images.
    pub test_accuracy: f64,
    /// Mean cross-entropy on the test images.
    pub test_loss: f64,
    /// Epochs trained (whole or cut short: see `completed`).
    pub epochs: usize,
    /// Samples per step.
    pub batch_size: usize,
    /// `adam` or `sgd` (with its momentum).
    pub optimizer: String,
    /// The optimizer's step size.
    pub learning_rate: f64,
    /// The seed of initialisation and shuffling.
    pub seed: u64,
    /// Training samples used per epoch.
    pub train_samples: usize,
    /// False when training stopped early (a deadline) and these are the weights so far.
    pub completed: bool,
    /// Training time, seconds.
    pub seconds: f64,
    /// Training throughput.
    pub samples_per_second: f64,
    /// SHA-256 of each decompressed MNIST file the model was trained and evaluated on.
    pub data_sha256: BTreeMap<String, String>,
    /// When it was trained (RFC 3339, UTC).
    pub trained_at: String,
}

impl ModelCard {
    /// The card of `weights` (whose SHA-256 is `sha256`), trained with `config` to `metrics`.
    pub fn new(config: &TrainConfig, metrics: &TrainMetrics, weights: &Path, sha256: &str) -> Self {
        Self {
            model: "Conv2d(1,32,3)+ReLU > MaxPool2 > Dense(5408,128)+ReLU > Dense(128,10)".into(),
            weights_sha256: sha256.to_owned(),
            weights_file: weights
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            test_accuracy: metrics.test_accuracy,
            test_loss: metrics.test_loss,
            epochs: metrics.epochs,
            batch_size: config.batch_size,
            optimizer: config.optimizer.to_string(),
            learning_rate: config.learning_rate,
            seed: config.seed,
            train_samples: metrics.train_samples,
            completed: metrics.completed,
            seconds: metrics.seconds,
            samples_per_second: metrics.samples_per_second,
            data_sha256: FILES
                .iter()
                .map(|f| (f.name.to_owned(), f.sha256.to_owned()))
                .collect(),
            trained_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        }
    }

    /// Where the card of a weights file lives: beside it, `NAME.json` for `NAME.safetensors`.
    pub fn path_for(weights: &Path) -> PathBuf {
        weights.with_extension("json")
    }

    /// Writes it as pretty JSON to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(path, text)
    }
}
