//! A local API Gateway WebSocket API: serves `ws://127.0.0.1:PORT/{stage}`
//! and the `@connections` API with API Gateway's semantics (aws-facts.md
//! §1–5), following the routes, integrations and authorizer provisioned in
//! the emulator, and invoking the functions' real binaries.
//!
//! Its parts: `routes` (what each route invokes), `events` (the events API
//! Gateway sends), `authorizer` (the `$connect` authorizer's answer),
//! `connection` (a WebSocket from handshake to `$disconnect`), `throttle`
//! (the stage's throttling), `management` (the `@connections` API) and
//! `local_url` (where other commands find this gateway).

mod authorizer;
mod connection;
mod events;
pub mod local_url;
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

use super::logs::LogShipper;
use super::metrics::Recorder;
use super::runtime::{LocalFunction, Outcome};
use crate::metrics::*;
use crate::stack::api::ApiState;
use crate::stack::stage::ACCESS_LOG_FIELDS;

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
    /// Where the stage's access log goes, when it has one.
    pub access_log: Option<AccessLogTarget>,
}

/// The log group the stage's access log names, and what ships lines there.
pub struct AccessLogTarget {
    pub shipper: LogShipper,
    pub group: String,
}

impl AccessLogTarget {
    /// The group of the stage's access log settings, if it has them.
    pub fn of_stage(api: &ApiState, shipper: &LogShipper) -> Option<AccessLogTarget> {
        let destination = &api.stage.as_ref()?.access_log.as_ref()?.destination_arn;
        let (_, group) = destination.split_once(":log-group:")?;
        Some(AccessLogTarget {
            shipper: shipper.clone(),
            group: group.trim_end_matches(":*").to_string(),
        })
    }
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
    /// Until then, permissions are propagating as after a deploy (see
    /// [`GatewayHandle::permissions_propagate_for`]).
    permissions_pending_until: Mutex<Option<std::time::Instant>>,
}

impl Gateway {
    fn permissions_pending(&self) -> bool {
        self.permissions_pending_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| std::time::Instant::now() < until)
    }
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
    /// For `window` from now, answers as API Gateway does while a fresh
    /// deploy's permissions propagate (aws-facts.md §11 "permissions right
    /// after `up`"): a handshake gets 500 ("Invalid permissions on Lambda
    /// function", before the AddPermission applies), a POST to
    /// `@connections` 403 (before the role's policy applies).
    pub fn permissions_propagate_for(&self, window: Duration) {
        *self
            .0
            .permissions_pending_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now() + window);
    }

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

/// How a request ended: for the error metrics and the access log.
struct Ended<'a> {
    failure: Failure,
    status: u16,
    error: Option<&'a str>,
    latency_ms: Option<f64>,
}

impl Ended<'_> {
    /// Refused by the gateway before any integration ran.
    fn refused(status: StatusCode) -> Ended<'static> {
        Ended {
            failure: Failure::Client,
            status: status.as_u16(),
            error: status.canonical_reason(),
            latency_ms: None,
        }
    }

    fn ok() -> Ended<'static> {
        Ended {
            failure: Failure::None,
            status: 200,
            error: None,
            latency_ms: None,
        }
    }
}

/// A request's access log line: [`ACCESS_LOG_FIELDS`] with this request's
/// values, `-` where there is none, as API Gateway writes them.
fn access_line(context: &Value, ended: &Ended) -> String {
    let text = |value: &Value| match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let fields = ACCESS_LOG_FIELDS.iter().map(|(name, variable)| {
        let value = match variable.trim_start_matches("$context.") {
            "status" => ended.status.to_string(),
            "error.message" => ended.error.unwrap_or("-").to_string(),
            "integrationLatency" => ended
                .latency_ms
                .map(|ms| format!("{ms:.0}"))
                .unwrap_or_else(|| "-".into()),
            other => text(&context[other]),
        };
        (name.to_string(), Value::String(value))
    });
    Value::Object(fields.collect()).to_string()
}

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
fn status_of(body: &[u8]) -> u16 {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|reply| reply["statusCode"].as_u64())
        .and_then(|status| u16::try_from(status).ok())
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
        permissions_pending_until: Mutex::new(None),
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
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.api_metric(Some(route), INTEGRATION_LATENCY, latency_ms);
        let ended = match &outcome {
            Outcome::Response(body) => {
                let status = status_of(body);
                Ended {
                    failure: if status >= 400 {
                        Failure::Integration
                    } else {
                        Failure::None
                    },
                    status,
                    error: None,
                    latency_ms: Some(latency_ms),
                }
            }
            // A failed `$connect` refuses the handshake with 502; a failed
            // message gets "Internal server error".
            _ => Ended {
                failure: Failure::Execution,
                status: if route == "$connect" { 502 } else { 500 },
                error: Some("Internal server error"),
                latency_ms: Some(latency_ms),
            },
        };
        self.request_ended(&event["requestContext"], Some(route), &ended);
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

    /// Each request counts 0 or 1 in each error metric, and has a line in
    /// the access log when the stage keeps one.
    fn request_ended(&self, context: &Value, route: Option<&str>, ended: &Ended) {
        for (name, kind) in [
            (CLIENT_ERROR, Failure::Client),
            (INTEGRATION_ERROR, Failure::Integration),
            (EXECUTION_ERROR, Failure::Execution),
        ] {
            self.api_metric(route, name, f64::from(u8::from(ended.failure == kind)));
        }
        if let Some(access_log) = &self.config.access_log {
            let stream = format!("{}-local", self.config.api_id);
            access_log
                .shipper
                .ship(&access_log.group, &stream, access_line(context, ended));
        }
    }

    fn method_arn(&self) -> String {
        format!(
            "arn:aws:execute-api:{}:{}:{}/{}/$connect",
            self.config.region, self.config.account, self.config.api_id, self.config.stage
        )
    }
}
