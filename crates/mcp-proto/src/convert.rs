//! Conversions between the spec types of `mcp-spec` and their protocol
//! messages.
//!
//! Domain → protocol (`From`) cannot fail. Protocol → domain (`TryFrom`)
//! re-validates with exactly the rules the file loader applies
//! ([`mcp_spec::validate()`]), so a spec that arrives over the wire is as valid
//! as one read from a file; every problem is reported with its field path.
//!
//! Proto3 has no "unset" for scalars, so the empty value means the default or
//! "not set": `tier` `""` is `worker`, route `mode` `""` is `l7`, empty
//! `node`, `network`, `user`, `restart`, route `name`/`hostname`, health
//! `route`/`path` are `None`, a `timeout_ms`/`interval_ms` of 0 is the
//! default, and snapshot `method` `""` is the default method. The public
//! domain rule is not checked here (the master checks public hostnames
//! against its own configuration).

use std::time::Duration;

use mcp_spec::validate::{
    self, index, join, parse_health_kind, parse_port, parse_route_mode, parse_snapshot_method,
    parse_tier, path_within, Violation,
};
use mcp_spec::{
    ComponentSpec, HealthCheck, HealthKind, LoadOptions, RouteMode, RouteSpec, ServiceSpec,
    SnapshotConfig, SnapshotMethod, Tier,
};

use crate::pb;

/// A protocol message that does not hold a valid spec. Lists every problem,
/// each with the field path relative to the converted message (e.g.
/// `components[1].routes[0].mode`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {}", list(.violations))]
pub struct InvalidSpec {
    /// The message converted: `service spec`, `component`, `route`,
    /// `health check` or `snapshot config`.
    pub what: &'static str,
    /// At least one.
    pub violations: Vec<Violation>,
}

