#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use super::*;

const MINIMAL: &str = r#"
[server]
grpc_addr = "100.64.0.1:9443"
tls_cert = "/etc/mcp/master.pem"
tls_key = "/etc/mcp/master.key"
ca_cert = "/etc/mcp/ca.pem"

[database]
path = "/var/lib/mcp/master.db"

[auth]
issuer_public_key = "/etc/mcp/issuer.pub"
issuer = "mcias"
audience = "mcp"
token_file = "/etc/mcp/master.token"

[edge]
internal_zone = "svc.example.internal"
"#;

fn parse(text: &str) -> Config {
    match Config::parse(Path::new("master.toml"), text) {
        Ok(c) => c,
        Err(e) => panic!("parse failed: {e}"),
    }
}

fn parse_err(text: &str) -> String {
    match Config::parse(Path::new("master.toml"), text) {
        Ok(c) => panic!("expected a parse error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn problems(text: &str) -> Vec<String> {
    problems_of(&parse(text))
}

fn problems_of(c: &Config) -> Vec<String> {
    match c.validate() {
        Ok(()) => Vec::new(),
        Err(p) => p.iter().map(ToString::to_string).collect(),
    }
}

/// The example in the module documentation, with `//! ` stripped.
fn doc_example() -> String {
    let src = include_str!("../config.rs");
    let mut out = String::new();
    let mut inside = false;
    for line in src.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            continue;
        };
        let doc = doc.strip_prefix(' ').unwrap_or(doc);
        if doc.starts_with("```toml") {
            inside = true;
        } else if doc.starts_with("```") {
            break;
        } else if inside {
            out.push_str(doc);
            out.push('\n');
        }
    }
    assert!(out.contains("[server]"), "doc example not found");
    out
}

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let c = parse(MINIMAL);
    assert_eq!(c.validate(), Ok(()));
    assert!(!c.gitops());
    assert_eq!(c.auth.master_identity, "mcp-master");
    assert_eq!(c.edge.overlay_cidrs, vec!["100.64.0.0/10".parse().unwrap()]);
    assert!(c.edge.allowed_domains.is_empty());
    let r = &c.registration;
    assert_eq!(r.max_nodes, 16);
    assert_eq!(r.heartbeat_interval, Duration::from_secs(30));
    assert_eq!(r.heartbeat_timeout, Duration::from_secs(90));
    assert_eq!(r.register_min_interval, Duration::from_secs(60));
    assert_eq!(r.heartbeat_min_interval, Duration::from_secs(10));
    let t = c.timeouts;
    assert_eq!(t.deploy, Duration::from_secs(300));
    assert_eq!(t.edge_route, Duration::from_secs(30));
    assert_eq!(t.health_check, Duration::from_secs(5));
    assert_eq!(t.undeploy, Duration::from_secs(120));
    assert_eq!(t.snapshot, Duration::from_secs(600));
    assert_eq!(c.snapshots, None);
    assert_eq!(c.dns, None);
    assert_eq!(c.reconcile, ReconcileConfig::default());
    assert_eq!(c.reconcile.interval, Duration::from_secs(60));
    assert_eq!(c.reconcile.concurrency, 4);
    assert!(!c.reconcile.allow_auto_migrate);
    assert!(c.nodes.is_empty());
    assert_eq!(
        c.auth.verification(),
        Some(TokenVerification::Jwt {
            public_key: Path::new("/etc/mcp/issuer.pub"),
            issuer: "mcias",
            audience: "mcp",
        })
    );
}

#[test]
fn the_documented_example_is_valid() {
    let c = parse(&doc_example());
    assert_eq!(c.validate(), Ok(()));
    assert!(c.gitops());
    let s = c.services.as_ref().unwrap();
    assert_eq!(s.debounce, Duration::from_millis(500));
    assert_eq!(s.poll, Duration::from_secs(30));
    let snap = c.snapshots.as_ref().unwrap();
    assert_eq!(snap.interval, Duration::from_secs(86400));
    assert_eq!(snap.retain, 7);
    match c.dns.as_ref().unwrap() {
        DnsConfig::Rfc2136(d) => {
            assert_eq!(d.tsig_algorithm, "hmac-sha256");
            assert_eq!(d.ttl, Duration::from_secs(60));
        }
        other => panic!("expected rfc2136, got {other:?}"),
    }
    assert_eq!(
        c.dns.as_ref().unwrap().zone(&c.edge.internal_zone),
        "svc.example.internal"
    );
    assert_eq!(
        c.nodes,
        vec![NodeEntry {
            name: "orion".into(),
            address: "https://100.64.0.1:9444".into(),
            role: NodeRole::Master,
        }]
    );
}

