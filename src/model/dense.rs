//! The dense layers' three products for training, on contiguous row-major buffers:
//! forward `z += x·W`, and backward `∂W = xᵀ·∂z` and `∂x = ∂z·Wᵀ` (the last written
//! transposed, batch in the inner dimension).
//!
//! Why our own and not candle's matmul (the `gemm` crate): fc1 is ~90 % of a step's arithmetic
//! and its shapes are fixed and skinny (batch 32 × 5408 × 128). Profiled on an AVX-512 machine,
//! candle's matmul ran `gemm`'s AVX2 kernels (its AVX-512 ones sit behind the off-by-default
//! `x86-v4` feature) and packed both operands on every call. These keep a block of
//! accumulators in registers across the whole reduction, read the weight in place (a 64-row
//! tile of it stays in L1 while every batch row passes over it), write each output once (no
//! zeroed temporaries), and run 512 bits wide where the CPU can.

use super::HIDDEN;
use crate::simd::{madd, multiversion};

/// Weight rows per tile: 64 × 128 floats = 32 KiB, which stays in L1 while the batch passes.
const K_TILE: usize = 64;
/// Batch columns of the transposed input gradient.
pub(crate) const LANES: usize = 32;

multiversion! {
    /// `z[r] += Σ_k x[r][k]·w[k]` for `rows` rows of `x` (row `r` starts at `x[r·x_stride]`);
    /// `w` is [k, HIDDEN], `z` is [rows, HIDDEN].
    pub(crate) fn forward_acc<FMA, WIDE>(x: &[f32], x_stride: usize, rows: usize, w: &[f32], z: &mut [f32]) {
        let k = w.len() / HIDDEN;
        assert!(rows == 0 || (rows - 1) * x_stride + k <= x.len(), "x too short");
        assert!(z.len() >= rows * HIDDEN, "z too short");
        for k0 in (0..k).step_by(K_TILE) {
            let tile = &w[k0 * HIDDEN..(k0 + K_TILE).min(k) * HIDDEN];
            if WIDE {
                forward_tile::<FMA, 3, HIDDEN>(x, x_stride, rows, k0, tile, z);
            } else {
                forward_tile::<FMA, 3, 32>(x, x_stride, rows, k0, tile, z);
            }
        }
    }
}

/// One weight tile against every row of `x`, in blocks of `R` rows × `C` columns.
#[inline(always)]
fn forward_tile<const FMA: bool, const R: usize, const C: usize>(
    x: &[f32],
    x_stride: usize,
    rows: usize,
    k0: usize,
    tile: &[f32],
    z: &mut [f32],
) {
    for c0 in (0..HIDDEN).step_by(C) {
        let mut r = 0;
        while r + R <= rows {
            forward_block::<FMA, R, C>(x, x_stride, r, k0, c0, tile, z);
            r += R;
        }
        while r < rows {
            forward_block::<FMA, 1, C>(x, x_stride, r, k0, c0, tile, z);
            r += 1;
        }
    }
}

