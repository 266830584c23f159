//! A WebSocket connection from its handshake to its `$disconnect`.

use super::*;

pub(super) fn refuse(status: StatusCode) -> Response {
    status.into_response()
}

pub(super) async fn upgrade(
    State(gateway): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if *gateway.stopping.borrow() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE);
    }
    let connection_id = new_connection_id();
    let connected_at = now_ms();
    let source_ip = peer.ip().to_string();
    let user_agent = headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let (headers_sent, query_sent) = (headers_params(&headers), query_params(query.as_deref()));
    let context = gateway.request_context(
        &connection_id,
        "$connect",
        "CONNECT",
        connected_at,
        &source_ip,
        &user_agent,
    );
    // Refused before anything runs: a client error, in the access log too.
    let refused = |status: StatusCode| {
        gateway.request_ended(&context, Some("$connect"), &Ended::refused(status));
        refuse(status)
    };
    if !gateway.throttle.admit("$connect", std::time::Instant::now()) {
        return refused(StatusCode::TOO_MANY_REQUESTS);
    }
    if gateway.permissions_pending() {
        // API Gateway may not invoke the functions yet: "Execution failed
        // due to configuration error: Invalid permissions on Lambda function".
        let ended = Ended {
            failure: Failure::Execution,
            ..Ended::refused(StatusCode::INTERNAL_SERVER_ERROR)
        };
        gateway.request_ended(&context, Some("$connect"), &ended);
        return refuse(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let live = LiveConnection::new(&gateway);

    let mut authorizer_context = None;
    if let Some(authorizer) = gateway.config.routes.authorizer.clone() {
        let pairs = form_urlencoded_pairs(query.as_deref().unwrap_or_default());
        if !identity_present(&gateway.config.routes.identity_sources, &headers, &pairs) {
            return refused(StatusCode::UNAUTHORIZED);
        }
        let event =
            apigw_events::authorizer_request(context.clone(), &gateway.method_arn(), &headers_sent, &query_sent);
        match authorization_from(gateway.invoke(&authorizer, &event).await, &gateway.method_arn()) {
            Authorization::Allowed(context) => authorizer_context = Some(context),
            Authorization::Refused(status) if status.is_client_error() => return refused(status),
            // The authorizer failed or answered nonsense.
            Authorization::Refused(status) => {
                let ended = Ended {
                    failure: Failure::Execution,
                    ..Ended::refused(status)
                };
                gateway.request_ended(&context, Some("$connect"), &ended);
                return refuse(status);
            }
        }
    }

    let mut context = context;
    if let Some(authorizer) = &authorizer_context {
        context["authorizer"] = authorizer.clone();
    }
    let mut protocol = None;
    if let Some(function) = gateway.config.routes.routes.get("$connect").cloned() {
        let event = apigw_events::connect(context, &headers_sent, &query_sent);
        gateway.api_metric(Some("$connect"), CONNECT_COUNT, 1.0);
        match gateway.integrate("$connect", &function, &event).await {
            Outcome::Response(body) => {
                let reply: Value = serde_json::from_slice(&body).unwrap_or_default();
                let status = status_of(&body);
                if !(200..300).contains(&status) {
                    return refuse(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
                }
                protocol = reply["headers"]
                    .as_object()
                    .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-protocol")))
                    .and_then(|(_, v)| v.as_str())
                    .map(str::to_string);
            }
            // A function that fails or times out refuses the handshake with 502.
            _ => return refuse(StatusCode::BAD_GATEWAY),
        }
    } else {
        gateway.request_ended(&context, Some("$connect"), &Ended::ok());
    }

    let mut upgrade = upgrade
        .max_frame_size(MAX_FRAME_BYTES)
        .max_message_size(MAX_MESSAGE_BYTES);
    if let Some(protocol) = protocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
        upgrade.set_selected_protocol(protocol);
    }
    upgrade.on_upgrade(move |socket| {
        serve_connection(
            live,
            gateway,
            socket,
            connection_id,
            connected_at,
            source_ip,
            user_agent,
            authorizer_context,
        )
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn serve_connection(
    _live: LiveConnection,
    gateway: Arc<Gateway>,
    socket: WebSocket,
    connection_id: String,
    connected_at: i64,
    source_ip: String,
    user_agent: String,
    authorizer: Option<Value>,
) {
    let mut stopping = gateway.stopping.subscribe();
    let (mut sink, mut stream) = socket.split();
    let (sender, mut outgoing) = mpsc::unbounded_channel::<Message>();
    let connection = Arc::new(Connection {
        sender: sender.clone(),
        close_requested: tokio::sync::Notify::new(),
        connected_at,
        last_active: Mutex::new(connected_at),
        source_ip: source_ip.clone(),
        user_agent: user_agent.clone(),
    });
    gateway
        .connections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(connection_id.clone(), connection.clone());
    let writer = tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            let closing = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });

    let close = |code: u16, reason: &str| {
        let _ = sender.send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })));
    };
    // API Gateway counts the lifetime from the handshake's start.
    let age = Duration::from_millis((now_ms() - connected_at).max(0) as u64);
    let end_of_life = tokio::time::Instant::now() + gateway.config.max_lifetime.saturating_sub(age);
    // Why the connection ended: (status code, reason) for $disconnect.
    let ended: (u16, String) = loop {
        let next = tokio::select! {
            next = tokio::time::timeout(gateway.config.idle_timeout, stream.next()) => next,
            _ = connection.close_requested.notified() => {
                // Closed by the server: $disconnect runs now, not when the client answers.
                close(1000, "");
                break (1000, "Server-side close".into());
            }
            _ = stopping.wait_for(|stopping| *stopping) => {
                close(1001, "Going away");
                break (1001, "Going away".into());
            }
            _ = tokio::time::sleep_until(end_of_life) => {
                close(1001, "Going away");
                break (1001, "Connection lifetime exceeded".into());
            }
        };
        let message = match next {
            Err(_) => {
                close(1001, "Going away");
                break (1001, "Idle timeout".into());
            }
            Ok(None) => break (1006, "Connection closed abnormally".into()),
            Ok(Some(Err(error))) => {
                let text = error.to_string();
                if text.contains("too long") || text.contains("Space limit") || text.contains("capacity") {
                    close(1009, "Message too big");
                    break (1009, "Message too big".into());
                }
                break (1006, format!("Connection error: {text}"));
            }
            Ok(Some(Ok(message))) => message,
        };
        *connection.last_active.lock().unwrap_or_else(|e| e.into_inner()) = now_ms();
        match message {
            Message::Text(text) => {
                let gateway = gateway.clone();
                let connection_id = connection_id.clone();
                let authorizer = authorizer.clone();
                let source_ip = source_ip.clone();
                let user_agent = user_agent.clone();
                let sender = sender.clone();
                // API Gateway handles a connection's messages concurrently.
                tokio::spawn(async move {
                    route_message(
                        &gateway,
                        &connection_id,
                        connected_at,
                        &source_ip,
                        &user_agent,
                        authorizer,
                        text.to_string(),
                        &sender,
                    )
                    .await;
                });
            }
            Message::Binary(_) => {
                close(1003, "Binary frames are not supported");
                break (1003, "Binary frames are not supported".into());
            }
            Message::Close(frame) => {
                let code = frame.as_ref().map(|f| f.code).unwrap_or(1005);
                let _ = sender.send(Message::Close(frame));
                break (code, "Client-side close frame status code".into());
            }
            Message::Ping(_) | Message::Pong(_) => {}
        }
    };
    let removed = gateway
        .connections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&connection_id)
        .is_some();
    drop(sender);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    // A connection closed through DELETE @connections was already disconnected there.
    if removed {
        disconnect(
            &gateway,
            &connection_id,
            connected_at,
            &source_ip,
            &user_agent,
            authorizer,
            ended,
        )
        .await;
    }
}

