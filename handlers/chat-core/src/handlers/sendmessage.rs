//! `sendmessage`: stores a room or direct message and delivers it to every
//! target connection, the sender's included.
//!
//! Per room message: one GetItem (the sender's current room), then side by
//! side the count against the sender's per-minute limit (when one is set,
//! `[limits] messages_per_minute_per_user`) followed by the write, and the
//! room's members (a Query of the room index, then a
//! strongly consistent BatchGetItem of what it lists), then the deliveries
//! in parallel.
//!
//! The room and user indexes are eventually consistent both ways
//! (aws-facts.md §10 "DynamoDB GSI", §11 "GSI staleness"): a connection made
//! or moved a moment ago may be missing there, and one that just left may
//! still be listed. So the sender's own connection is always a target, a
//! direct message to a user the index does not show yet asks again for a
//! while before it is refused, and a room's listed members are checked
//! against the table, so that who left the room gets none of its messages.

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

/// How long a direct message waits for its recipient's connections to reach
/// the user index: DynamoDB propagates to a GSI "within a fraction of a
/// second" normally (developer guide, GSI read consistency).
const RECIPIENT_INDEX_LAG: Duration = Duration::from_secs(2);
/// Deliveries stop this long before the invocation times out (a quarter of
/// the time left at most, so that a short timeout still delivers), to leave
/// time to tell the sender.
const DELIVERY_MARGIN: Duration = Duration::from_secs(1);

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
    // Counted side by side with finding the targets; nothing is stored
    // or sent before it passes.
    let admitted = admit(services, sender);
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
            let members = async {
                let listed = connections.in_room(&sender.room).await?;
                connections.still_in_room(&sender.room, listed).await
            };
            let store = async {
                admitted.await?;
                services
                    .messages
                    .put(&conversation, &message, ttl)
                    .await
                    .map_err(internal)
            };
            let (stored, members) = tokio::join!(store, members);
            stored?;
            (message, with_sender_first(sender, members.map_err(internal)?))
        }
        Some(to) => {
            // Both sides' connections are known before anything is written, so
            // a message to nobody is refused without a trace.
            let (theirs, ours, admitted) = tokio::join!(
                recipient_connections(services, &to),
                connections.of_user(&sender.user),
                admitted
            );
            admitted?;
            let mut targets = theirs.map_err(internal)?;
            if targets.is_empty() {
                return Err(ChatError::UnknownRecipient(to));
            }
            targets.extend(ours.map_err(internal)?);
            let targets = with_sender_first(sender, targets);
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
    let stop_at = crate::runtime::deadline().map(|deadline| {
        let left = deadline.duration_since(SystemTime::now()).unwrap_or_default();
        deadline - DELIVERY_MARGIN.min(left / 4)
    });
    // The fan-out's CPU, per delivery, is what bounds a room's size at a
    // function's memory (its share of a vCPU); `chatctl` reads it from this line.
    let cpu_before = crate::cpu::process_time();
    let report = delivery.send_all(&targets, &payload, stop_at).await;
    let fanout_cpu_us = (crate::cpu::process_time() - cpu_before).as_micros() as u64;
    for (connection_id, error) in &report.failed {
        tracing::warn!(connection_id, %error, "message not delivered");
    }
    tracing::info!(
        targets = targets.len(),
        delivered = report.delivered,
        gone = report.gone.len(),
        failed = report.failed.len(),
        out_of_time = report.out_of_time,
        fanout_cpu_us,
        "message sent"
    );
    let undelivered = report.failed.len() + report.out_of_time;
    if undelivered > 0 {
        // For the stack's failed-deliveries alarm.
        crate::metrics::publish_count(crate::metrics::FAILED_DELIVERIES, undelivered as f64);
    }
    if report.out_of_time > 0 {
        // No time to prune: later messages find them gone again.
        return Err(ChatError::DeliveryIncomplete {
            delivered: report.delivered,
            targets: targets.len(),
        });
    }
    services.prune(&report.gone).await;
    Ok(())
}

/// Counts the message against the sender's per-minute limit, when one is
/// set; `rate_limited` when over it.
async fn admit(services: &Services, sender: &ConnectionRecord) -> Result<(), ChatError> {
    let limit = services.config.messages_per_minute_per_user;
    if limit == 0 {
        return Ok(());
    }
    match services
        .connections
        .count_message(&sender.user, limit)
        .await
        .map_err(internal)?
    {
        None => Ok(()),
        Some(retry_after_ms) => Err(ChatError::RateLimited { limit, retry_after_ms }),
    }
}

/// The sender's connection first (its echo goes out first), then the
/// others, each once: the index may not show the sender's yet.
fn with_sender_first(sender: &ConnectionRecord, others: Vec<String>) -> Vec<String> {
    let mut targets = vec![sender.connection_id.clone()];
    let mut others = others;
    others.sort();
    others.dedup();
    targets.extend(others.into_iter().filter(|id| *id != sender.connection_id));
    targets
}

/// A user's connections by the user index, asked again for up to
/// [`RECIPIENT_INDEX_LAG`] while it shows none: the user may have connected
/// a moment ago.
async fn recipient_connections(services: &Services, user: &str) -> Result<Vec<String>, crate::store::StoreError> {
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        let found = services.connections.of_user(user).await?;
        if !found.is_empty() || started.elapsed() + pause > RECIPIENT_INDEX_LAG {
            return Ok(found);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(400));
    }
}
