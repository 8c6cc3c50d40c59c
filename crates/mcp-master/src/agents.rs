//! The master's side of `McpAgentService`: the [`AgentApi`] trait the
//! control loop and the gRPC server are generic over, its real
//! implementation [`GrpcAgents`] (tonic over TLS 1.3 with the master's bearer
//! token) and the mapping of an agent's bulk report to the planner's
//! [`AgentStatus`].
//!
//! A recording in-memory implementation for tests is
//! [`crate::fake::FakeAgents`].

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mcp_planner::{AgentStatus, ComponentReport, ContainerState, ServiceReport};
use mcp_proto::pb;
use mcp_proto::pb::mcp_agent_service_client::McpAgentServiceClient;
use mcp_security::tls::TlsConnector;
use mcp_security::token::BearerInterceptor;
use mcp_spec::ServiceSpec;
use tokio_stream::Stream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::config::Timeouts;

/// Which agent to call: the node's name (for messages) and its address
/// (`https://host:port`).
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
}

impl AgentError {
    /// The gRPC status to hand to a CLI caller of a pass-through RPC.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            AgentError::Unreachable { .. } => tonic::Status::unavailable(self.to_string()),
            AgentError::Timeout { .. } => tonic::Status::deadline_exceeded(self.to_string()),
            AgentError::Rpc { code, .. } => tonic::Status::new(*code, self.to_string()),
            AgentError::StepFailed { .. } => tonic::Status::aborted(self.to_string()),
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

/// A stream of log lines passed through from an agent.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogLine, tonic::Status>> + Send>>;

/// What the master asks of an agent. Every method names its node; errors
/// name the node and method.
#[tonic::async_trait]
pub trait AgentApi: Send + Sync + 'static {
    /// Deploys (or redeploys) `spec`; for a spec that differs from the
    /// deployed one only in `active`, the agent records it and starts or
    /// stops the components. Returns the agent's step results (a failed step
    /// is an [`AgentError::StepFailed`]).
    async fn deploy(
        &self,
        t: &AgentTarget,
        spec: &ServiceSpec,
    ) -> Result<Vec<pb::StepResult>, AgentError>;
    /// Undeploys, keeping `/srv/<service>/`.
    async fn undeploy(
        &self,
        t: &AgentTarget,
        service: &str,
    ) -> Result<Vec<pb::StepResult>, AgentError>;
    /// `component` empty: every component.
    async fn stop(
        &self,
        t: &AgentTarget,
        service: &str,
        component: &str,
    ) -> Result<Vec<pb::StepResult>, AgentError>;
    async fn start(
        &self,
        t: &AgentTarget,
        service: &str,
        component: &str,
    ) -> Result<Vec<pb::StepResult>, AgentError>;
    async fn restart(
        &self,
        t: &AgentTarget,
        service: &str,
        component: &str,
    ) -> Result<Vec<pb::StepResult>, AgentError>;
    async fn list_services(&self, t: &AgentTarget) -> Result<AgentReport, AgentError>;
    async fn health_check(&self, t: &AgentTarget) -> Result<pb::HealthCheckResponse, AgentError>;
    async fn logs(&self, t: &AgentTarget, req: pb::LogsRequest) -> Result<LogStream, AgentError>;
    async fn events(
        &self,
        t: &AgentTarget,
        req: pb::EventsRequest,
    ) -> Result<pb::EventsResponse, AgentError>;
}

// ---------------------------------------------------------------------------
// Mapping

/// Maps an agent's `ListServicesResponse` to the planner's report. A
/// component the agent wants stopped whose container exited counts as
/// stopped on purpose; one it wants running counts as exited (a crash).
pub fn report_from_pb(resp: pb::ListServicesResponse) -> AgentReport {
    let services = resp
        .services
        .into_iter()
        .map(|s| {
            let components = s
                .components
                .into_iter()
                .map(|c| {
                    let state = container_state(&c.desired_state, &c.observed_state);
                    (
                        c.name,
                        ComponentReport {
                            image: c.image,
                            version: c.version,
                            state,
                            restarts: c.restart_count,
                        },
                    )
                })
                .collect();
            (
                s.name,
                ServiceReport {
                    spec_hash: s.spec_hash,
                    active: s.active,
                    components,
                },
            )
        })
        .collect();
    AgentReport {
        services,
        orphans: resp.orphans,
    }
}

/// `observed_state` ("running", "stopped", "exited", "created", "paused",
/// "missing", "unknown") in the light of `desired_state`.
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

/// A failed step of a response, as one line; `None` when every step
/// succeeded or was skipped.
pub fn failed_steps(results: &[pb::StepResult]) -> Option<String> {
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.success && r.status != pb::StepStatus::Skipped as i32)
        .map(|r| {
            if r.error.is_empty() {
                format!("{} failed", r.step)
            } else {
                format!("{}: {}", r.step, r.error)
            }
        })
        .collect();
    (!failed.is_empty()).then(|| failed.join("; "))
}

