//! The agent's public types: settings, errors, step results, statuses and
//! the monitor report.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mcp_runtime::{LogLine, RuntimeError};
use mcp_spec::{Tier, Violation};
use tokio_stream::Stream;

use crate::clock::Timestamp;
use crate::config::{Config, EventsConfig, NodeRole};
use crate::files::FileError;
use crate::monitor::{Finding, MonitorPolicy};
use crate::ports::PortRange;
use crate::registry::{DesiredState, NewEvent, ObservedState, PrunedEvents, RegistryError};

/// Label holding the hash of a container's whole configuration (see the
/// module docs).
pub const LABEL_CONFIG_HASH: &str = "mcp.config-hash";

/// How long `stop` waits after SIGTERM before SIGKILL, by default.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The wall clock the agent reads (injected in tests).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// What the agent needs from its configuration.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// This node's name (the `mcp.node` label of its containers).
    pub node: String,
    pub role: NodeRole,
    pub port_range: PortRange,
    /// Where containers publish their ports.
    pub bind_address: IpAddr,
    /// Parent of every `<service>/` data directory; `/srv` on the host
    /// side of a volume means this directory.
    pub files_root: PathBuf,
    /// Host paths volumes may mount besides `/srv/<service>/`
    /// (`[podman] allowed_host_paths`).
    pub allowed_host_paths: Vec<String>,
    pub stop_timeout: Duration,
    pub monitor: MonitorPolicy,
    /// How much event history to keep (see [`Agent::prune_events`](super::Agent::prune_events)).
    pub events: EventsConfig,
    /// Size limits of ImportServiceData (`[files] max_import_bytes`,
    /// `max_import_file_bytes`).
    pub import_limits: crate::data::ImportLimits,
    /// `[health]`: deploy timeout and probe intervals.
    pub health: crate::config::HealthConfig,
}

