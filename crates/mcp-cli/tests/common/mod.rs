//! Shared by the scripted-peer tests: a tonic server on 127.0.0.1 behind
//! TLS 1.3 with certificates made in the test, and a runner for the real
//! `mcp` binary with a hermetic environment.

#![allow(clippy::unwrap_used, dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

/// The token every scripted peer expects.
pub const TOKEN: &str = "scripted-test-token";

/// Checks `authorization: Bearer <TOKEN>`.
pub fn check_token<T>(req: &tonic::Request<T>) -> Result<(), tonic::Status> {
    let want = format!("Bearer {TOKEN}");
    match req.metadata().get("authorization").map(|v| v.to_str()) {
        Some(Ok(v)) if v == want => Ok(()),
        _ => Err(tonic::Status::unauthenticated("bad or missing token")),
    }
}

/// A running peer: its address, the CA that signed its certificate, a temp
/// dir (with `services/` and a token file) and the runtime serving it.
pub struct Peer {
    pub addr: SocketAddr,
    pub ca: PathBuf,
    pub token: PathBuf,
    pub services: PathBuf,
    pub dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

pub fn serve(router: tonic::transport::server::Router) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let ca = mcp_security::pki::Ca::generate("scripted").unwrap();
    let ca_path = dir.path().join("ca.pem");
    ca.write_cert(&ca_path).unwrap();
    let leaf = ca
        .write_leaf(
            dir.path(),
            "peer",
            &["127.0.0.1"],
            mcp_security::pki::Validity::Days(1),
        )
        .unwrap();
    let tls = mcp_security::tls::server_config(
        &mcp_security::tls::CertKeyPaths {
            cert: leaf.cert,
            key: leaf.key,
        },
        &mcp_security::tls::ClientAuth::None,
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        let listener = mcp_security::tls::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = mcp_security::tls::tls_incoming(listener, Arc::new(tls));
        tokio::spawn(router.serve_with_incoming(incoming));
        addr
    });
    let services = dir.path().join("services");
    std::fs::create_dir(&services).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    Peer {
        addr,
        ca: ca_path,
        token,
        services,
        dir,
        _rt: rt,
    }
}

impl Peer {
    /// Writes the CLI config (`extra` appended) and returns its path.
    pub fn config(&self, extra: &str) -> PathBuf {
        let cfg = self.dir.path().join("mcp.toml");
        std::fs::write(
            &cfg,
            format!(
                "[tls]\nca_cert = \"{}\"\n[auth]\ntoken_path = \"{}\"\n[services]\ndir = \"{}\"\n{extra}",
                self.ca.display(),
                self.token.display(),
                self.services.display()
            ),
        )
        .unwrap();
        cfg
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.services.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// Runs `mcp --config <cfg> args...` with a hermetic environment plus `env`.
pub fn mcp(cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mcp"));
    c.arg("--config")
        .arg(cfg)
        .args(args)
        .env("HOME", "/nonexistent")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("MCP_CONFIG")
        .env_remove("MCP_TOKEN")
        .env_remove("NO_COLOR")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A minimal valid service file.
pub fn svc(name: &str) -> String {
    format!("name = \"{name}\"\n[[components]]\nname = \"{name}\"\nimage = \"r/{name}:v1\"\n")
}

pub fn step(
    name: &str,
    status: mcp_proto::pb::StepStatus,
    error: &str,
) -> mcp_proto::pb::StepResult {
    mcp_proto::pb::StepResult {
        step: name.to_string(),
        success: status == mcp_proto::pb::StepStatus::Succeeded,
        error: error.to_string(),
        status: status as i32,
        detail: String::new(),
    }
}
