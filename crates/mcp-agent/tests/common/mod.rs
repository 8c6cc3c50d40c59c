//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;

use mcp_agent::{Registry, Timestamp};
use mcp_spec::{LoadOptions, ServiceSpec};

/// Parses a service file (name = `name`), panicking with the diagnostics.
pub fn spec(name: &str, toml: &str) -> ServiceSpec {
    match mcp_spec::parse_service(&format!("{name}.toml"), name, toml, &LoadOptions::default()) {
        Ok(s) => s,
        Err(diags) => panic!(
            "test spec {name} is invalid:\n{}",
            diags
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// A service with one component per `(component, routes)` entry; route
/// names `""` mean the unnamed route.
pub fn service(name: &str, components: &[(&str, &[&str])]) -> ServiceSpec {
    let mut t = format!("name = \"{name}\"\n");
    for (i, (c, routes)) in components.iter().enumerate() {
        t.push_str(&format!(
            "[[components]]\nname = \"{c}\"\nimage = \"registry.example/{name}:v1.{i}\"\n"
        ));
        for (j, r) in routes.iter().enumerate() {
            t.push_str("[[components.routes]]\n");
            if !r.is_empty() {
                t.push_str(&format!("name = \"{r}\"\n"));
            }
            t.push_str(&format!("port = {}\n", 8000 + j));
        }
    }
    spec(name, &t)
}

pub const T0: i64 = 1_714_564_800; // 2024-05-01T12:00:00Z

/// A registry file in `dir` with a fixed clock.
pub fn open(dir: &Path) -> Registry {
    Registry::open(&dir.join("agent.db"))
        .expect("open registry")
        .with_clock(|| Timestamp::from_unix(T0))
}

pub fn hash(spec: &ServiceSpec) -> String {
    mcp_spec::spec_hash(spec)
}
