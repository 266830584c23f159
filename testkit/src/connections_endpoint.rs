//! A local HTTP listener standing in for API Gateway's `@connections` API:
//! it records what each connection was sent, and answers 410 for connections
//! marked gone, 429 for a set number of attempts where told to, and 403 to
//! everyone for a while where told to (the functions' permission still
//! propagating, aws-facts.md §11 "permissions right after `up`").
//!
//! Like API Gateway, it checks every POST's SigV4 signature (service
//! `execute-api`, the test credentials of [`crate::moto`]) and answers 403
//! with AWS's messages when it is missing, stale or wrong: moto and the
//! emulators check none, and the functions sign their posts themselves.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
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
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err((error_type, message)) = check_signature("POST", &uri, &headers, &body) {
        return refuse(error_type, &message);
    }
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
    refuse("ForbiddenException", &message)
}

/// How far a request's `x-amz-date` may be from now: AWS refuses a signature
/// older than 5 minutes ("Signature expired"), and one as far ahead.
const SIGNATURE_SKEW: Duration = Duration::from_secs(5 * 60);

/// The credentials this endpoint knows, as IAM knows an account's keys.
fn known_credentials(access_key_id: &str) -> Option<Credentials> {
    [crate::moto::test_credentials(), crate::moto::role_credentials()]
        .into_iter()
        .find(|credentials| credentials.access_key_id() == access_key_id)
}

/// SigV4 as AWS checks it on `execute-api`: the `Authorization` header's
/// scope, key and signed headers, the date's skew, the session token, and
/// the signature recomputed from the request as it arrived.
fn check_signature(
    method: &str,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), (&'static str, String)> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let Some(authorization) = header("authorization") else {
        return Err((
            "MissingAuthenticationTokenException",
            "Missing Authentication Token".into(),
        ));
    };
    let incomplete = || {
        (
            "IncompleteSignatureException",
            format!("Authorization header requires 'Credential', 'SignedHeaders' and 'Signature': {authorization}"),
        )
    };
    let fields = authorization.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(incomplete)?;
    let field = |name: &str| {
        fields
            .split(", ")
            .find_map(|part| part.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
    };
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (field("Credential"), field("SignedHeaders"), field("Signature"))
    else {
        return Err(incomplete());
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, day, region, service, "aws4_request"] = scope[..] else {
        return Err(incomplete());
    };
    let invalid_token = || {
        (
            "UnrecognizedClientException",
            "The security token included in the request is invalid.".into(),
        )
    };
    let credentials = known_credentials(access_key_id).ok_or_else(invalid_token)?;
    if service != "execute-api" {
        return Err((
            "InvalidSignatureException",
            format!("Credential should be scoped to correct service: 'execute-api'. (got '{service}')"),
        ));
    }
    if region != crate::moto::REGION {
        return Err((
            "InvalidSignatureException",
            format!("Credential should be scoped to a valid region, not '{region}'."),
        ));
    }
    if header("x-amz-security-token") != credentials.session_token() {
        return Err(invalid_token());
    }
    let signed: Vec<&str> = signed_headers.split(';').collect();
    if !signed.contains(&"host") || !signed.contains(&"x-amz-date") {
        return Err(incomplete());
    }
    let date = header("x-amz-date").unwrap_or_default();
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let Ok(signed_at) = time::PrimitiveDateTime::parse(date, format) else {
        return Err(("IncompleteSignatureException", format!("Invalid X-Amz-Date '{date}'")));
    };
    let signed_at = SystemTime::from(signed_at.assume_utc());
    let skew = SystemTime::now()
        .duration_since(signed_at)
        .unwrap_or_else(|ahead| ahead.duration());
    if skew > SIGNATURE_SKEW || !date.starts_with(day) {
        return Err((
            "InvalidSignatureException",
            format!("Signature expired: {date} is now earlier or later than 5 minutes from now."),
        ));
    }
    // The signature as the signer computed it, from what arrived.
    let values: Vec<(&str, &str)> = signed
        .iter()
        .map(|name| (*name, header(name).unwrap_or_default()))
        .collect();
    let host = header("host").unwrap_or_default();
    let url = format!(
        "http://{host}{}",
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let identity = Identity::from(credentials);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(signed_at)
        .settings(SigningSettings::default())
        .build()
        .expect("complete signing parameters")
        .into();
    let expected = SignableRequest::new(method, url, values.into_iter(), SignableBody::Bytes(body))
        .and_then(|request| aws_sigv4::http_request::sign(request, &params))
        .map(|output| output.signature().to_string())
        .unwrap_or_default();
    if expected != signature {
        return Err((
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS \
             Secret Access Key and signing method. Consult the service documentation for details."
                .into(),
        ));
    }
    Ok(())
}

/// API Gateway's 403: the error type in `x-amzn-ErrorType`, the message in
/// the JSON body.
fn refuse(error_type: &str, message: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [("x-amzn-ErrorType", error_type), ("content-type", "application/json")],
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
