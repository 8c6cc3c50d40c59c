//! Edge validation, registration binding, rate limits, token sources,
//! bearer parsing, classification.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mcp_security::authz::{classify, CallerClass};
use mcp_security::clock::ManualClock;
use mcp_security::edge::{Cidr, EdgeError, EdgePolicy, Overlay};
use mcp_security::identity::AccountType::{Human, System};
use mcp_security::identity::Identity;
use mcp_security::layer::parse_bearer;
use mcp_security::registration::{
    address_host, check_address, check_cooldown, check_role, node_from_identity, RateLimiter,
    RateLimits, RegistrationError, RegistrationPolicy, RoleSource,
};
use mcp_security::token::{resolve_token, BearerInterceptor, TokenSourceError};
use mcp_spec::NodeRole;

fn policy() -> EdgePolicy {
    EdgePolicy {
        allowed_domains: vec!["example.net".into(), "Apps.Example.ORG.".into()],
        internal_zone: "svc.mcp.internal".into(),
        overlay: Overlay::default(),
    }
}

#[test]
fn public_hostname_label_match() {
    let p = policy();
    let ok = |h: &str| p.check_public_hostname(h);
    assert_eq!(ok("example.net").unwrap(), "example.net");
    assert_eq!(ok("mcq.example.net").unwrap(), "mcq.example.net");
    assert_eq!(ok("a.b.example.net").unwrap(), "a.b.example.net");
    assert_eq!(ok("MCQ.Example.NET.").unwrap(), "mcq.example.net");
    assert_eq!(ok("x.apps.example.org").unwrap(), "x.apps.example.org");
    for bad in [
        "evilexample.net",
        "example.net.evil.com",
        "example.org",
        "xapps.example.org",
        "net",
        "example.com",
    ] {
        assert!(
            matches!(ok(bad), Err(EdgeError::NotAllowedDomain { .. })),
            "{bad}: {:?}",
            ok(bad)
        );
    }
    for invalid in [
        "",
        ".",
        "..example.net",
        "a..example.net",
        "-a.example.net",
        "a b.example.net",
        "*.example.net",
        "a_b.example.net",
    ] {
        assert!(
            matches!(ok(invalid), Err(EdgeError::InvalidHostname(_))),
            "{invalid:?}: {:?}",
            ok(invalid)
        );
    }
    let long = format!("{}.example.net", "a".repeat(64));
    assert!(ok(&long).is_err());
}

#[test]
fn backend_hostname_under_internal_zone() {
    let p = policy();
    assert_eq!(
        p.check_backend_hostname("mcq.svc.mcp.internal").unwrap(),
        "mcq.svc.mcp.internal"
    );
    assert_eq!(
        p.check_backend_hostname("MCQ.svc.mcp.internal.").unwrap(),
        "mcq.svc.mcp.internal"
    );
    for bad in [
        "svc.mcp.internal",
        "mcq.evilsvc.mcp.internal",
        "mcq.example.net",
        "mcqsvc.mcp.internal",
    ] {
        assert!(p.check_backend_hostname(bad).is_err(), "{bad}");
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn cidr_checks() {
    let o = Overlay::default();
    assert_eq!(o.to_string(), "100.64.0.0/10");
    for inside in [
        "100.64.0.0",
        "100.64.0.1",
        "100.100.1.2",
        "100.127.255.255",
        "::ffff:100.64.0.7",
    ] {
        assert!(o.contains(ip(inside)), "{inside}");
    }
    for outside in [
        "100.63.255.255",
        "100.128.0.0",
        "10.0.0.1",
        "127.0.0.1",
        "::1",
        "fd7a:115c::1",
    ] {
        assert!(!o.contains(ip(outside)), "{outside}");
    }
    let v6: Cidr = "fd7a:115c:a1e0::/48".parse().unwrap();
    assert!(v6.contains(ip("fd7a:115c:a1e0::1")));
    assert!(!v6.contains(ip("fd7a:115c:a1e1::1")));
    assert!(!v6.contains(ip("100.64.0.1")));
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains(ip("8.8.8.8")));
    let all6: Cidr = "::/0".parse().unwrap();
    assert!(all6.contains(ip("2001:db8::1")));
    let host: Cidr = "100.64.0.5/32".parse().unwrap();
    assert!(host.contains(ip("100.64.0.5")) && !host.contains(ip("100.64.0.6")));
    for bad in [
        "100.64.0.0",
        "100.64.0.0/33",
        "100.64.0.1/10",
        "100.64.0.0/",
        "100.64.0.0/+1",
        "x/8",
        "::/129",
        "",
    ] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
    }
    let multi = Overlay::parse(&["100.64.0.0/10", "fd7a:115c:a1e0::/48"]).unwrap();
    assert!(multi.contains(ip("fd7a:115c:a1e0::9")));
    assert!(Overlay::parse(&["nope"]).is_err());
}

