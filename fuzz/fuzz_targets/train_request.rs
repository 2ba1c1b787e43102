//! The train function's request: any text as an invocation payload. Nothing may panic, and
//! what validation accepts must be a configuration training accepts.
#![no_main]
use lambda_cnn::api::train::TrainRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match TrainRequest::parse_text(text).and_then(|r| r.config()) {
        Ok(config) => assert!(config.validate().is_ok()),
        Err(e) => assert!(e.0.len() < 1024, "{} bytes", e.0.len()),
    }
});
