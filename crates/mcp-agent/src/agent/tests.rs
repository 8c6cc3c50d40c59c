//! The agent core against the recording fake runtime.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicI64, Ordering};

use mcp_runtime::{
    ContainerConfig, ContainerState, FakeCall, FakeOp, FakeRuntime, LogOptions, PortBinding,
    LABEL_NODE,
};
use mcp_spec::{LoadOptions, ServiceSpec};
use tokio_stream::StreamExt;

use crate::config::NodeRole;
use crate::ports::PortRange;
use crate::registry::{DesiredState, EventQuery};

use super::*;

const T0: i64 = 1_714_564_800; // 2024-05-01T12:00:00Z
const V1: &str = "registry.example/app:v1";
const V2: &str = "registry.example/app:v2";
const DB: &str = "registry.example/db:v7";

fn spec(name: &str, toml: &str) -> ServiceSpec {
    match mcp_spec::parse_service(&format!("{name}.toml"), name, toml, &LoadOptions::default()) {
        Ok(s) => s,
        Err(d) => panic!("test spec {name}: {d:?}"),
    }
}

/// `app`: `web` (routes: unnamed + `admin`) and `db` (one unnamed route).
fn app(web_image: &str, active: bool) -> ServiceSpec {
    spec(
        "app",
        &format!(
            r#"
name = "app"
active = {active}
[[components]]
name = "web"
image = "{web_image}"
env = ["LOG=info"]
[[components.routes]]
port = 443
[[components.routes]]
name = "admin"
port = 8443
[[components]]
name = "db"
image = "{DB}"
[[components.routes]]
port = 5432
mode = "l4"
"#
        ),
    )
}

fn solo(name: &str, tier: &str) -> ServiceSpec {
    spec(
        name,
        &format!(
            "name = \"{name}\"\ntier = \"{tier}\"\n[[components]]\nname = \"{name}\"\nimage = \"{V1}\"\n"
        ),
    )
}

struct Harness {
    agent: Agent<FakeRuntime>,
    fake: FakeRuntime,
    clock: Arc<AtomicI64>,
    dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = FakeRuntime::with_images([V1, V2, DB]);
        Harness::with(fake, dir, |_| {})
    }

    fn with(
        fake: FakeRuntime,
        dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut AgentSettings),
    ) -> Harness {
        let clock = Arc::new(AtomicI64::new(T0));
        let c = clock.clone();
        let registry = Registry::open(&dir.path().join("agent.db"))
            .expect("registry")
            .with_clock(move || Timestamp::from_unix(c.load(Ordering::SeqCst)));
        let mut settings = AgentSettings::new("orion");
        settings.port_range = PortRange::new(20000, 20099).expect("range");
        settings.files_root = dir.path().join("srv");
        tweak(&mut settings);
        let c = clock.clone();
        let agent = Agent::new(fake.clone(), registry, settings)
            .with_probe(|_port: u16| true)
            .with_clock(move || Timestamp::from_unix(c.load(Ordering::SeqCst)));
        Harness {
            agent,
            fake,
            clock,
            dir,
        }
    }

    /// A new agent over the same database and runtime (an agent restart).
    fn restart_agent(self) -> Harness {
        let Harness { fake, dir, .. } = self;
        Harness::with(fake, dir, |_| {})
    }

    fn advance(&self, secs: i64) {
        self.clock.fetch_add(secs, Ordering::SeqCst);
    }

    fn info(&self, name: &str) -> ContainerInfo {
        self.fake
            .containers()
            .into_iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    fn names(&self) -> Vec<String> {
        self.fake.containers().into_iter().map(|c| c.name).collect()
    }

    fn creates(&self) -> Vec<String> {
        self.fake
            .mutations()
            .into_iter()
            .filter_map(|c| match c {
                FakeCall::CreateAndStart(cfg) => Some(cfg.name),
                _ => None,
            })
            .collect()
    }

    async fn component(&self, service: &str, component: &str) -> ComponentStatus {
        self.agent
            .service_status(service)
            .await
            .expect("status")
            .components
            .into_iter()
            .find(|c| c.name == component)
            .unwrap_or_else(|| panic!("no component {component}"))
    }
}

fn env_of(cfg: &ContainerConfig, key: &str) -> Option<String> {
    cfg.env
        .iter()
        .find_map(|e| e.strip_prefix(&format!("{key}=")).map(str::to_string))
}

