//! Inference without the tensor graph, image by image (a batch is spread over the rayon pool).
//! candle spends ~15 small ops (each an allocation and a dispatch) on a forward pass; here the
//! conv block runs the same kernel as the custom op, fc1 adds the weight rows of the non-zero
//! pooled features only (about half are zero after the ReLU), and fc2 and the softmax are a few
//! dozen multiply-adds. Measured on 2 cores: one image 104–150 µs → 33 µs (p50), batches of 256
//! 33–39k → 47–52k images/s. Tested against the graph in `tests.rs`.

use super::conv_pool::{self, CHANNELS, PIXELS, POOLED, TAPS};
use super::{Cnn, ModelError, CLASSES, HIDDEN};
use crate::simd::{madd, multiversion, Isa};

/// The weights, copied out of the model's tensors.
pub(crate) struct InferenceWeights {
    conv_w: [[f32; CHANNELS]; TAPS],
    conv_b: [f32; CHANNELS],
    /// [5408, 128], rows in the pooled map's (y, x, channel) order.
    fc1_w: Vec<f32>,
    fc1_b: [f32; HIDDEN],
    /// [128, 10].
    fc2_w: Vec<f32>,
    fc2_b: [f32; CLASSES],
}

fn values(t: &candle_core::Tensor) -> Result<Vec<f32>, ModelError> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

fn array<const N: usize>(v: Vec<f32>) -> Result<[f32; N], ModelError> {
    let got = v.len();
    v.try_into()
        .map_err(|_| ModelError::BadInput { expected: N, got })
}

impl InferenceWeights {
    pub(crate) fn new(m: &Cnn) -> Result<Self, ModelError> {
        let conv = values(&m.conv_w)?;
        let mut conv_w = [[0f32; CHANNELS]; TAPS];
        for (row, chunk) in conv_w.iter_mut().zip(conv.chunks_exact(CHANNELS)) {
            row.copy_from_slice(chunk);
        }
        Ok(Self {
            conv_w,
            conv_b: array(values(&m.conv_b)?)?,
            fc1_w: values(&m.fc1_w)?,
            fc1_b: array(values(&m.fc1_b)?)?,
            fc2_w: values(&m.fc2_w)?,
            fc2_b: array(values(&m.fc2_b)?)?,
        })
    }

    pub(crate) fn probabilities(&self, img: &[f32; PIXELS]) -> [f32; CLASSES] {
        let mut pooled = vec![0f32; POOLED];
        let mut winners = vec![0u8; POOLED];
        let isa = Isa::detect();
        conv_pool::forward_one(
            isa,
            img,
            &self.conv_w,
            &self.conv_b,
            &mut pooled,
            &mut winners,
        );
        let mut hidden = self.fc1_b;
        fc1(isa, &pooled, &self.fc1_w, &mut hidden);
        let mut logits = self.fc2_b;
        for (h, row) in hidden.iter().zip(self.fc2_w.chunks_exact(CLASSES)) {
            let h = h.max(0.0);
            for (l, w) in logits.iter_mut().zip(row) {
                *l += h * w;
            }
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for l in logits.iter_mut() {
            *l = (*l - max).exp();
            sum += *l;
        }
        logits.map(|e| e / sum)
    }
}

multiversion! {
    /// `hidden += pooledᵀ·w`, skipping the rows of the pooled values the ReLU zeroed.
    fn fc1<FMA, WIDE>(pooled: &[f32], w: &[f32], hidden: &mut [f32; HIDDEN]) {
        for (&x, row) in pooled.iter().zip(w.chunks_exact(HIDDEN)) {
            if x != 0.0 {
                for (h, w) in hidden.iter_mut().zip(row) {
                    *h = madd::<FMA>(x, *w, *h);
                }
            }
        }
    }
}
