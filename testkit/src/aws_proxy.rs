//! A recording, optionally fault-injecting reverse proxy between an AWS SDK
//! client (chatctl) and the moto server.
//!
//! Every request is forwarded unchanged (method, path and query, headers other
//! than `Host` and the hop-by-hop ones, body) and moto's answer is returned
//! unchanged. Each request is recorded as an [`AwsCall`]: the service comes
//! from the SigV4 credential scope of the `Authorization` header, the operation
//! from the wire protocol (`X-Amz-Target` for awsJson, `Action=` for awsQuery,
//! method and path for restJson1, see [`rest_operation`]).
//!
//! With [`Faults`], a deterministic pseudo-random fraction of the requests is
//! answered by the proxy itself, without reaching moto, with a throttling
//! error or an HTTP 500 shaped the way the service's protocol shapes errors,
//! so the SDK parses and classifies them like real ones. The same request
//! (same service, operation, method, path, query and body: what an SDK retry
//! resends) is never faulted twice in a row, so a retried request always
//! passes on its next attempt.
//!
//! [`AwsProxy::deny`] answers chosen operations with the service's
//! access-denied error, as for credentials that lack the permission.
//!
//! With [`Behaviours`] (see [`crate::aws_behaviour`]), the proxy answers the
//! way real AWS does where moto is instant and lenient: concurrent-write
//! conflicts, IAM propagation, Lambda function states, DynamoDB CREATING and
//! tag lag, small pages, lost create responses, quotas and latency. All are off
//! for [`AwsProxy::start`].

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::aws_behaviour::{Behaviours, Decision, LayerError, LayerState, Protocol, RequestView};

/// One request that reached the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCall {
    /// The SigV4 signing name: `dynamodb`, `iam`, `sts`, `logs`, `lambda`,
    /// `apigateway` (API Gateway v2 and the management API), ….
    pub service: String,
    /// The operation name (`CreateTable`, `CreateRole`, `CreateFunction`, …),
    /// or `"METHOD /path"` for a REST request the proxy does not know.
    pub operation: String,
    /// Whether the operation changes state (see [`is_mutating_operation`]).
    pub mutating: bool,
    /// The size of the request's body: what the call uploaded.
    pub request_bytes: usize,
    /// Whether the proxy answered with an error of its own instead of moto's
    /// answer: an injected fault, a denial, or an error of the behaviour layer.
    pub faulted: bool,
    /// What the behaviour layer answered instead of moto: the error code
    /// (`ConflictException`, `ResourceConflictException`, …), `LostResponse`
    /// for a create whose answer it replaced by an HTTP 500, or
    /// `TableStatus DELETING` for a DescribeTable it answered (not faulted).
    /// `None` for moto's answers, injected [`Faults`] and [`AwsProxy::deny`].
    pub answered_by_layer: Option<String>,
    /// When the request arrived and when its answer left, since the proxy started.
    pub started: Duration,
    pub finished: Duration,
    /// Arrival order, unique per proxy.
    pub sequence: u64,
}

/// Which requests to answer with an injected error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// The fraction of requests answered with a throttling error.
    pub throttle_ratio: f64,
    /// The fraction of requests answered with an HTTP 500 service error.
    pub server_error_ratio: f64,
    /// Seeds the pseudo-random choice; the same seed and the same sequence of
    /// requests give the same faults.
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    Throttle,
    ServerError,
}

struct FaultState {
    faults: Faults,
    rng: u64,
    /// Requests (by content hash) whose last attempt was faulted.
    just_faulted: HashSet<u64>,
}

struct Recorded {
    calls: Vec<AwsCall>,
    next_sequence: u64,
    faults: Option<FaultState>,
    /// Operations answered with access denied.
    denied: HashSet<String>,
    /// The AWS behaviour layer.
    layer: LayerState,
}

struct Shared {
    upstream: String,
    client: Client<HttpConnector, Body>,
    recorded: Mutex<Recorded>,
    /// Call times are measured from here.
    epoch: Instant,
}

/// Aborts the server task when the last handle to the proxy goes.
struct ServerGuard(tokio::task::AbortHandle);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A reverse proxy in front of moto; see the module documentation.
#[derive(Clone)]
pub struct AwsProxy {
    shared: Arc<Shared>,
    endpoint: String,
    _server: Arc<ServerGuard>,
}

impl AwsProxy {
    /// Starts a recording proxy to `moto_endpoint` (e.g. `Moto::endpoint()`)
    /// on a free loopback port. Needs a Tokio runtime.
    pub async fn start(moto_endpoint: &str) -> AwsProxy {
        Self::start_inner(moto_endpoint, None, Behaviours::none()).await
    }

    /// Like [`AwsProxy::start`], and injects `faults` from the first request on.
    pub async fn start_with_faults(moto_endpoint: &str, faults: Faults) -> AwsProxy {
        Self::start_inner(moto_endpoint, Some(faults), Behaviours::none()).await
    }

    /// Like [`AwsProxy::start`], and reproduces `behaviours` of real AWS from
    /// the first request on (see [`crate::aws_behaviour`]).
    pub async fn start_with_behaviours(moto_endpoint: &str, behaviours: Behaviours) -> AwsProxy {
        Self::start_inner(moto_endpoint, None, behaviours).await
    }

