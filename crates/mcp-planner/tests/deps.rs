//! Architecture rule: the planner is pure. Neither it nor the spec crate it
//! builds on may depend on an async runtime, RPC stack or database.

const FORBIDDEN: [&str; 5] = ["tokio", "tonic", "rusqlite", "prost", "hyper"];

fn dependency_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps {
            if let Some((name, _)) = line.split_once('=') {
                names.push(name.trim().trim_end_matches(".workspace").to_string());
            }
        }
    }
    names
}

#[test]
fn planner_and_spec_have_no_io_dependencies() {
    for (krate, manifest) in [
        ("mcp-planner", include_str!("../Cargo.toml")),
        ("mcp-spec", include_str!("../../mcp-spec/Cargo.toml")),
    ] {
        let deps = dependency_names(manifest);
        assert!(!deps.is_empty(), "{krate}: no [dependencies] parsed");
        for dep in deps {
            assert!(
                !FORBIDDEN.iter().any(|f| dep.starts_with(f)),
                "{krate} depends on {dep}: the planner must stay pure"
            );
        }
    }
}
