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
    assert_eq!(rows[0].caller, "alice");
    assert_eq!(rows[0].class, "operator");
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

// --- retention and listing

use mcp_security::clock::ManualClock;

use crate::state::{AuditEntry, AuditQuery};

const T0: u64 = 1_735_689_600;

fn row(at: SystemTime, caller: &str, target: &str) -> AuditEntry {
    AuditEntry {
        time: at,
        method: "/mcp.v1.McpMasterService/Status".to_string(),
        caller: caller.to_string(),
        class: "operator".to_string(),
        target: target.to_string(),
        outcome: "Ok".to_string(),
        duration_ms: 1,
    }
}

fn retention(clock: &ManualClock, max_age: Duration, max_rows: u64) -> Retention {
    Retention {
        max_age,
        max_rows,
        interval: Duration::from_secs(3600),
        clock: Arc::new(clock.clone()),
    }
}

fn targets(state: &State) -> Vec<String> {
    let q = AuditQuery {
        since: None,
        caller: None,
        limit: u32::MAX,
    };
    let rows = state.read(|r| r.audit_list(&q)).unwrap();
    rows.into_iter().map(|a| a.target).collect()
}

#[tokio::test]
async fn rows_older_than_max_age_are_pruned_by_the_injected_clock() {
    let (_dir, state) = open();
    let clock = ManualClock::at_unix(T0);
    let now = clock.now();
    let hour = Duration::from_secs(3600);
    let log = AuditLog::start_with_retention(
        state.clone().into(),
        16,
        retention(&clock, hour, 1_000_000),
    );
    for i in 0..3 {
        log.record(row(now - 2 * hour, "alice", &format!("old{i}")))
            .await;
    }
    for i in 0..4 {
        let at = now - Duration::from_secs(600);
        log.record(row(at, "alice", &format!("new{i}"))).await;
    }
    let p = log.prune_now().await;
    assert_eq!(
        p,
        Pruned {
            by_age: 3,
            by_count: 0
        }
    );
    assert_eq!(targets(&state), ["new0", "new1", "new2", "new3"]);
    // Nothing more until the clock moves: the new rows are 10 minutes old.
    assert_eq!(log.prune_now().await, Pruned::default());
    clock.advance(Duration::from_secs(55 * 60));
    assert_eq!(log.prune_now().await.by_age, 4);
    assert_eq!(count(&state), 0);
    assert_eq!(log.shutdown().await.pruned, 7);
}

#[tokio::test]
async fn beyond_max_rows_the_newest_are_kept_and_a_burst_stays_bounded() {
    let (_dir, state) = open();
    let clock = ManualClock::at_unix(T0);
    let year = Duration::from_secs(365 * 24 * 3600);
    // Every batch is followed by a prune (a tenth of 5 rounds up to 1).
    let log = AuditLog::start_with_retention(state.clone().into(), 4, retention(&clock, year, 5));
    for i in 0..12 {
        log.record(row(clock.now(), "alice", &format!("s{i}")))
            .await;
    }
    log.flush().await;
    assert_eq!(targets(&state), ["s7", "s8", "s9", "s10", "s11"]);
    assert_eq!(log.stats().pruned, 7);
    log.shutdown().await;

    // 5,000 rows from many tasks against max_rows = 100: the table never
    // holds more than max_rows plus the rows written between two prunes.
    let (_dir, state) = open();
    let r = retention(&clock, 10 * year, 100);
    let between = r.rows_between_prunes();
    let slack = between + MAX_BATCH as u64;
    let log = AuditLog::start_with_retention(state.clone().into(), DEFAULT_CAPACITY, r);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..10 {
        let sink = log.sink();
        tasks.spawn(async move {
            for i in 0..500 {
                sink.record(event(t * 1000 + i)).await;
            }
        });
    }
    let watcher = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut most = 0;
            for _ in 0..200 {
                let s = state.clone();
                let n = tokio::task::spawn_blocking(move || s.read(|r| r.audit_count()))
                    .await
                    .unwrap()
                    .unwrap();
                most = most.max(n);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            most
        })
    };
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    log.flush().await;
    let most = watcher.await.unwrap();
    assert!(most <= 100 + slack, "table grew to {most} rows");
    let before = count(&state) as u64;
    assert!(before < 100 + between, "{before} rows after the burst");
    assert_eq!(log.prune_now().await.by_count, before - 100);
    assert_eq!(count(&state), 100);
    let stats = log.shutdown().await;
    assert_eq!(stats.rows, 5000);
    assert_eq!(stats.pruned, 4900);
}

#[tokio::test]
async fn the_timer_prunes_rows_written_by_anyone() {
    let (_dir, state) = open();
    let clock = ManualClock::at_unix(T0);
    let hour = Duration::from_secs(3600);
    let mut r = retention(&clock, hour, 1_000_000);
    r.interval = Duration::from_millis(20);
    let log = AuditLog::start_with_retention(state.clone().into(), 16, r);
    // Written behind the writer's back: only the timer can prune them.
    let old = clock.now() - 2 * hour;
    state.write(|w| w.audit(&row(old, "alice", "old"))).unwrap();
    state
        .write(|w| w.audit(&row(clock.now(), "alice", "new")))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while targets(&state) != ["new"] {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            targets(&state)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(log.shutdown().await.pruned, 1);
}

#[test]
fn listing_filters_by_time_and_caller_and_keeps_the_newest() {
    let (_dir, state) = open();
    let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + s);
    state
        .write(|w| {
            for (i, caller) in ["alice", "bob", "alice", "agent-w1", "alice"]
                .iter()
                .enumerate()
            {
                w.audit(&row(t(i as u64 * 10), caller, &format!("r{i}")))?;
            }
            Ok(())
        })
        .unwrap();
    let list = |since: Option<u64>, caller: Option<&str>, limit: u32| {
        let q = AuditQuery {
            since: since.map(t),
            caller: caller.map(str::to_string),
            limit,
        };
        let rows = state.read(|r| r.audit_list(&q)).unwrap();
        rows.into_iter().map(|a| a.target).collect::<Vec<_>>()
    };
    assert_eq!(list(None, None, 100), ["r0", "r1", "r2", "r3", "r4"]);
    assert_eq!(list(None, None, 2), ["r3", "r4"]);
    assert_eq!(list(Some(20), None, 100), ["r2", "r3", "r4"]);
    assert_eq!(list(None, Some("alice"), 100), ["r0", "r2", "r4"]);
    assert_eq!(list(Some(1), Some("alice"), 1), ["r4"]);
    assert_eq!(list(None, Some("Alice"), 100), Vec::<String>::new());
    assert_eq!(list(Some(41), None, 100), Vec::<String>::new());
}

#[test]
fn rows_written_before_the_class_column_are_split_on_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        // The schema just before the class column.
        for m in &crate::state::MIGRATIONS[..3] {
            conn.execute_batch(m).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute_batch(
            "INSERT INTO audit (time, method, caller, target, outcome, duration_ms) VALUES
               (1, '/m', 'alice (operator)', '', 'Ok', 1),
               (2, '/m', 'agent-w1 (agent(w1))', 'node=w1', 'Ok', 1),
               (3, '/m', 'plain', '', 'Ok', 1);",
        )
        .unwrap();
    }
    let state = State::open(&path).unwrap();
    let rows = state.read(|r| r.audit_recent(10)).unwrap();
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|a| (a.caller.as_str(), a.class.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("plain", ""),
            ("agent-w1", "agent(w1)"),
            ("alice", "operator")
        ]
    );
}