#[test]
fn durations_use_humantime() {
    let c = parse(&format!(
        "{MINIMAL}\n[services]\ndir = \"/srv/services\"\ndebounce = \"250ms\"\npoll = \"1m 30s\"\n"
    ));
    let s = c.services.unwrap();
    assert_eq!(s.debounce, Duration::from_millis(250));
    assert_eq!(s.poll, Duration::from_secs(90));

    let err = parse_err(&format!(
        "{MINIMAL}\n[timeouts]\ndeploy = \"five minutes\"\n"
    ));
    assert!(err.contains("invalid duration \"five minutes\""), "{err}");
    assert!(err.contains("master.toml"), "{err}");
}

#[test]
fn unknown_keys_are_errors_with_their_line() {
    let err = parse_err(&format!("{MINIMAL}\n[reconcile]\nintervall = \"30s\"\n"));
    assert!(err.contains("unknown field `intervall`"), "{err}");
    let line = MINIMAL.lines().count() + 3;
    assert!(err.contains(&format!("line {line}, column 1")), "{err}");

    let err = parse_err(&format!("{MINIMAL}\n[extra]\nx = 1\n"));
    assert!(err.contains("unknown field `extra`"), "{err}");
}

#[test]
fn missing_sections_are_named() {
    let err = parse_err("[database]\npath = \"x.db\"\n");
    assert!(err.contains("missing field `server`"), "{err}");
}

#[test]
fn dns_adapters() {
    let c = parse(&format!(
        "{MINIMAL}\n[dns]\nadapter = \"mcns\"\nurl = \"https://mcns.example:8443\"\nzone = \"example.internal\"\ntoken_file = \"/etc/mcp/mcns.token\"\n"
    ));
    // Parsed, but not implemented in this build: refused, not skipped.
    assert_eq!(
        problems_of(&c),
        vec!["dns.adapter: \"mcns\" is not available in this build; use \"rfc2136\""]
    );
    match &c.dns {
        Some(DnsConfig::Mcns(m)) => {
            assert_eq!(m.url, "https://mcns.example:8443");
            assert_eq!(m.ca_cert, None);
        }
        other => panic!("expected mcns, got {other:?}"),
    }

    let err = parse_err(&format!(
        "{MINIMAL}\n[dns]\nadapter = \"route53\"\nzone = \"x\"\n"
    ));
    assert!(err.contains("route53"), "{err}");

    let err = parse_err(&format!(
        "{MINIMAL}\n[dns]\nadapter = \"mcns\"\nurl = \"https://m\"\ntoken_file = \"t\"\nsecret = \"x\"\n"
    ));
    assert!(err.contains("unknown field `secret`"), "{err}");

    let p = problems(&format!(
        "{MINIMAL}\n[dns]\nadapter = \"rfc2136\"\nserver = \"ns1\"\nzone = \"other.example\"\ntsig_key_name = \"\"\ntsig_algorithm = \"hmac-md5\"\ntsig_secret_file = \"s\"\n"
    ));
    assert_eq!(
        p,
        vec![
            "dns.server: must be host:port, found \"ns1\"",
            "dns.tsig_key_name: must not be empty",
            "dns.tsig_algorithm: must be one of hmac-sha256, hmac-sha384, hmac-sha512, found \"hmac-md5\"",
            "dns.zone: \"other.example\" does not contain edge.internal_zone \"svc.example.internal\", so service records cannot be written there",
        ]
    );
}

