//! The planner's inputs: [`Desired`] (what the service files declare),
//! [`Observed`] (what the master knows about the fleet), [`Policy`] (the
//! operator's knobs and the [`Integrations`] the master has) and
//! [`Timestamp`] (the time, passed in).
//!
//! Every type here is plain data with `Serialize`/`Deserialize`: the master
//! builds these values from its database and the agents' reports, and they
//! cross the wire as JSON (e.g. in `mcp sync --output json` and in tests).
//! Maps are `BTreeMap`s so iteration order, and therefore every plan, is
//! deterministic.

use std::collections::BTreeMap;

use mcp_spec::{ServiceSpec, Tier, Unreadable};
use serde::{Deserialize, Serialize};

use crate::plan::Action;

/// A point in time: whole seconds since the Unix epoch (UTC).
///
/// The planner never reads a clock; the caller passes `now` in, and every
/// recorded time in [`Observed`] uses the same unit.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const fn from_unix_secs(secs: u64) -> Self {
        Timestamp(secs)
    }

    pub const fn unix_secs(self) -> u64 {
        self.0
    }

    /// `self + secs`, saturating.
    pub const fn plus_secs(self, secs: u64) -> Self {
        Timestamp(self.0.saturating_add(secs))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "t={}", self.0)
    }
}

// ---------------------------------------------------------------------------
// Desired state
// ---------------------------------------------------------------------------

/// The desired state: every readable service file, plus the files that could
/// not be read (their services are *held*).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Where this came from: the git commit id (GitOps mode) or the directory
    /// / "push" marker (push mode). Shown in the plan's summary line.
    #[serde(default)]
    pub source: Option<String>,
    /// Valid specs by service name.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceSpec>,
    /// Services whose file failed to load, by service name (the file stem).
    /// A held service is never deployed, changed or pruned; a name present
    /// both here and in `services` is treated as held.
    #[serde(default)]
    pub held: BTreeMap<String, Held>,
}

/// Why a service is held: its file and the problems found in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub file: String,
    /// One line each, `file:line:col: message` (or, with `reason`, the
    /// answer that put the service on hold).
    pub errors: Vec<String>,
    /// Why the service is held when its file is readable: e.g. an agent
    /// refused this very spec, so it is not tried again until it changes.
    /// `None`: the file cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<&Unreadable> for Held {
    fn from(u: &Unreadable) -> Self {
        Held {
            file: u.file.display().to_string(),
            errors: u.errors.iter().map(ToString::to_string).collect(),
            reason: None,
        }
    }
}

impl Desired {
    /// Builds the desired state from loaded specs and unreadable files.
    pub fn new(
        source: Option<String>,
        services: impl IntoIterator<Item = ServiceSpec>,
        unreadable: &[Unreadable],
    ) -> Self {
        Desired {
            source,
            services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
            held: unreadable
                .iter()
                .map(|u| (u.name.clone(), Held::from(u)))
                .collect(),
        }
    }

    /// The spec of `name` unless it is held.
    pub fn spec(&self, name: &str) -> Option<&ServiceSpec> {
        if self.held.contains_key(name) {
            None
        } else {
            self.services.get(name)
        }
    }
}

// ---------------------------------------------------------------------------
// Observed state
// ---------------------------------------------------------------------------

/// What the master knows about the fleet right now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// The node registry, by node name.
    #[serde(default)]
    pub nodes: BTreeMap<String, Node>,
    /// Where each service is placed (master database), by service name.
    #[serde(default)]
    pub placements: BTreeMap<String, Placement>,
    /// The latest bulk status of each node's agent, by node name. A node with
    /// no entry here is treated as [`AgentStatus::Unreachable`].
    #[serde(default)]
    pub agents: BTreeMap<String, AgentStatus>,
    /// DNS records the master created: fully qualified name → address.
    #[serde(default)]
    pub dns: BTreeMap<String, String>,
    /// Edge routes the master created, by public hostname.
    #[serde(default)]
    pub edge_routes: BTreeMap<String, EdgeRoute>,
    /// Self-heal history recorded by the master: service → component →
    /// record. The planner only reads it (see [`HealRecord`]).
    #[serde(default)]
    pub heal: BTreeMap<String, BTreeMap<String, HealRecord>>,
}

pub use mcp_spec::NodeRole;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeHealth {
    Healthy,
    Unhealthy,
    /// Not probed yet (e.g. master warm-up). Treated like unhealthy for
    /// placement.
    Unknown,
}

impl NodeHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeHealth::Healthy => "healthy",
            NodeHealth::Unhealthy => "unhealthy",
            NodeHealth::Unknown => "unknown",
        }
    }
}

/// One registered node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub role: NodeRole,
    /// Overlay address; DNS records of services placed here point at it.
    pub address: String,
    pub health: NodeHealth,
    /// Containers on the node (last heartbeat); the placement load measure.
    pub containers: u32,
}

