//! The semantic rules of docs/SERVICE-FILES.md, over the model types.
//!
//! There is one set of rules with two entry points: the file loader
//! ([`crate::load`]) maps each [`Violation`]'s field path to a line and
//! column in the file, and the protocol conversion (`mcp-proto`) reports the
//! path as is. The value parsers ([`parse_tier`], [`parse_route_mode`],
//! [`parse_health_kind`], [`parse_snapshot_method`], [`parse_port`],
//! [`parse_duration`]) are shared the same way, so a bad `mode` reads the
//! same whether it came from a file or from the wire.
//!
//! Field paths look like `components[1].routes[0].hostname`: keys as written
//! in the file, list positions 0-based.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::load::LoadOptions;
use crate::model::{
    ComponentSpec, HealthCheck, HealthKind, RouteMode, RouteSpec, ServiceSpec, SnapshotConfig,
    SnapshotMethod, Tier,
};
use crate::names::{is_dns_label, is_hostname, is_under_domain};
use crate::volumes;

/// One broken rule: where (a field path) and what.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Violation {
    /// Field path, e.g. `components[1].routes[0].hostname`. Empty for the
    /// value itself (when validating a lone route, health check...).
    pub path: String,
    /// Lowercase, no final period; names the field, what was expected and
    /// what was found.
    pub message: String,
    /// For duplicates: the path of the first definition. The loader renders
    /// it as a line number, the protocol conversion as the path.
    pub first: Option<String>,
}

impl Violation {
    /// A violation at `path` with no related definition.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Violation {
            path: path.into(),
            message: message.into(),
            first: None,
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(first) = &self.first {
            write!(f, " (first defined at {first})")?;
        }
        Ok(())
    }
}

/// The podman restart policies accepted in `restart` (plus `on-failure:N`).
pub const RESTART_POLICIES: &[&str] = &["no", "always", "on-failure", "unless-stopped"];

/// Joins a path prefix and a field: `join("a[0]", "b")` is `a[0].b`,
/// `join("", "b")` is `b`.
pub fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else {
        format!("{prefix}.{field}")
    }
}

/// True when `path` is `prefix` or lies under it: `a[0].b` is within `a`,
/// `a[0]` and `a[0].b`, but not within `a[0].bc`.
pub fn path_within(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// `index("a", 2)` is `a[2]`.
pub fn index(prefix: &str, i: usize) -> String {
    format!("{prefix}[{i}]")
}

fn last_segment(path: &str) -> &str {
    let field = path.rsplit('.').next().unwrap_or(path);
    field.split('[').next().unwrap_or(field)
}

/// `tier`: `"core"` or `"worker"`. `Err` is the message, naming the field.
pub fn parse_tier(s: &str) -> Result<Tier, String> {
    match s {
        "core" => Ok(Tier::Core),
        "worker" => Ok(Tier::Worker),
        _ => Err(format!("tier must be \"core\" or \"worker\", found {s:?}")),
    }
}

/// `mode`: `"l4"` or `"l7"`. `Err` is the message, naming the field.
pub fn parse_route_mode(s: &str) -> Result<RouteMode, String> {
    match s {
        "l4" => Ok(RouteMode::L4),
        "l7" => Ok(RouteMode::L7),
        _ => Err(format!("mode must be \"l4\" or \"l7\", found {s:?}")),
    }
}

/// `kind`: `"tcp"`, `"http"` or `"grpc"`. `Err` is the message.
pub fn parse_health_kind(s: &str) -> Result<HealthKind, String> {
    match s {
        "tcp" => Ok(HealthKind::Tcp),
        "http" => Ok(HealthKind::Http),
        "grpc" => Ok(HealthKind::Grpc),
        _ => Err(format!(
            "kind must be \"tcp\", \"http\" or \"grpc\", found {s:?}"
        )),
    }
}

/// `method`: `"grpc"`, `"cli"`, `"full"`, `"exec: <cmd>"` or `""` (the
/// default). `Err` is the message.
pub fn parse_snapshot_method(s: &str) -> Result<SnapshotMethod, String> {
    if let Some(rest) = s.strip_prefix("exec:") {
        return match crate::model::split_argv(rest.trim()) {
            None => Err(format!(
                "method \"exec: <cmd>\" has unbalanced quotes, found {s:?}"
            )),
            Some(argv) if argv.is_empty() => Err(format!(
                "method \"exec: <cmd>\" needs a command, found {s:?}"
            )),
            Some(argv) => Ok(SnapshotMethod::Exec(argv)),
        };
    }
    SnapshotMethod::from_config_string(s).ok_or_else(|| {
        format!("method must be \"grpc\", \"cli\", \"full\" or \"exec: <cmd>\", found {s:?}")
    })
}

/// `port`: an integer 1–65535. `Err` is the message.
pub fn parse_port(n: i64) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(format!("port must be between 1 and 65535, found {n}")),
    }
}

