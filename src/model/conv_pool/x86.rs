//! The conv + ReLU + pool kernels in x86_64 intrinsics (AVX2 + FMA, AVX-512), each held bit
//! for bit to its loop version (`super::forward_one_loops`, `super::backward_one_loops`) by
//! the tests. Called only through an `Isa` of their kind, which exists only where the CPU has
//! the instructions.

use super::*;

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
    use std::arch::x86_64::*;
    assert!(
        out.len() >= POOLED && winners.len() >= POOLED && grad.len() >= POOLED,
        "inputs too short"
    );
    // SAFETY: every load and store below is in bounds: `dw` and `db` are fixed-size arrays read
    // and written at offsets c0 + 8 ≤ 32; the taps are at `window_corner + tap_offset` < 784 (a
    // compile-time assertion in `super`); the inputs at o + c0 + 8 ≤ POOLED (asserted above).
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
                        let at = img.as_ptr().add(window_corner(py, px, q));
                        for (k, a) in acc.iter_mut().enumerate() {
                            let t = _mm256_set1_ps(*at.add(tap_offset(k)));
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
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
pub(super) fn backward_one_avx512(
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
    // SAFETY: every load and store below is in bounds: `dw` and `db` are fixed-size arrays read
    // and written at offsets 0 and 16 of 32; the taps are at `window_corner + tap_offset` < 784
    // (a compile-time assertion in `super`); the inputs at o + 16 + 16 ≤ POOLED (asserted
    // above).
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
                    let at = img.as_ptr().add(window_corner(py, px, q));
                    for k in 0..TAPS {
                        let t = _mm512_set1_ps(*at.add(tap_offset(k)));
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
#[target_feature(enable = "avx2,fma")]
pub(super) fn forward_one_avx2(
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
    // SAFETY: every load and store below is in bounds: the weights and bias are fixed-size
    // arrays read at k ≤ 8 and offsets 8·i < 32; the taps are at `window_corner + tap_offset` <
    // 784 (a compile-time assertion in `super`); the outputs at o + 8·i + 8 ≤ POOLED (asserted
    // above).
    unsafe {
        let zero = _mm256_setzero_ps();
        for py in 0..POOL_SIDE {
            for px in 0..POOL_SIDE {
                let mut best = [zero; V];
                let mut which = [_mm256_setzero_si256(); V];
                for q in 0..4 {
                    let at = img.as_ptr().add(window_corner(py, px, q));
                    let mut acc: [__m256; V] =
                        std::array::from_fn(|i| _mm256_loadu_ps(b.as_ptr().add(8 * i)));
                    for (k, wk) in w.iter().enumerate() {
                        let t = _mm256_set1_ps(*at.add(tap_offset(k)));
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
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
pub(super) fn forward_one_avx512(
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
    // SAFETY: every load and store below is in bounds: the weights and bias are fixed-size
    // arrays read at k ≤ 8 and offsets 0 and 16 of 32; the taps are at `window_corner +
    // tap_offset` < 784 (a compile-time assertion in `super`); the outputs at o + 16 + 16 ≤
    // POOLED (asserted above).
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
                    let at = img.as_ptr().add(window_corner(py, px, q));
                    let (mut a_lo, mut a_hi) = (b_lo, b_hi);
                    for k in 0..TAPS {
                        let t = _mm512_set1_ps(*at.add(tap_offset(k)));
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
