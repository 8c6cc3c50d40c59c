//! Routes by name over TLS, end to end on one node: the agent's core with
//! real podman containers, a real Caddy (L7), a real HAProxy (L4), the
//! local CA, and a real Pebble (ACME, validation on) resolving through a
//! real Knot. The client is curl, verifying against the issuing CA.
//!
//! Needs podman, caddy, haproxy, knot, knot-dnsutils, pebble and curl
//! (scripts/test.sh installs them). Skips loudly without podman unless
//! `MCP_REQUIRE_PODMAN=1`; a missing server fails unless
//! `MCP_SKIP_MISSING_SERVERS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_agent::{Agent, AgentSettings, Networking, PortRange, Registry, Timestamp};
use mcp_net::testing::servers::{
    caddy::CaddyServer, free_port, haproxy::HaproxyServer, knot::KnotServer, pebble::PebbleServer,
};
use mcp_net::{Acme, AcmeOptions, CertIssuer, LocalCa, ProxyRoutes, Rfc2136};
use mcp_runtime::testing::podman::{TestPodman, WEB_V1, WEB_V2};
use mcp_runtime::Podman;
use mcp_spec::{LoadOptions, ServiceSpec};

/// The host's programs and libraries, read-only, for the container that
/// runs the host's openssl (the L4 test).
const HOST_PATHS: &[&str] = &["/usr", "/lib", "/lib64"];

fn podman() -> Option<&'static TestPodman> {
    mcp_runtime::testing::podman::shared(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("mcp-agent-podman"),
    )
}

fn spec(toml: &str) -> ServiceSpec {
    let name = toml
        .lines()
        .find_map(|l| l.strip_prefix("name = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("a name line");
    let opts = LoadOptions {
        allowed_host_paths: HOST_PATHS.iter().map(|s| s.to_string()).collect(),
        ..LoadOptions::default()
    };
    mcp_spec::parse_service(&format!("{name}.toml"), name, toml, &opts)
        .unwrap_or_else(|d| panic!("test spec {name}: {d:?}"))
}

/// A one-component web service (busybox httpd serving /version) with one
/// route on proxy port `port`.
fn web(name: &str, image: &str, port: u16, mode: &str, extra: &str) -> ServiceSpec {
    spec(&format!(
        "name = \"{name}\"\n[[components]]\nname = \"{name}\"\nimage = \"{image}\"\n{extra}\n\
         [[components.routes]]\nport = {port}\nmode = \"{mode}\"\n"
    ))
}

/// A dev-style CA on disk (certificate and key).
fn write_ca(dir: &Path) -> (PathBuf, PathBuf) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "routing test CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join("ca.pem"), dir.join("ca.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

struct Node {
    agent: Arc<Agent<Podman>>,
    clock: Arc<AtomicI64>,
    _dir: tempfile::TempDir,
}

fn node(
    p: &TestPodman,
    name: &str,
    range: (u16, u16),
    net: impl FnOnce(&Path) -> Networking,
) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicI64::new(Timestamp::now().as_unix()));
    let registry = Registry::open(&dir.path().join("agent.db")).unwrap();
    let mut settings = AgentSettings::new(name);
    settings.port_range = PortRange::new(range.0, range.1).unwrap();
    settings.files_root = dir.path().join("srv");
    settings.stop_timeout = Duration::from_secs(1);
    settings.allowed_host_paths = HOST_PATHS.iter().map(|s| s.to_string()).collect();
    let c = clock.clone();
    let net = net(dir.path());
    let agent = Agent::new(p.runtime(), registry, settings)
        .with_clock(move || Timestamp::from_unix(c.load(Ordering::SeqCst)))
        .with_networking(net);
    Node {
        agent: Arc::new(agent),
        clock,
        _dir: dir,
    }
}

fn networking(
    dir: &Path,
    l7: Option<Arc<dyn ProxyRoutes>>,
    l4: Option<Arc<dyn ProxyRoutes>>,
    issuer: Option<Arc<dyn CertIssuer>>,
) -> Networking {
    Networking {
        l7,
        l4,
        issuer,
        internal_zone: Some("mcp.test".into()),
        proxy_address: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        fleet_ca: None,
        cert_dir: dir.join("certs"),
        renew_before: mcp_agent::DEFAULT_RENEW_BEFORE,
    }
}

