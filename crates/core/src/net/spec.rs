//! The model description that travels with the weights: what the input is, the layers in
//! order, the class labels. [`ModelSpec::plan`] checks it (shapes, tensors, limits) before
//! anything is allocated, so a description that lies is refused with the layer it lies at.
//!
//! Layouts are PyTorch's, whatever the source: maps are (channels, height, width), a conv's
//! weight is `[filters, in_channels, kernel_h, kernel_w]`, a dense weight `[units, inputs]`.
//! Importers convert channels-last sources; a flatten of a channels-last source that feeds
//! anything but a dense layer keeps its order with `Flatten { channels_last: true }`.

use serde::{Deserialize, Serialize};

/// The description's format version: bumped on any change a reader must know.
pub const FORMAT: u32 = 1;

/// The limits a model must fit, checked at import and again at load: a function's memory and
/// time per request follow from them.
pub mod limits {
    /// Layers, counting activations.
    pub const MAX_LAYERS: usize = 64;
    /// Parameters (f32): 64 MiB, the largest weights file a function reads.
    pub const MAX_PARAMS: usize = 16 << 20;
    /// Values in the largest activation of one image (f32): 64 MiB.
    pub const MAX_ACTIVATION_VALUES: usize = 16 << 20;
    /// Multiply-adds per image: about half a second of one Lambda vCPU.
    pub const MAX_MACS: u64 = 2_000_000_000;
    /// Input height and width.
    pub const MAX_INPUT_SIDE: usize = 1024;
    /// Input channels (grey, grey + alpha, RGB, RGBA).
    pub const MAX_CHANNELS: usize = 4;
    /// Output classes.
    pub const MAX_CLASSES: usize = 1000;
    /// Characters in one class label.
    pub const MAX_LABEL_CHARS: usize = 64;
    /// Conv and pool kernel sides.
    pub const MAX_KERNEL: usize = 15;
    /// Values of all activations alive at once in one forward pass (f32): 512 MiB at most.
    /// A request of many images is evaluated in chunks that fit it.
    pub const MAX_BATCH_VALUES: usize = 128 << 20;
    /// Values of one block of a convolution's patch matrix (im2col): 32 K (128 KiB), so
    /// that no image size makes a large temporary.
    pub const PATCH_BLOCK_VALUES: usize = 32 << 10;
    /// Images one request may hold (`instances`), and one chunk evaluates at most.
    pub const MAX_INSTANCES: usize = 256;
}

/// A model: its input, its layers and its labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// [`FORMAT`].
    pub format: u32,
    /// Where it came from, for people: "onnx (pytorch 2.15.0)", "keras 3.15.1".
    pub source: String,
    /// What the first layer reads.
    pub input: InputSpec,
    /// In order; each reads the previous one's output.
    pub layers: Vec<Layer>,
    /// One per output, in output order.
    pub labels: Vec<String>,
    /// An input and the class the model gives it at import: the deploy smoke test's case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<Sample>,
}

/// The input: its size, how raw pixel values (0..=255) become the model's values, and how an
/// image is brought to that size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// 1 (grey) or 3 (RGB), or 2 / 4 with alpha.
    pub channels: usize,
    /// Per channel: the model sees `raw × scale + offset`.
    pub scale: Vec<f32>,
    /// Per channel, see `scale`.
    pub offset: Vec<f32>,
    /// What an uploaded image goes through.
    pub preprocess: Preprocess,
}

/// How an uploaded image becomes the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Preprocess {
    /// MNIST's: grey, ink found and centred by its mass in 20×20 inside 28×28.
    Digit,
    /// Scaled to the input's size (aspect not kept), alpha laid over white.
    Resize,
    /// None: the image must already have the input's size.
    None,
}

/// A stored input and the class the model answered for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// Raw values, row-major, channels last.
    pub pixels: Vec<u8>,
    /// The class it gets.
    pub class: usize,
    /// The probabilities it got at import (empty in files written before they were kept):
    /// the smoke test checks them too, so weights that still give the class but have
    /// drifted are caught.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probabilities: Vec<f32>,
}

