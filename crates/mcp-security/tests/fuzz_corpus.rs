//! The cargo-fuzz corpora replayed on stable: every file under
//! `fuzz/corpus/<target>/` goes through the same body the fuzzer runs
//! (`mcp_security::fuzzing`). A crash the fuzzer found, saved into the
//! corpus, stays a failing test until it is fixed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use mcp_security::fuzzing::{run, TARGETS};

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn every_fuzz_target_has_a_corpus_and_its_inputs_pass() {
    let manifest =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml"))
            .unwrap();
    for target in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "{target} is not a target in fuzz/Cargo.toml"
        );
        let mut n = 0;
        for entry in std::fs::read_dir(corpus(target)).unwrap() {
            let path = entry.unwrap().path();
            if !path.is_file() {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            let ok = std::panic::catch_unwind(|| run(target, &data));
            assert!(
                matches!(ok, Ok(true)),
                "{target}: {} fails the fuzz body",
                path.display()
            );
            n += 1;
        }
        assert!(n >= 5, "{target}: corpus has only {n} inputs");
    }
    // Every [[bin]] of the fuzz crate is a known target.
    let bins = manifest.matches("[[bin]]").count();
    assert_eq!(bins, TARGETS.len(), "fuzz/Cargo.toml and TARGETS disagree");
    assert!(!run("no-such-target", b""));
}

/// Inputs the corpus may lack: accepted hostnames and a well-formed token
/// signed by another key (must be refused, not accepted or panicking).
#[test]
fn fuzz_bodies_hold_their_properties_on_known_inputs() {
    // Accepted hostnames are under the domain; these must not panic.
    for s in [
        "example.net",
        "a.example.net",
        "x.svc.mcp.internal",
        "10.0.0.0/8",
    ] {
        mcp_security::fuzzing::hostname(s.as_bytes());
    }
    // A real token signed by some other key is refused, not accepted.
    let kp = mcp_security::jwt::generate_keypair().unwrap();
    let key =
        mcp_security::jwt::SigningKey::from_pem(kp.private_pem.expose().as_bytes(), "k").unwrap();
    let clock = mcp_security::clock::ManualClock::at_unix(1_735_689_600);
    let t = mcp_security::jwt::issue_token(
        &key,
        &mcp_security::jwt::TokenRequest {
            identity: "alice".into(),
            account_type: mcp_security::AccountType::Human,
            roles: vec![],
            ttl: std::time::Duration::from_secs(3600),
            issuer: "mcias".into(),
            audience: "mcp".into(),
        },
        &clock,
    )
    .unwrap();
    mcp_security::fuzzing::token_parse(format!("Bearer {}", t.expose()).as_bytes());
}
