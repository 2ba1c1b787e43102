//! `lambda-cnn import`: a CNN trained elsewhere becomes a lambda-cnn model file
//! ([`crate::net::file`]). Each reader turns its format's layers into a [`chain::Chain`];
//! what the file cannot say (how raw pixels are scaled, the class labels) comes from
//! [`Options`]. Anything outside the supported set is refused with the layer or op, where it
//! is in the file, and what is supported — never approximated.
//!
//! Formats, recognised by their bytes: Keras 3 `.keras` (a zip of config.json and
//! model.weights.h5), Keras 2 / tf.keras `.h5`, ONNX, and PyTorch state dicts (`.pt` zip
//! pickles or `.safetensors`) with a layer description (`--layers`).

pub mod chain;
mod keras;
mod onnx;
mod torch;

use crate::model::ModelError;
use crate::net::spec::{self, ModelSpec, Preprocess};
use candle_core::{Device, Tensor};
use chain::Chain;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The largest file read: room for a model at the parameter limit with its optimizer's state.
pub const MAX_IMPORT_BYTES: u64 = 320 << 20;

/// Why a file could not be imported.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // documented by their messages
pub enum ImportError {
    #[error("cannot read {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("the file is damaged or inconsistent: {0}")]
    Malformed(String),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// How raw pixel values (0..=255) become what the model was trained on: what a model file
/// cannot say.
#[derive(Debug, Clone, PartialEq)]
pub enum InputScale {
    /// x / 255 (the seed's, and `ToTensor()`'s).
    Unit,
    /// The values as they are: the model scales them itself (a Keras `Rescaling` layer).
    None,
    /// (x / 255 − mean) / std per channel (torchvision's `Normalize`).
    Normalize {
        /// Per channel, or one for all.
        mean: Vec<f32>,
        /// Per channel, or one for all.
        std: Vec<f32>,
    },
}

/// What the caller says about the model.
#[derive(Debug, Clone)]
pub struct Options {
    /// How raw values are scaled before the model's first layer.
    pub scale: InputScale,
    /// One per class; "0", "1", … when absent.
    pub labels: Option<Vec<String>>,
    /// What an uploaded image goes through; digit for 28×28 grey models, resize otherwise.
    pub preprocess: Option<Preprocess>,
    /// A state dict's layer description (JSON).
    pub layers: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            scale: InputScale::Unit,
            labels: None,
            preprocess: None,
            layers: None,
        }
    }
}

/// An imported model: its description and tensors, ready for [`crate::net::file::save`].
pub struct Imported {
    /// The description.
    pub spec: ModelSpec,
    /// Its tensors.
    pub tensors: HashMap<String, Tensor>,
}

/// Imports the model at `path`.
pub fn import(path: &Path, options: &Options) -> Result<Imported, ImportError> {
    let bytes = read_bounded(path, MAX_IMPORT_BYTES)?;
    import_bytes(bytes, Some(path), options)
}

/// Imports a model from its bytes; `path`, where they came from, names it in messages (and
/// a `.pt` file is read again from it, by candle's pickle reader).
pub fn import_bytes(
    bytes: Vec<u8>,
    path: Option<&Path>,
    options: &Options,
) -> Result<Imported, ImportError> {
    let shown = path.map_or("the model".into(), |p| p.display().to_string());
    let (chain, source) = if bytes.starts_with(b"\x89HDF\r\n\x1a\n") {
        keras::from_h5(bytes, options)?
    } else if bytes.starts_with(b"PK\x03\x04") {
        let archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.as_slice()))
            .map_err(|e| ImportError::Malformed(format!("a zip file that cannot be read: {e}")))?;
        if archive.index_for_name("config.json").is_some() {
            keras::from_keras_zip(&bytes, options)?
        } else if archive
            .file_names()
            .any(|n| n.is_ok_and(|n| n.ends_with("data.pkl")))
        {
            let path = path.ok_or_else(|| {
                ImportError::Usage("a PyTorch .pt file is read from a path".into())
            })?;
            torch::from_pickle(path, &bytes, options)?
        } else {
            return Err(ImportError::Unsupported(
                "a zip file that is neither a Keras 3 .keras file (config.json) nor a PyTorch .pt file (data.pkl)".into(),
            ));
        }
    } else if is_safetensors(&bytes) {
        torch::from_safetensors(&bytes, options)?
    } else if path.is_some_and(|p| p.extension().is_some_and(|e| e == "onnx"))
        || onnx::looks_like_onnx(&bytes)
    {
        onnx::from_onnx(&bytes, options)?
    } else {
        return Err(ImportError::Unsupported(format!(
            "{shown} is not a format lambda-cnn imports: Keras .keras or .h5, ONNX .onnx, or a PyTorch state dict (.pt, .safetensors) with --layers"
        )));
    };
    finish(chain, source, options)
}

fn is_safetensors(bytes: &[u8]) -> bool {
    bytes.len() > 9
        && u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) < bytes.len() as u64
        && bytes[8] == b'{'
}

/// The input scaling the options give, for `channels` channels.
fn input_scaling(options: &Options, channels: usize) -> Result<(Vec<f32>, Vec<f32>), ImportError> {
    let per = |v: &[f32], what: &str| -> Result<Vec<f32>, ImportError> {
        match v.len() {
            1 => Ok(vec![v[0]; channels]),
            n if n == channels => Ok(v.to_vec()),
            n => Err(ImportError::Usage(format!(
                "--{what} has {n} values; the model's input has {channels} channels (give one per channel, or one for all)"
            ))),
        }
    };
    Ok(match &options.scale {
        InputScale::Unit => (vec![1.0 / 255.0; channels], vec![0.0; channels]),
        InputScale::None => (vec![1.0; channels], vec![0.0; channels]),
        InputScale::Normalize { mean, std } => {
            let (mean, std) = (per(mean, "mean")?, per(std, "std")?);
            if std.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
                return Err(ImportError::Usage("--std values must be positive".into()));
            }
            let scale = std.iter().map(|s| 1.0 / (255.0 * s)).collect();
            let offset = mean.iter().zip(&std).map(|(m, s)| -m / s).collect();
            (scale, offset)
        }
    })
}