fn list(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

// ---------------------------------------------------------------------------
// Domain → protocol

impl From<&ServiceSpec> for pb::ServiceSpec {
    fn from(s: &ServiceSpec) -> Self {
        pb::ServiceSpec {
            name: s.name.clone(),
            active: s.active,
            components: s.components.iter().map(Into::into).collect(),
            tier: s.tier.as_str().to_string(),
            node: s.node.clone().unwrap_or_default(),
            snapshot: s.snapshot.as_ref().map(Into::into),
            no_rollback: !s.rollback,
        }
    }
}

impl From<ServiceSpec> for pb::ServiceSpec {
    fn from(s: ServiceSpec) -> Self {
        (&s).into()
    }
}

impl From<&ComponentSpec> for pb::ComponentSpec {
    fn from(c: &ComponentSpec) -> Self {
        pb::ComponentSpec {
            name: c.name.clone(),
            image: c.image.clone(),
            volumes: c.volumes.clone(),
            cmd: c.cmd.clone(),
            env: c.env.clone(),
            network: c.network.clone().unwrap_or_default(),
            user: c.user.clone().unwrap_or_default(),
            restart: c.restart.clone().unwrap_or_default(),
            routes: c.routes.iter().map(Into::into).collect(),
            health: c.health.as_ref().map(Into::into),
        }
    }
}

impl From<&RouteSpec> for pb::RouteSpec {
    fn from(r: &RouteSpec) -> Self {
        pb::RouteSpec {
            name: r.name.clone().unwrap_or_default(),
            port: u32::from(r.port),
            mode: r.mode.as_str().to_string(),
            hostname: r.hostname.clone().unwrap_or_default(),
            public: r.public,
        }
    }
}

impl From<&HealthCheck> for pb::HealthCheckSpec {
    fn from(h: &HealthCheck) -> Self {
        pb::HealthCheckSpec {
            kind: h.kind.as_str().to_string(),
            route: h.route.clone().unwrap_or_default(),
            path: h.path.clone().unwrap_or_default(),
            timeout_ms: millis(h.timeout),
            interval_ms: millis(h.interval),
            status: h.status.map_or(0, u32::from),
        }
    }
}

impl From<&SnapshotConfig> for pb::SnapshotConfig {
    fn from(s: &SnapshotConfig) -> Self {
        pb::SnapshotConfig {
            method: s.method.to_config_string(),
            excludes: s.exclude.clone(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------
// Protocol → domain

impl TryFrom<pb::ServiceSpec> for ServiceSpec {
    type Error = InvalidSpec;

    fn try_from(m: pb::ServiceSpec) -> Result<Self, Self::Error> {
        let mut cx = Cx::default();
        let spec = cx.service(m);
        cx.finish("service spec", spec, |s| {
            validate::validate(s, &LoadOptions::wire())
        })
    }
}

impl TryFrom<pb::ComponentSpec> for ComponentSpec {
    type Error = InvalidSpec;

    fn try_from(m: pb::ComponentSpec) -> Result<Self, Self::Error> {
        let mut cx = Cx::default();
        let c = cx.component(m, "");
        cx.finish("component", c, |c| {
            validate::validate_component(c, &LoadOptions::wire())
        })
    }
}

impl TryFrom<pb::RouteSpec> for RouteSpec {
    type Error = InvalidSpec;

    fn try_from(m: pb::RouteSpec) -> Result<Self, Self::Error> {
        let mut cx = Cx::default();
        let r = cx.route(m, "");
        cx.finish("route", r, |r| {
            validate::validate_route(r, &LoadOptions::wire())
        })
    }
}

impl TryFrom<pb::HealthCheckSpec> for HealthCheck {
    type Error = InvalidSpec;

    fn try_from(m: pb::HealthCheckSpec) -> Result<Self, Self::Error> {
        let mut cx = Cx::default();
        let h = cx.health(m, "");
        cx.finish("health check", h, validate::validate_health)
    }
}

impl TryFrom<pb::SnapshotConfig> for SnapshotConfig {
    type Error = InvalidSpec;

    fn try_from(m: pb::SnapshotConfig) -> Result<Self, Self::Error> {
        let mut cx = Cx::default();
        let s = cx.snapshot(m, "");
        cx.finish("snapshot config", s, validate::validate_snapshot)
    }
}

/// Collects decoding problems; where a field cannot be decoded, a
/// placeholder goes into the value and the path is marked, so the shared
/// rules do not report it a second time.
#[derive(Default)]
struct Cx {
    violations: Vec<Violation>,
    /// Paths whose (placeholder) values the shared rules must not judge.
    suppressed: Vec<String>,
}

impl Cx {
    fn bad(&mut self, path: String, message: String) {
        self.suppressed.push(path.clone());
        self.violations.push(Violation::new(path, message));
    }

    fn finish<T>(
        mut self,
        what: &'static str,
        value: T,
        rules: impl FnOnce(&T) -> Vec<Violation>,
    ) -> Result<T, InvalidSpec> {
        let suppressed = std::mem::take(&mut self.suppressed);
        self.violations.extend(
            rules(&value)
                .into_iter()
                .filter(|v| !suppressed.iter().any(|p| path_within(&v.path, p))),
        );
        if self.violations.is_empty() {
            Ok(value)
        } else {
            Err(InvalidSpec {
                what,
                violations: self.violations,
            })
        }
    }

    fn service(&mut self, m: pb::ServiceSpec) -> ServiceSpec {
        let tier = if m.tier.is_empty() {
            Tier::default()
        } else {
            parse_tier(&m.tier).unwrap_or_else(|e| {
                self.bad("tier".into(), e);
                Tier::default()
            })
        };
        ServiceSpec {
            name: m.name,
            tier,
            node: non_empty(m.node),
            active: m.active,
            rollback: !m.no_rollback,
            snapshot: m.snapshot.map(|s| self.snapshot(s, "snapshot")),
            components: m
                .components
                .into_iter()
                .enumerate()
                .map(|(i, c)| self.component(c, &index("components", i)))
                .collect(),
        }
    }

    fn snapshot(&mut self, m: pb::SnapshotConfig, prefix: &str) -> SnapshotConfig {
        let method = parse_snapshot_method(&m.method).unwrap_or_else(|e| {
            self.bad(join(prefix, "method"), e);
            SnapshotMethod::Default
        });
        SnapshotConfig {
            method,
            exclude: m.excludes,
        }
    }

    fn component(&mut self, m: pb::ComponentSpec, prefix: &str) -> ComponentSpec {
        let routes_prefix = join(prefix, "routes");
        let routes = m
            .routes
            .into_iter()
            .enumerate()
            .map(|(i, r)| self.route(r, &index(&routes_prefix, i)))
            .collect();
        let health = m.health.map(|h| self.health(h, &join(prefix, "health")));
        ComponentSpec {
            name: m.name,
            image: m.image,
            volumes: m.volumes,
            cmd: m.cmd,
            env: m.env,
            network: non_empty(m.network),
            user: non_empty(m.user),
            restart: non_empty(m.restart),
            routes,
            health,
        }
    }

    fn route(&mut self, m: pb::RouteSpec, prefix: &str) -> RouteSpec {
        let port = parse_port(i64::from(m.port)).unwrap_or_else(|e| {
            self.bad(join(prefix, "port"), e);
            0
        });
        let mode = if m.mode.is_empty() {
            RouteMode::L7
        } else {
            parse_route_mode(&m.mode).unwrap_or_else(|e| {
                self.bad(join(prefix, "mode"), e);
                RouteMode::L7
            })
        };
        RouteSpec {
            name: non_empty(m.name),
            port,
            mode,
            hostname: non_empty(m.hostname),
            public: m.public,
        }
    }

    fn health(&mut self, m: pb::HealthCheckSpec, prefix: &str) -> HealthCheck {
        let kind = parse_health_kind(&m.kind).unwrap_or_else(|e| {
            self.bad(join(prefix, "kind"), e);
            // The placeholder must not trigger the "path only for http" rule.
            self.suppressed.push(join(prefix, "path"));
            HealthKind::Http
        });
        HealthCheck {
            kind,
            route: non_empty(m.route),
            path: non_empty(m.path),
            timeout: duration_ms(m.timeout_ms, HealthCheck::DEFAULT_TIMEOUT),
            interval: duration_ms(m.interval_ms, HealthCheck::DEFAULT_INTERVAL),
            status: match u16::try_from(m.status) {
                Ok(0) => None,
                Ok(s) => Some(s),
                Err(_) => {
                    self.bad(
                        join(prefix, "status"),
                        format!("status {} is not an HTTP status", m.status),
                    );
                    None
                }
            },
        }
    }
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

fn duration_ms(ms: u64, default: Duration) -> Duration {
    if ms == 0 {
        default
    } else {
        Duration::from_millis(ms)
    }
}
