//! Runs the real `mcp-master` binary.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_mcp-master");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("MCP_MASTER_CONFIG")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// A config whose every path exists in `dir`.
fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    for f in [
        "master.pem",
        "master.key",
        "ca.pem",
        "issuer.pub",
        "master.token",
    ] {
        std::fs::write(dir.join(f), "x").unwrap();
    }
    std::fs::create_dir_all(dir.join("services")).unwrap();
    let cfg = format!(
        r#"
[server]
grpc_addr = "127.0.0.1:9443"
tls_cert = "master.pem"
tls_key = "master.key"
ca_cert = "ca.pem"

[database]
path = "master.db"

[auth]
issuer_public_key = "issuer.pub"
issuer = "mcias"
audience = "mcp"
token_file = "master.token"

[services]
dir = "services"

[edge]
internal_zone = "svc.example.internal"
allowed_domains = ["example.net"]
{extra}
"#
    );
    let path = dir.join("master.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

#[test]
fn check_config_accepts_a_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let out = run(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("config {} is valid\n", cfg.display())),
        "{stdout}"
    );
    assert!(stdout.contains("mode: gitops"), "{stdout}");
    assert!(stdout.contains("dns: not configured"), "{stdout}");

    // --config before the subcommand works too.
    let out = run(&["--config", cfg.to_str().unwrap(), "check-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn check_config_reports_every_problem_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[reconcile]\nconcurrency = 0\ninterval = \"0s\"\n",
    );
    let out = run(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "mcp-master: error: invalid config {}:\n  - reconcile.interval: must be more than 0s\n  - reconcile.concurrency: must be at least 1\n",
            cfg.display()
        )
    );
}

#[test]
fn check_config_reports_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    std::fs::remove_file(dir.path().join("ca.pem")).unwrap();
    let out = run(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "server.ca_cert: cannot read {}",
            dir.path().join("ca.pem").display()
        )),
        "{stderr}"
    );
}

#[test]
fn check_config_reports_parse_errors_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "[edge2]\n");
    let out = run(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("unknown field `edge2`"), "{stderr}");
    assert!(stderr.contains("line 23, column 2"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = run(&["check-config", "--config", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with(&format!(
        "mcp-master: error: cannot read config {}",
        missing.display()
    )));
}

#[test]
fn serve_reports_unusable_files_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    for args in [
        vec!["--config", cfg.to_str().unwrap()],
        vec!["serve", "--config", cfg.to_str().unwrap()],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1));
        let stderr = text(&out.stderr);
        // The placeholder files are not PEM: the server's TLS config says so.
        assert!(stderr.contains("server TLS"), "{stderr}");
        assert!(stderr.contains("master.pem"), "{stderr}");
    }
    // A bad config is reported before that.
    let out = run(&["--config", dir.path().join("nope.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read config"));
}
