//! The forward pass of any model the seed's kernels do not cover: maps stored channels last
//! (NHWC, the order requests send pixels in), each layer one pass of plain loops, and every
//! convolution and dense layer one matrix product (`gemm`, the crate candle multiplies
//! with). Images go in groups that fit a core's cache, the groups in parallel; a
//! convolution's patches (im2col) are built in blocks of a few hundred rows, so no image
//! size makes a large temporary.
//!
//! Why not candle's ops: each allocates its output and walks it in NCHW order, and a
//! convolution needs patches, a product and a permute back; for the small maps and few
//! channels of these models that was most of the time (docs/import.md, Speed).

use super::spec::{limits, Layer, ModelSpec, Plan, Shape};
use crate::model::ModelError;
use rayon::prelude::*;

/// Values a group of images may hold in one layer: 256 K (1 MiB of f32), about a core's
/// share of cache.
const GROUP_VALUES: usize = 256 << 10;

use limits::PATCH_BLOCK_VALUES;

/// One layer as the engine runs it. Maps are [h, w, c] per image.
#[derive(Debug)]
enum Op {
    /// `wt` is [kh·kw·cin, filters], rows in (ky, kx, channel) order: a patch row times it
    /// gives one output pixel's channels.
    Conv {
        wt: Vec<f32>,
        b: Option<Vec<f32>>,
        input: [usize; 3],
        out: [usize; 3],
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 4],
    },
    /// `wt` is [inputs, units], inputs in the order the values arrive (a channels-first
    /// flatten before it is folded into the rows' order).
    Dense {
        wt: Vec<f32>,
        b: Option<Vec<f32>>,
        inputs: usize,
        units: usize,
    },
    /// Per channel of a map (its last axis), or per value of a vector.
    Affine {
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    MaxPool {
        input: [usize; 3],
        out: [usize; 3],
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 4],
    },
    AvgPool {
        input: [usize; 3],
        out: [usize; 3],
        kernel: [usize; 2],
        stride: [usize; 2],
    },
    GlobalAvgPool {
        pixels: usize,
        channels: usize,
    },
    /// A channels-first flatten: [h, w, c] to (c, y, x) order.
    ToChannelsFirst {
        pixels: usize,
        channels: usize,
    },
    Relu,
    Sigmoid,
    Tanh,
    /// Over each image's `n` values.
    Softmax {
        n: usize,
    },
}

/// A model compiled for [`Engine::run`].
#[derive(Debug)]
pub struct Engine {
    ops: Vec<Op>,
    /// Per input channel: the model sees `raw × scale + offset`.
    scale: Vec<f32>,
    offset: Vec<f32>,
    input_len: usize,
    classes: usize,
    /// Images per group.
    group: usize,
    /// Images per chunk, whose groups run in parallel ([`Plan::images_at_once`]).
    chunk: usize,
}

/// `[c, h, w]` of a map, as [h, w, c].
fn hwc(shape: Shape) -> Result<[usize; 3], ModelError> {
    match shape {
        Shape::Map { c, h, w } => Ok([h, w, c]),
        Shape::Flat(_) => Err(super::bad(format!(
            "a map was expected, not a vector of {shape}"
        ))),
    }
}

