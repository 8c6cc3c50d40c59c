//! Per-service locks: one operation per service at a time, and a generation
//! counter so that the monitor can tell that an operation ran while it looked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Default)]
pub(super) struct ServiceLocks {
    map: Mutex<HashMap<String, Arc<ServiceLock>>>,
}

#[derive(Default)]
pub(super) struct ServiceLock {
    mutex: Arc<tokio::sync::Mutex<()>>,
    /// Bumped when an operation releases the lock.
    generation: AtomicU64,
}

pub(super) struct ServiceGuard {
    _guard: tokio::sync::OwnedMutexGuard<()>,
    lock: Arc<ServiceLock>,
}

impl Drop for ServiceGuard {
    fn drop(&mut self) {
        self.lock.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// `(busy, generation)` of one service.
pub(super) type LockState = (bool, u64);

impl ServiceLocks {
    pub(super) fn entry(&self, service: &str) -> Arc<ServiceLock> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(service.to_string()).or_default().clone()
    }

    pub(super) async fn lock(&self, service: &str) -> ServiceGuard {
        let lock = self.entry(service);
        let guard = lock.mutex.clone().lock_owned().await;
        ServiceGuard {
            _guard: guard,
            lock,
        }
    }

    pub(super) fn state(&self, service: &str) -> LockState {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(service) {
            None => (false, 0),
            Some(l) => (
                l.mutex.try_lock().is_err(),
                l.generation.load(Ordering::SeqCst),
            ),
        }
    }

    pub(super) fn snapshot(&self) -> HashMap<String, LockState> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .map(|(k, l)| {
                (
                    k.clone(),
                    (
                        l.mutex.try_lock().is_err(),
                        l.generation.load(Ordering::SeqCst),
                    ),
                )
            })
            .collect()
    }

    /// Busy now, or an operation ran since `before` was taken.
    pub(super) fn changed_since(&self, before: &HashMap<String, LockState>, service: &str) -> bool {
        let (busy, generation) = self.state(service);
        let old = before.get(service).map_or(0, |s| s.1);
        busy || generation != old
    }
}
