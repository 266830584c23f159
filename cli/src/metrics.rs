//! The CloudWatch metrics API Gateway and Lambda publish for the stack: their
//! names, units and dimensions, in one place for `chatctl top`, which reads
//! them, and `chatctl dev`, which publishes the same ones to the emulator.
//!
//! API Gateway (WebSocket): namespace AWS/ApiGateway, dimensions ApiId and
//! Stage, plus Route when the stage has detailed metrics (aws-facts.md §10,
//! "metrics"; API Gateway developer guide, "Monitor WebSocket API execution
//! with CloudWatch metrics"). Lambda: namespace AWS/Lambda, dimension
//! FunctionName (Lambda developer guide, "Types of metrics for Lambda functions").

use aws_sdk_cloudwatch::types::{Dimension, StandardUnit};

pub const API_NAMESPACE: &str = "AWS/ApiGateway";
pub const LAMBDA_NAMESPACE: &str = "AWS/Lambda";

/// Messages sent to the `$connect` route's integration.
pub const CONNECT_COUNT: &str = "ConnectCount";
/// Messages from or to clients.
pub const MESSAGE_COUNT: &str = "MessageCount";
/// 4XX answered by API Gateway before the integration ran (throttled, refused).
pub const CLIENT_ERROR: &str = "ClientError";
/// 4XX/5XX answered by the integration.
pub const INTEGRATION_ERROR: &str = "IntegrationError";
/// Errors calling the integration (the function failed or timed out).
pub const EXECUTION_ERROR: &str = "ExecutionError";
/// Milliseconds from sending the request to the integration to its answer.
pub const INTEGRATION_LATENCY: &str = "IntegrationLatency";

pub const INVOCATIONS: &str = "Invocations";
pub const ERRORS: &str = "Errors";
pub const THROTTLES: &str = "Throttles";
pub const DURATION: &str = "Duration";

/// The unit each metric is published in.
pub fn unit_of(metric: &str) -> StandardUnit {
    match metric {
        INTEGRATION_LATENCY | DURATION => StandardUnit::Milliseconds,
        _ => StandardUnit::Count,
    }
}

/// One metric: namespace, name and dimensions (in the order they were given).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Series {
    pub namespace: String,
    pub name: String,
    pub dimensions: Vec<(String, String)>,
}

impl Series {
    pub fn new(namespace: &str, name: &str, dimensions: impl IntoIterator<Item = (String, String)>) -> Series {
        Series {
            namespace: namespace.to_string(),
            name: name.to_string(),
            dimensions: dimensions.into_iter().collect(),
        }
    }

    /// The same metric whatever the order of its dimensions (CloudWatch
    /// tells metrics apart by their set of dimensions).
    pub fn same_metric(&self, other: &Series) -> bool {
        let sorted = |series: &Series| {
            let mut dimensions = series.dimensions.clone();
            dimensions.sort();
            dimensions
        };
        self.namespace == other.namespace && self.name == other.name && sorted(self) == sorted(other)
    }
}

/// A metric's dimensions, as (name, value) pairs.
pub type Dimensions = Vec<(&'static str, String)>;

/// The stage's metrics, over all routes.
pub fn stage_dimensions(api_id: &str, stage: &str) -> Dimensions {
    vec![("ApiId", api_id.to_string()), ("Stage", stage.to_string())]
}

/// One route's metrics (published only with detailed metrics on).
pub fn route_dimensions(api_id: &str, stage: &str, route: &str) -> Dimensions {
    let mut dimensions = stage_dimensions(api_id, stage);
    dimensions.push(("Route", route.to_string()));
    dimensions
}

/// One function's metrics.
pub fn function_dimensions(function: &str) -> Dimensions {
    vec![("FunctionName", function.to_string())]
}

pub fn sdk_dimensions(dimensions: &Dimensions) -> Vec<Dimension> {
    dimensions
        .iter()
        .map(|(name, value)| Dimension::builder().name(*name).value(value).build())
        .collect()
}
