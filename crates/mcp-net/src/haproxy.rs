//! [`Haproxy`]: the L4 adapter (TLS passthrough by SNI), over a rendered
//! haproxy.cfg and graceful reloads through the master socket.
//!
//! # Why HAProxy for L4, Caddy for L7
//!
//! L4 routes forward the TLS bytes untouched, chosen by the ClientHello's
//! SNI, so the client sees the backend's own certificate. Debian's Caddy
//! (2.6) has no `layer4` module and cannot do that; HAProxy does it in
//! `mode tcp` with `req.ssl_sni`. L7 routes (TLS terminated at the proxy)
//! are Caddy's ([`crate::caddy`]). One proxy port serves one mode, so the
//! two never compete for a port.
//!
//! # Design
//!
//! - HAProxy 2.6 cannot create frontends at run time (the runtime API
//!   changes servers and maps, not binds), so every change renders the
//!   **whole** configuration ([`render`]): per proxy port a frontend
//!   binding `<listen>:<port>` that waits for the ClientHello
//!   (`tcp-request inspect-delay 5s`, `accept if { req_ssl_hello_type 1 }`)
//!   and picks `use_backend` by `req.ssl_sni`; one backend per route,
//!   `mcp_<port>_<hostname with dots as _>`, with `server s1 <backend>`.
//! - A change is validated (`<binary> -c -f <new file>`), written
//!   atomically (a temporary file renamed over the configuration), then
//!   HAProxy is reloaded gracefully through its master socket (`reload`;
//!   old workers finish their connections) and the adapter waits (≤ 5 s)
//!   until `show proc` shows a new worker and `@1 show backend` shows
//!   exactly the new backends. A reload HAProxy refuses (a port in use …)
//!   puts the previous file back and is [`NetError::Rejected`]; the old
//!   worker keeps serving.
//! - The file is the adapter's state: it carries the routes MCP wants, one
//!   `# mcp-route <json>` comment line each. `list` reports those whose
//!   backend the **running** HAProxy has (`@1 show backend`), so an
//!   HAProxy restarted with an empty or foreign configuration lists
//!   nothing, and a dead one is [`NetError::Unreachable`] naming the master
//!   socket. `add` / `remove` start from `list` and run under a mutex, so
//!   concurrent calls of this adapter do not lose each other's changes.
//! - HAProxy is started by whoever runs it as
//!   `haproxy -W -S <master_socket> -f <config>` (master-worker, in the
//!   foreground). The configuration of no routes ([`empty_config`]) has no
//!   listener: HAProxy 2.6's `-c` exits 2 on it ("will not start (no
//!   listener)"), which the adapter accepts, and a master-worker HAProxy
//!   runs it fine.
//! - `reload_certificates` does nothing: passthrough holds no
//!   certificates.

mod master;
mod render;

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

pub use render::empty_config;

use crate::proxy::{ProxyRoute, ProxyRoutes, RouteKey, RouteMode};
use crate::{NetError, Result};

/// How long `haproxy -c` may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the node's HAProxy is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyOptions {
    /// The haproxy.cfg MCP owns and renders (HAProxy runs with `-f` it).
    pub config: PathBuf,
    /// The master socket (HAProxy runs with `-W -S` it).
    pub master_socket: PathBuf,
    /// The `haproxy` binary, for `haproxy -c -f` before every reload.
    pub binary: PathBuf,
    /// The node's address the proxy ports listen on.
    pub listen: IpAddr,
}

/// The node's HAProxy, driven by rendering its configuration and reloading.
#[derive(Debug)]
pub struct Haproxy {
    options: HaproxyOptions,
    master: master::Master,
    /// Held around every read-modify-reload.
    lock: tokio::sync::Mutex<()>,
}

