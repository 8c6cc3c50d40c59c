//! The agent's SQLite registry: what this node is supposed to run and what it
//! saw. One file (`[database] path`), owned by one agent process.
//!
//! # Storage decisions
//!
//! - **WAL** journal: readers (status RPCs, `mcp-agent snapshot`) never block
//!   the monitor's writes and vice versa.
//! - **`synchronous = FULL`**: in WAL mode `NORMAL` keeps the file consistent
//!   but may lose the last commits on power loss. The agent writes rarely
//!   (deploys, a few state events per interval), and what it writes is what
//!   it has already told the master or done to the host: a port allocation
//!   that vanished after a power cut would be handed out again while the
//!   container created with it still holds it. One extra fsync per commit is
//!   a fair price for "nothing acknowledged is lost".
//! - `foreign_keys = ON`, `busy_timeout = 5s`.
//! - **Times are unix seconds** (`INTEGER`, UTC) everywhere; see
//!   [`crate::clock`].
//! - Schema versions live in `PRAGMA user_version`; [`Registry::open`]
//!   applies every pending migration in one `IMMEDIATE` transaction, so a
//!   failed upgrade leaves the previous schema untouched, and refuses a
//!   database written by a newer agent.
//!
//! # Schema (version 2)
//!
//! See [`MIGRATIONS`]. In short: `services` (the deployed spec as JSON, its
//! hash, snapshot config, active, tier), `components` (image, version,
//! desired/observed state, restarts, container name; cascade-deleted with
//! their service), `ports` (host port → service/component/route; cascade-
//! deleted with their component), `events` (append-only history, indexed on
//! service, component, time; kept after a service is removed), `alerts_sent`
//! (cooldown memory), `meta` (small key/values such as the port cursor), and
//! `certificates` (the node's own certificates: serial, expiry, files),
//! `edge_routes` (filled by the edge-route work) and, since version 2,
//! `proxy_routes` (every route the agent registered on its proxy).
//!
//! The connection is not `Sync`: the daemon wraps a [`Registry`] in a mutex
//! and calls it from blocking tasks.
//!
//! # Files
//!
//! `schema` (migrations), `records` (the stored values and their rows),
//! `reads` (queries), `writes` (changes, each multi-row one a transaction),
//! `net` (proxy routes and certificates);
//! this module opens the database and holds the error type.

mod net;
mod reads;
mod records;
mod schema;
#[cfg(test)]
mod tests;
mod writes;

use std::fmt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::clock::Timestamp;

pub use net::{CertRecord, RouteRecord};
pub use records::*;
pub(crate) use schema::migrate;
pub use schema::{schema_version, MIGRATIONS};
pub(crate) use writes::ports_of;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot open registry {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "registry {} has schema version {found}, newer than this agent's {supported}; \
         upgrade the agent",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("cannot migrate registry {} to schema version {version}: {source}", path.display())]
    Migrate {
        path: PathBuf,
        version: u32,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{context}: {source}")]
    Sql {
        context: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("service {service} is not in the registry")]
    ServiceNotFound { service: String },
    #[error("component {service}/{component} is not in the registry")]
    ComponentNotFound { service: String, component: String },
    #[error(
        "container name {container} of {service}/{component} is already used by \
         {other_service}/{other_component}"
    )]
    ContainerNameTaken {
        container: String,
        service: String,
        component: String,
        other_service: String,
        other_component: String,
    },
    #[error("corrupt registry row ({context}): {message}")]
    Corrupt { context: String, message: String },
    #[error(
        "no free host port for {service}/{component} route {route:?} in {first}-{last}: \
         every port is allocated or in use"
    )]
    PortsExhausted {
        service: String,
        component: String,
        route: String,
        first: u16,
        last: u16,
    },
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Adds a human context to rusqlite errors.
pub(crate) trait SqlContext<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T>;
}

impl<T> SqlContext<T> for rusqlite::Result<T> {
    fn ctx(self, f: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| RegistryError::Sql {
            context: f(),
            source,
        })
    }
}

type Clock = Box<dyn Fn() -> Timestamp + Send>;

/// The agent registry. See the module documentation.
pub struct Registry {
    pub(crate) conn: Connection,
    pub(crate) path: PathBuf,
    pub(crate) clock: Clock,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Opens (creating if needed) the registry at `path` and brings its
    /// schema up to date. The parent directory must exist.
    pub fn open(path: &Path) -> Result<Registry> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| RegistryError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Registry::init(conn, path.to_path_buf(), MIGRATIONS)
    }

    /// A private in-memory registry (tests, dry runs).
    pub fn open_in_memory() -> Result<Registry> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| RegistryError::Open {
            path: path.clone(),
            source,
        })?;
        Registry::init(conn, path, MIGRATIONS)
    }

    fn init(mut conn: Connection, path: PathBuf, migrations: &[&str]) -> Result<Registry> {
        let open_err = |source| RegistryError::Open {
            path: path.clone(),
            source,
        };
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        // `journal_mode` answers with the mode in force ("memory" for
        // in-memory databases, which cannot use WAL).
        let _mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        migrate(&mut conn, &path, migrations)?;
        Ok(Registry {
            conn,
            path,
            clock: Box::new(Timestamp::now),
        })
    }

    /// Replaces the wall clock used for `updated_at` / `allocated_at`
    /// (tests).
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + 'static) -> Registry {
        self.clock = Box::new(clock);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// The schema version of the open database.
    pub fn user_version(&self) -> Result<u32> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .ctx(|| "read schema version".to_string())
    }

    // ----- backup ---------------------------------------------------------

    /// Writes a consistent, compacted copy of the database to `dest` (which
    /// must not exist) with `VACUUM INTO`.
    pub fn vacuum_into(&self, dest: &Path) -> Result<()> {
        vacuum_into(&self.conn, dest)
    }
}

pub(crate) fn vacuum_into(conn: &Connection, dest: &Path) -> Result<()> {
    let dest_str = dest.to_str().ok_or_else(|| RegistryError::Corrupt {
        context: format!("backup to {}", dest.display()),
        message: "path is not UTF-8".to_string(),
    })?;
    conn.execute("VACUUM INTO ?1", [dest_str])
        .map(|_| ())
        .ctx(|| format!("backup database to {}", dest.display()))
}
