//! Runs the real `mcp-master serve` with a config alone: it starts, probes
//! its bootstrap node during warm-up, answers an operator over TLS, and
//! stops cleanly on SIGTERM, with every call's audit row written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_proto::pb;
use mcp_proto::pb::mcp_master_service_client::McpMasterServiceClient;
use mcp_security::clock::SystemClock;
use mcp_security::identity::AccountType;
use mcp_security::jwt::{generate_keypair, issue_token, SigningKey, TokenRequest};
use mcp_security::pki::{Ca, Validity};
use mcp_security::tls::{self, TlsConnector};
use mcp_security::token::BearerInterceptor;

const BIN: &str = env!("CARGO_BIN_EXE_mcp-master");

fn token(key: &SigningKey, name: &str, t: AccountType) -> mcp_security::Secret {
    issue_token(
        key,
        &TokenRequest {
            identity: name.to_string(),
            account_type: t,
            roles: Vec::new(),
            ttl: Duration::from_secs(3600),
            issuer: "mcias".to_string(),
            audience: "mcp".to_string(),
        },
        &SystemClock,
    )
    .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn read(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

#[tokio::test]
async fn serve_runs_from_a_config_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::generate("fleet").unwrap();
    ca.write_cert(&d.join("ca.pem")).unwrap();
    ca.write_leaf(d, "master", &["127.0.0.1"], Validity::Days(1))
        .unwrap();
    let kp = generate_keypair().unwrap();
    std::fs::write(d.join("issuer.pub"), &kp.public_pem).unwrap();
    let signing = SigningKey::from_pem(kp.private_pem.expose().as_bytes(), "k").unwrap();
    std::fs::write(
        d.join("master.token"),
        token(&signing, "mcp-master", AccountType::System).expose(),
    )
    .unwrap();
    let port = free_port();
    let dead = free_port();
    std::fs::write(
        d.join("master.toml"),
        format!(
            r#"
[server]
grpc_addr = "127.0.0.1:{port}"
tls_cert = "master.crt"
tls_key = "master.key"
ca_cert = "ca.pem"

[database]
path = "master.db"

[auth]
issuer_public_key = "issuer.pub"
issuer = "mcias"
audience = "mcp"
token_file = "master.token"

[edge]
internal_zone = "svc.test"

[timeouts]
health_check = "1s"

[reconcile]
interval = "1s"

[[nodes]]
name = "orion"
address = "https://127.0.0.1:{dead}"
role = "master"
"#
        ),
    )
    .unwrap();
    let log = d.join("master.log");
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(d.join("master.toml"))
        .env_remove("MCP_TOKEN")
        .env("MCP_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !read(&log).contains("mcp-master ready") {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("mcp-master exited early ({status}):\n{}", read(&log));
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not ready in time:\n{}",
            read(&log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let config = tls::client_config(&d.join("ca.pem"), None).unwrap();
    let channel = tls::connect_channel(
        &format!("https://127.0.0.1:{port}"),
        TlsConnector::new(Arc::new(config)),
    )
    .await
    .unwrap();
    let alice = token(&signing, "alice", AccountType::Human);
    let mut client =
        McpMasterServiceClient::with_interceptor(channel, BearerInterceptor::new(&alice).unwrap());
    let nodes = client
        .list_nodes(pb::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].name, "orion");
    // Its agent does not answer: the warm-up probe marked it unhealthy.
    assert_eq!(nodes[0].status, "unhealthy");
    let r = client
        .sync(pb::SyncRequest {
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.changes);

    // Many audited calls right before SIGTERM: each one's row is written
    // before the master exits (the audit writer is drained on shutdown).
    const CALLS: usize = 200;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..CALLS {
        let mut c = client.clone();
        calls.spawn(async move { c.list_nodes(pb::ListNodesRequest {}).await.map(|_| ()) });
    }
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
    }

    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("mcp-master did not stop on SIGTERM:\n{}", read(&log));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = read(&log);
    assert!(status.success(), "{status}:\n{text}");
    assert!(text.contains("shutting down"), "{text}");
    // Every call was audited in the database: the first ListNodes, the
    // dry-run Sync and the burst.
    let state = mcp_master::state::State::open(&d.join("master.db")).unwrap();
    let audit = state.read(|r| r.audit_recent(10_000)).unwrap();
    let count = |m: &str| {
        audit
            .iter()
            .filter(|a| a.method.ends_with(m) && a.caller.starts_with("alice"))
            .count()
    };
    assert_eq!(count("/ListNodes"), CALLS + 1, "{audit:?}");
    assert_eq!(count("/Sync"), 1);
    assert!(text.contains("audit log written"), "{text}");
}
