//! The stage's throttling, as API Gateway applies it: a token bucket per
//! route, with the route's own limits or the stage's default ones. A
//! handshake over the limit is refused with HTTP 429; a message over it is
//! answered with API Gateway's error frame, "Too Many Requests", and the
//! connection stays open (aws-facts.md §10, "stage settings"; API Gateway
//! developer guide, "Throttle requests to your WebSocket APIs").

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::settings::Throttling;
use crate::stack::api::ApiState;

/// The limits of each route, read from the provisioned stage.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// The stage's default route settings; None: unthrottled (the account's limits).
    pub default: Option<Throttling>,
    /// Route key → its own limits.
    pub routes: HashMap<String, Throttling>,
}

impl Limits {
    pub fn from_api(api: &ApiState) -> Limits {
        let Some(stage) = &api.stage else {
            return Limits::default();
        };
        let limits = |burst: Option<i32>, rate: Option<f64>| {
            Some(Throttling {
                burst: burst?,
                rate: rate?,
            })
        };
        Limits {
            default: stage
                .default_route
                .as_ref()
                .and_then(|d| limits(d.throttling_burst, d.throttling_rate)),
            routes: stage
                .routes
                .iter()
                .filter_map(|(route, s)| Some((route.clone(), limits(s.throttling_burst, s.throttling_rate)?)))
                .collect(),
        }
    }

    fn of(&self, route: &str) -> Option<Throttling> {
        self.routes.get(route).copied().or(self.default)
    }
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// One bucket per route, filled at its limits.
pub struct Throttle {
    limits: Limits,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Throttle {
    pub fn new(limits: Limits) -> Throttle {
        Throttle {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether one more request on `route` is within its limits now.
    pub fn admit(&self, route: &str, now: Instant) -> bool {
        let Some(limits) = self.limits.of(route) else {
            return true;
        };
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        let bucket = buckets.entry(route.to_string()).or_insert(Bucket {
            tokens: f64::from(limits.burst),
            refilled: now,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * limits.rate).min(f64::from(limits.burst));
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_route_takes_its_burst_then_its_rate_and_others_their_own() {
        let throttle = Throttle::new(Limits {
            default: Some(Throttling { burst: 2, rate: 1.0 }),
            routes: HashMap::from([("sendmessage".to_string(), Throttling { burst: 1, rate: 10.0 })]),
        });
        let start = Instant::now();
        assert!(throttle.admit("join", start));
        assert!(throttle.admit("join", start));
        assert!(!throttle.admit("join", start), "burst of 2 spent");
        assert!(throttle.admit("$connect", start), "each route its own bucket");
        assert!(
            throttle.admit("join", start + Duration::from_secs(1)),
            "refilled at 1/s"
        );
        assert!(throttle.admit("sendmessage", start));
        assert!(!throttle.admit("sendmessage", start));
        assert!(
            throttle.admit("sendmessage", start + Duration::from_millis(100)),
            "10/s"
        );
        let open = Throttle::new(Limits::default());
        assert!(
            (0..10_000).all(|_| open.admit("join", start)),
            "no limits: never throttled"
        );
    }
}
