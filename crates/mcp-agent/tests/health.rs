//! Health-gated deploys against real podman: the test web image serves
//! `/version` ("v1" / "v2") over HTTP on `$PORT`; a check of a path it does
//! not serve (404) is a version that never turns healthy. Shared isolated
//! storage (`mcp_runtime::testing::podman`); skips loudly without podman
//! unless `MCP_REQUIRE_PODMAN=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use mcp_agent::health::HealthState;
use mcp_agent::{Agent, AgentError, AgentSettings, EventQuery, PortRange, Registry};
use mcp_runtime::testing::podman::{remove_quietly, TestPodman, WEB_V1, WEB_V2};
use mcp_runtime::Podman;
use mcp_spec::{LoadOptions, ServiceSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn podman() -> Option<&'static TestPodman> {
    mcp_runtime::testing::podman::shared(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("mcp-agent-podman"),
    )
}

/// One component `web` from `image` with an http check of `path`.
fn web(name: &str, image: &str, path: &str, extra: &str) -> ServiceSpec {
    let toml = format!(
        r#"
name = "{name}"
{extra}
[[components]]
name = "web"
image = "{image}"
[components.health]
kind = "http"
path = "{path}"
interval = "1s"
timeout = "1s"
[[components.routes]]
port = 8080
"#
    );
    mcp_spec::parse_service(
        &format!("{name}.toml"),
        name,
        &toml,
        &LoadOptions::default(),
    )
    .unwrap_or_else(|d| panic!("test spec {name}: {d:?}"))
}

fn new_agent(p: &TestPodman, dir: &Path, node: &str, range: (u16, u16)) -> Agent<Podman> {
    let registry = Registry::open(&dir.join("agent.db")).unwrap();
    let mut settings = AgentSettings::new(node);
    settings.port_range = PortRange::new(range.0, range.1).unwrap();
    settings.files_root = dir.join("srv");
    settings.stop_timeout = Duration::from_secs(1);
    settings.health.deploy_timeout = Duration::from_secs(4);
    settings.health.start_interval = Duration::from_millis(200);
    Agent::new(p.runtime(), registry, settings)
}

async fn get(port: u16, path: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

#[tokio::test]
async fn a_version_that_fails_its_check_is_rolled_back_to_the_healthy_one() {
    let Some(p) = podman() else { return };
    let rt = p.runtime();
    let svc = "hlthroll";
    remove_quietly(&rt, &[svc]).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = new_agent(p, dir.path(), "hlth1", (33400, 33449));

    // v1: healthy, and the deploy says so.
    let v1 = web(svc, WEB_V1, "/version", "");
    let out = agent.deploy(v1.clone(), None).await.expect("v1 deploys");
    let check = out.steps.iter().find(|s| s.step == "health check");
    assert!(check.is_some(), "{:?}", out.steps);
    let c = &out.status.components[0];
    assert_eq!(c.health, Some(HealthState::Healthy), "{c:?}");
    assert_eq!(c.health_detail, "status 200 OK: v1");
    let port = c.ports[""];

    // v2 checks a path the image does not serve: never healthy.
    let v2 = web(svc, WEB_V2, "/healthz", "");
    let err = agent.deploy(v2, None).await.expect_err("v2 must fail");
    let AgentError::Unhealthy {
        message,
        rolled_back_to,
    } = &err
    else {
        panic!("not an Unhealthy error: {err:?}");
    };
    assert_eq!(
        rolled_back_to.as_deref(),
        Some(mcp_spec::spec_hash(&v1).as_str())
    );
    for part in [
        "service hlthroll: v2 failed its health check (not healthy within 4s: web: http GET /healthz on 127.0.0.1:",
        "status 404 Not Found (expected 2xx)",
        "rolled back to v1 (spec ",
        "commit a fix or run `mcp rollback hlthroll`",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
    assert_eq!(
        mcp_agent::server::status(&err).code(),
        tonic::Code::FailedPrecondition
    );

    // v1 runs again, on the same port, recorded as the deployed spec.
    assert_eq!(
        get(port, "/version").await.as_deref().map(str::trim),
        Some("v1")
    );
    let inv = agent.list_services().await.unwrap();
    let s = inv.services.iter().find(|s| s.name == svc).unwrap();
    assert_eq!(s.spec_hash, mcp_spec::spec_hash(&v1));
    assert_eq!(s.components[0].version, "v1");
    assert_eq!(s.components[0].ports[""], port);
    let events = agent
        .events(EventQuery {
            service: Some(svc.to_string()),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind.as_str() == "rollback" && e.detail.contains("rolled back to v1")),
        "{events:?}"
    );
    remove_quietly(&rt, &[svc]).await;
}

#[tokio::test]
async fn without_rollback_or_a_previous_version_the_failure_is_reported_and_left() {
    let Some(p) = podman() else { return };
    let rt = p.runtime();
    let svc = "hlthkeep";
    remove_quietly(&rt, &[svc]).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = new_agent(p, dir.path(), "hlth2", (33450, 33499));

    // A new service that never turns healthy: nothing to roll back to.
    let bad = web(svc, WEB_V1, "/healthz", "");
    let err = agent.deploy(bad, None).await.expect_err("must fail");
    assert!(
        err.to_string()
            .ends_with("; no previous version to roll back to"),
        "{err}"
    );

    // v1 healthy, then v2 bad with rollback = false: v2 is left running,
    // reported unhealthy with the probe's output.
    agent
        .deploy(web(svc, WEB_V1, "/version", "rollback = false"), None)
        .await
        .expect("v1 deploys");
    let v2 = web(svc, WEB_V2, "/healthz", "rollback = false");
    let err = agent.deploy(v2.clone(), None).await.expect_err("must fail");
    match &err {
        AgentError::Unhealthy {
            message,
            rolled_back_to: None,
        } => assert!(
            message.ends_with("; rollback = false: left as deployed"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    let st = agent.service_status(svc).await.unwrap();
    assert_eq!(st.spec_hash, mcp_spec::spec_hash(&v2));
    let c = &st.components[0];
    assert_eq!(c.version, "v2");
    assert_eq!(c.health, Some(HealthState::Unhealthy));
    assert!(c.health_detail.starts_with("status 404"), "{c:?}");
    let h = agent.health().await.unwrap();
    assert!(
        h.problems
            .iter()
            .any(|p| p.starts_with("hlthkeep/web: unhealthy: status 404")),
        "{h:?}"
    );
    remove_quietly(&rt, &[svc]).await;
}
