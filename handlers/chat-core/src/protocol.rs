//! The chat's wire protocol: frames clients send, events the server sends.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{ChatError, ErrorCode};

/// The actions a client may send, in the order help texts list them.
pub const ACTIONS: [&str; 3] = ["sendmessage", "getmessages", "join"];

/// `{"action":"sendmessage","message":"hi"}`, with `"to":"bob"` for a direct message.
#[derive(Debug, Deserialize)]
pub struct SendMessageRequest {
    pub message: String,
    #[serde(default)]
    pub to: Option<String>,
}

/// `{"action":"getmessages","limit":50,"before":CURSOR}` (older) or
/// `"after":ID` (what came since), and `"with":"bob"` for a direct conversation.
#[derive(Debug, Deserialize)]
pub struct GetMessagesRequest {
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub before: Option<String>,
    #[serde(default)]
    pub after: Option<String>,
    #[serde(default)]
    pub with: Option<String>,
}

/// `{"action":"join","room":"general"}`
#[derive(Debug, Deserialize)]
pub struct JoinRequest {
    pub room: String,
}

/// Parses a frame's body into a route's request: not JSON and wrong shape are
/// told apart, so the client learns which it got wrong.
pub fn parse_frame<T: DeserializeOwned>(body: Option<&str>) -> Result<T, ChatError> {
    let body = body.unwrap_or("");
    let value: serde_json::Value = serde_json::from_str(body).map_err(|e| ChatError::InvalidJson(e.to_string()))?;
    if !value.is_object() {
        return Err(ChatError::InvalidRequest("expected a JSON object".into()));
    }
    serde_json::from_value(value).map_err(|e| ChatError::InvalidRequest(e.to_string()))
}

/// A chat message as stored and as delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub from: String,
    pub text: String,
    pub ts: String,
}

/// The `error` event. The caller's identity is included where known, so a
/// confused client can tell which connection it is talking on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEvent {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// `rate_limited`: when the sender may send again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl From<&ChatError> for ErrorEvent {
    fn from(error: &ChatError) -> Self {
        ErrorEvent {
            code: error.code(),
            message: error.client_message(),
            actions: None,
            connection_id: None,
            user: None,
            room: None,
            retry_after_ms: match error {
                ChatError::RateLimited { retry_after_ms, .. } => Some(*retry_after_ms),
                _ => None,
            },
        }
    }
}

/// Everything the server sends to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerEvent {
    Message(ChatMessage),
    History {
        messages: Vec<ChatMessage>,
        /// Pass as `before` for the older page; `null` on the oldest.
        next: Option<String>,
        /// Answering `after`: pass as `after` for the newer page; absent
        /// once nothing newer is left.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        newer: Option<String>,
    },
    Joined {
        room: String,
    },
    Error(ErrorEvent),
}

impl ServerEvent {
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

impl From<&ChatError> for ServerEvent {
    fn from(error: &ChatError) -> Self {
        ServerEvent::Error(error.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn not_json_and_wrong_shape_are_told_apart() {
        let cases: [(Option<&str>, ErrorCode); 7] = [
            (None, ErrorCode::InvalidJson),
            (Some("hello"), ErrorCode::InvalidJson),
            (Some("{\"action\":"), ErrorCode::InvalidJson),
            (Some("[1,2]"), ErrorCode::InvalidRequest),
            (Some("{\"action\":\"sendmessage\"}"), ErrorCode::InvalidRequest),
            (
                Some("{\"action\":\"sendmessage\",\"message\":5}"),
                ErrorCode::InvalidRequest,
            ),
            (Some("{\"message\":\"hi\",\"to\":[\"bob\"]}"), ErrorCode::InvalidRequest),
        ];
        for (body, code) in cases {
            let err = parse_frame::<SendMessageRequest>(body).unwrap_err();
            assert_eq!(err.code(), code, "{body:?}: {err}");
        }
        let ok: SendMessageRequest =
            parse_frame(Some("{\"action\":\"sendmessage\",\"message\":\"hi\",\"extra\":1}")).unwrap();
        assert_eq!(ok.message, "hi");
        assert_eq!(ok.to, None);
    }

    #[test]
    fn events_serialise_as_documented() {
        let message = ServerEvent::Message(ChatMessage {
            id: "01J".into(),
            room: Some("lobby".into()),
            to: None,
            from: "alice".into(),
            text: "hi".into(),
            ts: "2026-01-01T00:00:00.000Z".into(),
        });
        assert_eq!(
            serde_json::to_value(&message).unwrap(),
            json!({"type":"message","id":"01J","room":"lobby","from":"alice","text":"hi","ts":"2026-01-01T00:00:00.000Z"})
        );
        let history = ServerEvent::History {
            messages: vec![],
            next: None,
            newer: None,
        };
        assert_eq!(
            serde_json::to_value(&history).unwrap(),
            json!({"type":"history","messages":[],"next":null})
        );
        let since = ServerEvent::History {
            messages: vec![],
            next: None,
            newer: Some("01K".into()),
        };
        assert_eq!(
            serde_json::to_value(&since).unwrap(),
            json!({"type":"history","messages":[],"next":null,"newer":"01K"})
        );
        let error = ServerEvent::from(&ChatError::EmptyMessage);
        assert_eq!(
            serde_json::to_value(&error).unwrap(),
            json!({"type":"error","code":"empty_message","message":"message text is empty"})
        );
    }

    #[test]
    fn long_echoed_input_is_cut_in_error_messages() {
        let err = ChatError::InvalidRoom("é".repeat(1000));
        assert!(err.client_message().len() < 320);
    }
}
