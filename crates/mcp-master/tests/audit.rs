//! `ListAudit` over real TLS on 127.0.0.1 (the real `AuthLayer`, JWT
//! tokens, the database audit writer): operators read who called what, by
//! time and caller; the master's identity and agents may not, and their
//! attempts are audited too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::{reg, start};
use mcp_proto::pb;
use mcp_security::clock::Clock;
use mcp_security::identity::AccountType;
use mcp_security::registration::RateLimits;
use tonic::Code;

fn query(since: &str, caller: &str, limit: u32) -> pb::ListAuditRequest {
    pb::ListAuditRequest {
        since: since.to_string(),
        caller: caller.to_string(),
        limit,
    }
}

fn calls(rows: &[pb::AuditRow]) -> Vec<(String, String, String)> {
    rows.iter()
        .map(|a| {
            let method = a.method.rsplit('/').next().unwrap_or_default().to_string();
            (a.caller.clone(), method, a.outcome.clone())
        })
        .collect()
}

fn owned(v: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    v.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

#[tokio::test]
async fn operators_list_audited_calls_by_time_and_caller() {
    let m = start(&["agent-vega"], 16, RateLimits::new()).await;
    let mut alice = m.client("alice", AccountType::Human).await;
    let mut bob = m.client("bob", AccountType::Human).await;
    let mut vega = m.agent_client("vega", &["vega", "10.0.0.2"]).await;
    alice.list_nodes(pb::ListNodesRequest {}).await.unwrap();
    vega.register(reg("vega", "https://10.0.0.2:9444"))
        .await
        .unwrap();
    bob.list_nodes(pb::ListNodesRequest {}).await.unwrap();
    let e = bob
        .migrate(pb::MigrateRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    wait_for_rows(&m, 4).await;

    let rows = alice
        .list_audit(query("", "", 0))
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(
        calls(&rows),
        owned(&[
            ("alice", "ListNodes", "Ok"),
            ("agent-vega", "Register", "Ok"),
            ("bob", "ListNodes", "Ok"),
            ("bob", "Migrate", "InvalidArgument"),
        ])
    );
    let r = &rows[1];
    assert_eq!(r.method, "/mcp.v1.McpMasterService/Register");
    assert_eq!(r.class, "agent(vega)");
    assert_eq!(r.target, "node=vega");
    assert_eq!(rows[0].class, "operator");
    assert_eq!(rows[0].target, "");
    // The master's clock, in RFC 3339 with milliseconds.
    let t = humantime::parse_rfc3339(&r.time).unwrap();
    let skew = m
        .clock
        .now()
        .duration_since(t)
        .unwrap_or_else(|e| e.duration());
    assert!(skew < Duration::from_secs(1), "{} vs the clock", r.time);
    assert!(r.time.contains('.') && r.time.ends_with('Z'), "{}", r.time);

    // By caller (exact identity name), and the newest N.
    let bobs = alice
        .list_audit(query("", "bob", 0))
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(
        calls(&bobs),
        owned(&[
            ("bob", "ListNodes", "Ok"),
            ("bob", "Migrate", "InvalidArgument")
        ])
    );
    // A call's audit row is sent as its response starts, so the client can
    // see the answer a moment before the row reaches the writer: wait for
    // alice's two ListAudit rows (6 in all) before asking for the newest.
    wait_for_rows(&m, 6).await;
    let newest = bob
        .list_audit(query("", "", 2))
        .await
        .unwrap()
        .into_inner()
        .rows;
    m.audit.flush().await;
    // Alice's two ListAudit calls came before it, and were audited.
    assert_eq!(
        calls(&newest),
        owned(&[("alice", "ListAudit", "Ok"), ("alice", "ListAudit", "Ok")])
    );

    // Since: an hour later only what happened after the bound.
    m.clock.advance(Duration::from_secs(3600));
    bob.list_nodes(pb::ListNodesRequest {}).await.unwrap();
    // Bob's ListAudit and this ListNodes: 8 rows.
    wait_for_rows(&m, 8).await;
    let since = humantime::format_rfc3339_seconds(m.clock.now() - Duration::from_secs(60));
    let recent = alice
        .list_audit(query(&since.to_string(), "", 0))
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(calls(&recent), owned(&[("bob", "ListNodes", "Ok")]));
    let e = alice
        .list_audit(query("yesterday", "", 0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("since") && e.message().contains("yesterday"));
}

#[tokio::test]
async fn agents_and_the_master_may_not_read_the_audit_and_are_audited_trying() {
    let m = start(&["agent-vega"], 16, RateLimits::new()).await;
    let mut vega = m.agent_client("vega", &["vega", "10.0.0.2"]).await;
    let e = vega.list_audit(query("", "", 0)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let mut master = m.client("mcp-master", AccountType::System).await;
    let e = master.list_audit(query("", "", 0)).await.unwrap_err();
    // Refused whether or not master tokens must come with the master's
    // certificate (this client presents none).
    assert!(
        matches!(e.code(), Code::PermissionDenied | Code::Unauthenticated),
        "{e:?}"
    );
    let mut other = m.client("backup-bot", AccountType::System).await;
    let e = other.list_audit(query("", "", 0)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    m.audit.flush().await;

    let mut alice = m.client("alice", AccountType::Human).await;
    let rows = alice
        .list_audit(query("", "agent-vega", 0))
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(
        calls(&rows),
        owned(&[("agent-vega", "ListAudit", "PermissionDenied")])
    );
    assert_eq!(rows[0].target, "", "refused before the handler ran");
    let rows = alice
        .list_audit(query("", "backup-bot", 0))
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].class, "unknown-system");
}

#[tokio::test]
async fn the_limit_is_capped_and_the_default_is_a_hundred() {
    let m = start(&[], 16, RateLimits::new()).await;
    let now = SystemTime::now();
    m.state
        .write(|w| {
            for i in 0..(mcp_master::server::MAX_AUDIT_LIMIT + 5) {
                w.audit(&mcp_master::state::AuditEntry {
                    time: now,
                    method: "/mcp.v1.McpMasterService/Status".into(),
                    caller: "carol".into(),
                    class: "operator".into(),
                    target: format!("n={i}"),
                    outcome: "Ok".into(),
                    duration_ms: 1,
                })?;
            }
            Ok(())
        })
        .unwrap();
    let alice = m.client("alice", AccountType::Human).await;
    let all = |limit| {
        let mut c = alice.clone();
        async move {
            c.list_audit(query("", "carol", limit))
                .await
                .unwrap()
                .into_inner()
                .rows
        }
    };
    let d = all(0).await;
    assert_eq!(d.len(), mcp_master::server::DEFAULT_AUDIT_LIMIT as usize);
    let max = mcp_master::server::MAX_AUDIT_LIMIT;
    assert_eq!(d.last().unwrap().target, format!("n={}", max + 4));
    let capped = all(u32::MAX).await;
    assert_eq!(capped.len(), max as usize);
    assert_eq!(capped[0].target, "n=5");
}

/// Waits (up to 30 s) until the audit table holds at least `n` rows.
async fn wait_for_rows(m: &common::Master, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        m.audit.flush().await;
        let count = m.state.read(|r| r.audit_count()).unwrap();
        if count >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count} audit rows, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
