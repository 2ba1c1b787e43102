//! The seed's CNN: Conv2d(1→32, 3×3, valid) + ReLU → MaxPool 2×2 → Flatten (5408) →
//! Dense 128 + ReLU → Dense 10 (softmax in the loss).
//!
//! Internally the layers are laid out for speed on a CPU: conv + ReLU + max-pool is one custom
//! op (`conv_pool.rs`) whose output is channels-last, so flattening needs no transpose, and the
//! dense weights are stored pre-transposed ([in, out], contiguous). The weights *file* keeps
//! PyTorch's names and layouts (`weights.rs` converts), so the internal layout can change
//! without changing the format.
//!
//! Three ways through the same kernels: [`Cnn::forward`] builds a candle graph (evaluation, and
//! the reference the tests differentiate); `backprop.rs` is a training step by hand on flat
//! [`Params`], which is what training runs; `infer.rs` predicts image by image.

#![warn(missing_docs)]

pub mod backprop;
pub mod conv_pool;
mod dense;
mod infer;
pub mod weights;

use crate::data::IMAGE_PIXELS;
use candle_core::{DType, Device, Tensor, Var};
pub use conv_pool::{CHANNELS, POOL_SIDE, TAPS as PATCH_LEN};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// The flattened pooled map fc1 reads: 13 × 13 × 32 = 5408.
pub const FLAT: usize = conv_pool::POOLED;
/// fc1's outputs.
pub const HIDDEN: usize = crate::net::spec::seed::HIDDEN;
/// The digits 0..=9.
pub const CLASSES: usize = crate::net::spec::seed::CLASSES;

/// What can go wrong in the model: its input, its weights file, a training step.
#[derive(Debug, thiserror::Error)]
// Documented by its messages.
#[allow(missing_docs)]
pub enum ModelError {
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("cannot read weights {path}: {cause}")]
    Io {
        path: std::path::PathBuf,
        // Shown in the message rather than as `source()`, so a printed chain of causes does
        // not repeat it.
        cause: std::io::Error,
    },
    #[error("invalid weights file{}: {message}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    BadWeights {
        path: Option<std::path::PathBuf>,
        message: String,
    },
    #[error(
        "expected {expected} pixel values ({} per image), got {got}",
        IMAGE_PIXELS
    )]
    BadInput { expected: usize, got: usize },
    #[error("a training batch needs one label per image and at least one image: got {images} images, {labels} labels")]
    BadBatch { images: usize, labels: usize },
    #[error("label {0} is not a class (0..={last})", last = CLASSES - 1)]
    BadLabel(u8),
    #[error("no mini-batch was set for this training step")]
    NoBatch,
    #[error("parameter {name} has {got} values, expected {expected}")]
    BadParams {
        name: &'static str,
        expected: usize,
        got: usize,
    },
}

/// The parameters as flat buffers in the internal layout (see [`Cnn`]'s fields), in the order
/// of [`Cnn::vars`]: what the training step and the optimizers work on.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// The conv kernel, [9, 32] (tap-major).
    pub conv_w: Vec<f32>,
    /// The conv bias, [32].
    pub conv_b: Vec<f32>,
    /// fc1's weight, [5408, 128] (rows in the pooled map's order).
    pub fc1_w: Vec<f32>,
    /// fc1's bias, [128].
    pub fc1_b: Vec<f32>,
    /// fc2's weight, [128, 10].
    pub fc2_w: Vec<f32>,
    /// fc2's bias, [10].
    pub fc2_b: Vec<f32>,
}

