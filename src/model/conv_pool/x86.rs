//! The conv + ReLU + pool kernels in x86_64 intrinsics (AVX2 + FMA, AVX-512), each held bit
//! for bit to its loop version (`super::forward_one_loops`, `super::backward_one_loops`) by
//! the tests. Called only through an `Isa` of their kind, which exists only where the CPU has
//! the instructions.
//!
//! Inside these `#[target_feature]` functions the value-only intrinsics are safe to call:
//! `unsafe` is confined to the loads and stores, in the helpers below, each behind a bounds
//! check on a slice (which the compiler drops where the index is known).

use std::arch::x86_64::*;

use super::*;

/// Eight floats from `s[at..at + 8]` (bounds-checked).
#[inline]
#[target_feature(enable = "avx2")]
fn load8(s: &[f32], at: usize) -> __m256 {
    let v: &[f32; 8] = s[at..at + 8].try_into().expect("a range of 8");
    // SAFETY: `v` is eight readable floats.
    unsafe { _mm256_loadu_ps(v.as_ptr()) }
}

/// Stores `v` into `s[at..at + 8]` (bounds-checked).
#[inline]
#[target_feature(enable = "avx2")]
fn store8(s: &mut [f32], at: usize, v: __m256) {
    let out: &mut [f32; 8] = (&mut s[at..at + 8]).try_into().expect("a range of 8");
    // SAFETY: `out` is eight writable floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) }
}

/// Sixteen floats from `s[at..at + 16]` (bounds-checked).
#[inline]
#[target_feature(enable = "avx512f")]
fn load16(s: &[f32], at: usize) -> __m512 {
    let v: &[f32; 16] = s[at..at + 16].try_into().expect("a range of 16");
    // SAFETY: `v` is sixteen readable floats.
    unsafe { _mm512_loadu_ps(v.as_ptr()) }
}

/// Stores `v` into `s[at..at + 16]` (bounds-checked).
#[inline]
#[target_feature(enable = "avx512f")]
fn store16(s: &mut [f32], at: usize, v: __m512) {
    let out: &mut [f32; 16] = (&mut s[at..at + 16]).try_into().expect("a range of 16");
    // SAFETY: `out` is sixteen writable floats.
    unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) }
}

/// Eight winners (`u8`) from `s[at..at + 8]`, widened to `i32` lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn load_winners8(s: &[u8], at: usize) -> __m256i {
    let v: &[u8; 8] = s[at..at + 8].try_into().expect("a range of 8");
    // SAFETY: `v` is eight readable bytes, all that `_mm_loadl_epi64` reads.
    _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(v.as_ptr().cast()) })
}

/// Sixteen winners (`u8`) from `s[at..at + 16]`, widened to `i32` lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn load_winners16(s: &[u8], at: usize) -> __m512i {
    let v: &[u8; 16] = s[at..at + 16].try_into().expect("a range of 16");
    // SAFETY: `v` is sixteen readable bytes.
    _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(v.as_ptr().cast()) })
}

/// Stores sixteen `i32` winners (each 0..4) as bytes into `s[at..at + 16]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn store_winners16(s: &mut [u8], at: usize, v: __m512i) {
    let out: &mut [u8; 16] = (&mut s[at..at + 16]).try_into().expect("a range of 16");
    // SAFETY: `out` is sixteen writable bytes.
    unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(v)) }
}

/// Stores eight `i32` winners (each 0..4) as bytes into `s[at..at + 8]`.
#[inline]
#[target_feature(enable = "avx2")]
fn store_winners8(s: &mut [u8], at: usize, v: __m256i) {
    let mut lanes = [0i32; 8];
    // SAFETY: `lanes` is eight writable `i32`.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), v) };
    for (w, q) in s[at..at + 8].iter_mut().zip(lanes) {
        *w = q as u8;
    }
}

/// The backward kernel in AVX2 intrinsics, for the same reasons as [`backward_one_avx512`].
/// 16 registers of 8 floats cannot hold the kernel gradient of all 32 channels (36 vectors),
/// so the image is passed over four times, 8 channels at a time (9 accumulators). Each channel
/// sees the same operations in the same order as in [`backward_one_loops`], so the same bits.
#[target_feature(enable = "avx2,fma")]
pub(super) fn backward_one_avx2(
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
    let zero = _mm256_setzero_ps();
    for c0 in (0..CHANNELS).step_by(8) {
        let mut acc: [__m256; TAPS] = std::array::from_fn(|k| load8(&dw[k], c0));
        let mut acc_b = load8(db, c0);
        for py in 0..POOL_SIDE {
            for px in 0..POOL_SIDE {
                let o = (py * POOL_SIDE + px) * CHANNELS + c0;
                // The pooled gradient where the ReLU was open, zero elsewhere.
                let is_open = _mm256_cmp_ps::<_CMP_GT_OQ>(load8(out, o), zero);
                let open = _mm256_and_ps(is_open, load8(grad, o));
                acc_b = _mm256_add_ps(acc_b, open);
                let win = load_winners8(winners, o);
                for q in 0..4 {
                    let won = _mm256_cmpeq_epi32(win, _mm256_set1_epi32(q as i32));
                    let g = _mm256_and_ps(_mm256_castsi256_ps(won), open);
                    let corner = window_corner(py, px, q);
                    for (k, a) in acc.iter_mut().enumerate() {
                        let t = _mm256_set1_ps(img[corner + tap_offset(k)]);
                        *a = _mm256_fmadd_ps(t, g, *a);
                    }
                }
            }
        }
        for (k, a) in acc.iter().enumerate() {
            store8(&mut dw[k], c0, *a);
        }
        store8(db, c0, acc_b);
    }
}

