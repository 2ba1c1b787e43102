//! [`Network`]: a described model evaluated with candle, and its [`Answer`]s.

use super::file;
use super::spec::{Layer, ModelSpec, Plan};
use crate::model::{Cnn, ModelError};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;

/// One image's answer: the most probable class, its label, and every probability.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    /// The most probable class's label.
    pub label: String,
    /// Its index.
    pub class: usize,
    /// One per class, in output order.
    pub probabilities: Vec<f32>,
    /// The digit, for a model whose labels are the digits 0..=9 in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digit: Option<u8>,
}

impl Answer {
    /// The answer for one image's probabilities.
    pub fn from_probabilities(spec: &ModelSpec, probabilities: Vec<f32>) -> Self {
        let class = crate::model::argmax(&probabilities);
        let digits = spec.labels.len() == 10
            && spec
                .labels
                .iter()
                .enumerate()
                .all(|(i, l)| *l == i.to_string());
        Self {
            label: spec.labels.get(class).cloned().unwrap_or_default(),
            class,
            probabilities,
            digit: digits.then_some(class as u8),
        }
    }

    /// The answer for one image given as raw values.
    pub fn of(network: &Network, raw: &[f32]) -> Result<Self, ModelError> {
        let p = network
            .probabilities(raw)?
            .into_iter()
            .next()
            .ok_or(ModelError::BadInput {
                expected: network.spec().input_len(),
                got: 0,
            })?;
        Ok(Self::from_probabilities(network.spec(), p))
    }
}

/// How the values handed to a [`Network`] are expressed.
#[derive(Clone, Copy)]
enum Units {
    /// 0..=255, as stored in an image.
    Raw,
    /// 0..=1: raw ÷ 255.
    Unit,
}

/// Values of all activations alive at once in one forward pass (f32): 512 MiB at most. A
/// request of many images is evaluated in chunks that fit it.
pub const MAX_BATCH_VALUES: usize = 128 << 20;

/// A model ready to answer: its description, its checked plan, its tensors.
pub struct Network {
    spec: ModelSpec,
    plan: Plan,
    layers: Vec<Compiled>,
    scale: Tensor,
    offset: Tensor,
    /// The seed's kernels, when the layers are the seed's.
    fast: Option<Cnn>,
    /// Values of the largest im2col matrix of one image.
    im2col_values: usize,
}

enum Compiled {
    /// Evaluated as im2col and one matrix product: candle's own CPU convolution spends most
    /// of its time building patches for the few channels CNNs like these have (measured in
    /// docs/import.md, Speed). `wt` is [in_channels·kh·kw, filters], contiguous.
    Conv {
        w: Tensor,
        wt: Tensor,
        b: Option<Tensor>,
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 4],
    },
    /// `wt` is [inputs, units], contiguous.
    Dense {
        wt: Tensor,
        b: Option<Tensor>,
    },
    Affine {
        scale: Tensor,
        shift: Tensor,
    },
    MaxPool {
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 4],
    },
    AvgPool {
        kernel: [usize; 2],
        stride: [usize; 2],
    },
    GlobalAvgPool,
    Flatten {
        channels_last: bool,
    },
    Relu,
    Sigmoid,
    Tanh,
    Softmax,
}

