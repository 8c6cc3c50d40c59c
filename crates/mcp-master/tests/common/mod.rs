//! The master over real TLS on 127.0.0.1 for the integration tests: the
//! real `AuthLayer`, JWT tokens and a throwaway PKI (`mcp_security::pki`);
//! its agents are the fake fleet ([`FakeAgents`]) or, with
//! [`start_with_real_agent`], one real agent server (`mcp_agent::testing`,
//! over `FakeRuntime`) reached through `GrpcAgents` as in production.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mcp_agent::testing::{fake_agent, FakeRuntime, TestServer};
use mcp_agent::{Agent, ServerSecurity};
use mcp_master::agents::{AgentApi, GrpcAgents};
use mcp_master::config::Timeouts;
use mcp_master::daemon::{HEARTBEAT_PATH, REGISTER_PATH};
use mcp_master::fake::FakeAgents;
use mcp_master::fleet::{Fleet, FleetSettings};
use mcp_master::reconcile::{DesiredSource, Reconciler, Settings};
use mcp_master::server::MasterService;
use mcp_master::state::{AuditLog, State};
use mcp_planner::Policy;
use mcp_proto::pb;
use mcp_proto::pb::mcp_master_service_client::McpMasterServiceClient;
use mcp_security::authz::AuthzTable;
use mcp_security::clock::ManualClock;
use mcp_security::identity::AccountType;
use mcp_security::jwt::{generate_keypair, issue_token, PublicKey, SigningKey, TokenRequest};
use mcp_security::layer::{AuthLayer, Authorizer};
use mcp_security::pki::{Ca, Validity};
use mcp_security::registration::{RateLimiter, RateLimits, RegistrationPolicy};
use mcp_security::tls::{self, CertKeyPaths, ClientAuth, TlsConnector};
use mcp_security::token::BearerInterceptor;
use mcp_security::JwtVerifier;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub type Client = McpMasterServiceClient<InterceptedService<Channel, BearerInterceptor>>;

/// A running master.
pub struct Master {
    pub _dir: tempfile::TempDir,
    pub addr: std::net::SocketAddr,
    pub ca: PathBuf,
    pub signing: SigningKey,
    pub clock: ManualClock,
    /// The fleet CA, to issue agents' client certificates.
    pub pki: Ca,
    pub state: Arc<State>,
    pub audit: Arc<AuditLog>,
    /// The fake fleet (unused with a real agent).
    pub agents: Arc<FakeAgents>,
    /// The real agent, with [`start_with_real_agent`].
    pub real: Option<RealAgent>,
}

/// One real agent (node `orion`) the master reaches over TLS.
pub struct RealAgent {
    pub agent: Arc<Agent<FakeRuntime>>,
    pub server: TestServer,
}

impl RealAgent {
    pub fn url(&self) -> String {
        self.server.url()
    }
}

pub fn settings() -> Settings {
    Settings {
        policy: Policy {
            internal_zone: "svc.test".to_string(),
            ..Policy::default()
        },
        concurrency: 2,
        list_timeout: Duration::from_secs(2),
        heal_settle: Duration::from_secs(30),
        interval: Duration::from_secs(60),
    }
}

/// A master over the fake fleet.
pub async fn start(allowed: &[&str], max_nodes: usize, rate: RateLimits) -> Master {
    start_inner(allowed, max_nodes, rate, false).await
}

/// A master whose agents are reached with `GrpcAgents`, and one real agent
/// server (node `orion`, identity `agent-orion`) sharing its CA and token
/// issuer; register it with [`RealAgent::url`].
pub async fn start_with_real_agent() -> Master {
    start_inner(&["agent-orion"], 16, RateLimits::new(), true).await
}

