//! [`GrpcAgents`]: [`AgentApi`] over tonic + TLS 1.3 with the master's
//! bearer token, and the mapping between the protocol messages and
//! [`super::types`] (the only code of the master's agent side that knows
//! the protocol).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use mcp_planner::ComponentReport;
use mcp_planner::ServiceReport;
use mcp_proto::pb;
use mcp_proto::pb::mcp_agent_service_client::McpAgentServiceClient;
use mcp_proto::MAX_MESSAGE_BYTES;
use mcp_security::tls::TlsConnector;
use mcp_security::token::BearerInterceptor;
use mcp_spec::ServiceSpec;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::{
    check_steps, container_state, AgentApi, AgentError, AgentReport, AgentStep, AgentTarget,
    DataStream, EventRow, EventsQuery, FileContent, Health, HealthStatus, ImportData,
    ImportOutcome, LogLine, LogSource, LogStream, LogsQuery, StepState,
};
use crate::config::Timeouts;

// ---------------------------------------------------------------------------
// Mapping

/// Maps an agent's `ListServicesResponse` to the planner's report (see
/// [`container_state`]).
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
                            ports: c
                                .ports
                                .into_iter()
                                .filter_map(|(k, v)| u16::try_from(v).ok().map(|v| (k, v)))
                                .collect(),
                            routes: c.routes.into_iter().map(route_report).collect(),
                            health: mcp_planner::ComponentHealth::parse(&c.health),
                            health_detail: c.health_detail,
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

fn route_report(r: pb::RouteInfo) -> mcp_planner::RouteReport {
    mcp_planner::RouteReport {
        route: r.route,
        hostname: r.hostname,
        listen_port: u16::try_from(r.listen_port).unwrap_or_default(),
        mode: r.mode,
        url: r.url,
        proxy_address: r.proxy_address,
        backend: r.backend,
        cert_serial: r.cert_serial,
        cert_expires: r.cert_expires,
    }
}

/// A step as the agent sent it: `Skipped` by status; failed by status or
/// by `success = false`.
pub fn step_from_pb(r: pb::StepResult) -> AgentStep {
    let state = if r.status == pb::StepStatus::Skipped as i32 {
        StepState::Skipped
    } else if !r.success || r.status == pb::StepStatus::Failed as i32 {
        StepState::Failed(r.error)
    } else {
        StepState::Done
    };
    AgentStep {
        step: r.step,
        state,
        detail: r.detail,
    }
}

