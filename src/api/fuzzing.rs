//! The properties the fuzz targets in `fuzz/` check, here so that `cargo fuzz` and the corpus
//! replay in `make test` (tests/fuzz_corpus_replay.rs) run the very same code. Each returns
//! `Err` with what broke; a panic inside is a finding too.

use super::event::{response, HttpEvent};
use super::predict::{HttpRequest, PredictService, MAX_DECODE_TIME, MAX_REQUEST_PIXELS};
use super::train::TrainRequest;
use std::time::Instant;

/// The predict function's whole request path: an invocation payload → the event decoder → the
/// handler → the integration's response. The first byte chooses: even, the rest is a whole
/// event; odd, the rest is a body behind a fixed event with one of four content types (so the
/// body decoders are reached without first learning the event's shape). Every answer must be
/// below 500, and an error body under 1 KB.
pub fn predict_event(service: &PredictService, data: &[u8]) -> Result<(), String> {
    let (selector, rest) = data.split_first().unwrap_or((&0, &[]));
    let reply = if selector & 1 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return Ok(());
        };
        let Ok(ev) = HttpEvent::parse(text) else {
            return Ok(());
        };
        let reply = service.handle_event(&ev, Instant::now() + MAX_DECODE_TIME);
        let _ = response(ev.flavour, &reply);
        reply
    } else {
        let content_type = ["application/json", "image/png", "image/jpeg", "text/plain"]
            [(selector >> 1) as usize % 4];
        service.handle(HttpRequest {
            if_none_match: None,
            method: "POST",
            path: "/predict",
            content_type: Some(content_type),
            body: rest,
        })
    };
    if reply.status >= 500 {
        return Err(format!("{} {}", reply.status, reply.body));
    }
    if reply.status != 200 && reply.body.to_string().len() >= 1024 {
        return Err(format!(
            "an error body of {} bytes",
            reply.body.to_string().len()
        ));
    }
    Ok(())
}

/// Image decoding and preprocessing: the header first, then the whole decode when it is
/// within a request's budget; what decodes is 784 values in [0, 1].
pub fn image_decode(data: &[u8]) -> Result<(), String> {
    let Ok(size) = crate::predict::image_size(data) else {
        return Ok(());
    };
    if size.pixels() > MAX_REQUEST_PIXELS {
        return Ok(());
    }
    match crate::predict::image_to_pixels(data) {
        Ok(p) if p.len() != crate::data::IMAGE_PIXELS => Err(format!("{} values", p.len())),
        Ok(p) if !p.iter().all(|v| (0.0..=1.0).contains(v)) => Err("a value outside [0, 1]".into()),
        _ => Ok(()),
    }
}

/// The train function's request: what validation accepts, training accepts; every refusal
/// is under 1 KB.
pub fn train_request(data: &[u8]) -> Result<(), String> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(());
    };
    match TrainRequest::parse_text(text).and_then(|r| r.config()) {
        Ok(config) => config
            .validate()
            .map_err(|e| format!("accepted, then refused: {e}")),
        Err(e) if e.0.len() >= 1024 => Err(format!("a refusal of {} bytes", e.0.len())),
        Err(_) => Ok(()),
    }
}

/// The weights loader, and the model-file loader that reads the same bytes: what loads runs
/// a prediction.
pub fn safetensors_load(data: &[u8]) -> Result<(), String> {
    if let Ok(model) = crate::model::Cnn::from_safetensors(data) {
        model
            .probabilities(&[0.5; crate::data::IMAGE_PIXELS])
            .map_err(|e| format!("loaded, then failed to predict: {e}"))?;
    }
    let network = crate::net::file::from_bytes(data)
        .and_then(|(spec, tensors)| crate::net::Network::new(spec, &tensors));
    if let Ok(network) = network {
        network
            .probabilities(&vec![128.0; network.spec().input_len()])
            .map_err(|e| format!("a model file loaded, then failed to predict: {e}"))?;
    }
    Ok(())
}

/// The importers (Keras zip and HDF5, ONNX, safetensors state dicts): whatever the bytes, an
/// error or a model that loads and predicts. The first byte picks the input scaling.
#[cfg(feature = "import")]
pub fn model_import(data: &[u8]) -> Result<(), String> {
    use crate::import::{import_bytes, InputScale, Options};
    let Some((&first, rest)) = data.split_first() else {
        return Ok(());
    };
    let options = Options {
        scale: if first & 1 == 0 {
            InputScale::Unit
        } else {
            InputScale::None
        },
        ..Options::default()
    };
    match import_bytes(rest.to_vec(), None, &options) {
        Ok(imported) => {
            let network = crate::net::Network::new(imported.spec, &imported.tensors)
                .map_err(|e| format!("imported, then failed to load: {e}"))?;
            network
                .probabilities(&vec![128.0; network.spec().input_len()])
                .map(|_| ())
                .map_err(|e| format!("imported, then failed to predict: {e}"))
        }
        Err(_) => Ok(()),
    }
}