impl Network {
    /// The network of `spec` with `tensors` (PyTorch layouts, names from the plan). Every
    /// tensor the plan names must be there with its shape and finite values; no other may be.
    pub fn new(spec: ModelSpec, tensors: &HashMap<String, Tensor>) -> Result<Self, ModelError> {
        let plan = spec.plan().map_err(|e| bad(e.message))?;
        for (name, dims) in &plan.tensors {
            let t = tensors.get(name).ok_or_else(|| {
                bad(format!(
                    "the description names tensor {name}, which the file does not hold"
                ))
            })?;
            if t.dims() != dims.as_slice() {
                return Err(bad(format!(
                    "tensor {name} has shape {:?}; the description needs {dims:?}",
                    t.dims()
                )));
            }
        }
        if tensors.len() != plan.tensors.len() {
            let mut extra: Vec<_> = tensors
                .keys()
                .filter(|k| !plan.tensors.iter().any(|(n, _)| n == *k))
                .cloned()
                .collect();
            extra.sort();
            return Err(bad(format!(
                "the file holds tensors the description does not use: {}",
                extra.join(", ")
            )));
        }
        let get = |name: &str| -> Result<Tensor, ModelError> {
            let t = tensors[name].to_dtype(DType::F32)?.contiguous()?;
            let values = t.flatten_all()?.to_vec1::<f32>()?;
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(bad(format!(
                    "tensor {name} holds {} at index {i}: the weights are damaged",
                    values[i]
                )));
            }
            Ok(t)
        };
        let opt = |name: &str, has: bool| has.then(|| get(name)).transpose();
        let mut layers = Vec::with_capacity(spec.layers.len());
        for layer in &spec.layers {
            layers.push(match layer {
                Layer::Conv2d {
                    name,
                    filters,
                    kernel,
                    stride,
                    pad,
                    bias,
                } => Compiled::Conv {
                    w: get(&format!("{name}.weight"))?,
                    wt: get(&format!("{name}.weight"))?
                        .reshape((*filters, ()))?
                        .t()?
                        .contiguous()?,
                    b: opt(&format!("{name}.bias"), *bias)?,
                    kernel: *kernel,
                    stride: *stride,
                    pad: *pad,
                },
                Layer::Dense { name, bias, .. } => Compiled::Dense {
                    wt: get(&format!("{name}.weight"))?.t()?.contiguous()?,
                    b: opt(&format!("{name}.bias"), *bias)?,
                },
                Layer::Affine { name } => Compiled::Affine {
                    scale: get(&format!("{name}.scale"))?,
                    shift: get(&format!("{name}.shift"))?,
                },
                Layer::MaxPool2d {
                    kernel,
                    stride,
                    pad,
                } => Compiled::MaxPool {
                    kernel: *kernel,
                    stride: *stride,
                    pad: *pad,
                },
                Layer::AvgPool2d { kernel, stride } => Compiled::AvgPool {
                    kernel: *kernel,
                    stride: *stride,
                },
                Layer::GlobalAvgPool2d => Compiled::GlobalAvgPool,
                Layer::Flatten { channels_last } => Compiled::Flatten {
                    channels_last: *channels_last,
                },
                Layer::Relu => Compiled::Relu,
                Layer::Sigmoid => Compiled::Sigmoid,
                Layer::Tanh => Compiled::Tanh,
                Layer::Softmax => Compiled::Softmax,
            });
        }
        let c = spec.input.channels;
        let scale = Tensor::from_slice(&spec.input.scale, (1, c, 1, 1), &Device::Cpu)?;
        let offset = Tensor::from_slice(&spec.input.offset, (1, c, 1, 1), &Device::Cpu)?;
        let fast = seed_layout(&spec, tensors)?;
        let im2col_values = im2col_values(&spec, &plan);
        Ok(Self {
            spec,
            plan,
            layers,
            scale,
            offset,
            fast,
            im2col_values,
        })
    }

    /// The seed's model as it is in memory (say, just trained): [`file::seed_spec`], on the
    /// seed's own kernels.
    pub fn seed(cnn: Cnn) -> Result<Self, ModelError> {
        let spec = file::seed_spec();
        let plan = spec.plan().map_err(|e| bad(e.message))?;
        let scale = Tensor::from_slice(&spec.input.scale, (1, 1, 1, 1), &Device::Cpu)?;
        let offset = Tensor::from_slice(&spec.input.offset, (1, 1, 1, 1), &Device::Cpu)?;
        Ok(Self {
            spec,
            plan,
            // Never used: `fast` answers.
            layers: Vec::new(),
            scale,
            offset,
            fast: Some(cnn),
            im2col_values: 0,
        })
    }

    /// The description.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Its checked plan (shapes, parameters, work per image).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Whether it runs on the seed's kernels.
    pub fn is_seed_layout(&self) -> bool {
        self.fast.is_some()
    }

    /// Class probabilities for images given as raw values (0..=255; row-major, channels
    /// last; [`ModelSpec::input_len`] per image). The input scaling is applied here; a model
    /// that ends without a softmax gets one.
    pub fn probabilities(&self, raw: &[f32]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.run(raw, Units::Raw)
    }

    /// Class probabilities for images given in [0, 1] (raw ÷ 255, what MNIST's preprocessing
    /// gives). A model scaled like the seed (x/255) takes them as they are, bit for bit what
    /// the seed's own path computes.
    pub fn probabilities_unit(&self, unit: &[f32]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.run(unit, Units::Unit)
    }

    fn run(&self, values: &[f32], units: Units) -> Result<Vec<Vec<f32>>, ModelError> {
        let i = &self.spec.input;
        let unit_scaled =
            i.channels == 1 && (i.scale[0] * 255.0 - 1.0).abs() < 1e-6 && i.offset[0] == 0.0;
        let raw: std::borrow::Cow<'_, [f32]> = match units {
            Units::Unit if unit_scaled => return self.run_scaled(values),
            Units::Unit => values.iter().map(|v| v * 255.0).collect(),
            Units::Raw => values.into(),
        };
        self.run_raw(&raw)
    }

    /// The seed's kernels over values already scaled.
    fn run_scaled(&self, scaled: &[f32]) -> Result<Vec<Vec<f32>>, ModelError> {
        let per = self.spec.input_len();
        if scaled.is_empty() || !scaled.len().is_multiple_of(per) {
            return Err(ModelError::BadInput {
                expected: per * (scaled.len() / per).max(1),
                got: scaled.len(),
            });
        }
        match &self.fast {
            Some(cnn) => Ok(cnn
                .probabilities(scaled)?
                .into_iter()
                .map(|p| p.to_vec())
                .collect()),
            None => {
                let raw: Vec<f32> = scaled.iter().map(|v| v * 255.0).collect();
                self.run_raw(&raw)
            }
        }
    }

    fn run_raw(&self, raw: &[f32]) -> Result<Vec<Vec<f32>>, ModelError> {
        let per = self.spec.input_len();
        if raw.is_empty() || !raw.len().is_multiple_of(per) {
            return Err(ModelError::BadInput {
                expected: per * (raw.len() / per).max(1),
                got: raw.len(),
            });
        }
        if let Some(cnn) = &self.fast {
            let (s, o) = (self.spec.input.scale[0], self.spec.input.offset[0]);
            let scaled: Vec<f32> = raw.iter().map(|v| v * s + o).collect();
            return Ok(cnn
                .probabilities(&scaled)?
                .into_iter()
                .map(|p| p.to_vec())
                .collect());
        }
        // All activations of a chunk stay within MAX_BATCH_VALUES.
        let live: usize =
            self.plan.shapes.iter().map(|s| s.len()).sum::<usize>() + per + self.im2col_values;
        let chunk = (MAX_BATCH_VALUES / live.max(1)).clamp(1, 256);
        let mut out = Vec::with_capacity(raw.len() / per);
        for images in raw.chunks(chunk * per) {
            let n = images.len() / per;
            let i = &self.spec.input;
            let x = Tensor::from_slice(images, (n, i.height, i.width, i.channels), &Device::Cpu)?
                .permute((0, 3, 1, 2))?
                .broadcast_mul(&self.scale)?
                .broadcast_add(&self.offset)?;
            let mut y = self.forward(x)?;
            if !self.spec.ends_in_softmax() {
                y = candle_nn::ops::softmax_last_dim(&y)?;
            }
            out.extend(y.to_vec2::<f32>()?);
        }
        Ok(out)
    }

    /// The layers over `x`, [n, channels, height, width] already scaled.
    fn forward(&self, mut x: Tensor) -> Result<Tensor, ModelError> {
        for layer in &self.layers {
            x = match layer {
                Compiled::Conv {
                    w,
                    wt,
                    b,
                    kernel,
                    stride,
                    pad,
                } => conv(&x, w, wt, b.as_ref(), *kernel, *stride, *pad)?,
                Compiled::Dense { wt, b } => {
                    let y = x.matmul(wt)?;
                    match b {
                        Some(b) => y.broadcast_add(b)?,
                        None => y,
                    }
                }
                Compiled::Affine { scale, shift } => {
                    let shape: Vec<usize> = match x.rank() {
                        4 => vec![1, scale.elem_count(), 1, 1],
                        _ => vec![1, scale.elem_count()],
                    };
                    x.broadcast_mul(&scale.reshape(shape.as_slice())?)?
                        .broadcast_add(&shift.reshape(shape.as_slice())?)?
                }
                Compiled::MaxPool {
                    kernel,
                    stride,
                    pad,
                } => pad_map(&x, *pad, f32::NEG_INFINITY)?
                    .max_pool2d_with_stride((kernel[0], kernel[1]), (stride[0], stride[1]))?,
                Compiled::AvgPool { kernel, stride } => {
                    x.avg_pool2d_with_stride((kernel[0], kernel[1]), (stride[0], stride[1]))?
                }
                Compiled::GlobalAvgPool => x.mean_keepdim(3)?.mean_keepdim(2)?,
                Compiled::Flatten { channels_last } => {
                    if *channels_last {
                        x.permute((0, 2, 3, 1))?.contiguous()?.flatten_from(1)?
                    } else {
                        x.contiguous()?.flatten_from(1)?
                    }
                }
                Compiled::Relu => x.relu()?,
                Compiled::Sigmoid => candle_nn::ops::sigmoid(&x)?,
                Compiled::Tanh => x.tanh()?,
                Compiled::Softmax => candle_nn::ops::softmax_last_dim(&x)?,
            };
        }
        Ok(x)
    }
}

