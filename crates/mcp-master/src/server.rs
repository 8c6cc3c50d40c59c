//! The master's gRPC service (`McpMasterService`), over the reconciler and
//! the fleet registry. Authentication, authorization, rate limits and the
//! audit record happen before these handlers, in `mcp-security`'s
//! `AuthLayer`; handlers name their target for the audit line.
//!
//! Files by RPC family: `deploy` (`Deploy`, `Undeploy`, `Sync`),
//! `status` (`Status`, `ListNodes`, `ServiceLogs`, `ServiceEvents`),
//! `forward` (stop / start / restart, files and adopt: calls forwarded to
//! the service's agent), `audit` (`ListAudit`), `nodes` (`ForgetNode`),
//! `snapshots` (`CreateSnapshot`, `ListSnapshots`, `Restore`).
//! This file holds the
//! service, the helpers they share, the fleet RPCs (`Register`,
//! `Heartbeat`) and the trait impl, which hands every other RPC to its
//! family.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use mcp_planner::{
    Action, AgentStatus, ContainerState, Desired, Held, Kind, NodeHealth, Observed, Plan,
};
use mcp_proto::pb;
use mcp_proto::pb::mcp_master_service_server::{McpMasterService, McpMasterServiceServer};
use mcp_security::audit::{set_audit_target, target};
use mcp_security::layer::require_caller;
use mcp_spec::ServiceSpec;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::agents::{
    AgentError, AgentStep, AgentTarget, EventRow, EventsQuery, FileContent, LogsQuery, StepState,
};
use crate::fleet::Fleet;
use crate::reconcile::{
    PassOptions, PassOutcome, ReconcileError, Reconciler, StepOutcome, StepStatus,
};
use crate::state;

mod audit;
mod deploy;
mod forward;
mod nodes;
mod snapshots;
mod status;

pub use audit::{DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT};

type R<T> = Result<Response<T>, Status>;
type PbStream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// The `McpMasterService` implementation.
#[derive(Debug, Clone)]
pub struct MasterService {
    rec: Arc<Reconciler>,
    fleet: Arc<Fleet>,
    snapshots: Option<Arc<crate::snapshots::Snapshots>>,
}

impl MasterService {
    pub fn new(rec: Arc<Reconciler>, fleet: Arc<Fleet>) -> Self {
        Self {
            rec,
            fleet,
            snapshots: None,
        }
    }

    /// Serves `CreateSnapshot`, `ListSnapshots` and `Restore` from `store`
    /// (without: they answer `FailedPrecondition`).
    pub fn with_snapshots(mut self, store: Arc<crate::snapshots::Snapshots>) -> Self {
        self.snapshots = Some(store);
        self
    }