#[tokio::test]
async fn deploy_creates_named_labelled_containers_with_port_env() {
    let h = Harness::new();
    let out = h.agent.deploy(app(V1, true), None).await.expect("deploy");
    assert_eq!(out.replaced, vec!["web", "db"]);
    assert_eq!(out.spec_hash, mcp_spec::spec_hash(&app(V1, true)));
    assert_eq!(h.names(), vec!["app-db", "app-web"]);

    let web = h.fake.config("app-web").expect("web config");
    assert_eq!(web.service, "app");
    assert_eq!(web.component, "web");
    assert_eq!(web.node, "orion");
    let info = h.info("app-web");
    assert_eq!(
        info.labels.get(LABEL_NODE).map(String::as_str),
        Some("orion")
    );
    assert!(info.labels.contains_key(LABEL_CONFIG_HASH));
    assert!(info.is_running());

    let port = env_of(&web, "PORT").expect("$PORT");
    let admin = env_of(&web, "PORT_ADMIN").expect("$PORT_ADMIN");
    assert_eq!(env_of(&web, "LOG").as_deref(), Some("info"));
    let port: u16 = port.parse().expect("number");
    let admin: u16 = admin.parse().expect("number");
    assert_ne!(port, admin);
    assert!((20000..=20099).contains(&port));
    assert_eq!(
        web.ports,
        vec![
            PortBinding::tcp(Ipv4Addr::LOCALHOST.into(), port, port),
            PortBinding::tcp(Ipv4Addr::LOCALHOST.into(), admin, admin)
        ]
    );
    let db = h.fake.config("app-db").expect("db config");
    assert!(env_of(&db, "PORT").is_some());
    assert_eq!(env_of(&db, "PORT_ADMIN"), None);

    // Reported: versions, observed state, ports.
    let web = h.component("app", "web").await;
    assert_eq!(web.version, "v1");
    assert_eq!(web.observed, ObservedState::Running);
    assert_eq!(web.desired, DesiredState::Running);
    assert_eq!(web.ports.get(""), Some(&port));
    assert_eq!(web.ports.get("admin"), Some(&admin));
    assert!(web.started.is_some());

    // New containers of pinned, local images: created without a pull; a
    // deploy event per component.
    let calls = h.fake.mutations();
    assert!(
        matches!(&calls[0], FakeCall::CreateAndStart(c) if c.image == V1),
        "{calls:?}"
    );
    assert!(
        !calls.iter().any(|c| matches!(c, FakeCall::Pull { .. })),
        "{calls:?}"
    );
    let events = h.agent.events(EventQuery::default()).await.expect("events");
    assert_eq!(
        events
            .iter()
            .map(|e| (e.component.as_str(), e.kind.as_str()))
            .collect::<Vec<_>>(),
        vec![("web", "deploy"), ("db", "deploy")]
    );
}

#[tokio::test]
async fn redeploy_with_a_changed_image_replaces_only_that_component() {
    let h = Harness::new();
    h.agent
        .deploy(app(V1, true), None)
        .await
        .expect("deploy v1");
    let db_id = h.info("app-db").id;
    let web_port = env_of(&h.fake.config("app-web").expect("cfg"), "PORT");
    h.fake.take_calls();

    let out = h
        .agent
        .deploy(app(V2, true), None)
        .await
        .expect("deploy v2");
    assert_eq!(out.replaced, vec!["web"]);
    assert_eq!(h.creates(), vec!["app-web"]);
    assert_eq!(h.info("app-db").id, db_id, "db untouched");
    let web = out
        .status
        .components
        .iter()
        .find(|c| c.name == "web")
        .expect("web");
    assert_eq!(web.version, "v2");
    assert_eq!(web.image, V2);
    assert_eq!(
        env_of(&h.fake.config("app-web").expect("cfg"), "PORT"),
        web_port,
        "ports are stable across redeploys"
    );
    assert!(
        !h.fake
            .mutations()
            .iter()
            .any(|c| matches!(c, FakeCall::Remove { name, .. } | FakeCall::Stop { name, .. } if name == "app-db")),
        "{:?}",
        h.fake.mutations()
    );
}