/// A service's placement (master database).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub node: String,
    pub tier: Tier,
    pub deployed_at: Timestamp,
    /// The spec the master last deployed, when it still has it. Used only to
    /// show the old side of an update's diff; when it is missing (or does
    /// not match the hash the agent reports) the plan shows only hashes.
    #[serde(default)]
    pub spec: Option<ServiceSpec>,
    /// `mcp_spec::spec_hash(spec)`, recorded with it. When the desired spec
    /// equals `spec` the planner takes this instead of hashing again (the
    /// canonical rendering dominates planning time).
    #[serde(default)]
    pub spec_hash: Option<String>,
}

/// One agent's bulk status, or the fact that there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum AgentStatus {
    /// The agent answered `ListServices`.
    Reported {
        /// Services the agent runs, by name.
        services: BTreeMap<String, ServiceReport>,
    },
    /// No report (call failed or timed out).
    Unreachable { error: String },
}

impl AgentStatus {
    pub fn empty() -> Self {
        AgentStatus::Reported {
            services: BTreeMap::new(),
        }
    }

    pub fn services(&self) -> Option<&BTreeMap<String, ServiceReport>> {
        match self {
            AgentStatus::Reported { services } => Some(services),
            AgentStatus::Unreachable { .. } => None,
        }
    }
}

/// One service as an agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceReport {
    /// `mcp_spec::spec_hash` of the spec the agent deployed.
    pub spec_hash: String,
    /// The agent's recorded desired state (running or stopped).
    pub active: bool,
    /// By component name.
    pub components: BTreeMap<String, ComponentReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentReport {
    pub image: String,
    pub version: String,
    pub state: ContainerState,
    #[serde(default)]
    pub restarts: u32,
    /// Host ports of its routes: route name (`""` for the unnamed one) →
    /// port. Reported for people (status); the planner does not read it.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    /// Its routes on the node's proxy, as the agent registered them.
    /// Reported for people (status); the planner does not read it.
    #[serde(default)]
    pub routes: Vec<RouteReport>,
    /// Its health check's verdict; `None` without a check (or while it
    /// is not running). An unhealthy component is healed like an exited
    /// one (restarted), and counts toward degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<ComponentHealth>,
    /// The last probe's output, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub health_detail: String,
}

/// A health check's verdict on a running component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentHealth {
    /// Not yet passed since the container started (within its grace).
    Starting,
    Healthy,
    Unhealthy,
}

impl ComponentHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentHealth::Starting => "starting",
            ComponentHealth::Healthy => "healthy",
            ComponentHealth::Unhealthy => "unhealthy",
        }
    }

    /// `"starting"` / `"healthy"` / `"unhealthy"`; anything else is `None`.
    pub fn parse(s: &str) -> Option<ComponentHealth> {
        match s {
            "starting" => Some(ComponentHealth::Starting),
            "healthy" => Some(ComponentHealth::Healthy),
            "unhealthy" => Some(ComponentHealth::Unhealthy),
            _ => None,
        }
    }
}

/// A route an agent registered on its proxy (see [`ComponentReport`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteReport {
    /// Route name; `""` for the unnamed route.
    pub route: String,
    pub hostname: String,
    pub listen_port: u16,
    /// `l4` or `l7`.
    pub mode: String,
    /// `https://<hostname>:<listen_port>`.
    pub url: String,
    /// Where the proxy listens; `""` when unknown.
    pub proxy_address: String,
    /// `host:port` the proxy forwards to.
    pub backend: String,
    /// L7: the certificate's serial; `""` for L4.
    pub cert_serial: String,
    /// L7: RFC 3339; `""` for L4.
    pub cert_expires: String,
}

/// Container state as podman reports it, reduced to what the planner needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Running,
    /// Stopped on purpose (`mcp stop`).
    Stopped,
    /// Exited by itself (crash, OOM...).
    Exited,
    /// The agent's registry lists it but no container exists.
    Missing,
    /// Created, paused, restarting, or anything else.
    Other,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Running => "running",
            ContainerState::Stopped => "stopped",
            ContainerState::Exited => "exited",
            ContainerState::Missing => "missing",
            ContainerState::Other => "other",
        }
    }
}

/// An edge route the master created: `hostname:443` on `edge_node` →
/// `backend_hostname:backend_port` (backend TLS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeRoute {
    pub service: String,
    pub edge_node: String,
    pub backend_hostname: String,
    pub backend_port: u16,
}

/// Self-heal history of one component. The master records an attempt each
/// time it executes an [`crate::Action::Heal`] (attempts + 1, last_attempt =
/// now), sets `alerted` when it executes the matching
/// [`crate::Action::Alert`], and clears the record once the component has
/// stayed up (its choice of "a while"; the planner ignores records of
/// running components).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealRecord {
    pub attempts: u32,
    pub last_attempt: Timestamp,
    /// The degraded alert has been raised for the current failure streak.
    #[serde(default)]
    pub alerted: bool,
}

// ---------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------