    /// The tonic service, with the message limit every MCP hop shares
    /// ([`mcp_proto::MAX_MESSAGE_BYTES`]: a file at the agent's file limit
    /// passes through the master).
    pub fn into_server(self) -> McpMasterServiceServer<MasterService> {
        McpMasterServiceServer::new(self)
            .max_decoding_message_size(mcp_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(mcp_proto::MAX_MESSAGE_BYTES)
    }
}

fn rec_status(e: ReconcileError) -> Status {
    match e {
        ReconcileError::State(e) => Status::internal(e.to_string()),
        ReconcileError::Desired(m) => Status::failed_precondition(m),
        ReconcileError::Refused(m) => Status::failed_precondition(m),
    }
}

fn agent_status(e: AgentError) -> Status {
    e.to_status()
}

/// An agent's error on a forwarded call, with what was asked first.
fn passed_status(what: &str, e: &AgentError) -> Status {
    let s = e.to_status();
    Status::new(s.code(), format!("{what}: {}", s.message()))
}

/// At most 200 characters of a caller's string, for a log or audit line.
fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn spec_from_pb(m: Option<pb::ServiceSpec>) -> Result<ServiceSpec, Status> {
    let m = m.ok_or_else(|| Status::invalid_argument("no service spec in the request"))?;
    let name = m.name.clone();
    ServiceSpec::try_from(m).map_err(|e| Status::invalid_argument(format!("service {name:?}: {e}")))
}

fn step(step: &str, status: StepStatus, error: &str, detail: &str) -> pb::StepResult {
    use pb::StepStatus as S;
    pb::StepResult {
        step: step.to_string(),
        success: status == StepStatus::Succeeded,
        error: error.to_string(),
        status: match status {
            StepStatus::Succeeded => S::Succeeded,
            StepStatus::Failed => S::Failed,
            StepStatus::Skipped => S::Skipped,
        } as i32,
        detail: detail.to_string(),
    }
}

/// A step of a pass, for the CLI.
fn outcome_pb(r: &StepOutcome) -> pb::StepResult {
    step(&r.step(), r.status, &r.error, &r.detail)
}

/// A step of an agent call, for the CLI.
fn agent_step_pb(s: &AgentStep) -> pb::StepResult {
    match &s.state {
        StepState::Done => step(&s.step, StepStatus::Succeeded, "", &s.detail),
        StepState::Skipped => step(&s.step, StepStatus::Skipped, "", &s.detail),
        StepState::Failed(e) => step(&s.step, StepStatus::Failed, e, &s.detail),
    }
}

fn event_pb(e: EventRow) -> pb::EventInfo {
    pb::EventInfo {
        node: e.node,
        service: e.service,
        component: e.component,
        prev_state: e.prev_state.unwrap_or_default(),
        new_state: e.new_state.unwrap_or_default(),
        timestamp: rfc3339(e.time),
        kind: e.kind,
        detail: e.detail,
    }
}

/// An RFC 3339 `since` of a request; empty: none.
fn parse_since(s: &str) -> Result<Option<SystemTime>, Status> {
    if s.is_empty() {
        return Ok(None);
    }
    humantime::parse_rfc3339_weak(s).map(Some).map_err(|e| {
        Status::invalid_argument(format!("since must be an RFC 3339 time, found {s:?}: {e}"))
    })
}

fn opt(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// How many events `ServiceEvents` returns when the request says 0.
pub const DEFAULT_EVENTS_LIMIT: u32 = 100;

impl MasterService {
    async fn pass(&self, opts: PassOptions) -> Result<PassOutcome, Status> {
        self.rec.reconcile(opts).await.map_err(rec_status)
    }

    async fn placement(&self, service: &str) -> Result<state::Placement, Status> {
        let name = service.to_string();
        self.rec
            .state()
            .read(move |r| r.placement(&name))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| {
                Status::not_found(format!("service {service} is not placed on any node"))
            })
    }

    /// The agent to forward a call about `service` to: `node` when given,
    /// else the node the service is placed on. NotFound when there is no
    /// placement or no such node, FailedPrecondition when the placement
    /// names a node that is not registered.
    async fn service_target(
        &self,
        service: &str,
        node: Option<&str>,
    ) -> Result<AgentTarget, Status> {
        let (node, placed) = match node {
            Some(n) => (n.to_string(), false),
            None => {
                let p = self.placement(service).await.map_err(|_| {
                    Status::not_found(format!(
                        "service {service} is not placed on any node: deploy it first (or name the node)"
                    ))
                })?;
                (p.node, true)
            }
        };
        self.rec.target(&node).await.map_err(|e| match e {
            ReconcileError::State(state::StateError::UnknownNode(_)) if placed => {
                Status::failed_precondition(format!(
                    "service {service} is placed on node {node}, which is not registered"
                ))
            }
            ReconcileError::State(state::StateError::UnknownNode(_)) => {
                Status::not_found(format!("node {node} is not registered"))
            }
            e => Status::internal(e.to_string()),
        })
    }
}

#[tonic::async_trait]
impl McpMasterService for MasterService {
    async fn deploy(&self, req: Request<pb::MasterDeployRequest>) -> R<pb::MasterDeployResponse> {
        self.deploy_rpc(req).await
    }

    async fn undeploy(
        &self,
        req: Request<pb::MasterUndeployRequest>,
    ) -> R<pb::MasterUndeployResponse> {
        self.undeploy_rpc(req).await
    }

    async fn status(&self, req: Request<pb::StatusRequest>) -> R<pb::StatusResponse> {
        self.status_rpc(req).await
    }

    async fn sync(&self, req: Request<pb::SyncRequest>) -> R<pb::SyncResponse> {
        self.sync_rpc(req).await
    }

    async fn migrate(&self, req: Request<pb::MigrateRequest>) -> R<pb::MigrateResponse> {
        self.migrate_rpc(req).await
    }

    async fn list_nodes(&self, req: Request<pb::ListNodesRequest>) -> R<pb::ListNodesResponse> {
        self.list_nodes_rpc(req).await
    }

    async fn create_snapshot(
        &self,
        req: Request<pb::CreateSnapshotRequest>,
    ) -> R<pb::CreateSnapshotResponse> {
        self.create_snapshot_rpc(req).await
    }

