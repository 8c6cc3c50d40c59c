//! Tests of `config`.
#![allow(clippy::unwrap_used)]

use super::*;

pub(crate) const MINIMAL: &str = r#"
[server]
grpc_addr = "100.64.0.12:9444"
tls_cert = "/etc/mcp/agent.crt"
tls_key = "/etc/mcp/agent.key"
ca_cert = "/etc/mcp/ca.pem"

[node]
name = "orion"
role = "worker"
address = "100.64.0.12:9444"

[master]
address = "master.internal.example:9443"

[auth]
issuer_public_key = "/etc/mcp/issuer.pub"
issuer = "mcias"
audience = "mcp"
token_file = "/etc/mcp/agent.token"

[database]
path = "/var/lib/mcp/agent.db"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, Path::new("/etc/mcp/mcp-agent.toml"))
}

fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Err(ConfigError::Invalid { problems, .. }) => {
            problems.iter().map(ToString::to_string).collect()
        }
        Err(e) => panic!("expected validation problems, got {e}"),
        Ok(_) => panic!("expected validation problems, config was accepted"),
    }
}

/// `MINIMAL` with the `key = value` lines of `lines` set in `section`
/// (replacing keys that exist, adding the section if missing).
fn with(section: &str, lines: &str) -> String {
    let mut doc: toml::Table = toml::from_str(MINIMAL).expect("MINIMAL parses");
    let overrides: toml::Table = toml::from_str(lines).expect("override lines parse");
    let entry = doc
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let table = entry.as_table_mut().expect("section is a table");
    table.extend(overrides);
    toml::to_string(&doc).expect("renders")
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL).expect("minimal config");
    assert_eq!(c.node.role, NodeRole::Worker);
    assert_eq!(c.auth.master_identity, "mcp-master");
    assert_eq!(c.podman.binary, "podman");
    assert_eq!(c.ports.range, (10000, 60000));
    assert_eq!(c.ports.bind_address, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(c.monitor.interval, Duration::from_secs(60));
    assert_eq!(c.monitor.flap_threshold, 3);
    assert_eq!(c.monitor.flap_window, Duration::from_secs(300));
    assert_eq!(c.events.max_age, Duration::from_secs(30 * 24 * 3600));
    assert_eq!(c.events.max_rows, 10_000);
    assert_eq!(c.alerts.command, None);
    assert_eq!(c.alerts.cooldown, Duration::from_secs(900));
    assert_eq!(c.files.root, PathBuf::from("/srv"));
    assert_eq!(c.snapshot.keep, 7);
    assert_eq!(c.snapshot_dir(), PathBuf::from("/var/lib/mcp/snapshots"));
}

