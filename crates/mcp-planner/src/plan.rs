//! The plan: its types ([`Plan`], [`Entry`], [`Kind`], [`Step`], [`Action`],
//! [`Note`]) and the pure function that computes it, [`plan`].

use std::collections::{BTreeMap, BTreeSet};

use mcp_spec::{canonical_toml, spec_hash, ServiceSpec, Tier};
use serde::{Deserialize, Serialize};

use crate::model::{
    AgentStatus, ContainerState, Desired, EdgeRoute, NodeHealth, NodeRole, Observed, Placement,
    Policy, ServiceReport, Timestamp,
};

// ---------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------

/// The result of [`plan`]: what the master should do, per service, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// [`Desired::source`]: the commit (or directory) the plan was made from.
    pub source: Option<String>,
    /// The `now` the plan was computed for.
    pub now: Timestamp,
    /// Number of entries of each kind.
    pub counts: Counts,
    /// One entry per service that differs from its desired state, core tier
    /// first, then by name. Services that match have no entry.
    pub entries: Vec<Entry>,
    /// Fleet-level findings that are not per-service changes: orphans,
    /// unavailable nodes, the mass-deletion guard.
    pub notes: Vec<Note>,
    /// Set when the mass-deletion guard refuses the whole plan: every entry
    /// is still reported (prunes as [`Kind::Refused`]), but nothing may be
    /// applied ([`Plan::actions`] is empty), so the guard cannot be bypassed
    /// by applying the rest and re-planning with more placements.
    pub refused: Option<String>,
}

impl Plan {
    /// True when observed differs from desired in any way the operator has
    /// to see: an action to execute, or a held / blocked / refused / waiting /
    /// degraded service. This is `mcp sync --dry-run`'s exit status 2.
    /// Notes alone (orphans, unhealthy nodes) are not changes.
    pub fn has_changes(&self) -> bool {
        !self.entries.is_empty()
    }

    /// The actions the master should execute, in order (blocked and refused
    /// steps left out; none at all when the plan is refused).
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        let entries: &[Entry] = if self.refused.is_some() {
            &[]
        } else {
            &self.entries
        };
        entries
            .iter()
            .flat_map(|e| e.steps.iter())
            .filter(|s| s.blocked.is_none())
            .map(|s| &s.action)
    }

    /// True when at least one action is ready to execute.
    pub fn has_actions(&self) -> bool {
        self.actions().next().is_some()
    }

    /// The entry of `service`, if any.
    pub fn entry(&self, service: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.service == service)
    }
}

/// What happens to one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub service: String,
    pub kind: Kind,
    pub tier: Tier,
    /// The node the service is (or will be) on; `None` when no node could be
    /// chosen or the service was never placed.
    pub node: Option<String>,
    /// One line: why this entry exists.
    pub reason: String,
    /// Further lines: parse errors of a held file, heal back-off state,
    /// operator hints.
    pub details: Vec<String>,
    /// In execution order. Steps with `blocked` set are shown, not executed.
    pub steps: Vec<Step>,
    /// For updates: the spec hashes and canonical texts (old text only when
    /// known) so the renderer can show a diff.
    pub change: Option<SpecChange>,
}

