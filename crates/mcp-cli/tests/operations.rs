//! Runs the real `mcp` binary for the commands that talk to daemons: config
//! and argument errors (before any network call), `stop`/`start` editing a
//! file in a git repository (GitOps: a commit, no network), and `edit` with a
//! scripted editor.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `mcp` with a hermetic environment plus `env`.
fn mcp_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mcp"));
    c.args(args)
        .env("HOME", "/nonexistent")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("MCP_CONFIG")
        .env_remove("MCP_TOKEN")
        .env_remove("VISUAL")
        .env_remove("EDITOR")
        .env_remove("NO_COLOR")
        // Git must not read the developer's config (identity comes from the repo).
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run mcp")
}

fn mcp(args: &[&str]) -> Output {
    mcp_env(args, &[])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_fails_with(o: &Output, needle: &str) {
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
    assert!(
        stderr(o).contains(needle),
        "expected {needle:?} in stderr:\n{}",
        stderr(o)
    );
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// A config file in `dir` with `body`.
fn config(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("mcp.toml");
    write(&p, body);
    p
}

/// A CA certificate file, for configs that get as far as connecting.
fn ca_file(dir: &Path) -> PathBuf {
    let p = dir.join("ca.pem");
    mcp_security::pki::Ca::generate("test")
        .unwrap()
        .write_cert(&p)
        .unwrap();
    p
}

/// A localhost port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

const MCQ: &str = "# the message queue\nname = \"mcq\" # keep this name\ntier = \"worker\"\n\n# one component\n[[components]]\nname = \"api\"\nimage = \"registry.example:8443/mcq:v0.4.0\" # pinned\n";

// ---------------------------------------------------------------------------
// configuration and argument errors
// ---------------------------------------------------------------------------

#[test]
fn master_commands_need_a_master_address() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[services]\ndir = \"/nonexistent\"\n");
    let c = cfg.to_str().unwrap();
    let want = format!("no [master] address in {c}");
    for args in [
        &["--config", c, "status"][..],
        &["--config", c, "ps"],
        &["--config", c, "events"],
        &["--config", c, "restart", "mcq"],
        &["--config", c, "undeploy", "mcq"],
        &["--config", c, "logs", "mcq"],
        &[
            "--config",
            c,
            "sync",
            "--dry-run",
            "--services",
            "/nonexistent",
        ],
    ] {
        assert_fails_with(&mcp(args), &want);
    }
    // Without any config file the default path is named.
    let out = mcp(&["status"]);
    assert_fails_with(
        &out,
        "no [master] address in /nonexistent/.config/mcp/mcp.toml",
    );
}

#[test]
fn missing_ca_and_token_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[master]\naddress = \"https://m:9443\"\n");
    let c = cfg.to_str().unwrap();
    assert_fails_with(
        &mcp(&["--config", c, "status"]),
        "no CA bundle: set [tls] ca_cert",
    );

    let ca = ca_file(dir.path());
    let cfg = config(
        dir.path(),
        &format!(
            "[master]\naddress = \"https://m:9443\"\n[tls]\nca_cert = \"{}\"\n",
            ca.display()
        ),
    );
    let c = cfg.to_str().unwrap();
    assert_fails_with(
        &mcp(&["--config", c, "status"]),
        "no token: set MCP_TOKEN or [auth] token_path",
    );
    // A configured token file that is missing is named too.
    let cfg = config(
        dir.path(),
        &format!(
            "[master]\naddress = \"https://m:9443\"\n[tls]\nca_cert = \"{}\"\n[auth]\ntoken_path = \"{}/nope\"\n",
            ca.display(),
            dir.path().display()
        ),
    );
    let out = mcp(&["--config", cfg.to_str().unwrap(), "status"]);
    assert_fails_with(&out, &format!("{}/nope", dir.path().display()));
    // Plaintext addresses are refused.
    let cfg = config(dir.path(), "[master]\naddress = \"http://m:9443\"\n");
    assert_fails_with(
        &mcp(&["--config", cfg.to_str().unwrap(), "status"]),
        "TLS only",
    );
}

