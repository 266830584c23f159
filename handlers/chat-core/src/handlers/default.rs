//! `$default`: every frame no route matched. Answers with an `error` event that
//! names the valid actions and who the caller is.

use crate::error::ErrorCode;
use crate::event::{self, Response, WebSocketEvent, context};
use crate::protocol::{ACTIONS, ErrorEvent, ServerEvent};
use crate::services::Services;

pub async fn handle(services: &Services, event: WebSocketEvent) -> Response {
    let connection_id = match event::connection_id(&event) {
        Ok(id) => id,
        Err(error) => {
            tracing::error!(%error, "not a WebSocket event");
            return event::response(400);
        }
    };
    let delivery = match services.delivery_for(&event) {
        Ok(delivery) => delivery,
        Err(error) => {
            tracing::error!(%error, "no @connections endpoint to reply through");
            return event::response(500);
        }
    };
    // The current room lives in the record (join changes it); the authorizer
    // context is the fallback when the record cannot be read.
    let record = services.connections.get(connection_id).await.ok().flatten();
    let user = record
        .as_ref()
        .map(|r| r.user.clone())
        .or_else(|| event::authorizer_value(&event, context::USER));
    let room = record
        .as_ref()
        .map(|r| r.room.clone())
        .or_else(|| event::authorizer_value(&event, context::ROOM));

    let (code, message) = explain(event.body.as_deref());
    tracing::info!(connection_id, ?code, "unrouted frame");
    let reply = ServerEvent::Error(ErrorEvent {
        code,
        message,
        actions: Some(ACTIONS.iter().map(|a| a.to_string()).collect()),
        connection_id: Some(connection_id.to_string()),
        user,
        room,
        retry_after_ms: None,
    });
    services.reply(&delivery, connection_id, &reply).await;
    event::response(200)
}

/// Why the frame matched no route, in words a client developer can act on.
fn explain(body: Option<&str>) -> (ErrorCode, String) {
    let valid = ACTIONS.join(", ");
    let example = r#"{"action":"sendmessage","message":"hi"}"#;
    match serde_json::from_str::<serde_json::Value>(body.unwrap_or("")) {
        Err(_) => (
            ErrorCode::InvalidJson,
            format!("frames must be JSON objects like {example}; valid actions: {valid}"),
        ),
        Ok(value) => match value.get("action") {
            Some(serde_json::Value::String(action)) => {
                let shown: String = action.chars().take(64).collect();
                (
                    ErrorCode::UnknownAction,
                    format!("unknown action {shown:?}; valid actions: {valid}"),
                )
            }
            Some(_) => (
                ErrorCode::UnknownAction,
                format!("`action` must be a string; valid actions: {valid}"),
            ),
            None => (
                ErrorCode::UnknownAction,
                format!("the frame has no `action`; valid actions: {valid}, e.g. {example}"),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explanations() {
        assert_eq!(explain(Some("hello")).0, ErrorCode::InvalidJson);
        assert_eq!(explain(None).0, ErrorCode::InvalidJson);
        let (code, message) = explain(Some(r#"{"action":"dance"}"#));
        assert_eq!(code, ErrorCode::UnknownAction);
        assert!(message.contains("\"dance\"") && message.contains("sendmessage, getmessages, join"));
        assert!(explain(Some(r#"{"message":"hi"}"#)).1.contains("no `action`"));
        assert!(explain(Some(r#"{"action":5}"#)).1.contains("must be a string"));
    }
}