/// `curl https://<host>:<port>/<path>` resolved to 127.0.0.1, verified
/// against `ca`: Ok(body) or Err(curl's complaint).
fn curl(ca: &Path, host: &str, port: u16, path: &str) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "5", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("curl runs (Debian package curl)");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// `curl` until it answers (containers take a moment), at most `secs`.
fn curl_until(ca: &Path, host: &str, port: u16, secs: u64) -> Result<String, String> {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = curl(ca, host, port, "/version");
        if r.is_ok() || Instant::now() > end {
            return r;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The certificate the server presents for `host`, as `openssl x509 -text`.
fn presented_cert(host: &str, port: u16) -> String {
    let mut s = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", host, "-showcerts"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&s.stdout).to_string();
    s.stdout.clear();
    let pem: String = text
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .map(|b| {
            format!(
                "-----BEGIN CERTIFICATE-----{}",
                b.split("-----END CERTIFICATE-----").next().unwrap_or("")
            ) + "-----END CERTIFICATE-----\n"
        })
        .unwrap_or_default();
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-text"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(pem.as_bytes())
        .unwrap();
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn l7_routes_answer_by_name_through_caddy_with_the_certificate_mcp_issued() {
    let Some(p) = podman() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(mut caddy) = CaddyServer::start(&dir.path().join("caddy")) else {
        return;
    };
    let (ca_cert, ca_key) = write_ca(dir.path());
    let issuer: Arc<dyn CertIssuer> = Arc::new(LocalCa::load(&ca_cert, &ca_key).unwrap());
    let proxy: Arc<dyn ProxyRoutes> = Arc::new(mcp_net::Caddy::new(
        caddy.admin(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    ));
    let n = node(p, "rt-l7", (41000, 41049), |d| {
        networking(d, Some(proxy.clone()), None, Some(issuer.clone()))
    });
    for s in ["rt-one", "rt-two"] {
        let _ = n.agent.undeploy(s, true).await;
    }
    let port = free_port();
    // Two services on one proxy port, told apart by hostname.
    n.agent
        .deploy(web("rt-one", WEB_V1, port, "l7", ""), None)
        .await
        .unwrap();
    n.agent
        .deploy(web("rt-two", WEB_V2, port, "l7", ""), None)
        .await
        .unwrap();
    assert_eq!(
        curl_until(&ca_cert, "rt-one.mcp.test", port, 15).as_deref(),
        Ok("v1")
    );
    assert_eq!(
        curl_until(&ca_cert, "rt-two.mcp.test", port, 15).as_deref(),
        Ok("v2")
    );
    let shown = presented_cert("rt-one.mcp.test", port);
    assert!(
        shown.contains("DNS:rt-one.mcp.test"),
        "SAN = the route hostname: {shown}"
    );

    // Proxy restarted with an empty configuration: routes back within one
    // check interval.
    let checks = {
        let agent = n.agent.clone();
        tokio::spawn(async move {
            agent
                .run_net_checks(Duration::from_secs(1), std::future::pending())
                .await
        })
    };
    caddy.restart_empty();
    assert!(
        curl(&ca_cert, "rt-one.mcp.test", port, "/version").is_err(),
        "empty proxy"
    );
    let back = tokio::task::spawn_blocking({
        let ca = ca_cert.clone();
        move || curl_until(&ca, "rt-one.mcp.test", port, 3)
    })
    .await
    .unwrap();
    assert_eq!(
        back.as_deref(),
        Ok("v1"),
        "routes restored from the registry"
    );
    checks.abort();

    // Undeploy: the name stops answering, the other still does.
    n.agent.undeploy("rt-one", true).await.unwrap();
    assert!(
        curl(&ca_cert, "rt-one.mcp.test", port, "/version").is_err(),
        "removed route"
    );
    assert_eq!(
        curl(&ca_cert, "rt-two.mcp.test", port, "/version").as_deref(),
        Ok("v2")
    );
    n.agent.undeploy("rt-two", true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn l4_passthrough_reaches_a_container_that_terminates_tls_itself() {
    let Some(p) = podman() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(haproxy) = HaproxyServer::start(&dir.path().join("haproxy")) else {
        return;
    };
    let proxy: Arc<dyn ProxyRoutes> = Arc::new(mcp_net::Haproxy::new(
        haproxy.options(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ));
    // The container's own certificate, from a CA the proxy knows nothing of.
    let own_ca = dir.path().join("own");
    std::fs::create_dir_all(&own_ca).unwrap();
    let (ca_cert, ca_key) = write_ca(&own_ca);
    let ca = LocalCa::load(&ca_cert, &ca_key).unwrap();
    let names = vec!["rt-tls.mcp.test".to_string()];
    let (key, csr) = mcp_net::cert::new_key_and_csr(&names).unwrap();
    let issued = ca
        .sign(&mcp_net::CertRequest {
            hostnames: names,
            csr_der: csr,
        })
        .unwrap();
    let n = node(p, "rt-l4", (41050, 41099), |d| {
        let mut net = networking(d, None, Some(proxy.clone()), None);
        net.internal_zone = Some("mcp.test".into());
        net
    });
    let _ = n.agent.undeploy("rt-tls", true).await;
    // The service's data directory holds its certificate; openssl from the
    // host (read-only /usr) serves TLS inside the busybox container.
    let srv = n.agent.settings().files_root.join("rt-tls");
    std::fs::create_dir_all(&srv).unwrap();
    std::fs::write(srv.join("cert.pem"), &issued.chain_pem).unwrap();
    std::fs::write(srv.join("key.pem"), &key).unwrap();
    let port = free_port();
    let extra = "volumes = [\"/srv/rt-tls:/tls:ro\", \"/usr:/usr:ro\", \"/lib:/lib:ro\", \"/lib64:/lib64:ro\"]\n\
                 cmd = [\"/bin/sh\", \"-c\", \"exec /usr/bin/openssl s_server -quiet -accept $PORT -cert /tls/cert.pem -key /tls/key.pem -www\"]";
    let spec = web("rt-tls", WEB_V1, port, "l4", extra);
    n.agent.deploy(spec, None).await.unwrap();
    let got = tokio::task::spawn_blocking(move || {
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let r = curl(&ca_cert, "rt-tls.mcp.test", port, "/");
            if r.is_ok() || Instant::now() > end {
                return r;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .unwrap();
    assert!(
        got.as_ref().is_ok_and(|b| b.contains("s_server")),
        "the client verified the container's own certificate through the passthrough: {got:?}"
    );
    n.agent.undeploy("rt-tls", true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn acme_certificates_from_pebble_fail_cleanly_and_renew() {
    let Some(p) = podman() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(knot) = KnotServer::start(&dir.path().join("knot"), &["mcp.test"]) else {
        return;
    };
    let Some(mut pebble) = PebbleServer::start(&dir.path().join("pebble"), knot.addr()) else {
        return;
    };
    let Some(caddy) = CaddyServer::start(&dir.path().join("caddy")) else {
        return;
    };
    let mut dns_opts = knot.options("mcp.test");
    dns_opts.key_name = knot.acme_key_name().to_string();
    let secret_file = dir.path().join("acme.tsig");
    std::fs::write(&secret_file, knot.acme_secret_b64()).unwrap();
    dns_opts.secret = mcp_net::Rfc2136Options::secret_from_base64_file(&secret_file).unwrap();
    let acme: Arc<dyn CertIssuer> = Arc::new(Acme::new(AcmeOptions {
        directory: pebble.directory_url(),
        root_pem: Some(pebble.listener_ca_pem().to_string()),
        account_file: dir.path().join("acme-account.json"),
        contact: vec![],
        dns: Arc::new(Rfc2136::new(dns_opts).unwrap()),
        txt_ttl: 5,
        timeout: Duration::from_secs(60),
    }));
    let proxy: Arc<dyn ProxyRoutes> = Arc::new(mcp_net::Caddy::new(
        caddy.admin(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    ));
    let n = node(p, "rt-acme", (41100, 41149), |d| {
        networking(d, Some(proxy.clone()), None, Some(acme.clone()))
    });
    for s in ["rt-acme-a", "rt-acme-b"] {
        let _ = n.agent.undeploy(s, true).await;
    }
    let port = free_port();
    n.agent
        .deploy(web("rt-acme-a", WEB_V1, port, "l7", ""), None)
        .await
        .unwrap();
    let root = dir.path().join("pebble-root.pem");
    std::fs::write(&root, pebble.root_pem()).unwrap();
    let body = tokio::task::spawn_blocking({
        let root = root.clone();
        move || curl_until(&root, "rt-acme-a.mcp.test", port, 15)
    })
    .await
    .unwrap();
    assert_eq!(
        body.as_deref(),
        Ok("v1"),
        "served with Pebble's certificate, verified against its root"
    );

    // Renewal with less than 30 days left (the agent's clock moved on).
    let (_, certs) = n.agent.routes_and_certificates().await.unwrap();
    let first = certs[0].clone();
    n.clock
        .store(first.not_after.as_unix() - 29 * 86_400, Ordering::SeqCst);
    let out = n.agent.renew_certificates().await.unwrap();
    assert_eq!(out, ["renewed rt-acme-a.mcp.test"]);
    let (_, certs) = n.agent.routes_and_certificates().await.unwrap();
    assert_ne!(
        certs[0].serial, first.serial,
        "a new certificate from Pebble"
    );
    let shown = presented_cert("rt-acme-a.mcp.test", port);
    assert!(
        shown
            .to_lowercase()
            .replace(':', "")
            .contains(&certs[0].serial.trim_start_matches('0').to_lowercase()),
        "the proxy serves the renewed certificate (serial {}): {shown}",
        certs[0].serial
    );
    n.clock.store(Timestamp::now().as_unix(), Ordering::SeqCst);

    // Pebble stopped: the deploy of an L7 route fails clearly, and no route
    // is registered.
    pebble.kill();
    let err = n
        .agent
        .deploy(web("rt-acme-b", WEB_V1, port, "l7", ""), None)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("certificate rt-acme-b.mcp.test") && msg.contains("cannot reach"),
        "{msg}"
    );
    let live = proxy.list().await.unwrap();
    assert!(
        live.iter().all(|r| r.hostname != "rt-acme-b.mcp.test"),
        "no route to a missing certificate: {live:?}"
    );
    assert!(
        curl(&root, "rt-acme-a.mcp.test", port, "/version").is_ok(),
        "the other route still serves"
    );
    n.agent.undeploy("rt-acme-a", true).await.unwrap();
}
