//! DNS records and edge routes: the steps that follow a service's
//! placement (set, replace, remove stale ones), and why a repair-only entry
//! exists.
//!
//! Every step built here goes through [`Planner::network_step`]: when its
//! integration is not configured ([`crate::Integrations`]) it is skipped,
//! with the integration's reason, whatever else holds — the reason that
//! stays true until the master gets an adapter.

use mcp_spec::ServiceSpec;

use super::{Draft, Planner};
use crate::model::{NodeRole, Policy};
use crate::plan::{Action, Step};

impl Planner<'_> {
    /// `action` as a step: skipped when its integration is not configured,
    /// else blocked when `blocked` says why, else ready.
    fn network_step(&self, action: Action, blocked: Option<String>) -> Step {
        if let Some(why) = self.policy.integrations.skip_reason(&action) {
            return Step::skipped(action, why);
        }
        match blocked {
            Some(why) => Step::blocked(action, why),
            None => Step::ready(action),
        }
    }

    pub(super) fn dns(&self, d: &mut Draft, service: &str, node: &str) {
        let Some(address) = self.address(node) else {
            return;
        };
        let name = self.policy.internal_name(service);
        if self.observed.dns.get(&name).map(String::as_str) != Some(address) {
            let action = Action::SetDns {
                name,
                address: address.to_string(),
            };
            d.steps.push(self.network_step(action, None));
        }
    }

    pub(super) fn stale_dns(&self, d: &mut Draft, service: &str) {
        let name = self.policy.internal_name(service);
        if self.observed.dns.contains_key(&name) {
            d.steps
                .push(self.network_step(Action::RemoveDns { name }, None));
        }
    }

    /// Removes edge routes recorded for `service` that no desired service
    /// claims (a claimed one is replaced by its claimant's `SetEdgeRoute`).
    pub(super) fn stale_edges(&self, d: &mut Draft, service: &str) {
        let routes = self.routes_of.get(service).map_or(&[][..], Vec::as_slice);
        for (host, route) in routes {
            if !self.claims.contains_key(*host) {
                let action = Action::RemoveEdgeRoute {
                    hostname: (*host).clone(),
                    edge_node: route.edge_node.clone(),
                };
                d.steps.push(self.network_step(action, None));
            }
        }
    }

    pub(super) fn edges(&self, d: &mut Draft, spec: &ServiceSpec) {
        let name = spec.name.as_str();
        let backend_hostname = self.policy.internal_name(name);
        for (_, route) in spec.public_routes() {
            let hostname = public_hostname(self.policy, name, route.hostname.as_deref());
            let existing = self.observed.edge_routes.get(&hostname);
            let ok = existing.is_some_and(|r| {
                r.service == name
                    && r.backend_hostname == backend_hostname
                    && r.backend_port == route.port
                    && self
                        .observed
                        .nodes
                        .get(&r.edge_node)
                        .is_some_and(|n| n.role == NodeRole::Edge)
            });
            if ok {
                continue;
            }
            let keep = existing
                .map(|r| r.edge_node.as_str())
                .filter(|n| self.edges.contains(n));
            let edge_node = keep.or_else(|| self.edges.first().copied());
            let action = Action::SetEdgeRoute {
                hostname: hostname.clone(),
                service: name.to_string(),
                edge_node: edge_node.unwrap_or_default().to_string(),
                backend_hostname: backend_hostname.clone(),
                backend_port: route.port,
            };
            let claimant = self.claims.get(&hostname).copied().unwrap_or(name);
            let blocked = if claimant != name {
                Some(format!("{hostname} is also claimed by {claimant}"))
            } else if let Some(owner) = existing
                .map(|r| r.service.as_str())
                .filter(|o| self.desired.held.contains_key(*o))
            {
                Some(format!("{hostname} is routed to held service {owner}"))
            } else if edge_node.is_none() {
                Some("no healthy edge node".to_string())
            } else {
                None
            };
            d.steps.push(self.network_step(action, blocked));
        }
        self.stale_edges(d, name);
    }
}

/// Why a repair-only entry exists, from its steps.
pub(super) fn repair_reason(steps: &[Step]) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for s in steps {
        let part = match s.action {
            Action::SetDns { .. } => "DNS record missing or wrong",
            Action::RemoveDns { .. } => "stale DNS record",
            Action::SetEdgeRoute { .. } => "edge route missing or wrong",
            Action::RemoveEdgeRoute { .. } => "stale edge route",
            _ => continue,
        };
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    parts.join(", ")
}

/// The public hostname of a route: its hostname (lowercased, without a
/// trailing dot), or the internal name when it has none.
pub(super) fn public_hostname(policy: &Policy, service: &str, hostname: Option<&str>) -> String {
    match hostname {
        Some(h) => mcp_spec::names::normalize_hostname(h),
        None => policy.internal_name(service),
    }
}
