//! The bodies of the cargo-fuzz targets in `crates/mcp-security/fuzz`,
//! here so that the fuzzers and the corpus replay test
//! (`tests/fuzz_corpus.rs`, on stable) run the same code. Each function
//! takes arbitrary bytes and panics only when a property is broken.

use std::sync::{Arc, OnceLock};

use crate::clock::ManualClock;
use crate::edge::{Cidr, EdgePolicy, Overlay};
use crate::identity::{AccountType, Identity};
use crate::jwt::{generate_keypair, JwtVerifier, PublicKey};
use crate::layer::parse_bearer;
use crate::registration::node_from_identity;
use crate::token::resolve_token;

/// The names of the fuzz targets, as in `fuzz/Cargo.toml` and
/// `fuzz/corpus/<name>/`.
pub const TARGETS: &[&str] = &["token_parse", "hostname"];

/// Runs the target `name` on `data`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "token_parse" => token_parse(data),
        "hostname" => hostname(data),
        _ => return false,
    }
    true
}

fn verifier() -> Option<&'static JwtVerifier> {
    static V: OnceLock<Option<JwtVerifier>> = OnceLock::new();
    V.get_or_init(|| {
        let kp = generate_keypair().ok()?;
        let key = PublicKey::from_pem(kp.public_pem.as_bytes(), "fuzz").ok()?;
        Some(
            JwtVerifier::new(key, "mcias", "mcp")
                .with_clock(Arc::new(ManualClock::at_unix(1_735_689_600))),
        )
    })
    .as_ref()
}

/// Arbitrary bytes as an `authorization` header and as a bearer token: the
/// parser and the Ed25519 JWT verifier must never panic, and must never
/// accept a token not signed by the (fresh, secret) key.
pub fn token_parse(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let token = parse_bearer(s).unwrap_or(s);
    if let Some(v) = verifier() {
        assert!(v.verify_token(token).is_err(), "a forged token verified");
    }
    let _ = resolve_token(Some(s), None);
    let _ = PublicKey::from_pem(data, "fuzz");
    let _ = crate::binding::certificate_names(data, "mcp-master");
}

/// Arbitrary strings through the edge and registration validators: no
/// panics, and whatever is accepted really is under the domain.
pub fn hostname(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let policy = EdgePolicy {
        allowed_domains: vec!["example.net".into()],
        internal_zone: "svc.mcp.internal".into(),
        overlay: Overlay::default(),
    };
    if let Ok(h) = policy.check_public_hostname(s) {
        assert!(h == "example.net" || h.ends_with(".example.net"), "{h}");
    }
    if let Ok(h) = policy.check_backend_hostname(s) {
        assert!(h.ends_with(".svc.mcp.internal"), "{h}");
    }
    if let Ok(c) = s.parse::<Cidr>() {
        // Display round-trips.
        assert_eq!(c.to_string().parse::<Cidr>().ok(), Some(c));
    }
    if let Ok(node) = node_from_identity(&Identity::new(s, AccountType::System, &[])) {
        assert_eq!(format!("agent-{node}"), s);
    }
}
