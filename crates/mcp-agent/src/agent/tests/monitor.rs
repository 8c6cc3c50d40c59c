//! The monitor round through the agent: crashes, alerts, busy services.

use super::*;

#[tokio::test]
async fn monitor_records_a_crash_and_alerts_once() {
    let h = Harness::new();
    let log = h.dir.path().join("alerts.log");
    let script = format!(
        "echo \"$MCP_EVENT $MCP_SERVICE/$MCP_COMPONENT $MCP_NODE\" >> {}",
        log.display()
    );
    let alerter = Alerter::new(vec!["sh".into(), "-c".into(), script], "orion");
    let h = Harness {
        agent: h.agent.with_alerter(alerter),
        ..h
    };
    h.agent.deploy(app(V1, true), None).await.expect("deploy");
    let first = h.agent.monitor_once().await.expect("monitor");
    assert!(
        first.events.is_empty(),
        "deploy recorded the state: {first:?}"
    );
    assert!(first.drift.is_empty());

    assert!(h.fake.crash("app-web", 137));
    h.advance(10);
    let r = h.agent.monitor_once().await.expect("monitor");
    let kinds: Vec<&str> = r.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, vec!["state", "drift"]);
    assert_eq!(r.events[0].prev_state.as_deref(), Some("running"));
    assert_eq!(r.events[0].new_state.as_deref(), Some("exited"));
    assert_eq!(r.alerts_sent, vec!["drift:app/web"]);
    assert_eq!(
        std::fs::read_to_string(&log).expect("alert ran"),
        "drift app/web orion\n"
    );

    // Still down: reported, not re-alerted within the cooldown.
    h.advance(10);
    let r = h.agent.monitor_once().await.expect("monitor");
    assert!(r.events.is_empty());
    assert_eq!(r.drift.len(), 1);
    assert_eq!(r.suppressed, vec!["drift:app/web"]);
    assert_eq!(
        std::fs::read_to_string(&log).expect("log").lines().count(),
        1
    );
    assert_eq!(
        h.agent.last_monitor().map(|m| m.drift.len()),
        Some(1),
        "kept for status"
    );

    // No restarts from the monitor.
    assert_eq!(h.info("app-web").state, ContainerState::Exited);

    // Back up by hand, down again: flapping (3 transitions in the window).
    h.agent.start("app", Some("web")).await.expect("start");
    assert!(h.fake.crash("app-web", 137));
    h.advance(10);
    let r = h.agent.monitor_once().await.expect("monitor");
    assert!(r.events.iter().any(|e| e.kind == EventKind::State));
    h.agent.start("app", Some("web")).await.expect("start");
    assert!(h.fake.crash("app-web", 137));
    h.advance(10);
    let r = h.agent.monitor_once().await.expect("monitor");
    assert_eq!(r.flapping.len(), 1, "{r:?}");
    assert!(
        r.alerts_sent.contains(&"flapping:app/web".to_string()),
        "{r:?}"
    );
    let events = h
        .agent
        .events(EventQuery {
            service: Some("app".into()),
            component: Some("web".into()),
            ..EventQuery::default()
        })
        .await
        .expect("events");
    assert!(events.iter().any(|e| e.kind == EventKind::Flapping));
}

#[tokio::test]
async fn monitor_leaves_busy_services_alone() {
    let h = Harness::new();
    h.agent.deploy(app(V1, true), None).await.expect("deploy");
    assert!(h.fake.crash("app-web", 1));
    let guard = h.agent.locks.lock("app").await;
    let r = h.agent.monitor_once().await.expect("monitor");
    assert!(r.events.is_empty());
    assert_eq!(r.skipped_services, vec!["app"]);
    drop(guard);
    let r = h.agent.monitor_once().await.expect("monitor");
    assert_eq!(r.drift.len(), 1);
}
