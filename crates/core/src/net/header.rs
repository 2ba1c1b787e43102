//! A model file's description read from its safetensors header alone, without loading a
//! tensor: what the deploy binary (which links no candle) checks before it ships a model,
//! and where the release's smoke test finds the model's stored sample.
//!
//! The header is the file's first 8 bytes (its length, little-endian) and that many bytes of
//! JSON: each tensor's dtype, shape and byte range, and `__metadata__`, whose
//! [`METADATA_KEY`] holds the [`ModelSpec`] as JSON. See
//! <https://huggingface.co/docs/safetensors/index#format>.

use super::spec::{ModelSpec, SpecError};
use serde_json::Value;

/// The header metadata key that holds the description (JSON).
pub const METADATA_KEY: &str = "lambda-cnn.model";

/// The largest header read: a description with its sample is at most ~1 MiB of JSON
/// ([`crate::net::spec::limits`]), the tensors' entries a few KiB.
pub const MAX_HEADER_BYTES: u64 = 8 << 20;

/// The largest model file a function loads (and the deployer ships): the description's
/// parameter limit in f32 (what `lambda-cnn import` writes), the largest header and its
/// 8-byte length, so that any model within the limits fits.
pub const MAX_MODEL_BYTES: u64 =
    4 * crate::net::spec::limits::MAX_PARAMS as u64 + MAX_HEADER_BYTES + 8;

fn err(message: impl Into<String>) -> SpecError {
    SpecError {
        message: message.into(),
    }
}

/// The header's length from the file's first 8 bytes, refused over [`MAX_HEADER_BYTES`]
/// before anything is read.
pub fn header_len(prefix: &[u8]) -> Result<u64, SpecError> {
    let bytes: [u8; 8] = prefix
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| err("the file is shorter than a safetensors header (8 bytes)"))?;
    let n = u64::from_le_bytes(bytes);
    if n == 0 || n > MAX_HEADER_BYTES {
        return Err(err(format!(
            "its safetensors header declares {n} bytes; a model file's is 1..={MAX_HEADER_BYTES}: not a model file lambda-cnn wrote"
        )));
    }
    Ok(n)
}

/// What a model file's header says: `Ok(Some(spec))` for a model `lambda-cnn import` wrote,
/// `Ok(None)` for the seed's plain weights (no description: then its tensors must be the
/// seed's). Either way each tensor the description needs is there, in its shape, as floats,
/// and the tensors' bytes tile the rest of a file of `file_len` bytes exactly, as the
/// safetensors reader a function loads with requires. `header` is the JSON after the 8
/// length bytes.
pub fn describe(header: &[u8], file_len: u64) -> Result<Option<ModelSpec>, SpecError> {
    let json: Value = serde_json::from_slice(header)
        .map_err(|e| err(format!("its safetensors header is not JSON ({e})")))?;
    let entries = json
        .as_object()
        .ok_or_else(|| err("its safetensors header is not a JSON object"))?;
    let described = match entries
        .get("__metadata__")
        .and_then(|m| m.get(METADATA_KEY))
    {
        Some(text) => Some(
            serde_json::from_str::<ModelSpec>(text.as_str().unwrap_or_default())
                .map_err(|e| err(format!("its model description is not valid: {e}")))?,
        ),
        None => None,
    };
    let plan = match &described {
        Some(spec) => spec.plan()?,
        None => crate::net::spec::seed_spec().plan()?,
    };
    let whose = if described.is_some() {
        "the description"
    } else {
        "the seed's weights (the file has no model description)"
    };
    let data_len = file_len.saturating_sub(8 + header.len() as u64);
    let mut ranges = Vec::with_capacity(plan.tensors.len());
    for (name, dims) in &plan.tensors {
        let t = entries.get(name).ok_or_else(|| {
            err(format!(
                "{whose} needs tensor {name}, which the file does not hold"
            ))
        })?;
        let shape: Option<Vec<usize>> = t["shape"]
            .as_array()
            .and_then(|s| s.iter().map(|d| d.as_u64().map(|d| d as usize)).collect());
        if shape.as_ref() != Some(dims) {
            return Err(err(format!(
                "tensor {name} has shape {}; {whose} needs {dims:?}",
                t["shape"]
            )));
        }
        let width = match t["dtype"].as_str() {
            Some("F32") => 4,
            Some("F16" | "BF16") => 2,
            Some("F64") => 8,
            other => {
                return Err(err(format!(
                    "tensor {name} is {}; model weights are F32, F16, BF16 or F64",
                    other.unwrap_or("of no dtype")
                )))
            }
        };
        let range = t["data_offsets"]
            .as_array()
            .and_then(|r| match r.as_slice() {
                [a, b] => Some((a.as_u64()?, b.as_u64()?)),
                _ => None,
            });
        let want = dims.iter().product::<usize>() as u64 * width;
        match range {
            Some((a, b)) if b >= a && b - a == want && b <= data_len => ranges.push((a, b, name)),
            _ => {
                return Err(err(format!(
                    "tensor {name}'s bytes {} do not hold its {want} bytes within the file's {data_len}",
                    t["data_offsets"]
                )))
            }
        }
    }
    let extra = entries
        .keys()
        .filter(|k| *k != "__metadata__" && !plan.tensors.iter().any(|(n, _)| n == *k))
        .count();
    if extra > 0 {
        return Err(err(format!(
            "the file holds {extra} tensors {whose} does not use"
        )));
    }
    // One after the other from the first data byte to the last: no overlap, no gap, nothing
    // after (safetensors' own rule, which the function's loader enforces).
    ranges.sort_unstable();
    let mut end = 0;
    for (a, b, name) in ranges {
        if a != end {
            return Err(err(format!(
                "tensor {name}'s bytes start at {a}, not at {end} where the tensor before ends"
            )));
        }
        end = b;
    }
    if end != data_len {
        return Err(err(format!(
            "the tensors end at byte {end} of the file's {data_len} data bytes"
        )));
    }
    Ok(described)
}

