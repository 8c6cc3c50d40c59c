#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use super::*;

fn alert(node: &str) -> Alert {
    Alert {
        key: "degraded:shop/api".into(),
        service: "shop; rm -rf /".into(),
        component: "api".into(),
        event: "degraded".into(),
        detail: "it's \"down\" $(id)".into(),
        node: node.into(),
    }
}

/// The argv and the MCP_* values arrive literally (no shell in between).
#[tokio::test]
async fn argv_and_environment_arrive_literally() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let script = format!(
        "printf '%s\n' \"$0\" \"$1\" \"$MCP_SERVICE\" \"$MCP_COMPONENT\" \"$MCP_NODE\" \"$MCP_EVENT\" \"$MCP_DETAIL\" > {}",
        out.display()
    );
    let a = Alerter::new(
        vec![
            "sh".into(),
            "-c".into(),
            script,
            "first arg".into(),
            "$HOME".into(),
        ],
        "m1",
    )
    .unwrap();
    a.send(&alert("")).await.unwrap();
    let got = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        got,
        "first arg\n$HOME\nshop; rm -rf /\napi\nm1\ndegraded\nit's \"down\" $(id)\n"
    );
    a.send(&alert("w2")).await.unwrap();
    assert!(std::fs::read_to_string(&out).unwrap().contains("\nw2\n"));
}

#[tokio::test]
async fn a_failing_command_is_an_error_with_its_stderr() {
    let a = Alerter::new(
        vec!["sh".into(), "-c".into(), "echo nope >&2; exit 3".into()],
        "m1",
    )
    .unwrap();
    let e = a.send(&alert("")).await.unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    let a = Alerter::new(vec!["/nonexistent/alert".into()], "m1").unwrap();
    assert!(matches!(
        a.send(&alert("")).await,
        Err(AlertError::Spawn { .. })
    ));
    let a = Alerter::new(vec!["sleep".into(), "5".into()], "m1")
        .unwrap()
        .with_timeout(Duration::from_millis(100));
    assert!(matches!(
        a.send(&alert("")).await,
        Err(AlertError::Timeout { .. })
    ));
    assert!(Alerter::new(vec![], "m1").is_none());
}

#[test]
fn cooldown_holds_a_key_back_for_its_period() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let mut c = Cooldown::new(Duration::from_secs(60));
    assert!(c.due("k", t0));
    c.sent("k", t0);
    assert!(!c.due("k", t0 + Duration::from_secs(59)));
    assert!(c.due("other", t0));
    assert!(c.due("k", t0 + Duration::from_secs(60)));
}
