//! The canonical rendering of a service spec: TOML with a fixed field order,
//! defaults written out, empty lists and unset options left out. It is what
//! the spec hash is computed over and what plan diffs show, so two files that
//! differ only in key order, whitespace or comments have the same hash.

use sha2::{Digest, Sha256};
use toml_edit::{value, Array, ArrayOfTables, DocumentMut, Item, Table};

use crate::model::{ComponentSpec, HealthCheck, RouteSpec, ServiceSpec};

/// Canonical TOML text of `spec`. Deterministic: equal specs give equal text.
pub fn canonical_toml(spec: &ServiceSpec) -> String {
    let mut doc = DocumentMut::new();
    doc.insert("name", value(spec.name.as_str()));
    doc.insert("tier", value(spec.tier.as_str()));
    if let Some(node) = &spec.node {
        doc.insert("node", value(node.as_str()));
    }
    doc.insert("active", value(spec.active));
    // Written only when off, so the files that leave it out (the default)
    // keep the hash they had before the key existed.
    if !spec.rollback {
        doc.insert("rollback", value(false));
    }
    if let Some(snap) = &spec.snapshot {
        let mut t = Table::new();
        let method = snap.method.to_config_string();
        if !method.is_empty() {
            t.insert("method", value(method));
        }
        if !snap.exclude.is_empty() {
            t.insert("exclude", value(str_array(&snap.exclude)));
        }
        doc.insert("snapshot", Item::Table(t));
    }
    let mut comps = ArrayOfTables::new();
    for c in &spec.components {
        comps.push(component_table(c));
    }
    doc.insert("components", Item::ArrayOfTables(comps));
    doc.to_string()
}

fn component_table(c: &ComponentSpec) -> Table {
    let mut t = Table::new();
    t.insert("name", value(c.name.as_str()));
    t.insert("image", value(c.image.as_str()));
    for (key, list) in [("volumes", &c.volumes), ("cmd", &c.cmd), ("env", &c.env)] {
        if !list.is_empty() {
            t.insert(key, value(str_array(list)));
        }
    }
    for (key, opt) in [
        ("network", &c.network),
        ("user", &c.user),
        ("restart", &c.restart),
    ] {
        if let Some(v) = opt {
            t.insert(key, value(v.as_str()));
        }
    }
    if let Some(h) = &c.health {
        t.insert("health", Item::Table(health_table(h)));
    }
    if !c.routes.is_empty() {
        let mut routes = ArrayOfTables::new();
        for r in &c.routes {
            routes.push(route_table(r));
        }
        t.insert("routes", Item::ArrayOfTables(routes));
    }
    t
}

fn route_table(r: &RouteSpec) -> Table {
    let mut t = Table::new();
    if let Some(n) = &r.name {
        t.insert("name", value(n.as_str()));
    }
    t.insert("port", value(i64::from(r.port)));
    t.insert("mode", value(r.mode.as_str()));
    if let Some(h) = &r.hostname {
        t.insert("hostname", value(h.as_str()));
    }
    t.insert("public", value(r.public));
    t
}

fn health_table(h: &HealthCheck) -> Table {
    let mut t = Table::new();
    t.insert("kind", value(h.kind.as_str()));
    if let Some(r) = &h.route {
        t.insert("route", value(r.as_str()));
    }
    if let Some(p) = &h.path {
        t.insert("path", value(p.as_str()));
    }
    if let Some(s) = h.status {
        t.insert("status", value(i64::from(s)));
    }
    t.insert(
        "timeout",
        value(humantime::format_duration(h.timeout).to_string()),
    );
    t.insert(
        "interval",
        value(humantime::format_duration(h.interval).to_string()),
    );
    t
}

fn str_array(items: &[String]) -> Array {
    items.iter().map(String::as_str).collect()
}

/// SHA-256 (hex) of the canonical rendering: the identity of a spec's content.
pub fn spec_hash(spec: &ServiceSpec) -> String {
    hex::encode(Sha256::digest(canonical_toml(spec).as_bytes()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::load::{parse_service, LoadOptions};
    use crate::testing::arb_service_spec;
    use crate::validate::validate;

    fn load(text: &str) -> ServiceSpec {
        match parse_service("mcq.toml", "mcq", text, &LoadOptions::default()) {
            Ok(spec) => spec,
            Err(diags) => panic!("{diags:#?}\n{text}"),
        }
    }

    const STANDARD: &str = r#"
name = "mcq"
tier = "worker"
active = true

[snapshot]
method = "exec: dump --all"
exclude = ["uploads/", "tmp"]

[[components]]
name = "api"
image = "reg:8443/mcq:v1"
env = ["A=1", "B=2"]

[components.health]
kind = "http"
path = "/healthz"

[[components.routes]]
name = "rest"
port = 8443
hostname = "mcq.example.net"
public = true

[[components]]
name = "db"
image = "postgres:16"
"#;

    /// The same spec: other key order, whitespace, comments, inline tables,
    /// defaults written out or left out.
    const REWRITTEN: &str = r#"
# the mcq service
active=true   # running
components = [
  { image = "reg:8443/mcq:v1", name = "api", env = [ "A=1",
      "B=2" ], routes = [ { public = true, port = 8443, mode = "l7", hostname = "mcq.example.net", name = "rest" } ],
    health = { timeout = "5s", path = "/healthz", kind = "http", interval = "10s" } },
  { name = "db", image = "postgres:16", network = "", volumes = [] },
]
snapshot = { exclude = ['uploads/', 'tmp'], method = 'exec: dump   --all' }
name='mcq'
"#;

    #[test]
    fn hash_ignores_form() {
        let a = load(STANDARD);
        let b = load(REWRITTEN);
        assert_eq!(a, b);
        assert_eq!(spec_hash(&a), spec_hash(&b));
        assert_eq!(canonical_toml(&a), canonical_toml(&b));
    }

    #[test]
    fn hash_changes_with_the_image() {
        let a = load(STANDARD);
        let b = load(&STANDARD.replace("mcq:v1", "mcq:v2"));
        assert_ne!(spec_hash(&a), spec_hash(&b));
        let c = load(&STANDARD.replace("active = true", "active = false"));
        assert_ne!(spec_hash(&a), spec_hash(&c));
    }

    #[test]
    fn canonical_form_is_stable() {
        expect_test::expect![[r#"
            name = "mcq"
            tier = "worker"
            active = true

            [snapshot]
            method = "exec: dump --all"
            exclude = ["uploads/", "tmp"]

            [[components]]
            name = "api"
            image = "reg:8443/mcq:v1"
            env = ["A=1", "B=2"]

            [components.health]
            kind = "http"
            path = "/healthz"
            timeout = "5s"
            interval = "10s"

            [[components.routes]]
            name = "rest"
            port = 8443
            mode = "l7"
            hostname = "mcq.example.net"
            public = true

            [[components]]
            name = "db"
            image = "postgres:16"
        "#]]
        .assert_eq(&canonical_toml(&load(STANDARD)));
    }

    proptest! {
        #[test]
        fn generated_specs_are_valid(spec in arb_service_spec()) {
            prop_assert_eq!(validate(&spec, &LoadOptions::default()), vec![]);
        }

        #[test]
        fn canonical_toml_parses_back_to_the_same_spec(spec in arb_service_spec()) {
            let text = canonical_toml(&spec);
            let back = parse_service("x.toml", &spec.name, &text, &LoadOptions::default());
            prop_assert_eq!(back.as_ref(), Ok(&spec), "{}", text);
            if let Ok(back) = back {
                prop_assert_eq!(canonical_toml(&back), text);
            }
        }
    }
}