    async fn start_inner(moto_endpoint: &str, faults: Option<Faults>, behaviours: Behaviours) -> AwsProxy {
        let shared = Arc::new(Shared {
            upstream: moto_endpoint.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            recorded: Mutex::new(Recorded {
                denied: HashSet::new(),
                calls: Vec::new(),
                next_sequence: 0,
                faults: faults.map(FaultState::new),
                layer: LayerState::new(behaviours),
            }),
            epoch: Instant::now(),
        });
        let app = Router::new().fallback(proxy).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind the AWS proxy to a loopback port");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        AwsProxy {
            shared,
            endpoint,
            _server: Arc::new(ServerGuard(server.abort_handle())),
        }
    }

    /// The proxy's URL, to give the SDK as `endpoint_url`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// Every request so far, in arrival order, faulted ones included.
    pub fn calls(&self) -> Vec<AwsCall> {
        self.recorded().calls.clone()
    }

    /// The requests so far whose operation changes state, faulted ones included.
    pub fn mutating_calls(&self) -> Vec<AwsCall> {
        self.recorded()
            .calls
            .iter()
            .filter(|call| call.mutating)
            .cloned()
            .collect()
    }

    /// The requests so far that the proxy answered with an injected fault.
    pub fn faulted_calls(&self) -> Vec<AwsCall> {
        self.recorded()
            .calls
            .iter()
            .filter(|call| call.faulted)
            .cloned()
            .collect()
    }

    /// Forgets the recorded calls (fault injection goes on as it was).
    pub fn clear(&self) {
        self.recorded().calls.clear();
    }

    /// Replaces the fault injection from the next request on; `None` stops it.
    pub fn set_faults(&self, faults: Option<Faults>) {
        self.recorded().faults = faults.map(FaultState::new);
    }

    /// Answers `operations` (e.g. `CreateRole`) with access denied from the
    /// next request on, every time; an empty list stops it.
    pub fn deny(&self, operations: &[&str]) {
        self.recorded().denied = operations.iter().map(|o| o.to_string()).collect();
    }

    /// Replaces the AWS behaviours from the next request on; what the layer
    /// remembers (roles, functions, tables, API writes, …) stays.
    /// How many calls the behaviour layer answered with `code` itself.
    pub fn layer_answers(&self, code: &str) -> usize {
        self.recorded()
            .calls
            .iter()
            .filter(|call| call.answered_by_layer.as_deref() == Some(code))
            .count()
    }

    pub fn set_behaviours(&self, behaviours: Behaviours) {
        self.recorded().layer.behaviours = behaviours;
    }

    /// GetFunction / GetFunctionConfiguration then show `function_name` (a
    /// name or ARN) as State `Inactive` (StateReasonCode `Idle`), as a
    /// function idle for weeks; updates are allowed and keep it `Inactive`
    /// (LastUpdateStatus goes `InProgress` → `Successful` with
    /// `function_states`). Lambda docs "functions-states" (aws-facts.md §10).
    /// Works whatever the behaviours; DeleteFunction forgets it.
    pub fn make_function_inactive(&self, function_name: &str) {
        self.recorded().layer.make_function_inactive(function_name);
    }

    /// Makes an S3 bucket name another account's: CreateBucket of it gets
    /// `409 BucketAlreadyExists`, HeadBucket and GetBucketTagging `403
    /// AccessDenied` (S3 API reference, CreateBucket and HeadBucket). Works
    /// whatever the behaviours.
    pub fn take_bucket_name(&self, name: &str) {
        self.recorded().layer.take_bucket_name(name);
    }

    fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.shared.recorded.lock().unwrap()
    }
}

impl FaultState {
    fn new(faults: Faults) -> FaultState {
        FaultState {
            faults,
            rng: faults.seed,
            just_faulted: HashSet::new(),
        }
    }

    /// splitmix64, as a float in [0, 1).
    fn next_unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn decide(&mut self, request_key: u64) -> Option<FaultKind> {
        let draw = self.next_unit();
        if self.just_faulted.remove(&request_key) {
            return None;
        }
        let kind = if draw < self.faults.throttle_ratio {
            FaultKind::Throttle
        } else if draw < self.faults.throttle_ratio + self.faults.server_error_ratio {
            FaultKind::ServerError
        } else {
            return None;
        };
        self.just_faulted.insert(request_key);
        Some(kind)
    }
}

/// What a write the layer let through holds (an API, DynamoDB items):
/// released when its handling ends, however it ends (the handler is dropped
/// when the client goes away).
struct InFlight {
    shared: Arc<Shared>,
    locks: Vec<String>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut recorded) = self.shared.recorded.lock() {
            recorded.layer.release(&self.locks);
        }
    }
}

/// Headers that belong to one connection, not to the request or response.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

async fn proxy(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}")),
    };
    let identified = identify(&parts.method, &parts.uri, &parts.headers, &body);
    let key = request_key(&identified, &parts.method, &parts.uri, &body);
    let arrived = Instant::now();

    let started = shared.epoch.elapsed();
    let (denied, fault, sequence, behaviours) = {
        let mut recorded = shared.recorded.lock().unwrap();
        let denied = recorded.denied.contains(&identified.operation);
        let fault = match &mut recorded.faults {
            Some(state) if !denied => state.decide(key),
            _ => None,
        };
        let sequence = recorded.next_sequence;
        recorded.next_sequence += 1;
        recorded.calls.push(AwsCall {
            service: identified.service.clone(),
            operation: identified.operation.clone(),
            mutating: identified.mutating,
            request_bytes: body.len(),
            faulted: denied || fault.is_some(),
            answered_by_layer: None,
            started,
            finished: started,
            sequence,
        });
        (denied, fault, sequence, recorded.layer.behaviours)
    };
    if denied {
        return access_denied_response(&identified, &parts.headers);
    }
    if let Some(kind) = fault {
        return fault_response(&identified, &parts.headers, kind);
    }

    let latency = behaviours.latency_of(&identified.operation, identified.mutating);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let view = RequestView {
        service: &identified.service,
        operation: &identified.operation,
        method: &parts.method,
        uri: &parts.uri,
        body: &body,
        key,
        arrived,
        role_session: parts.headers.contains_key("x-amz-security-token"),
        conditional: parts.headers.contains_key(header::IF_MATCH) || parts.headers.contains_key(header::IF_NONE_MATCH),
    };
    let decision = shared.recorded.lock().unwrap().layer.before(&view);
    let mut plan = match decision {
        Decision::Answer(error) => {
            finish(&shared, sequence, true, Some(error.code.to_string()));
            return layer_error_response(&identified, &parts.headers, &error);
        }
        Decision::Reply(value, what) => {
            finish(&shared, sequence, false, Some(what.to_string()));
            return json_response(&parts.headers, value);
        }
        Decision::Forward(plan) => *plan,
    };
    let _in_flight = InFlight {
        shared: shared.clone(),
        locks: LayerState::holds(&plan),
    };
    if let Some(arn) = plan.snapshot_tags_of.take() {
        plan.snapshot = fetch_dynamodb_tags(&shared, &parts.headers, &arn).await;
    }
    if !plan.read_old_images_of.is_empty() {
        let keys = std::mem::take(&mut plan.read_old_images_of);
        plan.old_images = fetch_dynamodb_items(&shared, &parts.headers, &keys).await;
    }

    // What moto gets: the request, less the paging parameters the layer took out.
    let mut upstream_parts = parts.clone();
    let mut upstream_body = body.clone();
    if let Some(path_and_query) = plan.new_path_and_query.take()
        && let Ok(uri) = path_and_query.parse::<Uri>()
    {
        upstream_parts.uri = uri;
    }
    if let Some(new_body) = plan.new_body.take() {
        upstream_parts.headers.remove(header::CONTENT_LENGTH);
        upstream_body = Bytes::from(new_body);
    }
    let (mut response_parts, response_body) = match forward_raw(&shared, upstream_parts, upstream_body).await {
        Ok(answer) => answer,
        Err(response) => {
            shared
                .recorded
                .lock()
                .unwrap()
                .layer
                .after(&view, plan, StatusCode::BAD_GATEWAY, &[]);
            finish(&shared, sequence, false, None);
            return response;
        }
    };
    let after = shared
        .recorded
        .lock()
        .unwrap()
        .layer
        .after(&view, plan, response_parts.status, &response_body);
    if after.lost {
        finish(&shared, sequence, true, Some("LostResponse".to_string()));
        return fault_response(&identified, &parts.headers, FaultKind::ServerError);
    }
    finish(&shared, sequence, false, None);
    let response_body = match after.body {
        Some(rewritten) => {
            // hyper sets the length of the new body.
            response_parts.headers.remove(header::CONTENT_LENGTH);
            Bytes::from(rewritten)
        }
        None => response_body,
    };
    Response::from_parts(response_parts, Body::from(response_body))
}

