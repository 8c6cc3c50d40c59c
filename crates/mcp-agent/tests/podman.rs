//! The agent against real podman, driven through its gRPC server over
//! 127.0.0.1 (TLS 1.3, bearer tokens) where that is cheap, and through the
//! core where the test plays the host (reboots, `podman kill`).
//!
//! Storage: `mcp_runtime::testing::podman` (isolated root under
//! `$CARGO_TARGET_TMPDIR/mcp-agent-podman`, images built offline by
//! `scripts/build-test-images.sh`). Skips loudly without podman unless
//! `MCP_REQUIRE_PODMAN=1`. Every test uses its own node name, service names
//! and port range, so the tests can share the storage and run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mcp_agent::{
    Agent, AgentSettings, Alerter, EventKind, EventQuery, PortRange, Registry, ServerSecurity,
};
use mcp_proto::pb;
use mcp_proto::pb::mcp_agent_service_client::McpAgentServiceClient;
use mcp_runtime::testing::podman::{remove_quietly, TestPodman, WEB_V1, WEB_V2};
use mcp_runtime::{ContainerRuntime, Podman, LABEL_COMPONENT, LABEL_NODE, LABEL_SERVICE};
use mcp_security::clock::SystemClock;
use mcp_security::identity::AccountType;
use mcp_security::jwt::{
    generate_keypair, issue_token, JwtVerifier, PublicKey, Secret, SigningKey, TokenRequest,
};
use mcp_security::pki::{Ca, Validity};
use mcp_security::tls::{self, TlsConnector};
use mcp_security::token::BearerInterceptor;
use mcp_spec::{LoadOptions, ServiceSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

fn podman() -> Option<&'static TestPodman> {
    mcp_runtime::testing::podman::shared(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("mcp-agent-podman"),
    )
}

fn spec(name: &str, toml: &str) -> ServiceSpec {
    mcp_spec::parse_service(&format!("{name}.toml"), name, toml, &LoadOptions::default())
        .unwrap_or_else(|d| panic!("test spec {name}: {d:?}"))
}

/// Two components from the test web image: `front` (routes: unnamed and
/// `admin`) and `back` (one unnamed route).
fn two_components(name: &str, front_image: &str) -> ServiceSpec {
    spec(
        name,
        &format!(
            r#"
name = "{name}"
[[components]]
name = "front"
image = "{front_image}"
[[components.routes]]
port = 443
[[components.routes]]
name = "admin"
port = 8443
[[components]]
name = "back"
image = "{WEB_V1}"
[[components.routes]]
port = 8080
mode = "l4"
"#
        ),
    )
}

fn new_agent(p: &TestPodman, dir: &Path, node: &str, range: (u16, u16)) -> Agent<Podman> {
    let registry = Registry::open(&dir.join("agent.db")).unwrap();
    let mut settings = AgentSettings::new(node);
    settings.port_range = PortRange::new(range.0, range.1).unwrap();
    settings.files_root = dir.join("srv");
    // httpd as PID 1 ignores SIGTERM; do not wait 10 s for every stop.
    settings.stop_timeout = Duration::from_secs(1);
    Agent::new(p.runtime(), registry, settings)
}

async fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (_, body) = text.split_once("\r\n\r\n")?;
    Some(body.to_string())
}

