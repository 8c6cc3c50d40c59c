//! `mcp node list`: the master's registry, or the CLI config's nodes;
//! `mcp node forget`: the master forgets a node.

use std::process::ExitCode;

use anyhow::Result;
use mcp_proto::pb;
use serde_json::json;

use super::{block_on, finish, master_client, print, print_json, Ctx};
use crate::report::{self, cell};

/// `mcp node list`: the master's registry when `[master]` is configured;
/// otherwise the CLI config's `[[nodes]]`. When the master cannot be asked,
/// the config listing is still printed, the reason goes to standard error,
/// and the exit status is 1.
pub fn node_list(ctx: &Ctx<'_>) -> Result<ExitCode> {
    if ctx.cfg.master.is_none() {
        crate::nodes::list(ctx.cfg, ctx.json())?;
        if !ctx.json() {
            println!(
                "(from the CLI config: no [master] address in {}, so no live node health)",
                ctx.label
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let fetched = ctx.master().and_then(|t| {
        block_on(async {
            master_client(&t)
                .await?
                .list_nodes(pb::ListNodesRequest {})
                .await
                .map(|r| r.into_inner().nodes)
                .map_err(|s| t.rpc_error("ListNodes", &s))
        })
    });
    let nodes = match fetched {
        Ok(n) => n,
        Err(e) => {
            crate::nodes::list(ctx.cfg, ctx.json())?;
            eprintln!("mcp: error: could not ask the master for its nodes (listing the CLI config instead): {e:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if ctx.json() {
        let v: Vec<_> = nodes
            .iter()
            .map(|n| {
                json!({"name": n.name, "role": n.role, "address": n.address, "arch": n.arch,
                       "status": n.status, "containers": n.containers,
                       "last_heartbeat": n.last_heartbeat})
            })
            .collect();
        print_json(&json!({ "nodes": v }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if nodes.is_empty() {
        println!("no nodes registered with the master");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                cell(&n.role),
                cell(&n.address),
                cell(&n.arch),
                cell(&n.status),
                n.containers.to_string(),
                cell(&n.last_heartbeat),
            ]
        })
        .collect();
    print(&report::table(
        &[
            "NAME",
            "ROLE",
            "ADDRESS",
            "ARCH",
            "STATUS",
            "CONTAINERS",
            "LAST HEARTBEAT",
        ],
        &rows,
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `mcp node forget <node> [--force]`: the master's `ForgetNode`.
pub fn node_forget(ctx: &Ctx<'_>, node: &str, force: bool) -> Result<ExitCode> {
    let t = ctx.master()?;
    let results = block_on(async {
        master_client(&t)
            .await?
            .forget_node(pb::ForgetNodeRequest {
                node: node.to_string(),
                force,
            })
            .await
            .map(|r| r.into_inner().results)
            .map_err(|s| t.rpc_error("ForgetNode", &s))
    })?;
    finish(
        ctx,
        &format!("forget node {node}"),
        &report::steps(&results),
        "",
        None,
    )
}
