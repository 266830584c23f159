//! A local API Gateway WebSocket API: serves `ws://127.0.0.1:PORT/{stage}`
//! and the `@connections` API with API Gateway's semantics (aws-facts.md
//! §1–5), following the routes, integrations and authorizer provisioned in
//! the emulator, and invoking the functions' real binaries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::runtime::{LocalFunction, Outcome};
use crate::stack::actual::ApiState;

/// API Gateway's limits (aws-facts.md §6).
pub const MAX_FRAME_BYTES: usize = 32 * 1024;
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
pub const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(2 * 3600);

/// What each route invokes, read from the provisioned API.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// `$request.body.<path>`: the JSON path that selects the route.
    pub selection_path: Vec<String>,
    /// Route key → function name.
    pub routes: HashMap<String, String>,
    /// The `$connect` authorizer's function name, if the route has one.
    pub authorizer: Option<String>,
    /// The authorizer's identity sources.
    pub identity_sources: Vec<String>,
}

impl RouteTable {
    /// Reads the table from the API as provisioned (routes → integrations → functions).
    pub fn from_api(api: &ApiState) -> RouteTable {
        let selection_path = api
            .route_selection_expression
            .as_deref()
            .and_then(|e| e.strip_prefix("$request.body."))
            .map(|p| p.split('.').map(str::to_string).collect())
            .unwrap_or_default();
        let function_of = |uri: Option<&str>| uri.and_then(crate::routes::function_name);
        let mut routes = HashMap::new();
        let mut authorizer = None;
        let mut identity_sources = vec![];
        for route in &api.routes {
            let integration = route
                .target
                .as_deref()
                .and_then(|t| t.strip_prefix("integrations/"))
                .and_then(|id| api.integrations.iter().find(|i| i.id == id));
            if let Some(function) = integration.and_then(|i| function_of(i.uri.as_deref())) {
                routes.insert(route.key.clone(), function);
            }
            if route.key == "$connect" && route.authorization_type.as_deref() == Some("CUSTOM") {
                let found = route
                    .authorizer_id
                    .as_deref()
                    .and_then(|id| api.authorizers.iter().find(|a| a.id == id));
                authorizer = found.and_then(|a| function_of(a.uri.as_deref()));
                identity_sources = found.map(|a| a.identity_sources.clone()).unwrap_or_default();
            }
        }
        RouteTable {
            selection_path,
            routes,
            authorizer,
            identity_sources,
        }
    }

    /// Route selection: the value at the selection path of a JSON body,
    /// matched exactly, else `$default`; None when neither exists.
    pub fn select(&self, body: &str) -> Option<&str> {
        let key = serde_json::from_str::<Value>(body).ok().and_then(|value| {
            let mut current = &value;
            for part in &self.selection_path {
                current = current.get(part)?;
            }
            match current {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            }
        });
        match key {
            // `$connect` and `$disconnect` belong to the connection's life, not
            // to messages: a frame selecting them is unmatched and goes to
            // `$default` (API Gateway's developer guide ties those routes to
            // connecting and disconnecting only, and reserves the `$` prefix).
            Some(key) if key == "$connect" || key == "$disconnect" => self.fallback(),
            Some(key) if self.routes.contains_key(&key) => self.routes.get_key_value(&key).map(|(k, _)| k.as_str()),
            _ => self.fallback(),
        }
    }

    /// `$default` when the API has it; else the frame is answered Forbidden.
    fn fallback(&self) -> Option<&str> {
        self.routes.get_key_value("$default").map(|(k, _)| k.as_str())
    }
}

/// Where the gateway runs and what it serves.
pub struct GatewayConfig {
    pub api_id: String,
    pub stage: String,
    pub region: String,
    pub account: String,
    pub routes: RouteTable,
    pub functions: HashMap<String, Arc<LocalFunction>>,
    pub idle_timeout: Duration,
    /// Connections are closed after this long however busy (API Gateway: 2 h).
    pub max_lifetime: Duration,
}

struct Connection {
    sender: mpsc::UnboundedSender<Message>,
    /// DELETE @connections asks the connection's task to close it.
    close_requested: tokio::sync::Notify,
    connected_at: i64,
    last_active: Mutex<i64>,
    source_ip: String,
    user_agent: String,
}

struct Gateway {
    config: GatewayConfig,
    connections: Mutex<HashMap<String, Arc<Connection>>>,
    /// Set when the gateway stops: every connection closes with 1001.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Connections whose task (and so their `$disconnect`) has not finished.
    live: tokio::sync::watch::Sender<usize>,
}

