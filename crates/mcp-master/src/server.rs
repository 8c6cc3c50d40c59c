//! The master's gRPC service (`McpMasterService`), over the reconciler and
//! the fleet registry. Authentication, authorization, rate limits and the
//! audit record happen before these handlers, in `mcp-security`'s
//! `AuthLayer`; handlers name their target for the audit line.

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

type R<T> = Result<Response<T>, Status>;
type PbStream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// The `McpMasterService` implementation.
#[derive(Debug, Clone)]
pub struct MasterService {
    rec: Arc<Reconciler>,
    fleet: Arc<Fleet>,
}

impl MasterService {
    pub fn new(rec: Arc<Reconciler>, fleet: Arc<Fleet>) -> Self {
        Self { rec, fleet }
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

/// The entry of `service` in a plan that is not going to happen (held,
/// blocked, refused...), as an error line.
fn not_done(plan: &Plan, service: &str) -> Option<String> {
    if let Some(r) = &plan.refused {
        return Some(r.clone());
    }
    let e = plan.entry(service)?;
    match e.kind {
        Kind::Held | Kind::Blocked | Kind::Refused | Kind::Degraded | Kind::Waiting => {
            let mut s = format!("{}: {}", e.kind.as_str(), e.reason);
            for d in &e.details {
                s.push_str("; ");
                s.push_str(d);
            }
            for st in &e.steps {
                if let Some(b) = st.blocked_reason() {
                    s.push_str(&format!("; {} blocked: {b}", st.action));
                }
            }
            Some(s)
        }
        _ => None,
    }
}

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

    /// `Deploy` with a component: redeploys that component alone on the
    /// service's node. The spec (the committed one in GitOps mode) may
    /// differ from the deployed one only inside that component, so what the
    /// node records as deployed is what runs.
    async fn deploy_component(
        &self,
        caller: &str,
        requested: ServiceSpec,
        component: &str,
    ) -> R<pb::MasterDeployResponse> {
        let name = requested.name.clone();
        let mut note = None;
        let spec = if self.rec.gitops() {
            let d = self.rec.desired().await.map_err(rec_status)?;
            match d.services.get(&name) {
                None => {
                    return Err(Status::failed_precondition(format!(
                        "GitOps mode: {name} is not in the committed services directory, or its file cannot be read; commit it first"
                    )))
                }
                Some(committed) => {
                    if *committed != requested {
                        note = Some(format!(
                            "GitOps mode: deployed the committed spec of {name}; the request's spec differs (commit it to deploy it)"
                        ));
                    }
                    committed.clone()
                }
            }
        } else {
            requested
        };
        if spec.component(component).is_none() {
            return Err(Status::invalid_argument(format!(
                "service {name} has no component {component}"
            )));
        }
        let placed = self.placement(&name).await.map_err(|_| {
            Status::failed_precondition(format!(
                "service {name} is not deployed on any node yet: deploy the whole service first"
            ))
        })?;
        if !differs_only_in(&placed.spec, &spec, component) {
            return Err(Status::failed_precondition(format!(
                "the spec of {name} differs from the one deployed on {} outside component {component}: deploy the whole service",
                placed.node
            )));
        }
        let t = self.service_target(&name, None).await?;
        let _lock = self.rec.locks().lock(&name).await;
        if !self.rec.gitops() {
            let now = self.rec.now();
            self.rec
                .state()
                .write({
                    let (spec, source) = (spec.clone(), format!("deploy by {caller}"));
                    move |w| w.put_desired_spec(&spec, &source, now)
                })
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        let what = format!("deploy {name}/{component} on {}", t.node);
        let skipped = |s: &str| {
            step(
                s,
                StepStatus::Skipped,
                "",
                "one component redeployed: no change",
            )
        };
        let result = self.rec.agents().deploy(&t, &spec, Some(component)).await;
        let (success, error, deploy) = match result {
            Ok(steps) => {
                self.rec
                    .record_deployed(&spec, &t.node)
                    .await
                    .map_err(Status::internal)?;
                let mut detail: Vec<String> = steps
                    .iter()
                    .filter(|s| s.state == StepState::Done)
                    .map(|s| s.step.clone())
                    .collect();
                if detail.is_empty() {
                    detail.push("unchanged; nothing recreated".to_string());
                }
                detail.extend(note);
                let ok = step(&what, StepStatus::Succeeded, "", &detail.join("; "));
                (true, String::new(), ok)
            }
            Err(e) => {
                let error = e.to_string();
                let failed = step(&what, StepStatus::Failed, &error, "");
                (false, error, failed)
            }
        };
        Ok(Response::new(pb::MasterDeployResponse {
            node: t.node.clone(),
            success,
            error,
            deploy_result: Some(deploy),
            edge_route_result: Some(skipped("edge route")),
            dns_result: Some(skipped("dns")),
        }))
    }

    async fn lifecycle(
        &self,
        req: Request<pb::ServiceLifecycleRequest>,
        op: &'static str,
    ) -> R<pb::ServiceLifecycleResponse> {
        let req = req.into_inner();
        let p = self.placement(&req.service_name).await?;
        let t = self
            .rec
            .target(&p.node)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let _lock = self.rec.locks().lock(&req.service_name).await;
        let agents = self.rec.agents();
        let r = match op {
            "stop" => {
                agents
                    .stop(&t, &req.service_name, opt(&req.component))
                    .await
            }
            "start" => {
                agents
                    .start(&t, &req.service_name, opt(&req.component))
                    .await
            }
            _ => {
                agents
                    .restart(&t, &req.service_name, opt(&req.component))
                    .await
            }
        }
        .map_err(agent_status)?;
        let mut results: Vec<pb::StepResult> = r.iter().map(agent_step_pb).collect();
        if op != "restart" {
            let desired = if p.spec.active { "running" } else { "stopped" };
            results.push(step(
                "note",
                StepStatus::Skipped,
                "",
                &format!(
                    "{op} on {} done; the service file says {desired}, so the reconciler restores that on its next pass unless the file's `active` is changed",
                    p.node
                ),
            ));
        }
        Ok(Response::new(pb::ServiceLifecycleResponse { results }))
    }

    /// Status of every service in `desired` ∪ placements (or just `only`).
    pub async fn status_of(&self, only: Option<&str>) -> Result<Vec<pb::ServiceStatus>, Status> {
        let desired = match self.rec.desired().await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "status: desired state unavailable");
                Desired::default()
            }
        };
        let observed = self.rec.observe().await.map_err(rec_status)?;
        let mut names: BTreeSet<&String> = desired.services.keys().collect();
        names.extend(desired.held.keys());
        names.extend(observed.placements.keys());
        let max = self.rec.settings().policy.heal_max_attempts;
        // What the loop would do now: says why a removed service still runs.
        let refused = self.rec.plan(&desired, &observed, false).refused;
        let out: Vec<pb::ServiceStatus> = names
            .into_iter()
            .filter(|n| only.is_none_or(|o| o == n.as_str()))
            .map(|n| {
                let mut s = service_status(n, &desired, &observed, max);
                if !desired.services.contains_key(n.as_str())
                    && !desired.held.contains_key(n.as_str())
                {
                    let why = match &refused {
                        Some(r) => {
                            format!("removed from the desired state but not undeployed: {r}")
                        }
                        None => "removed from the desired state: undeploy pending".to_string(),
                    };
                    s.detail = if s.detail.is_empty() {
                        why
                    } else {
                        format!("{why}; {}", s.detail)
                    };
                }
                s
            })
            .collect();
        if let Some(o) = only {
            if out.is_empty() {
                return Err(Status::not_found(format!(
                    "service {o} is neither desired nor placed"
                )));
            }
        }
        Ok(out)
    }
}

