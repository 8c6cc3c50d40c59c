#![allow(clippy::unwrap_used)]
//! Routes and certificates on deploy, undeploy, proxy repair and renewal,
//! against the recording fakes of `mcp_net`.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use mcp_net::proxy::{ProxyRoutes as _, RouteKey, RouteMode};
use mcp_net::testing::{FakeIssuer, FakeProxy};

use super::*;

struct Net {
    h: Harness,
    proxy: Arc<FakeProxy>,
    issuer: Arc<FakeIssuer>,
}

fn net_with(issuer: FakeIssuer, with_issuer: bool) -> Net {
    let mut h = Harness::new();
    let proxy = Arc::new(FakeProxy::new());
    let issuer = Arc::new(issuer);
    let net = Networking {
        l7: Some(proxy.clone()),
        l4: Some(proxy.clone()),
        issuer: with_issuer.then(|| issuer.clone() as Arc<dyn mcp_net::CertIssuer>),
        internal_zone: Some("mcp.test".into()),
        proxy_address: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 12))),
        fleet_ca: None,
        cert_dir: h.dir.path().join("certs"),
        renew_before: DEFAULT_RENEW_BEFORE,
    };
    h.agent = h.agent.with_networking(net);
    Net { h, proxy, issuer }
}

fn net() -> Net {
    net_with(FakeIssuer::new(), true)
}

fn web(name: &str, host: Option<&str>, port: u16) -> ServiceSpec {
    let host = host
        .map(|h| format!("hostname = \"{h}\"\n"))
        .unwrap_or_default();
    spec(
        name,
        &format!(
            "name = \"{name}\"\n[[components]]\nname = \"{name}\"\nimage = \"{V1}\"\n[[components.routes]]\nport = {port}\n{host}"
        ),
    )
}

fn step<'a>(steps: &'a [Step], name: &str) -> &'a Step {
    steps
        .iter()
        .find(|s| s.step == name)
        .unwrap_or_else(|| panic!("no step {name} in {steps:#?}"))
}

#[tokio::test]
async fn deploy_issues_the_certificate_then_registers_routes_to_loopback_host_ports() {
    let n = net();
    let out = n.h.agent.deploy(app(V1, true), None).await.unwrap();
    let cert = step(&out.steps, "certificate app.mcp.test");
    assert_eq!(cert.outcome, StepOutcome::Done, "{cert:?}");
    assert!(cert.detail.contains("issued by fake"), "{}", cert.detail);
    assert_eq!(
        n.issuer.requests(),
        vec![vec!["app.mcp.test".to_string()]],
        "one certificate for the one hostname"
    );

    let routes = n.proxy.list().await.unwrap();
    let shown: Vec<(u16, &str, RouteMode)> = routes
        .iter()
        .map(|r| (r.listen_port, r.hostname.as_str(), r.mode))
        .collect();
    assert_eq!(
        shown,
        [
            (443, "app.mcp.test", RouteMode::L7),
            (5432, "app.mcp.test", RouteMode::L4),
            (8443, "app.mcp.test", RouteMode::L7),
        ]
    );
    let ports = &out
        .status
        .components
        .iter()
        .find(|c| c.name == "web")
        .unwrap()
        .ports;
    let r443 = routes.iter().find(|r| r.listen_port == 443).unwrap();
    assert_eq!(
        r443.backend,
        format!("127.0.0.1:{}", ports[""]),
        "backend = the container's host port on loopback"
    );
    let tls = r443.tls.as_ref().expect("L7 terminates TLS");
    let key_mode = std::fs::metadata(&tls.key).unwrap().permissions().mode() & 0o777;
    assert_eq!(key_mode, 0o600, "the private key is private");
    let info = mcp_net::cert::cert_info(&std::fs::read_to_string(&tls.cert).unwrap()).unwrap();
    assert_eq!(info.dns_names, ["app.mcp.test"]);
    assert!(
        routes
            .iter()
            .find(|r| r.listen_port == 5432)
            .unwrap()
            .tls
            .is_none(),
        "L4 is passthrough"
    );

    // The status shows each route as a URL with its certificate's expiry.
    let web = out
        .status
        .components
        .iter()
        .find(|c| c.name == "web")
        .unwrap();
    let urls: Vec<&str> = web.routes.iter().map(|r| r.url.as_str()).collect();
    assert_eq!(
        urls,
        ["https://app.mcp.test:443", "https://app.mcp.test:8443"]
    );
    assert_eq!(
        web.routes[0].cert_serial.as_deref(),
        Some(info.serial.as_str())
    );
    assert_eq!(
        web.routes[0].cert_expires,
        Some(Timestamp::from_system(info.not_after))
    );
    assert_eq!(web.routes[0].proxy_address.as_deref(), Some("127.0.0.12"));
    let listed = n.h.agent.list_services().await.unwrap();
    assert_eq!(
        listed.services[0].components, out.status.components,
        "bulk status carries routes too"
    );

    // Deploying the same spec again changes nothing.
    let again = n.h.agent.deploy(app(V1, true), None).await.unwrap();
    assert_eq!(
        step(&again.steps, "certificate app.mcp.test").outcome,
        StepOutcome::Skipped
    );
    assert_eq!(
        step(&again.steps, "route app.mcp.test:443").outcome,
        StepOutcome::Skipped
    );
    assert_eq!(n.issuer.requests().len(), 1, "the certificate is reused");
}

