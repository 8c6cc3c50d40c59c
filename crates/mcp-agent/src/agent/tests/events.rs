//! Event rows that say what happened, and the retention limits applied
//! with an injected clock.

use super::*;
use std::time::Duration;

use crate::config::EventsConfig;
use crate::registry::{Event, PrunedEvents};

const DAY: i64 = 24 * 3600;

fn rows(events: &[Event]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e.component.clone(),
                e.kind.as_str().to_string(),
                e.detail.clone(),
            )
        })
        .collect()
}

fn row(component: &str, kind: &str, detail: &str) -> (String, String, String) {
    (component.to_string(), kind.to_string(), detail.to_string())
}

#[tokio::test]
async fn operation_events_say_what_happened() {
    let h = Harness::new();
    h.agent.deploy(app(V1, true), None).await.expect("deploy");
    h.agent.deploy(app(V2, true), None).await.expect("redeploy");
    h.agent.stop("app", Some("web")).await.expect("stop");
    h.agent.start("app", Some("web")).await.expect("start");
    h.agent.restart("app", Some("db")).await.expect("restart");
    h.agent.undeploy("app", false).await.expect("undeploy");
    let events = h.agent.events(EventQuery::default()).await.expect("events");
    assert_eq!(
        rows(&events),
        vec![
            row(
                "web",
                "deploy",
                &format!("deployed {V1} (v1): created container app-web")
            ),
            row(
                "db",
                "deploy",
                &format!("deployed {DB} (v7): created container app-db")
            ),
            row(
                "web",
                "deploy",
                &format!("deployed {V2} (v2): recreated container app-web")
            ),
            row("web", "stop", "stopped by request"),
            row("web", "start", "started by request"),
            row("db", "restart", "restarted by request"),
            row("", "undeploy", "undeployed: removed 2 container(s)"),
        ]
    );
}

#[tokio::test]
async fn events_are_pruned_by_age_and_by_count_at_the_agent_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeRuntime::with_images([V1, V2, DB]);
    let h = Harness::with(fake, dir, |s| {
        s.events = EventsConfig {
            max_age: Duration::from_secs(2 * 86_400),
            max_rows: 5,
        };
    });
    h.agent.deploy(app(V1, true), None).await.expect("deploy"); // 2 events at T0
    h.advance(DAY);
    h.agent.stop("app", None).await.expect("stop"); // 2 events at T0 + 1 day

    // Nothing is old enough or too many yet.
    let r = h.agent.monitor_once().await.expect("monitor");
    assert_eq!(r.pruned, PrunedEvents::default());
    assert_eq!(
        h.agent
            .events(EventQuery::default())
            .await
            .expect("events")
            .len(),
        4
    );

    // T0 + 2 days + 1 s: the deploy events are past max_age, the stop
    // events are not.
    h.advance(DAY + 1);
    let r = h.agent.monitor_once().await.expect("monitor");
    assert_eq!(
        r.pruned,
        PrunedEvents {
            by_age: 2,
            by_count: 0
        }
    );
    let kinds: Vec<String> = h
        .agent
        .events(EventQuery::default())
        .await
        .expect("events")
        .iter()
        .map(|e| e.kind.as_str().to_string())
        .collect();
    assert_eq!(kinds, vec!["stop", "stop"]);

    // 2 + 6 events: over max_rows = 5, the oldest three go.
    for _ in 0..3 {
        h.advance(1);
        h.agent.restart("app", None).await.expect("restart");
    }
    let pruned = h.agent.prune_events().await.expect("prune");
    assert_eq!(
        pruned,
        PrunedEvents {
            by_age: 0,
            by_count: 3
        }
    );
    let left = h.agent.events(EventQuery::default()).await.expect("events");
    assert_eq!(left.len(), 5);
    assert!(
        left.iter().all(|e| e.kind.as_str() == "restart"),
        "{left:?}"
    );
    // The newest survive: the last restart's two events are the last rows.
    let last = left.iter().map(|e| e.time.as_unix()).max().expect("rows");
    assert_eq!(last, T0 + 2 * DAY + 1 + 3);
    assert_eq!(left.iter().filter(|e| e.time.as_unix() == last).count(), 2);
}
