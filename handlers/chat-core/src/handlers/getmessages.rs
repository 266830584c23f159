//! `getmessages`: a page of history of the caller's room, or of a direct
//! conversation with `with`, oldest first, sent to the caller only.

use crate::delivery::Delivery;
use crate::error::ChatError;
use crate::event::{Response, WebSocketEvent};
use crate::handlers::{internal, run_message_route};
use crate::ids;
use crate::protocol::{ChatMessage, GetMessagesRequest, ServerEvent, parse_frame};
use crate::services::Services;
use crate::store::ConnectionRecord;
use crate::validate;

/// API Gateway delivers at most 128 KB per message; a page is cut to fit,
/// with room to spare for the envelope.
pub const MAX_HISTORY_EVENT_BYTES: usize = 120 * 1024;

pub async fn handle(services: &Services, event: WebSocketEvent) -> Response {
    run_message_route(services, &event, history).await
}

async fn history(
    services: &Services,
    delivery: &Delivery,
    caller: &ConnectionRecord,
    body: Option<&str>,
) -> Result<(), ChatError> {
    let request: GetMessagesRequest = parse_frame(body)?;
    let limit = validate::history_limit(request.limit, services.config.history_page_size)?;
    let before = request.before.as_deref().map(ids::parse_cursor).transpose()?;
    let conversation = match &request.with {
        Some(other) => {
            validate::user(other)?;
            ids::direct_conversation(&caller.user, other)
        }
        None => ids::room_conversation(&caller.room),
    };
    let page = services
        .messages
        .page(&conversation, before.as_deref(), limit)
        .await
        .map_err(internal)?;
    let reply = history_event(page.messages, page.has_older, MAX_HISTORY_EVENT_BYTES);
    services.reply(delivery, &caller.connection_id, &reply).await;
    Ok(())
}

/// The `history` event; when it would not fit in `max_bytes`, the oldest
/// messages are left for the next page.
pub fn history_event(mut messages: Vec<ChatMessage>, has_older: bool, max_bytes: usize) -> ServerEvent {
    let mut trimmed = false;
    loop {
        let next = (has_older || trimmed)
            .then(|| messages.first().map(|m| m.id.clone()))
            .flatten();
        let event = ServerEvent::History {
            messages: messages.clone(),
            next,
        };
        if messages.len() <= 1 || event.to_json().len() <= max_bytes {
            return event;
        }
        messages.remove(0);
        trimmed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, text: &str) -> ChatMessage {
        ChatMessage {
            id: id.into(),
            room: Some("lobby".into()),
            to: None,
            from: "a".into(),
            text: text.into(),
            ts: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn next_points_at_the_oldest_message_when_older_ones_exist() {
        let event = history_event(vec![message("1", "a"), message("2", "b")], true, 10_000);
        assert!(matches!(event, ServerEvent::History { next: Some(ref n), .. } if n == "1"));
        let event = history_event(vec![message("1", "a")], false, 10_000);
        assert!(matches!(event, ServerEvent::History { next: None, .. }));
    }

    #[test]
    fn an_oversized_page_drops_its_oldest_messages() {
        let big = "x".repeat(1000);
        let messages: Vec<_> = (0..10).map(|i| message(&i.to_string(), &big)).collect();
        let event = history_event(messages, false, 3500);
        let ServerEvent::History { messages, next } = &event else {
            panic!("not history");
        };
        assert!(event.to_json().len() <= 3500);
        assert_eq!(messages.last().unwrap().id, "9", "newest kept");
        assert_eq!(next.as_deref(), Some(messages[0].id.as_str()));
    }
}