#[test]
fn validation_reports_every_problem() {
    let text = r#"
[server]
grpc_addr = "127.0.0.1:0"
tls_cert = ""
tls_key = "k"
ca_cert = "c"

[database]
path = "m.db"

[auth]
issuer_public_key = "k.pub"
identity_service_url = "https://id.example"
master_identity = "agent-master"
token_file = "t"

[edge]
internal_zone = "not a zone"
allowed_domains = ["net", "example.net", "bad..domain"]
overlay_cidrs = []

[registration]
allowed_agents = ["orion", "agent-vega", "agent-vega"]
max_nodes = 1
heartbeat_interval = "30s"
heartbeat_timeout = "30s"
heartbeat_min_interval = "1m"

[timeouts]
deploy = "0s"

[snapshots]
dir = "snaps"
interval = "10s"
retain = 0

[reconcile]
concurrency = 0

[[nodes]]
name = "Orion"
address = "a"
role = "master"

[[nodes]]
name = "vega"
address = "b c"
role = "master"
"#;
    let p = problems(text);
    let expected = [
        "server.grpc_addr: port must not be 0",
        "server.tls_cert: must not be empty",
        "auth: set either issuer_public_key (local JWT verification) or identity_service_url, not both",
        "auth.master_identity: \"agent-master\" must not be an agent identity (agent-*)",
        "edge.internal_zone: \"not a zone\" is not a valid domain name",
        "edge.allowed_domains: \"net\" is a top-level domain; name a domain you control",
        "edge.allowed_domains: \"bad..domain\" is not a valid domain name",
        "edge.overlay_cidrs: must not be empty (default [\"100.64.0.0/10\"])",
        "registration.allowed_agents: \"orion\" is not an agent identity (agent-<node>)",
        "registration.allowed_agents: \"agent-vega\" is listed twice",
        "registration.heartbeat_timeout: 30s must be longer than heartbeat_interval (30s)",
        "registration.heartbeat_min_interval: 1m must be shorter than heartbeat_interval (30s), or every heartbeat is refused",
        "timeouts.deploy: must be more than 0s",
        "snapshots.interval: must be at least 1m",
        "snapshots.retain: must be at least 1",
        "reconcile.concurrency: must be at least 1",
        "nodes[0].name: \"Orion\" is not a DNS label (lowercase letters, digits, '-')",
        "nodes[1].address: must be a non-empty address without spaces, found \"b c\"",
        "nodes: 2 nodes have role \"master\"; at most one may",
        "nodes: 2 bootstrap nodes exceed registration.max_nodes (1)",
    ];
    assert_eq!(p, expected);
}

#[test]
fn jwt_verification_needs_issuer_and_audience() {
    let text = MINIMAL
        .replace("issuer = \"mcias\"\n", "")
        .replace("audience = \"mcp\"\n", "");
    assert_eq!(
        problems(&text),
        vec![
            "auth.issuer: is required with auth.issuer_public_key",
            "auth.audience: is required with auth.issuer_public_key",
        ]
    );
    let text = MINIMAL.replace(
        "issuer_public_key = \"/etc/mcp/issuer.pub\"\nissuer = \"mcias\"\naudience = \"mcp\"\n",
        "identity_service_url = \"https://mcias.example/v1/validate\"\n",
    );
    let c = parse(&text);
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(
        c.auth.verification(),
        Some(TokenVerification::IdentityService {
            url: "https://mcias.example/v1/validate"
        })
    );
    let text = MINIMAL.replace(
        "issuer_public_key = \"/etc/mcp/issuer.pub\"\nissuer = \"mcias\"\naudience = \"mcp\"\n",
        "",
    );
    assert_eq!(
        problems(&text),
        vec!["auth: set issuer_public_key (local JWT verification) or identity_service_url"]
    );
}

#[test]
fn load_resolves_relative_paths_against_the_config_dir() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n[services]\ndir = \"services\"\n[snapshots]\ndir = \"snaps\"\n",
        MINIMAL
            .replace("/var/lib/mcp/master.db", "state/master.db")
            .replace("/etc/mcp/master.pem", "tls/master.pem")
    );
    let path = dir.path().join("master.toml");
    std::fs::write(&path, text).unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.database.path, dir.path().join("state/master.db"));
    assert_eq!(c.server.tls_cert, dir.path().join("tls/master.pem"));
    assert_eq!(c.server.tls_key, Path::new("/etc/mcp/master.key"));
    assert_eq!(c.services.unwrap().dir, dir.path().join("services"));
    assert_eq!(c.snapshots.unwrap().dir, dir.path().join("snaps"));
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("cannot read config {}", path.display())),
        "{err}"
    );

    let path = dir.path().join("bad.toml");
    std::fs::write(&path, MINIMAL.replace("svc.example.internal", "-bad-")).unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "invalid config {}:\n  - edge.internal_zone: \"-bad-\" is not a valid domain name",
            path.display()
        )
    );
}

