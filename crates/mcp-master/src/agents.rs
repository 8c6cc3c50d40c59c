//! The master's side of `McpAgentService`: the [`AgentApi`] trait the
//! control loop, the fleet prober and the gRPC server are generic over, the
//! values it speaks ([`types`]: steps, health, logs, events, files — no
//! protocol types), and its real implementation [`GrpcAgents`] (tonic over
//! TLS 1.3 with the master's bearer token; the only place of this module
//! that knows the protocol messages).
//!
//! A recording in-memory implementation for tests is
//! `crate::fake::FakeAgents` (feature `testing`); both pass the same
//! suite (`tests/agent_api_suite.rs`), the fake against itself and
//! [`GrpcAgents`] against a real agent server.

use std::collections::BTreeMap;

use mcp_planner::{AgentStatus, ContainerState, ServiceReport};
use mcp_spec::ServiceSpec;

mod grpc;
pub mod types;

pub use grpc::GrpcAgents;
pub use types::{
    failed_steps, AgentStep, DataChunk, DataStream, EventRow, EventsQuery, FileContent, Health,
    HealthStatus, ImportData, ImportOutcome, LogLine, LogSource, LogStream, LogsQuery, StepState,
};

/// Which agent to call: the node's name (for messages, and the name its
/// certificate must carry with [`GrpcAgents::verify_node_names`]) and its
/// address (`https://host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTarget {
    pub node: String,
    pub address: String,
}

/// A failed agent call, naming the node and the method.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("agent {node} ({address}) is unreachable: {detail}")]
    Unreachable {
        node: String,
        address: String,
        detail: String,
    },
    #[error("agent {node}: {method} timed out after {after}")]
    Timeout {
        node: String,
        method: String,
        after: String,
    },
    /// The agent refused or failed the call (`code` is the gRPC status
    /// code: `NotFound` for an unknown service, `InvalidArgument`...).
    #[error("agent {node}: {method}: {code:?}: {message}")]
    Rpc {
        node: String,
        method: String,
        code: tonic::Code,
        message: String,
    },
    /// The call returned, but one of its steps failed.
    #[error("agent {node}: {method}: {detail}")]
    StepFailed {
        node: String,
        method: String,
        detail: String,
    },
    /// The agent answered something this master cannot read.
    #[error("agent {node}: {method}: unreadable answer: {detail}")]
    BadReply {
        node: String,
        method: String,
        detail: String,
    },
}

impl AgentError {
    /// The gRPC status to hand to a CLI caller of a pass-through RPC.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            AgentError::Unreachable { .. } => tonic::Status::unavailable(self.to_string()),
            AgentError::Timeout { .. } => tonic::Status::deadline_exceeded(self.to_string()),
            AgentError::Rpc { code, .. } => tonic::Status::new(*code, self.to_string()),
            AgentError::StepFailed { .. } => tonic::Status::aborted(self.to_string()),
            AgentError::BadReply { .. } => tonic::Status::internal(self.to_string()),
        }
    }

    /// True when the agent refused the request as such — `InvalidArgument`
    /// (an invalid spec or field) or `FailedPrecondition` (a spec this node
    /// cannot run: an edge node, a pin to another node, a container in the
    /// way, an image that does not exist): sending it again unchanged fails
    /// the same way. Everything else (unreachable, timeouts, failed steps,
    /// `Unavailable`, `Internal`, `ResourceExhausted`, ...) is transient.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self.code(),
            Some(tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition)
        )
    }

    /// The gRPC code of a refused call (`None` for transport problems and
    /// failed steps).
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            AgentError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// One agent's bulk status (`ListServices`), mapped to the planner's model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentReport {
    pub services: BTreeMap<String, ServiceReport>,
    /// Containers the agent found with no registry entry.
    pub orphans: Vec<String>,
}

impl AgentReport {
    pub fn into_status(self) -> AgentStatus {
        AgentStatus::Reported {
            services: self.services,
        }
    }
}