/// The backward kernel in AVX-512 intrinsics. Why: from the loops LLVM shuffled the taps out of
/// vector loads and stored the kernel gradient back to memory at every window position; here
/// its 18 vectors stay in registers for the whole image. Same operations in the same order as
/// [`backward_one_loops`] with FMA (zero products included), so the same bits.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
pub(super) fn backward_one_avx512(
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
    let mut lo: [__m512; TAPS] = std::array::from_fn(|k| load16(&dw[k], 0));
    let mut hi: [__m512; TAPS] = std::array::from_fn(|k| load16(&dw[k], 16));
    let (mut db_lo, mut db_hi) = (load16(db, 0), load16(db, 16));
    let zero = _mm512_setzero_ps();
    for py in 0..POOL_SIDE {
        for px in 0..POOL_SIDE {
            let o = (py * POOL_SIDE + px) * CHANNELS;
            // The pooled gradient where the ReLU was open, zero elsewhere.
            let open = |at: usize| {
                let is_open = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(load16(out, at), zero);
                _mm512_maskz_mov_ps(is_open, load16(grad, at))
            };
            let (open_lo, open_hi) = (open(o), open(o + 16));
            db_lo = _mm512_add_ps(db_lo, open_lo);
            db_hi = _mm512_add_ps(db_hi, open_hi);
            let (win_lo, win_hi) = (load_winners16(winners, o), load_winners16(winners, o + 16));
            for q in 0..4 {
                let qv = _mm512_set1_epi32(q as i32);
                let g_lo = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(win_lo, qv), open_lo);
                let g_hi = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(win_hi, qv), open_hi);
                let corner = window_corner(py, px, q);
                for k in 0..TAPS {
                    let t = _mm512_set1_ps(img[corner + tap_offset(k)]);
                    lo[k] = _mm512_fmadd_ps(t, g_lo, lo[k]);
                    hi[k] = _mm512_fmadd_ps(t, g_hi, hi[k]);
                }
            }
        }
    }
    for k in 0..TAPS {
        store16(&mut dw[k], 0, lo[k]);
        store16(&mut dw[k], 16, hi[k]);
    }
    store16(db, 0, db_lo);
    store16(db, 16, db_hi);
}

/// The forward kernel in AVX2 intrinsics, for the same reason as [`forward_one_avx512`]. With
/// 16 registers of 8 floats the weights cannot stay in registers: each multiply-add takes its
/// weight vector from memory (L1), which the FMA units absorb. Same sums in the same order as
/// [`forward_one_loops`] with FMA, so the same bits.
#[target_feature(enable = "avx2,fma")]
pub(super) fn forward_one_avx2(
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
    const V: usize = CHANNELS / 8;
    let zero = _mm256_setzero_ps();
    for py in 0..POOL_SIDE {
        for px in 0..POOL_SIDE {
            let mut best = [zero; V];
            let mut which = [_mm256_setzero_si256(); V];
            for q in 0..4 {
                let corner = window_corner(py, px, q);
                let mut acc: [__m256; V] = std::array::from_fn(|i| load8(b, 8 * i));
                for (k, wk) in w.iter().enumerate() {
                    let t = _mm256_set1_ps(img[corner + tap_offset(k)]);
                    for (i, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(t, load8(wk, 8 * i), *a);
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
            for i in 0..V {
                // max(x, 0) with x first: a NaN gives 0, as f32::max does.
                store8(out, o + 8 * i, _mm256_max_ps(best[i], zero));
                store_winners8(winners, o + 8 * i, which[i]);
            }
        }
    }
}

/// The forward kernel written with AVX-512 intrinsics. Why: from the plain loops LLVM loads the
/// nine taps as vectors and shuffles each one out (and spills accumulators), running at a sixth
/// of the FMA rate; here all 18 weight vectors stay in registers, each tap is one broadcast
/// load, and each window position's 32 channels are two accumulators. Same sums in the same
/// order as [`forward_one_loops`] with FMA, so the same bits.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
pub(super) fn forward_one_avx512(
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
    let lo: [__m512; TAPS] = std::array::from_fn(|k| load16(&w[k], 0));
    let hi: [__m512; TAPS] = std::array::from_fn(|k| load16(&w[k], 16));
    let (b_lo, b_hi) = (load16(b, 0), load16(b, 16));
    let zero = _mm512_setzero_ps();
    for py in 0..POOL_SIDE {
        for px in 0..POOL_SIDE {
            let (mut best_lo, mut best_hi) = (zero, zero);
            let (mut which_lo, mut which_hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            for q in 0..4 {
                let corner = window_corner(py, px, q);
                let (mut a_lo, mut a_hi) = (b_lo, b_hi);
                for k in 0..TAPS {
                    let t = _mm512_set1_ps(img[corner + tap_offset(k)]);
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
            store16(out, o, _mm512_max_ps(best_lo, zero));
            store16(out, o + 16, _mm512_max_ps(best_hi, zero));
            store_winners16(winners, o, which_lo);
            store_winners16(winners, o + 16, which_hi);
        }
    }
}
