//! Routes and certificates: what makes a deployed service reachable by
//! name over TLS.
//!
//! # Rules
//!
//! - **Certificate first.** A deploy gets (or reuses) the certificate of
//!   every L7 route's hostname before any container is touched; a failed
//!   issue fails the deploy ([`AgentError::Integration`], retried by the
//!   master), so no route ever points at a missing certificate. The key is
//!   made here ([`mcp_net::cert::new_key_and_csr`]) and written with mode
//!   0600 under `cert_dir/<hostname>/`; only the CSR leaves the node.
//! - **Then the routes**, after the containers: each route of the spec is
//!   added to the proxy of its mode (`listen_port`, hostname → the
//!   component's host port on loopback) and recorded; routes of the
//!   service that left the spec are removed, and certificates no route
//!   uses any more are deleted.
//! - **Conflicts are refused before anything changes**: a hostname and
//!   port routed to another service, or a port serving the other mode.
//! - **Not configured is skipped, never done.** Without a proxy for a
//!   route's mode, or (L7) without an issuer, the route's step is
//!   `skipped` with the reason and nothing is registered.
//! - **The registry is the truth; the proxy is repaired from it.**
//!   [`Agent::check_proxies`] (every `[proxy] check_interval`) adds what a
//!   proxy lost (restarted empty) and removes MCP routes it should not
//!   have.
//! - **Renewal** ([`Agent::renew_certificates`]): a certificate with less
//!   than `renew_before` left (30 days) is issued again with a new key; a
//!   failure is retried with back-off (1 min doubling to 1 h) and alerted,
//!   and the old certificate keeps serving until it expires.
//!
//! `net/files.rs` writes the key and certificate files; `net/routes.rs`
//! the proxy side; this file the settings, certificates and status.

mod files;
mod routes;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mcp_net::cert::{new_key_and_csr, CertIssuer, CertRequest};
use mcp_net::proxy::{ProxyRoutes, RouteMode};
use mcp_runtime::ContainerRuntime;
use mcp_spec::{RouteSpec, ServiceSpec};

use crate::clock::Timestamp;
use crate::monitor::Alert;
use crate::registry::CertRecord;

use super::*;

pub use routes::{ProxyCheck, RouteStatus};

/// Renew when less than this is left (30 days).
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);

/// The node's integrations: its proxies, its certificate issuer, and what
/// names default to. Every part is optional: what is missing makes the
/// steps that need it `skipped`.
#[derive(Clone)]
pub struct Networking {
    /// The proxy serving L7 routes (Caddy).
    pub l7: Option<Arc<dyn ProxyRoutes>>,
    /// The proxy serving L4 routes (HAProxy).
    pub l4: Option<Arc<dyn ProxyRoutes>>,
    pub issuer: Option<Arc<dyn CertIssuer>>,
    /// A route without a hostname is `<service>.<internal_zone>`.
    pub internal_zone: Option<String>,
    /// Where the proxies listen (the node's address), shown in URLs.
    pub proxy_address: Option<IpAddr>,
    /// The fleet CA: backends of routes with backend TLS are verified
    /// against it.
    pub fleet_ca: Option<PathBuf>,
    /// Keys and certificates live in `<cert_dir>/<hostname>/`.
    pub cert_dir: PathBuf,
    pub renew_before: Duration,
}

impl Default for Networking {
    fn default() -> Networking {
        Networking {
            l7: None,
            l4: None,
            issuer: None,
            internal_zone: None,
            proxy_address: None,
            fleet_ca: None,
            cert_dir: PathBuf::from("/var/lib/mcp/certs"),
            renew_before: DEFAULT_RENEW_BEFORE,
        }
    }
}

impl std::fmt::Debug for Networking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Networking")
            .field("l7", &self.l7.as_ref().map(|p| p.kind()))
            .field("l4", &self.l4.as_ref().map(|p| p.kind()))
            .field("issuer", &self.issuer.as_ref().map(|i| i.kind()))
            .field("internal_zone", &self.internal_zone)
            .field("proxy_address", &self.proxy_address)
            .field("cert_dir", &self.cert_dir)
            .finish()
    }
}

