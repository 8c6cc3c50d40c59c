//! The `mcp-agent` binary: check-config, snapshot, and serve's start-up checks.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{hash, service};
use mcp_agent::Registry;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mcp-agent"));
    c.env_remove("MCP_AGENT_CONFIG");
    c
}

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let d = dir.display();
    let text = format!(
        r#"
[server]
grpc_addr = "127.0.0.1:19444"
tls_cert = "{d}/agent.crt"
tls_key = "{d}/agent.key"
ca_cert = "{d}/ca.pem"

[node]
name = "orion"
role = "worker"
address = "127.0.0.1:19444"

[master]
address = "127.0.0.1:19443"

[auth]
issuer_public_key = "{d}/issuer.pub"
issuer = "mcias"
audience = "mcp"
token_file = "{d}/agent.token"

[database]
path = "{d}/agent.db"

[files]
root = "{d}"

[snapshot]
dir = "{d}/snaps"
keep = 2
{extra}
"#
    );
    for f in [
        "agent.crt",
        "agent.key",
        "ca.pem",
        "issuer.pub",
        "agent.token",
    ] {
        std::fs::write(dir.join(f), "placeholder").expect("write file");
    }
    let path = dir.join("mcp-agent.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run mcp-agent");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_a_valid_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), "");
    let (code, out, err) = run(bin().arg("check-config").arg("--config").arg(&cfg));
    assert_eq!(code, 0, "stderr: {err}");
    assert!(
        out.contains(": ok (node orion, role worker, grpc 127.0.0.1:19444)"),
        "{out}"
    );
}

#[test]
fn check_config_reports_every_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        "[ports]\nrange = [9, 5]\n[alerts]\ncommand = []\n",
    );
    let (code, out, err) = run(bin().args(["check-config", "--config"]).arg(&cfg));
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains(&format!("invalid config {}", cfg.display())),
        "{err}"
    );
    assert!(
        err.contains("  - ports.range: [9, 5] is not a range"),
        "{err}"
    );
    assert!(err.contains("alerts.command: is empty"), "{err}");
}

#[test]
fn check_config_reports_syntax_errors_with_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), "[monitor]\nintervall = \"10s\"\n");
    let (code, _, err) = run(bin().arg("--config").arg(&cfg).arg("check-config"));
    assert_eq!(code, 1);
    assert!(err.contains("unknown field `intervall`"), "{err}");
    assert!(err.contains("line"), "{err}");
}

#[test]
fn check_config_reports_missing_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), "");
    std::fs::remove_file(dir.path().join("agent.key")).expect("rm");
    let (code, _, err) = run(bin().arg("check-config").arg("--config").arg(&cfg));
    assert_eq!(code, 1);
    assert!(err.contains("is valid, but:"), "{err}");
    assert!(err.contains("  - server.tls_key: "), "{err}");
    assert!(err.contains("agent.key: No such file"), "{err}");
}

#[test]
fn missing_config_argument_is_explained() {
    let (code, _, err) = run(bin().arg("check-config"));
    assert_eq!(code, 1);
    assert!(err.contains("pass --config FILE"), "{err}");
}

#[test]
fn serve_refuses_unusable_tls_material() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), "");
    let (code, _, err) = run(bin().arg("--config").arg(&cfg));
    assert_eq!(code, 1);
    assert!(err.contains("agent TLS"), "{err}");
    assert!(err.contains("agent.crt"), "{err}");
}

#[test]
fn snapshot_backs_up_and_rotates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), "");
    {
        let mut r = Registry::open(&dir.path().join("agent.db")).expect("db");
        let s = service("app", &[("web", &[""])]);
        r.upsert_service(&s, &hash(&s)).expect("deploy");
    }
    let mut made = Vec::new();
    for _ in 0..3 {
        let (code, out, err) = run(bin().arg("snapshot").arg("--config").arg(&cfg));
        assert_eq!(code, 0, "stderr: {err}");
        let first = out.lines().next().expect("path line").to_string();
        let path = first.split(" (").next().expect("path").to_string();
        made.push(PathBuf::from(path));
    }
    let kept = mcp_agent::snapshot::list_snapshots(&dir.path().join("snaps")).expect("list");
    assert_eq!(kept.len(), 2);
    assert!(!made[0].exists(), "oldest rotated away");
    let copy = Registry::open(&made[2]).expect("open snapshot");
    assert!(copy.get_service("app").expect("read").is_some());
}

#[test]
fn snapshot_without_database_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), "");
    let (code, _, err) = run(bin().arg("snapshot").arg("--config").arg(&cfg));
    assert_eq!(code, 1);
    assert!(err.contains("agent.db does not exist"), "{err}");
}