/// Values of one image's im2col matrix above which a convolution runs on candle's own
/// (tiled) operator instead: 16 M values, 64 MiB.
const MAX_IM2COL_VALUES: usize = 16 << 20;

/// One convolution over `x` [n, c, h, w]: `w` [f, c, kh, kw] and `wt`, the same as
/// [c·kh·kw, f]. im2col and one matrix product when one image's matrix is within
/// [`MAX_IM2COL_VALUES`], else candle's convolution.
#[allow(clippy::too_many_arguments)]
fn conv(
    x: &Tensor,
    w: &Tensor,
    wt: &Tensor,
    b: Option<&Tensor>,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 4],
) -> Result<Tensor, ModelError> {
    let x = pad_map(x, pad, 0.0)?;
    let (n, c, h, wd) = x.dims4()?;
    let cols = (h.saturating_sub(kernel[0]) / stride[0].max(1) + 1)
        * (wd.saturating_sub(kernel[1]) / stride[1].max(1) + 1)
        * c
        * kernel[0]
        * kernel[1];
    if cols > MAX_IM2COL_VALUES {
        let y = if stride[0] == stride[1] {
            x.conv2d(w, 0, stride[0], 1, 1)?
        } else {
            subsample(&x.conv2d(w, 0, 1, 1, 1)?, stride)?
        };
        return Ok(match b {
            Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?)?,
            None => y,
        });
    }
    let (cols, oh, ow) = im2col(&x, kernel, stride)?;
    let y = cols.matmul(wt)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    Ok(y.reshape((n, oh, ow, wt.dim(1)?))?
        .permute((0, 3, 1, 2))?
        .contiguous()?)
}

