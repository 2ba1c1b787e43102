//! The first block — Conv2d(1→32, 3×3, valid) + ReLU + MaxPool 2×2 — as one candle custom op
//! with a hand-written backward.
//!
//! Why: candle's stock ops spend most of a training step here (conv2d's backward computes an
//! input gradient the first layer does not need; max-pool's backward is an upsample, a compare,
//! an average pool and a multiply; and its gradient comes out divided by the window size in
//! candle 0.11). Fused, the forward reads each image once and writes only the pooled map plus
//! which of the four positions won, and the backward routes each pooled gradient straight to
//! that position's 3×3 patch. Work is split over the batch on the rayon pool. The training step
//! (`backprop.rs`) calls the same kernels without the graph.
//!
//! Layouts: images [n, 784] (row-major 28×28, scaled to [0, 1]); kernel [9, 32] (row ky·3 + kx);
//! bias [32]; output [n, 5408] in (y, x, channel) order of the 13×13×32 pooled map.

use crate::data::IMAGE_SIDE;
#[cfg(target_arch = "x86_64")]
use crate::simd::Kind;
use crate::simd::{madd, multiversion, Isa};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;

pub const KERNEL: usize = 3;
pub const CHANNELS: usize = 32;
pub const TAPS: usize = KERNEL * KERNEL; // 9
pub const CONV_SIDE: usize = IMAGE_SIDE - KERNEL + 1; // 26
pub const POOL_SIDE: usize = CONV_SIDE / 2; // 13
pub const POOLED: usize = POOL_SIDE * POOL_SIDE * CHANNELS; // 5408
pub(crate) const PIXELS: usize = crate::data::IMAGE_PIXELS;

/// Conv + ReLU + max-pool of `images` [n, 784] with `kernel` [9, 32] and `bias` [32].
pub fn conv_relu_pool(images: &Tensor, kernel: &Tensor, bias: &Tensor) -> Result<Tensor> {
    images.apply_op3(kernel, bias, ConvReluPool::default())
}

/// The op. It remembers, from its forward, which window position won each pooled value: the
/// backward needs exactly that and nothing else.
#[derive(Default)]
struct ConvReluPool {
    winners: Mutex<Vec<u8>>,
}

/// A contiguous f32 tensor's values, read in place from its CPU storage.
fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// Runs `f` on the tensor's values, read in place (copied only if not contiguous).
fn with_f32<R>(t: &Tensor, what: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(s) => f(slice(s, layout, what)?),
        _ => candle_core::bail!("conv_relu_pool runs on the CPU only"),
    }
}

/// The 9 pixels under the kernel when its top-left corner is at (y, x).
#[inline(always)]
fn taps(img: &[f32; PIXELS], y: usize, x: usize) -> [f32; TAPS] {
    let r0 = y * IMAGE_SIDE + x;
    let (r1, r2) = (r0 + IMAGE_SIDE, r0 + 2 * IMAGE_SIDE);
    [
        img[r0],
        img[r0 + 1],
        img[r0 + 2],
        img[r1],
        img[r1 + 1],
        img[r1 + 2],
        img[r2],
        img[r2 + 1],
        img[r2 + 2],
    ]
}

multiversion! {
    /// One image: the pooled map and, per pooled value, the winning position q = dy·2 + dx.
    /// Written so the compiler vectorises across the 32 channels: fixed-size arrays, no
    /// data-dependent branches (selects instead).
    fn forward_one_loops<FMA, WIDE>(
        img: &[f32; PIXELS],
        w: &[[f32; CHANNELS]; TAPS],
        b: &[f32; CHANNELS],
        out: &mut [f32],
        winners: &mut [u8],
    ) {
        for py in 0..POOL_SIDE {
            for px in 0..POOL_SIDE {
                let mut conv = [[0f32; CHANNELS]; 4];
                for (q, acc) in conv.iter_mut().enumerate() {
                    let t = taps(img, 2 * py + q / 2, 2 * px + q % 2);
                    *acc = *b;
                    for k in 0..TAPS {
                        for c in 0..CHANNELS {
                            acc[c] = madd::<FMA>(t[k], w[k][c], acc[c]);
                        }
                    }
                }
                // max(relu(a)) = relu(max(a)); the first of equal maxima wins, as in PyTorch. Where
                // all four are ≤ 0 the winner does not matter: no gradient flows there.
                let mut best = conv[0];
                let mut which = [0f32; CHANNELS];
                for (q, acc) in conv.iter().enumerate().skip(1) {
                    for c in 0..CHANNELS {
                        let better = acc[c] > best[c];
                        best[c] = if better { acc[c] } else { best[c] };
                        which[c] = if better { q as f32 } else { which[c] };
                    }
                }
                let o = (py * POOL_SIDE + px) * CHANNELS;
                let (out, winners) = (&mut out[o..o + CHANNELS], &mut winners[o..o + CHANNELS]);
                for c in 0..CHANNELS {
                    out[c] = best[c].max(0.0);
                    winners[c] = which[c] as u8;
                }
            }
        }
    }
}

