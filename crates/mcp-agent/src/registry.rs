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
//! # Schema (version 1)
//!
//! See [`MIGRATIONS`]. In short: `services` (the deployed spec as JSON, its
//! hash, snapshot config, active, tier), `components` (image, version,
//! desired/observed state, restarts, container name; cascade-deleted with
//! their service), `ports` (host port → service/component/route; cascade-
//! deleted with their component), `events` (append-only history, indexed on
//! service, component, time; kept after a service is removed), `alerts_sent`
//! (cooldown memory), `meta` (small key/values such as the port cursor), and
//! `edge_routes` / `certificates`, created now and filled by later work.
//!
//! The connection is not `Sync`: the daemon wraps a [`Registry`] in a mutex
//! and calls it from blocking tasks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use mcp_spec::{ServiceSpec, SnapshotConfig, Tier};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};

use crate::clock::Timestamp;

/// Schema migrations: `MIGRATIONS[i]` takes the schema from version `i` to
/// `i + 1`. Append only; never edit a released entry.
pub const MIGRATIONS: &[&str] = &[
    // 1: initial schema
    r#"
CREATE TABLE services (
    name        TEXT PRIMARY KEY NOT NULL,
    spec        TEXT NOT NULL,               -- JSON of mcp_spec::ServiceSpec, as deployed
    spec_hash   TEXT NOT NULL,               -- mcp_spec::spec_hash of that spec
    snapshot    TEXT,                        -- JSON of mcp_spec::SnapshotConfig; NULL = none
    active      INTEGER NOT NULL CHECK (active IN (0, 1)),  -- current desired state
    tier        TEXT NOT NULL CHECK (tier IN ('core', 'worker')),
    updated_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE components (
    service         TEXT NOT NULL REFERENCES services(name) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    image           TEXT NOT NULL,
    version         TEXT NOT NULL,           -- mcp_spec::image_version(image)
    desired_state   TEXT NOT NULL CHECK (desired_state IN ('running', 'stopped', 'ignore')),
    observed_state  TEXT NOT NULL DEFAULT 'unknown',
    restart_count   INTEGER NOT NULL DEFAULT 0,
    container_name  TEXT NOT NULL UNIQUE,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (service, name)
) STRICT;

CREATE TABLE ports (
    port          INTEGER PRIMARY KEY CHECK (port BETWEEN 1 AND 65535),
    service       TEXT NOT NULL,
    component     TEXT NOT NULL,
    route         TEXT NOT NULL,             -- route name; '' = the unnamed route ($PORT)
    allocated_at  INTEGER NOT NULL,
    UNIQUE (service, component, route),
    FOREIGN KEY (service, component) REFERENCES components(service, name) ON DELETE CASCADE
) STRICT;

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    service     TEXT NOT NULL,
    component   TEXT NOT NULL,               -- '' for service-level events
    prev_state  TEXT,
    new_state   TEXT,
    kind        TEXT NOT NULL,               -- state | restart | drift | flapping | ...
    detail      TEXT NOT NULL DEFAULT '',
    time        INTEGER NOT NULL
) STRICT;
CREATE INDEX events_by_component ON events (service, component, time);
CREATE INDEX events_by_time ON events (time);

CREATE TABLE alerts_sent (
    key        TEXT PRIMARY KEY NOT NULL,
    last_sent  INTEGER NOT NULL
) STRICT;

CREATE TABLE meta (
    key    TEXT PRIMARY KEY NOT NULL,
    value  TEXT NOT NULL
) STRICT;

-- Filled by the edge-route work (SetupEdgeRoute on edge nodes).
CREATE TABLE edge_routes (
    hostname          TEXT PRIMARY KEY NOT NULL,   -- public name
    backend_hostname  TEXT NOT NULL,
    backend_port      INTEGER NOT NULL,
    backend_tls       INTEGER NOT NULL DEFAULT 1 CHECK (backend_tls IN (0, 1)),
    cert_serial       TEXT,
    cert_expires      INTEGER,
    created_at        INTEGER NOT NULL
) STRICT;

-- Filled by certificate provisioning (L7 routes, edge routes).
CREATE TABLE certificates (
    hostname    TEXT PRIMARY KEY NOT NULL,
    service     TEXT,                         -- NULL for edge-route certificates
    serial      TEXT NOT NULL,
    not_after   INTEGER NOT NULL,
    cert_path   TEXT NOT NULL,
    key_path    TEXT NOT NULL,
    issued_at   INTEGER NOT NULL
) STRICT;
"#,
];

