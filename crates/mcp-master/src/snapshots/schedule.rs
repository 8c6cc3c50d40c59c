//! The snapshot schedule: a daemon task that, every tick, snapshots (live)
//! each placed service whose newest snapshot is older than the interval,
//! one service at a time, then snapshots the master's database when it
//! stored any; and reports services whose newest snapshot is older than
//! twice the interval (once per service until it is fresh again).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::{files, Snapshots, Taken};

/// What one scheduled pass did.
#[derive(Debug, Default)]
pub struct ScheduleOutcome {
    pub taken: Vec<Taken>,
    /// (service, error).
    pub failed: Vec<(String, String)>,
    /// Services newly found stale.
    pub stale: Vec<String>,
}

impl Snapshots {
    /// How long after a failed scheduled snapshot the next is tried.
    fn retry_after(&self) -> Duration {
        (self.settings.interval / 4).min(Duration::from_secs(600))
    }

    /// One pass of the schedule.
    pub async fn scheduled_pass(&self) -> ScheduleOutcome {
        let mut out = ScheduleOutcome::default();
        let fresh = match self.freshness_all().await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "snapshot schedule: cannot read placements");
                return out;
            }
        };
        let now = self.rec.now();
        let due = |last: Option<SystemTime>| {
            last.is_none_or(|t| {
                now.duration_since(t)
                    .is_ok_and(|d| d >= self.settings.interval)
            })
        };
        for (service, f) in &fresh {
            {
                let mut reported = self
                    .stale_reported
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if f.stale && reported.insert(service.clone()) {
                    let last = f
                        .last
                        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                        .unwrap_or_else(|| "never".to_string());
                    tracing::warn!(
                        service = %service,
                        last = %last,
                        "snapshot stale: the newest is older than twice [snapshots] interval"
                    );
                    self.rec.alerts().raise(crate::alerts::alert(
                        "snapshot_stale",
                        format!("snapshot_stale:{service}"),
                        service,
                        "",
                        format!(
                            "the newest snapshot ({last}) is older than twice [snapshots] interval ({})",
                            humantime::format_duration(self.settings.interval * 2)
                        ),
                    ));
                    out.stale.push(service.clone());
                } else if !f.stale {
                    reported.remove(service);
                }
            }
            if !due(f.last) {
                continue;
            }
            let recent_failure = self
                .lock_failed()
                .get(service)
                .is_some_and(|t| now.duration_since(*t).is_ok_and(|d| d < self.retry_after()));
            if recent_failure {
                continue;
            }
            match self.take(service).await {
                Ok(t) => {
                    self.lock_failed().remove(service);
                    out.taken.push(t);
                }
                Err(e) => {
                    tracing::warn!(service = %service, error = %e, "scheduled snapshot failed");
                    self.lock_failed().insert(service.clone(), now);
                    out.failed.push((service.clone(), e.to_string()));
                }
            }
        }
        if !out.taken.is_empty() {
            let _ = self.snapshot_db().await;
        }
        out
    }

    /// Runs the schedule until `stop` turns true: a pass at once (which
    /// also reports stale snapshots at start-up), then every minute (or
    /// every interval, if shorter).
    pub async fn run_schedule(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let tick = self.settings.interval.min(Duration::from_secs(60));
        let dir = self.settings.dir.clone();
        match tokio::task::spawn_blocking(move || files::remove_leftovers(&dir)).await {
            Ok(removed) if !removed.is_empty() => {
                tracing::warn!(files = ?removed, "removed partial snapshots a previous master left behind");
            }
            _ => {}
        }
        loop {
            if *stop.borrow() {
                return;
            }
            self.scheduled_pass().await;
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}