/// The kind of an entry, with its one-character symbol in the text render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `+` not placed yet: place and deploy, then DNS, then edge routes.
    Deploy,
    /// `~` spec hash differs: redeploy on the same node.
    Update,
    /// `-` placed but no longer desired: undeploy (prune).
    Undeploy,
    /// `>` node pin changed and automatic migration is allowed.
    Migrate,
    /// `^` desired running, the agent has it stopped.
    Start,
    /// `v` desired stopped, something runs.
    Stop,
    /// `*` a component exited or is missing: self-heal (back-off is due).
    Heal,
    /// `#` only DNS records or edge routes are missing, wrong or stale.
    Repair,
    /// `=` a component is down but its next heal attempt is not due yet.
    Waiting,
    /// `!` a component failed `heal_max_attempts` heals: alert, no retry.
    Degraded,
    /// `!` the service file is unreadable: the service is left as it is.
    Held,
    /// `!` a change is needed but cannot be made (no eligible node, node
    /// unavailable, migration not allowed...).
    Blocked,
    /// `!` a prune refused by the mass-deletion guard.
    Refused,
}

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::Deploy,
        Kind::Update,
        Kind::Undeploy,
        Kind::Migrate,
        Kind::Start,
        Kind::Stop,
        Kind::Heal,
        Kind::Repair,
        Kind::Waiting,
        Kind::Degraded,
        Kind::Held,
        Kind::Blocked,
        Kind::Refused,
    ];

    pub fn symbol(self) -> char {
        match self {
            Kind::Deploy => '+',
            Kind::Update => '~',
            Kind::Undeploy => '-',
            Kind::Migrate => '>',
            Kind::Start => '^',
            Kind::Stop => 'v',
            Kind::Heal => '*',
            Kind::Repair => '#',
            Kind::Waiting => '=',
            Kind::Degraded | Kind::Held | Kind::Blocked | Kind::Refused => '!',
        }
    }

    /// Lowercase name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deploy => "deploy",
            Kind::Update => "update",
            Kind::Undeploy => "undeploy",
            Kind::Migrate => "migrate",
            Kind::Start => "start",
            Kind::Stop => "stop",
            Kind::Heal => "heal",
            Kind::Repair => "repair",
            Kind::Waiting => "waiting",
            Kind::Degraded => "degraded",
            Kind::Held => "held",
            Kind::Blocked => "blocked",
            Kind::Refused => "refused",
        }
    }
}

/// Entry counts per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub deploy: usize,
    pub update: usize,
    pub undeploy: usize,
    pub migrate: usize,
    pub start: usize,
    pub stop: usize,
    pub heal: usize,
    pub repair: usize,
    pub waiting: usize,
    pub degraded: usize,
    pub held: usize,
    pub blocked: usize,
    pub refused: usize,
}

impl Counts {
    pub fn get(&self, kind: Kind) -> usize {
        match kind {
            Kind::Deploy => self.deploy,
            Kind::Update => self.update,
            Kind::Undeploy => self.undeploy,
            Kind::Migrate => self.migrate,
            Kind::Start => self.start,
            Kind::Stop => self.stop,
            Kind::Heal => self.heal,
            Kind::Repair => self.repair,
            Kind::Waiting => self.waiting,
            Kind::Degraded => self.degraded,
            Kind::Held => self.held,
            Kind::Blocked => self.blocked,
            Kind::Refused => self.refused,
        }
    }

    fn bump(&mut self, kind: Kind) {
        let slot = match kind {
            Kind::Deploy => &mut self.deploy,
            Kind::Update => &mut self.update,
            Kind::Undeploy => &mut self.undeploy,
            Kind::Migrate => &mut self.migrate,
            Kind::Start => &mut self.start,
            Kind::Stop => &mut self.stop,
            Kind::Heal => &mut self.heal,
            Kind::Repair => &mut self.repair,
            Kind::Waiting => &mut self.waiting,
            Kind::Degraded => &mut self.degraded,
            Kind::Held => &mut self.held,
            Kind::Blocked => &mut self.blocked,
            Kind::Refused => &mut self.refused,
        };
        *slot += 1;
    }
}

/// The old and new spec of an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecChange {
    /// The hash the agent reports.
    pub old_hash: String,
    pub new_hash: String,
    /// Canonical text of the deployed spec, when the master still has the
    /// spec whose hash the agent reports.
    pub old_canonical: Option<String>,
    pub new_canonical: String,
}

/// One step of an entry: an action, possibly blocked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub action: Action,
    /// Why the step must not be executed (blocked or refused); `None` means
    /// ready.
    pub blocked: Option<String>,
}

impl Step {
    fn ready(action: Action) -> Step {
        Step {
            action,
            blocked: None,
        }
    }

    fn blocked(action: Action, why: impl Into<String>) -> Step {
        Step {
            action,
            blocked: Some(why.into()),
        }
    }
}

/// How a self-heal brings components back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealMethod {
    /// Start the existing (exited) containers.
    Start,
    /// Deploy the desired spec again on the same node (containers missing).
    Redeploy,
}

