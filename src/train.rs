//! Training: epochs of shuffled mini-batches (deterministic for a seed), our optimizers, and
//! evaluation on the test set. Progress goes to a [`TrainObserver`], so the CLI can draw a bar,
//! the Lambda function can log and stop before its deadline, and tests can stay quiet.

#![warn(missing_docs)]

use crate::data::{Split, IMAGE_PIXELS};
use crate::model::backprop::Backprop;
use crate::model::{argmax, Cnn, ModelError, Params, CLASSES};
use crate::optim::{Adam, OptimError, Optimizer, Sgd};
use candle_core::D;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
/// Which of our optimizers trains.
pub enum OptimizerKind {
    /// Adam (β1 0.9, β2 0.999, ε 1e-7, bias-corrected): the seed's.
    Adam,
    /// SGD, with optional momentum.
    Sgd,
}

impl std::fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OptimizerKind::Adam => "adam",
            OptimizerKind::Sgd => "sgd",
        })
    }
}

/// The seed's hyper-parameters are the defaults: Adam, lr 1e-3, batch 32, 5 epochs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per optimizer step.
    pub batch_size: usize,
    /// Which optimizer.
    pub optimizer: OptimizerKind,
    /// The optimizer's learning rate.
    pub learning_rate: f64,
    /// SGD only.
    pub momentum: f64,
    /// Seeds the initial weights and the shuffling: the same seed, the same model.
    pub seed: u64,
    /// Train on the first `limit` training samples only.
    pub limit: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 32,
            optimizer: OptimizerKind::Adam,
            learning_rate: 1e-3,
            momentum: 0.0,
            seed: 42,
            limit: None,
        }
    }
}

/// The learning rates accepted, checked as the f32 the optimizers use.
pub const LEARNING_RATES: std::ops::RangeInclusive<f32> = 1e-7..=10.0;

impl TrainConfig {
    /// The one check of a configuration, for every way in (CLI, function). The rates are
    /// checked as the f32 the optimizers compute with: 1e-46 is 0 there, 0.99999999999 is 1
    /// and 1e39 is infinite, whatever the f64 said.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::InvalidConfig(m));
        if self.epochs == 0 {
            return bad("epochs is 0; give at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size is 0; give at least 1".into());
        }
        let lr = self.learning_rate as f32;
        if !(lr.is_finite() && LEARNING_RATES.contains(&lr)) {
            return bad(format!(
                "learning_rate is {} ({lr} as the f32 the optimizer uses); it must be a positive number from {:e} to {}",
                self.learning_rate,
                LEARNING_RATES.start(),
                LEARNING_RATES.end()
            ));
        }
        let momentum = self.momentum as f32;
        if !(0.0..1.0).contains(&momentum) {
            return bad(format!(
                "momentum is {} ({momentum} as the f32 the optimizer uses); allowed: 0 ≤ momentum < 1",
                self.momentum
            ));
        }
        if self.optimizer == OptimizerKind::Adam && momentum != 0.0 {
            return bad(format!(
                "momentum is {} but the optimizer is adam, which keeps its own moments (β1 0.9, β2 0.999); momentum is for sgd",
                self.momentum
            ));
        }
        match self.limit {
            Some(0) => return bad("limit is 0; give at least 1 sample, or none for all".into()),
            Some(limit) if self.batch_size > limit => {
                return bad(format!(
                    "batch_size {} is larger than limit {limit}: every step would be the whole set; lower batch_size or raise limit",
                    self.batch_size
                ))
            }
            _ => {}
        }
        Ok(())
    }

    fn optimizer(&self) -> Box<dyn Optimizer> {
        match self.optimizer {
            OptimizerKind::Adam => Box::new(Adam::new(self.learning_rate)),
            OptimizerKind::Sgd => Box::new(Sgd::with_momentum(self.learning_rate, self.momentum)),
        }
    }
}

