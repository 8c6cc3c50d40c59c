//! Sending alerts, for the agent and the master alike: the configured
//! `[alerts] command`, run as an argv array without any shell, with the
//! alert in its environment:
//!
//! | variable        | value                                          |
//! |-----------------|------------------------------------------------|
//! | `MCP_SERVICE`   | service name (empty for a node or plan alert)  |
//! | `MCP_COMPONENT` | component name (may be empty)                  |
//! | `MCP_NODE`      | the node concerned (default: the sender's)     |
//! | `MCP_EVENT`     | `drift`, `flapping`, `degraded`, ...           |
//! | `MCP_DETAIL`    | human-readable detail, verbatim                |
//!
//! Values are passed as data: nothing in them is ever interpreted. The
//! command inherits the agent's environment otherwise, gets no stdin, and is
//! killed after a timeout (default 30s). A non-zero exit is an error carrying
//! the start of its stderr.
//!
//! [`Cooldown`] holds a key back for a while after it was sent, so a
//! lasting problem is repeated once per cooldown, not once per check.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use tokio::process::Command;

/// An alert to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Cooldown key; mark it sent after sending.
    pub key: String,
    pub service: String,
    pub component: String,
    /// `MCP_EVENT`.
    pub event: String,
    /// `MCP_DETAIL`.
    pub detail: String,
    /// `MCP_NODE`; empty: the alerter's own node.
    pub node: String,
}

/// When each alert key was last sent.
#[derive(Debug, Clone, Default)]
pub struct Cooldown {
    period: Duration,
    sent: HashMap<String, SystemTime>,
}

impl Cooldown {
    pub fn new(period: Duration) -> Cooldown {
        Cooldown {
            period,
            sent: HashMap::new(),
        }
    }

    /// True when `key` was not sent within the period before `now`.
    pub fn due(&self, key: &str, now: SystemTime) -> bool {
        match self.sent.get(key) {
            None => true,
            Some(t) => now.duration_since(*t).unwrap_or_default() >= self.period,
        }
    }

    /// Records that `key` was sent at `now` (only after the command
    /// succeeded: a failed alert is not sent).
    pub fn sent(&mut self, key: &str, now: SystemTime) {
        self.sent.insert(key.to_string(), now);
    }
}

/// Most of the command's stderr kept in an error.
const STDERR_KEEP: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("cannot run alert command {program} for {key}: {source}")]
    Spawn {
        program: String,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("alert command {program} for {key} failed ({status}): {stderr}")]
    Failed {
        program: String,
        key: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("alert command {program} for {key} did not finish within {}", humantime::format_duration(*after))]
    Timeout {
        program: String,
        key: String,
        after: Duration,
    },
}

/// Runs the alert command.
#[derive(Debug, Clone)]
pub struct Alerter {
    program: String,
    args: Vec<String>,
    node: String,
    timeout: Duration,
}

impl Alerter {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// `None` when `argv` is empty or its program is empty.
    pub fn new(argv: Vec<String>, node: impl Into<String>) -> Option<Alerter> {
        let mut argv = argv.into_iter();
        let program = argv.next().filter(|p| !p.is_empty())?;
        Some(Alerter {
            program,
            args: argv.collect(),
            node: node.into(),
            timeout: Alerter::DEFAULT_TIMEOUT,
        })
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Alerter {
        self.timeout = timeout;
        self
    }

    /// The program and its arguments.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(self.program.clone())
            .chain(self.args.iter().cloned())
            .collect()
    }

    /// Runs the command once for `alert` and waits for it.
    pub async fn send(&self, alert: &Alert) -> Result<(), AlertError> {
        let program = &self.program;
        let mut cmd = Command::new(program);
        cmd.args(&self.args)
            .env("MCP_SERVICE", &alert.service)
            .env("MCP_COMPONENT", &alert.component)
            .env(
                "MCP_NODE",
                if alert.node.is_empty() {
                    &self.node
                } else {
                    &alert.node
                },
            )
            .env("MCP_EVENT", &alert.event)
            .env("MCP_DETAIL", &alert.detail)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| AlertError::Spawn {
            program: program.clone(),
            key: alert.key.clone(),
            source,
        })?;
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Err(_) => {
                return Err(AlertError::Timeout {
                    program: program.clone(),
                    key: alert.key.clone(),
                    after: self.timeout,
                })
            }
            Ok(Err(source)) => {
                return Err(AlertError::Spawn {
                    program: program.clone(),
                    key: alert.key.clone(),
                    source,
                })
            }
            Ok(Ok(output)) => output,
        };
        if output.status.success() {
            Ok(())
        } else {
            let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            if stderr.len() > STDERR_KEEP {
                let mut cut = STDERR_KEEP;
                while !stderr.is_char_boundary(cut) {
                    cut -= 1;
                }
                stderr.truncate(cut);
                stderr.push_str("...");
            }
            Err(AlertError::Failed {
                program: program.clone(),
                key: alert.key.clone(),
                status: output.status,
                stderr,
            })
        }
    }
}

#[cfg(test)]
mod tests;
