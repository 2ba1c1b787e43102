//! The state machine of a batch run, in Amazon States Language: one Distributed Map over the
//! objects under the input prefix, whose children invoke predict's alias with a batch of keys
//! in the shape [`crate::records`] reads.
//!
//! Two forms, one switch ([`Form`]):
//! - [`Form::Aws`], what runs on AWS: `ItemBatcher` hands each child up to `batch_size` keys,
//!   and the children are EXPRESS workflows (billed per request and duration rather than per
//!   state transition: the cheaper kind for short children).
//! - [`Form::Emulator`], what moto's interpreter runs: it rejects `ItemBatcher` and knows
//!   STANDARD children only, so each child gets one key, wrapped by an `ItemSelector` into the
//!   same event shape (`{"Items":[item], "BatchInput":{…}}`), and the map's result is
//!   discarded (`ResultPath: null`), as in the AWS form.
//!
//! [`check_aws_rules`] checks a definition against AWS's published rules for Distributed Map
//! (<https://docs.aws.amazon.com/step-functions/latest/dg/state-map-distributed.html>), so
//! the AWS form, which no emulator here runs, is still held to them.

#![warn(missing_docs)]

use serde_json::{json, Value};

use super::BatchSpec;
use crate::records::{BatchInput, BATCH_INPUT, ITEMS};

/// Which dialect of Distributed Map the definition is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// AWS: `ItemBatcher` batches and EXPRESS children.
    Aws,
    /// moto's interpreter: one item per STANDARD child, wrapped into the batch shape.
    Emulator,
}

/// The map state's name (also its `Label`, which names its map runs).
pub const MAP_STATE: &str = "Score";
/// The child's one state.
pub const TASK_STATE: &str = "Predict";
/// The most bytes of input one child gets (`MaxInputBytesPerBatch`'s ceiling: 256 KiB).
pub const MAX_INPUT_BYTES_PER_BATCH: u64 = 256 * 1024;
/// The most children a Distributed Map runs at once.
pub const MAX_CONCURRENCY: u32 = 10_000;
/// Lambda's transient errors, retried with backoff as AWS recommends for its Lambda
/// integration; a function's own error (a bad batch) is not retried.
pub const RETRIED: [&str; 4] = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
];

/// The definition of `spec`'s state machine, in `form`.
pub fn definition(spec: &BatchSpec, form: Form) -> Value {
    let batch_input = serde_json::to_value(BatchInput {
        bucket: spec.input.bucket.clone(),
        output: spec.output.to_string(),
    })
    .unwrap_or(Value::Null);
    let task = json!({
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": spec.function_arn, "Payload.$": "$"},
        "Retry": [{
            "ErrorEquals": RETRIED,
            "IntervalSeconds": 2,
            "MaxAttempts": 6,
            "BackoffRate": 2,
        }],
        "End": true,
    });
    let mut map = json!({
        "Type": "Map",
        "Label": MAP_STATE,
        "ItemReader": {
            "Resource": "arn:aws:states:::s3:listObjectsV2",
            "Parameters": {"Bucket": spec.input.bucket, "Prefix": spec.input.prefix},
        },
        "MaxConcurrency": spec.concurrency,
        "ToleratedFailurePercentage": spec.tolerated_failure_percent,
        "ItemProcessor": {
            "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"},
            "StartAt": TASK_STATE,
            "States": {TASK_STATE: task},
        },
        "ResultPath": null,
        "End": true,
    });
    match form {
        Form::Aws => {
            map["ItemBatcher"] = json!({
                "MaxItemsPerBatch": spec.batch_size,
                "MaxInputBytesPerBatch": MAX_INPUT_BYTES_PER_BATCH,
                "BatchInput": batch_input,
            });
        }
        Form::Emulator => {
            map["ItemProcessor"]["ProcessorConfig"]["ExecutionType"] = json!("STANDARD");
            map["ItemSelector"] = json!({
                format!("{ITEMS}.$"): "States.Array($$.Map.Item.Value)",
                BATCH_INPUT: batch_input,
            });
        }
    }
    json!({
        "Comment": format!(
            "lambda-cnn batch scoring: every object under {} through {}, results under {} (made by deploy batch)",
            spec.input, spec.function_arn, spec.output
        ),
        "StartAt": MAP_STATE,
        "States": {MAP_STATE: map},
    })
}

