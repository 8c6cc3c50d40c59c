//! The `import_archive` fuzz corpus (`crates/mcp-security/fuzz/corpus/
//! import_archive/`) replayed on stable through the same body the fuzzer
//! runs (`mcp_agent::fuzzing`). It lives here rather than in
//! mcp-security's `tests/fuzz_corpus.rs` so that mcp-security does not
//! build the agent for its tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../mcp-security/fuzz/corpus")
        .join(target)
}

#[test]
fn the_import_archive_corpus_passes_the_fuzz_body() {
    let manifest = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mcp-security/fuzz/Cargo.toml"),
    )
    .unwrap();
    for target in mcp_agent::fuzzing::TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "{target}"
        );
        let mut n = 0;
        for entry in std::fs::read_dir(corpus_dir(target)).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let ok = std::panic::catch_unwind(|| mcp_agent::fuzzing::run(target, &data));
            assert!(matches!(ok, Ok(true)), "{target}: {} fails", path.display());
            n += 1;
        }
        assert!(n >= 5, "{target}: only {n} inputs");
    }
    assert!(!mcp_agent::fuzzing::run("no-such-target", b""));
}

/// The seeds reach both sides: archives accepted and refused.
#[test]
fn the_corpus_has_accepted_and_refused_archives() {
    use mcp_agent::data::{extract, ImportLimits, Staging};
    use std::io::Write;
    let (mut accepted, mut refused) = (0, 0);
    for entry in std::fs::read_dir(corpus_dir("import_archive")).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let Some((&flags, rest)) = data.split_first() else {
            continue;
        };
        let archive = if flags & 2 != 0 {
            rest.to_vec()
        } else {
            let mut enc = zstd::Encoder::new(Vec::new(), 1).unwrap();
            enc.write_all(rest).unwrap();
            enc.finish().unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::create(dir.path(), "app").unwrap();
        let limits = ImportLimits {
            max_bytes: 1 << 20,
            max_file_bytes: 256 << 10,
            max_entries: 1000,
        };
        match extract(archive.as_slice(), &staging, &limits) {
            Ok(_) => accepted += 1,
            Err(_) => refused += 1,
        }
    }
    assert!(accepted >= 3, "{accepted} accepted");
    assert!(refused >= 5, "{refused} refused");
}
