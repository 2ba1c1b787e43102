//! Keras models: Keras 3's `.keras` (a zip: `config.json`, `model.weights.h5`) and the HDF5
//! `.h5` of Keras 2 / tf.keras (the config in the `model_config` attribute, the weights under
//! `model_weights/LAYER/`, listed by its `weight_names`). Sequential models, and functional
//! ones whose layers form a chain. Keras is channels-last: kernels are transposed to
//! PyTorch's layout, and a flatten's order is kept by the chain.

use super::chain::{Array, Chain};
use super::{input_scaling, ImportError, Options, SUPPORTED_LAYERS};
use crate::net::spec::{limits, Layer, Shape};
use serde_json::Value;
use std::io::Read;

/// Where a layer's weights are, in the order Keras lists them. `layer` is the layer's name,
/// `path` Keras 3's name for it in the weights file.
trait Weights {
    fn weights(&self, layer: &str, path: &str, count: usize) -> Result<Vec<Array>, ImportError>;
}

struct Keras3 {
    file: hdf5_pure::File,
}

impl Weights for Keras3 {
    fn weights(&self, _: &str, path: &str, count: usize) -> Result<Vec<Array>, ImportError> {
        (0..count)
            .map(|i| read(&self.file, &format!("layers/{path}/vars/{i}")))
            .collect()
    }
}

/// Keras's `naming.to_snake_case` of a class name: `BatchNormalization` → `batch_normalization`,
/// `ReLU` → `re_lu`, `Conv2D` → `conv2d`. Keras 3 files a model's layers under these names,
/// numbered per class in order (`conv2d`, `conv2d_1`, …), not under the layers' own names.
fn snake_case(name: &str) -> String {
    let c: Vec<char> = name
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let mut a = String::new();
    for (i, &ch) in c.iter().enumerate() {
        if i > 0 && ch.is_ascii_uppercase() && c.get(i + 1).is_some_and(|n| n.is_ascii_lowercase())
        {
            a.push('_');
        }
        a.push(ch);
    }
    let c: Vec<char> = a.chars().collect();
    let mut b = String::new();
    for (i, &ch) in c.iter().enumerate() {
        if i > 0 && ch.is_ascii_uppercase() && c[i - 1].is_ascii_lowercase() {
            b.push('_');
        }
        b.push(ch);
    }
    b.to_lowercase()
}

struct Keras2 {
    file: hdf5_pure::File,
}

impl Weights for Keras2 {
    fn weights(&self, layer: &str, _: &str, count: usize) -> Result<Vec<Array>, ImportError> {
        let group = self
            .file
            .group(&format!("model_weights/{layer}"))
            .map_err(|e| malformed(format!("no weights for layer {layer}: {e}")))?;
        let attrs = group
            .attrs()
            .map_err(|e| malformed(format!("layer {layer}'s weight list: {e}")))?;
        let names = strings(attrs.get("weight_names"))
            .ok_or_else(|| malformed(format!("layer {layer} lists no weight_names")))?;
        if names.len() != count {
            return Err(malformed(format!(
                "layer {layer} has {} weights; its config needs {count}",
                names.len()
            )));
        }
        names
            .iter()
            .map(|n| read(&self.file, &format!("model_weights/{layer}/{n}")))
            .collect()
    }
}

fn malformed(m: String) -> ImportError {
    ImportError::Malformed(m)
}

fn strings(v: Option<&hdf5_pure::AttrValue>) -> Option<Vec<String>> {
    use hdf5_pure::AttrValue as A;
    match v? {
        A::String(s) | A::AsciiString(s) | A::VarLenString(s) | A::VarLenAsciiString(s) => {
            Some(vec![s.clone()])
        }
        A::StringSized { value, .. } | A::AsciiStringSized { value, .. } => {
            Some(vec![value.clone()])
        }
        A::StringArray(v)
        | A::AsciiStringArray(v)
        | A::VarLenStringArray(v)
        | A::VarLenAsciiStringArray(v)
        | A::VarLenAsciiCharArray(v) => Some(v.clone()),
        A::StringArraySized { values, .. } | A::AsciiStringArraySized { values, .. } => {
            Some(values.clone())
        }
        // An empty `weight_names` is stored as an empty float array.
        A::F64Array(v) if v.is_empty() => Some(vec![]),
        A::F32Array(v) if v.is_empty() => Some(vec![]),
        _ => None,
    }
}

