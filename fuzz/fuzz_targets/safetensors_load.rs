//! The weights loader: any bytes as a safetensors file. Nothing may panic, and what loads
//! runs a prediction.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = lambda_cnn::model::Cnn::from_safetensors(data) {
        model.probabilities(&[0.5; 784]).unwrap();
    }
});
