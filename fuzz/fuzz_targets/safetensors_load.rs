//! The weights loader (see `lambda_cnn::api::fuzzing::safetensors_load`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = lambda_cnn::api::fuzzing::safetensors_load(data) {
        panic!("{e}");
    }
});
