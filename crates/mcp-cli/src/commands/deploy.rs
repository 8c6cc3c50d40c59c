//! `mcp sync`, `mcp deploy` and `mcp undeploy`: the spec (or the whole
//! services directory) from local files to the master, or one agent.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use mcp_proto::pb;

use super::status::components_table;
use super::{agent_client, block_on, finish, master_client, print, use_color, Ctx};
use crate::cli::Direct;
use crate::files;
use crate::remote::{self, Target};
use crate::report::{self, StepLine};

fn unreadable(u: &mcp_spec::Unreadable) -> pb::UnreadableService {
    pb::UnreadableService {
        name: u.name.clone(),
        file: u.file.display().to_string(),
        errors: u.errors.iter().map(ToString::to_string).collect(),
    }
}

/// `mcp sync [--dry-run] [--services DIR] [--allow-mass-prune]
/// [--expect-commit SHA]`.
pub fn sync(
    ctx: &Ctx<'_>,
    dir: &Path,
    dry_run: bool,
    allow_mass_prune: bool,
    expect_commit: Option<&str>,
) -> Result<ExitCode> {
    let target = ctx.master()?;
    sync_to(ctx, &target, dir, dry_run, allow_mass_prune, expect_commit)
}

pub(super) fn sync_to(
    ctx: &Ctx<'_>,
    target: &Target,
    dir: &Path,
    dry_run: bool,
    allow_mass_prune: bool,
    expect_commit: Option<&str>,
) -> Result<ExitCode> {
    let loaded = mcp_spec::load_dir(dir, &mcp_spec::LoadOptions::default())
        .with_context(|| format!("reading services directory {}", dir.display()))?;
    let source = files::source_label(dir);
    sync_loaded(
        ctx,
        target,
        &loaded,
        source,
        dry_run,
        allow_mass_prune,
        expect_commit,
    )
}

/// [`sync_to`] of services already loaded (`source` labels the plan).
pub(super) fn sync_loaded(
    ctx: &Ctx<'_>,
    target: &Target,
    loaded: &mcp_spec::LoadedDir,
    source: String,
    dry_run: bool,
    allow_mass_prune: bool,
    expect_commit: Option<&str>,
) -> Result<ExitCode> {
    for u in &loaded.unreadable {
        for d in &u.errors {
            eprintln!("{d}");
        }
        eprintln!(
            "mcp: warning: {} is invalid; service {} is held (left as it is)",
            u.file.display(),
            u.name
        );
    }
    let req = pb::SyncRequest {
        services: loaded
            .services
            .values()
            .map(pb::ServiceSpec::from)
            .collect(),
        dry_run,
        allow_mass_prune,
        unreadable: loaded.unreadable.iter().map(unreadable).collect(),
        source,
        expect_commit: expect_commit.unwrap_or_default().to_string(),
    };
    let resp = block_on(async {
        let mut c = master_client(target).await?;
        c.sync(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| target.rpc_error("Sync", &s))
    })?;
    let plan: mcp_planner::Plan = serde_json::from_str(&resp.plan_json).with_context(|| {
        format!(
            "{}: Sync answered with a plan this CLI cannot read",
            target.name()
        )
    })?;
    let steps = report::steps(&resp.results);
    let r = report::sync_report(
        &plan,
        &steps,
        dry_run,
        ctx.json(),
        use_color() && !ctx.json(),
    );
    print(&r.stdout)?;
    Ok(ExitCode::from(r.code))
}

/// `mcp deploy <svc> [--component C] [--direct --node N]`: the spec from the
/// local services directory.
pub fn deploy(
    ctx: &Ctx<'_>,
    service: &str,
    component: Option<&str>,
    direct: &Direct,
) -> Result<ExitCode> {
    let node = remote::direct_node(direct)?;
    let target = match node {
        Some(n) => ctx.agent(n)?,
        None => ctx.master()?,
    };
    let spec = files::load_service(&ctx.services_dir(), service)?;
    if let Some(c) = component {
        if !spec.components.iter().any(|x| x.name == c) {
            bail!("service {service} has no component {c}");
        }
    }
    let service_pb = pb::ServiceSpec::from(&spec);
    let component = component.unwrap_or_default().to_string();
    if node.is_some() {
        let resp = block_on(async {
            let mut c = agent_client(&target).await?;
            c.deploy(pb::AgentDeployRequest {
                service: Some(service_pb),
                component,
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| target.rpc_error("Deploy", &s))
        })?;
        let steps = report::steps(&resp.results);
        let code = finish(
            ctx,
            &format!("deploy {service} on {}", target.what),
            &steps,
            "",
            None,
        )?;
        if !ctx.json() && !resp.components.is_empty() {
            print(&components_table(
                service,
                direct.node.as_deref().unwrap_or_default(),
                &resp.components,
            ))?;
        }
        return Ok(code);
    }
    let resp = block_on(async {
        let mut c = master_client(&target).await?;
        c.deploy(pb::MasterDeployRequest {
            service: Some(service_pb),
            component,
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| target.rpc_error("Deploy", &s))
    })?;
    let named = |r: &Option<pb::StepResult>, name: &str| {
        r.as_ref().map(|r| {
            let mut l = StepLine::from(r);
            if l.step.is_empty() {
                l.step = name.to_string();
            }
            l
        })
    };
    let steps: Vec<StepLine> = [
        named(&resp.deploy_result, "deploy"),
        named(&resp.dns_result, "dns"),
        named(&resp.edge_route_result, "edge route"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let title = if resp.node.is_empty() {
        format!("deploy {service}")
    } else {
        format!("deploy {service} on {}", resp.node)
    };
    finish(ctx, &title, &steps, &resp.error, Some(resp.success))
}

/// `mcp undeploy <svc>`.
pub fn undeploy(ctx: &Ctx<'_>, service: &str, direct: &Direct) -> Result<ExitCode> {
    files::check_service_name(service)?;
    match remote::direct_node(direct)? {
        Some(n) => {
            let t = ctx.agent(n)?;
            let resp = block_on(async {
                agent_client(&t)
                    .await?
                    .undeploy(pb::AgentUndeployRequest {
                        service_name: service.to_string(),
                        remove_data: false,
                    })
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| t.rpc_error("Undeploy", &s))
            })?;
            let title = format!("undeploy {service} on {} (its /srv data is kept)", t.what);
            finish(ctx, &title, &report::steps(&resp.results), "", None)
        }
        None => {
            let t = ctx.master()?;
            let resp = block_on(async {
                master_client(&t)
                    .await?
                    .undeploy(pb::MasterUndeployRequest {
                        service_name: service.to_string(),
                    })
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| t.rpc_error("Undeploy", &s))
            })?;
            let title = format!("undeploy {service} (its /srv data is kept)");
            finish(
                ctx,
                &title,
                &report::steps(&resp.results),
                &resp.error,
                Some(resp.success),
            )
        }
    }
}
