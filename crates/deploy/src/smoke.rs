//! The smoke test a new version must pass before the `live` alias moves to it.

#![warn(missing_docs)]

use super::image::Function;

/// A recorded API Gateway HTTP API event carrying a real MNIST test digit, a 7.
const PREDICT_EVENT: &str =
    include_str!("../../../tests/fixtures/events/apigw-v2-predict-digit7.json");
const PREDICT_EXPECTED: u64 = 7;
/// A short training run: enough to prove the data loads and the model learns.
const TRAIN_EVENT: &str = r#"{"epochs":1,"limit":500}"#;

/// How far a stored sample's probabilities may move between import and the function: far
/// above the rounding of another CPU's vector width (~1e-6), far below a damaged weight's
/// effect.
pub const SAMPLE_TOLERANCE: f32 = 1e-3;

/// What a smoke test sends and what it must get back.
#[derive(Debug, Clone, PartialEq)]
pub enum Smoke {
    /// Train: a short run that reports a test accuracy.
    Train,
    /// Predict serving the seed's digits: the recorded event of a real test 7.
    Digit,
    /// Predict serving an imported model: the sample stored with it
    /// ([`crate::net::Sample`]), sent as raw pixels, and the class it got at import.
    Sample {
        /// Raw values, row-major, channels last.
        pixels: Vec<u8>,
        /// The class the model gave it at import.
        class: usize,
        /// That class's label.
        label: String,
        /// The probabilities it gave at import (empty for older files): each answered must
        /// be within [`SAMPLE_TOLERANCE`].
        probabilities: Vec<f32>,
    },
    /// Predict serving an imported model too large to carry a sample: it must load and say so.
    Health,
}

impl Smoke {
    /// The case for predict serving the model `spec` describes (`None`: the seed's weights).
    pub fn for_model(spec: Option<&crate::net::ModelSpec>) -> Self {
        match spec {
            None => Smoke::Digit,
            Some(spec) => match &spec.sample {
                Some(s) => Smoke::Sample {
                    pixels: s.pixels.clone(),
                    class: s.class,
                    label: spec.labels.get(s.class).cloned().unwrap_or_default(),
                    probabilities: s.probabilities.clone(),
                },
                None => Smoke::Health,
            },
        }
    }

    /// The case for `f` serving the seed's model.
    pub fn of(f: Function) -> Self {
        match f {
            Function::Train => Smoke::Train,
            Function::Predict => Smoke::Digit,
        }
    }

    /// The event it sends.
    pub fn payload(&self) -> Vec<u8> {
        match self {
            Smoke::Train => TRAIN_EVENT.as_bytes().to_vec(),
            Smoke::Digit => PREDICT_EVENT.as_bytes().to_vec(),
            Smoke::Sample { pixels, .. } => http_event(
                "POST",
                "/predict",
                &serde_json::json!({"pixels": pixels, "preprocess": "none"}).to_string(),
            ),
            Smoke::Health => http_event("GET", "/health", ""),
        }
    }

