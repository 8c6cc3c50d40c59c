//! The plan: its types ([`Plan`], [`Entry`], [`Kind`], [`Step`], [`Action`],
//! [`Note`]) and the pure function that computes it, [`plan`].
//!
//! One concern per file:
//!
//! - `types`: the output types (re-exported here, so `mcp_planner::plan::*`
//!   names them).
//! - this file: [`plan`] itself, the planner's state, the order of entries,
//!   fleet-level notes (orphans, unavailable nodes) and the node helpers.
//! - `rules`: what happens to one service: placement, update, start / stop,
//!   self-heal with back-off, migration, prune and the mass-deletion guard.
//! - `network`: the DNS record and edge route steps that follow a service.

use std::collections::{BTreeMap, BTreeSet};

use mcp_spec::{ServiceSpec, Tier};

use crate::model::{
    AgentStatus, Desired, EdgeRoute, NodeHealth, NodeRole, Observed, Policy, ServiceReport,
    Timestamp,
};

mod network;
mod rules;
mod types;

pub use types::*;

use network::public_hostname;

/// Computes the plan that takes `observed` to `desired` under `policy`, at
/// time `now`. Pure and total: no I/O, no clock, no randomness, no panics;
/// equal inputs give equal plans.
pub fn plan(desired: &Desired, observed: &Observed, policy: &Policy, now: Timestamp) -> Plan {
    Planner::new(desired, observed, policy, now).run()
}

struct Planner<'a> {
    desired: &'a Desired,
    observed: &'a Observed,
    policy: &'a Policy,
    now: Timestamp,
    /// Containers per node, counting what this plan places.
    load: BTreeMap<&'a str, u64>,
    /// Usable worker nodes by (load, name): the least loaded first. Kept in
    /// step with `load` by [`Planner::add_load`], so placing a service costs
    /// a lookup, not a scan of the fleet.
    workers: BTreeSet<(u64, &'a str)>,
    /// The first usable master node, by name.
    master: Option<&'a str>,
    /// Services some agent reports but that have no placement → the nodes
    /// whose agents report them, by name.
    unplaced: BTreeMap<&'a str, Vec<&'a str>>,
    /// Public hostname → the desired service that gets it (first by name).
    claims: BTreeMap<String, &'a str>,
    /// Healthy, reachable edge nodes, by name.
    edges: Vec<&'a str>,
    prune_refused: Option<String>,
    /// Observed edge routes by the service they belong to.
    routes_of: BTreeMap<&'a str, Vec<(&'a String, &'a EdgeRoute)>>,
}

/// How an entry is being built.
struct Draft {
    kind: Option<Kind>,
    node: Option<String>,
    reason: String,
    details: Vec<String>,
    steps: Vec<Step>,
    change: Option<SpecChange>,
}

impl Draft {
    fn new() -> Draft {
        Draft {
            kind: None,
            node: None,
            reason: String::new(),
            details: Vec::new(),
            steps: Vec::new(),
            change: None,
        }
    }

    fn set(&mut self, kind: Kind, reason: impl Into<String>) {
        self.kind = Some(kind);
        self.reason = reason.into();
    }

    /// Blocks every step for `why`, except skipped ones (their integration
    /// is missing whatever happens).
    fn block_all(&mut self, why: &str) {
        for s in &mut self.steps {
            if s.skipped_reason().is_none() {
                s.state = StepState::Blocked(why.to_string());
            }
        }
    }
}

impl<'a> Planner<'a> {
    fn new(
        desired: &'a Desired,
        observed: &'a Observed,
        policy: &'a Policy,
        now: Timestamp,
    ) -> Self {
        let load = observed
            .nodes
            .iter()
            .map(|(n, node)| (n.as_str(), u64::from(node.containers)))
            .collect();
        let mut claims = BTreeMap::new();
        for (name, spec) in &desired.services {
            if desired.held.contains_key(name) {
                continue;
            }
            for (_, route) in spec.public_routes() {
                let host = public_hostname(policy, name, route.hostname.as_deref());
                claims.entry(host).or_insert(name.as_str());
            }
        }
        let mut unplaced: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (node, status) in &observed.agents {
            for svc in status.services().into_iter().flat_map(BTreeMap::keys) {
                if !observed.placements.contains_key(svc) {
                    unplaced
                        .entry(svc.as_str())
                        .or_default()
                        .push(node.as_str());
                }
            }
        }
        let mut planner = Planner {
            desired,
            observed,
            policy,
            now,
            load,
            workers: BTreeSet::new(),
            master: None,
            unplaced,
            claims,
            edges: Vec::new(),
            prune_refused: None,
            routes_of: BTreeMap::new(),
        };
        for (host, route) in &observed.edge_routes {
            planner
                .routes_of
                .entry(route.service.as_str())
                .or_default()
                .push((host, route));
        }
        let mut edges = Vec::new();
        let mut workers = BTreeSet::new();
        let mut master = None;
        for (n, node) in &observed.nodes {
            if planner.usable(n).is_err() {
                continue;
            }
            match node.role {
                NodeRole::Edge => edges.push(n.as_str()),
                NodeRole::Worker => {
                    workers.insert((u64::from(node.containers), n.as_str()));
                }
                NodeRole::Master => {
                    master = master.or(Some(n.as_str()));
                }
            }
        }
        planner.edges = edges;
        planner.workers = workers;
        planner.master = master;
        planner
    }