#[tokio::test]
async fn a_certificate_failure_fails_the_deploy_and_registers_nothing() {
    let n = net();
    n.issuer.fail(Some("connection refused"));
    let err = n.h.agent.deploy(app(V1, true), None).await.unwrap_err();
    assert!(matches!(err, AgentError::Integration { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("certificate app.mcp.test") && msg.contains("connection refused"),
        "{msg}"
    );
    assert!(
        n.proxy.list().await.unwrap().is_empty(),
        "no route points at a missing certificate"
    );
    assert!(n.h.creates().is_empty(), "no container was touched");
    assert!(
        n.h.agent.list_services().await.unwrap().services.is_empty(),
        "nothing recorded"
    );

    n.issuer.fail(None);
    n.h.agent.deploy(app(V1, true), None).await.unwrap();
    assert_eq!(n.proxy.list().await.unwrap().len(), 3, "the retry deploys");
}

#[tokio::test]
async fn undeploy_removes_routes_and_certificates_and_keeps_data() {
    let n = net();
    n.h.agent
        .deploy(web("hello", None, 8443), None)
        .await
        .unwrap();
    let cert_dir = n.h.dir.path().join("certs/hello.mcp.test");
    assert!(cert_dir.join("key.pem").is_file());
    let data = n.h.dir.path().join("srv/hello");
    std::fs::create_dir_all(&data).unwrap();
    let steps = n.h.agent.undeploy("hello", false).await.unwrap();
    assert_eq!(
        step(&steps, "remove route hello.mcp.test:8443").outcome,
        StepOutcome::Done
    );
    assert_eq!(
        step(&steps, "remove certificate hello.mcp.test").outcome,
        StepOutcome::Done
    );
    assert!(n.proxy.list().await.unwrap().is_empty());
    assert!(!cert_dir.exists(), "key and certificate deleted");
    assert!(data.is_dir(), "data in /srv stays");
    let (routes, certs) = n.h.agent.routes_and_certificates().await.unwrap();
    assert!(routes.is_empty() && certs.is_empty());
}

#[tokio::test]
async fn a_route_leaving_the_spec_is_removed_with_its_certificate() {
    let n = net();
    n.h.agent
        .deploy(web("hello", None, 8443), None)
        .await
        .unwrap();
    let out =
        n.h.agent
            .deploy(web("hello", Some("hi.mcp.test"), 8443), None)
            .await
            .unwrap();
    assert_eq!(
        step(&out.steps, "remove route hello.mcp.test:8443").outcome,
        StepOutcome::Done
    );
    assert_eq!(
        step(&out.steps, "remove certificate hello.mcp.test").outcome,
        StepOutcome::Done
    );
    let hosts: Vec<String> = n
        .proxy
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.hostname)
        .collect();
    assert_eq!(hosts, ["hi.mcp.test"]);
}

#[tokio::test]
async fn conflicting_routes_are_refused_before_anything_changes() {
    let n = net();
    n.h.agent
        .deploy(web("one", Some("shared.mcp.test"), 8443), None)
        .await
        .unwrap();
    let err =
        n.h.agent
            .deploy(web("two", Some("shared.mcp.test"), 8443), None)
            .await
            .unwrap_err();
    assert!(
        matches!(err, AgentError::FailedPrecondition { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("already routed to service one"),
        "{err}"
    );
    let l4 = spec(
        "tcp",
        &format!("name = \"tcp\"\n[[components]]\nname = \"tcp\"\nimage = \"{V1}\"\n[[components.routes]]\nport = 8443\nmode = \"l4\"\n"),
    );
    let err = n.h.agent.deploy(l4, None).await.unwrap_err();
    assert!(err.to_string().contains("serves l7 routes"), "{err}");
    assert_eq!(
        n.h.creates(),
        ["one"],
        "the refused deploys created nothing"
    );
    // Two services on one port, told apart by hostname: fine.
    n.h.agent
        .deploy(web("two", Some("two.mcp.test"), 8443), None)
        .await
        .unwrap();
    assert_eq!(n.proxy.list().await.unwrap().len(), 2);
}

#[tokio::test]
async fn without_a_proxy_or_issuer_route_steps_are_skipped_not_done() {
    let n = net_with(FakeIssuer::new(), false);
    let out =
        n.h.agent
            .deploy(web("hello", None, 8443), None)
            .await
            .unwrap();
    let cert = step(&out.steps, "certificate hello.mcp.test");
    assert_eq!(cert.outcome, StepOutcome::Skipped);
    assert!(
        cert.detail.contains("no certificate issuer"),
        "{}",
        cert.detail
    );
    assert_eq!(
        step(&out.steps, "route hello.mcp.test:8443").outcome,
        StepOutcome::Skipped
    );
    assert!(n.proxy.list().await.unwrap().is_empty());

    // A proxy but no internal zone: a route without a hostname cannot be named.
    let mut h = Harness::new();
    let proxy: Arc<dyn mcp_net::ProxyRoutes> = Arc::new(FakeProxy::new());
    h.agent = h.agent.with_networking(Networking {
        l4: Some(proxy),
        ..Networking::default()
    });
    let out = h.agent.deploy(app(V1, true), None).await.unwrap_err();
    assert!(
        out.to_string().contains("no [proxy] internal_zone"),
        "{out}"
    );
    let h = Harness::new();
    let out = h
        .agent
        .deploy(web("x", Some("x.example.test"), 443), None)
        .await
        .unwrap();
    let s = step(&out.steps, "route x.example.test:443");
    assert_eq!(s.outcome, StepOutcome::Skipped);
    assert!(s.detail.contains("no L7 proxy configured"), "{}", s.detail);
}

#[tokio::test]
async fn a_proxy_restarted_empty_gets_its_routes_back_and_strays_are_removed() {
    let n = net();
    n.h.agent.deploy(app(V1, true), None).await.unwrap();
    let before = n.proxy.list().await.unwrap();
    n.proxy.restart_empty();
    let stray = mcp_net::ProxyRoute {
        listen_port: 9999,
        hostname: "stray.mcp.test".into(),
        backend: "127.0.0.1:1".into(),
        mode: RouteMode::L4,
        tls: None,
        backend_tls: None,
    };
    n.proxy.add(&stray).await.unwrap();
    let check = n.h.agent.check_proxies().await.unwrap();
    assert_eq!(check.restored.len(), 3, "{check:?}");
    assert_eq!(check.removed, ["stray.mcp.test:9999"]);
    assert_eq!(n.proxy.list().await.unwrap(), before);
    let quiet = n.h.agent.check_proxies().await.unwrap();
    assert_eq!(quiet, ProxyCheck::default(), "nothing to do once repaired");

    n.proxy.set_down(true);
    let down = n.h.agent.check_proxies().await.unwrap();
    assert_eq!(
        down.errors.len(),
        1,
        "one proxy (both modes) down: {down:?}"
    );
}

#[tokio::test]
async fn certificates_are_renewed_with_30_days_left_and_failures_back_off() {
    let n = net_with(
        FakeIssuer::with_validity(Duration::from_secs(40 * 86_400)),
        true,
    );
    n.h.clock
        .store(Timestamp::now().as_unix(), Ordering::SeqCst);
    n.h.agent
        .deploy(web("hello", None, 8443), None)
        .await
        .unwrap();
    let (_, certs) = n.h.agent.routes_and_certificates().await.unwrap();
    let first = certs[0].clone();
    assert!(
        n.h.agent.renew_certificates().await.unwrap().is_empty(),
        "40 days left: not due"
    );

    n.h.advance(11 * 86_400);
    n.issuer.fail(Some("ACME server down"));
    let out = n.h.agent.renew_certificates().await.unwrap();
    assert_eq!(out.len(), 1);
    assert!(
        out[0].starts_with("failed hello.mcp.test") && out[0].contains("ACME server down"),
        "{out:?}"
    );
    let (_, certs) = n.h.agent.routes_and_certificates().await.unwrap();
    assert_eq!(certs[0], first, "the old certificate keeps serving");
    assert!(
        n.h.agent.renew_certificates().await.unwrap().is_empty(),
        "backing off"
    );
    let events = n.h.agent.events(EventQuery::default()).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind.as_str() == "cert_renewal_failed"),
        "{events:?}"
    );

    n.issuer.fail(None);
    n.h.advance(61);
    let out = n.h.agent.renew_certificates().await.unwrap();
    assert_eq!(out, ["renewed hello.mcp.test"]);
    let (routes, certs) = n.h.agent.routes_and_certificates().await.unwrap();
    assert_ne!(certs[0].serial, first.serial, "a new certificate");
    assert!(
        certs[0].issued_at > first.issued_at,
        "issued at the renewal"
    );
    assert_eq!(
        n.proxy.cert_reloads(),
        1,
        "the proxy reread its certificate files"
    );
    let pem = std::fs::read_to_string(&routes[0].proxy.tls.as_ref().unwrap().cert).unwrap();
    assert_eq!(
        mcp_net::cert::cert_info(&pem).unwrap().serial,
        certs[0].serial,
        "the files hold the new one"
    );
}

#[tokio::test]
async fn proxy_routes_added_by_request_get_a_certificate_and_stay_apart_from_services() {
    let n = net();
    let route = mcp_net::ProxyRoute {
        listen_port: 443,
        hostname: "manual.mcp.test".into(),
        backend: "127.0.0.1:7000".into(),
        mode: RouteMode::L7,
        tls: None,
        backend_tls: None,
    };
    let steps = n.h.agent.add_proxy_route(route).await.unwrap();
    assert_eq!(
        step(&steps, "certificate manual.mcp.test").outcome,
        StepOutcome::Done
    );
    assert!(n.proxy.list().await.unwrap()[0].tls.is_some());
    n.h.agent
        .deploy(web("hello", None, 443), None)
        .await
        .unwrap();
    let err =
        n.h.agent
            .remove_proxy_route(RouteKey {
                listen_port: 443,
                hostname: "hello.mcp.test".into(),
            })
            .await
            .unwrap_err();
    assert!(
        err.to_string().contains("belongs to service hello"),
        "{err}"
    );
    n.h.agent
        .remove_proxy_route(RouteKey {
            listen_port: 443,
            hostname: "manual.mcp.test".into(),
        })
        .await
        .unwrap();
    let (routes, certs) = n.h.agent.routes_and_certificates().await.unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(
        certs.len(),
        1,
        "the manual route's certificate went with it"
    );
}
