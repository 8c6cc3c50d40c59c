//! The HAProxy adapter against a real HAProxy (Debian package `haproxy`).

#![allow(clippy::unwrap_used)]

mod proxy_common;

use std::net::IpAddr;
use std::sync::Arc;

use mcp_net::proxy::RouteMode;
use mcp_net::testing::servers::free_port;
use mcp_net::testing::servers::haproxy::HaproxyServer;
use mcp_net::testing::{proxy_suite, ProxySuiteEnv};
use mcp_net::{Haproxy, NetError, ProxyRoute, ProxyRoutes};
use proxy_common::{expect_not_served, expect_served, issue, new_ca, tls_backend};

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn l4(port: u16, host: &str, backend: u16) -> ProxyRoute {
    ProxyRoute {
        listen_port: port,
        hostname: host.to_string(),
        backend: format!("127.0.0.1:{backend}"),
        mode: RouteMode::L4,
        tls: None,
        backend_tls: None,
    }
}

#[tokio::test]
async fn haproxy_passes_the_proxy_suite() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = HaproxyServer::start(&dir.path().join("haproxy")) else {
        return;
    };
    let haproxy = Haproxy::new(server.options(LOOPBACK));
    proxy_suite(
        &haproxy,
        &ProxySuiteEnv::new(dir.path(), [free_port(), free_port()]),
    )
    .await;
}

#[tokio::test]
async fn haproxy_passes_tls_through_by_sni() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = HaproxyServer::start(&dir.path().join("haproxy")) else {
        return;
    };
    let haproxy = Haproxy::new(server.options(LOOPBACK));
    // The backends terminate TLS themselves, with certificates of a CA the
    // proxy knows nothing about.
    let ca = new_ca(dir.path(), "backends");
    let tls = issue(&ca, "tls.mcp.test", dir.path(), "tls");
    let other = issue(&ca, "other.mcp.test", dir.path(), "other");
    let b1 = tls_backend(&tls.chain_pem, &tls.key_pem, "tls one").await;
    let b2 = tls_backend(&other.chain_pem, &other.key_pem, "tls two").await;
    let port = free_port();
    let r1 = l4(port, "tls.mcp.test", b1);
    let r2 = l4(port, "other.mcp.test", b2);
    haproxy.add(&r1).await.unwrap();
    haproxy.add(&r2).await.unwrap();
    let mut both = vec![r1.clone(), r2.clone()];
    both.sort();
    assert_eq!(haproxy.list().await.unwrap(), both);

    // The client sees each backend's own certificate through the proxy.
    let s1 = expect_served(port, "tls.mcp.test", &ca.pem, "tls one").await;
    assert_eq!(s1, tls.serial, "tls.mcp.test: the backend's certificate");
    let s2 = expect_served(port, "other.mcp.test", &ca.pem, "tls two").await;
    assert_eq!(
        s2, other.serial,
        "other.mcp.test: the backend's certificate"
    );
    expect_not_served(port, "unknown.mcp.test", &ca.pem).await;

    haproxy.reload_certificates().await.unwrap();
    assert!(haproxy.remove(&r2.key()).await.unwrap());
    expect_not_served(port, "other.mcp.test", &ca.pem).await;
    expect_served(port, "tls.mcp.test", &ca.pem, "tls one").await;
    assert_eq!(haproxy.list().await.unwrap(), vec![r1]);
}

#[tokio::test]
async fn a_reload_haproxy_refuses_puts_the_previous_config_back() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = HaproxyServer::start(&dir.path().join("haproxy")) else {
        return;
    };
    let haproxy = Haproxy::new(server.options(LOOPBACK));
    let ca = new_ca(dir.path(), "backends");
    let tls = issue(&ca, "tls.mcp.test", dir.path(), "tls");
    let port = free_port();
    let r1 = l4(
        port,
        "tls.mcp.test",
        tls_backend(&tls.chain_pem, &tls.key_pem, "tls one").await,
    );
    haproxy.add(&r1).await.unwrap();
    let before = std::fs::read_to_string(server.config_path()).unwrap();

    // A port someone else holds: the config is valid, the reload fails.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = l4(taken.local_addr().unwrap().port(), "busy.mcp.test", 9);
    match haproxy.add(&busy).await {
        Err(NetError::Rejected { server: s, .. }) => {
            assert!(s.contains("master socket"), "{s}");
        }
        other => panic!("a reload binding a taken port: {other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(server.config_path()).unwrap(),
        before,
        "the previous file is back"
    );
    assert_eq!(haproxy.list().await.unwrap(), vec![r1.clone()]);
    expect_served(port, "tls.mcp.test", &ca.pem, "tls one").await;
    drop(taken);
    // And the next change works.
    let r2 = l4(port, "two.mcp.test", 9);
    haproxy.add(&r2).await.unwrap();
    assert_eq!(haproxy.list().await.unwrap(), vec![r1, r2]);
}

#[tokio::test]
async fn concurrent_changes_are_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = HaproxyServer::start(&dir.path().join("haproxy")) else {
        return;
    };
    let haproxy = Arc::new(Haproxy::new(server.options(LOOPBACK)));
    let port = free_port();
    let routes: Vec<ProxyRoute> = (0..4)
        .map(|i| l4(port, &format!("s{i}.mcp.test"), 20000 + i))
        .collect();
    let mut adds = tokio::task::JoinSet::new();
    for r in routes.clone() {
        let haproxy = haproxy.clone();
        adds.spawn(async move { haproxy.add(&r).await });
    }
    while let Some(result) = adds.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(
        haproxy.list().await.unwrap(),
        routes,
        "no add lost another's"
    );
}

#[tokio::test]
async fn an_haproxy_restarted_empty_lists_nothing_and_a_dead_one_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut server) = HaproxyServer::start(&dir.path().join("haproxy")) else {
        return;
    };
    let haproxy = Haproxy::new(server.options(LOOPBACK));
    let ca = new_ca(dir.path(), "backends");
    let tls = issue(&ca, "tls.mcp.test", dir.path(), "tls");
    let port = free_port();
    let r1 = l4(
        port,
        "tls.mcp.test",
        tls_backend(&tls.chain_pem, &tls.key_pem, "tls one").await,
    );
    haproxy.add(&r1).await.unwrap();
    expect_served(port, "tls.mcp.test", &ca.pem, "tls one").await;

    server.restart_empty();
    assert_eq!(haproxy.list().await.unwrap(), vec![], "restarted empty");
    expect_not_served(port, "tls.mcp.test", &ca.pem).await;
    haproxy.add(&r1).await.unwrap();
    expect_served(port, "tls.mcp.test", &ca.pem, "tls one").await;

    // A route in the file that the running HAProxy does not have (a crash
    // between writing and reloading) is not listed.
    let cfg = std::fs::read_to_string(server.config_path()).unwrap();
    let ghost = l4(port, "ghost.mcp.test", 9);
    let line = format!("# mcp-route {}\n", serde_json::to_string(&ghost).unwrap());
    std::fs::write(server.config_path(), format!("{line}{cfg}")).unwrap();
    assert_eq!(haproxy.list().await.unwrap(), vec![r1.clone()]);

    server.kill();
    match haproxy.list().await {
        Err(NetError::Unreachable { server: s, .. }) => {
            assert_eq!(
                s,
                format!("haproxy master socket {}", server.master_socket().display())
            );
        }
        other => panic!("a dead HAProxy: {other:?}"),
    }
    assert!(matches!(
        haproxy.add(&r1).await,
        Err(NetError::Unreachable { .. })
    ));
}
