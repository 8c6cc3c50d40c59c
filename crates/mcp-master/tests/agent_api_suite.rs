//! One suite for [`AgentApi`], run against both implementations:
//!
//! - `fake_*`: [`FakeAgents`], the in-memory fleet the control loop's and
//!   the server's tests use;
//! - `grpc_*`: [`GrpcAgents`] over TLS 1.3 on 127.0.0.1, with the master's
//!   bearer token, to the real agent gRPC server
//!   (`mcp_agent::testing::TestServer`, the daemon's transport) over a real
//!   `Agent` backed by `FakeRuntime`.
//!
//! Same calls, same expected answers: the fake cannot drift from the agent.
//! The only things a [`Fixture`] does besides handing out the API are what
//! a host does to containers (print a line, crash, exist unmanaged).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mcp_agent::testing::{fake_agent, FakeRuntime, TestServer};
use mcp_agent::{Agent, ServerSecurity};
use mcp_master::agents::{
    AgentApi, AgentError, AgentStep, AgentTarget, DataChunk, EventsQuery, FileContent, GrpcAgents,
    HealthStatus, ImportData, LogsQuery, StepState,
};
use mcp_master::config::Timeouts;
use mcp_master::fake::FakeAgents;
use mcp_planner::ContainerState;
use mcp_runtime::LogSource;
use mcp_security::clock::SystemClock;
use mcp_security::identity::AccountType;
use mcp_security::jwt::{generate_keypair, issue_token, JwtVerifier, PublicKey, TokenRequest};
use mcp_security::pki::{Ca, Validity};
use mcp_security::tls;
use mcp_security::token::BearerInterceptor;
use mcp_spec::{parse_service, spec_hash, LoadOptions, ServiceSpec};
use tokio_stream::StreamExt;
use tonic::Code;

const NODE: &str = "orion";
const API_V1: &str = "registry.example:8443/shop-api:v1";
const API_V2: &str = "registry.example:8443/shop-api:v2";
const WORKER_V1: &str = "registry.example:8443/shop-worker:v1";
const LEGACY: &str = "registry.example:8443/legacy:v3";

/// What the suite needs from an implementation.
trait Fixture: Send + Sync {
    fn api(&self) -> &dyn AgentApi;
    fn target(&self) -> AgentTarget;
    /// The container of `service`/`component` prints `line`.
    fn emit_log(&self, service: &str, component: &str, line: &str);
    /// ... at time `at`.
    fn emit_log_at(&self, service: &str, component: &str, line: &str, at: SystemTime);
    /// The container of `service`/`component` exits on its own.
    fn crash(&self, service: &str, component: &str);
    /// A running container MCP did not create.
    fn add_unmanaged(&self, container: &str, image: &str);
}

// ---------------------------------------------------------------------------
// The fake

struct Fake {
    agents: FakeAgents,
}

impl Fixture for Fake {
    fn api(&self) -> &dyn AgentApi {
        &self.agents
    }
    fn target(&self) -> AgentTarget {
        AgentTarget {
            node: NODE.to_string(),
            address: "https://127.0.0.1:1".to_string(),
        }
    }
    fn emit_log(&self, service: &str, component: &str, line: &str) {
        self.agents.emit_log(NODE, service, component, line);
    }
    fn emit_log_at(&self, service: &str, component: &str, line: &str, at: SystemTime) {
        self.agents.emit_log_at(NODE, service, component, line, at);
    }
    fn crash(&self, service: &str, component: &str) {
        self.agents
            .set_state(NODE, service, component, ContainerState::Exited);
    }
    fn add_unmanaged(&self, container: &str, image: &str) {
        self.agents.add_unmanaged(NODE, container, image);
    }
}

async fn fake() -> Box<dyn Fixture> {
    Box::new(Fake {
        agents: FakeAgents::new(),
    })
}

// ---------------------------------------------------------------------------
// The real agent over gRPC

struct Grpc {
    agents: Arc<GrpcAgents>,
    agent: Arc<Agent<FakeRuntime>>,
    server: Option<TestServer>,
    _dir: tempfile::TempDir,
}

