//! The SQLite registry against real database files.

mod common;

use common::{hash, open, service, spec, T0};
use mcp_agent::registry::schema_version;
use mcp_agent::{
    DesiredState, EventKind, EventQuery, NewEvent, ObservedState, PortRange, PrunedEvents,
    Registry, RegistryError, Timestamp,
};
use mcp_spec::Tier;

const MCQ: &str = r#"
name = "mcq"
tier = "core"
active = true

[snapshot]
method = "grpc"
exclude = ["uploads/"]

[[components]]
name = "api"
image = "registry.example:8443/mcq:v0.4.0"
volumes = ["/srv/mcq:/srv/mcq"]
cmd = ["server", "--config", "/srv/mcq/mcq.toml"]

[[components.routes]]
name = "rest"
port = 8443
mode = "l7"

[[components.routes]]
name = "grpc"
port = 9443
mode = "l4"

[[components]]
name = "worker"
image = "registry.example:8443/mcq-worker"
"#;

fn all_ports() -> PortRange {
    PortRange::new(20000, 20100).expect("range")
}

fn free(_: u16) -> bool {
    true
}

#[test]
fn open_creates_schema_in_wal_mode_and_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.db");
    {
        let r = Registry::open(&path).expect("create");
        assert_eq!(r.user_version().expect("version"), schema_version());
    }
    let r = Registry::open(&path).expect("reopen");
    assert_eq!(r.user_version().expect("version"), schema_version());
    drop(r);

    let conn = rusqlite::Connection::open(&path).expect("raw open");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    for t in [
        "alerts_sent",
        "certificates",
        "components",
        "edge_routes",
        "events",
        "meta",
        "ports",
        "services",
    ] {
        assert!(
            tables.iter().any(|x| x == t),
            "missing table {t}: {tables:?}"
        );
    }
}

#[test]
fn database_from_a_newer_agent_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.db");
    drop(Registry::open(&path).expect("create"));
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.pragma_update(None, "user_version", 99)
        .expect("set version");
    drop(conn);
    let err = Registry::open(&path).expect_err("too new");
    assert!(
        matches!(err, RegistryError::TooNew { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade the agent"), "{err}");
}

#[test]
fn open_reports_the_path() {
    let err = Registry::open(std::path::Path::new("/nonexistent/dir/agent.db"))
        .expect_err("no parent dir");
    assert!(
        err.to_string().contains("/nonexistent/dir/agent.db"),
        "{err}"
    );
}

#[test]
fn upsert_and_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = open(dir.path());
    let s = spec("mcq", MCQ);
    let out = r.upsert_service(&s, &hash(&s)).expect("upsert");
    assert!(out.is_new());

    let got = r.get_service("mcq").expect("get").expect("present");
    assert_eq!(got.spec, s);
    assert_eq!(got.spec_hash, hash(&s));
    assert_eq!(got.snapshot, s.snapshot);
    assert!(got.active);
    assert_eq!(got.tier, Tier::Core);
    assert_eq!(got.updated_at, Timestamp::from_unix(T0));
    let comps: Vec<_> = got
        .components
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.version.as_str(),
                c.desired,
                c.observed.clone(),
                c.container_name.as_str(),
            )
        })
        .collect();
    assert_eq!(
        comps,
        vec![
            (
                "api",
                "v0.4.0",
                DesiredState::Running,
                ObservedState::Unknown,
                "mcq-api"
            ),
            (
                "worker",
                "latest",
                DesiredState::Running,
                ObservedState::Unknown,
                "mcq-worker"
            ),
        ]
    );
    assert_eq!(r.get_service("nope").expect("get"), None);
    assert_eq!(r.list_services().expect("list"), vec![got]);
}

#[test]
fn redeploy_keeps_observations_and_releases_what_disappeared() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = open(dir.path());
    let v1 = spec("mcq", MCQ);
    r.upsert_service(&v1, &hash(&v1)).expect("deploy v1");
    let range = all_ports();
    let ports = r
        .allocate_service_ports(&v1, range, &free)
        .expect("allocate");
    assert_eq!(ports.len(), 2);
    r.set_component_observed("mcq", "api", &ObservedState::Running, 2)
        .expect("observe");

    // v2: new image tag for api, route "grpc" and component "worker" gone.
    let text = MCQ
        .replace("mcq:v0.4.0", "mcq:v0.5.0")
        .replace(
            "[[components.routes]]\nname = \"grpc\"\nport = 9443\nmode = \"l4\"\n",
            "",
        )
        .replace(
            "[[components]]\nname = \"worker\"\nimage = \"registry.example:8443/mcq-worker\"\n",
            "",
        );
    let v2 = spec("mcq", &text);
    let out = r.upsert_service(&v2, &hash(&v2)).expect("deploy v2");
    assert_eq!(out.previous_hash, Some(hash(&v1)));
    assert_eq!(out.removed_components, vec!["worker".to_string()]);
    let grpc_port = ports
        .iter()
        .find(|p| p.route.as_deref() == Some("grpc"))
        .expect("grpc port")
        .port;
    assert_eq!(out.released_ports, vec![grpc_port]);

    let api = r.get_component("mcq", "api").expect("api");
    assert_eq!(api.version, "v0.5.0");
    assert_eq!(api.observed, ObservedState::Running);
    assert_eq!(api.restart_count, 2);
    assert!(matches!(
        r.get_component("mcq", "worker"),
        Err(RegistryError::ComponentNotFound { .. })
    ));
    let left: Vec<_> = r
        .ports(Some("mcq"))
        .expect("ports")
        .into_iter()
        .map(|p| (p.component, p.route))
        .collect();
    assert_eq!(left, vec![("api".to_string(), Some("rest".to_string()))]);
}

