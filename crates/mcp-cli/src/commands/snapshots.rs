//! `mcp snapshot <svc>`, `mcp snapshot list <svc>` and `mcp restore <svc>`:
//! the master's snapshot store.

use std::process::ExitCode;

use anyhow::Result;
use mcp_proto::pb;
use serde_json::json;

use super::{block_on, block_on_progress, finish, master_client, print, print_json, Ctx};
use crate::report::{self, cell};

/// `mcp snapshot <svc>`: the master snapshots the service now (live).
pub fn snapshot_now(ctx: &Ctx<'_>, service: &str) -> Result<ExitCode> {
    let t = ctx.master()?;
    let r = block_on_progress(ctx, &format!("snapshotting {service}"), async {
        master_client(&t)
            .await?
            .create_snapshot(pb::CreateSnapshotRequest {
                service_name: service.to_string(),
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| t.rpc_error("CreateSnapshot", &s))
    })?;
    if ctx.json() {
        print_json(&json!({
            "service": service, "node": r.node, "file": r.filename, "size": r.size_bytes,
            "sha256": r.sha256, "mirror": r.mirror, "mirror_error": r.mirror_error,
            "removed": r.removed,
        }))?;
    } else {
        println!("snapshot of {service} from {}", r.node);
        println!("  file:   {}", r.filename);
        println!("  size:   {} bytes", r.size_bytes);
        println!("  sha256: {}", r.sha256);
        if !r.mirror.is_empty() {
            println!("  mirror: {} (verified)", r.mirror);
        }
        for f in &r.removed {
            println!("  removed (retention): {f}");
        }
    }
    if !r.mirror_error.is_empty() {
        eprintln!(
            "mcp: error: the snapshot is stored but not mirrored: {}",
            r.mirror_error
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `mcp snapshot list <svc>`: stored snapshots, newest first.
pub fn snapshot_list(ctx: &Ctx<'_>, service: &str) -> Result<ExitCode> {
    let t = ctx.master()?;
    let rows = block_on(async {
        master_client(&t)
            .await?
            .list_snapshots(pb::ListSnapshotsRequest {
                service_name: service.to_string(),
            })
            .await
            .map(|r| r.into_inner().snapshots)
            .map_err(|s| t.rpc_error("ListSnapshots", &s))
    })?;
    if ctx.json() {
        let v: Vec<_> = rows
            .iter()
            .map(|s| {
                json!({"service": s.service, "node": s.node, "file": s.filename,
                       "size": s.size, "created_at": s.created_at, "sha256": s.checksum})
            })
            .collect();
        print_json(&json!({ "snapshots": v }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no snapshots of {service}");
        return Ok(ExitCode::SUCCESS);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|s| {
            vec![
                s.filename.clone(),
                cell(&s.node),
                s.size.to_string(),
                cell(&s.created_at),
                cell(&s.checksum),
            ]
        })
        .collect();
    print(&report::table(
        &["FILE", "NODE", "SIZE", "CREATED", "SHA256"],
        &table,
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `mcp restore <svc> [--snapshot FILE] [--force]`: stop, import, start.
pub fn restore(
    ctx: &Ctx<'_>,
    service: &str,
    snapshot: Option<&str>,
    force: bool,
) -> Result<ExitCode> {
    let t = ctx.master()?;
    let results = block_on_progress(ctx, &format!("restoring {service}"), async {
        master_client(&t)
            .await?
            .restore(pb::RestoreRequest {
                service_name: service.to_string(),
                snapshot: snapshot.unwrap_or_default().to_string(),
                force,
            })
            .await
            .map(|r| r.into_inner().results)
            .map_err(|s| t.rpc_error("Restore", &s))
    })?;
    finish(
        ctx,
        &format!(
            "restore {service} from {}",
            snapshot.unwrap_or("the newest snapshot")
        ),
        &report::steps(&results),
        "",
        None,
    )
}