#[test]
fn check_paths_reports_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for f in ["master.pem", "master.key", "ca.pem", "issuer.pub"] {
        std::fs::write(d.join(f), "x").unwrap();
    }
    std::fs::create_dir(d.join("services")).unwrap();
    let text = MINIMAL
        .replace("/etc/mcp/", "")
        .replace("/var/lib/mcp/master.db", "master.db")
        + "[services]\ndir = \"services\"\n[snapshots]\ndir = \"nowhere/snaps\"\n";
    let path = d.join("master.toml");
    std::fs::write(&path, text).unwrap();
    let c = Config::load(&path).unwrap();
    let p: Vec<String> = c.check_paths().iter().map(ToString::to_string).collect();
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].starts_with(&format!(
        "auth.token_file: cannot read {}",
        d.join("master.token").display()
    )));
    assert_eq!(
        p[1],
        format!(
            "snapshots.dir: directory {} does not exist",
            d.join("nowhere").display()
        )
    );
}

#[test]
fn cidr_parsing_and_membership() {
    let c: Cidr = "100.64.0.0/10".parse().unwrap();
    assert!(c.contains("100.64.0.1".parse().unwrap()));
    assert!(c.contains("100.127.255.255".parse().unwrap()));
    assert!(!c.contains("100.128.0.1".parse().unwrap()));
    assert!(!c.contains("10.0.0.1".parse().unwrap()));
    assert!(!c.contains("::1".parse().unwrap()));
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("8.8.8.8".parse().unwrap()));
    let v6: Cidr = "fd7a:115c:a1e0::/48".parse().unwrap();
    assert!(v6.contains("fd7a:115c:a1e0:ab12::1".parse().unwrap()));
    assert!(!v6.contains("fd7a:115c:a1e1::1".parse().unwrap()));
    assert_eq!(v6.to_string(), "fd7a:115c:a1e0::/48");
    for bad in ["100.64.0.0", "100.64.0.0/33", "x/8", "::/129", "1.2.3.4/-1"] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad} parsed");
    }
    let err = parse_err(&MINIMAL.replace(
        "internal_zone = \"svc.example.internal\"",
        "internal_zone = \"svc.example.internal\"\noverlay_cidrs = [\"100.64.0.0/40\"]",
    ));
    assert!(err.contains("invalid CIDR \"100.64.0.0/40\""), "{err}");
    // Host bits must be zero: a typo, not a network.
    assert!("100.64.0.1/10".parse::<Cidr>().is_err());
}

#[test]
fn node_roles() {
    for r in [NodeRole::Master, NodeRole::Worker, NodeRole::Edge] {
        assert_eq!(r.as_str().parse::<NodeRole>(), Ok(r));
    }
    assert!("boss".parse::<NodeRole>().is_err());
    let err = parse_err(&format!(
        "{MINIMAL}\n[[nodes]]\nname = \"a\"\naddress = \"x\"\nrole = \"boss\"\n"
    ));
    assert!(err.contains("boss"), "{err}");
}

#[test]
fn config_round_trips_through_toml() {
    let c = parse(&doc_example());
    let text = toml::to_string(&c).unwrap();
    assert_eq!(parse(&text), c);
}

#[test]
fn registration_roles_and_address_rules() {
    let c = parse(MINIMAL);
    assert!(c.registration.roles.is_empty());
    assert!(!c.registration.allow_overlay_addresses);
    assert_eq!(
        c.registration.address_change_cooldown,
        Duration::from_secs(600)
    );
    let text = format!(
        "{MINIMAL}
[registration]
allow_overlay_addresses = true
address_change_cooldown = \"1h\"

[registration.roles]
vega = \"worker\"
edge1 = \"edge\"

[[nodes]]
name = \"orion\"
address = \"https://100.64.0.1:9444\"
role = \"master\"
"
    );
    let c = parse(&text);
    assert_eq!(problems(&text), Vec::<String>::new());
    assert!(c.registration.allow_overlay_addresses);
    assert_eq!(
        c.registration.address_change_cooldown,
        Duration::from_secs(3600)
    );
    assert_eq!(
        c.node_roles().into_iter().collect::<Vec<_>>(),
        [
            ("edge1".to_string(), NodeRole::Edge),
            ("orion".to_string(), NodeRole::Master),
            ("vega".to_string(), NodeRole::Worker),
        ]
    );

    // A bad name, a contradiction with [[nodes]], two masters.
    let text = format!(
        "{MINIMAL}
[registration.roles]
Vega = \"worker\"
orion = \"worker\"
lyra = \"master\"

[[nodes]]
name = \"orion\"
address = \"https://100.64.0.1:9444\"
role = \"master\"
"
    );
    assert_eq!(
        problems(&text),
        [
            "registration.roles.Vega: \"Vega\" is not a node name (a DNS label: lowercase letters, digits, '-')",
            "registration.roles.orion: worker contradicts the [[nodes]] entry of orion (role master); name a node's role once",
            "nodes: 2 nodes have role \"master\"; at most one may",
        ]
    );
    assert!(parse_err(&format!(
        "{MINIMAL}\n[registration.roles]\nvega = \"boss\"\n"
    ))
    .contains("boss"));
}

