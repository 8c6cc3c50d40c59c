//! The alert command (`[alerts] command`): [`mcp_alert`], shared with the
//! master; this node's name is `MCP_NODE`.

pub use mcp_alert::{Alert, AlertError, Alerter};

use crate::config::Config;

/// The configured alerter; `None` when `[alerts] command` is not set.
pub fn from_config(c: &Config) -> Option<Alerter> {
    Alerter::new(c.alerts.command.clone()?, c.node.name.clone())
}
