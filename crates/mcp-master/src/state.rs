//! The master's SQLite database (docs/ARCHITECTURE.md).
//!
//! [`State::open`] opens (or creates) the file in WAL mode with
//! `synchronous = FULL`, so every committed transaction survives a crash or a
//! power loss, and brings the schema up to date: migrations are numbered by
//! `PRAGMA user_version` and each runs in the same transaction as the version
//! bump, so a crash mid-migration leaves the previous version intact. A file
//! written by a newer master is refused rather than guessed at.
//!
//! All access goes through two closures, which makes atomicity explicit:
//!
//! ```no_run
//! # use mcp_master::state::State;
//! # fn f(state: &State) -> Result<(), mcp_master::state::StateError> {
//! let placements = state.read(|r| r.placements())?;           // one consistent snapshot
//! state.write(|w| {                                            // one IMMEDIATE transaction,
//!     w.remove_placement("mcq")?;                             // committed on Ok,
//!     w.remove_dns_record("mcq.svc.example.internal")          // rolled back on Err
//! })?;
//! # Ok(()) }
//! ```
//!
//! `State`'s calls block the calling thread for the duration of the closure
//! (one `fsync` per write). Async code never calls them directly: it holds a
//! [`Db`], whose `read`/`write` are `async fn`s that run the same closures
//! on tokio's blocking pool, so no SQLite call (and no `fsync`) ever runs on
//! a runtime worker thread. Audit rows go through [`AuditLog`]: a bounded
//! channel to one writer task that commits them in batches.
//!
//! Writes go through one connection behind a mutex; reads use a second
//! connection (WAL lets a reader see the last commit while a write is in
//! progress), so a read never waits behind another call's `fsync`.
//!
//! Times are passed in by the caller (no clock in here) and stored as Unix
//! milliseconds. Specs are stored as JSON (serde of
//! [`mcp_spec::ServiceSpec`]).
//!
//! Tables: `nodes`, `placements`, `edge_routes`, `snapshots`,
//! `desired_specs`, `dns_records`, `heal_history`, `journal`, `audit`,
//! `failed_specs`; see
//! [`MIGRATIONS`] for the schema.
//!
//! Files: `schema` (migrations), `records` (row types), `reads`
//! ([`Reader`]), `writes` ([`Writer`]), `failed` (specs agents refused), `db` ([`Db`], the async handle the
//! daemon uses) and `audit` (the batched audit writer).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use schema::{migrate, user_version};

pub mod audit;
mod db;
mod failed;
mod outcomes;
mod reads;
mod records;
mod schema;
mod writes;

pub use audit::{AuditLog, DbAuditSink};
pub use db::Db;
pub use failed::FailedSpec;
pub use outcomes::{DeployOutcome, Outcome};
pub use reads::{Reader, Writer};
pub use records::*;
pub use schema::{MIGRATIONS, SCHEMA_VERSION};

/// A database problem, naming the file or the thing being read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "database {path} has schema version {found}, newer than this master supports ({supported}); run a newer mcp-master"
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("database {path}: migrating to schema version {version}: {source}")]
    Migrate {
        path: PathBuf,
        version: u32,
        source: rusqlite::Error,
    },
    /// `what` says what was being done, e.g. `saving placement of mcq`.
    #[error("database: {what}: {source}")]
    Sql {
        what: String,
        source: rusqlite::Error,
    },
    #[error("database: stored {what} is invalid: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("node {0} is not registered")]
    UnknownNode(String),
    #[error("journal entry {0} does not exist")]
    UnknownJournalEntry(i64),
    #[error("journal entry {id} ({op} {service}) is already {status}")]
    JournalClosed {
        id: i64,
        op: String,
        service: String,
        status: JournalStatus,
    },
    #[error("cannot store {what}: {detail}")]
    Invalid { what: String, detail: String },
    /// The blocking task running a database call was cancelled (the
    /// runtime is shutting down).
    #[error("database: {0}: the database task was cancelled")]
    Cancelled(String),
}

type Result<T, E = StateError> = std::result::Result<T, E>;

fn sql(what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StateError {
    let what = what.into();
    move |source| StateError::Sql { what, source }
}

/// The master's database.
pub struct State {
    /// Writes (and reads inside a write transaction).
    conn: Mutex<Connection>,
    /// Reads; `None` for a database that is not a file (no WAL to share).
    reader: Option<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("path", &self.path).finish()
    }
}

impl State {
    /// Opens or creates the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<State> {
        let open_err = |source| StateError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        // `journal_mode` answers with the mode in effect.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        let wal = mode.eq_ignore_ascii_case("wal");
        if !wal && !mode.eq_ignore_ascii_case("memory") {
            return Err(StateError::Open {
                path: path.to_path_buf(),
                source: rusqlite::Error::InvalidParameterName(format!(
                    "journal_mode is {mode}, WAL could not be enabled"
                )),
            });
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(open_err)?;
        migrate(&mut conn, path)?;
        let reader = if wal {
            let r = Connection::open(path).map_err(open_err)?;
            r.busy_timeout(Duration::from_secs(5)).map_err(open_err)?;
            r.execute_batch("PRAGMA foreign_keys = ON;")
                .map_err(open_err)?;
            Some(Mutex::new(r))
        } else {
            None
        };
        Ok(State {
            conn: Mutex::new(conn),
            reader,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32> {
        let conn = self.lock();
        user_version(&conn).map_err(sql("reading schema version"))
    }

    /// Runs `f` over one consistent snapshot of the database.
    pub fn read<T>(&self, f: impl FnOnce(&Reader<'_>) -> Result<T>) -> Result<T> {
        let mut conn = match &self.reader {
            Some(r) => r.lock().unwrap_or_else(PoisonError::into_inner),
            None => self.lock(),
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(sql("starting a read transaction"))?;
        let out = f(&Reader { conn: &tx })?;
        tx.finish().map_err(sql("ending a read transaction"))?;
        Ok(out)
    }

    /// Runs `f` in one write transaction: committed (and synced to disk)
    /// when `f` returns `Ok`, rolled back when it returns `Err`.
    pub fn write<T>(&self, f: impl FnOnce(&Writer<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        write_on(&mut conn, f)
    }

    /// Like [`State::write`], but committed with `synchronous = NORMAL`:
    /// atomic and kept across a crash of the process, but not synced to
    /// disk at commit, so a power loss may lose it (the next
    /// [`State::write`]'s sync, or a checkpoint, makes it durable). For
    /// records nothing is acted on from: heartbeats and audit rows.
    pub fn write_relaxed<T>(&self, f: impl FnOnce(&Writer<'_>) -> Result<T>) -> Result<T> {
        // Restored on drop, even if `f` panics: every other write stays FULL.
        struct Relaxed<'a>(MutexGuard<'a, Connection>);
        impl Drop for Relaxed<'_> {
            fn drop(&mut self) {
                if let Err(e) = self.0.pragma_update(None, "synchronous", "FULL") {
                    tracing::error!(error = %e, "cannot restore synchronous = FULL");
                }
            }
        }
        let mut conn = Relaxed(self.lock());
        conn.0
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql("relaxing synchronous"))?;
        write_on(&mut conn.0, f)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic inside a closure rolls its transaction back (the
        // transaction guard's drop), so the connection is still usable.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn write_on<T>(conn: &mut Connection, f: impl FnOnce(&Writer<'_>) -> Result<T>) -> Result<T> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("starting a write transaction"))?;
    let out = f(&Writer {
        reader: Reader { conn: &tx },
    })?;
    tx.commit().map_err(sql("committing"))?;
    Ok(out)
}

#[cfg(test)]
mod tests;
