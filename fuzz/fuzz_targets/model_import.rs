//! The model importers (see `lambda_cnn::api::fuzzing::model_import`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = lambda_cnn::api::fuzzing::model_import(data) {
        panic!("{e}");
    }
});
