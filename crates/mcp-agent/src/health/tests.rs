//! Probes against real listeners on 127.0.0.1 (a TCP listener, a minimal
//! HTTP/1.1 server answering a fixed status, tonic's grpc.health.v1
//! server) and the tracker's verdicts.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::*;

fn probe(kind: HealthKind, addr: SocketAddr) -> Probe {
    Probe {
        kind,
        addr,
        path: "/healthz".to_string(),
        status: None,
        timeout: Duration::from_secs(2),
    }
}

/// A port nothing listens on (bound, then released).
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// Answers every request with `status` and `body`; records the request
/// lines it saw.
async fn http_server(
    status: &'static str,
    body: &'static str,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let text = String::from_utf8_lossy(&got).to_string();
                let _ = tx.send(text.lines().next().unwrap_or_default().to_string());
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn tcp_passes_on_a_listener_and_fails_on_a_closed_port() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let r = probe(HealthKind::Tcp, l.local_addr().unwrap()).run().await;
    assert!(r.passed, "{r:?}");
    let r = probe(HealthKind::Tcp, closed_port().await).run().await;
    assert!(!r.passed);
    assert!(r.output.contains("connect"), "{}", r.output);
}

#[tokio::test]
async fn http_passes_on_2xx_and_asks_for_the_path() {
    let (addr, mut seen) = http_server("200 OK", "ok").await;
    let r = probe(HealthKind::Http, addr).run().await;
    assert!(r.passed, "{r:?}");
    assert_eq!(r.output, "status 200 OK: ok");
    assert_eq!(seen.recv().await.unwrap(), "GET /healthz HTTP/1.1");
}

#[tokio::test]
async fn http_fails_on_500_with_the_status_and_body_in_its_output() {
    let (addr, _seen) = http_server("500 Internal Server Error", "database is down").await;
    let r = probe(HealthKind::Http, addr).run().await;
    assert!(!r.passed);
    assert_eq!(
        r.output,
        "status 500 Internal Server Error (expected 2xx): database is down"
    );
}

#[tokio::test]
async fn http_expected_status_is_exact() {
    let (addr, _seen) = http_server("204 No Content", "").await;
    let mut p = probe(HealthKind::Http, addr);
    p.status = Some(200);
    let r = p.run().await;
    assert!(!r.passed);
    assert_eq!(r.output, "status 204 No Content (expected 200)");
    p.status = Some(204);
    assert!(p.run().await.passed);
}

#[tokio::test]
async fn http_against_a_closed_port_or_a_silent_server_fails() {
    let r = probe(HealthKind::Http, closed_port().await).run().await;
    assert!(!r.passed);
    assert!(r.output.starts_with("connect:"), "{}", r.output);
    // Accepts and never answers: the timeout decides.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut p = probe(HealthKind::Http, l.local_addr().unwrap());
    p.timeout = Duration::from_millis(300);
    let r = p.run().await;
    assert!(!r.passed);
    assert_eq!(r.output, "no answer within 300ms");
    drop(l);
}

#[tokio::test]
async fn grpc_follows_the_serving_status_of_a_real_health_server() {
    let (reporter, service) = tonic_health::server::health_reporter();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let r = probe(HealthKind::Grpc, addr).run().await;
    assert!(r.passed, "{r:?}");
    assert_eq!(r.output, "status SERVING");
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let r = probe(HealthKind::Grpc, addr).run().await;
    assert!(!r.passed);
    assert_eq!(r.output, "status NOT_SERVING");
    server.abort();
    let r = probe(HealthKind::Grpc, closed_port().await).run().await;
    assert!(!r.passed);
    assert!(r.output.starts_with("grpc connect"), "{}", r.output);
}

fn fail() -> ProbeResult {
    ProbeResult::fail("connect: refused")
}

fn pass() -> ProbeResult {
    ProbeResult {
        passed: true,
        output: "status 200 OK".to_string(),
    }
}

#[test]
fn starting_stays_starting_within_the_grace_then_turns_unhealthy() {
    let t0 = Instant::now();
    let grace = Duration::from_secs(20);
    let mut t = Tracker::new(t0, grace);
    t.record(&fail(), t0 + Duration::from_secs(19));
    assert_eq!(t.state, HealthState::Starting);
    assert_eq!(t.detail, "connect: refused");
    t.record(&fail(), t0 + grace);
    assert_eq!(t.state, HealthState::Unhealthy);
    t.record(&pass(), t0 + grace);
    assert_eq!(t.state, HealthState::Healthy);
}

#[test]
fn healthy_turns_unhealthy_only_after_three_failures_in_a_row() {
    let t0 = Instant::now();
    let mut t = Tracker::new(t0, Duration::from_secs(1));
    t.record(&pass(), t0);
    for _ in 0..FAILURES_TO_UNHEALTHY - 1 {
        t.record(&fail(), t0);
        assert_eq!(t.state, HealthState::Healthy);
    }
    t.record(&pass(), t0);
    t.record(&fail(), t0);
    t.record(&fail(), t0);
    assert_eq!(t.state, HealthState::Healthy, "a pass resets the count");
    t.record(&fail(), t0);
    assert_eq!(t.state, HealthState::Unhealthy);
}

#[test]
fn the_interval_is_capped_and_shorter_while_starting() {
    let t0 = Instant::now();
    let mut t = Tracker::new(t0, Duration::from_secs(60));
    let (ten, one) = (Duration::from_secs(10), Duration::from_secs(1));
    assert_eq!(t.interval(ten, one, None), one);
    t.record(&pass(), t0);
    assert_eq!(t.interval(ten, one, None), ten);
    assert_eq!(
        t.interval(ten, one, Some(Duration::from_secs(2))),
        Duration::from_secs(2)
    );
}