/// One layer. Tensors are named `{name}.weight`, `{name}.bias`, `{name}.scale`, `{name}.shift`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Layer {
    /// A 2-D convolution (no dilation, no groups).
    Conv2d {
        /// Its tensors' prefix.
        name: String,
        /// Output channels.
        filters: usize,
        /// [height, width].
        kernel: [usize; 2],
        /// [down, across].
        stride: [usize; 2],
        /// Zeros added: [top, left, bottom, right].
        pad: [usize; 4],
        /// Whether `{name}.bias` exists.
        bias: bool,
    },
    /// A fully connected layer.
    Dense {
        /// Its tensors' prefix.
        name: String,
        /// Outputs.
        units: usize,
        /// Whether `{name}.bias` exists.
        bias: bool,
    },
    /// `x × scale[c] + shift[c]` per channel (or per feature): a batch norm that follows no
    /// conv or dense layer.
    Affine {
        /// Its tensors' prefix.
        name: String,
    },
    /// Max pooling; padding counts as −∞.
    MaxPool2d {
        /// [height, width].
        kernel: [usize; 2],
        /// [down, across].
        stride: [usize; 2],
        /// [top, left, bottom, right].
        pad: [usize; 4],
    },
    /// Average pooling, without padding.
    AvgPool2d {
        /// [height, width].
        kernel: [usize; 2],
        /// [down, across].
        stride: [usize; 2],
    },
    /// The mean of each channel: (C, H, W) → (C, 1, 1).
    GlobalAvgPool2d,
    /// (C, H, W) → C·H·W values, in (c, y, x) order, or (y, x, c) when `channels_last`.
    Flatten {
        /// The source flattened channels-last maps.
        #[serde(default)]
        channels_last: bool,
    },
    /// max(0, x).
    Relu,
    /// 1 / (1 + e^−x).
    Sigmoid,
    /// tanh(x).
    Tanh,
    /// Over the values of a flat input.
    Softmax,
}

impl Layer {
    /// What a message calls it.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Conv2d { .. } => "conv2d",
            Layer::Dense { .. } => "dense",
            Layer::Affine { .. } => "affine",
            Layer::MaxPool2d { .. } => "max_pool2d",
            Layer::AvgPool2d { .. } => "avg_pool2d",
            Layer::GlobalAvgPool2d => "global_avg_pool2d",
            Layer::Flatten { .. } => "flatten",
            Layer::Relu => "relu",
            Layer::Sigmoid => "sigmoid",
            Layer::Tanh => "tanh",
            Layer::Softmax => "softmax",
        }
    }
}

/// The shape of one image's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// (channels, height, width).
    Map {
        /// Channels.
        c: usize,
        /// Rows.
        h: usize,
        /// Columns.
        w: usize,
    },
    /// A vector.
    Flat(usize),
}

impl Shape {
    /// Values in it.
    pub fn len(&self) -> usize {
        match *self {
            // Saturating: a declared size over the limits is refused, not wrapped.
            Shape::Map { c, h, w } => c.saturating_mul(h).saturating_mul(w),
            Shape::Flat(n) => n,
        }
    }

    /// Whether it holds no values (never, in a checked plan).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Channels of a map, features of a vector: what a per-channel affine scales.
    pub fn channels(&self) -> usize {
        match *self {
            Shape::Map { c, .. } => c,
            Shape::Flat(n) => n,
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shape::Map { c, h, w } => write!(f, "{c}×{h}×{w}"),
            Shape::Flat(n) => write!(f, "{n}"),
        }
    }
}

/// A description that cannot be run, or one over a limit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    /// What is wrong, where, and what would be accepted.
    pub message: String,
}

fn err(message: impl Into<String>) -> SpecError {
    SpecError {
        message: message.into(),
    }
}

/// What a checked description costs and holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The output shape of each layer, in order.
    pub shapes: Vec<Shape>,
    /// Each tensor the weights must hold, with its shape, in layer order.
    pub tensors: Vec<(String, Vec<usize>)>,
    /// Parameters.
    pub params: usize,
    /// Multiply-adds per image.
    pub macs: u64,
    /// Values in the largest activation of one image (the input included).
    pub peak_values: usize,
    /// Outputs (classes).
    pub classes: usize,
}

