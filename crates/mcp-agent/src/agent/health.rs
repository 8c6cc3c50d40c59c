//! Health checks in the agent: the verdict of every checked component
//! that runs ([`crate::health::Tracker`], kept in memory: a restarted agent
//! starts them all at `starting`), the probe loop ([`Agent::run_health`]),
//! the deploy gate (a deploy succeeds only when its checked components turn
//! healthy within `[health] deploy_timeout`) and what status reads.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use mcp_runtime::ContainerRuntime;
use mcp_spec::ComponentSpec;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::health::{HealthState, Probe, ProbeResult, Tracker};
use crate::registry::{DesiredState, ObservedState};

use super::*;

/// The longest the probe loop sleeps (it also notices new targets then).
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// How often the loop re-reads which components run with a check.
const TARGETS_REFRESH: Duration = Duration::from_secs(2);

type Key = (String, String);

/// One checked component that should be probed.
#[derive(Debug, Clone)]
pub(super) struct Target {
    key: Key,
    probe: Probe,
    interval: Duration,
}

#[derive(Debug)]
struct Entry {
    tracker: Tracker,
    next: Instant,
    /// A deploy's gate probes it: the loop leaves it alone.
    gated: bool,
}

/// The agent's health book: trackers, and the loop's cached targets.
#[derive(Debug, Default)]
pub(super) struct HealthBook {
    entries: BTreeMap<Key, Entry>,
    targets: Vec<Target>,
    refreshed: Option<Instant>,
    dirty: bool,
}