impl Networking {
    pub(super) fn proxy(&self, mode: RouteMode) -> Option<&Arc<dyn ProxyRoutes>> {
        match mode {
            RouteMode::L7 => self.l7.as_ref(),
            RouteMode::L4 => self.l4.as_ref(),
        }
    }
}

/// A route of a spec as this node registers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PlannedRoute {
    pub component: String,
    /// `""` for the unnamed route.
    pub route: String,
    pub listen_port: u16,
    pub hostname: String,
    pub mode: RouteMode,
}

/// Back-off of failed renewals: hostname → (next attempt, current delay).
pub(super) type RenewBackoff = BTreeMap<String, (Timestamp, Duration)>;

const RENEW_BACKOFF_FIRST: Duration = Duration::from_secs(60);
const RENEW_BACKOFF_MAX: Duration = Duration::from_secs(3600);

/// A route's hostname: its own (normalised), or `<service>.<zone>`.
pub(super) fn route_hostname(
    zone: Option<&str>,
    service: &str,
    route: &RouteSpec,
) -> Option<String> {
    match &route.hostname {
        Some(h) => Some(mcp_spec::names::normalize_hostname(h)),
        None => zone.map(|z| format!("{service}.{}", z.trim_end_matches('.'))),
    }
}

impl<R: ContainerRuntime + 'static> Agent<R> {
    pub fn with_networking(mut self, net: Networking) -> Agent<R> {
        self.net = net;
        self
    }

    pub fn networking(&self) -> &Networking {
        &self.net
    }

    /// The routes of `spec` (of component `only`, if given) as this node
    /// registers them. A route without a hostname and no internal zone is
    /// refused.
    pub(super) fn planned_routes(
        &self,
        spec: &ServiceSpec,
        only: Option<&str>,
    ) -> Result<Vec<PlannedRoute>> {
        let zone = self.net.internal_zone.as_deref();
        let mut out = Vec::new();
        for c in spec
            .components
            .iter()
            .filter(|c| only.is_none_or(|o| o == c.name))
        {
            for r in &c.routes {
                let hostname = route_hostname(zone, &spec.name, r);
                // Without a proxy for its mode the route is only reported
                // (skipped), so it needs no real name.
                let hostname = match (hostname, self.net.proxy(r.mode)) {
                    (Some(h), _) => h,
                    (None, None) => spec.name.clone(),
                    (None, Some(_)) => {
                        return Err(AgentError::precondition(format!(
                            "service {}: route {} of {} has no hostname and node {} has no \
                         [proxy] internal_zone to name it",
                            spec.name,
                            r.port_env(),
                            c.name,
                            self.node()
                        )))
                    }
                };
                out.push(PlannedRoute {
                    component: c.name.clone(),
                    route: r.name.clone().unwrap_or_default(),
                    listen_port: r.port,
                    hostname,
                    mode: r.mode,
                });
            }
        }
        Ok(out)
    }

    /// Gets (or reuses) the certificate of every L7 route in `planned`
    /// whose proxy is configured. See the module docs.
    pub(super) async fn ensure_certificates(
        &self,
        service: &str,
        planned: &[PlannedRoute],
    ) -> Result<Vec<Step>> {
        let mut steps = Vec::new();
        if self.net.l7.is_none() {
            return Ok(steps);
        }
        let mut hosts: Vec<&str> = planned
            .iter()
            .filter(|p| p.mode == RouteMode::L7)
            .map(|p| p.hostname.as_str())
            .collect();
        hosts.sort();
        hosts.dedup();
        for host in hosts {
            let step = format!("certificate {host}");
            let Some(issuer) = self.net.issuer.clone() else {
                steps.push(Step::skipped(
                    step,
                    format!(
                        "no certificate issuer configured on node {} ([certs]); the L7 route is not registered",
                        self.node()
                    ),
                ));
                continue;
            };
            let h = host.to_string();
            let existing = self.db(move |r| r.certificate(&h)).await?;
            let now = self.now();
            if let Some(c) = existing.filter(|c| {
                c.cert_path.is_file()
                    && c.key_path.is_file()
                    && c.service.as_deref().is_none_or(|s| s == service)
                    && !due(c, now, self.net.renew_before)
            }) {
                steps.push(Step::skipped(
                    step,
                    format!(
                        "unchanged: serial {}, valid until {}",
                        c.serial,
                        c.not_after.to_rfc3339()
                    ),
                ));
                continue;
            }
            let rec = self
                .issue_certificate(&*issuer, host, Some(service))
                .await
                .map_err(|e| AgentError::Integration {
                    message: format!("deploy {service}: {e}"),
                })?;
            steps.push(Step::done(
                step,
                format!(
                    "issued by {}: serial {}, valid until {}",
                    issuer.kind(),
                    rec.serial,
                    rec.not_after.to_rfc3339()
                ),
            ));
        }
        Ok(steps)
    }

    /// Makes a key, has the issuer sign its CSR, writes both files and
    /// records the certificate. The error names the hostname and issuer.
    async fn issue_certificate(
        &self,
        issuer: &dyn CertIssuer,
        hostname: &str,
        service: Option<&str>,
    ) -> Result<CertRecord, String> {
        let what = format!("certificate {hostname} ({})", issuer.kind());
        let names = vec![hostname.to_string()];
        let (key_pem, csr_der) = new_key_and_csr(&names).map_err(|e| format!("{what}: {e}"))?;
        let issued = issuer
            .issue(&CertRequest {
                hostnames: names,
                csr_der,
            })
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        let dir = self.net.cert_dir.join(hostname);
        let chain = issued.chain_pem.clone();
        let (cert_path, key_path) =
            tokio::task::spawn_blocking(move || files::write_pair(&dir, &key_pem, &chain))
                .await
                .map_err(|e| format!("{what}: write task: {e}"))?
                .map_err(|e| format!("{what}: {e}"))?;
        let rec = CertRecord {
            hostname: hostname.to_string(),
            service: service.map(str::to_string),
            serial: issued.info.serial.clone(),
            not_after: Timestamp::from_system(issued.info.not_after),
            cert_path,
            key_path,
            issued_at: self.now(),
        };
        let r = rec.clone();
        self.db(move |reg| reg.upsert_certificate(&r))
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        tracing::info!(hostname, serial = %rec.serial, not_after = %rec.not_after.to_rfc3339(), issuer = issuer.kind(), "certificate issued");
        Ok(rec)
    }

    /// Renews every certificate with less than `renew_before` left (not
    /// waiting in back-off). Returns `renewed <host>` / `failed <host>:
    /// <error>` lines. See the module docs.
    pub async fn renew_certificates(&self) -> Result<Vec<String>> {
        let Some(issuer) = self.net.issuer.clone() else {
            return Ok(Vec::new());
        };
        let now = self.now();
        let certs = self.db(|r| r.certificates()).await?;
        let mut out = Vec::new();
        let mut renewed_any = false;
        for c in certs.iter().filter(|c| due(c, now, self.net.renew_before)) {
            let waiting = self
                .renew_backoff
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&c.hostname)
                .is_some_and(|(next, _)| *next > now);
            if waiting {
                continue;
            }
            match self
                .issue_certificate(&*issuer, &c.hostname, c.service.as_deref())
                .await
            {
                Ok(rec) => {
                    self.renew_backoff
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&c.hostname);
                    renewed_any = true;
                    out.push(format!("renewed {}", c.hostname));
                    let detail = format!(
                        "certificate {} renewed: serial {} → {}, valid until {}",
                        c.hostname,
                        c.serial,
                        rec.serial,
                        rec.not_after.to_rfc3339()
                    );
                    let ev = self.event(
                        c.service.as_deref().unwrap_or(""),
                        "",
                        "cert_renewed",
                        detail,
                    );
                    self.record_events(vec![ev]).await?;
                }
                Err(e) => {
                    let delay = {
                        let mut b = self
                            .renew_backoff
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        let delay = b.get(&c.hostname).map_or(RENEW_BACKOFF_FIRST, |(_, d)| {
                            (*d * 2).min(RENEW_BACKOFF_MAX)
                        });
                        b.insert(c.hostname.clone(), (now.plus(delay), delay));
                        delay
                    };
                    let detail = format!(
                        "renewal of certificate {} failed (the current one, valid until {}, keeps serving; next try in {}): {e}",
                        c.hostname,
                        c.not_after.to_rfc3339(),
                        humantime::format_duration(delay)
                    );
                    tracing::warn!(hostname = %c.hostname, "{detail}");
                    out.push(format!("failed {}: {e}", c.hostname));
                    let service = c.service.clone().unwrap_or_default();
                    let ev = self.event(&service, "", "cert_renewal_failed", detail.clone());
                    self.record_events(vec![ev]).await?;
                    if let Some(a) = &self.alerter {
                        let alert = Alert {
                            key: format!("cert-renewal:{}", c.hostname),
                            service,
                            component: String::new(),
                            event: "cert_renewal_failed".to_string(),
                            detail,
                            node: String::new(),
                        };
                        if let Err(e) = a.send(&alert).await {
                            tracing::error!(key = %alert.key, error = %e, "alert not sent");
                        }
                    }
                }
            }
        }
        if renewed_any {
            if let Some(p) = &self.net.l7 {
                p.reload_certificates()
                    .await
                    .map_err(|e| AgentError::Integration {
                        message: format!("reload certificates on the {} proxy: {e}", p.kind()),
                    })?;
            }
        }
        Ok(out)
    }

    /// Every `interval` until `shutdown`: repair the proxies from the
    /// registry, then renew what is due. Does nothing without a proxy or an
    /// issuer.
    pub async fn run_net_checks(
        &self,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        if self.net.l7.is_none() && self.net.l4.is_none() && self.net.issuer.is_none() {
            return;
        }
        super::monitor_loop::every(interval, shutdown, || async {
            if let Err(e) = self.check_proxies().await {
                tracing::error!(error = %e, "proxy check failed");
            }
            match self.renew_certificates().await {
                Ok(out) => {
                    for line in out {
                        tracing::info!("certificate renewal: {line}");
                    }
                }
                Err(e) => tracing::error!(error = %e, "certificate renewal failed"),
            }
        })
        .await;
    }

    /// Deletes the certificates of `service` that no recorded route uses.
    pub(super) async fn prune_certificates(&self, service: &str) -> Result<Vec<Step>> {
        let svc = service.to_string();
        let gone = self
            .db(move |r| {
                let used: BTreeSet<String> = r
                    .routes(None)?
                    .into_iter()
                    .filter_map(|x| x.cert_hostname)
                    .collect();
                let mut gone = Vec::new();
                for c in r.certificates()? {
                    if c.service.as_deref() == Some(svc.as_str()) && !used.contains(&c.hostname) {
                        r.remove_certificate(&c.hostname)?;
                        gone.push(c);
                    }
                }
                Ok(gone)
            })
            .await?;
        let mut steps = Vec::new();
        for c in gone {
            let dir = c.cert_path.parent().map(PathBuf::from);
            if let Some(dir) = dir.filter(|d| d.starts_with(&self.net.cert_dir)) {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove certificate files");
                }
            }
            steps.push(Step::done(
                format!("remove certificate {}", c.hostname),
                format!("serial {}", c.serial),
            ));
        }
        Ok(steps)
    }
}

fn due(c: &CertRecord, now: Timestamp, margin: Duration) -> bool {
    now.plus(margin) >= c.not_after
}