impl ModelSpec {
    /// The input's shape.
    pub fn input_shape(&self) -> Shape {
        Shape::Map {
            c: self.input.channels,
            h: self.input.height,
            w: self.input.width,
        }
    }

    /// Checks the description and works out its shapes, tensors and costs, refusing anything
    /// over [`limits`].
    pub fn plan(&self) -> Result<Plan, SpecError> {
        use limits::*;
        if self.format != FORMAT {
            return Err(err(format!(
                "the model description has format {}; this build reads format {FORMAT} (import the model again with this version)",
                self.format
            )));
        }
        let i = &self.input;
        if i.height == 0 || i.width == 0 || i.height > MAX_INPUT_SIDE || i.width > MAX_INPUT_SIDE {
            return Err(err(format!(
                "the input is {}×{}; each side must be 1..={MAX_INPUT_SIDE}",
                i.height, i.width
            )));
        }
        if !(1..=MAX_CHANNELS).contains(&i.channels) {
            return Err(err(format!(
                "the input has {} channels; 1..={MAX_CHANNELS} are accepted",
                i.channels
            )));
        }
        if i.scale.len() != i.channels || i.offset.len() != i.channels {
            return Err(err(format!(
                "the input scaling has {} scales and {} offsets for {} channels",
                i.scale.len(),
                i.offset.len(),
                i.channels
            )));
        }
        if let Some(v) = i.scale.iter().chain(&i.offset).find(|v| !v.is_finite()) {
            return Err(err(format!("the input scaling holds {v}")));
        }
        // The digit preprocessing makes MNIST's own 28×28 grey picture, and nothing else.
        let side = crate::data::IMAGE_SIDE;
        if i.preprocess == Preprocess::Digit && (i.channels, i.height, i.width) != (1, side, side) {
            return Err(err(format!(
                "digit preprocessing makes MNIST's {side}×{side}×1 picture; this input is {}×{}×{} (import with --preprocess resize or none)",
                i.height, i.width, i.channels
            )));
        }
        let mut plan = plan_layers(self.input_shape(), &self.layers)?;
        let shape = plan.shapes.last().copied().unwrap_or(self.input_shape());
        plan.classes = match shape {
            Shape::Flat(n) if (2..=MAX_CLASSES).contains(&n) => n,
            Shape::Flat(n) => {
                return Err(err(format!(
                    "the model has {n} outputs; a classifier has 2..={MAX_CLASSES} (a one-unit sigmoid output is imported as two classes)"
                )))
            }
            s => {
                return Err(err(format!(
                    "the model ends with a {s} map; it must end with a vector of class scores (add a flatten and a dense layer)"
                )))
            }
        };
        if self.labels.len() != plan.classes {
            return Err(err(format!(
                "the model has {} outputs but {} labels",
                plan.classes,
                self.labels.len()
            )));
        }
        if let Some(l) = self
            .labels
            .iter()
            .find(|l| l.is_empty() || l.chars().count() > MAX_LABEL_CHARS)
        {
            return Err(err(format!(
                "label {l:?}: labels are 1..={MAX_LABEL_CHARS} characters"
            )));
        }
        if let Some(s) = &self.sample {
            let want = i.height * i.width * i.channels;
            let probabilities_fit = s.probabilities.is_empty()
                || (s.probabilities.len() == plan.classes
                    && s.probabilities.iter().all(|p| p.is_finite()));
            if s.pixels.len() != want || s.class >= plan.classes || !probabilities_fit {
                return Err(err(format!(
                    "the stored sample has {} values, class {} and {} probabilities; the input has {want} values and the model {} classes",
                    s.pixels.len(),
                    s.class,
                    s.probabilities.len(),
                    plan.classes
                )));
            }
        }
        Ok(plan)
    }

    /// Whether the outputs are already probabilities (the last layer is a softmax); otherwise
    /// a softmax over them gives the answer's probabilities.
    pub fn ends_in_softmax(&self) -> bool {
        matches!(self.layers.last(), Some(Layer::Softmax))
    }

    /// Values in one input.
    pub fn input_len(&self) -> usize {
        self.input.height * self.input.width * self.input.channels
    }

