//! The `@connections` management API.

use super::*;

/// `POST` (send), `GET` (info), `DELETE` (close) `/{stage}/@connections/{id}`.
pub(super) async fn manage(
    State(gateway): Shared,
    method: axum::http::Method,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let connection = gateway
        .connections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id)
        .cloned();
    let Some(connection) = connection else {
        return gone();
    };
    match method.as_str() {
        "POST" if gateway.permissions_pending() => (
            StatusCode::FORBIDDEN,
            [("x-amzn-errortype", "ForbiddenException")],
            json!({"message": format!(
                "User: arn:aws:sts::{}:assumed-role/local/function is not authorized to perform: \
                 execute-api:ManageConnections on resource: arn:aws:execute-api:{}:{}:{}/{}/POST/@connections/{id}",
                gateway.config.account, gateway.config.region, gateway.config.account,
                gateway.config.api_id, gateway.config.stage
            )})
            .to_string(),
        )
            .into_response(),
        "POST" => {
            if body.len() > MAX_MESSAGE_BYTES {
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    [("x-amzn-errortype", "PayloadTooLargeException")],
                    json!({"message": "Message too long"}).to_string(),
                )
                    .into_response();
            }
            let message = match String::from_utf8(body.to_vec()) {
                Ok(text) => Message::Text(text.into()),
                Err(_) => Message::Binary(body),
            };
            if connection.sender.send(message).is_err() {
                return gone();
            }
            gateway.api_metric(None, MESSAGE_COUNT, 1.0);
            StatusCode::OK.into_response()
        }
        "GET" => {
            let iso = |ms: i64| chat_core::ids::format_timestamp_ms(ms.max(0) as u64);
            let last_active = *connection.last_active.lock().unwrap_or_else(|e| e.into_inner());
            let info = json!({
                "connectedAt": iso(connection.connected_at),
                "lastActiveAt": iso(last_active),
                "identity": {"sourceIp": connection.source_ip, "userAgent": connection.user_agent},
            });
            (StatusCode::OK, [("content-type", "application/json")], info.to_string()).into_response()
        }
        "DELETE" => {
            connection.close_requested.notify_one();
            StatusCode::NO_CONTENT.into_response()
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

pub(super) fn gone() -> Response {
    (
        StatusCode::GONE,
        [("x-amzn-errortype", "GoneException")],
        json!({"message": "Gone"}).to_string(),
    )
        .into_response()
}