/// Notes when the call `sequence` was answered, and by whom.
fn finish(shared: &Shared, sequence: u64, faulted: bool, answered_by_layer: Option<String>) {
    let finished = shared.epoch.elapsed();
    if let Some(call) = shared
        .recorded
        .lock()
        .unwrap()
        .calls
        .iter_mut()
        .find(|c| c.sequence == sequence)
    {
        call.finished = finished;
        call.faulted |= faulted;
        call.answered_by_layer = answered_by_layer;
    }
}

/// The tags of a DynamoDB resource as moto has them now, asked with the
/// headers (credential scope) of the client's request; `None` if moto fails.
async fn fetch_dynamodb_tags(shared: &Shared, client_headers: &HeaderMap, arn: &str) -> Option<Vec<serde_json::Value>> {
    let mut tags = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let mut body = serde_json::json!({ "ResourceArn": arn });
        if let Some(token) = &next_token {
            body["NextToken"] = serde_json::json!(token);
        }
        let answer = dynamodb_call(shared, client_headers, "ListTagsOfResource", &body).await?;
        tags.extend(answer["Tags"].as_array().cloned().unwrap_or_default());
        match answer["NextToken"].as_str() {
            Some(token) => next_token = Some(token.to_string()),
            None => return Some(tags),
        }
    }
}

/// The items as moto has them now (table, item), those that exist.
async fn fetch_dynamodb_items(
    shared: &Shared,
    client_headers: &HeaderMap,
    keys: &[(String, serde_json::Value)],
) -> Vec<(String, serde_json::Value)> {
    let mut items = Vec::new();
    for (table, key) in keys {
        let body = serde_json::json!({ "TableName": table, "Key": key, "ConsistentRead": true });
        if let Some(mut answer) = dynamodb_call(shared, client_headers, "GetItem", &body).await
            && answer["Item"].is_object()
        {
            items.push((table.clone(), answer["Item"].take()));
        }
    }
    items
}

/// One DynamoDB call of the layer's own to moto, with the client's
/// credential scope; moto's answer, or `None` if it fails.
async fn dynamodb_call(
    shared: &Shared,
    client_headers: &HeaderMap,
    operation: &str,
    body: &serde_json::Value,
) -> Option<serde_json::Value> {
    let mut request = axum::http::Request::builder()
        .method(Method::POST)
        .uri(format!("{}/", shared.upstream))
        .header(header::CONTENT_TYPE, "application/x-amz-json-1.0")
        .header("x-amz-target", format!("DynamoDB_20120810.{operation}"));
    if let Some(authorization) = client_headers.get(header::AUTHORIZATION) {
        request = request.header(header::AUTHORIZATION, authorization);
    }
    let request = request.body(Body::from(body.to_string())).ok()?;
    let response = shared.client.request(request).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let bytes = axum::body::to_bytes(Body::new(response.into_body()), usize::MAX)
        .await
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Sends the request to moto; its answer (hop-by-hop headers removed), or
/// the proxy's answer when moto cannot be reached.
async fn forward_raw(
    shared: &Shared,
    mut parts: axum::http::request::Parts,
    body: Bytes,
) -> Result<(axum::http::response::Parts, Bytes), Response> {
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    parts.uri = match format!("{}{path_and_query}", shared.upstream).parse::<Uri>() {
        Ok(uri) => uri,
        Err(e) => return Err(plain(StatusCode::BAD_GATEWAY, format!("bad upstream URI: {e}"))),
    };
    parts.headers.remove(header::HOST);
    strip_hop_by_hop(&mut parts.headers);
    // A connection moto did not take (refused or reset before the request
    // was sent, as a busy 2-core runner sees) is tried again for a moment:
    // the request never reached moto, so nothing happens twice. Anything
    // else is answered 502 and said on stderr, where a test's output shows it.
    let mut attempts = 0;
    let response = loop {
        let upstream_request = axum::http::Request::from_parts(parts.clone(), Body::from(body.clone()));
        match shared.client.request(upstream_request).await {
            Ok(response) => break response,
            Err(e) if e.is_connect() && attempts < UPSTREAM_CONNECT_ATTEMPTS => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempts)).await;
            }
            Err(e) => {
                eprintln!("aws proxy: moto is unreachable after {attempts} retries: {e:?}");
                return Err(plain(StatusCode::BAD_GATEWAY, format!("moto is unreachable: {e}")));
            }
        }
    };
    let (mut parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(Body::new(body), usize::MAX).await {
        Ok(body) => body,
        Err(e) => {
            return Err(plain(
                StatusCode::BAD_GATEWAY,
                format!("cannot read moto's response: {e}"),
            ));
        }
    };
    strip_hop_by_hop(&mut parts.headers);
    Ok((parts, body))
}

/// How often a connection moto refused is tried again (50 ms, 100 ms, …: 1 s in all).
const UPSTREAM_CONNECT_ATTEMPTS: u64 = 6;

fn plain(status: StatusCode, text: String) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
}

/// The longest chain of calls in which each starts after the previous one
/// answered: an upper bound of the dependent calls a run made in sequence.
pub fn longest_chain(calls: &[AwsCall]) -> usize {
    longest_chain_calls(calls).len()
}

/// The calls of [`longest_chain`], first to last.
pub fn longest_chain_calls(calls: &[AwsCall]) -> Vec<AwsCall> {
    let mut by_start: Vec<&AwsCall> = calls.iter().collect();
    by_start.sort_by_key(|c| c.started);
    // chain[i]: the longest chain ending with by_start[i], and its previous link.
    let mut chain: Vec<(usize, Option<usize>)> = vec![(1, None); by_start.len()];
    for i in 0..by_start.len() {
        for j in 0..i {
            if by_start[j].finished <= by_start[i].started && chain[j].0 + 1 > chain[i].0 {
                chain[i] = (chain[j].0 + 1, Some(j));
            }
        }
    }
    let Some(mut at) = (0..chain.len()).max_by_key(|i| chain[*i].0) else {
        return vec![];
    };
    let mut links = vec![by_start[at].clone()];
    while let Some(previous) = chain[at].1 {
        links.push(by_start[previous].clone());
        at = previous;
    }
    links.reverse();
    links
}

