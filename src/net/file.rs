//! A model file: safetensors whose header metadata holds the description under
//! [`METADATA_KEY`], so the weights and what they mean travel as one file (and one SHA-256).
//! The seed's plain weights file (no description) reads as the seed's description.
//!
//! Serialisation is deterministic (one metadata key: safetensors writes its map in hash
//! order), so the same model gives the same bytes and the same identity.

use super::spec::ModelSpec;
use super::{bad, Network};
use crate::model::weights::{sha256_hex, MAX_WEIGHTS_BYTES};
use crate::model::ModelError;
use candle_core::safetensors::Load;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

pub use super::header::METADATA_KEY;

pub use super::spec::seed_spec;

/// The bytes of a model file: `tensors` (each the plan names, in its order) and `spec`.
pub fn to_bytes(
    spec: &ModelSpec,
    tensors: &HashMap<String, Tensor>,
) -> Result<Vec<u8>, ModelError> {
    let plan = spec.plan().map_err(|e| bad(e.message))?;
    let mut ordered = Vec::with_capacity(plan.tensors.len());
    for (name, _) in &plan.tensors {
        let t = tensors
            .get(name)
            .ok_or_else(|| bad(format!("no tensor {name}")))?
            .to_dtype(candle_core::DType::F32)?
            .contiguous()?;
        ordered.push((name.as_str(), t));
    }
    let json = serde_json::to_string(spec).map_err(|e| bad(e.to_string()))?;
    let metadata = HashMap::from([(METADATA_KEY.to_owned(), json)]);
    safetensors::serialize(ordered.iter().map(|(n, t)| (*n, t)), Some(metadata))
        .map_err(|e| bad(format!("cannot serialise: {e}")))
}

/// The description and tensors of a model file's bytes (a plain seed weights file reads as
/// [`seed_spec`]). Nothing is checked against the description here: [`Network::new`] does.
pub fn from_bytes(bytes: &[u8]) -> Result<(ModelSpec, HashMap<String, Tensor>), ModelError> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let spec = match meta.metadata().as_ref().and_then(|m| m.get(METADATA_KEY)) {
        Some(json) => serde_json::from_str(json)
            .map_err(|e| bad(format!("its model description is not valid: {e}")))?,
        None => seed_spec(),
    };
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        tensors.insert(name, view.load(&Device::Cpu)?);
    }
    Ok((spec, tensors))
}

/// Reads the model at `path`: the network and the file's SHA-256.
pub fn load(path: &Path) -> Result<(Network, String), ModelError> {
    use std::io::Read;
    let with_path = |e: ModelError| match e {
        ModelError::BadWeights { message, .. } => ModelError::BadWeights {
            path: Some(path.to_owned()),
            message,
        },
        other => other,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_WEIGHTS_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|cause| ModelError::Io {
            path: path.to_owned(),
            cause,
        })?;
    if bytes.len() as u64 > MAX_WEIGHTS_BYTES {
        return Err(with_path(bad(format!(
            "the file is over {MAX_WEIGHTS_BYTES} bytes, the most a function loads"
        ))));
    }
    let network = from_bytes(&bytes)
        .and_then(|(spec, tensors)| Network::new(spec, &tensors))
        .map_err(with_path)?;
    Ok((network, sha256_hex(&bytes)))
}

/// Writes a model file; returns its SHA-256.
pub fn save(
    path: &Path,
    spec: &ModelSpec,
    tensors: &HashMap<String, Tensor>,
) -> Result<String, ModelError> {
    let bytes = to_bytes(spec, tensors)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::spec::Layer;

    fn shipped() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(crate::SHIPPED_WEIGHTS)
    }

    #[test]
    fn the_shipped_weights_load_as_the_seed_model_on_its_own_kernels() {
        let (net, _) = load(&shipped()).unwrap();
        assert!(net.is_seed_layout());
        assert_eq!(net.spec().labels.len(), 10);
    }

    #[test]
    fn a_model_file_round_trips_and_answers_as_the_generic_path_does() {
        let (net, _) = load(&shipped()).unwrap();
        let bytes = std::fs::read(shipped()).unwrap();
        let (spec, tensors) = from_bytes(&bytes).unwrap();
        let again = to_bytes(&spec, &tensors).unwrap();
        assert_eq!(again, to_bytes(&spec, &tensors).unwrap(), "deterministic");
        let (spec2, tensors2) = from_bytes(&again).unwrap();
        assert_eq!(spec2, spec);

        // The same layers with a channels-last flatten cannot use the seed's kernels: the
        // generic path must give the same answer once the dense weights are permuted.
        let mut generic = spec.clone();
        generic.layers[3] = Layer::Flatten {
            channels_last: true,
        };
        let mut t = tensors2.clone();
        let fc1 = t["fc1.weight"]
            .reshape((128, 32, 13, 13))
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap()
            .reshape((128, 5408))
            .unwrap();
        t.insert("fc1.weight".into(), fc1);
        let slow = Network::new(generic, &t).unwrap();
        assert!(!slow.is_seed_layout());

        let images = crate::data::mnist::load_split(
            Path::new(&std::env::var("MNIST_DIR").unwrap_or("../shared/mnist".into())),
            crate::data::SplitKind::Test,
        );
        let raw: Vec<f32> = match images {
            Ok(split) => split.images[..20 * 784].iter().map(|&v| v as f32).collect(),
            Err(_) => (0..20 * 784).map(|i| ((i * 37) % 256) as f32).collect(),
        };
        let a = net.probabilities(&raw).unwrap();
        let b = slow.probabilities(&raw).unwrap();
        for (x, y) in a.iter().zip(&b) {
            for (p, q) in x.iter().zip(y) {
                assert!((p - q).abs() < 1e-5, "{p} vs {q}");
            }
        }
    }

    #[test]
    fn lying_files_are_refused_with_a_reason() {
        let bytes = std::fs::read(shipped()).unwrap();
        let (mut spec, tensors) = from_bytes(&bytes).unwrap();
        spec.layers[4] = Layer::Dense {
            name: "fc1".into(),
            units: 64,
            bias: true,
        };
        let e = Network::new(spec, &tensors).err().unwrap().to_string();
        assert!(e.contains("fc1.weight has shape [128, 5408]"), "{e}");

        let (spec, mut tensors) = from_bytes(&bytes).unwrap();
        let nan = Tensor::full(f32::NAN, (10,), &Device::Cpu).unwrap();
        tensors.insert("fc2.bias".into(), nan);
        let e = Network::new(spec.clone(), &tensors)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("holds NaN"), "{e}");

        // Integers are not weights: the header check refuses them, and so does loading.
        let (spec, mut tensors) = from_bytes(&bytes).unwrap();
        let ints = Tensor::zeros(10, candle_core::DType::I64, &Device::Cpu).unwrap();
        tensors.insert("fc2.bias".into(), ints);
        let e = Network::new(spec.clone(), &tensors)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("fc2.bias is I64"), "{e}");

        let mut extra = from_bytes(&bytes).unwrap().1;
        extra.insert(
            "head.weight".into(),
            Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
        let e = Network::new(spec, &extra).err().unwrap().to_string();
        assert!(e.contains("does not use: head.weight"), "{e}");

        let e = from_bytes(&bytes[..bytes.len() / 2])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a safetensors file"), "{e}");
    }
}
