//! The seed's CNN: Conv2d(1→32, 3×3, valid) + ReLU → MaxPool 2×2 → Flatten (5408) →
//! Dense 128 + ReLU → Dense 10 (softmax in the loss).
//!
//! Internally the layers are laid out for speed on a CPU: the convolution is an im2col matmul
//! ([676·B, 9] × [9, 32]) whose output is channels-last, so max-pooling and flattening need no
//! transposes, and the dense weights are stored pre-transposed ([in, out], contiguous). The
//! weights *file* keeps PyTorch's names and layouts (`weights.rs` converts), so the internal
//! layout can change without changing the format.

pub mod patches;
pub mod weights;

use crate::data::IMAGE_PIXELS;
use candle_core::{DType, Device, Tensor, Var, D};
use patches::{push_patches, CONV_SIDE, PATCHES_PER_IMAGE, PATCH_LEN};
use rand::{Rng, SeedableRng};

pub const CHANNELS: usize = 32;
pub const POOL_SIDE: usize = CONV_SIDE / 2; // 13
pub const FLAT: usize = POOL_SIDE * POOL_SIDE * CHANNELS; // 5408
pub const HIDDEN: usize = 128;
pub const CLASSES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("cannot read weights {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
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

    /// Logits [n, 10] from the im2col patches of `n` images ([n·676, 9]).
    pub fn forward_patches(&self, patches: &Tensor, n: usize) -> Result<Tensor, ModelError> {
        let h = patches
            .matmul(&self.conv_w)?
            .broadcast_add(&self.conv_b)?
            .relu()?;
        // Rows are (image, y, x): y = 2·py + dy, x = 2·px + dx, so pooling is a max over the
        // two size-2 axes of this view.
        let h = h
            .reshape((n, POOL_SIDE, 2, POOL_SIDE, 2, CHANNELS))?
            .max_keepdim(4)?
            .max_keepdim(2)?
            .reshape((n, FLAT))?;
        let h = h.matmul(&self.fc1_w)?.broadcast_add(&self.fc1_b)?.relu()?;
        Ok(h.matmul(&self.fc2_w)?.broadcast_add(&self.fc2_b)?)
    }

    /// Logits for images given as bytes (0..=255, MNIST polarity), 784 per image.
    pub fn forward_bytes<'a>(
        &self,
        images: impl ExactSizeIterator<Item = &'a [u8]>,
    ) -> Result<Tensor, ModelError> {
        let n = images.len();
        let mut buf = Vec::with_capacity(n * PATCHES_PER_IMAGE * PATCH_LEN);
        for image in images {
            if image.len() != IMAGE_PIXELS {
                return Err(ModelError::BadInput {
                    expected: IMAGE_PIXELS,
                    got: image.len(),
                });
            }
            push_patches(image, 1.0 / 255.0, &mut buf);
        }
        let patches = Tensor::from_vec(buf, (n * PATCHES_PER_IMAGE, PATCH_LEN), &Device::Cpu)?;
        self.forward_patches(&patches, n)
    }

    /// Class probabilities for images given as values in [0, 1], 784 per image, row-major.
    pub fn probabilities(&self, pixels: &[f32]) -> Result<Vec<[f32; CLASSES]>, ModelError> {
        if pixels.is_empty() || !pixels.len().is_multiple_of(IMAGE_PIXELS) {
            return Err(ModelError::BadInput {
                expected: IMAGE_PIXELS * (pixels.len() / IMAGE_PIXELS).max(1),
                got: pixels.len(),
            });
        }
        let n = pixels.len() / IMAGE_PIXELS;
        let mut buf = Vec::with_capacity(n * PATCHES_PER_IMAGE * PATCH_LEN);
        for image in pixels.chunks_exact(IMAGE_PIXELS) {
            push_patches(image, 1.0, &mut buf);
        }
        let patches = Tensor::from_vec(buf, (n * PATCHES_PER_IMAGE, PATCH_LEN), &Device::Cpu)?;
        let probs = candle_nn::ops::softmax(&self.forward_patches(&patches, n)?, D::Minus1)?;
        Ok(probs
            .to_vec2::<f32>()?
            .into_iter()
            .map(|row| {
                let mut out = [0.0; CLASSES];
                out.copy_from_slice(&row);
                out
            })
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
