//! The values the registry stores and returns, and the rows they are read
//! from.

use std::fmt;

use mcp_spec::{ServiceSpec, SnapshotConfig, Tier};

use crate::clock::Timestamp;

use super::*;

/// What the agent should keep a component doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DesiredState {
    Running,
    Stopped,
    /// Not managed: observed and recorded, never started, stopped or alerted
    /// on. Kept across redeploys (an explicit operator choice).
    Ignore,
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Stopped => "stopped",
            DesiredState::Ignore => "ignore",
        }
    }

    pub fn parse(s: &str) -> Option<DesiredState> {
        match s {
            "running" => Some(DesiredState::Running),
            "stopped" => Some(DesiredState::Stopped),
            "ignore" => Some(DesiredState::Ignore),
            _ => None,
        }
    }

    pub fn from_active(active: bool) -> DesiredState {
        if active {
            DesiredState::Running
        } else {
            DesiredState::Stopped
        }
    }
}

impl fmt::Display for DesiredState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A container's state as the agent last saw it (podman's vocabulary, plus
/// `unknown` = never observed and `missing` = no such container).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObservedState {
    Unknown,
    Missing,
    Created,
    Running,
    Paused,
    Restarting,
    Stopping,
    Exited,
    Stopped,
    /// Any other podman state, kept verbatim.
    Other(String),
}

impl ObservedState {
    pub fn as_str(&self) -> &str {
        match self {
            ObservedState::Unknown => "unknown",
            ObservedState::Missing => "missing",
            ObservedState::Created => "created",
            ObservedState::Running => "running",
            ObservedState::Paused => "paused",
            ObservedState::Restarting => "restarting",
            ObservedState::Stopping => "stopping",
            ObservedState::Exited => "exited",
            ObservedState::Stopped => "stopped",
            ObservedState::Other(s) => s,
        }
    }

    /// Total: unknown words become [`ObservedState::Other`] (lowercased).
    pub fn parse(s: &str) -> ObservedState {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "unknown" => ObservedState::Unknown,
            "missing" => ObservedState::Missing,
            "created" | "configured" | "initialized" => ObservedState::Created,
            "running" | "up" => ObservedState::Running,
            "paused" => ObservedState::Paused,
            "restarting" => ObservedState::Restarting,
            "stopping" => ObservedState::Stopping,
            "exited" | "dead" => ObservedState::Exited,
            "stopped" => ObservedState::Stopped,
            other => ObservedState::Other(other.to_string()),
        }
    }

    pub fn is_running(&self) -> bool {
        *self == ObservedState::Running
    }
}

impl fmt::Display for ObservedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kind of an [`Event`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The observed state changed (`prev_state` → `new_state`).
    State,
    /// The container restarted between two observations (restart count grew).
    Restart,
    /// Desired and observed disagree (began to).
    Drift,
    /// Too many transitions within the flap window.
    Flapping,
    /// Anything recorded by later work (deploy, undeploy, ...), verbatim.
    Other(String),
}