#[tokio::test]
async fn unchanged_redeploy_touches_nothing() {
    let h = Harness::new();
    h.agent.deploy(app(V1, true), None).await.expect("deploy");
    h.fake.take_calls();
    let out = h.agent.deploy(app(V1, true), None).await.expect("redeploy");
    assert!(out.replaced.is_empty());
    assert_eq!(
        h.fake.mutations(),
        vec![],
        "no pull, create, stop or remove"
    );
    assert!(out
        .steps
        .iter()
        .filter(|s| !s.step.starts_with("route "))
        .all(|s| s.outcome == StepOutcome::Skipped && s.detail == "unchanged"));
}

#[tokio::test]
async fn redeploy_removes_components_that_left_the_spec() {
    let h = Harness::new();
    h.agent.deploy(app(V1, true), None).await.expect("deploy");
    let web_only = spec(
        "app",
        &format!(
            "name = \"app\"\n[[components]]\nname = \"web\"\nimage = \"{V1}\"\nenv = [\"LOG=info\"]\n\
             [[components.routes]]\nport = 443\n[[components.routes]]\nname = \"admin\"\nport = 8443\n"
        ),
    );
    let web_id = h.info("app-web").id;
    let out = h.agent.deploy(web_only, None).await.expect("deploy");
    assert_eq!(h.names(), vec!["app-web"]);
    assert_eq!(h.info("app-web").id, web_id, "web unchanged");
    assert!(out.replaced.is_empty());
    let ports = h.agent.service_status("app").await.expect("status");
    assert_eq!(ports.components.len(), 1);
}

#[tokio::test]
async fn inactive_deploy_leaves_components_stopped() {
    let h = Harness::new();
    h.agent.deploy(app(V1, false), None).await.expect("deploy");
    for c in ["app-web", "app-db"] {
        assert!(!h.info(c).is_running(), "{c}");
    }
    let web = h.component("app", "web").await;
    assert_eq!(web.desired, DesiredState::Stopped);
    assert_eq!(web.observed, ObservedState::Exited);

    // active = true again: same config, so started, not recreated.
    h.fake.take_calls();
    h.agent.deploy(app(V1, true), None).await.expect("deploy");
    assert!(h.creates().is_empty());
    assert!(h.info("app-web").is_running());
}

#[tokio::test]
async fn deploy_of_one_component_leaves_the_others_alone() {
    let h = Harness::new();
    h.agent.deploy(app(V1, true), None).await.expect("deploy");
    h.fake.take_calls();
    let mut changed = app(V2, true);
    changed.components[1].image = "registry.example/db:v8".into();
    h.fake.add_image("registry.example/db:v8");
    let out = h
        .agent
        .deploy(changed, Some("db"))
        .await
        .expect("deploy db");
    assert_eq!(out.replaced, vec!["db"]);
    assert_eq!(h.creates(), vec!["app-db"]);
    let err = h
        .agent
        .deploy(app(V1, true), Some("cache"))
        .await
        .expect_err("unknown component");
    assert!(
        err.to_string()
            .contains("service app has no component cache"),
        "{err}"
    );
}

