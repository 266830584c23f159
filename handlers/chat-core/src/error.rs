//! Errors a client can cause or see. Each maps to a stable `code` in the
//! `error` event, so clients can act on it without parsing the message.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The stable codes of `{"type":"error","code":…}` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not JSON.
    InvalidJson,
    /// JSON, but a field is missing or has the wrong type.
    InvalidRequest,
    /// No route for the frame's `action`.
    UnknownAction,
    EmptyMessage,
    MessageTooLarge,
    InvalidRoom,
    InvalidUser,
    /// A direct message to a user with no open connection.
    UnknownRecipient,
    InvalidLimit,
    InvalidCursor,
    /// The sender is over its messages per minute; `retry_after_ms` says when it may send again.
    RateLimited,
    /// The connection is not (or no longer) registered.
    NotConnected,
    /// The message was stored, but the function ran out of time before it
    /// reached every connection; the rest can read it in the history.
    DeliveryIncomplete,
    /// Something on our side failed; retrying may help.
    InternalError,
}

#[derive(Debug, Error, Clone, PartialEq)]
pub enum ChatError {
    #[error("frame is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("message text is empty")]
    EmptyMessage,
    #[error("message text is {actual} bytes; the limit is {limit}")]
    MessageTooLarge { actual: usize, limit: usize },
    #[error("invalid room name {0:?}: use 1-64 characters from A-Z, a-z, 0-9, '_' and '-'")]
    InvalidRoom(String),
    #[error("invalid user name {0:?}: use 1-64 characters from A-Z, a-z, 0-9, '_', '-', '.' and '@'")]
    InvalidUser(String),
    #[error("user {0:?} has no open connection")]
    UnknownRecipient(String),
    #[error("invalid limit {0}: ask for 1 to 100 messages")]
    InvalidLimit(i64),
    #[error("invalid cursor {0:?}: pass the `next` value of a previous history page")]
    InvalidCursor(String),
    #[error("this connection is not registered; reconnect")]
    NotConnected,
    #[error(
        "you sent {limit} messages this minute, the most a user may; try again in {} s",
        retry_after_ms.div_ceil(1000)
    )]
    RateLimited { limit: u32, retry_after_ms: u64 },
    #[error(
        "the message was stored but reached only {delivered} of {targets} connections before the function's \
         timeout; the others can read it with getmessages"
    )]
    DeliveryIncomplete { delivered: usize, targets: usize },
    #[error("internal error; try again")]
    Internal(String),
}

impl ChatError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ChatError::InvalidJson(_) => ErrorCode::InvalidJson,
            ChatError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            ChatError::EmptyMessage => ErrorCode::EmptyMessage,
            ChatError::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            ChatError::InvalidRoom(_) => ErrorCode::InvalidRoom,
            ChatError::InvalidUser(_) => ErrorCode::InvalidUser,
            ChatError::UnknownRecipient(_) => ErrorCode::UnknownRecipient,
            ChatError::InvalidLimit(_) => ErrorCode::InvalidLimit,
            ChatError::InvalidCursor(_) => ErrorCode::InvalidCursor,
            ChatError::NotConnected => ErrorCode::NotConnected,
            ChatError::RateLimited { .. } => ErrorCode::RateLimited,
            ChatError::DeliveryIncomplete { .. } => ErrorCode::DeliveryIncomplete,
            ChatError::Internal(_) => ErrorCode::InternalError,
        }
    }

    /// The message shown to the client. Internal details stay in the logs.
    pub fn client_message(&self) -> String {
        let text = self.to_string();
        // Echoed input is cut short so an error never outgrows the input it reports.
        if text.len() > 300 {
            let mut end = 300;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &text[..end])
        } else {
            text
        }
    }
}