/// A dataset as f32, refusing one that declares more values than a model may hold before
/// reading it.
fn read(file: &hdf5_pure::File, path: &str) -> Result<Array, ImportError> {
    let ds = file
        .dataset(path)
        .map_err(|e| malformed(format!("no dataset {path}: {e}")))?;
    let dims: Vec<usize> = ds
        .shape()
        .map_err(|e| malformed(format!("{path}: {e}")))?
        .into_iter()
        .map(|d| usize::try_from(d).unwrap_or(usize::MAX))
        .collect();
    let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if n.is_none_or(|n| n > limits::MAX_PARAMS) {
        return Err(ImportError::Unsupported(format!(
            "{path} declares shape {dims:?}, over the {} parameters a model may have",
            limits::MAX_PARAMS
        )));
    }
    let data = ds
        .read_f32()
        .map_err(|e| malformed(format!("{path} cannot be read as float32: {e}")))?;
    Array::new(dims, data)
}

/// A Keras 3 `.keras` file.
pub fn from_keras_zip(bytes: &[u8], options: &Options) -> Result<(Chain, String), ImportError> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| malformed(format!("a .keras zip that cannot be read: {e}")))?;
    let mut entry = |name: &str, limit: u64| -> Result<Vec<u8>, ImportError> {
        let f = zip
            .by_name(name)
            .map_err(|e| malformed(format!("the .keras file has no {name}: {e}")))?;
        if f.size() > limit {
            return Err(ImportError::Unsupported(format!(
                "{name} unpacks to {} bytes; the most read is {limit}",
                f.size()
            )));
        }
        let mut out = Vec::with_capacity(f.size() as usize);
        f.take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| malformed(format!("{name} cannot be unpacked: {e}")))?;
        Ok(out)
    };
    let config: Value = serde_json::from_slice(&entry("config.json", 16 << 20)?)
        .map_err(|e| malformed(format!("config.json is not JSON: {e}")))?;
    let weights = entry("model.weights.h5", super::MAX_IMPORT_BYTES)?;
    let version = entry("metadata.json", 1 << 20)
        .ok()
        .and_then(|m| serde_json::from_slice::<Value>(&m).ok())
        .and_then(|m| m["keras_version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "3".into());
    let file = hdf5_pure::File::from_bytes(weights)
        .map_err(|e| malformed(format!("model.weights.h5 is not HDF5: {e}")))?;
    let chain = build(&config, &Keras3 { file }, options)?;
    Ok((chain, format!("keras {version} (.keras)")))
}

/// A Keras 2 / tf.keras `.h5` file.
pub fn from_h5(bytes: Vec<u8>, options: &Options) -> Result<(Chain, String), ImportError> {
    let file = hdf5_pure::File::from_bytes(bytes)
        .map_err(|e| malformed(format!("not an HDF5 file Keras wrote: {e}")))?;
    let attrs = file
        .root()
        .attrs()
        .map_err(|e| malformed(format!("the file's attributes: {e}")))?;
    let config = strings(attrs.get("model_config"))
        .and_then(|v| v.into_iter().next())
        .ok_or_else(|| {
            ImportError::Unsupported(
                "an HDF5 file without a model_config: a weights-only file (save the whole model with model.save(\"model.h5\") or \"model.keras\")".into(),
            )
        })?;
    let config: Value = serde_json::from_str(&config)
        .map_err(|e| malformed(format!("model_config is not JSON: {e}")))?;
    let version = strings(attrs.get("keras_version"))
        .and_then(|v| v.into_iter().next())
        .unwrap_or_else(|| "2".into());
    let chain = build(&config, &Keras2 { file }, options)?;
    Ok((chain, format!("keras {version} (.h5)")))
}

fn usize_list(v: &Value) -> Option<Vec<usize>> {
    match v {
        Value::Array(a) => a.iter().map(|x| x.as_u64().map(|n| n as usize)).collect(),
        Value::Number(n) => n.as_u64().map(|n| vec![n as usize]),
        _ => None,
    }
}

fn pair(v: &Value, what: &str, layer: &str) -> Result<[usize; 2], ImportError> {
    match usize_list(v).as_deref() {
        Some([a]) => Ok([*a, *a]),
        Some([a, b]) => Ok([*a, *b]),
        _ => Err(malformed(format!("layer {layer}: {what} is {v}"))),
    }
}

/// The (height, width, channels) the model reads.
fn input_shape(model: &Value, layers: &[Value]) -> Option<[usize; 3]> {
    let from = |v: &Value| -> Option<[usize; 3]> {
        let a = v.as_array()?;
        match a.as_slice() {
            [_, h, w, c] => Some([
                h.as_u64()? as usize,
                w.as_u64()? as usize,
                c.as_u64()? as usize,
            ]),
            _ => None,
        }
    };
    let first = layers.first()?;
    let c = &first["config"];
    from(&c["batch_shape"])
        .or_else(|| from(&c["batch_input_shape"]))
        .or_else(|| from(&model["build_config"]["input_shape"]))
        .or_else(|| from(&first["build_config"]["input_shape"]))
}

fn activation(chain: &mut Chain, name: &str, layer: &str) -> Result<(), ImportError> {
    match name {
        "linear" => Ok(()),
        "relu" => chain.op(Layer::Relu),
        "sigmoid" => chain.op(Layer::Sigmoid),
        "tanh" => chain.op(Layer::Tanh),
        "softmax" => chain.op(Layer::Softmax),
        other => Err(ImportError::Unsupported(format!(
            "layer {layer}: activation {other:?} (supported: linear, relu, sigmoid, tanh, softmax)"
        ))),
    }
}

/// TensorFlow's "same" padding: [before, after] for one side.
fn same_pad(size: usize, kernel: usize, stride: usize) -> [usize; 2] {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(size);
    [total / 2, total - total / 2]
}

fn build(config: &Value, weights: &dyn Weights, options: &Options) -> Result<Chain, ImportError> {
    let class = config["class_name"].as_str().unwrap_or("");
    if class != "Sequential" && class != "Functional" && class != "Model" {
        return Err(ImportError::Unsupported(format!(
            "a Keras {class:?} model: Sequential models and functional ones whose layers form a chain are imported"
        )));
    }
    let model = &config["config"];
    let layers = model["layers"]
        .as_array()
        .ok_or_else(|| malformed("the config lists no layers".into()))?;
    let [h, w, c] = input_shape(model, layers).ok_or_else(|| {
        ImportError::Unsupported(
            "the model's input shape is not in its config (build the model with an Input((height, width, channels)) first)".into(),
        )
    })?;
    if c == 0
        || c > limits::MAX_CHANNELS
        || h == 0
        || w == 0
        || h > limits::MAX_INPUT_SIDE
        || w > limits::MAX_INPUT_SIDE
    {
        return Err(ImportError::Unsupported(format!(
            "an input of {h}×{w}×{c}: sides up to {} and 1..={} channels are served",
            limits::MAX_INPUT_SIDE,
            limits::MAX_CHANNELS
        )));
    }
    let (scale, offset) = input_scaling(options, c)?;
    let mut chain = Chain::new(c, h, w, scale, offset)?;
    let mut per_class: std::collections::HashMap<String, usize> = Default::default();
    let mut previous: Option<String> = None;
    if class != "Sequential" {
        let last = layers.last().and_then(|l| l["config"]["name"].as_str());
        let outputs = inbound_layers(&model["output_layers"]);
        if outputs.len() != 1 || Some(outputs[0].as_str()) != last {
            return Err(ImportError::Unsupported(format!(
                "a functional model whose outputs are {outputs:?}: one output, from its last layer, is imported"
            )));
        }
    }
    for (i, l) in layers.iter().enumerate() {
        let kind = l["class_name"].as_str().unwrap_or("?");
        let cfg = &l["config"];
        let name = cfg["name"].as_str().unwrap_or("?").to_owned();
        let path = if kind == "InputLayer" {
            String::new()
        } else {
            let base = snake_case(kind);
            let n = per_class.entry(base.clone()).or_default();
            *n += 1;
            if *n == 1 {
                base
            } else {
                format!("{base}_{}", *n - 1)
            }
        };
        let at = |e: ImportError| match e {
            ImportError::Unsupported(m) => {
                ImportError::Unsupported(format!("layer {i} ({kind} {name:?}): {m}"))
            }
            ImportError::Malformed(m) => {
                ImportError::Malformed(format!("layer {i} ({kind} {name:?}): {m}"))
            }
            other => other,
        };
        if class != "Sequential" && kind != "InputLayer" {
            let from = inbound_layers(&l["inbound_nodes"]);
            if from.len() != 1 || Some(&from[0]) != previous.as_ref() {
                return Err(ImportError::Unsupported(format!(
                    "layer {i} ({kind} {name:?}) reads {from:?}, not only the layer before it ({}): only chains of layers are imported",
                    previous.as_deref().unwrap_or("none")
                )));
            }
        }
        previous = Some(name.clone());
        let inbound = l["inbound_nodes"].as_array().map(|n| n.len()).unwrap_or(0);
        if inbound > 1 {
            return Err(ImportError::Unsupported(format!(
                "layer {i} ({kind} {name:?}) is called {inbound} times: shared layers are not imported"
            )));
        }
        if cfg["data_format"]
            .as_str()
            .is_some_and(|f| f != "channels_last")
        {
            return Err(ImportError::Unsupported(format!(
                "layer {i} ({kind} {name:?}): data_format {} (channels_last is imported)",
                cfg["data_format"]
            )));
        }
        let use_bias = cfg["use_bias"].as_bool().unwrap_or(true);
        let act = cfg["activation"].as_str();
        if cfg["activation"].is_object() {
            return Err(at(ImportError::Unsupported(
                "an activation given as an object (name it: \"relu\", …)".into(),
            )));
        }
        match kind {
            "InputLayer" => {}
            "Conv2D" => {
                let filters = cfg["filters"].as_u64().unwrap_or(0) as usize;
                let k = pair(&cfg["kernel_size"], "kernel_size", &name)?;
                let s = pair(&cfg["strides"], "strides", &name)?;
                let d = pair(&cfg["dilation_rate"], "dilation_rate", &name).unwrap_or([1, 1]);
                if d != [1, 1] || cfg["groups"].as_u64().unwrap_or(1) != 1 {
                    return Err(at(ImportError::Unsupported(
                        "dilated or grouped convolutions".into(),
                    )));
                }
                let pad = padding(&chain, cfg, k, s, &name)?;
                let mut v = weights
                    .weights(&name, &path, 1 + use_bias as usize)?
                    .into_iter();
                let kernel = v.next().expect("counted");
                if kernel.dims.len() != 4 || kernel.dims[3] != filters {
                    return Err(at(malformed(format!("kernel of shape {:?}", kernel.dims))));
                }
                if kernel.dims[..2] != k[..] {
                    return Err(at(malformed(format!(
                        "kernel_size {k:?} but a kernel of shape {:?}",
                        kernel.dims
                    ))));
                }
                // [kh, kw, in, out] → [out, in, kh, kw]
                let kernel = kernel.permute(&[3, 2, 0, 1]);
                chain
                    .conv(kernel, v.next().map(|b| b.data), s, pad)
                    .map_err(at)?;
                activation(&mut chain, act.unwrap_or("linear"), &name).map_err(at)?;
            }
            "Dense" => {
                let mut v = weights
                    .weights(&name, &path, 1 + use_bias as usize)?
                    .into_iter();
                let kernel = v.next().expect("counted");
                if kernel.dims.len() != 2 {
                    return Err(at(malformed(format!("kernel of shape {:?}", kernel.dims))));
                }
                chain
                    .dense(kernel.t(), v.next().map(|b| b.data))
                    .map_err(at)?;
                activation(&mut chain, act.unwrap_or("linear"), &name).map_err(at)?;
            }
            "BatchNormalization" => {
                let axis = cfg["axis"]
                    .as_i64()
                    .or_else(|| cfg["axis"][0].as_i64())
                    .unwrap_or(-1);
                let last = match chain.shape() {
                    Shape::Map { .. } => 3,
                    Shape::Flat(_) => 1,
                };
                if axis != -1 && axis != last {
                    return Err(at(ImportError::Unsupported(format!(
                        "normalising axis {axis} (the channels, axis -1, is imported)"
                    ))));
                }
                let center = cfg["center"].as_bool().unwrap_or(true);
                let scale = cfg["scale"].as_bool().unwrap_or(true);
                let eps = cfg["epsilon"].as_f64().unwrap_or(1e-3) as f32;
                let mut v = weights
                    .weights(&name, &path, 2 + center as usize + scale as usize)?
                    .into_iter();
                let n = chain.shape().channels();
                let gamma = if scale {
                    v.next().expect("counted").data
                } else {
                    vec![1.0; n]
                };
                let beta = if center {
                    v.next().expect("counted").data
                } else {
                    vec![0.0; n]
                };
                let mean = v.next().expect("counted").data;
                let var = v.next().expect("counted").data;
                chain
                    .batch_norm(&gamma, &beta, &mean, &var, eps)
                    .map_err(at)?;
            }
            "MaxPooling2D" | "AveragePooling2D" => {
                let k = pair(&cfg["pool_size"], "pool_size", &name)?;
                let s = if cfg["strides"].is_null() {
                    k
                } else {
                    pair(&cfg["strides"], "strides", &name)?
                };
                let pad = padding(&chain, cfg, k, s, &name)?;
                if kind == "MaxPooling2D" {
                    chain
                        .op(Layer::MaxPool2d {
                            kernel: k,
                            stride: s,
                            pad,
                        })
                        .map_err(at)?;
                } else if pad == [0; 4] {
                    chain
                        .op(Layer::AvgPool2d {
                            kernel: k,
                            stride: s,
                        })
                        .map_err(at)?;
                } else {
                    return Err(at(ImportError::Unsupported(
                        "average pooling with \"same\" padding (Keras leaves the padding out of each mean)".into(),
                    )));
                }
            }
            "GlobalAveragePooling2D" => {
                chain.op(Layer::GlobalAvgPool2d).map_err(at)?;
                if !cfg["keepdims"].as_bool().unwrap_or(false) {
                    chain
                        .op(Layer::Flatten {
                            channels_last: false,
                        })
                        .map_err(at)?;
                }
            }
            "Flatten" => chain
                .op(Layer::Flatten {
                    channels_last: true,
                })
                .map_err(at)?,
            "Activation" => activation(&mut chain, act.unwrap_or("?"), &name).map_err(at)?,
            "ReLU" => {
                let plain = cfg["max_value"].is_null()
                    && cfg["negative_slope"].as_f64().unwrap_or(0.0) == 0.0
                    && cfg["threshold"].as_f64().unwrap_or(0.0) == 0.0;
                if !plain {
                    return Err(at(ImportError::Unsupported(
                        "ReLU with max_value, negative_slope or threshold".into(),
                    )));
                }
                chain.op(Layer::Relu).map_err(at)?;
            }
            "Softmax" => {
                if cfg["axis"].as_i64().unwrap_or(-1) != -1 {
                    return Err(at(ImportError::Unsupported(
                        "softmax over an axis other than the last".into(),
                    )));
                }
                chain.op(Layer::Softmax).map_err(at)?;
            }
            "Rescaling" => {
                let list = |v: &Value| -> Option<Vec<f32>> {
                    match v {
                        Value::Number(n) => Some(vec![n.as_f64()? as f32]),
                        Value::Array(a) => a.iter().map(|x| x.as_f64().map(|f| f as f32)).collect(),
                        _ => None,
                    }
                };
                let s = list(&cfg["scale"])
                    .ok_or_else(|| at(malformed(format!("scale {}", cfg["scale"]))))?;
                let o = list(&cfg["offset"]).unwrap_or(vec![0.0]);
                chain.affine(s, o).map_err(at)?;
            }
            "Dropout"
            | "SpatialDropout2D"
            | "GaussianNoise"
            | "GaussianDropout"
            | "AlphaDropout"
            | "ActivityRegularization" => {}
            other => {
                return Err(ImportError::Unsupported(format!(
                    "layer {i} ({other} {name:?}); supported: {SUPPORTED_LAYERS}"
                )))
            }
        }
    }
    Ok(chain)
}

/// The layer names a functional model's `inbound_nodes` (or `output_layers`) refer to: Keras
/// 3 writes `{"keras_history": [name, 0, 0]}`, Keras 2 `[name, 0, 0, {}]`.
fn inbound_layers(v: &Value) -> Vec<String> {
    let mut names = Vec::new();
    fn walk(v: &Value, names: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(name) = o.get("keras_history").and_then(|h| h[0].as_str()) {
                    names.push(name.to_owned());
                } else {
                    o.values().for_each(|x| walk(x, names));
                }
            }
            Value::Array(a) => match (a.first(), a.get(1)) {
                (Some(Value::String(name)), Some(Value::Number(_))) => names.push(name.clone()),
                _ => a.iter().for_each(|x| walk(x, names)),
            },
            _ => {}
        }
    }
    walk(v, &mut names);
    names
}

