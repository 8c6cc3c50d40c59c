//! The plan's types: [`Plan`], its [`Entry`]s of a [`Kind`], their
//! [`Step`]s each holding an [`Action`], fleet-level [`Note`]s and the
//! per-kind [`Counts`]. Plain data with serde; no planning logic.

use mcp_spec::Tier;
use serde::{Deserialize, Serialize};

use crate::model::Timestamp;

/// The result of [`plan`](fn@crate::plan): what the master should do, per service, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// [`Desired::source`](crate::Desired::source): the commit (or directory) the plan was made from.
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

    /// The actions the master should execute, in order (blocked, refused
    /// and skipped steps left out; none at all when the plan is refused).
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        let entries: &[Entry] = if self.refused.is_some() {
            &[]
        } else {
            &self.entries
        };
        entries
            .iter()
            .flat_map(|e| e.steps.iter())
            .filter(|s| s.is_ready())
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
    /// In execution order. Blocked and skipped steps are shown, not
    /// executed.
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

    pub(super) fn bump(&mut self, kind: Kind) {
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

/// One step of an entry: an action and whether it runs.
///
/// JSON: the action, then `"state": "ready"`, or `"state": "blocked"` /
/// `"state": "skipped"` with a `"reason"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub action: Action,
    #[serde(flatten)]
    pub state: StepState,
}

/// Whether a step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum StepState {
    /// The master executes it.
    Ready,
    /// It cannot run now (node unavailable, migration not allowed, a
    /// hostname conflict, the mass-deletion guard...): shown, not executed.
    /// It runs once the reason goes away.
    Blocked(String),
    /// Its integration is not configured (see
    /// [`Integrations`](crate::Integrations)): shown, not executed, and
    /// reported as skipped — never as success — when the plan is applied.
    Skipped(String),
}

impl StepState {
    /// `ready`, `blocked` or `skipped`, as in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            StepState::Ready => "ready",
            StepState::Blocked(_) => "blocked",
            StepState::Skipped(_) => "skipped",
        }
    }

    /// Why a blocked or skipped step does not run.
    pub fn reason(&self) -> Option<&str> {
        match self {
            StepState::Ready => None,
            StepState::Blocked(why) | StepState::Skipped(why) => Some(why),
        }
    }
}

impl Step {
    pub fn ready(action: Action) -> Step {
        Step {
            action,
            state: StepState::Ready,
        }
    }

    pub fn blocked(action: Action, why: impl Into<String>) -> Step {
        Step {
            action,
            state: StepState::Blocked(why.into()),
        }
    }

    pub fn skipped(action: Action, why: impl Into<String>) -> Step {
        Step {
            action,
            state: StepState::Skipped(why.into()),
        }
    }

    /// True when the master executes this step.
    pub fn is_ready(&self) -> bool {
        self.state == StepState::Ready
    }

    /// Why the step is blocked, if it is.
    pub fn blocked_reason(&self) -> Option<&str> {
        match &self.state {
            StepState::Blocked(why) => Some(why),
            _ => None,
        }
    }

    /// Why the step is skipped, if it is.
    pub fn skipped_reason(&self) -> Option<&str> {
        match &self.state {
            StepState::Skipped(why) => Some(why),
            _ => None,
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
    /// Restart the running containers (their health check fails).
    Restart,
}

/// One operation the master executes. Every variant is idempotent on its
/// own: executing it twice leaves the fleet as executing it once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Agent `Deploy` on `node` with the desired spec of `service` (looked up
    /// in [`Desired`](crate::Desired) by the master; `spec_hash` is what the agent must
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
                    HealMethod::Restart => "restart",
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