multiversion! {
    /// One image's contribution to the kernel and bias gradients.
    fn backward_one_loops<FMA, WIDE>(
        img: &[f32; PIXELS],
        out: &[f32],
        winners: &[u8],
        grad: &[f32],
        dw: &mut [[f32; CHANNELS]; TAPS],
        db: &mut [f32; CHANNELS],
    ) {
        for py in 0..POOL_SIDE {
            for px in 0..POOL_SIDE {
                let o = (py * POOL_SIDE + px) * CHANNELS;
                let (out, winners, grad) = (
                    &out[o..o + CHANNELS],
                    &winners[o..o + CHANNELS],
                    &grad[o..o + CHANNELS],
                );
                // The gradient of each window position, per channel: the pooled gradient where that
                // position won and the ReLU was open, zero elsewhere.
                let mut g = [[0f32; CHANNELS]; 4];
                for c in 0..CHANNELS {
                    let open = if out[c] > 0.0 { grad[c] } else { 0.0 };
                    for (q, gq) in g.iter_mut().enumerate() {
                        gq[c] = if winners[c] as usize == q { open } else { 0.0 };
                    }
                    db[c] += open;
                }
                for (q, gq) in g.iter().enumerate() {
                    let t = taps(img, 2 * py + q / 2, 2 * px + q % 2);
                    for (k, dwk) in dw.iter_mut().enumerate() {
                        for c in 0..CHANNELS {
                            dwk[c] = madd::<FMA>(t[k], gq[c], dwk[c]);
                        }
                    }
                }
            }
        }
    }
}

/// One image through conv + ReLU + pool, with the given instruction set.
pub(crate) fn forward_one_isa(
    isa: Isa,
    img: &[f32; PIXELS],
    w: &[[f32; CHANNELS]; TAPS],
    b: &[f32; CHANNELS],
    out: &mut [f32],
    winners: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    match isa.kind() {
        // SAFETY: an `Isa` of a kind exists only where the CPU has its instructions.
        Kind::Avx512 => return unsafe { forward_one_avx512(img, w, b, out, winners) },
        Kind::Avx2 => return unsafe { forward_one_avx2(img, w, b, out, winners) },
        Kind::Portable => {}
    }
    forward_one_loops(isa, img, w, b, out, winners)
}

/// One image's kernel and bias gradients, added to `dw` and `db`, with the given instruction
/// set.
fn backward_one_isa(
    isa: Isa,
    img: &[f32; PIXELS],
    out: &[f32],
    winners: &[u8],
    grad: &[f32],
    dw: &mut [[f32; CHANNELS]; TAPS],
    db: &mut [f32; CHANNELS],
) {
    #[cfg(target_arch = "x86_64")]
    match isa.kind() {
        // SAFETY: an `Isa` of a kind exists only where the CPU has its instructions.
        Kind::Avx512 => return unsafe { backward_one_avx512(img, out, winners, grad, dw, db) },
        Kind::Avx2 => return unsafe { backward_one_avx2(img, out, winners, grad, dw, db) },
        Kind::Portable => {}
    }
    backward_one_loops(isa, img, out, winners, grad, dw, db)
}

