//! `join`: moves the caller's connection to another room.

use crate::delivery::Delivery;
use crate::error::ChatError;
use crate::event::{Response, WebSocketEvent};
use crate::handlers::{internal, run_message_route};
use crate::protocol::{JoinRequest, ServerEvent, parse_frame};
use crate::services::Services;
use crate::store::ConnectionRecord;
use crate::validate;

pub async fn handle(services: &Services, event: WebSocketEvent) -> Response {
    run_message_route(services, &event, join).await
}

async fn join(
    services: &Services,
    delivery: &Delivery,
    caller: &ConnectionRecord,
    body: Option<&str>,
) -> Result<(), ChatError> {
    let request: JoinRequest = parse_frame(body)?;
    validate::room(&request.room)?;
    let moved = services
        .connections
        .move_to_room(&caller.connection_id, &request.room)
        .await
        .map_err(internal)?;
    if !moved {
        return Err(ChatError::NotConnected);
    }
    let reply = ServerEvent::Joined { room: request.room };
    services.reply(delivery, &caller.connection_id, &reply).await;
    Ok(())
}
