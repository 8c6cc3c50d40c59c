#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use mcp_proto::pb;

use super::parse_since;
use super::status::agent_service_status;

fn comp(name: &str, state: &str) -> pb::ComponentInfo {
    pb::ComponentInfo {
        name: name.to_string(),
        observed_state: state.to_string(),
        ..Default::default()
    }
}

#[test]
fn agent_status_is_derived_from_components() {
    let svc = |active, comps| pb::ServiceInfo {
        name: "s".to_string(),
        active,
        components: comps,
        ..Default::default()
    };
    let st = |s: &pb::ServiceInfo| agent_service_status(s).0;
    assert_eq!(st(&svc(true, vec![comp("a", "running")])), "running");
    assert_eq!(st(&svc(false, vec![comp("a", "stopped")])), "stopped");
    let (s, d) = agent_service_status(&svc(true, vec![comp("a", "running"), comp("b", "exited")]));
    assert_eq!((s.as_str(), d.as_str()), ("degraded", "b: exited"));
    assert_eq!(st(&svc(false, vec![comp("a", "running")])), "degraded");
}

#[test]
fn since_is_a_duration_before_now_or_an_rfc3339_time() {
    // 2026-01-01T12:00:00Z
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_268_800);
    assert_eq!(parse_since("10m", now).unwrap(), "2026-01-01T11:50:00Z");
    assert_eq!(parse_since("1h30m", now).unwrap(), "2026-01-01T10:30:00Z");
    assert_eq!(parse_since("2d", now).unwrap(), "2025-12-30T12:00:00Z");
    assert_eq!(
        parse_since("2026-01-01T08:00:00Z", now).unwrap(),
        "2026-01-01T08:00:00Z"
    );
    assert_eq!(
        parse_since("2026-01-01T08:00:00", now).unwrap(),
        "2026-01-01T08:00:00Z",
        "UTC without the Z"
    );
    for bad in ["yesterday", "", "2026-13-01T00:00:00Z", "-5m"] {
        let e = parse_since(bad, now).unwrap_err().to_string();
        assert!(e.contains("RFC 3339") && e.contains("10m"), "{bad}: {e}");
    }
}
