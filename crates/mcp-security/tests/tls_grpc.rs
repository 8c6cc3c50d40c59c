//! Real TLS on 127.0.0.1: a tonic server behind `tls_incoming` and
//! `AuthLayer`, tonic clients through `TlsConnector`, certificates made in
//! the test with rcgen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

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
use mcp_security::identity::AccountType::{Human, System};
use mcp_security::jwt::Secret;
use mcp_security::layer::{require_caller, AuthLayer, Authorizer};
use mcp_security::registration::{RateLimiter, RateLimits, RegistrationPolicy};
use mcp_security::tls::{self, CertKeyPaths, ClientAuth, TlsConnector, TlsError};
use mcp_security::token::BearerInterceptor;
use tonic::{Code, Request, Response, Status};

/// A master that answers ListNodes and Register; everything else is
/// unimplemented.
struct FakeMaster {
    policy: RegistrationPolicy,
}

type R<T> = Result<Response<T>, Status>;
fn no<T>() -> R<T> {
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
    async fn push_service_file(&self, _: Request<pb::PushFileRequest>) -> R<pb::PushFileResponse> {
        no()
    }
    async fn pull_service_file(&self, _: Request<pb::PullFileRequest>) -> R<pb::PullFileResponse> {
        no()
    }
    async fn adopt_service(&self, _: Request<pb::MasterAdoptRequest>) -> R<pb::AdoptResponse> {
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
struct ServeOpts {
    master_binding: Option<MasterBinding>,
    failure_limits: Option<FailureLimits>,
    incoming: IncomingOptions,
}

struct Fixture {
    _dir: tempfile::TempDir,
    pki: common::Pki,
    other: common::Pki,
    keys: common::Keys,
    clock: ManualClock,
    audit: MemoryAuditSink,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::Pki::new(dir.path(), "fleet");
    let other = common::Pki::new(dir.path(), "evil");
    Fixture {
        pki,
        other,
        _dir: dir,
        keys: common::keys(),
        clock: ManualClock::at_unix(common::T0),
        audit: MemoryAuditSink::new(),
    }
}

impl Fixture {
    fn token(&self, name: &str, account: mcp_security::AccountType) -> Secret {
        Secret::new(common::token(
            &self.keys.signing,
            name,
            account,
            &[],
            Duration::from_secs(3600),
            &self.clock,
        ))
    }

    /// Starts a master on 127.0.0.1 with the given server certificate.
    async fn serve(&self, server: (&Path, &Path), client_auth: ClientAuth) -> SocketAddr {
        self.serve_opts(server, client_auth, ServeOpts::default())
            .await
    }

    /// [`Fixture::serve`] with a master binding, failure limits and
    /// connection limits.
    async fn serve_opts(
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
            Arc::new(common::verifier(&self.keys, &self.clock)),
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

    async fn client(
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

async fn list_nodes<C>(client: &mut McpMasterServiceClient<C>) -> Result<String, Status>
where
    C: tonic::client::GrpcService<tonic::body::Body>,
    C::Error: Into<tonic::codegen::StdError>,
    C::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <C::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let r = client.list_nodes(pb::ListNodesRequest {}).await?;
    Ok(r.into_inner().nodes[0].name.clone())
}

#[tokio::test]
async fn verified_handshake_token_and_audit() {
    let f = fixture();
    let (sc, sk) = f.pki.leaf("server", &["127.0.0.1", "localhost"], false);
    let (cc, ck) = f.pki.leaf("agent-x", &["agent-x"], false);
    let addr = f
        .serve((&sc, &sk), ClientAuth::Optional(f.pki.ca_path.clone()))
        .await;

    // The CLI: no client certificate, operator token.
    let alice = f.token("alice", Human);
    let mut cli = f.client(addr, &f.pki.ca_path, None, &alice).await.unwrap();
    assert_eq!(list_nodes(&mut cli).await.unwrap(), "alice");
    // An operator may not register.
    let reg = pb::RegisterRequest {
        name: "x".into(),
        ..Default::default()
    };
    assert_eq!(
        cli.register(reg.clone()).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // An agent with a client certificate registers, once per minute.
    let agent = f.token("agent-x", System);
    let mut ag = f
        .client(addr, &f.pki.ca_path, Some((&cc, &ck)), &agent)
        .await
        .unwrap();
    assert!(
        ag.register(reg.clone())
            .await
            .unwrap()
            .into_inner()
            .accepted
    );
    assert_eq!(
        ag.register(reg.clone()).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    f.clock.advance(Duration::from_secs(61));
    // Name bound to identity: agent-x cannot register as y.
    let wrong = pb::RegisterRequest {
        name: "y".into(),
        ..Default::default()
    };
    assert_eq!(
        ag.register(wrong).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // An agent may not list nodes.
    assert_eq!(
        list_nodes(&mut ag).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // No token at all.
    let config = tls::client_config(&f.pki.ca_path, None).unwrap();
    let channel = tls::connect_channel(
        &format!("https://127.0.0.1:{}", addr.port()),
        TlsConnector::new(Arc::new(config)),
    )
    .await
    .unwrap();
    let mut anon = McpMasterServiceClient::new(channel);
    assert_eq!(
        anon.list_nodes(pb::ListNodesRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    let events = f.audit.events();
    let summary: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {} {}",
                e.method.rsplit('/').next().unwrap_or(""),
                e.caller,
                e.class,
                e.target.as_deref().unwrap_or("-"),
                e.outcome
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "ListNodes alice operator - Ok",
            "Register alice operator - PermissionDenied",
            "Register agent-x agent(x) node=x Ok",
            "Register agent-x agent(x) - ResourceExhausted",
            "Register agent-x agent(x) node=y PermissionDenied",
            "ListNodes agent-x agent(x) - PermissionDenied",
        ]
    );
}

/// Connects and calls; the attempt must fail, with `reason` in the error.
async fn expect_refused(
    f: &Fixture,
    addr: SocketAddr,
    ca: &Path,
    cert: Option<(&Path, &Path)>,
    reason: &str,
) {
    let tok = f.token("alice", Human);
    let result = match f.client(addr, ca, cert, &tok).await {
        Err(e) => Err(e),
        Ok(mut c) => list_nodes(&mut c).await.map_err(|s| s.to_string()),
    };
    match result {
        Ok(_) => panic!("connection should have been refused ({reason})"),
        Err(e) => assert!(e.contains(reason), "refused, but not for {reason}: {e}"),
    }
}

#[tokio::test]
async fn wrong_ca_is_refused() {
    let f = fixture();
    let (sc, sk) = f.pki.leaf("server", &["127.0.0.1"], false);
    let addr = f
        .serve((&sc, &sk), ClientAuth::Optional(f.pki.ca_path.clone()))
        .await;
    // Client trusts another CA: the server's certificate does not verify.
    expect_refused(&f, addr, &f.other.ca_path, None, "UnknownIssuer").await;
    // Client certificate from another CA: the server refuses it.
    let (ec, ek) = f.other.leaf("intruder", &["agent-x"], false);
    expect_refused(&f, addr, &f.pki.ca_path, Some((&ec, &ek)), "UnknownCA").await;
    // The server still serves good clients.
    let tok = f.token("alice", Human);
    let mut ok = f.client(addr, &f.pki.ca_path, None, &tok).await.unwrap();
    assert_eq!(list_nodes(&mut ok).await.unwrap(), "alice");
}

#[tokio::test]
async fn expired_server_certificate_is_refused() {
    let f = fixture();
    let (sc, sk) = f.pki.leaf("server", &["127.0.0.1"], true);
    let addr = f.serve((&sc, &sk), ClientAuth::None).await;
    expect_refused(&f, addr, &f.pki.ca_path, None, "Expired").await;
}

#[tokio::test]
async fn required_client_certificate() {
    let f = fixture();
    let (sc, sk) = f.pki.leaf("server", &["127.0.0.1"], false);
    let addr = f
        .serve((&sc, &sk), ClientAuth::Required(f.pki.ca_path.clone()))
        .await;
    expect_refused(&f, addr, &f.pki.ca_path, None, "CertificateRequired").await;
    let (xc, xk) = f.pki.leaf("expired-client", &["agent-x"], true);
    expect_refused(
        &f,
        addr,
        &f.pki.ca_path,
        Some((&xc, &xk)),
        "CertificateExpired",
    )
    .await;
    let (cc, ck) = f.pki.leaf("master", &["mcp-master"], false);
    let tok = f.token("alice", Human);
    let mut ok = f
        .client(addr, &f.pki.ca_path, Some((&cc, &ck)), &tok)
        .await
        .unwrap();
    assert_eq!(list_nodes(&mut ok).await.unwrap(), "alice");
}

#[tokio::test]
async fn plaintext_client_is_refused() {
    let f = fixture();
    let (sc, sk) = f.pki.leaf("server", &["127.0.0.1"], false);
    let addr = f.serve((&sc, &sk), ClientAuth::None).await;
    let tok = f.token("alice", Human);
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let result = match plain.connect().await {
        Err(e) => Err(e.to_string()),
        Ok(ch) => {
            let mut c =
                McpMasterServiceClient::with_interceptor(ch, BearerInterceptor::new(&tok).unwrap());
            list_nodes(&mut c).await.map_err(|s| s.to_string())
        }
    };
    assert!(result.is_err(), "plaintext call succeeded: {result:?}");
    let mut ok = f.client(addr, &f.pki.ca_path, None, &tok).await.unwrap();
    assert_eq!(list_nodes(&mut ok).await.unwrap(), "alice");
}

#[test]
fn config_errors_name_the_file_and_the_problem() {
    let f = fixture();
    let dir = f.pki.dir.clone();
    let (sc, sk) = f.pki.leaf("server", &["127.0.0.1"], false);
    let (_, other_key) = f.pki.leaf("other", &["127.0.0.1"], false);
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "hello\n").unwrap();
    let missing = dir.join("missing.pem");

    let err = |cert: &Path, key: &Path, ca: ClientAuth| -> String {
        let paths = CertKeyPaths {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        };
        tls::server_config(&paths, &ca).unwrap_err().to_string()
    };
    let e = err(&missing, &sk, ClientAuth::None);
    assert!(
        e.starts_with("server certificate ") && e.contains("missing.pem: cannot read"),
        "{e}"
    );
    let e = err(&sc, &missing, ClientAuth::None);
    assert!(
        e.starts_with("server key ") && e.contains("cannot read"),
        "{e}"
    );
    let e = err(&garbage, &sk, ClientAuth::None);
    assert!(
        e.contains("garbage.pem: contains no CERTIFICATE block"),
        "{e}"
    );
    let e = err(&sc, &garbage, ClientAuth::None);
    assert!(
        e.contains("garbage.pem: contains no PRIVATE KEY block"),
        "{e}"
    );
    let e = err(&sc, &sc, ClientAuth::None);
    assert!(
        e.contains("server.crt: contains no PRIVATE KEY block"),
        "{e}"
    );
    let e = err(&sc, &sk, ClientAuth::Required(garbage.clone()));
    assert!(
        e.starts_with("CA bundle ") && e.contains("contains no CERTIFICATE"),
        "{e}"
    );
    let e = err(&sc, &other_key, ClientAuth::None);
    assert!(
        e.contains("server.crt") && e.contains("other.key") && e.contains("do not match"),
        "{e}"
    );
    let client_err = tls::client_config(&missing, None).unwrap_err();
    assert!(
        matches!(
            client_err,
            TlsError::Read {
                what: "CA bundle",
                ..
            }
        ),
        "{client_err}"
    );
}

/// A client whose TLS connector verifies the server certificate against
/// `server_name` (not the URI host) and presents `cert` if given.
async fn pinned_client(
    addr: SocketAddr,
    ca: &Path,
    cert: Option<(&Path, &Path)>,
    server_name: &str,
    token: &str,
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
    let connector = TlsConnector::new(Arc::new(config))
        .with_server_name(server_name)
        .unwrap();
    let channel = tls::connect_channel(&format!("https://127.0.0.1:{}", addr.port()), connector)
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(McpMasterServiceClient::with_interceptor(
        channel,
        BearerInterceptor::new(&Secret::new(token.to_string())).unwrap(),
    ))
}

/// The replay attack of issue 9: a party holding the master's token but not
/// its private key — no client certificate, or another node's — is refused;
/// with the master's certificate the same token passes. Operators without
/// certificates are unaffected.
#[tokio::test]
async fn a_replayed_master_token_is_useless_without_the_masters_key() {
    let f = fixture();
    let (sc, sk) = f.pki.leaf("server", &["127.0.0.1", "localhost"], false);
    let (mc, mk) = f.pki.leaf("master", &["mcp-master", "localhost"], false);
    let (wc, wk) = f.pki.leaf("agent-w1", &["agent-w1", "localhost"], false);
    let (ec, ek) = f.other.leaf("evil-master", &["mcp-master"], false);
    let addr = f
        .serve_opts(
            (&sc, &sk),
            ClientAuth::Optional(f.pki.ca_path.clone()),
            ServeOpts {
                master_binding: Some(MasterBinding::new("mcp-master")),
                ..Default::default()
            },
        )
        .await;
    let thumb = mcp_security::jwt::cert_thumbprint_from_pem_file(&mc).unwrap();
    let k = &f.keys.signing;
    let master_token = common::bound_token(k, "mcp-master", System, &thumb, &f.clock);
    let ca = f.pki.ca_path.clone();
    let call = |cert: Option<(&Path, &Path)>, token: String| {
        let ca = ca.clone();
        let cert = cert.map(|(c, k)| (c.to_path_buf(), k.to_path_buf()));
        async move {
            let cert = cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
            let mut c = pinned_client(addr, &ca, cert, "localhost", &token).await?;
            list_nodes(&mut c)
                .await
                .map_err(|s| format!("{:?}", s.code()))
        }
    };

    // The master itself: its certificate and its bound token.
    assert_eq!(
        call(Some((&mc, &mk)), master_token.clone()).await.unwrap(),
        "mcp-master"
    );
    // Replayed without a client certificate, or with another node's.
    assert_eq!(
        call(None, master_token.clone()).await.unwrap_err(),
        "Unauthenticated"
    );
    assert_eq!(
        call(Some((&wc, &wk)), master_token.clone())
            .await
            .unwrap_err(),
        "Unauthenticated"
    );
    // A certificate naming the master from another CA never gets past TLS
    // (in TLS 1.3 the client learns it on its first call: a transport
    // error, not an answer from the server's auth layer).
    let e = call(Some((&ec, &ek)), master_token.clone())
        .await
        .unwrap_err();
    assert!(
        e.contains("UnknownCA") || e == "Unknown" || e == "Unavailable",
        "{e}"
    );
    // An unbound master token is not enough once the binding is required.
    let unbound = common::token(
        k,
        "mcp-master",
        System,
        &[],
        Duration::from_secs(3600),
        &f.clock,
    );
    assert_eq!(
        call(Some((&mc, &mk)), unbound).await.unwrap_err(),
        "Unauthenticated"
    );
    // A master token bound to w1's certificate, used by w1: its certificate
    // is genuine but does not name the master.
    let w1_thumb = mcp_security::jwt::cert_thumbprint_from_pem_file(&wc).unwrap();
    let w1_bound = common::bound_token(k, "mcp-master", System, &w1_thumb, &f.clock);
    assert_eq!(
        call(Some((&wc, &wk)), w1_bound).await.unwrap_err(),
        "PermissionDenied"
    );
    // Operators keep working without a certificate; a bound operator token
    // without its certificate does not.
    let alice = common::token(k, "alice", Human, &[], Duration::from_secs(3600), &f.clock);
    assert_eq!(call(None, alice).await.unwrap(), "alice");
    let alice_bound = common::bound_token(k, "alice", Human, &w1_thumb, &f.clock);
    assert_eq!(
        call(None, alice_bound.clone()).await.unwrap_err(),
        "Unauthenticated"
    );
    assert_eq!(call(Some((&wc, &wk)), alice_bound).await.unwrap(), "alice");
}

/// Agents pin the master's name: a server certificate from the right CA but
/// for another node is refused, the master's passes.
#[tokio::test]
async fn clients_can_pin_the_server_certificate_name() {
    let f = fixture();
    let (mc, mk) = f.pki.leaf("master", &["mcp-master"], false);
    let (wc, wk) = f.pki.leaf("agent-w1", &["agent-w1", "127.0.0.1"], false);
    let alice = f.token("alice", Human);
    let master = f.serve((&mc, &mk), ClientAuth::None).await;
    let impostor = f.serve((&wc, &wk), ClientAuth::None).await;
    let mut ok = pinned_client(master, &f.pki.ca_path, None, "mcp-master", alice.expose())
        .await
        .unwrap();
    assert_eq!(list_nodes(&mut ok).await.unwrap(), "alice");
    let refused =
        match pinned_client(impostor, &f.pki.ca_path, None, "mcp-master", alice.expose()).await {
            Err(e) => e,
            Ok(mut c) => list_nodes(&mut c).await.unwrap_err().to_string(),
        };
    assert!(refused.contains("NotValidForName"), "{refused}");
}

/// Log output captured for one test (current-thread runtime: the server's
/// tasks run on the test's thread, under its default subscriber).
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// 10,000 refused calls in a burst from one address (bad tokens and guest
/// denials): after the limit they are `ResourceExhausted`, the log has a
/// bounded number of lines and the audit a bounded number of rows, and an
/// operator calling from the same address is answered promptly throughout.
#[tokio::test]
async fn a_burst_of_failed_authentications_is_limited_and_summarised() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let f = fixture();
    let (sc, sk) = f.pki.leaf("server", &["127.0.0.1"], false);
    let limits = FailureLimits {
        max_failures: 20,
        window: Duration::from_secs(600),
        log_interval: Duration::from_secs(600),
        max_peers: 64,
    };
    let addr = f
        .serve_opts(
            (&sc, &sk),
            ClientAuth::None,
            ServeOpts {
                failure_limits: Some(limits),
                ..Default::default()
            },
        )
        .await;
    let other = common::keys();
    let hour = Duration::from_secs(3600);
    let forged = Secret::new(common::token(
        &other.signing,
        "alice",
        Human,
        &[],
        hour,
        &f.clock,
    ));
    let guest = Secret::new(common::token(
        &f.keys.signing,
        "visitor",
        Human,
        &["Guest"],
        hour,
        &f.clock,
    ));
    let alice = f.token("alice", Human);
    let mut attackers = Vec::new();
    for i in 0..16 {
        let tok = if i % 4 == 0 { &guest } else { &forged };
        attackers.push(f.client(addr, &f.pki.ca_path, None, tok).await.unwrap());
    }
    let mut operator = f.client(addr, &f.pki.ca_path, None, &alice).await.unwrap();

    // One forged call first, so the log surely has an unauthenticated line.
    let first = list_nodes(&mut attackers[1]).await.unwrap_err();
    assert_eq!(first.code(), Code::Unauthenticated);
    assert_eq!(first.message(), "unauthenticated");
    const BURST: usize = 10_000;
    let per_task = (BURST - 1) / attackers.len();
    let extra = BURST - 1 - per_task * attackers.len();
    let mut tasks = Vec::new();
    for (i, mut c) in attackers.into_iter().enumerate() {
        let n = per_task + usize::from(i < extra);
        tasks.push(tokio::spawn(async move {
            let mut codes = std::collections::BTreeMap::<String, usize>::new();
            for _ in 0..n {
                let code = match list_nodes(&mut c).await {
                    Ok(_) => "Ok".to_string(),
                    Err(s) => format!("{:?}", s.code()),
                };
                *codes.entry(code).or_default() += 1;
            }
            codes
        }));
    }
    // The operator, during the burst.
    let mut slowest = Duration::ZERO;
    let mut answered = 0;
    while !tasks.iter().all(|t| t.is_finished()) {
        let start = std::time::Instant::now();
        assert_eq!(list_nodes(&mut operator).await.unwrap(), "alice");
        slowest = slowest.max(start.elapsed());
        answered += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    codes.insert("Unauthenticated".to_string(), 1);
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *codes.entry(k).or_default() += v;
        }
    }
    assert_eq!(codes.values().sum::<usize>(), BURST, "{codes:?}");
    assert!(!codes.contains_key("Ok"), "{codes:?}");
    let normal = codes.get("Unauthenticated").copied().unwrap_or(0)
        + codes.get("PermissionDenied").copied().unwrap_or(0);
    assert_eq!(normal, 20, "only the first 20 answered normally: {codes:?}");
    assert_eq!(codes.get("ResourceExhausted"), Some(&(BURST - 20)));
    assert!(answered >= 1, "the operator was never answered");
    eprintln!("operator: {answered} calls during the burst, slowest {slowest:?}");
    assert!(
        slowest < Duration::from_secs(2),
        "an operator call took {slowest:?} during the burst"
    );
    // Still answered after the burst, from the same address.
    assert_eq!(list_nodes(&mut operator).await.unwrap(), "alice");

    let lines = logs.lines();
    let refused = lines
        .iter()
        .filter(|l| l.contains("unauthenticated rpc refused"))
        .count();
    let summaries: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("over the per-peer limit"))
        .collect();
    assert!(refused <= 20, "{refused} per-call lines");
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    assert!(summaries[0].contains("suppressed=1"), "{}", summaries[0]);
    assert!(
        lines.len() < 20 + 20 + answered + 10,
        "{} log lines for {BURST} refused calls",
        lines.len()
    );
    // The reason is in the log, never in the answer.
    assert!(lines
        .iter()
        .any(|l| l.contains("unauthenticated rpc refused") && l.contains("bad signature")));
    let rows = f.audit.events();
    let guest_rows = rows.iter().filter(|e| e.caller == "visitor").count();
    assert!(
        guest_rows <= 20,
        "{guest_rows} audit rows for guest denials"
    );
    assert!(rows
        .iter()
        .all(|e| e.caller != "visitor" || e.outcome == "PermissionDenied"));
}

/// A raw TLS 1.3 connection to the server (ALPN h2), handshake completed.
async fn raw_tls(
    addr: SocketAddr,
    ca: &Path,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let config = tls::client_config(ca, None).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// Reads until EOF or error; how long it took, or `None` if still open at
/// `limit`.
async fn time_to_close<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> Option<Duration> {
    use tokio::io::AsyncReadExt as _;
    let start = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(start + limit),
            s.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// HTTP/2 client preface and an empty SETTINGS frame.
const H2_HELLO: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[tokio::test]
async fn an_idle_handshaken_connection_is_closed_but_http2_stays() {
    use tokio::io::AsyncWriteExt as _;
    let f = fixture();
    let (sc, sk) = f.pki.leaf("server", &["127.0.0.1"], false);
    let addr = f
        .serve_opts(
            (&sc, &sk),
            ClientAuth::None,
            ServeOpts {
                incoming: IncomingOptions {
                    preface_timeout: Some(Duration::from_millis(400)),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await;
    // Handshake, then silence: closed after the preface timeout.
    let mut idle = raw_tls(addr, &f.pki.ca_path).await.unwrap();
    let closed = time_to_close(&mut idle, Duration::from_secs(5)).await;
    let closed = closed.expect("idle connection still open after 5 s");
    assert!(
        closed >= Duration::from_millis(300),
        "closed too early: {closed:?}"
    );
    assert!(closed < Duration::from_secs(3), "closed late: {closed:?}");
    // A connection that sent the preface stays open past the timeout.
    let mut h2 = raw_tls(addr, &f.pki.ca_path).await.unwrap();
    h2.write_all(H2_HELLO).await.unwrap();
    h2.flush().await.unwrap();
    assert_eq!(
        time_to_close(&mut h2, Duration::from_millis(1500)).await,
        None
    );
    // And gRPC over a tonic channel keeps working across idle periods.
    let alice = f.token("alice", Human);
    let mut c = f.client(addr, &f.pki.ca_path, None, &alice).await.unwrap();
    assert_eq!(list_nodes(&mut c).await.unwrap(), "alice");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(list_nodes(&mut c).await.unwrap(), "alice");
}

#[tokio::test]
async fn connections_per_peer_are_capped_at_accept() {
    use tokio::io::AsyncWriteExt as _;
    let f = fixture();
    let (sc, sk) = f.pki.leaf("server", &["127.0.0.1"], false);
    let addr = f
        .serve_opts(
            (&sc, &sk),
            ClientAuth::None,
            ServeOpts {
                incoming: IncomingOptions {
                    max_connections_per_peer: Some(2),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = raw_tls(addr, &f.pki.ca_path).await.unwrap();
        c.write_all(H2_HELLO).await.unwrap();
        c.flush().await.unwrap();
        held.push(c);
    }
    // The third is closed at accept: no TLS handshake completes.
    assert!(raw_tls(addr, &f.pki.ca_path).await.is_err());
    let alice = f.token("alice", Human);
    assert!(f.client(addr, &f.pki.ca_path, None, &alice).await.is_err());
    // Closing one frees its slot.
    drop(held.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut c = loop {
        if let Ok(c) = f.client(addr, &f.pki.ca_path, None, &alice).await {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(list_nodes(&mut c).await.unwrap(), "alice");
}
