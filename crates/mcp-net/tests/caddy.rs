//! The Caddy adapter against a real Caddy (Debian package `caddy`).

#![allow(clippy::unwrap_used)]

mod proxy_common;

use std::net::IpAddr;
use std::sync::Arc;

use mcp_net::proxy::BackendTls;
use mcp_net::proxy::RouteMode;
use mcp_net::testing::servers::caddy::CaddyServer;
use mcp_net::testing::servers::free_port;
use mcp_net::testing::{proxy_suite, ProxySuiteEnv};
use mcp_net::{Caddy, NetError, ProxyRoute, ProxyRoutes, TlsFiles};
use proxy_common::{expect_not_served, expect_served, http_backend, issue, new_ca, tls_backend};

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn l7(port: u16, host: &str, backend: u16, tls: &TlsFiles) -> ProxyRoute {
    ProxyRoute {
        listen_port: port,
        hostname: host.to_string(),
        backend: format!("127.0.0.1:{backend}"),
        mode: RouteMode::L7,
        tls: Some(tls.clone()),
        backend_tls: None,
    }
}

#[tokio::test]
async fn caddy_passes_the_proxy_suite() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = CaddyServer::start(&dir.path().join("caddy")) else {
        return;
    };
    let caddy = Caddy::new(server.admin(), LOOPBACK);
    proxy_suite(
        &caddy,
        &ProxySuiteEnv::new(dir.path(), [free_port(), free_port()]),
    )
    .await;
}

#[tokio::test]
async fn caddy_terminates_tls_per_hostname_forwards_by_host_and_reloads_renewed_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = CaddyServer::start(&dir.path().join("caddy")) else {
        return;
    };
    let caddy = Caddy::new(server.admin(), LOOPBACK);
    let ca = new_ca(dir.path(), "routes");
    let one = issue(&ca, "one.mcp.test", dir.path(), "one");
    let two = issue(&ca, "two.mcp.test", dir.path(), "two");
    let (b1, b2) = (
        http_backend("service one").await,
        http_backend("service two").await,
    );
    let port = free_port();
    let r1 = l7(port, "one.mcp.test", b1, &one.files);
    let r2 = l7(port, "two.mcp.test", b2, &two.files);
    caddy.add(&r1).await.unwrap();
    caddy.add(&r2).await.unwrap();
    assert_eq!(caddy.list().await.unwrap(), vec![r1.clone(), r2.clone()]);

    // Each name: its own certificate (verified against the CA, SAN = the
    // name) and its own backend, on one proxy port.
    let s1 = expect_served(port, "one.mcp.test", &ca.pem, "service one").await;
    assert_eq!(s1, one.serial, "one.mcp.test presents its certificate");
    let s2 = expect_served(port, "two.mcp.test", &ca.pem, "service two").await;
    assert_eq!(s2, two.serial, "two.mcp.test presents its certificate");
    expect_not_served(port, "three.mcp.test", &ca.pem).await;

    // Renewal in place: the files change, reload_certificates, new serial.
    let renewed = issue(&ca, "one.mcp.test", dir.path(), "one");
    assert_ne!(renewed.serial, one.serial);
    assert_eq!(
        expect_served(port, "one.mcp.test", &ca.pem, "service one").await,
        one.serial,
        "before the reload Caddy still serves the certificate it loaded"
    );
    caddy.reload_certificates().await.unwrap();
    assert_eq!(
        expect_served(port, "one.mcp.test", &ca.pem, "service one").await,
        renewed.serial,
        "after reload_certificates the renewed certificate is served"
    );
    assert_eq!(
        expect_served(port, "two.mcp.test", &ca.pem, "service two").await,
        two.serial
    );

    // Remove one route: that name stops answering, the other still does.
    assert!(caddy.remove(&r2.key()).await.unwrap());
    expect_not_served(port, "two.mcp.test", &ca.pem).await;
    expect_served(port, "one.mcp.test", &ca.pem, "service one").await;
    assert_eq!(caddy.list().await.unwrap(), vec![r1]);
}