#[test]
fn stop_start_and_ignore() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = open(dir.path());
    let s = service("app", &[("web", &[]), ("job", &[])]);
    r.upsert_service(&s, &hash(&s)).expect("deploy");
    r.set_component_desired("app", "job", DesiredState::Ignore)
        .expect("ignore job");

    r.set_service_active("app", false).expect("stop");
    let got = r.get_service("app").expect("get").expect("present");
    assert!(!got.active);
    let desired: Vec<_> = got.components.iter().map(|c| c.desired).collect();
    assert_eq!(desired, vec![DesiredState::Ignore, DesiredState::Stopped]);

    // A redeploy sets desired from the spec, but `ignore` stays.
    r.upsert_service(&s, &hash(&s)).expect("redeploy");
    let desired: Vec<_> = r
        .components("app")
        .expect("components")
        .iter()
        .map(|c| c.desired)
        .collect();
    assert_eq!(desired, vec![DesiredState::Ignore, DesiredState::Running]);

    let err = r.set_service_active("ghost", true).expect_err("unknown");
    assert_eq!(err.to_string(), "service ghost is not in the registry");
}

#[test]
fn unknown_components_are_named_in_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = open(dir.path());
    let s = service("app", &[("web", &[])]);
    r.upsert_service(&s, &hash(&s)).expect("deploy");
    let e1 = r
        .set_component_observed("app", "db", &ObservedState::Running, 0)
        .expect_err("unknown component");
    let e2 = r
        .set_component_desired("nope", "web", DesiredState::Stopped)
        .expect_err("unknown service");
    assert_eq!(e1.to_string(), "component app/db is not in the registry");
    assert_eq!(e2.to_string(), "component nope/web is not in the registry");
}

#[test]
fn container_names_are_unique_across_services() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = open(dir.path());
    let a = service("a", &[("b-c", &[]), ("x", &[])]);
    r.upsert_service(&a, &hash(&a)).expect("a");
    let ab = service("a-b", &[("c", &[]), ("y", &[])]);
    let err = r.upsert_service(&ab, &hash(&ab)).expect_err("clash");
    assert_eq!(
        err.to_string(),
        "container name a-b-c of a-b/c is already used by a/b-c"
    );
    assert_eq!(r.get_service("a-b").expect("get"), None, "nothing written");
}

#[test]
fn remove_service_cascades_but_keeps_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = open(dir.path());
    let s = service("app", &[("web", &["", "admin"])]);
    r.upsert_service(&s, &hash(&s)).expect("deploy");
    let range = PortRange::new(20000, 20010).expect("range");
    let assigned = r.allocate_service_ports(&s, range, &free).expect("ports");
    let envs: Vec<_> = assigned.iter().map(|a| a.env.as_str()).collect();
    assert_eq!(envs, vec!["PORT", "PORT_ADMIN"]);
    r.record_event(&NewEvent {
        service: "app".into(),
        component: "web".into(),
        prev_state: None,
        new_state: Some("running".into()),
        kind: EventKind::State,
        detail: String::new(),
        time: Timestamp::from_unix(T0),
    })
    .expect("event");

    let released = r.remove_service("app").expect("remove");
    assert_eq!(released, vec![20000, 20001]);
    assert_eq!(r.get_service("app").expect("get"), None);
    assert!(r.components("app").expect("components").is_empty());
    assert!(r.ports(None).expect("ports").is_empty());
    assert_eq!(r.events(&EventQuery::default()).expect("events").len(), 1);

    let err = r.remove_service("app").expect_err("gone");
    assert_eq!(err.to_string(), "service app is not in the registry");
}

