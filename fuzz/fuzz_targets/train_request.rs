//! The train function's request (see `lambda_cnn::api::fuzzing::train_request`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = lambda_cnn::api::fuzzing::train_request(data) {
        panic!("{e}");
    }
});