#[test]
fn direct_needs_a_known_node() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[[nodes]]\nname = \"orion\"\naddress = \"https://o:9444\"\n\n[[nodes]]\nname = \"vega\"\naddress = \"https://v:9444\"\n",
    );
    let c = cfg.to_str().unwrap();
    for args in [
        &["--config", c, "deploy", "mcq", "--direct"][..],
        &["--config", c, "stop", "mcq", "--direct"],
        &["--config", c, "ps", "--direct"],
        &["--config", c, "pull", "mcq", "a.db", "/tmp/x", "--direct"],
    ] {
        assert_fails_with(&mcp(args), "--direct needs --node");
    }
    let out = mcp(&["--config", c, "status", "--direct", "--node", "rigel"]);
    assert_fails_with(&out, "unknown node rigel");
    assert!(stderr(&out).contains("orion, vega"), "{}", stderr(&out));

    let empty = config(dir.path(), "");
    let out = mcp(&[
        "--config",
        empty.to_str().unwrap(),
        "ps",
        "--direct",
        "--node",
        "orion",
    ]);
    assert_fails_with(&out, "no [[nodes]]");

    // --node alone is a mistake, not silently ignored.
    assert_fails_with(
        &mcp(&["--config", c, "restart", "mcq", "--node", "orion"]),
        "only applies with --direct",
    );
    // push, pull and adopt go through the master without --direct.
    for args in [
        &["--config", c, "adopt", "mcq"][..],
        &["--config", c, "adopt", "mcq", "--node", "orion"],
        &["--config", c, "pull", "mcq", "a.db", "/tmp/x"],
    ] {
        assert_fails_with(&mcp(args), "no [master] address");
    }
}

/// A peer that does not answer is named with its address; with --direct a
/// stop leaves the file alone.
#[test]
fn connection_failures_name_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(dir.path());
    let port = closed_port();
    let services = dir.path().join("services");
    std::fs::create_dir(&services).unwrap();
    write(&services.join("mcq.toml"), MCQ);
    let cfg = config(
        dir.path(),
        &format!(
            "[master]\naddress = \"127.0.0.1:{port}\"\n[tls]\nca_cert = \"{}\"\n[services]\ndir = \"{}\"\n\n[[nodes]]\nname = \"orion\"\naddress = \"https://127.0.0.1:{port}\"\n",
            ca.display(),
            services.display()
        ),
    );
    let c = cfg.to_str().unwrap();
    let env = [("MCP_TOKEN", "not-a-real-token")];
    let out = mcp_env(&["--config", c, "status"], &env);
    assert_fails_with(
        &out,
        &format!("cannot connect to master at https://127.0.0.1:{port}"),
    );
    let out = mcp_env(&["--config", c, "node", "list"], &env);
    assert_fails_with(&out, &format!("https://127.0.0.1:{port}"));
    assert!(
        stdout(&out).contains("orion"),
        "the config listing is still shown"
    );

    let out = mcp_env(
        &["--config", c, "stop", "mcq", "--direct", "--node", "orion"],
        &env,
    );
    assert_fails_with(
        &out,
        &format!("cannot connect to agent orion at https://127.0.0.1:{port}"),
    );
    assert_eq!(
        std::fs::read_to_string(services.join("mcq.toml")).unwrap(),
        MCQ
    );
}