#[test]
fn whole_route_check() {
    let p = policy();
    let overlay = [ip("100.64.0.9")];
    assert_eq!(
        p.check_route("mcq.example.net", "mcq.svc.mcp.internal", &overlay, true)
            .unwrap(),
        (
            "mcq.example.net".to_string(),
            "mcq.svc.mcp.internal".to_string()
        )
    );
    assert_eq!(
        p.check_route("mcq.example.net", "mcq.svc.mcp.internal", &overlay, false),
        Err(EdgeError::BackendTlsOff)
    );
    assert!(matches!(
        p.check_route(
            "mcq.example.net",
            "mcq.svc.mcp.internal",
            &[ip("100.64.0.9"), ip("203.0.113.4")],
            true
        ),
        Err(EdgeError::OutsideOverlay { .. })
    ));
    assert!(matches!(
        p.check_route("mcq.example.net", "mcq.svc.mcp.internal", &[], true),
        Err(EdgeError::Unresolved { .. })
    ));
    assert_eq!(
        p.check_route("evilexample.net", "mcq.svc.mcp.internal", &overlay, true)
            .unwrap_err()
            .to_status()
            .code(),
        tonic::Code::InvalidArgument
    );
}

fn sys(name: &str) -> Identity {
    Identity::new(name, System, &[])
}

