//! A whole MCP fleet on this machine: the harness behind `mcp dev` and the
//! whole-fleet tests.
//!
//! [`prepare`] writes everything a fleet needs into a state directory (a CA
//! and certificates, a token signing key and tokens, the master's, every
//! agent's and the CLI's configs, each agent's own podman storage) and
//! records the fleet in `fleet.json`. [`Fleet::daemons`] gives the
//! `mcp-master` and `mcp-agent` processes to start, kill and restart
//! ([`Daemon`]); every start records the process id under `run/`, so
//! [`down`] can stop a fleet started by another process, then remove its
//! containers ([`remove_containers`]) and, on request, its state directory.
//!
//! Layout of the state directory (kept between runs: databases, keys and
//! containers survive; configs are rewritten by every [`prepare`]):
//!
//! ```text
//! fleet.json  what `prepare` chose: addresses, ports, nodes, podman
//!           arguments; `dns` (Knot's 127.0.0.1:<port>), `zone`, `ca_cert`,
//!           and per node `name`, `role`, `address` (its bare loopback IP)
//! pki/      ca.pem, ca.key (0600: every agent issues its routes'
//!           certificates from it), master.{crt,key} (names mcp-master,
//!           localhost, 127.0.0.1), <node>.{crt,key} (names <node>, <its IP>)
//! dns/      Knot: knot.conf, zones/, db/, run/, mcp-key.tsig, acme-key.tsig
//! keys/     issuer.pem (signs tokens), issuer.pem.pub
//! tokens/   master.token (bound to pki/master.crt), agent-<node>.token,
//!           operator.token; reissued by every `prepare`
//! master/   master.toml, master.db
//! nodes/<node>/  agent.toml, agent.db, srv/ (service data), storage/ (podman;
//!                 images are read from the operator's podman storage, read-only),
//!                 certs/ (the routes' certificates), caddy/, haproxy/
//! logs/     master.log, <node>.log, knot.log, caddy-<node>.log, haproxy-<node>.log
//! run/      <process>.pid while it runs; dev.pid while `mcp dev` runs
//! services/ the demo services repository (when no services directory is given)
//! mcp.toml  CLI config: `export MCP_CONFIG=<state>/mcp.toml`
//! ```
//!
//! Node names: `m1` (role master), then `w1`, `w2`, ... (workers); an edge
//! node adds `e1` (role edge). Addresses: see [`prepare`]'s module: node
//! `i` is `127.<a>.<b>.<11+i>` in a block chosen per state directory.
//!
//! The servers ([`servers`]): one Knot serving `mcp.test` on
//! `127.0.0.1:<port>` (the master writes `<service>.mcp.test` there), and
//! per node a Caddy (L7) and an HAProxy (L4) on the node's address, which
//! its agent configures. They start before the agents.
//!
//! This crate runs podman itself, but only on the fleet's own storage and
//! only for set-up and clean-up: copying images in, `podman rm` of the
//! fleet's containers on `down`, reading `podman info`. Containers are run
//! by the agents, through `mcp-runtime`.

mod configs;
mod daemon;
pub mod dns;
pub mod git;
mod podman;
mod prepare;
pub mod servers;

pub use daemon::{
    down, ensure_running_none, live_processes, Daemon, Daemons, DevProcess, DownReport,
};
pub use podman::{check_podman, remove_containers};
pub use prepare::{
    default_state_dir, master_sans, node_sans, prepare, DevOptions, Fleet, Node, DEMO_SERVICES,
    MASTER_IDENTITY, TOKEN_TTL,
};
pub use servers::{check_servers, ServerBins, SERVER_PACKAGES, ZONE};

use std::path::PathBuf;

/// Everything that can go wrong while preparing, running or removing a
/// dev fleet.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] mcp_security::pki::PkiError),
    #[error(transparent)]
    Key(#[from] mcp_security::jwt::KeyError),
    #[error(transparent)]
    Git(#[from] git::GitError),
    #[error("{file}: {message}")]
    Record { file: PathBuf, message: String },
    #[error("{0}")]
    Failed(String),
}

/// `map_err` helper: an I/O error with what was being done.
fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DevError {
    let what = what.into();
    move |source| DevError::Io { what, source }
}

/// Fails with a message.
fn failed<T>(msg: impl Into<String>) -> Result<T, DevError> {
    Err(DevError::Failed(msg.into()))
}
