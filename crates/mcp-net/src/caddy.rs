//! [`Caddy`]: the L7 adapter, over Caddy's admin API.
//!
//! # Why Caddy for L7, HAProxy for L4
//!
//! Caddy terminates TLS with certificate files, matches SNI and Host, and
//! reverse-proxies over HTTP/1.1 or HTTP/2 with TLS towards the backend
//! when asked, and its admin API replaces the whole configuration
//! atomically without dropping connections. Debian's Caddy (2.6) has no
//! `layer4` module, so it cannot do SNI passthrough: L4 routes go to
//! HAProxy ([`crate::haproxy`]). One proxy port serves one mode, so the two
//! never compete for a port.
//!
//! # Design
//!
//! - The route set is rendered into MCP's **whole** Caddy configuration
//!   ([`render`]) and `POST /load`ed: Caddy provisions it completely or
//!   refuses it and keeps the old one, so a failed change changes nothing.
//!   The Caddy is MCP's own: a foreign configuration is replaced by the
//!   first change.
//! - There is no state besides the running Caddy: `list` is
//!   `GET /config/` parsed back into routes (only objects whose `@id`
//!   starts with `mcp-`), so a Caddy restarted empty lists nothing, and
//!   `add` / `remove` are list, change the set, render, load — under a
//!   mutex, so concurrent calls of this adapter do not lose each other's
//!   changes.
//! - The loaded configuration keeps `admin.listen` = the adapter's admin
//!   address, so a load never cuts the adapter off.
//! - Certificates come from files (`apps.tls.certificates.load_files`, one
//!   tag per route, chosen by a TLS connection policy matching the SNI).
//!   Caddy reads those files only when a configuration is provisioned and
//!   skips a load identical to the running one, so
//!   `reload_certificates` loads the same configuration with
//!   `Cache-Control: must-revalidate`.
//! - Every admin request has a 5 s timeout. A refused connection or a
//!   timeout is [`NetError::Unreachable`] naming `caddy admin <addr>`; a
//!   non-2xx answer is [`NetError::Rejected`] with Caddy's error text; an
//!   answer that does not parse is [`NetError::Protocol`].

mod admin;
mod render;

use std::net::{IpAddr, SocketAddr};

use async_trait::async_trait;

use crate::proxy::{ProxyRoute, ProxyRoutes, RouteKey, RouteMode};
use crate::Result;

/// The node's Caddy, driven through its admin API.
#[derive(Debug)]
pub struct Caddy {
    admin: admin::Admin,
    admin_addr: SocketAddr,
    listen: IpAddr,
    /// Held around every read-modify-load.
    lock: tokio::sync::Mutex<()>,
}

impl Caddy {
    /// The Caddy whose admin API listens on `admin`; proxy ports listen on
    /// `listen` (the node's address).
    pub fn new(admin: SocketAddr, listen: IpAddr) -> Caddy {
        Caddy {
            admin: admin::Admin::new(admin),
            admin_addr: admin,
            listen,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    async fn routes(&self) -> Result<Vec<ProxyRoute>> {
        let config = self.admin.config().await?;
        render::parse(&config, &self.admin.server())
    }

    async fn load(&self, routes: &[ProxyRoute], must_revalidate: bool) -> Result<()> {
        let config = render::render(self.admin_addr, self.listen, routes);
        self.admin.load(&config, must_revalidate).await
    }
}

#[async_trait]
impl ProxyRoutes for Caddy {
    fn kind(&self) -> &'static str {
        "caddy"
    }

    fn modes(&self) -> &'static [RouteMode] {
        &[RouteMode::L7]
    }

    async fn add(&self, route: &ProxyRoute) -> Result<()> {
        crate::proxy::check_for(
            route,
            RouteMode::L7,
            "caddy serves L7 routes only; L4 passthrough is HAProxy's",
        )?;
        let _held = self.lock.lock().await;
        match crate::proxy::with_route(self.routes().await?, route) {
            Some(routes) => self.load(&routes, false).await,
            None => Ok(()),
        }
    }

    async fn remove(&self, key: &RouteKey) -> Result<bool> {
        let _held = self.lock.lock().await;
        match crate::proxy::without_route(self.routes().await?, key) {
            Some(routes) => self.load(&routes, false).await.map(|()| true),
            None => Ok(false),
        }
    }

    async fn list(&self) -> Result<Vec<ProxyRoute>> {
        self.routes().await
    }

    async fn reload_certificates(&self) -> Result<()> {
        let _held = self.lock.lock().await;
        let routes = self.routes().await?;
        self.load(&routes, true).await
    }
}
