//! The agent's gRPC server: [`AgentService`] maps `mcp.v1.McpAgentService`
//! onto [`Agent`], and [`serve`] is the one place where the transport is
//! assembled: TLS 1.3 ([`mcp_security::tls`]) and the authentication /
//! authorization / audit layer ([`mcp_security::layer::AuthLayer`] with the
//! standard per-RPC table) around the service.
//!
//! Error mapping (every message names the node, service and component):
//!
//! | agent error | gRPC status |
//! |---|---|
//! | invalid spec (every violation listed), bad request field | `InvalidArgument` |
//! | service / component / container / file not found | `NotFound` |
//! | wrong node, edge node, unmanaged container in the way, already managed, image missing | `FailedPrecondition` |
//! | container name taken by another service | `AlreadyExists` |
//! | no free host port, file too large | `ResourceExhausted` |
//! | podman timed out | `DeadlineExceeded` |
//! | podman not runnable, a proxy or certificate issuer failing | `Unavailable` |
//! | fleet RPCs this agent cannot do yet | `Unimplemented` |
//! | ExportServiceData / ImportServiceData | see `server/data.rs` |
//! | anything else | `Internal` |

mod data;
mod proxy;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use mcp_proto::pb;
use mcp_proto::pb::mcp_agent_service_server::{McpAgentService, McpAgentServiceServer};
use mcp_runtime::{ContainerRuntime, LogOptions, LogSource, RuntimeError};
use mcp_security::abuse::FailureLimits;
use mcp_security::audit::{set_audit_target, target};
use mcp_security::authz::AuthzTable;
use mcp_security::binding::MasterBinding;
use mcp_security::identity::TokenVerifier;
use mcp_security::jwt::{JwtVerifier, PublicKey};
use mcp_security::layer::{AuthLayer, Authorizer};
use mcp_security::tls::{self, CertKeyPaths, ClientAuth, IncomingOptions};
use mcp_spec::ServiceSpec;
use tokio::net::TcpListener;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::agent::{Agent, AgentError, ComponentStatus, ServiceStatus, Step, StepOutcome};
use crate::clock::Timestamp;
use crate::config::Config;
use crate::files::FileError;
use crate::registry::{EventQuery, RegistryError};

/// Failure to set up or run the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("agent TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("agent token verification: issuer key {}: {message}", path.display())]
    IssuerKey {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("agent gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// TLS and caller authentication for the server: what [`serve`] plugs in.
pub struct ServerSecurity {
    tls: Arc<rustls::ServerConfig>,
    layer: AuthLayer,
    incoming: IncomingOptions,
}

/// The hardening [`ServerSecurity::with_options`] switches on (all of it
/// in [`ServerSecurity::from_config`]; none in [`ServerSecurity::new`]).
#[derive(Debug, Clone, Default)]
pub struct SecurityOptions {
    /// Master-class calls need the master's client certificate (naming
    /// this) and a token bound to it (`mcp_security::binding`).
    pub master_binding: Option<MasterBinding>,
    /// Per-peer limits on refused calls (`mcp_security::abuse`).
    pub failure_limits: Option<FailureLimits>,
    /// Handshake and HTTP/2 preface timeouts, connections per peer.
    pub incoming: IncomingOptions,
}

impl std::fmt::Debug for ServerSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSecurity").finish_non_exhaustive()
    }
}

impl ServerSecurity {
    /// From `[server]` (certificate, key; client certificates optional but
    /// verified against `ca_cert` when presented, since operators using
    /// `--direct` have none; the preface timeout, connection and refusal
    /// limits) and `[auth]` (Ed25519 JWTs of the configured issuer and
    /// audience, with the maximum lifetime and leeway; `master_identity` is
    /// the master for the authorization table, and its calls need a client
    /// certificate naming `master_cert_name` and a token bound to it).
    pub fn from_config(config: &Config) -> Result<ServerSecurity, ServeError> {
        let tls = tls::server_config(
            &CertKeyPaths {
                cert: config.server.tls_cert.clone(),
                key: config.server.tls_key.clone(),
            },
            &ClientAuth::Optional(config.server.ca_cert.clone()),
        )?;
        let key = PublicKey::from_file(&config.auth.issuer_public_key).map_err(|e| {
            ServeError::IssuerKey {
                path: config.auth.issuer_public_key.clone(),
                message: e.to_string(),
            }
        })?;
        let verifier = JwtVerifier::new(key, &config.auth.issuer, &config.auth.audience)
            .with_max_lifetime(config.auth.max_token_lifetime)
            .with_leeway(config.auth.leeway.as_secs());
        let options = SecurityOptions {
            master_binding: Some(MasterBinding::new(config.auth.master_cert_name())),
            failure_limits: Some(config.server.failure_limits()),
            incoming: config.server.incoming_options(),
        };
        Ok(ServerSecurity::with_options(
            tls,
            Arc::new(verifier),
            &config.auth.master_identity,
            options,
        ))
    }