#[test]
fn node_list_without_a_master_lists_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[[nodes]]\nname = \"orion\"\naddress = \"https://o:9444\"\n",
    );
    let out = mcp(&["--config", cfg.to_str().unwrap(), "node", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("orion") && text.contains("no [master] address"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// stop / start: the file is the source of truth
// ---------------------------------------------------------------------------

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A git repository with `services/` holding mcq.toml and web.toml, committed.
fn repo() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let services = root.join("services");
    std::fs::create_dir_all(&services).unwrap();
    git(&root, &["init", "-q", "-b", "main"]);
    git(&root, &["config", "user.name", "Test Operator"]);
    git(&root, &["config", "user.email", "op@example.invalid"]);
    write(&services.join("mcq.toml"), MCQ);
    write(
        &services.join("web.toml"),
        "name = \"web\"\n[[components]]\nname = \"web\"\nimage = \"r/web:v1\"\n",
    );
    git(&root, &["add", "."]);
    git(&root, &["commit", "-q", "-m", "initial"]);
    let cfg = config(
        dir.path(),
        &format!("[services]\ndir = \"{}\"\n", services.display()),
    );
    (dir, services, cfg)
}

#[test]
fn stop_and_start_commit_the_file_in_a_git_repository() {
    let (_tmp, services, cfg) = repo();
    let c = cfg.to_str().unwrap();
    let root = services.parent().unwrap();
    // An unrelated uncommitted change stays uncommitted.
    write(
        &services.join("web.toml"),
        "name = \"web\"\n[[components]]\nname = \"web\"\nimage = \"r/web:v2\"\n",
    );

    let out = mcp(&["--config", c, "stop", "mcq"]);
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("committed"), "{}", stdout(&out));
    let text = std::fs::read_to_string(services.join("mcq.toml")).unwrap();
    assert_eq!(
        text,
        MCQ.replace("# keep this name\n", "# keep this name\nactive = false\n"),
        "comments and layout are kept; active goes after name"
    );
    assert_eq!(git(root, &["log", "-1", "--format=%s"]), "mcp stop mcq");
    assert_eq!(
        git(root, &["show", "--name-only", "--format=", "HEAD"]),
        "services/mcq.toml",
        "only the service file is in the commit"
    );
    assert_eq!(git(root, &["status", "--porcelain"]), "M services/web.toml");

    // Stopping again changes nothing and commits nothing.
    let out = mcp(&["--config", c, "stop", "mcq"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("nothing to change"),
        "{}",
        stdout(&out)
    );
    assert_eq!(git(root, &["rev-list", "--count", "HEAD"]), "2");

    let out = mcp(&["--config", c, "--output", "json", "start", "mcq"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(git(root, &["log", "-1", "--format=%s"]), "mcp start mcq");
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["changed"], true);
    assert_eq!(v["commit"], git(root, &["rev-parse", "--short", "HEAD"]));
    let text = std::fs::read_to_string(services.join("mcq.toml")).unwrap();
    assert!(
        text.contains("name = \"mcq\" # keep this name\nactive = true\n"),
        "{text}"
    );
    assert!(text.contains("image = \"registry.example:8443/mcq:v0.4.0\" # pinned"));
}

#[test]
fn stop_refuses_a_file_with_uncommitted_changes_or_errors() {
    let (_tmp, services, cfg) = repo();
    let c = cfg.to_str().unwrap();
    let root = services.parent().unwrap();
    let edited = MCQ.replace("v0.4.0", "v0.5.0");
    write(&services.join("mcq.toml"), &edited);
    assert_fails_with(&mcp(&["--config", c, "stop", "mcq"]), "uncommitted changes");
    assert_eq!(
        std::fs::read_to_string(services.join("mcq.toml")).unwrap(),
        edited
    );
    assert_eq!(git(root, &["rev-list", "--count", "HEAD"]), "1");

    // An invalid file is not edited.
    let bad =
        "name = \"web\"\ntier = \"gold\"\n[[components]]\nname = \"web\"\nimage = \"r/web:v1\"\n";
    write(&services.join("web.toml"), bad);
    git(root, &["commit", "-q", "-am", "bad web"]);
    let out = mcp(&["--config", c, "stop", "web"]);
    assert_fails_with(&out, "is invalid; not changed");
    assert!(stderr(&out).contains("web.toml:2:8:"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(services.join("web.toml")).unwrap(),
        bad
    );

    assert_fails_with(&mcp(&["--config", c, "start", "nope"]), "no nope.toml");
}

/// Outside a git work tree, stop/start must tell the master (push mode); with
/// no master configured that fails before the file is touched.
#[test]
fn stop_in_push_mode_needs_the_master_before_editing() {
    let dir = tempfile::tempdir().unwrap();
    let services = dir.path().join("services");
    std::fs::create_dir(&services).unwrap();
    write(&services.join("mcq.toml"), MCQ);
    let cfg = config(
        dir.path(),
        &format!("[services]\ndir = \"{}\"\n", services.display()),
    );
    let out = mcp(&["--config", cfg.to_str().unwrap(), "stop", "mcq"]);
    assert_fails_with(&out, "no [master] address");
    assert_eq!(
        std::fs::read_to_string(services.join("mcq.toml")).unwrap(),
        MCQ
    );
}

// ---------------------------------------------------------------------------
// edit
// ---------------------------------------------------------------------------

/// An "editor": `sh '<dir with space>/ed.sh'`, which replaces the file it is
/// given with `$MCP_TEST_NEW` (or leaves it alone when that is unset).
fn editor(dir: &Path) -> String {
    let d = dir.join("editor dir");
    std::fs::create_dir_all(&d).unwrap();
    let script = d.join("ed.sh");
    write(
        &script,
        "#!/bin/sh\n[ -n \"$MCP_TEST_NEW\" ] || exit 0\ncat \"$MCP_TEST_NEW\" > \"$1\"\n",
    );
    format!("sh '{}'", script.display())
}

fn edit_setup() -> (tempfile::TempDir, PathBuf, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let services = dir.path().join("services");
    std::fs::create_dir(&services).unwrap();
    write(&services.join("mcq.toml"), MCQ);
    let cfg = config(
        dir.path(),
        &format!("[services]\ndir = \"{}\"\n", services.display()),
    );
    let ed = editor(dir.path());
    (dir, services, cfg, ed)
}

#[test]
fn edit_saves_a_valid_change() {
    let (dir, services, cfg, ed) = edit_setup();
    let new = dir.path().join("new.toml");
    let changed = MCQ.replace("v0.4.0", "v0.5.0");
    write(&new, &changed);
    let out = mcp_env(
        &["--config", cfg.to_str().unwrap(), "edit", "mcq"],
        &[("EDITOR", &ed), ("MCP_TEST_NEW", new.to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("saved"), "{}", stdout(&out));
    assert_eq!(
        std::fs::read_to_string(services.join("mcq.toml")).unwrap(),
        changed
    );
    // No temporary files left in the services directory.
    assert_eq!(std::fs::read_dir(&services).unwrap().count(), 1);

    // VISUAL wins over EDITOR.
    let back = dir.path().join("back.toml");
    write(&back, MCQ);
    let out = mcp_env(
        &["--config", cfg.to_str().unwrap(), "edit", "mcq"],
        &[
            ("VISUAL", &ed),
            ("EDITOR", "false"),
            ("MCP_TEST_NEW", back.to_str().unwrap()),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(services.join("mcq.toml")).unwrap(),
        MCQ
    );
}

#[test]
fn edit_keeps_the_original_when_the_edit_is_invalid_or_unchanged() {
    let (dir, services, cfg, ed) = edit_setup();
    let c = cfg.to_str().unwrap();
    let bad = dir.path().join("bad.toml");
    write(
        &bad,
        "name = \"mcq\"\n[[components]]\nname = \"api\"\nimage = \"r/mcq:v1\"\n[[components.routes]]\nport = 8443\nmode = \"l5\"\n",
    );
    let out = mcp_env(
        &["--config", c, "edit", "mcq"],
        &[("EDITOR", &ed), ("MCP_TEST_NEW", bad.to_str().unwrap())],
    );
    assert_fails_with(&out, "not saved");
    let file = services.join("mcq.toml");
    assert!(
        stderr(&out).contains(&format!("{}:7:8: mode must be", file.display())),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), MCQ);

    // The name must match the file.
    let renamed = dir.path().join("renamed.toml");
    write(&renamed, &MCQ.replace("name = \"mcq\"", "name = \"other\""));
    let out = mcp_env(
        &["--config", c, "edit", "mcq"],
        &[("EDITOR", &ed), ("MCP_TEST_NEW", renamed.to_str().unwrap())],
    );
    assert_fails_with(&out, "not saved");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), MCQ);

    // Unchanged: said so, nothing written.
    let out = mcp_env(&["--config", c, "edit", "mcq"], &[("EDITOR", &ed)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("no changes"), "{}", stdout(&out));

    // An editor that fails leaves the file alone.
    let out = mcp_env(&["--config", c, "edit", "mcq"], &[("EDITOR", "false")]);
    assert_fails_with(&out, "unchanged");
    // Unbalanced quotes in $EDITOR are an error, not a shell command.
    let out = mcp_env(&["--config", c, "edit", "mcq"], &[("EDITOR", "vi 'oops")]);
    assert_fails_with(&out, "$EDITOR");
    assert_fails_with(
        &mcp_env(&["--config", c, "edit", "nope"], &[("EDITOR", &ed)]),
        "no nope.toml",
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), MCQ);
}
