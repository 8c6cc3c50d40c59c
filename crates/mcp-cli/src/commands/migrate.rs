//! `mcp migrate <svc> --to N [--force]` and `mcp migrate --all --from A
//! --to B`: the master moves the services and their data (each step
//! reported); then a pinned service's file gets its new `node` (comments
//! kept) and, in a git work tree, that change alone is committed, so
//! GitOps does not move it back.

use std::process::ExitCode;

use anyhow::{Context, Result};
use mcp_proto::pb;

use super::{block_on_progress, finish, master_client, Ctx};
use crate::cli::MigrateArgs;
use crate::files;
use crate::report;

pub fn migrate(ctx: &Ctx<'_>, a: &MigrateArgs) -> Result<ExitCode> {
    if a.all && a.service.is_some() {
        anyhow::bail!("mcp migrate: --all moves every service of --from; do not name a service");
    }
    let t = ctx.master()?;
    let req = pb::MigrateRequest {
        service_name: a.service.clone().unwrap_or_default(),
        target_node: a.to.clone(),
        force: a.force,
        all: a.all,
        source_node: a.from.clone().unwrap_or_default(),
    };
    let what = match &a.service {
        Some(s) => format!("migrating {s} to {}", a.to),
        None => format!("migrating every service to {}", a.to),
    };
    let results = block_on_progress(ctx, &what, async {
        master_client(&t)
            .await?
            .migrate(req)
            .await
            .map(|r| r.into_inner().results)
            .map_err(|s| t.rpc_error("Migrate", &s))
    })?;
    let title = match (&a.service, &a.from) {
        (Some(s), _) => format!("migrate {s} to {}", a.to),
        (None, Some(f)) => format!("migrate every service from {f} to {}", a.to),
        (None, None) => format!("migrate to {}", a.to),
    };
    let mut steps = report::steps(&results);
    // Services whose placement moved: "placement of <svc>" succeeded.
    let moved: Vec<String> = results
        .iter()
        .filter(|r| r.status == pb::StepStatus::Succeeded as i32)
        .filter_map(|r| r.step.strip_prefix("placement of "))
        .map(str::to_string)
        .collect();
    let mut error = String::new();
    for svc in &moved {
        match repin(ctx, svc, &a.to) {
            Ok(Some(line)) => steps.push(report::StepLine {
                step: format!("pin {svc}"),
                outcome: report::Outcome::Ok,
                error: String::new(),
                detail: line,
            }),
            Ok(None) => {}
            Err(e) => {
                error = format!("{svc} moved, but its file was not updated: {e:#}");
                steps.push(report::StepLine {
                    step: format!("pin {svc}"),
                    outcome: report::Outcome::Failed,
                    error: format!("{e:#}"),
                    detail: String::new(),
                });
            }
        }
    }
    finish(ctx, &title, &steps, &error, None)
}

/// A pinned service's file says `node = "<to>"` now: written, and
/// committed alone in a git work tree. `None`: not pinned (or no file).
fn repin(ctx: &Ctx<'_>, service: &str, to: &str) -> Result<Option<String>> {
    let dir = ctx.services_dir();
    let Ok((path, text)) = files::read_service_file(&dir, service) else {
        return Ok(None);
    };
    let Some(new) = files::set_node(&text, to)
        .with_context(|| format!("{} cannot be edited", path.display()))?
    else {
        return Ok(None);
    };
    files::write_atomic(&path, &new)?;
    let file = format!("{service}.toml");
    if !files::in_git_work_tree(&dir) {
        return Ok(Some(format!(
            "{}: node = \"{to}\" (not a git work tree: send it with `mcp sync`)",
            path.display()
        )));
    }
    let message = format!("mcp migrate {service} --to {to}");
    let id = files::git_commit_file(&dir, &file, &message)
        .with_context(|| format!("{} was changed but not committed", path.display()))?;
    Ok(Some(format!(
        "{}: node = \"{to}\", committed {id} \"{message}\" (push it if the master watches another clone)",
        path.display()
    )))
}