    /// From parts (tests, other verifiers): the standard authorization
    /// table of docs/SECURITY.md with `master_identity` as the master,
    /// recognised by its token alone; no refusal limits; the default
    /// connection limits.
    pub fn new(
        tls: rustls::ServerConfig,
        verifier: Arc<dyn TokenVerifier>,
        master_identity: &str,
    ) -> ServerSecurity {
        Self::with_options(tls, verifier, master_identity, SecurityOptions::default())
    }

    /// [`ServerSecurity::new`] with the hardening of `options`.
    pub fn with_options(
        tls: rustls::ServerConfig,
        verifier: Arc<dyn TokenVerifier>,
        master_identity: &str,
        options: SecurityOptions,
    ) -> ServerSecurity {
        let mut authorizer = Authorizer::new(verifier, AuthzTable::standard(master_identity));
        if let Some(binding) = options.master_binding {
            authorizer = authorizer.with_master_binding(binding);
        }
        let mut layer = AuthLayer::new(authorizer);
        if let Some(limits) = options.failure_limits {
            layer = layer.with_failure_limits(limits);
        }
        ServerSecurity {
            tls: Arc::new(tls),
            layer,
            incoming: options.incoming,
        }
    }
}

/// Binds the configured `[server] grpc_addr` (and nothing else).
pub async fn bind(config: &Config) -> Result<TcpListener, ServeError> {
    let addr = config.server.grpc_addr;
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Serves the agent on `listener` over TLS, every call authenticated,
/// authorized and audited, until `shutdown` resolves (in-flight calls are
/// finished first).
pub async fn serve<R: ContainerRuntime + 'static>(
    agent: Arc<Agent<R>>,
    listener: TcpListener,
    security: ServerSecurity,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let incoming = tls::tls_incoming_with(listener, security.tls, security.incoming);
    tonic::transport::Server::builder()
        .layer(security.layer)
        .add_service(service(agent))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// How many events an Events request without a `limit` returns (the most
/// recent ones, oldest first).
pub const DEFAULT_EVENTS_LIMIT: usize = 100;

/// The tonic service over `agent`, with the message limits every MCP hop
/// shares ([`mcp_proto::MAX_MESSAGE_BYTES`], decoding and encoding), so a
/// file at the agent's file limit fits in one PushFile or PullFile.
pub fn service<R: ContainerRuntime + 'static>(
    agent: Arc<Agent<R>>,
) -> McpAgentServiceServer<AgentService<R>> {
    McpAgentServiceServer::new(AgentService::new(agent))
        .max_decoding_message_size(mcp_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(mcp_proto::MAX_MESSAGE_BYTES)
}

/// The tonic service over an [`Agent`].
pub struct AgentService<R> {
    agent: Arc<Agent<R>>,
}

impl<R> AgentService<R> {
    pub fn new(agent: Arc<Agent<R>>) -> AgentService<R> {
        AgentService { agent }
    }
}

/// Stop, Start and Restart differ only in the agent call.
#[derive(Clone, Copy)]
enum Lifecycle {
    Stop,
    Start,
    Restart,
}

impl<Rt: ContainerRuntime + 'static> AgentService<Rt> {
    async fn lifecycle(
        &self,
        req: Request<pb::AgentLifecycleRequest>,
        op: Lifecycle,
    ) -> R<pb::AgentLifecycleResponse> {
        let m = req.get_ref();
        set_audit_target(&req, target(Some(&m.service_name), Some(self.agent.node())));
        let (service, component) = (m.service_name.as_str(), opt(&m.component));
        let out = match op {
            Lifecycle::Stop => self.agent.stop(service, component).await,
            Lifecycle::Start => self.agent.start(service, component).await,
            Lifecycle::Restart => self.agent.restart(service, component).await,
        }
        .map_err(|e| status(&e))?;
        Ok(Response::new(pb::AgentLifecycleResponse {
            results: steps(&out),
        }))
    }
}

