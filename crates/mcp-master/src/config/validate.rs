//! [`Config::validate`] (every semantic problem, each naming its key) and
//! [`Config::check_paths`] (the files and directories the config names).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mcp_spec::names::{is_dns_label, is_hostname};

use super::{
    Config, ConfigProblem, DnsConfig, NodeRole, DEFAULT_OVERLAY_CIDR, MAX_LEEWAY, TSIG_ALGORITHMS,
};

/// Problems collected in order.
#[derive(Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem::new(key, message));
    }
}

impl Config {
    /// Every semantic problem, each naming its key; no I/O.
    pub fn validate(&self) -> Result<(), Vec<ConfigProblem>> {
        let mut p = Problems::default();

        if self.server.grpc_addr.port() == 0 {
            p.push("server.grpc_addr", "port must not be 0");
        }
        let sv = &self.server;
        if sv.preface_timeout.is_zero() {
            p.push("server.preface_timeout", "must be more than 0s");
        }
        if sv.max_connections_per_peer == 0 {
            p.push("server.max_connections_per_peer", "must be at least 1");
        }
        if sv.max_refusals_per_peer == 0 {
            p.push("server.max_refusals_per_peer", "must be at least 1");
        }
        if sv.refusal_window.is_zero() {
            p.push("server.refusal_window", "must be more than 0s");
        }
        for (key, path) in [
            ("server.tls_cert", &self.server.tls_cert),
            ("server.tls_key", &self.server.tls_key),
            ("server.ca_cert", &self.server.ca_cert),
            ("database.path", &self.database.path),
            ("auth.token_file", &self.auth.token_file),
        ] {
            if path.as_os_str().is_empty() {
                p.push(key, "must not be empty");
            }
        }

        let a = &self.auth;
        match (&a.issuer_public_key, &a.identity_service_url) {
            (Some(_), Some(_)) => p.push("auth", "set either issuer_public_key (local JWT verification) or identity_service_url, not both"),
            (None, None) => p.push("auth", "set issuer_public_key (local JWT verification) or identity_service_url"),
            (Some(_), None) => {
                for (key, v) in [("issuer", &a.issuer), ("audience", &a.audience)] {
                    if v.as_deref().is_none_or(str::is_empty) {
                        p.push(format!("auth.{key}"), "is required with auth.issuer_public_key");
                    }
                }
            }
            (None, Some(url)) => {
                if !url.starts_with("https://") && !url.starts_with("http://") {
                    p.push("auth.identity_service_url", format!("must be an http(s) URL, found {url:?}"));
                }
            }
        }
        if a.master_identity.is_empty() {
            p.push("auth.master_identity", "must not be empty");
        } else if a.master_identity.starts_with("agent-") {
            p.push(
                "auth.master_identity",
                format!(
                    "{:?} must not be an agent identity (agent-*)",
                    a.master_identity
                ),
            );
        }

        if let Some(name) = &a.master_cert_name {
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                p.push(
                    "auth.master_cert_name",
                    format!("{name:?} is not a DNS name or IP address a certificate can carry"),
                );
            }
        }
        if a.max_token_lifetime.is_zero() {
            p.push("auth.max_token_lifetime", "must be more than 0s");
        }
        if a.leeway > MAX_LEEWAY {
            p.push(
                "auth.leeway",
                format!(
                    "{} is longer than {}: expired tokens would stay usable",
                    humantime::format_duration(a.leeway),
                    humantime::format_duration(MAX_LEEWAY)
                ),
            );
        }

        if let Some(s) = &self.services {
            if s.dir.as_os_str().is_empty() {
                p.push("services.dir", "must not be empty");
            }
            if s.poll.is_zero() {
                p.push("services.poll", "must be more than 0s");
            }
            for entry in &s.allowed_host_paths {
                if let Err(msg) = mcp_spec::volumes::check_allowed_entry(entry) {
                    p.push("services.allowed_host_paths", msg);
                }
            }
        }

        let e = &self.edge;
        if !is_hostname(&e.internal_zone) {
            p.push(
                "edge.internal_zone",
                format!("{:?} is not a valid domain name", e.internal_zone),
            );
        }
        for d in &e.allowed_domains {
            if !is_hostname(d) {
                p.push(
                    "edge.allowed_domains",
                    format!("{d:?} is not a valid domain name"),
                );
            } else if !d.contains('.') {
                p.push(
                    "edge.allowed_domains",
                    format!("{d:?} is a top-level domain; name a domain you control"),
                );
            }
        }
        if e.overlay_cidrs.is_empty() {
            p.push(
                "edge.overlay_cidrs",
                format!("must not be empty (default [\"{DEFAULT_OVERLAY_CIDR}\"])"),
            );
        }

