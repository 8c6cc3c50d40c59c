//! `failed_specs`: services whose spec an agent refused as such (a
//! permanent error), keyed by service and spec hash. While the desired spec
//! of the service still has that hash the reconciler holds it (no attempt
//! on any node); a changed spec, a successful deploy or an explicit
//! `mcp deploy` clears the record.

use std::time::SystemTime;

use rusqlite::{params, OptionalExtension, Row};

use super::records::{from_ms, to_ms};
use super::{sql, Reader, Result, Writer};

/// A row of `failed_specs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedSpec {
    pub service: String,
    /// `mcp_spec::spec_hash` of the refused spec.
    pub spec_hash: String,
    /// The node whose agent refused it.
    pub node: String,
    /// The gRPC code of the refusal (`InvalidArgument`, ...).
    pub code: String,
    /// The agent's answer, as the master logged it.
    pub error: String,
    pub failed_at: SystemTime,
}

const COLS: &str = "service, spec_hash, node, code, error, failed_at";

fn row(r: &Row<'_>) -> rusqlite::Result<FailedSpec> {
    Ok(FailedSpec {
        service: r.get(0)?,
        spec_hash: r.get(1)?,
        node: r.get(2)?,
        code: r.get(3)?,
        error: r.get(4)?,
        failed_at: from_ms(r.get(5)?),
    })
}

impl Reader<'_> {
    /// Every failed spec, by service.
    pub fn failed_specs(&self) -> Result<Vec<FailedSpec>> {
        let what = "listing failed specs";
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {COLS} FROM failed_specs ORDER BY service"))
            .map_err(sql(what))?;
        let rows = stmt.query_map([], row).map_err(sql(what))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql(what))
    }

    pub fn failed_spec(&self, service: &str) -> Result<Option<FailedSpec>> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {COLS} FROM failed_specs WHERE service = ?1"
            ))
            .and_then(|mut s| s.query_row([service], row).optional())
            .map_err(sql(format!("reading the failed spec of {service}")))
    }
}

impl Writer<'_> {
    /// Records that `f.spec_hash` of `f.service` was refused (replacing the
    /// service's previous record).
    pub fn record_failed_spec(&self, f: &FailedSpec) -> Result<()> {
        let what = format!("recording the failed spec of {}", f.service);
        self.conn
            .prepare_cached("DELETE FROM failed_specs WHERE service = ?1")
            .and_then(|mut s| s.execute([&f.service]))
            .map_err(sql(what.clone()))?;
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO failed_specs ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    f.service,
                    f.spec_hash,
                    f.node,
                    f.code,
                    f.error,
                    to_ms(f.failed_at)
                ])
            })
            .map_err(sql(what))?;
        Ok(())
    }

    /// Forgets the service's failed spec. Returns true when there was one.
    pub fn clear_failed_spec(&self, service: &str) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM failed_specs WHERE service = ?1")
            .and_then(|mut s| s.execute([service]))
            .map_err(sql(format!("clearing the failed spec of {service}")))?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::state::State;

    #[test]
    fn failed_specs_are_recorded_replaced_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(&dir.path().join("m.db")).unwrap();
        let f = FailedSpec {
            service: "mcq".into(),
            spec_hash: "h1".into(),
            node: "w1".into(),
            code: "InvalidArgument".into(),
            error: "agent w1: Deploy: InvalidArgument: bad image".into(),
            failed_at: UNIX_EPOCH + Duration::from_secs(5),
        };
        state.write(|w| w.record_failed_spec(&f)).unwrap();
        assert_eq!(
            state.read(|r| r.failed_spec("mcq")).unwrap(),
            Some(f.clone())
        );
        let g = FailedSpec {
            spec_hash: "h2".into(),
            ..f.clone()
        };
        state.write(|w| w.record_failed_spec(&g)).unwrap();
        assert_eq!(state.read(|r| r.failed_specs()).unwrap(), [g]);
        assert!(state.write(|w| w.clear_failed_spec("mcq")).unwrap());
        assert!(!state.write(|w| w.clear_failed_spec("mcq")).unwrap());
        assert!(state.read(|r| r.failed_specs()).unwrap().is_empty());
    }
}