    /// One line for people: "28×28×1 → conv2d 32 3×3 → relu → … (10 classes)".
    pub fn summary(&self) -> String {
        let mut parts = vec![format!(
            "{}×{}×{}",
            self.input.height, self.input.width, self.input.channels
        )];
        for l in &self.layers {
            parts.push(match l {
                Layer::Conv2d {
                    filters,
                    kernel,
                    stride,
                    ..
                } => format!(
                    "conv2d {filters} {}×{}{}",
                    kernel[0],
                    kernel[1],
                    if *stride != [1, 1] {
                        format!(" /{}", stride[0])
                    } else {
                        String::new()
                    }
                ),
                Layer::Dense { units, .. } => format!("dense {units}"),
                Layer::MaxPool2d { kernel, .. } => format!("max_pool {}×{}", kernel[0], kernel[1]),
                Layer::AvgPool2d { kernel, .. } => format!("avg_pool {}×{}", kernel[0], kernel[1]),
                other => other.kind().to_owned(),
            });
        }
        format!("{} ({} classes)", parts.join(" → "), self.labels.len())
    }
}

impl Plan {
    /// The most values one image holds between two layers (its input included).
    pub fn widest(&self, spec: &ModelSpec) -> usize {
        self.shapes
            .iter()
            .map(|s| s.len())
            .fold(spec.input_len(), usize::max)
    }

    /// Values one image holds while it is evaluated: its raw input, and the two buffers the
    /// layers read and write in turn (each of [`Self::widest`]).
    pub fn values_per_image(&self, spec: &ModelSpec) -> usize {
        spec.input_len() + 2 * self.widest(spec)
    }

    /// Images evaluated together: as many as keep their values within
    /// [`limits::MAX_BATCH_VALUES`], 1..=[`limits::MAX_INSTANCES`].
    pub fn images_at_once(&self, spec: &ModelSpec) -> usize {
        (limits::MAX_BATCH_VALUES / self.values_per_image(spec).max(1))
            .clamp(1, limits::MAX_INSTANCES)
    }

    /// Bytes a model takes beyond the runtime, at its peak: loading holds the tensors three
    /// times (as read, as candle's, as the engine's f32); serving holds the engine's weights,
    /// one chunk of images being evaluated ([`Self::images_at_once`]), a request's decoded
    /// inputs, and each job's block of patches (one patch row when a row is longer than the
    /// block), per the most vCPUs Lambda gives (6), all f32.
    pub fn loaded_bytes(&self, spec: &ModelSpec) -> u64 {
        const JOBS: u64 = 6;
        let params = self.params as u64;
        let patch = spec
            .layers
            .iter()
            .zip(std::iter::once(&spec.input_shape()).chain(&self.shapes))
            .filter_map(|(layer, input)| match layer {
                Layer::Conv2d { kernel, .. } => Some(input.channels() * kernel[0] * kernel[1]),
                _ => None,
            })
            .fold(limits::PATCH_BLOCK_VALUES, usize::max) as u64;
        let request = (spec.input_len() * limits::MAX_INSTANCES) as u64;
        let serving = params
            + (self.images_at_once(spec) * self.values_per_image(spec)) as u64
            + request.min(limits::MAX_BATCH_VALUES as u64)
            + JOBS * patch;
        4 * serving.max(3 * params)
    }
}

