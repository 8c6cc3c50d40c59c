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
//! Calls block the calling thread for the duration of the closure (usually
//! well under a millisecond; one `fsync` per write). The connection sits
//! behind a mutex, so a `State` can be shared (`Arc<State>`) between tasks;
//! async code that does long batches should use `spawn_blocking`.
//!
//! Times are passed in by the caller (no clock in here) and stored as Unix
//! milliseconds. Specs are stored as JSON (serde of
//! [`mcp_spec::ServiceSpec`]).
//!
//! Tables: `nodes`, `placements`, `edge_routes`, `snapshots`,
//! `desired_specs`, `dns_records`, `heal_history`, `journal`, `audit`; see
//! [`MIGRATIONS`] for the schema.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcp_spec::{ServiceSpec, Tier};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::config::NodeRole;

/// Schema migrations; entry `i` takes the database from `user_version = i`
/// to `i + 1`. Never edit a released entry: append a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
CREATE TABLE nodes (
    name            TEXT PRIMARY KEY,
    role            TEXT NOT NULL CHECK (role IN ('master', 'worker', 'edge')),
    address         TEXT NOT NULL,
    arch            TEXT NOT NULL DEFAULT '',
    status          TEXT NOT NULL DEFAULT 'unknown'
                    CHECK (status IN ('unknown', 'healthy', 'unhealthy')),
    containers      INTEGER NOT NULL DEFAULT 0,
    cpu_millicores  INTEGER NOT NULL DEFAULT 0,
    memory_bytes    INTEGER NOT NULL DEFAULT 0,
    disk_bytes      INTEGER NOT NULL DEFAULT 0,
    last_heartbeat  INTEGER,                 -- unix ms; NULL: never heard from
    registered_at   INTEGER                  -- unix ms; NULL: bootstrap entry only
) STRICT;

CREATE TABLE placements (
    service      TEXT PRIMARY KEY,
    node         TEXT NOT NULL,
    tier         TEXT NOT NULL CHECK (tier IN ('core', 'worker')),
    spec_hash    TEXT NOT NULL,
    spec         TEXT NOT NULL,              -- JSON of the last deployed ServiceSpec
    deployed_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX placements_node ON placements (node);

CREATE TABLE edge_routes (
    hostname          TEXT PRIMARY KEY,
    service           TEXT NOT NULL,
    edge_node         TEXT NOT NULL,
    backend_hostname  TEXT NOT NULL,
    backend_port      INTEGER NOT NULL CHECK (backend_port BETWEEN 1 AND 65535),
    created_at        INTEGER NOT NULL
) STRICT;
CREATE INDEX edge_routes_service ON edge_routes (service);

CREATE TABLE snapshots (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    service     TEXT NOT NULL,
    node        TEXT NOT NULL,
    file        TEXT NOT NULL UNIQUE,
    size        INTEGER NOT NULL,
    checksum    TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX snapshots_service ON snapshots (service, created_at);

CREATE TABLE desired_specs (
    service     TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,               -- JSON of ServiceSpec
    source      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE dns_records (
    name        TEXT PRIMARY KEY,
    address     TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE heal_history (
    service       TEXT NOT NULL,
    component     TEXT NOT NULL,
    attempts      INTEGER NOT NULL,
    last_attempt  INTEGER NOT NULL,
    last_error    TEXT,
    PRIMARY KEY (service, component)
) STRICT;

CREATE TABLE journal (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    op           TEXT NOT NULL,
    service      TEXT NOT NULL,
    step         TEXT NOT NULL,
    status       TEXT NOT NULL
                 CHECK (status IN ('running', 'succeeded', 'failed', 'abandoned')),
    detail       TEXT NOT NULL DEFAULT '',
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER
) STRICT;
CREATE INDEX journal_open ON journal (status) WHERE status = 'running';
CREATE INDEX journal_service ON journal (service, started_at);

CREATE TABLE audit (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    time         INTEGER NOT NULL,
    method       TEXT NOT NULL,
    caller       TEXT NOT NULL,
    target       TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    duration_ms  INTEGER NOT NULL
) STRICT;
CREATE INDEX audit_time ON audit (time);
"#,
    // 2: the degraded alert of a heal streak is raised once (the planner's
    // `HealRecord::alerted`).
    r#"
ALTER TABLE heal_history ADD COLUMN alerted INTEGER NOT NULL DEFAULT 0;
"#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

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
}

type Result<T, E = StateError> = std::result::Result<T, E>;

fn sql(what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StateError {
    let what = what.into();
    move |source| StateError::Sql { what, source }
}

/// The master's database.
pub struct State {
    conn: Mutex<Connection>,
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
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
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
        Ok(State {
            conn: Mutex::new(conn),
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
        let mut conn = self.lock();
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
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("starting a write transaction"))?;
        let out = f(&Writer {
            reader: Reader { conn: &tx },
        })?;
        tx.commit().map_err(sql("committing"))?;
        Ok(out)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic inside a closure rolls its transaction back (the
        // transaction guard's drop), so the connection is still usable.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let err = |version, source| StateError::Migrate {
        path: path.to_path_buf(),
        version,
        source,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .map_err(|e| err(SCHEMA_VERSION, e))?;
    let found = user_version(&tx).map_err(|e| err(SCHEMA_VERSION, e))?;
    if found > SCHEMA_VERSION {
        return Err(StateError::TooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, script) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as u32 + 1;
        tx.execute_batch(script).map_err(|e| err(version, e))?;
        tx.pragma_update(None, "user_version", version)
            .map_err(|e| err(version, e))?;
    }
    tx.commit().map_err(|e| err(SCHEMA_VERSION, e))
}

// ---------------------------------------------------------------------------
// Time

fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn from_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

fn to_i64(n: u64, what: &str) -> Result<i64> {
    i64::try_from(n).map_err(|_| StateError::Invalid {
        what: what.to_string(),
        detail: format!("{n} is too large"),
    })
}

/// A column that must parse into `T`; a bad stored value is a typed error.
fn parse_col<T: FromStr>(value: String, what: &str) -> Result<T> {
    value.parse().map_err(|_| StateError::Corrupt {
        what: what.to_string(),
        detail: format!("unexpected value {value:?}"),
    })
}

fn spec_from_json(json: &str, what: &str) -> Result<ServiceSpec> {
    serde_json::from_str(json).map_err(|e| StateError::Corrupt {
        what: what.to_string(),
        detail: e.to_string(),
    })
}

fn spec_to_json(spec: &ServiceSpec) -> Result<String> {
    serde_json::to_string(spec).map_err(|e| StateError::Invalid {
        what: format!("spec of {}", spec.name),
        detail: e.to_string(),
    })
}

fn u64_col(n: i64, what: &str) -> Result<u64> {
    u64::try_from(n).map_err(|_| StateError::Corrupt {
        what: what.to_string(),
        detail: format!("negative value {n}"),
    })
}

// ---------------------------------------------------------------------------
// Row types

/// Health of a node as the master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Known (bootstrap entry, or just after master start) but not yet heard from.
    Unknown,
    Healthy,
    /// Missed heartbeats and failed `HealthCheck`: excluded from placement.
    Unhealthy,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Unknown => "unknown",
            NodeStatus::Healthy => "healthy",
            NodeStatus::Unhealthy => "unhealthy",
        }
    }
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "unknown" => Ok(NodeStatus::Unknown),
            "healthy" => Ok(NodeStatus::Healthy),
            "unhealthy" => Ok(NodeStatus::Unhealthy),
            _ => Err(()),
        }
    }
}

/// A row of `nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub role: NodeRole,
    pub address: String,
    pub arch: String,
    pub status: NodeStatus,
    pub containers: u32,
    pub cpu_millicores: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    /// Last heartbeat or registration; `None`: never heard from.
    pub last_heartbeat: Option<SystemTime>,
    /// `None`: only known from the config's `[[nodes]]`.
    pub registered_at: Option<SystemTime>,
}