/// Latest schema version this build knows.
pub fn schema_version() -> u32 {
    u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX)
}

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

/// What the agent should keep a component doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DesiredState {
    Running,
    Stopped,
    /// Not managed: observed and recorded, never started, stopped or alerted
    /// on. Kept across redeploys (an explicit operator choice).
    Ignore,
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Stopped => "stopped",
            DesiredState::Ignore => "ignore",
        }
    }

    pub fn parse(s: &str) -> Option<DesiredState> {
        match s {
            "running" => Some(DesiredState::Running),
            "stopped" => Some(DesiredState::Stopped),
            "ignore" => Some(DesiredState::Ignore),
            _ => None,
        }
    }

    pub fn from_active(active: bool) -> DesiredState {
        if active {
            DesiredState::Running
        } else {
            DesiredState::Stopped
        }
    }
}

impl fmt::Display for DesiredState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A container's state as the agent last saw it (podman's vocabulary, plus
/// `unknown` = never observed and `missing` = no such container).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObservedState {
    Unknown,
    Missing,
    Created,
    Running,
    Paused,
    Restarting,
    Stopping,
    Exited,
    Stopped,
    /// Any other podman state, kept verbatim.
    Other(String),
}

impl ObservedState {
    pub fn as_str(&self) -> &str {
        match self {
            ObservedState::Unknown => "unknown",
            ObservedState::Missing => "missing",
            ObservedState::Created => "created",
            ObservedState::Running => "running",
            ObservedState::Paused => "paused",
            ObservedState::Restarting => "restarting",
            ObservedState::Stopping => "stopping",
            ObservedState::Exited => "exited",
            ObservedState::Stopped => "stopped",
            ObservedState::Other(s) => s,
        }
    }

    /// Total: unknown words become [`ObservedState::Other`] (lowercased).
    pub fn parse(s: &str) -> ObservedState {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "unknown" => ObservedState::Unknown,
            "missing" => ObservedState::Missing,
            "created" | "configured" | "initialized" => ObservedState::Created,
            "running" | "up" => ObservedState::Running,
            "paused" => ObservedState::Paused,
            "restarting" => ObservedState::Restarting,
            "stopping" => ObservedState::Stopping,
            "exited" | "dead" => ObservedState::Exited,
            "stopped" => ObservedState::Stopped,
            other => ObservedState::Other(other.to_string()),
        }
    }

    pub fn is_running(&self) -> bool {
        *self == ObservedState::Running
    }
}

impl fmt::Display for ObservedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kind of an [`Event`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The observed state changed (`prev_state` → `new_state`).
    State,
    /// The container restarted between two observations (restart count grew).
    Restart,
    /// Desired and observed disagree (began to).
    Drift,
    /// Too many transitions within the flap window.
    Flapping,
    /// Anything recorded by later work (deploy, undeploy, ...), verbatim.
    Other(String),
}

