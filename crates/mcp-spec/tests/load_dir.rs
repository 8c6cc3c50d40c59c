//! `load_dir` over a fixture directory: good files load, each bad file is
//! held with its diagnostics, other files are ignored.

use std::path::Path;

use expect_test::expect;
use mcp_spec::{load_dir, LoadOptions};

#[test]
fn broken_fixture_dir() {
    // Relative on purpose: display paths are `dir.join(name)` as given.
    let loaded = load_dir(Path::new("tests/fixtures/broken"), &LoadOptions::default())
        .expect("fixture dir is readable");
    let good: Vec<&str> = loaded.services.keys().map(String::as_str).collect();
    assert_eq!(good, ["mcq", "web"]);

    let mut out = String::new();
    for u in &loaded.unreadable {
        out.push_str(&format!("{} ({})\n", u.name, u.file.display()));
        for d in &u.errors {
            out.push_str(&format!("  {d}\n"));
        }
    }
    expect![[r#"
        bad-mode (tests/fixtures/broken/bad-mode.toml)
          tests/fixtures/broken/bad-mode.toml:9:8: mode must be "l4" or "l7", found "l5"
        dup-component (tests/fixtures/broken/dup-component.toml)
          tests/fixtures/broken/dup-component.toml:8:9: duplicate component name "api" (first defined on line 4)
        public-no-host (tests/fixtures/broken/public-no-host.toml)
          tests/fixtures/broken/public-no-host.toml:10:10: public route "rest" needs a hostname
        unknown-key (tests/fixtures/broken/unknown-key.toml)
          tests/fixtures/broken/unknown-key.toml:6:1: unknown key "volume" in [[components]] (did you mean "volumes"?)
        unparsable (tests/fixtures/broken/unparsable.toml)
          tests/fixtures/broken/unparsable.toml:4:13: invalid toml: invalid basic string, expected `"`
        wrong-name (tests/fixtures/broken/wrong-name.toml)
          tests/fixtures/broken/wrong-name.toml:1:8: name "right-name" does not match file name "wrong-name.toml"
        wrong-type (tests/fixtures/broken/wrong-type.toml)
          tests/fixtures/broken/wrong-type.toml:2:10: active must be a boolean, found string
    "#]].assert_eq(&out);
}

#[test]
fn allowed_domains_are_applied() {
    let opts = LoadOptions {
        allowed_public_domains: vec!["example.org".into()],
        ..LoadOptions::default()
    };
    let loaded = load_dir(Path::new("tests/fixtures/broken"), &opts).expect("readable");
    assert!(!loaded.services.contains_key("mcq"));
    let mcq = loaded
        .unreadable
        .iter()
        .find(|u| u.name == "mcq")
        .expect("mcq is held");
    expect![[r#"tests/fixtures/broken/mcq.toml:22:12: public hostname must be under an allowed public domain ("example.org"), found "mcq.example.net""#]].assert_eq(&mcq.errors[0].to_string());
}

#[test]
fn unreadable_directory_is_an_io_error() {
    let err = load_dir(
        Path::new("tests/fixtures/no-such-dir"),
        &LoadOptions::default(),
    );
    assert!(err.is_err());
}

#[test]
fn non_utf8_file_is_held() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("bin.toml"), b"name = \"\xff\"\n").expect("write");
    std::fs::write(
        dir.path().join("ok.toml"),
        "name = \"ok\"\n[[components]]\nname = \"ok\"\nimage = \"ok:1\"\n",
    )
    .expect("write");
    let loaded = load_dir(dir.path(), &LoadOptions::default()).expect("readable");
    assert_eq!(loaded.services.len(), 1);
    assert_eq!(loaded.unreadable.len(), 1);
    let u = &loaded.unreadable[0];
    assert_eq!(u.name, "bin");
    assert_eq!((u.errors[0].line, u.errors[0].column), (1, 1));
    assert_eq!(
        u.errors[0].message,
        "file must be utf-8, found an invalid byte at offset 8"
    );
}

/// The master's limit applies to `load_dir` (`mcp validate`) too: a file
/// over it is held at 1:1 with the same message, one at the limit loads.
#[test]
fn a_file_over_the_size_limit_is_held() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = "name = \"ok\"\n[[components]]\nname = \"ok\"\nimage = \"ok:1\"\n";
    let pad = |n: usize| format!("{body}{}\n", "#".repeat(n - body.len() - 1));
    let limit = mcp_spec::MAX_SERVICE_FILE_BYTES as usize;
    std::fs::write(dir.path().join("ok.toml"), pad(limit)).expect("write");
    // Not even parsed (its name would not match either).
    std::fs::write(dir.path().join("big.toml"), pad(limit + 1)).expect("write");
    let loaded = load_dir(dir.path(), &LoadOptions::default()).expect("readable");
    assert_eq!(loaded.services.keys().collect::<Vec<_>>(), ["ok"]);
    let u = &loaded.unreadable[0];
    assert_eq!(u.name, "big");
    assert_eq!((u.errors[0].line, u.errors[0].column), (1, 1));
    assert_eq!(
        u.errors[0].message,
        format!(
            "file is {} bytes, larger than the 1048576 bytes a service file may have",
            limit + 1
        )
    );
}
