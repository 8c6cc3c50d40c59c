//! The MCP master: the pieces the control loop is assembled from.
//!
//! - [`config`]: the master config file (DESIGN.md §11).
//! - [`state`]: the SQLite database (DESIGN.md §10): nodes, placements, edge
//!   routes, snapshots, desired specs, DNS records, heal history, the
//!   operation journal and the audit log.
//! - [`gitsource`]: GitOps desired state, read from the committed tree at
//!   `HEAD` (never the working tree).
//! - [`watch`]: a thin adapter turning `.git` file events and a periodic poll
//!   into a channel of "HEAD changed" events.

pub mod agents;
pub mod config;
pub mod daemon;
pub mod fake;
pub mod fleet;
pub mod gitsource;
pub mod reconcile;
pub mod server;
pub mod state;
pub mod watch;

#[cfg(test)]
mod testutil;