impl Haproxy {
    pub fn new(options: HaproxyOptions) -> Haproxy {
        Haproxy {
            master: master::Master::new(options.master_socket.clone()),
            options,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn config_name(&self) -> String {
        format!("haproxy config {}", self.options.config.display())
    }

    /// The file's routes (none when there is no file yet).
    async fn wanted(&self) -> Result<Vec<ProxyRoute>> {
        match tokio::fs::read_to_string(&self.options.config).await {
            Ok(text) => render::parse(&text, &self.config_name()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(NetError::io(format!("read {}", self.config_name()), e)),
        }
    }

    /// The file's routes the running HAProxy has.
    async fn routes(&self) -> Result<Vec<ProxyRoute>> {
        let running = self.master.backends().await?;
        let mut routes = self.wanted().await?;
        routes.retain(|r| running.contains(&render::backend_name(r)));
        Ok(routes)
    }

    /// Renders, validates, writes and reloads `routes`; on a failed reload
    /// the previous file is put back.
    async fn apply(&self, routes: &[ProxyRoute]) -> Result<()> {
        let text = render::render(self.options.listen, routes)?;
        let config = &self.options.config;
        let tmp = sibling(config, ".mcp-new");
        write(&tmp, &text).await?;
        if let Err(e) = self.check(&tmp).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        let previous = tokio::fs::read_to_string(config).await.ok();
        rename(&tmp, config).await?;
        let expected = render::backend_names(routes);
        if let Err(e) = self.master.reload(&expected, render::BACKEND_PREFIX).await {
            if let Some(previous) = previous {
                let back = sibling(config, ".mcp-previous");
                if write(&back, &previous).await.is_ok() {
                    let _ = rename(&back, config).await;
                }
            }
            return Err(e);
        }
        Ok(())
    }

    /// `haproxy -c -f <file>`; "no listener" (exit 2) is a valid empty
    /// configuration.
    async fn check(&self, file: &Path) -> Result<()> {
        let binary = &self.options.binary;
        let server = format!("{} -c -f {}", binary.display(), file.display());
        let run = tokio::process::Command::new(binary)
            .arg("-c")
            .arg("-f")
            .arg(file)
            .kill_on_drop(true)
            .output();
        let out = match tokio::time::timeout(CHECK_TIMEOUT, run).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(NetError::io(format!("run {server}"), e)),
            Err(_) => {
                return Err(NetError::io(
                    format!("run {server}"),
                    format!("no result within {} s", CHECK_TIMEOUT.as_secs()),
                ))
            }
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() || (out.status.code() == Some(2) && text.contains("no listener")) {
            Ok(())
        } else {
            Err(NetError::rejected(
                server,
                format!("{}: {}", out.status, text.trim()),
            ))
        }
    }
}

/// `path` with `suffix` appended to its file name (same directory, so a
/// rename is atomic).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

async fn write(path: &Path, text: &str) -> Result<()> {
    tokio::fs::write(path, text)
        .await
        .map_err(|e| NetError::io(format!("write {}", path.display()), e))
}

async fn rename(from: &Path, to: &Path) -> Result<()> {
    tokio::fs::rename(from, to)
        .await
        .map_err(|e| NetError::io(format!("rename {} to {}", from.display(), to.display()), e))
}

#[async_trait]
impl ProxyRoutes for Haproxy {
    fn kind(&self) -> &'static str {
        "haproxy"
    }

    fn modes(&self) -> &'static [RouteMode] {
        &[RouteMode::L4]
    }

    async fn add(&self, route: &ProxyRoute) -> Result<()> {
        crate::proxy::check_for(
            route,
            RouteMode::L4,
            "haproxy serves L4 (passthrough) routes only; L7 is Caddy's",
        )?;
        let _held = self.lock.lock().await;
        match crate::proxy::with_route(self.routes().await?, route) {
            Some(routes) => self.apply(&routes).await,
            None => Ok(()),
        }
    }

    async fn remove(&self, key: &RouteKey) -> Result<bool> {
        let _held = self.lock.lock().await;
        match crate::proxy::without_route(self.routes().await?, key) {
            Some(routes) => self.apply(&routes).await.map(|()| true),
            None => Ok(false),
        }
    }

    async fn list(&self) -> Result<Vec<ProxyRoute>> {
        self.routes().await
    }

    async fn reload_certificates(&self) -> Result<()> {
        Ok(())
    }
}