#[test]
fn audit_retention_defaults_and_checks() {
    let c = parse(MINIMAL);
    assert_eq!(c.audit, AuditConfig::default());
    assert_eq!(c.audit.max_age, Duration::from_secs(90 * 86400));
    assert_eq!(c.audit.max_rows, 100_000);
    assert_eq!(c.audit.prune_interval, Duration::from_secs(600));
    let c = parse(&format!(
        "{MINIMAL}\n[audit]\nmax_age = \"7d\"\nmax_rows = 500\nprune_interval = \"1m\"\n"
    ));
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(c.audit.max_age, Duration::from_secs(7 * 86400));
    assert_eq!(c.audit.max_rows, 500);
    assert_eq!(
        problems(&format!(
            "{MINIMAL}\n[audit]\nmax_age = \"0s\"\nmax_rows = 0\nprune_interval = \"10ms\"\n"
        )),
        [
            "audit.max_age: must be more than 0s",
            "audit.max_rows: must be at least 1",
            "audit.prune_interval: must be at least 1s",
        ]
    );
    let err = parse_err(&format!("{MINIMAL}\n[audit]\nmax_age = \"forever\"\n"));
    assert!(err.contains("invalid duration \"forever\""), "{err}");
}

#[test]
fn hardening_keys_default_and_are_checked() {
    let c = parse(MINIMAL);
    assert_eq!(c.server.preface_timeout, Duration::from_secs(10));
    assert_eq!(c.server.max_connections_per_peer, 64);
    assert_eq!(c.server.max_refusals_per_peer, 20);
    assert_eq!(c.server.refusal_window, Duration::from_secs(60));
    assert_eq!(c.server.agent_server_name, AgentServerName::Node);
    assert_eq!(c.auth.master_cert_name(), "mcp-master");
    assert_eq!(
        c.auth.max_token_lifetime,
        Duration::from_secs(90 * 24 * 3600)
    );
    assert_eq!(c.auth.leeway, Duration::from_secs(5));
    let limits = c.server.failure_limits();
    assert_eq!(
        (limits.max_failures, limits.window),
        (20, Duration::from_secs(60))
    );

    let text = MINIMAL
        .replace(
            "ca_cert = \"/etc/mcp/ca.pem\"",
            "ca_cert = \"/etc/mcp/ca.pem\"\nagent_server_name = \"address\"\n\
             preface_timeout = \"0s\"\nmax_connections_per_peer = 0\n\
             max_refusals_per_peer = 0\nrefusal_window = \"0s\"",
        )
        .replace(
            "token_file = \"/etc/mcp/master.token\"",
            "token_file = \"/etc/mcp/master.token\"\nmaster_cert_name = \"a b\"\n\
             max_token_lifetime = \"0s\"\nleeway = \"6m\"",
        );
    assert_eq!(
        parse(&text).server.agent_server_name,
        AgentServerName::Address
    );
    assert_eq!(
        problems(&text),
        [
            "server.preface_timeout: must be more than 0s",
            "server.max_connections_per_peer: must be at least 1",
            "server.max_refusals_per_peer: must be at least 1",
            "server.refusal_window: must be more than 0s",
            "auth.master_cert_name: \"a b\" is not a DNS name or IP address a certificate can carry",
            "auth.max_token_lifetime: must be more than 0s",
            "auth.leeway: 6m is longer than 5m: expired tokens would stay usable",
        ]
    );
    let err = parse_err(&MINIMAL.replace(
        "ca_cert = \"/etc/mcp/ca.pem\"",
        "ca_cert = \"/etc/mcp/ca.pem\"\nagent_server_name = \"ip\"",
    ));
    assert!(err.contains("line 7, column 21"), "{err}");
    assert!(
        err.contains("unknown variant `ip`, expected `node` or `address`"),
        "{err}"
    );
}
