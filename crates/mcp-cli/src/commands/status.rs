//! `mcp status` and `mcp ps`: from the master, or derived from one agent's
//! report.

use std::process::ExitCode;

use anyhow::{bail, Result};
use mcp_proto::pb;
use serde_json::json;

use super::{agent_client, block_on, master_client, print, print_json, Ctx};
use crate::cli::Direct;
use crate::remote;
use crate::report::{self, cell};

/// Running when every component runs; stopped when the service is inactive
/// and nothing runs; degraded otherwise (with the components that differ).
pub(super) fn agent_service_status(s: &pb::ServiceInfo) -> (String, String) {
    let not_running: Vec<String> = s
        .components
        .iter()
        .filter(|c| c.observed_state != "running" || c.health == "unhealthy")
        .map(|c| {
            if c.observed_state == "running" {
                format!("{}: unhealthy: {}", c.name, c.health_detail)
            } else {
                format!("{}: {}", c.name, cell(&c.observed_state))
            }
        })
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
        "health": c.health, "health_detail": c.health_detail,
        "routes": c.routes.iter().map(|r| json!({
            "route": r.route, "url": r.url, "hostname": r.hostname,
            "listen_port": r.listen_port, "mode": r.mode,
            "proxy_address": r.proxy_address, "backend": r.backend,
            "host_port": host_port(&r.backend),
            "cert_serial": r.cert_serial, "cert_expires": r.cert_expires,
        })).collect::<Vec<_>>(),
    })
}

/// The port of a `host:port` backend.
fn host_port(backend: &str) -> Option<u16> {
    backend.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// ROUTE → NODE ADDRESS HOST PORT MODE CERT EXPIRES, one row per route of
/// every component of `rows`; `None` when there is none.
fn routes_table(rows: &[StatusRow]) -> Option<String> {
    let table: Vec<Vec<String>> = rows
        .iter()
        .flat_map(|r| {
            r.components.iter().flat_map(move |c| {
                c.routes.iter().map(move |x| {
                    vec![
                        x.url.clone(),
                        format!("{}/{}", r.name, c.name),
                        cell(&r.node),
                        cell(&x.proxy_address),
                        host_port(&x.backend).map_or("-".to_string(), |p| p.to_string()),
                        x.mode.clone(),
                        cell(&x.cert_expires),
                    ]
                })
            })
        })
        .collect();
    (!table.is_empty()).then(|| {
        report::table(
            &[
                "ROUTE",
                "COMPONENT",
                "NODE",
                "ADDRESS",
                "HOST PORT",
                "MODE",
                "CERT EXPIRES",
            ],
            &table,
        )
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
                    "last_snapshot": r.last_snapshot, "snapshot_stale": r.snapshot_stale,
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
    if let Some(t) = routes_table(&rows) {
        println!();
        print(&t)?;
    }
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
    /// From the master only (empty / false with `--direct`).
    last_snapshot: String,
    snapshot_stale: bool,
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
                        last_snapshot: String::new(),
                        snapshot_stale: false,
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
                    last_snapshot: s.last_snapshot,
                    snapshot_stale: s.snapshot_stale,
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

pub(super) fn components_table(service: &str, node: &str, comps: &[pb::ComponentInfo]) -> String {
    let rows: Vec<Vec<String>> = comps
        .iter()
        .map(|c| component_row(service, node, c))
        .collect();
    report::table(PS_HEADER, &rows)
}

const PS_HEADER: &[&str] = &[
    "SERVICE",
    "COMPONENT",
    "NODE",
    "IMAGE",
    "VERSION",
    "STATE",
    "HEALTH",
];

fn component_row(service: &str, node: &str, c: &pb::ComponentInfo) -> Vec<String> {
    vec![
        service.to_string(),
        c.name.clone(),
        cell(node),
        cell(&c.image),
        cell(&c.version),
        cell(&c.observed_state),
        cell(&c.health),
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
    if let Some(t) = routes_table(&rows) {
        println!();
        print(&t)?;
    }
    for o in &orphans {
        println!("orphan: {o} (not managed; left alone)");
    }
    Ok(ExitCode::SUCCESS)
}