/// A humantime duration (`"5s"`, `"1m 30s"`, `"500ms"`) for the field
/// `field`. `Err` is the message.
pub fn parse_duration(field: &str, s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|_| format!("{field} must be a duration like \"5s\", found {s:?}"))
}

/// Checks every rule of docs/SERVICE-FILES.md that the types do not already enforce.
/// Empty when `spec` is valid. Paths are relative to the service.
pub fn validate(spec: &ServiceSpec, opts: &LoadOptions) -> Vec<Violation> {
    let mut out = Vec::new();
    check_label(&mut out, "name", &spec.name);
    if let Some(node) = &spec.node {
        check_label(&mut out, "node", node);
    }
    if let Some(snap) = &spec.snapshot {
        validate_snapshot_into(&mut out, "snapshot", snap);
    }
    if spec.components.is_empty() {
        out.push(Violation::new(
            "components",
            "a service needs at least one [[components]], found none",
        ));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, c) in spec.components.iter().enumerate() {
        let path = index("components", i);
        validate_component_into(&mut out, &path, c, opts);
        if !opts.unconfined_volumes {
            confine_volumes_into(&mut out, &path, &spec.name, c, opts);
        }
        if let Some(&first) = seen.get(c.name.as_str()) {
            out.push(Violation {
                path: join(&path, "name"),
                message: format!("duplicate component name {:?}", c.name),
                first: Some(join(&index("components", first), "name")),
            });
        } else {
            seen.insert(&c.name, i);
        }
    }
    out
}

/// The confinement rule of [`crate::volumes`] for the well-formed volumes
/// of component `c` of service `service`.
fn confine_volumes_into(
    out: &mut Vec<Violation>,
    prefix: &str,
    service: &str,
    c: &ComponentSpec,
    opts: &LoadOptions,
) {
    for (i, v) in c.volumes.iter().enumerate() {
        if !is_volume(v) {
            continue;
        }
        if let Err(message) = volumes::check_host_path(service, v, &opts.allowed_host_paths) {
            out.push(Violation::new(index(&join(prefix, "volumes"), i), message));
        }
    }
}

/// The rules for one component (paths relative to it). Volumes are checked
/// for their form only: confining them needs the service's name, so
/// [`validate`] does it.
pub fn validate_component(c: &ComponentSpec, opts: &LoadOptions) -> Vec<Violation> {
    let mut out = Vec::new();
    validate_component_into(&mut out, "", c, opts);
    out
}

/// The rules for one route (paths relative to it).
pub fn validate_route(r: &RouteSpec, opts: &LoadOptions) -> Vec<Violation> {
    let mut out = Vec::new();
    validate_route_into(&mut out, "", r, opts);
    out
}

/// The rules for one health check that do not depend on its component
/// (paths relative to it). [`validate_component`] also checks that the
/// route it names exists.
pub fn validate_health(h: &HealthCheck) -> Vec<Violation> {
    let mut out = Vec::new();
    validate_health_into(&mut out, "", h);
    out
}

/// The rules for a `[snapshot]` section (paths relative to it).
pub fn validate_snapshot(s: &SnapshotConfig) -> Vec<Violation> {
    let mut out = Vec::new();
    validate_snapshot_into(&mut out, "", s);
    out
}

fn check_label(out: &mut Vec<Violation>, path: &str, value: &str) {
    if !is_dns_label(value) {
        out.push(Violation::new(
            path,
            format!(
                "{} must be a DNS label (1-63 of a-z, 0-9 and '-', not starting or ending with '-'), found {value:?}",
                last_segment(path)
            ),
        ));
    }
}

