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

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mcp_security::audit::{AuditEvent, AuditSink};
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
}

#[derive(Debug, Default)]
struct Counters {
    rows: AtomicU64,
    batches: AtomicU64,
    failed: AtomicU64,
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
        }
    }
}

/// The stored form of an audit event.
pub fn entry_of(e: &AuditEvent) -> AuditEntry {
    AuditEntry {
        time: e.time,
        method: e.method.clone(),
        caller: format!("{} ({})", e.caller, e.class),
        target: e.target.clone().unwrap_or_default(),
        outcome: e.outcome.clone(),
        duration_ms: u64::try_from(e.duration.as_millis()).unwrap_or(u64::MAX),
    }
}

impl AuditLog {
    /// Starts the writer on the current runtime; `capacity` (at least 1)
    /// bounds the rows waiting to be written.
    pub fn start(db: Db, capacity: usize) -> AuditLog {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(writer(db, rx, counters.clone()));
        AuditLog { tx, task, counters }
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
        AuditStats {
            rows: self.counters.rows.load(Ordering::Relaxed),
            batches: self.counters.batches.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
        }
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
        AuditStats {
            rows: stats.rows.load(Ordering::Relaxed),
            batches: stats.batches.load(Ordering::Relaxed),
            failed: stats.failed.load(Ordering::Relaxed),
        }
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

async fn writer(db: Db, mut rx: mpsc::Receiver<Msg>, counters: Arc<Counters>) {
    let mut flushed: Vec<oneshot::Sender<()>> = Vec::new();
    let mut stopped: Vec<oneshot::Sender<()>> = Vec::new();
    // After `Stop` the channel is closed: `recv` still yields what was
    // queued, then `None`.
    while let Some(first) = rx.recv().await {
        let mut rows = Vec::new();
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Msg::Row(r) => rows.push(r),
                Msg::Flush(done) => flushed.push(done),
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
                }
                Err(e) => {
                    counters.failed.fetch_add(n, Ordering::Relaxed);
                    tracing::error!(error = %e, rows = n, "cannot store audit records");
                }
            }
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