/// Counts a connection from its handshake until its `$disconnect` has run.
struct LiveConnection(Arc<Gateway>);

impl LiveConnection {
    fn new(gateway: &Arc<Gateway>) -> LiveConnection {
        gateway.live.send_modify(|n| *n += 1);
        LiveConnection(gateway.clone())
    }
}

impl Drop for LiveConnection {
    fn drop(&mut self) {
        self.0.live.send_modify(|n| *n -= 1);
    }
}

/// Stops a running gateway the way a server going away does.
#[derive(Clone)]
pub struct GatewayHandle(Arc<Gateway>);

impl GatewayHandle {
    /// Closes every connection with 1001 (going away) and waits, at most
    /// `grace`, for their `$disconnect` to run; returns how many were open.
    pub async fn shut_down(&self, grace: Duration) -> usize {
        let open = *self.0.live.borrow();
        self.0.stopping.send_replace(true);
        let mut live = self.0.live.subscribe();
        let _ = tokio::time::timeout(grace, live.wait_for(|n| *n == 0)).await;
        open
    }
}

type Shared = State<Arc<Gateway>>;

fn now_ms() -> i64 {
    chat_core::ids::epoch_ms(SystemTime::now())
}

/// A connection id like API Gateway's: 16 characters, base64, often with `=`.
fn new_connection_id() -> String {
    let bytes: [u8; 11] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn request_id() -> String {
    let bytes: [u8; 11] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The router: `GET /{stage}` upgrades to WebSocket; `/{stage}/@connections/{id}`
/// is the management API. The handle stops it.
pub fn router(config: GatewayConfig) -> (Router, GatewayHandle) {
    let stage = config.stage.clone();
    let gateway = Arc::new(Gateway {
        config,
        connections: Mutex::new(HashMap::new()),
        stopping: tokio::sync::watch::Sender::new(false),
        live: tokio::sync::watch::Sender::new(0),
    });
    let router = Router::new()
        .route(&format!("/{stage}"), get(upgrade))
        .route(&format!("/{stage}/@connections/{{id}}"), any(manage))
        .with_state(gateway.clone());
    (router, GatewayHandle(gateway))
}

/// Serves `router` (the gateway's, perhaps with more routes) on `listener`
/// until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await
}

impl Gateway {
    fn request_context(
        &self,
        connection_id: &str,
        route_key: &str,
        event_type: &str,
        connected_at: i64,
        source_ip: &str,
        user_agent: &str,
    ) -> Value {
        let now = now_ms();
        let id = request_id();
        json!({
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": id,
            "requestTime": httpdate(now),
            "messageDirection": "IN",
            "stage": self.config.stage,
            "connectedAt": connected_at,
            "requestTimeEpoch": now,
            "identity": {"sourceIp": source_ip, "userAgent": user_agent},
            "requestId": id,
            "domainName": format!("{}.execute-api.{}.amazonaws.com", self.config.api_id, self.config.region),
            "connectionId": connection_id,
            "apiId": self.config.api_id,
        })
    }

    async fn invoke(&self, function: &str, event: &Value) -> Outcome {
        match self.config.functions.get(function) {
            Some(local) => local.invoke(Bytes::from(event.to_string())).await,
            None => Outcome::Crashed(format!("function {function} is not running")),
        }
    }

    fn method_arn(&self) -> String {
        format!(
            "arn:aws:execute-api:{}:{}:{}/{}/$connect",
            self.config.region, self.config.account, self.config.api_id, self.config.stage
        )
    }
}

/// Common Log Format time, as `requestTime`: `22/Nov/2026:03:54:01 +0000`.
fn httpdate(epoch_ms: i64) -> String {
    let time = time::OffsetDateTime::from_unix_timestamp(epoch_ms / 1000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");
    time.format(&format).unwrap_or_default()
}

fn headers_json(headers: &HeaderMap) -> (Value, Value) {
    let mut single = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for (name, value) in headers {
        // API Gateway keeps the case clients send; HTTP/1 libraries lowercase it.
        let name = canonical_header(name.as_str());
        let value = value.to_str().unwrap_or_default().to_string();
        single.insert(name.clone(), json!(value));
        if let Some(list) = multi.entry(name).or_insert_with(|| json!([])).as_array_mut() {
            list.push(json!(value));
        }
    }
    (Value::Object(single), Value::Object(multi))
}

fn canonical_header(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().collect::<String>() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn query_json(raw: Option<&str>) -> (Option<Value>, Option<Value>) {
    let Some(raw) = raw.filter(|q| !q.is_empty()) else {
        return (None, None);
    };
    let mut single = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for (key, value) in form_urlencoded_pairs(raw) {
        single.insert(key.clone(), json!(value));
        if let Some(list) = multi.entry(key).or_insert_with(|| json!([])).as_array_mut() {
            list.push(json!(value));
        }
    }
    (Some(Value::Object(single)), Some(Value::Object(multi)))
}

/// A query string's pairs, decoded as API Gateway does (`+` is a space).
fn form_urlencoded_pairs(raw: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.as_bytes()).into_owned().collect()
}

/// Whether every identity source has a non-empty value; API Gateway answers
/// 401 without invoking the authorizer otherwise. Stage variables and
/// context values are not modelled locally and count as present.
fn identity_present(sources: &[String], headers: &HeaderMap, query: &[(String, String)]) -> bool {
    sources.iter().all(|source| {
        if let Some(name) = source.strip_prefix("route.request.header.") {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| !v.trim().is_empty())
        } else if let Some(name) = source.strip_prefix("route.request.querystring.") {
            query.iter().any(|(k, v)| k == name && !v.is_empty())
        } else {
            true
        }
    })
}

/// What the authorizer decided.
enum Authorization {
    Allowed(Value),
    Refused(StatusCode),
}

/// Allow covering the method ARN → the context; `Unauthorized` → 401;
/// Deny or no covering Allow → 403; anything else → 500.
fn authorization_from(outcome: Outcome, method_arn: &str) -> Authorization {
    let body = match outcome {
        Outcome::Response(body) => body,
        Outcome::Error { error_message, .. } if error_message == "Unauthorized" => {
            return Authorization::Refused(StatusCode::UNAUTHORIZED);
        }
        _ => return Authorization::Refused(StatusCode::INTERNAL_SERVER_ERROR),
    };
    let Ok(response) = serde_json::from_slice::<Value>(&body) else {
        return Authorization::Refused(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let Some(statements) = response["policyDocument"]["Statement"].as_array() else {
        return Authorization::Refused(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let covers = |statement: &Value| {
        let resources = match &statement["Resource"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(list) => list.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            _ => vec![],
        };
        resources.iter().any(|r| arn_matches(r, method_arn))
    };
    let denied = statements.iter().any(|s| s["Effect"] == "Deny" && covers(s));
    let allowed = statements.iter().any(|s| s["Effect"] == "Allow" && covers(s));
    if denied || !allowed {
        return Authorization::Refused(StatusCode::FORBIDDEN);
    }
    let mut context = match &response["context"] {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        _ => return Authorization::Refused(StatusCode::INTERNAL_SERVER_ERROR),
    };
    if context.values().any(|v| v.is_object() || v.is_array()) {
        return Authorization::Refused(StatusCode::INTERNAL_SERVER_ERROR);
    }
    context.insert("principalId".into(), response["principalId"].clone());
    Authorization::Allowed(Value::Object(context))
}

/// IAM resource matching: `*` is any run of characters, `?` any one.
fn arn_matches(pattern: &str, arn: &str) -> bool {
    wildmatch::WildMatch::new(pattern).matches(arn)
}

fn refuse(status: StatusCode) -> Response {
    status.into_response()
}

async fn upgrade(
    State(gateway): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if *gateway.stopping.borrow() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE);
    }
    let live = LiveConnection::new(&gateway);
    let connection_id = new_connection_id();
    let connected_at = now_ms();
    let source_ip = peer.ip().to_string();
    let user_agent = headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let (single_headers, multi_headers) = headers_json(&headers);
    let (single_query, multi_query) = query_json(query.as_deref());
    let context = gateway.request_context(
        &connection_id,
        "$connect",
        "CONNECT",
        connected_at,
        &source_ip,
        &user_agent,
    );

    let mut authorizer_context = None;
    if let Some(authorizer) = gateway.config.routes.authorizer.clone() {
        let pairs = form_urlencoded_pairs(query.as_deref().unwrap_or_default());
        if !identity_present(&gateway.config.routes.identity_sources, &headers, &pairs) {
            return refuse(StatusCode::UNAUTHORIZED);
        }
        let mut event = json!({
            "type": "REQUEST",
            "methodArn": gateway.method_arn(),
            "headers": single_headers,
            "multiValueHeaders": multi_headers,
            "stageVariables": {},
            "requestContext": context,
        });
        if let (Some(single), Some(multi)) = (&single_query, &multi_query) {
            event["queryStringParameters"] = single.clone();
            event["multiValueQueryStringParameters"] = multi.clone();
        }
        match authorization_from(gateway.invoke(&authorizer, &event).await, &gateway.method_arn()) {
            Authorization::Allowed(context) => authorizer_context = Some(context),
            Authorization::Refused(status) => return refuse(status),
        }
    }

    let mut context = context;
    if let Some(authorizer) = &authorizer_context {
        context["authorizer"] = authorizer.clone();
    }
    let mut protocol = None;
    if let Some(function) = gateway.config.routes.routes.get("$connect").cloned() {
        let mut event = json!({
            "headers": single_headers,
            "multiValueHeaders": multi_headers,
            "requestContext": context,
            "isBase64Encoded": false,
        });
        if let (Some(single), Some(multi)) = (&single_query, &multi_query) {
            event["queryStringParameters"] = single.clone();
            event["multiValueQueryStringParameters"] = multi.clone();
        }
        match gateway.invoke(&function, &event).await {
            Outcome::Response(body) => {
                let reply: Value = serde_json::from_slice(&body).unwrap_or_default();
                let status = reply["statusCode"].as_u64().unwrap_or(200) as u16;
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
async fn serve_connection(
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

async fn disconnect(
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
    context["disconnectStatusCode"] = json!(code);
    context["disconnectReason"] = json!(reason);
    if let Some(authorizer) = authorizer {
        context["authorizer"] = authorizer;
    }
    let host = format!(
        "{}.execute-api.{}.amazonaws.com",
        gateway.config.api_id, gateway.config.region
    );
    let event = json!({
        "headers": {"Host": host, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""},
        "multiValueHeaders": {"Host": [host], "x-api-key": [""], "X-Forwarded-For": [""], "x-restapi": [""]},
        "requestContext": context,
        "isBase64Encoded": false,
    });
    let _ = gateway.invoke(&function, &event).await;
}

#[allow(clippy::too_many_arguments)]
async fn route_message(
    gateway: &Gateway,
    connection_id: &str,
    connected_at: i64,
    source_ip: &str,
    user_agent: &str,
    authorizer: Option<Value>,
    body: String,
    sender: &mpsc::UnboundedSender<Message>,
) {
    let Some(route_key) = gateway.config.routes.select(&body).map(str::to_string) else {
        let reply = json!({"message": "Forbidden", "connectionId": connection_id, "requestId": request_id()});
        let _ = sender.send(Message::Text(reply.to_string().into()));
        return;
    };
    let function = gateway.config.routes.routes[&route_key].clone();
    let mut context = gateway.request_context(
        connection_id,
        &route_key,
        "MESSAGE",
        connected_at,
        source_ip,
        user_agent,
    );
    context["messageId"] = json!(request_id());
    if let Some(authorizer) = authorizer {
        context["authorizer"] = authorizer;
    }
    let event = json!({"requestContext": context, "body": body, "isBase64Encoded": false});
    match gateway.invoke(&function, &event).await {
        Outcome::Response(_) => {}
        _ => {
            let reply = json!({
                "message": "Internal server error",
                "connectionId": connection_id,
                "requestId": context["requestId"],
            });
            let _ = sender.send(Message::Text(reply.to_string().into()));
        }
    }
}

/// `POST` (send), `GET` (info), `DELETE` (close) `/{stage}/@connections/{id}`.
async fn manage(State(gateway): Shared, method: axum::http::Method, Path(id): Path<String>, body: Bytes) -> Response {
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

fn gone() -> Response {
    (
        StatusCode::GONE,
        [("x-amzn-errortype", "GoneException")],
        json!({"message": "Gone"}).to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorizer_policies_match_resources_with_iam_wildcards() {
        let arn = "arn:aws:execute-api:us-east-1:123456789012:abc123/dev/$connect";
        for pattern in [
            arn,
            "arn:aws:execute-api:us-east-1:123456789012:abc123/*",
            "arn:aws:execute-api:*:*:abc123/dev/*",
            "arn:aws:execute-api:us-east-1:123456789012:abc123/?ev/$connect",
            "*",
        ] {
            assert!(arn_matches(pattern, arn), "{pattern}");
        }
        for pattern in [
            "arn:aws:execute-api:us-east-1:123456789012:other/*",
            "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/*",
            "arn:aws:execute-api:us-east-1:123456789012:abc123/?/$connect",
            "",
        ] {
            assert!(!arn_matches(pattern, arn), "{pattern}");
        }
    }

    #[test]
    fn route_selection_follows_the_body_and_falls_back_to_default() {
        let table = RouteTable {
            selection_path: vec!["action".into()],
            routes: HashMap::from([
                ("sendmessage".to_string(), "chat-sendmessage".to_string()),
                ("$default".to_string(), "chat-default".to_string()),
            ]),
            authorizer: None,
            identity_sources: vec![],
        };
        assert_eq!(table.select(r#"{"action":"sendmessage"}"#), Some("sendmessage"));
        assert_eq!(table.select(r#"{"action":"dance"}"#), Some("$default"));
        assert_eq!(table.select(r#"{"message":"hi"}"#), Some("$default"));
        assert_eq!(table.select("not json"), Some("$default"));
        let with_lifecycle = RouteTable {
            routes: HashMap::from([
                ("$connect".to_string(), "chat-connect".to_string()),
                ("$disconnect".to_string(), "chat-disconnect".to_string()),
                ("$default".to_string(), "chat-default".to_string()),
            ]),
            ..table.clone()
        };
        assert_eq!(with_lifecycle.select(r#"{"action":"$connect"}"#), Some("$default"));
        assert_eq!(with_lifecycle.select(r#"{"action":"$disconnect"}"#), Some("$default"));
        assert_eq!(with_lifecycle.select(r#"{"action":"$default"}"#), Some("$default"));
        let no_default = RouteTable {
            routes: HashMap::from([("join".to_string(), "f".to_string())]),
            ..table
        };
        assert_eq!(no_default.select("not json"), None);
    }

    #[test]
    fn missing_identity_sources_refuse_before_the_authorizer_runs() {
        let sources = vec![
            "route.request.querystring.token".to_string(),
            "route.request.header.X-Client".to_string(),
        ];
        let mut headers = HeaderMap::new();
        headers.insert("x-client", HeaderValue::from_static("web"));
        let query = form_urlencoded_pairs("token=abc&room=lobby");
        assert!(identity_present(&sources, &headers, &query));
        assert!(!identity_present(&sources, &HeaderMap::new(), &query));
        assert!(!identity_present(
            &sources,
            &headers,
            &form_urlencoded_pairs("token=&room=lobby")
        ));
        assert!(!identity_present(&sources, &headers, &[]));
        assert!(
            identity_present(&[], &HeaderMap::new(), &[]),
            "no sources: always invoke"
        );
    }

    #[test]
    fn authorizer_outcomes_map_to_statuses() {
        let arn = "arn:aws:execute-api:us-east-1:1:abc/dev/$connect";
        let policy = |effect: &str, resource: &str| {
            Outcome::Response(Bytes::from(
                json!({"principalId":"alice","policyDocument":{"Version":"2012-10-17","Statement":[{"Action":"execute-api:Invoke","Effect":effect,"Resource":[resource]}]},"context":{"user":"alice"}}).to_string(),
            ))
        };
        assert!(
            matches!(authorization_from(policy("Allow", arn), arn), Authorization::Allowed(c) if c["user"] == "alice" && c["principalId"] == "alice")
        );
        assert!(matches!(
            authorization_from(policy("Allow", "arn:aws:execute-api:us-east-1:1:abc/*"), arn),
            Authorization::Allowed(_)
        ));
        assert!(matches!(
            authorization_from(policy("Deny", arn), arn),
            Authorization::Refused(StatusCode::FORBIDDEN)
        ));
        assert!(matches!(
            authorization_from(policy("Allow", "arn:other"), arn),
            Authorization::Refused(StatusCode::FORBIDDEN)
        ));
        let unauthorized = Outcome::Error {
            error_type: "x".into(),
            error_message: "Unauthorized".into(),
        };
        assert!(matches!(
            authorization_from(unauthorized, arn),
            Authorization::Refused(StatusCode::UNAUTHORIZED)
        ));
        let failed = Outcome::Error {
            error_type: "x".into(),
            error_message: "boom".into(),
        };
        assert!(matches!(
            authorization_from(failed, arn),
            Authorization::Refused(StatusCode::INTERNAL_SERVER_ERROR)
        ));
        let malformed = Outcome::Response(Bytes::from_static(b"{\"principalId\":\"a\"}"));
        assert!(matches!(
            authorization_from(malformed, arn),
            Authorization::Refused(StatusCode::INTERNAL_SERVER_ERROR)
        ));
    }

    #[test]
    fn query_strings_and_headers_are_shaped_like_api_gateways() {
        let (single, multi) = query_json(Some("token=a%2Bb&room=general&room=x"));
        assert_eq!(single.unwrap(), json!({"token":"a+b","room":"x"}));
        assert_eq!(multi.unwrap()["room"], json!(["general", "x"]));
        assert_eq!(query_json(Some("")), (None, None));
        assert_eq!(canonical_header("sec-websocket-protocol"), "Sec-Websocket-Protocol");
        assert!(httpdate(0).starts_with("01/Jan/1970:00:00:00"));
    }
}