fn validate_snapshot_into(out: &mut Vec<Violation>, prefix: &str, s: &SnapshotConfig) {
    if let SnapshotMethod::Exec(argv) = &s.method {
        if argv.is_empty() {
            out.push(Violation::new(
                join(prefix, "method"),
                "method \"exec: <cmd>\" needs a command, found none",
            ));
        }
    }
    for (i, p) in s.exclude.iter().enumerate() {
        let path = index(&join(prefix, "exclude"), i);
        let problem = if p.is_empty() {
            Some("must not be empty")
        } else if p.starts_with('/') {
            Some("must be relative to /srv/<service>/")
        } else if p.split('/').any(|seg| seg == "..") {
            Some("must not contain \"..\"")
        } else {
            None
        };
        if let Some(problem) = problem {
            out.push(Violation::new(
                path,
                format!("exclude path {problem}, found {p:?}"),
            ));
        }
    }
}

fn validate_component_into(
    out: &mut Vec<Violation>,
    prefix: &str,
    c: &ComponentSpec,
    opts: &LoadOptions,
) {
    check_label(out, &join(prefix, "name"), &c.name);
    if c.image.is_empty() {
        out.push(Violation::new(
            join(prefix, "image"),
            "image must not be empty",
        ));
    } else if let Err(why) = crate::image::check_reference(&c.image) {
        out.push(Violation::new(
            join(prefix, "image"),
            format!("image {:?} is not a valid image reference: {why}", c.image),
        ));
    }
    for (i, v) in c.volumes.iter().enumerate() {
        if !is_volume(v) {
            out.push(Violation::new(
                index(&join(prefix, "volumes"), i),
                format!("volume must be \"host:container[:options]\" with an absolute container path, found {v:?}"),
            ));
        }
    }
    for (i, e) in c.env.iter().enumerate() {
        if !is_env(e) {
            out.push(Violation::new(
                index(&join(prefix, "env"), i),
                format!("env entry must be \"KEY=value\", found {e:?}"),
            ));
        }
    }
    for (field, value) in [
        ("network", &c.network),
        ("user", &c.user),
        ("restart", &c.restart),
    ] {
        if let Some(v) = value {
            if v.is_empty() {
                out.push(Violation::new(
                    join(prefix, field),
                    format!("{field} must not be empty when set (leave it out instead)"),
                ));
            }
        }
    }
    if let Some(r) = &c.restart {
        if !r.is_empty() && !is_restart_policy(r) {
            out.push(Violation::new(
                join(prefix, "restart"),
                format!(
                    "restart must be \"no\", \"always\", \"on-failure\", \"on-failure:N\" or \"unless-stopped\", found {r:?}"
                ),
            ));
        }
    }

    let routes = join(prefix, "routes");
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut unnamed: Option<usize> = None;
    for (i, r) in c.routes.iter().enumerate() {
        let path = index(&routes, i);
        validate_route_into(out, &path, r, opts);
        match &r.name {
            Some(n) => {
                if let Some(&first) = names.get(n.as_str()) {
                    out.push(Violation {
                        path: join(&path, "name"),
                        message: format!("duplicate route name {n:?} in component {:?}", c.name),
                        first: Some(join(&index(&routes, first), "name")),
                    });
                } else {
                    names.insert(n, i);
                }
            }
            None => {
                if let Some(first) = unnamed {
                    out.push(Violation {
                        path,
                        message: format!(
                            "component {:?} has more than one unnamed route; name all but one",
                            c.name
                        ),
                        first: Some(index(&routes, first)),
                    });
                } else {
                    unnamed = Some(i);
                }
            }
        }
    }

    if let Some(h) = &c.health {
        let hpath = join(prefix, "health");
        validate_health_into(out, &hpath, h);
        if c.routes.is_empty() {
            out.push(Violation::new(
                hpath.clone(),
                format!(
                    "health check needs a route to probe, found component {:?} without routes",
                    c.name
                ),
            ));
        }
        if let Some(route) = &h.route {
            if !c.routes.is_empty() && !names.contains_key(route.as_str()) {
                let known: Vec<&str> = c.routes.iter().filter_map(|r| r.name.as_deref()).collect();
                out.push(Violation::new(
                    join(&hpath, "route"),
                    format!(
                        "health route must name a route of component {:?} ({}), found {route:?}",
                        c.name,
                        if known.is_empty() {
                            "it has only an unnamed route".to_string()
                        } else {
                            format!("one of {}", quoted_list(&known))
                        }
                    ),
                ));
            }
        }
    }
}

