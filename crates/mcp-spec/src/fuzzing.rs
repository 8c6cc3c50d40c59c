//! The bodies of the cargo-fuzz targets for the service-file loader, run by the
//! workspace's fuzz crate (`crates/mcp-security/fuzz`) and, over the
//! committed corpora, by `crates/mcp-security/tests/fuzz_corpus.rs` on
//! stable: both run the same code. Each function takes arbitrary bytes and
//! panics only when a property is broken.

use crate::canonical::{canonical_toml, spec_hash};
use crate::load::{parse_service, Diagnostic, LoadOptions};
use crate::validate::validate;

/// The names of the fuzz targets, as in `crates/mcp-security/fuzz/Cargo.toml`
/// and its `corpus/<name>/`.
pub const TARGETS: &[&str] = &["service_file"];

/// Runs the target `name` on `data`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "service_file" => service_file(data),
        _ => return false,
    }
    true
}

/// The file stem to parse `text` under: the top-level `name = "..."` when
/// the file has a plain one (so that valid files are accepted and their
/// specs checked), else `svc`.
fn stem_of(text: &str) -> &str {
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            break;
        }
        let Some(rest) = line.strip_prefix("name") else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix('=') else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(v) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
            if !v.is_empty() && !v.contains('\\') {
                return v;
            }
        }
    }
    "svc"
}

/// Arbitrary bytes as the service file `<stem>.toml`, under the loader's
/// option sets (defaults, a domain and extra host path allowed, the wire's
/// unconfined volumes). The loader never panics. A refusal has at least one
/// diagnostic, each naming the file at a 1-based position inside the text
/// with a message. An accepted spec passes the shared rules, and its
/// canonical rendering parses back to the same spec and the same hash.
pub fn service_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let stem = stem_of(text);
    let options = [
        LoadOptions::default(),
        LoadOptions {
            allowed_public_domains: vec!["example.net".to_string()],
            allowed_host_paths: vec!["/var/lib/shared/".to_string()],
            unconfined_volumes: false,
        },
        LoadOptions::wire(),
    ];
    let lines = text.split('\n').count();
    for opts in &options {
        match parse_service("fuzz.toml", stem, text, opts) {
            Ok(spec) => {
                assert_eq!(spec.name, stem, "accepted under another name");
                assert_eq!(validate(&spec, opts), vec![], "accepted an invalid spec");
                let canonical = canonical_toml(&spec);
                let back = parse_service("canonical.toml", stem, &canonical, opts);
                assert_eq!(back.as_ref(), Ok(&spec), "canonical form:\n{canonical}");
                if let Ok(back) = back {
                    assert_eq!(spec_hash(&back), spec_hash(&spec));
                }
            }
            Err(diags) => {
                assert!(!diags.is_empty(), "refused without a diagnostic");
                for d in &diags {
                    check_diagnostic(d, lines);
                }
            }
        }
    }
}

fn check_diagnostic(d: &Diagnostic, lines: usize) {
    assert_eq!(d.file, "fuzz.toml", "{d}");
    assert!(d.line >= 1 && d.line <= lines, "{d}: outside {lines} lines");
    assert!(d.column >= 1, "{d}");
    assert!(!d.message.is_empty(), "{d}: no message");
}