impl AgentSettings {
    /// Defaults for `node`: worker, ports 10000-60000 on 127.0.0.1, data
    /// under `/srv`, 10 s stop timeout, default monitor policy.
    pub fn new(node: impl Into<String>) -> AgentSettings {
        AgentSettings {
            node: node.into(),
            role: NodeRole::Worker,
            port_range: PortRange::new(10000, 60000).expect("10000-60000 is a valid port range"),
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            files_root: PathBuf::from("/srv"),
            allowed_host_paths: Vec::new(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            monitor: MonitorPolicy::default(),
            events: EventsConfig::default(),
            import_limits: crate::data::ImportLimits::default(),
            health: crate::config::HealthConfig::default(),
        }
    }

    /// The settings of a validated configuration.
    pub fn from_config(c: &Config) -> Result<AgentSettings, AgentError> {
        let port_range = c
            .ports
            .port_range()
            .ok_or_else(|| AgentError::InvalidArgument {
                message: format!(
                    "ports.range [{}, {}] is not a range",
                    c.ports.range.0, c.ports.range.1
                ),
            })?;
        Ok(AgentSettings {
            node: c.node.name.clone(),
            role: c.node.role,
            port_range,
            bind_address: c.ports.bind_address,
            files_root: c.files.root.clone(),
            allowed_host_paths: c.podman.allowed_host_paths.clone(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            monitor: MonitorPolicy::from_config(c),
            events: c.events,
            import_limits: crate::data::ImportLimits {
                max_bytes: c.files.max_import_bytes,
                max_file_bytes: c.files.max_import_file_bytes,
                ..crate::data::ImportLimits::default()
            },
            health: c.health,
        })
    }
}

/// Everything an agent operation can fail with. Messages name the node,
/// service and component concerned.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("service {service}: invalid spec: {}", list_violations(violations))]
    InvalidSpec {
        service: String,
        violations: Vec<Violation>,
    },
    #[error("{message}")]
    InvalidArgument { message: String },
    #[error("service {service} is not deployed on node {node}")]
    ServiceNotFound { service: String, node: String },
    #[error("service {service} has no component {component} on node {node}")]
    ComponentNotFound {
        service: String,
        component: String,
        node: String,
    },
    /// The request cannot be carried out in the current state (wrong node,
    /// edge node, unmanaged container in the way, already managed...).
    #[error("{message}")]
    FailedPrecondition { message: String },
    #[error("{what} is not supported by this agent yet")]
    Unsupported { what: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{context}: {source}")]
    Runtime {
        context: String,
        #[source]
        source: RuntimeError,
    },
    #[error(transparent)]
    Files(#[from] FileError),
    /// ExportServiceData / ImportServiceData ([`crate::data`]).
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// An integration (proxy, certificate issuer) failed: worth retrying.
    #[error("{message}")]
    Integration { message: String },
    /// A deploy whose checked components did not turn healthy in time
    /// (`rolled_back_to`: the spec hash brought back, if any).
    #[error("{message}")]
    Unhealthy {
        message: String,
        rolled_back_to: Option<String>,
    },
    #[error("{message}")]
    Internal { message: String },
}

fn list_violations(v: &[Violation]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl AgentError {
    pub(super) fn runtime(context: impl Into<String>, source: RuntimeError) -> AgentError {
        AgentError::Runtime {
            context: context.into(),
            source,
        }
    }

    pub(super) fn precondition(message: impl Into<String>) -> AgentError {
        AgentError::FailedPrecondition {
            message: message.into(),
        }
    }
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;

/// Outcome of one step of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Done,
    /// Nothing to do (already in the wanted state, not applicable...).
    Skipped,
    Failed(String),
}

/// One step of an operation, e.g. `create web-api`, with a detail for the
/// operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub step: String,
    pub outcome: StepOutcome,
    pub detail: String,
}

impl Step {
    pub(super) fn done(step: impl Into<String>, detail: impl Into<String>) -> Step {
        Step {
            step: step.into(),
            outcome: StepOutcome::Done,
            detail: detail.into(),
        }
    }

    pub(super) fn skipped(step: impl Into<String>, detail: impl Into<String>) -> Step {
        Step {
            step: step.into(),
            outcome: StepOutcome::Skipped,
            detail: detail.into(),
        }
    }

    pub(super) fn failed(step: impl Into<String>, error: impl Into<String>) -> Step {
        Step {
            step: step.into(),
            outcome: StepOutcome::Failed(error.into()),
            detail: String::new(),
        }
    }

    pub fn is_failed(&self) -> bool {
        matches!(self.outcome, StepOutcome::Failed(_))
    }
}

/// A component as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentStatus {
    pub name: String,
    pub container: String,
    /// What runs (the container's image), or the spec's image when there is
    /// no container.
    pub image: String,
    pub version: String,
    pub desired: DesiredState,
    pub observed: ObservedState,
    pub restart_count: u32,
    /// When the container started, if it is running.
    pub started: Option<SystemTime>,
    /// Route name (`""` for the unnamed route) → host port.
    pub ports: BTreeMap<String, u16>,
    /// The container's id, if it exists.
    pub container_id: Option<String>,
    /// Its routes on the node's proxy (filled from the registry).
    pub routes: Vec<super::RouteStatus>,
    /// Its health check's verdict while it runs (`None`: no check, or not
    /// probed yet / not running).
    pub health: Option<crate::health::HealthState>,
    /// The last probe's output.
    pub health_detail: String,
}

/// A service as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    pub name: String,
    pub active: bool,
    pub spec_hash: String,
    pub tier: Tier,
    pub components: Vec<ComponentStatus>,
}

/// [`Agent::list_services`](super::Agent::list_services): every service, and managed containers of this
/// node that belong to no registered service or component.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub services: Vec<ServiceStatus>,
    pub orphans: Vec<String>,
}

/// [`Agent::deploy`](super::Agent::deploy)'s result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployOutcome {
    pub service: String,
    pub spec_hash: String,
    pub steps: Vec<Step>,
    /// Components (re)created by this deploy.
    pub replaced: Vec<String>,
    pub status: ServiceStatus,
}

/// [`Agent::health`](super::Agent::health).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    Healthy,
    Degraded,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub status: HealthStatus,
    /// Managed containers on this node.
    pub containers: u32,
    /// `<service>/<component>: desired running, observed <state>`.
    pub problems: Vec<String>,
}

/// What one monitor round found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorReport {
    pub time: Timestamp,
    pub drift: Vec<Finding>,
    pub flapping: Vec<Finding>,
    /// Events recorded this round.
    pub events: Vec<NewEvent>,
    /// Events deleted this round by the retention limits.
    pub pruned: PrunedEvents,
    /// Keys of alerts sent this round.
    pub alerts_sent: Vec<String>,
    /// Keys of alerts held back by their cooldown.
    pub suppressed: Vec<String>,
    /// `key: error` of alerts that could not be sent (retried next round).
    pub alert_errors: Vec<String>,
    /// Services left out because an operation held their lock.
    pub skipped_services: Vec<String>,
}

/// A stream of `(component, line)` from [`Agent::logs`](super::Agent::logs).
pub type ComponentLogStream =
    Pin<Box<dyn Stream<Item = Result<(String, LogLine), AgentError>> + Send + 'static>>;
