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
