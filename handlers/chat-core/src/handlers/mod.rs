//! The logic of each function: a plain async function over the event and
//! [`Services`], the same in Lambda, in `chatctl dev` and in the tests.

pub mod connect;
pub mod default;
pub mod disconnect;
pub mod getmessages;
pub mod join;
pub mod sendmessage;

use crate::delivery::Delivery;
use crate::error::ChatError;
use crate::event::{self, Response, WebSocketEvent};
use crate::protocol::ServerEvent;
use crate::services::Services;
use crate::store::ConnectionRecord;

/// Runs a message route (`sendmessage`, `getmessages`, `join`) for its caller.
/// Any failure becomes an `error` event to the caller: never a crash, never
/// a silent drop. A message route's HTTP status reaches no client; 500 marks
/// our own failures in the metrics.
pub(crate) async fn run_message_route<R>(services: &Services, event: &WebSocketEvent, route: R) -> Response
where
    R: AsyncFnOnce(&Services, &Delivery, &ConnectionRecord, Option<&str>) -> Result<(), ChatError>,
{
    let connection_id = match event::connection_id(event) {
        Ok(id) => id,
        Err(error) => {
            tracing::error!(%error, "not a WebSocket event");
            return event::response(400);
        }
    };
    let delivery = match services.delivery_for(event) {
        Ok(delivery) => delivery,
        Err(error) => {
            tracing::error!(%error, "no @connections endpoint to reply through");
            return event::response(500);
        }
    };
    let result = match services.caller(connection_id).await {
        Ok(caller) => route(services, &delivery, &caller, event.body.as_deref()).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => event::response(200),
        Err(error) => {
            let status = if let ChatError::Internal(detail) = &error {
                tracing::error!(connection_id, detail, "request failed");
                500
            } else {
                tracing::info!(connection_id, %error, "request rejected");
                200
            };
            services
                .reply(&delivery, connection_id, &ServerEvent::from(&error))
                .await;
            event::response(status)
        }
    }
}

pub(crate) fn internal(error: impl std::fmt::Display) -> ChatError {
    ChatError::Internal(error.to_string())
}
