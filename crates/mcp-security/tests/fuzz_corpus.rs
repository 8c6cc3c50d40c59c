//! The cargo-fuzz corpora replayed on stable: every file under
//! `fuzz/corpus/<target>/` goes through the same body the fuzzer runs
//! (`mcp_security::fuzzing`, `mcp_spec::fuzzing`, `mcp_proto::fuzzing`).
//! A crash the fuzzer found, saved into the corpus, stays a failing test
//! until it is fixed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// A crate's `fuzzing::run`: runs a target's body, `false` for a name it
/// does not know.
type Run = fn(&str, &[u8]) -> bool;

/// Targets of the fuzz crate whose corpus another crate's test replays
/// (so that this crate's tests do not build that crate), with the test.
const REPLAYED_ELSEWHERE: &[(&str, &str)] =
    &[("import_archive", "crates/mcp-agent/tests/fuzz_corpus.rs")];

/// Every target of the fuzz crate, with the `run` of the crate whose body
/// it runs.
fn targets() -> Vec<(&'static str, Run)> {
    let crates: [(&[&'static str], Run); 3] = [
        (mcp_security::fuzzing::TARGETS, mcp_security::fuzzing::run),
        (mcp_spec::fuzzing::TARGETS, mcp_spec::fuzzing::run),
        (mcp_proto::fuzzing::TARGETS, mcp_proto::fuzzing::run),
    ];
    crates
        .iter()
        .flat_map(|(names, run)| names.iter().map(move |t| (*t, *run)))
        .collect()
}

/// The files of a target's corpus, with their contents.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(fuzz_dir().join("corpus").join(target)).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let data = std::fs::read(&path).unwrap();
            out.push((path, data));
        }
    }
    out
}

#[test]
fn every_fuzz_target_has_a_corpus_and_its_inputs_pass() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let targets = targets();
    for (target, run) in &targets {
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "{target} is not a target in fuzz/Cargo.toml"
        );
        let fuzz_target = fuzz_dir().join("fuzz_targets").join(format!("{target}.rs"));
        let source = std::fs::read_to_string(&fuzz_target).unwrap();
        assert!(
            source.contains(&format!("::fuzzing::{target}(data)")),
            "{} does not run the body {target}",
            fuzz_target.display()
        );
        let inputs = corpus(target);
        for (path, data) in &inputs {
            let ok = std::panic::catch_unwind(|| run(target, data));
            assert!(
                matches!(ok, Ok(true)),
                "{target}: {} fails the fuzz body",
                path.display()
            );
        }
        assert!(
            inputs.len() >= 5,
            "{target}: corpus has only {} inputs",
            inputs.len()
        );
    }
    // Every [[bin]] of the fuzz crate is a known target, and no two crates
    // name a target alike.
    let names: BTreeSet<&str> = targets.iter().map(|(t, _)| *t).collect();
    assert_eq!(names.len(), targets.len(), "a target name is used twice");
    let bins = manifest.matches("[[bin]]").count();
    assert_eq!(
        bins,
        targets.len() + REPLAYED_ELSEWHERE.len(),
        "fuzz/Cargo.toml and the TARGETS disagree"
    );
    for (target, test) in REPLAYED_ELSEWHERE {
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "{target}"
        );
        assert!(!names.contains(target), "{target} is listed twice");
        let test = fuzz_dir().join("../../..").join(test);
        let source = std::fs::read_to_string(&test).unwrap();
        assert!(source.contains("::fuzzing::run"), "{}", test.display());
        assert!(corpus(target).len() >= 5, "{target}: corpus too small");
    }
    assert!(!mcp_security::fuzzing::run("no-such-target", b""));
    assert!(!mcp_spec::fuzzing::run("no-such-target", b""));
    assert!(!mcp_proto::fuzzing::run("no-such-target", b""));
}

/// The request corpora have a seed for every request message (at least its
/// selector byte), so the fuzzer starts from each.
#[test]
fn the_request_corpora_seed_every_message() {
    for (target, table) in [
        ("agent_requests", mcp_proto::fuzzing::AGENT_REQUESTS),
        ("master_requests", mcp_proto::fuzzing::MASTER_REQUESTS),
    ] {
        let selected: BTreeSet<usize> = corpus(target)
            .iter()
            .filter_map(|(_, d)| d.first().map(|b| usize::from(*b)))
            .collect();
        for (i, (name, _)) in table.iter().enumerate() {
            assert!(
                selected.contains(&i),
                "{target}: no corpus input starts with byte {i} ({name}); add one, e.g. \
                 printf '\\x{i:02x}' > crates/mcp-security/fuzz/corpus/{target}/{}-empty",
                name.trim_start_matches("mcp.v1.")
            );
        }
    }
}

/// The service-file corpus reaches both sides of the body: files the
/// loader accepts (whose canonical form is checked) and files it refuses.
#[test]
fn the_service_file_corpus_has_accepted_and_refused_files() {
    let opts = mcp_spec::LoadOptions::default();
    let (mut accepted, mut refused) = (0, 0);
    for (path, data) in corpus("service_file") {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        let stem = Path::new(&path).file_stem().unwrap().to_str().unwrap();
        match mcp_spec::parse_service("f.toml", stem, text, &opts) {
            Ok(_) => accepted += 1,
            Err(_) => refused += 1,
        }
    }
    assert!(accepted >= 5, "{accepted} accepted files");
    assert!(refused >= 5, "{refused} refused files");
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
