#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use mcp_security::audit::{AuditEvent, AuditSink};

use super::*;
use crate::state::State;

fn open() -> (tempfile::TempDir, Arc<State>) {
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(State::open(&dir.path().join("master.db")).unwrap());
    (dir, state)
}

fn event(i: usize) -> AuditEvent {
    AuditEvent {
        time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        method: format!("/mcp.v1.McpMasterService/Call{i}"),
        caller: "alice".to_string(),
        class: "operator".to_string(),
        target: Some(format!("service=s{i}")),
        outcome: "Ok".to_string(),
        duration: Duration::from_millis(3),
    }
}

fn count(state: &State) -> usize {
    state.read(|r| r.audit_recent(u32::MAX)).unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_from_many_tasks_are_all_present_after_shutdown() {
    let (_dir, state) = open();
    let log = AuditLog::start(state.clone().into(), 8);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..16 {
        let sink = log.sink();
        tasks.spawn(async move {
            for i in 0..50 {
                sink.record(event(t * 1000 + i)).await;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let stats = log.shutdown().await;
    assert_eq!((stats.rows, stats.failed), (800, 0));
    assert_eq!(count(&state), 800);
}

#[tokio::test]
async fn concurrent_rows_are_written_in_batches_and_all_present_after_shutdown() {
    let (_dir, state) = open();
    let log = AuditLog::start(state.clone().into(), DEFAULT_CAPACITY);
    const N: usize = 2000;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..20 {
        let sink = log.sink();
        tasks.spawn(async move {
            for i in 0..N / 20 {
                sink.record(event(t * 1000 + i)).await;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    // No flush: shutdown alone must write every queued row.
    let stats = log.shutdown().await;
    assert_eq!(stats.rows, N as u64);
    assert_eq!(stats.failed, 0);
    assert!(
        stats.batches <= N as u64 / 10,
        "rows were not batched: {} transactions for {N} rows",
        stats.batches
    );
    assert_eq!(count(&state), N);
    // The stored form of an event.
    let rows = state.read(|r| r.audit_recent(1)).unwrap();
    assert_eq!(rows[0].caller, "alice (operator)");
    assert!(rows[0].target.starts_with("service=s"));
    assert_eq!(rows[0].outcome, "Ok");
    assert_eq!(rows[0].duration_ms, 3);
}

#[tokio::test]
async fn a_channel_of_one_applies_back_pressure_and_loses_nothing() {
    let (_dir, state) = open();
    let log = AuditLog::start(state.clone().into(), 1);
    let sink = log.sink();
    // One sender far ahead of the writer: every send waits for room.
    let sender = tokio::spawn(async move {
        for i in 0..300 {
            sink.record(event(i)).await;
        }
    });
    sender.await.unwrap();
    log.flush().await;
    assert_eq!(log.stats().rows, 300);
    assert_eq!(count(&state), 300);
    let stats = log.shutdown().await;
    assert_eq!((stats.rows, stats.failed), (300, 0));
}

#[tokio::test]
async fn flush_waits_for_the_rows_sent_before_it() {
    let (_dir, state) = open();
    let log = AuditLog::start(state.clone().into(), 16);
    for i in 0..5 {
        log.record(entry_of(&event(i))).await;
    }
    log.flush().await;
    assert_eq!(count(&state), 5);
    // Rows sent after shutdown are not written (and do not hang).
    let sink = log.sink();
    log.shutdown().await;
    sink.record(event(99)).await;
    assert_eq!(count(&state), 5);
}

#[tokio::test]
async fn a_failed_batch_is_counted_and_the_writer_goes_on() {
    let (_dir, state) = open();
    state
        .write(|w| {
            w.conn
                .execute_batch("CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'refused'); END;")
                .map_err(crate::state::sql("test trigger"))
        })
        .unwrap();
    let log = AuditLog::start(state.clone().into(), 16);
    log.record(entry_of(&event(1))).await;
    log.flush().await;
    assert_eq!(log.stats().failed, 1);
    state
        .write(|w| {
            w.conn
                .execute_batch("DROP TRIGGER no_audit;")
                .map_err(crate::state::sql("test trigger"))
        })
        .unwrap();
    log.record(entry_of(&event(2))).await;
    let stats = log.shutdown().await;
    assert_eq!((stats.rows, stats.failed), (1, 1));
    assert_eq!(count(&state), 1);
}