impl Drop for Grpc {
    fn drop(&mut self) {
        // TestServer stops when dropped; keep it alive until then.
        self.server.take();
    }
}

impl Fixture for Grpc {
    fn api(&self) -> &dyn AgentApi {
        &*self.agents
    }
    fn target(&self) -> AgentTarget {
        AgentTarget {
            node: NODE.to_string(),
            address: self.server.as_ref().expect("server").url(),
        }
    }
    fn emit_log(&self, service: &str, component: &str, line: &str) {
        let name = container(service, component);
        assert!(
            self.agent
                .runtime()
                .emit_log(&name, LogSource::Stdout, line),
            "no container {name}"
        );
    }
    fn emit_log_at(&self, service: &str, component: &str, line: &str, at: SystemTime) {
        let name = container(service, component);
        assert!(
            self.agent
                .runtime()
                .emit_log_at(&name, LogSource::Stdout, line, at),
            "no container {name}"
        );
    }
    fn crash(&self, service: &str, component: &str) {
        let name = container(service, component);
        assert!(self.agent.runtime().crash(&name, 1), "{name} not running");
    }
    fn add_unmanaged(&self, container: &str, image: &str) {
        assert!(self.agent.runtime().insert_unmanaged(container, image, &[]));
    }
}

async fn grpc() -> Box<dyn Fixture> {
    Box::new(grpc_fixture().await)
}

async fn grpc_fixture() -> Grpc {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("fleet").unwrap();
    let ca_path = dir.path().join("ca.pem");
    ca.write_cert(&ca_path).unwrap();
    let leaf = ca
        .write_leaf(
            dir.path(),
            NODE,
            &["127.0.0.1", "localhost"],
            Validity::Days(1),
        )
        .unwrap();
    let kp = generate_keypair().unwrap();
    let signing =
        mcp_security::jwt::SigningKey::from_pem(kp.private_pem.expose().as_bytes(), "test key")
            .unwrap();
    let public = PublicKey::from_pem(kp.public_pem.as_bytes(), "test key").unwrap();
    let server_tls = tls::server_config(
        &tls::CertKeyPaths {
            cert: leaf.cert.clone(),
            key: leaf.key.clone(),
        },
        &tls::ClientAuth::Optional(ca_path.clone()),
    )
    .unwrap();
    let verifier = JwtVerifier::new(public, "mcias", "mcp");
    let security = ServerSecurity::new(server_tls, Arc::new(verifier), "mcp-master");

    // The files root exists on a real node (the daemon checks it at start).
    std::fs::create_dir(dir.path().join("srv")).unwrap();
    let agent = fake_agent(NODE, dir.path().join("srv")).unwrap();
    for image in [API_V1, API_V2, WORKER_V1, LEGACY] {
        agent.runtime().add_image(image);
    }
    let agent = Arc::new(agent);
    let server = TestServer::start(agent.clone(), security).await.unwrap();

    let token = issue_token(
        &signing,
        &TokenRequest {
            identity: "mcp-master".to_string(),
            account_type: AccountType::System,
            roles: Vec::new(),
            ttl: Duration::from_secs(3600),
            issuer: "mcias".to_string(),
            audience: "mcp".to_string(),
        },
        &SystemClock,
    )
    .unwrap();
    let client_tls = tls::client_config(&ca_path, None).unwrap();
    let agents = GrpcAgents::new(
        Arc::new(client_tls),
        BearerInterceptor::new(&token).unwrap(),
        Timeouts::default(),
    );
    Grpc {
        agents: Arc::new(agents),
        agent,
        server: Some(server),
        _dir: dir,
    }
}

// ---------------------------------------------------------------------------
// Helpers

fn container(service: &str, component: &str) -> String {
    format!("{service}-{component}")
}