impl Engine {
    /// Compiles `spec` (already planned: `plan`) with its tensors, each fetched by name as
    /// f32 values in PyTorch's layout (conv [filters, cin, kh, kw], dense [units, inputs]).
    pub fn new(
        spec: &ModelSpec,
        plan: &Plan,
        mut get: impl FnMut(&str) -> Result<Vec<f32>, ModelError>,
    ) -> Result<Self, ModelError> {
        let mut ops = Vec::with_capacity(spec.layers.len() + 1);
        let mut shape = spec.input_shape();
        // A channels-first flatten not yet carried out: folded into the next dense layer's
        // weights, or done as its own pass before anything whose result depends on order.
        let mut pending: Option<[usize; 3]> = None;
        for (layer, &next) in spec.layers.iter().zip(&plan.shapes) {
            let order_matters = !matches!(
                layer,
                Layer::Dense { .. } | Layer::Relu | Layer::Sigmoid | Layer::Tanh
            );
            if order_matters {
                if let Some([h, w, c]) = pending.take() {
                    ops.push(Op::ToChannelsFirst {
                        pixels: h * w,
                        channels: c,
                    });
                }
            }
            match layer {
                Layer::Conv2d {
                    name,
                    filters,
                    kernel,
                    stride,
                    pad,
                    bias,
                } => {
                    let input = hwc(shape)?;
                    let w = get(&format!("{name}.weight"))?;
                    let (cin, f) = (input[2], *filters);
                    let taps = kernel[0] * kernel[1];
                    let mut wt = vec![0f32; taps * cin * f];
                    for o in 0..f {
                        for ci in 0..cin {
                            for t in 0..taps {
                                wt[(t * cin + ci) * f + o] = w[(o * cin + ci) * taps + t];
                            }
                        }
                    }
                    ops.push(Op::Conv {
                        wt,
                        b: bias.then(|| get(&format!("{name}.bias"))).transpose()?,
                        input,
                        out: hwc(next)?,
                        kernel: *kernel,
                        stride: *stride,
                        pad: *pad,
                    });
                }
                Layer::Dense { name, units, bias } => {
                    let inputs = shape.len();
                    let w = get(&format!("{name}.weight"))?;
                    // Row j of `wt` holds the weights of the j-th value as it arrives.
                    let source = |j: usize| match pending {
                        Some([h, wd, c]) => (j % c) * h * wd + j / c,
                        None => j,
                    };
                    let mut wt = vec![0f32; inputs * units];
                    for j in 0..inputs {
                        let i = source(j);
                        for u in 0..*units {
                            wt[j * units + u] = w[u * inputs + i];
                        }
                    }
                    pending = None;
                    ops.push(Op::Dense {
                        wt,
                        b: bias.then(|| get(&format!("{name}.bias"))).transpose()?,
                        inputs,
                        units: *units,
                    });
                }
                Layer::Affine { name } => ops.push(Op::Affine {
                    scale: get(&format!("{name}.scale"))?,
                    shift: get(&format!("{name}.shift"))?,
                }),
                Layer::MaxPool2d {
                    kernel,
                    stride,
                    pad,
                } => ops.push(Op::MaxPool {
                    input: hwc(shape)?,
                    out: hwc(next)?,
                    kernel: *kernel,
                    stride: *stride,
                    pad: *pad,
                }),
                Layer::AvgPool2d { kernel, stride } => ops.push(Op::AvgPool {
                    input: hwc(shape)?,
                    out: hwc(next)?,
                    kernel: *kernel,
                    stride: *stride,
                }),
                Layer::GlobalAvgPool2d => {
                    let [h, w, c] = hwc(shape)?;
                    ops.push(Op::GlobalAvgPool {
                        pixels: h * w,
                        channels: c,
                    });
                }
                Layer::Flatten { channels_last } => {
                    let [h, w, c] = hwc(shape)?;
                    // Channels last is the order the values are in already; so is any
                    // order of a 1×1 map.
                    if !channels_last && h * w > 1 && c > 1 {
                        pending = Some([h, w, c]);
                    }
                }
                Layer::Relu => ops.push(Op::Relu),
                Layer::Sigmoid => ops.push(Op::Sigmoid),
                Layer::Tanh => ops.push(Op::Tanh),
                Layer::Softmax => ops.push(Op::Softmax { n: next.len() }),
            }
            shape = next;
        }
        if let Some([h, w, c]) = pending {
            ops.push(Op::ToChannelsFirst {
                pixels: h * w,
                channels: c,
            });
        }
        if !spec.ends_in_softmax() {
            ops.push(Op::Softmax { n: plan.classes });
        }
        let widest = plan.widest(spec);
        Ok(Self {
            ops,
            scale: spec.input.scale.clone(),
            offset: spec.input.offset.clone(),
            input_len: spec.input_len(),
            classes: plan.classes,
            group: (GROUP_VALUES / widest.max(1)).clamp(1, 64),
            chunk: plan.images_at_once(spec),
        })
    }

    /// Class probabilities of images given as raw values, `input_len` each (row-major,
    /// channels last).
    pub fn run(&self, raw: &[f32]) -> Vec<Vec<f32>> {
        let per = self.input_len;
        let n = raw.len() / per;
        // Enough groups for every thread, none larger than fits the cache.
        let threads = rayon::current_num_threads().max(1);
        let group = self.group.min(n.div_ceil(threads)).max(1);
        let mut out = Vec::with_capacity(n);
        for chunk in raw.chunks(self.chunk * per) {
            // Each job's buffers serve all the groups it runs (fresh pages cost more than
            // the small layers).
            let answers: Vec<Vec<f32>> = chunk
                .par_chunks(group * per)
                .map_init(Scratch::default, |scratch, images| {
                    self.group_forward(images, scratch)
                })
                .collect();
            for probabilities in answers {
                out.extend(probabilities.chunks_exact(self.classes).map(|p| p.to_vec()));
            }
        }
        out
    }

    /// The whole network over a few images, in two buffers used in turn: their answers.
    fn group_forward(&self, raw: &[f32], scratch: &mut Scratch) -> Vec<f32> {
        let n = raw.len() / self.input_len;
        let c = self.scale.len();
        let Scratch { x, y, patches } = scratch;
        x.clear();
        x.extend(raw.chunks_exact(c).flat_map(|pixel| {
            pixel
                .iter()
                .zip(&self.scale)
                .zip(&self.offset)
                .map(|((v, s), o)| v * s + o)
        }));
        for op in &self.ops {
            let in_place = self.apply(op, n, x, y, patches);
            if !in_place {
                std::mem::swap(x, y);
            }
        }
        x.clone()
    }

