//! PyTorch state dicts: tensors by name (`.pt` pickles in a zip, or `.safetensors`), and a
//! layer description that says what the `nn.Module` does with them, since a state dict holds
//! no code. The description mirrors an `nn.Sequential`:
//!
//! ```json
//! {"input": {"height": 28, "width": 28, "channels": 1},
//!  "layers": [{"conv2d": {"from": "0", "stride": 1, "padding": 1}}, {"batch_norm": {"from": "1"}},
//!             "relu", {"max_pool2d": {"kernel": 2}}, "dropout", "flatten",
//!             {"linear": {"from": "5"}}, "softmax"]}
//! ```
//!
//! `from` is the module's prefix in the state dict (`features.0` for `features.0.weight`).

use super::chain::{Array, Chain};
use super::{input_scaling, ImportError, Options};
use crate::net::spec::Layer;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// The uncompressed bytes a `.pt` zip may hold.
const MAX_UNPACKED: u64 = 2 * super::MAX_IMPORT_BYTES;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Description {
    input: InputSize,
    layers: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSize {
    height: usize,
    width: usize,
    channels: usize,
}

/// One side for both, or [height, width].
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
enum Pair {
    One(usize),
    Two([usize; 2]),
}

impl Pair {
    fn get(self) -> [usize; 2] {
        match self {
            Pair::One(n) => [n, n],
            Pair::Two(p) => p,
        }
    }
}

fn one() -> Pair {
    Pair::One(1)
}
fn zero() -> Pair {
    Pair::One(0)
}
fn bn_eps() -> f32 {
    1e-5
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Step {
    Conv2d {
        from: String,
        #[serde(default = "one")]
        stride: Pair,
        #[serde(default = "zero")]
        padding: Pair,
    },
    Linear {
        from: String,
    },
    BatchNorm {
        from: String,
        #[serde(default = "bn_eps")]
        eps: f32,
    },
    MaxPool2d {
        kernel: Pair,
        stride: Option<Pair>,
        #[serde(default = "zero")]
        padding: Pair,
    },
    AvgPool2d {
        kernel: Pair,
        stride: Option<Pair>,
    },
    GlobalAvgPool2d,
    Flatten,
    Relu,
    Sigmoid,
    Tanh,
    Softmax,
    Dropout,
    Identity,
}

/// A `.pt` file (`torch.save(model.state_dict(), path)`).
pub fn from_pickle(
    path: &Path,
    bytes: &[u8],
    options: &Options,
) -> Result<(Chain, String), ImportError> {
    // candle's reader inflates what the zip declares: bound that first.
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| ImportError::Malformed(format!("a .pt zip that cannot be read: {e}")))?;
    let mut total = 0u64;
    for i in 0..archive.len() {
        let f = archive.by_index(i).map_err(|e| {
            ImportError::Malformed(format!("a .pt zip entry that cannot be read: {e}"))
        })?;
        total = total.saturating_add(f.size());
    }
    if total > MAX_UNPACKED {
        return Err(ImportError::Unsupported(format!(
            "the .pt file unpacks to {total} bytes; the most read is {MAX_UNPACKED}"
        )));
    }
    // candle allocates what a tensor's header declares before reading it: check every
    // declared size against its storage and the parameter limit first.
    let pth = candle_core::pickle::PthTensors::new(path, None).map_err(|e| {
        ImportError::Malformed(format!(
            "a .pt file candle cannot read as a state dict: {e}"
        ))
    })?;
    let mut total = 0usize;
    for (name, info) in pth.tensor_infos() {
        let n = info
            .layout
            .dims()
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_add(info.layout.start_offset()));
        total = total.saturating_add(n.unwrap_or(usize::MAX));
        if n.is_none_or(|n| n > info.storage_size)
            || total > 4 * crate::net::spec::limits::MAX_PARAMS
        {
            return Err(ImportError::Malformed(format!(
                "tensor {name} declares shape {:?}, more than its storage of {} values or than a model may hold",
                info.layout.dims(),
                info.storage_size
            )));
        }
    }
    let mut map = HashMap::new();
    for name in pth.tensor_infos().keys() {
        let t = pth
            .get(name)
            .map_err(|e| ImportError::Malformed(format!("tensor {name}: {e}")))?
            .ok_or_else(|| ImportError::Malformed(format!("tensor {name} vanished")))?;
        map.insert(name.clone(), t);
    }
    build(map, "pytorch state dict (.pt)", options)
}

/// A `.safetensors` state dict (`safetensors.torch.save_file(model.state_dict(), path)`).
pub fn from_safetensors(bytes: &[u8], options: &Options) -> Result<(Chain, String), ImportError> {
    use candle_core::safetensors::Load;
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| ImportError::Malformed(format!("not a safetensors file ({e})")))?;
    let mut map = HashMap::new();
    for (name, view) in st.tensors() {
        map.insert(
            name,
            view.load(&candle_core::Device::Cpu)
                .map_err(crate::model::ModelError::from)?,
        );
    }
    build(map, "pytorch state dict (.safetensors)", options)
}

