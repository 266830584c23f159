//! Delivery to clients through the API Gateway `@connections` API.
//!
//! Each delivery is a `POST {endpoint}/@connections/{id}` signed with SigV4
//! (service `execute-api`) by `aws-sigv4`, the SDK's own signer, and sent by
//! a pooled hyper client, without the SDK's per-request orchestration: a
//! fan-out's CPU per delivery is what bounds a room's size at a function's
//! memory, and 59 % of it went to that orchestration (216 → 64 µs, README
//! "Benchmarks"). The tests check the signature as AWS does (chat-testkit's
//! `@connections` endpoint, which the SDK's own signed posts pass).
//!
//! This module retries 429 and 5xx itself with capped exponential backoff
//! and jitter, and reports a 410 as [`DeliveryError::Gone`] so the caller
//! can remove that connection. A 403 is tried again within the invocation's
//! [`Budget`]: right after a deploy the functions' permission to post takes
//! seconds to apply (aws-facts.md §11 "permissions right after `up`"); a 403
//! that lasts is a role or callback URL to fix.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use thiserror::Error;

use crate::retry::{Budget, Refusal};

/// Deliveries in flight at once during a fan-out.
pub const FAN_OUT_CONCURRENCY: usize = 64;
/// Attempts per delivery, the first included.
const MAX_ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The service name API Gateway's management API is signed for.
const SIGNING_NAME: &str = "execute-api";
/// Credentials are fetched again this long before they expire (a role's
/// session credentials outside Lambda; Lambda's own come from its environment).
const CREDENTIALS_REFRESH: Duration = Duration::from_secs(300);
/// The most of an error answer's body kept for its message.
const MAX_ERROR_BODY: usize = 4096;
/// A connection id as a URI path segment: everything but RFC 3986's
/// unreserved characters is percent-encoded (ids end in `=`).
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

#[derive(Debug, Error, Clone, PartialEq)]
pub enum DeliveryError {
    /// 410: the connection is gone (closed, unknown, or not yet connected).
    #[error("connection is gone")]
    Gone,
    #[error("delivery failed: {0}")]
    Failed(String),
    /// 403 for longer than the invocation's time allowed.
    #[error(
        "@connections refused the delivery (403) for {waited_ms} ms: {detail}; right after a deploy the functions' \
         permission takes seconds to apply, else their role lacks execute-api:ManageConnections or the callback \
         URL is not the API's"
    )]
    Refused { waited_ms: u64, detail: String },
}

/// What a fan-out achieved.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FanOutReport {
    pub delivered: usize,
    /// Connections that answered 410; their records should be removed.
    pub gone: Vec<String>,
    pub failed: Vec<(String, DeliveryError)>,
    /// Connections not reached because the invocation was about to time out.
    pub out_of_time: usize,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

