//! [`Writer`]: the mutations, each inside the caller's write transaction.

use std::time::SystemTime;

use mcp_spec::ServiceSpec;
use rusqlite::params;

use super::records::{spec_to_json, to_i64, to_ms};
use super::{
    sql, AuditEntry, EdgeRoute, HealRecord, Heartbeat, JournalEntry, JournalStatus, NewSnapshot,
    NodeStatus, Placement, Registered, Registration, Result, SnapshotRecord, StateError, Writer,
};
use crate::config::NodeRole;

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
    /// and arch, and marks it healthy (it just spoke to us). A registered
    /// node's or a bootstrap entry's address changing is stamped
    /// `address_changed_at` (a first registration of a bootstrap entry
    /// is still [`Registered::New`]). The caller checked the request
    /// ([`crate::fleet::Fleet::register`]).
    pub fn register_node(&self, reg: &Registration, now: SystemTime) -> Result<Registered> {
        let old = self.node(&reg.name)?;
        let outcome = match &old {
            Some(n) if n.registered_at.is_some() && n.address != reg.address => {
                Registered::AddressChanged {
                    old: n.address.clone(),
                }
            }
            Some(n) if n.registered_at.is_some() => Registered::Again,
            _ => Registered::New,
        };
        let changed_at = match &old {
            Some(n) if n.address != reg.address => Some(to_ms(now)),
            Some(n) => n.address_changed_at.map(to_ms),
            None => None,
        };
        let now = to_ms(now);
        self.exec(
            &format!("registering node {}", reg.name),
            "INSERT INTO nodes (name, role, address, arch, status, last_heartbeat, registered_at, address_changed_at)
             VALUES (?1, ?2, ?3, ?4, 'healthy', ?5, ?5, ?6)
             ON CONFLICT (name) DO UPDATE SET role = ?2, address = ?3, arch = ?4,
                 status = 'healthy', last_heartbeat = ?5, registered_at = ?5,
                 address_changed_at = ?6",
            params![reg.name, reg.role.as_str(), reg.address, reg.arch, now, changed_at],
        )?;
        Ok(outcome)
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

    /// Sets the recorded role of every known node the configuration gives
    /// a role (master start-up: the configuration wins over what a node
    /// registered with). Returns the nodes changed, with their old role.
    pub fn apply_configured_roles(
        &self,
        roles: &std::collections::BTreeMap<String, NodeRole>,
    ) -> Result<Vec<(String, NodeRole)>> {
        let mut changed = Vec::new();
        for (name, role) in roles {
            match self.node(name)? {
                Some(n) if n.role != *role => {
                    self.exec(
                        &format!("setting the configured role of node {name}"),
                        "UPDATE nodes SET role = ?2 WHERE name = ?1",
                        params![name, role.as_str()],
                    )?;
                    changed.push((name.clone(), n.role));
                }
                _ => {}
            }
        }
        Ok(changed)
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
            "INSERT INTO audit (time, method, caller, class, target, outcome, duration_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                to_ms(a.time),
                a.method,
                a.caller,
                a.class,
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

    /// Deletes every audit entry but the newest `keep` (in the order they
    /// were written); returns how many.
    pub fn audit_prune_count(&self, keep: u64) -> Result<usize> {
        self.exec(
            "pruning audit log",
            "DELETE FROM audit
             WHERE id <= (SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET ?1)",
            [to_i64(keep, "audit rows to keep")?],
        )
    }
}