/// Why a training run stopped.
#[derive(Debug, thiserror::Error)]
// Documented by its messages.
#[allow(missing_docs)]
pub enum TrainError {
    #[error("invalid training configuration: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("optimizer step failed: {0}")]
    Optim(#[from] OptimError),
    #[error("the loss became {0} at epoch {1}: training diverged; lower the learning rate")]
    Diverged(f32, usize),
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        TrainError::Model(ModelError::Candle(e))
    }
}

/// One epoch's figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    /// The mean training loss over its batches.
    pub train_loss: f32,
    /// Training images seen.
    pub samples: usize,
    /// Its training time.
    pub seconds: f64,
    /// `samples / seconds`.
    pub samples_per_second: f64,
}

/// A model's figures on a test set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalMetrics {
    /// The share of images classified right, 0..=1.
    pub test_accuracy: f64,
    /// The mean cross-entropy.
    pub test_loss: f64,
    /// How many images.
    pub samples: usize,
}

impl std::fmt::Display for EvalMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Test accuracy: {:.4}, loss {:.4}, on {} images",
            self.test_accuracy, self.test_loss, self.samples
        )
    }
}

/// A training run's figures: the trained model on the test set, and how training went.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainMetrics {
    /// The share of test images classified right, 0..=1.
    pub test_accuracy: f64,
    /// The mean cross-entropy on the test set.
    pub test_loss: f64,
    /// Epochs trained in: the last one may be partial when training was stopped early.
    pub epochs: usize,
    /// Passes over the training set actually made, fractional (2.5: two epochs and half of
    /// the third).
    #[serde(default)]
    pub epochs_completed: f64,
    /// Training time, evaluation excluded.
    pub seconds: f64,
    /// Training images per second of training time.
    pub samples_per_second: f64,
    /// Training images in the set trained on (after `limit`).
    pub train_samples: usize,
    /// False when the observer stopped training before the last epoch ended.
    pub completed: bool,
    /// Each epoch's figures, in order.
    pub per_epoch: Vec<EpochMetrics>,
}

/// What `lambda-cnn train` made: the run's figures and where its weights and card went.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOutcome {
    /// The run's figures.
    #[serde(flatten)]
    pub metrics: TrainMetrics,
    /// Where the weights were written.
    pub weights: std::path::PathBuf,
    /// The SHA-256 of the weights file, hex.
    pub weights_sha256: String,
    /// The model card beside the weights.
    pub card: std::path::PathBuf,
}

impl std::fmt::Display for TrainOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.metrics;
        write!(
            f,
            "Test accuracy: {:.4} (loss {:.4}) after {} epochs, {:.1} s, {:.0} samples/s\n\
             weights: {} (sha256 {})\ncard: {}",
            m.test_accuracy,
            m.test_loss,
            m.epochs,
            m.seconds,
            m.samples_per_second,
            self.weights.display(),
            self.weights_sha256,
            self.card.display()
        )
    }
}

/// Hooks into a training run. Every method has a do-nothing default.
pub trait TrainObserver {
    /// Epoch `epoch` of `epochs` (1-based) begins, `batches` batches long.
    fn epoch_started(&mut self, _epoch: usize, _epochs: usize, _batches: usize) {}
    /// Batch `batch` (1-based in its epoch) was trained on, with this loss.
    fn batch_done(&mut self, _batch: usize, _loss: f32) {}
    /// An epoch ended, with its figures.
    fn epoch_done(&mut self, _metrics: &EpochMetrics, _epochs: usize) {}
    /// Asked before each batch: `true` ends training there, keeping what was learned so far.
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// An observer that does nothing.
pub struct Quiet;
impl TrainObserver for Quiet {}

/// The model's parameters and its optimizer, stepping one mini-batch at a time.
pub struct Trainer {
    params: Params,
    grads: Params,
    optimizer: Box<dyn Optimizer>,
    backprop: Backprop,
}

impl Trainer {
    /// A trainer starting from `model`'s weights.
    pub fn new(model: Cnn, optimizer: Box<dyn Optimizer>) -> Result<Self, TrainError> {
        Ok(Self {
            params: model.params()?,
            grads: Params::zeros(),
            optimizer,
            backprop: Backprop::default(),
        })
    }

