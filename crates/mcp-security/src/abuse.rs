//! Per-peer limits on refused calls (failed authentication, permission
//! denied), for [`crate::layer::AuthLayer::with_failure_limits`].
//!
//! Only refusals are counted, and only refusals are affected: a call whose
//! token verifies and that is allowed always goes through, however many
//! failures its IP address has (in `mcp dev` the operator and an attacker
//! share 127.0.0.1). The token is always verified first — local Ed25519
//! verification is cheap — so the limiter never needs to guess.
//!
//! Per peer IP and fixed window: the first `max_failures` refusals are
//! answered and logged (and, when authenticated, audited) as usual; further
//! ones are answered `ResourceExhausted`, neither logged one by one nor
//! audited, and summarised in one warn line per `log_interval` per peer with
//! how many were suppressed since the last line.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::clock::{Clock, SystemClock};

/// The limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureLimits {
    /// Refusals per peer per window answered normally.
    pub max_failures: u32,
    /// The counting window.
    pub window: Duration,
    /// At most one summary line per peer per this interval.
    pub log_interval: Duration,
    /// At most this many peers are tracked; when full (after dropping peers
    /// whose window is over), refusals from untracked peers count as over
    /// the limit.
    pub max_peers: usize,
}

impl FailureLimits {
    /// `max_failures` refusals per peer per `window`, at most one summary
    /// line per peer per window, the default number of tracked peers: what
    /// the daemons' `[server] max_refusals_per_peer` and `refusal_window`
    /// configure.
    pub fn per_window(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            log_interval: window,
            ..Self::default()
        }
    }
}

impl Default for FailureLimits {
    /// 20 refusals per peer per minute, one summary line per minute, 4096
    /// peers tracked.
    fn default() -> Self {
        Self {
            max_failures: 20,
            window: Duration::from_secs(60),
            log_interval: Duration::from_secs(60),
            max_peers: 4096,
        }
    }
}

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureVerdict {
    /// Under the limit: answer, log and audit as usual.
    Counted,
    /// Over the limit: answer `ResourceExhausted`, no per-call log or audit
    /// row. `summary` is `Some(n)` when a summary line is due now, `n` being
    /// the refusals suppressed since the previous one (this one included).
    Limited { summary: Option<u64> },
}

#[derive(Debug)]
struct PeerState {
    window_start: Instant,
    failures: u32,
    suppressed: u64,
    last_summary: Option<Instant>,
}

/// Counts refusals per peer IP (clones share the counts).
#[derive(Clone)]
pub struct FailureLimiter {
    limits: FailureLimits,
    clock: Arc<dyn Clock>,
    peers: Arc<Mutex<HashMap<IpAddr, PeerState>>>,
}

impl std::fmt::Debug for FailureLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureLimiter")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl FailureLimiter {
    pub fn new(limits: FailureLimits) -> Self {
        Self::with_clock(limits, Arc::new(SystemClock))
    }

    pub fn with_clock(limits: FailureLimits, clock: Arc<dyn Clock>) -> Self {
        Self {
            limits,
            clock,
            peers: Arc::default(),
        }
    }

    pub fn limits(&self) -> &FailureLimits {
        &self.limits
    }

    /// Records one refusal from `ip` and says how to treat it.
    pub fn record_failure(&self, ip: IpAddr) -> FailureVerdict {
        let ip = ip.to_canonical();
        let now = self.clock.instant();
        let l = &self.limits;
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if !peers.contains_key(&ip) && peers.len() >= l.max_peers {
            peers.retain(|_, s| {
                now.saturating_duration_since(s.window_start) < l.window || s.suppressed > 0
            });
            if peers.len() >= l.max_peers {
                return FailureVerdict::Limited { summary: None };
            }
        }
        let s = peers.entry(ip).or_insert(PeerState {
            window_start: now,
            failures: 0,
            suppressed: 0,
            last_summary: None,
        });
        if now.saturating_duration_since(s.window_start) >= l.window {
            s.window_start = now;
            s.failures = 0;
        }
        s.failures = s.failures.saturating_add(1);
        if s.failures <= l.max_failures {
            return FailureVerdict::Counted;
        }
        s.suppressed += 1;
        let due = s
            .last_summary
            .is_none_or(|t| now.saturating_duration_since(t) >= l.log_interval);
        if !due {
            return FailureVerdict::Limited { summary: None };
        }
        let n = std::mem::take(&mut s.suppressed);
        s.last_summary = Some(now);
        FailureVerdict::Limited { summary: Some(n) }
    }
}