/// The backward kernel in AVX2 intrinsics, for the same reasons as [`backward_one_avx512`].
/// 16 registers of 8 floats cannot hold the kernel gradient of all 32 channels (36 vectors),
/// so the image is passed over four times, 8 channels at a time (9 accumulators). Each channel
/// sees the same operations in the same order as in [`backward_one_loops`], so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn backward_one_avx2(
    img: &[f32; PIXELS],
    out: &[f32],
    winners: &[u8],
    grad: &[f32],
    dw: &mut [[f32; CHANNELS]; TAPS],
    db: &mut [f32; CHANNELS],
) {
    use std::arch::x86_64::*;
    assert!(
        out.len() >= POOLED && winners.len() >= POOLED && grad.len() >= POOLED,
        "inputs too short"
    );
    // SAFETY (every load and store below): in bounds — `dw` and `db` are fixed-size arrays read
    // and written at offsets c0 + 8 ≤ 32; the taps are at most
    // (2·12 + 1 + 2)·28 + 2·12 + 1 + 2 = 783 < 784; the inputs at o + c0 + 8 ≤ POOLED
    // (asserted above).
    unsafe {
        let zero = _mm256_setzero_ps();
        for c0 in (0..CHANNELS).step_by(8) {
            let mut acc: [__m256; TAPS] =
                std::array::from_fn(|k| _mm256_loadu_ps(dw[k].as_ptr().add(c0)));
            let mut acc_b = _mm256_loadu_ps(db.as_ptr().add(c0));
            for py in 0..POOL_SIDE {
                for px in 0..POOL_SIDE {
                    let o = (py * POOL_SIDE + px) * CHANNELS + c0;
                    // The pooled gradient where the ReLU was open, zero elsewhere.
                    let is_open =
                        _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_loadu_ps(out.as_ptr().add(o)), zero);
                    let open = _mm256_and_ps(is_open, _mm256_loadu_ps(grad.as_ptr().add(o)));
                    acc_b = _mm256_add_ps(acc_b, open);
                    let win = _mm256_cvtepu8_epi32(_mm_loadl_epi64(winners.as_ptr().add(o).cast()));
                    for q in 0..4 {
                        let won = _mm256_cmpeq_epi32(win, _mm256_set1_epi32(q as i32));
                        let g = _mm256_and_ps(_mm256_castsi256_ps(won), open);
                        let at = img
                            .as_ptr()
                            .add((2 * py + q / 2) * IMAGE_SIDE + 2 * px + q % 2);
                        for (k, a) in acc.iter_mut().enumerate() {
                            let t = _mm256_set1_ps(*at.add((k / KERNEL) * IMAGE_SIDE + k % KERNEL));
                            *a = _mm256_fmadd_ps(t, g, *a);
                        }
                    }
                }
            }
            for (k, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(dw[k].as_mut_ptr().add(c0), *a);
            }
            _mm256_storeu_ps(db.as_mut_ptr().add(c0), acc_b);
        }
    }
}

