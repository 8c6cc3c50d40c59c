//! `mcp stop`, `mcp start` and `mcp restart`. Stop and start edit the
//! service file (the source of truth) unless `--direct` tells one agent.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use mcp_proto::pb;
use serde_json::json;

use super::deploy::sync_to;
use super::{agent_client, block_on, finish, master_client, print_json, Ctx};
use crate::cli::Direct;
use crate::files;
use crate::remote;
use crate::report;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Stop,
    Start,
    Restart,
}

impl Lifecycle {
    fn verb(self) -> &'static str {
        match self {
            Lifecycle::Stop => "stop",
            Lifecycle::Start => "start",
            Lifecycle::Restart => "restart",
        }
    }
}

/// The agent's Stop/Start/Restart, or the master's pass-through.
fn lifecycle_call(
    ctx: &Ctx<'_>,
    op: Lifecycle,
    service: &str,
    node: Option<&str>,
) -> Result<ExitCode> {
    let verb = op.verb();
    let (title, results) = match node {
        Some(n) => {
            let t = ctx.agent(n)?;
            let req = pb::AgentLifecycleRequest {
                service_name: service.to_string(),
                component: String::new(),
            };
            let results = block_on(async {
                let mut c = agent_client(&t).await?;
                let r = match op {
                    Lifecycle::Stop => c.stop(req).await,
                    Lifecycle::Start => c.start(req).await,
                    Lifecycle::Restart => c.restart(req).await,
                };
                r.map(|r| r.into_inner().results)
                    .map_err(|s| t.rpc_error(&capitalized(verb), &s))
            })?;
            (format!("{verb} {service} on {}", t.what), results)
        }
        None => {
            let t = ctx.master()?;
            let req = pb::ServiceLifecycleRequest {
                service_name: service.to_string(),
                component: String::new(),
            };
            let results = block_on(async {
                let mut c = master_client(&t).await?;
                let r = match op {
                    Lifecycle::Stop => c.stop_service(req).await,
                    Lifecycle::Start => c.start_service(req).await,
                    Lifecycle::Restart => c.restart_service(req).await,
                };
                r.map(|r| r.into_inner().results)
                    .map_err(|s| t.rpc_error(&format!("{}Service", capitalized(verb)), &s))
            })?;
            (format!("{verb} {service}"), results)
        }
    };
    finish(ctx, &title, &report::steps(&results), "", None)
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `mcp restart <svc> [--direct --node N]`.
pub fn restart(ctx: &Ctx<'_>, service: &str, direct: &Direct) -> Result<ExitCode> {
    files::check_service_name(service)?;
    let node = remote::direct_node(direct)?;
    lifecycle_call(ctx, Lifecycle::Restart, service, node)
}

/// `mcp stop|start <svc>`.
///
/// With `--direct --node N` only the agent is told; the file is unchanged
/// (the master will converge the service back to its file).
///
/// Otherwise the file is the source of truth: `active` is set in
/// `<dir>/<svc>.toml` (comments and layout kept, validated before the atomic
/// write), then
/// - GitOps: the services directory is in a git work tree → the file alone
///   is committed (`mcp stop <svc>`); the master, which watches the
///   repository, applies it. No network call.
/// - push mode: not a git work tree → the directory is sent with a
///   non-dry-run Sync, like `mcp sync`.
pub fn set_active(ctx: &Ctx<'_>, service: &str, active: bool, direct: &Direct) -> Result<ExitCode> {
    let op = if active {
        Lifecycle::Start
    } else {
        Lifecycle::Stop
    };
    if let Some(node) = remote::direct_node(direct)? {
        return lifecycle_call(ctx, op, service, Some(node));
    }
    let verb = op.verb();
    let dir = ctx.services_dir();
    let (path, text) = files::read_service_file(&dir, service)?;
    let file_name = format!("{service}.toml");
    let gitops = files::in_git_work_tree(&dir);
    // Push mode needs the master: find out before touching the file.
    let push_target = if gitops { None } else { Some(ctx.master()?) };
    if gitops {
        let dirty = files::git_file_status(&dir, &file_name)?;
        if !dirty.is_empty() {
            bail!(
                "{} has uncommitted changes ({dirty}); commit or discard them first, so the \
                 `mcp {verb} {service}` commit contains only this change",
                path.display()
            );
        }
    }
    if let Err(diags) = files::validate(&path, service, &text) {
        for d in &diags {
            eprintln!("{d}");
        }
        bail!(
            "{} is invalid; not changed (fix it with `mcp edit {service}`)",
            path.display()
        );
    }
    let new = files::set_active(&text, active)
        .with_context(|| format!("{} cannot be edited", path.display()))?;
    let Some(new) = new else {
        if ctx.json() {
            print_json(&json!({"file": path, "active": active, "changed": false}))?;
        } else {
            println!(
                "{} already has active = {active}; nothing to change",
                path.display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    if let Err(diags) = files::validate(&path, service, &new) {
        for d in &diags {
            eprintln!("{d}");
        }
        bail!(
            "{} is invalid; not changed (fix it with `mcp edit {service}`)",
            path.display()
        );
    }
    files::write_atomic(&path, &new)?;
    // With --output json, standard output carries only JSON: notes go to stderr.
    let note = |s: String| {
        if ctx.json() {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    };
    note(format!("{}: set active = {active}", path.display()));
    match push_target {
        None => {
            let message = format!("mcp {verb} {service}");
            let id = files::git_commit_file(&dir, &file_name, &message)
                .with_context(|| format!("{} was changed but not committed", path.display()))?;
            if ctx.json() {
                print_json(&json!({
                    "file": path, "active": active, "changed": true, "commit": id, "message": message,
                }))?;
            } else {
                println!(
                    "committed {id} \"{message}\" in {}; the master applies it from the \
                     repository (push the commit if the master watches another clone)",
                    dir.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(target) => {
            note(format!(
                "{} is not a git work tree: sending the directory to the master (push mode)",
                dir.display()
            ));
            sync_to(ctx, &target, &dir, false, false, None).with_context(|| {
                format!(
                    "{} was changed but the master was not told (run `mcp sync` later)",
                    path.display()
                )
            })
        }
    }
}
