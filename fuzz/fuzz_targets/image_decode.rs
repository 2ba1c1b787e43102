//! Image decoding and preprocessing (see `lambda_cnn::api::fuzzing::image_decode`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = lambda_cnn::api::fuzzing::image_decode(data) {
        panic!("{e}");
    }
});