/// Every `stride`-th row and column of `x` [n, c, h, w], from the first.
fn subsample(x: &Tensor, stride: [usize; 2]) -> Result<Tensor, ModelError> {
    let pick = |len: usize, step: usize| -> Result<Tensor, ModelError> {
        let idx: Vec<u32> = (0..len).step_by(step).map(|i| i as u32).collect();
        Ok(Tensor::new(idx, &Device::Cpu)?)
    };
    let (_, _, h, w) = x.dims4()?;
    Ok(x.index_select(&pick(h, stride[0])?, 2)?
        .index_select(&pick(w, stride[1])?, 3)?)
}

/// The values of the largest im2col matrix [`im2col`] builds for one image (those over
/// [`MAX_IM2COL_VALUES`] are not built).
fn im2col_values(spec: &ModelSpec, plan: &Plan) -> usize {
    let mut input = spec.input_shape();
    let mut most = 0;
    for (layer, out) in spec.layers.iter().zip(&plan.shapes) {
        if let (Layer::Conv2d { kernel, .. }, super::spec::Shape::Map { h, w, .. }) = (layer, out) {
            let cols = h * w * input.channels() * kernel[0] * kernel[1];
            if cols <= MAX_IM2COL_VALUES {
                most = most.max(cols);
            }
        }
        input = *out;
    }
    most
}

/// `x` [n, c, h, w] with `pad` [top, left, bottom, right] rows and columns of `value`.
fn pad_map(x: &Tensor, pad: [usize; 4], value: f32) -> Result<Tensor, ModelError> {
    if pad == [0; 4] {
        return Ok(x.clone());
    }
    if value == 0.0 {
        return Ok(x
            .pad_with_zeros(2, pad[0], pad[2])?
            .pad_with_zeros(3, pad[1], pad[3])?);
    }
    let side =
        |x: &Tensor, dim: usize, before: usize, after: usize| -> Result<Tensor, ModelError> {
            let mut dims = x.dims().to_vec();
            let mut parts = Vec::with_capacity(3);
            if before > 0 {
                dims[dim] = before;
                parts.push(Tensor::full(value, dims.as_slice(), x.device())?);
            }
            parts.push(x.clone());
            if after > 0 {
                dims[dim] = after;
                parts.push(Tensor::full(value, dims.as_slice(), x.device())?);
            }
            Ok(Tensor::cat(&parts, dim)?)
        };
    let x = side(x, 2, pad[0], pad[2])?;
    side(&x, 3, pad[1], pad[3])
}

