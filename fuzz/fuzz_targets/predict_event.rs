//! The predict function's whole request path (see `lambda_cnn::api::fuzzing::predict_event`).
#![no_main]
use lambda_cnn::api::predict::PredictService;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn service() -> &'static PredictService {
    static S: OnceLock<PredictService> = OnceLock::new();
    S.get_or_init(|| {
        let seed = lambda_cnn::model::Cnn::init(1).unwrap();
        PredictService::new(lambda_cnn::net::Network::seed(seed).unwrap(), "fuzz".into()).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Err(e) = lambda_cnn::api::fuzzing::predict_event(service(), data) {
        panic!("{e}");
    }
});
