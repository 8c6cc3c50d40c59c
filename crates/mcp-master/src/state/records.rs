//! Row types, and the conversions between Rust values and columns.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcp_spec::{ServiceSpec, Tier};
use serde::{Deserialize, Serialize};

use super::{Result, StateError};
use crate::config::NodeRole;

// ---------------------------------------------------------------------------
// Time

pub(super) fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub(super) fn from_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

pub(super) fn to_i64(n: u64, what: &str) -> Result<i64> {
    i64::try_from(n).map_err(|_| StateError::Invalid {
        what: what.to_string(),
        detail: format!("{n} is too large"),
    })
}

/// A column that must parse into `T`; a bad stored value is a typed error.
pub(super) fn parse_col<T: FromStr>(value: String, what: &str) -> Result<T> {
    value.parse().map_err(|_| StateError::Corrupt {
        what: what.to_string(),
        detail: format!("unexpected value {value:?}"),
    })
}

pub(super) fn spec_from_json(json: &str, what: &str) -> Result<ServiceSpec> {
    serde_json::from_str(json).map_err(|e| StateError::Corrupt {
        what: what.to_string(),
        detail: e.to_string(),
    })
}

pub(super) fn spec_to_json(spec: &ServiceSpec) -> Result<String> {
    serde_json::to_string(spec).map_err(|e| StateError::Invalid {
        what: format!("spec of {}", spec.name),
        detail: e.to_string(),
    })
}

pub(super) fn u64_col(n: i64, what: &str) -> Result<u64> {
    u64::try_from(n).map_err(|_| StateError::Corrupt {
        what: what.to_string(),
        detail: format!("negative value {n}"),
    })
}

// ---------------------------------------------------------------------------
// Row types

/// Health of a node as the master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Known (bootstrap entry, or just after master start) but not yet heard from.
    Unknown,
    Healthy,
    /// Missed heartbeats and failed `HealthCheck`: excluded from placement.
    Unhealthy,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Unknown => "unknown",
            NodeStatus::Healthy => "healthy",
            NodeStatus::Unhealthy => "unhealthy",
        }
    }
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "unknown" => Ok(NodeStatus::Unknown),
            "healthy" => Ok(NodeStatus::Healthy),
            "unhealthy" => Ok(NodeStatus::Unhealthy),
            _ => Err(()),
        }
    }
}

/// A row of `nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub role: NodeRole,
    pub address: String,
    pub arch: String,
    pub status: NodeStatus,
    pub containers: u32,
    pub cpu_millicores: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    /// Last heartbeat or registration; `None`: never heard from.
    pub last_heartbeat: Option<SystemTime>,
    /// `None`: only known from the config's `[[nodes]]`.
    pub registered_at: Option<SystemTime>,
    /// When a registration last changed its address; `None`: never.
    pub address_changed_at: Option<SystemTime>,
}

/// What an agent says in `Register`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub name: String,
    pub role: NodeRole,
    pub address: String,
    pub arch: String,
}

/// What an agent says in `Heartbeat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heartbeat {
    pub cpu_millicores: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub containers: u32,
}

/// The outcome of [`Writer::register_node`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// First time this node registered (or it was only a bootstrap entry).
    New,
    /// Known, same address.
    Again,
    /// Known, and its address changed from this one (log it).
    AddressChanged { old: String },
}

/// A row of `placements`: where a service runs and what was deployed there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub service: String,
    pub node: String,
    pub tier: Tier,
    pub spec_hash: String,
    /// The spec last deployed; plans diff the desired spec against it.
    pub spec: ServiceSpec,
    pub deployed_at: SystemTime,
}

/// A row of `edge_routes`: a public hostname the master set up on an edge node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeRoute {
    pub hostname: String,
    pub service: String,
    pub edge_node: String,
    pub backend_hostname: String,
    pub backend_port: u16,
    pub created_at: SystemTime,
}

/// A snapshot to record (see [`SnapshotRecord`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSnapshot {
    pub service: String,
    pub node: String,
    /// Path of the archive (relative to the snapshots dir, or absolute).
    pub file: String,
    pub size: u64,
    /// e.g. `sha256:<hex>`.
    pub checksum: String,
    pub created_at: SystemTime,
}

/// A row of `snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub id: i64,
    pub service: String,
    pub node: String,
    pub file: String,
    pub size: u64,
    pub checksum: String,
    pub created_at: SystemTime,
}

/// A row of `desired_specs` (push mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredSpec {
    pub spec: ServiceSpec,
    /// Where it came from, e.g. `sync by alice` or a commit id.
    pub source: String,
    pub updated_at: SystemTime,
}

/// A row of `dns_records`: a record the master created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    pub name: String,
    pub address: String,
    pub created_at: SystemTime,
}

/// A row of `heal_history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealRecord {
    pub service: String,
    pub component: String,
    /// Consecutive self-heal attempts since the last reset.
    pub attempts: u32,
    pub last_attempt: SystemTime,
    pub last_error: Option<String>,
    /// The degraded alert has been raised for this streak.
    pub alerted: bool,
}

/// Where an operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalStatus {
    /// Started and not finished: after a restart, resume or report it.
    Running,
    Succeeded,
    Failed,
    /// Found running after a restart and given up (reported, not resumed).
    Abandoned,
}

impl JournalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JournalStatus::Running => "running",
            JournalStatus::Succeeded => "succeeded",
            JournalStatus::Failed => "failed",
            JournalStatus::Abandoned => "abandoned",
        }
    }
}

impl std::fmt::Display for JournalStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JournalStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "running" => Ok(JournalStatus::Running),
            "succeeded" => Ok(JournalStatus::Succeeded),
            "failed" => Ok(JournalStatus::Failed),
            "abandoned" => Ok(JournalStatus::Abandoned),
            _ => Err(()),
        }
    }
}

/// A row of `journal`: one operation (deploy, migrate, ...) and the step it
/// last reached. Each step change is committed before the step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub id: i64,
    /// e.g. `deploy`, `migrate`, `undeploy`, `snapshot`.
    pub op: String,
    pub service: String,
    /// e.g. `export`, `import`, `cleanup-source`.
    pub step: String,
    pub status: JournalStatus,
    /// Free text or JSON the operation needs to resume (e.g. source and
    /// target node), or the error it failed with.
    pub detail: String,
    pub started_at: SystemTime,
    pub finished_at: Option<SystemTime>,
}

/// A row of `audit`: one RPC after authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub time: SystemTime,
    /// e.g. `McpMasterService/Deploy`.
    pub method: String,
    /// The caller's identity name.
    pub caller: String,
    /// The caller's class (`operator`, `master`, `agent(orion)`, `guest`,
    /// ...), as the authorization layer classified it.
    pub class: String,
    /// The service or node acted on (empty when none).
    pub target: String,
    /// `ok` or the error.
    pub outcome: String,
    pub duration_ms: u64,
}

/// Which audit entries [`super::Reader::audit_list`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only entries at or after this time.
    pub since: Option<SystemTime>,
    /// Only this caller's entries (identity name, exact).
    pub caller: Option<String>,
    /// At most this many (the newest).
    pub limit: u32,
}
