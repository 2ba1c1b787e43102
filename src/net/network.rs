//! [`Network`]: a described model, evaluated by the seed's kernels when it is the seed's
//! architecture and by [`super::engine`] otherwise, and its [`Answer`]s.

use super::engine::Engine;
use super::file;
use super::spec::{Layer, ModelSpec, Plan};
use crate::model::{Cnn, ModelError};
use candle_core::{DType, Tensor};
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

pub use super::spec::limits::MAX_BATCH_VALUES;

/// A model ready to answer: its description, its checked plan, its compiled layers.
pub struct Network {
    spec: ModelSpec,
    plan: Plan,
    /// The seed's kernels, when the layers are the seed's.
    fast: Option<Cnn>,
    /// Every other model's (and the seed's too when it is not scaled like the seed).
    engine: Option<Engine>,
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
            // What the deploy binary's header check accepts (`super::header`), no more.
            if !matches!(
                t.dtype(),
                DType::F32 | DType::F16 | DType::BF16 | DType::F64
            ) {
                return Err(bad(format!(
                    "tensor {name} is {:?}; model weights are F32, F16, BF16 or F64",
                    t.dtype()
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
        // Every tensor as f32 values, each checked finite, whichever path will run.
        let mut values = HashMap::with_capacity(plan.tensors.len());
        for (name, _) in &plan.tensors {
            let v = tensors[name]
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            if let Some(i) = v.iter().position(|v| !v.is_finite()) {
                return Err(bad(format!(
                    "tensor {name} holds {} at index {i}: the weights are damaged",
                    v[i]
                )));
            }
            values.insert(name.as_str(), v);
        }
        let fast = seed_layout(&spec, tensors)?;
        let engine = match fast {
            Some(_) => None,
            None => Some(Engine::new(&spec, &plan, |name| {
                values
                    .remove(name)
                    .ok_or_else(|| bad(format!("no tensor {name}")))
            })?),
        };
        Ok(Self {
            spec,
            plan,
            fast,
            engine,
        })
    }

    /// The seed's model as it is in memory (say, just trained): [`file::seed_spec`], on the
    /// seed's own kernels.
    pub fn seed(cnn: Cnn) -> Result<Self, ModelError> {
        let spec = file::seed_spec();
        let plan = spec.plan().map_err(|e| bad(e.message))?;
        Ok(Self {
            spec,
            plan,
            fast: Some(cnn),
            engine: None,
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
        match &self.engine {
            Some(engine) => Ok(engine.run(raw)),
            None => Err(bad(
                "the model has neither the seed's kernels nor compiled layers".into(),
            )),
        }
    }
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
    use crate::net::spec::{plan_layers, InputSpec, Preprocess, FORMAT};
    use candle_core::Device;

    /// `x` [n, c, h, w] with `pad` [top, left, bottom, right] of `value`.
    fn pad_map(x: &Tensor, pad: [usize; 4], value: f32) -> Tensor {
        let side = |x: &Tensor, dim: usize, before: usize, after: usize| {
            let mut dims = x.dims().to_vec();
            let mut parts = Vec::new();
            if before > 0 {
                dims[dim] = before;
                parts.push(Tensor::full(value, dims.as_slice(), x.device()).unwrap());
            }
            parts.push(x.clone());
            if after > 0 {
                dims[dim] = after;
                parts.push(Tensor::full(value, dims.as_slice(), x.device()).unwrap());
            }
            Tensor::cat(&parts, dim).unwrap()
        };
        side(&side(x, 2, pad[0], pad[2]), 3, pad[1], pad[3])
    }

    /// Every `stride`-th row and column of `x` [n, c, h, w].
    fn subsample(x: &Tensor, stride: [usize; 2]) -> Tensor {
        let pick = |len: usize, step: usize| {
            let idx: Vec<u32> = (0..len).step_by(step).map(|i| i as u32).collect();
            Tensor::new(idx, &Device::Cpu).unwrap()
        };
        let (_, _, h, w) = x.dims4().unwrap();
        x.index_select(&pick(h, stride[0]), 2)
            .unwrap()
            .index_select(&pick(w, stride[1]), 3)
            .unwrap()
    }

    /// The model evaluated with candle's own operators, channels first: what the engine
    /// must answer.
    fn reference(spec: &ModelSpec, t: &HashMap<String, Tensor>, raw: &[f32]) -> Vec<Vec<f32>> {
        let i = &spec.input;
        let n = raw.len() / spec.input_len();
        let c = i.channels;
        let scale = Tensor::from_slice(&i.scale, (1, c, 1, 1), &Device::Cpu).unwrap();
        let offset = Tensor::from_slice(&i.offset, (1, c, 1, 1), &Device::Cpu).unwrap();
        let mut x = Tensor::from_slice(raw, (n, i.height, i.width, c), &Device::Cpu)
            .unwrap()
            .permute((0, 3, 1, 2))
            .unwrap()
            .broadcast_mul(&scale)
            .unwrap()
            .broadcast_add(&offset)
            .unwrap();
        let get = |name: &str| t[name].clone();
        for layer in &spec.layers {
            x = match layer {
                Layer::Conv2d {
                    name,
                    stride,
                    pad,
                    bias,
                    ..
                } => {
                    let y = pad_map(&x, *pad, 0.0)
                        .conv2d(&get(&format!("{name}.weight")), 0, 1, 1, 1)
                        .unwrap();
                    let y = subsample(&y, *stride);
                    match bias {
                        true => {
                            let b = get(&format!("{name}.bias"));
                            let f = b.elem_count();
                            y.broadcast_add(&b.reshape((1, f, 1, 1)).unwrap()).unwrap()
                        }
                        false => y,
                    }
                }
                Layer::Dense { name, bias, .. } => {
                    let y = x
                        .matmul(&get(&format!("{name}.weight")).t().unwrap())
                        .unwrap();
                    match bias {
                        true => y.broadcast_add(&get(&format!("{name}.bias"))).unwrap(),
                        false => y,
                    }
                }
                Layer::Affine { name } => {
                    let (s, h) = (get(&format!("{name}.scale")), get(&format!("{name}.shift")));
                    let shape: Vec<usize> = match x.rank() {
                        4 => vec![1, s.elem_count(), 1, 1],
                        _ => vec![1, s.elem_count()],
                    };
                    x.broadcast_mul(&s.reshape(shape.as_slice()).unwrap())
                        .unwrap()
                        .broadcast_add(&h.reshape(shape.as_slice()).unwrap())
                        .unwrap()
                }
                Layer::MaxPool2d {
                    kernel,
                    stride,
                    pad,
                } => pad_map(&x, *pad, f32::NEG_INFINITY)
                    .max_pool2d_with_stride((kernel[0], kernel[1]), (stride[0], stride[1]))
                    .unwrap(),
                Layer::AvgPool2d { kernel, stride } => x
                    .avg_pool2d_with_stride((kernel[0], kernel[1]), (stride[0], stride[1]))
                    .unwrap(),
                Layer::GlobalAvgPool2d => x.mean_keepdim(3).unwrap().mean_keepdim(2).unwrap(),
                Layer::Flatten { channels_last } => match channels_last {
                    true => x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap(),
                    false => x.contiguous().unwrap(),
                }
                .flatten_from(1)
                .unwrap(),
                Layer::Relu => x.relu().unwrap(),
                Layer::Sigmoid => candle_nn::ops::sigmoid(&x).unwrap(),
                Layer::Tanh => x.tanh().unwrap(),
                Layer::Softmax => candle_nn::ops::softmax_last_dim(&x).unwrap(),
            };
        }
        if !spec.ends_in_softmax() {
            x = candle_nn::ops::softmax_last_dim(&x).unwrap();
        }
        x.to_vec2::<f32>().unwrap()
    }

    fn conv(
        name: &str,
        filters: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 4],
        bias: bool,
    ) -> Layer {
        Layer::Conv2d {
            name: name.into(),
            filters,
            kernel,
            stride,
            pad,
            bias,
        }
    }

    fn dense(name: &str, units: usize) -> Layer {
        Layer::Dense {
            name: name.into(),
            units,
            bias: true,
        }
    }

    /// A description of these layers over an input of `[h, w, c]`, with random tensors of
    /// the plan's shapes.
    fn model(input: [usize; 3], layers: Vec<Layer>) -> (ModelSpec, HashMap<String, Tensor>) {
        let [h, w, c] = input;
        let mut spec = ModelSpec {
            format: FORMAT,
            source: "test".into(),
            input: InputSpec {
                height: h,
                width: w,
                channels: c,
                scale: (0..c).map(|k| 1.0 / (200.0 + 20.0 * k as f32)).collect(),
                offset: (0..c).map(|k| -0.1 * k as f32).collect(),
                preprocess: Preprocess::None,
            },
            layers,
            labels: Vec::new(),
            sample: None,
        };
        let plan = plan_layers(spec.input_shape(), &spec.layers).unwrap();
        spec.labels = (0..plan.shapes.last().unwrap().len())
            .map(|k| k.to_string())
            .collect();
        let tensors = plan
            .tensors
            .iter()
            .map(|(name, dims)| {
                let t = Tensor::randn(0f32, 0.5, dims.as_slice(), &Device::Cpu).unwrap();
                (name.clone(), t)
            })
            .collect();
        (spec, tensors)
    }

    /// The engine answers what candle's own operators do, for every layer, padding, stride
    /// and flatten order, one image or many (several groups on several threads).
    #[test]
    fn the_engine_answers_what_candles_operators_do() {
        let cases = vec![
            // Strided and padded convolutions with a kernel that is not square, a padded
            // max pool, a channels-first flatten folded into the dense layer.
            (
                [9, 7, 3],
                vec![
                    conv("a", 4, [3, 2], [2, 1], [1, 0, 2, 1], true),
                    Layer::Relu,
                    Layer::MaxPool2d {
                        kernel: [2, 2],
                        stride: [2, 1],
                        pad: [1, 1, 0, 0],
                    },
                    Layer::Flatten {
                        channels_last: false,
                    },
                    dense("d", 5),
                    Layer::Softmax,
                ],
            ),
            // The RGB fixture's shape: tanh, mean pooling, sigmoid, global average pooling,
            // no softmax at the end (one is added).
            (
                [12, 12, 3],
                vec![
                    conv("a", 8, [3, 3], [1, 1], [0; 4], false),
                    Layer::Tanh,
                    Layer::AvgPool2d {
                        kernel: [2, 2],
                        stride: [2, 2],
                    },
                    conv("b", 6, [3, 3], [1, 1], [1; 4], true),
                    Layer::Sigmoid,
                    Layer::GlobalAvgPool2d,
                    Layer::Flatten {
                        channels_last: false,
                    },
                    dense("d", 4),
                ],
            ),
            // A channels-first flatten with no dense after it: the order is the answer's.
            (
                [5, 4, 1],
                vec![
                    conv("a", 3, [2, 2], [1, 1], [0; 4], true),
                    Layer::Flatten {
                        channels_last: false,
                    },
                    Layer::Softmax,
                ],
            ),
            // A per-value affine step after a flatten, then ReLU and dense; and a
            // channels-last flatten.
            (
                [6, 6, 2],
                vec![
                    conv("a", 3, [3, 3], [2, 2], [1; 4], true),
                    Layer::Flatten {
                        channels_last: false,
                    },
                    Layer::Affine { name: "s".into() },
                    Layer::Relu,
                    dense("d", 7),
                ],
            ),
            (
                [6, 6, 2],
                vec![
                    conv("a", 3, [3, 3], [1, 1], [0; 4], true),
                    Layer::Affine { name: "s".into() },
                    Layer::Flatten {
                        channels_last: true,
                    },
                    dense("d", 3),
                ],
            ),
        ];
        for (input, layers) in cases {
            let (spec, tensors) = model(input, layers);
            let network = Network::new(spec.clone(), &tensors).unwrap();
            assert!(!network.is_seed_layout());
            for images in [1, 3, 70] {
                let raw: Vec<f32> = (0..images * spec.input_len())
                    .map(|k| ((k * 7919) % 256) as f32)
                    .collect();
                let got = network.probabilities(&raw).unwrap();
                let want = reference(&spec, &tensors, &raw);
                assert_eq!(got.len(), images);
                for (g, w) in got.iter().zip(&want) {
                    let diff = g
                        .iter()
                        .zip(w)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f32::max);
                    assert!(diff < 1e-5, "{}: {diff} ({g:?} vs {w:?})", spec.summary());
                }
            }
        }
    }
}
