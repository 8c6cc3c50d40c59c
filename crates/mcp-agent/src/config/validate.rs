//! [`Config::validate`] (the rules the types cannot express, every problem
//! naming its key) and [`Config::check_files`] (the files it names exist).

use std::net::SocketAddr;
use std::path::Path;

use super::{Config, ConfigProblem, MAX_LEEWAY};

impl Config {
    /// Checks the rules the types cannot express; returns every problem
    /// found, not just the first.
    pub fn validate(&self) -> Result<(), Vec<ConfigProblem>> {
        let mut p = Problems::default();

        let grpc = self.server.grpc_addr;
        if grpc.ip().is_unspecified() && !self.server.allow_all_interfaces {
            p.push(
                "server.grpc_addr",
                format!(
                    "{grpc} listens on all interfaces; use the node's overlay address \
                     (or set server.allow_all_interfaces = true)"
                ),
            );
        }
        if grpc.port() == 0 {
            p.push("server.grpc_addr", "port 0 is not a fixed port");
        }
        p.absolute("server.tls_cert", &self.server.tls_cert);
        p.absolute("server.tls_key", &self.server.tls_key);
        p.absolute("server.ca_cert", &self.server.ca_cert);
        if self.server.preface_timeout.is_zero() {
            p.push("server.preface_timeout", "must be greater than zero");
        }
        if self.server.max_connections_per_peer == 0 {
            p.push("server.max_connections_per_peer", "must be at least 1");
        }
        if self.server.max_refusals_per_peer == 0 {
            p.push("server.max_refusals_per_peer", "must be at least 1");
        }
        if self.server.refusal_window.is_zero() {
            p.push("server.refusal_window", "must be greater than zero");
        }

        if !mcp_spec::names::is_dns_label(&self.node.name) {
            p.push(
                "node.name",
                format!(
                    "{:?} is not a DNS label (lowercase letters, digits, '-')",
                    self.node.name
                ),
            );
        }
        p.host_port("node.address", &self.node.address);
        p.host_port("master.address", &self.master.address);

        p.absolute("auth.issuer_public_key", &self.auth.issuer_public_key);
        p.absolute("auth.token_file", &self.auth.token_file);
        p.non_empty("auth.issuer", &self.auth.issuer);
        p.non_empty("auth.audience", &self.auth.audience);
        p.non_empty("auth.master_identity", &self.auth.master_identity);
        if let Some(name) = &self.auth.master_cert_name {
            p.server_name("auth.master_cert_name", name);
        }
        if let Some(name) = &self.master.server_name {
            p.server_name("master.server_name", name);
        }
        if self.auth.max_token_lifetime.is_zero() {
            p.push("auth.max_token_lifetime", "must be greater than zero");
        }
        if self.auth.leeway > MAX_LEEWAY {
            p.push(
                "auth.leeway",
                format!(
                    "{} is longer than {}: expired tokens would stay usable",
                    humantime::format_duration(self.auth.leeway),
                    humantime::format_duration(MAX_LEEWAY)
                ),
            );
        }

        p.absolute("database.path", &self.database.path);

        p.non_empty("podman.binary", &self.podman.binary);
        for key in self.podman.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                p.push("podman.env", format!("{key:?} is not a variable name"));
            }
        }

        let (first, last) = self.ports.range;
        if first == 0 || first > last {
            p.push(
                "ports.range",
                format!("[{first}, {last}] is not a range of ports (need 1 <= first <= last)"),
            );
        } else if first < 1024 {
            p.push(
                "ports.range",
                format!("[{first}, {last}] includes privileged ports (below 1024)"),
            );
        }

        if self.monitor.interval.is_zero() {
            p.push("monitor.interval", "must be greater than zero");
        }
        if self.monitor.flap_threshold < 2 {
            p.push(
                "monitor.flap_threshold",
                "must be at least 2 (one transition is not flapping)",
            );
        }
        for (key, d) in [
            ("health.deploy_timeout", Some(self.health.deploy_timeout)),
            ("health.start_interval", Some(self.health.start_interval)),
            ("health.max_interval", self.health.max_interval),
        ] {
            if d.is_some_and(|d| d.is_zero()) {
                p.push(key, "must be greater than zero");
            }
        }
        if self.monitor.flap_window.is_zero() {
            p.push("monitor.flap_window", "must be greater than zero");
        }
        if self.events.max_age < self.monitor.flap_window {
            p.push(
                "events.max_age",
                format!(
                    "{} is shorter than monitor.flap_window ({}): flapping could not be seen",
                    humantime::format_duration(self.events.max_age),
                    humantime::format_duration(self.monitor.flap_window)
                ),
            );
        }
        if self.events.max_rows == 0 {
            p.push("events.max_rows", "must be at least 1");
        }

        if let Some(argv) = &self.alerts.command {
            match argv.first() {
                None => p.push(
                    "alerts.command",
                    "is empty; remove it to disable alerts, or give [program, args...]",
                ),
                Some(prog) if prog.is_empty() => {
                    p.push("alerts.command", "the program (first element) is empty")
                }
                Some(_) => {}
            }
        }

        for entry in &self.podman.allowed_host_paths {
            if let Err(msg) = mcp_spec::volumes::check_allowed_entry(entry) {
                p.push("podman.allowed_host_paths", msg);
            }
        }

        p.absolute("files.root", &self.files.root);
        if self.files.root.to_string_lossy().contains([':', ',']) {
            p.push(
                "files.root",
                "must not contain ':' or ',' (it becomes the host side of volumes)",
            );
        }
        if self.files.max_import_bytes == 0 {
            p.push("files.max_import_bytes", "must be at least 1");
        }
        if self.files.max_import_file_bytes == 0 {
            p.push("files.max_import_file_bytes", "must be at least 1");
        }
        if let Some(dir) = &self.snapshot.dir {
            p.absolute("snapshot.dir", dir);
        }
        if self.snapshot.keep == 0 {
            p.push("snapshot.keep", "must be at least 1");
        }

        self.validate_net(&mut p);

        if p.0.is_empty() {
            Ok(())
        } else {
            Err(p.0)
        }
    }

    /// `[proxy]` and `[certs]`.
    fn validate_net(&self, p: &mut Problems) {
        use super::IssuerKind;
        if let Some(x) = &self.proxy {
            if !mcp_spec::names::is_hostname(&x.internal_zone) {
                p.push(
                    "proxy.internal_zone",
                    format!("{:?} is not a DNS name", x.internal_zone),
                );
            }
            if x.check_interval.is_zero() {
                p.push("proxy.check_interval", "must be greater than zero");
            }
            if !self.ports.bind_address.is_loopback() {
                p.push(
                    "ports.bind_address",
                    format!(
                        "{} is not a loopback address: with [proxy], containers publish on loopback \
                         and only the proxy listens on the node's address",
                        self.ports.bind_address
                    ),
                );
            }
            if x.l7.is_none() && x.l4.is_none() {
                p.push(
                    "proxy",
                    "names no proxy: set l7, l4 or both (or drop the section)",
                );
            }
            if self.proxy_address().is_none() {
                p.push(
                    "proxy.address",
                    "required when node.address is not an IP address",
                );
            }
            if let Some(l4) = &x.l4 {
                p.absolute("proxy.l4.config", &l4.config);
                p.absolute("proxy.l4.master_socket", &l4.master_socket);
                p.absolute("proxy.l4.binary", &l4.binary);
            }
            if x.l7.is_some() && self.certs.is_none() {
                p.push(
                    "certs",
                    "an L7 proxy terminates TLS: configure where certificates come from ([certs])",
                );
            }
        }
        let Some(c) = &self.certs else {
            return;
        };
        if let Some(d) = &c.dir {
            p.absolute("certs.dir", d);
        }
        if c.renew_before.is_zero() {
            p.push("certs.renew_before", "must be greater than zero");
        }
        match c.issuer {
            IssuerKind::LocalCa => {
                match &c.ca_cert {
                    Some(f) => p.absolute("certs.ca_cert", f),
                    None => p.push("certs.ca_cert", "required with issuer = \"local-ca\""),
                }
                match &c.ca_key {
                    Some(f) => p.absolute("certs.ca_key", f),
                    None => p.push("certs.ca_key", "required with issuer = \"local-ca\""),
                }
                if c.validity <= c.renew_before {
                    p.push(
                        "certs.validity",
                        "must be longer than certs.renew_before (or every certificate is due at once)",
                    );
                }
            }
            IssuerKind::Acme => {
                let Some(a) = &c.acme else {
                    p.push("certs.acme", "required with issuer = \"acme\"");
                    return;
                };
                if !a.directory.starts_with("https://") {
                    p.push(
                        "certs.acme.directory",
                        format!("{:?} is not an https:// URL", a.directory),
                    );
                }
                if let Some(f) = &a.root_ca {
                    p.absolute("certs.acme.root_ca", f);
                }
                if let Some(f) = &a.account_file {
                    p.absolute("certs.acme.account_file", f);
                }
                if !mcp_spec::names::is_hostname(&a.dns.zone) {
                    p.push(
                        "certs.acme.dns.zone",
                        format!("{:?} is not a DNS name", a.dns.zone),
                    );
                }
                p.non_empty("certs.acme.dns.tsig_key_name", &a.dns.tsig_key_name);
                if !super::TSIG_ALGORITHMS.contains(&a.dns.tsig_algorithm.as_str()) {
                    p.push(
                        "certs.acme.dns.tsig_algorithm",
                        format!(
                            "must be one of {}, found {:?}",
                            super::TSIG_ALGORITHMS.join(", "),
                            a.dns.tsig_algorithm
                        ),
                    );
                }
                p.absolute("certs.acme.dns.tsig_secret_file", &a.dns.tsig_secret_file);
            }
        }
    }

    /// Checks what [`Config::validate`] does not: that the files the agent
    /// will read exist (TLS material, issuer key, token) and that the
    /// directories it writes into exist. `check-config` runs it; loading
    /// does not (tests and tools parse configs of other machines).
    pub fn check_files(&self) -> Vec<ConfigProblem> {
        let mut p = Problems::default();
        for (field, path) in [
            ("server.tls_cert", &self.server.tls_cert),
            ("server.tls_key", &self.server.tls_key),
            ("server.ca_cert", &self.server.ca_cert),
            ("auth.issuer_public_key", &self.auth.issuer_public_key),
            ("auth.token_file", &self.auth.token_file),
        ] {
            match std::fs::metadata(path) {
                Ok(m) if m.is_file() => {}
                Ok(_) => p.push(field, format!("{} is not a file", path.display())),
                Err(e) => p.push(field, format!("{}: {e}", path.display())),
            }
        }
        let db_dir = self
            .database
            .path
            .parent()
            .unwrap_or_else(|| Path::new("/"));
        if !db_dir.is_dir() {
            p.push(
                "database.path",
                format!("directory {} does not exist", db_dir.display()),
            );
        }
        if !self.files.root.is_dir() {
            p.push(
                "files.root",
                format!("directory {} does not exist", self.files.root.display()),
            );
        }
        p.0
    }
}

#[derive(Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn push(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(ConfigProblem::new(key, message));
    }

    fn absolute(&mut self, field: &str, path: &Path) {
        if path.as_os_str().is_empty() {
            self.push(field, "is empty");
        } else if !path.is_absolute() {
            self.push(field, format!("{} is not an absolute path", path.display()));
        }
    }

    fn non_empty(&mut self, field: &str, value: &str) {
        if value.trim().is_empty() {
            self.push(field, "is empty");
        }
    }

    /// A name a certificate can carry (DNS name or IP address).
    fn server_name(&mut self, field: &str, value: &str) {
        if rustls::pki_types::ServerName::try_from(value).is_err() {
            self.push(
                field,
                format!("{value:?} is not a DNS name or IP address a certificate can carry"),
            );
        }
    }

    fn host_port(&mut self, field: &str, value: &str) {
        if value.parse::<SocketAddr>().is_ok() {
            return;
        }
        let ok = value.rsplit_once(':').is_some_and(|(host, port)| {
            mcp_spec::names::is_hostname(host) && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
        if !ok {
            self.push(
                field,
                format!("{value:?} is not host:port (e.g. \"100.64.0.2:9444\")"),
            );
        }
    }
}
