//! `GrpcAgents::verify_node_names` (the master daemon's default, `[server]
//! agent_server_name = "node"`): an agent's server certificate must name
//! its node. A server holding another node's certificate at the address —
//! a node that re-registered at its neighbour's address, or a listener a
//! compromised agent pointed the master at — gets no call and never sees
//! the master's token; verified by address only, any certificate of the
//! fleet naming the host would pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use mcp_agent::testing::{fake_agent, TestServer};
use mcp_agent::ServerSecurity;
use mcp_master::agents::{AgentApi, AgentError, AgentTarget, GrpcAgents};
use mcp_master::config::Timeouts;
use mcp_security::clock::SystemClock;
use mcp_security::identity::AccountType;
use mcp_security::jwt::{generate_keypair, issue_token, JwtVerifier, PublicKey, TokenRequest};
use mcp_security::pki::{Ca, Validity};
use mcp_security::tls::{self, CertKeyPaths, ClientAuth};
use mcp_security::token::BearerInterceptor;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_is_called_only_when_its_certificate_names_its_node() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("fleet").unwrap();
    let ca_path = dir.path().join("ca.pem");
    ca.write_cert(&ca_path).unwrap();
    // w1's server: its certificate names w1 and the shared loopback address.
    let leaf = ca
        .write_leaf(dir.path(), "w1", &["w1", "127.0.0.1"], Validity::Days(1))
        .unwrap();
    let kp = generate_keypair().unwrap();
    let public = PublicKey::from_pem(kp.public_pem.as_bytes(), "k").unwrap();
    let server_tls = tls::server_config(
        &CertKeyPaths {
            cert: leaf.cert.clone(),
            key: leaf.key.clone(),
        },
        &ClientAuth::Optional(ca_path.clone()),
    )
    .unwrap();
    let security = ServerSecurity::new(
        server_tls,
        Arc::new(JwtVerifier::new(public, "mcp", "mcp")),
        "mcp-master",
    );
    std::fs::create_dir(dir.path().join("srv")).unwrap();
    let agent = Arc::new(fake_agent("w1", dir.path().join("srv")).unwrap());
    let server = TestServer::start(agent, security).await.unwrap();

    let signing =
        mcp_security::jwt::SigningKey::from_pem(kp.private_pem.expose().as_bytes(), "k").unwrap();
    let token = issue_token(
        &signing,
        &TokenRequest {
            identity: "mcp-master".to_string(),
            account_type: AccountType::System,
            roles: vec![],
            ttl: Duration::from_secs(3600),
            issuer: "mcp".to_string(),
            audience: "mcp".to_string(),
        },
        &SystemClock,
    )
    .unwrap();
    let client_tls = Arc::new(tls::client_config(&ca_path, None).unwrap());
    let grpc = |pinned: bool| {
        let g = GrpcAgents::new(
            client_tls.clone(),
            BearerInterceptor::new(&token).unwrap(),
            Timeouts::default(),
        );
        if pinned {
            g.verify_node_names()
        } else {
            g
        }
    };
    let at = |node: &str| AgentTarget {
        node: node.to_string(),
        address: server.url(),
    };

    let pinned = grpc(true);
    pinned.health_check(&at("w1")).await.expect("w1 is w1");
    match pinned.health_check(&at("w2")).await {
        Err(AgentError::Unreachable { node, detail, .. }) => {
            assert_eq!(node, "w2");
            assert!(
                detail.contains("certificate") || detail.contains("NotValidForName"),
                "{detail}"
            );
        }
        other => panic!("w1's certificate passed for w2: {other:?}"),
    }
    // The same call verified by address only: w1's certificate names
    // 127.0.0.1, so it passes for any node there.
    grpc(false)
        .health_check(&at("w2"))
        .await
        .expect("by address, any node's certificate naming the host passes");
    server.stop().await.unwrap();
}