/// The backward kernel in AVX-512 intrinsics. Why: from the loops LLVM shuffled the taps out of
/// vector loads and stored the kernel gradient back to memory at every window position; here
/// its 18 vectors stay in registers for the whole image. Same operations in the same order as
/// [`backward_one_loops`] with FMA (zero products included), so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
fn backward_one_avx512(
    img: &[f32; PIXELS],
    out: &[f32],
    winners: &[u8],
    grad: &[f32],
    dw: &mut [[f32; CHANNELS]; TAPS],
    db: &mut [f32; CHANNELS],
) {
    use std::arch::x86_64::*;
    assert!(
        out.len() >= POOLED && winners.len() >= POOLED && grad.len() >= POOLED,
        "inputs too short"
    );
    // SAFETY (every load and store below): in bounds — `dw` and `db` are fixed-size arrays read
    // and written at offsets 0 and 16 of 32; the taps are at most
    // (2·12 + 1 + 2)·28 + 2·12 + 1 + 2 = 783 < 784; the inputs at o + 16 + 16 ≤ POOLED
    // (asserted above).
    unsafe {
        let mut lo: [__m512; TAPS] = std::array::from_fn(|k| _mm512_loadu_ps(dw[k].as_ptr()));
        let mut hi: [__m512; TAPS] =
            std::array::from_fn(|k| _mm512_loadu_ps(dw[k].as_ptr().add(16)));
        let (mut db_lo, mut db_hi) = (
            _mm512_loadu_ps(db.as_ptr()),
            _mm512_loadu_ps(db.as_ptr().add(16)),
        );
        let zero = _mm512_setzero_ps();
        for py in 0..POOL_SIDE {
            for px in 0..POOL_SIDE {
                let o = (py * POOL_SIDE + px) * CHANNELS;
                // The pooled gradient where the ReLU was open, zero elsewhere.
                let open = |at: usize| {
                    let is_open = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(
                        _mm512_loadu_ps(out.as_ptr().add(at)),
                        zero,
                    );
                    _mm512_maskz_mov_ps(is_open, _mm512_loadu_ps(grad.as_ptr().add(at)))
                };
                let (open_lo, open_hi) = (open(o), open(o + 16));
                db_lo = _mm512_add_ps(db_lo, open_lo);
                db_hi = _mm512_add_ps(db_hi, open_hi);
                let win = |at: usize| {
                    _mm512_cvtepu8_epi32(_mm_loadu_si128(winners.as_ptr().add(at).cast()))
                };
                let (win_lo, win_hi) = (win(o), win(o + 16));
                for q in 0..4 {
                    let qv = _mm512_set1_epi32(q as i32);
                    let g_lo = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(win_lo, qv), open_lo);
                    let g_hi = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(win_hi, qv), open_hi);
                    let at = img
                        .as_ptr()
                        .add((2 * py + q / 2) * IMAGE_SIDE + 2 * px + q % 2);
                    for k in 0..TAPS {
                        let t = _mm512_set1_ps(*at.add((k / KERNEL) * IMAGE_SIDE + k % KERNEL));
                        lo[k] = _mm512_fmadd_ps(t, g_lo, lo[k]);
                        hi[k] = _mm512_fmadd_ps(t, g_hi, hi[k]);
                    }
                }
            }
        }
        for k in 0..TAPS {
            _mm512_storeu_ps(dw[k].as_mut_ptr(), lo[k]);
            _mm512_storeu_ps(dw[k].as_mut_ptr().add(16), hi[k]);
        }
        _mm512_storeu_ps(db.as_mut_ptr(), db_lo);
        _mm512_storeu_ps(db.as_mut_ptr().add(16), db_hi);
    }
}

/// The forward kernel in AVX2 intrinsics, for the same reason as [`forward_one_avx512`]. With
/// 16 registers of 8 floats the weights cannot stay in registers: each multiply-add takes its
/// weight vector from memory (L1), which the FMA units absorb. Same sums in the same order as
/// [`forward_one_loops`] with FMA, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn forward_one_avx2(
    img: &[f32; PIXELS],
    w: &[[f32; CHANNELS]; TAPS],
    b: &[f32; CHANNELS],
    out: &mut [f32],
    winners: &mut [u8],
) {
    use std::arch::x86_64::*;
    const V: usize = CHANNELS / 8;
    assert!(
        out.len() >= POOLED && winners.len() >= POOLED,
        "output too short"
    );
    // SAFETY (every load and store below): in bounds — the weights and bias are fixed-size
    // arrays read at k ≤ 8 and offsets 8·i < 32; the taps are at most
    // (2·12 + 1 + 2)·28 + 2·12 + 1 + 2 = 783 < 784; the outputs at o + 8·i + 8 ≤ POOLED
    // (asserted above).
    unsafe {
        let zero = _mm256_setzero_ps();
        for py in 0..POOL_SIDE {
            for px in 0..POOL_SIDE {
                let mut best = [zero; V];
                let mut which = [_mm256_setzero_si256(); V];
                for q in 0..4 {
                    let at = img
                        .as_ptr()
                        .add((2 * py + q / 2) * IMAGE_SIDE + 2 * px + q % 2);
                    let mut acc: [__m256; V] =
                        std::array::from_fn(|i| _mm256_loadu_ps(b.as_ptr().add(8 * i)));
                    for (k, wk) in w.iter().enumerate() {
                        let t = _mm256_set1_ps(*at.add((k / KERNEL) * IMAGE_SIDE + k % KERNEL));
                        for (i, a) in acc.iter_mut().enumerate() {
                            *a = _mm256_fmadd_ps(t, _mm256_loadu_ps(wk.as_ptr().add(8 * i)), *a);
                        }
                    }
                    if q == 0 {
                        best = acc;
                    } else {
                        // Strictly greater: the first of equal maxima wins, as in PyTorch.
                        let qv = _mm256_set1_epi32(q as i32);
                        for i in 0..V {
                            let m = _mm256_cmp_ps::<_CMP_GT_OQ>(acc[i], best[i]);
                            best[i] = _mm256_blendv_ps(best[i], acc[i], m);
                            which[i] = _mm256_blendv_epi8(which[i], qv, _mm256_castps_si256(m));
                        }
                    }
                }
                let o = (py * POOL_SIDE + px) * CHANNELS;
                let mut q = [0i32; CHANNELS];
                for i in 0..V {
                    // max(x, 0) with x first: a NaN gives 0, as f32::max does.
                    _mm256_storeu_ps(
                        out.as_mut_ptr().add(o + 8 * i),
                        _mm256_max_ps(best[i], zero),
                    );
                    _mm256_storeu_si256(q.as_mut_ptr().add(8 * i).cast(), which[i]);
                }
                for (w, q) in winners[o..o + CHANNELS].iter_mut().zip(q) {
                    *w = q as u8;
                }
            }
        }
    }
}

