//! Arbitrary bytes as an `authorization` header and as a bearer token: the
//! parser and the Ed25519 JWT verifier must never panic, and must never
//! accept a token not signed by the key.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use mcp_security::clock::ManualClock;
use mcp_security::jwt::{generate_keypair, JwtVerifier, PublicKey};
use mcp_security::layer::parse_bearer;
use mcp_security::token::resolve_token;

fn verifier() -> &'static JwtVerifier {
    static V: OnceLock<JwtVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let kp = generate_keypair().expect("keygen");
        let key = PublicKey::from_pem(kp.public_pem.as_bytes(), "fuzz").expect("public key");
        JwtVerifier::new(key, "mcias", "mcp")
            .with_clock(Arc::new(ManualClock::at_unix(1_735_689_600)))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let token = parse_bearer(s).unwrap_or(s);
    // The key is fresh and secret to this process: nothing may verify.
    assert!(verifier().verify_token(token).is_err());
    let _ = resolve_token(Some(s), None);
    let _ = PublicKey::from_pem(data, "fuzz");
});