#[test]
fn event_queries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = open(dir.path());
    let ev = |svc: &str, comp: &str, t: i64, kind: EventKind| NewEvent {
        service: svc.into(),
        component: comp.into(),
        prev_state: Some("running".into()),
        new_state: Some("exited".into()),
        kind,
        detail: format!("at {t}"),
        time: Timestamp::from_unix(t),
    };
    r.record_events(&[
        ev("a", "web", 10, EventKind::State),
        ev("a", "db", 20, EventKind::Drift),
        ev("b", "web", 30, EventKind::Flapping),
        ev("a", "web", 40, EventKind::Restart),
        ev("a", "web", 50, EventKind::Other("deploy".into())),
    ])
    .expect("record");

    // (query, expected details, oldest first)
    let q =
        |service: Option<&str>, component: Option<&str>, since: Option<i64>, limit| EventQuery {
            service: service.map(Into::into),
            component: component.map(Into::into),
            since: since.map(Timestamp::from_unix),
            limit,
        };
    let cases = [
        (q(None, None, None, None), vec![10, 20, 30, 40, 50]),
        (q(Some("a"), None, None, None), vec![10, 20, 40, 50]),
        (q(Some("a"), Some("web"), None, None), vec![10, 40, 50]),
        (q(Some("a"), Some("web"), Some(40), None), vec![40, 50]),
        (q(None, None, None, Some(2)), vec![40, 50]),
        (q(Some("a"), None, Some(15), Some(2)), vec![40, 50]),
        (q(Some("c"), None, None, None), vec![]),
    ];
    for (query, want) in cases {
        let got: Vec<i64> = r
            .events(&query)
            .expect("query")
            .iter()
            .map(|e| e.time.as_unix())
            .collect();
        assert_eq!(got, want, "{query:?}");
    }
    let last = r.events(&q(None, None, None, Some(1))).expect("last");
    assert_eq!(last[0].kind, EventKind::Other("deploy".into()));
    assert_eq!(last[0].detail, "at 50");

    assert_eq!(r.prune_events(Timestamp::from_unix(30)).expect("prune"), 2);
    assert_eq!(r.events(&EventQuery::default()).expect("all").len(), 3);
}

#[test]
fn alert_cooldowns_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut r = open(dir.path());
        r.mark_alert_sent("drift:a/web", Timestamp::from_unix(100))
            .expect("mark");
        r.mark_alert_sent("drift:a/web", Timestamp::from_unix(200))
            .expect("mark again");
        r.mark_alert_sent("flapping:a/web", Timestamp::from_unix(150))
            .expect("mark");
    }
    let r = open(dir.path());
    let sent = r.alerts_sent().expect("sent");
    assert_eq!(sent.get("drift:a/web"), Some(&Timestamp::from_unix(200)));
    assert_eq!(sent.get("flapping:a/web"), Some(&Timestamp::from_unix(150)));
    assert_eq!(sent.len(), 2);
}

#[test]
fn corrupt_rows_are_errors_not_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = open(dir.path());
    let s = service("app", &[("web", &[])]);
    r.upsert_service(&s, &hash(&s)).expect("deploy");
    drop(r);
    let conn = rusqlite::Connection::open(dir.path().join("agent.db")).expect("raw");
    conn.execute("UPDATE services SET spec = '{not json'", [])
        .expect("corrupt");
    drop(conn);
    let r = open(dir.path());
    let err = r.get_service("app").expect_err("corrupt");
    assert!(
        err.to_string()
            .starts_with("corrupt registry row (service app): spec JSON"),
        "{err}"
    );
    assert!(r.list_services().is_err());
}

#[test]
fn events_are_pruned_by_age_then_by_count_newest_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut r = open(dir.path());
    let ev = |t: i64, n: u32| NewEvent {
        service: "a".into(),
        component: "web".into(),
        prev_state: None,
        new_state: None,
        kind: EventKind::Other("deploy".into()),
        detail: format!("{t}/{n}"),
        time: Timestamp::from_unix(t),
    };
    // Three at 10, one at 20, three at 30 (same time: the later id is newer).
    r.record_events(&[
        ev(10, 1),
        ev(10, 2),
        ev(10, 3),
        ev(20, 1),
        ev(30, 1),
        ev(30, 2),
        ev(30, 3),
    ])
    .expect("record");
    let details = |r: &Registry| -> Vec<String> {
        r.events(&EventQuery::default())
            .expect("events")
            .into_iter()
            .map(|e| e.detail)
            .collect()
    };
    let pruned = r
        .prune_events_to(Timestamp::from_unix(15), 100)
        .expect("prune by age");
    assert_eq!(
        pruned,
        PrunedEvents {
            by_age: 3,
            by_count: 0
        }
    );
    let pruned = r
        .prune_events_to(Timestamp::from_unix(0), 2)
        .expect("prune by count");
    assert_eq!(
        pruned,
        PrunedEvents {
            by_age: 0,
            by_count: 2
        }
    );
    assert_eq!(details(&r), vec!["30/2", "30/3"]);
    // Within both limits: nothing to do.
    assert_eq!(
        r.prune_events_to(Timestamp::from_unix(0), 2)
            .expect("prune"),
        PrunedEvents::default()
    );
}