/// Identifies "the same request" across SDK retries: everything that retries
/// resend unchanged (not the signature, date or attempt headers).
fn request_key(identified: &Identified, method: &Method, uri: &Uri, body: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    identified.service.hash(&mut hasher);
    identified.operation.hash(&mut hasher);
    method.as_str().hash(&mut hasher);
    uri.path_and_query().map(|pq| pq.as_str()).hash(&mut hasher);
    body.hash(&mut hasher);
    hasher.finish()
}

struct Identified {
    service: String,
    operation: String,
    mutating: bool,
    protocol: Protocol,
}

fn identify(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Identified {
    let target = headers
        .get("x-amz-target")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let service = signing_service(headers)
        .or_else(|| {
            // Unsigned awsJson requests: `DynamoDB_20120810.PutItem` → `dynamodb`.
            let prefix = target.as_deref()?.split(['.', '_']).next()?;
            Some(prefix.to_ascii_lowercase())
        })
        .unwrap_or_else(|| "unknown".to_string());

    if let Some(target) = target {
        let operation = target.rsplit('.').next().unwrap_or(&target).to_string();
        return Identified {
            mutating: is_mutating_operation(&operation),
            service,
            operation,
            protocol: Protocol::AwsJson,
        };
    }
    // Smithy RPC v2 CBOR: the operation is the path's last segment.
    let rpc_v2 = headers
        .get("smithy-protocol")
        .is_some_and(|value| value == "rpc-v2-cbor");
    let rpc_operation = uri
        .path()
        .strip_prefix("/service/")
        .and_then(|rest| rest.split_once("/operation/"))
        .map(|(_, operation)| operation);
    if let (true, Some(operation)) = (rpc_v2, rpc_operation) {
        return Identified {
            mutating: is_mutating_operation(operation),
            service,
            operation: operation.to_string(),
            protocol: Protocol::RpcV2Cbor,
        };
    }
    if service == "s3" {
        let operation = s3_operation(method, uri);
        return Identified {
            mutating: is_mutating_operation(&operation),
            service,
            operation,
            protocol: Protocol::RestXml,
        };
    }
    let action =
        form_value(body, "Action").or_else(|| uri.query().and_then(|query| form_value(query.as_bytes(), "Action")));
    if let Some(operation) = action {
        return Identified {
            mutating: is_mutating_operation(&operation),
            service,
            operation,
            protocol: Protocol::AwsQuery,
        };
    }
    let (operation, mutating) = match rest_operation(&service, method.as_str(), uri.path()) {
        Some(operation) => (operation.to_string(), is_mutating_operation(operation)),
        None => (
            format!("{method} {}", uri.path()),
            matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE),
        ),
    };
    Identified {
        service,
        operation,
        mutating,
        protocol: Protocol::RestJson,
    }
}

/// The service of the SigV4 credential scope:
/// `Credential=AKID/20250101/us-east-1/dynamodb/aws4_request` → `dynamodb`.
fn signing_service(headers: &HeaderMap) -> Option<String> {
    let authorization = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let credential = authorization.split("Credential=").nth(1)?;
    let scope = credential.split([',', ' ']).next()?;
    let parts: Vec<&str> = scope.split('/').collect();
    // AKID / date / region / service / aws4_request
    (parts.len() >= 5).then(|| parts[parts.len() - 2].to_string())
}

/// A value of an `application/x-www-form-urlencoded` body or query string.
fn form_value(form: &[u8], key: &str) -> Option<String> {
    let form = std::str::from_utf8(form).ok()?;
    form.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == key && !value.is_empty()).then(|| value.replace('+', " "))
    })
}

/// Operation-name prefixes that change state.
const MUTATING_PREFIXES: &[&str] = &[
    "Create",
    "Put",
    "Update",
    "Delete",
    "Tag",
    "Untag",
    "Add",
    "Remove",
    "Attach",
    "Detach",
    "Enable",
    "Disable",
    "TransactWrite",
    "BatchWrite",
    "Publish",
    "Associate",
    "Disassociate",
    "Import",
    "Reimport",
    "Reset",
    "Restore",
    "Request",
    "Change",
];

/// Whether an operation name denotes a change of state: it starts with one of
/// the verbs above as a whole word (`CreateTable`, `TagResource`, `PutItem`),
/// not merely with the letters (`Tags…` is no `Tag`).
pub fn is_mutating_operation(operation: &str) -> bool {
    MUTATING_PREFIXES.iter().any(|prefix| {
        operation
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_uppercase()))
    })
}