fn service_status(name: &str, desired: &Desired, o: &Observed, max: u32) -> pb::ServiceStatus {
    let spec = desired.services.get(name);
    let placement = o.placements.get(name);
    let tier = spec
        .map(|s| s.tier)
        .or(placement.map(|p| p.tier))
        .map(|t| t.as_str().to_string())
        .unwrap_or_default();
    let mut s = pb::ServiceStatus {
        name: name.to_string(),
        node: placement.map(|p| p.node.clone()).unwrap_or_default(),
        tier,
        status: "unknown".to_string(),
        edge_routes: o
            .edge_routes
            .iter()
            .filter(|(_, r)| r.service == name)
            .map(|(h, r)| pb::EdgeRouteStatus {
                hostname: h.clone(),
                edge_node: r.edge_node.clone(),
                cert_expires: String::new(),
            })
            .collect(),
        detail: String::new(),
        components: Vec::new(),
    };
    let mut detail: Vec<String> = Vec::new();
    if let Some(Held { file, errors }) = desired.held.get(name) {
        detail.push(format!(
            "file {file} cannot be read, the service is held as it is: {}",
            errors.join("; ")
        ));
    }
    match placement {
        None => detail.push("not deployed yet".to_string()),
        Some(p) => {
            let node = o.nodes.get(&p.node);
            let report = o.agents.get(&p.node);
            match (node, report) {
                (None, _) => {
                    s.status = "unhealthy".to_string();
                    detail.push(format!("node {} is not registered", p.node));
                }
                (Some(n), _) if n.health != NodeHealth::Healthy => {
                    s.status = "unhealthy".to_string();
                    detail.push(format!("node {} is {}", p.node, n.health.as_str()));
                }
                (_, None) => {
                    s.status = "unknown".to_string();
                    detail.push(format!("node {} did not report", p.node));
                }
                (_, Some(AgentStatus::Unreachable { error })) => {
                    s.status = "unknown".to_string();
                    detail.push(format!("node {} is unreachable: {error}", p.node));
                }
                (_, Some(AgentStatus::Reported { services })) => match services.get(name) {
                    None => {
                        s.status = "unknown".to_string();
                        detail.push(format!("the agent on {} does not report it", p.node));
                    }
                    Some(r) => {
                        s.components = r
                            .components
                            .iter()
                            .map(|(c, cr)| pb::ComponentInfo {
                                name: c.clone(),
                                image: cr.image.clone(),
                                version: cr.version.clone(),
                                desired_state: if r.active { "running" } else { "stopped" }
                                    .to_string(),
                                observed_state: cr.state.as_str().to_string(),
                                restart_count: cr.restarts,
                                ..Default::default()
                            })
                            .collect();
                        let down: Vec<&String> = r
                            .components
                            .iter()
                            .filter(|(_, c)| c.state != ContainerState::Running)
                            .map(|(n, _)| n)
                            .collect();
                        let heal = o.heal.get(name);
                        let degraded: Vec<String> = down
                            .iter()
                            .filter_map(|c| {
                                heal.and_then(|h| h.get(*c))
                                    .filter(|h| h.attempts >= max)
                                    .map(|h| {
                                        format!("{c} degraded after {} heal attempts", h.attempts)
                                    })
                            })
                            .collect();
                        if !degraded.is_empty() {
                            s.status = "degraded".to_string();
                            detail.extend(degraded);
                        } else if down.is_empty() {
                            s.status = "running".to_string();
                        } else if !r.active && down.len() == r.components.len() {
                            s.status = "stopped".to_string();
                        } else {
                            s.status = "unhealthy".to_string();
                            detail.push(format!(
                                "down: {}",
                                down.iter()
                                    .map(|c| format!("{c} {}", r.components[*c].state.as_str()))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ));
                        }
                    }
                },
            }
        }
    }
    s.detail = detail.join("; ");
    s
}

