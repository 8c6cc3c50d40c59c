//! Queries: services, components, events, sent alerts.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};

use crate::clock::Timestamp;

use super::*;

impl Registry {
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
}