#[tokio::test]
async fn deploy_refusals_name_the_problem() {
    let h = Harness::new();
    // An unmanaged container with a wanted name is never removed.
    assert!(h.fake.insert_unmanaged("app-web", V1, &[]));
    let err = h
        .agent
        .deploy(app(V1, true), None)
        .await
        .expect_err("in the way");
    assert!(
        matches!(err, AgentError::FailedPrecondition { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("container app-web exists on node orion and is not managed"),
        "{err}"
    );
    assert!(h.info("app-web").is_running());

    // Pinned to another node.
    let mut pinned = solo("pinned", "worker");
    pinned.node = Some("vega".into());
    let err = h.agent.deploy(pinned, None).await.expect_err("pinned");
    assert!(
        err.to_string()
            .contains("pinned to node vega, this is node orion"),
        "{err}"
    );

    // Invalid spec: every violation listed.
    let mut bad = solo("bad", "worker");
    bad.components[0].name = "Bad_Name".into();
    bad.components[0].env = vec!["NOEQUALS".into()];
    let err = h.agent.deploy(bad, None).await.expect_err("invalid");
    match &err {
        AgentError::InvalidSpec { violations, .. } => assert_eq!(violations.len(), 2, "{err}"),
        other => panic!("expected InvalidSpec, got {other}"),
    }

    // A missing image fails before anything is touched.
    let missing = spec(
        "gone",
        "name = \"gone\"\n[[components]]\nname = \"x\"\nimage = \"registry.example/none:v1\"\n",
    );
    let err = h.agent.deploy(missing, None).await.expect_err("pull fails");
    assert!(
        err.to_string().contains("deploy") || err.to_string().contains("pull"),
        "{err}"
    );
    assert!(
        h.agent.service_status("gone").await.is_err(),
        "not recorded"
    );
}

#[tokio::test]
async fn edge_nodes_run_no_application_containers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::with(FakeRuntime::with_images([V1]), dir, |s| {
        s.role = NodeRole::Edge
    });
    let err = h
        .agent
        .deploy(solo("web", "worker"), None)
        .await
        .expect_err("edge");
    assert!(
        err.to_string().contains("node orion is an edge node"),
        "{err}"
    );
    assert!(h.fake.containers().is_empty());
}

#[tokio::test]
async fn stop_start_restart_and_undeploy() {
    let h = Harness::new();
    h.agent.deploy(app(V1, true), None).await.expect("deploy");

    // One component.
    h.agent.stop("app", Some("db")).await.expect("stop db");
    assert!(!h.info("app-db").is_running());
    assert!(h.info("app-web").is_running());
    assert_eq!(
        h.component("app", "db").await.desired,
        DesiredState::Stopped
    );

    // Whole service.
    h.agent.stop("app", None).await.expect("stop");
    assert!(!h.info("app-web").is_running());
    let status = h.agent.service_status("app").await.expect("status");
    assert!(!status.active);
    assert!(status
        .components
        .iter()
        .all(|c| c.desired == DesiredState::Stopped));

    h.agent.start("app", None).await.expect("start");
    assert!(h.info("app-web").is_running() && h.info("app-db").is_running());
    let status = h.agent.service_status("app").await.expect("status");
    assert!(status.active);

    let id = h.info("app-web").id;
    h.fake.take_calls();
    h.agent.restart("app", Some("web")).await.expect("restart");
    let ops: Vec<FakeOp> = h.fake.mutations().iter().map(FakeCall::op).collect();
    assert_eq!(ops, vec![FakeOp::Stop, FakeOp::Start]);
    assert_eq!(h.info("app-web").id, id, "restart keeps the container");

    // Unknown names.
    let err = h.agent.stop("nope", None).await.expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "service nope is not deployed on node orion"
    );
    let err = h
        .agent
        .start("app", Some("cache"))
        .await
        .expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "service app has no component cache on node orion"
    );

    // Undeploy keeps the data unless asked.
    let data = h.dir.path().join("srv/app");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("app.db"), "x").expect("write");
    h.agent.undeploy("app", false).await.expect("undeploy");
    assert!(h.names().is_empty());
    assert!(data.join("app.db").exists());
    let inv = h.agent.list_services().await.expect("list");
    assert!(inv.services.is_empty());
    assert!(h.agent.undeploy("app", false).await.is_err());

    // Ports were released: a new deploy may use them again.
    h.agent.deploy(app(V1, true), None).await.expect("deploy");
    h.agent
        .undeploy("app", true)
        .await
        .expect("undeploy with data");
    assert!(!data.exists());
}

#[tokio::test]
async fn start_recreates_a_missing_container_from_the_stored_spec() {
    let h = Harness::new();
    h.agent.deploy(app(V1, true), None).await.expect("deploy");
    let before = h.fake.config("app-web").expect("cfg");
    h.fake.remove_image(V1);
    h.fake.add_registry_image(V1);
    assert!(h.fake.remove("app-web", true).await.is_ok());
    h.agent.start("app", Some("web")).await.expect("start");
    let after = h.fake.config("app-web").expect("recreated");
    assert_eq!(after, before, "same config, ports included");
}