#[test]
fn module_doc_example_parses() {
    // The example in this module's documentation, verbatim.
    let src = include_str!("../config.rs");
    let example: String = src
        .lines()
        .skip_while(|l| !l.starts_with("//! ```toml"))
        .skip(1)
        .take_while(|l| !l.starts_with("//! ```"))
        .map(|l| {
            l.strip_prefix("//! ")
                .unwrap_or(l.trim_start_matches("//!"))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let c = parse(&example).expect("documented example");
    assert_eq!(
        c.alerts.command.as_deref(),
        Some(
            &[
                "/usr/local/bin/notify".to_string(),
                "--channel".into(),
                "ops".into()
            ][..]
        )
    );
    assert_eq!(
        c.podman.env.get("CONTAINERS_CONF").map(String::as_str),
        Some("/etc/mcp/containers.conf")
    );
    assert_eq!(c.snapshot_dir(), PathBuf::from("/var/lib/mcp/snapshots"));
}

#[test]
fn overrides_parse() {
    let c = parse(&with(
        "monitor",
        "interval = \"1m 30s\"\nflap_window = \"1h\"\nflap_threshold = 5",
    ))
    .expect("config");
    assert_eq!(c.monitor.interval, Duration::from_secs(90));
    assert_eq!(c.monitor.flap_window, Duration::from_secs(3600));
    assert_eq!(c.monitor.flap_threshold, 5);
}

#[test]
fn parse_errors_name_file_and_problem() {
    let cases: &[(&str, &str)] = &[
        // (config text, expected fragment of the error)
        (
            "[server]\ngrpc_adr = \"1.2.3.4:1\"",
            "unknown field `grpc_adr`",
        ),
        (&with("node", "role = \"boss\""), "unknown variant `boss`"),
        (
            &with("monitor", "interval = \"10 parsecs\""),
            "invalid duration",
        ),
        (
            &with("ports", "range = [1, 2, 3]"),
            "expected [first, last]",
        ),
        (&with("ports", "range = [10000, 70000]"), "70000"),
        (&with("server", "grpc_addr = \"nonsense\""), "grpc_addr"),
        (&with("bogus", "x = 1"), "unknown field `bogus`"),
    ];
    for (text, want) in cases {
        let err = parse(text).expect_err(text).to_string();
        assert!(
            err.contains("/etc/mcp/mcp-agent.toml"),
            "error does not name the file: {err}"
        );
        assert!(err.contains(want), "error {err:?} lacks {want:?}");
    }
}

#[test]
fn validation_rules() {
    let cases: &[(&str, &str, &str)] = &[
        // (section, override lines, expected problem fragment)
        (
            "server",
            "grpc_addr = \"0.0.0.0:9444\"",
            "server.grpc_addr: 0.0.0.0:9444 listens on all interfaces",
        ),
        (
            "server",
            "grpc_addr = \"[::]:9444\"",
            "server.grpc_addr: [::]:9444 listens on all interfaces",
        ),
        (
            "server",
            "grpc_addr = \"100.64.0.1:0\"",
            "server.grpc_addr: port 0",
        ),
        (
            "server",
            "tls_key = \"agent.key\"",
            "server.tls_key: agent.key is not an absolute path",
        ),
        (
            "node",
            "name = \"Orion\"",
            "node.name: \"Orion\" is not a DNS label",
        ),
        (
            "node",
            "address = \"100.64.0.12\"",
            "node.address: \"100.64.0.12\" is not host:port",
        ),
        ("master", "address = \"master:0\"", "master.address"),
        ("auth", "issuer = \"\"", "auth.issuer: is empty"),
        (
            "auth",
            "token_file = \"token\"",
            "auth.token_file: token is not an absolute path",
        ),
        (
            "database",
            "path = \"agent.db\"",
            "database.path: agent.db is not an absolute path",
        ),
        (
            "ports",
            "range = [20000, 10000]",
            "ports.range: [20000, 10000] is not a range",
        ),
        (
            "ports",
            "range = [0, 100]",
            "ports.range: [0, 100] is not a range",
        ),
        ("ports", "range = [80, 2000]", "privileged"),
        (
            "monitor",
            "interval = \"0s\"",
            "monitor.interval: must be greater than zero",
        ),
        (
            "monitor",
            "flap_threshold = 1",
            "monitor.flap_threshold: must be at least 2",
        ),
        ("alerts", "command = []", "alerts.command: is empty"),
        (
            "alerts",
            "command = [\"\", \"x\"]",
            "alerts.command: the program",
        ),
        (
            "files",
            "root = \"srv\"",
            "files.root: srv is not an absolute path",
        ),
        ("snapshot", "keep = 0", "snapshot.keep: must be at least 1"),
        (
            "snapshot",
            "dir = \"snaps\"",
            "snapshot.dir: snaps is not an absolute path",
        ),
        ("podman", "env = { \"A=B\" = \"x\" }", "podman.env"),
    ];
    for (section, lines, want) in cases {
        let text = with(section, lines);
        let got = problems(&text);
        assert!(
            got.iter().any(|p| p.contains(want)),
            "[{section}] {lines}: problems {got:?} lack {want:?}"
        );
        assert_eq!(got.len(), 1, "[{section}] {lines}: {got:?}");
    }
}

#[test]
fn all_interfaces_allowed_explicitly() {
    let c = parse(&with(
        "server",
        "grpc_addr = \"0.0.0.0:9444\"\nallow_all_interfaces = true",
    ))
    .expect("explicit opt-in");
    assert!(c.server.grpc_addr.ip().is_unspecified());
}

#[test]
fn every_problem_is_reported() {
    let text = with("ports", "range = [5, 1]")
        .replace("path = \"/var/lib/mcp/agent.db\"", "path = \"rel.db\"");
    let got = problems(&text);
    assert_eq!(got.len(), 2, "{got:?}");
}

#[test]
fn check_files_names_what_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let text = MINIMAL.replace("/etc/mcp", &d).replace("/var/lib/mcp", &d)
        + &format!("[files]\nroot = \"{d}\"\n");
    let c = parse(&text).expect("config");
    let fields =
        |c: &Config| -> Vec<String> { c.check_files().into_iter().map(|p| p.key).collect() };
    assert_eq!(
        fields(&c),
        vec![
            "server.tls_cert",
            "server.tls_key",
            "server.ca_cert",
            "auth.issuer_public_key",
            "auth.token_file"
        ]
    );
    for f in [
        "agent.crt",
        "agent.key",
        "ca.pem",
        "issuer.pub",
        "agent.token",
    ] {
        std::fs::write(dir.path().join(f), "x").expect("write");
    }
    assert!(fields(&c).is_empty(), "{:?}", c.check_files());
    let gone = parse(&text.replace(&format!("root = \"{d}\""), "root = \"/nonexistent-srv\""))
        .expect("config");
    assert_eq!(
        gone.check_files()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["files.root: directory /nonexistent-srv does not exist".to_string()]
    );
}

#[test]
fn load_reports_missing_file() {
    let err = Config::load(Path::new("/nonexistent/mcp-agent.toml"))
        .expect_err("missing file")
        .to_string();
    assert!(err.starts_with("cannot read config /nonexistent/mcp-agent.toml"));
}

#[test]
fn errors_name_the_file_the_key_and_the_problem() {
    let text = MINIMAL.replace("name = \"orion\"", "name = \"Orion\"");
    let err = parse(&text).expect_err("invalid node name");
    assert_eq!(err.file(), Path::new("/etc/mcp/mcp-agent.toml"));
    match &err {
        ConfigError::Invalid { problems, .. } => {
            assert_eq!(
                problems,
                &vec![ConfigProblem::new(
                    "node.name",
                    "\"Orion\" is not a DNS label (lowercase letters, digits, '-')"
                )]
            );
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "invalid config /etc/mcp/mcp-agent.toml:\n  - node.name: \"Orion\" is not a DNS label \
         (lowercase letters, digits, '-')"
    );
    let err = parse("[server]\nbogus = 1\n").expect_err("unknown key");
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert_eq!(err.file(), Path::new("/etc/mcp/mcp-agent.toml"));
    assert!(err.to_string().contains("bogus"), "{err}");
}

#[test]
fn events_retention_is_read_and_checked() {
    let c = parse(&with("events", "max_age = \"7d\"\nmax_rows = 500")).expect("valid");
    assert_eq!(c.events.max_age, Duration::from_secs(7 * 24 * 3600));
    assert_eq!(c.events.max_rows, 500);
    assert_eq!(
        problems(&with("events", "max_age = \"1m\"\nmax_rows = 0")),
        vec![
            "events.max_age: 1m is shorter than monitor.flap_window (5m): flapping could not \
             be seen"
                .to_string(),
            "events.max_rows: must be at least 1".to_string(),
        ]
    );
}

#[test]
fn allowed_host_paths_are_read_and_checked() {
    assert!(parse(MINIMAL)
        .expect("minimal")
        .podman
        .allowed_host_paths
        .is_empty());
    let c = parse(&with(
        "podman",
        "allowed_host_paths = [\"/var/cache/builder\"]",
    ))
    .expect("valid");
    assert_eq!(c.podman.allowed_host_paths, vec!["/var/cache/builder"]);
    assert_eq!(
        crate::AgentSettings::from_config(&c)
            .expect("settings")
            .allowed_host_paths,
        vec!["/var/cache/builder"]
    );
    assert_eq!(
        problems(&with(
            "podman",
            "allowed_host_paths = [\"cache\", \"/var/../etc\"]"
        )),
        vec![
            "podman.allowed_host_paths: \"cache\" must be absolute".to_string(),
            "podman.allowed_host_paths: \"/var/../etc\" must not contain \"..\"".to_string(),
        ]
    );
    assert_eq!(
        problems(&with("files", "root = \"/srv:x\"")),
        vec![
            "files.root: must not contain ':' or ',' (it becomes the host side of volumes)"
                .to_string()
        ]
    );
}

#[test]
fn hardening_keys_default_and_are_checked() {
    let c = parse(MINIMAL).expect("minimal");
    assert_eq!(c.server.preface_timeout, Duration::from_secs(10));
    assert_eq!(c.server.max_connections_per_peer, 64);
    assert_eq!(c.server.max_refusals_per_peer, 20);
    assert_eq!(c.server.refusal_window, Duration::from_secs(60));
    assert_eq!(
        c.auth.max_token_lifetime,
        Duration::from_secs(90 * 24 * 3600)
    );
    assert_eq!(c.auth.leeway, Duration::from_secs(5));
    // The master's certificate must name the master identity, as a client
    // and as the server the agent registers with.
    assert_eq!(c.auth.master_cert_name(), "mcp-master");
    assert_eq!(c.master_server_name(), "mcp-master");
    let c = parse(&with("auth", "master_cert_name = \"master.internal\"")).expect("valid");
    assert_eq!(c.master_server_name(), "master.internal");
    let text = with("master", "server_name = \"100.64.0.1\"");
    let c = parse(&text).expect("valid");
    assert_eq!(c.master_server_name(), "100.64.0.1");
    assert_eq!(c.auth.master_cert_name(), "mcp-master");
    let opts = c.server.incoming_options();
    assert_eq!(opts.preface_timeout, Some(Duration::from_secs(10)));
    assert_eq!(opts.max_connections_per_peer, Some(64));

    assert_eq!(
        problems(&with(
            "server",
            "preface_timeout = \"0s\"\nmax_connections_per_peer = 0\n\
             max_refusals_per_peer = 0\nrefusal_window = \"0s\""
        )),
        vec![
            "server.preface_timeout: must be greater than zero".to_string(),
            "server.max_connections_per_peer: must be at least 1".to_string(),
            "server.max_refusals_per_peer: must be at least 1".to_string(),
            "server.refusal_window: must be greater than zero".to_string(),
        ]
    );
    assert_eq!(
        problems(&with(
            "auth",
            "master_cert_name = \"not a name\"\nmax_token_lifetime = \"0s\"\nleeway = \"10m\""
        )),
        vec![
            "auth.master_cert_name: \"not a name\" is not a DNS name or IP address a \
             certificate can carry"
                .to_string(),
            "auth.max_token_lifetime: must be greater than zero".to_string(),
            "auth.leeway: 10m is longer than 5m: expired tokens would stay usable".to_string(),
        ]
    );
    assert_eq!(
        problems(&with("master", "server_name = \"\"")),
        vec![
            "master.server_name: \"\" is not a DNS name or IP address a certificate can carry"
                .to_string()
        ]
    );
}

#[test]
fn net_module_doc_example_parses() {
    let doc = include_str!("net.rs");
    let example: String = doc
        .lines()
        .skip_while(|l| !l.starts_with("//! ```toml"))
        .skip(1)
        .take_while(|l| !l.starts_with("//! ```"))
        .map(|l| l.trim_start_matches("//!").trim_start().to_string() + "\n")
        .collect();
    let c = parse(&format!("{MINIMAL}\n{example}")).expect("net example");
    let p = c.proxy.as_ref().unwrap();
    assert_eq!(p.internal_zone, "svc.example.internal");
    assert_eq!(p.check_interval, Duration::from_secs(5));
    assert_eq!(
        p.l7.as_ref().unwrap().admin,
        "127.0.0.1:2019".parse().unwrap()
    );
    assert_eq!(p.l4.as_ref().unwrap().adapter, L4Adapter::Haproxy);
    let certs = c.certs.as_ref().unwrap();
    assert_eq!(certs.issuer, IssuerKind::LocalCa);
    assert_eq!(certs.acme.as_ref().unwrap().dns.tsig_key_name, "acme");
    assert_eq!(c.cert_dir(), PathBuf::from("/var/lib/mcp/certs"));
    assert_eq!(c.proxy_address(), Some("100.64.0.12".parse().unwrap()));
}

#[test]
fn net_sections_are_checked() {
    let text = format!(
        "{MINIMAL}\n[proxy]\ninternal_zone = \"not a zone\"\ncheck_interval = \"0s\"\n\
         l7 = {{ adapter = \"caddy\", admin = \"127.0.0.1:2019\" }}\n\
         l4 = {{ adapter = \"haproxy\", config = \"rel.cfg\", master_socket = \"/run/h.sock\" }}\n"
    );
    assert_eq!(
        problems(&text),
        [
            "proxy.internal_zone: \"not a zone\" is not a DNS name",
            "proxy.check_interval: must be greater than zero",
            "proxy.l4.config: rel.cfg is not an absolute path",
            "certs: an L7 proxy terminates TLS: configure where certificates come from ([certs])",
        ]
    );
    let text = format!(
        "{MINIMAL}\n[ports]\nbind_address = \"100.64.0.12\"\n[proxy]\ninternal_zone = \"mcp.test\"\n\
         l4 = {{ adapter = \"haproxy\", config = \"/h.cfg\", master_socket = \"/run/h.sock\" }}\n"
    );
    assert_eq!(
        problems(&text),
        ["ports.bind_address: 100.64.0.12 is not a loopback address: with [proxy], containers publish on loopback and only the proxy listens on the node's address"]
    );
    let text = format!("{MINIMAL}\n[certs]\nissuer = \"local-ca\"\n");
    assert_eq!(
        problems(&text),
        [
            "certs.ca_cert: required with issuer = \"local-ca\"",
            "certs.ca_key: required with issuer = \"local-ca\"",
        ]
    );
    let text = format!("{MINIMAL}\n[certs]\nissuer = \"acme\"\n");
    assert_eq!(
        problems(&text),
        ["certs.acme: required with issuer = \"acme\""]
    );
    let text = format!(
        "{MINIMAL}\n[certs]\nissuer = \"acme\"\n[certs.acme]\ndirectory = \"http://x/dir\"\n\
         [certs.acme.dns]\nserver = \"127.0.0.1:53\"\nzone = \"mcp.test\"\ntsig_key_name = \"k\"\n\
         tsig_algorithm = \"hmac-md5\"\ntsig_secret_file = \"/s\"\n"
    );
    assert_eq!(
        problems(&text),
        [
            "certs.acme.directory: \"http://x/dir\" is not an https:// URL",
            "certs.acme.dns.tsig_algorithm: must be one of hmac-sha256, hmac-sha384, hmac-sha512, found \"hmac-md5\"",
        ]
    );
    let text = format!("{MINIMAL}\n[proxy]\ninternal_zone = \"mcp.test\"\nl7 = {{ adapter = \"nginx\", admin = \"127.0.0.1:1\" }}\n");
    assert!(
        parse(&text).unwrap_err().to_string().contains("nginx"),
        "unknown adapters are refused"
    );
}
