//! Per-service locks (one pass's steps for a service, and the lifecycle
//! pass-through RPCs, never overlap) and the journal recovery at start-up.

use std::collections::BTreeSet;

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
        self.recover_journal_except(&[]).await
    }

    /// [`Reconciler::recover_journal`], leaving operations of the kinds in
    /// `resumable` running (their owner resumes them: migrations).
    pub async fn recover_journal_except(
        &self,
        resumable: &[&str],
    ) -> Result<Vec<JournalEntry>, ReconcileError> {
        let now = self.now();
        let mut open = self.state.read(|r| r.journal_unfinished()).await?;
        open.retain(|e| !resumable.contains(&e.op.as_str()));
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

/// Migrations in flight and the epoch each service last finished moving
/// at (a counter, bumped at every start and end of a move).
#[derive(Debug, Default)]
pub(super) struct Moves {
    epoch: u64,
    busy: BTreeSet<String>,
    moved: HashMap<String, u64>,
}

/// Marks a service as being migrated while it lives
/// ([`Reconciler::begin_move`]); dropping it records the end of the move.
#[derive(Debug)]
pub struct MoveGuard {
    rec: Arc<Reconciler>,
    service: String,
}

impl Drop for MoveGuard {
    fn drop(&mut self) {
        let mut m = self
            .rec
            .moves
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        m.epoch += 1;
        let e = m.epoch;
        m.busy.remove(&self.service);
        m.moved.insert(self.service.clone(), e);
    }
}

impl Reconciler {
    /// Marks `service` as being migrated: passes skip its steps until the
    /// guard is dropped, and a pass planned before the drop skips them too
    /// (it saw the service where it was). `None` when a migration of it is
    /// already in flight.
    pub fn begin_move(self: &Arc<Self>, service: &str) -> Option<MoveGuard> {
        let mut m = self.moves.lock().unwrap_or_else(PoisonError::into_inner);
        if !m.busy.insert(service.to_string()) {
            return None;
        }
        m.epoch += 1;
        Some(MoveGuard {
            rec: self.clone(),
            service: service.to_string(),
        })
    }

    /// The current move epoch (taken before a pass observes the fleet).
    pub fn move_epoch(&self) -> u64 {
        self.moves
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .epoch
    }

    /// Why a pass that observed at `epoch` must leave `service` alone, if
    /// it must.
    pub(super) fn moved_since(&self, service: &str, epoch: u64) -> Option<String> {
        let m = self.moves.lock().unwrap_or_else(PoisonError::into_inner);
        if m.busy.contains(service) {
            return Some(format!("{service} is being migrated"));
        }
        match m.moved.get(service) {
            Some(&e) if e > epoch => Some(format!(
                "{service} was migrated after this pass observed the fleet"
            )),
            _ => None,
        }
    }
}