// ---------------------------------------------------------------------------
// The real thing

type Client = McpAgentServiceClient<InterceptedService<Channel, BearerInterceptor>>;

/// Agents over tonic + TLS 1.3, authenticated with the master's bearer
/// token. Channels are opened lazily per address and reused; a channel is
/// dropped after a transport failure so the next call dials again.
pub struct GrpcAgents {
    connector: TlsConnector,
    auth: BearerInterceptor,
    timeouts: Timeouts,
    channels: Mutex<HashMap<String, Channel>>,
}

impl std::fmt::Debug for GrpcAgents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcAgents")
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl GrpcAgents {
    /// `tls` verifies agents against the fleet CA (and presents the master's
    /// certificate); `auth` carries the master's token.
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        auth: BearerInterceptor,
        timeouts: Timeouts,
    ) -> Self {
        Self {
            connector: TlsConnector::new(tls),
            auth,
            timeouts,
            channels: Mutex::new(HashMap::new()),
        }
    }

    async fn client(&self, t: &AgentTarget) -> Result<Client, AgentError> {
        let cached = self
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&t.address)
            .cloned();
        let channel = match cached {
            Some(c) => c,
            None => {
                let dial = mcp_security::tls::connect_channel(&t.address, self.connector.clone());
                let channel = match tokio::time::timeout(self.timeouts.health_check, dial).await {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        return Err(AgentError::Unreachable {
                            node: t.node.clone(),
                            address: t.address.clone(),
                            detail: error_chain(&e),
                        })
                    }
                    Err(_) => {
                        return Err(AgentError::Unreachable {
                            node: t.node.clone(),
                            address: t.address.clone(),
                            detail: format!(
                                "no connection within {}",
                                humantime::format_duration(self.timeouts.health_check)
                            ),
                        })
                    }
                };
                self.channels
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(t.address.clone(), channel.clone());
                channel
            }
        };
        Ok(McpAgentServiceClient::with_interceptor(
            channel,
            self.auth.clone(),
        ))
    }

    fn forget(&self, t: &AgentTarget) {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&t.address);
    }

    /// Runs one call with a deadline, mapping errors.
    async fn call<T, F, Fut>(
        &self,
        t: &AgentTarget,
        method: &str,
        timeout: Duration,
        f: F,
    ) -> Result<T, AgentError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = self.client(t).await?;
        match tokio::time::timeout(timeout, f(client)).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => {
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown
                ) {
                    self.forget(t);
                }
                Err(AgentError::Rpc {
                    node: t.node.clone(),
                    method: method.to_string(),
                    code: status.code(),
                    message: status.message().to_string(),
                })
            }
            Err(_) => Err(AgentError::Timeout {
                node: t.node.clone(),
                method: method.to_string(),
                after: humantime::format_duration(timeout).to_string(),
            }),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let m = inner.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = inner.source();
    }
    s
}

fn check_steps(
    t: &AgentTarget,
    method: &str,
    results: Vec<pb::StepResult>,
) -> Result<Vec<pb::StepResult>, AgentError> {
    match failed_steps(&results) {
        None => Ok(results),
        Some(detail) => Err(AgentError::StepFailed {
            node: t.node.clone(),
            method: method.to_string(),
            detail,
        }),
    }
}

fn lifecycle(service: &str, component: &str) -> pb::AgentLifecycleRequest {
    pb::AgentLifecycleRequest {
        service_name: service.to_string(),
        component: component.to_string(),
    }
}

#[tonic::async_trait]
impl AgentApi for GrpcAgents {
    async fn deploy(
        &self,
        t: &AgentTarget,
        spec: &ServiceSpec,
    ) -> Result<Vec<pb::StepResult>, AgentError> {
        let req = pb::AgentDeployRequest {
            service: Some(pb::ServiceSpec::from(spec)),
            component: String::new(),
        };
        let r = self
            .call(t, "Deploy", self.timeouts.deploy, |mut c| async move {
                c.deploy(req).await
            })
            .await?;
        check_steps(t, "Deploy", r.results)
    }

    async fn undeploy(
        &self,
        t: &AgentTarget,
        service: &str,
    ) -> Result<Vec<pb::StepResult>, AgentError> {
        let req = pb::AgentUndeployRequest {
            service_name: service.to_string(),
            remove_data: false,
        };
        let r = self
            .call(t, "Undeploy", self.timeouts.undeploy, |mut c| async move {
                c.undeploy(req).await
            })
            .await?;
        check_steps(t, "Undeploy", r.results)
    }

