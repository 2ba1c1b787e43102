//! The smoke test a new version must pass before the `live` alias moves to it.

#![warn(missing_docs)]

use super::image::Function;

/// A recorded API Gateway HTTP API event carrying a real MNIST test digit, a 7.
const PREDICT_EVENT: &str =
    include_str!("../../tests/fixtures/events/apigw-v2-predict-digit7.json");
const PREDICT_EXPECTED: u64 = 7;
/// A short training run: enough to prove the data loads and the model learns.
const TRAIN_EVENT: &str = r#"{"epochs":1,"limit":500}"#;

/// The event a smoke test sends to `f`.
pub fn payload(f: Function) -> &'static [u8] {
    match f {
        Function::Predict => PREDICT_EVENT.as_bytes(),
        Function::Train => TRAIN_EVENT.as_bytes(),
    }
}

/// Judges the answer of an invocation with `payload(f)`: Ok(what passed) or Err(why not).
pub fn judge(f: Function, function_error: Option<&str>, answer: &[u8]) -> Result<String, String> {
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
    match f {
        Function::Predict => {
            let body: serde_json::Value =
                serde_json::from_str(body).map_err(|_| format!("the body is not JSON: {body}"))?;
            if body["digit"] == PREDICT_EXPECTED {
                Ok(format!(
                    "a test digit {PREDICT_EXPECTED} came back as {PREDICT_EXPECTED}"
                ))
            } else {
                Err(format!(
                    "a test digit {PREDICT_EXPECTED} came back as {}",
                    body["digit"]
                ))
            }
        }
        Function::Train => {
            if body.contains("Test accuracy") {
                Ok(format!("a 500-sample training run answered {body}"))
            } else {
                Err(format!("no test accuracy in the answer: {text}"))
            }
        }
    }
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
        let ok = br#"{"statusCode":200,"body":"{\"digit\":7,\"probabilities\":[]}"}"#;
        assert!(judge(Function::Predict, None, ok).is_ok());
        let wrong = br#"{"statusCode":200,"body":"{\"digit\":1}"}"#;
        assert!(judge(Function::Predict, None, wrong)
            .unwrap_err()
            .contains("came back as 1"));
        // What an emulator that echoes the payload answers: not a pass.
        assert!(judge(Function::Predict, None, payload(Function::Predict)).is_err());
        let failed = judge(
            Function::Predict,
            Some("Unhandled"),
            b"{\"errorType\":\"x\"}",
        );
        assert!(failed.unwrap_err().contains("Unhandled"));
        let trained = br#"{"statusCode":200,"body":"\"Test accuracy: 0.71\""}"#;
        assert!(judge(Function::Train, None, trained).is_ok());
    }
}
