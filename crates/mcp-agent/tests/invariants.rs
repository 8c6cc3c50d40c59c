//! Architecture invariants that are cheap to check by reading the source.

/// The monitor decides; it never touches the clock, disk, network,
/// processes or the database (those belong to the daemon loop around it).
#[test]
fn monitor_logic_does_no_io() {
    let src = include_str!("../src/monitor.rs");
    for forbidden in [
        "std::fs",
        "std::net",
        "std::process",
        "std::thread",
        "tokio",
        "rusqlite",
        "Timestamp::now",
        "SystemTime",
        "Instant",
        "Registry",
    ] {
        assert!(
            !src.contains(forbidden),
            "src/monitor.rs mentions {forbidden}: the monitor must stay pure"
        );
    }
}

/// The alert command is an argv array, executed directly.
#[test]
fn alerts_never_go_through_a_shell() {
    let src = include_str!("../src/alert.rs");
    for forbidden in ["\"sh\"", "\"/bin/sh\"", "\"-c\"", "bash"] {
        assert!(
            !src.contains(forbidden),
            "src/alert.rs mentions {forbidden}: alert commands run as argv, no shell"
        );
    }
}

/// Test doubles stay out of the shipped binary: the fake runtime and the
/// agent's test support exist only with the `testing` feature, which the
/// normal dependencies never enable.
#[test]
fn fakes_are_behind_the_testing_feature() {
    let manifest = include_str!("../Cargo.toml");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [dependencies] section");
    assert!(
        !deps.contains("testing"),
        "mcp-agent's [dependencies] enable a testing feature:\n{deps}"
    );
    let lib = include_str!("../src/lib.rs");
    assert!(
        lib.contains("#[cfg(feature = \"testing\")]\npub mod testing;"),
        "mcp_agent::testing must be gated by the testing feature"
    );
    let runtime = include_str!("../../mcp-runtime/src/lib.rs");
    assert!(
        runtime.contains(
            "#[cfg(any(test, feature = \"testing\"))]\npub use fake::{FakeCall, FakeOp, FakeRuntime};"
        ),
        "FakeRuntime must be gated by cfg(test) or the testing feature"
    );
}

/// No source file of the agent or the runtime is over 800 lines (tests
/// included: they go in sibling `tests.rs` files).
#[test]
fn source_files_stay_under_800_lines() {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read file");
                let n = text.lines().count();
                if n > 800 {
                    out.push(format!("{} has {n} lines", path.display()));
                }
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut long = Vec::new();
    walk(&root.join("src"), &mut long);
    walk(&root.join("../mcp-runtime/src"), &mut long);
    assert!(long.is_empty(), "{long:#?}");
}