/// GET /version on 127.0.0.1:`port`, retried for up to 10 s.
async fn version_on(port: u16) -> Option<String> {
    for _ in 0..100 {
        if let Some(body) = http_get(port, "/version").await {
            return Some(body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn exec_env(rt: &Podman, container: &str) -> String {
    rt.exec(container, &["env".to_string()])
        .await
        .expect("exec env")
        .stdout
}

/// A TLS + token setup: CA, server certificate for 127.0.0.1, issuer key,
/// and tokens for an operator (human) and the master.
struct Pki {
    ca_path: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    issuer_pub: PathBuf,
    signing: SigningKey,
    public: PublicKey,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let ca = Ca::generate("agent-test").unwrap();
        let ca_path = dir.join("ca.pem");
        ca.write_cert(&ca_path).unwrap();
        let leaf = ca
            .write_leaf(dir, "agent", &["127.0.0.1", "localhost"], Validity::Days(1))
            .unwrap();
        let kp = generate_keypair().unwrap();
        let issuer_pub = dir.join("issuer.pub");
        std::fs::write(&issuer_pub, &kp.public_pem).unwrap();
        Pki {
            ca_path,
            cert: leaf.cert,
            key: leaf.key,
            issuer_pub,
            signing: SigningKey::from_pem(kp.private_pem.expose().as_bytes(), "test").unwrap(),
            public: PublicKey::from_pem(kp.public_pem.as_bytes(), "test").unwrap(),
        }
    }

    fn token(&self, name: &str, account_type: AccountType) -> Secret {
        issue_token(
            &self.signing,
            &TokenRequest {
                identity: name.to_string(),
                account_type,
                roles: Vec::new(),
                ttl: Duration::from_secs(3600),
                issuer: "mcias".to_string(),
                audience: "mcp".to_string(),
            },
            &SystemClock,
        )
        .unwrap()
    }

    fn security(&self) -> ServerSecurity {
        let tls = tls::server_config(
            &tls::CertKeyPaths {
                cert: self.cert.clone(),
                key: self.key.clone(),
            },
            &tls::ClientAuth::Optional(self.ca_path.clone()),
        )
        .unwrap();
        let verifier = JwtVerifier::new(self.public.clone(), "mcias", "mcp");
        ServerSecurity::new(tls, Arc::new(verifier), "mcp-master")
    }

    async fn client(
        &self,
        port: u16,
        token: &Secret,
    ) -> McpAgentServiceClient<InterceptedService<Channel, BearerInterceptor>> {
        let cfg = tls::client_config(&self.ca_path, None).unwrap();
        let mut last = None;
        for _ in 0..50 {
            match tls::connect_channel(
                &format!("https://127.0.0.1:{port}"),
                TlsConnector::new(Arc::new(cfg.clone())),
            )
            .await
            {
                Ok(ch) => {
                    return McpAgentServiceClient::with_interceptor(
                        ch,
                        BearerInterceptor::new(token).unwrap(),
                    )
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot connect to the agent on {port}: {last:?}");
    }
}

fn component<'a>(cs: &'a [pb::ComponentInfo], name: &str) -> &'a pb::ComponentInfo {
    cs.iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no component {name} in {cs:?}"))
}

fn lifecycle(service: &str, component: &str) -> pb::AgentLifecycleRequest {
    pb::AgentLifecycleRequest {
        service_name: service.to_string(),
        component: component.to_string(),
    }
}

async fn list(
    client: &mut McpAgentServiceClient<InterceptedService<Channel, BearerInterceptor>>,
    service: &str,
) -> pb::ServiceInfo {
    let resp = client
        .list_services(pb::ListServicesRequest {})
        .await
        .expect("ListServices")
        .into_inner();
    resp.services
        .into_iter()
        .find(|s| s.name == service)
        .unwrap_or_else(|| panic!("{service} not listed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_two_component_service_through_grpc() {
    let Some(p) = podman() else { return };
    let rt = p.runtime();
    let svc = "agtlife";
    let (front, back) = ("agtlife-front", "agtlife-back");
    remove_quietly(&rt, &[front, back]).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let node = "lifenode";
    let range = (31000, 31099);

    // The agent's gRPC server on 127.0.0.1.
    let agent = Arc::new(new_agent(p, dir.path(), node, range));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(mcp_agent::serve(
        agent.clone(),
        listener,
        pki.security(),
        async {
            let _ = stop_rx.await;
        },
    ));
    let mut op = pki
        .client(port, &pki.token("alice", AccountType::Human))
        .await;
    let mut master = pki
        .client(port, &pki.token("mcp-master", AccountType::System))
        .await;

    // Deploy v1.
    let v1 = two_components(svc, WEB_V1);
    let resp = op
        .deploy(pb::AgentDeployRequest {
            service: Some(pb::ServiceSpec::from(&v1)),
            component: String::new(),
        })
        .await
        .expect("Deploy")
        .into_inner();
    assert!(resp.results.iter().all(|r| r.success), "{:?}", resp.results);
    let f = component(&resp.components, "front");
    assert_eq!(
        (f.version.as_str(), f.observed_state.as_str()),
        ("v1", "running")
    );
    let front_port = u16::try_from(f.ports[""]).unwrap();
    let admin_port = u16::try_from(f.ports["admin"]).unwrap();
    let back_port = u16::try_from(component(&resp.components, "back").ports[""]).unwrap();
    for port in [front_port, admin_port, back_port] {
        assert!((range.0..=range.1).contains(&port), "{port}");
    }

    // Named and labelled; $PORT / $PORT_<NAME> inside.
    let info = rt.inspect(front).await.unwrap().expect("front exists");
    assert_eq!(
        info.labels.get(LABEL_SERVICE).map(String::as_str),
        Some(svc)
    );
    assert_eq!(
        info.labels.get(LABEL_COMPONENT).map(String::as_str),
        Some("front")
    );
    assert_eq!(info.labels.get(LABEL_NODE).map(String::as_str), Some(node));
    let env = exec_env(&rt, front).await;
    assert!(
        env.lines().any(|l| l == format!("PORT={front_port}")),
        "{env}"
    );
    assert!(
        env.lines().any(|l| l == format!("PORT_ADMIN={admin_port}")),
        "{env}"
    );
    let env = exec_env(&rt, back).await;
    assert!(
        env.lines().any(|l| l == format!("PORT={back_port}")),
        "{env}"
    );

    // The httpd inside answers on the allocated host port.
    assert_eq!(version_on(front_port).await.as_deref(), Some("v1\n"));
    assert_eq!(version_on(back_port).await.as_deref(), Some("v1\n"));

    // ListServices: hash, versions, states, ports.
    let listed = list(&mut op, svc).await;
    assert_eq!(listed.spec_hash, mcp_spec::spec_hash(&v1));
    assert!(listed.active);
    assert_eq!(
        component(&listed.components, "front").ports["admin"],
        u32::from(admin_port)
    );
    assert!(!component(&listed.components, "front").started.is_empty());

    // Invalid specs are refused with every violation.
    let mut bad = pb::ServiceSpec::from(&v1);
    bad.components[0].name = "Front".into();
    bad.components[1].env = vec!["NOEQUALS".into()];
    let err = op
        .deploy(pb::AgentDeployRequest {
            service: Some(bad),
            component: String::new(),
        })
        .await
        .expect_err("invalid spec");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("components[0].name"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("components[1].env[0]"),
        "{}",
        err.message()
    );

    // Stop, start, restart.
    op.stop(lifecycle(svc, "")).await.expect("Stop");
    assert!(!rt.inspect(front).await.unwrap().unwrap().is_running());
    let listed = list(&mut op, svc).await;
    assert!(!listed.active);
    assert_eq!(
        component(&listed.components, "back").desired_state,
        "stopped"
    );
    op.start(lifecycle(svc, "")).await.expect("Start");
    assert_eq!(version_on(front_port).await.as_deref(), Some("v1\n"));
    op.restart(lifecycle(svc, "back")).await.expect("Restart");
    assert!(rt.inspect(back).await.unwrap().unwrap().is_running());
    assert_eq!(version_on(back_port).await.as_deref(), Some("v1\n"));
    let err = op
        .stop(lifecycle(svc, "cache"))
        .await
        .expect_err("unknown component");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        err.message().contains("agtlife has no component cache"),
        "{}",
        err.message()
    );

    // Redeploy with front:v2: only front is replaced.
    let back_id = rt.inspect(back).await.unwrap().unwrap().id;
    let v2 = two_components(svc, WEB_V2);
    let resp = op
        .deploy(pb::AgentDeployRequest {
            service: Some(pb::ServiceSpec::from(&v2)),
            component: String::new(),
        })
        .await
        .expect("Deploy v2")
        .into_inner();
    assert_eq!(component(&resp.components, "front").version, "v2");
    assert_eq!(component(&resp.components, "back").version, "v1");
    assert_eq!(
        rt.inspect(back).await.unwrap().unwrap().id,
        back_id,
        "back untouched"
    );
    assert_eq!(
        version_on(front_port).await.as_deref(),
        Some("v2\n"),
        "same port, new image"
    );
    assert_eq!(list(&mut op, svc).await.spec_hash, mcp_spec::spec_hash(&v2));

    // Health: the master's RPC; operators may not call it.
    let h = master
        .health_check(pb::HealthCheckRequest {})
        .await
        .expect("HealthCheck")
        .into_inner();
    assert_eq!(h.status, "healthy");
    assert_eq!(h.containers, 2);
    let err = op
        .health_check(pb::HealthCheckRequest {})
        .await
        .expect_err("operator");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = master
        .setup_edge_route(pb::SetupEdgeRouteRequest::default())
        .await
        .expect_err("not yet");
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    // Events of the deploys and lifecycle calls.
    let events = op
        .events(pb::EventsRequest {
            service_name: svc.to_string(),
            ..Default::default()
        })
        .await
        .expect("Events")
        .into_inner()
        .events;
    assert!(events.iter().all(|e| e.node == node));
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    for k in ["deploy", "stop", "start", "restart"] {
        assert!(kinds.contains(&k), "{kinds:?}");
    }

    // Stop the server; the agent core restarts with its registry intact:
    // nothing is touched, ports are unchanged.
    let _ = stop_tx.send(());
    server.await.unwrap().expect("server");
    drop(op);
    drop(master);
    let ids = |rt: Podman| async move {
        let mut v = Vec::new();
        for c in [front, back] {
            v.push(rt.inspect(c).await.unwrap().unwrap().id);
        }
        v
    };
    let before = ids(rt.clone()).await;
    drop(agent);
    let agent = new_agent(p, dir.path(), node, range);
    let steps = agent.converge().await.expect("converge");
    assert!(steps.iter().all(|s| !s.is_failed()), "{steps:?}");
    assert_eq!(ids(rt.clone()).await, before, "same containers");
    let status = agent.service_status(svc).await.unwrap();
    let fr = status
        .components
        .iter()
        .find(|c| c.name == "front")
        .unwrap();
    assert_eq!(fr.ports.get(""), Some(&front_port));
    assert_eq!(fr.ports.get("admin"), Some(&admin_port));

    // "Reboot": containers stopped behind the agent's back; a new agent
    // core starts them again by itself.
    let out = p
        .cli()
        .args(["stop", "--time", "1", front, back])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(agent);
    let agent = new_agent(p, dir.path(), node, range);
    agent.converge().await.expect("converge");
    assert!(rt.inspect(front).await.unwrap().unwrap().is_running());
    assert!(rt.inspect(back).await.unwrap().unwrap().is_running());
    assert_eq!(version_on(front_port).await.as_deref(), Some("v2\n"));

    // Undeploy: containers gone, data kept.
    let data = dir.path().join("srv").join(svc);
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("state.db"), "keep me").unwrap();
    agent.undeploy(svc, false).await.expect("undeploy");
    assert!(rt.inspect(front).await.unwrap().is_none());
    assert!(rt.inspect(back).await.unwrap().is_none());
    assert!(data.join("state.db").exists());
    assert!(agent.list_services().await.unwrap().services.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_kill_is_recorded_alerted_once_and_flapping() {
    let Some(p) = podman() else { return };
    let rt = p.runtime();
    let svc = "agtkill";
    remove_quietly(&rt, &[svc]).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("alerts.log");
    let script = dir.path().join("alert.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$MCP_EVENT $MCP_SERVICE/$MCP_COMPONENT $MCP_NODE\" >> {}\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let alerter = Alerter::new(vec![script.display().to_string()], "killnode");
    let agent = new_agent(p, dir.path(), "killnode", (31100, 31199)).with_alerter(alerter);

    let s = spec(
        svc,
        &format!(
            "name = \"{svc}\"\n[[components]]\nname = \"{svc}\"\nimage = \"{WEB_V1}\"\n\
             [[components.routes]]\nport = 443\n"
        ),
    );
    agent.deploy(s, None).await.expect("deploy");
    let r = agent.monitor_once().await.expect("monitor");
    assert!(r.events.is_empty() && r.drift.is_empty(), "{r:?}");

    let kill = || {
        let out = p.cli().args(["kill", svc]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let alerts = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    kill();
    // podman reports the kill asynchronously; observe until it shows.
    let mut r = agent.monitor_once().await.expect("monitor");
    for _ in 0..50 {
        if !r.events.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        r = agent.monitor_once().await.expect("monitor");
    }
    let kinds: Vec<&str> = r.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, vec!["state", "drift"], "{r:?}");
    assert_eq!(r.events[0].new_state.as_deref(), Some("exited"));
    assert_eq!(r.alerts_sent, vec![format!("drift:{svc}/{svc}")]);
    assert_eq!(alerts(), vec![format!("drift {svc}/{svc} killnode")]);

    // Still down: no second alert within the cooldown.
    let r = agent.monitor_once().await.expect("monitor");
    assert_eq!(r.drift.len(), 1);
    assert_eq!(r.suppressed.len(), 1);
    assert_eq!(alerts().len(), 1);
    let health = agent.health().await.unwrap();
    assert_eq!(health.status.as_str(), "degraded");

    // The monitor restarts nothing.
    assert!(!rt.inspect(svc).await.unwrap().unwrap().is_running());

    // Repeated kills: flapping.
    let mut flapping = false;
    for _ in 0..3 {
        agent.start(svc, None).await.expect("start");
        kill();
        for _ in 0..50 {
            let r = agent.monitor_once().await.expect("monitor");
            flapping |= !r.flapping.is_empty();
            if !r.events.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if flapping {
            break;
        }
    }
    assert!(flapping, "flapping not reported");
    let events = agent
        .events(EventQuery {
            service: Some(svc.to_string()),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.kind == EventKind::Flapping),
        "{events:?}"
    );
    assert!(
        alerts().contains(&format!("flapping {svc}/{svc} killnode")),
        "{:?}",
        alerts()
    );

    agent.undeploy(svc, false).await.expect("undeploy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_adopt_takes_over_existing_containers() {
    let Some(p) = podman() else { return };
    let rt = p.runtime();
    let (api, worker) = ("agtadopt-api", "agtadopt-worker");
    remove_quietly(&rt, &[api, worker]).await;
    for (name, image) in [(api, WEB_V1), (worker, WEB_V2)] {
        let out = p
            .cli()
            .args(["run", "-d", "--name", name, image])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let agent = new_agent(p, dir.path(), "adoptnode", (31200, 31299));
    let steps = agent.adopt("agtadopt").await.expect("adopt");
    assert_eq!(steps.len(), 2, "{steps:?}");
    let status = agent.service_status("agtadopt").await.unwrap();
    let got: Vec<(String, String, String)> = status
        .components
        .iter()
        .map(|c| (c.name.clone(), c.version.clone(), c.observed.to_string()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("api".into(), "v1".into(), "running".into()),
            ("worker".into(), "v2".into(), "running".into())
        ]
    );
    let r = agent.monitor_once().await.unwrap();
    assert!(r.drift.is_empty(), "{r:?}");
    agent.undeploy("agtadopt", false).await.expect("undeploy");
    assert!(rt.inspect(api).await.unwrap().is_none());
}

/// `mcp-agent serve` as a process: configured from its file, converges,
/// serves gRPC on `[server] grpc_addr`, leaves containers running when it
/// stops on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_agent_binary_serves_and_stops_on_sigterm() {
    let Some(p) = podman() else { return };
    let rt = p.runtime();
    let svc = "agtbin";
    remove_quietly(&rt, &[svc]).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = Pki::new(d);
    std::fs::write(d.join("agent.token"), "unused").unwrap();
    std::fs::create_dir_all(d.join("srv")).unwrap();
    let port = mcp_runtime::testing::free_port();
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let global: Vec<String> = p
        .global_args_utf8()
        .unwrap()
        .iter()
        .map(|a| format!("{a:?}"))
        .collect();
    let config = format!(
        r#"
[server]
grpc_addr = "127.0.0.1:{port}"
tls_cert = {cert}
tls_key = {key}
ca_cert = {ca}

[node]
name = "binnode"
role = "worker"
address = "127.0.0.1:{port}"

[master]
address = "127.0.0.1:1"

[auth]
issuer_public_key = {issuer}
issuer = "mcias"
audience = "mcp"
token_file = {token}

[database]
path = {db}

[podman]
binary = {binary:?}
global_args = [{global}]
env = {{ CONTAINERS_CONF = {conf:?} }}

[ports]
range = [31300, 31399]

[monitor]
interval = "1s"

[files]
root = {srv}
"#,
        cert = q(&pki.cert),
        key = q(&pki.key),
        ca = q(&pki.ca_path),
        issuer = q(&pki.issuer_pub),
        token = q(&d.join("agent.token")),
        db = q(&d.join("agent.db")),
        binary = p.binary.to_string_lossy(),
        global = global.join(", "),
        conf = p.conf.to_string_lossy(),
        srv = q(&d.join("srv")),
    );
    let cfg = d.join("mcp-agent.toml");
    std::fs::write(&cfg, config).unwrap();
    let log = std::fs::File::create(d.join("agent.log")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-agent"))
        .arg("--config")
        .arg(&cfg)
        .arg("serve")
        .env_remove("MCP_AGENT_CONFIG")
        .stderr(log)
        .spawn()
        .unwrap();
    let log_text = || std::fs::read_to_string(d.join("agent.log")).unwrap_or_default();

    let mut op = pki
        .client(port, &pki.token("alice", AccountType::Human))
        .await;
    let s = spec(
        svc,
        &format!(
            "name = \"{svc}\"\n[[components]]\nname = \"{svc}\"\nimage = \"{WEB_V1}\"\n\
             [[components.routes]]\nport = 443\n"
        ),
    );
    let resp = op
        .deploy(pb::AgentDeployRequest {
            service: Some(pb::ServiceSpec::from(&s)),
            component: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("Deploy: {e}\n{}", log_text()))
        .into_inner();
    let web_port = u16::try_from(component(&resp.components, svc).ports[""]).unwrap();
    assert_eq!(version_on(web_port).await.as_deref(), Some("v1\n"));
    let listed = list(&mut op, svc).await;
    assert_eq!(component(&listed.components, svc).observed_state, "running");

    let out = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("agent did not stop on SIGTERM:\n{}", log_text());
    };
    assert!(status.success(), "{status}\n{}", log_text());
    let text = log_text();
    assert!(text.contains("mcp-agent serving"), "{text}");
    assert!(text.contains("SIGTERM: shutting down"), "{text}");
    // Audit lines name the caller and method.
    assert!(text.contains("alice") && text.contains("Deploy"), "{text}");
    assert!(
        rt.inspect(svc).await.unwrap().unwrap().is_running(),
        "containers outlive the agent"
    );
    remove_quietly(&rt, &[svc]).await;
}