/// `x` [n, c, h, w] (padded already) as the windows a `kernel` at `stride` sees: a matrix
/// [n·oh·ow, c·kh·kw], rows in (image, row, column) order and each row in (channel, ky, kx)
/// order, the conv weight's own. Returns it with oh and ow. Images are laid out in parallel.
fn im2col(
    x: &Tensor,
    kernel: [usize; 2],
    stride: [usize; 2],
) -> Result<(Tensor, usize, usize), ModelError> {
    use rayon::prelude::*;
    let (n, c, h, w) = x.dims4()?;
    let [kh, kw] = kernel;
    let [sy, sx] = stride;
    if h < kh || w < kw || sy == 0 || sx == 0 {
        return Err(bad(format!(
            "a {kh}×{kw} convolution over a {h}×{w} map at stride {sy}×{sx}"
        )));
    }
    let (oh, ow) = ((h - kh) / sy + 1, (w - kw) / sx + 1);
    let k = c * kh * kw;
    let src = x.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; n * oh * ow * k];
    out.par_chunks_mut(oh * ow * k)
        .zip(src.par_chunks(c * h * w))
        .for_each(|(rows, image)| {
            for (r, row) in rows.chunks_exact_mut(k).enumerate() {
                let (oy, ox) = (r / ow, r % ow);
                for (ch, taps) in row.chunks_exact_mut(kh * kw).enumerate() {
                    let plane = &image[ch * h * w..][..h * w];
                    for (ky, line) in taps.chunks_exact_mut(kw).enumerate() {
                        let at = (oy * sy + ky) * w + ox * sx;
                        let from = &plane[at..at + kw];
                        // Element by element: a call to memcpy per few values costs more
                        // than the copy.
                        for (d, v) in line.iter_mut().zip(from) {
                            *d = *v;
                        }
                    }
                }
            }
        });
    Ok((
        Tensor::from_vec(out, (n * oh * ow, k), &Device::Cpu)?,
        oh,
        ow,
    ))
}

/// The seed's model, when `spec` is its architecture with its input scaling (x/255): then
/// the seed's fused kernels answer.
fn seed_layout(
    spec: &ModelSpec,
    tensors: &HashMap<String, Tensor>,
) -> Result<Option<Cnn>, ModelError> {
    let i = &spec.input;
    let scaled_like_seed = i.channels == 1
        && (i.height, i.width) == (28, 28)
        && (i.scale[0] * 255.0 - 1.0).abs() < 1e-6
        && i.offset[0] == 0.0;
    let names = match spec.layers.as_slice() {
        [Layer::Conv2d {
            name: conv,
            filters: 32,
            kernel: [3, 3],
            stride: [1, 1],
            pad: [0, 0, 0, 0],
            bias: true,
        }, Layer::Relu, Layer::MaxPool2d {
            kernel: [2, 2],
            stride: [2, 2],
            pad: [0, 0, 0, 0],
        }, Layer::Flatten {
            channels_last: false,
        }, Layer::Dense {
            name: fc1,
            units: 128,
            bias: true,
        }, Layer::Relu, Layer::Dense {
            name: fc2,
            units: 10,
            bias: true,
        }, Layer::Softmax] => [conv, fc1, fc2],
        _ => return Ok(None),
    };
    if !scaled_like_seed {
        return Ok(None);
    }
    let seed_names = ["conv", "fc1", "fc2"];
    let mut renamed = HashMap::new();
    for (ours, theirs) in seed_names.iter().zip(names) {
        for part in ["weight", "bias"] {
            renamed.insert(
                format!("{ours}.{part}"),
                tensors[&format!("{theirs}.{part}")].to_dtype(DType::F32)?,
            );
        }
    }
    Ok(Some(Cnn::from_pytorch(&renamed)?))
}

pub(crate) fn bad(message: String) -> ModelError {
    ModelError::BadWeights {
        path: None,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// im2col and a matrix product give candle's own convolution, for equal and unequal
    /// strides, any padding and a kernel that is not square.
    #[test]
    fn im2col_convolution_matches_candles() {
        let x = Tensor::randn(0f32, 1.0, (2, 3, 9, 7), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 1.0, (4, 3, 3, 2), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1.0, 4, &Device::Cpu).unwrap();
        let wt = w
            .reshape((4, ()))
            .unwrap()
            .t()
            .unwrap()
            .contiguous()
            .unwrap();
        for (stride, pad) in [
            ([1, 1], [0; 4]),
            ([2, 2], [1, 1, 1, 1]),
            ([2, 1], [1, 0, 2, 1]),
        ] {
            let got = conv(&x, &w, &wt, Some(&b), [3, 2], stride, pad).unwrap();
            let padded = pad_map(&x, pad, 0.0).unwrap();
            let full = padded.conv2d(&w, 0, 1, 1, 1).unwrap();
            let want = subsample(&full, stride)
                .unwrap()
                .broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap())
                .unwrap();
            assert_eq!(got.dims(), want.dims(), "{stride:?} {pad:?}");
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "{stride:?} {pad:?}: {diff}");
        }
    }
}