/// True when `new` is `deployed` with only `component` changed (or not
/// changed at all).
fn differs_only_in(deployed: &ServiceSpec, new: &ServiceSpec, component: &str) -> bool {
    let mut probe = deployed.clone();
    match (
        probe.components.iter_mut().find(|c| c.name == component),
        new.component(component),
    ) {
        (Some(slot), Some(c)) => {
            *slot = c.clone();
            probe == *new
        }
        _ => false,
    }
}

/// The main result of a one-service pass: the deploy-like step, DNS, edge.
fn deploy_response(service: &str, out: &PassOutcome, node: String) -> pb::MasterDeployResponse {
    let mut deploy = None;
    let mut dns = None;
    let mut edge = None;
    let mut errors = Vec::new();
    for r in out.results.iter().filter(|r| r.service == service) {
        match &r.action {
            Action::SetDns { .. } | Action::RemoveDns { .. } => {
                dns.get_or_insert_with(|| outcome_pb(r));
            }
            Action::SetEdgeRoute { .. } | Action::RemoveEdgeRoute { .. } => {
                edge.get_or_insert_with(|| outcome_pb(r));
            }
            _ => {
                if deploy.is_none() || r.status == StepStatus::Failed {
                    deploy = Some(outcome_pb(r));
                }
            }
        }
        if r.status == StepStatus::Failed {
            errors.push(format!("{}: {}", r.step(), r.error));
        }
    }
    if let Some(e) = not_done(&out.plan, service) {
        errors.push(e);
    }
    let deploy = deploy.unwrap_or_else(|| {
        if errors.is_empty() {
            step(
                &format!("deploy {service}"),
                StepStatus::Succeeded,
                "",
                "already deployed as desired; nothing to do",
            )
        } else {
            step(
                &format!("deploy {service}"),
                StepStatus::Failed,
                &errors.join("; "),
                "",
            )
        }
    });
    let dns = dns.unwrap_or_else(|| {
        step(
            "dns",
            StepStatus::Skipped,
            "",
            "no DNS change (or no DNS adapter configured)",
        )
    });
    let edge = edge.unwrap_or_else(|| {
        step(
            "edge route",
            StepStatus::Skipped,
            "",
            "no edge route change (no public route, or no edge adapter configured)",
        )
    });
    pb::MasterDeployResponse {
        node,
        success: errors.is_empty(),
        error: errors.join("; "),
        deploy_result: Some(deploy),
        edge_route_result: Some(edge),
        dns_result: Some(dns),
    }
}