/// Works out the shapes, tensors and costs of `layers` over an `input` map, refusing a layer
/// that cannot follow the one before it and anything over [`limits`] (the labels and the
/// final shape are [`ModelSpec::plan`]'s to check).
pub fn plan_layers(input: Shape, layers: &[Layer]) -> Result<Plan, SpecError> {
    use limits::*;
    match input {
        Shape::Map { c, h, w }
            if (1..=MAX_CHANNELS).contains(&c)
                && (1..=MAX_INPUT_SIDE).contains(&h)
                && (1..=MAX_INPUT_SIDE).contains(&w) => {}
        s => {
            return Err(err(format!(
                "an input of {s} (channels × height × width): 1..={MAX_CHANNELS} channels and sides of 1..={MAX_INPUT_SIDE} are served"
            )))
        }
    }
    if layers.is_empty() || layers.len() > MAX_LAYERS {
        return Err(err(format!(
            "the model has {} layers; 1..={MAX_LAYERS} are accepted",
            layers.len()
        )));
    }
    let mut shape = input;
    let mut plan = Plan {
        shapes: Vec::with_capacity(layers.len()),
        tensors: Vec::new(),
        params: 0,
        macs: 0,
        peak_values: shape.len(),
        classes: 0,
    };
    let mut names = std::collections::HashSet::new();
    for (n, layer) in layers.iter().enumerate() {
        let at = |m: String| err(format!("layer {n} ({}): {m}", layer.kind()));
        let map = |s: Shape| match s {
            Shape::Map { c, h, w } => Ok((c, h, w)),
            Shape::Flat(_) => Err(at(format!(
                "needs a (channels, height, width) map, but its input is a vector of {s}"
            ))),
        };
        let mut tensor = |name: &str, suffix: &str, dims: Vec<usize>| -> Result<(), SpecError> {
            let full = format!("{name}.{suffix}");
            if !names.insert(full.clone()) {
                return Err(at(format!("tensor {full} is used by two layers")));
            }
            let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            plan.params = count
                .and_then(|c| plan.params.checked_add(c))
                .filter(|&p| p <= MAX_PARAMS)
                .ok_or_else(|| {
                    at(format!(
                        "the model has over {MAX_PARAMS} parameters, the most a function loads"
                    ))
                })?;
            plan.tensors.push((full, dims));
            Ok(())
        };
        shape = match layer {
            Layer::Conv2d {
                name,
                filters,
                kernel,
                stride,
                pad,
                bias,
            } => {
                let (c, h, w) = map(shape)?;
                check_window(*kernel, *stride, *pad).map_err(at)?;
                if *filters == 0 {
                    return Err(at("has no filters".into()));
                }
                let (oh, ow) = window_out(h, w, *kernel, *stride, *pad).map_err(at)?;
                tensor(name, "weight", vec![*filters, c, kernel[0], kernel[1]])?;
                if *bias {
                    tensor(name, "bias", vec![*filters])?;
                }
                let out = Shape::Map {
                    c: *filters,
                    h: oh,
                    w: ow,
                };
                // Each output pixel is one patch times the weights, at any strides.
                let macs = (out.len() as u64).saturating_mul((c * kernel[0] * kernel[1]) as u64);
                plan.macs = plan.macs.saturating_add(macs);
                out
            }
            Layer::Dense { name, units, bias } => {
                let n_in = match shape {
                    Shape::Flat(n) => n,
                    s => {
                        return Err(at(format!(
                            "needs a vector, but its input is a {s} map (add a flatten)"
                        )))
                    }
                };
                if *units == 0 {
                    return Err(at("has no units".into()));
                }
                tensor(name, "weight", vec![*units, n_in])?;
                if *bias {
                    tensor(name, "bias", vec![*units])?;
                }
                plan.macs = plan.macs.saturating_add((n_in as u64) * (*units as u64));
                Shape::Flat(*units)
            }
            Layer::Affine { name } => {
                tensor(name, "scale", vec![shape.channels()])?;
                tensor(name, "shift", vec![shape.channels()])?;
                shape
            }
            Layer::MaxPool2d {
                kernel,
                stride,
                pad,
            } => {
                let (c, h, w) = map(shape)?;
                check_window(*kernel, *stride, *pad).map_err(at)?;
                let (h, w) = window_out(h, w, *kernel, *stride, *pad).map_err(at)?;
                Shape::Map { c, h, w }
            }
            Layer::AvgPool2d { kernel, stride } => {
                let (c, h, w) = map(shape)?;
                check_window(*kernel, *stride, [0; 4]).map_err(at)?;
                let (h, w) = window_out(h, w, *kernel, *stride, [0; 4]).map_err(at)?;
                Shape::Map { c, h, w }
            }
            Layer::GlobalAvgPool2d => {
                let (c, _, _) = map(shape)?;
                Shape::Map { c, h: 1, w: 1 }
            }
            Layer::Flatten { .. } => {
                map(shape)?;
                Shape::Flat(shape.len())
            }
            Layer::Relu | Layer::Sigmoid | Layer::Tanh => shape,
            Layer::Softmax => match shape {
                Shape::Flat(_) => shape,
                s => {
                    return Err(at(format!(
                        "softmax runs over a vector; its input is a {s} map"
                    )))
                }
            },
        };
        if shape.len() > MAX_ACTIVATION_VALUES {
            return Err(err(format!(
                    "layer {n} ({}) makes {shape} = {} values per image; the most is {MAX_ACTIVATION_VALUES}",
                    layer.kind(),
                    shape.len()
                )));
        }
        plan.peak_values = plan.peak_values.max(shape.len());
        plan.shapes.push(shape);
    }
    if plan.macs > MAX_MACS {
        return Err(err(format!(
            "the model needs {} multiply-adds per image; the most is {MAX_MACS}",
            plan.macs
        )));
    }
    Ok(plan)
}

