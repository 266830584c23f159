//! Reading what API Gateway sends: the WebSocket proxy event, the parameters
//! a client passes on connect, and building the replies.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use aws_lambda_events::query_map::QueryMap;

use crate::error::ChatError;
use crate::validate::DEFAULT_ROOM;

pub type WebSocketEvent = ApiGatewayWebsocketProxyRequest;
pub type Response = ApiGatewayProxyResponse;

pub const PROTOCOL_HEADER: &str = "sec-websocket-protocol";

/// Keys of the authorizer context that every event of a connection carries.
pub mod context {
    pub const USER: &str = "user";
    pub const ROOM: &str = "room";
}

pub fn connection_id(event: &WebSocketEvent) -> Result<&str, ChatError> {
    event
        .request_context
        .connection_id
        .as_deref()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ChatError::InvalidRequest("event has no requestContext.connectionId".into()))
}

/// A string value the authorizer put in the connection's context.
pub fn authorizer_value(event: &WebSocketEvent, key: &str) -> Option<String> {
    event
        .request_context
        .authorizer
        .fields
        .get(key)
        .and_then(|value| value.as_str())
        .map(str::to_string)
}

/// The `@connections` endpoint for replies: the override when set (local dev),
/// else the API's own `https://{domainName}/{stage}`.
pub fn callback_endpoint(event: &WebSocketEvent, override_url: Option<&str>) -> Result<String, ChatError> {
    if let Some(url) = override_url {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let context = &event.request_context;
    match (context.domain_name.as_deref(), context.stage.as_deref()) {
        (Some(domain), Some(stage)) if !domain.is_empty() && !stage.is_empty() => {
            Ok(format!("https://{domain}/{stage}"))
        }
        _ => Err(ChatError::InvalidRequest(
            "event has no requestContext.domainName or stage to reply through".into(),
        )),
    }
}

/// What a client passes when it connects: `?token=…&room=…` (or `?user=…` in
/// auth mode `none`), or `Sec-WebSocket-Protocol: CREDENTIAL, ROOM` for
/// browsers, which cannot set other headers.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectParams {
    pub credential: Option<String>,
    pub room: String,
    /// The subprotocols the client offered; the first is echoed back.
    pub protocols: Option<Vec<String>>,
}

impl ConnectParams {
    /// `credential_key` is the query parameter holding the credential: `token` or `user`.
    pub fn parse(headers: &HeaderMap, query: &QueryMap, credential_key: &str) -> Result<Self, ChatError> {
        let protocols = match headers.get(PROTOCOL_HEADER) {
            None => None,
            Some(value) => Some(parse_protocols(value)?),
        };
        let from_query = |key: &str| query.first(key).filter(|v| !v.is_empty()).map(str::to_string);
        let from_protocol = |index: usize| protocols.as_ref().and_then(|p| p.get(index).cloned());
        Ok(ConnectParams {
            credential: from_query(credential_key).or_else(|| from_protocol(0)),
            room: from_query("room")
                .or_else(|| from_protocol(1))
                .unwrap_or_else(|| DEFAULT_ROOM.to_string()),
            protocols,
        })
    }
}

/// `Sec-WebSocket-Protocol: A, B`: one or two non-empty values.
fn parse_protocols(value: &HeaderValue) -> Result<Vec<String>, ChatError> {
    let invalid =
        || ChatError::InvalidRequest("Sec-WebSocket-Protocol must be `CREDENTIAL` or `CREDENTIAL, ROOM`".into());
    let text = value.to_str().map_err(|_| invalid())?;
    let values: Vec<String> = text.split(',').map(|v| v.trim().to_string()).collect();
    if values.len() > 2 || values.iter().any(String::is_empty) {
        return Err(invalid());
    }
    Ok(values)
}

pub fn response(status: i64) -> Response {
    let mut response = Response::default();
    response.status_code = status;
    response
}

/// A `$connect` refusal; API Gateway passes only the status to the client,
/// the body helps whoever reads the function's logs or tests it.
pub fn response_with_body(status: i64, body: String) -> Response {
    let mut response = response(status);
    response.body = Some(Body::Text(body));
    response
}

pub fn response_with_protocol(status: i64, protocol: &str) -> Response {
    let mut response = response(status);
    if let Ok(value) = HeaderValue::from_str(protocol) {
        response.headers.insert(PROTOCOL_HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn query(pairs: &[(&str, &str)]) -> QueryMap {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        QueryMap::from(map)
    }

    fn headers(protocol: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(p) = protocol {
            headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
        }
        headers
    }

    #[test]
    fn query_string_wins_and_room_defaults_to_lobby() {
        let params = ConnectParams::parse(&headers(None), &query(&[("token", "T")]), "token").unwrap();
        assert_eq!(params.credential.as_deref(), Some("T"));
        assert_eq!(params.room, "lobby");
        assert_eq!(params.protocols, None);
        let params =
            ConnectParams::parse(&headers(None), &query(&[("token", "T"), ("room", "general")]), "token").unwrap();
        assert_eq!(params.room, "general");
    }

    #[test]
    fn subprotocol_carries_credential_and_room() {
        let params = ConnectParams::parse(&headers(Some("T, general")), &query(&[]), "token").unwrap();
        assert_eq!(params.credential.as_deref(), Some("T"));
        assert_eq!(params.room, "general");
        assert_eq!(params.protocols, Some(vec!["T".to_string(), "general".to_string()]));
    }

    #[test]
    fn malformed_subprotocols_are_rejected() {
        for bad in ["", " , ", "a,,b", "a, b, c", "T,"] {
            assert!(
                ConnectParams::parse(&headers(Some(bad)), &query(&[]), "token").is_err(),
                "{bad:?}"
            );
        }
    }
}
