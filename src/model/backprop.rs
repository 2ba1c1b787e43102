//! One training step's forward and backward pass by hand, on flat buffers reused from step to
//! step: the loss of a mini-batch and the gradient of every parameter.
//!
//! Why not candle's autograd: a step of this small model is ~160 MFLOP, and a profile of the
//! step through the graph (with the conv block already a custom op) showed zero-filling and
//! copying fresh tensors at ~16 % of the time, candle's elementwise closures ~12 %, thread-pool
//! sleeps and wake-ups ~10 %, and fc1 in candle's matmul (AVX2 at most, packing its operands on
//! every call) ~24 %. Here the conv block reuses the fused kernels of `conv_pool.rs` (the
//! graph's custom op runs the very same code), fc1 runs on `dense.rs`, and the rest (fc2,
//! softmax, cross-entropy) is a few thousand multiply-adds done in place.
//! Every parallel split is fixed (never depends on the thread count or on scheduling), so a
//! step gives the same bits on any machine with the same instruction set. Tested against
//! candle's stock ops in `tests.rs`.

use super::conv_pool::{self, CHANNELS, PIXELS, POOLED, TAPS};
use super::dense::{self, LANES};
use super::{ModelError, Params, CLASSES, HIDDEN};
use crate::optim::Piece;
use crate::simd::Isa;
use rayon::prelude::*;

/// fc1's forward is split over this many ranges of its 5408 inputs, summed in order.
const FORWARD_SPLITS: usize = 4;
/// fc1's backward works on this many weight rows per task.
const BACKWARD_ROWS: usize = 128;

/// The buffers of a step, kept between steps so that a step allocates nothing.
pub struct Backprop {
    isa: Isa,
    /// Whether `pixels` and `labels` hold a batch that passed its checks.
    batch_ready: bool,
    pixels: Vec<f32>,
    labels: Vec<u8>,
    /// Conv block output, [n, 5408]: fc1's input.
    pooled: Vec<f32>,
    winners: Vec<u8>,
    /// fc1's partial sums, [FORWARD_SPLITS, n, 128].
    partial: Vec<f32>,
    /// fc1's output before the ReLU, [n, 128].
    z1: Vec<f32>,
    /// Gradient at fc1's output, [n, 128], and transposed in blocks of 32 batch rows.
    dz1: Vec<f32>,
    dz1_t: Vec<[[f32; LANES]; HIDDEN]>,
    /// Gradient at the conv block's output, [n, 5408].
    dpooled: Vec<f32>,
}

impl Default for Backprop {
    fn default() -> Self {
        Self::new(Isa::detect())
    }
}

impl Backprop {
    /// The instruction set its kernels run with (and the optimizer's updates, in training).
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// A training step whose kernels run on `isa`.
    pub fn new(isa: Isa) -> Self {
        Self {
            isa,
            batch_ready: false,
            pixels: Vec::new(),
            labels: Vec::new(),
            pooled: Vec::new(),
            winners: Vec::new(),
            partial: Vec::new(),
            z1: Vec::new(),
            dz1: Vec::new(),
            dz1_t: Vec::new(),
            dpooled: Vec::new(),
        }
    }

