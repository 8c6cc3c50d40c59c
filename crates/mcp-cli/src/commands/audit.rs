//! `mcp audit`: who called what on the master, when, with what outcome
//! (the master's audit table, through `ListAudit`).

use std::process::ExitCode;

use anyhow::Result;
use mcp_proto::pb;
use serde_json::json;

use super::{block_on, master_client, print, print_json, since_arg, Ctx};
use crate::report;

/// `mcp audit [--since T] [--caller C] [--limit N]`: the newest `limit`
/// calls (since `T`, by `C`), oldest first.
pub fn audit(
    ctx: &Ctx<'_>,
    since: Option<&str>,
    caller: Option<&str>,
    limit: u32,
) -> Result<ExitCode> {
    let since = since_arg(since)?;
    let t = ctx.master()?;
    let rows = block_on(async {
        master_client(&t)
            .await?
            .list_audit(pb::ListAuditRequest {
                since,
                caller: caller.unwrap_or_default().to_string(),
                limit,
            })
            .await
            .map(|r| r.into_inner().rows)
            .map_err(|s| t.rpc_error("ListAudit", &s))
    })?;
    if ctx.json() {
        let v: Vec<_> = rows
            .iter()
            .map(|a| {
                json!({"time": a.time, "caller": a.caller, "class": a.class,
                       "method": a.method, "target": a.target, "outcome": a.outcome,
                       "duration_ms": a.duration_ms})
            })
            .collect();
        print_json(&json!({ "audit": v }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no audited calls");
        return Ok(ExitCode::SUCCESS);
    }
    print(&report::audit_table(&rows))?;
    Ok(ExitCode::SUCCESS)
}
