//! The commands that talk to a daemon: through the master, or with
//! `--direct --node N` to one agent.
//!
//! Every command resolves its peer ([`remote::Target`]) and reads the local
//! files it needs before opening a connection, so configuration mistakes
//! fail fast and name what is missing. Rendering decisions that matter for
//! exit statuses live in [`crate::report`] (pure, unit-tested).

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use mcp_proto::pb;
use serde_json::json;

use crate::cli::{Direct, Output};
use crate::config::Config;
use crate::files;
use crate::remote::{self, Target};
use crate::report::{self, cell, StepLine};

/// Largest message accepted from a peer (pulled files, big statuses).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// What every command needs: the config, where it came from, the output format.
pub struct Ctx<'a> {
    pub cfg: &'a Config,
    /// The config file, for messages.
    pub label: String,
    pub output: Output,
}

impl Ctx<'_> {
    fn json(&self) -> bool {
        self.output == Output::Json
    }

    fn master(&self) -> Result<Target> {
        remote::master_target(self.cfg, &self.label)
    }

    fn agent(&self, node: &str) -> Result<Target> {
        remote::agent_target(self.cfg, &self.label, node)
    }

    fn services_dir(&self) -> PathBuf {
        self.cfg.services_dir(None)
    }
}

fn block_on<F: Future<Output = Result<T>>, T>(f: F) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}

async fn master_client(t: &Target) -> Result<remote::MasterClient> {
    Ok(remote::master(t)
        .await?
        .max_decoding_message_size(MAX_MESSAGE))
}

async fn agent_client(t: &Target) -> Result<remote::AgentClient> {
    Ok(remote::agent(t)
        .await?
        .max_decoding_message_size(MAX_MESSAGE))
}

fn print(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    print(&format!("{}\n", serde_json::to_string_pretty(v)?))
}

/// Colour only on a terminal, and never with `NO_COLOR` set (non-empty).
fn use_color() -> bool {
    use std::io::IsTerminal as _;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}

/// Prints an operation's per-step results (and error); exit 1 when a step
/// failed, `success` is false or `error` is set.
fn finish(
    ctx: &Ctx<'_>,
    title: &str,
    steps: &[StepLine],
    error: &str,
    success: Option<bool>,
) -> Result<ExitCode> {
    let (_, failed, _) = report::tally(steps);
    let ok = failed == 0 && error.is_empty() && success != Some(false);
    if ctx.json() {
        print_json(&json!({"operation": title, "success": ok, "error": error, "results": steps}))?;
    } else {
        println!("{title}");
        print(&report::render_steps(steps))?;
        if !error.is_empty() {
            eprintln!("mcp: error: {error}");
        } else if !ok {
            eprintln!("mcp: error: {title}: failed");
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

// ---------------------------------------------------------------------------
// sync
// ---------------------------------------------------------------------------

fn unreadable(u: &mcp_spec::Unreadable) -> pb::UnreadableService {
    pb::UnreadableService {
        name: u.name.clone(),
        file: u.file.display().to_string(),
        errors: u.errors.iter().map(ToString::to_string).collect(),
    }
}

/// `mcp sync [--dry-run] [--services DIR] [--allow-mass-prune]`.
pub fn sync(ctx: &Ctx<'_>, dir: &Path, dry_run: bool, allow_mass_prune: bool) -> Result<ExitCode> {
    let target = ctx.master()?;
    sync_to(ctx, &target, dir, dry_run, allow_mass_prune)
}

fn sync_to(
    ctx: &Ctx<'_>,
    target: &Target,
    dir: &Path,
    dry_run: bool,
    allow_mass_prune: bool,
) -> Result<ExitCode> {
    let loaded = mcp_spec::load_dir(dir, &mcp_spec::LoadOptions::default())
        .with_context(|| format!("reading services directory {}", dir.display()))?;
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
        source: files::source_label(dir),
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
    Ok(code(r.code))
}

// ---------------------------------------------------------------------------
// deploy, undeploy, restart, stop, start
// ---------------------------------------------------------------------------

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
            sync_to(ctx, &target, &dir, false, false).with_context(|| {
                format!(
                    "{} was changed but the master was not told (run `mcp sync` later)",
                    path.display()
                )
            })
        }
    }
}

// ---------------------------------------------------------------------------
// status, ps
// ---------------------------------------------------------------------------

