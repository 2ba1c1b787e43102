//! The conv + ReLU + pool kernels in AArch64 NEON intrinsics (128-bit vectors, fused
//! multiply-add: what Graviton's Neoverse cores run), each held bit for bit to its loop version
//! (`super::forward_one_loops`, `super::backward_one_loops`) by the tests, which run under
//! `qemu-aarch64` on x86_64 machines (`make test-arm64`).
//!
//! Inside these `#[target_feature(enable = "neon")]` functions the value-only intrinsics are safe
//! to call: `unsafe` is confined to the loads and stores, in the four helpers below, each
//! behind a bounds check on a slice (which the compiler drops where the index is known).
//!
//! Why intrinsics where the loops already vectorise: from the loops LLVM re-reads the nine
//! taps per channel group and keeps the running maximum in memory; here each tap is one
//! broadcast, the accumulators stay in 32 registers, and the backward keeps the kernel
//! gradient of eight channels (18 vectors) in registers for the whole image.

use std::arch::aarch64::*;

use super::*;

/// Four floats from `s[at..at + 4]` (bounds-checked).
#[inline]
#[target_feature(enable = "neon")]
fn load(s: &[f32], at: usize) -> float32x4_t {
    let four: &[f32; 4] = s[at..at + 4].try_into().expect("a range of 4");
    // SAFETY: `four` is four readable floats.
    unsafe { vld1q_f32(four.as_ptr()) }
}

/// Stores `v` into `s[at..at + 4]` (bounds-checked).
#[inline]
#[target_feature(enable = "neon")]
fn store(s: &mut [f32], at: usize, v: float32x4_t) {
    let four: &mut [f32; 4] = (&mut s[at..at + 4]).try_into().expect("a range of 4");
    // SAFETY: `four` is four writable floats.
    unsafe { vst1q_f32(four.as_mut_ptr(), v) }
}

/// Eight winners (`u8`) from `s[at..at + 8]`, widened to two vectors of four `u32`.
#[inline]
#[target_feature(enable = "neon")]
fn load_winners(s: &[u8], at: usize) -> [uint32x4_t; 2] {
    let eight: &[u8; 8] = s[at..at + 8].try_into().expect("a range of 8");
    // SAFETY: `eight` is eight readable bytes.
    let wide = vmovl_u8(unsafe { vld1_u8(eight.as_ptr()) });
    [vmovl_u16(vget_low_u16(wide)), vmovl_high_u16(wide)]
}

/// Stores four `u32` winners (each 0..4) as four bytes into `s[at..at + 4]`.
#[inline]
#[target_feature(enable = "neon")]
fn store_winners(s: &mut [u8], at: usize, v: uint32x4_t) {
    let mut lanes = [0u32; 4];
    // SAFETY: `lanes` is four writable `u32`.
    unsafe { vst1q_u32(lanes.as_mut_ptr(), v) };
    for (w, q) in s[at..at + 4].iter_mut().zip(lanes) {
        *w = q as u8;
    }
}

