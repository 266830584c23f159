//! Metrics the handlers publish themselves, through CloudWatch's embedded
//! metric format: a JSON line on stdout that CloudWatch Logs turns into a
//! metric, with no API call and no latency ("Specification: Embedded metric
//! format", CloudWatch user guide). `chatctl dev` reads the same lines.

use std::time::SystemTime;

use serde_json::{Value, json};

/// The namespace of the chat's own metrics.
pub const NAMESPACE: &str = "chatctl";
/// Deliveries of a message that did not reach a connection still open
/// (failed or out of time; connections found gone are not counted).
pub const FAILED_DELIVERIES: &str = "FailedDeliveries";
/// The only dimension: the function that publishes it.
pub const DIMENSION: &str = "FunctionName";

/// The embedded-metric-format line that publishes `value` of the count
/// metric `name` for `function` at `at`.
pub fn embedded_count(function: &str, name: &str, value: f64, at: SystemTime) -> String {
    let mut document = json!({
        "_aws": {
            "Timestamp": crate::ids::epoch_ms(at),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[DIMENSION]],
                "Metrics": [{"Name": name, "Unit": "Count"}],
            }],
        },
        DIMENSION: function,
    });
    document[name] = Value::from(value);
    document.to_string()
}

/// Publishes `value` of `name` for the running function (named by Lambda's
/// AWS_LAMBDA_FUNCTION_NAME), on stdout, where Lambda sends it to the
/// function's log group.
pub fn publish_count(name: &str, value: f64) {
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default();
    println!("{}", embedded_count(&function, name, value, SystemTime::now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_is_one_json_line_naming_its_namespace_dimension_and_unit() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        let line = embedded_count("chat-sendmessage", FAILED_DELIVERIES, 3.0, at);
        assert!(!line.contains('\n'));
        let document: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(document["_aws"]["Timestamp"], 1_700_000_000_123_i64);
        let directive = &document["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "chatctl");
        assert_eq!(directive["Dimensions"], json!([["FunctionName"]]));
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "FailedDeliveries", "Unit": "Count"}])
        );
        assert_eq!(document["FunctionName"], "chat-sendmessage");
        assert_eq!(document["FailedDeliveries"], 3.0);
    }
}