/// What an agent says in `Register`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub name: String,
    pub role: NodeRole,
    pub address: String,
    pub arch: String,
}

/// What an agent says in `Heartbeat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heartbeat {
    pub cpu_millicores: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub containers: u32,
}

/// The outcome of [`Writer::register_node`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// First time this node registered (or it was only a bootstrap entry).
    New,
    /// Known, same address.
    Again,
    /// Known, and its address changed from this one (log it).
    AddressChanged { old: String },
}

/// A row of `placements`: where a service runs and what was deployed there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub service: String,
    pub node: String,
    pub tier: Tier,
    pub spec_hash: String,
    /// The spec last deployed; plans diff the desired spec against it.
    pub spec: ServiceSpec,
    pub deployed_at: SystemTime,
}

/// A row of `edge_routes`: a public hostname the master set up on an edge node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeRoute {
    pub hostname: String,
    pub service: String,
    pub edge_node: String,
    pub backend_hostname: String,
    pub backend_port: u16,
    pub created_at: SystemTime,
}

/// A snapshot to record (see [`SnapshotRecord`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSnapshot {
    pub service: String,
    pub node: String,
    /// Path of the archive (relative to the snapshots dir, or absolute).
    pub file: String,
    pub size: u64,
    /// e.g. `sha256:<hex>`.
    pub checksum: String,
    pub created_at: SystemTime,
}

/// A row of `snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub id: i64,
    pub service: String,
    pub node: String,
    pub file: String,
    pub size: u64,
    pub checksum: String,
    pub created_at: SystemTime,
}

/// A row of `desired_specs` (push mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredSpec {
    pub spec: ServiceSpec,
    /// Where it came from, e.g. `sync by alice` or a commit id.
    pub source: String,
    pub updated_at: SystemTime,
}

/// A row of `dns_records`: a record the master created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    pub name: String,
    pub address: String,
    pub created_at: SystemTime,
}

/// A row of `heal_history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealRecord {
    pub service: String,
    pub component: String,
    /// Consecutive self-heal attempts since the last reset.
    pub attempts: u32,
    pub last_attempt: SystemTime,
    pub last_error: Option<String>,
    /// The degraded alert has been raised for this streak.
    pub alerted: bool,
}

/// Where an operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalStatus {
    /// Started and not finished: after a restart, resume or report it.
    Running,
    Succeeded,
    Failed,
    /// Found running after a restart and given up (reported, not resumed).
    Abandoned,
}

impl JournalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JournalStatus::Running => "running",
            JournalStatus::Succeeded => "succeeded",
            JournalStatus::Failed => "failed",
            JournalStatus::Abandoned => "abandoned",
        }
    }
}

impl std::fmt::Display for JournalStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JournalStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "running" => Ok(JournalStatus::Running),
            "succeeded" => Ok(JournalStatus::Succeeded),
            "failed" => Ok(JournalStatus::Failed),
            "abandoned" => Ok(JournalStatus::Abandoned),
            _ => Err(()),
        }
    }
}