#[inline(always)]
fn forward_block<const FMA: bool, const R: usize, const C: usize>(
    x: &[f32],
    x_stride: usize,
    r0: usize,
    k0: usize,
    c0: usize,
    tile: &[f32],
    z: &mut [f32],
) {
    let mut acc = [[0f32; C]; R];
    for (r, a) in acc.iter_mut().enumerate() {
        a.copy_from_slice(&z[(r0 + r) * HIDDEN + c0..][..C]);
    }
    for (k, wk) in tile.chunks_exact(HIDDEN).enumerate() {
        let wk: &[f32; C] = wk[c0..c0 + C].try_into().expect("C columns");
        for (r, a) in acc.iter_mut().enumerate() {
            let xv = x[(r0 + r) * x_stride + k0 + k];
            for c in 0..C {
                a[c] = madd::<FMA>(xv, wk[c], a[c]);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        z[(r0 + r) * HIDDEN + c0..][..C].copy_from_slice(a);
    }
}

multiversion! {
    /// `dw[i] = Σ_b x[b][k0 + i]·dz[b]` for the rows of `dw` (overwritten): the weight gradient
    /// of rows `k0..` of a [k, HIDDEN] weight. `x` rows are `x_stride` apart; `dz` is
    /// [n, HIDDEN].
    pub(crate) fn weight_gradient<FMA, WIDE>(x: &[f32], x_stride: usize, k0: usize, dz: &[f32], dw: &mut [f32]) {
        let n = dz.len() / HIDDEN;
        let rows = dw.len() / HIDDEN;
        assert!(n == 0 || (n - 1) * x_stride + k0 + rows <= x.len(), "x too short");
        if WIDE {
            weight_gradient_rows::<FMA, 3, HIDDEN>(x, x_stride, k0, n, dz, dw);
        } else {
            weight_gradient_rows::<FMA, 3, 32>(x, x_stride, k0, n, dz, dw);
        }
    }
}

#[inline(always)]
fn weight_gradient_rows<const FMA: bool, const R: usize, const C: usize>(
    x: &[f32],
    x_stride: usize,
    k0: usize,
    n: usize,
    dz: &[f32],
    dw: &mut [f32],
) {
    let rows = dw.len() / HIDDEN;
    for c0 in (0..HIDDEN).step_by(C) {
        let mut r = 0;
        while r + R <= rows {
            weight_gradient_block::<FMA, R, C>(
                x,
                x_stride,
                k0 + r,
                n,
                dz,
                c0,
                &mut dw[r * HIDDEN..],
            );
            r += R;
        }
        while r < rows {
            weight_gradient_block::<FMA, 1, C>(
                x,
                x_stride,
                k0 + r,
                n,
                dz,
                c0,
                &mut dw[r * HIDDEN..],
            );
            r += 1;
        }
    }
}

#[inline(always)]
fn weight_gradient_block<const FMA: bool, const R: usize, const C: usize>(
    x: &[f32],
    x_stride: usize,
    k: usize,
    n: usize,
    dz: &[f32],
    c0: usize,
    dw: &mut [f32],
) {
    let mut acc = [[0f32; C]; R];
    for b in 0..n {
        let d: &[f32; C] = dz[b * HIDDEN + c0..][..C].try_into().expect("C columns");
        let xs: &[f32; R] = x[b * x_stride + k..][..R].try_into().expect("R rows");
        for (a, &xv) in acc.iter_mut().zip(xs) {
            for c in 0..C {
                a[c] = madd::<FMA>(xv, d[c], a[c]);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        dw[r * HIDDEN + c0..][..C].copy_from_slice(a);
    }
}

multiversion! {
    /// `dxt[i][b] = Σ_j w[i][j]·dzt[j][b]`: the input gradient, transposed, for the rows of
    /// `w` ([rows, HIDDEN]) and a block of [`LANES`] batch columns (`dzt` is ∂z transposed,
    /// zero-padded to `LANES`).
    pub(crate) fn input_gradient_t<FMA, WIDE>(w: &[f32], dzt: &[[f32; LANES]; HIDDEN], dxt: &mut [[f32; LANES]]) {
        if WIDE {
            input_gradient_rows::<FMA, 6>(w, dzt, dxt);
        } else {
            input_gradient_rows::<FMA, 3>(w, dzt, dxt);
        }
    }
}

#[inline(always)]
fn input_gradient_rows<const FMA: bool, const R: usize>(
    w: &[f32],
    dzt: &[[f32; LANES]; HIDDEN],
    dxt: &mut [[f32; LANES]],
) {
    let rows = w.len() / HIDDEN;
    assert!(dxt.len() >= rows, "dxt too short");
    let mut r = 0;
    while r + R <= rows {
        input_gradient_block::<FMA, R>(&w[r * HIDDEN..(r + R) * HIDDEN], dzt, &mut dxt[r..r + R]);
        r += R;
    }
    while r < rows {
        input_gradient_block::<FMA, 1>(&w[r * HIDDEN..(r + 1) * HIDDEN], dzt, &mut dxt[r..r + 1]);
        r += 1;
    }
}

#[inline(always)]
fn input_gradient_block<const FMA: bool, const R: usize>(
    w: &[f32],
    dzt: &[[f32; LANES]; HIDDEN],
    dxt: &mut [[f32; LANES]],
) {
    let mut acc = [[0f32; LANES]; R];
    for (j, d) in dzt.iter().enumerate() {
        for (r, a) in acc.iter_mut().enumerate() {
            let wv = w[r * HIDDEN + j];
            for b in 0..LANES {
                a[b] = madd::<FMA>(wv, d[b], a[b]);
            }
        }
    }
    dxt[..R].copy_from_slice(&acc);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::Isa;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    fn assert_close(what: &str, isa: Isa, ours: &[f32], exact: &[f64]) {
        assert_eq!(ours.len(), exact.len());
        for (i, (&o, &e)) in ours.iter().zip(exact).enumerate() {
            assert!(
                (o as f64 - e).abs() <= 1e-4 * (1.0 + e.abs()),
                "{what} ({isa}) at {i}: {o} vs {e}"
            );
        }
    }

    // Odd sizes on purpose: partial row blocks, a partial weight tile, a stride wider than k.
    const N: usize = 7;
    const K: usize = 133;
    const STRIDE: usize = 150;

    crate::simd::isa_test!(
        forward_matches_a_plain_product,
        super::forward_matches_a_plain_product_on
    );

    fn forward_matches_a_plain_product_on(isa: Isa) {
        let (x, w, z0) = (
            random(N * STRIDE, 1),
            random(K * HIDDEN, 2),
            random(N * HIDDEN, 3),
        );
        let mut exact = vec![0f64; N * HIDDEN];
        for r in 0..N {
            for c in 0..HIDDEN {
                exact[r * HIDDEN + c] = z0[r * HIDDEN + c] as f64
                    + (0..K)
                        .map(|k| x[r * STRIDE + k] as f64 * w[k * HIDDEN + c] as f64)
                        .sum::<f64>();
            }
        }
        let mut z = z0.clone();
        forward_acc(isa, &x, STRIDE, N, &w, &mut z);
        assert_close("forward", isa, &z, &exact);
    }

    crate::simd::isa_test!(
        weight_gradient_matches_a_plain_product,
        super::weight_gradient_matches_a_plain_product_on
    );

    fn weight_gradient_matches_a_plain_product_on(isa: Isa) {
        let (x, dz) = (random(N * STRIDE, 4), random(N * HIDDEN, 5));
        let (k0, rows) = (9, 10);
        let mut exact = vec![0f64; rows * HIDDEN];
        for i in 0..rows {
            for c in 0..HIDDEN {
                exact[i * HIDDEN + c] = (0..N)
                    .map(|b| x[b * STRIDE + k0 + i] as f64 * dz[b * HIDDEN + c] as f64)
                    .sum();
            }
        }
        // Overwritten, not added to.
        let mut dw = vec![f32::NAN; rows * HIDDEN];
        weight_gradient(isa, &x, STRIDE, k0, &dz, &mut dw);
        assert_close("weight gradient", isa, &dw, &exact);
    }

    crate::simd::isa_test!(
        input_gradient_matches_a_plain_product,
        super::input_gradient_matches_a_plain_product_on
    );

    fn input_gradient_matches_a_plain_product_on(isa: Isa) {
        let rows = 13;
        let w = random(rows * HIDDEN, 6);
        let dz = random(HIDDEN * LANES, 7);
        let dzt: [[f32; LANES]; HIDDEN] =
            std::array::from_fn(|j| std::array::from_fn(|b| dz[j * LANES + b]));
        let mut exact = vec![0f64; rows * LANES];
        for i in 0..rows {
            for b in 0..LANES {
                exact[i * LANES + b] = (0..HIDDEN)
                    .map(|j| w[i * HIDDEN + j] as f64 * dzt[j][b] as f64)
                    .sum();
            }
        }
        let mut dxt = vec![[f32::NAN; LANES]; rows];
        input_gradient_t(isa, &w, &dzt, &mut dxt);
        assert_close("input gradient", isa, dxt.as_flattened(), &exact);
    }
}