impl<R: ContainerRuntime + 'static> Agent<R> {
    fn book(&self) -> std::sync::MutexGuard<'_, HealthBook> {
        self.health_book
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets the verdict of `service`'s components (`component`, or
    /// all): their containers were (re)created, started or stopped, so
    /// they start over at `starting`.
    pub(super) fn reset_health(&self, service: &str, component: Option<&str>) {
        let mut book = self.book();
        book.entries
            .retain(|(s, c), _| s != service || component.is_some_and(|only| only != c));
        book.dirty = true;
    }

    /// Where probes connect: the publish address, loopback when it is a
    /// wildcard.
    fn probe_ip(&self) -> IpAddr {
        match self.settings.bind_address {
            IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            a => a,
        }
    }

    /// The probe of `comp`'s check against its route's host port; `None`
    /// without a check or a port.
    pub(super) fn probe_of(
        &self,
        comp: &ComponentSpec,
        ports: &BTreeMap<String, u16>,
    ) -> Option<(Probe, Duration)> {
        let h = comp.health.as_ref()?;
        let route = match &h.route {
            Some(r) => r.clone(),
            None => comp.routes.first()?.name.clone().unwrap_or_default(),
        };
        let port = *ports.get(&route)?;
        Some((
            Probe {
                kind: h.kind,
                addr: SocketAddr::new(self.probe_ip(), port),
                path: h.path.clone().unwrap_or_else(|| "/".to_string()),
                status: h.status,
                timeout: h.timeout,
            },
            h.interval,
        ))
    }

    /// Every component desired and observed running that has a check.
    async fn health_targets(&self) -> Result<Vec<Target>> {
        let (records, ports) = self
            .db(|r| Ok((r.list_services()?, r.ports(None)?)))
            .await?;
        let ports = ports_by_component(&ports);
        let mut out = Vec::new();
        for rec in &records {
            for c in &rec.components {
                if c.desired != DesiredState::Running || c.observed != ObservedState::Running {
                    continue;
                }
                let Some(spec) = rec.spec.component(&c.name) else {
                    continue;
                };
                let key = (c.service.clone(), c.name.clone());
                let Some(p) = ports.get(&key) else { continue };
                if let Some((probe, interval)) = self.probe_of(spec, p) {
                    out.push(Target {
                        key,
                        probe,
                        interval,
                    });
                }
            }
        }
        Ok(out)
    }

    /// One round of the probe loop: probes what is due, returns when the
    /// next probe is.
    pub async fn health_round(&self) -> Result<Instant> {
        let now = Instant::now();
        let refresh = {
            let book = self.book();
            book.dirty
                || book
                    .refreshed
                    .is_none_or(|t| now.duration_since(t) >= TARGETS_REFRESH)
        };
        if refresh {
            let targets = self.health_targets().await?;
            let mut book = self.book();
            book.entries
                .retain(|k, e| e.gated || targets.iter().any(|t| &t.key == k));
            book.targets = targets;
            book.refreshed = Some(now);
            book.dirty = false;
        }
        let grace = self.settings.health.deploy_timeout;
        let due: Vec<Target> = {
            let mut book = self.book();
            let targets = book.targets.clone();
            targets
                .into_iter()
                .filter(|t| {
                    let e = book.entries.entry(t.key.clone()).or_insert_with(|| Entry {
                        tracker: Tracker::new(now, grace),
                        next: now,
                        gated: false,
                    });
                    !e.gated && e.next <= now
                })
                .collect()
        };
        let mut probes = JoinSet::new();
        for t in due {
            probes.spawn(async move {
                let r = t.probe.run().await;
                (t, r)
            });
        }
        while let Some(done) = probes.join_next().await {
            let Ok((t, r)) = done else { continue };
            self.record_probe(&t, &r);
        }
        let book = self.book();
        let next = book
            .entries
            .values()
            .filter(|e| !e.gated)
            .map(|e| e.next)
            .min()
            .unwrap_or(now + MAX_SLEEP);
        Ok(next.min(Instant::now() + MAX_SLEEP))
    }

    fn record_probe(&self, t: &Target, r: &ProbeResult) {
        let now = Instant::now();
        let health = &self.settings.health;
        let mut book = self.book();
        let Some(e) = book.entries.get_mut(&t.key) else {
            return;
        };
        let before = e.tracker.state;
        e.tracker.record(r, now);
        e.next = now
            + e.tracker
                .interval(t.interval, health.start_interval, health.max_interval);
        let after = e.tracker.state;
        if before != after {
            let (svc, comp) = &t.key;
            match after {
                HealthState::Unhealthy => tracing::warn!(
                    service = %svc, component = %comp, check = %t.probe.describe(),
                    output = %r.output, "component unhealthy"
                ),
                _ => tracing::info!(
                    service = %svc, component = %comp, health = %after, "component health"
                ),
            }
        }
    }

    /// The probe loop: until `shutdown`, probes every running checked
    /// component on its interval (see [`crate::health`]).
    pub async fn run_health(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let next = match self.health_round().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "health round failed");
                    Instant::now() + MAX_SLEEP
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep_until(next) => {}
            }
        }
    }

    /// `service/component: unhealthy (check: output)` for every
    /// unhealthy component.
    pub(super) fn unhealthy_components(&self) -> Vec<String> {
        let book = self.book();
        book.entries
            .iter()
            .filter(|(_, e)| e.tracker.state == HealthState::Unhealthy)
            .map(|((s, c), e)| format!("{s}/{c}: unhealthy: {}", e.tracker.detail))
            .collect()
    }

    /// Fills in the health of running components.
    pub(super) fn attach_health(&self, services: &mut [ServiceStatus]) {
        let book = self.book();
        for s in services {
            for c in &mut s.components {
                if c.observed != ObservedState::Running {
                    continue;
                }
                if let Some(e) = book.entries.get(&(s.name.clone(), c.name.clone())) {
                    c.health = Some(e.tracker.state);
                    c.health_detail.clone_from(&e.tracker.detail);
                }
            }
        }
    }

    /// The deploy gate: probes `checks` (component, probe, interval) until
    /// each has passed once, at most `[health] deploy_timeout`. `fresh`
    /// components (their containers were just created or started) start
    /// over at `starting`. On failure, the message names every component
    /// that did not pass, its check and the last output.
    pub(super) async fn await_healthy(
        &self,
        service: &str,
        checks: Vec<(String, Probe, Duration)>,
    ) -> std::result::Result<(), String> {
        if checks.is_empty() {
            return Ok(());
        }
        let health = self.settings.health;
        let start = Instant::now();
        let deadline = start + health.deploy_timeout;
        {
            let mut book = self.book();
            for (comp, _, _) in &checks {
                let e = book
                    .entries
                    .entry((service.to_string(), comp.clone()))
                    .or_insert_with(|| Entry {
                        tracker: Tracker::new(start, health.deploy_timeout),
                        next: start,
                        gated: false,
                    });
                e.tracker = Tracker::new(start, health.deploy_timeout);
                e.gated = true;
            }
        }
        let mut pending: Vec<(String, Probe, Duration, Option<ProbeResult>)> = checks
            .into_iter()
            .map(|(c, p, i)| (c, p, i, None))
            .collect();
        loop {
            let mut probes = JoinSet::new();
            for (i, (_, p, _, _)) in pending.iter().enumerate() {
                let p = p.clone();
                probes.spawn(async move { (i, p.run().await) });
            }
            let mut results = Vec::new();
            while let Some(done) = probes.join_next().await {
                if let Ok(x) = done {
                    results.push(x);
                }
            }
            let now = Instant::now();
            {
                let mut book = self.book();
                for (i, r) in &results {
                    let (comp, _, interval, last) = &mut pending[*i];
                    if let Some(e) = book.entries.get_mut(&(service.to_string(), comp.clone())) {
                        e.tracker.record(r, now);
                        if r.passed {
                            e.gated = false;
                            e.next = now
                                + e.tracker.interval(
                                    *interval,
                                    health.start_interval,
                                    health.max_interval,
                                );
                        }
                    }
                    *last = Some(r.clone());
                }
            }
            pending.retain(|(_, _, _, last)| !last.as_ref().is_some_and(|r| r.passed));
            if pending.is_empty() {
                return Ok(());
            }
            if now >= deadline {
                let mut book = self.book();
                let why: Vec<String> = pending
                    .iter()
                    .map(|(comp, p, _, last)| {
                        if let Some(e) = book.entries.get_mut(&(service.to_string(), comp.clone()))
                        {
                            e.gated = false;
                            e.tracker.state = HealthState::Unhealthy;
                            e.next = now;
                        }
                        format!(
                            "{comp}: {}: {}",
                            p.describe(),
                            last.as_ref()
                                .map_or("no probe finished", |r| r.output.as_str())
                        )
                    })
                    .collect();
                return Err(format!(
                    "not healthy within {}: {}",
                    humantime::format_duration(health.deploy_timeout),
                    why.join("; ")
                ));
            }
            let pause = pending
                .iter()
                .map(|(_, _, i, _)| (*i).min(health.start_interval))
                .min()
                .unwrap_or(health.start_interval);
            tokio::time::sleep_until((now + pause).min(deadline)).await;
        }
    }
}
