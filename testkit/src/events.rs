//! WebSocket proxy events as API Gateway sends them to Lambda
//! (aws-facts.md §2; the aws_lambda_events fixtures).

use serde_json::{Map, Value, json};

pub const API_ID: &str = "abcdef1234";
pub const STAGE: &str = "dev";
pub const CONNECTED_AT: i64 = 1_763_783_641_000;

fn request_context(connection_id: &str, route_key: &str, event_type: &str, authorizer: Option<(&str, &str)>) -> Value {
    let mut context = json!({
        "routeKey": route_key,
        "eventType": event_type,
        "extendedRequestId": "Rx7bYH4LIAMFkTw=",
        "requestTime": "22/Nov/2026:03:54:01 +0000",
        "messageDirection": "IN",
        "stage": STAGE,
        "connectedAt": CONNECTED_AT,
        "requestTimeEpoch": CONNECTED_AT + 5,
        "identity": {"sourceIp": "127.0.0.1", "userAgent": "chat-testkit"},
        "requestId": "Rx7bYH4LIAMFkTw=",
        "domainName": format!("{API_ID}.execute-api.us-east-1.amazonaws.com"),
        "connectionId": connection_id,
        "apiId": API_ID,
    });
    if let Some((user, room)) = authorizer {
        context["authorizer"] = json!({"principalId": user, "integrationLatency": 12, "user": user, "room": room});
    }
    context
}

/// `$connect`, after the authorizer allowed `user` into `room`.
/// `query` and `protocol` are what the client sent.
pub fn connect(
    connection_id: &str,
    authorizer: Option<(&str, &str)>,
    query: &[(&str, &str)],
    protocol: Option<&str>,
) -> Value {
    let mut headers = json!({
        "Host": format!("{API_ID}.execute-api.us-east-1.amazonaws.com"),
        "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "X-Forwarded-For": "127.0.0.1",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
    });
    if let Some(protocol) = protocol {
        headers["Sec-WebSocket-Protocol"] = json!(protocol);
    }
    let multi: Map<String, Value> = headers
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), json!([v])))
        .collect();
    let mut event = json!({
        "headers": headers,
        "multiValueHeaders": multi,
        "requestContext": request_context(connection_id, "$connect", "CONNECT", authorizer),
        "isBase64Encoded": false,
    });
    if !query.is_empty() {
        let single: Map<String, Value> = query.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        let multi: Map<String, Value> = query.iter().map(|(k, v)| (k.to_string(), json!([v]))).collect();
        event["queryStringParameters"] = Value::Object(single);
        event["multiValueQueryStringParameters"] = Value::Object(multi);
    }
    event
}

/// A text frame routed to `route_key`.
pub fn message(connection_id: &str, route_key: &str, body: &str, authorizer: Option<(&str, &str)>) -> Value {
    let mut context = request_context(connection_id, route_key, "MESSAGE", authorizer);
    context["messageId"] = json!("Rx7bYcYBoAMCJfg=");
    json!({
        "requestContext": context,
        "body": body,
        "isBase64Encoded": false,
    })
}

/// `$disconnect` after the client closed.
pub fn disconnect(connection_id: &str, authorizer: Option<(&str, &str)>) -> Value {
    let mut context = request_context(connection_id, "$disconnect", "DISCONNECT", authorizer);
    context["disconnectStatusCode"] = json!(1000);
    context["disconnectReason"] = json!("Client-side close frame status code");
    json!({
        "headers": {"Host": format!("{API_ID}.execute-api.us-east-1.amazonaws.com"), "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""},
        "multiValueHeaders": {"Host": [format!("{API_ID}.execute-api.us-east-1.amazonaws.com")], "x-api-key": [""], "X-Forwarded-For": [""], "x-restapi": [""]},
        "requestContext": context,
        "isBase64Encoded": false,
    })
}

/// The REQUEST authorizer's event for a `$connect`.
pub fn authorizer_request(query: &[(&str, &str)], protocol: Option<&str>) -> Value {
    let mut event = connect("TWegAcC4EowCHnA=", None, query, protocol);
    event["type"] = json!("REQUEST");
    event["methodArn"] = json!(format!(
        "arn:aws:execute-api:us-east-1:123456789012:{API_ID}/{STAGE}/$connect"
    ));
    event["stageVariables"] = json!({});
    event
}