impl Params {
    /// Names and lengths, in order.
    pub const SHAPES: [(&'static str, usize); 6] = [
        ("conv_w", PATCH_LEN * CHANNELS),
        ("conv_b", CHANNELS),
        ("fc1_w", FLAT * HIDDEN),
        ("fc1_b", HIDDEN),
        ("fc2_w", HIDDEN * CLASSES),
        ("fc2_b", CLASSES),
    ];

    /// The index of fc1's weight in [`Params::SHAPES`] and the buffers.
    pub const FC1_W: usize = 2;

    /// Every parameter zero (the shape of a gradient before it is accumulated).
    pub fn zeros() -> Self {
        let z = |i: usize| vec![0f32; Self::SHAPES[i].1];
        Self {
            conv_w: z(0),
            conv_b: z(1),
            fc1_w: z(2),
            fc1_b: z(3),
            fc2_w: z(4),
            fc2_b: z(5),
        }
    }

    /// The six buffers, in [`Params::SHAPES`] order.
    pub fn buffers(&self) -> [&[f32]; 6] {
        [
            &self.conv_w,
            &self.conv_b,
            &self.fc1_w,
            &self.fc1_b,
            &self.fc2_w,
            &self.fc2_b,
        ]
    }

    /// The six buffers, mutable, in [`Params::SHAPES`] order.
    pub fn buffers_mut(&mut self) -> [&mut [f32]; 6] {
        [
            &mut self.conv_w,
            &mut self.conv_b,
            &mut self.fc1_w,
            &mut self.fc1_b,
            &mut self.fc2_w,
            &mut self.fc2_b,
        ]
    }

    /// Every buffer has its length.
    pub fn check(&self) -> Result<(), ModelError> {
        for (b, (name, expected)) in self.buffers().iter().zip(Self::SHAPES) {
            if b.len() != expected {
                return Err(ModelError::BadParams {
                    name,
                    expected,
                    got: b.len(),
                });
            }
        }
        Ok(())
    }
}

/// The CNN's parameters, in the internal layout.
pub struct Cnn {
    /// [9, 32]: row dy·3 + dx, column the output channel.
    pub(crate) conv_w: Var,
    pub(crate) conv_b: Var,
    /// [5408, 128]: rows in (y, x, channel) order of the pooled map.
    pub(crate) fc1_w: Var,
    pub(crate) fc1_b: Var,
    /// [128, 10].
    pub(crate) fc2_w: Var,
    pub(crate) fc2_b: Var,
    /// The inference path's copy of the weights, made on first use.
    infer: std::sync::OnceLock<infer::InferenceWeights>,
}

impl Cnn {
    /// Fresh weights as Keras initialises the seed's model: Glorot-uniform kernels
    /// (limit √(6 / (fan_in + fan_out))), zero biases; deterministic for a given seed.
    pub fn init(seed: u64) -> Result<Self, ModelError> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut glorot = |rows: usize, cols: usize, fan_in: usize, fan_out: usize| {
            let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
            let v: Vec<f32> = (0..rows * cols)
                .map(|_| rng.random_range(-limit..limit))
                .collect();
            Var::from_vec(v, (rows, cols), &Device::Cpu)
        };
        let zeros = |n: usize| Var::zeros(n, DType::F32, &Device::Cpu);
        Ok(Self {
            // Keras counts a conv kernel's fans as in·k·k and out·k·k.
            conv_w: glorot(PATCH_LEN, CHANNELS, PATCH_LEN, PATCH_LEN * CHANNELS)?,
            conv_b: zeros(CHANNELS)?,
            fc1_w: glorot(FLAT, HIDDEN, FLAT, HIDDEN)?,
            fc1_b: zeros(HIDDEN)?,
            fc2_w: glorot(HIDDEN, CLASSES, HIDDEN, CLASSES)?,
            fc2_b: zeros(CLASSES)?,
            infer: Default::default(),
        })
    }

    /// A copy of the parameters as flat buffers.
    pub fn params(&self) -> Result<Params, ModelError> {
        let [a, b, c, d, e, f] = self
            .vars()
            .map(|v| v.as_tensor().flatten_all().and_then(|t| t.to_vec1::<f32>()));
        Ok(Params {
            conv_w: a?,
            conv_b: b?,
            fc1_w: c?,
            fc1_b: d?,
            fc2_w: e?,
            fc2_b: f?,
        })
    }