/// restJson1 operations by signing name, HTTP method and path pattern (`*` is
/// one path segment).
const REST_OPERATIONS: &[(&str, &str, &str, &str)] = &[
    // Lambda
    ("lambda", "POST", "/2015-03-31/functions", "CreateFunction"),
    ("lambda", "GET", "/2015-03-31/functions", "ListFunctions"),
    ("lambda", "GET", "/2015-03-31/functions/*", "GetFunction"),
    ("lambda", "DELETE", "/2015-03-31/functions/*", "DeleteFunction"),
    (
        "lambda",
        "GET",
        "/2015-03-31/functions/*/configuration",
        "GetFunctionConfiguration",
    ),
    (
        "lambda",
        "PUT",
        "/2015-03-31/functions/*/configuration",
        "UpdateFunctionConfiguration",
    ),
    ("lambda", "PUT", "/2015-03-31/functions/*/code", "UpdateFunctionCode"),
    ("lambda", "POST", "/2015-03-31/functions/*/policy", "AddPermission"),
    ("lambda", "GET", "/2015-03-31/functions/*/policy", "GetPolicy"),
    (
        "lambda",
        "DELETE",
        "/2015-03-31/functions/*/policy/*",
        "RemovePermission",
    ),
    ("lambda", "POST", "/2015-03-31/functions/*/invocations", "Invoke"),
    ("lambda", "POST", "/2015-03-31/functions/*/versions", "PublishVersion"),
    (
        "lambda",
        "GET",
        "/2015-03-31/functions/*/versions",
        "ListVersionsByFunction",
    ),
    ("lambda", "POST", "/2015-03-31/functions/*/aliases", "CreateAlias"),
    ("lambda", "GET", "/2015-03-31/functions/*/aliases", "ListAliases"),
    ("lambda", "GET", "/2015-03-31/functions/*/aliases/*", "GetAlias"),
    ("lambda", "PUT", "/2015-03-31/functions/*/aliases/*", "UpdateAlias"),
    ("lambda", "DELETE", "/2015-03-31/functions/*/aliases/*", "DeleteAlias"),
    (
        "lambda",
        "PUT",
        "/2017-10-31/functions/*/concurrency",
        "PutFunctionConcurrency",
    ),
    (
        "lambda",
        "DELETE",
        "/2017-10-31/functions/*/concurrency",
        "DeleteFunctionConcurrency",
    ),
    (
        "lambda",
        "GET",
        "/2019-09-30/functions/*/concurrency",
        "GetFunctionConcurrency",
    ),
    ("lambda", "POST", "/2017-03-31/tags/*", "TagResource"),
    ("lambda", "GET", "/2017-03-31/tags/*", "ListTags"),
    ("lambda", "DELETE", "/2017-03-31/tags/*", "UntagResource"),
    ("lambda", "GET", "/2016-08-19/account-settings", "GetAccountSettings"),
    // API Gateway v2
    ("apigateway", "POST", "/v2/apis", "CreateApi"),
    ("apigateway", "GET", "/v2/apis", "GetApis"),
    ("apigateway", "PUT", "/v2/apis", "ImportApi"),
    ("apigateway", "GET", "/v2/apis/*", "GetApi"),
    ("apigateway", "PATCH", "/v2/apis/*", "UpdateApi"),
    ("apigateway", "PUT", "/v2/apis/*", "ReimportApi"),
    ("apigateway", "DELETE", "/v2/apis/*", "DeleteApi"),
    ("apigateway", "POST", "/v2/apis/*/routes", "CreateRoute"),
    ("apigateway", "GET", "/v2/apis/*/routes", "GetRoutes"),
    ("apigateway", "GET", "/v2/apis/*/routes/*", "GetRoute"),
    ("apigateway", "PATCH", "/v2/apis/*/routes/*", "UpdateRoute"),
    ("apigateway", "DELETE", "/v2/apis/*/routes/*", "DeleteRoute"),
    (
        "apigateway",
        "POST",
        "/v2/apis/*/routes/*/routeresponses",
        "CreateRouteResponse",
    ),
    (
        "apigateway",
        "GET",
        "/v2/apis/*/routes/*/routeresponses",
        "GetRouteResponses",
    ),
    (
        "apigateway",
        "GET",
        "/v2/apis/*/routes/*/routeresponses/*",
        "GetRouteResponse",
    ),
    (
        "apigateway",
        "PATCH",
        "/v2/apis/*/routes/*/routeresponses/*",
        "UpdateRouteResponse",
    ),
    (
        "apigateway",
        "DELETE",
        "/v2/apis/*/routes/*/routeresponses/*",
        "DeleteRouteResponse",
    ),
    ("apigateway", "POST", "/v2/apis/*/integrations", "CreateIntegration"),
    ("apigateway", "GET", "/v2/apis/*/integrations", "GetIntegrations"),
    ("apigateway", "GET", "/v2/apis/*/integrations/*", "GetIntegration"),
    ("apigateway", "PATCH", "/v2/apis/*/integrations/*", "UpdateIntegration"),
    ("apigateway", "DELETE", "/v2/apis/*/integrations/*", "DeleteIntegration"),
    (
        "apigateway",
        "POST",
        "/v2/apis/*/integrations/*/integrationresponses",
        "CreateIntegrationResponse",
    ),
    (
        "apigateway",
        "GET",
        "/v2/apis/*/integrations/*/integrationresponses",
        "GetIntegrationResponses",
    ),
    ("apigateway", "POST", "/v2/apis/*/authorizers", "CreateAuthorizer"),
    ("apigateway", "GET", "/v2/apis/*/authorizers", "GetAuthorizers"),
    ("apigateway", "GET", "/v2/apis/*/authorizers/*", "GetAuthorizer"),
    ("apigateway", "PATCH", "/v2/apis/*/authorizers/*", "UpdateAuthorizer"),
    ("apigateway", "DELETE", "/v2/apis/*/authorizers/*", "DeleteAuthorizer"),
    ("apigateway", "POST", "/v2/apis/*/stages", "CreateStage"),
    ("apigateway", "GET", "/v2/apis/*/stages", "GetStages"),
    ("apigateway", "GET", "/v2/apis/*/stages/*", "GetStage"),
    ("apigateway", "PATCH", "/v2/apis/*/stages/*", "UpdateStage"),
    (
        "apigateway",
        "DELETE",
        "/v2/apis/*/stages/*/routesettings/*",
        "DeleteRouteSettings",
    ),
    (
        "apigateway",
        "DELETE",
        "/v2/apis/*/stages/*/accesslogsettings",
        "DeleteAccessLogSettings",
    ),
    ("apigateway", "DELETE", "/v2/apis/*/stages/*", "DeleteStage"),
    ("apigateway", "POST", "/v2/apis/*/deployments", "CreateDeployment"),
    ("apigateway", "GET", "/v2/apis/*/deployments", "GetDeployments"),
    ("apigateway", "GET", "/v2/apis/*/deployments/*", "GetDeployment"),
    ("apigateway", "PATCH", "/v2/apis/*/deployments/*", "UpdateDeployment"),
    ("apigateway", "DELETE", "/v2/apis/*/deployments/*", "DeleteDeployment"),
    ("apigateway", "POST", "/v2/domainnames", "CreateDomainName"),
    ("apigateway", "GET", "/v2/domainnames", "GetDomainNames"),
    ("apigateway", "GET", "/v2/domainnames/*", "GetDomainName"),
    ("apigateway", "PATCH", "/v2/domainnames/*", "UpdateDomainName"),
    ("apigateway", "DELETE", "/v2/domainnames/*", "DeleteDomainName"),
    (
        "apigateway",
        "POST",
        "/v2/domainnames/*/apimappings",
        "CreateApiMapping",
    ),
    ("apigateway", "GET", "/v2/domainnames/*/apimappings", "GetApiMappings"),
    ("apigateway", "GET", "/v2/domainnames/*/apimappings/*", "GetApiMapping"),
    (
        "apigateway",
        "PATCH",
        "/v2/domainnames/*/apimappings/*",
        "UpdateApiMapping",
    ),
    (
        "apigateway",
        "DELETE",
        "/v2/domainnames/*/apimappings/*",
        "DeleteApiMapping",
    ),
    ("apigateway", "POST", "/v2/tags/*", "TagResource"),
    ("apigateway", "GET", "/v2/tags/*", "GetTags"),
    ("apigateway", "DELETE", "/v2/tags/*", "UntagResource"),
    // Route 53 (restXml; no error of it is made up by the layer).
    ("route53", "GET", "/2013-04-01/hostedzone", "ListHostedZones"),
    ("route53", "POST", "/2013-04-01/hostedzone", "CreateHostedZone"),
    ("route53", "GET", "/2013-04-01/hostedzone/*", "GetHostedZone"),
    (
        "route53",
        "GET",
        "/2013-04-01/hostedzone/*/rrset",
        "ListResourceRecordSets",
    ),
    (
        "route53",
        "POST",
        "/2013-04-01/hostedzone/*/rrset",
        "ChangeResourceRecordSets",
    ),
    ("route53", "GET", "/2013-04-01/change/*", "GetChange"),
    // API Gateway management API (@connections), same signing name.
    ("execute-api", "POST", "/*/@connections/*", "PostToConnection"),
    ("execute-api", "POST", "/@connections/*", "PostToConnection"),
    ("execute-api", "GET", "/*/@connections/*", "GetConnection"),
    ("execute-api", "GET", "/@connections/*", "GetConnection"),
    ("execute-api", "DELETE", "/*/@connections/*", "DeleteConnection"),
    ("execute-api", "DELETE", "/@connections/*", "DeleteConnection"),
];