/// What the master asks of an agent. Every method names its node; errors
/// name the node and method. A response whose steps include a failed one
/// is an [`AgentError::StepFailed`].
#[tonic::async_trait]
pub trait AgentApi: Send + Sync + 'static {
    /// Deploys (or redeploys) `spec` — only its component `component` when
    /// given (the other components are left as they are). For a spec that
    /// differs from the deployed one only in `active`, the agent records it
    /// and starts or stops the components.
    async fn deploy(
        &self,
        t: &AgentTarget,
        spec: &ServiceSpec,
        component: Option<&str>,
    ) -> Result<Vec<AgentStep>, AgentError>;
    /// Undeploys; `/srv/<service>/` is kept unless `remove_data` (a
    /// migration's cleanup of its source, after the target runs).
    async fn undeploy(
        &self,
        t: &AgentTarget,
        service: &str,
        remove_data: bool,
    ) -> Result<Vec<AgentStep>, AgentError>;
    /// `component` `None`: every component.
    async fn stop(
        &self,
        t: &AgentTarget,
        service: &str,
        component: Option<&str>,
    ) -> Result<Vec<AgentStep>, AgentError>;
    async fn start(
        &self,
        t: &AgentTarget,
        service: &str,
        component: Option<&str>,
    ) -> Result<Vec<AgentStep>, AgentError>;
    async fn restart(
        &self,
        t: &AgentTarget,
        service: &str,
        component: Option<&str>,
    ) -> Result<Vec<AgentStep>, AgentError>;
    async fn list_services(&self, t: &AgentTarget) -> Result<AgentReport, AgentError>;
    async fn health_check(&self, t: &AgentTarget) -> Result<Health, AgentError>;
    async fn logs(&self, t: &AgentTarget, query: LogsQuery) -> Result<LogStream, AgentError>;
    /// Oldest first; with a limit, the newest `limit` rows.
    async fn events(
        &self,
        t: &AgentTarget,
        query: EventsQuery,
    ) -> Result<Vec<EventRow>, AgentError>;
    /// Writes `path` under the service's files directory on the node.
    async fn push_file(
        &self,
        t: &AgentTarget,
        service: &str,
        path: &str,
        file: FileContent,
    ) -> Result<(), AgentError>;
    async fn pull_file(
        &self,
        t: &AgentTarget,
        service: &str,
        path: &str,
    ) -> Result<FileContent, AgentError>;
    /// Records the node's unmanaged containers `<service>-*` (or
    /// `<service>`) as the service.
    async fn adopt(&self, t: &AgentTarget, service: &str) -> Result<Vec<AgentStep>, AgentError>;
    /// Streams a tar.zst archive of `/srv/<service>/` (taken live; the
    /// service keeps running), ending with [`DataChunk::End`]. `NotFound`
    /// for a service the node does not run.
    async fn export_service_data(
        &self,
        t: &AgentTarget,
        service: &str,
    ) -> Result<DataStream, AgentError>;
    /// Replaces `/srv/<service>/` with the archive `data` carries.
    /// `FailedPrecondition` when the directory holds data and `!force`;
    /// refused (nothing written) when the bytes received differ from the
    /// announced SHA-256 or size.
    async fn import_service_data(
        &self,
        t: &AgentTarget,
        service: &str,
        data: ImportData,
    ) -> Result<ImportOutcome, AgentError>;
}

/// `observed_state` ("running", "stopped", "exited", "created", "paused",
/// "missing", "unknown") in the light of `desired_state`: a component the
/// agent wants stopped whose container exited counts as stopped on purpose;
/// one it wants running counts as exited (a crash).
pub fn container_state(desired: &str, observed: &str) -> ContainerState {
    match observed {
        "running" => ContainerState::Running,
        "stopped" => ContainerState::Stopped,
        "exited" if desired == "stopped" => ContainerState::Stopped,
        "exited" => ContainerState::Exited,
        "missing" => ContainerState::Missing,
        _ => ContainerState::Other,
    }
}

/// `Err(StepFailed)` when a step failed.
pub fn check_steps(
    t: &AgentTarget,
    method: &str,
    steps: Vec<AgentStep>,
) -> Result<Vec<AgentStep>, AgentError> {
    match failed_steps(&steps) {
        None => Ok(steps),
        Some(detail) => Err(AgentError::StepFailed {
            node: t.node.clone(),
            method: method.to_string(),
            detail,
        }),
    }
}
