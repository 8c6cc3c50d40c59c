//! The proxy side: conflicts, registering a service's routes, removing
//! them, repairing the proxies from the registry, routes in the status,
//! and the routes added by `AddProxyRoute`.

use std::collections::{BTreeMap, BTreeSet};

use mcp_net::proxy::{ProxyRoute, RouteKey, RouteMode};
use mcp_runtime::ContainerRuntime;

use crate::ports::PortAssignment;
use crate::registry::{CertRecord, RouteRecord};

use super::super::*;
use super::PlannedRoute;

/// What [`Agent::check_proxies`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyCheck {
    /// `host:port` of routes added back (the proxy had lost them).
    pub restored: Vec<String>,
    /// `host:port` of MCP routes the proxy had and the registry does not.
    pub removed: Vec<String>,
    /// Proxies that could not be checked, with why.
    pub errors: Vec<String>,
}

/// A route in a component's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteStatus {
    /// `""` for the unnamed route.
    pub route: String,
    pub hostname: String,
    pub listen_port: u16,
    pub mode: RouteMode,
    /// `https://<hostname>:<listen_port>`.
    pub url: String,
    /// Where the proxy listens (the node's address), if known.
    pub proxy_address: Option<String>,
    pub backend: String,
    pub cert_serial: Option<String>,
    pub cert_expires: Option<Timestamp>,
}

fn key_text(k: &RouteKey) -> String {
    format!("{}:{}", k.hostname, k.listen_port)
}

