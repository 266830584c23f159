//! Writes to one API Gateway API, the way API Gateway takes them.
//!
//! - One at a time: API Gateway answers concurrent changes to one API
//!   (routes, integrations, authorizers, stages) with `409
//!   ConflictException: Unable to complete operation due to concurrent
//!   modification`, which the SDK does not retry (aws-facts.md §10;
//!   terraform-provider-aws #18018, PR #29735: "after 6 routes this error
//!   happens"). chatctl queues its own writes and retries conflicts with
//!   writers outside it.
//! - Creates are never retried blindly: a create whose answer was lost has
//!   happened all the same, and sending it again makes a second API,
//!   integration or authorizer (aws-facts.md §10, "lost responses"). Each
//!   create goes out once, without the SDK's retry; after a failure that may
//!   hide a success, chatctl looks for what it made before trying again.
//! - A create refused with a conflict may have met what a killed run's
//!   create made after this run read the API: CreateRoute for a key the API
//!   has answers `409 ConflictException: Route with key K already exists for
//!   this API`, CreateStage `Stage already exists` (aws-facts.md §11;
//!   anomalyco/sst #5031). That is something to adopt, not a concurrent
//!   write to wait out: chatctl looks for it too.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Result;
use aws_config::retry::RetryConfig;
use aws_sdk_apigatewayv2::config::http::HttpResponse;
use aws_sdk_apigatewayv2::error::{ProvideErrorMetadata, SdkError};

use crate::aws::{Budget, aws_error, is_api_conflict, jitter, may_have_happened, refused_for_now, retry, retry_error};

/// How long a write waits out other writers' changes to the API.
const CONFLICT_BUDGET: Budget = Budget::new(Duration::from_secs(60));
const CONFLICT_TODO: &str = "another change to this API is in progress (another chatctl, the console or a \
                             deployment tool); wait until it is done and run the command again";

const FAILING_TODO: &str = "API Gateway keeps failing or not answering; run the command again later \
                            (it finds what was made and makes no duplicate)";

/// The writes of one command to one API.
#[derive(Default)]
pub struct ApiWrites {
    turn: tokio::sync::Mutex<()>,
}

/// The SDK configuration for a create that must not be resent blindly:
/// no retries (pass it to `.customize().config_override(..)`).
pub fn sent_once() -> aws_sdk_apigatewayv2::config::Builder {
    aws_sdk_apigatewayv2::config::Builder::default().retry_config(RetryConfig::disabled())
}

impl ApiWrites {
    /// Sends one write when no other write of chatctl's is in flight,
    /// retrying conflicts with other writers within the budget.
    pub async fn send<T, E, F, Fut>(&self, what: impl Display, call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let _turn = self.turn.lock().await;
        retry(CONFLICT_BUDGET, is_api_conflict, call)
            .await
            .map_err(|failure| retry_error(what, CONFLICT_BUDGET, CONFLICT_TODO, failure))
    }

    /// Creates something with `create` (sent with [`sent_once`]); after a
    /// failure that may hide a success, or a conflict that may mean it is
    /// there already, `find` looks for it, and what it finds is taken
    /// instead of making a duplicate.
    pub async fn create_or_adopt<T, E, C, CFut, F, FFut>(
        &self,
        what: impl Display,
        mut create: C,
        mut find: F,
    ) -> Result<T>
    where
        C: FnMut() -> CFut,
        CFut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        F: FnMut() -> FFut,
        FFut: Future<Output = Result<Option<T>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let _turn = self.turn.lock().await;
        let started = Instant::now();
        let mut delay = CONFLICT_BUDGET.first_delay;
        loop {
            let err = match create().await {
                Ok(created) => return Ok(created),
                Err(err) => err,
            };
            let lost = may_have_happened(&err);
            if (lost || is_api_conflict(&err))
                && let Some(found) = find().await?
            {
                tracing::debug!(%what, "what the create makes is there already (a lost answer, or a killed run's create): adopted");
                return Ok(found);
            }
            if !lost && !refused_for_now(&err) {
                return Err(aws_error(what, err));
            }
            if started.elapsed() + delay > CONFLICT_BUDGET.total {
                let todo = if lost { FAILING_TODO } else { CONFLICT_TODO };
                return Err(retry_error(what, CONFLICT_BUDGET, todo, (err, true)));
            }
            tokio::time::sleep(jitter(delay)).await;
            delay = (delay * 2).min(CONFLICT_BUDGET.max_delay);
        }
    }
}
