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

use super::metrics::Recorder;
use super::runtime::{LocalFunction, Outcome};
use crate::metrics::*;
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
    /// Where the gateway's and the functions' metrics go.
    pub metrics: Arc<Recorder>,
    /// Whether the stage has detailed (per-route) metrics.
    pub detailed_metrics: bool,
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

/// How a request ended, for API Gateway's error metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Failure {
    None,
    /// Refused by the gateway before the integration ran (4XX).
    Client,
    /// The integration answered 4XX/5XX.
    Integration,
    /// The integration could not be called or failed.
    Execution,
}

/// The status code of a Lambda proxy integration's answer (200 without one).
fn status_of(body: &[u8]) -> u64 {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|reply| reply["statusCode"].as_u64())
        .unwrap_or(200)
}

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

    /// Invokes a function, recording Lambda's metrics for it.
    async fn invoke(&self, function: &str, event: &Value) -> Outcome {
        let started = std::time::Instant::now();
        let outcome = match self.config.functions.get(function) {
            Some(local) => local.invoke(Bytes::from(event.to_string())).await,
            None => Outcome::Crashed(format!("function {function} is not running")),
        };
        let failed = !matches!(outcome, Outcome::Response(_));
        let record = |name, value| {
            self.config
                .metrics
                .record(LAMBDA_NAMESPACE, name, function_dimensions(function), value)
        };
        record(INVOCATIONS, 1.0);
        record(ERRORS, f64::from(u8::from(failed)));
        record(DURATION, started.elapsed().as_secs_f64() * 1000.0);
        outcome
    }

    /// Invokes a route's integration, recording its latency and how it ended.
    async fn integrate(&self, route: &str, function: &str, event: &Value) -> Outcome {
        let started = std::time::Instant::now();
        let outcome = self.invoke(function, event).await;
        self.api_metric(
            Some(route),
            INTEGRATION_LATENCY,
            started.elapsed().as_secs_f64() * 1000.0,
        );
        let failure = match &outcome {
            Outcome::Response(body) if status_of(body) >= 400 => Failure::Integration,
            Outcome::Response(_) => Failure::None,
            _ => Failure::Execution,
        };
        self.request_ended(Some(route), failure);
        outcome
    }

    /// Records an API Gateway metric for the stage, and for the route too when
    /// the stage has detailed metrics.
    fn api_metric(&self, route: Option<&str>, name: &'static str, value: f64) {
        let config = &self.config;
        let stage = stage_dimensions(&config.api_id, &config.stage);
        config.metrics.record(API_NAMESPACE, name, stage, value);
        if let (true, Some(route)) = (config.detailed_metrics, route) {
            let dimensions = route_dimensions(&config.api_id, &config.stage, route);
            config.metrics.record(API_NAMESPACE, name, dimensions, value);
        }
    }

    /// Each request counts 0 or 1 in each error metric.
    fn request_ended(&self, route: Option<&str>, failure: Failure) {
        for (name, kind) in [
            (CLIENT_ERROR, Failure::Client),
            (INTEGRATION_ERROR, Failure::Integration),
            (EXECUTION_ERROR, Failure::Execution),
        ] {
            self.api_metric(route, name, f64::from(u8::from(failure == kind)));
        }
    }

    fn method_arn(&self) -> String {
        format!(
            "arn:aws:execute-api:{}:{}:{}/{}/$connect",
            self.config.region, self.config.account, self.config.api_id, self.config.stage
        )
    }
}
