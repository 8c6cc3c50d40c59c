//! Issue 9, "the master's bearer token works anywhere": the replay attack
//! against a real `mcp dev` fleet (the `mcp-master` and `mcp-agent`
//! binaries with the configs, certificates and tokens `mcp_dev::prepare`
//! writes, TLS 1.3 on 127.0.0.1).
//!
//! A party holding the master's token but not the master's private key —
//! with no client certificate, or with another node's certificate and key
//! (a compromised agent) — gets `Unauthenticated` from every agent and from
//! the master; the master's own certificate with the token works; the
//! operator's token keeps working for `--direct` calls; an agent's token,
//! and a token for another audience, are refused by another agent. The
//! agents register with the master, whose certificate they verify by the
//! name `mcp-master` (`[master] server_name`).
//!
//! Needs no podman: no container is deployed, and a HealthCheck that
//! cannot run podman still shows the call passed authentication.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_proto::pb;
use mcp_proto::pb::mcp_agent_service_client::McpAgentServiceClient;
use mcp_proto::pb::mcp_master_service_client::McpMasterServiceClient;
use mcp_security::clock::SystemClock;
use mcp_security::identity::{AccountType, UNAUTHENTICATED_MESSAGE};
use mcp_security::jwt::{self, Secret, SigningKey, TokenRequest};
use mcp_security::tls::{self, CertKeyPaths, TlsConnector};
use mcp_security::token::BearerInterceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;

type Agent = McpAgentServiceClient<InterceptedService<Channel, BearerInterceptor>>;
type Master = McpMasterServiceClient<InterceptedService<Channel, BearerInterceptor>>;

fn bin_dir() -> PathBuf {
    let mcp = PathBuf::from(env!("CARGO_BIN_EXE_mcp"));
    let dir = mcp.parent().unwrap().to_path_buf();
    for b in ["mcp-master", "mcp-agent"] {
        assert!(
            dir.join(b).is_file(),
            "{b} not found in {}: build every binary first: cargo build --bins",
            dir.display()
        );
    }
    dir
}

/// The fleet's daemons, stopped on drop (the logs printed if the test
/// failed).
struct Running(mcp_dev::Daemons);

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for d in self.0.iter_mut() {
                eprintln!("--- {} ---\n{}", d.name, d.log_tail(40));
            }
        }
        self.0.stop_every();
    }
}

/// Who is calling: a token, and the client certificate presented (if any).
struct Caller<'a> {
    token: &'a Secret,
    cert: Option<&'a CertKeyPaths>,
}

/// A TLS channel to `host:port` (agents listen on their node's own
/// loopback address, the master on 127.0.0.1).
async fn channel(ca: &Path, host: &str, port: u16, cert: Option<&CertKeyPaths>) -> Channel {
    let cfg = tls::client_config(ca, cert).unwrap();
    tls::connect_channel(
        &format!("https://{host}:{port}"),
        TlsConnector::new(Arc::new(cfg)),
    )
    .await
    .unwrap()
}

async fn agent(ca: &Path, node: &mcp_dev::Node, c: &Caller<'_>) -> Agent {
    McpAgentServiceClient::with_interceptor(
        channel(ca, &node.address, node.port, c.cert).await,
        BearerInterceptor::new(c.token).unwrap(),
    )
}

async fn master(ca: &Path, port: u16, c: &Caller<'_>) -> Master {
    McpMasterServiceClient::with_interceptor(
        channel(ca, "127.0.0.1", port, c.cert).await,
        BearerInterceptor::new(c.token).unwrap(),
    )
}

fn read_token(path: &Path) -> Secret {
    Secret::new(std::fs::read_to_string(path).unwrap().trim().to_string())
}

/// A deploy the master would send: refused before any handler if the
/// caller is not let through, so nothing is deployed either way.
fn host_root_deploy() -> pb::AgentDeployRequest {
    let spec = mcp_spec::parse_service(
        "evil.toml",
        "evil",
        r#"
name = "evil"
[[components]]
name = "sh"
image = "docker.io/library/busybox:latest"
volumes = ["/srv/evil:/data"]
"#,
        &Default::default(),
    )
    .unwrap();
    pb::AgentDeployRequest {
        service: Some(pb::ServiceSpec::from(&spec)),
        component: String::new(),
    }
}

fn assert_refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, what: &str) {
    let err = r.expect_err(what);
    assert_eq!(err.code(), code, "{what}: {err:?}");
    if code == Code::Unauthenticated {
        assert_eq!(err.message(), UNAUTHENTICATED_MESSAGE, "{what}");
    }
}

