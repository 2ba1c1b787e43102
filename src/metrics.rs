//! Custom metrics in CloudWatch Embedded Metric Format: one JSON line on stdout per record,
//! which CloudWatch Logs turns into metrics without any API call from the function.

#![warn(missing_docs)]

use serde_json::{json, Map, Value};

/// The CloudWatch namespace of every metric the functions emit.
pub const NAMESPACE: &str = "lambda-cnn";

/// A metric's unit, as CloudWatch names it.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    /// Milliseconds.
    Milliseconds,
    /// Seconds.
    Seconds,
    /// A count.
    Count,
    /// No unit (a ratio, an accuracy).
    None,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
            Unit::Count => "Count",
            Unit::None => "None",
        }
    }
}

/// One EMF record: the metrics' values with one set of dimensions.
pub fn emf_record(dimensions: &[(&str, &str)], metrics: &[(&str, Unit, f64)]) -> Value {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut record = Map::new();
    record.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [dimensions.iter().map(|(k, _)| *k).collect::<Vec<_>>()],
                "Metrics": metrics.iter().map(|(name, unit, _)| json!({"Name": name, "Unit": unit.as_str()})).collect::<Vec<_>>(),
            }],
        }),
    );
    for (k, v) in dimensions {
        record.insert((*k).into(), json!(v));
    }
    for (name, _, value) in metrics {
        record.insert((*name).into(), json!(value));
    }
    Value::Object(record)
}

/// Prints one EMF record as a line on stdout.
pub fn emit(dimensions: &[(&str, &str)], metrics: &[(&str, Unit, f64)]) {
    println!("{}", emf_record(dimensions, metrics));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_declares_each_metric_and_carries_its_value() {
        let r = emf_record(
            &[("FunctionName", "predict")],
            &[
                ("PredictLatencyMs", Unit::Milliseconds, 1.5),
                ("ColdStart", Unit::Count, 1.0),
            ],
        );
        let cw = &r["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], NAMESPACE);
        assert_eq!(cw["Dimensions"], json!([["FunctionName"]]));
        assert_eq!(
            cw["Metrics"][0],
            json!({"Name": "PredictLatencyMs", "Unit": "Milliseconds"})
        );
        assert_eq!(r["PredictLatencyMs"], 1.5);
        assert_eq!(r["FunctionName"], "predict");
        assert!(r["_aws"]["Timestamp"].as_u64().unwrap() > 1_600_000_000_000);
    }
}