/// The S3 operation of a path-style request (`/bucket`, `/bucket/key`),
/// from its method and its query's subresource (`?tagging`, `?delete`, …).
pub fn s3_operation(method: &Method, uri: &Uri) -> String {
    let path = uri.path().trim_start_matches('/');
    let object = path.split_once('/').is_some_and(|(_, key)| !key.is_empty());
    let query = uri.query().unwrap_or("");
    let has = |name: &str| query.split('&').any(|pair| pair.split('=').next() == Some(name));
    let method = method.as_str();
    let operation = match (method, object) {
        ("GET", _) if path.is_empty() => "ListBuckets",
        ("PUT", false) if has("tagging") => "PutBucketTagging",
        ("GET", false) if has("tagging") => "GetBucketTagging",
        ("DELETE", false) if has("tagging") => "DeleteBucketTagging",
        ("PUT", false) if has("publicAccessBlock") => "PutPublicAccessBlock",
        ("GET", false) if has("publicAccessBlock") => "GetPublicAccessBlock",
        ("PUT", false) if has("encryption") => "PutBucketEncryption",
        ("GET", false) if has("encryption") => "GetBucketEncryption",
        ("PUT", false) if has("lifecycle") => "PutBucketLifecycleConfiguration",
        ("GET", false) if has("lifecycle") => "GetBucketLifecycleConfiguration",
        ("POST", false) if has("delete") => "DeleteObjects",
        ("GET", false) if has("list-type") => "ListObjectsV2",
        ("GET", false) => "ListObjects",
        ("PUT", false) => "CreateBucket",
        ("HEAD", false) => "HeadBucket",
        ("DELETE", false) => "DeleteBucket",
        ("PUT", true) => "PutObject",
        ("GET", true) => "GetObject",
        ("HEAD", true) => "HeadObject",
        ("DELETE", true) => "DeleteObject",
        _ => return format!("{method} /{path}"),
    };
    operation.to_string()
}

/// The name of a restJson1 operation, from its signing name, method and path;
/// `None` when the proxy does not know it.
pub fn rest_operation(service: &str, method: &str, path: &str) -> Option<&'static str> {
    let path = path.trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    REST_OPERATIONS
        .iter()
        .find(|(op_service, op_method, pattern, _)| {
            *op_service == service && op_method.eq_ignore_ascii_case(method) && matches_pattern(pattern, &segments)
        })
        .map(|(_, _, _, operation)| *operation)
}

fn matches_pattern(pattern: &str, segments: &[&str]) -> bool {
    let pattern: Vec<&str> = pattern.split('/').skip(1).collect();
    pattern.len() == segments.len()
        && pattern
            .iter()
            .zip(segments)
            .all(|(expected, actual)| (*expected == "*" && !actual.is_empty()) || expected == actual)
}

/// An error answer in the shape `identified`'s protocol and service use, so the
/// SDK parses its code and classifies it (throttling / transient) as it would
/// a real one.
fn fault_response(identified: &Identified, request_headers: &HeaderMap, kind: FaultKind) -> Response {
    let service = identified.service.as_str();
    let (status, content_type, error_type, body) = match (identified.protocol, kind) {
        (Protocol::AwsJson, _) => {
            let (status, code, message) = match kind {
                FaultKind::Throttle => (StatusCode::BAD_REQUEST, "ThrottlingException", "Rate exceeded"),
                FaultKind::ServerError => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    match service {
                        "dynamodb" => "InternalServerError",
                        "logs" => "ServiceUnavailableException",
                        _ => "InternalFailure",
                    },
                    "Internal server error",
                ),
            };
            // DynamoDB qualifies `__type` with its namespace; the SDK keeps
            // what follows the `#`.
            let code = match service {
                "dynamodb" => format!("com.amazonaws.dynamodb.v20120810#{code}"),
                _ => code.to_string(),
            };
            let content_type = request_headers
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("application/x-amz-json-1.0")
                .to_string();
            let body = serde_json::json!({ "__type": code, "message": message });
            (status, content_type, None, body.to_string())
        }
        (Protocol::AwsQuery, _) => {
            let (status, error_type, code, message) = match kind {
                FaultKind::Throttle => (StatusCode::BAD_REQUEST, "Sender", "Throttling", "Rate exceeded"),
                FaultKind::ServerError => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Receiver",
                    if service == "iam" {
                        "ServiceFailure"
                    } else {
                        "InternalFailure"
                    },
                    "Internal server error",
                ),
            };
            let body = format!(
                "<ErrorResponse><Error><Type>{error_type}</Type><Code>{code}</Code>\
                 <Message>{message}</Message></Error><RequestId>{REQUEST_ID}</RequestId></ErrorResponse>"
            );
            (status, "text/xml".to_string(), None, body)
        }
        (Protocol::RpcV2Cbor, FaultKind::Throttle) => {
            return cbor_error_response(StatusCode::BAD_REQUEST, "ThrottlingException", "Rate exceeded");
        }
        (Protocol::RpcV2Cbor, FaultKind::ServerError) => {
            return cbor_error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalFailure",
                "Internal server error",
            );
        }
        // S3 throttles with 503 SlowDown (S3 API reference, error codes).
        (Protocol::RestXml, FaultKind::Throttle) => {
            return s3_error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "SlowDown",
                "Please reduce your request rate.",
            );
        }
        (Protocol::RestXml, FaultKind::ServerError) => {
            return s3_error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "We encountered an internal error. Please try again.",
            );
        }
        (Protocol::RestJson, FaultKind::Throttle) => {
            let body = if service == "lambda" {
                serde_json::json!({ "message": "Rate exceeded", "Type": "User", "Reason": "CallerRateLimitExceeded" })
            } else {
                serde_json::json!({ "message": "Too Many Requests" })
            };
            (
                StatusCode::TOO_MANY_REQUESTS,
                "application/json".to_string(),
                Some("TooManyRequestsException"),
                body.to_string(),
            )
        }
        (Protocol::RestJson, FaultKind::ServerError) => {
            let (code, body) = if service == "lambda" {
                (
                    "ServiceException",
                    serde_json::json!({ "message": "Internal server error", "Type": "Service" }),
                )
            } else {
                (
                    "InternalFailure",
                    serde_json::json!({ "message": "Internal server error" }),
                )
            };
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "application/json".to_string(),
                Some(code),
                body.to_string(),
            )
        }
    };
    error_response(status, &content_type, error_type, body)
}

