//! Runs the real `mcp` binary.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Output;

fn mcp(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mcp"))
        .args(args)
        // Never pick up the developer's own config.
        .env("HOME", "/nonexistent")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("MCP_CONFIG")
        .output()
        .expect("run mcp")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../services.example")
}

const GOOD: &str = r#"name = "good"

[[components]]
name = "good"
image = "localhost/good:v1"
"#;

#[test]
fn validate_accepts_the_example_services() {
    let out = mcp(&["validate", example_dir().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("9 valid, 0 invalid"),
        "{}",
        stdout(&out)
    );
}

/// One broken file per rule; each gives exactly its `file:line:col: message`
/// line, and the good file still loads.
#[test]
fn validate_lists_every_problem_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let files: &[(&str, &str)] = &[
        ("good.toml", GOOD),
        (
            "badmode.toml",
            "name = \"badmode\"\n\n[[components]]\nname = \"api\"\nimage = \"x:v1\"\n\n[[components.routes]]\nport = 8443\nmode = \"l5\"\n",
        ),
        (
            "dup.toml",
            "name = \"dup\"\n[[components]]\nname = \"api\"\nimage = \"x:v1\"\n[[components]]\nname = \"api\"\nimage = \"x:v2\"\n",
        ),
        (
            "wrongname.toml",
            "name = \"other\"\n[[components]]\nname = \"a\"\nimage = \"x:v1\"\n",
        ),
        (
            "unknown.toml",
            "name = \"unknown\"\nimagee = \"x\"\n[[components]]\nname = \"a\"\nimage = \"x:v1\"\n",
        ),
        (
            "wrongtype.toml",
            "name = \"wrongtype\"\nactive = \"yes\"\n[[components]]\nname = \"a\"\nimage = \"x:v1\"\n",
        ),
        (
            "nohost.toml",
            "name = \"nohost\"\n[[components]]\nname = \"a\"\nimage = \"x:v1\"\n[[components.routes]]\nport = 443\nmode = \"l7\"\npublic = true\n",
        ),
        ("syntax.toml", "name = \"syntax\"\n[[components]\nname = \"a\"\n"),
        ("README.md", "not a service file"),
    ];
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let d = dir.path().to_str().unwrap();
    let out = mcp(&["validate", d]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let expect_prefix = [
        format!("{d}/badmode.toml:9:8: "),
        format!("{d}/dup.toml:6:8: "),
        format!("{d}/nohost.toml:8:10: "),
        format!("{d}/syntax.toml:2:"),
        format!("{d}/unknown.toml:2:1: "),
        format!("{d}/wrongname.toml:1:8: "),
        format!("{d}/wrongtype.toml:2:10: "),
    ];
    for p in &expect_prefix {
        assert_eq!(
            lines.iter().filter(|l| l.starts_with(p.as_str())).count(),
            1,
            "expected exactly one line starting {p:?} in:\n{text}"
        );
    }
    assert!(
        text.contains("mode must be \"l4\" or \"l7\", found \"l5\""),
        "{text}"
    );
    assert!(text.contains("unknown key \"imagee\""), "{text}");
    assert!(text.contains("1 valid, 7 invalid"), "{text}");
    assert!(!text.contains("good.toml"), "{text}");
}

/// What validates deploys: the image reference grammar the agent and its
/// runtime apply, and the master's service-file size limit.
#[test]
fn validate_applies_the_image_syntax_and_size_limit_of_master_and_agent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.toml"), GOOD).unwrap();
    std::fs::write(
        dir.path().join("upper.toml"),
        "name = \"upper\"\n[[components]]\nname = \"a\"\nimage = \"Registry.example/Team/app:v1\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tag.toml"),
        "name = \"tag\"\n[[components]]\nname = \"a\"\nimage = \"localhost/app:\"\n",
    )
    .unwrap();
    let big = format!("{GOOD}#{}\n", "x".repeat(1024 * 1024));
    std::fs::write(dir.path().join("big.toml"), big).unwrap();
    let d = dir.path().to_str().unwrap();
    let out = mcp(&["validate", d]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "{d}/upper.toml:4:9: image \"Registry.example/Team/app:v1\" is not a valid image reference: repository name must be lowercase, found \"Team/app\""
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{d}/tag.toml:4:9: image \"localhost/app:\" is not a valid image reference: invalid tag \"\"")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{d}/big.toml:1:1: file is ")),
        "{text}"
    );
    assert!(
        text.contains("larger than the 1048576 bytes a service file may have"),
        "{text}"
    );
    assert!(text.contains("1 valid, 3 invalid"), "{text}");
}

