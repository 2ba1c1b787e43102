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
#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use crate::simd::Kind;
#[cfg(target_arch = "x86_64")]
mod x86;
use crate::simd::{madd, multiversion, Isa};
#[cfg(target_arch = "aarch64")]
use aarch64::{backward_one_neon, forward_one_neon};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;
#[cfg(target_arch = "x86_64")]
use x86::{backward_one_avx2, backward_one_avx512, forward_one_avx2, forward_one_avx512};

/// The conv kernel's side.
pub const KERNEL: usize = 3;
/// The conv layer's output channels.
pub const CHANNELS: usize = crate::net::spec::seed::FILTERS;
/// The kernel's taps (9).
pub const TAPS: usize = KERNEL * KERNEL;
/// The side of the conv's output (26: a valid 3×3 convolution of 28×28).
pub const CONV_SIDE: usize = IMAGE_SIDE - KERNEL + 1;
/// The side of the pooled map (13).
pub const POOL_SIDE: usize = CONV_SIDE / 2;
/// The values of the pooled map per image (5408).
pub const POOLED: usize = POOL_SIDE * POOL_SIDE * CHANNELS;
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

/// Where, in a 28×28 image, the convolution window of pooled cell (`py`, `px`) has its
/// top-left corner when the pool's winner is position `q` (0..4, row-major in the 2×2 window).
#[inline(always)]
pub(crate) const fn window_corner(py: usize, px: usize, q: usize) -> usize {
    (2 * py + q / 2) * IMAGE_SIDE + 2 * px + q % 2
}

/// Tap `k`'s offset (0..9, row-major in the 3×3 kernel) from its window's top-left corner.
#[inline(always)]
pub(crate) const fn tap_offset(k: usize) -> usize {
    (k / KERNEL) * IMAGE_SIDE + k % KERNEL
}

// Every pixel a kernel reads is in the image: the last tap of the last window. The intrinsics
// kernels' unchecked loads rest on this.
const _: () =
    assert!(window_corner(POOL_SIDE - 1, POOL_SIDE - 1, 3) + tap_offset(TAPS - 1) < PIXELS);

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
///
/// The naming rule of the kernels: the function named for what it computes takes the [`Isa`]
/// first and dispatches (`forward_one`); `<name>_loops` is the loop version, compiled for the
/// `Isa` it is given; `<name>_<instruction set>` (`_avx2`, `_avx512`, `_neon`) the intrinsics.
/// Nothing below the model picks an `Isa` itself: its callers do, once.
pub(crate) fn forward_one(
    isa: Isa,
    img: &[f32; PIXELS],
    w: &[[f32; CHANNELS]; TAPS],
    b: &[f32; CHANNELS],
    out: &mut [f32],
    winners: &mut [u8],
) {
    match isa.kind() {
        // SAFETY: an `Isa` of a kind exists only where the CPU has its instructions.
        #[cfg(target_arch = "x86_64")]
        Kind::Avx512 => unsafe { forward_one_avx512(img, w, b, out, winners) },
        // SAFETY: as for AVX-512.
        #[cfg(target_arch = "x86_64")]
        Kind::Avx2 => unsafe { forward_one_avx2(img, w, b, out, winners) },
        // SAFETY: as for AVX-512.
        #[cfg(target_arch = "aarch64")]
        Kind::Neon => unsafe { forward_one_neon(img, w, b, out, winners) },
        _ => forward_one_loops(isa, img, w, b, out, winners),
    }
}