fn finish(mut chain: Chain, source: String, options: &Options) -> Result<Imported, ImportError> {
    let (c, h, w) = chain.input_dims();
    chain.sigmoid_output_as_two_classes()?;
    let classes = match chain.shape() {
        spec::Shape::Flat(1) => {
            return Err(ImportError::Unsupported(
                "the model has one output; lambda-cnn serves classifiers of 2 or more classes (a binary classifier ending in one unit and a sigmoid is read as two classes; one ending in a logit needs its sigmoid, or two units and a softmax)".into(),
            ))
        }
        spec::Shape::Flat(n) => n,
        s => {
            return Err(ImportError::Unsupported(format!(
                "the model ends with a {s} map; lambda-cnn serves models that end with a vector of class scores"
            )))
        }
    };
    let labels = match &options.labels {
        Some(l) if l.len() != classes => {
            return Err(ImportError::Usage(format!(
                "--labels names {} classes; the model has {classes} outputs",
                l.len()
            )))
        }
        Some(l) => l.clone(),
        None => (0..classes).map(|i| i.to_string()).collect(),
    };
    let preprocess = options.preprocess.unwrap_or(
        if (c, h, w) == (1, crate::data::IMAGE_SIDE, crate::data::IMAGE_SIDE) {
            Preprocess::Digit
        } else {
            Preprocess::Resize
        },
    );
    let Chain {
        layers,
        tensors,
        scale,
        offset,
        ..
    } = chain;
    let spec = ModelSpec {
        format: spec::FORMAT,
        source,
        input: spec::InputSpec {
            height: h,
            width: w,
            channels: c,
            scale,
            offset,
            preprocess,
        },
        layers,
        labels,
        sample: None,
    };
    spec.plan()
        .map_err(|e| ImportError::Unsupported(e.message))?;
    let mut map = HashMap::with_capacity(tensors.len());
    for (name, a) in tensors {
        map.insert(name, to_tensor(a)?);
    }
    // Loads it as a function would: every tensor present, in shape, finite.
    let network = crate::net::Network::new(spec.clone(), &map)?;
    let spec = ModelSpec {
        sample: sample(&network)?,
        ..spec
    };
    Ok(Imported { spec, tensors: map })
}

/// Inputs larger than this get no stored sample: its JSON must fit a Lambda request (6 MB).
pub const MAX_SAMPLE_VALUES: usize = 1 << 18;

/// The smoke test's case: of a few fixed patterns, the one the model answers with the widest
/// margin between its first and second class, so that any CPU (x86_64, arm64, other vector
/// widths) gives the same class.
fn sample(network: &crate::net::Network) -> Result<Option<crate::net::Sample>, ImportError> {
    let spec = network.spec();
    let (h, w, c) = (spec.input.height, spec.input.width, spec.input.channels);
    let len = h * w * c;
    if len > MAX_SAMPLE_VALUES {
        return Ok(None);
    }
    let mut best: Option<(f32, crate::net::Sample)> = None;
    for k in 0..8u32 {
        // Smooth stripes and blobs at a few frequencies and phases, per channel.
        let pixels: Vec<u8> = (0..len)
            .map(|i| {
                let (y, x, ch) = ((i / c) / w, (i / c) % w, i % c);
                let f = 1.0 + k as f32;
                let v = ((x as f32 * f / w as f32 + ch as f32 * 0.3).sin()
                    * (y as f32 * (9.0 - f) / h as f32 + k as f32).cos())
                    * 127.5
                    + 127.5;
                v.clamp(0.0, 255.0) as u8
            })
            .collect();
        let raw: Vec<f32> = pixels.iter().map(|&v| f32::from(v)).collect();
        let p = network.probabilities(&raw)?.pop().unwrap_or_default();
        let class = crate::model::argmax(&p);
        let second = p
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != class)
            .map(|(_, &v)| v)
            .fold(0.0f32, f32::max);
        let margin = p.get(class).copied().unwrap_or(0.0) - second;
        if best.as_ref().is_none_or(|(m, _)| margin > *m) {
            best = Some((
                margin,
                crate::net::Sample {
                    pixels,
                    class,
                    probabilities: p,
                },
            ));
        }
    }
    Ok(best.map(|(_, s)| s))
}

/// Reads at most `limit` bytes of `path`, refusing a larger file.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ImportError> {
    use std::io::Read;
    let io = |cause| ImportError::Io {
        path: path.to_owned(),
        cause,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(ImportError::Unsupported(format!(
            "{} is over {} MiB, more than a model a function can load",
            path.display(),
            limit >> 20
        )));
    }
    Ok(bytes)
}

fn to_tensor(a: chain::Array) -> Result<Tensor, ImportError> {
    Ok(Tensor::from_vec(a.data, a.dims, &Device::Cpu).map_err(ModelError::from)?)
}

/// The list of what is supported, for messages.
pub const SUPPORTED_LAYERS: &str = "Conv2d (no dilation, no groups), MaxPool2d, AvgPool2d (no padding), global average pooling, BatchNorm, Dropout, Flatten, Dense/Linear, ReLU, sigmoid, tanh, softmax, linear, Keras Rescaling";
