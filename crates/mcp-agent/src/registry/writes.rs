//! Changes: deploys, removals, desired and observed state, events, alert
//! cooldowns. Every multi-row change is one transaction.

use std::collections::BTreeSet;

use mcp_spec::ServiceSpec;
use rusqlite::{params, OptionalExtension, Transaction};

use crate::clock::Timestamp;

use super::*;

impl Registry {
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

    /// Deletes events older than `before`; returns how many.
    pub fn prune_events(&mut self, before: Timestamp) -> Result<usize> {
        self.conn
            .execute("DELETE FROM events WHERE time < ?1", [before.as_unix()])
            .ctx(|| format!("prune events before {before}"))
    }

    /// Applies both retention limits in one transaction: deletes events
    /// older than `before`, then keeps the newest `max_rows` (by time, then
    /// id: the order [`Registry::events`] uses).
    pub fn prune_events_to(&mut self, before: Timestamp, max_rows: u64) -> Result<PrunedEvents> {
        let tx = self
            .conn
            .transaction()
            .ctx(|| "prune events: begin".to_string())?;
        let by_age = tx
            .execute("DELETE FROM events WHERE time < ?1", [before.as_unix()])
            .ctx(|| format!("prune events before {before}"))?;
        let keep = i64::try_from(max_rows).unwrap_or(i64::MAX);
        let by_count = tx
            .execute(
                "DELETE FROM events WHERE id IN (
                     SELECT id FROM events ORDER BY time DESC, id DESC LIMIT -1 OFFSET ?1)",
                [keep],
            )
            .ctx(|| format!("prune events beyond the newest {max_rows}"))?;
        tx.commit().ctx(|| "prune events: commit".to_string())?;
        Ok(PrunedEvents { by_age, by_count })
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
}

pub(super) fn not_found_if_zero(n: usize, service: &str, component: &str) -> Result<()> {
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

/// The one INSERT of an event, on a connection or inside a transaction.
pub(super) fn insert_event(conn: &rusqlite::Connection, e: &NewEvent) -> Result<()> {
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