    async fn list_snapshots(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> R<pb::ListSnapshotsResponse> {
        self.list_snapshots_rpc(req).await
    }

    async fn restore(&self, req: Request<pb::RestoreRequest>) -> R<pb::RestoreResponse> {
        self.restore_rpc(req).await
    }

    async fn stop_service(
        &self,
        req: Request<pb::ServiceLifecycleRequest>,
    ) -> R<pb::ServiceLifecycleResponse> {
        set_audit_target(&req, target(Some(&req.get_ref().service_name), None));
        self.lifecycle(req, "stop").await
    }

    async fn start_service(
        &self,
        req: Request<pb::ServiceLifecycleRequest>,
    ) -> R<pb::ServiceLifecycleResponse> {
        set_audit_target(&req, target(Some(&req.get_ref().service_name), None));
        self.lifecycle(req, "start").await
    }

    async fn restart_service(
        &self,
        req: Request<pb::ServiceLifecycleRequest>,
    ) -> R<pb::ServiceLifecycleResponse> {
        set_audit_target(&req, target(Some(&req.get_ref().service_name), None));
        self.lifecycle(req, "restart").await
    }

    type ServiceLogsStream = PbStream<pb::LogLine>;

    async fn service_logs(
        &self,
        req: Request<pb::ServiceLogsRequest>,
    ) -> R<Self::ServiceLogsStream> {
        self.service_logs_rpc(req).await
    }

    async fn service_events(
        &self,
        req: Request<pb::ServiceEventsRequest>,
    ) -> R<pb::EventsResponse> {
        self.service_events_rpc(req).await
    }

    async fn list_edge_routes(
        &self,
        _: Request<pb::ListMasterEdgeRoutesRequest>,
    ) -> R<pb::ListMasterEdgeRoutesResponse> {
        Err(Status::unimplemented(
            "edge routes are not available yet: no edge route adapter is configured",
        ))
    }

    async fn deploy_history(
        &self,
        req: Request<pb::DeployHistoryRequest>,
    ) -> R<pb::DeployHistoryResponse> {
        self.deploy_history_rpc(req).await
    }

    async fn push_service_file(
        &self,
        req: Request<pb::PushFileRequest>,
    ) -> R<pb::PushFileResponse> {
        self.push_service_file_rpc(req).await
    }

    async fn pull_service_file(
        &self,
        req: Request<pb::PullFileRequest>,
    ) -> R<pb::PullFileResponse> {
        self.pull_service_file_rpc(req).await
    }

    async fn adopt_service(&self, req: Request<pb::MasterAdoptRequest>) -> R<pb::AdoptResponse> {
        self.adopt_service_rpc(req).await
    }

    async fn list_audit(&self, req: Request<pb::ListAuditRequest>) -> R<pb::ListAuditResponse> {
        self.list_audit_rpc(req).await
    }

    async fn forget_node(&self, req: Request<pb::ForgetNodeRequest>) -> R<pb::ForgetNodeResponse> {
        self.forget_node_rpc(req).await
    }

    async fn register(&self, req: Request<pb::RegisterRequest>) -> R<pb::RegisterResponse> {
        let caller = require_caller(&req)?.clone();
        let peer = mcp_security::conn::peer(&req);
        let r = req.get_ref();
        set_audit_target(&req, target(None, Some(&r.name)));
        let outcome = self
            .fleet
            .register(
                &caller.identity,
                peer.leaf(),
                &r.name,
                &r.role,
                &r.address,
                &r.arch,
            )
            .await;
        // The audit row says what a refused request asked for, and where an
        // accepted one moved the node from.
        match &outcome {
            Err(_) => set_audit_target(
                &req,
                format!(
                    "{} role={:?} address={:?}",
                    target(None, Some(&r.name)),
                    clip(&r.role),
                    clip(&r.address)
                ),
            ),
            Ok(o) => {
                if let Some(old) = &o.moved_from {
                    set_audit_target(
                        &req,
                        format!(
                            "{} address={} moved_from={old}",
                            target(None, Some(&r.name)),
                            r.address
                        ),
                    );
                }
            }
        }
        outcome?;
        Ok(Response::new(pb::RegisterResponse { accepted: true }))
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> R<pb::HeartbeatResponse> {
        let caller = require_caller(&req)?.clone();
        let r = req.get_ref();
        set_audit_target(&req, target(None, Some(&r.name)));
        let hb = state::Heartbeat {
            cpu_millicores: r.cpu_millicores,
            memory_bytes: r.memory_bytes,
            disk_bytes: r.disk_bytes,
            containers: r.containers,
        };
        self.fleet.heartbeat(&caller.identity, &r.name, &hb).await?;
        Ok(Response::new(pb::HeartbeatResponse { acknowledged: true }))
    }

    async fn report_changes(
        &self,
        req: Request<pb::ReportChangesRequest>,
    ) -> R<pb::ReportChangesResponse> {
        let caller = require_caller(&req)?.clone();
        let r = req.get_ref();
        set_audit_target(&req, target(None, Some(&r.name)));
        self.fleet.report_changes(&caller.identity, &r.name)?;
        tracing::debug!(node = %r.name, services = ?r.services, "container changes reported: pass now");
        self.rec.kick();
        Ok(Response::new(pb::ReportChangesResponse {}))
    }
}