#[derive(Clone)]
pub struct Delivery {
    http: HttpClient,
    /// `https://{domain}/{stage}`, without a trailing `/`.
    endpoint: String,
    region: String,
    credentials: SharedCredentialsProvider,
    /// The credentials last fetched, shared by the clones of this client.
    cached: Arc<tokio::sync::Mutex<Option<Credentials>>>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

enum Attempt {
    Retry(String),
    /// 403: retried on a time budget, not a count.
    Refused(String),
    Stop(DeliveryError),
}

impl Delivery {
    /// A client for the `@connections` API at `endpoint` (`https://{domain}/{stage}`),
    /// signing with the region and credentials of `sdk`.
    pub fn new(sdk: &SdkConfig, endpoint: &str) -> Result<Self, String> {
        let region = sdk
            .region()
            .ok_or("no AWS region for the @connections API (AWS_REGION is unset)")?
            .to_string();
        let credentials = sdk
            .credentials_provider()
            .ok_or("no AWS credentials to sign posts to the @connections API")?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
            .map_err(|e| format!("no TLS roots to reach {endpoint}: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Ok(Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            region,
            credentials,
            cached: Arc::default(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends one message to one connection, retrying throttling and server errors.
    pub async fn send(&self, connection_id: &str, payload: &str) -> Result<(), DeliveryError> {
        self.send_bytes(connection_id, Bytes::copy_from_slice(payload.as_bytes()))
            .await
    }

    async fn send_bytes(&self, connection_id: &str, payload: Bytes) -> Result<(), DeliveryError> {
        let mut attempt = 1;
        let mut refused: Option<Budget> = None;
        loop {
            let outcome = match self.post(connection_id, payload.clone()).await {
                Ok(()) => {
                    if let Some(budget) = &refused {
                        tracing::info!(
                            connection_id,
                            retries = budget.retries(),
                            waited_ms = budget.waited().as_millis() as u64,
                            "@connections accepted the delivery it had refused"
                        );
                    }
                    return Ok(());
                }
                Err(attempt) => attempt,
            };
            match outcome {
                Attempt::Stop(error) => return Err(error),
                Attempt::Refused(detail) => {
                    let budget = refused.get_or_insert_with(Budget::start);
                    let Some(pause) = budget.next_pause(Refusal::Permission) else {
                        let waited_ms = budget.waited().as_millis() as u64;
                        return Err(DeliveryError::Refused { waited_ms, detail });
                    };
                    tracing::warn!(
                        connection_id,
                        retry = budget.retries(),
                        "@connections refused the delivery (403) for now; trying again"
                    );
                    tokio::time::sleep(pause).await;
                }
                Attempt::Retry(detail) if attempt >= MAX_ATTEMPTS => {
                    return Err(DeliveryError::Failed(format!(
                        "gave up after {attempt} attempts: {detail}"
                    )));
                }
                Attempt::Retry(_) => {
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// One signed POST and what its answer means.
    async fn post(&self, connection_id: &str, payload: Bytes) -> Result<(), Attempt> {
        let credentials = self.credentials().await.map_err(Attempt::Stop)?;
        let request = signed_post(
            &self.endpoint,
            &self.region,
            &credentials,
            connection_id,
            payload,
            SystemTime::now(),
        )
        .map_err(|e| Attempt::Stop(DeliveryError::Failed(e)))?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| {
                Attempt::Retry(format!(
                    "POST to @connections/{connection_id} failed: {}",
                    error_chain(&e)
                ))
            })?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let error_type = response
                .headers()
                .get("x-amzn-errortype")
                .and_then(|value| value.to_str().ok())
                .map(|value| value.split(':').next().unwrap_or(value).to_string());
            let body = Limited::new(response.into_body(), MAX_ERROR_BODY)
                .collect()
                .await
                .map(|body| body.to_bytes())
                .unwrap_or_default();
            Err(classify(status.as_u16(), error_type.as_deref(), &body))
        };
        tokio::time::timeout(ATTEMPT_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(Attempt::Retry(format!(
                    "no answer from @connections within {ATTEMPT_TIMEOUT:?}"
                )))
            })
    }

    /// The credentials to sign with, fetched again when they near their expiry.
    async fn credentials(&self) -> Result<Credentials, DeliveryError> {
        let mut cached = self.cached.lock().await;
        if let Some(credentials) = cached.as_ref()
            && credentials
                .expiry()
                .is_none_or(|expiry| expiry > SystemTime::now() + CREDENTIALS_REFRESH)
        {
            return Ok(credentials.clone());
        }
        let fresh = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| DeliveryError::Failed(format!("no AWS credentials to sign with: {e}")))?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    /// Sends one message to many connections, in order, at most
    /// [`FAN_OUT_CONCURRENCY`] at a time. None is begun after `stop_at`, and
    /// one still retrying then is given up: those are counted in
    /// [`FanOutReport::out_of_time`].
    pub async fn send_all(
        &self,
        connection_ids: &[String],
        payload: &str,
        stop_at: Option<SystemTime>,
    ) -> FanOutReport {
        let payload = Bytes::copy_from_slice(payload.as_bytes());
        let mut results = futures::stream::iter(connection_ids)
            .map(|id| {
                let payload = payload.clone();
                async move {
                    let Some(stop_at) = stop_at else {
                        return (id, Some(self.send_bytes(id, payload).await));
                    };
                    let left = stop_at.duration_since(SystemTime::now()).unwrap_or_default();
                    if left.is_zero() {
                        return (id, None);
                    }
                    (id, tokio::time::timeout(left, self.send_bytes(id, payload)).await.ok())
                }
            })
            .buffer_unordered(FAN_OUT_CONCURRENCY);
        let mut report = FanOutReport::default();
        while let Some((id, result)) = results.next().await {
            match result {
                None => report.out_of_time += 1,
                Some(Ok(())) => report.delivered += 1,
                Some(Err(DeliveryError::Gone)) => report.gone.push(id.clone()),
                Some(Err(error)) => report.failed.push((id.clone(), error)),
            }
        }
        report
    }
}

/// 403s that say the request's signature or key is wrong, not that the
/// permission is missing (AWS's common errors: "Common Errors", API
/// Gateway's and every SigV4 service's).
const SIGNATURE_ERRORS: [&str; 4] = [
    "InvalidSignatureException",
    "IncompleteSignatureException",
    "MissingAuthenticationTokenException",
    "UnrecognizedClientException",
];

/// `POST {endpoint}/@connections/{connection_id}` with `payload`, signed
/// with SigV4 at `now` as AWS's management API expects (header signature,
/// the session token signed too).
pub fn signed_post(
    endpoint: &str,
    region: &str,
    credentials: &Credentials,
    connection_id: &str,
    payload: Bytes,
    now: SystemTime,
) -> Result<http::Request<Full<Bytes>>, String> {
    let url = format!(
        "{endpoint}/@connections/{}",
        utf8_percent_encode(connection_id, PATH_SEGMENT)
    );
    let identity = Identity::from(credentials.clone());
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGNING_NAME)
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("cannot sign for {url}: {e}"))?
        .into();
    // The SDK's own headers for this operation (its payload is a blob),
    // content-type signed as the SDK signs it.
    let content_type = ("content-type", "application/octet-stream");
    let signable = SignableRequest::new(
        "POST",
        url.as_str(),
        std::iter::once(content_type),
        SignableBody::Bytes(&payload),
    )
    .map_err(|e| format!("cannot sign for {url}: {e}"))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| format!("cannot sign for {url}: {e}"))?
        .into_parts();
    let mut request = http::Request::post(url.as_str())
        .header(content_type.0, content_type.1)
        .body(Full::new(payload))
        .map_err(|e| format!("invalid @connections URL {url}: {e}"))?;
    instructions.apply_to_request_http1x(&mut request);
    Ok(request)
}

/// What an answer other than 2xx means for the delivery. `error_type` is
/// API Gateway's `x-amzn-ErrorType` (e.g. `GoneException`), `body` its JSON
/// `{"message": …}`.
fn classify(status: u16, error_type: Option<&str>, body: &[u8]) -> Attempt {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|json| {
            json.get("message")
                .or_else(|| json.get("Message"))
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let detail = match (error_type, message.is_empty()) {
        (Some(kind), false) => format!("{kind} (HTTP {status}): {message}"),
        (Some(kind), true) => format!("{kind} (HTTP {status})"),
        (None, false) => format!("HTTP {status}: {message}"),
        (None, true) => format!("HTTP {status}"),
    };
    match status {
        410 => Attempt::Stop(DeliveryError::Gone),
        // A signature AWS cannot verify is refused the same way every time.
        403 if error_type.is_some_and(|kind| SIGNATURE_ERRORS.contains(&kind)) => {
            Attempt::Stop(DeliveryError::Failed(detail))
        }
        403 => Attempt::Refused(detail),
        429 => Attempt::Retry(detail),
        500..=599 => Attempt::Retry(detail),
        _ => Attempt::Stop(DeliveryError::Failed(detail)),
    }
}

/// An error and its causes, `: `-separated (hyper's own Display is terse).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Full jitter over a capped exponential: spreads retries of a throttled fan-out.
fn backoff(attempt: u32) -> Duration {
    let cap = FIRST_BACKOFF.saturating_mul(1 << attempt.min(10)).min(MAX_BACKOFF);
    cap.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Credentials {
        Credentials::new("ASIAEXAMPLE", "secret", Some("session-token".into()), None, "test")
    }

    #[test]
    fn a_post_is_signed_for_execute_api_with_the_session_token() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        let sign = || {
            signed_post(
                "https://abc.execute-api.eu-west-1.amazonaws.com/prod",
                "eu-west-1",
                &session(),
                "L0SM9cOFvHcCIhw=",
                Bytes::from_static(b"{}"),
                now,
            )
            .unwrap()
        };
        let request = sign();
        assert_eq!(request.method(), "POST");
        // The id's `=` is encoded, as the SDK encodes a label.
        assert_eq!(
            request.uri().to_string(),
            "https://abc.execute-api.eu-west-1.amazonaws.com/prod/@connections/L0SM9cOFvHcCIhw%3D"
        );
        let header = |name: &str| request.headers()[name].to_str().unwrap().to_string();
        assert_eq!(header("x-amz-date"), "20261130T005320Z");
        assert_eq!(header("x-amz-security-token"), "session-token");
        assert_eq!(header("content-type"), "application/octet-stream");
        let authorization = header("authorization");
        assert!(
            authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20261130/eu-west-1/execute-api/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
            ),
            "{authorization}"
        );
        // Deterministic: the same request at the same time signs the same.
        let again = sign();
        assert_eq!(again.headers()["authorization"], request.headers()["authorization"]);
    }

    #[test]
    fn answers_are_classified_by_status() {
        assert!(matches!(
            classify(410, Some("GoneException"), b""),
            Attempt::Stop(DeliveryError::Gone)
        ));
        assert!(matches!(classify(429, None, b""), Attempt::Retry(_)));
        assert!(matches!(classify(503, None, b"busy"), Attempt::Retry(detail) if detail == "HTTP 503: busy"));
        let Attempt::Refused(detail) = classify(
            403,
            Some("ForbiddenException"),
            br#"{"message":"User: arn:aws:sts::1:assumed-role/r/f is not authorized"}"#,
        ) else {
            panic!("403 is a refusal");
        };
        assert_eq!(
            detail,
            "ForbiddenException (HTTP 403): User: arn:aws:sts::1:assumed-role/r/f is not authorized"
        );
        assert!(matches!(
            classify(403, Some("InvalidSignatureException"), b""),
            Attempt::Stop(DeliveryError::Failed(_))
        ));
        let Attempt::Stop(DeliveryError::Failed(detail)) =
            classify(413, Some("PayloadTooLargeException"), br#"{"Message":"too big"}"#)
        else {
            panic!("413 is final");
        };
        assert_eq!(detail, "PayloadTooLargeException (HTTP 413): too big");
    }

    #[test]
    fn backoff_is_capped() {
        for attempt in 1..20 {
            assert!(backoff(attempt) <= MAX_BACKOFF);
        }
    }
}
