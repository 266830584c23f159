//! WebSocket proxy events as API Gateway sends them to Lambda, with fixed
//! values for tests: built by `apigw_events`, as `chatctl dev`'s gateway
//! builds them from real connections.

use apigw_events::{Params, Request};
use serde_json::{Value, json};

pub const API_ID: &str = "abcdef1234";
pub const STAGE: &str = "dev";
pub const CONNECTED_AT: i64 = 1_763_783_641_000;

fn request(connection_id: &str) -> Request<'_> {
    Request {
        api_id: API_ID,
        stage: STAGE,
        region: "us-east-1",
        connection_id,
        connected_at: CONNECTED_AT,
        request_id: "Rx7bYH4LIAMFkTw=",
        request_time: "22/Nov/2026:03:54:01 +0000",
        request_time_epoch: CONNECTED_AT + 5,
        source_ip: "127.0.0.1",
        user_agent: "chat-testkit",
    }
}

fn request_context(connection_id: &str, route_key: &str, event_type: &str, authorizer: Option<(&str, &str)>) -> Value {
    let mut context = request(connection_id).context(route_key, event_type);
    if let Some((user, room)) = authorizer {
        context["authorizer"] = json!({"principalId": user, "integrationLatency": 12, "user": user, "room": room});
    }
    context
}

/// The handshake's headers, as a browser-like client sends them.
fn handshake_headers(protocol: Option<&str>) -> Params {
    let mut headers = vec![
        ("Host".to_string(), request("").domain_name()),
        (
            "Sec-WebSocket-Extensions".into(),
            "permessage-deflate; client_max_window_bits".into(),
        ),
        ("Sec-WebSocket-Key".into(), "dGhlIHNhbXBsZSBub25jZQ==".into()),
        ("Sec-WebSocket-Version".into(), "13".into()),
        ("X-Forwarded-For".into(), "127.0.0.1".into()),
        ("X-Forwarded-Port".into(), "443".into()),
        ("X-Forwarded-Proto".into(), "https".into()),
    ];
    if let Some(protocol) = protocol {
        headers.push(("Sec-WebSocket-Protocol".into(), protocol.into()));
    }
    Params::from_pairs(headers)
}

/// `$connect`, after the authorizer allowed `user` into `room`.
/// `query` and `protocol` are what the client sent.
pub fn connect(
    connection_id: &str,
    authorizer: Option<(&str, &str)>,
    query: &[(&str, &str)],
    protocol: Option<&str>,
) -> Value {
    apigw_events::connect(
        request_context(connection_id, "$connect", "CONNECT", authorizer),
        &handshake_headers(protocol),
        &Params::from_pairs(query.iter().copied()),
    )
}

/// A text frame routed to `route_key`.
pub fn message(connection_id: &str, route_key: &str, body: &str, authorizer: Option<(&str, &str)>) -> Value {
    apigw_events::message(
        request_context(connection_id, route_key, "MESSAGE", authorizer),
        "Rx7bYcYBoAMCJfg=",
        body,
    )
}

/// `$disconnect` after the client closed.
pub fn disconnect(connection_id: &str, authorizer: Option<(&str, &str)>) -> Value {
    apigw_events::disconnect(
        request_context(connection_id, "$disconnect", "DISCONNECT", authorizer),
        1000,
        "Client-side close frame status code",
    )
}

/// The REQUEST authorizer's event for a `$connect`.
pub fn authorizer_request(query: &[(&str, &str)], protocol: Option<&str>) -> Value {
    apigw_events::authorizer_request(
        request_context("TWegAcC4EowCHnA=", "$connect", "CONNECT", None),
        &format!("arn:aws:execute-api:us-east-1:123456789012:{API_ID}/{STAGE}/$connect"),
        &handshake_headers(protocol),
        &Params::from_pairs(query.iter().copied()),
    )
}
