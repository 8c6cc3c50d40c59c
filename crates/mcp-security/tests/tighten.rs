//! Issue 9, "tighten the rest": generic `Unauthenticated` to the caller with
//! the reason kept for the log, case-insensitive roles, a maximum token
//! lifetime, the 5 s default leeway, and the `cnf` claim round trip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use mcp_security::authz::{classify, AuthzTable, CallerClass};
use mcp_security::clock::ManualClock;
use mcp_security::identity::AccountType::{Human, System};
use mcp_security::identity::{Identity, VerifyError, UNAUTHENTICATED_MESSAGE};
use mcp_security::jwt::{
    cert_thumbprint, check_token_lifetime, issue_token_with, IssueOptions, TokenRequest,
    DEFAULT_LEEWAY_SECS,
};
use mcp_security::layer::Authorizer;
use tonic::Code;

const HOUR: Duration = Duration::from_secs(3600);

fn request(name: &str, ttl: Duration) -> TokenRequest {
    TokenRequest {
        identity: name.to_string(),
        account_type: Human,
        roles: vec![],
        ttl,
        issuer: common::ISSUER.to_string(),
        audience: common::AUDIENCE.to_string(),
    }
}

#[tokio::test]
async fn callers_learn_nothing_but_unauthenticated_and_the_log_gets_the_reason() {
    let clock = ManualClock::at_unix(common::T0);
    let keys = common::keys();
    let other = common::keys();
    let authorizer = Authorizer::new(
        Arc::new(common::verifier(&keys, &clock)),
        AuthzTable::standard("mcp-master"),
    );
    let m = "/mcp.v1.McpMasterService/Status";
    let foreign = common::token(&other.signing, "alice", Human, &[], HOUR, &clock);
    let old = ManualClock::at_unix(common::T0 - 3 * 3600);
    let expired = common::token(&keys.signing, "alice", Human, &[], HOUR, &old);
    let cases: [(Option<String>, &str); 5] = [
        (None, "missing bearer token"),
        (Some("Basic abc".into()), "malformed authorization header"),
        (Some(format!("Bearer {foreign}")), "bad signature"),
        (Some(format!("Bearer {expired}")), "token expired"),
        (Some("Bearer a.b.c".into()), "malformed token"),
    ];
    for (header, reason) in cases {
        let r = authorizer.check(m, header.as_deref()).await.unwrap_err();
        assert_eq!(r.status.code(), Code::Unauthenticated, "{reason}");
        assert_eq!(r.status.message(), UNAUTHENTICATED_MESSAGE, "{reason}");
        assert!(r.reason.contains(reason), "{:?} lacks {reason}", r.reason);
        assert!(r.caller.is_none());
    }
    let e = VerifyError::Invalid("wrong issuer".into()).to_status();
    assert_eq!(e.message(), "unauthenticated");
    let e = VerifyError::Unavailable("connect 10.0.0.1:443 refused".into()).to_status();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(!e.message().contains("10.0.0.1"), "{}", e.message());
}

#[test]
fn roles_and_the_guest_name_are_case_insensitive() {
    let m = "mcp-master";
    for roles in [&["Guest"][..], &["GUEST"], &["admin", "gUeSt"]] {
        assert_eq!(
            classify(&Identity::new("alice", Human, roles), m),
            CallerClass::Guest,
            "{roles:?}"
        );
    }
    assert_eq!(
        classify(&Identity::new("Guest", Human, &[]), m),
        CallerClass::Guest
    );
    assert_eq!(
        classify(&Identity::new("guests", Human, &["guesthouse"]), m),
        CallerClass::Operator
    );
    assert!(Identity::new("x", System, &["Admin"]).has_role("admin"));
    // Names are not roles: the master identity is matched exactly.
    assert_eq!(
        classify(&Identity::new("MCP-Master", System, &[]), m),
        CallerClass::UnknownSystem
    );
}

#[test]
fn maximum_token_lifetime_at_issue_and_at_verification() {
    let clock = ManualClock::at_unix(common::T0);
    let keys = common::keys();
    let day = Duration::from_secs(86_400);
    assert!(check_token_lifetime(day, Some(day)).is_ok());
    assert!(check_token_lifetime(day * 400, None).is_ok());
    let e = check_token_lifetime(day + Duration::from_secs(1), Some(day)).unwrap_err();
    assert!(e.to_string().contains("exceeds the maximum"), "{e}");
    let capped = IssueOptions {
        max_lifetime: Some(day),
        ..Default::default()
    };
    assert!(issue_token_with(&keys.signing, &request("a", day * 2), &capped, &clock).is_err());
    let ok = issue_token_with(&keys.signing, &request("a", day), &capped, &clock).unwrap();

    let long = common::token(&keys.signing, "alice", Human, &[], day * 2, &clock);
    let v = common::verifier(&keys, &clock).with_max_lifetime(day);
    assert_eq!(
        v.verify_token(&long),
        Err(VerifyError::Invalid(
            "token lifetime exceeds the maximum".into()
        ))
    );
    assert_eq!(v.verify_token(ok.expose()).unwrap().name, "a");
    // Without a maximum (the default) the long token is fine.
    assert!(common::verifier(&keys, &clock).verify_token(&long).is_ok());
}

#[test]
fn default_leeway_is_five_seconds() {
    assert_eq!(DEFAULT_LEEWAY_SECS, 5);
    let clock = ManualClock::at_unix(common::T0);
    let keys = common::keys();
    let v = common::verifier(&keys, &clock);
    let t = common::token(&keys.signing, "alice", Human, &[], HOUR, &clock);
    clock.advance(HOUR + Duration::from_secs(4));
    assert!(v.verify_token(&t).is_ok());
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        v.verify_token(&t),
        Err(VerifyError::Invalid("token expired".into()))
    );
    // Configurable.
    let lenient = common::verifier(&keys, &clock).with_leeway(30);
    assert!(lenient.verify_token(&t).is_ok());
}

#[test]
fn cnf_claim_round_trip() {
    let clock = ManualClock::at_unix(common::T0);
    let keys = common::keys();
    let thumb = cert_thumbprint(b"not really a certificate");
    assert_eq!(thumb.len(), 43, "base64url of 32 bytes, no padding");
    assert!(!thumb.contains('=') && !thumb.contains('+') && !thumb.contains('/'));
    let opts = IssueOptions {
        cert_thumbprint: Some(thumb.clone()),
        ..Default::default()
    };
    let t = issue_token_with(&keys.signing, &request("mcp-master", HOUR), &opts, &clock).unwrap();
    let payload = t.expose().split('.').nth(1).unwrap();
    let json: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(json["cnf"]["x5t#S256"], thumb.as_str());
    let id = common::verifier(&keys, &clock)
        .verify_token(t.expose())
        .unwrap();
    assert_eq!(id.cert_thumbprint.as_deref(), Some(thumb.as_str()));
    // Unbound tokens have no cnf claim at all.
    let plain = common::token(&keys.signing, "alice", Human, &[], HOUR, &clock);
    let payload = plain.split('.').nth(1).unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    assert!(!String::from_utf8(raw).unwrap().contains("cnf"));
}