/// The forward kernel written with AVX-512 intrinsics. Why: from the plain loops LLVM loads the
/// nine taps as vectors and shuffles each one out (and spills accumulators), running at a sixth
/// of the FMA rate; here all 18 weight vectors stay in registers, each tap is one broadcast
/// load, and each window position's 32 channels are two accumulators. Same sums in the same
/// order as [`forward_one_loops`] with FMA, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
fn forward_one_avx512(
    img: &[f32; PIXELS],
    w: &[[f32; CHANNELS]; TAPS],
    b: &[f32; CHANNELS],
    out: &mut [f32],
    winners: &mut [u8],
) {
    use std::arch::x86_64::*;
    assert!(
        out.len() >= POOLED && winners.len() >= POOLED,
        "output too short"
    );
    // SAFETY (every load and store below): in bounds — the weights and bias are fixed-size
    // arrays read at k ≤ 8 and offsets 0 and 16 of 32; the taps are at most
    // (2·12 + 1 + 2)·28 + 2·12 + 1 + 2 = 783 < 784; the outputs at o + 16 + 16 ≤ POOLED
    // (asserted above).
    unsafe {
        let lo: [__m512; TAPS] = std::array::from_fn(|k| _mm512_loadu_ps(w[k].as_ptr()));
        let hi: [__m512; TAPS] = std::array::from_fn(|k| _mm512_loadu_ps(w[k].as_ptr().add(16)));
        let (b_lo, b_hi) = (
            _mm512_loadu_ps(b.as_ptr()),
            _mm512_loadu_ps(b.as_ptr().add(16)),
        );
        let zero = _mm512_setzero_ps();
        for py in 0..POOL_SIDE {
            for px in 0..POOL_SIDE {
                let (mut best_lo, mut best_hi) = (zero, zero);
                let (mut which_lo, mut which_hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for q in 0..4 {
                    let at = img
                        .as_ptr()
                        .add((2 * py + q / 2) * IMAGE_SIDE + 2 * px + q % 2);
                    let (mut a_lo, mut a_hi) = (b_lo, b_hi);
                    for k in 0..TAPS {
                        let t = _mm512_set1_ps(*at.add((k / KERNEL) * IMAGE_SIDE + k % KERNEL));
                        a_lo = _mm512_fmadd_ps(t, lo[k], a_lo);
                        a_hi = _mm512_fmadd_ps(t, hi[k], a_hi);
                    }
                    if q == 0 {
                        (best_lo, best_hi) = (a_lo, a_hi);
                    } else {
                        // Strictly greater: the first of equal maxima wins, as in PyTorch.
                        let q = _mm512_set1_epi32(q as i32);
                        let m_lo = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a_lo, best_lo);
                        let m_hi = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a_hi, best_hi);
                        best_lo = _mm512_mask_blend_ps(m_lo, best_lo, a_lo);
                        best_hi = _mm512_mask_blend_ps(m_hi, best_hi, a_hi);
                        which_lo = _mm512_mask_blend_epi32(m_lo, which_lo, q);
                        which_hi = _mm512_mask_blend_epi32(m_hi, which_hi, q);
                    }
                }
                let o = (py * POOL_SIDE + px) * CHANNELS;
                // max(x, 0) with x first: a NaN gives 0, as f32::max does.
                _mm512_storeu_ps(out.as_mut_ptr().add(o), _mm512_max_ps(best_lo, zero));
                _mm512_storeu_ps(out.as_mut_ptr().add(o + 16), _mm512_max_ps(best_hi, zero));
                _mm_storeu_si128(
                    winners.as_mut_ptr().add(o).cast(),
                    _mm512_cvtepi32_epi8(which_lo),
                );
                _mm_storeu_si128(
                    winners.as_mut_ptr().add(o + 16).cast(),
                    _mm512_cvtepi32_epi8(which_hi),
                );
            }
        }
    }
}