/// The gRPC status of an agent error.
pub fn status(e: &AgentError) -> Status {
    let msg = e.to_string();
    match e {
        AgentError::InvalidSpec { .. } | AgentError::InvalidArgument { .. } => {
            Status::invalid_argument(msg)
        }
        AgentError::ServiceNotFound { .. } | AgentError::ComponentNotFound { .. } => {
            Status::not_found(msg)
        }
        AgentError::FailedPrecondition { .. } => Status::failed_precondition(msg),
        AgentError::Unsupported { .. } => Status::unimplemented(msg),
        AgentError::Registry(r) => match r {
            RegistryError::ServiceNotFound { .. } | RegistryError::ComponentNotFound { .. } => {
                Status::not_found(msg)
            }
            RegistryError::ContainerNameTaken { .. } => Status::already_exists(msg),
            RegistryError::PortsExhausted { .. } => Status::resource_exhausted(msg),
            _ => Status::internal(msg),
        },
        AgentError::Runtime { source, .. } => match source {
            RuntimeError::NotFound { .. } => Status::not_found(msg),
            RuntimeError::AlreadyExists { .. } => Status::already_exists(msg),
            RuntimeError::ImageNotFound { .. } | RuntimeError::WrongState { .. } => {
                Status::failed_precondition(msg)
            }
            RuntimeError::Invalid { .. } => Status::invalid_argument(msg),
            RuntimeError::Timeout { .. } => Status::deadline_exceeded(msg),
            RuntimeError::Spawn { .. } => Status::unavailable(msg),
            _ => Status::internal(msg),
        },
        AgentError::Files(f) => match f {
            FileError::InvalidService { .. }
            | FileError::InvalidPath { .. }
            | FileError::InvalidMode { .. }
            | FileError::Escape { .. } => Status::invalid_argument(msg),
            FileError::NotFound { .. } => Status::not_found(msg),
            FileError::NotAFile { .. } => Status::failed_precondition(msg),
            FileError::TooLarge { .. } => Status::resource_exhausted(msg),
            FileError::Io { .. } => Status::internal(msg),
        },
        AgentError::Data(d) => data::data_status(d),
        AgentError::Integration { .. } => Status::unavailable(msg),
        // The spec is held by the master until it changes: no hot loop.
        AgentError::Unhealthy { .. } => Status::failed_precondition(msg),
        AgentError::Internal { .. } => Status::internal(msg),
    }
}

fn not_yet(rpc: &str, capability: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} needs {capability}, which this agent does not have yet"
    ))
}

