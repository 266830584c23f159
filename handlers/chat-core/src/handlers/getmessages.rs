//! `getmessages`: a page of history of the caller's room, or of a direct
//! conversation with `with`, oldest first, sent to the caller only: the
//! newest messages, those `before` a cursor (older), or those `after` a
//! message id (what came since, for a client resuming after a cut).

use crate::delivery::Delivery;
use crate::error::ChatError;
use crate::event::{Response, WebSocketEvent};
use crate::handlers::{internal, run_message_route};
use crate::ids;
use crate::protocol::{ChatMessage, GetMessagesRequest, ServerEvent, parse_frame};
use crate::services::Services;
use crate::store::{ConnectionRecord, HistoryFrom};
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
    let after = request.after.as_deref().map(ids::parse_cursor).transpose()?;
    let from = match (&before, &after) {
        (Some(_), Some(_)) => {
            return Err(ChatError::InvalidRequest(
                "give `before` (older messages) or `after` (newer ones), not both".into(),
            ));
        }
        (Some(cursor), None) => HistoryFrom::Before(cursor),
        (None, Some(cursor)) => HistoryFrom::After(cursor),
        (None, None) => HistoryFrom::Latest,
    };
    let conversation = match &request.with {
        Some(other) => {
            validate::user(other)?;
            ids::direct_conversation(&caller.user, other)
        }
        None => ids::room_conversation(&caller.room),
    };
    let page = services
        .messages
        .page(&conversation, from, limit)
        .await
        .map_err(internal)?;
    let newer = matches!(from, HistoryFrom::After(_));
    let reply = history_event(page.messages, page.has_more, newer, MAX_HISTORY_EVENT_BYTES);
    services.reply(delivery, &caller.connection_id, &reply).await;
    Ok(())
}

/// The `history` event of a page read towards older messages (`newer`
/// false: `next` is the cursor for the older page) or towards newer ones
/// (`newer` true: `newer` is the cursor for the newer page). When it would
/// not fit in `max_bytes`, the messages farthest along are left for the
/// next page.
pub fn history_event(mut messages: Vec<ChatMessage>, has_more: bool, newer: bool, max_bytes: usize) -> ServerEvent {
    let mut trimmed = false;
    loop {
        let more = has_more || trimmed;
        let cursor = |m: Option<&ChatMessage>| m.filter(|_| more).map(|m| m.id.clone());
        let event = match newer {
            false => ServerEvent::History {
                next: cursor(messages.first()),
                newer: None,
                messages: messages.clone(),
            },
            true => ServerEvent::History {
                next: None,
                newer: cursor(messages.last()),
                messages: messages.clone(),
            },
        };
        if messages.len() <= 1 || event.to_json().len() <= max_bytes {
            return event;
        }
        match newer {
            false => drop(messages.remove(0)),
            true => drop(messages.pop()),
        }
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
        let event = history_event(vec![message("1", "a"), message("2", "b")], true, false, 10_000);
        assert!(matches!(event, ServerEvent::History { next: Some(ref n), newer: None, .. } if n == "1"));
        let event = history_event(vec![message("1", "a")], false, false, 10_000);
        assert!(matches!(
            event,
            ServerEvent::History {
                next: None,
                newer: None,
                ..
            }
        ));
    }

    #[test]
    fn newer_points_at_the_newest_message_when_newer_ones_exist() {
        let event = history_event(vec![message("1", "a"), message("2", "b")], true, true, 10_000);
        assert!(matches!(event, ServerEvent::History { next: None, newer: Some(ref n), .. } if n == "2"));
        let event = history_event(vec![message("1", "a")], false, true, 10_000);
        assert!(matches!(
            event,
            ServerEvent::History {
                next: None,
                newer: None,
                ..
            }
        ));
    }

    #[test]
    fn an_oversized_page_since_a_message_drops_its_newest() {
        let big = "x".repeat(1000);
        let messages: Vec<_> = (0..10).map(|i| message(&i.to_string(), &big)).collect();
        let event = history_event(messages, false, true, 3500);
        let ServerEvent::History { messages, newer, .. } = &event else {
            panic!("not history");
        };
        assert!(event.to_json().len() <= 3500);
        assert_eq!(messages[0].id, "0", "oldest kept: nothing is skipped");
        assert_eq!(newer.as_deref(), Some(messages.last().unwrap().id.as_str()));
    }

    #[test]
    fn an_oversized_page_drops_its_oldest_messages() {
        let big = "x".repeat(1000);
        let messages: Vec<_> = (0..10).map(|i| message(&i.to_string(), &big)).collect();
        let event = history_event(messages, false, false, 3500);
        let ServerEvent::History { messages, next, .. } = &event else {
            panic!("not history");
        };
        assert!(event.to_json().len() <= 3500);
        assert_eq!(messages.last().unwrap().id, "9", "newest kept");
        assert_eq!(next.as_deref(), Some(messages[0].id.as_str()));
    }
}