#[tokio::test]
async fn caddy_speaks_tls_to_the_backend_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = CaddyServer::start(&dir.path().join("caddy")) else {
        return;
    };
    let caddy = Caddy::new(server.admin(), LOOPBACK);
    let ca = new_ca(dir.path(), "routes");
    let edge = issue(&ca, "edge.mcp.test", dir.path(), "edge");
    let wrong = issue(&ca, "wrong.mcp.test", dir.path(), "wrong");
    // The backend (an edge route's worker) has a certificate of its own CA.
    let workers = new_ca(dir.path(), "workers");
    let worker = issue(&workers, "worker.mcp.test", dir.path(), "worker");
    let backend = tls_backend(&worker.chain_pem, &worker.key_pem, "edge worker").await;
    let port = free_port();
    let mut route = l7(port, "edge.mcp.test", backend, &edge.files);
    route.backend_tls = Some(BackendTls {
        server_name: "worker.mcp.test".into(),
        ca: workers.pem_path.clone(),
    });
    caddy.add(&route).await.unwrap();
    assert_eq!(caddy.list().await.unwrap(), vec![route.clone()]);
    expect_served(port, "edge.mcp.test", &ca.pem, "edge worker").await;

    // A server name the backend's certificate does not carry: Caddy
    // refuses the backend (502), it does not forward unverified.
    let mut bad = l7(port, "wrong.mcp.test", backend, &wrong.files);
    bad.backend_tls = Some(BackendTls {
        server_name: "other.mcp.test".into(),
        ca: workers.pem_path.clone(),
    });
    caddy.add(&bad).await.unwrap();
    expect_not_served(port, "wrong.mcp.test", &ca.pem).await;
    expect_served(port, "edge.mcp.test", &ca.pem, "edge worker").await;
}

#[tokio::test]
async fn a_config_caddy_refuses_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = CaddyServer::start(&dir.path().join("caddy")) else {
        return;
    };
    let caddy = Caddy::new(server.admin(), LOOPBACK);
    let ca = new_ca(dir.path(), "routes");
    let one = issue(&ca, "one.mcp.test", dir.path(), "one");
    let port = free_port();
    let r1 = l7(
        port,
        "one.mcp.test",
        http_backend("service one").await,
        &one.files,
    );
    caddy.add(&r1).await.unwrap();
    let missing = TlsFiles {
        cert: dir.path().join("missing.crt"),
        key: dir.path().join("missing.key"),
    };
    let bad = l7(port, "bad.mcp.test", 9, &missing);
    match caddy.add(&bad).await {
        Err(NetError::Rejected { server, detail }) => {
            assert!(server.starts_with("caddy admin 127.0.0.1:"), "{server}");
            assert!(detail.contains("missing.crt"), "Caddy's reason: {detail}");
        }
        other => panic!("a certificate file that does not exist: {other:?}"),
    }
    assert_eq!(
        caddy.list().await.unwrap(),
        vec![r1],
        "the old config stays"
    );
    expect_served(port, "one.mcp.test", &ca.pem, "service one").await;
}

#[tokio::test]
async fn concurrent_changes_are_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = CaddyServer::start(&dir.path().join("caddy")) else {
        return;
    };
    let caddy = Arc::new(Caddy::new(server.admin(), LOOPBACK));
    let ca = new_ca(dir.path(), "routes");
    let cert = issue(&ca, "shared.mcp.test", dir.path(), "shared");
    let port = free_port();
    let routes: Vec<ProxyRoute> = (0..6)
        .map(|i| l7(port, &format!("s{i}.mcp.test"), 20000 + i, &cert.files))
        .collect();
    let mut adds = tokio::task::JoinSet::new();
    for r in routes.clone() {
        let caddy = caddy.clone();
        adds.spawn(async move { caddy.add(&r).await });
    }
    while let Some(result) = adds.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(caddy.list().await.unwrap(), routes, "no add lost another's");
}

#[tokio::test]
async fn a_caddy_restarted_empty_lists_nothing_and_a_dead_one_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut server) = CaddyServer::start(&dir.path().join("caddy")) else {
        return;
    };
    let caddy = Caddy::new(server.admin(), LOOPBACK);
    let ca = new_ca(dir.path(), "routes");
    let one = issue(&ca, "one.mcp.test", dir.path(), "one");
    let port = free_port();
    let r1 = l7(
        port,
        "one.mcp.test",
        http_backend("service one").await,
        &one.files,
    );
    caddy.add(&r1).await.unwrap();
    expect_served(port, "one.mcp.test", &ca.pem, "service one").await;

    server.restart_empty();
    assert_eq!(caddy.list().await.unwrap(), vec![], "restarted empty");
    expect_not_served(port, "one.mcp.test", &ca.pem).await;
    caddy.add(&r1).await.unwrap();
    expect_served(port, "one.mcp.test", &ca.pem, "service one").await;

    server.kill();
    match caddy.list().await {
        Err(NetError::Unreachable { server: s, .. }) => {
            assert_eq!(s, format!("caddy admin {}", server.admin()));
        }
        other => panic!("a dead Caddy: {other:?}"),
    }
    assert!(matches!(
        caddy.add(&r1).await,
        Err(NetError::Unreachable { .. })
    ));
}