    fn run(mut self) -> Plan {
        let mut notes = Vec::new();
        self.guard(&mut notes);
        self.unavailable_notes(&mut notes);
        self.orphan_notes(&mut notes);

        // Every service anything mentions, once, by (tier, name). The sources
        // are sorted runs, so sorting their concatenation is cheap; the tier
        // is looked up once per name.
        let tier_of = |name: &str| -> Tier {
            self.desired
                .spec(name)
                .map(|s| s.tier)
                .or_else(|| self.observed.placements.get(name).map(|p| p.tier))
                .unwrap_or(Tier::Worker)
        };
        let all = self
            .desired
            .services
            .keys()
            .chain(self.desired.held.keys())
            .chain(self.observed.placements.keys())
            .map(String::as_str)
            .chain(
                self.observed
                    .edge_routes
                    .values()
                    .map(|r| r.service.as_str()),
            )
            .chain(
                self.observed
                    .dns
                    .keys()
                    .filter_map(|n| self.service_of_dns_name(n)),
            );
        let mut all: Vec<&str> = all.collect();
        all.sort();
        all.dedup();
        let mut names: Vec<(Tier, &str)> = all.into_iter().map(|n| (tier_of(n), n)).collect();
        // Stable: names stay in order within a tier.
        names.sort_by_key(|(tier, _)| *tier);

        let mut entries = Vec::new();
        let mut counts = Counts::default();
        for (tier, name) in names {
            let draft = self.service(name);
            if let Some(kind) = draft.kind {
                counts.bump(kind);
                entries.push(Entry {
                    service: name.to_string(),
                    kind,
                    tier,
                    node: draft.node,
                    reason: draft.reason,
                    details: draft.details,
                    steps: draft.steps,
                    change: draft.change,
                });
            }
        }
        Plan {
            source: self.desired.source.clone(),
            now: self.now,
            counts,
            entries,
            notes,
            refused: self.prune_refused,
        }
    }

    fn unavailable_notes(&self, notes: &mut Vec<Note>) {
        let mut by_node: BTreeMap<&str, (String, Vec<String>)> = BTreeMap::new();
        for (svc, p) in &self.observed.placements {
            if let Err(why) = self.usable(&p.node) {
                by_node
                    .entry(p.node.as_str())
                    .or_insert_with(|| (why, Vec::new()))
                    .1
                    .push(svc.clone());
            }
        }
        for (node, (why, services)) in by_node {
            notes.push(Note::NodeUnavailable {
                node: node.to_string(),
                why,
                services,
            });
        }
    }

    fn orphan_notes(&self, notes: &mut Vec<Note>) {
        for (node, status) in &self.observed.agents {
            let Some(services) = status.services() else {
                continue;
            };
            for svc in services.keys() {
                let placed_here = self
                    .observed
                    .placements
                    .get(svc)
                    .is_some_and(|p| &p.node == node);
                // Desired, not placed, and about to be placed here.
                let adopted = !self.observed.placements.contains_key(svc)
                    && self
                        .desired
                        .spec(svc)
                        .and_then(|spec| self.choose_node(spec).ok())
                        .is_some_and(|(n, _)| &n == node);
                if !placed_here && !adopted {
                    notes.push(Note::Orphan {
                        node: node.clone(),
                        service: svc.clone(),
                    });
                }
            }
        }
    }

    // -- helpers -------------------------------------------------------------

    /// `Ok` when the node can be acted on: registered, healthy, its agent
    /// reported. Otherwise why not (as a phrase after "node X is").
    fn usable(&self, node: &str) -> Result<(), String> {
        let Some(n) = self.observed.nodes.get(node) else {
            return Err("not registered".to_string());
        };
        match n.health {
            NodeHealth::Healthy => {}
            NodeHealth::Unhealthy => return Err("unhealthy".to_string()),
            NodeHealth::Unknown => return Err("of unknown health".to_string()),
        }
        match self.observed.agents.get(node) {
            Some(AgentStatus::Reported { .. }) => Ok(()),
            Some(AgentStatus::Unreachable { error }) => Err(format!("unreachable ({error})")),
            None => Err("unreachable (no agent report)".to_string()),
        }
    }

    fn report(&self, node: &str, service: &str) -> Option<Option<&'a ServiceReport>> {
        self.observed
            .agents
            .get(node)
            .and_then(AgentStatus::services)
            .map(|s| s.get(service))
    }

    fn address(&self, node: &str) -> Option<&'a str> {
        self.observed.nodes.get(node).map(|n| n.address.as_str())
    }

    fn service_of_dns_name<'n>(&self, name: &'n str) -> Option<&'n str> {
        let svc = name
            .strip_suffix(self.policy.internal_zone.as_str())?
            .strip_suffix('.')?;
        (!svc.is_empty() && !svc.contains('.')).then_some(svc)
    }

    fn components(spec: &ServiceSpec) -> u64 {
        spec.components.len() as u64
    }

    /// Counts `spec`'s containers on `node`, which this plan places there.
    fn add_load(&mut self, node: &str, spec: &ServiceSpec) {
        let Some((&key, &old)) = self.load.get_key_value(node) else {
            return;
        };
        let new = old + Self::components(spec);
        self.load.insert(key, new);
        if self.workers.remove(&(old, key)) {
            self.workers.insert((new, key));
        }
    }
}