impl EventKind {
    pub fn as_str(&self) -> &str {
        match self {
            EventKind::State => "state",
            EventKind::Restart => "restart",
            EventKind::Drift => "drift",
            EventKind::Flapping => "flapping",
            EventKind::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> EventKind {
        match s {
            "state" => EventKind::State,
            "restart" => EventKind::Restart,
            "drift" => EventKind::Drift,
            "flapping" => EventKind::Flapping,
            other => EventKind::Other(other.to_string()),
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event to record (see [`Registry::record_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub service: String,
    /// Empty for service-level events.
    pub component: String,
    pub prev_state: Option<String>,
    pub new_state: Option<String>,
    pub kind: EventKind,
    pub detail: String,
    pub time: Timestamp,
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: i64,
    pub service: String,
    pub component: String,
    pub prev_state: Option<String>,
    pub new_state: Option<String>,
    pub kind: EventKind,
    pub detail: String,
    pub time: Timestamp,
}

/// Filter for [`Registry::events`]; the default returns everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    pub service: Option<String>,
    /// Only meaningful with `service`.
    pub component: Option<String>,
    /// Events at or after this time.
    pub since: Option<Timestamp>,
    /// At most this many, the most recent ones.
    pub limit: Option<usize>,
}

/// A service as deployed on this node.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRecord {
    pub name: String,
    /// The spec as last deployed (its `active` is the deploy-time value;
    /// [`ServiceRecord::active`] is the current desired state).
    pub spec: ServiceSpec,
    pub spec_hash: String,
    pub snapshot: Option<SnapshotConfig>,
    /// Current desired state: changed by deploys and by stop / start.
    pub active: bool,
    pub tier: Tier,
    pub updated_at: Timestamp,
    /// Ordered by name.
    pub components: Vec<ComponentRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentRecord {
    pub service: String,
    pub name: String,
    pub image: String,
    pub version: String,
    pub desired: DesiredState,
    pub observed: ObservedState,
    pub restart_count: u32,
    pub container_name: String,
    pub updated_at: Timestamp,
}

/// What [`Registry::upsert_service`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpsertOutcome {
    /// `None` when the service is new.
    pub previous_hash: Option<String>,
    /// Components that were in the registry and are not in the new spec
    /// (their rows and ports are gone; their containers are the caller's).
    pub removed_components: Vec<String>,
    /// Host ports released because their component or route disappeared.
    pub released_ports: Vec<u16>,
}

impl UpsertOutcome {
    pub fn is_new(&self) -> bool {
        self.previous_hash.is_none()
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

    // ----- services and components -------------------------------------

    /// Records `spec` (with its `hash`) as deployed: inserts or replaces the
    /// service row, inserts or updates its components (desired state from
    /// `spec.active`, except components set to `ignore`, which stay so;
    /// observed state and restart count are kept), deletes components no
    /// longer in the spec, and releases the ports of removed components and
    /// removed routes. One transaction.
    pub fn upsert_service(&mut self, spec: &ServiceSpec, hash: &str) -> Result<UpsertOutcome> {
        let now = self.now().as_unix();
        let svc = spec.name.clone();
        let spec_json = serde_json::to_string(spec).map_err(|e| RegistryError::Corrupt {
            context: format!("encode spec of service {svc}"),
            message: e.to_string(),
        })?;
        let snapshot_json = spec
            .snapshot
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| RegistryError::Corrupt {
                context: format!("encode snapshot config of service {svc}"),
                message: e.to_string(),
            })?;

        let tx = self
            .conn
            .transaction()
            .ctx(|| format!("upsert service {svc}: begin"))?;

        // Container names are global on the host.
        for c in &spec.components {
            let container = spec.container_name(&c.name);
            let owner: Option<(String, String)> = tx
                .query_row(
                    "SELECT service, name FROM components WHERE container_name = ?1 AND service <> ?2",
                    params![container, svc],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .ctx(|| format!("upsert service {svc}: check container {container}"))?;
            if let Some((other_service, other_component)) = owner {
                return Err(RegistryError::ContainerNameTaken {
                    container,
                    service: svc,
                    component: c.name.clone(),
                    other_service,
                    other_component,
                });
            }
        }

        let previous_hash: Option<String> = tx
            .query_row(
                "SELECT spec_hash FROM services WHERE name = ?1",
                [&svc],
                |r| r.get(0),
            )
            .optional()
            .ctx(|| format!("upsert service {svc}: read previous hash"))?;

        tx.execute(
            "INSERT INTO services (name, spec, spec_hash, snapshot, active, tier, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (name) DO UPDATE SET
               spec = excluded.spec, spec_hash = excluded.spec_hash,
               snapshot = excluded.snapshot, active = excluded.active,
               tier = excluded.tier, updated_at = excluded.updated_at",
            params![
                svc,
                spec_json,
                hash,
                snapshot_json,
                spec.active,
                spec.tier.as_str(),
                now
            ],
        )
        .ctx(|| format!("upsert service {svc}"))?;

        // Ports that will disappear: of removed components and removed routes.
        let wanted: BTreeSet<(String, String)> = spec
            .components
            .iter()
            .flat_map(|c| {
                c.routes
                    .iter()
                    .map(move |r| (c.name.clone(), r.name.clone().unwrap_or_default()))
            })
            .collect();
        let mut released_ports = Vec::new();
        {
            let mut stmt = tx
                .prepare("SELECT port, component, route FROM ports WHERE service = ?1")
                .ctx(|| format!("upsert service {svc}: list ports"))?;
            let rows = stmt
                .query_map([&svc], |r| {
                    Ok((r.get::<_, u16>(0)?, r.get::<_, String>(1)?, r.get(2)?))
                })
                .ctx(|| format!("upsert service {svc}: list ports"))?;
            for row in rows {
                let (port, component, route) =
                    row.ctx(|| format!("upsert service {svc}: read port"))?;
                if !wanted.contains(&(component, route)) {
                    released_ports.push(port);
                }
            }
        }
        for port in &released_ports {
            tx.execute("DELETE FROM ports WHERE port = ?1", [port])
                .ctx(|| format!("upsert service {svc}: release port {port}"))?;
        }

        let existing: Vec<String> = {
            let mut stmt = tx
                .prepare("SELECT name FROM components WHERE service = ?1 ORDER BY name")
                .ctx(|| format!("upsert service {svc}: list components"))?;
            let rows = stmt
                .query_map([&svc], |r| r.get(0))
                .ctx(|| format!("upsert service {svc}: list components"))?;
            rows.collect::<rusqlite::Result<_>>()
                .ctx(|| format!("upsert service {svc}: list components"))?
        };
        let mut removed_components = Vec::new();
        for name in existing {
            if spec.component(&name).is_none() {
                tx.execute(
                    "DELETE FROM components WHERE service = ?1 AND name = ?2",
                    params![svc, name],
                )
                .ctx(|| format!("upsert service {svc}: remove component {name}"))?;
                removed_components.push(name);
            }
        }

        let desired = DesiredState::from_active(spec.active);
        for c in &spec.components {
            tx.execute(
                "INSERT INTO components
                   (service, name, image, version, desired_state, container_name, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (service, name) DO UPDATE SET
                   image = excluded.image, version = excluded.version,
                   desired_state = CASE components.desired_state
                       WHEN 'ignore' THEN 'ignore' ELSE excluded.desired_state END,
                   container_name = excluded.container_name,
                   updated_at = excluded.updated_at",
                params![
                    svc,
                    c.name,
                    c.image,
                    c.version(),
                    desired.as_str(),
                    spec.container_name(&c.name),
                    now
                ],
            )
            .ctx(|| format!("upsert component {svc}/{}", c.name))?;
        }

        tx.commit()
            .ctx(|| format!("upsert service {svc}: commit"))?;
        released_ports.sort_unstable();
        Ok(UpsertOutcome {
            previous_hash,
            removed_components,
            released_ports,
        })
    }

    pub fn get_service(&self, name: &str) -> Result<Option<ServiceRecord>> {
        let row = self
            .conn
            .query_row(
                "SELECT name, spec, spec_hash, snapshot, active, tier, updated_at
                 FROM services WHERE name = ?1",
                [name],
                ServiceRow::from_row,
            )
            .optional()
            .ctx(|| format!("read service {name}"))?;
        match row {
            None => Ok(None),
            Some(row) => {
                let components = self.components(name)?;
                Ok(Some(row.into_record(components)?))
            }
        }
    }

    /// Every service, ordered by name.
    pub fn list_services(&self) -> Result<Vec<ServiceRecord>> {
        let rows: Vec<ServiceRow> = {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT name, spec, spec_hash, snapshot, active, tier, updated_at
                     FROM services ORDER BY name",
                )
                .ctx(|| "list services".to_string())?;
            let rows = stmt
                .query_map([], ServiceRow::from_row)
                .ctx(|| "list services".to_string())?;
            rows.collect::<rusqlite::Result<_>>()
                .ctx(|| "list services".to_string())?
        };
        let mut by_service: BTreeMap<String, Vec<ComponentRecord>> = BTreeMap::new();
        for c in self.all_components()? {
            by_service.entry(c.service.clone()).or_default().push(c);
        }
        rows.into_iter()
            .map(|row| {
                let comps = by_service.remove(&row.name).unwrap_or_default();
                row.into_record(comps)
            })
            .collect()
    }

    /// Removes a service with its components and ports (events stay).
    /// Returns the released ports; `ServiceNotFound` if it was not there.
    pub fn remove_service(&mut self, name: &str) -> Result<Vec<u16>> {
        let tx = self
            .conn
            .transaction()
            .ctx(|| format!("remove service {name}: begin"))?;
        let ports = ports_of(&tx, name)?;
        let n = tx
            .execute("DELETE FROM services WHERE name = ?1", [name])
            .ctx(|| format!("remove service {name}"))?;
        if n == 0 {
            return Err(RegistryError::ServiceNotFound {
                service: name.to_string(),
            });
        }
        tx.commit()
            .ctx(|| format!("remove service {name}: commit"))?;
        Ok(ports)
    }

    /// Sets the service's current desired state and every component's
    /// desired state (`ignore` components are left alone), as `mcp stop` /
    /// `mcp start` do. The stored spec is unchanged.
    pub fn set_service_active(&mut self, service: &str, active: bool) -> Result<()> {
        let now = self.now().as_unix();
        let tx = self
            .conn
            .transaction()
            .ctx(|| format!("set service {service} active: begin"))?;
        let n = tx
            .execute(
                "UPDATE services SET active = ?2, updated_at = ?3 WHERE name = ?1",
                params![service, active, now],
            )
            .ctx(|| format!("set service {service} active"))?;
        if n == 0 {
            return Err(RegistryError::ServiceNotFound {
                service: service.to_string(),
            });
        }
        tx.execute(
            "UPDATE components SET desired_state = ?2, updated_at = ?3
             WHERE service = ?1 AND desired_state <> 'ignore'",
            params![service, DesiredState::from_active(active).as_str(), now],
        )
        .ctx(|| format!("set components of {service} desired"))?;
        tx.commit()
            .ctx(|| format!("set service {service} active: commit"))
    }

    /// Components of one service, ordered by name (empty if unknown).
    pub fn components(&self, service: &str) -> Result<Vec<ComponentRecord>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "{COMPONENT_SELECT} WHERE service = ?1 ORDER BY name"
            ))
            .ctx(|| format!("list components of {service}"))?;
        let rows = stmt
            .query_map([service], ComponentRow::from_row)
            .ctx(|| format!("list components of {service}"))?;
        rows.map(|r| {
            r.ctx(|| format!("read component of {service}"))?
                .into_record()
        })
        .collect()
    }

    /// Every component of every service, ordered by service and name.
    pub fn all_components(&self) -> Result<Vec<ComponentRecord>> {
        let mut stmt = self
            .conn
            .prepare(&format!("{COMPONENT_SELECT} ORDER BY service, name"))
            .ctx(|| "list components".to_string())?;
        let rows = stmt
            .query_map([], ComponentRow::from_row)
            .ctx(|| "list components".to_string())?;
        rows.map(|r| r.ctx(|| "read component".to_string())?.into_record())
            .collect()
    }

    pub fn get_component(&self, service: &str, component: &str) -> Result<ComponentRecord> {
        self.conn
            .query_row(
                &format!("{COMPONENT_SELECT} WHERE service = ?1 AND name = ?2"),
                params![service, component],
                ComponentRow::from_row,
            )
            .optional()
            .ctx(|| format!("read component {service}/{component}"))?
            .ok_or_else(|| RegistryError::ComponentNotFound {
                service: service.to_string(),
                component: component.to_string(),
            })?
            .into_record()
    }

    pub fn set_component_desired(
        &mut self,
        service: &str,
        component: &str,
        desired: DesiredState,
    ) -> Result<()> {
        let now = self.now().as_unix();
        let n = self
            .conn
            .execute(
                "UPDATE components SET desired_state = ?3, updated_at = ?4
                 WHERE service = ?1 AND name = ?2",
                params![service, component, desired.as_str(), now],
            )
            .ctx(|| format!("set desired state of {service}/{component}"))?;
        not_found_if_zero(n, service, component)
    }

    pub fn set_component_observed(
        &mut self,
        service: &str,
        component: &str,
        observed: &ObservedState,
        restart_count: u32,
    ) -> Result<()> {
        let now = self.now().as_unix();
        let n = self
            .conn
            .execute(
                "UPDATE components SET observed_state = ?3, restart_count = ?4, updated_at = ?5
                 WHERE service = ?1 AND name = ?2",
                params![service, component, observed.as_str(), restart_count, now],
            )
            .ctx(|| format!("set observed state of {service}/{component}"))?;
        not_found_if_zero(n, service, component)
    }

    // ----- events ---------------------------------------------------------

    /// Appends an event; returns its id.
    pub fn record_event(&mut self, e: &NewEvent) -> Result<i64> {
        insert_event(&self.conn, e)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Appends several events in one transaction.
    pub fn record_events(&mut self, events: &[NewEvent]) -> Result<()> {
        let tx = self
            .conn
            .transaction()
            .ctx(|| "record events: begin".to_string())?;
        for e in events {
            insert_event(&tx, e)?;
        }
        tx.commit().ctx(|| "record events: commit".to_string())
    }

    /// Events matching `q`, oldest first (with `limit`, the most recent
    /// `limit` events, still oldest first).
    pub fn events(&self, q: &EventQuery) -> Result<Vec<Event>> {
        let mut sql = String::from(
            "SELECT id, service, component, prev_state, new_state, kind, detail, time
             FROM events WHERE 1 = 1",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(s) = &q.service {
            args.push(s.clone().into());
            sql.push_str(&format!(" AND service = ?{}", args.len()));
        }
        if let Some(c) = &q.component {
            args.push(c.clone().into());
            sql.push_str(&format!(" AND component = ?{}", args.len()));
        }
        if let Some(t) = q.since {
            args.push(t.as_unix().into());
            sql.push_str(&format!(" AND time >= ?{}", args.len()));
        }
        sql.push_str(" ORDER BY time DESC, id DESC");
        if let Some(limit) = q.limit {
            args.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
            sql.push_str(&format!(" LIMIT ?{}", args.len()));
        }
        let ctx = || format!("query events ({q:?})");
        let mut stmt = self.conn.prepare(&sql).ctx(ctx)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok(Event {
                    id: r.get(0)?,
                    service: r.get(1)?,
                    component: r.get(2)?,
                    prev_state: r.get(3)?,
                    new_state: r.get(4)?,
                    kind: EventKind::parse(&r.get::<_, String>(5)?),
                    detail: r.get(6)?,
                    time: Timestamp::from_unix(r.get(7)?),
                })
            })
            .ctx(ctx)?;
        let mut out: Vec<Event> = rows.collect::<rusqlite::Result<_>>().ctx(ctx)?;
        out.reverse();
        Ok(out)
    }

    /// Deletes events older than `before`; returns how many.
    pub fn prune_events(&mut self, before: Timestamp) -> Result<usize> {
        self.conn
            .execute("DELETE FROM events WHERE time < ?1", [before.as_unix()])
            .ctx(|| format!("prune events before {before}"))
    }

    // ----- alert cooldown -------------------------------------------------

    /// When each alert key was last sent.
    pub fn alerts_sent(&self) -> Result<BTreeMap<String, Timestamp>> {
        let mut stmt = self
            .conn
            .prepare("SELECT key, last_sent FROM alerts_sent")
            .ctx(|| "list sent alerts".to_string())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, Timestamp::from_unix(r.get(1)?)))
            })
            .ctx(|| "list sent alerts".to_string())?;
        rows.collect::<rusqlite::Result<_>>()
            .ctx(|| "list sent alerts".to_string())
    }

    pub fn mark_alert_sent(&mut self, key: &str, at: Timestamp) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO alerts_sent (key, last_sent) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET last_sent = excluded.last_sent",
                params![key, at.as_unix()],
            )
            .map(|_| ())
            .ctx(|| format!("mark alert {key} sent"))
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

fn not_found_if_zero(n: usize, service: &str, component: &str) -> Result<()> {
    if n == 0 {
        Err(RegistryError::ComponentNotFound {
            service: service.to_string(),
            component: component.to_string(),
        })
    } else {
        Ok(())
    }
}

pub(crate) fn ports_of(tx: &Transaction<'_>, service: &str) -> Result<Vec<u16>> {
    let mut stmt = tx
        .prepare("SELECT port FROM ports WHERE service = ?1 ORDER BY port")
        .ctx(|| format!("list ports of {service}"))?;
    let rows = stmt
        .query_map([service], |r| r.get(0))
        .ctx(|| format!("list ports of {service}"))?;
    rows.collect::<rusqlite::Result<_>>()
        .ctx(|| format!("list ports of {service}"))
}

/// Applies every pending migration in one IMMEDIATE transaction.
pub(crate) fn migrate(conn: &mut Connection, path: &Path, migrations: &[&str]) -> Result<()> {
    let supported = u32::try_from(migrations.len()).unwrap_or(u32::MAX);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|source| RegistryError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let found: u32 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|source| RegistryError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    if found > supported {
        return Err(RegistryError::TooNew {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    for (i, sql) in migrations.iter().enumerate().skip(found as usize) {
        let version = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let err = |source| RegistryError::Migrate {
            path: path.to_path_buf(),
            version,
            source,
        };
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(err)?;
    }
    tx.commit().map_err(|source| RegistryError::Migrate {
        path: path.to_path_buf(),
        version: supported,
        source,
    })
}

const COMPONENT_SELECT: &str = "SELECT service, name, image, version, desired_state, \
     observed_state, restart_count, container_name, updated_at FROM components";

struct ComponentRow {
    service: String,
    name: String,
    image: String,
    version: String,
    desired: String,
    observed: String,
    restart_count: i64,
    container_name: String,
    updated_at: i64,
}

impl ComponentRow {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ComponentRow> {
        Ok(ComponentRow {
            service: r.get(0)?,
            name: r.get(1)?,
            image: r.get(2)?,
            version: r.get(3)?,
            desired: r.get(4)?,
            observed: r.get(5)?,
            restart_count: r.get(6)?,
            container_name: r.get(7)?,
            updated_at: r.get(8)?,
        })
    }

    fn into_record(self) -> Result<ComponentRecord> {
        let desired = DesiredState::parse(&self.desired).ok_or_else(|| RegistryError::Corrupt {
            context: format!("component {}/{}", self.service, self.name),
            message: format!("unknown desired state {:?}", self.desired),
        })?;
        Ok(ComponentRecord {
            desired,
            observed: ObservedState::parse(&self.observed),
            restart_count: u32::try_from(self.restart_count).unwrap_or(0),
            updated_at: Timestamp::from_unix(self.updated_at),
            service: self.service,
            name: self.name,
            image: self.image,
            version: self.version,
            container_name: self.container_name,
        })
    }
}

struct ServiceRow {
    name: String,
    spec: String,
    spec_hash: String,
    snapshot: Option<String>,
    active: bool,
    tier: String,
    updated_at: i64,
}

impl ServiceRow {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ServiceRow> {
        Ok(ServiceRow {
            name: r.get(0)?,
            spec: r.get(1)?,
            spec_hash: r.get(2)?,
            snapshot: r.get(3)?,
            active: r.get(4)?,
            tier: r.get(5)?,
            updated_at: r.get(6)?,
        })
    }

    fn into_record(self, components: Vec<ComponentRecord>) -> Result<ServiceRecord> {
        let corrupt = |what: &str, e: serde_json::Error| RegistryError::Corrupt {
            context: format!("service {}", self.name),
            message: format!("{what}: {e}"),
        };
        let spec: ServiceSpec =
            serde_json::from_str(&self.spec).map_err(|e| corrupt("spec JSON", e))?;
        let snapshot = self
            .snapshot
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt("snapshot JSON", e))?;
        let tier = match self.tier.as_str() {
            "core" => Tier::Core,
            "worker" => Tier::Worker,
            other => {
                return Err(RegistryError::Corrupt {
                    context: format!("service {}", self.name),
                    message: format!("unknown tier {other:?}"),
                })
            }
        };
        Ok(ServiceRecord {
            name: self.name,
            spec,
            spec_hash: self.spec_hash,
            snapshot,
            active: self.active,
            tier,
            updated_at: Timestamp::from_unix(self.updated_at),
            components,
        })
    }
}

/// The one INSERT of an event, on a connection or inside a transaction.
fn insert_event(conn: &rusqlite::Connection, e: &NewEvent) -> Result<()> {
    conn.execute(
        "INSERT INTO events (service, component, prev_state, new_state, kind, detail, time)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            e.service,
            e.component,
            e.prev_state,
            e.new_state,
            e.kind.as_str(),
            e.detail,
            e.time.as_unix()
        ],
    )
    .ctx(|| format!("record {} event of {}/{}", e.kind, e.service, e.component))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> u32 {
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("user_version")
    }

    fn has_table(conn: &Connection, name: &str) -> bool {
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
            [name],
            |r| r.get(0),
        )
        .expect("sqlite_master")
    }

    #[test]
    fn migrations_apply_in_order_and_only_once() {
        let mut conn = Connection::open_in_memory().expect("open");
        let path = Path::new(":memory:");
        let v1 = ["CREATE TABLE a (x INTEGER) STRICT;"];
        migrate(&mut conn, path, &v1).expect("v1");
        assert_eq!(version(&conn), 1);
        // Re-running does not re-apply (CREATE TABLE a would fail).
        migrate(&mut conn, path, &v1).expect("v1 again");
        let v2 = [v1[0], "ALTER TABLE a ADD COLUMN y TEXT;"];
        migrate(&mut conn, path, &v2).expect("v2");
        assert_eq!(version(&conn), 2);
    }

    #[test]
    fn a_failing_migration_leaves_the_schema_untouched() {
        let mut conn = Connection::open_in_memory().expect("open");
        let path = Path::new("/var/lib/mcp/agent.db");
        let broken = ["CREATE TABLE a (x INTEGER);", "CREATE TABLE b (oops"];
        let err = migrate(&mut conn, path, &broken).expect_err("broken v2");
        assert!(
            matches!(err, RegistryError::Migrate { version: 2, .. }),
            "{err}"
        );
        assert!(err
            .to_string()
            .starts_with("cannot migrate registry /var/lib/mcp/agent.db to schema version 2"));
        assert_eq!(version(&conn), 0);
        assert!(!has_table(&conn, "a"), "v1 rolled back with v2");
    }

    #[test]
    fn in_memory_registry_works() {
        let mut r = Registry::open_in_memory().expect("open");
        assert_eq!(r.user_version().expect("version"), schema_version());
        r.mark_alert_sent("k", Timestamp::from_unix(1))
            .expect("write");
        assert_eq!(r.alerts_sent().expect("read").len(), 1);
    }

    #[test]
    fn states_round_trip() {
        for s in ["running", "stopped", "ignore"] {
            assert_eq!(DesiredState::parse(s).map(DesiredState::as_str), Some(s));
        }
        assert_eq!(DesiredState::parse("Running"), None);
        for s in [
            "unknown",
            "missing",
            "created",
            "running",
            "paused",
            "restarting",
            "stopping",
            "exited",
            "stopped",
            "removing",
        ] {
            assert_eq!(ObservedState::parse(s).as_str(), s);
        }
        assert_eq!(ObservedState::parse("Up"), ObservedState::Running);
        assert_eq!(ObservedState::parse("dead"), ObservedState::Exited);
        for k in ["state", "restart", "drift", "flapping", "deploy"] {
            assert_eq!(EventKind::parse(k).as_str(), k);
        }
    }
}