fn build(
    tensors: HashMap<String, candle_core::Tensor>,
    source: &str,
    options: &Options,
) -> Result<(Chain, String), ImportError> {
    let Some(desc_path) = &options.layers else {
        return Err(ImportError::Usage(
            "a state dict holds weights but not the layers: describe them with --layers FILE.json (see `lambda-cnn import --help`)".into(),
        ));
    };
    let text = super::read_bounded(desc_path, 1 << 20)?;
    let desc: Description = serde_json::from_slice(&text).map_err(|e| {
        ImportError::Usage(format!(
            "{}: not a layer description ({e}); layers are conv2d, linear, batch_norm, max_pool2d, avg_pool2d, global_avg_pool2d, flatten, relu, sigmoid, tanh, softmax, dropout, identity",
            desc_path.display()
        ))
    })?;
    let InputSize {
        height,
        width,
        channels,
    } = desc.input;
    let (scale, offset) = input_scaling(options, channels)?;
    let mut chain = Chain::new(channels, height, width, scale, offset)?;
    let mut used = std::collections::HashSet::new();
    let mut get = |name: String| -> Result<Array, ImportError> {
        let t = tensors.get(&name).ok_or_else(|| {
            let mut have: Vec<_> = tensors.keys().cloned().collect();
            have.sort();
            ImportError::Usage(format!(
                "the state dict has no tensor {name} (it has: {})",
                have.join(", ")
            ))
        })?;
        used.insert(name);
        let t = t
            .to_dtype(candle_core::DType::F32)
            .and_then(|t| {
                t.flatten_all()
                    .and_then(|f| f.to_vec1::<f32>())
                    .map(|v| (t.dims().to_vec(), v))
            })
            .map_err(crate::model::ModelError::from)?;
        Array::new(t.0, t.1)
    };
    for (i, step) in desc.layers.into_iter().enumerate() {
        let at = |e: ImportError| match e {
            ImportError::Unsupported(m) => ImportError::Unsupported(format!("layers[{i}]: {m}")),
            ImportError::Malformed(m) => ImportError::Malformed(format!("layers[{i}]: {m}")),
            other => other,
        };
        let has = |name: &str| tensors.contains_key(name);
        match step {
            Step::Conv2d {
                from,
                stride,
                padding,
            } => {
                let w = get(format!("{from}.weight"))?;
                let bname = format!("{from}.bias");
                let b = if has(&bname) {
                    Some(get(bname)?.data)
                } else {
                    None
                };
                let [ph, pw] = padding.get();
                chain
                    .conv(w, b, stride.get(), [ph, pw, ph, pw])
                    .map_err(at)?;
            }
            Step::Linear { from } => {
                let w = get(format!("{from}.weight"))?;
                let bname = format!("{from}.bias");
                let b = if has(&bname) {
                    Some(get(bname)?.data)
                } else {
                    None
                };
                chain.dense(w, b).map_err(at)?;
            }
            Step::BatchNorm { from, eps } => {
                let g = get(format!("{from}.weight"))?.data;
                let b = get(format!("{from}.bias"))?.data;
                let m = get(format!("{from}.running_mean"))?.data;
                let v = get(format!("{from}.running_var"))?.data;
                let tracked = format!("{from}.num_batches_tracked");
                if has(&tracked) {
                    get(tracked)?;
                }
                chain.batch_norm(&g, &b, &m, &v, eps).map_err(at)?;
            }
            Step::MaxPool2d {
                kernel,
                stride,
                padding,
            } => {
                let [ph, pw] = padding.get();
                chain
                    .op(Layer::MaxPool2d {
                        kernel: kernel.get(),
                        stride: stride.unwrap_or(kernel).get(),
                        pad: [ph, pw, ph, pw],
                    })
                    .map_err(at)?
            }
            Step::AvgPool2d { kernel, stride } => chain
                .op(Layer::AvgPool2d {
                    kernel: kernel.get(),
                    stride: stride.unwrap_or(kernel).get(),
                })
                .map_err(at)?,
            Step::GlobalAvgPool2d => chain.op(Layer::GlobalAvgPool2d).map_err(at)?,
            Step::Flatten => chain
                .op(Layer::Flatten {
                    channels_last: false,
                })
                .map_err(at)?,
            Step::Relu => chain.op(Layer::Relu).map_err(at)?,
            Step::Sigmoid => chain.op(Layer::Sigmoid).map_err(at)?,
            Step::Tanh => chain.op(Layer::Tanh).map_err(at)?,
            Step::Softmax => chain.op(Layer::Softmax).map_err(at)?,
            Step::Dropout | Step::Identity => {}
        }
    }
    let mut unused: Vec<_> = tensors
        .keys()
        .filter(|k| !used.contains(*k))
        .cloned()
        .collect();
    if !unused.is_empty() {
        unused.sort();
        return Err(ImportError::Usage(format!(
            "the layer description does not use these tensors of the state dict: {} (a layer is missing from --layers?)",
            unused.join(", ")
        )));
    }
    Ok((chain, source.to_owned()))
}