impl EventKind {
    pub fn as_str(&self) -> &str {
        match self {
            EventKind::State => "state",
            EventKind::Restart => "restart",
            EventKind::Drift => "drift",
            EventKind::Flapping => "flapping",
            EventKind::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> EventKind {
        match s {
            "state" => EventKind::State,
            "restart" => EventKind::Restart,
            "drift" => EventKind::Drift,
            "flapping" => EventKind::Flapping,
            other => EventKind::Other(other.to_string()),
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event to record (see [`Registry::record_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub service: String,
    /// Empty for service-level events.
    pub component: String,
    pub prev_state: Option<String>,
    pub new_state: Option<String>,
    pub kind: EventKind,
    pub detail: String,
    pub time: Timestamp,
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: i64,
    pub service: String,
    pub component: String,
    pub prev_state: Option<String>,
    pub new_state: Option<String>,
    pub kind: EventKind,
    pub detail: String,
    pub time: Timestamp,
}

/// Filter for [`Registry::events`]; the default returns everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    pub service: Option<String>,
    /// Only meaningful with `service`.
    pub component: Option<String>,
    /// Events at or after this time.
    pub since: Option<Timestamp>,
    /// At most this many, the most recent ones.
    pub limit: Option<usize>,
}

/// What [`Registry::prune_events_to`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrunedEvents {
    /// Older than the age limit.
    pub by_age: usize,
    /// Beyond the row limit (after the age limit was applied).
    pub by_count: usize,
}

/// A service as deployed on this node.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRecord {
    pub name: String,
    /// The spec as last deployed (its `active` is the deploy-time value;
    /// [`ServiceRecord::active`] is the current desired state).
    pub spec: ServiceSpec,
    pub spec_hash: String,
    pub snapshot: Option<SnapshotConfig>,
    /// Current desired state: changed by deploys and by stop / start.
    pub active: bool,
    pub tier: Tier,
    pub updated_at: Timestamp,
    /// Ordered by name.
    pub components: Vec<ComponentRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentRecord {
    pub service: String,
    pub name: String,
    pub image: String,
    pub version: String,
    pub desired: DesiredState,
    pub observed: ObservedState,
    pub restart_count: u32,
    pub container_name: String,
    pub updated_at: Timestamp,
}

/// What [`Registry::upsert_service`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpsertOutcome {
    /// `None` when the service is new.
    pub previous_hash: Option<String>,
    /// Components that were in the registry and are not in the new spec
    /// (their rows and ports are gone; their containers are the caller's).
    pub removed_components: Vec<String>,
    /// Host ports released because their component or route disappeared.
    pub released_ports: Vec<u16>,
}

impl UpsertOutcome {
    pub fn is_new(&self) -> bool {
        self.previous_hash.is_none()
    }
}

pub(super) const COMPONENT_SELECT: &str = "SELECT service, name, image, version, desired_state, \
     observed_state, restart_count, container_name, updated_at FROM components";

pub(super) struct ComponentRow {
    service: String,
    pub(super) name: String,
    image: String,
    version: String,
    desired: String,
    observed: String,
    restart_count: i64,
    container_name: String,
    updated_at: i64,
}

impl ComponentRow {
    pub(super) fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ComponentRow> {
        Ok(ComponentRow {
            service: r.get(0)?,
            name: r.get(1)?,
            image: r.get(2)?,
            version: r.get(3)?,
            desired: r.get(4)?,
            observed: r.get(5)?,
            restart_count: r.get(6)?,
            container_name: r.get(7)?,
            updated_at: r.get(8)?,
        })
    }

    pub(super) fn into_record(self) -> Result<ComponentRecord> {
        let desired = DesiredState::parse(&self.desired).ok_or_else(|| RegistryError::Corrupt {
            context: format!("component {}/{}", self.service, self.name),
            message: format!("unknown desired state {:?}", self.desired),
        })?;
        Ok(ComponentRecord {
            desired,
            observed: ObservedState::parse(&self.observed),
            restart_count: u32::try_from(self.restart_count).unwrap_or(0),
            updated_at: Timestamp::from_unix(self.updated_at),
            service: self.service,
            name: self.name,
            image: self.image,
            version: self.version,
            container_name: self.container_name,
        })
    }
}

pub(super) struct ServiceRow {
    pub(super) name: String,
    spec: String,
    spec_hash: String,
    snapshot: Option<String>,
    active: bool,
    tier: String,
    updated_at: i64,
}

impl ServiceRow {
    pub(super) fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ServiceRow> {
        Ok(ServiceRow {
            name: r.get(0)?,
            spec: r.get(1)?,
            spec_hash: r.get(2)?,
            snapshot: r.get(3)?,
            active: r.get(4)?,
            tier: r.get(5)?,
            updated_at: r.get(6)?,
        })
    }

    pub(super) fn into_record(self, components: Vec<ComponentRecord>) -> Result<ServiceRecord> {
        let corrupt = |what: &str, e: serde_json::Error| RegistryError::Corrupt {
            context: format!("service {}", self.name),
            message: format!("{what}: {e}"),
        };
        let spec: ServiceSpec =
            serde_json::from_str(&self.spec).map_err(|e| corrupt("spec JSON", e))?;
        let snapshot = self
            .snapshot
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt("snapshot JSON", e))?;
        let tier = match self.tier.as_str() {
            "core" => Tier::Core,
            "worker" => Tier::Worker,
            other => {
                return Err(RegistryError::Corrupt {
                    context: format!("service {}", self.name),
                    message: format!("unknown tier {other:?}"),
                })
            }
        };
        Ok(ServiceRecord {
            name: self.name,
            spec,
            spec_hash: self.spec_hash,
            snapshot,
            active: self.active,
            tier,
            updated_at: Timestamp::from_unix(self.updated_at),
            components,
        })
    }
}