#[tokio::test]
async fn startup_convergence_after_a_reboot() {
    let h = Harness::new();
    h.agent
        .deploy(app(V1, true), None)
        .await
        .expect("deploy app");
    h.agent
        .deploy(solo("dns", "core"), None)
        .await
        .expect("deploy dns");
    h.agent
        .deploy(solo("idle", "worker"), None)
        .await
        .expect("deploy idle");
    h.agent.stop("idle", None).await.expect("stop idle");
    let ports_before = h.component("app", "web").await.ports;

    // "Reboot": every container stopped behind the agent's back, one gone.
    for c in ["app-web", "app-db", "dns"] {
        assert!(h.fake.crash(c, 137), "{c}");
    }
    assert!(h.fake.remove("app-db", true).await.is_ok());

    let h = h.restart_agent();
    h.fake.take_calls();
    let steps = h.agent.converge().await.expect("converge");
    assert!(steps.iter().all(|s| !s.is_failed()), "{steps:?}");
    // Core tier first.
    let started: Vec<String> = h
        .fake
        .mutations()
        .into_iter()
        .filter_map(|c| match c {
            FakeCall::Start { name } => Some(name),
            FakeCall::CreateAndStart(cfg) => Some(cfg.name),
            _ => None,
        })
        .collect();
    assert_eq!(started, vec!["dns", "app-db", "app-web"]);
    for c in ["app-web", "app-db", "dns"] {
        assert!(h.info(c).is_running(), "{c}");
    }
    assert!(
        !h.info("idle").is_running(),
        "desired stopped stays stopped"
    );
    assert_eq!(h.component("app", "web").await.ports, ports_before);

    // A second start-up finds nothing to do.
    h.fake.take_calls();
    h.agent.converge().await.expect("converge");
    assert_eq!(h.fake.mutations(), vec![]);
}

#[tokio::test]
async fn adopt_takes_over_prefixed_containers() {
    let h = Harness::new();
    assert!(h.fake.insert_unmanaged("legacy-api", V1, &[]));
    assert!(h.fake.insert_unmanaged("legacy-worker", V2, &[]));
    assert!(h.fake.insert_unmanaged("legacyx", V2, &[]));
    assert!(h.fake.insert_unmanaged("single", V1, &[]));
    h.fake.take_calls();

    let steps = h.agent.adopt("legacy").await.expect("adopt");
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert_eq!(h.fake.mutations(), vec![], "containers untouched");
    let status = h.agent.service_status("legacy").await.expect("status");
    let comps: Vec<(&str, &str, DesiredState, ObservedState)> = status
        .components
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.version.as_str(),
                c.desired,
                c.observed.clone(),
            )
        })
        .collect();
    assert_eq!(
        comps,
        vec![
            ("api", "v1", DesiredState::Running, ObservedState::Running),
            (
                "worker",
                "v2",
                DesiredState::Running,
                ObservedState::Running
            )
        ]
    );

    h.agent.adopt("single").await.expect("adopt single");
    let single = h.component("single", "single").await;
    assert_eq!(single.container, "single");
    assert_eq!(single.observed, ObservedState::Running);

    let err = h.agent.adopt("legacy").await.expect_err("twice");
    assert!(err.to_string().contains("already managed"), "{err}");
    let err = h.agent.adopt("nothing").await.expect_err("none");
    assert!(matches!(err, AgentError::ServiceNotFound { .. }), "{err}");

    // Adopted containers are not orphans; a deploy of the real spec
    // replaces them.
    let inv = h.agent.list_services().await.expect("list");
    assert!(inv.orphans.is_empty());
    let real = spec(
        "legacy",
        &format!("name = \"legacy\"\n[[components]]\nname = \"api\"\nimage = \"{V2}\"\n"),
    );
    h.agent
        .deploy(real, None)
        .await
        .expect("deploy over adopted");
    assert!(h.info("legacy-api").is_managed());
    assert!(!h.names().contains(&"legacy-worker".to_string()));
    assert!(h.names().contains(&"legacyx".to_string()));
}

#[tokio::test]
async fn list_services_reports_orphans_and_health_reports_drift() {
    let h = Harness::new();
    h.agent.deploy(app(V1, true), None).await.expect("deploy");
    let mut stray = ContainerConfig::new("stray-x", V1, "stray", "x", "orion");
    stray.labels.insert("k".into(), "v".into());
    h.fake.create_and_start(&stray).await.expect("create");
    let other_node = ContainerConfig::new("far-x", V1, "far", "x", "vega");
    h.fake.create_and_start(&other_node).await.expect("create");

    let inv = h.agent.list_services().await.expect("list");
    assert_eq!(inv.orphans, vec!["stray-x"]);
    assert_eq!(inv.services.len(), 1);

    let health = h.agent.health().await.expect("health");
    assert_eq!(health.status, HealthStatus::Healthy);
    assert_eq!(health.containers, 3);
    assert!(h.fake.crash("app-db", 1));
    let health = h.agent.health().await.expect("health");
    assert_eq!(health.status, HealthStatus::Degraded);
    assert_eq!(
        health.problems,
        vec!["app/db: desired running, observed exited"]
    );
}

