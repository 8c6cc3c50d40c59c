//! Logs `since` a time, and container lines capped at 64 KiB, through the
//! agent over the fake runtime.

use std::time::{Duration, SystemTime};

use mcp_runtime::{LogSource, MAX_LOG_LINE_BYTES, TRUNCATION_MARKER};

use super::*;

async fn lines(h: &Harness, opts: LogOptions) -> Vec<(String, String)> {
    h.agent
        .logs("app", Some("web"), opts)
        .await
        .expect("logs")
        .map(|i| i.map(|(c, l)| (c, l.line)))
        .collect::<Result<Vec<_>>>()
        .await
        .expect("lines")
}

#[tokio::test]
async fn logs_since_a_time_leave_out_older_lines() {
    let h = Harness::new();
    h.agent.deploy(app(V1, true), None).await.expect("deploy");
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let hour = Duration::from_secs(3600);
    assert!(h
        .fake
        .emit_log_at("app-web", LogSource::Stdout, "old", t - hour));
    assert!(h.fake.emit_log_at("app-web", LogSource::Stdout, "at t", t));
    assert!(h
        .fake
        .emit_log_at("app-web", LogSource::Stderr, "new", t + hour));
    let since = |at: SystemTime| LogOptions {
        since: Some(at),
        ..LogOptions::default()
    };
    let web = |l: &str| ("web".to_string(), l.to_string());
    assert_eq!(lines(&h, since(t)).await, vec![web("at t"), web("new")]);
    assert_eq!(lines(&h, since(t + hour)).await, vec![web("new")]);
    assert!(lines(&h, since(t + 2 * hour)).await.is_empty());
    // since, then tail.
    let opts = LogOptions {
        since: Some(t - hour),
        tail: Some(1),
        ..LogOptions::default()
    };
    assert_eq!(lines(&h, opts).await, vec![web("new")]);
}

#[tokio::test]
async fn a_log_line_over_64_kib_is_cut_and_marked() {
    let h = Harness::new();
    h.agent.deploy(app(V1, true), None).await.expect("deploy");
    let long = "z".repeat(3 * MAX_LOG_LINE_BYTES);
    assert!(h.fake.emit_log("app-web", LogSource::Stdout, long));
    assert!(h.fake.emit_log("app-web", LogSource::Stdout, "next"));
    let got = lines(&h, LogOptions::default()).await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].1,
        format!(
            "{}… [line truncated at 64 KiB]",
            "z".repeat(MAX_LOG_LINE_BYTES)
        )
    );
    assert!(got[0].1.ends_with(TRUNCATION_MARKER));
    assert_eq!(got[1].1, "next");
}

#[tokio::test]
async fn logs_merge_components() {
    let h = Harness::new();
    h.agent.deploy(app(V1, true), None).await.expect("deploy");
    assert!(h
        .fake
        .emit_log("app-web", mcp_runtime::LogSource::Stdout, "hello"));
    assert!(h
        .fake
        .emit_log("app-db", mcp_runtime::LogSource::Stderr, "ready"));
    let stream = h
        .agent
        .logs("app", None, LogOptions::default())
        .await
        .expect("logs");
    let mut lines: Vec<(String, String)> = stream
        .map(|i| i.map(|(c, l)| (c, l.line)))
        .collect::<Result<Vec<_>>>()
        .await
        .expect("lines");
    lines.sort();
    assert_eq!(
        lines,
        vec![
            ("db".into(), "ready".into()),
            ("web".into(), "hello".into())
        ]
    );
}
