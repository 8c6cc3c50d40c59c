//! The failed-authentication burst, alone in its own test binary: it counts
//! log lines, and tracing's per-callsite caching is shared by every thread
//! of a process, so other tests logging concurrently would make the count
//! (and the capture) unreliable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fake_master::{fixture, list_nodes, ServeOpts};
use mcp_security::abuse::FailureLimits;
use mcp_security::identity::AccountType::Human;
use mcp_security::jwt::Secret;
use mcp_security::tls::ClientAuth;
use tonic::Code;

/// Log output captured for one test (current-thread runtime: the server's
/// tasks run on the test's thread, under its default subscriber).
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// 10,000 refused calls in a burst from one address (bad tokens and guest
/// denials): after the limit they are `ResourceExhausted`, the log has a
/// bounded number of lines and the audit a bounded number of rows, and an
/// operator calling from the same address is answered promptly throughout.
#[tokio::test]
async fn a_burst_of_failed_authentications_is_limited_and_summarised() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let f = fixture();
    let (sc, sk) = f.pki.leaf("server", &["127.0.0.1"], false);
    let limits = FailureLimits {
        max_failures: 20,
        window: Duration::from_secs(600),
        log_interval: Duration::from_secs(600),
        max_peers: 64,
    };
    let addr = f
        .serve_opts(
            (&sc, &sk),
            ClientAuth::None,
            ServeOpts {
                failure_limits: Some(limits),
                ..Default::default()
            },
        )
        .await;
    let other = common::keys();
    let hour = Duration::from_secs(3600);
    let forged = Secret::new(common::token(
        &other.signing,
        "alice",
        Human,
        &[],
        hour,
        &f.clock,
    ));
    let guest = Secret::new(common::token(
        &f.keys.signing,
        "visitor",
        Human,
        &["Guest"],
        hour,
        &f.clock,
    ));
    let alice = f.token("alice", Human);
    let mut attackers = Vec::new();
    for i in 0..16 {
        let tok = if i % 4 == 0 { &guest } else { &forged };
        attackers.push(f.client(addr, &f.pki.ca_path, None, tok).await.unwrap());
    }
    let mut operator = f.client(addr, &f.pki.ca_path, None, &alice).await.unwrap();

    // One forged call first, so the log surely has an unauthenticated line.
    let first = list_nodes(&mut attackers[1]).await.unwrap_err();
    assert_eq!(first.code(), Code::Unauthenticated);
    assert_eq!(first.message(), "unauthenticated");
    const BURST: usize = 10_000;
    let per_task = (BURST - 1) / attackers.len();
    let extra = BURST - 1 - per_task * attackers.len();
    let mut tasks = Vec::new();
    for (i, mut c) in attackers.into_iter().enumerate() {
        let n = per_task + usize::from(i < extra);
        tasks.push(tokio::spawn(async move {
            let mut codes = std::collections::BTreeMap::<String, usize>::new();
            for _ in 0..n {
                let code = match list_nodes(&mut c).await {
                    Ok(_) => "Ok".to_string(),
                    Err(s) => format!("{:?}", s.code()),
                };
                *codes.entry(code).or_default() += 1;
            }
            codes
        }));
    }
    // The operator, during the burst.
    let mut slowest = Duration::ZERO;
    let mut answered = 0;
    while !tasks.iter().all(|t| t.is_finished()) {
        let start = std::time::Instant::now();
        assert_eq!(list_nodes(&mut operator).await.unwrap(), "alice");
        slowest = slowest.max(start.elapsed());
        answered += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    codes.insert("Unauthenticated".to_string(), 1);
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *codes.entry(k).or_default() += v;
        }
    }
    assert_eq!(codes.values().sum::<usize>(), BURST, "{codes:?}");
    assert!(!codes.contains_key("Ok"), "{codes:?}");
    let normal = codes.get("Unauthenticated").copied().unwrap_or(0)
        + codes.get("PermissionDenied").copied().unwrap_or(0);
    assert_eq!(normal, 20, "only the first 20 answered normally: {codes:?}");
    assert_eq!(codes.get("ResourceExhausted"), Some(&(BURST - 20)));
    assert!(answered >= 1, "the operator was never answered");
    eprintln!("operator: {answered} calls during the burst, slowest {slowest:?}");
    assert!(
        slowest < Duration::from_secs(2),
        "an operator call took {slowest:?} during the burst"
    );
    // Still answered after the burst, from the same address.
    assert_eq!(list_nodes(&mut operator).await.unwrap(), "alice");

    let lines = logs.lines();
    let refused = lines
        .iter()
        .filter(|l| l.contains("unauthenticated rpc refused"))
        .count();
    let summaries: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("over the per-peer limit"))
        .collect();
    assert!(refused <= 20, "{refused} per-call lines");
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    assert!(summaries[0].contains("suppressed=1"), "{}", summaries[0]);
    assert!(
        lines.len() < 20 + 20 + answered + 10,
        "{} log lines for {BURST} refused calls",
        lines.len()
    );
    // The reason is in the log, never in the answer.
    assert!(lines
        .iter()
        .any(|l| l.contains("unauthenticated rpc refused") && l.contains("bad signature")));
    let rows = f.audit.events();
    let guest_rows = rows.iter().filter(|e| e.caller == "visitor").count();
    assert!(
        guest_rows <= 20,
        "{guest_rows} audit rows for guest denials"
    );
    assert!(rows
        .iter()
        .all(|e| e.caller != "visitor" || e.outcome == "PermissionDenied"));
}