/// One operation the master executes. Every variant is idempotent on its
/// own: executing it twice leaves the fleet as executing it once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Agent `Deploy` on `node` with the desired spec of `service` (looked up
    /// in [`Desired`] by the master; `spec_hash` is what the agent must
    /// report afterwards). Creates or recreates every container; components
    /// run if the spec is `active`. The master records the placement.
    Deploy {
        service: String,
        node: String,
        spec_hash: String,
    },
    /// Agent `Undeploy` on `node` (data under `/srv/<service>/` kept); the
    /// master removes the placement.
    Undeploy { service: String, node: String },
    /// Agent `Start` of every component. The deployed and desired specs
    /// differ at most in `active`: the agent records the desired one, so it
    /// reports `spec_hash` afterwards (no container is recreated).
    Start {
        service: String,
        node: String,
        spec_hash: String,
    },
    /// Agent `Stop` of every component; `spec_hash` as for `Start`.
    Stop {
        service: String,
        node: String,
        spec_hash: String,
    },
    /// Self-heal of `components`: the master first records one heal attempt
    /// for each (attempts + 1, last attempt = now), then starts them or
    /// redeploys the desired spec.
    Heal {
        service: String,
        node: String,
        components: Vec<String>,
        method: HealMethod,
    },
    /// Run the alert command (`MCP_EVENT=degraded`) and mark the component's
    /// heal record as alerted.
    Alert {
        service: String,
        node: String,
        component: String,
        detail: String,
    },
    /// `mcp migrate <service> --to <to>`: stop on `from`, export, import on
    /// `to`, deploy the desired spec there, clean up `from`, move the
    /// placement (docs/ARCHITECTURE.md). DNS follows as its own step.
    Migrate {
        service: String,
        from: String,
        to: String,
    },
    /// Create or replace the DNS record `name` → `address`.
    SetDns { name: String, address: String },
    /// Delete the DNS record `name`.
    RemoveDns { name: String },
    /// `SetupEdgeRoute` on `edge_node`: `hostname:443` →
    /// `backend_hostname:backend_port` (backend TLS); the master records it.
    SetEdgeRoute {
        hostname: String,
        service: String,
        edge_node: String,
        backend_hostname: String,
        backend_port: u16,
    },
    /// `RemoveEdgeRoute` on `edge_node`; the master forgets it.
    RemoveEdgeRoute { hostname: String, edge_node: String },
}

impl Action {
    /// The service the action belongs to, when it names one.
    pub fn service(&self) -> Option<&str> {
        match self {
            Action::Deploy { service, .. }
            | Action::Undeploy { service, .. }
            | Action::Start { service, .. }
            | Action::Stop { service, .. }
            | Action::Heal { service, .. }
            | Action::Alert { service, .. }
            | Action::Migrate { service, .. }
            | Action::SetEdgeRoute { service, .. } => Some(service),
            Action::SetDns { .. } | Action::RemoveDns { .. } | Action::RemoveEdgeRoute { .. } => {
                None
            }
        }
    }

    /// The node the action puts containers on, if any.
    pub fn placement_target(&self) -> Option<&str> {
        match self {
            Action::Deploy { node, .. } => Some(node),
            Action::Migrate { to, .. } => Some(to),
            _ => None,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Deploy {
                service,
                node,
                spec_hash,
            } => write!(f, "deploy {service} on {node} (spec {})", short(spec_hash)),
            Action::Undeploy { service, node } => write!(f, "undeploy {service} from {node}"),
            Action::Start { service, node, .. } => write!(f, "start {service} on {node}"),
            Action::Stop { service, node, .. } => write!(f, "stop {service} on {node}"),
            Action::Heal {
                service,
                node,
                components,
                method,
            } => {
                let how = match method {
                    HealMethod::Start => "start",
                    HealMethod::Redeploy => "redeploy",
                };
                write!(
                    f,
                    "heal {service} on {node}: {how} {}",
                    components.join(", ")
                )
            }
            Action::Alert {
                service,
                component,
                detail,
                ..
            } => write!(f, "alert degraded {service}/{component}: {detail}"),
            Action::Migrate { service, from, to } => {
                write!(f, "migrate {service} from {from} to {to}")
            }
            Action::SetDns { name, address } => write!(f, "dns set {name} -> {address}"),
            Action::RemoveDns { name } => write!(f, "dns remove {name}"),
            Action::SetEdgeRoute {
                hostname,
                edge_node,
                backend_hostname,
                backend_port,
                ..
            } => {
                let on = if edge_node.is_empty() {
                    "(no edge node)"
                } else {
                    edge_node
                };
                write!(
                    f,
                    "edge set {hostname} on {on} -> {backend_hostname}:{backend_port}"
                )
            }
            Action::RemoveEdgeRoute {
                hostname,
                edge_node,
            } => write!(f, "edge remove {hostname} from {edge_node}"),
        }
    }
}