async fn start_inner(allowed: &[&str], max_nodes: usize, rate: RateLimits, real: bool) -> Master {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("fleet").unwrap();
    let ca_path = dir.path().join("ca.pem");
    ca.write_cert(&ca_path).unwrap();
    let leaf = ca
        .write_leaf(
            dir.path(),
            "master",
            &["127.0.0.1", "localhost"],
            Validity::Days(1),
        )
        .unwrap();
    let kp = generate_keypair().unwrap();
    let signing = SigningKey::from_pem(kp.private_pem.expose().as_bytes(), "test key").unwrap();
    let public = PublicKey::from_pem(kp.public_pem.as_bytes(), "test key").unwrap();
    let clock = ManualClock::new(SystemTime::now());
    let verifier = JwtVerifier::new(public, "mcias", "mcp").with_clock(Arc::new(clock.clone()));

    let state = Arc::new(State::open(&dir.path().join("master.db")).unwrap());
    let audit = Arc::new(AuditLog::start(state.clone().into(), 64));
    let agents = Arc::new(FakeAgents::new());
    let mut api: Arc<dyn AgentApi> = agents.clone();
    let mut real_agent = None;
    if real {
        let agent_dir = dir.path().join("agent");
        std::fs::create_dir_all(agent_dir.join("srv")).unwrap();
        let agent_leaf = ca
            .write_leaf(
                &agent_dir,
                "orion",
                &["127.0.0.1", "localhost"],
                Validity::Days(1),
            )
            .unwrap();
        let agent_tls = tls::server_config(
            &CertKeyPaths {
                cert: agent_leaf.cert.clone(),
                key: agent_leaf.key.clone(),
            },
            &ClientAuth::Optional(ca_path.clone()),
        )
        .unwrap();
        let agent_verifier = JwtVerifier::new(
            PublicKey::from_pem(kp.public_pem.as_bytes(), "test key").unwrap(),
            "mcias",
            "mcp",
        )
        .with_clock(Arc::new(clock.clone()));
        let security = ServerSecurity::new(agent_tls, Arc::new(agent_verifier), "mcp-master");
        let agent = Arc::new(fake_agent("orion", agent_dir.join("srv")).unwrap());
        let server = TestServer::start(agent.clone(), security).await.unwrap();
        let token = issue_token(
            &signing,
            &TokenRequest {
                identity: "mcp-master".to_string(),
                account_type: AccountType::System,
                roles: Vec::new(),
                ttl: Duration::from_secs(24 * 3600),
                issuer: "mcias".to_string(),
                audience: "mcp".to_string(),
            },
            &clock,
        )
        .unwrap();
        api = Arc::new(GrpcAgents::new(
            Arc::new(tls::client_config(&ca_path, None).unwrap()),
            BearerInterceptor::new(&token).unwrap(),
            Timeouts::default(),
        ));
        real_agent = Some(RealAgent { agent, server });
    }
    let rec = Arc::new(Reconciler::new(
        state.clone(),
        api.clone(),
        Arc::new(clock.clone()),
        DesiredSource::Push,
        settings(),
    ));
    let fleet = Arc::new(Fleet::new(
        state.clone(),
        api,
        Arc::new(clock.clone()),
        FleetSettings {
            policy: RegistrationPolicy::new(allowed.iter().copied(), max_nodes),
            heartbeat_timeout: Duration::from_secs(90),
            health_check: Duration::from_secs(1),
            ..FleetSettings::default()
        },
        Box::new(|| {}),
    ));
    let authorizer = Authorizer::new(Arc::new(verifier), AuthzTable::standard("mcp-master"))
        .with_rate_limiter(RateLimiter::with_clock(rate, Arc::new(clock.clone())));
    let layer = AuthLayer::new(authorizer)
        .with_audit_sink(Arc::new(audit.sink()))
        .with_clock(Arc::new(clock.clone()));
    let server_tls = tls::server_config(
        &CertKeyPaths {
            cert: leaf.cert.clone(),
            key: leaf.key.clone(),
        },
        &ClientAuth::Optional(ca_path.clone()),
    )
    .unwrap();
    let listener = tls::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = MasterService::new(rec, fleet).into_server();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(svc)
            .serve_with_incoming(tls::tls_incoming(listener, Arc::new(server_tls)))
            .await
            .unwrap();
    });
    Master {
        _dir: dir,
        addr,
        ca: ca_path,
        signing,
        clock,
        pki: ca,
        state,
        audit,
        agents,
        real: real_agent,
    }
}

pub fn limits() -> RateLimits {
    RateLimits::new()
        .with(REGISTER_PATH, Duration::from_secs(60))
        .with(HEARTBEAT_PATH, Duration::from_secs(10))
}

impl Master {
    pub async fn client(&self, identity: &str, account_type: AccountType) -> Client {
        let token = issue_token(
            &self.signing,
            &TokenRequest {
                identity: identity.to_string(),
                account_type,
                roles: Vec::new(),
                ttl: Duration::from_secs(24 * 3600),
                issuer: "mcias".to_string(),
                audience: "mcp".to_string(),
            },
            &self.clock,
        )
        .unwrap();
        let config = tls::client_config(&self.ca, None).unwrap();
        let channel = tls::connect_channel(
            &format!("https://127.0.0.1:{}", self.addr.port()),
            TlsConnector::new(Arc::new(config)),
        )
        .await
        .unwrap();
        McpMasterServiceClient::with_interceptor(channel, BearerInterceptor::new(&token).unwrap())
    }

    /// A client for `agent-<node>` presenting a client certificate of the
    /// fleet CA naming `names` (what a real agent's certificate says).
    pub async fn agent_client(&self, node: &str, names: &[&str]) -> Client {
        let token = issue_token(
            &self.signing,
            &TokenRequest {
                identity: format!("agent-{node}"),
                account_type: AccountType::System,
                roles: Vec::new(),
                ttl: Duration::from_secs(24 * 3600),
                issuer: "mcias".to_string(),
                audience: "mcp".to_string(),
            },
            &self.clock,
        )
        .unwrap();
        let dir = self._dir.path().join("agents").join(node);
        std::fs::create_dir_all(&dir).unwrap();
        let leaf = self
            .pki
            .write_leaf(&dir, node, names, Validity::Days(1))
            .unwrap();
        let config = tls::client_config(
            &self.ca,
            Some(&CertKeyPaths {
                cert: leaf.cert,
                key: leaf.key,
            }),
        )
        .unwrap();
        let channel = tls::connect_channel(
            &format!("https://127.0.0.1:{}", self.addr.port()),
            TlsConnector::new(Arc::new(config)),
        )
        .await
        .unwrap();
        McpMasterServiceClient::with_interceptor(channel, BearerInterceptor::new(&token).unwrap())
    }

    pub fn node(&self, name: &str) -> Option<mcp_master::state::Node> {
        self.state.read(|r| r.node(name)).unwrap()
    }
}

pub fn reg(name: &str, address: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        name: name.to_string(),
        role: "worker".to_string(),
        address: address.to_string(),
        arch: "amd64".to_string(),
    }
}

pub fn hb(name: &str, containers: u32) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        name: name.to_string(),
        cpu_millicores: 250,
        memory_bytes: 1 << 30,
        disk_bytes: 10 << 30,
        containers,
    }
}

pub fn spec_pb(name: &str, version: &str) -> pb::ServiceSpec {
    pb::ServiceSpec {
        name: name.to_string(),
        active: true,
        components: vec![pb::ComponentSpec {
            name: "api".to_string(),
            image: format!("registry.example:8443/{name}:{version}"),
            ..Default::default()
        }],
        tier: "worker".to_string(),
        node: String::new(),
        snapshot: None,
        no_rollback: false,
    }
}