fn spec(toml: &str) -> ServiceSpec {
    let name = toml
        .lines()
        .find_map(|l| l.strip_prefix("name = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("name line");
    parse_service(&format!("{name}.toml"), name, toml, &LoadOptions::default())
        .unwrap_or_else(|d| panic!("test spec {name}: {d:?}"))
}

/// `shop`: `api` and `worker`.
fn shop(api_image: &str) -> ServiceSpec {
    spec(&format!(
        "name = \"shop\"\n\n[[components]]\nname = \"api\"\nimage = \"{api_image}\"\n\n\
         [[components]]\nname = \"worker\"\nimage = \"{WORKER_V1}\"\n"
    ))
}

fn names(steps: &[AgentStep]) -> Vec<&str> {
    steps.iter().map(|s| s.step.as_str()).collect()
}

fn assert_no_failure(steps: &[AgentStep]) {
    assert!(steps.iter().all(|s| !s.is_failed()), "{steps:?}");
}

fn code(e: &AgentError) -> Code {
    e.code()
        .unwrap_or_else(|| panic!("not a refused call: {e}"))
}

async fn state_of(f: &dyn Fixture, service: &str, component: &str) -> ContainerState {
    let r = f.api().list_services(&f.target()).await.unwrap();
    r.services[service].components[component].state
}

async fn deploy_shop(f: &dyn Fixture) -> ServiceSpec {
    let s = shop(API_V1);
    let steps = f.api().deploy(&f.target(), &s, None).await.unwrap();
    assert_no_failure(&steps);
    s
}

// ---------------------------------------------------------------------------
// The suite

async fn deploy_lists_the_service(f: Box<dyn Fixture>) {
    let (api, t) = (f.api(), f.target());
    let empty = api.list_services(&t).await.unwrap();
    assert!(empty.services.is_empty(), "{empty:?}");

    let s = shop(API_V1);
    let steps = api.deploy(&t, &s, None).await.unwrap();
    assert_no_failure(&steps);
    let created: BTreeSet<&str> = names(&steps)
        .into_iter()
        .filter(|n| n.starts_with("create "))
        .collect();
    assert_eq!(
        created,
        BTreeSet::from(["create shop-api", "create shop-worker"]),
        "{steps:?}"
    );

    let r = api.list_services(&t).await.unwrap();
    let shop = &r.services["shop"];
    assert_eq!(shop.spec_hash, spec_hash(&s));
    assert!(shop.active);
    assert_eq!(
        shop.components.keys().collect::<Vec<_>>(),
        ["api", "worker"]
    );
    assert_eq!(shop.components["api"].image, API_V1);
    assert_eq!(shop.components["api"].version, "v1");
    assert_eq!(shop.components["api"].state, ContainerState::Running);
    assert_eq!(shop.components["worker"].state, ContainerState::Running);

    // The same spec again recreates nothing.
    let again = api.deploy(&t, &s, None).await.unwrap();
    assert_no_failure(&again);
    assert!(
        names(&again)
            .iter()
            .all(|n| !n.starts_with("create ") && !n.starts_with("recreate ")),
        "{again:?}"
    );
}

async fn deploy_one_component_recreates_only_it(f: Box<dyn Fixture>) {
    let (api, t) = (f.api(), f.target());
    deploy_shop(&*f).await;
    let v2 = shop(API_V2);
    let steps = api.deploy(&t, &v2, Some("api")).await.unwrap();
    assert_no_failure(&steps);
    assert!(names(&steps).contains(&"recreate shop-api"), "{steps:?}");
    assert!(
        names(&steps).iter().all(|n| !n.contains("shop-worker")),
        "{steps:?}"
    );
    let r = api.list_services(&t).await.unwrap();
    assert_eq!(r.services["shop"].components["api"].version, "v2");
    assert_eq!(r.services["shop"].components["worker"].version, "v1");
    assert_eq!(r.services["shop"].spec_hash, spec_hash(&v2));

    let e = api.deploy(&t, &v2, Some("nope")).await.unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");
}

async fn stop_and_start_change_states(f: Box<dyn Fixture>) {
    let (api, t) = (f.api(), f.target());
    deploy_shop(&*f).await;

    // One component.
    let steps = api.stop(&t, "shop", Some("api")).await.unwrap();
    assert_eq!(names(&steps), ["stop shop-api"]);
    assert_eq!(steps[0].state, StepState::Done);
    let r = api.list_services(&t).await.unwrap();
    assert!(r.services["shop"].active);
    assert_eq!(
        r.services["shop"].components["api"].state,
        ContainerState::Stopped
    );
    assert_eq!(
        r.services["shop"].components["worker"].state,
        ContainerState::Running
    );
    let steps = api.start(&t, "shop", Some("api")).await.unwrap();
    assert_eq!(names(&steps), ["start shop-api"]);
    assert_eq!(steps[0].state, StepState::Done);
    assert_eq!(state_of(&*f, "shop", "api").await, ContainerState::Running);

    // The whole service: recorded as inactive, then active again.
    let steps = api.stop(&t, "shop", None).await.unwrap();
    assert_eq!(names(&steps), ["stop shop-api", "stop shop-worker"]);
    let r = api.list_services(&t).await.unwrap();
    assert!(!r.services["shop"].active);
    assert!(r.services["shop"]
        .components
        .values()
        .all(|c| c.state == ContainerState::Stopped));
    let steps = api.start(&t, "shop", None).await.unwrap();
    assert_no_failure(&steps);
    let r = api.list_services(&t).await.unwrap();
    assert!(r.services["shop"].active);
    assert!(r.services["shop"]
        .components
        .values()
        .all(|c| c.state == ContainerState::Running));

    let steps = api.restart(&t, "shop", Some("worker")).await.unwrap();
    assert_eq!(names(&steps), ["restart shop-worker"]);
    assert_eq!(
        state_of(&*f, "shop", "worker").await,
        ContainerState::Running
    );
}

async fn undeploy_removes_the_service(f: Box<dyn Fixture>) {
    let (api, t) = (f.api(), f.target());
    deploy_shop(&*f).await;
    let steps = api.undeploy(&t, "shop", false).await.unwrap();
    assert_no_failure(&steps);
    let removed: Vec<&str> = names(&steps)
        .into_iter()
        .filter(|n| n.starts_with("remove "))
        .collect();
    assert_eq!(removed, ["remove shop-api", "remove shop-worker"]);
    let r = api.list_services(&t).await.unwrap();
    assert!(!r.services.contains_key("shop"), "{r:?}");
    let e = api.undeploy(&t, "shop", false).await.unwrap_err();
    assert_eq!(code(&e), Code::NotFound, "{e}");
}

async fn unknown_services_and_components_are_not_found(f: Box<dyn Fixture>) {
    let (api, t) = (f.api(), f.target());
    deploy_shop(&*f).await;
    let ghost = [
        api.stop(&t, "ghost", None).await.unwrap_err(),
        api.start(&t, "ghost", None).await.unwrap_err(),
        api.restart(&t, "ghost", None).await.unwrap_err(),
        api.undeploy(&t, "ghost", false).await.unwrap_err(),
        api.stop(&t, "shop", Some("nope")).await.unwrap_err(),
        api.start(&t, "shop", Some("nope")).await.unwrap_err(),
    ];
    for e in &ghost {
        assert_eq!(code(e), Code::NotFound, "{e}");
        assert!(e.to_string().contains(NODE), "names the node: {e}");
    }
    let query = LogsQuery {
        service: "ghost".to_string(),
        ..LogsQuery::default()
    };
    let e = api.logs(&t, query).await.err().expect("logs of ghost");
    assert_eq!(code(&e), Code::NotFound, "{e}");
}

async fn logs_are_the_containers_output(f: Box<dyn Fixture>) {
    let (api, t) = (f.api(), f.target());
    deploy_shop(&*f).await;
    for i in 1..=3 {
        f.emit_log("shop", "api", &format!("api line {i}"));
    }
    f.emit_log("shop", "worker", "worker line 1");

    let all = LogsQuery {
        service: "shop".to_string(),
        ..LogsQuery::default()
    };
    let lines: Vec<_> = api
        .logs(&t, all)
        .await
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    let got: BTreeSet<(String, String)> = lines
        .iter()
        .map(|l| (l.component.clone(), l.line.clone()))
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("api", "api line 1"),
        ("api", "api line 2"),
        ("api", "api line 3"),
        ("worker", "worker line 1"),
    ]
    .into_iter()
    .map(|(c, l)| (c.to_string(), l.to_string()))
    .collect();
    assert_eq!(got, want);
    // In order within a component.
    let api_lines: Vec<&str> = lines
        .iter()
        .filter(|l| l.component == "api")
        .map(|l| l.line.as_str())
        .collect();
    assert_eq!(api_lines, ["api line 1", "api line 2", "api line 3"]);

    let tail = LogsQuery {
        service: "shop".to_string(),
        component: Some("api".to_string()),
        tail: Some(2),
        ..LogsQuery::default()
    };
    let lines: Vec<String> = api
        .logs(&t, tail)
        .await
        .unwrap()
        .map(|l| l.unwrap().line)
        .collect()
        .await;
    assert_eq!(lines, ["api line 2", "api line 3"]);
}

async fn lines(api: &dyn AgentApi, t: &AgentTarget, q: LogsQuery) -> Vec<String> {
    api.logs(t, q)
        .await
        .unwrap()
        .map(|l| l.unwrap().line)
        .collect()
        .await
}

async fn logs_since_filters_by_write_time(f: Box<dyn Fixture>) {
    let (api, t) = (f.api(), f.target());
    deploy_shop(&*f).await;
    let now = SystemTime::now();
    f.emit_log_at(
        "shop",
        "api",
        "an hour ago",
        now - Duration::from_secs(3600),
    );
    f.emit_log_at("shop", "api", "a minute ago", now - Duration::from_secs(60));
    f.emit_log_at("shop", "api", "now", now);
    let read = |since: Option<SystemTime>, tail: Option<u32>| LogsQuery {
        service: "shop".to_string(),
        component: Some("api".to_string()),
        since,
        tail,
        ..LogsQuery::default()
    };
    assert_eq!(
        lines(api, &t, read(None, None)).await,
        ["an hour ago", "a minute ago", "now"]
    );
    let recent = Some(now - Duration::from_secs(120));
    assert_eq!(
        lines(api, &t, read(recent, None)).await,
        ["a minute ago", "now"]
    );
    // The tail of what is left after `since`.
    assert_eq!(lines(api, &t, read(recent, Some(1))).await, ["now"]);
    let later = Some(now + Duration::from_secs(3600));
    assert!(lines(api, &t, read(later, None)).await.is_empty());
}

async fn events_record_what_happened(f: Box<dyn Fixture>) {
    let (api, t) = (f.api(), f.target());
    deploy_shop(&*f).await;
    api.stop(&t, "shop", Some("api")).await.unwrap();
    let shop = EventsQuery {
        service: Some("shop".to_string()),
        ..EventsQuery::default()
    };
    let rows = api.events(&t, shop.clone()).await.unwrap();
    let kinds: Vec<(&str, &str)> = rows
        .iter()
        .map(|e| (e.kind.as_str(), e.component.as_str()))
        .collect();
    let deploys: BTreeSet<&str> = kinds
        .iter()
        .filter(|(k, _)| *k == "deploy")
        .map(|(_, c)| *c)
        .collect();
    assert_eq!(deploys, BTreeSet::from(["api", "worker"]), "{rows:?}");
    assert_eq!(kinds.last(), Some(&("stop", "api")), "{rows:?}");
    assert!(rows.iter().all(|e| e.node == NODE && e.service == "shop"));
    assert!(rows.windows(2).all(|w| w[0].time <= w[1].time));

    let newest = api
        .events(
            &t,
            EventsQuery {
                limit: Some(1),
                ..shop.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].kind, "stop");

    let other = EventsQuery {
        service: Some("other".to_string()),
        ..EventsQuery::default()
    };
    assert!(api.events(&t, other).await.unwrap().is_empty());

    api.undeploy(&t, "shop", false).await.unwrap();
    let rows = api.events(&t, shop).await.unwrap();
    let last = rows.last().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.component.as_str()),
        ("undeploy", "")
    );

    let bad = EventsQuery {
        component: Some("api".to_string()),
        ..EventsQuery::default()
    };
    let e = api.events(&t, bad).await.unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");
}

