//! How long a call AWS refuses for a moment is tried again.
//!
//! Two refusals pass by themselves and the SDK retries neither:
//! - right after a deploy, the functions' permissions propagate for seconds:
//!   DynamoDB answers AccessDeniedException and `@connections` 403
//!   (aws-facts.md §11 "permissions right after `up`");
//! - a single-item write to an item a transaction holds gets
//!   TransactionConflictException (§10 "DynamoDB transactions"), as when a
//!   `join` races its own `$disconnect`.
//!
//! A [`Budget`] starts at the first refusal and ends at the earlier of
//! [`MAX_WAIT`] later and shortly before the invocation's deadline, so a
//! function gives up with a clear error before Lambda stops it.

use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// How long a refused call is tried again at most: IAM propagation to
/// Lambda takes 5–10 s (aws-facts.md §10 "Typical timings").
pub const MAX_WAIT: Duration = Duration::from_secs(10);
/// Kept back from the invocation's deadline (a quarter of the time left at
/// most), to answer after giving up.
const RESERVE: Duration = Duration::from_secs(1);

/// Why a call was refused, for how soon to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A permission not in effect yet: seconds.
    Permission,
    /// A transaction holds the item: tens of milliseconds.
    Conflict,
}

/// The time a refused call may still take; see the module documentation.
#[derive(Debug)]
pub struct Budget {
    started: SystemTime,
    until: SystemTime,
    retries: u32,
}

impl Budget {
    /// Starts now, within the invocation being served ([`crate::runtime::deadline`]).
    pub fn start() -> Budget {
        let now = SystemTime::now();
        let mut until = now + MAX_WAIT;
        if let Some(deadline) = crate::runtime::deadline() {
            let left = deadline.duration_since(now).unwrap_or_default();
            until = until.min(deadline - RESERVE.min(left / 4));
        }
        Budget {
            started: now,
            until,
            retries: 0,
        }
    }

    /// The pause before the next try, or `None` when the try would begin
    /// past the budget.
    pub fn next_pause(&mut self, refusal: Refusal) -> Option<Duration> {
        let pause = pause(refusal, self.retries + 1);
        if SystemTime::now() + pause >= self.until {
            return None;
        }
        self.retries += 1;
        Some(pause)
    }

    /// Tries after the first so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Since the first refusal.
    pub fn waited(&self) -> Duration {
        self.started.elapsed().unwrap_or_default()
    }
}

/// Capped exponential with jitter: for permissions, half fixed and half
/// random (at most 100 ms, 200 ms … 1 s), so a fan-out spreads without tight loops;
/// for conflicts, full jitter from 10 ms to 320 ms.
fn pause(refusal: Refusal, retry: u32) -> Duration {
    let cap = match refusal {
        Refusal::Permission => Duration::from_millis(50 << retry.min(5)).min(Duration::from_secs(1)),
        Refusal::Conflict => Duration::from_millis(10 << retry.min(5)),
    };
    match refusal {
        Refusal::Permission => cap / 2 + (cap / 2).mul_f64(rand::random::<f64>()),
        Refusal::Conflict => cap.mul_f64(rand::random::<f64>()),
    }
}

/// The error codes of the refusals that pass by themselves (see the module documentation).
pub(crate) const ACCESS_DENIED: &str = "AccessDeniedException";
const TRANSACTION_CONFLICT: &str = "TransactionConflictException";

/// Sends an AWS request (`send` sends a fresh copy each time), again while
/// AWS refuses it for a moment, within the invocation's [`Budget`]:
/// AccessDeniedException while the functions' permissions propagate after a
/// deploy (aws-facts.md §11; DynamoDB and Secrets Manager answer it alike),
/// TransactionConflictException on an item a transaction holds (§10; the
/// SDK retries neither). `what` is (service, operation, resource), for the
/// log, which says so.
pub async fn send_retrying<T, E, F, Fut>(
    what: (&'static str, &'static str, &str),
    waits_for_permissions: bool,
    mut send: F,
) -> Result<T, SdkError<E, HttpResponse>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata,
{
    let (service, operation, resource) = what;
    let mut budget: Option<Budget> = None;
    loop {
        let result = send().await;
        let code = result.as_ref().err().and_then(|err| err.code().map(str::to_string));
        let refusal = match code.as_deref() {
            Some(ACCESS_DENIED) if waits_for_permissions => Refusal::Permission,
            Some(TRANSACTION_CONFLICT) => Refusal::Conflict,
            _ => {
                if let (Some(budget), true) = (&budget, result.is_ok()) {
                    tracing::info!(
                        service,
                        operation,
                        resource,
                        retries = budget.retries(),
                        waited_ms = budget.waited().as_millis() as u64,
                        "AWS accepted the call it had refused"
                    );
                }
                return result;
            }
        };
        let budget = budget.get_or_insert_with(Budget::start);
        match budget.next_pause(refusal) {
            Some(pause) => {
                tracing::warn!(
                    service,
                    operation,
                    resource,
                    code,
                    retry = budget.retries(),
                    "AWS refused the call for now; trying again"
                );
                tokio::time::sleep(pause).await;
            }
            None => {
                tracing::error!(
                    service,
                    operation,
                    resource,
                    code,
                    retries = budget.retries(),
                    waited_ms = budget.waited().as_millis() as u64,
                    "AWS still refuses the call; giving up within the invocation's time"
                );
                return result;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_are_capped() {
        for retry in 1..40 {
            assert!(pause(Refusal::Permission, retry) <= Duration::from_secs(1));
            assert!(pause(Refusal::Permission, retry) >= Duration::from_millis(50));
            assert!(pause(Refusal::Conflict, retry) <= Duration::from_millis(320));
        }
    }

    #[tokio::test]
    async fn the_budget_ends_before_the_invocations_deadline() {
        let deadline = SystemTime::now() + Duration::from_secs(2);
        let budget = crate::runtime::with_deadline(deadline, async { Budget::start() }).await;
        // Just under 2 s left: about a quarter (0.5 s) is kept back.
        assert!(budget.until <= deadline - Duration::from_millis(490));
        let unbounded = Budget::start();
        assert!(unbounded.until > SystemTime::now() + MAX_WAIT - Duration::from_secs(1));
    }
}