#[tonic::async_trait]
impl McpMasterService for MasterService {
    async fn deploy(&self, req: Request<pb::MasterDeployRequest>) -> R<pb::MasterDeployResponse> {
        let caller = require_caller(&req)?.identity.name.clone();
        let inner = req.get_ref().clone();
        let spec = spec_from_pb(inner.service)?;
        let name = spec.name.clone();
        set_audit_target(&req, target(Some(&name), None));
        if !inner.component.is_empty() {
            return self.deploy_component(&caller, spec, &inner.component).await;
        }
        let mut note = None;
        let desired = if self.rec.gitops() {
            let d = self.rec.desired().await.map_err(rec_status)?;
            match d.services.get(&name) {
                None if d.held.contains_key(&name) => {
                    return Err(Status::failed_precondition(format!(
                        "GitOps mode: the committed file of {name} cannot be read; fix and commit it"
                    )))
                }
                None => {
                    return Err(Status::failed_precondition(format!(
                        "GitOps mode: {name} is not in the committed services directory; commit its file first"
                    )))
                }
                Some(committed) if *committed != spec => {
                    note = Some(format!(
                        "GitOps mode: deployed the committed spec of {name}; the request's spec differs (commit it to deploy it)"
                    ));
                }
                Some(_) => {}
            }
            d
        } else {
            let now = self.rec.now();
            self.rec
                .state()
                .write({
                    let (spec, source) = (spec.clone(), format!("deploy by {caller}"));
                    move |w| w.put_desired_spec(&spec, &source, now)
                })
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            self.rec.desired().await.map_err(rec_status)?
        };
        let out = self
            .pass(PassOptions {
                only: Some(name.clone()),
                desired: Some(desired),
                reason: format!("deploy {name} by {caller}"),
                ..PassOptions::default()
            })
            .await?;
        let node = self
            .rec
            .state()
            .read({
                let name = name.clone();
                move |r| r.placement(&name)
            })
            .await
            .ok()
            .flatten()
            .map(|p| p.node)
            .unwrap_or_default();
        let mut resp = deploy_response(&name, &out, node);
        if let (Some(n), Some(d)) = (note, resp.deploy_result.as_mut()) {
            d.detail = if d.detail.is_empty() {
                n
            } else {
                format!("{}; {n}", d.detail)
            };
        }
        Ok(Response::new(resp))
    }

