//! `ReportChanges` admission: a token bucket per agent identity, so an
//! agent can report a burst of container changes at once but not flood
//! the master with passes.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Reports one identity may make at once.
pub const BURST: f64 = 20.0;
/// Reports per second an identity regains.
pub const PER_SECOND: f64 = 5.0;

#[derive(Debug, Default)]
pub struct ChangeLimiter {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl ChangeLimiter {
    /// Takes one report of `who` at `now`; false when its bucket is empty.
    pub fn allow(&self, who: &str, now: Instant) -> bool {
        let mut b = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, last) = b.entry(who.to_string()).or_insert((BURST, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * PER_SECOND;
        *tokens = (*tokens + refill).min(BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
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
    fn a_burst_passes_then_the_rate_holds_per_identity() {
        let l = ChangeLimiter::default();
        let t0 = Instant::now();
        for i in 0..20 {
            assert!(l.allow("agent-w1", t0), "report {i} of the burst");
        }
        assert!(!l.allow("agent-w1", t0), "the burst is spent");
        assert!(
            l.allow("agent-w2", t0),
            "another identity has its own bucket"
        );
        // 5 per second come back.
        assert!(l.allow("agent-w1", t0 + Duration::from_millis(200)));
        assert!(!l.allow("agent-w1", t0 + Duration::from_millis(200)));
        let later = t0 + Duration::from_secs(60);
        for _ in 0..20 {
            assert!(l.allow("agent-w1", later));
        }
        assert!(!l.allow("agent-w1", later), "never more than the burst");
    }
}