async fn files_push_and_pull(f: Box<dyn Fixture>) {
    let (api, t) = (f.api(), f.target());
    let content = b"listen = 8080\n".to_vec();
    api.push_file(
        &t,
        "shop",
        "conf/app.toml",
        FileContent {
            content: content.clone(),
            mode: 0o600,
        },
    )
    .await
    .unwrap();
    let got = api.pull_file(&t, "shop", "conf/app.toml").await.unwrap();
    assert_eq!(got.content, content);
    assert_eq!(got.mode, 0o600);

    // Mode 0 is 0644.
    api.push_file(
        &t,
        "shop",
        "motd",
        FileContent {
            content: b"hi".to_vec(),
            mode: 0,
        },
    )
    .await
    .unwrap();
    assert_eq!(api.pull_file(&t, "shop", "motd").await.unwrap().mode, 0o644);

    let e = api.pull_file(&t, "shop", "missing.txt").await.unwrap_err();
    assert_eq!(code(&e), Code::NotFound, "{e}");
    for bad in ["../escape", "/etc/passwd", "a//b", ""] {
        let e = api
            .push_file(
                &t,
                "shop",
                bad,
                FileContent {
                    content: Vec::new(),
                    mode: 0,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(code(&e), Code::InvalidArgument, "{bad:?}: {e}");
    }
    let e = api
        .push_file(
            &t,
            "shop",
            "suid",
            FileContent {
                content: Vec::new(),
                mode: 0o4755,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");
}

async fn health_follows_the_containers(f: Box<dyn Fixture>) {
    let (api, t) = (f.api(), f.target());
    let h = api.health_check(&t).await.unwrap();
    assert_eq!((h.status, h.containers), (HealthStatus::Healthy, 0));
    deploy_shop(&*f).await;
    let h = api.health_check(&t).await.unwrap();
    assert_eq!((h.status, h.containers), (HealthStatus::Healthy, 2));
    // A component stopped on purpose is not a problem.
    api.stop(&t, "shop", Some("worker")).await.unwrap();
    assert_eq!(
        api.health_check(&t).await.unwrap().status,
        HealthStatus::Healthy
    );
    // A crash is.
    f.crash("shop", "api");
    assert_eq!(state_of(&*f, "shop", "api").await, ContainerState::Exited);
    assert_eq!(
        api.health_check(&t).await.unwrap().status,
        HealthStatus::Degraded
    );
    api.start(&t, "shop", Some("api")).await.unwrap();
    assert_eq!(
        api.health_check(&t).await.unwrap().status,
        HealthStatus::Healthy
    );
}

async fn adopt_records_unmanaged_containers(f: Box<dyn Fixture>) {
    let (api, t) = (f.api(), f.target());
    f.add_unmanaged("legacy-web", LEGACY);
    let steps = api.adopt(&t, "legacy").await.unwrap();
    assert_eq!(names(&steps), ["adopt legacy-web"]);
    assert_eq!(steps[0].state, StepState::Done);
    let r = api.list_services(&t).await.unwrap();
    let legacy = &r.services["legacy"];
    assert!(legacy.active);
    assert_eq!(legacy.components["web"].image, LEGACY);
    assert_eq!(legacy.components["web"].state, ContainerState::Running);

    let e = api.adopt(&t, "legacy").await.unwrap_err();
    assert_eq!(code(&e), Code::FailedPrecondition, "{e}");
    let e = api.adopt(&t, "nothing").await.unwrap_err();
    assert_eq!(code(&e), Code::NotFound, "{e}");
    let e = api.adopt(&t, "Not A Name").await.unwrap_err();
    assert_eq!(code(&e), Code::InvalidArgument, "{e}");

    // The real spec replaces the adopted container.
    let real = spec(&format!(
        "name = \"legacy\"\n\n[[components]]\nname = \"web\"\nimage = \"{LEGACY}\"\n"
    ));
    let steps = api.deploy(&t, &real, None).await.unwrap();
    assert!(names(&steps).contains(&"recreate legacy-web"), "{steps:?}");
}

/// The whole export of `service`: its bytes and the announced (sha256, size).
async fn export(f: &dyn Fixture, service: &str) -> Result<(Vec<u8>, String, u64), AgentError> {
    let mut stream = f.api().export_service_data(&f.target(), service).await?;
    let (mut bytes, mut end) = (Vec::new(), None);
    while let Some(c) = stream.next().await {
        match c? {
            DataChunk::Data(d) => {
                assert!(end.is_none(), "data after the end");
                bytes.extend_from_slice(&d);
            }
            DataChunk::End { sha256, size } => end = Some((sha256, size)),
        }
    }
    let (sha256, size) = end.expect("the stream ends with the checksum");
    Ok((bytes, sha256, size))
}

fn import_of(bytes: &[u8], sha256: &str, size: u64, force: bool) -> ImportData {
    let pieces: Vec<Result<Vec<u8>, String>> = bytes.chunks(100).map(|c| Ok(c.to_vec())).collect();
    ImportData {
        force,
        sha256: sha256.to_string(),
        size,
        chunks: Box::pin(tokio_stream::iter(pieces)),
    }
}

async fn service_data_round_trips(f: Box<dyn Fixture>) {
    let (api, t) = (f.api(), f.target());
    deploy_shop(&*f).await;
    let file = |s: &str| FileContent {
        content: s.as_bytes().to_vec(),
        mode: 0o640,
    };
    api.push_file(&t, "shop", "db/rows.db", file("v1"))
        .await
        .unwrap();
    // Without [snapshot], only *.toml, *.db and *.pem are archived.
    api.push_file(&t, "shop", "cache/tmp.txt", file("scratch"))
        .await
        .unwrap();
    let (bytes, sha256, size) = export(&*f, "shop").await.unwrap();
    assert_eq!(size, bytes.len() as u64);
    assert_eq!(sha256, hex_sha256(&bytes));
    api.push_file(&t, "shop", "db/rows.db", file("v2"))
        .await
        .unwrap();

    // Not while it runs (a running container keeps the old directory).
    let e = api
        .import_service_data(&t, "shop", import_of(&bytes, &sha256, size, true))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("running"), "{e}");
    api.stop(&t, "shop", None).await.unwrap();

    // Data exists: refused without force.
    let e = api
        .import_service_data(&t, "shop", import_of(&bytes, &sha256, size, false))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::FailedPrecondition, "{e}");
    assert_eq!(
        api.pull_file(&t, "shop", "db/rows.db")
            .await
            .unwrap()
            .content,
        b"v2",
        "refused without force: {e}"
    );
    // A wrong checksum writes nothing.
    let wrong = "0".repeat(64);
    let e = api
        .import_service_data(&t, "shop", import_of(&bytes, &wrong, size, true))
        .await
        .unwrap_err();
    assert_eq!(
        api.pull_file(&t, "shop", "db/rows.db")
            .await
            .unwrap()
            .content,
        b"v2",
        "refused checksum: {e}"
    );
    // With force, the exported data comes back.
    let o = api
        .import_service_data(&t, "shop", import_of(&bytes, &sha256, size, true))
        .await
        .unwrap();
    assert_eq!(o.sha256, sha256);
    assert_eq!(
        api.pull_file(&t, "shop", "db/rows.db")
            .await
            .unwrap()
            .content,
        b"v1"
    );

    // The import replaced the whole directory: what was not archived is gone.
    let e = api
        .pull_file(&t, "shop", "cache/tmp.txt")
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::NotFound, "{e}");

    let e = export(&*f, "nothing").await.unwrap_err();
    assert_eq!(code(&e), Code::NotFound, "{e}");
}

fn hex_sha256(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod fake_agents {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::fake().await).await;
                }
            )*
        }
        mod grpc_agents {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::grpc().await).await;
                }
            )*
        }
    };
}