#[test]
fn show_prints_the_canonical_spec() {
    let out = mcp(&["show", "mcq", "--services", example_dir().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("name = \"mcq\"\ntier = \"worker\"\nactive = true\n"),
        "{text}"
    );
    assert!(
        text.contains("[[components.routes]]\nname = \"grpc\"\nport = 9443\nmode = \"l4\""),
        "{text}"
    );

    let out = mcp(&[
        "show",
        "nope",
        "--services",
        example_dir().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no nope.toml"), "{}", stderr(&out));
}

#[test]
fn commands_not_built_yet_fail_clearly() {
    for args in [&["edge", "list"][..], &["login"]] {
        let out = mcp(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("is not available yet"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn completions_are_generated() {
    let out = mcp(&["completions", "bash"]);
    assert!(out.status.success());
    let script = stdout(&out);
    assert!(
        script.contains("mcp__subcmd__sync") && script.contains("--dry-run"),
        "{script}"
    );
}

#[test]
fn node_add_and_remove_edit_the_config_keeping_comments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mcp.toml");
    std::fs::write(
        &cfg,
        "# my fleet\n[master]\naddress = \"https://m:9443\" # the master\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    assert!(
        mcp(&["--config", c, "node", "add", "orion", "https://o:9444"])
            .status
            .success()
    );
    assert!(
        mcp(&["--config", c, "node", "add", "vega", "https://v:9444"])
            .status
            .success()
    );
    let dup = mcp(&["--config", c, "node", "add", "orion", "https://x"]);
    assert_eq!(dup.status.code(), Some(1));
    assert!(stderr(&dup).contains("already"));
    assert!(mcp(&["--config", c, "node", "remove", "orion"])
        .status
        .success());
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.starts_with("# my fleet\n"), "{text}");
    assert!(text.contains("# the master"), "{text}");
    assert!(
        text.contains("name = \"vega\"") && !text.contains("orion"),
        "{text}"
    );
    let list = mcp(&["--config", c, "node", "list"]);
    assert!(stdout(&list).contains("vega") && stdout(&list).contains("https://m:9443"));
    let bad = mcp(&["--config", c, "node", "add", "Bad_Name", "x"]);
    assert_eq!(bad.status.code(), Some(1));
}

/// keygen writes a 0600 private key and a public key; issue signs a token the
/// security crate's verifier accepts, and refuses nonsense.
#[test]
fn token_keygen_and_issue() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing.pem");
    let k = key.to_str().unwrap();
    let out = mcp(&["token", "keygen", "--out", k]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stdout(&out).contains("PRIVATE"),
        "the key is never printed"
    );
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // keygen never overwrites a key.
    assert_eq!(mcp(&["token", "keygen", "--out", k]).status.code(), Some(1));

    let tok = dir.path().join("op.token");
    let out = mcp(&[
        "token",
        "issue",
        "alice",
        "--type",
        "human",
        "--roles",
        "admin,ops",
        "--ttl",
        "1h",
        "--key",
        k,
        "--out",
        tok.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let token = std::fs::read_to_string(&tok).unwrap();
    let public =
        mcp_security::jwt::PublicKey::from_file(&dir.path().join("signing.pem.pub")).unwrap();
    let id = mcp_security::jwt::JwtVerifier::new(public, "mcp", "mcp")
        .verify_token(token.trim())
        .unwrap();
    assert_eq!(id.name, "alice");
    assert_eq!(id.roles, vec!["admin".to_string(), "ops".to_string()]);

    // Piped stdout gets the token.
    let out = mcp(&[
        "token",
        "issue",
        "agent-orion",
        "--type",
        "system",
        "--key",
        k,
    ]);
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim().split('.').count(), 3, "a compact JWS");

    for bad in [
        &["token", "issue", "x", "--type", "robot", "--key", k][..],
        &["token", "issue", "x", "--ttl", "forever", "--key", k],
        &["token", "issue", "x", "--key", "/nonexistent/key.pem"],
    ] {
        let out = mcp(bad);
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        assert!(stderr(&out).starts_with("mcp: error:"), "{}", stderr(&out));
    }
}

/// `--ttl` over the maximum lifetime (90 days unless `--max-lifetime`
/// says otherwise) is refused with the reason; `--bind-cert` puts the
/// certificate's thumbprint into the token, which a verifier reads back.
#[test]
fn token_issue_caps_the_lifetime_and_binds_to_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing.pem");
    let k = key.to_str().unwrap();
    assert!(mcp(&["token", "keygen", "--out", k]).status.success());
    let public =
        || mcp_security::jwt::PublicKey::from_file(&dir.path().join("signing.pem.pub")).unwrap();

    let out = mcp(&["token", "issue", "alice", "--ttl", "91d", "--key", k]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "mcp: error: --ttl 91d is longer than the maximum token lifetime 90d (--max-lifetime): \
         the daemons refuse such tokens ([auth] max_token_lifetime, default 90d)"
    );
    let out = mcp(&["token", "issue", "alice", "--ttl", "90d", "--key", k]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = mcp(&[
        "token",
        "issue",
        "alice",
        "--ttl",
        "2h",
        "--max-lifetime",
        "1h",
        "--key",
        k,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--ttl 2h is longer than the maximum token lifetime 1h"));

    let ca = mcp_security::pki::Ca::generate("t").unwrap();
    let leaf = ca
        .write_leaf(
            dir.path(),
            "master",
            &["mcp-master"],
            mcp_security::pki::Validity::Days(1),
        )
        .unwrap();
    let out = mcp(&[
        "token",
        "issue",
        "mcp-master",
        "--type",
        "system",
        "--bind-cert",
        leaf.cert.to_str().unwrap(),
        "--key",
        k,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = mcp_security::jwt::JwtVerifier::new(public(), "mcp", "mcp")
        .verify_token(stdout(&out).trim())
        .unwrap();
    assert_eq!(
        id.cert_thumbprint,
        Some(mcp_security::jwt::cert_thumbprint_from_pem_file(&leaf.cert).unwrap())
    );
    let missing = dir.path().join("nope.crt");
    let out = mcp(&[
        "token",
        "issue",
        "mcp-master",
        "--bind-cert",
        missing.to_str().unwrap(),
        "--key",
        k,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("--bind-cert {}", missing.display())),
        "{}",
        stderr(&out)
    );
}

fn podman_installed() -> bool {
    let ok = std::process::Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let required = std::env::var("MCP_REQUIRE_PODMAN").is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        ok || !required,
        "MCP_REQUIRE_PODMAN is set but podman does not run"
    );
    if !ok {
        eprintln!("SKIPPING: podman is not installed");
    }
    ok
}

/// `mcp dev` never reads the CLI config: an exported MCP_CONFIG naming a
/// file that does not exist (another state directory's) is no obstacle.
/// `--purge` then deletes the prepared state directory.
#[test]
fn dev_ignores_mcp_config_and_purge_deletes_the_state() {
    if !podman_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let services = dir.path().join("services");
    std::fs::create_dir(&services).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mcp"))
            .args(args)
            .env("HOME", "/nonexistent")
            .env("MCP_CONFIG", dir.path().join("elsewhere/mcp.toml"))
            .output()
            .unwrap()
    };
    let s = state.to_str().unwrap();
    let o = run(&[
        "--output",
        "json",
        "dev",
        "--prepare-only",
        "--agents",
        "1",
        "--state-dir",
        s,
        "--services",
        services.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["nodes"][0]["name"], "m1");
    assert!(state.join("fleet.json").is_file());

    let o = run(&["dev", "--purge", "--state-dir", s]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("removed 0 container(s)"),
        "{}",
        stdout(&o)
    );
    assert!(!state.exists(), "the state directory is deleted");
}

/// `--down`/`--purge` act only on a directory `mcp dev` prepared.
#[test]
fn dev_down_refuses_a_directory_without_a_fleet() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
    let o = mcp(&[
        "dev",
        "--purge",
        "--state-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("holds no dev fleet"), "{}", stderr(&o));
    assert!(dir.path().join("keep.txt").exists(), "nothing was deleted");
}