        let r = &self.registration;
        let mut seen = BTreeSet::new();
        for agent in &r.allowed_agents {
            match agent.strip_prefix("agent-") {
                Some(node) if is_dns_label(node) => {}
                _ => p.push(
                    "registration.allowed_agents",
                    format!("{agent:?} is not an agent identity (agent-<node>)"),
                ),
            }
            if !seen.insert(agent) {
                p.push(
                    "registration.allowed_agents",
                    format!("{agent:?} is listed twice"),
                );
            }
        }
        if r.max_nodes == 0 {
            p.push("registration.max_nodes", "must be at least 1");
        }
        if r.heartbeat_interval.is_zero() {
            p.push("registration.heartbeat_interval", "must be more than 0s");
        }
        if r.heartbeat_timeout <= r.heartbeat_interval {
            p.push(
                "registration.heartbeat_timeout",
                format!(
                    "{} must be longer than heartbeat_interval ({})",
                    humantime::format_duration(r.heartbeat_timeout),
                    humantime::format_duration(r.heartbeat_interval)
                ),
            );
        }
        if r.heartbeat_min_interval >= r.heartbeat_interval {
            p.push("registration.heartbeat_min_interval", format!("{} must be shorter than heartbeat_interval ({}), or every heartbeat is refused", humantime::format_duration(r.heartbeat_min_interval),
                humantime::format_duration(r.heartbeat_interval)));
        }

        let t = &self.timeouts;
        for (key, d) in [
            ("deploy", t.deploy),
            ("edge_route", t.edge_route),
            ("health_check", t.health_check),
            ("undeploy", t.undeploy),
            ("snapshot", t.snapshot),
        ] {
            if d.is_zero() {
                p.push(format!("timeouts.{key}"), "must be more than 0s");
            }
        }

        if let Some(s) = &self.snapshots {
            if s.dir.as_os_str().is_empty() {
                p.push("snapshots.dir", "must not be empty");
            }
            if s.interval < Duration::from_secs(60) {
                p.push("snapshots.interval", "must be at least 1m");
            }
            if s.retain == 0 {
                p.push("snapshots.retain", "must be at least 1");
            }
            if let Some(m) = &s.mirror {
                if m.as_os_str().is_empty() {
                    p.push(
                        "snapshots.mirror",
                        "must not be empty (omit it for no mirror)",
                    );
                } else if m.starts_with(&s.dir) || s.dir.starts_with(m) {
                    p.push(
                        "snapshots.mirror",
                        format!(
                            "{} overlaps snapshots.dir {}; the mirror must be a second place",
                            m.display(),
                            s.dir.display()
                        ),
                    );
                }
            }
        }

        match &self.dns {
            None => {}
            Some(DnsConfig::Rfc2136(c)) => {
                if !is_host_port(&c.server) {
                    p.push(
                        "dns.server",
                        format!("must be host:port, found {:?}", c.server),
                    );
                }
                check_zone(&mut p, c.zone.as_deref());
                if c.tsig_key_name.is_empty() {
                    p.push("dns.tsig_key_name", "must not be empty");
                }
                if !TSIG_ALGORITHMS.contains(&c.tsig_algorithm.as_str()) {
                    p.push(
                        "dns.tsig_algorithm",
                        format!(
                            "must be one of {}, found {:?}",
                            TSIG_ALGORITHMS.join(", "),
                            c.tsig_algorithm
                        ),
                    );
                }
                if c.tsig_secret_file.as_os_str().is_empty() {
                    p.push("dns.tsig_secret_file", "must not be empty");
                }
            }
            Some(DnsConfig::Mcns(c)) => {
                // Parsed (the shape is documented) but not implemented: refused
                // rather than accepted and then skipped.
                p.push(
                    "dns.adapter",
                    "\"mcns\" is not available in this build; use \"rfc2136\"",
                );
                if !c.url.starts_with("https://") && !c.url.starts_with("http://") {
                    p.push(
                        "dns.url",
                        format!("must be an http(s) URL, found {:?}", c.url),
                    );
                }
                check_zone(&mut p, c.zone.as_deref());
                if c.token_file.as_os_str().is_empty() {
                    p.push("dns.token_file", "must not be empty");
                }
            }
        }
        if let Some(dns) = &self.dns {
            let zone = dns.zone(&e.internal_zone);
            if is_hostname(zone)
                && is_hostname(&e.internal_zone)
                && !mcp_spec::names::is_under_domain(&e.internal_zone, zone)
            {
                p.push("dns.zone", format!("{zone:?} does not contain edge.internal_zone {:?}, so service records cannot be written there", e.internal_zone));
            }
        }

        let rc = &self.reconcile;
        if rc.interval.is_zero() {
            p.push("reconcile.interval", "must be more than 0s");
        }
        if rc.concurrency == 0 {
            p.push("reconcile.concurrency", "must be at least 1");
        }
        if rc.heal_max_attempts == 0 {
            p.push("reconcile.heal_max_attempts", "must be at least 1");
        }

