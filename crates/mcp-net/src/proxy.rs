//! Routes on a node's reverse proxy.
//!
//! A route is keyed by the proxy port it listens on and the hostname it
//! matches ([`RouteKey`]): many services share one proxy port, told apart
//! by hostname. The proxy listens on the node's address (the adapter is
//! configured with it); backends are the containers' host ports on
//! loopback.
//!
//! - **L7** ([`RouteMode::L7`]): TLS is terminated at the proxy with the
//!   route's certificate ([`ProxyRoute::tls`], required), chosen by SNI;
//!   requests are matched by the Host header and forwarded (plain HTTP, or
//!   TLS when [`ProxyRoute::backend_tls`] is set) to the backend.
//! - **L4** ([`RouteMode::L4`]): TLS passthrough, matched by SNI; the bytes
//!   are forwarded untouched, so the client sees the backend's certificate.
//!
//! One proxy port serves one mode: an adapter refuses an L4 route on a port
//! where it (or another adapter of the same node) serves L7, and the agent
//! checks the same before it asks.

use std::path::PathBuf;

use async_trait::async_trait;
pub use mcp_spec::RouteMode;
use serde::{Deserialize, Serialize};

use crate::Result;

/// The certificate an L7 route terminates TLS with: PEM files on the node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TlsFiles {
    /// The chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// TLS towards the backend (edge routes): verified against `ca` with
/// `server_name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BackendTls {
    pub server_name: String,
    pub ca: PathBuf,
}

/// Which route: its proxy port and hostname (lowercase, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RouteKey {
    pub listen_port: u16,
    pub hostname: String,
}

/// One route on the node's proxy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProxyRoute {
    /// Port on the node's proxy (on the node's address).
    pub listen_port: u16,
    /// Matched by SNI (and Host for L7); lowercase, no trailing dot.
    pub hostname: String,
    /// `host:port` the proxy forwards to (a container's host port on
    /// loopback, or an edge route's worker).
    pub backend: String,
    pub mode: RouteMode,
    /// L7 only, required there: the certificate TLS is terminated with.
    pub tls: Option<TlsFiles>,
    /// L7 only: TLS towards the backend.
    pub backend_tls: Option<BackendTls>,
}

impl ProxyRoute {
    pub fn key(&self) -> RouteKey {
        RouteKey {
            listen_port: self.listen_port,
            hostname: self.hostname.clone(),
        }
    }

    /// The checks every adapter makes before touching its proxy: a
    /// hostname, a `host:port` backend, a certificate exactly for L7.
    pub fn check(&self) -> Result<()> {
        let bad = |why: String| Err(crate::NetError::Invalid(why));
        if !mcp_spec::names::is_hostname(&self.hostname) {
            return bad(format!(
                "route {}:{}: not a hostname",
                self.hostname, self.listen_port
            ));
        }
        if self.hostname != mcp_spec::names::normalize_hostname(&self.hostname) {
            return bad(format!(
                "route {}:{}: hostname must be lowercase without a trailing dot",
                self.hostname, self.listen_port
            ));
        }
        if self.listen_port == 0 {
            return bad(format!("route {}: listen port 0", self.hostname));
        }
        match self.backend.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => {
                return bad(format!(
                    "route {}:{}: backend {:?} is not host:port",
                    self.hostname, self.listen_port, self.backend
                ))
            }
        }
        match (self.mode, &self.tls, &self.backend_tls) {
            (RouteMode::L7, None, _) => bad(format!(
                "L7 route {}:{} has no certificate",
                self.hostname, self.listen_port
            )),
            (RouteMode::L4, Some(_), _) | (RouteMode::L4, _, Some(_)) => bad(format!(
                "L4 route {}:{} is passthrough: it takes no certificate and no backend TLS",
                self.hostname, self.listen_port
            )),
            _ => Ok(()),
        }
    }
}

/// The checks an adapter serving only `mode` makes before anything else:
/// [`ProxyRoute::check`], then the mode (`serves` says what the adapter is
/// for, e.g. "caddy serves L7 routes only").
pub(crate) fn check_for(route: &ProxyRoute, mode: RouteMode, serves: &str) -> Result<()> {
    route.check()?;
    if route.mode != mode {
        return Err(crate::NetError::Invalid(format!(
            "route {}:{}: {serves}",
            route.hostname, route.listen_port
        )));
    }
    Ok(())
}

/// `routes` with `route` added (replacing the route of its key), sorted;
/// `None` when `routes` already holds it exactly (nothing to load: a
/// redeploy of an unchanged route costs one read of the live config).
pub(crate) fn with_route(
    mut routes: Vec<ProxyRoute>,
    route: &ProxyRoute,
) -> Option<Vec<ProxyRoute>> {
    if routes.contains(route) {
        return None;
    }
    routes.retain(|r| r.key() != route.key());
    routes.push(route.clone());
    routes.sort();
    Some(routes)
}

/// `routes` without the route of `key`; `None` when there was none.
pub(crate) fn without_route(
    mut routes: Vec<ProxyRoute>,
    key: &RouteKey,
) -> Option<Vec<ProxyRoute>> {
    let before = routes.len();
    routes.retain(|r| &r.key() != key);
    (routes.len() != before).then_some(routes)
}

/// A node's reverse proxy.
///
/// Semantics every implementation shares (checked by
/// `testing::proxy_suite`):
/// - `add` adds a route, or replaces the route with the same [`RouteKey`];
///   it is idempotent, and leaves every other route as it was. It refuses
///   (`NetError::Invalid`) a route failing [`ProxyRoute::check`], a mode the
///   adapter does not serve, and an L4 route on a port where L7 routes are
///   served (and the reverse).
/// - `remove` removes one route; `Ok(false)` when there was none.
/// - `list` reports what the **running** proxy serves (a proxy restarted
///   with an empty configuration lists nothing), sorted by key.
/// - `reload_certificates` makes the proxy read its certificate files again
///   (after a renewal rewrote them in place).
#[async_trait]
pub trait ProxyRoutes: Send + Sync {
    /// `caddy`, `haproxy`, `fake`, …
    fn kind(&self) -> &'static str;
    /// The modes this adapter serves.
    fn modes(&self) -> &'static [RouteMode];
    async fn add(&self, route: &ProxyRoute) -> Result<()>;
    async fn remove(&self, key: &RouteKey) -> Result<bool>;
    async fn list(&self) -> Result<Vec<ProxyRoute>>;
    async fn reload_certificates(&self) -> Result<()>;
}