fn check_window(kernel: [usize; 2], stride: [usize; 2], pad: [usize; 4]) -> Result<(), String> {
    if kernel.iter().any(|&k| k == 0 || k > limits::MAX_KERNEL) {
        return Err(format!(
            "kernel {}×{}: sides are 1..={}",
            kernel[0],
            kernel[1],
            limits::MAX_KERNEL
        ));
    }
    if stride.iter().any(|&s| s == 0 || s > limits::MAX_KERNEL) {
        return Err(format!(
            "stride {}×{}: strides are 1..={}",
            stride[0],
            stride[1],
            limits::MAX_KERNEL
        ));
    }
    if pad[0].max(pad[2]) >= kernel[0] || pad[1].max(pad[3]) >= kernel[1] {
        return Err(format!(
            "padding {pad:?} is not smaller than the kernel {}×{}",
            kernel[0], kernel[1]
        ));
    }
    Ok(())
}

fn window_out(
    h: usize,
    w: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 4],
) -> Result<(usize, usize), String> {
    let (ph, pw) = (h + pad[0] + pad[2], w + pad[1] + pad[3]);
    if kernel[0] > ph || kernel[1] > pw {
        return Err(format!(
            "its {}×{} window does not fit its {h}×{w} input",
            kernel[0], kernel[1]
        ));
    }
    Ok((
        (ph - kernel[0]) / stride[0] + 1,
        (pw - kernel[1]) / stride[1] + 1,
    ))
}

/// The seed's network's sizes: the one home of the numbers its kernels
/// (`lambda_cnn::model`) are written for.
pub mod seed {
    /// The conv layer's filters.
    pub const FILTERS: usize = 32;
    /// fc1's units.
    pub const HIDDEN: usize = 128;
    /// The digits 0..=9.
    pub const CLASSES: usize = 10;
}

/// The seed's description, in the names of its weights file (`lambda_cnn::model::weights::TENSORS`):
/// what a model file without a description is.
pub fn seed_spec() -> ModelSpec {
    let same = |name: &str, units| Layer::Dense {
        name: name.into(),
        units,
        bias: true,
    };
    ModelSpec {
        format: FORMAT,
        source: "lambda-cnn (the seed's model)".into(),
        input: InputSpec {
            height: crate::data::IMAGE_SIDE,
            width: crate::data::IMAGE_SIDE,
            channels: 1,
            scale: vec![1.0 / 255.0],
            offset: vec![0.0],
            preprocess: Preprocess::Digit,
        },
        layers: vec![
            Layer::Conv2d {
                name: "conv".into(),
                filters: seed::FILTERS,
                kernel: [3, 3],
                stride: [1, 1],
                pad: [0; 4],
                bias: true,
            },
            Layer::Relu,
            Layer::MaxPool2d {
                kernel: [2, 2],
                stride: [2, 2],
                pad: [0; 4],
            },
            Layer::Flatten {
                channels_last: false,
            },
            same("fc1", seed::HIDDEN),
            Layer::Relu,
            same("fc2", seed::CLASSES),
            Layer::Softmax,
        ],
        labels: (0..seed::CLASSES).map(|d| d.to_string()).collect(),
        sample: None,
    }
}

