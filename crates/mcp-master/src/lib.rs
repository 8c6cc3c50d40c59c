//! The MCP master daemon (docs/ARCHITECTURE.md).
//!
//! - [`config`]: the master config file (docs/CONFIG.md).
//! - [`state`]: the SQLite database (docs/ARCHITECTURE.md): nodes, placements, edge
//!   routes, snapshots, desired specs, DNS records, heal history, the
//!   operation journal and the audit log.
//! - [`gitsource`]: GitOps desired state, read from the committed tree at
//!   `HEAD` (never the working tree).
//! - [`watch`]: a thin adapter turning `.git` file events and a periodic poll
//!   into a channel of "HEAD changed" events.
//! - [`agents`]: the [`agents::AgentApi`] trait (the master's calls to
//!   agents), its tonic + TLS implementation and the mapping of agent
//!   reports to the planner's model; `fake` (feature `testing`): a
//!   recording in-memory fleet that answers as the agent does.
//! - [`reconcile`]: the control loop (desired → observed → plan → apply,
//!   journaled, per-service locks, bounded concurrency).
//! - [`fleet`]: the node registry (identity-bound `Register`/`Heartbeat`),
//!   the health prober and the start-up warm-up.
//! - [`server`]: the `McpMasterService` gRPC service.
//! - [`snapshots`]: the snapshot store (service data, the master's
//!   database), its schedule, retention, mirror and restore.
//! - [`daemon`]: `mcp-master serve`, everything wired from a config.

pub mod agents;
pub mod alerts;
pub mod config;
pub mod daemon;
/// Test doubles: only with the `testing` feature (never in the shipped
/// binary).
#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod fleet;
pub mod gitsource;
pub mod reconcile;
pub mod server;
pub mod snapshots;
pub mod state;
pub mod watch;

#[cfg(test)]
mod testutil;
