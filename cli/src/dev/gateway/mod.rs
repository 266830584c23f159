//! A local API Gateway WebSocket API: serves `ws://127.0.0.1:PORT/{stage}`
//! and the `@connections` API with API Gateway's semantics (aws-facts.md
//! §1–5), following the routes, integrations and authorizer provisioned in
//! the emulator, and invoking the functions' real binaries.
//!
//! Its parts: `routes` (what each route invokes), `events` (the events API
//! Gateway sends), `authorizer` (the `$connect` authorizer's answer),
//! `connection` (a WebSocket from handshake to `$disconnect`), `throttle`
//! (the stage's throttling) and `management` (the `@connections` API).

mod authorizer;
mod connection;
mod events;
mod management;
mod routes;
mod throttle;

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
use crate::stack::api::ApiState;

use authorizer::*;
use connection::*;
use events::*;
use management::*;
pub use routes::RouteTable;
pub use throttle::Limits;
use throttle::Throttle;

/// API Gateway's limits (aws-facts.md §6).
pub const MAX_FRAME_BYTES: usize = 32 * 1024;
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
pub const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(2 * 3600);

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
    /// The stage's throttling.
    pub limits: Limits,
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
    throttle: Throttle,
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

/// The router: `GET /{stage}` upgrades to WebSocket; `/{stage}/@connections/{id}`
/// is the management API. The handle stops it.
pub fn router(config: GatewayConfig) -> (Router, GatewayHandle) {
    let stage = config.stage.clone();
    let gateway = Arc::new(Gateway {
        throttle: Throttle::new(config.limits.clone()),
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
        let (id, time) = (request_id(), httpdate(now));
        apigw_events::Request {
            api_id: &self.config.api_id,
            stage: &self.config.stage,
            region: &self.config.region,
            connection_id,
            connected_at,
            request_id: &id,
            request_time: &time,
            request_time_epoch: now,
            source_ip,
            user_agent,
        }
        .context(route_key, event_type)
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