/// A fleet-level finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Note {
    /// An agent runs a service that has no placement on that node. Left alone.
    Orphan { node: String, service: String },
    /// Services are placed on a node that is unhealthy, of unknown health,
    /// unreachable or unregistered. Reported; no automatic failover.
    NodeUnavailable {
        node: String,
        why: String,
        services: Vec<String>,
    },
    /// The mass-deletion guard refused this plan's prunes.
    MassPruneRefused {
        prunes: usize,
        placements: usize,
        fraction: f64,
    },
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Note::Orphan { node, service } => write!(
                f,
                "orphan: {node} runs {service}, which is not placed there (left alone)"
            ),
            Note::NodeUnavailable {
                node,
                why,
                services,
            } => write!(
                f,
                "node {node} is {why}; placed there: {} (no automatic failover)",
                services.join(", ")
            ),
            Note::MassPruneRefused {
                prunes,
                placements,
                fraction,
            } => write!(
                f,
                "mass-deletion guard: the plan would prune {prunes} of {placements} placements \
                 (all, or more than {:.0}%), so nothing is applied; rerun with \
                 --allow-mass-prune if this is intended",
                fraction * 100.0
            ),
        }
    }
}

/// The first 12 characters of a hash, for display.
pub fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

// ---------------------------------------------------------------------------
// The planner
// ---------------------------------------------------------------------------

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
        let mut planner = Planner {
            desired,
            observed,
            policy,
            now,
            load,
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
        planner.edges = observed
            .nodes
            .iter()
            .filter(|(n, node)| node.role == NodeRole::Edge && planner.usable(n).is_ok())
            .map(|(n, _)| n.as_str())
            .collect();
        planner
    }

    fn run(mut self) -> Plan {
        let mut notes = Vec::new();
        self.guard(&mut notes);
        self.unavailable_notes(&mut notes);
        self.orphan_notes(&mut notes);

        let mut names: BTreeSet<(Tier, &str)> = BTreeSet::new();
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
        for name in all {
            names.insert((tier_of(name), name));
        }

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

    // -- fleet-level checks ------------------------------------------------

    /// Prune candidates: placed, not desired, not held.
    fn prune_candidates(&self) -> usize {
        self.observed
            .placements
            .keys()
            .filter(|n| {
                !self.desired.services.contains_key(*n) && !self.desired.held.contains_key(*n)
            })
            .count()
    }

    fn guard(&mut self, notes: &mut Vec<Note>) {
        let prunes = self.prune_candidates();
        let placements = self.observed.placements.len();
        if self.policy.allow_mass_prune || prunes == 0 {
            return;
        }
        #[allow(clippy::cast_precision_loss)]
        let too_many = prunes == placements
            || prunes as f64 > self.policy.mass_prune_fraction * placements as f64;
        if too_many {
            let note = Note::MassPruneRefused {
                prunes,
                placements,
                fraction: self.policy.mass_prune_fraction,
            };
            self.prune_refused = Some(note.to_string());
            notes.push(note);
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

    // -- per service ---------------------------------------------------------

    fn service(&mut self, name: &'a str) -> Draft {
        let mut d = Draft::new();
        let placement = self.observed.placements.get(name);
        if let Some(held) = self.desired.held.get(name) {
            d.set(
                Kind::Held,
                format!("file {} is unreadable: service left as it is", held.file),
            );
            d.node = placement.map(|p| p.node.clone());
            d.details.clone_from(&held.errors);
            return d;
        }
        match (self.desired.services.get(name), placement) {
            (Some(spec), None) => self.new_service(&mut d, spec),
            (Some(spec), Some(p)) => self.placed(&mut d, spec, p),
            (None, Some(p)) => self.prune(&mut d, name, p),
            (None, None) => {
                self.stale_edges(&mut d, name);
                self.stale_dns(&mut d, name);
            }
        }
        if d.kind.is_none() && !d.steps.is_empty() {
            d.kind = Some(Kind::Repair);
            d.reason = repair_reason(&d.steps);
            if d.node.is_none() {
                d.node = placement.map(|p| p.node.clone());
            }
        }
        d
    }

    fn choose_node(&self, spec: &ServiceSpec) -> Result<(String, String), String> {
        if let Some(pin) = &spec.node {
            return match self.observed.nodes.get(pin) {
                None => Err(format!("pinned node {pin} is not registered")),
                Some(n) if n.role == NodeRole::Edge => Err(format!(
                    "pinned node {pin} is an edge node (edge nodes run no application containers)"
                )),
                Some(_) => match self.usable(pin) {
                    Ok(()) => Ok((pin.clone(), format!("pinned to {pin}"))),
                    Err(why) => Err(format!("pinned node {pin} is {why}")),
                },
            };
        }
        // A master that died between an agent's deploy and recording the
        // placement left the service running there: place it there again
        // rather than start a second copy elsewhere.
        let role = match spec.tier {
            Tier::Core => NodeRole::Master,
            Tier::Worker => NodeRole::Worker,
        };
        if let Some(n) = self.already_running(&spec.name, role) {
            return Ok((
                n.clone(),
                format!("already running on {n} (its placement was not recorded)"),
            ));
        }
        match spec.tier {
            Tier::Core => self
                .observed
                .nodes
                .iter()
                .find(|(n, node)| node.role == NodeRole::Master && self.usable(n).is_ok())
                .map(|(n, _)| (n.clone(), format!("core tier: master node {n}")))
                .ok_or_else(|| "core tier: no healthy master node".to_string()),
            Tier::Worker => self
                .observed
                .nodes
                .iter()
                .filter(|(n, node)| node.role == NodeRole::Worker && self.usable(n).is_ok())
                .map(|(n, _)| (self.load.get(n.as_str()).copied().unwrap_or(0), n))
                .min()
                .map(|(load, n)| {
                    (
                        n.clone(),
                        format!("least containers among healthy workers ({n} has {load})"),
                    )
                })
                .ok_or_else(|| "no healthy worker node".to_string()),
        }
    }

    /// The first usable node of `role` whose agent reports `service`.
    fn already_running(&self, service: &str, role: NodeRole) -> Option<&String> {
        self.observed
            .agents
            .iter()
            .filter(|(n, status)| {
                self.observed.nodes.get(*n).is_some_and(|x| x.role == role)
                    && self.usable(n).is_ok()
                    && status.services().is_some_and(|s| s.contains_key(service))
            })
            .map(|(n, _)| n)
            .next()
    }

    fn new_service(&mut self, d: &mut Draft, spec: &'a ServiceSpec) {
        match self.choose_node(spec) {
            Err(why) => d.set(Kind::Blocked, format!("cannot place: {why}")),
            Ok((node, why)) => {
                let hash = spec_hash(spec);
                if let Some(l) = self.load.get_mut(node.as_str()) {
                    *l += Self::components(spec);
                }
                d.set(Kind::Deploy, format!("new service, {why}"));
                d.steps.push(Step::ready(Action::Deploy {
                    service: spec.name.clone(),
                    node: node.clone(),
                    spec_hash: hash,
                }));
                self.dns(d, &spec.name, &node);
                self.edges(d, spec);
                d.node = Some(node);
            }
        }
    }

    fn placed(&mut self, d: &mut Draft, spec: &'a ServiceSpec, p: &'a Placement) {
        let name = spec.name.as_str();
        let node = p.node.as_str();
        d.node = Some(node.to_string());

        if let Some(pin) = spec.node.as_deref().filter(|pin| *pin != node) {
            self.migrate(d, spec, p, pin);
            return;
        }

        let hash = match (&p.spec, &p.spec_hash) {
            (Some(deployed), Some(h)) if deployed == spec => h.clone(),
            _ => spec_hash(spec),
        };
        let on_edge = self
            .observed
            .nodes
            .get(node)
            .is_some_and(|n| n.role == NodeRole::Edge);
        if on_edge {
            // Only possible through a bypass (`--direct`) or an old bug:
            // never (re)deploy there; the operator moves it.
            d.set(
                Kind::Blocked,
                format!("placed on edge node {node}, which runs no application containers"),
            );
            d.details
                .push(format!("move it: run `mcp migrate {name} --to <worker>`"));
            self.dns(d, name, node);
            self.edges(d, spec);
            return;
        }
        match self.usable(node) {
            Err(why) => {
                let last = p.spec.as_ref().map(spec_hash);
                if last.as_deref().is_some_and(|h| h != hash) {
                    d.set(
                        Kind::Blocked,
                        format!("spec changed but node {node} is {why}: the change waits"),
                    );
                    d.steps.push(Step::blocked(
                        Action::Deploy {
                            service: name.to_string(),
                            node: node.to_string(),
                            spec_hash: hash,
                        },
                        format!("node {node} is {why}"),
                    ));
                }
            }
            Ok(()) => match self.report(node, name).flatten() {
                None => {
                    let all: Vec<&str> = spec.components.iter().map(|c| c.name.as_str()).collect();
                    let what = format!("the agent on {node} does not run it");
                    self.heal(d, spec, node, &all, &all, &what);
                }
                Some(sr) if sr.spec_hash == hash || only_active_differs(spec, &sr.spec_hash) => {
                    self.lifecycle(d, spec, node, sr, &hash);
                }
                Some(sr) => self.update(d, spec, p, sr, hash),
            },
        }
        self.dns(d, name, node);
        self.edges(d, spec);
    }

    fn update(
        &mut self,
        d: &mut Draft,
        spec: &ServiceSpec,
        p: &Placement,
        sr: &ServiceReport,
        hash: String,
    ) {
        let old_canonical = p
            .spec
            .as_ref()
            .map(|s| (canonical_toml(s), s))
            .filter(|(_, s)| spec_hash(s) == sr.spec_hash)
            .map(|(text, _)| text);
        d.set(
            Kind::Update,
            format!(
                "spec changed ({} -> {}): redeploy on the same node",
                short(&sr.spec_hash),
                short(&hash)
            ),
        );
        if old_canonical.is_none() {
            d.details
                .push("the deployed spec is not known: only hashes can be shown".to_string());
        }
        d.steps.push(Step::ready(Action::Deploy {
            service: spec.name.clone(),
            node: p.node.clone(),
            spec_hash: hash.clone(),
        }));
        d.change = Some(SpecChange {
            old_hash: sr.spec_hash.clone(),
            new_hash: hash,
            old_canonical,
            new_canonical: canonical_toml(spec),
        });
    }

    /// Start / stop / self-heal. `hash` is the desired spec hash; when it
    /// differs from the reported one (only `active` differs) the start or
    /// stop also records the desired spec on the agent.
    fn lifecycle(
        &mut self,
        d: &mut Draft,
        spec: &ServiceSpec,
        node: &str,
        sr: &ServiceReport,
        hash: &str,
    ) {
        let record = sr.spec_hash != hash;
        let name = spec.name.as_str();
        let state_of = |c: &str| {
            sr.components
                .get(c)
                .map_or(ContainerState::Missing, |r| r.state)
        };
        let svc = name.to_string();
        let nd = node.to_string();
        if spec.active && (!sr.active || record) {
            let missing = spec
                .components
                .iter()
                .any(|c| state_of(&c.name) == ContainerState::Missing);
            if missing {
                d.set(
                    Kind::Start,
                    "desired running, stopped on the agent (containers missing: redeploy)",
                );
                d.steps.push(Step::ready(Action::Deploy {
                    service: svc,
                    node: nd,
                    spec_hash: hash.to_string(),
                }));
            } else {
                d.set(Kind::Start, "desired running, stopped on the agent");
                d.steps.push(Step::ready(Action::Start {
                    service: svc,
                    node: nd,
                    spec_hash: hash.to_string(),
                }));
            }
        } else if !spec.active {
            let running: Vec<&str> = spec
                .components
                .iter()
                .map(|c| c.name.as_str())
                .filter(|c| state_of(c) == ContainerState::Running)
                .collect();
            if sr.active || record || !running.is_empty() {
                let what = if running.is_empty() {
                    "the agent has it active".to_string()
                } else {
                    format!("{} running", running.join(", "))
                };
                d.set(Kind::Stop, format!("desired stopped, {what}"));
                d.steps.push(Step::ready(Action::Stop {
                    service: svc,
                    node: nd,
                    spec_hash: hash.to_string(),
                }));
            }
        } else {
            let down: Vec<&str> = spec
                .components
                .iter()
                .map(|c| c.name.as_str())
                .filter(|c| state_of(c) != ContainerState::Running)
                .collect();
            let missing: Vec<&str> = down
                .iter()
                .copied()
                .filter(|c| state_of(c) == ContainerState::Missing)
                .collect();
            if !down.is_empty() {
                let what = down
                    .iter()
                    .map(|c| format!("{c} {}", state_of(c).as_str()))
                    .collect::<Vec<_>>()
                    .join(", ");
                self.heal(d, spec, node, &down, &missing, &what);
            }
        }
    }

    /// Self-heal of the `down` components (`missing` ones need a redeploy),
    /// with exponential back-off and a degraded state after too many tries.
    fn heal(
        &mut self,
        d: &mut Draft,
        spec: &ServiceSpec,
        node: &str,
        down: &[&str],
        missing: &[&str],
        what: &str,
    ) {
        let name = spec.name.as_str();
        let records = self.observed.heal.get(name);
        let max = self.policy.heal_max_attempts;
        let mut due: Vec<String> = Vec::new();
        let mut redeploy = false;
        let mut alerts = Vec::new();
        let mut degraded = false;
        let mut waiting = false;
        for c in down {
            let rec = records.and_then(|r| r.get(*c)).cloned().unwrap_or_default();
            if rec.attempts >= max {
                degraded = true;
                d.details.push(format!(
                    "{c}: degraded after {} heal attempts{}",
                    rec.attempts,
                    if rec.alerted { " (alerted)" } else { "" }
                ));
                if !rec.alerted {
                    alerts.push(Action::Alert {
                        service: name.to_string(),
                        node: node.to_string(),
                        component: (*c).to_string(),
                        detail: format!("{c} still down after {} heal attempts", rec.attempts),
                    });
                }
                continue;
            }
            let due_at = rec
                .last_attempt
                .plus_secs(self.policy.heal_delay_secs(rec.attempts));
            if rec.attempts > 0 && self.now < due_at {
                waiting = true;
                d.details.push(format!(
                    "{c}: heal attempt {} of {max} due in {}s",
                    rec.attempts + 1,
                    due_at.0 - self.now.0
                ));
                continue;
            }
            if missing.contains(c) {
                redeploy = true;
            }
            due.push((*c).to_string());
        }
        let healing = !due.is_empty();
        if healing {
            d.steps.push(Step::ready(Action::Heal {
                service: name.to_string(),
                node: node.to_string(),
                components: due,
                method: if redeploy {
                    HealMethod::Redeploy
                } else {
                    HealMethod::Start
                },
            }));
        }
        let raise = !alerts.is_empty();
        d.steps.extend(alerts.into_iter().map(Step::ready));
        if healing {
            d.set(Kind::Heal, format!("self-heal: {what}"));
        } else if raise || (degraded && !waiting) {
            d.set(Kind::Degraded, format!("degraded: {what}"));
        } else if waiting {
            d.set(Kind::Waiting, format!("self-heal backing off: {what}"));
        }
    }

    fn migrate(&mut self, d: &mut Draft, spec: &'a ServiceSpec, p: &'a Placement, pin: &str) {
        let name = spec.name.as_str();
        let from = p.node.as_str();
        let action = Action::Migrate {
            service: name.to_string(),
            from: from.to_string(),
            to: pin.to_string(),
        };
        let target = match self.observed.nodes.get(pin) {
            None => Err("not registered".to_string()),
            Some(n) if n.role == NodeRole::Edge => {
                Err("an edge node (edge nodes run no application containers)".to_string())
            }
            Some(_) => self.usable(pin),
        };
        let hint = format!("run `mcp migrate {name} --to {pin}`");
        match target {
            Err(why) => {
                d.set(
                    Kind::Blocked,
                    format!("node pin changed from {from} to {pin}, but {pin} is {why}"),
                );
                d.steps
                    .push(Step::blocked(action, format!("{pin} is {why}")));
            }
            Ok(()) if !self.policy.allow_auto_migrate => {
                d.set(
                    Kind::Blocked,
                    format!(
                        "node pin changed from {from} to {pin}: automatic migration is disabled"
                    ),
                );
                d.details.push(format!("to move it, {hint}"));
                d.steps.push(Step::blocked(
                    action,
                    format!("automatic migration disabled: {hint}"),
                ));
            }
            Ok(()) => {
                d.set(
                    Kind::Migrate,
                    format!("node pin changed from {from} to {pin}"),
                );
                if let Some(l) = self.load.get_mut(pin) {
                    *l += Self::components(spec);
                }
                d.steps.push(Step::ready(action));
                d.node = Some(pin.to_string());
                self.dns(d, name, pin);
                self.edges(d, spec);
                return;
            }
        }
        // Blocked: keep the current placement's records right.
        self.dns(d, name, from);
        self.edges(d, spec);
    }

    fn prune(&mut self, d: &mut Draft, name: &str, p: &Placement) {
        let node = p.node.as_str();
        d.node = Some(node.to_string());
        d.steps.push(Step::ready(Action::Undeploy {
            service: name.to_string(),
            node: node.to_string(),
        }));
        self.stale_edges(d, name);
        self.stale_dns(d, name);
        if self.prune_refused.is_some() {
            d.set(
                Kind::Refused,
                "no longer desired; prune refused by the mass-deletion guard",
            );
            for s in &mut d.steps {
                s.blocked = Some("mass-deletion guard".to_string());
            }
        } else if let Err(why) = self.usable(node) {
            d.set(
                Kind::Blocked,
                format!("not desired, but node {node} is {why}: the prune waits"),
            );
            for s in &mut d.steps {
                s.blocked = Some(format!("node {node} is {why}"));
            }
        } else {
            d.set(Kind::Undeploy, "no longer desired: prune");
        }
    }

    // -- DNS and edge routes ---------------------------------------------------

    fn dns(&self, d: &mut Draft, service: &str, node: &str) {
        let Some(address) = self.address(node) else {
            return;
        };
        let name = self.policy.internal_name(service);
        if self.observed.dns.get(&name).map(String::as_str) != Some(address) {
            d.steps.push(Step::ready(Action::SetDns {
                name,
                address: address.to_string(),
            }));
        }
    }

    fn stale_dns(&self, d: &mut Draft, service: &str) {
        let name = self.policy.internal_name(service);
        if self.observed.dns.contains_key(&name) {
            d.steps.push(Step::ready(Action::RemoveDns { name }));
        }
    }

    /// Removes edge routes recorded for `service` that no desired service
    /// claims (a claimed one is replaced by its claimant's `SetEdgeRoute`).
    fn stale_edges(&self, d: &mut Draft, service: &str) {
        let routes = self.routes_of.get(service).map_or(&[][..], Vec::as_slice);
        for (host, route) in routes {
            if !self.claims.contains_key(*host) {
                d.steps.push(Step::ready(Action::RemoveEdgeRoute {
                    hostname: (*host).clone(),
                    edge_node: route.edge_node.clone(),
                }));
            }
        }
    }

    fn edges(&self, d: &mut Draft, spec: &ServiceSpec) {
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
            let step = if claimant != name {
                Step::blocked(action, format!("{hostname} is also claimed by {claimant}"))
            } else if let Some(owner) = existing
                .map(|r| r.service.as_str())
                .filter(|o| self.desired.held.contains_key(*o))
            {
                Step::blocked(
                    action,
                    format!("{hostname} is routed to held service {owner}"),
                )
            } else if edge_node.is_none() {
                Step::blocked(action, "no healthy edge node")
            } else {
                Step::ready(action)
            };
            d.steps.push(step);
        }
        self.stale_edges(d, name);
    }
}

/// Why a repair-only entry exists, from its steps.
fn repair_reason(steps: &[Step]) -> String {
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

/// True when `spec` with `active` flipped has hash `deployed`: the deployed
/// spec differs from the desired one only in `active` (`mcp stop`/`start`
/// edited the file), which is a stop or start, not a redeploy.
fn only_active_differs(spec: &ServiceSpec, deployed: &str) -> bool {
    let mut flipped = spec.clone();
    flipped.active = !spec.active;
    spec_hash(&flipped) == deployed
}

/// The public hostname of a route: its hostname (lowercased, without a
/// trailing dot), or the internal name when it has none.
fn public_hostname(policy: &Policy, service: &str, hostname: Option<&str>) -> String {
    match hostname {
        Some(h) => mcp_spec::names::normalize_hostname(h),
        None => policy.internal_name(service),
    }
}
