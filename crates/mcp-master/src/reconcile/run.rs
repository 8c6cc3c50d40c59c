//! The loop: a pass on every trigger (the periodic timer, a kick, a new
//! commit) until shutdown.

use super::*;

impl Reconciler {
    /// Runs passes on every trigger until `shutdown` turns true: the periodic
    /// timer, [`Reconciler::kick`], and new commits from `heads` (GitOps).
    /// A pass in progress finishes before the loop returns.
    pub async fn run(
        self: Arc<Self>,
        mut heads: Option<tokio::sync::mpsc::Receiver<crate::watch::HeadEvent>>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let reason = tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => "periodic".to_string(),
                _ = self.kick.notified() => "fleet change".to_string(),
                ev = recv_head(&mut heads) => match ev {
                    Some(ev) => format!(
                        "new commit {}",
                        ev.commit.as_ref().map_or("(none)", |c| c.short())
                    ),
                    None => { heads = None; continue; }
                },
            };
            if *shutdown.borrow() {
                break;
            }
            let opts = PassOptions {
                reason,
                ..PassOptions::default()
            };
            if let Err(e) = self.reconcile(opts).await {
                tracing::error!(error = %e, "reconcile pass failed; nothing applied");
            }
        }
        tracing::info!("control loop stopped");
    }
}

async fn recv_head(
    heads: &mut Option<tokio::sync::mpsc::Receiver<crate::watch::HeadEvent>>,
) -> Option<crate::watch::HeadEvent> {
    match heads {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
