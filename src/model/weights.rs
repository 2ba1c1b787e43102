//! The weights file: safetensors with PyTorch's names and layouts, so that
//! `model.load_state_dict(safetensors.torch.load_file(path))` works on the equivalent
//! `nn.Module` (conv = Conv2d(1, 32, 3), fc1 = Linear(5408, 128), fc2 = Linear(128, 10),
//! flattening the pooled map in PyTorch's (channel, y, x) order).
//!
//! The SHA-256 of the file's bytes is the model's identity everywhere else (predict responses,
//! the model card, deploy), so serialisation is deterministic: the same weights give the same
//! bytes.

use super::PATCH_LEN;
use super::{Cnn, ModelError, CHANNELS, CLASSES, FLAT, HIDDEN, POOL_SIDE};
use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor, Var};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

/// The tensors of the file, with the shapes PyTorch gives them.
pub const TENSORS: [(&str, &[usize]); 6] = [
    ("conv.weight", &[CHANNELS, 1, 3, 3]),
    ("conv.bias", &[CHANNELS]),
    ("fc1.weight", &[HIDDEN, FLAT]),
    ("fc1.bias", &[HIDDEN]),
    ("fc2.weight", &[CLASSES, HIDDEN]),
    ("fc2.bias", &[CLASSES]),
];

pub use crate::SHIPPED_WEIGHTS;

/// The largest weights file read (the model's is 2.8 MB): a path or S3 object that names
/// something else entirely fails at once instead of filling the function's memory.
pub use crate::net::header::MAX_MODEL_BYTES as MAX_WEIGHTS_BYTES;

/// The hex SHA-256 of some bytes: how a weights file is identified.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Cnn {
    /// The parameters in PyTorch's names and layouts, in the order of [`TENSORS`].
    pub fn to_pytorch(&self) -> Result<Vec<(&'static str, Tensor)>, ModelError> {
        let conv_w = self.conv_w.as_tensor().t()?.reshape((CHANNELS, 1, 3, 3))?;
        // Internal rows are (y, x, c); PyTorch's columns are (c, y, x).
        let fc1_w = self
            .fc1_w
            .as_tensor()
            .reshape((POOL_SIDE, POOL_SIDE, CHANNELS, HIDDEN))?
            .permute((3, 2, 0, 1))?
            .reshape((HIDDEN, FLAT))?;
        let fc2_w = self.fc2_w.as_tensor().t()?;
        Ok(vec![
            ("conv.weight", conv_w.contiguous()?),
            ("conv.bias", self.conv_b.as_tensor().clone()),
            ("fc1.weight", fc1_w.contiguous()?),
            ("fc1.bias", self.fc1_b.as_tensor().clone()),
            ("fc2.weight", fc2_w.contiguous()?),
            ("fc2.bias", self.fc2_b.as_tensor().clone()),
        ])
    }

    /// Builds the model from tensors in PyTorch's names and layouts (checked against
    /// [`TENSORS`]).
    pub fn from_pytorch(tensors: &HashMap<String, Tensor>) -> Result<Self, ModelError> {
        let get = |name: &str, shape: &[usize]| -> Result<Tensor, ModelError> {
            let t = tensors
                .get(name)
                .ok_or_else(|| bad(format!("missing tensor {name}")))?;
            if t.dims() != shape {
                return Err(bad(format!(
                    "tensor {name} has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            Ok(t.to_dtype(DType::F32)?)
        };
        let [conv_w, conv_b, fc1_w, fc1_b, fc2_w, fc2_b] =
            TENSORS.map(|(name, shape)| get(name, shape));
        let var = |t: Tensor| Var::from_tensor(&t.contiguous()?);
        Ok(Self {
            conv_w: var(conv_w?.reshape((CHANNELS, PATCH_LEN))?.t()?)?,
            conv_b: var(conv_b?)?,
            fc1_w: var(fc1_w?
                .reshape((HIDDEN, CHANNELS, POOL_SIDE, POOL_SIDE))?
                .permute((2, 3, 1, 0))?
                .reshape((FLAT, HIDDEN))?)?,
            fc1_b: var(fc1_b?)?,
            fc2_w: var(fc2_w?.t()?)?,
            fc2_b: var(fc2_b?)?,
            infer: Default::default(),
        })
    }

    /// The weights file's bytes.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, ModelError> {
        let tensors = self.to_pytorch()?;
        // One metadata key only: safetensors writes its map in hash order.
        let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
        safetensors::serialize(tensors.iter().map(|(n, t)| (*n, t)), Some(metadata))
            .map_err(|e| bad(format!("cannot serialise: {e}")))
    }

    /// Parses a weights file's bytes.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, ModelError> {
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let mut tensors = HashMap::new();
        for (name, _) in TENSORS {
            let view = st
                .tensor(name)
                .map_err(|_| bad(format!("missing tensor {name}")))?;
            let tensor = view.load(&Device::Cpu)?;
            check_finite(name, &tensor)?;
            tensors.insert(name.to_owned(), tensor);
        }
        Self::from_pytorch(&tensors)
    }

    /// Writes the weights to `path` and returns the file's SHA-256.
    pub fn save(&self, path: &Path) -> Result<String, ModelError> {
        let bytes = self.to_safetensors()?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|cause| ModelError::Io {
                path: dir.to_owned(),
                cause,
            })?;
        }
        std::fs::write(path, &bytes).map_err(|cause| ModelError::Io {
            path: path.to_owned(),
            cause,
        })?;
        Ok(sha256_hex(&bytes))
    }

    /// Reads the weights at `path`; returns the model and the file's SHA-256.
    pub fn load(path: &Path) -> Result<(Self, String), ModelError> {
        use std::io::Read;
        let io = |cause| ModelError::Io {
            path: path.to_owned(),
            cause,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_WEIGHTS_BYTES + 1).read_to_end(&mut bytes))
            .map_err(io)?;
        if bytes.len() as u64 > MAX_WEIGHTS_BYTES {
            return Err(ModelError::BadWeights {
                path: Some(path.to_owned()),
                message: format!(
                    "the file is over {MAX_WEIGHTS_BYTES} bytes; the model's weights are 2.8 MB"
                ),
            });
        }
        let model = Self::from_safetensors(&bytes).map_err(|e| match e {
            ModelError::BadWeights { message, .. } => ModelError::BadWeights {
                path: Some(path.to_owned()),
                message,
            },
            other => other,
        })?;
        Ok((model, sha256_hex(&bytes)))
    }
}

/// NaN or infinite weights would answer every request with `null` probabilities.
fn check_finite(name: &str, tensor: &Tensor) -> Result<(), ModelError> {
    let values = tensor
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(bad(format!(
            "tensor {name} holds {} at index {i}: the weights are damaged or training diverged",
            values[i]
        ))),
    }
}

fn bad(message: String) -> ModelError {
    ModelError::BadWeights {
        path: None,
        message,
    }
}