    async fn undeploy(
        &self,
        req: Request<pb::MasterUndeployRequest>,
    ) -> R<pb::MasterUndeployResponse> {
        let caller = require_caller(&req)?.identity.name.clone();
        let name = req.get_ref().service_name.clone();
        set_audit_target(&req, target(Some(&name), None));
        let mut desired = self.rec.desired().await.map_err(rec_status)?;
        if self.rec.gitops() {
            if desired.services.contains_key(&name) || desired.held.contains_key(&name) {
                return Err(Status::failed_precondition(format!(
                    "GitOps mode: {name} is still in the committed services directory; delete its file and commit (the master then undeploys it)"
                )));
            }
        } else {
            self.rec
                .state()
                .write({
                    let name = name.clone();
                    move |w| w.remove_desired_spec(&name)
                })
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            desired.services.remove(&name);
        }
        let placed = self
            .rec
            .state()
            .read({
                let name = name.clone();
                move |r| r.placement(&name)
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        if placed.is_none() {
            return Ok(Response::new(pb::MasterUndeployResponse {
                success: true,
                error: String::new(),
                results: vec![step(
                    &format!("undeploy {name}"),
                    StepStatus::Succeeded,
                    "",
                    "not placed on any node; nothing to do",
                )],
            }));
        }
        let out = self
            .pass(PassOptions {
                only: Some(name.clone()),
                desired: Some(desired),
                reason: format!("undeploy {name} by {caller}"),
                ..PassOptions::default()
            })
            .await?;
        let mut errors: Vec<String> = out
            .results
            .iter()
            .filter(|r| r.status == StepStatus::Failed)
            .map(|r| format!("{}: {}", r.step(), r.error))
            .collect();
        if let Some(e) = not_done(&out.plan, &name) {
            errors.push(e);
        }
        Ok(Response::new(pb::MasterUndeployResponse {
            success: errors.is_empty(),
            error: errors.join("; "),
            results: out.results.iter().map(outcome_pb).collect(),
        }))
    }

    async fn status(&self, req: Request<pb::StatusRequest>) -> R<pb::StatusResponse> {
        let name = req.get_ref().service_name.clone();
        if !name.is_empty() {
            set_audit_target(&req, target(Some(&name), None));
        }
        let services = self
            .status_of((!name.is_empty()).then_some(name.as_str()))
            .await?;
        Ok(Response::new(pb::StatusResponse { services }))
    }

    async fn sync(&self, req: Request<pb::SyncRequest>) -> R<pb::SyncResponse> {
        let caller = require_caller(&req)?.identity.name.clone();
        let req = req.into_inner();
        let mut specs = Vec::new();
        for m in req.services {
            specs.push(spec_from_pb(Some(m))?);
        }
        let mut names = BTreeSet::new();
        for s in &specs {
            if !names.insert(s.name.clone()) {
                return Err(Status::invalid_argument(format!(
                    "service {} appears twice in the request",
                    s.name
                )));
            }
        }
        let held: BTreeMap<String, Held> = req
            .unreadable
            .into_iter()
            .map(|u| {
                (
                    u.name,
                    Held {
                        file: u.file,
                        errors: u.errors,
                    },
                )
            })
            .collect();
        let source = if req.source.is_empty() {
            format!("sync by {caller}")
        } else {
            req.source.clone()
        };
        let requested = Desired {
            source: Some(source.clone()),
            services: specs.iter().map(|s| (s.name.clone(), s.clone())).collect(),
            held: held.clone(),
        };
        let gitops = self.rec.gitops();
        let reason = format!("sync by {caller}");
        let mut prefix = Vec::new();
        let out = if req.dry_run {
            let desired = if gitops && specs.is_empty() && held.is_empty() {
                None
            } else {
                Some(requested)
            };
            self.pass(PassOptions {
                allow_mass_prune: req.allow_mass_prune,
                dry_run: true,
                desired,
                reason,
                ..PassOptions::default()
            })
            .await?
        } else if gitops {
            prefix.push(step(
                "source",
                StepStatus::Succeeded,
                "",
                &format!(
                    "GitOps mode: the request's {} specs are ignored; the committed tree at HEAD of the services directory is applied",
                    specs.len()
                ),
            ));
            self.pass(PassOptions {
                allow_mass_prune: req.allow_mass_prune,
                reason,
                ..PassOptions::default()
            })
            .await?
        } else {
            // Check the guard before the new desired state is stored, so a
            // refused sync leaves the previous one in force.
            let preview = self
                .pass(PassOptions {
                    allow_mass_prune: req.allow_mass_prune,
                    dry_run: true,
                    desired: Some(requested),
                    reason: reason.clone(),
                    ..PassOptions::default()
                })
                .await?;
            if preview.plan.refused.is_some() {
                preview
            } else {
                let held_names: Vec<String> = held.keys().cloned().collect();
                self.rec
                    .store_pushed(&specs, &held_names, &source)
                    .await
                    .map_err(rec_status)?;
                self.pass(PassOptions {
                    allow_mass_prune: req.allow_mass_prune,
                    reason,
                    ..PassOptions::default()
                })
                .await?
            }
        };
        let mut results = prefix;
        results.extend(out.results.iter().map(outcome_pb));
        Ok(Response::new(pb::SyncResponse {
            plan_json: mcp_planner::render_json(&out.plan),
            results,
            changes: out.plan.has_changes(),
        }))
    }

    async fn migrate(&self, _: Request<pb::MigrateRequest>) -> R<pb::MigrateResponse> {
        Err(Status::unimplemented(
            "migrate is not available yet: the master cannot move service data between nodes",
        ))
    }

    async fn list_nodes(&self, _: Request<pb::ListNodesRequest>) -> R<pb::ListNodesResponse> {
        let nodes = self
            .rec
            .state()
            .read(|r| r.nodes())
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ListNodesResponse {
            nodes: nodes
                .into_iter()
                .map(|n| pb::NodeInfo {
                    name: n.name,
                    role: n.role.as_str().to_string(),
                    address: n.address,
                    arch: n.arch,
                    status: n.status.as_str().to_string(),
                    containers: n.containers,
                    last_heartbeat: n.last_heartbeat.map(rfc3339).unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn create_snapshot(
        &self,
        _: Request<pb::CreateSnapshotRequest>,
    ) -> R<pb::CreateSnapshotResponse> {
        Err(Status::unimplemented(
            "snapshots are not available through the master yet",
        ))
    }

    async fn list_snapshots(
        &self,
        _: Request<pb::ListSnapshotsRequest>,
    ) -> R<pb::ListSnapshotsResponse> {
        Err(Status::unimplemented(
            "snapshots are not available through the master yet",
        ))
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
        set_audit_target(&req, target(Some(&req.get_ref().service_name), None));
        let req = req.into_inner();
        let p = self.placement(&req.service_name).await?;
        let t = self
            .rec
            .target(&p.node)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let stream = self
            .rec
            .agents()
            .logs(
                &t,
                LogsQuery {
                    component: opt(&req.component).map(str::to_string),
                    follow: req.follow,
                    tail: (req.tail > 0).then_some(req.tail),
                    since: parse_since(&req.since)?,
                    service: req.service_name,
                },
            )
            .await
            .map_err(agent_status)?;
        Ok(Response::new(Box::pin(stream.map(|item| {
            item.map(|l| pb::LogLine {
                component: l.component,
                line: l.line,
                stream: l.source.as_str().to_string(),
            })
            .map_err(|e| e.to_status())
        }))))
    }

    async fn service_events(
        &self,
        req: Request<pb::ServiceEventsRequest>,
    ) -> R<pb::EventsResponse> {
        if !req.get_ref().service_name.is_empty() {
            set_audit_target(&req, target(Some(&req.get_ref().service_name), None));
        }
        let req = req.into_inner();
        let limit = if req.limit == 0 {
            DEFAULT_EVENTS_LIMIT
        } else {
            req.limit
        };
        let query = EventsQuery {
            service: opt(&req.service_name).map(str::to_string),
            component: None,
            since: parse_since(&req.since)?,
            limit: Some(limit),
        };
        let nodes: Vec<String> = if req.service_name.is_empty() {
            self.rec
                .state()
                .read(|r| r.nodes())
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .into_iter()
                .filter(|n| n.status == state::NodeStatus::Healthy)
                .map(|n| n.name)
                .collect()
        } else {
            vec![self.placement(&req.service_name).await?.node]
        };
        let mut events: Vec<EventRow> = Vec::new();
        for node in nodes {
            let t = self
                .rec
                .target(&node)
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            match self.rec.agents().events(&t, query.clone()).await {
                Ok(rows) => events.extend(rows),
                Err(e) if req.service_name.is_empty() => {
                    tracing::warn!(node = %node, error = %e, "events: node skipped")
                }
                Err(e) => return Err(agent_status(e)),
            }
        }
        // Oldest first; the newest `limit` of every node's newest `limit`.
        events.sort_by_key(|e| e.time);
        let drop = events.len().saturating_sub(limit as usize);
        events.drain(..drop);
        Ok(Response::new(pb::EventsResponse {
            events: events.into_iter().map(event_pb).collect(),
        }))
    }

    async fn list_edge_routes(
        &self,
        _: Request<pb::ListMasterEdgeRoutesRequest>,
    ) -> R<pb::ListMasterEdgeRoutesResponse> {
        Err(Status::unimplemented(
            "edge routes are not available yet: no edge route adapter is configured",
        ))
    }

    async fn push_service_file(
        &self,
        req: Request<pb::PushFileRequest>,
    ) -> R<pb::PushFileResponse> {
        set_audit_target(&req, target(Some(&req.get_ref().service), None));
        let m = req.into_inner();
        let t = self.service_target(&m.service, None).await?;
        let file = FileContent {
            content: m.content,
            mode: m.mode,
        };
        self.rec
            .agents()
            .push_file(&t, &m.service, &m.path, file)
            .await
            .map_err(|e| passed_status(&format!("push {}/{}", m.service, m.path), &e))?;
        Ok(Response::new(pb::PushFileResponse {
            success: true,
            error: String::new(),
        }))
    }

    async fn pull_service_file(
        &self,
        req: Request<pb::PullFileRequest>,
    ) -> R<pb::PullFileResponse> {
        set_audit_target(&req, target(Some(&req.get_ref().service), None));
        let m = req.into_inner();
        let t = self.service_target(&m.service, None).await?;
        let f = self
            .rec
            .agents()
            .pull_file(&t, &m.service, &m.path)
            .await
            .map_err(|e| passed_status(&format!("pull {}/{}", m.service, m.path), &e))?;
        Ok(Response::new(pb::PullFileResponse {
            content: f.content,
            mode: f.mode,
            error: String::new(),
        }))
    }

    async fn adopt_service(&self, req: Request<pb::MasterAdoptRequest>) -> R<pb::AdoptResponse> {
        let m = req.get_ref().clone();
        set_audit_target(&req, target(Some(&m.service), opt(&m.node)));
        let t = self.service_target(&m.service, opt(&m.node)).await?;
        let _lock = self.rec.locks().lock(&m.service).await;
        let steps = self
            .rec
            .agents()
            .adopt(&t, &m.service)
            .await
            .map_err(|e| passed_status(&format!("adopt {} on {}", m.service, t.node), &e))?;
        let mut results: Vec<pb::StepResult> = steps.iter().map(agent_step_pb).collect();
        results.push(step(
            "note",
            StepStatus::Skipped,
            "",
            &format!(
                "adopted on {}; the master deploys {} from its service file on a later pass (which replaces the adopted containers), or undeploys it when there is no file",
                t.node, m.service
            ),
        ));
        Ok(Response::new(pb::AdoptResponse { results }))
    }

    async fn register(&self, req: Request<pb::RegisterRequest>) -> R<pb::RegisterResponse> {
        let caller = require_caller(&req)?.clone();
        let r = req.get_ref();
        set_audit_target(&req, target(None, Some(&r.name)));
        self.fleet
            .register(&caller.identity, &r.name, &r.role, &r.address, &r.arch)
            .await?;
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
}