#[test]
fn identity_to_node_binding() {
    assert_eq!(node_from_identity(&sys("agent-orion")).unwrap(), "orion");
    assert_eq!(node_from_identity(&sys("agent-a-1")).unwrap(), "a-1");
    for bad in [
        "agent-",
        "agent",
        "orion",
        "agent-Orion",
        "agent-orion.evil",
        "agent--x",
        "xagent-orion",
    ] {
        assert!(
            matches!(
                node_from_identity(&sys(bad)),
                Err(RegistrationError::NotAgent(_))
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        node_from_identity(&Identity::new("agent-orion", Human, &[])),
        Err(RegistrationError::NotSystem(_))
    ));

    let p = RegistrationPolicy::new(["agent-a", "agent-b", "agent-c"], 2);
    let none = BTreeSet::new();
    assert_eq!(p.check_register(&sys("agent-a"), "a", &none).unwrap(), "a");
    let e = p.check_register(&sys("agent-a"), "b", &none).unwrap_err();
    assert_eq!(
        e.to_string(),
        "identity agent-a may only register node a, not b"
    );
    assert_eq!(e.to_status().code(), tonic::Code::PermissionDenied);
    let e = p.check_register(&sys("agent-z"), "z", &none).unwrap_err();
    assert_eq!(e, RegistrationError::NotAllowed("agent-z".into()));
    let full: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
    // Re-registration of a known node is fine at the limit; a new one is not.
    assert_eq!(p.check_register(&sys("agent-a"), "a", &full).unwrap(), "a");
    let e = p.check_register(&sys("agent-c"), "c", &full).unwrap_err();
    assert_eq!(e.to_status().code(), tonic::Code::ResourceExhausted);
    assert_eq!(p.check_heartbeat(&sys("agent-b"), "b").unwrap(), "b");
    assert!(p.check_heartbeat(&sys("agent-b"), "a").is_err());
    assert!(RegistrationPolicy::default()
        .check_register(&sys("agent-a"), "a", &none)
        .is_err());
}

#[test]
fn a_registration_cannot_choose_its_role() {
    use NodeRole::{Edge, Master, Worker};
    // Configured: only that role.
    assert_eq!(
        check_role("w1", Some(Worker), None, Worker).unwrap(),
        Worker
    );
    let e = check_role("w1", Some(Worker), Some(Worker), Master).unwrap_err();
    assert!(matches!(
        e,
        RegistrationError::RoleFixed {
            role: Worker,
            requested: Master,
            from: RoleSource::Config,
            ..
        }
    ));
    assert_eq!(e.to_status().code(), tonic::Code::PermissionDenied);
    // The configuration wins over what the node registered with before.
    assert!(check_role("w1", Some(Edge), Some(Worker), Worker).is_err());
    // Not configured: the first registration's role, then fixed.
    assert_eq!(check_role("w2", None, None, Edge).unwrap(), Edge);
    let e = check_role("w2", None, Some(Edge), Master).unwrap_err();
    assert!(
        e.to_string().contains("set by its first registration"),
        "{e}"
    );
}

#[test]
fn a_new_address_must_be_named_by_the_client_certificate() {
    let ca = mcp_security::pki::Ca::generate("fleet").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let der = |names: &[&str]| {
        let f = ca
            .write_leaf(
                dir.path(),
                names[0],
                names,
                mcp_security::pki::Validity::Days(1),
            )
            .unwrap();
        mcp_security::tls::load_certs("test", &f.cert).unwrap()[0]
            .as_ref()
            .to_vec()
    };
    let w1 = der(&["w1", "127.0.0.1", "fd00::1"]);
    assert_eq!(
        address_host("https://127.0.0.1:9444").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        address_host("https://[fd00::1]:9444").as_deref(),
        Some("fd00::1")
    );
    assert_eq!(address_host("127.0.0.1:9444"), None);
    assert_eq!(address_host("https://:9444"), None);
    for ok in [
        "https://127.0.0.1:9444",
        "https://W1:1",
        "https://[fd00::1]:9444",
    ] {
        check_address("w1", ok, Some(&w1), None, None).unwrap();
    }
    for (leaf, bad) in [
        (Some(&w1), "https://127.0.0.2:9444"),
        (Some(&w1), "https://w2:9444"),
        (None, "https://127.0.0.1:9444"),
    ] {
        let e = check_address(
            "w1",
            bad,
            leaf.map(Vec::as_slice),
            None,
            Some("https://w1:1"),
        )
        .unwrap_err();
        assert_eq!(e.to_status().code(), tonic::Code::PermissionDenied, "{bad}");
        assert!(
            e.to_string()
                .contains("the master keeps calling https://w1:1"),
            "{e}"
        );
    }
    let e = check_address("w1", "not an address", Some(&w1), None, None).unwrap_err();
    assert_eq!(e.to_status().code(), tonic::Code::InvalidArgument);
    // Inside the overlay when allowed; a name is never "inside".
    let overlay: Vec<Cidr> = vec!["100.64.0.0/10".parse().unwrap()];
    check_address("w1", "https://100.64.1.2:9444", None, Some(&overlay), None).unwrap();
    assert!(check_address("w1", "https://100.64.1.2:9444", None, None, None).is_err());
    assert!(check_address("w1", "https://100.128.0.1:9444", None, Some(&overlay), None).is_err());
    assert!(check_address("w1", "https://w9:9444", None, Some(&overlay), None).is_err());
}

#[test]
fn address_changes_cool_down() {
    let t0 = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let cd = Duration::from_secs(600);
    check_cooldown("w1", "https://b:1", "https://a:1", None, t0, cd).unwrap();
    let e = check_cooldown(
        "w1",
        "https://b:1",
        "https://a:1",
        Some(t0),
        t0 + Duration::from_secs(599),
        cd,
    )
    .unwrap_err();
    assert_eq!(e.to_status().code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        e.to_string(),
        "node w1: address change to https://b:1 refused: its address changed 9m 59s ago, less \
         than the cool-down (10m); the master keeps calling https://a:1"
    );
    check_cooldown("w1", "https://b:1", "https://a:1", Some(t0), t0 + cd, cd).unwrap();
    // A change stamped in the future (clock stepped back) counts as now.
    assert!(check_cooldown("w1", "https://b:1", "https://a:1", Some(t0 + cd), t0, cd).is_err());
    // No cool-down configured.
    check_cooldown(
        "w1",
        "https://b:1",
        "https://a:1",
        Some(t0),
        t0,
        Duration::ZERO,
    )
    .unwrap();
}

#[test]
fn rate_limits_with_injected_clock() {
    let clock = ManualClock::at_unix(0);
    let rl = RateLimiter::with_clock(RateLimits::default(), Arc::new(clock.clone()));
    let reg = "/mcp.v1.McpMasterService/Register";
    let hb = "/mcp.v1.McpMasterService/Heartbeat";
    assert!(rl.check("agent-a", reg).is_ok());
    let e = rl.check("agent-a", reg).unwrap_err();
    assert_eq!(e.retry_after, Duration::from_secs(60));
    assert_eq!(e.to_status().code(), tonic::Code::ResourceExhausted);
    // Per identity and per method.
    assert!(rl.check("agent-b", reg).is_ok());
    assert!(rl.check("agent-a", hb).is_ok());
    clock.advance(Duration::from_secs(9));
    assert!(rl.check("agent-a", hb).is_err());
    clock.advance(Duration::from_secs(1));
    assert!(rl.check("agent-a", hb).is_ok());
    clock.advance(Duration::from_secs(49));
    assert_eq!(
        rl.check("agent-a", reg).unwrap_err().retry_after,
        Duration::from_secs(1)
    );
    clock.advance(Duration::from_secs(1));
    assert!(rl.check("agent-a", reg).is_ok());
    // Unlimited methods and configurable intervals.
    for _ in 0..100 {
        assert!(rl.check("alice", "/mcp.v1.McpMasterService/Status").is_ok());
    }
    let fast = RateLimiter::with_clock(
        RateLimits::new().with(hb, Duration::from_millis(100)),
        Arc::new(clock.clone()),
    );
    assert!(fast.check("agent-a", hb).is_ok());
    clock.advance(Duration::from_millis(100));
    assert!(fast.check("agent-a", hb).is_ok());
    assert!(fast.check("agent-a", reg).is_ok());
    assert!(fast.check("agent-a", reg).is_ok());
}

#[test]
fn classification() {
    let m = "mcp-master";
    assert_eq!(
        classify(&Identity::new("alice", Human, &["admin"]), m),
        CallerClass::Operator
    );
    assert_eq!(
        classify(&Identity::new("alice", Human, &["guest"]), m),
        CallerClass::Guest
    );
    assert_eq!(
        classify(&Identity::new("guest", Human, &[]), m),
        CallerClass::Guest
    );
    assert_eq!(classify(&sys("mcp-master"), m), CallerClass::Master);
    assert_eq!(
        classify(&Identity::new("mcp-master", Human, &[]), m),
        CallerClass::Operator
    );
    assert_eq!(
        classify(&sys("agent-x"), m),
        CallerClass::Agent { node: "x".into() }
    );
    assert_eq!(
        classify(&Identity::new("agent-x", System, &["guest"]), m),
        CallerClass::Guest
    );
    assert_eq!(classify(&sys("backup"), m), CallerClass::UnknownSystem);
}

#[test]
fn token_sources() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "  from-file\n").unwrap();
    assert_eq!(
        resolve_token(None, Some(&file)).unwrap().expose(),
        "from-file"
    );
    assert_eq!(
        resolve_token(Some("from-env"), Some(&file))
            .unwrap()
            .expose(),
        "from-env"
    );
    // An empty MCP_TOKEN does not hide the file.
    assert_eq!(
        resolve_token(Some(" "), Some(&file)).unwrap().expose(),
        "from-file"
    );
    assert!(matches!(
        resolve_token(None, None),
        Err(TokenSourceError::Missing)
    ));
    let missing = dir.path().join("nope");
    let e = resolve_token(None, Some(&missing)).unwrap_err().to_string();
    assert!(
        e.starts_with("token file ") && e.contains("nope: cannot read"),
        "{e}"
    );
    std::fs::write(&file, "two\nlines").unwrap();
    let e = resolve_token(None, Some(&file)).unwrap_err();
    assert!(matches!(e, TokenSourceError::Malformed { .. }));
    assert!(
        !e.to_string().contains("two"),
        "error echoes the secret: {e}"
    );
    std::fs::write(&file, "\n").unwrap();
    assert!(matches!(
        resolve_token(None, Some(&file)),
        Err(TokenSourceError::Empty { .. })
    ));
    let secret = resolve_token(Some("s3cret"), None).unwrap();
    assert!(!format!("{secret:?}").contains("s3cret"));
    let i = BearerInterceptor::new(&secret).unwrap();
    assert!(!format!("{i:?}").contains("s3cret"));
}

#[test]
fn bearer_interceptor_sets_a_sensitive_header() {
    use tonic::service::Interceptor as _;
    let secret = resolve_token(Some("abc.def.ghi"), None).unwrap();
    let mut i = BearerInterceptor::new(&secret).unwrap();
    let req = i.call(tonic::Request::new(())).unwrap();
    let v = req.metadata().get("authorization").unwrap();
    assert_eq!(v.to_str().unwrap(), "Bearer abc.def.ghi");
    assert!(v.is_sensitive());
}

#[test]
fn bearer_parsing() {
    assert_eq!(parse_bearer("Bearer abc"), Some("abc"));
    assert_eq!(parse_bearer("bearer abc"), Some("abc"));
    assert_eq!(parse_bearer("BEARER abc "), Some("abc"));
    for bad in [
        "",
        "Bearer",
        "Bearer ",
        "Basic abc",
        "Bearerabc",
        "Bearer a b",
        "abc",
    ] {
        assert_eq!(parse_bearer(bad), None, "{bad:?}");
    }
}
