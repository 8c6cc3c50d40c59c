//! [`Reader`]: the queries; the raw-row mappings they share with [`Writer`].

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::records::{from_ms, parse_col, spec_from_json, to_ms, u64_col};
use super::{
    sql, AuditEntry, AuditQuery, DesiredSpec, DnsRecord, EdgeRoute, HealRecord, JournalEntry, Node,
    Placement, Result, SnapshotRecord, StateError,
};
use mcp_spec::Tier;
use std::time::SystemTime;

// ---------------------------------------------------------------------------
// Reader

/// Read access inside a transaction (see [`State::read`]).
pub struct Reader<'c> {
    pub(super) conn: &'c Connection,
}

/// Read and write access inside a write transaction (see [`State::write`]).
/// Derefs to [`Reader`], so reads see the transaction's own writes.
pub struct Writer<'c> {
    pub(super) reader: Reader<'c>,
}

impl<'c> std::ops::Deref for Writer<'c> {
    type Target = Reader<'c>;
    fn deref(&self) -> &Reader<'c> {
        &self.reader
    }
}

const NODE_COLS: &str = "name, role, address, arch, status, containers, cpu_millicores, \
     memory_bytes, disk_bytes, last_heartbeat, registered_at, address_changed_at";

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
        address_changed_at: r.get(11)?,
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
    address_changed_at: Option<i64>,
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
            address_changed_at: self.address_changed_at.map(from_ms),
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

const AUDIT_COLS: &str = "time, method, caller, class, target, outcome, duration_ms";

fn audit_row(r: &Row<'_>) -> rusqlite::Result<(AuditEntry, i64)> {
    let d: i64 = r.get(6)?;
    Ok((
        AuditEntry {
            time: from_ms(r.get(0)?),
            method: r.get(1)?,
            caller: r.get(2)?,
            class: r.get(3)?,
            target: r.get(4)?,
            outcome: r.get(5)?,
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
            &format!("SELECT {AUDIT_COLS} FROM audit ORDER BY id DESC LIMIT ?1"),
            [limit],
            audit_row,
            audit_from,
        )
    }

    /// The newest `q.limit` audit entries written at or after `q.since`
    /// and by `q.caller` (identity name; each when given), oldest first.
    pub fn audit_list(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let since = q.since.map_or(i64::MIN, to_ms);
        let mut rows = match &q.caller {
            Some(caller) => self.query(
                "reading audit log",
                &format!(
                    "SELECT {AUDIT_COLS} FROM audit WHERE caller = ?1 AND time >= ?2
                     ORDER BY id DESC LIMIT ?3"
                ),
                params![caller, since, q.limit],
                audit_row,
                audit_from,
            )?,
            None => self.query(
                "reading audit log",
                &format!(
                    "SELECT {AUDIT_COLS} FROM audit WHERE time >= ?1 ORDER BY id DESC LIMIT ?2"
                ),
                params![since, q.limit],
                audit_row,
                audit_from,
            )?,
        };
        rows.reverse();
        Ok(rows)
    }

    /// How many audit entries there are.
    pub fn audit_count(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
            .map_err(sql("counting audit rows"))?;
        u64_col(n, "audit row count")
    }
}