/// The operator's knobs. `#[serde(default)]`: any field left out of a config
/// takes its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Zone of the internal names: a service's DNS record is
    /// `<service>.<internal_zone>`.
    pub internal_zone: String,
    /// Execute node-pin changes as migrations (default: block and explain).
    pub allow_auto_migrate: bool,
    /// Let a plan prune everything or more than `mass_prune_fraction` of the
    /// placements (`mcp sync --allow-mass-prune`).
    pub allow_mass_prune: bool,
    /// Fraction of the placements above which pruning is refused.
    pub mass_prune_fraction: f64,
    /// First self-heal retry delay, seconds; doubles per attempt.
    pub heal_backoff_base_secs: u64,
    /// Upper bound of the self-heal retry delay, seconds.
    pub heal_backoff_max_secs: u64,
    /// After this many failed heal attempts the component is degraded: one
    /// alert, no more attempts.
    pub heal_max_attempts: u32,
    /// Which integrations the master can act through. Steps of one that is
    /// not configured are planned as skipped, with its reason.
    pub integrations: Integrations,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            internal_zone: "mcp.internal".to_string(),
            allow_auto_migrate: false,
            allow_mass_prune: false,
            mass_prune_fraction: 0.5,
            heal_backoff_base_secs: 10,
            heal_backoff_max_secs: 600,
            heal_max_attempts: 5,
            integrations: Integrations::default(),
        }
    }
}

impl Policy {
    /// `<service>.<internal_zone>`.
    pub fn internal_name(&self, service: &str) -> String {
        format!("{service}.{}", self.internal_zone)
    }

    /// Delay before the next heal attempt after `attempts` attempts:
    /// 0 for none, then `base * 2^(attempts-1)`, capped at the maximum.
    pub fn heal_delay_secs(&self, attempts: u32) -> u64 {
        if attempts == 0 {
            return 0;
        }
        let shift = (attempts - 1).min(63);
        self.heal_backoff_base_secs
            .saturating_mul(1u64 << shift)
            .min(self.heal_backoff_max_secs)
    }
}

// ---------------------------------------------------------------------------
// Integrations
// ---------------------------------------------------------------------------

/// Whether the master can act through one integration.
///
/// JSON: `{"status": "configured"}` or
/// `{"status": "not_configured", "reason": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "reason", rename_all = "snake_case")]
pub enum Integration {
    /// An adapter is configured: the integration's steps are ready to run.
    Configured,
    /// No adapter (or none in this build): the integration's steps are
    /// planned as [`StepState::Skipped`](crate::StepState::Skipped) with
    /// this reason.
    NotConfigured(String),
}

impl Integration {
    /// Not configured, for `reason`.
    pub fn not_configured(reason: impl Into<String>) -> Integration {
        Integration::NotConfigured(reason.into())
    }

    pub fn is_configured(&self) -> bool {
        matches!(self, Integration::Configured)
    }

    /// Why the integration's steps are skipped; `None` when configured.
    pub fn skip_reason(&self) -> Option<&str> {
        match self {
            Integration::Configured => None,
            Integration::NotConfigured(why) => Some(why),
        }
    }
}

/// The integrations the master has, given to the planner as data so that a
/// plan says up front which steps will be skipped and why.
///
/// The default is *nothing configured*: a caller that does not say what it
/// has never gets a DNS or edge step planned as ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Integrations {
    /// DNS records of internal names ([`Action::SetDns`],
    /// [`Action::RemoveDns`]).
    pub dns: Integration,
    /// Edge routes ([`Action::SetEdgeRoute`], [`Action::RemoveEdgeRoute`]).
    pub edge: Integration,
    /// Proxy routes on the nodes (no action of the plan uses it yet).
    pub proxy: Integration,
    /// Certificate issuance (no action of the plan uses it yet).
    pub certificates: Integration,
}

impl Default for Integrations {
    fn default() -> Self {
        Integrations {
            dns: Integration::not_configured("DNS adapter not configured"),
            edge: Integration::not_configured("edge route adapter not configured"),
            proxy: Integration::not_configured("proxy not configured"),
            certificates: Integration::not_configured("certificate issuer not configured"),
        }
    }
}

impl Integrations {
    /// Every integration configured (tests, simulations).
    pub fn all_configured() -> Self {
        Integrations {
            dns: Integration::Configured,
            edge: Integration::Configured,
            proxy: Integration::Configured,
            certificates: Integration::Configured,
        }
    }

    /// The integration `action` goes through, if any.
    pub fn of(&self, action: &Action) -> Option<&Integration> {
        match action {
            Action::SetDns { .. } | Action::RemoveDns { .. } => Some(&self.dns),
            Action::SetEdgeRoute { .. } | Action::RemoveEdgeRoute { .. } => Some(&self.edge),
            Action::Deploy { .. }
            | Action::Undeploy { .. }
            | Action::Start { .. }
            | Action::Stop { .. }
            | Action::Heal { .. }
            | Action::Alert { .. }
            | Action::Migrate { .. } => None,
        }
    }

    /// Why a step of `action` is skipped: its integration is not
    /// configured. `None` when it is, or when the action needs none.
    pub fn skip_reason(&self, action: &Action) -> Option<&str> {
        self.of(action).and_then(Integration::skip_reason)
    }
}
