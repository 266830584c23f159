//! A local HTTP listener standing in for API Gateway's `@connections` API:
//! it records what each connection was sent, and answers 410 for connections
//! marked gone, 429 for a set number of attempts where told to, and 403 to
//! everyone for a while where told to (the functions' permission still
//! propagating, aws-facts.md §11 "permissions right after `up`").

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

#[derive(Default)]
struct Recorded {
    received: HashMap<String, Vec<String>>,
    gone: HashSet<String>,
    throttle: HashMap<String, u32>,
    attempts: HashMap<String, u32>,
    /// How long each POST takes to be answered.
    latency: std::time::Duration,
    /// Every POST gets 403 until then.
    forbidden_until: Option<std::time::Instant>,
}

#[derive(Clone)]
pub struct ConnectionsEndpoint {
    state: Arc<Mutex<Recorded>>,
    url: String,
}

async fn post_to_connection(
    State(state): State<Arc<Mutex<Recorded>>>,
    Path((_stage, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let latency = state.lock().unwrap().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut state = state.lock().unwrap();
    *state.attempts.entry(id.clone()).or_default() += 1;
    if state
        .forbidden_until
        .is_some_and(|until| std::time::Instant::now() < until)
    {
        return forbidden(&id);
    }
    if state.gone.contains(&id) {
        return StatusCode::GONE.into_response();
    }
    if let Some(left) = state.throttle.get_mut(&id)
        && *left > 0
    {
        *left -= 1;
        return StatusCode::TOO_MANY_REQUESTS.into_response();
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    state.received.entry(id).or_default().push(text);
    StatusCode::OK.into_response()
}

/// API Gateway's answer to a caller whose execute-api:ManageConnections is
/// not in effect (yet): 403, the error type in `x-amzn-ErrorType`, as the
/// SDK's ForbiddenException reads it (anomalyco/sst #6248, aws-facts.md §11).
fn forbidden(connection_id: &str) -> Response {
    let message = format!(
        "User: arn:aws:sts::{account}:assumed-role/chat-handlers/function is not authorized to perform: \
         execute-api:ManageConnections on resource: arn:aws:execute-api:{region}:{account}:local/dev/POST/\
         @connections/{connection_id}",
        account = crate::moto::ACCOUNT_ID,
        region = crate::moto::REGION,
    );
    (
        StatusCode::FORBIDDEN,
        [
            ("x-amzn-ErrorType", "ForbiddenException"),
            ("content-type", "application/json"),
        ],
        serde_json::json!({ "message": message }).to_string(),
    )
        .into_response()
}

impl ConnectionsEndpoint {
    /// Starts the listener; its URL includes the stage, like API Gateway's.
    pub async fn start() -> ConnectionsEndpoint {
        let state = Arc::new(Mutex::new(Recorded::default()));
        let app = Router::new()
            .route("/{stage}/@connections/{id}", post(post_to_connection))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/dev", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        ConnectionsEndpoint { state, url }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every message delivered to `connection_id`, in order, as text.
    pub fn received(&self, connection_id: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .received
            .get(connection_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The messages delivered to `connection_id`, parsed as JSON.
    pub fn received_json(&self, connection_id: &str) -> Vec<serde_json::Value> {
        self.received(connection_id)
            .iter()
            .map(|text| serde_json::from_str(text).expect("delivered a non-JSON message"))
            .collect()
    }

    /// The number of POSTs for `connection_id`, delivered or not.
    pub fn attempts(&self, connection_id: &str) -> u32 {
        self.state
            .lock()
            .unwrap()
            .attempts
            .get(connection_id)
            .copied()
            .unwrap_or(0)
    }

    /// Connections that received anything.
    pub fn recipients(&self) -> HashSet<String> {
        self.state.lock().unwrap().received.keys().cloned().collect()
    }

    /// From now on, POSTs to `connection_id` get 410 Gone.
    pub fn mark_gone(&self, connection_id: &str) {
        self.state.lock().unwrap().gone.insert(connection_id.to_string());
    }

    /// The next `times` POSTs to `connection_id` get 429.
    pub fn throttle(&self, connection_id: &str, times: u32) {
        self.state
            .lock()
            .unwrap()
            .throttle
            .insert(connection_id.to_string(), times);
    }

    /// From now on, each POST takes `latency` to be answered (a model of
    /// @connections' own time per call).
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.state.lock().unwrap().latency = latency;
    }

    /// For `window` from now, every POST gets 403 ForbiddenException, as
    /// while the functions' permission propagates after a deploy.
    pub fn forbid_for(&self, window: std::time::Duration) {
        self.state.lock().unwrap().forbidden_until = Some(std::time::Instant::now() + window);
    }

    pub fn clear(&self) {
        self.state.lock().unwrap().received.clear();
    }
}