/// A row of `journal`: one operation (deploy, migrate, ...) and the step it
/// last reached. Each step change is committed before the step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub id: i64,
    /// e.g. `deploy`, `migrate`, `undeploy`, `snapshot`.
    pub op: String,
    pub service: String,
    /// e.g. `export`, `import`, `cleanup-source`.
    pub step: String,
    pub status: JournalStatus,
    /// Free text or JSON the operation needs to resume (e.g. source and
    /// target node), or the error it failed with.
    pub detail: String,
    pub started_at: SystemTime,
    pub finished_at: Option<SystemTime>,
}

/// A row of `audit`: one RPC after authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub time: SystemTime,
    /// e.g. `McpMasterService/Deploy`.
    pub method: String,
    /// The caller's identity name.
    pub caller: String,
    /// The service or node acted on (empty when none).
    pub target: String,
    /// `ok` or the error.
    pub outcome: String,
    pub duration_ms: u64,
}

// ---------------------------------------------------------------------------
// Reader

/// Read access inside a transaction (see [`State::read`]).
pub struct Reader<'c> {
    conn: &'c Connection,
}

/// Read and write access inside a write transaction (see [`State::write`]).
/// Derefs to [`Reader`], so reads see the transaction's own writes.
pub struct Writer<'c> {
    reader: Reader<'c>,
}

impl<'c> std::ops::Deref for Writer<'c> {
    type Target = Reader<'c>;
    fn deref(&self) -> &Reader<'c> {
        &self.reader
    }
}

const NODE_COLS: &str = "name, role, address, arch, status, containers, cpu_millicores, \
     memory_bytes, disk_bytes, last_heartbeat, registered_at";

fn node_row(r: &Row<'_>) -> rusqlite::Result<NodeRaw> {
    Ok(NodeRaw {
        name: r.get(0)?,
        role: r.get(1)?,
        address: r.get(2)?,
        arch: r.get(3)?,
        status: r.get(4)?,
        containers: r.get(5)?,
        cpu: r.get(6)?,
        mem: r.get(7)?,
        disk: r.get(8)?,
        last_heartbeat: r.get(9)?,
        registered_at: r.get(10)?,
    })
}

struct NodeRaw {
    name: String,
    role: String,
    address: String,
    arch: String,
    status: String,
    containers: i64,
    cpu: i64,
    mem: i64,
    disk: i64,
    last_heartbeat: Option<i64>,
    registered_at: Option<i64>,
}

impl NodeRaw {
    fn into_node(self) -> Result<Node> {
        let what = format!("node {}", self.name);
        Ok(Node {
            role: parse_col(self.role, &format!("role of {what}"))?,
            status: parse_col(self.status, &format!("status of {what}"))?,
            containers: u32::try_from(self.containers).map_err(|_| StateError::Corrupt {
                what: format!("container count of {what}"),
                detail: format!("unexpected value {}", self.containers),
            })?,
            cpu_millicores: u64_col(self.cpu, &what)?,
            memory_bytes: u64_col(self.mem, &what)?,
            disk_bytes: u64_col(self.disk, &what)?,
            last_heartbeat: self.last_heartbeat.map(from_ms),
            registered_at: self.registered_at.map(from_ms),
            name: self.name,
            address: self.address,
            arch: self.arch,
        })
    }
}

type PlacementRaw = (String, String, String, String, String, i64);

fn placement_from(raw: PlacementRaw) -> Result<Placement> {
    let (service, node, tier, spec_hash, spec, deployed_at) = raw;
    let tier = match tier.as_str() {
        "core" => Tier::Core,
        "worker" => Tier::Worker,
        other => {
            return Err(StateError::Corrupt {
                what: format!("tier of placement {service}"),
                detail: format!("unexpected value {other:?}"),
            })
        }
    };
    let spec = spec_from_json(&spec, &format!("spec of placement {service}"))?;
    Ok(Placement {
        service,
        node,
        tier,
        spec_hash,
        spec,
        deployed_at: from_ms(deployed_at),
    })
}

fn placement_row(r: &Row<'_>) -> rusqlite::Result<PlacementRaw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn edge_row(r: &Row<'_>) -> rusqlite::Result<(EdgeRoute, i64)> {
    let port: i64 = r.get(4)?;
    Ok((
        EdgeRoute {
            hostname: r.get(0)?,
            service: r.get(1)?,
            edge_node: r.get(2)?,
            backend_hostname: r.get(3)?,
            backend_port: 0,
            created_at: from_ms(r.get(5)?),
        },
        port,
    ))
}

fn edge_from((mut route, port): (EdgeRoute, i64)) -> Result<EdgeRoute> {
    route.backend_port = u16::try_from(port).map_err(|_| StateError::Corrupt {
        what: format!("backend port of edge route {}", route.hostname),
        detail: format!("unexpected value {port}"),
    })?;
    Ok(route)
}

fn snapshot_row(r: &Row<'_>) -> rusqlite::Result<(SnapshotRecord, i64)> {
    let size: i64 = r.get(4)?;
    Ok((
        SnapshotRecord {
            id: r.get(0)?,
            service: r.get(1)?,
            node: r.get(2)?,
            file: r.get(3)?,
            size: 0,
            checksum: r.get(5)?,
            created_at: from_ms(r.get(6)?),
        },
        size,
    ))
}

