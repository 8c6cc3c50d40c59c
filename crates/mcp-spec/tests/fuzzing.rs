//! The service-file fuzz body (`mcp_spec::fuzzing::service_file`, run by the
//! workspace's fuzz crate; its corpus is replayed by
//! `crates/mcp-security/tests/fuzz_corpus.rs`) on inputs beside the corpus.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Blank files, CRLF line endings, a literal-string name, a name inside a
/// table, a file ending without a newline, bytes that are not UTF-8, and
/// every example service file.
#[test]
fn the_body_holds_on_edge_cases_and_the_examples() {
    for text in [
        "",
        "\n\n\n",
        "name = \"a\"\n[[components]]\n",
        "name = \"a\"\r\n[[components]]\r\nname = \"c\"\r\nimage = \"r/a:v1\"\r\n",
        "name = 'a'\n",
        "[a]\nname = \"x\"\n",
        "name = \"a\"\n[[components]]\nname = \"a\"\nimage = \"r/a:v1\"",
        // Crashed toml_edit 0.23 (tests/load.rs).
        "==\n.=",
    ] {
        mcp_spec::fuzzing::service_file(text.as_bytes());
    }
    mcp_spec::fuzzing::service_file(&[0xff, 0xfe]);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../services.example");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            mcp_spec::fuzzing::service_file(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    assert!(n >= 5, "{n} example files");
    assert!(mcp_spec::fuzzing::run("service_file", b"name = \"x\"\n"));
    assert!(!mcp_spec::fuzzing::run("no-such-target", b""));
}
