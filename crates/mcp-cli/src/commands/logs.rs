//! `mcp logs` (streamed container output) and `mcp events` (what happened
//! to a service's containers: state changes and operations).

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Result;
use mcp_proto::pb;
use serde_json::json;

use super::{agent_client, block_on, master_client, print, print_json, since_arg, Ctx};
use crate::cli::Direct;
use crate::remote;
use crate::report;

/// `mcp logs <svc> [-f] [--component C] [--since T] [--direct --node N]`:
/// streamed; container stderr goes to standard error. Without
/// `--component` each line is prefixed with its component. JSON: one
/// object per line.
pub fn logs(
    ctx: &Ctx<'_>,
    service: &str,
    follow: bool,
    component: Option<&str>,
    since: Option<&str>,
    direct: &Direct,
) -> Result<ExitCode> {
    let since = since_arg(since)?;
    let node = remote::direct_node(direct)?;
    let t = match node {
        Some(n) => ctx.agent(n)?,
        None => ctx.master()?,
    };
    let comp = component.unwrap_or_default().to_string();
    let prefix = component.is_none();
    let json = ctx.json();
    block_on(async {
        let mut stream = match node {
            Some(_) => agent_client(&t)
                .await?
                .logs(pb::LogsRequest {
                    service_name: service.to_string(),
                    component: comp,
                    follow,
                    tail: 0,
                    since,
                })
                .await
                .map_err(|s| t.rpc_error("Logs", &s))?
                .into_inner(),
            None => master_client(&t)
                .await?
                .service_logs(pb::ServiceLogsRequest {
                    service_name: service.to_string(),
                    component: comp,
                    follow,
                    tail: 0,
                    since,
                })
                .await
                .map_err(|s| t.rpc_error("ServiceLogs", &s))?
                .into_inner(),
        };
        while let Some(line) = stream
            .message()
            .await
            .map_err(|s| t.rpc_error("logs stream", &s))?
        {
            let text = if json {
                json!({"component": line.component, "stream": line.stream, "line": line.line})
                    .to_string()
            } else if prefix {
                format!("[{}] {}", line.component, line.line)
            } else {
                line.line
            };
            if line.stream == "stderr" && !json {
                eprintln!("{text}");
            } else {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{text}")?;
                out.flush()?;
            }
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `mcp events [svc] [--limit N] [--since T] [--direct --node N]`: at most
/// `limit` events (the daemons' order: oldest first).
pub fn events(
    ctx: &Ctx<'_>,
    service: Option<&str>,
    limit: u32,
    since: Option<&str>,
    direct: &Direct,
) -> Result<ExitCode> {
    let since = since_arg(since)?;
    let name = service.unwrap_or_default().to_string();
    let mut events = match remote::direct_node(direct)? {
        Some(n) => {
            let t = ctx.agent(n)?;
            block_on(async {
                agent_client(&t)
                    .await?
                    .events(pb::EventsRequest {
                        service_name: name,
                        component: String::new(),
                        since,
                        limit,
                    })
                    .await
                    .map(|r| r.into_inner().events)
                    .map_err(|s| t.rpc_error("Events", &s))
            })?
        }
        None => {
            let t = ctx.master()?;
            block_on(async {
                master_client(&t)
                    .await?
                    .service_events(pb::ServiceEventsRequest {
                        service_name: name,
                        since,
                        limit,
                    })
                    .await
                    .map(|r| r.into_inner().events)
                    .map_err(|s| t.rpc_error("ServiceEvents", &s))
            })?
        }
    };
    // A peer that ignores the limit (older daemons): keep the newest.
    let keep = usize::try_from(limit).unwrap_or(usize::MAX);
    if events.len() > keep {
        events.drain(..events.len() - keep);
    }
    if ctx.json() {
        let v: Vec<_> = events
            .iter()
            .map(|e| {
                json!({"timestamp": e.timestamp, "node": e.node, "service": e.service,
                       "component": e.component, "kind": e.kind, "detail": e.detail,
                       "prev_state": e.prev_state, "new_state": e.new_state})
            })
            .collect();
        print_json(&json!({ "events": v }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if events.is_empty() {
        println!("no events");
        return Ok(ExitCode::SUCCESS);
    }
    print(&report::events_table(&events))?;
    Ok(ExitCode::SUCCESS)
}