#[test]
fn config_hash_ignores_only_its_own_label() {
    let mut a = ContainerConfig::new("a-b", V1, "a", "b", "n");
    let h1 = config_hash(&a);
    a.labels.insert(LABEL_CONFIG_HASH.into(), "whatever".into());
    assert_eq!(config_hash(&a), h1);
    a.env.push("PORT=20001".into());
    assert_ne!(config_hash(&a), h1);
}

/// A new service costs the runtime one create and one inspect per
/// component: no listing, no image check (the deploy benchmark's budget).
#[tokio::test]
async fn fresh_deploy_creates_and_inspects_only() {
    let h = Harness::new();
    h.fake.take_calls();
    h.agent
        .deploy(solo("solo", "worker"), None)
        .await
        .expect("deploy");
    let calls = h.fake.take_calls();
    assert!(
        matches!(
            calls.as_slice(),
            [FakeCall::CreateAndStart(_), FakeCall::Inspect { .. }]
        ),
        "{calls:?}"
    );
    assert!(h.info("solo").is_running());
}

/// A pinned image that is not local is pulled when the create says so, then
/// the container is created.
#[tokio::test]
async fn missing_pinned_image_is_pulled_then_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeRuntime::with_images([V2, DB]);
    fake.add_registry_image(V1);
    let h = Harness::with(fake, dir, |_| {});
    h.agent
        .deploy(solo("solo", "worker"), None)
        .await
        .expect("deploy");
    let calls = h.fake.take_calls();
    let kinds: Vec<&str> = calls
        .iter()
        .map(|c| match c {
            FakeCall::CreateAndStart(_) => "create",
            FakeCall::Pull { .. } => "pull",
            FakeCall::Inspect { .. } => "inspect",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["create", "pull", "create", "inspect"], "{calls:?}");
    assert!(h.info("solo").is_running());
}

/// The registry lost a service (e.g. restored from an old backup) but its
/// labelled container is still there: the deploy replaces it instead of
/// failing on the name.
#[tokio::test]
async fn container_of_a_forgotten_service_is_replaced() {
    let h = Harness::new();
    h.agent
        .deploy(solo("solo", "worker"), None)
        .await
        .expect("deploy");
    let old_id = h.info("solo").id;
    h.agent
        .db(|r| r.remove_service("solo").map(|_| ()))
        .await
        .expect("forget");
    h.agent
        .deploy(solo("solo", "worker"), None)
        .await
        .expect("redeploy");
    let info = h.info("solo");
    assert!(info.is_running());
    assert_ne!(info.id, old_id, "recreated");
}

mod data;
mod events;
mod logs;
mod monitor;
mod routes;
mod volumes;

/// Issue 12 item 8: a start refused during start-up convergence is retried
/// with back-off until it works; what converged is not touched again.
#[tokio::test]
async fn startup_convergence_retries_a_failed_start() {
    let h = Harness::new();
    h.agent
        .deploy(solo("dns", "core"), None)
        .await
        .expect("deploy dns");
    h.agent
        .deploy(solo("idle", "worker"), None)
        .await
        .expect("deploy idle");
    for c in ["dns", "idle"] {
        assert!(h.fake.crash(c, 137), "{c}");
    }
    let h = h.restart_agent();
    h.fake.take_calls();
    h.fake
        .fail_next(FakeOp::Start, "address already in use (CNI)");
    let delays = [std::time::Duration::from_millis(10); 3];
    let rounds = h
        .agent
        .converge_until_done(&delays)
        .await
        .expect("converge");
    assert_eq!(rounds.len(), 2, "{rounds:?}");
    assert!(rounds[0].iter().any(|s| s.is_failed()), "{rounds:?}");
    assert!(rounds[1].iter().all(|s| !s.is_failed()), "{rounds:?}");
    for c in ["dns", "idle"] {
        assert!(h.info(c).is_running(), "{c}");
    }
    let starts = h
        .fake
        .mutations()
        .into_iter()
        .filter(|c| matches!(c, FakeCall::Start { .. } | FakeCall::CreateAndStart(_)))
        .count();
    assert_eq!(starts, 3, "two starts and one retry, nothing started twice");
}
