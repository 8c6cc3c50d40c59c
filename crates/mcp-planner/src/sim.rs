//! A fleet simulator: a *fake* fleet, not the real one.
//!
//! [`apply`] executes a [`Plan`]'s ready actions against an [`Observed`]
//! value as an ideal fleet would: every action succeeds at once, agents
//! report exactly what was deployed, the master records placements, DNS
//! records, edge routes and heal attempts as the master does. Blocked
//! and refused steps are skipped.
//!
//! It exists for tests (here and in the master): "apply the plan, re-plan,
//! expect nothing left to do", and to build a converged fleet from scratch
//! ([`converge`]). It does no I/O either.

use std::collections::BTreeMap;

use mcp_spec::{spec_hash, ServiceSpec};

use crate::model::{
    AgentStatus, ComponentReport, ContainerState, Desired, Observed, Placement, ServiceReport,
    Timestamp,
};
use crate::plan::{plan, Action, HealMethod, Plan};
use crate::Policy;

/// Applies every ready action of `plan`, in order.
pub fn apply(plan: &Plan, desired: &Desired, observed: &mut Observed, now: Timestamp) {
    for action in plan.actions() {
        apply_action(action, desired, observed, now);
    }
}

/// `observed` after [`apply`].
pub fn applied(plan: &Plan, desired: &Desired, observed: &Observed, now: Timestamp) -> Observed {
    let mut o = observed.clone();
    apply(plan, desired, &mut o, now);
    o
}

/// Plans and applies until nothing is left to do (at most 4 rounds): the
/// fleet `observed` converges to under `desired`.
pub fn converge(
    desired: &Desired,
    observed: &Observed,
    policy: &Policy,
    now: Timestamp,
) -> Observed {
    let mut o = observed.clone();
    for _ in 0..4 {
        let p = plan(desired, &o, policy, now);
        if !p.has_actions() {
            break;
        }
        apply(&p, desired, &mut o, now);
    }
    o
}

/// Applies one action.
pub fn apply_action(action: &Action, desired: &Desired, o: &mut Observed, now: Timestamp) {
    match action {
        Action::Deploy {
            service,
            node,
            spec_hash,
        } => {
            if let Some(spec) = desired.services.get(service) {
                deploy(o, spec, node, spec_hash.clone(), now);
            }
        }
        Action::Undeploy { service, node } => {
            remove_from_agent(o, node, service);
            o.placements.remove(service);
        }
        Action::Start {
            service,
            node,
            spec_hash,
        }
        | Action::Stop {
            service,
            node,
            spec_hash,
        } => {
            let start = matches!(action, Action::Start { .. });
            if let (Some(spec), Some(p)) =
                (desired.services.get(service), o.placements.get_mut(service))
            {
                p.spec = Some(spec.clone());
                p.spec_hash = Some(spec_hash.clone());
            }
            if let Some(sr) = report_mut(o, node, service) {
                sr.active = start;
                sr.spec_hash.clone_from(spec_hash);
                for c in sr.components.values_mut() {
                    if c.state != ContainerState::Missing {
                        c.state = if start {
                            ContainerState::Running
                        } else {
                            ContainerState::Stopped
                        };
                    }
                }
            }
        }
        Action::Heal {
            service,
            node,
            components,
            method,
        } => {
            for c in components {
                let rec = o
                    .heal
                    .entry(service.clone())
                    .or_default()
                    .entry(c.clone())
                    .or_default();
                rec.attempts += 1;
                rec.last_attempt = now;
            }
            match method {
                HealMethod::Redeploy => {
                    if let Some(spec) = desired.services.get(service) {
                        deploy(o, spec, node, spec_hash(spec), now);
                    }
                }
                HealMethod::Start | HealMethod::Restart => {
                    if let Some(sr) = report_mut(o, node, service) {
                        for c in components {
                            if let Some(cr) = sr.components.get_mut(c) {
                                cr.state = ContainerState::Running;
                                cr.health = None;
                            }
                        }
                    }
                }
            }
        }
        Action::Alert {
            service, component, ..
        } => {
            o.heal
                .entry(service.clone())
                .or_default()
                .entry(component.clone())
                .or_default()
                .alerted = true;
        }
        Action::Migrate { service, from, to } => {
            remove_from_agent(o, from, service);
            if let Some(spec) = desired.services.get(service) {
                deploy(o, spec, to, spec_hash(spec), now);
            }
        }
        Action::SetDns { name, address } => {
            o.dns.insert(name.clone(), address.clone());
        }
        Action::RemoveDns { name } => {
            o.dns.remove(name);
        }
        Action::SetEdgeRoute {
            hostname,
            service,
            edge_node,
            backend_hostname,
            backend_port,
        } => {
            o.edge_routes.insert(
                hostname.clone(),
                crate::model::EdgeRoute {
                    service: service.clone(),
                    edge_node: edge_node.clone(),
                    backend_hostname: backend_hostname.clone(),
                    backend_port: *backend_port,
                },
            );
        }
        Action::RemoveEdgeRoute { hostname, .. } => {
            o.edge_routes.remove(hostname);
        }
    }
}

fn report_mut<'o>(o: &'o mut Observed, node: &str, service: &str) -> Option<&'o mut ServiceReport> {
    match o.agents.get_mut(node)? {
        AgentStatus::Reported { services } => services.get_mut(service),
        AgentStatus::Unreachable { .. } => None,
    }
}

fn remove_from_agent(o: &mut Observed, node: &str, service: &str) {
    let removed = match o.agents.get_mut(node) {
        Some(AgentStatus::Reported { services }) => services.remove(service),
        _ => None,
    };
    if let (Some(sr), Some(n)) = (removed, o.nodes.get_mut(node)) {
        n.containers = n.containers.saturating_sub(count(sr.components.len()));
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What an agent reports right after deploying `spec`.
pub fn report_for(spec: &ServiceSpec, hash: String) -> ServiceReport {
    let state = if spec.active {
        ContainerState::Running
    } else {
        ContainerState::Stopped
    };
    ServiceReport {
        spec_hash: hash,
        active: spec.active,
        components: spec
            .components
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    ComponentReport {
                        image: c.image.clone(),
                        version: c.version(),
                        state,
                        restarts: 0,
                        ports: BTreeMap::new(),
                        routes: Vec::new(),
                        health: None,
                        health_detail: String::new(),
                    },
                )
            })
            .collect::<BTreeMap<_, _>>(),
    }
}

fn deploy(o: &mut Observed, spec: &ServiceSpec, node: &str, hash: String, now: Timestamp) {
    remove_from_agent(o, node, &spec.name);
    let report = report_for(spec, hash.clone());
    let added = count(report.components.len());
    let status = o
        .agents
        .entry(node.to_string())
        .or_insert_with(AgentStatus::empty);
    if let AgentStatus::Reported { services } = status {
        services.insert(spec.name.clone(), report);
        if let Some(n) = o.nodes.get_mut(node) {
            n.containers = n.containers.saturating_add(added);
        }
    }
    o.placements.insert(
        spec.name.clone(),
        Placement {
            node: node.to_string(),
            tier: spec.tier,
            deployed_at: now,
            spec: Some(spec.clone()),
            spec_hash: Some(hash),
        },
    );
}
