//! The schema: versioned migrations (`PRAGMA user_version`) and their
//! application.

use std::path::Path;

use rusqlite::Connection;

use super::*;

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
    // 2: routes on the node's reverse proxy (what the agent registered, so
    // a proxy restarted empty gets them back)
    r#"
CREATE TABLE proxy_routes (
    listen_port   INTEGER NOT NULL CHECK (listen_port BETWEEN 1 AND 65535),
    hostname      TEXT NOT NULL,
    service       TEXT NOT NULL,               -- '' for routes added by AddProxyRoute
    component     TEXT NOT NULL,
    route         TEXT NOT NULL,               -- route name; '' = the unnamed route
    mode          TEXT NOT NULL CHECK (mode IN ('l4', 'l7')),
    backend       TEXT NOT NULL,               -- host:port
    backend_tls   TEXT,                        -- JSON of mcp_net BackendTls; NULL = plain
    cert_hostname TEXT,                        -- certificates.hostname (l7)
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (listen_port, hostname)
) STRICT;
CREATE INDEX proxy_routes_by_service ON proxy_routes (service);
"#,
];

/// Latest schema version this build knows.
pub fn schema_version() -> u32 {
    u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX)
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
