//! Delivery to clients through the API Gateway `@connections` API.
//!
//! The SDK's own retries are off: this module retries 429 and 5xx itself with
//! capped exponential backoff and jitter, and reports a 410 as [`DeliveryError::Gone`]
//! so the caller can remove that connection. A 403 is tried again within the
//! invocation's [`Budget`]: right after a deploy the functions' permission
//! to post takes seconds to apply (aws-facts.md §11 "permissions right after
//! `up`"); a 403 that lasts is a role or callback URL to fix.

use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::config::http::HttpResponse;
use aws_sdk_apigatewaymanagement::config::retry::RetryConfig;
use aws_sdk_apigatewaymanagement::config::timeout::TimeoutConfig;
use aws_sdk_apigatewaymanagement::error::{DisplayErrorContext, SdkError};
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use futures::StreamExt;
use thiserror::Error;

use crate::retry::{Budget, Refusal};

/// Deliveries in flight at once during a fan-out.
pub const FAN_OUT_CONCURRENCY: usize = 64;
/// Attempts per delivery, the first included.
const MAX_ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

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

#[derive(Debug, Clone)]
pub struct Delivery {
    client: Client,
    endpoint: String,
}

enum Attempt {
    Retry(String),
    /// 403: retried on a time budget, not a count.
    Refused(String),
    Stop(DeliveryError),
}

impl Delivery {
    /// A client for the `@connections` API at `endpoint` (`https://{domain}/{stage}`).
    pub fn new(sdk: &SdkConfig, endpoint: &str) -> Self {
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
            .endpoint_url(endpoint)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            )
            .build();
        Self {
            client: Client::from_conf(config),
            endpoint: endpoint.to_string(),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends one message to one connection, retrying throttling and server errors.
    pub async fn send(&self, connection_id: &str, payload: &str) -> Result<(), DeliveryError> {
        let mut attempt = 1;
        let mut refused: Option<Budget> = None;
        loop {
            let result = self
                .client
                .post_to_connection()
                .connection_id(connection_id)
                .data(Blob::new(payload.as_bytes()))
                .send()
                .await;
            let outcome = match result {
                Ok(_) => {
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
                Err(err) => classify(err),
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
        let mut results = futures::stream::iter(connection_ids)
            .map(|id| async move {
                let Some(stop_at) = stop_at else {
                    return (id, Some(self.send(id, payload).await));
                };
                let left = stop_at.duration_since(SystemTime::now()).unwrap_or_default();
                if left.is_zero() {
                    return (id, None);
                }
                (id, tokio::time::timeout(left, self.send(id, payload)).await.ok())
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

fn classify(err: SdkError<PostToConnectionError, HttpResponse>) -> Attempt {
    let status = match &err {
        SdkError::ServiceError(context) => match context.err() {
            PostToConnectionError::GoneException(_) => Some(410),
            PostToConnectionError::ForbiddenException(_) => Some(403),
            _ => Some(context.raw().status().as_u16()),
        },
        SdkError::ResponseError(context) => Some(context.raw().status().as_u16()),
        _ => None,
    };
    let detail = DisplayErrorContext(&err).to_string();
    match status {
        Some(410) => Attempt::Stop(DeliveryError::Gone),
        Some(403) => Attempt::Refused(detail),
        Some(429) => Attempt::Retry(detail),
        Some(code) if (500..600).contains(&code) => Attempt::Retry(detail),
        Some(_) => Attempt::Stop(DeliveryError::Failed(detail)),
        // No response at all: a timeout or a connection failure is worth another try.
        None => match err {
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => Attempt::Retry(detail),
            _ => Attempt::Stop(DeliveryError::Failed(detail)),
        },
    }
}

/// Full jitter over a capped exponential: spreads retries of a throttled fan-out.
fn backoff(attempt: u32) -> Duration {
    let cap = FIRST_BACKOFF.saturating_mul(1 << attempt.min(10)).min(MAX_BACKOFF);
    cap.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped() {
        for attempt in 1..20 {
            assert!(backoff(attempt) <= MAX_BACKOFF);
        }
    }
}
