//! [`AuditLog`]: audit rows through a bounded channel to one writer task
//! that commits them in batches.
//!
//! An RPC hands its row to the channel ([`DbAuditSink`], the auth layer's
//! sink) and goes on; it never waits for an `fsync`. When the channel is
//! full the sender waits (asynchronously) for room: rows are never dropped.
//! The writer takes every row already queued (up to [`MAX_BATCH`]) and
//! writes them in one transaction on the blocking pool, so under load one
//! transaction covers many calls. Audit batches are committed with
//! `synchronous = NORMAL` ([`super::State::write_relaxed`]): atomic and kept
//! across a crash of the master, synced by the next ordinary write or WAL
//! checkpoint (a power loss can lose the last ones). [`AuditLog::shutdown`] writes everything sent
//! before it and stops the writer: the daemon calls it after the gRPC
//! server has stopped, so no row of a finished call is lost on SIGTERM.
//!
//! With a [`Retention`] ([`AuditLog::start_with_retention`], the daemon's
//! `[audit]` section) the same task prunes the table, also on the blocking
//! pool: rows older than `max_age`, then all but the newest `max_rows`.
//! It prunes when it starts, every `interval`, and after every
//! [`Retention::rows_between_prunes`] rows written, so a burst of calls
//! cannot grow the table far past `max_rows` between two ticks.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::time::Duration;

use mcp_security::audit::{AuditEvent, AuditSink};
use mcp_security::clock::Clock;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{AuditEntry, Db};

/// The channel's capacity in the daemon.
pub const DEFAULT_CAPACITY: usize = 4096;
/// At most this many rows per transaction.
pub const MAX_BATCH: usize = 1024;

enum Msg {
    Row(AuditEntry),
    /// Answered once every row sent before it is committed.
    Flush(oneshot::Sender<()>),
    /// Like `Flush`, then the writer stops.
    Stop(oneshot::Sender<()>),
    /// Prune now (after writing every row sent before it).
    Prune(oneshot::Sender<Pruned>),
}

/// How long audit rows are kept, and how many.
#[derive(Clone)]
pub struct Retention {
    /// Rows older than this are deleted.
    pub max_age: Duration,
    /// At most this many rows are kept (the newest).
    pub max_rows: u64,
    /// Time between two prunes.
    pub interval: Duration,
    /// What "now" is for `max_age`.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retention")
            .field("max_age", &self.max_age)
            .field("max_rows", &self.max_rows)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl Retention {
    /// Rows written between two prunes besides the timer: a tenth of
    /// `max_rows` (at least 1, at most 10,000).
    pub fn rows_between_prunes(&self) -> u64 {
        (self.max_rows / 10).clamp(1, 10_000)
    }
}

/// What one prune deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Rows older than `max_age`.
    pub by_age: u64,
    /// Rows beyond the newest `max_rows`.
    pub by_count: u64,
}

/// What the writer has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Rows committed.
    pub rows: u64,
    /// Transactions that committed rows.
    pub batches: u64,
    /// Rows lost because their transaction failed (logged as errors).
    pub failed: u64,
    /// Rows deleted by pruning.
    pub pruned: u64,
}

#[derive(Debug, Default)]
struct Counters {
    rows: AtomicU64,
    batches: AtomicU64,
    failed: AtomicU64,
    pruned: AtomicU64,
}

impl Counters {
    fn stats(&self) -> AuditStats {
        AuditStats {
            rows: self.rows.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            pruned: self.pruned.load(Ordering::Relaxed),
        }
    }
}

/// The audit writer and its channel.
#[derive(Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    task: JoinHandle<()>,
    counters: Arc<Counters>,
}

/// The auth layer's sink: queues each event's row for the writer.
#[derive(Clone)]
pub struct DbAuditSink {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for DbAuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbAuditSink").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Row(r) => f.debug_tuple("Row").field(r).finish(),
            Msg::Flush(_) => f.write_str("Flush"),
            Msg::Stop(_) => f.write_str("Stop"),
            Msg::Prune(_) => f.write_str("Prune"),
        }
    }
}

/// The stored form of an audit event.
pub fn entry_of(e: &AuditEvent) -> AuditEntry {
    AuditEntry {
        time: e.time,
        method: e.method.clone(),
        caller: e.caller.clone(),
        class: e.class.clone(),
        target: e.target.clone().unwrap_or_default(),
        outcome: e.outcome.clone(),
        duration_ms: u64::try_from(e.duration.as_millis()).unwrap_or(u64::MAX),
    }
}

impl AuditLog {
    /// Starts the writer on the current runtime; `capacity` (at least 1)
    /// bounds the rows waiting to be written. Nothing is pruned.
    pub fn start(db: Db, capacity: usize) -> AuditLog {
        Self::spawn(db, capacity, None)
    }

    /// Like [`AuditLog::start`], and the writer prunes the table as
    /// `retention` says.
    pub fn start_with_retention(db: Db, capacity: usize, retention: Retention) -> AuditLog {
        Self::spawn(db, capacity, Some(retention))
    }

    fn spawn(db: Db, capacity: usize, retention: Option<Retention>) -> AuditLog {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(writer(db, rx, counters.clone(), retention));
        AuditLog { tx, task, counters }
    }