    /// Takes a mini-batch in: checks it (one label per image, each a class; 784 pixels an
    /// image) and scales its pixels. A batch that fails a check leaves none set, so the
    /// caller can refuse it before anything (an optimizer step) has begun.
    pub fn set_batch<'a>(
        &mut self,
        images: impl ExactSizeIterator<Item = &'a [u8]>,
        labels: &[u8],
    ) -> Result<(), ModelError> {
        self.batch_ready = false;
        let n = labels.len();
        if images.len() != n || n == 0 {
            return Err(ModelError::BadBatch {
                images: images.len(),
                labels: n,
            });
        }
        if let Some(&label) = labels.iter().find(|&&l| l as usize >= CLASSES) {
            return Err(ModelError::BadLabel(label));
        }
        self.resize(n);
        for (dst, image) in self.pixels.chunks_exact_mut(PIXELS).zip(images) {
            if image.len() != PIXELS {
                return Err(ModelError::BadInput {
                    expected: PIXELS,
                    got: image.len(),
                });
            }
            for (d, &p) in dst.iter_mut().zip(image) {
                *d = p as f32 * (1.0 / 255.0);
            }
        }
        self.labels.clear();
        self.labels.extend_from_slice(labels);
        self.batch_ready = true;
        Ok(())
    }

    /// The mean cross-entropy of the batch under `params`; the gradient of each parameter is
    /// written into `grads` (every value overwritten).
    pub fn loss_and_gradients(
        &mut self,
        params: &Params,
        grads: &mut Params,
    ) -> Result<f32, ModelError> {
        let loss = self.forward(params, grads)?;
        self.fc1_backward(grads, Fc1::Read(&params.fc1_w));
        self.conv_backward(grads)?;
        Ok(loss)
    }

    /// As [`Backprop::loss_and_gradients`], and also applies `fc1_update` (an optimizer step's
    /// update of fc1's weights) inside the backward pass: each task updates its rows of the
    /// weight right after making their gradient, while both are still in cache, instead of a
    /// separate pass over 2.8 MB of weights, gradient and each optimizer moment.
    pub fn loss_and_gradients_updating_fc1(
        &mut self,
        params: &mut Params,
        grads: &mut Params,
        fc1_update: Piece<'_>,
    ) -> Result<f32, ModelError> {
        let loss = self.forward(params, grads)?;
        self.fc1_backward(grads, Fc1::Update(&mut params.fc1_w, fc1_update));
        self.conv_backward(grads)?;
        Ok(loss)
    }

    /// Everything up to fc1's backward: the loss, and the gradients of the biases and fc2.
    fn forward(&mut self, params: &Params, grads: &mut Params) -> Result<f32, ModelError> {
        if !self.batch_ready {
            return Err(ModelError::NoBatch);
        }
        params.check()?;
        grads.check()?;
        self.conv_forward(params);
        self.fc1_forward(params);
        Ok(self.head(params, grads))
    }

    fn conv_backward(&mut self, grads: &mut Params) -> Result<(), ModelError> {
        let (dw, db) = conv_pool::kernel_gradients(
            self.isa,
            &self.pixels,
            &self.pooled,
            &self.winners,
            &self.dpooled,
        )
        .map_err(ModelError::Candle)?;
        grads.conv_w.copy_from_slice(dw.as_flattened());
        grads.conv_b.copy_from_slice(&db);
        Ok(())
    }

    fn resize(&mut self, n: usize) {
        // Every element is written before it is read, so only a change of batch size pays for
        // the zero-fill.
        self.pixels.resize(n * PIXELS, 0.0);
        self.pooled.resize(n * POOLED, 0.0);
        self.winners.resize(n * POOLED, 0);
        self.partial.resize(FORWARD_SPLITS * n * HIDDEN, 0.0);
        self.z1.resize(n * HIDDEN, 0.0);
        self.dz1.resize(n * HIDDEN, 0.0);
        self.dz1_t.resize(n.div_ceil(LANES), [[0.0; LANES]; HIDDEN]);
        self.dpooled.resize(n * POOLED, 0.0);
    }

    fn conv_forward(&mut self, params: &Params) {
        let kernel: [[f32; CHANNELS]; TAPS] =
            std::array::from_fn(|k| std::array::from_fn(|c| params.conv_w[k * CHANNELS + c]));
        let bias: &[f32; CHANNELS] = params.conv_b[..].try_into().expect("checked length");
        let isa = self.isa;
        self.pooled
            .par_chunks_mut(POOLED)
            .zip(self.winners.par_chunks_mut(POOLED))
            .zip(self.pixels.par_chunks_exact(PIXELS))
            .for_each(|((out, win), img)| {
                let img: &[f32; PIXELS] = img.try_into().expect("chunks of PIXELS");
                conv_pool::forward_one(isa, img, &kernel, bias, out, win)
            });
    }

    fn fc1_forward(&mut self, params: &Params) {
        let n = self.z1.len() / HIDDEN;
        let (isa, pooled) = (self.isa, &self.pooled);
        let rows_per_split = POOLED.div_ceil(FORWARD_SPLITS);
        self.partial
            .par_chunks_mut(n * HIDDEN)
            .enumerate()
            .for_each(|(s, z)| {
                let k0 = s * rows_per_split;
                let k1 = (k0 + rows_per_split).min(POOLED);
                z.fill(0.0);
                let w = &params.fc1_w[k0 * HIDDEN..k1 * HIDDEN];
                dense::forward_acc(isa, &pooled[k0..], POOLED, n, w, z);
            });
        for (b, z) in self.z1.chunks_exact_mut(HIDDEN).enumerate() {
            z.copy_from_slice(&params.fc1_b);
            for part in self.partial.chunks_exact(n * HIDDEN) {
                for (z, p) in z.iter_mut().zip(&part[b * HIDDEN..(b + 1) * HIDDEN]) {
                    *z += p;
                }
            }
        }
    }

    /// ReLU, fc2, softmax and cross-entropy, forward and back: the loss, fc2's and fc1's bias
    /// gradients, and the gradient at fc1's output (`dz1`, also transposed into `dz1_t`).
    fn head(&mut self, params: &Params, grads: &mut Params) -> f32 {
        let labels = &self.labels;
        let n = labels.len();
        let scale = 1.0 / n as f32;
        grads.fc2_w.fill(0.0);
        grads.fc2_b.fill(0.0);
        grads.fc1_b.fill(0.0);
        let mut loss = 0f64;
        for ((z, dz), &label) in self
            .z1
            .chunks_exact(HIDDEN)
            .zip(self.dz1.chunks_exact_mut(HIDDEN))
            .zip(labels)
        {
            let mut logits: [f32; CLASSES] = params.fc2_b[..].try_into().expect("checked length");
            for (&z, row) in z.iter().zip(params.fc2_w.chunks_exact(CLASSES)) {
                let a = z.max(0.0);
                for (l, w) in logits.iter_mut().zip(row) {
                    *l += a * w;
                }
            }
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
            loss += ((max + sum.ln()) - logits[label as usize]) as f64;
            // ∂loss/∂logit = (softmax − one-hot) / n.
            let mut dlogits = logits.map(|l| (l - max).exp() / sum * scale);
            dlogits[label as usize] -= scale;
            for (g, d) in grads.fc2_b.iter_mut().zip(&dlogits) {
                *g += d;
            }
            for (((&z, row), grow), (dz, g1)) in z
                .iter()
                .zip(params.fc2_w.chunks_exact(CLASSES))
                .zip(grads.fc2_w.chunks_exact_mut(CLASSES))
                .zip(dz.iter_mut().zip(grads.fc1_b.iter_mut()))
            {
                let a = z.max(0.0);
                let mut da = 0.0;
                for ((g, &w), &d) in grow.iter_mut().zip(row).zip(&dlogits) {
                    *g += a * d;
                    da += w * d;
                }
                *dz = if z > 0.0 { da } else { 0.0 };
                *g1 += *dz;
            }
        }
        for (block, rows) in self.dz1_t.iter_mut().zip(self.dz1.chunks(LANES * HIDDEN)) {
            *block = [[0.0; LANES]; HIDDEN];
            for (b, row) in rows.chunks_exact(HIDDEN).enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    block[j][b] = v;
                }
            }
        }
        (loss / n as f64) as f32
    }

    /// fc1's weight gradient, and the gradient at its input (the conv block's output), in
    /// tasks of [`BACKWARD_ROWS`] weight rows; with [`Fc1::Update`], each task then updates
    /// its rows.
    fn fc1_backward(&mut self, grads: &mut Params, fc1: Fc1<'_, '_>) {
        let n = self.z1.len() / HIDDEN;
        let (isa, pooled, dz1, dz1_t) = (self.isa, &self.pooled, &self.dz1, &self.dz1_t);
        let dpooled = Disjoint::new(&mut self.dpooled);
        let task = |t: usize, dw: &mut [f32], w: &[f32]| {
            let k0 = t * BACKWARD_ROWS;
            let rows = dw.len() / HIDDEN;
            dense::weight_gradient(isa, pooled, POOLED, k0, dz1, dw);
            let mut dxt = [[0f32; LANES]; BACKWARD_ROWS];
            for (block, dzt) in dz1_t.iter().enumerate() {
                dense::input_gradient_t(isa, w, dzt, &mut dxt[..rows]);
                for b in 0..LANES.min(n - block * LANES) {
                    let row = (block * LANES + b) * POOLED + k0;
                    // SAFETY: this task alone writes columns k0..k0 + rows of every row.
                    let out = unsafe { dpooled.range(row, rows) };
                    for (o, d) in out.iter_mut().zip(&dxt[..rows]) {
                        *o = d[b];
                    }
                }
            }
        };
        let chunk = BACKWARD_ROWS * HIDDEN;
        match fc1 {
            Fc1::Read(w) => grads
                .fc1_w
                .par_chunks_mut(chunk)
                .zip(w.par_chunks(chunk))
                .enumerate()
                .for_each(|(t, (dw, w))| task(t, dw, w)),
            Fc1::Update(w, update) => {
                assert_eq!(
                    update.len(),
                    w.len(),
                    "fc1's update has the weight's length"
                );
                grads
                    .fc1_w
                    .par_chunks_mut(chunk)
                    .zip(w.par_chunks_mut(chunk))
                    .zip(update.chunks(chunk).into_par_iter())
                    .enumerate()
                    .for_each(|(t, ((dw, w), update))| {
                        // The input gradient needs the weights before the update.
                        task(t, dw, w);
                        update.apply(isa, w, dw);
                    })
            }
        }
    }
}

/// fc1's weights in the backward pass: only read, or read and then updated.
enum Fc1<'w, 'o> {
    Read(&'w [f32]),
    Update(&'w mut [f32], Piece<'o>),
}

/// A buffer that parallel tasks fill at disjoint ranges which are not contiguous slices of it
/// (column ranges of a row-major matrix), so `par_chunks_mut` cannot hand them out.
struct Disjoint<'a> {
    ptr: *mut f32,
    len: usize,
    _buffer: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: the tasks sharing it write disjoint ranges (the contract of `range`).
unsafe impl Send for Disjoint<'_> {}
// SAFETY: shared between tasks only to hand out those disjoint ranges.
unsafe impl Sync for Disjoint<'_> {}

impl<'a> Disjoint<'a> {
    fn new(buffer: &'a mut [f32]) -> Self {
        Self {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            _buffer: std::marker::PhantomData,
        }
    }

    /// `len` values from `start`.
    ///
    /// # Safety
    /// No two live ranges may overlap.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.len, "range out of the buffer");
        // SAFETY: in bounds (checked); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}