/// Where the results of a definition this module wrote go (`BatchInput.output`), in either
/// form: how `deploy batch status ARN` finds a run's results from its state machine alone.
pub fn output_of(definition: &Value) -> Option<String> {
    let map = &definition["States"][MAP_STATE];
    [
        &map["ItemBatcher"][BATCH_INPUT],
        &map["ItemSelector"][BATCH_INPUT],
    ]
    .into_iter()
    .find_map(|v| serde_json::from_value::<BatchInput>((*v).clone()).ok())
    .map(|b| b.output)
}

/// The form a definition this module wrote is in: batched (`ItemBatcher`) is AWS's.
pub fn form_of(definition: &Value) -> Form {
    if definition["States"][MAP_STATE].get("ItemBatcher").is_some() {
        Form::Aws
    } else {
        Form::Emulator
    }
}

/// What in `definition` breaks AWS's rules for a Distributed Map over S3 objects (empty when
/// nothing does). The rules, from the Step Functions developer guide:
/// - `ProcessorConfig.Mode` is `DISTRIBUTED` and `ExecutionType` `STANDARD` or `EXPRESS`
///   (state-map-distributed.html);
/// - `ItemReader.Resource` `arn:aws:states:::s3:listObjectsV2` with a `Bucket` parameter
///   (input-output-itemreader.html);
/// - `ItemBatcher`: `MaxItemsPerBatch` and `MaxInputBytesPerBatch` positive integers, the
///   latter at most 256 KiB (input-output-itembatcher.html);
/// - `MaxConcurrency` 0 (no limit) to 10,000 (state-map-distributed.html);
/// - `ToleratedFailurePercentage` 0 to 100 (state-map-tolerated-failure.html);
/// - `ItemSelector` and `ItemBatcher.BatchInput` are JSON objects; a Task's `Resource` an ARN.
pub fn check_aws_rules(definition: &Value) -> Vec<String> {
    let mut broken = Vec::new();
    let mut need = |ok: bool, rule: &str| {
        if !ok {
            broken.push(rule.to_owned());
        }
    };
    let Some(start) = definition["StartAt"].as_str() else {
        return vec!["StartAt names no state".into()];
    };
    let map = &definition["States"][start];
    need(map["Type"] == "Map", "the first state is a Map");
    let config = &map["ItemProcessor"]["ProcessorConfig"];
    need(
        config["Mode"] == "DISTRIBUTED",
        "ProcessorConfig.Mode is DISTRIBUTED",
    );
    need(
        matches!(
            config["ExecutionType"].as_str(),
            Some("STANDARD" | "EXPRESS")
        ),
        "ProcessorConfig.ExecutionType is STANDARD or EXPRESS",
    );
    need(
        map["ItemReader"]["Resource"] == "arn:aws:states:::s3:listObjectsV2",
        "ItemReader.Resource is arn:aws:states:::s3:listObjectsV2",
    );
    need(
        map["ItemReader"]["Parameters"]["Bucket"]
            .as_str()
            .is_some_and(|b| !b.is_empty()),
        "ItemReader.Parameters.Bucket names a bucket",
    );
    if let Some(batcher) = map.get("ItemBatcher") {
        let items = batcher["MaxItemsPerBatch"].as_u64();
        need(
            items.is_some_and(|n| n >= 1),
            "ItemBatcher.MaxItemsPerBatch is a positive integer",
        );
        let bytes = batcher["MaxInputBytesPerBatch"].as_u64();
        need(
            bytes.is_some_and(|n| (1..=MAX_INPUT_BYTES_PER_BATCH).contains(&n)),
            "ItemBatcher.MaxInputBytesPerBatch is 1 to 262144 (256 KiB)",
        );
        need(
            batcher.get("BatchInput").is_none_or(Value::is_object),
            "ItemBatcher.BatchInput is a JSON object",
        );
    }
    need(
        map.get("ItemSelector").is_none_or(Value::is_object),
        "ItemSelector is a JSON object",
    );
    need(
        map["MaxConcurrency"]
            .as_u64()
            .is_some_and(|n| n <= u64::from(MAX_CONCURRENCY)),
        "MaxConcurrency is 0 to 10000",
    );
    need(
        map["ToleratedFailurePercentage"]
            .as_f64()
            .is_some_and(|p| (0.0..=100.0).contains(&p)),
        "ToleratedFailurePercentage is 0 to 100",
    );
    let child = &map["ItemProcessor"];
    let task = child["StartAt"]
        .as_str()
        .map(|s| &child["States"][s])
        .unwrap_or(&Value::Null);
    need(
        task["Type"] == "Task"
            && task["Resource"]
                .as_str()
                .is_some_and(|r| r.starts_with("arn:")),
        "the child starts with a Task whose Resource is an ARN",
    );
    broken
}