    /// The weights as they stand.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The trained model.
    pub fn into_model(self) -> Result<Cnn, TrainError> {
        Ok(Cnn::from_params(&self.params)?)
    }

    /// One optimizer step on a mini-batch; returns the batch's mean loss.
    pub fn step<'a>(
        &mut self,
        images: impl ExactSizeIterator<Item = &'a [u8]>,
        labels: &[u8],
    ) -> Result<f32, TrainError> {
        // A batch is refused before the optimizer's step begins (and counts).
        self.backprop.set_batch(images, labels)?;
        // The rest runs on a worker of the thread pool, so that its parallel phases pass
        // between the workers instead of each being injected from this thread and waited for.
        rayon::scope(|_| {
            let isa = self.backprop.isa();
            let mut step = self
                .optimizer
                .begin_step(&Params::SHAPES.map(|(_, len)| len))?;
            let loss = self.backprop.loss_and_gradients_updating_fc1(
                &mut self.params,
                &mut self.grads,
                step.take(Params::FC1_W),
            )?;
            // The other parameters are small (2.6k values in all).
            for (index, (p, g)) in self
                .params
                .buffers_mut()
                .into_iter()
                .zip(self.grads.buffers())
                .enumerate()
            {
                if index != Params::FC1_W {
                    step.take(index).apply(isa, p, g);
                }
            }
            Ok(loss)
        })
    }
}

/// Trains a fresh model on `train` as `config` says, then evaluates it on `test`.
pub fn train(
    train: &Split,
    test: &Split,
    config: &TrainConfig,
    observer: &mut dyn TrainObserver,
) -> Result<(Cnn, TrainMetrics), TrainError> {
    config.validate()?;
    // This thread runs the step's serial parts; the rayon workers flush already.
    crate::runtime::flush_denormals();
    let n = config.limit.unwrap_or(usize::MAX).min(train.len());
    let mut trainer = Trainer::new(Cnn::init(config.seed)?, config.optimizer())?;
    // The shuffle gets its own stream, so the initial weights do not depend on it.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.seed);
    rng.set_stream(1);
    let mut order: Vec<usize> = (0..n).collect();
    let batches = n.div_ceil(config.batch_size);
    let mut per_epoch = Vec::new();
    let mut completed = true;
    let mut trained = 0usize;
    let start = Instant::now();
    'epochs: for epoch in 1..=config.epochs {
        order.shuffle(&mut rng);
        observer.epoch_started(epoch, config.epochs, batches);
        let epoch_start = Instant::now();
        let (mut loss_sum, mut seen) = (0f64, 0usize);
        for (b, idx) in order.chunks(config.batch_size).enumerate() {
            if observer.should_stop() {
                completed = false;
                if seen > 0 {
                    per_epoch.push(epoch_metrics(epoch, loss_sum, seen, epoch_start));
                }
                break 'epochs;
            }
            let labels: Vec<u8> = idx.iter().map(|&i| train.labels[i]).collect();
            let loss = trainer.step(idx.iter().map(|&i| train.image(i)), &labels)?;
            if !loss.is_finite() {
                return Err(TrainError::Diverged(loss, epoch));
            }
            loss_sum += loss as f64 * idx.len() as f64;
            seen += idx.len();
            trained += idx.len();
            observer.batch_done(b + 1, loss);
        }
        let metrics = epoch_metrics(epoch, loss_sum, seen, epoch_start);
        observer.epoch_done(&metrics, config.epochs);
        per_epoch.push(metrics);
    }
    let seconds = start.elapsed().as_secs_f64();
    let model = trainer.into_model()?;
    let eval = evaluate(&model, test)?;
    Ok((
        model,
        TrainMetrics {
            test_accuracy: eval.test_accuracy,
            test_loss: eval.test_loss,
            epochs: per_epoch.len(),
            epochs_completed: trained as f64 / n.max(1) as f64,
            seconds,
            samples_per_second: trained as f64 / seconds.max(1e-9),
            train_samples: n,
            completed,
            per_epoch,
        },
    ))
}