    /// Judges the answer to [`Self::payload`]: Ok(what passed) or Err(why not).
    pub fn judge(&self, function_error: Option<&str>, answer: &[u8]) -> Result<String, String> {
        let text = String::from_utf8_lossy(answer);
        if let Some(kind) = function_error {
            return Err(format!("the function failed ({kind}): {text}"));
        }
        let v: serde_json::Value =
            serde_json::from_slice(answer).map_err(|_| format!("not a JSON answer: {text}"))?;
        if v["statusCode"] != 200 {
            return Err(format!("status {} (expected 200): {text}", v["statusCode"]));
        }
        let body = v["body"].as_str().unwrap_or_default();
        if *self == Smoke::Train {
            return if body.contains("Test accuracy") {
                Ok(format!("a 500-sample training run answered {body}"))
            } else {
                Err(format!("no test accuracy in the answer: {text}"))
            };
        }
        let body: serde_json::Value =
            serde_json::from_str(body).map_err(|_| format!("the body is not JSON: {body}"))?;
        match self {
            Smoke::Digit if body["digit"] == PREDICT_EXPECTED => Ok(format!(
                "a test digit {PREDICT_EXPECTED} came back as {PREDICT_EXPECTED}"
            )),
            Smoke::Digit => Err(format!(
                "a test digit {PREDICT_EXPECTED} came back as {}{}",
                body["digit"],
                if body["digit"].is_null() && !body["label"].is_null() {
                    " (the function serves an imported model: release it with --model FILE or s3://…, so that its own sample is the smoke test)"
                } else {
                    ""
                }
            )),
            Smoke::Sample {
                class,
                label,
                probabilities,
                ..
            } if body["class"] == *class => {
                if probabilities.is_empty() {
                    return Ok(format!(
                        "the model's stored sample came back as {label:?}, as at import"
                    ));
                }
                let answered: Vec<f64> = body["probabilities"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
                    .unwrap_or_default();
                if answered.len() != probabilities.len() {
                    return Err(format!(
                        "the model's stored sample got {} probabilities; at import it got {}",
                        answered.len(),
                        probabilities.len()
                    ));
                }
                let drift = answered
                    .iter()
                    .zip(probabilities)
                    .map(|(a, &p)| (a - f64::from(p)).abs())
                    .fold(0.0, f64::max);
                if drift <= f64::from(SAMPLE_TOLERANCE) {
                    Ok(format!(
                        "the model's stored sample came back as {label:?}, its probabilities within {drift:.1e} of import's"
                    ))
                } else {
                    Err(format!(
                        "the model's stored sample came back as {label:?}, but its probabilities differ from import's by up to {drift:.1e} (at most {SAMPLE_TOLERANCE:.0e}): the weights served are not the ones imported"
                    ))
                }
            }
            Smoke::Sample { class, label, .. } => Err(format!(
                "the model's stored sample came back as class {} ({}); at import it was {class} ({label:?})",
                body["class"], body["label"]
            )),
            Smoke::Health if body["status"] == "ok" => {
                Ok("the model loaded (it stores no sample to predict)".to_owned())
            }
            _ => Err(format!("unexpected answer: {body}")),
        }
    }
}

/// An API Gateway HTTP API event like the recorded one, for another request.
fn http_event(method: &str, path: &str, body: &str) -> Vec<u8> {
    let mut e: serde_json::Value = serde_json::from_str(PREDICT_EVENT).unwrap_or_default();
    e["routeKey"] = format!("{method} {path}").into();
    e["rawPath"] = path.into();
    e["requestContext"]["http"]["method"] = method.into();
    e["requestContext"]["http"]["path"] = path.into();
    e["requestContext"]["routeKey"] = format!("{method} {path}").into();
    e["headers"]["content-length"] = body.len().to_string().into();
    e["body"] = body.into();
    e["isBase64Encoded"] = false.into();
    serde_json::to_vec(&e).unwrap_or_default()
}

/// What the smoke run left in S3 (train's weights and card): deleted after judging, so that
/// releases do not pile up test models in the bucket.
pub fn leftovers(f: Function, answer: &[u8]) -> Vec<crate::store::S3Uri> {
    if f != Function::Train {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(answer).unwrap_or_default();
    ["weights", "card"]
        .iter()
        .filter_map(|k| v["metrics"][k].as_str()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_train_runs_objects_are_found_for_deleting() {
        let answer = br#"{"statusCode":200,"metrics":{"weights":"s3://b/models/w.safetensors","card":"s3://b/models/w.json"}}"#;
        let found = leftovers(Function::Train, answer);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].to_string(), "s3://b/models/w.safetensors");
        assert!(leftovers(Function::Predict, answer).is_empty());
        let local = br#"{"metrics":{"weights":"/tmp/w.safetensors"}}"#;
        assert!(leftovers(Function::Train, local).is_empty());
    }

    #[test]
    fn a_right_digit_passes_and_a_wrong_one_or_an_error_fails() {
        let digit = Smoke::of(Function::Predict);
        let ok = br#"{"statusCode":200,"body":"{\"digit\":7,\"probabilities\":[]}"}"#;
        assert!(digit.judge(None, ok).is_ok());
        let wrong = br#"{"statusCode":200,"body":"{\"digit\":1}"}"#;
        assert!(digit
            .judge(None, wrong)
            .unwrap_err()
            .contains("came back as 1"));
        // What an emulator that echoes the payload answers: not a pass.
        assert!(digit.judge(None, &digit.payload()).is_err());
        let failed = digit.judge(Some("Unhandled"), b"{\"errorType\":\"x\"}");
        assert!(failed.unwrap_err().contains("Unhandled"));
        let trained = br#"{"statusCode":200,"body":"\"Test accuracy: 0.71\""}"#;
        assert!(Smoke::of(Function::Train).judge(None, trained).is_ok());
        // An imported model behind the seed's test: the message says how to release it.
        let shapes = br#"{"statusCode":200,"body":"{\"label\":\"cat\",\"class\":0}"}"#;
        assert!(digit
            .judge(None, shapes)
            .unwrap_err()
            .contains("--model FILE"));
    }

    #[test]
    fn an_imported_model_is_smoke_tested_with_its_own_sample() {
        let mut spec = crate::net::spec::tests_support::two_class_spec();
        spec.sample = Some(crate::net::Sample {
            pixels: vec![9; spec.input_len()],
            class: 1,
            probabilities: vec![0.25, 0.75],
        });
        let case = Smoke::for_model(Some(&spec));
        let event: serde_json::Value = serde_json::from_slice(&case.payload()).unwrap();
        assert_eq!(event["rawPath"], "/predict");
        let body: serde_json::Value =
            serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["preprocess"], "none");
        assert_eq!(body["pixels"].as_array().unwrap().len(), spec.input_len());
        let answer = |class: usize, p: f32| {
            let body =
                serde_json::json!({"class": class, "label": "x", "probabilities": [1.0 - p, p]});
            serde_json::json!({"statusCode": 200, "body": body.to_string()}).to_string()
        };
        assert!(case.judge(None, answer(1, 0.7502).as_bytes()).is_ok());
        assert!(case
            .judge(None, answer(0, 0.75).as_bytes())
            .unwrap_err()
            .contains("at import it was 1"));
        // The class alone is not enough: weights that drifted still give it.
        let e = case.judge(None, answer(1, 0.9).as_bytes()).unwrap_err();
        assert!(e.contains("differ from import's"), "{e}");
        spec.sample = None;
        assert_eq!(Smoke::for_model(Some(&spec)), Smoke::Health);
        assert_eq!(Smoke::for_model(None), Smoke::Digit);
    }
}