/// The forward kernel: for each pooled cell, the four window positions' 32 channels (8
/// vectors) accumulated from the bias over the nine taps with fused multiply-adds in the loops'
/// order, then the running maximum and its position. Same sums in the same order as
/// [`forward_one_loops`] with FMA, so the same bits.
#[target_feature(enable = "neon")]
pub(super) fn forward_one_neon(
    img: &[f32; PIXELS],
    w: &[[f32; CHANNELS]; TAPS],
    b: &[f32; CHANNELS],
    out: &mut [f32],
    winners: &mut [u8],
) {
    assert!(
        out.len() >= POOLED && winners.len() >= POOLED,
        "output too short"
    );
    const V: usize = CHANNELS / 4;
    let zero = vdupq_n_f32(0.0);
    let bias: [float32x4_t; V] = std::array::from_fn(|i| load(b, 4 * i));
    for py in 0..POOL_SIDE {
        for px in 0..POOL_SIDE {
            let mut best = [zero; V];
            let mut which = [vdupq_n_u32(0); V];
            for q in 0..4 {
                let corner = window_corner(py, px, q);
                let mut acc = bias;
                for (k, wk) in w.iter().enumerate() {
                    let t = img[corner + tap_offset(k)];
                    for (i, a) in acc.iter_mut().enumerate() {
                        // a + w·t, one rounding: `madd::<true>(t, w, a)`.
                        *a = vfmaq_n_f32(*a, load(wk, 4 * i), t);
                    }
                }
                if q == 0 {
                    best = acc;
                } else {
                    // Strictly greater: the first of equal maxima wins, as in PyTorch.
                    let qv = vdupq_n_u32(q as u32);
                    for i in 0..V {
                        let m = vcgtq_f32(acc[i], best[i]);
                        best[i] = vbslq_f32(m, acc[i], best[i]);
                        which[i] = vbslq_u32(m, qv, which[i]);
                    }
                }
            }
            let o = (py * POOL_SIDE + px) * CHANNELS;
            for i in 0..V {
                // maxNum(x, 0): a NaN gives 0, as f32::max does (FMAX would give the NaN).
                store(out, o + 4 * i, vmaxnmq_f32(best[i], zero));
                store_winners(winners, o + 4 * i, which[i]);
            }
        }
    }
}

/// The backward kernel: the image is passed over four times, eight channels (two vectors) at a
/// time, so that the kernel gradient of those channels (9 × 2 accumulators) and their bias
/// gradient stay in registers. Each channel sees the same operations in the same order as in
/// [`backward_one_loops`] with FMA (zero products included), so the same bits.
#[target_feature(enable = "neon")]
pub(super) fn backward_one_neon(
    img: &[f32; PIXELS],
    out: &[f32],
    winners: &[u8],
    grad: &[f32],
    dw: &mut [[f32; CHANNELS]; TAPS],
    db: &mut [f32; CHANNELS],
) {
    // Once, so that the compiler can drop the per-load bounds checks.
    assert!(
        out.len() >= POOLED && winners.len() >= POOLED && grad.len() >= POOLED,
        "inputs too short"
    );
    let zero = vdupq_n_f32(0.0);
    for c0 in (0..CHANNELS).step_by(8) {
        let mut acc: [[float32x4_t; 2]; TAPS] =
            std::array::from_fn(|k| [load(&dw[k], c0), load(&dw[k], c0 + 4)]);
        let mut acc_b = [load(db, c0), load(db, c0 + 4)];
        for py in 0..POOL_SIDE {
            for px in 0..POOL_SIDE {
                let o = (py * POOL_SIDE + px) * CHANNELS + c0;
                // The pooled gradient where the ReLU was open, zero elsewhere.
                let open: [float32x4_t; 2] = std::array::from_fn(|h| {
                    let is_open = vcgtq_f32(load(out, o + 4 * h), zero);
                    vreinterpretq_f32_u32(vandq_u32(
                        is_open,
                        vreinterpretq_u32_f32(load(grad, o + 4 * h)),
                    ))
                });
                for h in 0..2 {
                    acc_b[h] = vaddq_f32(acc_b[h], open[h]);
                }
                let win = load_winners(winners, o);
                for q in 0..4 {
                    let qv = vdupq_n_u32(q as u32);
                    let g: [float32x4_t; 2] = std::array::from_fn(|h| {
                        vreinterpretq_f32_u32(vandq_u32(
                            vceqq_u32(win[h], qv),
                            vreinterpretq_u32_f32(open[h]),
                        ))
                    });
                    let corner = window_corner(py, px, q);
                    for (k, a) in acc.iter_mut().enumerate() {
                        let t = img[corner + tap_offset(k)];
                        a[0] = vfmaq_n_f32(a[0], g[0], t);
                        a[1] = vfmaq_n_f32(a[1], g[1], t);
                    }
                }
            }
        }
        for (k, a) in acc.iter().enumerate() {
            store(&mut dw[k], c0, a[0]);
            store(&mut dw[k], c0 + 4, a[1]);
        }
        store(db, c0, acc_b[0]);
        store(db, c0 + 4, acc_b[1]);
    }
}