pub(crate) fn forward_one(
    img: &[f32; PIXELS],
    w: &[[f32; CHANNELS]; TAPS],
    b: &[f32; CHANNELS],
    out: &mut [f32],
    winners: &mut [u8],
) {
    forward_one_isa(Isa::detect(), img, w, b, out, winners)
}

/// The kernel and bias gradients of a batch; `winners` is what the forward recorded.
pub(crate) fn kernel_gradients(
    isa: Isa,
    imgs: &[f32],
    out: &[f32],
    winners: &[u8],
    grad: &[f32],
) -> Result<([[f32; CHANNELS]; TAPS], [f32; CHANNELS])> {
    if winners.len() != out.len() || grad.len() != out.len() {
        candle_core::bail!("conv_relu_pool: backward without its forward (or run twice)");
    }
    // Partial sums over fixed groups of images, added in order: the result does not depend
    // on how rayon schedules the groups, so training is reproducible bit for bit.
    const GROUP: usize = 8;
    let partials: Vec<_> = imgs
        .par_chunks(PIXELS * GROUP)
        .zip(out.par_chunks(POOLED * GROUP))
        .zip(winners.par_chunks(POOLED * GROUP))
        .zip(grad.par_chunks(POOLED * GROUP))
        .map(|(((imgs, out), win), g)| {
            let (mut dw, mut db) = ([[0f32; CHANNELS]; TAPS], [0f32; CHANNELS]);
            for (((img, out), win), g) in imgs
                .chunks_exact(PIXELS)
                .zip(out.chunks(POOLED))
                .zip(win.chunks(POOLED))
                .zip(g.chunks(POOLED))
            {
                let img: &[f32; PIXELS] = img.try_into().expect("chunks of PIXELS");
                backward_one_isa(isa, img, out, win, g, &mut dw, &mut db);
            }
            (dw, db)
        })
        .collect();
    let (mut dw, mut db) = ([[0f32; CHANNELS]; TAPS], [0f32; CHANNELS]);
    for (pdw, pdb) in &partials {
        dw.iter_mut()
            .flatten()
            .zip(pdw.iter().flatten())
            .for_each(|(a, c)| *a += c);
        db.iter_mut().zip(pdb).for_each(|(b, d)| *b += d);
    }
    Ok((dw, db))
}

