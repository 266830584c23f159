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

/// The `@connections` endpoint for replies: the override when set (local
/// dev; a stack whose execute-api endpoint is off sets its custom domain),
/// else the API's own `https://{apiId}.execute-api.{region}.{suffix}/{stage}`.
/// Not the event's `domainName` as such: behind a custom domain it names the
/// domain, where `{stage}/@connections` answers 403 or "No method found
/// matching route" (aws-facts.md §11, "custom domain and `@connections`").
pub fn callback_endpoint(
    event: &WebSocketEvent,
    override_url: Option<&str>,
    region: Option<&str>,
) -> Result<String, ChatError> {
    if let Some(url) = override_url {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let context = &event.request_context;
    let stage = context.stage.as_deref().filter(|s| !s.is_empty());
    let domain = context.domain_name.as_deref().filter(|d| !d.is_empty());
    let api_id = context.apiid.as_deref().filter(|id| !id.is_empty());
    match (domain, stage) {
        (Some(domain), Some(stage)) if domain.contains(".execute-api.") => Ok(format!("https://{domain}/{stage}")),
        (_, Some(stage)) => match (api_id, region.filter(|r| !r.is_empty())) {
            (Some(api_id), Some(region)) => {
                let (_, suffix) = partition(region);
                Ok(format!("https://{api_id}.execute-api.{region}.{suffix}/{stage}"))
            }
            _ => Err(ChatError::InvalidRequest(
                "event from a custom domain has no requestContext.apiId, or the function no AWS_REGION, to reply through".into(),
            )),
        },
        _ => Err(ChatError::InvalidRequest(
            "event has no requestContext.domainName or stage to reply through".into(),
        )),
    }
}

/// The AWS partition of a region (ARNs) and its DNS suffix (endpoints).
pub fn partition(region: &str) -> (&'static str, &'static str) {
    // Longest prefixes first: us-isob- before us-iso-.
    const PARTITIONS: [(&str, &str, &str); 6] = [
        ("cn-", "aws-cn", "amazonaws.com.cn"),
        ("us-gov-", "aws-us-gov", "amazonaws.com"),
        ("us-isob-", "aws-iso-b", "sc2s.sgov.gov"),
        ("us-isof-", "aws-iso-f", "csp.hci.ic.gov"),
        ("us-iso-", "aws-iso", "c2s.ic.gov"),
        ("eu-isoe-", "aws-iso-e", "cloud.adc-e.uk"),
    ];
    PARTITIONS
        .iter()
        .find(|(prefix, _, _)| region.starts_with(prefix))
        .map_or(("aws", "amazonaws.com"), |(_, partition, suffix)| (partition, suffix))
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

    /// A MESSAGE event as API Gateway sends it, from `domain`.
    fn event_from(domain: &str) -> WebSocketEvent {
        serde_json::from_value(serde_json::json!({
            "requestContext": {
                "routeKey": "sendmessage",
                "eventType": "MESSAGE",
                "connectionId": "c1",
                "domainName": domain,
                "stage": "dev",
                "apiId": "a1b2c3",
                "connectedAt": 1,
                "requestTimeEpoch": 1,
            },
            "isBase64Encoded": false,
        }))
        .unwrap()
    }

    #[test]
    fn replies_go_to_the_apis_own_endpoint_even_behind_a_custom_domain() {
        let own = event_from("a1b2c3.execute-api.eu-west-1.amazonaws.com");
        let expected = "https://a1b2c3.execute-api.eu-west-1.amazonaws.com/dev";
        assert_eq!(callback_endpoint(&own, None, Some("eu-west-1")).unwrap(), expected);
        // Behind chat.example.com, the event names the domain: replies
        // still go to the API's own endpoint, built from apiId and region.
        let custom = event_from("chat.example.com");
        assert_eq!(callback_endpoint(&custom, None, Some("eu-west-1")).unwrap(), expected);
        assert_eq!(
            callback_endpoint(&custom, None, Some("cn-north-1")).unwrap(),
            "https://a1b2c3.execute-api.cn-north-1.amazonaws.com.cn/dev"
        );
        // The execute-api endpoint turned off: the stack names the domain.
        assert_eq!(
            callback_endpoint(&custom, Some("https://chat.example.com/"), Some("eu-west-1")).unwrap(),
            "https://chat.example.com"
        );
        assert!(
            callback_endpoint(&custom, None, None).is_err(),
            "no region to build it from"
        );
    }
}
