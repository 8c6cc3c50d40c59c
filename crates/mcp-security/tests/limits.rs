//! The per-peer failure limiter with an injected clock, and the certificate
//! name and binding checks on real certificates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mcp_security::abuse::{FailureLimiter, FailureLimits, FailureVerdict};
use mcp_security::authz::CallerClass;
use mcp_security::binding::{certificate_names, check_binding, BindingError, MasterBinding};
use mcp_security::clock::ManualClock;
use mcp_security::identity::AccountType::System;
use mcp_security::identity::Identity;
use mcp_security::jwt::cert_thumbprint;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn failures_are_limited_per_peer_and_window_with_one_summary_per_interval() {
    let clock = ManualClock::at_unix(0);
    let limiter = FailureLimiter::with_clock(
        FailureLimits {
            max_failures: 3,
            window: Duration::from_secs(60),
            log_interval: Duration::from_secs(30),
            max_peers: 2,
        },
        Arc::new(clock.clone()),
    );
    let a = ip("192.0.2.1");
    for _ in 0..3 {
        assert_eq!(limiter.record_failure(a), FailureVerdict::Counted);
    }
    // The first refusal over the limit is summarised at once, the next ones
    // only after the log interval, with how many were suppressed.
    assert_eq!(
        limiter.record_failure(a),
        FailureVerdict::Limited { summary: Some(1) }
    );
    for _ in 0..5 {
        assert_eq!(
            limiter.record_failure(a),
            FailureVerdict::Limited { summary: None }
        );
    }
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        limiter.record_failure(a),
        FailureVerdict::Limited { summary: Some(6) }
    );
    // Another peer has its own count; IPv4-mapped IPv6 is the same peer.
    let b = ip("192.0.2.2");
    assert_eq!(limiter.record_failure(b), FailureVerdict::Counted);
    assert_eq!(
        limiter.record_failure(ip("::ffff:192.0.2.1")),
        FailureVerdict::Limited { summary: None }
    );
    // A new window: counted again.
    clock.advance(Duration::from_secs(30));
    assert_eq!(limiter.record_failure(a), FailureVerdict::Counted);
    // The table is full (a, b): a third peer counts as over the limit until
    // old entries can be dropped.
    let c = ip("2001:db8::1");
    assert_eq!(
        limiter.record_failure(c),
        FailureVerdict::Limited { summary: None }
    );
    clock.advance(Duration::from_secs(61));
    assert_eq!(limiter.record_failure(c), FailureVerdict::Counted);
}

#[test]
fn certificate_names_and_binding_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::Pki::new(dir.path(), "fleet");
    let (mc, _) = pki.leaf("master", &["mcp-master", "100.64.0.1"], false);
    let (wc, _) = pki.leaf("agent-w1", &["agent-w1"], false);
    let (m, w) = (common::leaf_der(&mc), common::leaf_der(&wc));
    assert!(certificate_names(&m, "mcp-master"));
    assert!(certificate_names(&m, "MCP-Master"));
    assert!(certificate_names(&m, "100.64.0.1"));
    assert!(!certificate_names(&m, "100.64.0.2"));
    assert!(!certificate_names(&m, "agent-w1"));
    assert!(!certificate_names(&w, "mcp-master"));
    assert!(!certificate_names(b"garbage", "mcp-master"));
    assert!(!certificate_names(&m, "not a name"));

    let binding = MasterBinding::new("mcp-master");
    let master = Identity::new("mcp-master", System, &[]);
    let bound = master.clone().with_cert_thumbprint(cert_thumbprint(&m));
    let bound_w = master.clone().with_cert_thumbprint(cert_thumbprint(&w));
    let class = CallerClass::Master;
    let check = |id: &Identity, leaf: Option<&[u8]>, b: Option<&MasterBinding>| {
        check_binding(id, &class, leaf, b)
    };
    assert_eq!(check(&bound, Some(&m), Some(&binding)), Ok(()));
    assert_eq!(
        check(&bound, None, Some(&binding)),
        Err(BindingError::NoCertificate)
    );
    assert_eq!(
        check(&bound, Some(&w), None),
        Err(BindingError::ThumbprintMismatch)
    );
    assert_eq!(
        check(&master, Some(&m), Some(&binding)),
        Err(BindingError::MasterTokenUnbound)
    );
    let e = check(&bound_w, Some(&w), Some(&binding)).unwrap_err();
    assert!(matches!(e, BindingError::NotMasterCertificate(_)), "{e:?}");
    assert_eq!(e.to_status().code(), tonic::Code::PermissionDenied);
    assert_eq!(
        BindingError::NoCertificate.to_status().message(),
        "unauthenticated"
    );
    // Without the master binding an unbound master token is fine, and so is
    // a bound one with its certificate.
    assert_eq!(check(&master, None, None), Ok(()));
    assert_eq!(check(&bound_w, Some(&w), None), Ok(()));
}