    /// One layer over `n` images in `x`: in place (true), or into `y` (false).
    // Kept out of line, as `conv` and `pool` are: inlined into the parallel closure they
    // made one body the compiler optimised badly (batches of 256 ran at 60% of the speed).
    #[inline(never)]
    fn apply(
        &self,
        op: &Op,
        n: usize,
        x: &mut [f32],
        y: &mut Vec<f32>,
        patches: &mut Vec<f32>,
    ) -> bool {
        match op {
            Op::Conv {
                wt,
                b,
                input,
                out,
                kernel,
                stride,
                pad,
            } => {
                conv(
                    x,
                    n,
                    y,
                    patches,
                    wt,
                    b.as_deref(),
                    *input,
                    *out,
                    *kernel,
                    *stride,
                    *pad,
                );
                false
            }
            Op::Dense {
                wt,
                b,
                inputs,
                units,
            } => {
                overwrite(y, n * units);
                matmul(y, x, wt, n, *inputs, *units);
                if let Some(b) = b {
                    add_rows(y, b);
                }
                false
            }
            Op::Affine { scale, shift } => {
                let c = scale.len();
                for (i, v) in x.iter_mut().enumerate() {
                    *v = *v * scale[i % c] + shift[i % c];
                }
                true
            }
            Op::MaxPool {
                input,
                out,
                kernel,
                stride,
                pad,
            } => {
                pool(x, n, y, *input, *out, *kernel, *stride, *pad, Pool::Max);
                false
            }
            Op::AvgPool {
                input,
                out,
                kernel,
                stride,
            } => {
                pool(x, n, y, *input, *out, *kernel, *stride, [0; 4], Pool::Mean);
                false
            }
            Op::GlobalAvgPool { pixels, channels } => {
                y.clear();
                y.resize(n * channels, 0.0);
                for (image, sums) in x
                    .chunks_exact(pixels * channels)
                    .zip(y.chunks_exact_mut(*channels))
                {
                    for pixel in image.chunks_exact(*channels) {
                        for (s, v) in sums.iter_mut().zip(pixel) {
                            *s += v;
                        }
                    }
                    let k = 1.0 / *pixels as f32;
                    sums.iter_mut().for_each(|s| *s *= k);
                }
                false
            }
            Op::ToChannelsFirst { pixels, channels } => {
                overwrite(y, x.len());
                let per = pixels * channels;
                for (from, to) in x.chunks_exact(per).zip(y.chunks_exact_mut(per)) {
                    for (p, pixel) in from.chunks_exact(*channels).enumerate() {
                        for (ch, v) in pixel.iter().enumerate() {
                            to[ch * pixels + p] = *v;
                        }
                    }
                }
                false
            }
            Op::Relu => {
                x.iter_mut().for_each(|v| *v = v.max(0.0));
                true
            }
            Op::Sigmoid => {
                x.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()));
                true
            }
            Op::Tanh => {
                x.iter_mut().for_each(|v| *v = v.tanh());
                true
            }
            Op::Softmax { n: len } => {
                for row in x.chunks_exact_mut(*len) {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0;
                    for v in row.iter_mut() {
                        *v = (*v - max).exp();
                        sum += *v;
                    }
                    row.iter_mut().for_each(|v| *v /= sum);
                }
                true
            }
        }
    }
}

/// The buffers one job of [`Engine::run`] reuses across its groups.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    y: Vec<f32>,
    patches: Vec<f32>,
}

/// `v` of `len` values whose contents the caller overwrites entirely (no zeroing pass).
fn overwrite(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    v.truncate(len);
}