fn epoch_metrics(epoch: usize, loss_sum: f64, seen: usize, start: Instant) -> EpochMetrics {
    let seconds = start.elapsed().as_secs_f64();
    EpochMetrics {
        epoch,
        train_loss: (loss_sum / seen.max(1) as f64) as f32,
        samples: seen,
        seconds,
        samples_per_second: seen as f64 / seconds.max(1e-9),
    }
}

/// Accuracy and mean cross-entropy of `model` on `split`.
pub fn evaluate(model: &Cnn, split: &Split) -> Result<EvalMetrics, ModelError> {
    const BATCH: usize = 1000;
    let (mut correct, mut loss_sum) = (0usize, 0f64);
    for start in (0..split.len()).step_by(BATCH) {
        let end = (start + BATCH).min(split.len());
        let logits = model.forward_bytes(
            split.images[start * IMAGE_PIXELS..end * IMAGE_PIXELS].chunks_exact(IMAGE_PIXELS),
        )?;
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
        for (row, &label) in log_probs.iter().zip(&split.labels[start..end]) {
            debug_assert_eq!(row.len(), CLASSES);
            correct += usize::from(argmax(row) == label as usize);
            loss_sum -= row[label as usize] as f64;
        }
    }
    let samples = split.len();
    Ok(EvalMetrics {
        test_accuracy: correct as f64 / samples.max(1) as f64,
        test_loss: loss_sum / samples.max(1) as f64,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_split(n: usize) -> Split {
        // Two classes a linear model separates: bright top half vs bright bottom half.
        let mut images = Vec::with_capacity(n * IMAGE_PIXELS);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let label = (i % 2) as u8;
            for p in 0..IMAGE_PIXELS {
                let top = p < IMAGE_PIXELS / 2;
                images.push(if top == (label == 0) {
                    200 + (i % 50) as u8
                } else {
                    (i % 30) as u8
                });
            }
            labels.push(label);
        }
        Split { images, labels }
    }

    #[test]
    fn invalid_configs_are_refused_before_work() {
        let s = tiny_split(4);
        for config in [
            TrainConfig {
                epochs: 0,
                ..Default::default()
            },
            TrainConfig {
                batch_size: 0,
                ..Default::default()
            },
            TrainConfig {
                learning_rate: -1.0,
                ..Default::default()
            },
            TrainConfig {
                learning_rate: f64::NAN,
                ..Default::default()
            },
            TrainConfig {
                limit: Some(0),
                ..Default::default()
            },
        ] {
            assert!(matches!(
                train(&s, &s, &config, &mut Quiet),
                Err(TrainError::InvalidConfig(_))
            ));
        }
    }

    #[test]
    fn same_seed_same_model_and_a_separable_task_is_learned() {
        // Batches of 32 are split over the cores in the conv backward: the model must still
        // come out the same, bit for bit.
        let s = tiny_split(256);
        let config = TrainConfig {
            epochs: 2,
            batch_size: 32,
            ..Default::default()
        };
        let (a, ma) = train(&s, &s, &config, &mut Quiet).unwrap();
        let (b, _) = train(&s, &s, &config, &mut Quiet).unwrap();
        assert_eq!(a.to_safetensors().unwrap(), b.to_safetensors().unwrap());
        assert_eq!(ma.test_accuracy, 1.0);
        assert_eq!(ma.epochs, 2);
        assert!(ma.completed);
        assert_eq!(ma.per_epoch[1].samples, 256);
    }

    /// Folding fc1's update into the backward pass changes where it runs, not what it computes:
    /// the same bits as the gradients first and then a separate optimizer step, for both
    /// optimizers, over several steps (so the optimizer state is exercised too).
    #[test]
    fn fused_update_matches_a_separate_optimizer_step() {
        let s = tiny_split(96);
        let optimizers = || -> [Box<dyn Optimizer>; 2] {
            [
                Box::new(Adam::new(1e-3)),
                Box::new(Sgd::with_momentum(0.05, 0.9)),
            ]
        };
        for (fused, mut separate) in optimizers().into_iter().zip(optimizers()) {
            let model = Cnn::init(3).unwrap();
            let mut params = model.params().unwrap();
            let mut trainer = Trainer::new(model, fused).unwrap();
            let mut backprop = Backprop::default();
            let mut grads = Params::zeros();
            for batch in 0..3 {
                let idx = batch * 32..(batch + 1) * 32;
                let images = || idx.clone().map(|i| s.image(i));
                let labels = &s.labels[idx.clone()];
                let fused_loss = trainer.step(images(), labels).unwrap();
                backprop.set_batch(images(), labels).unwrap();
                let loss = backprop.loss_and_gradients(&params, &mut grads).unwrap();
                separate
                    .step(&mut params.buffers_mut(), &grads.buffers())
                    .unwrap();
                assert_eq!(fused_loss, loss);
                assert!(
                    trainer.params() == &params,
                    "step {batch}: the parameters differ"
                );
            }
        }
    }

    /// A refused batch must not count as an optimizer step (Adam's bias correction follows
    /// the count): after one, training goes on exactly as if it had not been offered.
    #[test]
    fn a_run_stopped_early_reports_the_epochs_it_trained_in() {
        struct StopAfter(usize);
        impl TrainObserver for StopAfter {
            fn should_stop(&mut self) -> bool {
                self.0 = self.0.saturating_sub(1);
                self.0 == 0
            }
        }
        let s = tiny_split(256);
        let config = TrainConfig {
            epochs: 3,
            batch_size: 32,
            ..Default::default()
        };
        // 8 batches an epoch; stopped before the 4th batch of the first epoch.
        let (_, m) = train(&s, &s, &config, &mut StopAfter(4)).unwrap();
        assert!(!m.completed);
        assert_eq!((m.epochs, m.epochs_completed), (1, 96.0 / 256.0));
        assert_eq!(m.per_epoch[0].samples, 96);
        // Stopped in the second epoch, after 10 batches in all.
        let (_, m) = train(&s, &s, &config, &mut StopAfter(11)).unwrap();
        assert_eq!((m.epochs, m.epochs_completed), (2, 320.0 / 256.0));
        let (_, m) = train(&s, &s, &config, &mut Quiet).unwrap();
        assert!(m.completed);
        assert_eq!((m.epochs, m.epochs_completed), (3, 3.0));
    }

    #[test]
    fn a_refused_batch_leaves_the_optimizer_untouched() {
        let s = tiny_split(32);
        let images = || (0..32).map(|i| s.image(i));
        let mut offered = Trainer::new(Cnn::init(5).unwrap(), Box::new(Adam::new(1e-3))).unwrap();
        let mut clean = Trainer::new(Cnn::init(5).unwrap(), Box::new(Adam::new(1e-3))).unwrap();
        let mut bad_labels = s.labels.clone();
        bad_labels[7] = 10;
        assert!(matches!(
            offered.step(images(), &bad_labels),
            Err(TrainError::Model(ModelError::BadLabel(10)))
        ));
        assert!(matches!(
            offered.step(images(), &s.labels[..31]),
            Err(TrainError::Model(ModelError::BadBatch { .. }))
        ));
        offered.step(images(), &s.labels).unwrap();
        clean.step(images(), &s.labels).unwrap();
        assert!(offered.params() == clean.params());
    }
}