/// Running when every component runs; stopped when the service is inactive
/// and nothing runs; degraded otherwise (with the components that differ).
fn agent_service_status(s: &pb::ServiceInfo) -> (String, String) {
    let not_running: Vec<String> = s
        .components
        .iter()
        .filter(|c| c.observed_state != "running")
        .map(|c| format!("{}: {}", c.name, cell(&c.observed_state)))
        .collect();
    let any_running = not_running.len() < s.components.len();
    if !s.active && !any_running {
        ("stopped".to_string(), String::new())
    } else if s.active && not_running.is_empty() && !s.components.is_empty() {
        ("running".to_string(), String::new())
    } else if !s.active {
        (
            "degraded".to_string(),
            "inactive but still running".to_string(),
        )
    } else {
        ("degraded".to_string(), not_running.join(", "))
    }
}

fn component_json(c: &pb::ComponentInfo) -> serde_json::Value {
    json!({
        "name": c.name, "image": c.image, "version": c.version,
        "desired_state": c.desired_state, "observed_state": c.observed_state,
        "restart_count": c.restart_count, "started": c.started, "ports": c.ports,
    })
}

/// `mcp status [svc] [--direct --node N]`: NAME NODE TIER STATUS DETAIL.
pub fn status(ctx: &Ctx<'_>, service: Option<&str>, direct: &Direct) -> Result<ExitCode> {
    let rows = fetch_status(ctx, service, direct)?;
    if let Some(s) = service {
        if !rows.iter().any(|r| r.name == s) {
            bail!("service {s}: not known to the {}", source_name(direct));
        }
    }
    if ctx.json() {
        let v: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "name": r.name, "node": r.node, "tier": r.tier, "status": r.status,
                    "detail": r.detail,
                    "edge_routes": r.edge_routes.iter().map(|e| json!({
                        "hostname": e.hostname, "edge_node": e.edge_node, "cert_expires": e.cert_expires,
                    })).collect::<Vec<_>>(),
                    "components": r.components.iter().map(component_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        print_json(&json!({ "services": v }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no services");
        return Ok(ExitCode::SUCCESS);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                cell(&r.node),
                cell(&r.tier),
                cell(&r.status),
                cell(&r.detail),
            ]
        })
        .collect();
    print(&report::table(
        &["NAME", "NODE", "TIER", "STATUS", "DETAIL"],
        &table,
    ))?;
    let edges: Vec<Vec<String>> = rows
        .iter()
        .flat_map(|r| {
            r.edge_routes.iter().map(|e| {
                vec![
                    e.hostname.clone(),
                    r.name.clone(),
                    cell(&e.edge_node),
                    cell(&e.cert_expires),
                ]
            })
        })
        .collect();
    if !edges.is_empty() {
        println!();
        print(&report::table(
            &["EDGE ROUTE", "SERVICE", "EDGE NODE", "CERT EXPIRES"],
            &edges,
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn source_name(direct: &Direct) -> String {
    match (&direct.direct, &direct.node) {
        (true, Some(n)) => format!("agent {n}"),
        _ => "master".to_string(),
    }
}

/// One service's status, from the master or derived from an agent's report.
struct StatusRow {
    name: String,
    node: String,
    tier: String,
    status: String,
    detail: String,
    edge_routes: Vec<pb::EdgeRouteStatus>,
    components: Vec<pb::ComponentInfo>,
}

fn fetch_status(ctx: &Ctx<'_>, service: Option<&str>, direct: &Direct) -> Result<Vec<StatusRow>> {
    match remote::direct_node(direct)? {
        Some(n) => {
            let (services, _) = list_services(ctx, n)?;
            Ok(services
                .into_iter()
                .filter(|s| service.is_none_or(|x| x == s.name))
                .map(|s| {
                    let (status, detail) = agent_service_status(&s);
                    StatusRow {
                        name: s.name,
                        node: n.to_string(),
                        tier: s.tier,
                        status,
                        detail,
                        edge_routes: Vec::new(),
                        components: s.components,
                    }
                })
                .collect())
        }
        None => {
            let t = ctx.master()?;
            let resp = block_on(async {
                master_client(&t)
                    .await?
                    .status(pb::StatusRequest {
                        service_name: service.unwrap_or_default().to_string(),
                    })
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| t.rpc_error("Status", &s))
            })?;
            Ok(resp
                .services
                .into_iter()
                .map(|s| StatusRow {
                    name: s.name,
                    node: s.node,
                    tier: s.tier,
                    status: s.status,
                    detail: s.detail,
                    edge_routes: s.edge_routes,
                    components: s.components,
                })
                .collect())
        }
    }
}

fn list_services(ctx: &Ctx<'_>, node: &str) -> Result<(Vec<pb::ServiceInfo>, Vec<String>)> {
    let t = ctx.agent(node)?;
    let resp = block_on(async {
        agent_client(&t)
            .await?
            .list_services(pb::ListServicesRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| t.rpc_error("ListServices", &s))
    })?;
    Ok((resp.services, resp.orphans))
}

fn components_table(service: &str, node: &str, comps: &[pb::ComponentInfo]) -> String {
    let rows: Vec<Vec<String>> = comps
        .iter()
        .map(|c| component_row(service, node, c))
        .collect();
    report::table(PS_HEADER, &rows)
}

const PS_HEADER: &[&str] = &["SERVICE", "COMPONENT", "NODE", "IMAGE", "VERSION", "STATE"];

fn component_row(service: &str, node: &str, c: &pb::ComponentInfo) -> Vec<String> {
    vec![
        service.to_string(),
        c.name.clone(),
        cell(node),
        cell(&c.image),
        cell(&c.version),
        cell(&c.observed_state),
    ]
}

/// `mcp ps [--direct --node N]`: one row per component.
pub fn ps(ctx: &Ctx<'_>, direct: &Direct) -> Result<ExitCode> {
    let rows = fetch_status(ctx, None, direct)?;
    let orphans = match remote::direct_node(direct)? {
        Some(n) => list_services(ctx, n)?.1,
        None => Vec::new(),
    };
    if ctx.json() {
        let v: Vec<_> = rows
            .iter()
            .flat_map(|r| {
                r.components.iter().map(|c| {
                    let mut j = component_json(c);
                    j["service"] = json!(r.name);
                    j["node"] = json!(r.node);
                    j
                })
            })
            .collect();
        print_json(&json!({"components": v, "orphans": orphans}))?;
        return Ok(ExitCode::SUCCESS);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .flat_map(|r| {
            r.components
                .iter()
                .map(|c| component_row(&r.name, &r.node, c))
        })
        .collect();
    if table.is_empty() {
        println!("no containers");
    } else {
        print(&report::table(PS_HEADER, &table))?;
    }
    for o in &orphans {
        println!("orphan: {o} (not managed; left alone)");
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------
// logs, events
// ---------------------------------------------------------------------------

/// `mcp logs <svc> [-f] [--component C] [--direct --node N]`: streamed;
/// container stderr goes to standard error. Without `--component` each line
/// is prefixed with its component. JSON: one object per line.
pub fn logs(
    ctx: &Ctx<'_>,
    service: &str,
    follow: bool,
    component: Option<&str>,
    direct: &Direct,
) -> Result<ExitCode> {
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
                    since: String::new(),
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
                    since: String::new(),
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

/// `mcp events [svc] [--direct --node N]`.
pub fn events(ctx: &Ctx<'_>, service: Option<&str>, direct: &Direct) -> Result<ExitCode> {
    let name = service.unwrap_or_default().to_string();
    let events = match remote::direct_node(direct)? {
        Some(n) => {
            let t = ctx.agent(n)?;
            block_on(async {
                agent_client(&t)
                    .await?
                    .events(pb::EventsRequest {
                        service_name: name,
                        component: String::new(),
                        since: String::new(),
                        limit: 0,
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
                        since: String::new(),
                        limit: 0,
                    })
                    .await
                    .map(|r| r.into_inner().events)
                    .map_err(|s| t.rpc_error("ServiceEvents", &s))
            })?
        }
    };
    if ctx.json() {
        let v: Vec<_> = events
            .iter()
            .map(|e| {
                json!({"timestamp": e.timestamp, "node": e.node, "service": e.service,
                       "component": e.component, "kind": e.kind,
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
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                cell(&e.timestamp),
                cell(&e.node),
                cell(&e.service),
                cell(&e.component),
                cell(&e.kind),
                format!("{} -> {}", cell(&e.prev_state), cell(&e.new_state)),
            ]
        })
        .collect();
    print(&report::table(
        &["TIME", "NODE", "SERVICE", "COMPONENT", "KIND", "CHANGE"],
        &rows,
    ))?;
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------
// node list
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// adopt, push, pull (one agent)
// ---------------------------------------------------------------------------

fn only_direct<'a>(what: &str, direct: &'a Direct) -> Result<&'a str> {
    match remote::direct_node(direct)? {
        Some(n) => Ok(n),
        None => bail!(
            "`mcp {what}` talks to one agent: use --direct --node N (the master has no {what} call)"
        ),
    }
}

/// `mcp adopt <svc> --direct --node N`.
pub fn adopt(ctx: &Ctx<'_>, service: &str, direct: &Direct) -> Result<ExitCode> {
    let node = only_direct("adopt", direct)?;
    files::check_service_name(service)?;
    let t = ctx.agent(node)?;
    let resp = block_on(async {
        agent_client(&t)
            .await?
            .adopt(pb::AdoptRequest {
                service: service.to_string(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| t.rpc_error("Adopt", &s))
    })?;
    finish(
        ctx,
        &format!("adopt {service} on {}", t.what),
        &report::steps(&resp.results),
        "",
        None,
    )
}

/// `mcp push <file> <svc> <path> --direct --node N`: the file's bytes and
/// permission bits to `/srv/<svc>/<path>` on the agent.
pub fn push(
    ctx: &Ctx<'_>,
    file: &Path,
    service: &str,
    path: &str,
    direct: &Direct,
) -> Result<ExitCode> {
    use std::os::unix::fs::PermissionsExt as _;
    let node = only_direct("push", direct)?;
    let t = ctx.agent(node)?;
    let content = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let mode = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .permissions()
        .mode()
        & 0o7777;
    let size = content.len();
    let resp = block_on(async {
        agent_client(&t)
            .await?
            .push_file(pb::PushFileRequest {
                service: service.to_string(),
                path: path.to_string(),
                content,
                mode,
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| t.rpc_error("PushFile", &s))
    })?;
    if !resp.success {
        let why = if resp.error.is_empty() {
            "refused"
        } else {
            &resp.error
        };
        bail!(
            "{}: push {} to /srv/{service}/{path}: {why}",
            t.name(),
            file.display()
        );
    }
    if ctx.json() {
        print_json(
            &json!({"node": node, "service": service, "path": path, "bytes": size, "mode": format!("{mode:o}")}),
        )?;
    } else {
        println!(
            "pushed {} ({size} bytes, mode {mode:o}) to /srv/{service}/{path} on {node}",
            file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `mcp pull <svc> <path> <dest> --direct --node N`: written atomically with
/// the returned mode; a directory `dest` receives the file under its name.
pub fn pull(
    ctx: &Ctx<'_>,
    service: &str,
    path: &str,
    dest: &Path,
    direct: &Direct,
) -> Result<ExitCode> {
    let node = only_direct("pull", direct)?;
    let t = ctx.agent(node)?;
    let dest = if dest.is_dir() {
        let name = Path::new(path)
            .file_name()
            .with_context(|| format!("{path} has no file name to put in {}", dest.display()))?;
        dest.join(name)
    } else {
        dest.to_path_buf()
    };
    let resp = block_on(async {
        agent_client(&t)
            .await?
            .pull_file(pb::PullFileRequest {
                service: service.to_string(),
                path: path.to_string(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| t.rpc_error("PullFile", &s))
    })?;
    if !resp.error.is_empty() {
        bail!("{}: pull /srv/{service}/{path}: {}", t.name(), resp.error);
    }
    files::write_atomic_mode(&dest, &resp.content, resp.mode)?;
    let size = resp.content.len();
    if ctx.json() {
        print_json(
            &json!({"node": node, "service": service, "path": path, "dest": dest, "bytes": size}),
        )?;
    } else {
        println!(
            "pulled /srv/{service}/{path} from {node} to {} ({size} bytes)",
            dest.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(name: &str, state: &str) -> pb::ComponentInfo {
        pb::ComponentInfo {
            name: name.to_string(),
            observed_state: state.to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn agent_status_is_derived_from_components() {
        let svc = |active, comps| pb::ServiceInfo {
            name: "s".to_string(),
            active,
            components: comps,
            ..Default::default()
        };
        let st = |s: &pb::ServiceInfo| agent_service_status(s).0;
        assert_eq!(st(&svc(true, vec![comp("a", "running")])), "running");
        assert_eq!(st(&svc(false, vec![comp("a", "stopped")])), "stopped");
        let (s, d) =
            agent_service_status(&svc(true, vec![comp("a", "running"), comp("b", "exited")]));
        assert_eq!((s.as_str(), d.as_str()), ("degraded", "b: exited"));
        assert_eq!(st(&svc(false, vec![comp("a", "running")])), "degraded");
    }
}