    /// Writes every row queued before the call, then prunes as the
    /// retention says (nothing without one).
    pub async fn prune_now(&self) -> Pruned {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Prune(done)).await.is_err() {
            return Pruned::default();
        }
        wait.await.unwrap_or_default()
    }

    /// The sink for `AuthLayer::with_audit_sink`.
    pub fn sink(&self) -> DbAuditSink {
        DbAuditSink {
            tx: self.tx.clone(),
        }
    }

    /// Queues one row (waits while the channel is full).
    pub async fn record(&self, entry: AuditEntry) {
        send(&self.tx, entry).await;
    }

    /// Returns once every row queued before the call is committed (or its
    /// transaction failed).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// What the writer has done so far.
    pub fn stats(&self) -> AuditStats {
        self.counters.stats()
    }

    /// Writes every row queued before the call, then stops the writer.
    /// Rows a sink sends afterwards are logged as lost.
    pub async fn shutdown(self) -> AuditStats {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Stop(done)).await.is_ok() {
            let _ = wait.await;
        }
        let stats = self.counters.clone();
        let _ = self.task.await;
        stats.stats()
    }
}

async fn send(tx: &mpsc::Sender<Msg>, entry: AuditEntry) {
    if let Err(mpsc::error::SendError(Msg::Row(row))) = tx.send(Msg::Row(entry)).await {
        tracing::error!(method = %row.method, caller = %row.caller, "audit writer stopped: audit record lost");
    }
}

impl AuditSink for DbAuditSink {
    fn record(&self, event: AuditEvent) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move { send(&self.tx, entry_of(&event)).await })
    }
}

/// Deletes what `r` says is too old or too many, on the blocking pool.
async fn prune(db: &Db, r: &Retention, counters: &Counters) -> Pruned {
    let before = r
        .clock
        .now()
        .checked_sub(r.max_age)
        .unwrap_or(std::time::UNIX_EPOCH);
    let keep = r.max_rows;
    let res = db
        .write_relaxed(move |w| {
            let by_age = w.audit_prune(before)?;
            let by_count = w.audit_prune_count(keep)?;
            Ok((by_age, by_count))
        })
        .await;
    match res {
        Ok((by_age, by_count)) => {
            let p = Pruned {
                by_age: by_age as u64,
                by_count: by_count as u64,
            };
            counters
                .pruned
                .fetch_add(p.by_age + p.by_count, Ordering::Relaxed);
            if p != Pruned::default() {
                tracing::info!(
                    by_age = p.by_age,
                    by_count = p.by_count,
                    max_age = %humantime::format_duration(r.max_age),
                    max_rows = r.max_rows,
                    "audit log pruned"
                );
            }
            p
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot prune the audit log");
            Pruned::default()
        }
    }
}

/// The next tick of the prune timer; never, without one.
async fn tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn writer(
    db: Db,
    mut rx: mpsc::Receiver<Msg>,
    counters: Arc<Counters>,
    retention: Option<Retention>,
) {
    let mut flushed: Vec<oneshot::Sender<()>> = Vec::new();
    let mut stopped: Vec<oneshot::Sender<()>> = Vec::new();
    let mut prunes: Vec<oneshot::Sender<Pruned>> = Vec::new();
    // A master started on a large table prunes it at once, before the
    // first message (so what is queued next is never pruned by a start-up
    // tick racing it), then every interval.
    if let Some(r) = &retention {
        prune(&db, r, &counters).await;
    }
    let mut timer = retention.as_ref().map(|r| {
        let every = r.interval.max(Duration::from_millis(1));
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut since_prune = 0u64;
    // After `Stop` the channel is closed: `recv` still yields what was
    // queued, then `None`.
    loop {
        let first = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => break,
            },
            () = tick(&mut timer) => {
                if let Some(r) = &retention {
                    prune(&db, r, &counters).await;
                    since_prune = 0;
                }
                continue;
            }
        };
        let mut rows = Vec::new();
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Msg::Row(r) => rows.push(r),
                Msg::Flush(done) => flushed.push(done),
                Msg::Prune(done) => prunes.push(done),
                Msg::Stop(done) => {
                    stopped.push(done);
                    rx.close();
                }
            }
            if rows.len() >= MAX_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !rows.is_empty() {
            let n = rows.len() as u64;
            let r = db
                .write_relaxed(move |w| {
                    for row in &rows {
                        w.audit(row)?;
                    }
                    Ok(())
                })
                .await;
            match r {
                Ok(()) => {
                    counters.rows.fetch_add(n, Ordering::Relaxed);
                    counters.batches.fetch_add(1, Ordering::Relaxed);
                    since_prune += n;
                }
                Err(e) => {
                    counters.failed.fetch_add(n, Ordering::Relaxed);
                    tracing::error!(error = %e, rows = n, "cannot store audit records");
                }
            }
        }
        if let Some(r) = &retention {
            if !prunes.is_empty() || since_prune >= r.rows_between_prunes() {
                let p = prune(&db, r, &counters).await;
                since_prune = 0;
                for done in prunes.drain(..) {
                    let _ = done.send(p);
                }
            }
        }
        for done in prunes.drain(..) {
            let _ = done.send(Pruned::default());
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
    for done in stopped {
        let _ = done.send(());
    }
}

#[cfg(test)]
mod tests;