fn snapshot_from((mut s, size): (SnapshotRecord, i64)) -> Result<SnapshotRecord> {
    s.size = u64_col(size, &format!("size of snapshot {}", s.id))?;
    Ok(s)
}

fn desired_row(r: &Row<'_>) -> rusqlite::Result<(String, String, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn desired_from((service, spec, source, at): (String, String, String, i64)) -> Result<DesiredSpec> {
    Ok(DesiredSpec {
        spec: spec_from_json(&spec, &format!("desired spec of {service}"))?,
        source,
        updated_at: from_ms(at),
    })
}

fn heal_row(r: &Row<'_>) -> rusqlite::Result<(HealRecord, i64)> {
    let attempts: i64 = r.get(2)?;
    Ok((
        HealRecord {
            service: r.get(0)?,
            component: r.get(1)?,
            attempts: 0,
            last_attempt: from_ms(r.get(3)?),
            last_error: r.get(4)?,
            alerted: r.get::<_, i64>(5)? != 0,
        },
        attempts,
    ))
}

fn heal_from((mut h, attempts): (HealRecord, i64)) -> Result<HealRecord> {
    h.attempts = u32::try_from(attempts).map_err(|_| StateError::Corrupt {
        what: format!("heal attempts of {}/{}", h.service, h.component),
        detail: format!("unexpected value {attempts}"),
    })?;
    Ok(h)
}

type JournalRaw = (
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
);

fn journal_row(r: &Row<'_>) -> rusqlite::Result<JournalRaw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn journal_from(raw: JournalRaw) -> Result<JournalEntry> {
    let (id, op, service, step, status, detail, started, finished) = raw;
    Ok(JournalEntry {
        status: parse_col(status, &format!("status of journal entry {id}"))?,
        id,
        op,
        service,
        step,
        detail,
        started_at: from_ms(started),
        finished_at: finished.map(from_ms),
    })
}

const JOURNAL_COLS: &str = "id, op, service, step, status, detail, started_at, finished_at";

fn audit_row(r: &Row<'_>) -> rusqlite::Result<(AuditEntry, i64)> {
    let d: i64 = r.get(5)?;
    Ok((
        AuditEntry {
            time: from_ms(r.get(0)?),
            method: r.get(1)?,
            caller: r.get(2)?,
            target: r.get(3)?,
            outcome: r.get(4)?,
            duration_ms: 0,
        },
        d,
    ))
}

fn audit_from((mut a, d): (AuditEntry, i64)) -> Result<AuditEntry> {
    a.duration_ms = u64_col(d, "audit duration")?;
    Ok(a)
}