fn padding(
    chain: &Chain,
    cfg: &Value,
    k: [usize; 2],
    s: [usize; 2],
    name: &str,
) -> Result<[usize; 4], ImportError> {
    let fits = |v: [usize; 2]| v.iter().all(|&x| (1..=limits::MAX_KERNEL).contains(&x));
    if !fits(k) || !fits(s) {
        return Err(ImportError::Unsupported(format!(
            "layer {name}: window {k:?} with strides {s:?} (sides 1..={} are imported)",
            limits::MAX_KERNEL
        )));
    }
    match cfg["padding"].as_str().unwrap_or("valid") {
        "valid" => Ok([0; 4]),
        "same" => match chain.shape() {
            Shape::Map { h, w, .. } => {
                let [t, b] = same_pad(h, k[0], s[0]);
                let [l, r] = same_pad(w, k[1], s[1]);
                Ok([t, l, b, r])
            }
            Shape::Flat(_) => Err(malformed(format!("layer {name} pads a vector"))),
        },
        other => Err(ImportError::Unsupported(format!(
            "layer {name}: padding {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn class_names_snake_case_as_keras_does() {
        for (class, snake) in [
            ("Conv2D", "conv2d"),
            ("ReLU", "re_lu"),
            ("BatchNormalization", "batch_normalization"),
            ("MaxPooling2D", "max_pooling2d"),
            ("GlobalAveragePooling2D", "global_average_pooling2d"),
            ("Dense", "dense"),
        ] {
            assert_eq!(super::snake_case(class), snake);
        }
    }

    #[test]
    fn same_padding_puts_the_odd_pixel_after_as_tensorflow_does() {
        assert_eq!(super::same_pad(28, 3, 1), [1, 1]);
        assert_eq!(super::same_pad(28, 3, 2), [0, 1]);
        assert_eq!(super::same_pad(7, 2, 2), [0, 1]);
        assert_eq!(super::same_pad(8, 2, 2), [0, 0]);
    }
}