fn validate_route_into(out: &mut Vec<Violation>, prefix: &str, r: &RouteSpec, opts: &LoadOptions) {
    if let Some(n) = &r.name {
        check_label(out, &join(prefix, "name"), n);
    }
    if r.port == 0 {
        out.push(Violation::new(
            join(prefix, "port"),
            "port must be between 1 and 65535, found 0",
        ));
    }
    if let Some(h) = &r.hostname {
        if !is_hostname(h) {
            out.push(Violation::new(
                join(prefix, "hostname"),
                format!("hostname must be a valid DNS name, found {h:?}"),
            ));
        } else if r.public
            && !opts.allowed_public_domains.is_empty()
            && !opts
                .allowed_public_domains
                .iter()
                .any(|d| is_under_domain(h, d))
        {
            let domains: Vec<&str> = opts
                .allowed_public_domains
                .iter()
                .map(String::as_str)
                .collect();
            out.push(Violation::new(
                join(prefix, "hostname"),
                format!(
                    "public hostname must be under an allowed public domain ({}), found {h:?}",
                    quoted_list(&domains)
                ),
            ));
        }
    } else if r.public {
        let what = match &r.name {
            Some(n) => format!("public route {n:?}"),
            None => "public unnamed route".to_string(),
        };
        out.push(Violation::new(
            join(prefix, "public"),
            format!("{what} needs a hostname"),
        ));
    }
}

fn validate_health_into(out: &mut Vec<Violation>, prefix: &str, h: &HealthCheck) {
    if let Some(r) = &h.route {
        check_label(out, &join(prefix, "route"), r);
    }
    if let Some(p) = &h.path {
        if h.kind != HealthKind::Http {
            out.push(Violation::new(
                join(prefix, "path"),
                format!(
                    "path is only allowed with kind \"http\", found kind {:?}",
                    h.kind.as_str()
                ),
            ));
        } else if !p.starts_with('/') || p.chars().any(char::is_whitespace) {
            out.push(Violation::new(
                join(prefix, "path"),
                format!("path must start with '/' and contain no whitespace, found {p:?}"),
            ));
        }
    }
    if let Some(status) = h.status {
        if h.kind != HealthKind::Http {
            out.push(Violation::new(
                join(prefix, "status"),
                format!(
                    "status is only allowed with kind \"http\", found kind {:?}",
                    h.kind.as_str()
                ),
            ));
        } else if !(100..=599).contains(&status) {
            out.push(Violation::new(
                join(prefix, "status"),
                format!("status must be an HTTP status code (100-599), found {status}"),
            ));
        }
    }
    for (field, d) in [("timeout", h.timeout), ("interval", h.interval)] {
        if d.is_zero() {
            out.push(Violation::new(
                join(prefix, field),
                format!("{field} must be greater than zero, found 0s"),
            ));
        } else if d.subsec_nanos() % 1_000_000 != 0 {
            out.push(Violation::new(
                join(prefix, field),
                format!(
                    "{field} must be a whole number of milliseconds, found {:?}",
                    humantime::format_duration(d).to_string()
                ),
            ));
        }
    }
}

fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `host:container[:options]`, both parts non-empty, the container path
/// absolute.
fn is_volume(v: &str) -> bool {
    let parts: Vec<&str> = v.split(':').collect();
    matches!(parts.len(), 2 | 3) && parts.iter().all(|p| !p.is_empty()) && parts[1].starts_with('/')
}

/// `KEY=value` with `KEY` a shell-style identifier.
fn is_env(e: &str) -> bool {
    let Some((key, _)) = e.split_once('=') else {
        return false;
    };
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One of [`RESTART_POLICIES`] or `on-failure:N`.
pub fn is_restart_policy(r: &str) -> bool {
    RESTART_POLICIES.contains(&r)
        || r.strip_prefix("on-failure:")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}