    async fn stop(
        &self,
        t: &AgentTarget,
        service: &str,
        component: &str,
    ) -> Result<Vec<pb::StepResult>, AgentError> {
        let req = lifecycle(service, component);
        let r = self
            .call(t, "Stop", self.timeouts.deploy, |mut c| async move {
                c.stop(req).await
            })
            .await?;
        check_steps(t, "Stop", r.results)
    }

    async fn start(
        &self,
        t: &AgentTarget,
        service: &str,
        component: &str,
    ) -> Result<Vec<pb::StepResult>, AgentError> {
        let req = lifecycle(service, component);
        let r = self
            .call(t, "Start", self.timeouts.deploy, |mut c| async move {
                c.start(req).await
            })
            .await?;
        check_steps(t, "Start", r.results)
    }

    async fn restart(
        &self,
        t: &AgentTarget,
        service: &str,
        component: &str,
    ) -> Result<Vec<pb::StepResult>, AgentError> {
        let req = lifecycle(service, component);
        let r = self
            .call(t, "Restart", self.timeouts.deploy, |mut c| async move {
                c.restart(req).await
            })
            .await?;
        check_steps(t, "Restart", r.results)
    }

    async fn list_services(&self, t: &AgentTarget) -> Result<AgentReport, AgentError> {
        let r = self
            .call(
                t,
                "ListServices",
                self.timeouts.health_check,
                |mut c| async move { c.list_services(pb::ListServicesRequest {}).await },
            )
            .await?;
        Ok(report_from_pb(r))
    }

    async fn health_check(&self, t: &AgentTarget) -> Result<pb::HealthCheckResponse, AgentError> {
        self.call(
            t,
            "HealthCheck",
            self.timeouts.health_check,
            |mut c| async move { c.health_check(pb::HealthCheckRequest {}).await },
        )
        .await
    }

    async fn logs(&self, t: &AgentTarget, req: pb::LogsRequest) -> Result<LogStream, AgentError> {
        let stream = self
            .call(t, "Logs", self.timeouts.health_check, |mut c| async move {
                c.logs(req).await
            })
            .await?;
        Ok(Box::pin(stream))
    }

    async fn events(
        &self,
        t: &AgentTarget,
        req: pb::EventsRequest,
    ) -> Result<pb::EventsResponse, AgentError> {
        self.call(
            t,
            "Events",
            self.timeouts.health_check,
            |mut c| async move { c.events(req).await },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(name: &str, desired: &str, observed: &str) -> pb::ComponentInfo {
        pb::ComponentInfo {
            name: name.into(),
            image: "r/x:v1".into(),
            version: "v1".into(),
            desired_state: desired.into(),
            observed_state: observed.into(),
            restart_count: 2,
            ..Default::default()
        }
    }

    #[test]
    fn list_services_maps_to_planner_report() {
        let resp = pb::ListServicesResponse {
            services: vec![pb::ServiceInfo {
                name: "mcq".into(),
                active: true,
                spec_hash: "abc".into(),
                components: vec![
                    comp("api", "running", "running"),
                    comp("worker", "running", "exited"),
                    comp("cron", "stopped", "exited"),
                    comp("gone", "running", "missing"),
                    comp("odd", "running", "paused"),
                ],
                tier: "worker".into(),
            }],
            orphans: vec!["stray".into()],
        };
        let r = report_from_pb(resp);
        assert_eq!(r.orphans, ["stray"]);
        let s = &r.services["mcq"];
        assert_eq!(s.spec_hash, "abc");
        assert!(s.active);
        let st = |c: &str| s.components[c].state;
        assert_eq!(st("api"), ContainerState::Running);
        assert_eq!(st("worker"), ContainerState::Exited);
        assert_eq!(st("cron"), ContainerState::Stopped);
        assert_eq!(st("gone"), ContainerState::Missing);
        assert_eq!(st("odd"), ContainerState::Other);
        assert_eq!(s.components["api"].restarts, 2);
        assert_eq!(s.components["api"].version, "v1");
    }

    #[test]
    fn skipped_steps_are_not_failures() {
        let ok = pb::StepResult {
            step: "pull".into(),
            success: true,
            status: pb::StepStatus::Succeeded as i32,
            ..Default::default()
        };
        let skipped = pb::StepResult {
            step: "dns".into(),
            success: false,
            status: pb::StepStatus::Skipped as i32,
            ..Default::default()
        };
        assert_eq!(failed_steps(&[ok.clone(), skipped]), None);
        let bad = pb::StepResult {
            step: "cert".into(),
            success: false,
            error: "acme down".into(),
            status: pb::StepStatus::Failed as i32,
            ..Default::default()
        };
        assert_eq!(failed_steps(&[ok, bad]).as_deref(), Some("cert: acme down"));
    }
}