impl Reader<'_> {
    /// Runs a query and converts each row.
    fn query<R, T>(
        &self,
        what: &str,
        q: &str,
        args: impl rusqlite::Params,
        row: impl FnMut(&Row<'_>) -> rusqlite::Result<R>,
        conv: impl Fn(R) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare_cached(q).map_err(sql(what))?;
        let rows = stmt.query_map(args, row).map_err(sql(what))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(conv(r.map_err(sql(what))?)?);
        }
        Ok(out)
    }

    fn query_one<R, T>(
        &self,
        what: &str,
        q: &str,
        args: impl rusqlite::Params,
        row: impl FnOnce(&Row<'_>) -> rusqlite::Result<R>,
        conv: impl FnOnce(R) -> Result<T>,
    ) -> Result<Option<T>> {
        let raw = self
            .conn
            .prepare_cached(q)
            .and_then(|mut s| s.query_row(args, row).optional())
            .map_err(sql(what))?;
        raw.map(conv).transpose()
    }

    // --- nodes

    pub fn node(&self, name: &str) -> Result<Option<Node>> {
        self.query_one(
            &format!("reading node {name}"),
            &format!("SELECT {NODE_COLS} FROM nodes WHERE name = ?1"),
            [name],
            node_row,
            NodeRaw::into_node,
        )
    }

    /// All nodes, by name.
    pub fn nodes(&self) -> Result<Vec<Node>> {
        self.query(
            "listing nodes",
            &format!("SELECT {NODE_COLS} FROM nodes ORDER BY name"),
            [],
            node_row,
            NodeRaw::into_node,
        )
    }

    // --- placements

    pub fn placement(&self, service: &str) -> Result<Option<Placement>> {
        self.query_one(
            &format!("reading placement of {service}"),
            "SELECT service, node, tier, spec_hash, spec, deployed_at FROM placements WHERE service = ?1",
            [service],
            placement_row,
            placement_from,
        )
    }

    /// All placements, by service.
    pub fn placements(&self) -> Result<Vec<Placement>> {
        self.query(
            "listing placements",
            "SELECT service, node, tier, spec_hash, spec, deployed_at FROM placements ORDER BY service",
            [],
            placement_row,
            placement_from,
        )
    }

    /// Placements on `node`, by service.
    pub fn placements_on(&self, node: &str) -> Result<Vec<Placement>> {
        self.query(
            &format!("listing placements on {node}"),
            "SELECT service, node, tier, spec_hash, spec, deployed_at FROM placements WHERE node = ?1 ORDER BY service",
            [node],
            placement_row,
            placement_from,
        )
    }

    // --- edge routes

    pub fn edge_route(&self, hostname: &str) -> Result<Option<EdgeRoute>> {
        self.query_one(
            &format!("reading edge route {hostname}"),
            "SELECT hostname, service, edge_node, backend_hostname, backend_port, created_at FROM edge_routes WHERE hostname = ?1",
            [hostname],
            edge_row,
            edge_from,
        )
    }

    /// All edge routes, by hostname.
    pub fn edge_routes(&self) -> Result<Vec<EdgeRoute>> {
        self.query(
            "listing edge routes",
            "SELECT hostname, service, edge_node, backend_hostname, backend_port, created_at FROM edge_routes ORDER BY hostname",
            [],
            edge_row,
            edge_from,
        )
    }

    /// Edge routes of `service`, by hostname.
    pub fn edge_routes_of(&self, service: &str) -> Result<Vec<EdgeRoute>> {
        self.query(
            &format!("listing edge routes of {service}"),
            "SELECT hostname, service, edge_node, backend_hostname, backend_port, created_at FROM edge_routes WHERE service = ?1 ORDER BY hostname",
            [service],
            edge_row,
            edge_from,
        )
    }

    // --- snapshots

    /// Snapshots of `service`, newest first.
    pub fn snapshots(&self, service: &str) -> Result<Vec<SnapshotRecord>> {
        self.query(
            &format!("listing snapshots of {service}"),
            "SELECT id, service, node, file, size, checksum, created_at FROM snapshots WHERE service = ?1 ORDER BY created_at DESC, id DESC",
            [service],
            snapshot_row,
            snapshot_from,
        )
    }

    /// The newest snapshot of `service` (what a migration from a dead node
    /// restores).
    pub fn latest_snapshot(&self, service: &str) -> Result<Option<SnapshotRecord>> {
        self.query_one(
            &format!("reading latest snapshot of {service}"),
            "SELECT id, service, node, file, size, checksum, created_at FROM snapshots WHERE service = ?1 ORDER BY created_at DESC, id DESC LIMIT 1",
            [service],
            snapshot_row,
            snapshot_from,
        )
    }

    /// Snapshots of `service` beyond the newest `retain`, oldest first: the
    /// ones retention deletes (file first, then the row).
    pub fn snapshots_past_retention(
        &self,
        service: &str,
        retain: u32,
    ) -> Result<Vec<SnapshotRecord>> {
        let mut all = self.snapshots(service)?;
        let keep = (retain as usize).min(all.len());
        let mut old = all.split_off(keep);
        old.reverse();
        Ok(old)
    }

    /// The newest snapshot time of every service that has snapshots (to flag
    /// stale ones: older than twice the interval).
    pub fn latest_snapshot_times(&self) -> Result<Vec<(String, SystemTime)>> {
        self.query(
            "reading snapshot times",
            "SELECT service, MAX(created_at) FROM snapshots GROUP BY service ORDER BY service",
            [],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            |(s, t)| Ok((s, from_ms(t))),
        )
    }

    // --- desired specs

    pub fn desired_spec(&self, service: &str) -> Result<Option<DesiredSpec>> {
        self.query_one(
            &format!("reading desired spec of {service}"),
            "SELECT service, spec, source, updated_at FROM desired_specs WHERE service = ?1",
            [service],
            desired_row,
            desired_from,
        )
    }

    /// All desired specs (push mode), by service.
    pub fn desired_specs(&self) -> Result<Vec<DesiredSpec>> {
        self.query(
            "listing desired specs",
            "SELECT service, spec, source, updated_at FROM desired_specs ORDER BY service",
            [],
            desired_row,
            desired_from,
        )
    }

    // --- DNS records

    pub fn dns_record(&self, name: &str) -> Result<Option<DnsRecord>> {
        self.query_one(
            &format!("reading dns record {name}"),
            "SELECT name, address, created_at FROM dns_records WHERE name = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            |(name, address, at): (String, String, i64)| {
                Ok(DnsRecord {
                    name,
                    address,
                    created_at: from_ms(at),
                })
            },
        )
    }

    /// All DNS records the master created, by name.
    pub fn dns_records(&self) -> Result<Vec<DnsRecord>> {
        self.query(
            "listing dns records",
            "SELECT name, address, created_at FROM dns_records ORDER BY name",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            |(name, address, at): (String, String, i64)| {
                Ok(DnsRecord {
                    name,
                    address,
                    created_at: from_ms(at),
                })
            },
        )
    }

    // --- heal history

    pub fn heal_record(&self, service: &str, component: &str) -> Result<Option<HealRecord>> {
        self.query_one(
            &format!("reading heal history of {service}/{component}"),
            "SELECT service, component, attempts, last_attempt, last_error, alerted FROM heal_history WHERE service = ?1 AND component = ?2",
            [service, component],
            heal_row,
            heal_from,
        )
    }

    /// All heal records, by service and component.
    pub fn heal_records(&self) -> Result<Vec<HealRecord>> {
        self.query(
            "listing heal history",
            "SELECT service, component, attempts, last_attempt, last_error, alerted FROM heal_history ORDER BY service, component",
            [],
            heal_row,
            heal_from,
        )
    }

    // --- journal

    pub fn journal_entry(&self, id: i64) -> Result<Option<JournalEntry>> {
        self.query_one(
            &format!("reading journal entry {id}"),
            &format!("SELECT {JOURNAL_COLS} FROM journal WHERE id = ?1"),
            [id],
            journal_row,
            journal_from,
        )
    }

    /// Operations still `running`, oldest first: after a restart, each must
    /// be resumed or reported (then finished or abandoned).
    pub fn journal_unfinished(&self) -> Result<Vec<JournalEntry>> {
        self.query(
            "listing unfinished operations",
            &format!("SELECT {JOURNAL_COLS} FROM journal WHERE status = 'running' ORDER BY id"),
            [],
            journal_row,
            journal_from,
        )
    }

    /// The newest `limit` operations on `service` (all services when
    /// `None`), newest first.
    pub fn journal_recent(&self, service: Option<&str>, limit: u32) -> Result<Vec<JournalEntry>> {
        match service {
            Some(s) => self.query(
                &format!("listing operations on {s}"),
                &format!("SELECT {JOURNAL_COLS} FROM journal WHERE service = ?1 ORDER BY id DESC LIMIT ?2"),
                params![s, limit],
                journal_row,
                journal_from,
            ),
            None => self.query(
                "listing operations",
                &format!("SELECT {JOURNAL_COLS} FROM journal ORDER BY id DESC LIMIT ?1"),
                [limit],
                journal_row,
                journal_from,
            ),
        }
    }

    // --- audit

    /// The newest `limit` audit entries, newest first.
    pub fn audit_recent(&self, limit: u32) -> Result<Vec<AuditEntry>> {
        self.query(
            "reading audit log",
            "SELECT time, method, caller, target, outcome, duration_ms FROM audit ORDER BY id DESC LIMIT ?1",
            [limit],
            audit_row,
            audit_from,
        )
    }
}

