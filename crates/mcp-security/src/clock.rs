//! Time, passed in: the real clock for daemons, a manual one for tests.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time (token expiry) and monotonic time (rate
/// limits, caches). Everything time-dependent in this crate takes one.
pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time, used for token `exp` / `nbf` / `iat`.
    fn now(&self) -> SystemTime;
    /// Monotonic time, used for rate limits and cache expiry.
    fn instant(&self) -> Instant;

    /// Seconds since the Unix epoch (0 before it).
    fn unix_seconds(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// The operating system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<(SystemTime, Instant)>>,
}

impl ManualClock {
    /// Starts at the given wall-clock time.
    pub fn new(start: SystemTime) -> Self {
        Self {
            inner: Arc::new(Mutex::new((start, Instant::now()))),
        }
    }

    /// Starts at `secs` seconds after the Unix epoch.
    pub fn at_unix(secs: u64) -> Self {
        Self::new(UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// Moves both clocks forward.
    pub fn advance(&self, by: Duration) {
        let mut t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        t.0 += by;
        t.1 += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).0
    }
    fn instant(&self) -> Instant {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).1
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
    fn instant(&self) -> Instant {
        (**self).instant()
    }
}