impl CustomOp3 for ConvReluPool {
    fn name(&self) -> &'static str {
        "conv3x3-relu-maxpool2"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let images = slice(s1, l1, "images")?;
        let w = slice(s2, l2, "kernel")?;
        let b: &[f32; CHANNELS] = slice(s3, l3, "bias")?
            .try_into()
            .map_err(|_| candle_core::Error::Msg(format!("bias must have {CHANNELS} values")))?;
        if w.len() != TAPS * CHANNELS || !images.len().is_multiple_of(PIXELS) {
            candle_core::bail!(
                "conv_relu_pool: kernel {:?} / images {:?} have the wrong shape",
                l2.shape(),
                l1.shape()
            );
        }
        let mut kernel = [[0f32; CHANNELS]; TAPS];
        for (row, chunk) in kernel.iter_mut().zip(w.chunks_exact(CHANNELS)) {
            row.copy_from_slice(chunk);
        }
        let n = images.len() / PIXELS;
        let mut out = vec![0f32; n * POOLED];
        let mut winners = vec![0u8; n * POOLED];
        out.par_chunks_mut(POOLED)
            .zip(winners.par_chunks_mut(POOLED))
            .zip(images.par_chunks_exact(PIXELS))
            .for_each(|((out, win), img)| {
                let img: &[f32; PIXELS] = img.try_into().expect("chunks of PIXELS");
                forward_one(img, &kernel, b, out, win)
            });
        *self.winners.lock().unwrap_or_else(|p| p.into_inner()) = winners;
        Ok((CpuStorage::F32(out), Shape::from((n, POOLED))))
    }

    fn bwd(
        &self,
        images: &Tensor,
        _kernel: &Tensor,
        _bias: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let winners = std::mem::take(&mut *self.winners.lock().unwrap_or_else(|p| p.into_inner()));
        let (dw, db) = with_f32(images, "images", |imgs| {
            with_f32(res, "output", |out| {
                with_f32(grad_res, "gradient", |grad| {
                    kernel_gradients(Isa::detect(), imgs, out, &winners, grad)
                })
            })
        })?;
        let device = images.device();
        Ok((
            None,
            Some(Tensor::from_vec(dw.concat(), (TAPS, CHANNELS), device)?),
            Some(Tensor::from_vec(db.to_vec(), CHANNELS, device)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Every instruction set's build computes the same thing (the model tests exercise the
    /// one this machine picks; this pins the others against the portable one).
    #[test]
    fn every_instruction_set_computes_the_same() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let img: [f32; PIXELS] = std::array::from_fn(|_| rng.random::<f32>());
        let w: [[f32; CHANNELS]; TAPS] =
            std::array::from_fn(|_| std::array::from_fn(|_| rng.random_range(-0.5..0.5)));
        let b: [f32; CHANNELS] = std::array::from_fn(|_| rng.random_range(-0.1..0.1));
        let grad: Vec<f32> = (0..POOLED).map(|_| rng.random_range(-1.0..1.0)).collect();

        let run = |isa: Isa| {
            let (mut out, mut win) = (vec![0f32; POOLED], vec![0u8; POOLED]);
            let (mut dw, mut db) = ([[0f32; CHANNELS]; TAPS], [0f32; CHANNELS]);
            forward_one_isa(isa, &img, &w, &b, &mut out, &mut win);
            backward_one_isa(isa, &img, &out, &win, &grad, &mut dw, &mut db);
            (out, dw, db)
        };
        let isas = Isa::available();
        let (o1, dw1, db1) = run(isas[0]);
        let close = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + a.abs()))
        };
        for &isa in &isas[1..] {
            let (o2, dw2, db2) = run(isa);
            assert!(close(&o1, &o2), "{isa}");
            assert!(close(dw1.as_flattened(), dw2.as_flattened()), "{isa}");
            assert!(close(&db1, &db2), "{isa}");
        }
        assert!(
            o1.iter().any(|&v| v > 0.0) && o1.contains(&0.0),
            "ReLU both open and shut"
        );
        // The hand-written AVX-512 forward makes the same sums in the same order as the loops
        // compiled for AVX-512: the same bits, winners included.
        for &isa in &isas {
            let (mut out1, mut win1) = (vec![0f32; POOLED], vec![0u8; POOLED]);
            let (mut out2, mut win2) = (vec![0f32; POOLED], vec![0u8; POOLED]);
            forward_one_isa(isa, &img, &w, &b, &mut out1, &mut win1);
            forward_one_loops(isa, &img, &w, &b, &mut out2, &mut win2);
            assert_eq!((&out1, &win1), (&out2, &win2), "{isa}");
            let (mut dw1, mut db1) = ([[0.5f32; CHANNELS]; TAPS], [0.25f32; CHANNELS]);
            let (mut dw2, mut db2) = (dw1, db1);
            backward_one_isa(isa, &img, &out1, &win1, &grad, &mut dw1, &mut db1);
            backward_one_loops(isa, &img, &out1, &win1, &grad, &mut dw2, &mut db2);
            assert_eq!((dw1, db1), (dw2, db2), "{isa}");
        }
    }
}