fn opt(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn step_result(s: &Step) -> pb::StepResult {
    let (success, error, status) = match &s.outcome {
        StepOutcome::Done | StepOutcome::Skipped => {
            (true, String::new(), pb::StepStatus::Succeeded)
        }
        StepOutcome::Failed(e) => (false, e.clone(), pb::StepStatus::Failed),
    };
    pb::StepResult {
        step: s.step.clone(),
        success,
        error,
        status: status as i32,
        detail: s.detail.clone(),
    }
}

fn steps(v: &[Step]) -> Vec<pb::StepResult> {
    v.iter().map(step_result).collect()
}

fn component_info(c: &ComponentStatus) -> pb::ComponentInfo {
    pb::ComponentInfo {
        name: c.name.clone(),
        image: c.image.clone(),
        version: c.version.clone(),
        desired_state: c.desired.as_str().to_string(),
        observed_state: c.observed.as_str().to_string(),
        restart_count: c.restart_count,
        started: c
            .started
            .map(|t| Timestamp::from_system(t).to_rfc3339())
            .unwrap_or_default(),
        ports: c
            .ports
            .iter()
            .map(|(k, v)| (k.clone(), u32::from(*v)))
            .collect(),
        routes: c.routes.iter().map(proxy::route_info).collect(),
        health: c.health.map(|h| h.as_str().to_string()).unwrap_or_default(),
        health_detail: c.health_detail.clone(),
    }
}

fn service_info(s: &ServiceStatus) -> pb::ServiceInfo {
    pb::ServiceInfo {
        name: s.name.clone(),
        active: s.active,
        spec_hash: s.spec_hash.clone(),
        components: s.components.iter().map(component_info).collect(),
        tier: s.tier.as_str().to_string(),
    }
}

fn parse_time(field: &str, s: &str) -> Result<Option<Timestamp>, Status> {
    if s.is_empty() {
        return Ok(None);
    }
    humantime::parse_rfc3339_weak(s)
        .map(|t| Some(Timestamp::from_system(t)))
        .map_err(|e| {
            Status::invalid_argument(format!(
                "{field} must be an RFC 3339 time, found {s:?}: {e}"
            ))
        })
}

type R<T> = Result<Response<T>, Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<Rt: ContainerRuntime + 'static> McpAgentService for AgentService<Rt> {
    async fn deploy(&self, req: Request<pb::AgentDeployRequest>) -> R<pb::AgentDeployResponse> {
        let node = self.agent.node().to_string();
        let msg = req.get_ref().clone();
        let Some(spec) = msg.service else {
            return Err(Status::invalid_argument(
                "deploy: the service spec is missing",
            ));
        };
        let name = spec.name.clone();
        set_audit_target(&req, target(Some(&name), Some(&node)));
        let spec = ServiceSpec::try_from(spec)
            .map_err(|e| Status::invalid_argument(format!("service {name:?}: {e}")))?;
        let out = self
            .agent
            .deploy(spec, opt(&msg.component))
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::AgentDeployResponse {
            results: steps(&out.steps),
            components: out.status.components.iter().map(component_info).collect(),
        }))
    }

    async fn undeploy(
        &self,
        req: Request<pb::AgentUndeployRequest>,
    ) -> R<pb::AgentUndeployResponse> {
        let m = req.get_ref();
        set_audit_target(&req, target(Some(&m.service_name), Some(self.agent.node())));
        let out = self
            .agent
            .undeploy(&m.service_name, m.remove_data)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::AgentUndeployResponse {
            results: steps(&out),
        }))
    }

    async fn stop(&self, req: Request<pb::AgentLifecycleRequest>) -> R<pb::AgentLifecycleResponse> {
        self.lifecycle(req, Lifecycle::Stop).await
    }

    async fn start(
        &self,
        req: Request<pb::AgentLifecycleRequest>,
    ) -> R<pb::AgentLifecycleResponse> {
        self.lifecycle(req, Lifecycle::Start).await
    }

    async fn restart(
        &self,
        req: Request<pb::AgentLifecycleRequest>,
    ) -> R<pb::AgentLifecycleResponse> {
        self.lifecycle(req, Lifecycle::Restart).await
    }

    async fn list_services(
        &self,
        _req: Request<pb::ListServicesRequest>,
    ) -> R<pb::ListServicesResponse> {
        let inv = self.agent.list_services().await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::ListServicesResponse {
            services: inv.services.iter().map(service_info).collect(),
            orphans: inv.orphans,
        }))
    }

    async fn adopt(&self, req: Request<pb::AdoptRequest>) -> R<pb::AdoptResponse> {
        let m = req.get_ref();
        set_audit_target(&req, target(Some(&m.service), Some(self.agent.node())));
        let out = self.agent.adopt(&m.service).await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::AdoptResponse {
            results: steps(&out),
        }))
    }

    type LogsStream = BoxStream<pb::LogLine>;

    async fn logs(&self, req: Request<pb::LogsRequest>) -> R<Self::LogsStream> {
        let m = req.get_ref();
        set_audit_target(&req, target(Some(&m.service_name), Some(self.agent.node())));
        let opts = LogOptions {
            follow: m.follow,
            tail: (m.tail > 0).then(|| usize::try_from(m.tail).unwrap_or(usize::MAX)),
            since: parse_time("since", &m.since)?.map(Timestamp::to_system),
        };
        let stream = self
            .agent
            .logs(&m.service_name, opt(&m.component), opts)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(Box::pin(stream.map(|item| {
            item.map(|(component, l)| pb::LogLine {
                component,
                line: l.line,
                stream: match l.source {
                    LogSource::Stdout => "stdout",
                    LogSource::Stderr => "stderr",
                }
                .to_string(),
            })
            .map_err(|e| status(&e))
        }))))
    }

    async fn events(&self, req: Request<pb::EventsRequest>) -> R<pb::EventsResponse> {
        let m = req.get_ref();
        set_audit_target(&req, target(opt(&m.service_name), Some(self.agent.node())));
        if m.service_name.is_empty() && !m.component.is_empty() {
            return Err(Status::invalid_argument(
                "events: a component needs its service_name",
            ));
        }
        let query = EventQuery {
            service: opt(&m.service_name).map(str::to_string),
            component: opt(&m.component).map(str::to_string),
            since: parse_time("since", &m.since)?,
            limit: Some(if m.limit == 0 {
                DEFAULT_EVENTS_LIMIT
            } else {
                usize::try_from(m.limit).unwrap_or(usize::MAX)
            }),
        };
        let events = self.agent.events(query).await.map_err(|e| status(&e))?;
        let node = self.agent.node().to_string();
        Ok(Response::new(pb::EventsResponse {
            events: events
                .into_iter()
                .map(|e| pb::EventInfo {
                    node: node.clone(),
                    service: e.service,
                    component: e.component,
                    prev_state: e.prev_state.unwrap_or_default(),
                    new_state: e.new_state.unwrap_or_default(),
                    timestamp: e.time.to_rfc3339(),
                    kind: e.kind.as_str().to_string(),
                    detail: e.detail,
                })
                .collect(),
        }))
    }

    async fn push_file(&self, req: Request<pb::PushFileRequest>) -> R<pb::PushFileResponse> {
        set_audit_target(
            &req,
            target(Some(&req.get_ref().service), Some(self.agent.node())),
        );
        let m = req.into_inner();
        self.agent
            .push_file(&m.service, &m.path, m.content, m.mode)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::PushFileResponse {
            success: true,
            error: String::new(),
        }))
    }

    async fn pull_file(&self, req: Request<pb::PullFileRequest>) -> R<pb::PullFileResponse> {
        let m = req.get_ref();
        set_audit_target(&req, target(Some(&m.service), Some(self.agent.node())));
        let (content, mode) = self
            .agent
            .pull_file(&m.service, &m.path)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::PullFileResponse {
            content,
            mode,
            error: String::new(),
        }))
    }

    async fn health_check(
        &self,
        _req: Request<pb::HealthCheckRequest>,
    ) -> R<pb::HealthCheckResponse> {
        let h = self.agent.health().await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::HealthCheckResponse {
            status: h.status.as_str().to_string(),
            containers: h.containers,
        }))
    }

    async fn setup_edge_route(
        &self,
        _req: Request<pb::SetupEdgeRouteRequest>,
    ) -> R<pb::SetupEdgeRouteResponse> {
        Err(not_yet(
            "SetupEdgeRoute",
            "edge routing (a reverse-proxy adapter and certificate issuance)",
        ))
    }

    async fn remove_edge_route(
        &self,
        _req: Request<pb::RemoveEdgeRouteRequest>,
    ) -> R<pb::RemoveEdgeRouteResponse> {
        Err(not_yet(
            "RemoveEdgeRoute",
            "edge routing (a reverse-proxy adapter)",
        ))
    }

    async fn list_edge_routes(
        &self,
        _req: Request<pb::ListEdgeRoutesRequest>,
    ) -> R<pb::ListEdgeRoutesResponse> {
        Err(not_yet(
            "ListEdgeRoutes",
            "edge routing (a reverse-proxy adapter)",
        ))
    }

    type ExportServiceDataStream = BoxStream<pb::ServiceDataChunk>;

    async fn export_service_data(
        &self,
        req: Request<pb::ExportServiceDataRequest>,
    ) -> R<Self::ExportServiceDataStream> {
        data::export(&self.agent, req).await.map(Response::new)
    }

    async fn import_service_data(
        &self,
        req: Request<Streaming<pb::ImportServiceDataChunk>>,
    ) -> R<pb::ImportServiceDataResponse> {
        data::import(&self.agent, req).await.map(Response::new)
    }

    async fn add_proxy_route(
        &self,
        req: Request<pb::AddProxyRouteRequest>,
    ) -> R<pb::AddProxyRouteResponse> {
        let net = self.agent.networking();
        let route = proxy::route_from_pb(req.into_inner().route, net.fleet_ca.as_deref())
            .map_err(|e| status(&e))?;
        let out = self
            .agent
            .add_proxy_route(route)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::AddProxyRouteResponse {
            success: true,
            error: String::new(),
            results: steps(&out),
        }))
    }

    async fn remove_proxy_route(
        &self,
        req: Request<pb::RemoveProxyRouteRequest>,
    ) -> R<pb::RemoveProxyRouteResponse> {
        let key = proxy::key_from_pb(req.get_ref()).map_err(|e| status(&e))?;
        let out = self
            .agent
            .remove_proxy_route(key)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::RemoveProxyRouteResponse {
            success: true,
            error: String::new(),
            results: steps(&out),
        }))
    }

    async fn list_proxy_routes(
        &self,
        _req: Request<pb::ListProxyRoutesRequest>,
    ) -> R<pb::ListProxyRoutesResponse> {
        let (routes, certs) = self
            .agent
            .routes_and_certificates()
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::ListProxyRoutesResponse {
            routes: routes
                .iter()
                .map(|r| {
                    let cert = r
                        .cert_hostname
                        .as_ref()
                        .and_then(|h| certs.iter().find(|c| &c.hostname == h));
                    proxy::route_to_pb(r, cert)
                })
                .collect(),
        }))
    }
}
