//! The master's alerts (`[alerts] command`): a degraded service (self-heal
//! gave up), a node turned unhealthy, a plan refused by the mass-deletion
//! guard, a failed step and a stale snapshot. Each is logged (target
//! `mcp::alert`) and, with a command configured, sent through
//! [`mcp_alert::Alerter`] (argv, no shell, `MCP_*` environment): at most once
//! per key per `cooldown`, retried a few times when the command fails, and
//! only marked sent once it succeeded.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mcp_alert::{Alert, Alerter, Cooldown};
use mcp_security::clock::Clock;

use crate::config::Config;

/// Delays between the attempts of one alert (so three attempts in all).
const RETRY_DELAYS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(4)];

/// How an alert ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The command ran and succeeded.
    Sent,
    /// The same key was sent within the cooldown.
    HeldBack,
    /// No `[alerts] command`: logged only.
    NotConfigured,
}

pub struct Alerts {
    alerter: Option<Alerter>,
    cooldown: Mutex<Cooldown>,
    clock: Arc<dyn Clock>,
    retry_delays: Vec<Duration>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts")
            .field("alerter", &self.alerter)
            .finish_non_exhaustive()
    }
}

impl Alerts {
    /// Alerts that are only logged.
    pub fn logged_only(clock: Arc<dyn Clock>) -> Alerts {
        Alerts::new(None, Duration::from_secs(900), clock)
    }

    pub fn new(alerter: Option<Alerter>, cooldown: Duration, clock: Arc<dyn Clock>) -> Alerts {
        Alerts {
            alerter,
            cooldown: Mutex::new(Cooldown::new(cooldown)),
            clock,
            retry_delays: RETRY_DELAYS.to_vec(),
        }
    }

    /// From `[alerts]`; `MCP_NODE` defaults to `master`.
    pub fn from_config(cfg: &Config, clock: Arc<dyn Clock>) -> Alerts {
        let alerter = cfg
            .alerts
            .command
            .clone()
            .and_then(|argv| Alerter::new(argv, "master"));
        Alerts::new(alerter, cfg.alerts.cooldown, clock)
    }

    /// Tests: shorter waits between attempts.
    pub fn with_retry_delays(mut self, delays: Vec<Duration>) -> Alerts {
        self.retry_delays = delays;
        self
    }

    pub fn configured(&self) -> bool {
        self.alerter.is_some()
    }

    /// Logs `alert` and sends it now, retrying a failed command; an error
    /// after the last attempt (the key is not marked sent, so the next
    /// occurrence tries again).
    pub async fn send(&self, alert: &Alert) -> Result<Sent, String> {
        tracing::warn!(
            target: "mcp::alert",
            event = %alert.event,
            service = %alert.service,
            component = %alert.component,
            node = %alert.node,
            detail = %alert.detail,
            "alert"
        );
        let Some(a) = &self.alerter else {
            return Ok(Sent::NotConfigured);
        };
        if !self.lock().due(&alert.key, self.clock.now()) {
            return Ok(Sent::HeldBack);
        }
        let mut last = String::new();
        for attempt in 0..=self.retry_delays.len() {
            if attempt > 0 {
                tokio::time::sleep(self.retry_delays[attempt - 1]).await;
            }
            match a.send(alert).await {
                Ok(()) => {
                    self.lock().sent(&alert.key, self.clock.now());
                    return Ok(Sent::Sent);
                }
                Err(e) => {
                    tracing::error!(key = %alert.key, attempt = attempt + 1, error = %e, "alert command failed");
                    last = e.to_string();
                }
            }
        }
        Err(last)
    }

    /// [`Alerts::send`] in the background (the caller does not wait).
    pub fn raise(self: &Arc<Self>, alert: Alert) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.send(&alert).await {
                tracing::error!(key = %alert.key, error = %e, "alert not sent after every attempt");
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cooldown> {
        self.cooldown.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An alert of the master's (`MCP_NODE` = `node`, or `master` when empty).
pub fn alert(event: &str, key: String, service: &str, node: &str, detail: String) -> Alert {
    Alert {
        key,
        service: service.to_string(),
        component: String::new(),
        event: event.to_string(),
        detail,
        node: node.to_string(),
    }
}

#[cfg(test)]
mod tests;
