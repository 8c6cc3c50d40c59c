//! [`Db`]: the async handle on [`State`] that the daemon's tasks use.
//!
//! Every call runs its closure on tokio's blocking pool
//! (`spawn_blocking`), never on a runtime worker thread, so an `fsync`
//! (`synchronous = FULL`) or a busy database stalls only the call that
//! waits for it. The closures are the same ones [`State::read`] and
//! [`State::write`] take; they must own what they use (`move`).

use std::path::Path;
use std::sync::Arc;

use super::{Reader, Result, State, StateError, Writer};

/// A cheap-to-clone async handle on the master database.
#[derive(Debug, Clone)]
pub struct Db {
    state: Arc<State>,
}

impl From<Arc<State>> for Db {
    fn from(state: Arc<State>) -> Self {
        Db { state }
    }
}

impl From<State> for Db {
    fn from(state: State) -> Self {
        Db {
            state: Arc::new(state),
        }
    }
}

impl Db {
    /// Opens (and migrates) the database at `path` on the blocking pool.
    pub async fn open(path: &Path) -> Result<Db> {
        let p = path.to_path_buf();
        run("opening the database", move || State::open(&p))
            .await
            .map(Db::from)
    }

    /// The synchronous database, for tests and tools that are not async.
    pub fn sync(&self) -> &Arc<State> {
        &self.state
    }

    /// [`State::read`] on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Reader<'_>) -> Result<T> + Send + 'static,
    {
        let state = self.state.clone();
        run("reading", move || state.read(f)).await
    }

    /// [`State::write`] on the blocking pool: one transaction, committed
    /// (and synced) when `f` returns `Ok`.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Writer<'_>) -> Result<T> + Send + 'static,
    {
        let state = self.state.clone();
        run("writing", move || state.write(f)).await
    }
}

impl Db {
    /// [`State::write_relaxed`] on the blocking pool: committed without a
    /// sync to disk (heartbeats, audit rows).
    pub async fn write_relaxed<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Writer<'_>) -> Result<T> + Send + 'static,
    {
        let state = self.state.clone();
        run("writing", move || state.write_relaxed(f)).await
    }
}

/// Runs `f` on the blocking pool. A panic in `f` is resumed in the caller
/// (as if `f` had run inline); a cancelled task is an error.
async fn run<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StateError::Cancelled(what.to_string())),
    }
}