/// Descriptions other modules' tests use, here and in the crates above. Always compiled (a few
/// lines): behind a feature that only the tests turn on, `cargo build --bins` (what `deploy
/// build` runs) and `make build` (tests too) would resolve the core differently and rebuild
/// everything above it, each undoing the other's binaries.
#[doc(hidden)]
pub mod tests_support {
    use super::*;

    /// A 4×4×1 input, one dense layer of 2 units: tensors d.weight [2, 16], d.bias [2].
    pub fn two_class_spec() -> ModelSpec {
        ModelSpec {
            format: FORMAT,
            source: "test".into(),
            input: InputSpec {
                height: 4,
                width: 4,
                channels: 1,
                scale: vec![1.0 / 255.0],
                offset: vec![0.0],
                preprocess: Preprocess::Resize,
            },
            layers: vec![
                Layer::Flatten {
                    channels_last: false,
                },
                Layer::Dense {
                    name: "d".into(),
                    units: 2,
                    bias: true,
                },
            ],
            labels: vec!["no".into(), "yes".into()],
            sample: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) use super::seed_spec;

    #[test]
    fn the_seed_plans_to_its_known_shapes_and_costs() {
        let plan = seed_spec().plan().unwrap();
        assert_eq!(
            plan.shapes[2],
            Shape::Map {
                c: 32,
                h: 13,
                w: 13
            }
        );
        assert_eq!(plan.shapes[3], Shape::Flat(5408));
        assert_eq!(plan.params, 32 * 9 + 32 + 5408 * 128 + 128 + 1280 + 10);
        assert_eq!(plan.macs, 26 * 26 * 32 * 9 + 5408 * 128 + 1280);
        assert_eq!(plan.classes, 10);
        assert_eq!(plan.tensors[2], ("fc1.weight".into(), vec![128, 5408]));
    }

    #[test]
    fn descriptions_that_lie_are_refused_with_the_layer() {
        let mut s = seed_spec();
        s.layers.remove(3); // no flatten before the dense layer
        let e = s.plan().unwrap_err().message;
        assert!(
            e.contains("layer 3 (dense)") && e.contains("add a flatten"),
            "{e}"
        );

        let mut s = seed_spec();
        s.labels.pop();
        assert!(s
            .plan()
            .unwrap_err()
            .message
            .contains("10 outputs but 9 labels"));

        let mut s = seed_spec();
        s.layers[0] = Layer::Conv2d {
            name: "conv".into(),
            filters: 4096,
            kernel: [15, 15],
            stride: [1, 1],
            pad: [7; 4],
            bias: false,
        };
        let e = s.plan().unwrap_err().message;
        assert!(e.contains("over 16777216 parameters"), "{e}");

        let mut s = seed_spec();
        (s.input.height, s.input.width) = (1024, 1024);
        s.input.preprocess = Preprocess::Resize;
        let e = s.plan().unwrap_err().message;
        assert!(e.contains("layer 0 (conv2d) makes 32×1022×1022"), "{e}");

        // The digit preprocessing only makes MNIST's 28×28: any other size would be served
        // pictures of the wrong length.
        let mut s = seed_spec();
        (s.input.height, s.input.width) = (32, 32);
        let e = s.plan().unwrap_err().message;
        assert!(
            e.contains("MNIST's 28×28×1") && e.contains("32×32×1"),
            "{e}"
        );

        // One output would always be "class 0" under a softmax.
        let mut s = seed_spec();
        let Layer::Dense { units, .. } = &mut s.layers[6] else {
            panic!("the seed's last dense layer")
        };
        *units = 1;
        s.labels.truncate(1);
        let e = s.plan().unwrap_err().message;
        assert!(e.contains("1 outputs; a classifier has 2..="), "{e}");

        let mut s = seed_spec();
        s.layers[2] = Layer::MaxPool2d {
            kernel: [64, 64],
            stride: [1, 1],
            pad: [0; 4],
        };
        assert!(s.plan().unwrap_err().message.contains("kernel 64×64"));

        let mut s = seed_spec();
        s.input.height = 1 << 40;
        assert!(s.plan().unwrap_err().message.contains("each side"));

        let mut s = seed_spec();
        s.layers.push(Layer::Dense {
            name: "fc1".into(),
            units: 3,
            bias: false,
        });
        assert!(s.plan().unwrap_err().message.contains("used by two layers"));
    }

    #[test]
    fn unequal_strides_are_charged_for_the_outputs_they_compute() {
        let mut s = seed_spec();
        (s.input.height, s.input.width) = (1024, 1024);
        s.input.preprocess = Preprocess::Resize;
        s.layers[0] = Layer::Conv2d {
            name: "conv".into(),
            filters: 32,
            kernel: [3, 3],
            stride: [14, 15],
            pad: [0; 4],
            bias: true,
        };
        let plan = s.plan().unwrap();
        assert_eq!(
            plan.shapes[0],
            Shape::Map {
                c: 32,
                h: 73,
                w: 69
            }
        );
        let dense = 32 * 36 * 34 * 128 + 128 * 10;
        assert_eq!(plan.macs, (32 * 73 * 69 * 9 + dense) as u64);
        let input = Shape::Map { c: 0, h: 28, w: 28 };
        assert!(plan_layers(input, &[Layer::Relu]).is_err());
    }

    #[test]
    fn a_loaded_model_is_charged_a_whole_chunk_of_images_and_its_weights() {
        let mut s = seed_spec();
        (s.input.height, s.input.width, s.input.channels) = (512, 512, 3);
        (s.input.scale, s.input.offset) = (vec![1.0; 3], vec![0.0; 3]);
        s.input.preprocess = Preprocess::Resize;
        s.layers[0] = Layer::Conv2d {
            name: "conv".into(),
            filters: 16,
            kernel: [3, 3],
            stride: [1, 1],
            pad: [0; 4],
            bias: true,
        };
        s.layers[2] = Layer::GlobalAvgPool2d;
        s.layers[4] = Layer::Dense {
            name: "fc1".into(),
            units: 128,
            bias: true,
        };
        let plan = s.plan().unwrap();
        let per = plan.values_per_image(&s);
        // The raw input, and two buffers of the widest map (the conv's output).
        assert_eq!(per, 512 * 512 * 3 + 2 * 510 * 510 * 16);
        let chunk = plan.images_at_once(&s);
        assert!(
            chunk > 1 && chunk * per <= limits::MAX_BATCH_VALUES,
            "{chunk}"
        );
        let bytes = plan.loaded_bytes(&s);
        // Counting one image (the old estimate) would say ~100 MB; a chunk holds ~500.
        assert!(bytes > 400 << 20, "{bytes}");
        assert!(bytes < 4 * 2 * limits::MAX_BATCH_VALUES as u64, "{bytes}");

        // The seed: small activations, 0.7 M parameters held three times while loading.
        let s = seed_spec();
        let plan = s.plan().unwrap();
        assert!(plan.loaded_bytes(&s) >= 12 * plan.params as u64);
        // A conv whose one patch row (256 channels × 15 × 15) is longer than the block:
        // each job holds that row.
        let mut wide = seed_spec();
        let conv = |name: &str, filters, k| Layer::Conv2d {
            name: name.into(),
            filters,
            kernel: [k, k],
            stride: [1, 1],
            pad: [0; 4],
            bias: false,
        };
        wide.layers = vec![
            conv("a", 256, 1),
            conv("b", 2, 15),
            Layer::Flatten {
                channels_last: false,
            },
            Layer::Dense {
                name: "d".into(),
                units: 2,
                bias: false,
            },
        ];
        wide.labels.truncate(2);
        let plan = wide.plan().unwrap();
        let row = 256 * 15 * 15;
        assert!(plan.loaded_bytes(&wide) >= 4 * 6 * row as u64);
    }

    #[test]
    fn the_description_round_trips_through_json() {
        let s = seed_spec();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""op":"conv2d""#), "{json}");
        assert_eq!(serde_json::from_str::<ModelSpec>(&json).unwrap(), s);
        assert!(serde_json::from_str::<ModelSpec>(&json.replace("\"relu\"", "\"gelu\"")).is_err());
    }
}