    /// The model with these parameters.
    pub fn from_params(p: &Params) -> Result<Self, ModelError> {
        p.check()?;
        let var = |v: &[f32], shape: (usize, usize)| Var::from_slice(v, shape, &Device::Cpu);
        Ok(Self {
            conv_w: var(&p.conv_w, (PATCH_LEN, CHANNELS))?,
            conv_b: Var::from_slice(&p.conv_b, CHANNELS, &Device::Cpu)?,
            fc1_w: var(&p.fc1_w, (FLAT, HIDDEN))?,
            fc1_b: Var::from_slice(&p.fc1_b, HIDDEN, &Device::Cpu)?,
            fc2_w: var(&p.fc2_w, (HIDDEN, CLASSES))?,
            fc2_b: Var::from_slice(&p.fc2_b, CLASSES, &Device::Cpu)?,
            infer: Default::default(),
        })
    }

    /// The trainable parameters, in a fixed order the optimizer state follows.
    pub fn vars(&self) -> [&Var; 6] {
        [
            &self.conv_w,
            &self.conv_b,
            &self.fc1_w,
            &self.fc1_b,
            &self.fc2_w,
            &self.fc2_b,
        ]
    }

    /// The same parameters, for replacing them after an optimizer step.
    #[cfg(test)]
    pub(crate) fn vars_mut(&mut self) -> [&mut Var; 6] {
        // The inference path's copy would be stale.
        self.infer = Default::default();
        [
            &mut self.conv_w,
            &mut self.conv_b,
            &mut self.fc1_w,
            &mut self.fc1_b,
            &mut self.fc2_w,
            &mut self.fc2_b,
        ]
    }

    /// Logits [n, 10] from images [n, 784] scaled to [0, 1].
    pub fn forward(&self, images: &Tensor) -> Result<Tensor, ModelError> {
        let h = conv_pool::conv_relu_pool(&images.contiguous()?, &self.conv_w, &self.conv_b)?;
        let h = h.matmul(&self.fc1_w)?.broadcast_add(&self.fc1_b)?.relu()?;
        Ok(h.matmul(&self.fc2_w)?.broadcast_add(&self.fc2_b)?)
    }

    /// Logits for images given as bytes (0..=255, MNIST polarity), 784 per image.
    pub fn forward_bytes<'a>(
        &self,
        images: impl ExactSizeIterator<Item = &'a [u8]>,
    ) -> Result<Tensor, ModelError> {
        let n = images.len();
        let mut buf = Vec::with_capacity(n * IMAGE_PIXELS);
        for image in images {
            if image.len() != IMAGE_PIXELS {
                return Err(ModelError::BadInput {
                    expected: IMAGE_PIXELS,
                    got: image.len(),
                });
            }
            buf.extend(image.iter().map(|&p| p as f32 * (1.0 / 255.0)));
        }
        self.forward(&Tensor::from_vec(buf, (n, IMAGE_PIXELS), &Device::Cpu)?)
    }

    /// Class probabilities for images given as values in [0, 1], 784 per image, row-major.
    /// Runs without the tensor graph ([`infer`]); the first call copies the weights out.
    pub fn probabilities(&self, pixels: &[f32]) -> Result<Vec<[f32; CLASSES]>, ModelError> {
        if pixels.is_empty() || !pixels.len().is_multiple_of(IMAGE_PIXELS) {
            return Err(ModelError::BadInput {
                expected: IMAGE_PIXELS * (pixels.len() / IMAGE_PIXELS).max(1),
                got: pixels.len(),
            });
        }
        let weights = match self.infer.get() {
            Some(w) => w,
            None => {
                let made = infer::InferenceWeights::new(self)?;
                self.infer.get_or_init(|| made)
            }
        };
        Ok(pixels
            .par_chunks_exact(IMAGE_PIXELS)
            .map(|img| weights.probabilities(img.try_into().expect("chunks of 784")))
            .collect())
    }
}

/// The index of the largest value (the first, on ties).
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

#[cfg(test)]
mod tests;
