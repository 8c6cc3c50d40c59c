//! A fake master behind the real TLS stream and AuthLayer, for the TLS and
//! abuse tests: answers ListNodes (with the caller's name) and Register;
//! everything else is unimplemented.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mcp_proto::pb;
use mcp_proto::pb::mcp_master_service_client::McpMasterServiceClient;
use mcp_proto::pb::mcp_master_service_server::{McpMasterService, McpMasterServiceServer};
use mcp_security::abuse::FailureLimits;
use mcp_security::audit::{set_audit_target, target, MemoryAuditSink};
use mcp_security::authz::AuthzTable;
use mcp_security::binding::MasterBinding;
use mcp_security::clock::ManualClock;
use mcp_security::conn::IncomingOptions;
use mcp_security::jwt::Secret;
use mcp_security::layer::{require_caller, AuthLayer, Authorizer};
use mcp_security::registration::{RateLimiter, RateLimits, RegistrationPolicy};
use mcp_security::tls::{self, CertKeyPaths, ClientAuth, TlsConnector};
use mcp_security::token::BearerInterceptor;
use tonic::{Request, Response, Status};

/// A master that answers ListNodes and Register; everything else is
/// unimplemented.
pub struct FakeMaster {
    pub policy: RegistrationPolicy,
}

pub type R<T> = Result<Response<T>, Status>;
pub fn no<T>() -> R<T> {
    Err(Status::unimplemented("not in this test"))
}

#[tonic::async_trait]
impl McpMasterService for FakeMaster {
    async fn deploy(&self, _: Request<pb::MasterDeployRequest>) -> R<pb::MasterDeployResponse> {
        no()
    }
    async fn undeploy(
        &self,
        _: Request<pb::MasterUndeployRequest>,
    ) -> R<pb::MasterUndeployResponse> {
        no()
    }
    async fn status(&self, _: Request<pb::StatusRequest>) -> R<pb::StatusResponse> {
        no()
    }
    async fn sync(&self, _: Request<pb::SyncRequest>) -> R<pb::SyncResponse> {
        no()
    }
    async fn migrate(&self, _: Request<pb::MigrateRequest>) -> R<pb::MigrateResponse> {
        no()
    }
    async fn list_nodes(&self, req: Request<pb::ListNodesRequest>) -> R<pb::ListNodesResponse> {
        let caller = require_caller(&req)?;
        assert!(
            req.metadata().get("authorization").is_none(),
            "token reached the handler"
        );
        Ok(Response::new(pb::ListNodesResponse {
            nodes: vec![pb::NodeInfo {
                name: caller.identity.name.clone(),
                ..Default::default()
            }],
        }))
    }
    async fn create_snapshot(
        &self,
        _: Request<pb::CreateSnapshotRequest>,
    ) -> R<pb::CreateSnapshotResponse> {
        no()
    }
    async fn list_snapshots(
        &self,
        _: Request<pb::ListSnapshotsRequest>,
    ) -> R<pb::ListSnapshotsResponse> {
        no()
    }
    async fn restore(&self, _: Request<pb::RestoreRequest>) -> R<pb::RestoreResponse> {
        no()
    }
    async fn stop_service(
        &self,
        _: Request<pb::ServiceLifecycleRequest>,
    ) -> R<pb::ServiceLifecycleResponse> {
        no()
    }
    async fn start_service(
        &self,
        _: Request<pb::ServiceLifecycleRequest>,
    ) -> R<pb::ServiceLifecycleResponse> {
        no()
    }
    async fn restart_service(
        &self,
        _: Request<pb::ServiceLifecycleRequest>,
    ) -> R<pb::ServiceLifecycleResponse> {
        no()
    }
    type ServiceLogsStream = tokio_stream::wrappers::ReceiverStream<Result<pb::LogLine, Status>>;
    async fn service_logs(&self, _: Request<pb::ServiceLogsRequest>) -> R<Self::ServiceLogsStream> {
        no()
    }
    async fn service_events(&self, _: Request<pb::ServiceEventsRequest>) -> R<pb::EventsResponse> {
        no()
    }
    async fn list_edge_routes(
        &self,
        _: Request<pb::ListMasterEdgeRoutesRequest>,
    ) -> R<pb::ListMasterEdgeRoutesResponse> {
        no()
    }
    async fn deploy_history(
        &self,
        _: Request<pb::DeployHistoryRequest>,
    ) -> R<pb::DeployHistoryResponse> {
        no()
    }
    async fn report_changes(
        &self,
        _: Request<pb::ReportChangesRequest>,
    ) -> R<pb::ReportChangesResponse> {
        no()
    }
    async fn push_service_file(&self, _: Request<pb::PushFileRequest>) -> R<pb::PushFileResponse> {
        no()
    }
    async fn pull_service_file(&self, _: Request<pb::PullFileRequest>) -> R<pb::PullFileResponse> {
        no()
    }
    async fn adopt_service(&self, _: Request<pb::MasterAdoptRequest>) -> R<pb::AdoptResponse> {
        no()
    }
    async fn list_audit(&self, _: Request<pb::ListAuditRequest>) -> R<pb::ListAuditResponse> {
        no()
    }
    async fn forget_node(&self, _: Request<pb::ForgetNodeRequest>) -> R<pb::ForgetNodeResponse> {
        no()
    }
    async fn register(&self, req: Request<pb::RegisterRequest>) -> R<pb::RegisterResponse> {
        let caller = require_caller(&req)?.clone();
        set_audit_target(&req, target(None, Some(&req.get_ref().name)));
        self.policy
            .check_register(&caller.identity, &req.get_ref().name, &Default::default())
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::RegisterResponse { accepted: true }))
    }
    async fn heartbeat(&self, _: Request<pb::HeartbeatRequest>) -> R<pb::HeartbeatResponse> {
        no()
    }
}

