//! Who may do what in a batch run — three grants and what Distributed Map itself needs:
//! - the state machine's role: invoke predict's alias (that qualifier only), list the input
//!   prefix (its item reader), and start, follow and stop its own children, which AWS requires
//!   of a Distributed Map's role
//!   (<https://docs.aws.amazon.com/step-functions/latest/dg/iam-policies-eg-dist-map.html>);
//! - predict's execution role, an inline policy per state machine: read the input prefix,
//!   write the output prefix.
//!
//! Written with serde_json rather than from a template as `infra/iam/` is: the prefixes are the
//! user's text, and JSON escaping is the encoder's job.

#![warn(missing_docs)]

use serde_json::{json, Value};

use super::BatchSpec;

/// The state machine role's inline policy's name.
pub const POLICY_NAME: &str = "lambda-cnn-batch";

/// Step Functions may assume the role, for this account's state machines only (the
/// confused-deputy guard AWS recommends).
pub fn trust_policy(spec: &BatchSpec) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "states.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": spec.account}},
        }],
    })
}

/// The state machine role's permissions.
pub fn state_machine_policy(spec: &BatchSpec) -> Value {
    let p = &spec.partition;
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "InvokeTheReleasedModel",
                "Effect": "Allow",
                "Action": "lambda:InvokeFunction",
                "Resource": spec.function_arn,
            },
            {
                "Sid": "ListTheInput",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": spec.input.bucket_arn(p),
                "Condition": {"StringLike": {"s3:prefix": format!("{}*", spec.input.prefix)}},
            },
            {
                "Sid": "RunItsOwnMap",
                "Effect": "Allow",
                "Action": "states:StartExecution",
                "Resource": spec.state_machine_arn(),
            },
            {
                "Sid": "FollowItsOwnChildren",
                "Effect": "Allow",
                "Action": ["states:DescribeExecution", "states:StopExecution"],
                "Resource": spec.executions_arn(),
            },
        ],
    })
}

/// The name of predict's inline policy for this state machine's prefixes.
pub fn function_policy_name(state_machine: &str) -> String {
    format!("{state_machine}-items")
}

/// predict's grants for the run: read the images, write the results.
pub fn function_policy(spec: &BatchSpec) -> Value {
    let p = &spec.partition;
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadTheImages",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": spec.input.objects_arn(p),
            },
            {
                "Sid": "WriteTheResults",
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": spec.output.objects_arn(p),
            },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::spec;
    use super::*;

    fn actions(policy: &Value) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for s in policy["Statement"].as_array().unwrap() {
            assert_eq!(s["Effect"], "Allow");
            let resources: Vec<String> = match &s["Resource"] {
                Value::String(r) => vec![r.clone()],
                Value::Array(rs) => rs.iter().map(|r| r.as_str().unwrap().to_owned()).collect(),
                other => panic!("{other}"),
            };
            let acts: Vec<String> = match &s["Action"] {
                Value::String(a) => vec![a.clone()],
                Value::Array(a) => a.iter().map(|a| a.as_str().unwrap().to_owned()).collect(),
                other => panic!("{other}"),
            };
            for a in &acts {
                for r in &resources {
                    out.push((a.clone(), r.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn the_state_machine_may_invoke_the_alias_list_the_input_and_run_its_own_map_only() {
        let s = spec();
        let policy = state_machine_policy(&s);
        assert_eq!(
            actions(&policy),
            [
                (
                    "lambda:InvokeFunction",
                    "arn:aws:lambda:us-east-1:123456789012:function:lambda-cnn-predict:live"
                ),
                ("s3:ListBucket", "arn:aws:s3:::images"),
                (
                    "states:StartExecution",
                    "arn:aws:states:us-east-1:123456789012:stateMachine:lambda-cnn-batch"
                ),
                (
                    "states:DescribeExecution",
                    "arn:aws:states:us-east-1:123456789012:execution:lambda-cnn-batch:*"
                ),
                (
                    "states:StopExecution",
                    "arn:aws:states:us-east-1:123456789012:execution:lambda-cnn-batch:*"
                ),
            ]
            .map(|(a, r)| (a.to_owned(), r.to_owned()))
        );
        assert_eq!(
            policy["Statement"][1]["Condition"]["StringLike"]["s3:prefix"],
            "digits/*"
        );
        assert_eq!(
            trust_policy(&s)["Statement"][0]["Condition"]["StringEquals"]["aws:SourceAccount"],
            "123456789012"
        );
    }

    #[test]
    fn predict_may_read_the_input_prefix_and_write_the_output_prefix_only() {
        assert_eq!(
            actions(&function_policy(&spec())),
            [
                ("s3:GetObject", "arn:aws:s3:::images/digits/*"),
                ("s3:PutObject", "arn:aws:s3:::results/run/*"),
            ]
            .map(|(a, r)| (a.to_owned(), r.to_owned()))
        );
    }

    #[test]
    fn a_prefix_with_quotes_stays_inside_its_string() {
        let mut s = spec();
        s.input = "s3://images/a\"b/".parse().unwrap();
        let text = function_policy(&s).to_string();
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back["Statement"][0]["Resource"],
            "arn:aws:s3:::images/a\"b/*"
        );
    }
}
