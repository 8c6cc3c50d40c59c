#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use mcp_security::clock::{Clock, ManualClock};

use super::*;

/// A recorder: each run appends its MCP_* values to `log`; it fails while
/// `fail` exists.
fn recorder(dir: &std::path::Path) -> Alerter {
    let script = format!(
        "[ -e {fail} ] && exit 1; printf '%s|%s|%s|%s|%s\\n' \"$MCP_EVENT\" \"$MCP_SERVICE\" \"$MCP_NODE\" \"$MCP_DETAIL\" \"$0\" >> {log}",
        fail = dir.join("fail").display(),
        log = dir.join("log").display()
    );
    Alerter::new(
        vec!["sh".into(), "-c".into(), script, "literal $1".into()],
        "master",
    )
    .unwrap()
}

fn lines(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn sends_once_per_cooldown_and_retries_a_failing_command() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at_unix(1_735_689_600);
    let alerts = Alerts::new(
        Some(recorder(dir.path())),
        Duration::from_secs(600),
        Arc::new(clock.clone()),
    )
    .with_retry_delays(vec![Duration::from_millis(10), Duration::from_millis(10)]);
    let a = alert(
        "node_unhealthy",
        "node:w2".into(),
        "",
        "w2",
        "missed heartbeats; $(id)".into(),
    );
    assert_eq!(alerts.send(&a).await.unwrap(), Sent::Sent);
    assert_eq!(
        lines(dir.path()),
        ["node_unhealthy||w2|missed heartbeats; $(id)|literal $1"]
    );
    // Within the cooldown: held back.
    assert_eq!(alerts.send(&a).await.unwrap(), Sent::HeldBack);
    assert_eq!(lines(dir.path()).len(), 1);
    // A failing command: every attempt fails, not marked sent.
    clock.advance(Duration::from_secs(601));
    std::fs::write(dir.path().join("fail"), "").unwrap();
    assert!(alerts.send(&a).await.is_err());
    assert_eq!(lines(dir.path()).len(), 1);
    // Fixed: the next occurrence goes out (it was not marked sent).
    std::fs::remove_file(dir.path().join("fail")).unwrap();
    assert_eq!(alerts.send(&a).await.unwrap(), Sent::Sent);
    assert_eq!(lines(dir.path()).len(), 2);
    let _ = clock.now();
}

#[tokio::test]
async fn without_a_command_alerts_are_logged_only() {
    let clock = ManualClock::at_unix(1_735_689_600);
    let alerts = Alerts::logged_only(Arc::new(clock));
    assert!(!alerts.configured());
    let a = alert(
        "plan_refused",
        "plan_refused".into(),
        "",
        "",
        "too many".into(),
    );
    assert_eq!(alerts.send(&a).await.unwrap(), Sent::NotConfigured);
}
