//! `$disconnect`: removes the connection and uncounts it. Idempotent, since
//! a 410 during delivery may have removed it first.

use crate::event::{self, Response, WebSocketEvent};
use crate::services::Services;

pub async fn handle(services: &Services, event: WebSocketEvent) -> Response {
    let connection_id = match event::connection_id(&event) {
        Ok(id) => id,
        Err(error) => {
            tracing::error!(%error, "not a WebSocket event");
            return event::response(400);
        }
    };
    match services.connections.remove(connection_id).await {
        Ok(removed) => {
            tracing::info!(connection_id, removed, "disconnected");
            event::response(200)
        }
        Err(error) => {
            tracing::error!(connection_id, %error, "could not remove the connection");
            event::response(500)
        }
    }
}
