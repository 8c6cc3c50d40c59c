//! The real `mcp-master serve` keeps its audit table as `[audit]` says: rows
//! older than `max_age` and beyond `max_rows` are deleted when it starts,
//! and the table stays bounded while calls are audited.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mcp_master::state::{AuditEntry, State};
use mcp_proto::pb;
use mcp_proto::pb::mcp_master_service_client::McpMasterServiceClient;
use mcp_security::clock::SystemClock;
use mcp_security::identity::AccountType;
use mcp_security::jwt::{generate_keypair, issue_token, SigningKey, TokenRequest};
use mcp_security::pki::{Ca, Validity};
use mcp_security::tls::{self, TlsConnector};
use mcp_security::token::BearerInterceptor;

const BIN: &str = env!("CARGO_BIN_EXE_mcp-master");
const DAY: Duration = Duration::from_secs(86400);

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

fn read(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

fn wait_for(log: &Path, child: &mut std::process::Child, what: &str) {
    let start = Instant::now();
    while !read(log).contains(what) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("mcp-master exited early ({status}):\n{}", read(log));
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {what:?} in time:\n{}",
            read(log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn row(time: SystemTime, target: &str) -> AuditEntry {
    AuditEntry {
        time,
        method: "/mcp.v1.McpMasterService/Status".to_string(),
        caller: "carol".to_string(),
        class: "operator".to_string(),
        target: target.to_string(),
        outcome: "Ok".to_string(),
        duration_ms: 1,
    }
}

#[tokio::test]
async fn serve_prunes_the_audit_table_by_age_and_count() {
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
    // A table a previous master left: 100 rows two months old, 80 recent.
    {
        let state = State::open(&d.join("master.db")).unwrap();
        let now = SystemTime::now();
        state
            .write(|w| {
                for i in 0..100 {
                    w.audit(&row(now - 60 * DAY, &format!("old{i}")))?;
                }
                for i in 0..80 {
                    w.audit(&row(now - DAY, &format!("recent{i}")))?;
                }
                Ok(())
            })
            .unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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

[audit]
max_age = "30d"
max_rows = 50
prune_interval = "1h"
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
    // At start: the old rows by age, then the 30 oldest of the recent ones.
    wait_for(&log, &mut child, "audit log pruned");
    let text = read(&log);
    let line = text
        .lines()
        .find(|l| l.contains("audit log pruned"))
        .unwrap();
    assert!(
        line.contains("by_age=100") && line.contains("by_count=30"),
        "{line}"
    );
    wait_for(&log, &mut child, "mcp-master ready");

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
    // 200 audited calls: the writer prunes every max_rows / 10 rows.
    for _ in 0..200 {
        client.list_nodes(pb::ListNodesRequest {}).await.unwrap();
    }
    let listed = client
        .list_audit(pb::ListAuditRequest {
            since: String::new(),
            caller: String::new(),
            limit: 10_000,
        })
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert!(
        listed.len() <= 50 + 5 + 1,
        "{} rows listed with max_rows = 50",
        listed.len()
    );
    assert!(listed.iter().all(|a| a.caller == "alice"), "{listed:?}");

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
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
    assert!(status.success(), "{status}:\n{}", read(&log));
    let state = State::open(&d.join("master.db")).unwrap();
    let rows = state.read(|r| r.audit_recent(10_000)).unwrap();
    assert!(rows.len() <= 50 + 5, "{} rows kept", rows.len());
    assert!(rows.iter().all(|a| a.caller == "alice"), "{rows:?}");
    // The newest are kept: the last call (ListAudit) is there.
    assert!(rows[0].method.ends_with("/ListAudit"), "{:?}", rows[0]);
}