/// Not refused by authentication or authorization (the handler ran).
fn assert_let_through<T: std::fmt::Debug>(r: Result<T, tonic::Status>, what: &str) {
    if let Err(e) = r {
        assert!(
            !matches!(
                e.code(),
                Code::Unauthenticated | Code::PermissionDenied | Code::ResourceExhausted
            ),
            "{what}: {e:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_masters_token_is_useless_without_the_masters_key() {
    let bins = bin_dir();
    let tmp = tempfile::Builder::new()
        .prefix("mcp-replay-")
        .tempdir()
        .unwrap();
    let services = tmp.path().join("services");
    std::fs::create_dir(&services).unwrap();
    let dev = mcp_dev::prepare(&mcp_dev::DevOptions {
        services: Some(services),
        agents: 3,
        edge: false,
        state_dir: Some(tmp.path().join("state")),
        containers_conf: None,
    })
    .unwrap();
    let mut daemons = dev.daemons(&bins);
    daemons.start_all().unwrap();
    let mut running = Running(daemons);
    running.0.wait_listening(Duration::from_secs(60)).unwrap();

    let s = &dev.state;
    let ca = s.join("pki/ca.pem");
    let pair = |name: &str| CertKeyPaths {
        cert: s.join(format!("pki/{name}.crt")),
        key: s.join(format!("pki/{name}.key")),
    };
    let master_pair = pair("master");
    let w1_pair = pair("w1");
    let master_token = read_token(&s.join("tokens/master.token"));
    let operator_token = read_token(&s.join("tokens/operator.token"));
    let w1_token = read_token(&s.join("tokens/agent-w1.token"));
    let other_audience = {
        let key = SigningKey::from_file(&s.join("keys/issuer.pem")).unwrap();
        let req = TokenRequest {
            identity: "operator".to_string(),
            account_type: AccountType::Human,
            roles: vec![],
            ttl: Duration::from_secs(3600),
            issuer: jwt::DEFAULT_ISSUER.to_string(),
            audience: "mcp-w1".to_string(),
        };
        jwt::issue_token(&key, &req, &SystemClock).unwrap()
    };

    let no_cert = Caller {
        token: &master_token,
        cert: None,
    };
    let w1_cert = Caller {
        token: &master_token,
        cert: Some(&w1_pair),
    };
    let the_master = Caller {
        token: &master_token,
        cert: Some(&master_pair),
    };
    let operator = Caller {
        token: &operator_token,
        cert: None,
    };

    // The agents registered: they verified the master's certificate by the
    // name mcp-master, and it verified theirs.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nodes = master(&ca, dev.master_port, &operator)
            .await
            .list_nodes(pb::ListNodesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .nodes;
        let registered = nodes.iter().filter(|n| !n.arch.is_empty()).count();
        if registered == dev.nodes.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agents did not register within 60s: {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    for n in &dev.nodes {
        let at = |who: &str, rpc: &str| format!("{rpc} on {} with {who}", n.name);
        // The replay: the master's token without the master's key.
        for (who, caller) in [("no certificate", &no_cert), ("w1's certificate", &w1_cert)] {
            let mut c = agent(&ca, n, caller).await;
            let r = c.health_check(pb::HealthCheckRequest::default()).await;
            assert_refused(r, Code::Unauthenticated, &at(who, "HealthCheck"));
            let r = c.deploy(host_root_deploy()).await;
            assert_refused(r, Code::Unauthenticated, &at(who, "Deploy"));
            let r = c.list_services(pb::ListServicesRequest::default()).await;
            assert_refused(r, Code::Unauthenticated, &at(who, "ListServices"));
        }
        // The master itself.
        let mut c = agent(&ca, n, &the_master).await;
        let r = c.health_check(pb::HealthCheckRequest::default()).await;
        assert_let_through(r, &at("the master's certificate", "HealthCheck"));
        let r = c.events(pb::EventsRequest::default()).await;
        assert!(
            r.is_ok(),
            "{}: {r:?}",
            at("the master's certificate", "Events")
        );
        // An operator, --direct: read and lifecycle RPCs, not the fleet ones.
        let mut c = agent(&ca, n, &operator).await;
        let r = c.events(pb::EventsRequest::default()).await;
        assert!(r.is_ok(), "{}: {r:?}", at("the operator's token", "Events"));
        let r = c.health_check(pb::HealthCheckRequest::default()).await;
        assert_refused(
            r,
            Code::PermissionDenied,
            &at("the operator's token", "HealthCheck"),
        );
    }

    // w1's own token, and a token for another audience, on w2.
    let w2 = dev.node("w2").unwrap();
    let as_w1 = Caller {
        token: &w1_token,
        cert: Some(&w1_pair),
    };
    let r = agent(&ca, w2, &as_w1)
        .await
        .events(pb::EventsRequest::default())
        .await;
    assert_refused(r, Code::PermissionDenied, "w1's token on w2");
    let foreign = Caller {
        token: &other_audience,
        cert: None,
    };
    let r = agent(&ca, w2, &foreign)
        .await
        .events(pb::EventsRequest::default())
        .await;
    assert_refused(
        r,
        Code::Unauthenticated,
        "a token for audience mcp-w1 on w2",
    );

    // The master's own server.
    for (who, caller) in [("no certificate", &no_cert), ("w1's certificate", &w1_cert)] {
        let r = master(&ca, dev.master_port, caller)
            .await
            .status(pb::StatusRequest::default())
            .await;
        assert_refused(
            r,
            Code::Unauthenticated,
            &format!("master Status with {who}"),
        );
    }
    let r = master(&ca, dev.master_port, &the_master)
        .await
        .status(pb::StatusRequest::default())
        .await;
    assert!(
        r.is_ok(),
        "master Status with the master's certificate: {r:?}"
    );
}