        for (name, role) in &r.roles {
            let key = format!("registration.roles.{name}");
            if !is_dns_label(name) {
                p.push(
                    key,
                    format!(
                        "{name:?} is not a node name (a DNS label: lowercase letters, digits, '-')"
                    ),
                );
            } else if let Some(n) = self.nodes.iter().find(|n| &n.name == name) {
                if n.role != *role {
                    p.push(
                        key,
                        format!(
                            "{role} contradicts the [[nodes]] entry of {name} (role {}); name a node's role once",
                            n.role
                        ),
                    );
                }
            }
        }

        let au = &self.audit;
        if au.max_age.is_zero() {
            p.push("audit.max_age", "must be more than 0s");
        }
        if au.max_rows == 0 {
            p.push("audit.max_rows", "must be at least 1");
        }
        if au.prune_interval < Duration::from_secs(1) {
            p.push("audit.prune_interval", "must be at least 1s");
        }

        let mut names = BTreeSet::new();
        let mut masters = 0;
        for (i, n) in self.nodes.iter().enumerate() {
            let at = format!("nodes[{i}]");
            if !is_dns_label(&n.name) {
                p.push(
                    format!("{at}.name"),
                    format!(
                        "{:?} is not a DNS label (lowercase letters, digits, '-')",
                        n.name
                    ),
                );
            }
            if !names.insert(n.name.as_str()) {
                p.push(
                    format!("{at}.name"),
                    format!("{:?} is listed twice", n.name),
                );
            }
            if n.address.is_empty() || n.address.chars().any(char::is_whitespace) {
                p.push(
                    format!("{at}.address"),
                    format!(
                        "must be a non-empty address without spaces, found {:?}",
                        n.address
                    ),
                );
            }
            if n.role == NodeRole::Master {
                masters += 1;
            }
        }
        masters += r
            .roles
            .iter()
            .filter(|(name, role)| {
                **role == NodeRole::Master && !self.nodes.iter().any(|n| &n.name == *name)
            })
            .count();
        if masters > 1 {
            p.push(
                "nodes",
                format!("{masters} nodes have role \"master\"; at most one may"),
            );
        }
        if self.nodes.len() > r.max_nodes {
            p.push(
                "nodes",
                format!(
                    "{} bootstrap nodes exceed registration.max_nodes ({})",
                    self.nodes.len(),
                    r.max_nodes
                ),
            );
        }

        if p.0.is_empty() {
            Ok(())
        } else {
            Err(p.0)
        }
    }

    /// Checks the files and directories the config names: TLS material and
    /// token files readable, the services directory and the database's and
    /// snapshots' parent directories present. Returns every problem.
    pub fn check_paths(&self) -> Vec<ConfigProblem> {
        let mut p = Problems::default();
        let mut files: Vec<(&str, &Path)> = vec![
            ("server.tls_cert", &self.server.tls_cert),
            ("server.tls_key", &self.server.tls_key),
            ("server.ca_cert", &self.server.ca_cert),
            ("auth.token_file", &self.auth.token_file),
        ];
        if let Some(k) = &self.auth.issuer_public_key {
            files.push(("auth.issuer_public_key", k));
        }
        match &self.dns {
            Some(DnsConfig::Rfc2136(c)) => {
                files.push(("dns.tsig_secret_file", &c.tsig_secret_file))
            }
            Some(DnsConfig::Mcns(c)) => {
                files.push(("dns.token_file", &c.token_file));
                if let Some(ca) = &c.ca_cert {
                    files.push(("dns.ca_cert", ca));
                }
            }
            None => {}
        }
        for (key, path) in files {
            if let Err(e) = std::fs::File::open(path) {
                p.push(key, format!("cannot read {}: {e}", path.display()));
            }
        }
        if let Some(s) = &self.services {
            if !s.dir.is_dir() {
                p.push(
                    "services.dir",
                    format!("{} is not a directory", s.dir.display()),
                );
            }
        }
        let mut parents = vec![("database.path", &self.database.path)];
        if let Some(s) = &self.snapshots {
            parents.push(("snapshots.dir", &s.dir));
            if let Some(m) = &s.mirror {
                parents.push(("snapshots.mirror", m));
            }
        }
        for (key, path) in parents {
            let parent = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if !parent.is_dir() {
                p.push(
                    key,
                    format!("directory {} does not exist", parent.display()),
                );
            }
        }
        p.0
    }
}

fn check_zone(p: &mut Problems, zone: Option<&str>) {
    if let Some(z) = zone {
        if !is_hostname(z) {
            p.push("dns.zone", format!("{z:?} is not a valid domain name"));
        }
    }
}

/// `host:port` with a non-zero port (`[v6]:port` accepted).
fn is_host_port(s: &str) -> bool {
    if s.parse::<SocketAddr>().is_ok() {
        return !s.ends_with(":0");
    }
    match s.rsplit_once(':') {
        Some((host, port)) => is_hostname(host) && port.parse::<u16>().is_ok_and(|p| p != 0),
        None => false,
    }
}
