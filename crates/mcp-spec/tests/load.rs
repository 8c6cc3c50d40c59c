//! Loader diagnostics: one `check` helper, one case per rule. Each case is a
//! whole file; the expectation is every diagnostic, as the operator sees it.
//! Regenerate with `UPDATE_EXPECT=1 cargo test -p mcp-spec --test load`.

use expect_test::{expect, Expect};
use mcp_spec::{parse_service, LoadOptions};

fn check_with(opts: &LoadOptions, text: &str, expect: Expect) {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let actual = match parse_service("mcq.toml", "mcq", text, opts) {
        Ok(spec) => format!("ok: {spec:?}\n"),
        Err(diags) => diags.iter().map(|d| format!("{d}\n")).collect(),
    };
    expect.assert_eq(&actual);
}

fn check(text: &str, expect: Expect) {
    check_with(&LoadOptions::default(), text, expect);
}

#[test]
fn minimal_file_gets_defaults() {
    check(
        r#"
name = "mcq"
[[components]]
name = "api"
image = "reg:8443/mcq:v1"
"#,
        expect![[r#"
            ok: ServiceSpec { name: "mcq", tier: Worker, node: None, active: true, rollback: true, snapshot: None, components: [ComponentSpec { name: "api", image: "reg:8443/mcq:v1", volumes: [], cmd: [], env: [], network: None, user: None, restart: None, routes: [], health: None }] }
        "#]],
    );
}

#[test]
fn full_example_from_the_design_loads() {
    check(
        r#"
name   = "mcq"
tier   = "worker"          # "core" (master node) | "worker" (default)
node   = "orion"           # optional pin; overrides tier
active = true

[snapshot]
method  = "exec: mcq-dump --out '/srv/mcq/dump dir'"
exclude = ["uploads/"]

[[components]]
name    = "api"
image   = "registry.example:8443/mcq:v0.4.0"
volumes = ["/srv/mcq:/srv/mcq"]
cmd     = ["server", "--config", "/srv/mcq/mcq.toml"]
env     = ["LOG_LEVEL=info"]
network = ""
user    = "0:0"
restart = "unless-stopped"

[components.health]
kind = "http"
route = "rest"
path = "/healthz"
timeout = "2s"

[[components.routes]]
name     = "rest"
port     = 8443
mode     = "l7"
hostname = "mcq.example.net"
public   = true
"#,
        expect![[r#"
            ok: ServiceSpec { name: "mcq", tier: Worker, node: Some("orion"), active: true, rollback: true, snapshot: Some(SnapshotConfig { method: Exec(["mcq-dump", "--out", "/srv/mcq/dump dir"]), exclude: ["uploads/"] }), components: [ComponentSpec { name: "api", image: "registry.example:8443/mcq:v0.4.0", volumes: ["/srv/mcq:/srv/mcq"], cmd: ["server", "--config", "/srv/mcq/mcq.toml"], env: ["LOG_LEVEL=info"], network: None, user: Some("0:0"), restart: Some("unless-stopped"), routes: [RouteSpec { name: Some("rest"), port: 8443, mode: L7, hostname: Some("mcq.example.net"), public: true }], health: Some(HealthCheck { kind: Http, route: Some("rest"), path: Some("/healthz"), timeout: 2s, interval: 10s, status: None }) }] }
        "#]],
    );
}

#[test]
fn syntax_error() {
    check(
        r#"
name = "mcq"
[[components]
name = "api"
"#,
        expect![[r#"
            mcq.toml:2:14: invalid toml: unclosed array table, expected `]`
        "#]],
    );
}

/// Found by fuzzing: toml_edit 0.23 panicked ("all items have spans") on
/// a dotted key after a keyless value, so one hostile file crashed whatever
/// loaded it (the master's GitOps loader, `mcp validate`). An error now.
#[test]
fn a_file_that_crashed_the_toml_parser_is_a_syntax_error() {
    check(
        "==\n.=",
        expect![[r#"
            mcq.toml:1:2: invalid toml: extra `=`, expected nothing
        "#]],
    );
}

#[test]
fn duplicate_key_is_a_syntax_error() {
    check(
        r#"
name = "mcq"
name = "mcq"
"#,
        expect![[r#"
            mcq.toml:2:1: invalid toml: duplicate key
        "#]],
    );
}

#[test]
fn unknown_keys_everywhere() {
    check(
        r#"
name = "mcq"
nmae = "mcq"
colour = "blue"
[snapshot]
methd = "grpc"
[[components]]
name = "api"
image = "x"
imagee = "y"
[components.health]
kind = "tcp"
retries = 3
[[components.routes]]
port = 1
prot = 2
"#,
        expect![[r#"
            mcq.toml:2:1: unknown key "nmae" (did you mean "name"?)
            mcq.toml:3:1: unknown key "colour"
            mcq.toml:5:1: unknown key "methd" in [snapshot] (did you mean "method"?)
            mcq.toml:9:1: unknown key "imagee" in [[components]] (did you mean "image"?)
            mcq.toml:12:1: unknown key "retries" in [components.health]
            mcq.toml:15:1: unknown key "prot" in [[components.routes]] (did you mean "port"?)
        "#]],
    );
}

#[test]
fn wrong_types() {
    check(
        r#"
name = 3
tier = true
node = ["a"]
active = "yes"
snapshot = "grpc"
components = 1
"#,
        expect![[r#"
            mcq.toml:1:8: name must be a string, found integer
            mcq.toml:2:8: tier must be a string, found boolean
            mcq.toml:3:8: node must be a string, found array
            mcq.toml:4:10: active must be a boolean, found string
            mcq.toml:5:12: snapshot must be a table, found string
            mcq.toml:6:14: components must be an array of tables ([[components]]), found integer
        "#]],
    );
}

#[test]
fn wrong_types_in_components() {
    check(
        r#"
name = "mcq"
[[components]]
name = "api"
image = "x"
volumes = "/a:/b"
cmd = ["a", 1]
env = [{ a = 1 }]
network = false
health = 5
routes = { port = 1 }
[[components]]
name = "web"
image = "y"
[[components.routes]]
name = 7
port = "80"
mode = 4
hostname = 1.5
public = "true"
"#,
        expect![[r#"
            mcq.toml:5:11: volumes must be an array of strings, found string
            mcq.toml:6:13: cmd must be an array of strings, found integer at position 2
            mcq.toml:7:8: env must be an array of strings, found table at position 1
            mcq.toml:8:11: network must be a string, found boolean
            mcq.toml:9:10: health must be a table, found integer
            mcq.toml:10:10: routes must be an array of tables ([[components.routes]]), found table
            mcq.toml:15:8: name must be a string, found integer
            mcq.toml:16:8: port must be an integer, found string
            mcq.toml:17:8: mode must be a string, found integer
            mcq.toml:18:12: hostname must be a string, found float
            mcq.toml:19:10: public must be a boolean, found string
        "#]],
    );
}

#[test]
fn name_is_required() {
    check(
        r#"
tier = "core"
[[components]]
name = "api"
image = "x"
"#,
        expect![[r#"
            mcq.toml:1:1: missing required key "name"
        "#]],
    );
}

#[test]
fn name_must_match_the_file_stem() {
    check(
        r#"
name = "mcr"
[[components]]
name = "api"
image = "x"
"#,
        expect![[r#"
            mcq.toml:1:8: name "mcr" does not match file name "mcq.toml"
        "#]],
    );
}

#[test]
fn name_and_node_must_be_dns_labels() {
    check(
        r#"
name = "MCQ"
node = "orion_1"
[[components]]
name = "-api"
image = "x"
"#,
        expect![[r#"
            mcq.toml:1:8: name "MCQ" does not match file name "mcq.toml"
            mcq.toml:1:8: name must be a DNS label (1-63 of a-z, 0-9 and '-', not starting or ending with '-'), found "MCQ"
            mcq.toml:2:8: node must be a DNS label (1-63 of a-z, 0-9 and '-', not starting or ending with '-'), found "orion_1"
            mcq.toml:4:8: name must be a DNS label (1-63 of a-z, 0-9 and '-', not starting or ending with '-'), found "-api"
        "#]],
    );
}

#[test]
fn tier_values() {
    check(
        r#"
name = "mcq"
tier = "edge"
[[components]]
name = "api"
image = "x"
"#,
        expect![[r#"
            mcq.toml:2:8: tier must be "core" or "worker", found "edge"
        "#]],
    );
}

#[test]
fn empty_node_means_no_pin() {
    check(
        r#"
name = "mcq"
node = ""
tier = "core"
active = false
[[components]]
name = "api"
image = "x"
"#,
        expect![[r#"
            ok: ServiceSpec { name: "mcq", tier: Core, node: None, active: false, rollback: true, snapshot: None, components: [ComponentSpec { name: "api", image: "x", volumes: [], cmd: [], env: [], network: None, user: None, restart: None, routes: [], health: None }] }
        "#]],
    );
}

#[test]
fn snapshot_methods_and_excludes() {
    check(
        r#"
name = "mcq"
[snapshot]
method = "rsync"
exclude = ["/etc", "a/../../b", "", "ok/"]
[[components]]
name = "api"
image = "x"
"#,
        expect![[r#"
            mcq.toml:3:10: method must be "grpc", "cli", "full" or "exec: <cmd>", found "rsync"
            mcq.toml:4:12: exclude path must be relative to /srv/<service>/, found "/etc"
            mcq.toml:4:20: exclude path must not contain "..", found "a/../../b"
            mcq.toml:4:33: exclude path must not be empty, found ""
        "#]],
    );
    check(
        r#"
name = "mcq"
[snapshot]
method = "exec:   "
[[components]]
name = "api"
image = "x"
"#,
        expect![[r#"
            mcq.toml:3:10: method "exec: <cmd>" needs a command, found "exec:   "
        "#]],
    );
    check(
        r#"
name = "mcq"
snapshot = { method = "exec: 'unterminated" }
[[components]]
name = "api"
image = "x"
"#,
        expect![[r#"
            mcq.toml:2:23: method "exec: <cmd>" has unbalanced quotes, found "exec: 'unterminated"
        "#]],
    );
}

#[test]
fn at_least_one_component() {
    check(
        r#"
name = "mcq"
"#,
        expect![[r#"
            mcq.toml:1:1: a service needs at least one [[components]], found none
        "#]],
    );
}

#[test]
fn component_name_and_image_are_required() {
    check(
        r#"
name = "mcq"
[[components]]
volumes = []
"#,
        expect![[r#"
            mcq.toml:2:1: missing required key "name" in [[components]]
            mcq.toml:2:1: missing required key "image" in [[components]]
        "#]],
    );
}

#[test]
fn duplicate_component_names_at_the_second() {
    check(
        r#"
name = "mcq"
[[components]]
name = "api"
image = "x"

[[components]]
name = "api"
image = "y"
"#,
        expect![[r#"
            mcq.toml:7:8: duplicate component name "api" (first defined on line 3)
        "#]],
    );
}

#[test]
fn image_volumes_env_restart() {
    check(
        r#"
name = "mcq"
[[components]]
name = "api"
image = "reg/mcq: v1"
volumes = ["/srv/mcq", "/a:b", "/a:/b:ro:extra", "data:/data:z"]
env = ["LOG_LEVEL=info", "NOEQUALS", "=x", "1X=y", "EMPTY="]
restart = "sometimes"
[[components]]
name = "web"
image = ""
restart = "on-failure:x"
[[components]]
name = "db"
image = "db"
restart = "on-failure:5"
"#,
        expect![[r#"
            mcq.toml:4:9: image "reg/mcq: v1" is not a valid image reference: must not contain whitespace
            mcq.toml:5:12: volume must be "host:container[:options]" with an absolute container path, found "/srv/mcq"
            mcq.toml:5:24: volume must be "host:container[:options]" with an absolute container path, found "/a:b"
            mcq.toml:5:32: volume must be "host:container[:options]" with an absolute container path, found "/a:/b:ro:extra"
            mcq.toml:5:50: volume "data:/data:z": named volumes are not allowed (their data lives in podman's storage, out of reach of snapshots and migration); mount a directory under /srv/mcq/ instead
            mcq.toml:6:26: env entry must be "KEY=value", found "NOEQUALS"
            mcq.toml:6:38: env entry must be "KEY=value", found "=x"
            mcq.toml:6:44: env entry must be "KEY=value", found "1X=y"
            mcq.toml:7:11: restart must be "no", "always", "on-failure", "on-failure:N" or "unless-stopped", found "sometimes"
            mcq.toml:10:9: image must not be empty
            mcq.toml:11:11: restart must be "no", "always", "on-failure", "on-failure:N" or "unless-stopped", found "on-failure:x"
        "#]],
    );
}

#[test]
fn route_rules() {
    check(
        r#"
name = "mcq"
[[components]]
name = "api"
image = "x"
[[components.routes]]
port = 0
mode = "l5"
[[components.routes]]
port = 70000
[[components.routes]]
name = "Rest"
mode = "l4"
[[components.routes]]
name = "grpc"
port = 9443
hostname = "bad_host.example.net"
[[components.routes]]
name = "grpc"
port = 9444
"#,
        expect![[r#"
            mcq.toml:6:8: port must be between 1 and 65535, found 0
            mcq.toml:7:8: mode must be "l4" or "l7", found "l5"
            mcq.toml:8:1: component "api" has more than one unnamed route; name all but one (first defined on line 5)
            mcq.toml:9:8: port must be between 1 and 65535, found 70000
            mcq.toml:10:1: missing required key "port" in [[components.routes]]
            mcq.toml:11:8: name must be a DNS label (1-63 of a-z, 0-9 and '-', not starting or ending with '-'), found "Rest"
            mcq.toml:16:12: hostname must be a valid DNS name, found "bad_host.example.net"
            mcq.toml:18:8: duplicate route name "grpc" in component "api" (first defined on line 14)
        "#]],
    );
}

#[test]
fn public_route_needs_a_hostname() {
    check(
        r#"
name = "mcq"
[[components]]
name = "api"
image = "x"
[[components.routes]]
name = "rest"
port = 8443
public = true
[[components.routes]]
port = 8444
public = true
"#,
        expect![[r#"
            mcq.toml:8:10: public route "rest" needs a hostname
            mcq.toml:11:10: public unnamed route needs a hostname
        "#]],
    );
}

#[test]
fn public_hostname_must_be_under_an_allowed_domain() {
    let opts = LoadOptions {
        allowed_public_domains: vec!["example.net".into(), "example.org.".into()],
        ..LoadOptions::default()
    };
    check_with(
        &opts,
        r#"
name = "mcq"
[[components]]
name = "api"
image = "x"
[[components.routes]]
name = "a"
port = 1
hostname = "mcq.evilexample.net"
public = true
[[components.routes]]
name = "b"
port = 2
hostname = "MCQ.Example.ORG."
public = true
[[components.routes]]
name = "c"
port = 3
hostname = "internal.lan"
"#,
        expect![[r#"
            mcq.toml:8:12: public hostname must be under an allowed public domain ("example.net", "example.org."), found "mcq.evilexample.net"
        "#]],
    );
}

#[test]
fn health_rules() {
    check(
        r#"
name = "mcq"
[[components]]
name = "api"
image = "x"
[components.health]
kind = "tcp"
path = "/healthz"
route = "nope"
timeout = "soon"
interval = 10
[[components.routes]]
name = "rest"
port = 1
[[components]]
name = "worker"
image = "y"
[components.health]
kind = "icmp"
[[components]]
name = "cron"
image = "z"
health = { route = "x" }
[[components.routes]]
port = 2
"#,
        expect![[r#"
            mcq.toml:7:8: path is only allowed with kind "http", found kind "tcp"
            mcq.toml:8:9: health route must name a route of component "api" (one of "rest"), found "nope"
            mcq.toml:9:11: timeout must be a duration like "5s", found "soon"
            mcq.toml:10:12: interval must be a duration string like "5s", found integer
            mcq.toml:17:1: health check needs a route to probe, found component "worker" without routes
            mcq.toml:18:8: kind must be "tcp", "http" or "grpc", found "icmp"
            mcq.toml:22:10: missing required key "kind" in [components.health]
            mcq.toml:22:20: health route must name a route of component "cron" (it has only an unnamed route), found "x"
        "#]],
    );
}

#[test]
fn rollback_and_expected_status() {
    check(
        r#"
name = "mcq"
rollback = false
[[components]]
name = "api"
image = "x"
[components.health]
kind = "http"
status = 204
[[components.routes]]
port = 1
"#,
        expect![[r#"
            ok: ServiceSpec { name: "mcq", tier: Worker, node: None, active: true, rollback: false, snapshot: None, components: [ComponentSpec { name: "api", image: "x", volumes: [], cmd: [], env: [], network: None, user: None, restart: None, routes: [RouteSpec { name: None, port: 1, mode: L7, hostname: None, public: false }], health: Some(HealthCheck { kind: Http, route: None, path: None, timeout: 5s, interval: 10s, status: Some(204) }) }] }
        "#]],
    );
    check(
        r#"
name = "mcq"
rollback = "yes"
[[components]]
name = "api"
image = "x"
[components.health]
kind = "tcp"
status = 200
[[components.routes]]
port = 1
[[components]]
name = "web"
image = "x"
[components.health]
kind = "http"
status = 999
[[components.routes]]
port = 2
"#,
        expect![[r#"
            mcq.toml:2:12: rollback must be a boolean, found string
            mcq.toml:8:10: status is only allowed with kind "http", found kind "tcp"
            mcq.toml:16:10: status must be an HTTP status code (100-599), found 999
        "#]],
    );
}

#[test]
fn health_path_and_durations() {
    check(
        r#"
name = "mcq"
[[components]]
name = "api"
image = "x"
[components.health]
kind = "http"
path = "healthz"
timeout = "0s"
interval = "1500us"
[[components.routes]]
port = 1
"#,
        expect![[r#"
            mcq.toml:7:8: path must start with '/' and contain no whitespace, found "healthz"
            mcq.toml:8:11: timeout must be greater than zero, found 0s
            mcq.toml:9:12: interval must be a whole number of milliseconds, found "1ms 500us"
        "#]],
    );
}

#[test]
fn inline_tables_are_accepted() {
    check(
        r#"
name = "mcq"
snapshot = { method = "grpc" }
components = [
  { name = "api", image = "x", routes = [{ port = 80, mode = "l4" }], health = { kind = "grpc", timeout = "1m 30s" } },
]
"#,
        expect![[r#"
            ok: ServiceSpec { name: "mcq", tier: Worker, node: None, active: true, rollback: true, snapshot: Some(SnapshotConfig { method: Grpc, exclude: [] }), components: [ComponentSpec { name: "api", image: "x", volumes: [], cmd: [], env: [], network: None, user: None, restart: None, routes: [RouteSpec { name: None, port: 80, mode: L4, hostname: None, public: false }], health: Some(HealthCheck { kind: Grpc, route: None, path: None, timeout: 90s, interval: 10s, status: None }) }] }
        "#]],
    );
}

#[test]
fn columns_count_characters() {
    check(
        "name = \"mcq\" # é\n[[components]]\nname = \"api\"\nimage = \"x\"\n[[components.routes]]\n  mode =    \"l5\" \nport = 1\n",
        expect![[r#"
            mcq.toml:6:13: mode must be "l4" or "l7", found "l5"
        "#]],
    );
}

#[test]
fn volumes_are_confined_to_the_services_data_directory() {
    check(
        r#"
name = "mcq"
[[components]]
name = "api"
image = "x"
volumes = ["/srv/mcq:/srv/mcq", "/srv/mcq//db/.:/db:ro", "/:/host"]
[[components]]
name = "web"
image = "y"
volumes = [
  "/etc:/etc",
  "/srv/mcq/../other:/o",
  "/srv/other:/o",
  "/srv/mcqx:/o",
  "/srv:/srv",
  "/var/cache/builderx:/c",
  "data:/data",
]
"#,
        expect![[r#"
            mcq.toml:5:58: volume "/:/host": host path "/" is outside the service's data directory /srv/mcq/; other host paths must be listed in allowed_host_paths (none are allowed)
            mcq.toml:10:3: volume "/etc:/etc": host path "/etc" is outside the service's data directory /srv/mcq/; other host paths must be listed in allowed_host_paths (none are allowed)
            mcq.toml:11:3: volume "/srv/mcq/../other:/o": host path "/srv/mcq/../other" must not contain ".."
            mcq.toml:12:3: volume "/srv/other:/o": host path "/srv/other" is outside the service's data directory /srv/mcq/; other host paths must be listed in allowed_host_paths (none are allowed)
            mcq.toml:13:3: volume "/srv/mcqx:/o": host path "/srv/mcqx" is outside the service's data directory /srv/mcq/; other host paths must be listed in allowed_host_paths (none are allowed)
            mcq.toml:14:3: volume "/srv:/srv": host path "/srv" is outside the service's data directory /srv/mcq/; other host paths must be listed in allowed_host_paths (none are allowed)
            mcq.toml:15:3: volume "/var/cache/builderx:/c": host path "/var/cache/builderx" is outside the service's data directory /srv/mcq/; other host paths must be listed in allowed_host_paths (none are allowed)
            mcq.toml:16:3: volume "data:/data": named volumes are not allowed (their data lives in podman's storage, out of reach of snapshots and migration); mount a directory under /srv/mcq/ instead
        "#]],
    );
}

#[test]
fn allowed_host_paths_allow_more_by_whole_components() {
    let opts = LoadOptions {
        allowed_host_paths: vec!["/var/cache/builder".into()],
        ..LoadOptions::default()
    };
    check_with(
        &opts,
        r#"
name = "mcq"
[[components]]
name = "api"
image = "x"
volumes = ["/var/cache/builder:/c", "/var/cache/builder/sub:/s", "/var/cache/builderx:/x"]
"#,
        expect![[r#"
            mcq.toml:5:66: volume "/var/cache/builderx:/x": host path "/var/cache/builderx" is outside the service's data directory /srv/mcq/; other host paths must be listed in allowed_host_paths (allowed: "/var/cache/builder")
        "#]],
    );
}

#[test]
fn wire_options_check_the_form_of_volumes_only() {
    check_with(
        &LoadOptions::wire(),
        r#"
name = "mcq"
[[components]]
name = "api"
image = "x"
volumes = ["/:/host", "nocolon"]
"#,
        expect![[r#"
            mcq.toml:5:23: volume must be "host:container[:options]" with an absolute container path, found "nocolon"
        "#]],
    );
}