/// The service's access-denied error, shaped by its protocol.
fn access_denied_response(identified: &Identified, request_headers: &HeaderMap) -> Response {
    let service = identified.service.as_str();
    let denied = format!(
        "User: arn:aws:iam::123456789012:user/tester is not authorized to perform: {service}:{} \
         because no identity-based policy allows the {service}:{} action",
        identified.operation, identified.operation
    );
    let (status, content_type, error_type, body) = match identified.protocol {
        Protocol::AwsJson => {
            let content_type = request_headers
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("application/x-amz-json-1.0")
                .to_string();
            let code = match service {
                "dynamodb" => "com.amazon.coral.service#AccessDeniedException",
                _ => "AccessDeniedException",
            };
            let body = serde_json::json!({ "__type": code, "message": denied });
            (StatusCode::BAD_REQUEST, content_type, None, body.to_string())
        }
        Protocol::AwsQuery => {
            let body = format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
                 <Message>{denied}</Message></Error><RequestId>{REQUEST_ID}</RequestId></ErrorResponse>"
            );
            (StatusCode::FORBIDDEN, "text/xml".to_string(), None, body)
        }
        Protocol::RpcV2Cbor => return cbor_error_response(StatusCode::BAD_REQUEST, "AccessDeniedException", &denied),
        Protocol::RestXml => return s3_error_response(StatusCode::FORBIDDEN, "AccessDenied", &denied),
        Protocol::RestJson => {
            let body = serde_json::json!({ "message": denied, "Message": denied });
            (
                StatusCode::FORBIDDEN,
                "application/json".to_string(),
                Some("AccessDeniedException"),
                body.to_string(),
            )
        }
    };
    error_response(status, &content_type, error_type, body)
}

/// An error of the behaviour layer, shaped by the protocol of the request.
fn layer_error_response(identified: &Identified, request_headers: &HeaderMap, error: &LayerError) -> Response {
    let service = identified.service.as_str();
    let mut response = match identified.protocol {
        Protocol::AwsJson => {
            let code = match service {
                // IAM's refusals come from the service framework, not DynamoDB's model.
                "dynamodb" if error.code == "AccessDeniedException" => {
                    "com.amazon.coral.service#AccessDeniedException".to_string()
                }
                "dynamodb" => format!("com.amazonaws.dynamodb.v20120810#{}", error.code),
                _ => error.code.to_string(),
            };
            let mut body = serde_json::json!({ "__type": code, "message": error.message });
            if let Some(serde_json::Value::Object(extra)) = &error.extra {
                for (name, value) in extra {
                    body[name] = value.clone();
                }
            }
            error_response(
                error.status,
                &json_content_type(request_headers),
                None,
                body.to_string(),
            )
        }
        Protocol::AwsQuery => {
            let body = format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>{}</Code><Message>{}</Message></Error>\
                 <RequestId>{REQUEST_ID}</RequestId></ErrorResponse>",
                error.code, error.message
            );
            error_response(error.status, "text/xml", None, body)
        }
        Protocol::RpcV2Cbor => cbor_error_response(error.status, error.code, &error.message),
        Protocol::RestXml => s3_error_response(error.status, error.code, &error.message),
        Protocol::RestJson => {
            let mut body = serde_json::json!({ "message": error.message });
            if let Some(serde_json::Value::Object(extra)) = &error.extra {
                for (name, value) in extra {
                    body[name] = value.clone();
                }
            }
            error_response(error.status, "application/json", Some(error.code), body.to_string())
        }
    };
    if let Some(seconds) = error.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// A 200 awsJson answer made by the layer.
fn json_response(request_headers: &HeaderMap, value: serde_json::Value) -> Response {
    error_response(
        StatusCode::OK,
        &json_content_type(request_headers),
        None,
        value.to_string(),
    )
}

/// The awsJson content type of the request (1.0 or 1.1), for its answer.
fn json_content_type(request_headers: &HeaderMap) -> String {
    request_headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/x-amz-json-1.0")
        .to_string()
}

fn error_response(status: StatusCode, content_type: &str, error_type: Option<&str>, body: String) -> Response {
    let mut response = Response::new(Body::from(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/json")),
    );
    headers.insert("x-amzn-requestid", HeaderValue::from_static(REQUEST_ID));
    if let Some(error_type) = error_type.and_then(|value| HeaderValue::from_str(value).ok()) {
        headers.insert("x-amzn-errortype", error_type);
    }
    response
}

/// An error as S3 answers it: XML `<Error>` with its code and message.
fn s3_error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>\
         <RequestId>{REQUEST_ID}</RequestId></Error>"
    );
    error_response(status, "application/xml", None, body)
}

/// An error as Smithy RPC v2 CBOR carries it: a CBOR map with `__type`.
fn cbor_error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let error = ciborium::Value::Map(vec![
        (
            ciborium::Value::Text("__type".into()),
            ciborium::Value::Text(code.into()),
        ),
        (
            ciborium::Value::Text("message".into()),
            ciborium::Value::Text(message.into()),
        ),
    ]);
    let mut body = Vec::new();
    // Writing a CBOR map into a Vec cannot fail.
    let _ = ciborium::into_writer(&error, &mut body);
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/cbor"));
    headers.insert("smithy-protocol", HeaderValue::from_static("rpc-v2-cbor"));
    headers.insert("x-amzn-requestid", HeaderValue::from_static(REQUEST_ID));
    response
}

