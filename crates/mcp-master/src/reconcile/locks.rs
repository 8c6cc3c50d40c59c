//! Per-service locks (one pass's steps for a service, and the lifecycle
//! pass-through RPCs, never overlap) and the journal recovery at start-up.

use super::*;

/// Per-service locks (`tokio::sync::Mutex` per service name).
#[derive(Debug, Default)]
pub struct ServiceLocks {
    map: StdMutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl ServiceLocks {
    pub async fn lock(&self, service: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = self
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(service.to_string())
            .or_default()
            .clone();
        m.lock_owned().await
    }
}

impl Reconciler {
    /// Marks operations left `running` by a previous master as abandoned and
    /// returns them (they are logged; the next pass re-plans).
    pub async fn recover_journal(&self) -> Result<Vec<JournalEntry>, ReconcileError> {
        let now = self.now();
        let open = self.state.read(|r| r.journal_unfinished()).await?;
        for e in &open {
            let detail = format!(
                "abandoned at master start-up during step {:?}; the next pass re-plans",
                e.step
            );
            let id = e.id;
            self.state
                .write(move |w| w.journal_finish(id, JournalStatus::Abandoned, Some(&detail), now))
                .await?;
            tracing::warn!(
                op = %e.op,
                service = %e.service,
                step = %e.step,
                "operation interrupted by a master restart: marked abandoned; re-planning"
            );
        }
        Ok(open)
    }
}
