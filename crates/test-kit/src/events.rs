//! API Gateway / Function URL events carrying one HTTP request, built from the recorded
//! fixtures, and invoking the predict function with them.

use super::emulator::Emulator;
use super::shipped_weights;
use base64::Engine;
use serde_json::{json, Value};

pub fn fixture(name: &str) -> Value {
    let path = crate::root().join("tests/fixtures/events").join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

#[derive(Clone, Copy, Debug)]
pub enum Flavour {
    RestV1,
    HttpV2,
    FunctionUrl,
}

/// An event of `flavour` carrying one HTTP request, built from the recorded fixtures.
pub fn event(
    flavour: Flavour,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
    base64: bool,
) -> Value {
    let body = if base64 {
        base64::engine::general_purpose::STANDARD.encode(body)
    } else {
        String::from_utf8(body.to_vec()).unwrap()
    };
    let mut e = match flavour {
        Flavour::RestV1 => fixture("apigw-v1-predict.json"),
        Flavour::HttpV2 => fixture("apigw-v2-predict.json"),
        Flavour::FunctionUrl => fixture("function-url-predict.json"),
    };
    e["body"] = json!(body);
    e["isBase64Encoded"] = json!(base64);
    match flavour {
        Flavour::RestV1 => {
            e["httpMethod"] = json!(method);
            e["requestContext"]["httpMethod"] = json!(method);
            // REST APIs put the stage in front of the path.
            e["path"] = json!(format!("/prod{path}"));
            e["requestContext"]["path"] = json!(format!("/prod{path}"));
            e["resource"] = json!(path);
            for headers in ["headers", "multiValueHeaders"] {
                let h = e[headers].as_object_mut().unwrap();
                h.remove("Content-Type");
                if let Some(ct) = content_type {
                    h.insert(
                        "Content-Type".into(),
                        if headers == "headers" {
                            json!(ct)
                        } else {
                            json!([ct])
                        },
                    );
                }
            }
        }
        Flavour::HttpV2 | Flavour::FunctionUrl => {
            e["rawPath"] = json!(path);
            e["requestContext"]["http"]["method"] = json!(method);
            e["requestContext"]["http"]["path"] = json!(path);
            if matches!(flavour, Flavour::HttpV2) {
                e["routeKey"] = json!(format!("{method} {path}"));
                e["requestContext"]["routeKey"] = e["routeKey"].clone();
            }
            let h = e["headers"].as_object_mut().unwrap();
            h.remove("content-type");
            h.remove("content-length");
            if let Some(ct) = content_type {
                h.insert("content-type".into(), json!(ct));
            }
        }
    }
    e
}

/// Invokes predict with an HTTP request; returns the status and the parsed JSON body.
pub fn http(emu: &Emulator, e: Value) -> (u64, Value) {
    let r = emu.invoke("predict", &e);
    let status = r["statusCode"]
        .as_u64()
        .unwrap_or_else(|| panic!("not an HTTP response: {r}\n{}", emu.logs()));
    let body = r["body"].as_str().unwrap_or_default();
    let body: Value =
        serde_json::from_str(body).unwrap_or_else(|err| panic!("body {body:?} is not JSON: {err}"));
    (status, body)
}

/// The release-built predict function with the shipped weights, under the emulator.
pub fn start_predict() -> Emulator {
    let mut emu = Emulator::start();
    emu.start_function(
        "predict",
        &[("MODEL_PATH", shipped_weights().to_str().unwrap())],
    );
    emu
}