/// `dst` [m, n] = `a` [m, k] × `b` [k, n], all row-major, on this thread.
fn matmul(dst: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    assert!(dst.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    // SAFETY: the three slices hold the [m, n], [m, k] and [k, n] row-major matrices the
    // strides describe (checked above), `dst` does not overlap the others (a `&mut`), and
    // `Parallelism::None` keeps every access on this thread.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Adds `b` to every row of `rows` (rows of `b.len()` values).
fn add_rows(rows: &mut [f32], b: &[f32]) {
    for row in rows.chunks_exact_mut(b.len()) {
        for (v, b) in row.iter_mut().zip(b) {
            *v += b;
        }
    }
}

/// A convolution of `n` images `x` [h, w, cin] into `y` [oh, ow, filters]: the patches of a
/// few hundred output pixels at a time, times `wt`.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn conv(
    x: &[f32],
    n: usize,
    y: &mut Vec<f32>,
    patches: &mut Vec<f32>,
    wt: &[f32],
    b: Option<&[f32]>,
    [h, w, cin]: [usize; 3],
    [oh, ow, f]: [usize; 3],
    [kh, kw]: [usize; 2],
    [sy, sx]: [usize; 2],
    [top, left, _, _]: [usize; 4],
) {
    let k = kh * kw * cin;
    let rows = n * oh * ow;
    overwrite(y, rows * f);
    let block = (PATCH_BLOCK_VALUES / k).max(1).min(rows);
    overwrite(patches, block * k);
    let image_len = h * w * cin;
    let mut r0 = 0;
    while r0 < rows {
        let count = block.min(rows - r0);
        // The first row's place, then each next one by counting (no division per row).
        let (mut image, mut oy, mut ox) = (r0 / (oh * ow), (r0 % (oh * ow)) / ow, r0 % ow);
        for patch in patches[..count * k].chunks_exact_mut(k) {
            let src = &x[image * image_len..][..image_len];
            let run = kw * cin;
            let x0 = (ox * sx).wrapping_sub(left);
            for ky in 0..kh {
                let iy = (oy * sy + ky).wrapping_sub(top);
                let to = &mut patch[ky * run..][..run];
                if iy >= h {
                    to.fill(0.0);
                } else if x0 < w && x0 + kw <= w {
                    // The whole row of taps is inside: kw·cin values in a row.
                    copy_short(to, &src[(iy * w + x0) * cin..][..run]);
                } else {
                    for kx in 0..kw {
                        let ix = (ox * sx + kx).wrapping_sub(left);
                        let to = &mut to[kx * cin..][..cin];
                        // Outside the map (padding, or wrapped below zero): zeros.
                        if ix < w {
                            copy_short(to, &src[(iy * w + ix) * cin..][..cin]);
                        } else {
                            to.fill(0.0);
                        }
                    }
                }
            }
            ox += 1;
            if ox == ow {
                ox = 0;
                oy += 1;
                if oy == oh {
                    oy = 0;
                    image += 1;
                }
            }
        }
        matmul(&mut y[r0 * f..(r0 + count) * f], patches, wt, count, k, f);
        r0 += count;
    }
    if let Some(b) = b {
        add_rows(y, b);
    }
}

/// `to` = `from` (the same length), for the few values of a patch's row: in blocks of 4 and
/// a tail written out, since a loop is compiled to a call of memcpy, which costs more than
/// copying 3 or 24 values (it was 15% of a small CNN's time).
#[inline(always)]
fn copy_short(to: &mut [f32], from: &[f32]) {
    let mut blocks = to.chunks_exact_mut(4);
    let mut src = from.chunks_exact(4);
    for (t, f) in (&mut blocks).zip(&mut src) {
        t.copy_from_slice(f);
    }
    match (blocks.into_remainder(), src.remainder()) {
        ([a], [x]) => *a = *x,
        ([a, b], [x, y]) => (*a, *b) = (*x, *y),
        ([a, b, c], [x, y, z]) => (*a, *b, *c) = (*x, *y, *z),
        _ => {}
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Pool {
    Max,
    Mean,
}

/// A max or mean pool of `n` images `x` [h, w, c] into `y` [oh, ow, c]. Padding is left out
/// of both (as a max over −∞ padding would).
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn pool(
    x: &[f32],
    n: usize,
    y: &mut Vec<f32>,
    [h, w, c]: [usize; 3],
    [oh, ow, _]: [usize; 3],
    [kh, kw]: [usize; 2],
    [sy, sx]: [usize; 2],
    [top, left, _, _]: [usize; 4],
    kind: Pool,
) {
    y.clear();
    let start = if kind == Pool::Max {
        f32::NEG_INFINITY
    } else {
        0.0
    };
    y.resize(n * oh * ow * c, start);
    let scale = 1.0 / (kh * kw) as f32;
    for (src, dst) in x
        .chunks_exact(h * w * c)
        .zip(y.chunks_exact_mut(oh * ow * c))
    {
        for (p, out) in dst.chunks_exact_mut(c).enumerate() {
            let (oy, ox) = (p / ow, p % ow);
            for ky in 0..kh {
                let iy = (oy * sy + ky).wrapping_sub(top);
                if iy >= h {
                    continue;
                }
                for kx in 0..kw {
                    let ix = (ox * sx + kx).wrapping_sub(left);
                    if ix >= w {
                        continue;
                    }
                    let from = &src[(iy * w + ix) * c..][..c];
                    match kind {
                        Pool::Max => out.iter_mut().zip(from).for_each(|(o, v)| *o = o.max(*v)),
                        Pool::Mean => out.iter_mut().zip(from).for_each(|(o, v)| *o += v),
                    }
                }
            }
            if kind == Pool::Mean {
                out.iter_mut().for_each(|o| *o *= scale);
            }
        }
    }
}
