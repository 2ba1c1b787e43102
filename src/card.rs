//! The model card: the JSON written beside a weights file, saying how it was made and how well
//! it does. The weights' SHA-256 ties the card to the exact file.

use crate::data::FILES;
use crate::train::{TrainConfig, TrainMetrics};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelCard {
    pub model: String,
    pub weights_sha256: String,
    pub weights_file: String,
    pub test_accuracy: f64,
    pub test_loss: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: String,
    pub learning_rate: f64,
    pub seed: u64,
    pub train_samples: usize,
    pub completed: bool,
    pub seconds: f64,
    pub samples_per_second: f64,
    /// SHA-256 of each decompressed MNIST file the model was trained and evaluated on.
    pub data_sha256: BTreeMap<String, String>,
    /// When it was trained (RFC 3339, UTC).
    pub trained_at: String,
}

impl ModelCard {
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

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(path, text)
    }
}