#[cfg(test)]
mod tests {
    use super::super::tests::spec;
    use super::*;

    #[test]
    fn the_aws_form_batches_keys_into_express_children_within_awss_rules() {
        let d = definition(&spec(), Form::Aws);
        assert_eq!(check_aws_rules(&d), Vec::<String>::new());
        let map = &d["States"][MAP_STATE];
        assert_eq!(map["ItemBatcher"]["MaxItemsPerBatch"], 100);
        assert_eq!(
            map["ItemBatcher"]["BatchInput"],
            json!({"bucket": "images", "output": "s3://results/run/"})
        );
        assert_eq!(
            map["ItemProcessor"]["ProcessorConfig"]["ExecutionType"],
            "EXPRESS"
        );
        assert_eq!(map["ItemReader"]["Parameters"]["Prefix"], "digits/");
        assert_eq!(map["MaxConcurrency"], 4);
        assert!(map.get("ItemSelector").is_none());
        let task = &map["ItemProcessor"]["States"][TASK_STATE];
        assert_eq!(
            task["Parameters"]["FunctionName"],
            "arn:aws:lambda:us-east-1:123456789012:function:lambda-cnn-predict:live"
        );
        assert_eq!(output_of(&d).as_deref(), Some("s3://results/run/"));
        assert_eq!(form_of(&d), Form::Aws);
    }

    #[test]
    fn the_emulator_form_hands_each_standard_child_one_item_in_the_batch_shape() {
        let d = definition(&spec(), Form::Emulator);
        // Still a definition AWS would take: only the batching differs.
        assert_eq!(check_aws_rules(&d), Vec::<String>::new());
        let map = &d["States"][MAP_STATE];
        assert!(map.get("ItemBatcher").is_none());
        assert_eq!(
            map["ItemProcessor"]["ProcessorConfig"]["ExecutionType"],
            "STANDARD"
        );
        assert_eq!(
            map["ItemSelector"]["Items.$"],
            "States.Array($$.Map.Item.Value)"
        );
        assert_eq!(map["ItemSelector"]["BatchInput"]["bucket"], "images");
        assert_eq!(map["ResultPath"], Value::Null);
        assert_eq!(output_of(&d).as_deref(), Some("s3://results/run/"));
        assert_eq!(form_of(&d), Form::Emulator);
    }

    #[test]
    fn definitions_breaking_awss_rules_are_named() {
        let mut d = definition(&spec(), Form::Aws);
        let map = &mut d["States"][MAP_STATE];
        map["ItemBatcher"]["MaxInputBytesPerBatch"] = json!(MAX_INPUT_BYTES_PER_BATCH + 1);
        map["MaxConcurrency"] = json!(10_001);
        map["ToleratedFailurePercentage"] = json!(101);
        map["ItemProcessor"]["ProcessorConfig"]["Mode"] = json!("INLINE");
        let broken = check_aws_rules(&d);
        for rule in [
            "MaxInputBytesPerBatch",
            "MaxConcurrency",
            "ToleratedFailurePercentage",
            "Mode is DISTRIBUTED",
        ] {
            assert!(
                broken.iter().any(|b| b.contains(rule)),
                "{rule}: {broken:?}"
            );
        }
        assert_eq!(broken.len(), 4, "{broken:?}");
    }
}