/// One image's kernel and bias gradients, added to `dw` and `db`, with the given instruction
/// set.
fn backward_one(
    isa: Isa,
    img: &[f32; PIXELS],
    out: &[f32],
    winners: &[u8],
    grad: &[f32],
    dw: &mut [[f32; CHANNELS]; TAPS],
    db: &mut [f32; CHANNELS],
) {
    match isa.kind() {
        // SAFETY: an `Isa` of a kind exists only where the CPU has its instructions.
        #[cfg(target_arch = "x86_64")]
        Kind::Avx512 => unsafe { backward_one_avx512(img, out, winners, grad, dw, db) },
        // SAFETY: as for AVX-512.
        #[cfg(target_arch = "x86_64")]
        Kind::Avx2 => unsafe { backward_one_avx2(img, out, winners, grad, dw, db) },
        // SAFETY: as for AVX-512.
        #[cfg(target_arch = "aarch64")]
        Kind::Neon => unsafe { backward_one_neon(img, out, winners, grad, dw, db) },
        _ => backward_one_loops(isa, img, out, winners, grad, dw, db),
    }
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
                backward_one(isa, img, out, win, g, &mut dw, &mut db);
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
        let isa = Isa::detect();
        out.par_chunks_mut(POOLED)
            .zip(winners.par_chunks_mut(POOLED))
            .zip(images.par_chunks_exact(PIXELS))
            .for_each(|((out, win), img)| {
                let img: &[f32; PIXELS] = img.try_into().expect("chunks of PIXELS");
                forward_one(isa, img, &kernel, b, out, win)
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

    // Every instruction set's build computes the same thing as the portable one, and its
    // hand-written kernels the same bits as its loops: a test per instruction set.
    crate::simd::isa_test!(
        computes_as_the_portable_build,
        super::computes_as_the_portable_build_on
    );

    fn computes_as_the_portable_build_on(isa: Isa) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let img: [f32; PIXELS] = std::array::from_fn(|_| rng.random::<f32>());
        let w: [[f32; CHANNELS]; TAPS] =
            std::array::from_fn(|_| std::array::from_fn(|_| rng.random_range(-0.5..0.5)));
        let b: [f32; CHANNELS] = std::array::from_fn(|_| rng.random_range(-0.1..0.1));
        let grad: Vec<f32> = (0..POOLED).map(|_| rng.random_range(-1.0..1.0)).collect();

        let run = |isa: Isa| {
            let (mut out, mut win) = (vec![0f32; POOLED], vec![0u8; POOLED]);
            let (mut dw, mut db) = ([[0f32; CHANNELS]; TAPS], [0f32; CHANNELS]);
            forward_one(isa, &img, &w, &b, &mut out, &mut win);
            backward_one(isa, &img, &out, &win, &grad, &mut dw, &mut db);
            (out, dw, db)
        };
        let (o1, dw1, db1) = run(Isa::available()[0]);
        let close = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + a.abs()))
        };
        let (o2, dw2, db2) = run(isa);
        assert!(close(&o1, &o2), "{isa}");
        assert!(close(dw1.as_flattened(), dw2.as_flattened()), "{isa}");
        assert!(close(&db1, &db2), "{isa}");
        assert!(
            o1.iter().any(|&v| v > 0.0) && o1.contains(&0.0),
            "ReLU both open and shut"
        );
        // The hand-written kernels (AVX2, AVX-512, NEON) make the same sums in the same order as
        // the loops compiled for their instruction set: the same bits, winners included.
        let (mut out1, mut win1) = (vec![0f32; POOLED], vec![0u8; POOLED]);
        let (mut out2, mut win2) = (vec![0f32; POOLED], vec![0u8; POOLED]);
        forward_one(isa, &img, &w, &b, &mut out1, &mut win1);
        forward_one_loops(isa, &img, &w, &b, &mut out2, &mut win2);
        assert_eq!((&out1, &win1), (&out2, &win2), "{isa}");
        let (mut dw1, mut db1) = ([[0.5f32; CHANNELS]; TAPS], [0.25f32; CHANNELS]);
        let (mut dw2, mut db2) = (dw1, db1);
        backward_one(isa, &img, &out1, &win1, &grad, &mut dw1, &mut db1);
        backward_one_loops(isa, &img, &out1, &win1, &grad, &mut dw2, &mut db2);
        assert_eq!((dw1, db1), (dw2, db2), "{isa}");
    }
}
