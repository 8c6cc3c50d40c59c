//! `deploy_outcomes`: how each spec of a service fared when the master
//! deployed it — `deployed` (the agent's deploy succeeded, health checks
//! included), `failed` (refused as such) or `rolled_back` (its health
//! check failed and the agent brought the previous spec back). One row per
//! (service, spec hash), the latest; `mcp history` matches them to the
//! commits of the service's file and `mcp rollback` picks the last
//! `deployed` one.

use std::time::SystemTime;

use rusqlite::{params, Row};

use super::records::{from_ms, to_ms};
use super::{sql, Reader, Result, Writer};

/// What became of a deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Deployed,
    Failed,
    RolledBack,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deployed => "deployed",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled_back",
        }
    }

    fn parse(s: &str) -> Outcome {
        match s {
            "deployed" => Outcome::Deployed,
            "rolled_back" => Outcome::RolledBack,
            _ => Outcome::Failed,
        }
    }
}

/// A row of `deploy_outcomes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployOutcome {
    pub service: String,
    pub spec_hash: String,
    pub outcome: Outcome,
    pub node: String,
    /// The agent's answer for a failure; empty for a deploy.
    pub detail: String,
    pub at: SystemTime,
}

const COLS: &str = "service, spec_hash, outcome, node, detail, at";

fn row(r: &Row<'_>) -> rusqlite::Result<DeployOutcome> {
    Ok(DeployOutcome {
        service: r.get(0)?,
        spec_hash: r.get(1)?,
        outcome: Outcome::parse(&r.get::<_, String>(2)?),
        node: r.get(3)?,
        detail: r.get(4)?,
        at: from_ms(r.get(5)?),
    })
}

impl Reader<'_> {
    /// The outcomes of `service`'s specs, the most recent first.
    pub fn deploy_outcomes(&self, service: &str) -> Result<Vec<DeployOutcome>> {
        let what = format!("listing the deploy outcomes of {service}");
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLS} FROM deploy_outcomes WHERE service = ?1 ORDER BY at DESC, spec_hash"
            ))
            .map_err(sql(what.clone()))?;
        let rows = stmt.query_map([service], row).map_err(sql(what.clone()))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql(what))
    }
}

impl Writer<'_> {
    /// Records `o` (replacing an earlier outcome of the same spec).
    pub fn record_deploy_outcome(&self, o: &DeployOutcome) -> Result<()> {
        self.conn
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO deploy_outcomes ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    o.service,
                    o.spec_hash,
                    o.outcome.as_str(),
                    o.node,
                    o.detail,
                    to_ms(o.at)
                ])
            })
            .map_err(sql(format!("recording a deploy outcome of {}", o.service)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::state::State;

    #[test]
    fn the_latest_outcome_per_spec_is_kept_most_recent_first() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(&dir.path().join("m.db")).unwrap();
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        let o = |hash: &str, outcome, t| DeployOutcome {
            service: "mcq".into(),
            spec_hash: hash.into(),
            outcome,
            node: "w1".into(),
            detail: String::new(),
            at: at(t),
        };
        for x in [
            o("aaa", Outcome::Deployed, 10),
            o("bbb", Outcome::RolledBack, 20),
            o("aaa", Outcome::Deployed, 30),
        ] {
            state.write(|w| w.record_deploy_outcome(&x)).unwrap();
        }
        let got = state.read(|r| r.deploy_outcomes("mcq")).unwrap();
        assert_eq!(
            got,
            [
                o("aaa", Outcome::Deployed, 30),
                o("bbb", Outcome::RolledBack, 20)
            ]
        );
        assert!(state
            .read(|r| r.deploy_outcomes("other"))
            .unwrap()
            .is_empty());
    }
}
