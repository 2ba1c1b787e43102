//! The predict function's whole request path: an invocation payload (any bytes) → the HTTP
//! event decoder → the request handler → the integration's response. Nothing may panic; every
//! answer is a status below 500 with a small body.
#![no_main]
use lambda_cnn::api::event::{response, HttpEvent};
use lambda_cnn::api::predict::{HttpRequest, PredictService};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn service() -> &'static PredictService {
    static S: OnceLock<PredictService> = OnceLock::new();
    S.get_or_init(|| PredictService::new(lambda_cnn::model::Cnn::init(1).unwrap(), "fuzz".into()))
}

fuzz_target!(|data: &[u8]| {
    // Half the inputs are whole events; the other half a body behind a fixed event, so that
    // the body decoders are reached without the fuzzer first learning the event's shape.
    let (selector, rest) = data.split_first().unwrap_or((&0, &[]));
    let reply = if selector & 1 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else { return };
        let Ok(ev) = HttpEvent::parse(text) else { return };
        let Ok(body) = &ev.body else { return };
        let reply = service().handle(HttpRequest {
            method: &ev.method,
            path: &ev.path,
            content_type: ev.content_type.as_deref(),
            body,
        });
        let _ = response(ev.flavour, &reply);
        reply
    } else {
        let content_type = ["application/json", "image/png", "image/jpeg", "text/plain"]
            [(selector >> 1) as usize % 4];
        service().handle(HttpRequest {
            method: "POST",
            path: "/predict",
            content_type: Some(content_type),
            body: rest,
        })
    };
    assert!(reply.status < 500, "{} {}", reply.status, reply.body);
    assert!(reply.body.to_string().len() < 1024 || reply.status == 200);
});
