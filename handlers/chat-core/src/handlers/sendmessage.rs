//! `sendmessage`: stores a room or direct message and delivers it to every
//! target connection, the sender's included.
//!
//! Per room message: one GetItem (the sender's current room), then the write
//! and the room Query side by side, then the deliveries in parallel.

use std::time::{Duration, SystemTime};

use crate::delivery::Delivery;
use crate::error::ChatError;
use crate::event::{Response, WebSocketEvent};
use crate::handlers::{internal, run_message_route};
use crate::ids;
use crate::protocol::{ChatMessage, SendMessageRequest, ServerEvent, parse_frame};
use crate::services::Services;
use crate::store::ConnectionRecord;
use crate::validate;

pub async fn handle(services: &Services, event: WebSocketEvent) -> Response {
    run_message_route(services, &event, send).await
}

async fn send(
    services: &Services,
    delivery: &Delivery,
    sender: &ConnectionRecord,
    body: Option<&str>,
) -> Result<(), ChatError> {
    let request: SendMessageRequest = parse_frame(body)?;
    validate::message_text(&request.message, services.config.max_message_bytes)?;
    if let Some(to) = &request.to {
        validate::user(to)?;
    }
    let now = SystemTime::now();
    let (id, ts) = ids::new_message_id(now);
    let retention = Duration::from_secs(u64::from(services.config.message_retention_days) * 86_400);
    let ttl = ids::expiry_epoch_seconds(now, retention);
    let connections = &services.connections;

    let (message, targets) = match request.to {
        None => {
            let message = ChatMessage {
                id,
                room: Some(sender.room.clone()),
                to: None,
                from: sender.user.clone(),
                text: request.message,
                ts,
            };
            let conversation = ids::room_conversation(&sender.room);
            let (stored, members) = tokio::join!(
                services.messages.put(&conversation, &message, ttl),
                connections.in_room(&sender.room)
            );
            stored.map_err(internal)?;
            (message, members.map_err(internal)?)
        }
        Some(to) => {
            // Both sides' connections are known before anything is written, so
            // a message to nobody is refused without a trace.
            let (theirs, ours) = tokio::join!(connections.of_user(&to), connections.of_user(&sender.user));
            let mut targets = theirs.map_err(internal)?;
            if targets.is_empty() {
                return Err(ChatError::UnknownRecipient(to));
            }
            targets.extend(ours.map_err(internal)?);
            targets.sort();
            targets.dedup();
            let message = ChatMessage {
                id,
                room: None,
                to: Some(to),
                from: sender.user.clone(),
                text: request.message,
                ts,
            };
            let conversation = ids::direct_conversation(&sender.user, message.to.as_deref().unwrap_or_default());
            services
                .messages
                .put(&conversation, &message, ttl)
                .await
                .map_err(internal)?;
            (message, targets)
        }
    };

    let payload = ServerEvent::Message(message).to_json();
    let report = delivery.send_all(&targets, &payload).await;
    for (connection_id, error) in &report.failed {
        tracing::warn!(connection_id, %error, "message not delivered");
    }
    services.prune(&report.gone).await;
    tracing::info!(
        targets = targets.len(),
        delivered = report.delivered,
        gone = report.gone.len(),
        failed = report.failed.len(),
        "message sent"
    );
    Ok(())
}
