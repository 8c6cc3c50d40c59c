//! What a route costs a deploy: the same one-component service deployed
//! (container recreated) with and without one L7 route, alternately, on
//! one agent with real podman and a real Caddy; the route's certificate is
//! already issued, so the difference is the route's own work (certificate
//! reuse check, proxy add, registry rows).
//!
//! ```text
//! CONTAINERS_CONF=$PWD/tests/podman/containers.conf \
//!   cargo run -p mcp-agent --example bench_routes -- [ROUNDS]
//! ```
//!
//! Prints the median and spread of each, and the ratio (docs/BENCHMARKS.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_agent::{Agent, AgentSettings, Networking, PortRange, Registry};
use mcp_net::testing::servers::{caddy::CaddyServer, free_port};
use mcp_net::{CertIssuer, LocalCa, ProxyRoutes};
use mcp_runtime::testing::podman::WEB_V1;
use mcp_spec::{LoadOptions, ServiceSpec};

fn spec(name: &str, round: usize, route: Option<u16>) -> ServiceSpec {
    let route = route
        .map(|p| format!("[[components.routes]]\nport = {p}\nmode = \"l7\"\n"))
        .unwrap_or_default();
    // A new env value every round: the container is recreated each time.
    let toml = format!(
        "name = \"{name}\"\n[[components]]\nname = \"{name}\"\nimage = \"{WEB_V1}\"\n\
         env = [\"ROUND={round}\", \"PORT=18080\"]\n{route}"
    );
    mcp_spec::parse_service(
        &format!("{name}.toml"),
        name,
        &toml,
        &LoadOptions::default(),
    )
    .unwrap()
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(15);
    let dir = tempfile::tempdir().unwrap();
    let p = mcp_runtime::testing::podman::shared(dir.path().join("podman"))
        .expect("podman (Debian packages podman runc busybox-static)");
    let caddy = CaddyServer::start(&dir.path().join("caddy")).expect("caddy");
    let ca = {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        LocalCa::from_pem(&cert.pem(), &key.serialize_pem(), "bench CA").unwrap()
    };
    let issuer: Arc<dyn CertIssuer> = Arc::new(ca);
    let proxy: Arc<dyn ProxyRoutes> = Arc::new(mcp_net::Caddy::new(
        caddy.admin(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    ));
    let registry = Registry::open(&dir.path().join("agent.db")).unwrap();
    let mut settings = AgentSettings::new("bench");
    settings.port_range = PortRange::new(43000, 43099).unwrap();
    settings.files_root = dir.path().join("srv");
    settings.stop_timeout = Duration::from_secs(1);
    let agent = Agent::new(p.runtime(), registry, settings).with_networking(Networking {
        l7: Some(proxy),
        issuer: Some(issuer),
        internal_zone: Some("mcp.test".into()),
        proxy_address: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        cert_dir: dir.path().join("certs"),
        ..Networking::default()
    });
    let port = free_port();
    // Warm-up: first deploys pull nothing but create the records and the
    // route's certificate.
    agent
        .deploy(spec("bench-plain", 0, None), None)
        .await
        .unwrap();
    agent
        .deploy(spec("bench-route", 0, Some(port)), None)
        .await
        .unwrap();
    let (mut plain, mut routed) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let t = Instant::now();
        agent
            .deploy(spec("bench-plain", round, None), None)
            .await
            .unwrap();
        plain.push(t.elapsed());
        let t = Instant::now();
        let out = agent
            .deploy(spec("bench-route", round, Some(port)), None)
            .await
            .unwrap();
        routed.push(t.elapsed());
        assert!(
            out.steps
                .iter()
                .any(|s| s.step == "certificate bench-route.mcp.test"
                    && s.detail.starts_with("unchanged")),
            "the certificate is reused"
        );
    }
    for s in ["bench-plain", "bench-route"] {
        agent.undeploy(s, true).await.unwrap();
    }
    let (pmin, pmed, pmax) = stats(plain);
    let (rmin, rmed, rmax) = stats(routed);
    println!("rounds: {rounds}");
    println!(
        "deploy without routes: median {pmed:?} (min {pmin:?}, max {rmax:?})",
        rmax = pmax
    );
    println!("deploy with one L7 route: median {rmed:?} (min {rmin:?}, max {rmax:?})");
    println!(
        "ratio (medians): {:.2}",
        rmed.as_secs_f64() / pmed.as_secs_f64()
    );
}