suite!(
    deploy_lists_the_service,
    deploy_one_component_recreates_only_it,
    stop_and_start_change_states,
    undeploy_removes_the_service,
    unknown_services_and_components_are_not_found,
    logs_are_the_containers_output,
    logs_since_filters_by_write_time,
    events_record_what_happened,
    files_push_and_pull,
    health_follows_the_containers,
    adopt_records_unmanaged_containers,
    service_data_round_trips,
);

/// The master's snapshot store over `GrpcAgents` and the real agent: the
/// stored file is a plain tar.zst (`zstd -d | tar t` lists it), and a
/// restore puts its content back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_keeps_a_plain_tar_zst_and_restores_it_through_the_real_agent() {
    use mcp_master::reconcile::{DesiredSource, Reconciler, Settings};
    use mcp_master::snapshots::{RestoreStep, Snapshots, StoreSettings};
    use mcp_master::state::{Placement, Registration, State};

    for bin in ["zstd", "tar"] {
        if std::process::Command::new(bin)
            .arg("--version")
            .output()
            .is_err()
        {
            if std::env::var("MCP_SKIP_MISSING_SERVERS").as_deref() == Ok("1") {
                eprintln!("SKIPPED: {bin} missing");
                return;
            }
            panic!("{bin} not found: apt-get install -y {bin}");
        }
    }
    let g = grpc_fixture().await;
    let t = g.target();
    let spec = deploy_shop(&g).await;
    let file = |s: &str| FileContent {
        content: s.as_bytes().to_vec(),
        mode: 0o640,
    };
    g.api()
        .push_file(&t, "shop", "conf/app.toml", file("port = 1\n"))
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let state = State::open(&dir.path().join("master.db")).unwrap();
    let now = SystemTime::now();
    let address = t.address.clone();
    state
        .write(|w| {
            w.register_node(
                &Registration {
                    name: NODE.into(),
                    role: mcp_master::config::NodeRole::Master,
                    address,
                    arch: "amd64".into(),
                },
                now,
            )?;
            w.put_placement(&Placement {
                service: "shop".into(),
                node: NODE.into(),
                tier: spec.tier,
                spec_hash: spec_hash(&spec),
                spec: spec.clone(),
                deployed_at: now,
            })
        })
        .unwrap();
    let agents: Arc<dyn AgentApi> = g.agents.clone();
    let rec = Reconciler::new(
        state,
        agents,
        Arc::new(SystemClock),
        DesiredSource::Push,
        Settings {
            policy: mcp_planner::Policy::default(),
            concurrency: 1,
            list_timeout: Duration::from_secs(5),
            heal_settle: Duration::from_secs(10),
            interval: Duration::from_secs(60),
        },
    );
    let store = Snapshots::new(
        Arc::new(rec),
        StoreSettings {
            dir: dir.path().join("snapshots"),
            interval: Duration::from_secs(86_400),
            retain: 2,
            mirror: Some(dir.path().join("mirror")),
            timeout: Duration::from_secs(30),
            database: None,
        },
    );
    let taken = store.take("shop").await.unwrap();
    let path = store.path_of(&taken.record);
    let unzstd = std::process::Command::new("zstd")
        .arg("-dc")
        .arg(&path)
        .output()
        .unwrap();
    assert!(unzstd.status.success(), "zstd -d {}", path.display());
    let mut tar = std::process::Command::new("tar")
        .arg("-t")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        tar.stdin.take().unwrap().write_all(&unzstd.stdout).unwrap();
    }
    let listing = String::from_utf8(tar.wait_with_output().unwrap().stdout).unwrap();
    assert!(listing.contains("conf/app.toml"), "{listing}");

    g.api()
        .push_file(&t, "shop", "conf/app.toml", file("port = 2\n"))
        .await
        .unwrap();
    let steps = store.restore("shop", None, true).await.unwrap();
    assert!(steps.iter().all(RestoreStep::ok), "{steps:?}");
    let back = g
        .api()
        .pull_file(&t, "shop", "conf/app.toml")
        .await
        .unwrap();
    assert_eq!(back.content, b"port = 1\n");
    let r = g.api().list_services(&t).await.unwrap();
    assert!(r.services["shop"]
        .components
        .values()
        .all(|c| c.state == ContainerState::Running));
}