// ---------------------------------------------------------------------------
// Writer

impl Writer<'_> {
    fn exec(&self, what: &str, q: &str, args: impl rusqlite::Params) -> Result<usize> {
        self.conn
            .prepare_cached(q)
            .and_then(|mut s| s.execute(args))
            .map_err(sql(what))
    }

    // --- nodes

    /// Records a `Register`: creates the node or updates its role, address
    /// and arch, and marks it healthy (it just spoke to us).
    pub fn register_node(&self, reg: &Registration, now: SystemTime) -> Result<Registered> {
        let old = self.node(&reg.name)?;
        let now = to_ms(now);
        self.exec(
            &format!("registering node {}", reg.name),
            "INSERT INTO nodes (name, role, address, arch, status, last_heartbeat, registered_at)
             VALUES (?1, ?2, ?3, ?4, 'healthy', ?5, ?5)
             ON CONFLICT (name) DO UPDATE SET role = ?2, address = ?3, arch = ?4,
                 status = 'healthy', last_heartbeat = ?5, registered_at = ?5",
            params![reg.name, reg.role.as_str(), reg.address, reg.arch, now],
        )?;
        Ok(match old {
            Some(n) if n.registered_at.is_some() && n.address != reg.address => {
                Registered::AddressChanged { old: n.address }
            }
            Some(n) if n.registered_at.is_some() => Registered::Again,
            _ => Registered::New,
        })
    }

    /// Adds a `[[nodes]]` bootstrap entry unless the node is already known
    /// (a registered node's own report wins). Returns true when added.
    pub fn add_bootstrap_node(&self, name: &str, role: NodeRole, address: &str) -> Result<bool> {
        let n = self.exec(
            &format!("adding bootstrap node {name}"),
            "INSERT INTO nodes (name, role, address) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
            params![name, role.as_str(), address],
        )?;
        Ok(n == 1)
    }

    /// Records a `Heartbeat`: load figures, and the node is healthy again.
    pub fn record_heartbeat(&self, name: &str, hb: &Heartbeat, now: SystemTime) -> Result<()> {
        let what = format!("recording heartbeat of {name}");
        let n = self.exec(
            &what,
            "UPDATE nodes SET cpu_millicores = ?2, memory_bytes = ?3, disk_bytes = ?4,
                 containers = ?5, last_heartbeat = ?6, status = 'healthy' WHERE name = ?1",
            params![
                name,
                to_i64(hb.cpu_millicores, &what)?,
                to_i64(hb.memory_bytes, &what)?,
                to_i64(hb.disk_bytes, &what)?,
                hb.containers,
                to_ms(now)
            ],
        )?;
        if n == 0 {
            return Err(StateError::UnknownNode(name.to_string()));
        }
        Ok(())
    }

    /// Sets a node's status (e.g. unhealthy after a failed `HealthCheck`).
    pub fn set_node_status(&self, name: &str, status: NodeStatus) -> Result<()> {
        let n = self.exec(
            &format!("setting status of node {name}"),
            "UPDATE nodes SET status = ?2 WHERE name = ?1",
            params![name, status.as_str()],
        )?;
        if n == 0 {
            return Err(StateError::UnknownNode(name.to_string()));
        }
        Ok(())
    }

    /// Marks every node `unknown` (master start-up, before probing).
    pub fn reset_node_statuses(&self) -> Result<()> {
        self.exec(
            "resetting node statuses",
            "UPDATE nodes SET status = 'unknown'",
            [],
        )?;
        Ok(())
    }

    /// Removes a node from the registry. Its placements are left alone (the
    /// planner reports them). Returns true when it existed.
    pub fn remove_node(&self, name: &str) -> Result<bool> {
        Ok(self.exec(
            &format!("removing node {name}"),
            "DELETE FROM nodes WHERE name = ?1",
            [name],
        )? == 1)
    }

    // --- placements

    /// Inserts or replaces the placement of `p.service`.
    pub fn put_placement(&self, p: &Placement) -> Result<()> {
        if p.spec.name != p.service {
            return Err(StateError::Invalid {
                what: format!("placement of {}", p.service),
                detail: format!("its spec is for service {:?}", p.spec.name),
            });
        }
        self.exec(
            &format!("saving placement of {}", p.service),
            "INSERT INTO placements (service, node, tier, spec_hash, spec, deployed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (service) DO UPDATE SET node = ?2, tier = ?3, spec_hash = ?4,
                 spec = ?5, deployed_at = ?6",
            params![
                p.service,
                p.node,
                p.tier.as_str(),
                p.spec_hash,
                spec_to_json(&p.spec)?,
                to_ms(p.deployed_at)
            ],
        )?;
        Ok(())
    }

    /// Returns true when there was one.
    pub fn remove_placement(&self, service: &str) -> Result<bool> {
        Ok(self.exec(
            &format!("removing placement of {service}"),
            "DELETE FROM placements WHERE service = ?1",
            [service],
        )? == 1)
    }

    // --- edge routes

    /// Inserts or replaces the route for `r.hostname`.
    pub fn put_edge_route(&self, r: &EdgeRoute) -> Result<()> {
        if r.backend_port == 0 {
            return Err(StateError::Invalid {
                what: format!("edge route {}", r.hostname),
                detail: "backend port 0".to_string(),
            });
        }
        self.exec(
            &format!("saving edge route {}", r.hostname),
            "INSERT INTO edge_routes (hostname, service, edge_node, backend_hostname, backend_port, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (hostname) DO UPDATE SET service = ?2, edge_node = ?3,
                 backend_hostname = ?4, backend_port = ?5, created_at = ?6",
            params![
                r.hostname,
                r.service,
                r.edge_node,
                r.backend_hostname,
                r.backend_port,
                to_ms(r.created_at)
            ],
        )?;
        Ok(())
    }

    pub fn remove_edge_route(&self, hostname: &str) -> Result<bool> {
        Ok(self.exec(
            &format!("removing edge route {hostname}"),
            "DELETE FROM edge_routes WHERE hostname = ?1",
            [hostname],
        )? == 1)
    }

    // --- snapshots

    /// Records a stored snapshot; returns it with its id.
    pub fn add_snapshot(&self, s: &NewSnapshot) -> Result<SnapshotRecord> {
        let what = format!("recording snapshot {} of {}", s.file, s.service);
        self.exec(
            &what,
            "INSERT INTO snapshots (service, node, file, size, checksum, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                s.service,
                s.node,
                s.file,
                to_i64(s.size, &what)?,
                s.checksum,
                to_ms(s.created_at)
            ],
        )?;
        Ok(SnapshotRecord {
            id: self.conn.last_insert_rowid(),
            service: s.service.clone(),
            node: s.node.clone(),
            file: s.file.clone(),
            size: s.size,
            checksum: s.checksum.clone(),
            created_at: s.created_at,
        })
    }

    pub fn remove_snapshot(&self, id: i64) -> Result<bool> {
        Ok(self.exec(
            &format!("removing snapshot {id}"),
            "DELETE FROM snapshots WHERE id = ?1",
            [id],
        )? == 1)
    }

    // --- desired specs

    /// Inserts or replaces one desired spec.
    pub fn put_desired_spec(
        &self,
        spec: &ServiceSpec,
        source: &str,
        now: SystemTime,
    ) -> Result<()> {
        self.exec(
            &format!("saving desired spec of {}", spec.name),
            "INSERT INTO desired_specs (service, spec, source, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (service) DO UPDATE SET spec = ?2, source = ?3, updated_at = ?4",
            params![spec.name, spec_to_json(spec)?, source, to_ms(now)],
        )?;
        Ok(())
    }

    /// Replaces the whole desired state (what `mcp sync` sends). Specs whose
    /// content is unchanged keep their `updated_at` and source.
    pub fn replace_desired_specs(
        &self,
        specs: &[ServiceSpec],
        source: &str,
        now: SystemTime,
    ) -> Result<()> {
        let mut names = std::collections::BTreeSet::new();
        for s in specs {
            if !names.insert(s.name.as_str()) {
                return Err(StateError::Invalid {
                    what: "desired specs".to_string(),
                    detail: format!("service {} appears twice", s.name),
                });
            }
        }
        for old in self.desired_specs()? {
            if !names.contains(old.spec.name.as_str()) {
                self.remove_desired_spec(&old.spec.name)?;
            }
        }
        for s in specs {
            let same = self
                .desired_spec(&s.name)?
                .is_some_and(|old| old.spec == *s);
            if !same {
                self.put_desired_spec(s, source, now)?;
            }
        }
        Ok(())
    }

    pub fn remove_desired_spec(&self, service: &str) -> Result<bool> {
        Ok(self.exec(
            &format!("removing desired spec of {service}"),
            "DELETE FROM desired_specs WHERE service = ?1",
            [service],
        )? == 1)
    }

    // --- DNS records

    /// Inserts or replaces a record the master created.
    pub fn put_dns_record(&self, name: &str, address: &str, now: SystemTime) -> Result<()> {
        self.exec(
            &format!("saving dns record {name}"),
            "INSERT INTO dns_records (name, address, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET address = ?2, created_at = ?3",
            params![name, address, to_ms(now)],
        )?;
        Ok(())
    }

    pub fn remove_dns_record(&self, name: &str) -> Result<bool> {
        Ok(self.exec(
            &format!("removing dns record {name}"),
            "DELETE FROM dns_records WHERE name = ?1",
            [name],
        )? == 1)
    }

    // --- heal history

    /// Counts one self-heal attempt; returns the updated record.
    pub fn record_heal_attempt(
        &self,
        service: &str,
        component: &str,
        now: SystemTime,
        error: Option<&str>,
    ) -> Result<HealRecord> {
        self.exec(
            &format!("recording heal attempt of {service}/{component}"),
            "INSERT INTO heal_history (service, component, attempts, last_attempt, last_error)
             VALUES (?1, ?2, 1, ?3, ?4)
             ON CONFLICT (service, component) DO UPDATE SET attempts = attempts + 1,
                 last_attempt = ?3, last_error = ?4",
            params![service, component, to_ms(now), error],
        )?;
        self.heal_record(service, component)?
            .ok_or_else(|| StateError::Corrupt {
                what: format!("heal history of {service}/{component}"),
                detail: "row missing right after it was written".to_string(),
            })
    }

    /// Records why the last heal attempt of `service`/`component` failed.
    pub fn record_heal_error(&self, service: &str, component: &str, error: &str) -> Result<bool> {
        Ok(self.exec(
            &format!("recording heal error of {service}/{component}"),
            "UPDATE heal_history SET last_error = ?3 WHERE service = ?1 AND component = ?2",
            [service, component, error],
        )? == 1)
    }

    /// Marks the degraded alert of `service`/`component` as raised (no-op
    /// without a heal record). Returns true when a record was marked.
    pub fn mark_heal_alerted(&self, service: &str, component: &str) -> Result<bool> {
        Ok(self.exec(
            &format!("marking heal alert of {service}/{component}"),
            "UPDATE heal_history SET alerted = 1 WHERE service = ?1 AND component = ?2",
            [service, component],
        )? == 1)
    }

    /// Forgets the attempts of one component (it is running again).
    pub fn reset_heal(&self, service: &str, component: &str) -> Result<bool> {
        Ok(self.exec(
            &format!("resetting heal history of {service}/{component}"),
            "DELETE FROM heal_history WHERE service = ?1 AND component = ?2",
            [service, component],
        )? == 1)
    }

    /// Forgets the attempts of every component of `service` (redeployed or
    /// undeployed). Returns how many records were removed.
    pub fn reset_heal_of_service(&self, service: &str) -> Result<usize> {
        self.exec(
            &format!("resetting heal history of {service}"),
            "DELETE FROM heal_history WHERE service = ?1",
            [service],
        )
    }

    // --- journal

    /// Starts an operation at its first step; returns its id.
    pub fn journal_begin(
        &self,
        op: &str,
        service: &str,
        step: &str,
        detail: &str,
        now: SystemTime,
    ) -> Result<i64> {
        self.exec(
            &format!("journaling start of {op} {service}"),
            "INSERT INTO journal (op, service, step, status, detail, started_at)
             VALUES (?1, ?2, ?3, 'running', ?4, ?5)",
            params![op, service, step, detail, to_ms(now)],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Moves a running operation to its next step (commit this before the
    /// step's side effects). `detail: None` keeps the previous detail.
    pub fn journal_step(&self, id: i64, step: &str, detail: Option<&str>) -> Result<()> {
        let e = self.open_entry(id)?;
        self.exec(
            &format!("journaling step {step} of {} {}", e.op, e.service),
            "UPDATE journal SET step = ?2, detail = COALESCE(?3, detail) WHERE id = ?1",
            params![id, step, detail],
        )?;
        Ok(())
    }

    /// Ends a running operation with `status` (not `Running`).
    pub fn journal_finish(
        &self,
        id: i64,
        status: JournalStatus,
        detail: Option<&str>,
        now: SystemTime,
    ) -> Result<()> {
        let e = self.open_entry(id)?;
        if status == JournalStatus::Running {
            return Err(StateError::Invalid {
                what: format!("journal entry {id} ({} {})", e.op, e.service),
                detail: "an operation cannot be finished as running".to_string(),
            });
        }
        self.exec(
            &format!("journaling end of {} {}", e.op, e.service),
            "UPDATE journal SET status = ?2, detail = COALESCE(?3, detail), finished_at = ?4 WHERE id = ?1",
            params![id, status.as_str(), detail, to_ms(now)],
        )?;
        Ok(())
    }

    fn open_entry(&self, id: i64) -> Result<JournalEntry> {
        let e = self
            .journal_entry(id)?
            .ok_or(StateError::UnknownJournalEntry(id))?;
        if e.status != JournalStatus::Running {
            return Err(StateError::JournalClosed {
                id,
                op: e.op,
                service: e.service,
                status: e.status,
            });
        }
        Ok(e)
    }

    /// Deletes finished operations that ended before `before`; running ones
    /// are kept whatever their age. Returns how many were deleted.
    pub fn journal_prune(&self, before: SystemTime) -> Result<usize> {
        self.exec(
            "pruning journal",
            "DELETE FROM journal WHERE status != 'running' AND finished_at < ?1",
            [to_ms(before)],
        )
    }

    // --- audit

    pub fn audit(&self, a: &AuditEntry) -> Result<()> {
        let what = format!("recording audit entry for {}", a.method);
        self.exec(
            &what,
            "INSERT INTO audit (time, method, caller, target, outcome, duration_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                to_ms(a.time),
                a.method,
                a.caller,
                a.target,
                a.outcome,
                to_i64(a.duration_ms, &what)?
            ],
        )?;
        Ok(())
    }

    /// Deletes audit entries older than `before`; returns how many.
    pub fn audit_prune(&self, before: SystemTime) -> Result<usize> {
        self.exec(
            "pruning audit log",
            "DELETE FROM audit WHERE time < ?1",
            [to_ms(before)],
        )
    }
}

#[cfg(test)]
mod tests;