#[derive(Default)]
pub struct ServeOpts {
    pub master_binding: Option<MasterBinding>,
    pub failure_limits: Option<FailureLimits>,
    pub incoming: IncomingOptions,
}

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub pki: super::Pki,
    pub other: super::Pki,
    pub keys: super::Keys,
    pub clock: ManualClock,
    pub audit: MemoryAuditSink,
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pki = super::Pki::new(dir.path(), "fleet");
    let other = super::Pki::new(dir.path(), "evil");
    Fixture {
        pki,
        other,
        _dir: dir,
        keys: super::keys(),
        clock: ManualClock::at_unix(super::T0),
        audit: MemoryAuditSink::new(),
    }
}

impl Fixture {
    pub fn token(&self, name: &str, account: mcp_security::AccountType) -> Secret {
        Secret::new(super::token(
            &self.keys.signing,
            name,
            account,
            &[],
            Duration::from_secs(3600),
            &self.clock,
        ))
    }

    /// Starts a master on 127.0.0.1 with the given server certificate.
    pub async fn serve(&self, server: (&Path, &Path), client_auth: ClientAuth) -> SocketAddr {
        self.serve_opts(server, client_auth, ServeOpts::default())
            .await
    }

    /// [`Fixture::serve`] with a master binding, failure limits and
    /// connection limits.
    pub async fn serve_opts(
        &self,
        server: (&Path, &Path),
        client_auth: ClientAuth,
        opts: ServeOpts,
    ) -> SocketAddr {
        let config = tls::server_config(
            &CertKeyPaths {
                cert: server.0.to_path_buf(),
                key: server.1.to_path_buf(),
            },
            &client_auth,
        )
        .unwrap();
        let authorizer = Authorizer::new(
            Arc::new(super::verifier(&self.keys, &self.clock)),
            AuthzTable::standard("mcp-master"),
        )
        .with_rate_limiter(RateLimiter::with_clock(
            RateLimits::default(),
            Arc::new(self.clock.clone()),
        ));
        let authorizer = match opts.master_binding {
            Some(b) => authorizer.with_master_binding(b),
            None => authorizer,
        };
        let mut layer = AuthLayer::new(authorizer).with_audit_sink(Arc::new(self.audit.clone()));
        if let Some(limits) = opts.failure_limits {
            layer = layer.with_failure_limits(limits);
        }
        let listener = tls::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = McpMasterServiceServer::new(FakeMaster {
            policy: RegistrationPolicy::new(["agent-x"], 16),
        });
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .layer(layer)
                .add_service(svc)
                .serve_with_incoming(tls::tls_incoming_with(
                    listener,
                    Arc::new(config),
                    opts.incoming,
                ))
                .await
                .unwrap();
        });
        addr
    }

    pub async fn client(
        &self,
        addr: SocketAddr,
        ca: &Path,
        cert: Option<(&Path, &Path)>,
        token: &Secret,
    ) -> Result<
        McpMasterServiceClient<
            tonic::service::interceptor::InterceptedService<
                tonic::transport::Channel,
                BearerInterceptor,
            >,
        >,
        String,
    > {
        let cert = cert.map(|(c, k)| CertKeyPaths {
            cert: c.to_path_buf(),
            key: k.to_path_buf(),
        });
        let config = tls::client_config(ca, cert.as_ref()).unwrap();
        let channel = tls::connect_channel(
            &format!("https://127.0.0.1:{}", addr.port()),
            TlsConnector::new(Arc::new(config)),
        )
        .await
        .map_err(|e| format!("{e:?}"))?;
        Ok(McpMasterServiceClient::with_interceptor(
            channel,
            BearerInterceptor::new(token).unwrap(),
        ))
    }
}

pub async fn list_nodes<C>(client: &mut McpMasterServiceClient<C>) -> Result<String, Status>
where
    C: tonic::client::GrpcService<tonic::body::Body>,
    C::Error: Into<tonic::codegen::StdError>,
    C::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <C::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let r = client.list_nodes(pb::ListNodesRequest {}).await?;
    Ok(r.into_inner().nodes[0].name.clone())
}
