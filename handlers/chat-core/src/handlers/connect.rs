//! `$connect`: registers the connection under the user and room the
//! authorizer established, within the stack's connection limit and the
//! user's.

use std::time::{Duration, SystemTime};

use crate::event::{self, ConnectParams, Response, WebSocketEvent, context};
use crate::ids;
use crate::services::Services;
use crate::store::{AddConnectionError, ConnectionRecord};
use crate::validate;

/// API Gateway closes every connection after 2 hours; a record whose
/// `$disconnect` never ran expires a little after that.
const CONNECTION_RECORD_LIFETIME: Duration = Duration::from_secs(2 * 3600 + 600);

/// The answer to `$connect`: its status decides the handshake.
#[derive(Debug, PartialEq)]
struct Refusal {
    status: i64,
    reason: String,
}

impl Refusal {
    fn new(status: i64, reason: impl ToString) -> Self {
        Self {
            status,
            reason: reason.to_string(),
        }
    }
}

pub async fn handle(services: &Services, event: WebSocketEvent) -> Response {
    match connect(services, &event, SystemTime::now()).await {
        Ok(Some(protocol)) => event::response_with_protocol(200, &protocol),
        Ok(None) => event::response(200),
        Err(refusal) => {
            if refusal.status >= 500 {
                tracing::error!(reason = %refusal.reason, "connect failed");
            } else {
                tracing::info!(status = refusal.status, reason = %refusal.reason, "connect refused");
            }
            event::response_with_body(refusal.status, refusal.reason)
        }
    }
}

/// Returns the subprotocol to echo, if the client offered any.
async fn connect(services: &Services, event: &WebSocketEvent, now: SystemTime) -> Result<Option<String>, Refusal> {
    let connection_id = event::connection_id(event).map_err(|e| Refusal::new(400, e))?;
    let params = ConnectParams::parse(&event.headers, &event.query_string_parameters, "token")
        .map_err(|e| Refusal::new(400, e))?;
    let user = event::authorizer_value(event, context::USER)
        .ok_or_else(|| Refusal::new(401, "no authenticated user: the authorizer must run on $connect"))?;
    validate::user(&user).map_err(|e| Refusal::new(403, e))?;
    let room = event::authorizer_value(event, context::ROOM).unwrap_or(params.room);
    validate::room(&room).map_err(|e| Refusal::new(400, e))?;

    let connected_at = match event.request_context.connected_at {
        0 => ids::epoch_ms(now),
        at => at,
    };
    let record = ConnectionRecord {
        connection_id: connection_id.to_string(),
        user,
        room,
        connected_at,
        ttl: ids::expiry_epoch_seconds(now, CONNECTION_RECORD_LIFETIME),
    };
    // A banned user is kept out (`chatctl connections ban`); read before
    // registering, so a refused connect leaves nothing to undo.
    if let Some(ban) = services
        .connections
        .ban_of(&record.user)
        .await
        .map_err(|e| Refusal::new(500, e))?
    {
        return Err(Refusal::new(403, format!("user {} is banned", ban.user)));
    }
    let config = &services.config;
    let per_user = u64::from(config.connections_per_user);
    match services
        .connections
        .add(&record, config.max_connections, per_user)
        .await
    {
        // A retried $connect for the same connection is not an error.
        Ok(()) | Err(AddConnectionError::AlreadyRegistered(_)) => {}
        Err(error @ (AddConnectionError::LimitReached(_) | AddConnectionError::UserLimitReached(..))) => {
            return Err(Refusal::new(429, error));
        }
        Err(error @ AddConnectionError::Busy(_)) => return Err(Refusal::new(503, error)),
        Err(error) => return Err(Refusal::new(500, error)),
    }
    // API Gateway requires exactly one of the offered values back.
    Ok(params.protocols.and_then(|offered| offered.into_iter().next()))
}
