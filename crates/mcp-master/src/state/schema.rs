//! The schema and its migrations.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::{Result, StateError};

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
    // 3: when a node's registered address last changed (the change
    // cool-down, `[registration] address_change_cooldown`).
    r#"
ALTER TABLE nodes ADD COLUMN address_changed_at INTEGER;   -- unix ms; NULL: never changed
"#,
    // 4: the audit row's caller class in its own column (`mcp audit` shows
    // and filters it); rows written before stored `name (class)` in
    // `caller`, split here. `mcp audit --caller` reads by caller.
    r#"
ALTER TABLE audit ADD COLUMN class TEXT NOT NULL DEFAULT '';
UPDATE audit
   SET caller = substr(caller, 1, instr(caller, ' (') - 1),
       class = substr(caller, instr(caller, ' (') + 2, length(caller) - instr(caller, ' (') - 2)
 WHERE caller LIKE '% (%)';
CREATE INDEX audit_caller ON audit (caller, id);
"#,
    // 5: specs an agent refused as such (permanent errors), held until the
    // service's spec changes.
    r#"
CREATE TABLE failed_specs (
    service    TEXT NOT NULL,
    spec_hash  TEXT NOT NULL,
    node       TEXT NOT NULL,
    code       TEXT NOT NULL,
    error      TEXT NOT NULL,
    failed_at  INTEGER NOT NULL,              -- unix ms
    PRIMARY KEY (service, spec_hash)
) STRICT;
"#,
    // 6: a snapshot's file name is unique per service, not across the
    // store (two services snapshotted in the same second, as `mcp migrate
    // --all` does, share a time-stamped name in their own directories).
    r#"
CREATE TABLE snapshots_v6 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    service     TEXT NOT NULL,
    node        TEXT NOT NULL,
    file        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    checksum    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (service, file)
) STRICT;
INSERT INTO snapshots_v6 (id, service, node, file, size, checksum, created_at)
     SELECT id, service, node, file, size, checksum, created_at FROM snapshots;
DROP TABLE snapshots;
ALTER TABLE snapshots_v6 RENAME TO snapshots;
CREATE INDEX snapshots_service ON snapshots (service, created_at);
"#,
    // 7: how each spec of a service fared when deployed (`mcp history`,
    // `mcp rollback`): one row per (service, spec hash), the latest outcome.
    r#"
CREATE TABLE deploy_outcomes (
    service    TEXT NOT NULL,
    spec_hash  TEXT NOT NULL,
    outcome    TEXT NOT NULL CHECK (outcome IN ('deployed', 'failed', 'rolled_back')),
    node       TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT '',
    at         INTEGER NOT NULL,
    PRIMARY KEY (service, spec_hash)
) STRICT;
"#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

pub(super) fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
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