impl<R: ContainerRuntime + 'static> Agent<R> {
    /// Refuses routes that clash with another service's (same hostname
    /// and port) or with the mode a port already serves.
    pub(in crate::agent) async fn check_route_conflicts(
        &self,
        service: &str,
        planned: &[PlannedRoute],
    ) -> Result<()> {
        let existing = self.db(|r| r.routes(None)).await?;
        for p in planned.iter().filter(|p| self.net.proxy(p.mode).is_some()) {
            for e in &existing {
                if e.service == service {
                    continue;
                }
                if e.proxy.listen_port == p.listen_port && e.proxy.hostname == p.hostname {
                    let owner = if e.service.is_empty() {
                        "a route added by AddProxyRoute".to_string()
                    } else {
                        format!("service {}", e.service)
                    };
                    return Err(AgentError::precondition(format!(
                        "service {service}: {}:{} on node {} is already routed to {owner}",
                        p.hostname,
                        p.listen_port,
                        self.node()
                    )));
                }
                if e.proxy.listen_port == p.listen_port && e.proxy.mode != p.mode {
                    return Err(AgentError::precondition(format!(
                        "service {service}: port {} on node {} serves {} routes ({} of {}); \
                         a {} route cannot share it",
                        p.listen_port,
                        self.node(),
                        e.proxy.mode.as_str(),
                        e.proxy.hostname,
                        e.service,
                        p.mode.as_str()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Adds the planned routes to their proxies and records them; removes
    /// the service's routes (of component `only`, if given) that are no
    /// longer planned, then unused certificates.
    pub(in crate::agent) async fn register_routes(
        &self,
        service: &str,
        planned: &[PlannedRoute],
        ports: &[PortAssignment],
        only: Option<&str>,
    ) -> Result<Vec<Step>> {
        let mut steps = Vec::new();
        let svc = service.to_string();
        let recorded = self.db(move |r| r.routes(Some(&svc))).await?;
        let now = self.now();
        let mut kept = BTreeSet::new();
        for p in planned {
            let step = format!("route {}:{}", p.hostname, p.listen_port);
            let Some(proxy) = self.net.proxy(p.mode) else {
                steps.push(Step::skipped(
                    step,
                    format!(
                        "no {} proxy configured on node {} ([proxy.{}])",
                        p.mode.as_str().to_uppercase(),
                        self.node(),
                        p.mode.as_str()
                    ),
                ));
                continue;
            };
            let Some(port) = ports.iter().find(|a| {
                a.component == p.component && a.route.as_deref().unwrap_or("") == p.route
            }) else {
                return Err(AgentError::Internal {
                    message: format!("service {service}: no host port for route {step}"),
                });
            };
            let tls = if p.mode == RouteMode::L7 {
                let h = p.hostname.clone();
                match self.db(move |r| r.certificate(&h)).await? {
                    Some(c) => Some(mcp_net::TlsFiles {
                        cert: c.cert_path,
                        key: c.key_path,
                    }),
                    None => {
                        steps.push(Step::skipped(
                            step,
                            "no certificate for the hostname: the L7 route is not registered",
                        ));
                        continue;
                    }
                }
            } else {
                None
            };
            let route = ProxyRoute {
                listen_port: p.listen_port,
                hostname: p.hostname.clone(),
                backend: format!("127.0.0.1:{}", port.port),
                mode: p.mode,
                tls,
                backend_tls: None,
            };
            let same = recorded.iter().any(|r| r.proxy == route);
            proxy
                .add(&route)
                .await
                .map_err(|e| AgentError::Integration {
                    message: format!(
                        "deploy {service}: {step} on the {} proxy: {e}",
                        proxy.kind()
                    ),
                })?;
            let rec = RouteRecord {
                service: service.to_string(),
                component: p.component.clone(),
                route: p.route.clone(),
                cert_hostname: (p.mode == RouteMode::L7).then(|| p.hostname.clone()),
                proxy: route.clone(),
                created_at: now,
            };
            self.db(move |r| r.upsert_route(&rec)).await?;
            kept.insert(route.key());
            let detail = format!(
                "{} → {} ({})",
                self.route_url(&route),
                route.backend,
                p.mode.as_str()
            );
            steps.push(if same {
                Step::skipped(step, format!("unchanged: {detail}"))
            } else {
                Step::done(step, detail)
            });
        }
        for r in recorded {
            if kept.contains(&r.proxy.key()) || only.is_some_and(|o| o != r.component) {
                continue;
            }
            steps.push(self.unregister(&r, "no longer in the spec").await?);
        }
        steps.extend(self.prune_certificates(service).await?);
        Ok(steps)
    }

    /// Forgets one route and removes it from its proxy (a proxy that
    /// cannot be reached is cleaned up by the next proxy check).
    async fn unregister(&self, r: &RouteRecord, why: &str) -> Result<Step> {
        let key = r.proxy.key();
        let (port, host) = (key.listen_port, key.hostname.clone());
        self.db(move |reg| reg.remove_route(port, &host)).await?;
        let step = format!("remove route {}", key_text(&key));
        let Some(proxy) = self.net.proxy(r.proxy.mode) else {
            return Ok(Step::done(step, format!("{why}; no proxy configured")));
        };
        Ok(match proxy.remove(&key).await {
            Ok(_) => Step::done(step, why),
            Err(e) => {
                tracing::warn!(route = %key_text(&key), error = %e, "route forgotten; the proxy check removes it from the proxy");
                Step::done(
                    step,
                    format!(
                        "{why}; the {} proxy: {e} (removed at its next check)",
                        proxy.kind()
                    ),
                )
            }
        })
    }

    /// Removes every route of `service` and its certificates (undeploy).
    pub(in crate::agent) async fn remove_service_routes(&self, service: &str) -> Result<Vec<Step>> {
        let svc = service.to_string();
        let recorded = self.db(move |r| r.routes(Some(&svc))).await?;
        let mut steps = Vec::new();
        for r in &recorded {
            steps.push(self.unregister(r, "service undeployed").await?);
        }
        steps.extend(self.prune_certificates(service).await?);
        Ok(steps)
    }

    /// Compares each proxy with the registry: adds what the proxy lost,
    /// removes MCP routes it should not have. See the module docs.
    pub async fn check_proxies(&self) -> Result<ProxyCheck> {
        let recorded = self.db(|r| r.routes(None)).await?;
        let mut out = ProxyCheck::default();
        // One adapter may serve both modes: check each adapter once, with
        // the modes it serves here.
        let mut proxies: Vec<(&Arc<dyn mcp_net::ProxyRoutes>, Vec<RouteMode>)> = Vec::new();
        for mode in [RouteMode::L7, RouteMode::L4] {
            let Some(p) = self.net.proxy(mode) else {
                continue;
            };
            match proxies.iter_mut().find(|(q, _)| Arc::ptr_eq(q, p)) {
                Some((_, modes)) => modes.push(mode),
                None => proxies.push((p, vec![mode])),
            }
        }
        for (proxy, modes) in proxies {
            let live = match proxy.list().await {
                Ok(l) => l,
                Err(e) => {
                    out.errors.push(format!("{} proxy: {e}", proxy.kind()));
                    continue;
                }
            };
            let live: BTreeMap<RouteKey, ProxyRoute> =
                live.into_iter().map(|r| (r.key(), r)).collect();
            let want: BTreeMap<RouteKey, &ProxyRoute> = recorded
                .iter()
                .filter(|r| {
                    modes.contains(&r.proxy.mode)
                        && (r.proxy.mode == RouteMode::L4 || r.proxy.tls.is_some())
                })
                .map(|r| (r.proxy.key(), &r.proxy))
                .collect();
            for (k, r) in &want {
                if live.get(k) == Some(*r) {
                    continue;
                }
                match proxy.add(r).await {
                    Ok(()) => out.restored.push(key_text(k)),
                    Err(e) => {
                        out.errors
                            .push(format!("{} proxy: add {}: {e}", proxy.kind(), key_text(k)))
                    }
                }
            }
            for k in live.keys().filter(|k| !want.contains_key(*k)) {
                match proxy.remove(k).await {
                    Ok(_) => out.removed.push(key_text(k)),
                    Err(e) => out.errors.push(format!(
                        "{} proxy: remove {}: {e}",
                        proxy.kind(),
                        key_text(k)
                    )),
                }
            }
        }
        if !out.restored.is_empty() || !out.removed.is_empty() {
            tracing::warn!(restored = ?out.restored, removed = ?out.removed, "proxy repaired from the registry");
        }
        for e in &out.errors {
            tracing::warn!(error = %e, "proxy check");
        }
        Ok(out)
    }

    /// `https://<hostname>:<port>`.
    pub(in crate::agent) fn route_url(&self, r: &ProxyRoute) -> String {
        format!("https://{}:{}", r.hostname, r.listen_port)
    }

    /// Fills each component's routes from the registry.
    pub(in crate::agent) async fn attach_routes(
        &self,
        services: &mut [ServiceStatus],
    ) -> Result<()> {
        let (routes, certs) = self
            .db(|r| Ok((r.routes(None)?, r.certificates()?)))
            .await?;
        if routes.is_empty() {
            return Ok(());
        }
        let certs: BTreeMap<String, _> =
            certs.into_iter().map(|c| (c.hostname.clone(), c)).collect();
        let address = self.net.proxy_address.map(|a| a.to_string());
        for s in services.iter_mut() {
            for c in s.components.iter_mut() {
                c.routes = routes
                    .iter()
                    .filter(|r| r.service == s.name && r.component == c.name)
                    .map(|r| {
                        let cert = r.cert_hostname.as_ref().and_then(|h| certs.get(h));
                        RouteStatus {
                            route: r.route.clone(),
                            hostname: r.proxy.hostname.clone(),
                            listen_port: r.proxy.listen_port,
                            mode: r.proxy.mode,
                            url: self.route_url(&r.proxy),
                            proxy_address: address.clone(),
                            backend: r.proxy.backend.clone(),
                            cert_serial: cert.map(|c| c.serial.clone()),
                            cert_expires: cert.map(|c| c.not_after),
                        }
                    })
                    .collect();
            }
        }
        Ok(())
    }

    // ----- AddProxyRoute / RemoveProxyRoute / ListProxyRoutes -------------

    /// Adds a route that belongs to no service (an operator's or the
    /// master's): for L7 a certificate for its hostname is obtained first.
    pub async fn add_proxy_route(&self, mut route: ProxyRoute) -> Result<Vec<Step>> {
        let key = route.key();
        let step = format!("route {}", key_text(&key));
        let Some(proxy) = self.net.proxy(route.mode).cloned() else {
            return Err(AgentError::precondition(format!(
                "node {} has no {} proxy configured ([proxy.{}])",
                self.node(),
                route.mode.as_str().to_uppercase(),
                route.mode.as_str()
            )));
        };
        let planned = PlannedRoute {
            component: String::new(),
            route: String::new(),
            listen_port: route.listen_port,
            hostname: route.hostname.clone(),
            mode: route.mode,
        };
        self.check_route_conflicts("", std::slice::from_ref(&planned))
            .await?;
        let mut steps = Vec::new();
        if route.mode == RouteMode::L7 {
            if self.net.issuer.is_none() {
                return Err(AgentError::precondition(format!(
                    "node {} has no certificate issuer ([certs]): an L7 route needs one",
                    self.node()
                )));
            }
            steps.extend(
                self.ensure_certificates("", std::slice::from_ref(&planned))
                    .await?,
            );
            let h = route.hostname.clone();
            let cert =
                self.db(move |r| r.certificate(&h))
                    .await?
                    .ok_or_else(|| AgentError::Internal {
                        message: format!("{step}: the certificate was not recorded"),
                    })?;
            route.tls = Some(mcp_net::TlsFiles {
                cert: cert.cert_path,
                key: cert.key_path,
            });
        }
        route.check().map_err(|e| AgentError::InvalidArgument {
            message: e.to_string(),
        })?;
        proxy
            .add(&route)
            .await
            .map_err(|e| AgentError::Integration {
                message: format!("{step} on the {} proxy: {e}", proxy.kind()),
            })?;
        let rec = RouteRecord {
            service: String::new(),
            component: String::new(),
            route: String::new(),
            cert_hostname: (route.mode == RouteMode::L7).then(|| route.hostname.clone()),
            proxy: route.clone(),
            created_at: self.now(),
        };
        self.db(move |r| r.upsert_route(&rec)).await?;
        steps.push(Step::done(
            step,
            format!("{} → {}", self.route_url(&route), route.backend),
        ));
        Ok(steps)
    }

    /// Removes a route added by [`Agent::add_proxy_route`]; a service's
    /// routes are removed by undeploying it.
    pub async fn remove_proxy_route(&self, key: RouteKey) -> Result<Vec<Step>> {
        let recorded = self.db(|r| r.routes(Some(""))).await?;
        let Some(rec) = recorded.into_iter().find(|r| r.proxy.key() == key) else {
            let all = self.db(|r| r.routes(None)).await?;
            if let Some(r) = all.iter().find(|r| r.proxy.key() == key) {
                return Err(AgentError::precondition(format!(
                    "route {} belongs to service {}: undeploy the service or change its file",
                    key_text(&key),
                    r.service
                )));
            }
            return Err(AgentError::InvalidArgument {
                message: format!("no route {} on node {}", key_text(&key), self.node()),
            });
        };
        let mut steps = vec![self.unregister(&rec, "removed by request").await?];
        steps.extend(self.prune_certificates("").await?);
        Ok(steps)
    }

    /// Every route the agent registered, with its owner, and every
    /// certificate it holds.
    pub async fn routes_and_certificates(&self) -> Result<(Vec<RouteRecord>, Vec<CertRecord>)> {
        self.db(|r| Ok((r.routes(None)?, r.certificates()?))).await
    }
}
