//! The events API Gateway sends a WebSocket API's Lambda functions
//! (aws-facts.md §2; the aws_lambda_events fixtures): one builder, used by
//! `chatctl dev`'s gateway with what a connection really sends, and by the
//! test kit with fixed values.

use serde_json::{Map, Value, json};

/// What every event of one request says about it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub api_id: &'a str,
    pub stage: &'a str,
    pub region: &'a str,
    pub connection_id: &'a str,
    /// Epoch milliseconds.
    pub connected_at: i64,
    pub request_id: &'a str,
    /// Common Log Format: `22/Nov/2026:03:54:01 +0000`.
    pub request_time: &'a str,
    /// Epoch milliseconds.
    pub request_time_epoch: i64,
    pub source_ip: &'a str,
    pub user_agent: &'a str,
}

impl Request<'_> {
    /// The API's own host name.
    pub fn domain_name(&self) -> String {
        format!("{}.execute-api.{}.amazonaws.com", self.api_id, self.region)
    }

    /// The `requestContext` of an event on `route_key` (`CONNECT`,
    /// `MESSAGE` or `DISCONNECT`).
    pub fn context(&self, route_key: &str, event_type: &str) -> Value {
        json!({
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": self.request_id,
            "requestTime": self.request_time,
            "messageDirection": "IN",
            "stage": self.stage,
            "connectedAt": self.connected_at,
            "requestTimeEpoch": self.request_time_epoch,
            "identity": {"sourceIp": self.source_ip, "userAgent": self.user_agent},
            "requestId": self.request_id,
            "domainName": self.domain_name(),
            "connectionId": self.connection_id,
            "apiId": self.api_id,
        })
    }
}

/// Headers or query parameters in API Gateway's two forms: the last value
/// of each name, and every value of each name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    pub single: Map<String, Value>,
    pub multi: Map<String, Value>,
}

impl Params {
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Params {
        let mut params = Params::default();
        for (name, value) in pairs {
            let (name, value) = (name.into(), value.into());
            params.single.insert(name.clone(), json!(value));
            if let Some(list) = params.multi.entry(name).or_insert_with(|| json!([])).as_array_mut() {
                list.push(json!(value));
            }
        }
        params
    }

    pub fn is_empty(&self) -> bool {
        self.single.is_empty()
    }
}

/// The `$connect` event: `context` from [`Request::context`] (with the
/// authorizer's context added, if any), the handshake's headers and query.
pub fn connect(context: Value, headers: &Params, query: &Params) -> Value {
    let mut event = json!({
        "headers": headers.single,
        "multiValueHeaders": headers.multi,
        "requestContext": context,
        "isBase64Encoded": false,
    });
    add_query(&mut event, query);
    event
}

/// The REQUEST authorizer's event for a `$connect` to `method_arn`.
pub fn authorizer_request(context: Value, method_arn: &str, headers: &Params, query: &Params) -> Value {
    let mut event = json!({
        "type": "REQUEST",
        "methodArn": method_arn,
        "headers": headers.single,
        "multiValueHeaders": headers.multi,
        "stageVariables": {},
        "requestContext": context,
    });
    add_query(&mut event, query);
    event
}

fn add_query(event: &mut Value, query: &Params) {
    if !query.is_empty() {
        event["queryStringParameters"] = Value::Object(query.single.clone());
        event["multiValueQueryStringParameters"] = Value::Object(query.multi.clone());
    }
}

/// A text frame routed by `context`'s route key.
pub fn message(mut context: Value, message_id: &str, body: &str) -> Value {
    context["messageId"] = json!(message_id);
    json!({"requestContext": context, "body": body, "isBase64Encoded": false})
}

/// `$disconnect`, with the close's status code and reason; its headers are
/// API Gateway's own, not the client's.
pub fn disconnect(mut context: Value, status_code: u16, reason: &str) -> Value {
    context["disconnectStatusCode"] = json!(status_code);
    context["disconnectReason"] = json!(reason);
    let host = context["domainName"].clone();
    json!({
        "headers": {"Host": host, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""},
        "multiValueHeaders": {"Host": [host], "x-api-key": [""], "X-Forwarded-For": [""], "x-restapi": [""]},
        "requestContext": context,
        "isBase64Encoded": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request<'static> {
        Request {
            api_id: "abc",
            stage: "dev",
            region: "eu-west-1",
            connection_id: "c1=",
            connected_at: 1,
            request_id: "r1",
            request_time: "01/Jan/1970:00:00:00 +0000",
            request_time_epoch: 2,
            source_ip: "127.0.0.1",
            user_agent: "test",
        }
    }

    #[test]
    fn events_have_api_gateways_shapes() {
        let query = Params::from_pairs([("room", "a"), ("room", "b"), ("token", "t")]);
        assert_eq!(query.single["room"], "b");
        assert_eq!(query.multi["room"], json!(["a", "b"]));
        let connect = connect(request().context("$connect", "CONNECT"), &Params::default(), &query);
        assert_eq!(
            connect["requestContext"]["domainName"],
            "abc.execute-api.eu-west-1.amazonaws.com"
        );
        assert_eq!(connect["queryStringParameters"]["token"], "t");
        let none = super::connect(
            request().context("$connect", "CONNECT"),
            &Params::default(),
            &Params::default(),
        );
        assert!(
            none.get("queryStringParameters").is_none(),
            "absent, not empty, without a query"
        );
        let message = message(request().context("join", "MESSAGE"), "m1", "{}");
        assert_eq!(message["requestContext"]["messageId"], "m1");
        let gone = disconnect(request().context("$disconnect", "DISCONNECT"), 1001, "Going away");
        assert_eq!(gone["requestContext"]["disconnectStatusCode"], 1001);
        assert_eq!(gone["headers"]["Host"], "abc.execute-api.eu-west-1.amazonaws.com");
        let authorizer = authorizer_request(
            request().context("$connect", "CONNECT"),
            "arn",
            &Params::default(),
            &query,
        );
        assert_eq!(
            (authorizer["type"].as_str(), authorizer["methodArn"].as_str()),
            (Some("REQUEST"), Some("arn"))
        );
    }
}