fn steps_from_pb(v: Vec<pb::StepResult>) -> Vec<AgentStep> {
    v.into_iter().map(step_from_pb).collect()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn opt_time(t: Option<SystemTime>) -> String {
    t.map(rfc3339).unwrap_or_default()
}

fn opt_string(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn event_from_pb(t: &AgentTarget, e: pb::EventInfo) -> Result<EventRow, AgentError> {
    let time = humantime::parse_rfc3339_weak(&e.timestamp).map_err(|err| AgentError::BadReply {
        node: t.node.clone(),
        method: "Events".to_string(),
        detail: format!("event time {:?}: {err}", e.timestamp),
    })?;
    Ok(EventRow {
        node: if e.node.is_empty() {
            t.node.clone()
        } else {
            e.node
        },
        service: e.service,
        component: e.component,
        kind: e.kind,
        prev_state: opt_string(e.prev_state),
        new_state: opt_string(e.new_state),
        time,
        detail: e.detail,
    })
}

fn log_from_pb(l: pb::LogLine) -> LogLine {
    LogLine {
        component: l.component,
        line: l.line,
        source: if l.stream == "stderr" {
            LogSource::Stderr
        } else {
            LogSource::Stdout
        },
    }
}

fn lifecycle(service: &str, component: Option<&str>) -> pb::AgentLifecycleRequest {
    pb::AgentLifecycleRequest {
        service_name: service.to_string(),
        component: component.unwrap_or_default().to_string(),
    }
}

// ---------------------------------------------------------------------------
// The client

type Client = McpAgentServiceClient<InterceptedService<Channel, BearerInterceptor>>;

/// Agents over tonic + TLS 1.3, authenticated with the master's bearer
/// token. Channels are opened lazily per address and reused; a channel is
/// dropped after a transport failure so the next call dials again. Messages
/// up to [`MAX_MESSAGE_BYTES`] pass both ways (a file at the agent's file
/// limit goes through).
///
/// An agent's server certificate is verified against the fleet CA and the
/// host of its address, or, with [`GrpcAgents::verify_node_names`], against
/// its node name (what the master daemon does by default, `[server]
/// agent_server_name`).
pub struct GrpcAgents {
    connector: TlsConnector,
    auth: BearerInterceptor,
    timeouts: Timeouts,
    node_names: bool,
    channels: Mutex<HashMap<(String, String), Channel>>,
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
            node_names: false,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies each agent's server certificate against its node name (a
    /// DNS SAN equal to the name) instead of the host of its address: a
    /// server at the address that holds another node's certificate, or
    /// none of the fleet's, gets no call (and no token).
    pub fn verify_node_names(mut self) -> Self {
        self.node_names = true;
        self
    }

    fn key(&self, t: &AgentTarget) -> (String, String) {
        let name = if self.node_names { &t.node } else { "" };
        (t.address.clone(), name.to_string())
    }

    async fn client(&self, t: &AgentTarget) -> Result<Client, AgentError> {
        let key = self.key(t);
        let cached = self
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        let channel = match cached {
            Some(c) => c,
            None => {
                let connector = if self.node_names {
                    self.connector
                        .clone()
                        .with_server_name(&t.node)
                        .map_err(|e| AgentError::Unreachable {
                            node: t.node.clone(),
                            address: t.address.clone(),
                            detail: e.to_string(),
                        })?
                } else {
                    self.connector.clone()
                };
                let dial = mcp_security::tls::connect_channel(&t.address, connector);
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
                    .insert(key, channel.clone());
                channel
            }
        };
        Ok(
            McpAgentServiceClient::with_interceptor(channel, self.auth.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    }

    fn forget(&self, t: &AgentTarget) {
        let key = self.key(t);
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
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
                Err(rpc_error(t, method, &status))
            }
            Err(_) => Err(AgentError::Timeout {
                node: t.node.clone(),
                method: method.to_string(),
                after: humantime::format_duration(timeout).to_string(),
            }),
        }
    }
}

fn rpc_error(t: &AgentTarget, method: &str, status: &tonic::Status) -> AgentError {
    AgentError::Rpc {
        node: t.node.clone(),
        method: method.to_string(),
        code: status.code(),
        message: status.message().to_string(),
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

#[tonic::async_trait]
impl AgentApi for GrpcAgents {
    async fn deploy(
        &self,
        t: &AgentTarget,
        spec: &ServiceSpec,
        component: Option<&str>,
    ) -> Result<Vec<AgentStep>, AgentError> {
        let req = pb::AgentDeployRequest {
            service: Some(pb::ServiceSpec::from(spec)),
            component: component.unwrap_or_default().to_string(),
        };
        let r = self
            .call(t, "Deploy", self.timeouts.deploy, |mut c| async move {
                c.deploy(req).await
            })
            .await?;
        check_steps(t, "Deploy", steps_from_pb(r.results))
    }

    async fn undeploy(
        &self,
        t: &AgentTarget,
        service: &str,
        remove_data: bool,
    ) -> Result<Vec<AgentStep>, AgentError> {
        let req = pb::AgentUndeployRequest {
            service_name: service.to_string(),
            remove_data,
        };
        let r = self
            .call(t, "Undeploy", self.timeouts.undeploy, |mut c| async move {
                c.undeploy(req).await
            })
            .await?;
        check_steps(t, "Undeploy", steps_from_pb(r.results))
    }

    async fn stop(
        &self,
        t: &AgentTarget,
        service: &str,
        component: Option<&str>,
    ) -> Result<Vec<AgentStep>, AgentError> {
        let req = lifecycle(service, component);
        let r = self
            .call(t, "Stop", self.timeouts.deploy, |mut c| async move {
                c.stop(req).await
            })
            .await?;
        check_steps(t, "Stop", steps_from_pb(r.results))
    }

    async fn start(
        &self,
        t: &AgentTarget,
        service: &str,
        component: Option<&str>,
    ) -> Result<Vec<AgentStep>, AgentError> {
        let req = lifecycle(service, component);
        let r = self
            .call(t, "Start", self.timeouts.deploy, |mut c| async move {
                c.start(req).await
            })
            .await?;
        check_steps(t, "Start", steps_from_pb(r.results))
    }

    async fn restart(
        &self,
        t: &AgentTarget,
        service: &str,
        component: Option<&str>,
    ) -> Result<Vec<AgentStep>, AgentError> {
        let req = lifecycle(service, component);
        let r = self
            .call(t, "Restart", self.timeouts.deploy, |mut c| async move {
                c.restart(req).await
            })
            .await?;
        check_steps(t, "Restart", steps_from_pb(r.results))
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

    async fn health_check(&self, t: &AgentTarget) -> Result<Health, AgentError> {
        let r = self
            .call(
                t,
                "HealthCheck",
                self.timeouts.health_check,
                |mut c| async move { c.health_check(pb::HealthCheckRequest {}).await },
            )
            .await?;
        Ok(Health {
            status: HealthStatus::parse(&r.status),
            containers: r.containers,
        })
    }

    async fn logs(&self, t: &AgentTarget, q: LogsQuery) -> Result<LogStream, AgentError> {
        let req = pb::LogsRequest {
            service_name: q.service,
            component: q.component.unwrap_or_default(),
            follow: q.follow,
            tail: q.tail.unwrap_or(0),
            since: opt_time(q.since),
        };
        let stream = self
            .call(t, "Logs", self.timeouts.health_check, |mut c| async move {
                c.logs(req).await
            })
            .await?;
        let target = t.clone();
        Ok(Box::pin(stream.map(move |item| {
            item.map(log_from_pb)
                .map_err(|s| rpc_error(&target, "Logs", &s))
        })))
    }

    async fn events(&self, t: &AgentTarget, q: EventsQuery) -> Result<Vec<EventRow>, AgentError> {
        let req = pb::EventsRequest {
            service_name: q.service.unwrap_or_default(),
            component: q.component.unwrap_or_default(),
            since: opt_time(q.since),
            limit: q.limit.unwrap_or(0),
        };
        let r = self
            .call(
                t,
                "Events",
                self.timeouts.health_check,
                |mut c| async move { c.events(req).await },
            )
            .await?;
        r.events.into_iter().map(|e| event_from_pb(t, e)).collect()
    }

    async fn push_file(
        &self,
        t: &AgentTarget,
        service: &str,
        path: &str,
        file: FileContent,
    ) -> Result<(), AgentError> {
        let req = pb::PushFileRequest {
            service: service.to_string(),
            path: path.to_string(),
            content: file.content,
            mode: file.mode,
        };
        let r = self
            .call(t, "PushFile", self.timeouts.deploy, |mut c| async move {
                c.push_file(req).await
            })
            .await?;
        if r.success {
            Ok(())
        } else {
            Err(AgentError::StepFailed {
                node: t.node.clone(),
                method: "PushFile".to_string(),
                detail: r.error,
            })
        }
    }

    async fn pull_file(
        &self,
        t: &AgentTarget,
        service: &str,
        path: &str,
    ) -> Result<FileContent, AgentError> {
        let req = pb::PullFileRequest {
            service: service.to_string(),
            path: path.to_string(),
        };
        let r = self
            .call(t, "PullFile", self.timeouts.deploy, |mut c| async move {
                c.pull_file(req).await
            })
            .await?;
        if r.error.is_empty() {
            Ok(FileContent {
                content: r.content,
                mode: r.mode,
            })
        } else {
            Err(AgentError::StepFailed {
                node: t.node.clone(),
                method: "PullFile".to_string(),
                detail: r.error,
            })
        }
    }

    async fn adopt(&self, t: &AgentTarget, service: &str) -> Result<Vec<AgentStep>, AgentError> {
        let req = pb::AdoptRequest {
            service: service.to_string(),
        };
        let r = self
            .call(t, "Adopt", self.timeouts.deploy, |mut c| async move {
                c.adopt(req).await
            })
            .await?;
        check_steps(t, "Adopt", steps_from_pb(r.results))
    }

    async fn export_service_data(
        &self,
        t: &AgentTarget,
        service: &str,
    ) -> Result<DataStream, AgentError> {
        self.export_data(t, service).await
    }

    async fn import_service_data(
        &self,
        t: &AgentTarget,
        service: &str,
        data: ImportData,
    ) -> Result<ImportOutcome, AgentError> {
        self.import_data(t, service, data).await
    }
}

mod data;
#[cfg(test)]
mod tests;