/// [`describe`] over a whole file's bytes.
pub fn describe_file(bytes: &[u8]) -> Result<Option<ModelSpec>, SpecError> {
    let n = header_len(bytes)?;
    let header = bytes
        .get(8..8 + n as usize)
        .ok_or_else(|| err(format!("the file ends inside its {n}-byte header")))?;
    describe(header, bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> ModelSpec {
        crate::net::spec::tests_support::two_class_spec()
    }

    fn file(header: serde_json::Value, data: usize) -> Vec<u8> {
        let text = header.to_string();
        let mut out = (text.len() as u64).to_le_bytes().to_vec();
        out.extend(text.as_bytes());
        out.extend(vec![0u8; data]);
        out
    }

    fn header(spec: &ModelSpec, weight_shape: serde_json::Value) -> serde_json::Value {
        json!({
            "__metadata__": {METADATA_KEY: serde_json::to_string(spec).unwrap()},
            "d.weight": {"dtype": "F32", "shape": weight_shape, "data_offsets": [0, 128]},
            "d.bias": {"dtype": "F32", "shape": [2], "data_offsets": [128, 136]},
        })
    }

    /// The header with the tensors' byte ranges given.
    fn ranges(weight: [u64; 2], bias: [u64; 2]) -> serde_json::Value {
        let mut h = header(&spec(), json!([2, 16]));
        h["d.weight"]["data_offsets"] = json!(weight);
        h["d.bias"]["data_offsets"] = json!(bias);
        h
    }

    #[test]
    fn a_model_file_header_gives_its_description() {
        let bytes = file(header(&spec(), json!([2, 16])), 136);
        assert_eq!(describe_file(&bytes).unwrap(), Some(spec()));
    }

    #[test]
    fn the_seeds_plain_weights_have_no_description_and_nothing_else_passes_for_them() {
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(crate::SHIPPED_WEIGHTS);
        assert_eq!(
            describe_file(&std::fs::read(shipped).unwrap()).unwrap(),
            None
        );
        // Any other safetensors file without a description used to pass as "the seed's".
        let h = json!({"conv.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}});
        let e = describe_file(&file(h, 4)).unwrap_err().message;
        assert!(
            e.contains("the seed's weights") && e.contains("has shape"),
            "{e}"
        );
    }

    #[test]
    fn a_model_within_the_limits_fits_the_file_limit() {
        let most = 4 * crate::net::spec::limits::MAX_PARAMS as u64 + MAX_HEADER_BYTES + 8;
        assert!(MAX_MODEL_BYTES >= most);
    }

    #[test]
    fn headers_that_lie_are_refused_with_a_reason() {
        let lies = [
            (file(header(&spec(), json!([2, 15])), 136), "has shape"),
            (file(header(&spec(), json!([2, 16])), 100), "do not hold"),
            (b"\xff\xff\xff\xff\xff\xff\xff\x7f{}".to_vec(), "declares"),
            (b"\x10\x00".to_vec(), "shorter than"),
            (b"\x20\x00\x00\x00\x00\x00\x00\x00{".to_vec(), "ends inside"),
            (file(json!([1]), 0), "not a JSON object"),
            // Bytes the loader would refuse: overlapping, with a gap, or with bytes after.
            (file(ranges([0, 128], [64, 72]), 136), "start at 64"),
            (file(ranges([0, 128], [0, 8]), 136), "start at 0, not at 8"),
            (file(ranges([0, 128], [132, 140]), 140), "start at 132"),
            (file(ranges([0, 128], [128, 136]), 150), "end at byte 136"),
        ];
        for (bytes, why) in lies {
            let e = describe_file(&bytes).unwrap_err().message;
            assert!(e.contains(why), "{why}: {e}");
        }
        let mut extra = header(&spec(), json!([2, 16]));
        extra["other"] = json!({"dtype": "F32", "shape": [1], "data_offsets": [136, 140]});
        let e = describe_file(&file(extra, 140)).unwrap_err().message;
        assert!(e.contains("does not use"), "{e}");
        let mut wide = spec();
        wide.input.width = 5000;
        let e = describe_file(&file(header(&wide, json!([2, 16])), 136))
            .unwrap_err()
            .message;
        assert!(e.contains("1..=1024"), "{e}");
    }
}