pub(super) async fn disconnect(
    gateway: &Gateway,
    connection_id: &str,
    connected_at: i64,
    source_ip: &str,
    user_agent: &str,
    authorizer: Option<Value>,
    (code, reason): (u16, String),
) {
    let Some(function) = gateway.config.routes.routes.get("$disconnect").cloned() else {
        return;
    };
    let mut context = gateway.request_context(
        connection_id,
        "$disconnect",
        "DISCONNECT",
        connected_at,
        source_ip,
        user_agent,
    );
    if let Some(authorizer) = authorizer {
        context["authorizer"] = authorizer;
    }
    let event = apigw_events::disconnect(context, code, &reason);
    let _ = gateway.integrate("$disconnect", &function, &event).await;
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn route_message(
    gateway: &Gateway,
    connection_id: &str,
    connected_at: i64,
    source_ip: &str,
    user_agent: &str,
    authorizer: Option<Value>,
    body: String,
    sender: &mpsc::UnboundedSender<Message>,
) {
    let route_key = gateway.config.routes.select(&body).map(str::to_string);
    gateway.api_metric(route_key.as_deref(), MESSAGE_COUNT, 1.0);
    let mut context = gateway.request_context(
        connection_id,
        route_key.as_deref().unwrap_or("-"),
        "MESSAGE",
        connected_at,
        source_ip,
        user_agent,
    );
    let requested = context["requestId"].clone();
    // Refused before any function runs: API Gateway's error frame.
    let refused = |status: StatusCode, message: &str| {
        gateway.request_ended(&context, route_key.as_deref(), &Ended::refused(status));
        let reply = json!({"message": message, "connectionId": connection_id, "requestId": requested});
        let _ = sender.send(Message::Text(reply.to_string().into()));
    };
    let Some(route_key) = route_key.clone() else {
        return refused(StatusCode::FORBIDDEN, "Forbidden");
    };
    if !gateway.throttle.admit(&route_key, std::time::Instant::now()) {
        return refused(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
    }
    // A MOCK integration: API Gateway answers (two-way) or drops the frame,
    // no function runs (the keep-alive).
    if let Some(reply) = gateway.config.routes.mocks.get(&route_key) {
        gateway.request_ended(&context, Some(&route_key), &Ended::ok());
        if let Some(reply) = reply {
            let _ = sender.send(Message::Text(reply.clone().into()));
        }
        return;
    }
    let Some(function) = gateway.config.routes.routes.get(&route_key).cloned() else {
        return refused(StatusCode::FORBIDDEN, "Forbidden");
    };
    if let Some(authorizer) = authorizer {
        context["authorizer"] = authorizer;
    }
    let event = apigw_events::message(context, &request_id(), &body);
    match gateway.integrate(&route_key, &function, &event).await {
        Outcome::Response(_) => {}
        _ => {
            let reply = json!({
                "message": "Internal server error",
                "connectionId": connection_id,
                "requestId": requested,
            });
            let _ = sender.send(Message::Text(reply.to_string().into()));
        }
    }
}