const REQUEST_ID: &str = "00000000-0000-4000-8000-00000000fa17";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_rest_operations() {
        let cases = [
            ("lambda", "POST", "/2015-03-31/functions", "CreateFunction"),
            ("lambda", "GET", "/2015-03-31/functions/", "ListFunctions"),
            ("lambda", "GET", "/2015-03-31/functions/chat-connect", "GetFunction"),
            (
                "lambda",
                "GET",
                "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Ax/configuration",
                "GetFunctionConfiguration",
            ),
            ("lambda", "PUT", "/2015-03-31/functions/f/code", "UpdateFunctionCode"),
            (
                "lambda",
                "PUT",
                "/2015-03-31/functions/f/configuration",
                "UpdateFunctionConfiguration",
            ),
            ("lambda", "DELETE", "/2015-03-31/functions/f", "DeleteFunction"),
            ("lambda", "POST", "/2015-03-31/functions/f/policy", "AddPermission"),
            (
                "lambda",
                "DELETE",
                "/2015-03-31/functions/f/policy/apigw-route",
                "RemovePermission",
            ),
            ("lambda", "GET", "/2015-03-31/functions/f/policy", "GetPolicy"),
            ("lambda", "POST", "/2017-03-31/tags/arn%3Aaws%3Alambda", "TagResource"),
            ("lambda", "GET", "/2017-03-31/tags/arn%3Aaws%3Alambda", "ListTags"),
            ("apigateway", "POST", "/v2/apis", "CreateApi"),
            ("apigateway", "GET", "/v2/apis", "GetApis"),
            ("apigateway", "GET", "/v2/apis/a1b2c3", "GetApi"),
            ("apigateway", "DELETE", "/v2/apis/a1b2c3", "DeleteApi"),
            ("apigateway", "POST", "/v2/apis/a1/routes", "CreateRoute"),
            ("apigateway", "GET", "/v2/apis/a1/routes", "GetRoutes"),
            ("apigateway", "PATCH", "/v2/apis/a1/routes/r1", "UpdateRoute"),
            ("apigateway", "DELETE", "/v2/apis/a1/routes/r1", "DeleteRoute"),
            ("apigateway", "POST", "/v2/apis/a1/integrations", "CreateIntegration"),
            ("apigateway", "GET", "/v2/apis/a1/integrations", "GetIntegrations"),
            (
                "apigateway",
                "PATCH",
                "/v2/apis/a1/integrations/i1",
                "UpdateIntegration",
            ),
            (
                "apigateway",
                "DELETE",
                "/v2/apis/a1/integrations/i1",
                "DeleteIntegration",
            ),
            ("apigateway", "POST", "/v2/apis/a1/authorizers", "CreateAuthorizer"),
            ("apigateway", "GET", "/v2/apis/a1/authorizers", "GetAuthorizers"),
            ("apigateway", "PATCH", "/v2/apis/a1/authorizers/z1", "UpdateAuthorizer"),
            ("apigateway", "DELETE", "/v2/apis/a1/authorizers/z1", "DeleteAuthorizer"),
            ("apigateway", "POST", "/v2/apis/a1/stages", "CreateStage"),
            ("apigateway", "GET", "/v2/apis/a1/stages/dev", "GetStage"),
            ("apigateway", "PATCH", "/v2/apis/a1/stages/dev", "UpdateStage"),
            ("apigateway", "DELETE", "/v2/apis/a1/stages/dev", "DeleteStage"),
            ("apigateway", "POST", "/v2/apis/a1/deployments", "CreateDeployment"),
            ("apigateway", "GET", "/v2/apis/a1/deployments", "GetDeployments"),
            (
                "apigateway",
                "POST",
                "/v2/tags/arn%3Aaws%3Aapigateway%3Aus-east-1%3A%3A%2Fapis%2Fa1",
                "TagResource",
            ),
        ];
        for (service, method, path, expected) in cases {
            assert_eq!(rest_operation(service, method, path), Some(expected), "{method} {path}");
        }
        assert_eq!(rest_operation("lambda", "GET", "/v2/apis"), None);
        assert_eq!(rest_operation("apigateway", "GET", "/v2/apis/a1/nothing/x/y"), None);
    }

    #[test]
    fn classifies_mutating_operations() {
        for name in [
            "CreateTable",
            "PutItem",
            "UpdateTimeToLive",
            "DeleteRole",
            "TagResource",
            "TagRole",
            "UntagResource",
            "AddPermission",
            "RemovePermission",
            "AttachRolePolicy",
            "DetachRolePolicy",
            "RequestCertificate",
            "ChangeResourceRecordSets",
            "TransactWriteItems",
            "BatchWriteItem",
            "PutRolePolicy",
            "CreateFunction",
        ] {
            assert!(is_mutating_operation(name), "{name}");
        }
        for name in [
            "DescribeTable",
            "GetItem",
            "Query",
            "Scan",
            "GetRole",
            "ListFunctions",
            "GetFunction",
            "GetCallerIdentity",
            "FilterLogEvents",
            "Tags",
            "Additional",
            "BatchGetItem",
            "TransactGetItems",
        ] {
            assert!(!is_mutating_operation(name), "{name}");
        }
    }

    #[test]
    fn reads_the_signing_service() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/dynamodb/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=abc",
            ),
        );
        assert_eq!(signing_service(&headers).as_deref(), Some("dynamodb"));
        assert_eq!(signing_service(&HeaderMap::new()), None);
    }

    #[test]
    fn never_faults_the_same_request_twice_in_a_row() {
        let mut state = FaultState::new(Faults {
            throttle_ratio: 1.0,
            server_error_ratio: 0.0,
            seed: 7,
        });
        assert_eq!(state.decide(1), Some(FaultKind::Throttle));
        assert_eq!(state.decide(1), None);
        assert_eq!(state.decide(2), Some(FaultKind::Throttle));
        assert_eq!(state.decide(1), Some(FaultKind::Throttle));
        assert_eq!(state.decide(1), None);
    }

    #[test]
    fn faults_at_about_the_ratio_and_deterministically() {
        let faults = Faults {
            throttle_ratio: 0.2,
            server_error_ratio: 0.1,
            seed: 42,
        };
        let run = || {
            let mut state = FaultState::new(faults);
            (0..10_000u64).map(|key| state.decide(key)).collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run());
        let throttles = first.iter().filter(|f| **f == Some(FaultKind::Throttle)).count();
        let errors = first.iter().filter(|f| **f == Some(FaultKind::ServerError)).count();
        assert!((1_700..2_300).contains(&throttles), "{throttles}");
        assert!((700..1_300).contains(&errors), "{errors}");
    }
}
