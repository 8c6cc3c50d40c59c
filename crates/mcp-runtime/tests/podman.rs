//! The runtime suite and podman-specific checks against real podman.
//!
//! Isolated storage under `$CARGO_TARGET_TMPDIR/mcp-runtime-podman` (or
//! `MCP_PODMAN_TEST_DIR`), engine config `tests/podman/containers.conf`
//! (unless `CONTAINERS_CONF` is set), images built by
//! `scripts/build-test-images.sh`. Skips loudly when podman is missing,
//! unless `MCP_REQUIRE_PODMAN=1`. See the crate docs.

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use mcp_runtime::{testing, ContainerConfig, ContainerRuntime, Podman, PortBinding, RuntimeError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WEB_V1: &str = "localhost/mcp-test/web:v1";
const WEB_V2: &str = "localhost/mcp-test/web:v2";

struct TestPodman {
    binary: OsString,
    global_args: Vec<OsString>,
    conf: OsString,
}

impl TestPodman {
    fn runtime(&self) -> Podman {
        Podman::new()
            .binary(&self.binary)
            .global_args(&self.global_args)
            .env("CONTAINERS_CONF", &self.conf)
            .command_timeout(Duration::from_secs(60))
    }

    /// Raw podman CLI with the same storage, for setting up what the trait
    /// cannot (unlabelled containers).
    fn cli(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.args(&self.global_args).env("CONTAINERS_CONF", &self.conf);
        c
    }
}

fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn require_podman() -> bool {
    std::env::var("MCP_REQUIRE_PODMAN").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn setup() -> Result<TestPodman, String> {
    let binary: OsString = std::env::var_os("MCP_PODMAN").unwrap_or_else(|| "podman".into());
    match Command::new(&binary).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(format!(
                "{} --version failed: {}",
                binary.to_string_lossy(),
                String::from_utf8_lossy(&o.stderr)
            ))
        }
        Err(e) => return Err(format!("{} not runnable: {e}", binary.to_string_lossy())),
    }
    let dir = std::env::var_os("MCP_PODMAN_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("mcp-runtime-podman"));
    let conf = std::env::var_os("CONTAINERS_CONF")
        .unwrap_or_else(|| repo_root().join("tests/podman/containers.conf").into());
    let runroot = short_runroot(&dir);
    let script = repo_root().join("scripts/build-test-images.sh");
    let out = Command::new(&script)
        .env("MCP_PODMAN", &binary)
        .env("MCP_PODMAN_ROOT", &dir)
        .env("MCP_PODMAN_RUNROOT", &runroot)
        .env("CONTAINERS_CONF", &conf)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        // podman is installed, so this is a real failure, not a skip.
        panic!(
            "{} failed:\n{}{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Keep in sync with scripts/build-test-images.sh.
    let global_args = vec![
        "--root".into(),
        dir.join("root").into(),
        "--runroot".into(),
        runroot.clone().into(),
        "--tmpdir".into(),
        runroot.join("tmp").into(),
        "--storage-driver".into(),
        "vfs".into(),
    ];
    Ok(TestPodman {
        binary,
        global_args,
        conf,
    })
}

/// podman refuses runroots longer than 50 characters, so the runroot lives
/// in `/tmp`, named after the storage dir (FNV-1a) so that each storage
/// always gets the same one (podman checks) and different checkouts do not
/// share one. Like a real runroot it may vanish on reboot; podman copes.
fn short_runroot(dir: &Path) -> PathBuf {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in dir.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    PathBuf::from(format!("/tmp/mcp-podman-{h:016x}"))
}

/// The shared test podman, or `None` (after a loud message) when podman is
/// missing and not required.
fn podman() -> Option<&'static TestPodman> {
    static SETUP: OnceLock<Result<TestPodman, String>> = OnceLock::new();
    match SETUP.get_or_init(setup) {
        Ok(p) => Some(p),
        Err(why) if require_podman() => {
            panic!("MCP_REQUIRE_PODMAN is set but podman is unusable: {why}")
        }
        Err(why) => {
            eprintln!(
                "\n{bar}\nSKIPPING podman tests: {why}\n\
                 install podman, runc and busybox-static, or set MCP_REQUIRE_PODMAN=1 \
                 to make this a failure\n{bar}\n",
                bar = "!".repeat(72)
            );
            None
        }
    }
}

async fn remove_quietly<R: ContainerRuntime>(rt: &R, names: &[&str]) {
    for n in names {
        match rt.remove(n, true).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => panic!("removing {n}: {e}"),
        }
    }
}

async fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (_, body) = text.split_once("\r\n\r\n")?;
    Some(body.to_string())
}

#[tokio::test]
async fn podman_passes_the_runtime_suite() {
    let Some(p) = podman() else { return };
    testing::runtime_suite(&p.runtime(), WEB_V1, "mcpsuite-podman").await;
}

#[tokio::test]
async fn podman_serves_the_image_on_the_published_port() {
    let Some(p) = podman() else { return };
    let rt = p.runtime();
    let (v1, v2) = ("mcphttp-web-v1", "mcphttp-web-v2");
    remove_quietly(&rt, &[v1, v2]).await;

    let port = testing::free_port();
    let mut cfg = ContainerConfig::new(v1, WEB_V1, "mcphttp", "web", "node-a");
    // The image's default command serves /www on $PORT.
    cfg.env = vec!["PORT=8080".to_string()];
    cfg.ports = vec![PortBinding::tcp(Ipv4Addr::LOCALHOST.into(), port, 8080)];
    cfg.restart = Some("unless-stopped".to_string());
    rt.create_and_start(&cfg).await.expect("create v1");
    let mut body = None;
    for _ in 0..50 {
        body = http_get(port, "/version").await;
        if body.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        body.as_deref(),
        Some("v1\n"),
        "GET /version on 127.0.0.1:{port}"
    );

    let cfg2 = ContainerConfig {
        name: v2.to_string(),
        image: WEB_V2.to_string(),
        ports: Vec::new(),
        ..cfg.clone()
    };
    rt.create_and_start(&cfg2).await.expect("create v2");
    for (name, want) in [(v1, "v1\n"), (v2, "v2\n")] {
        let out = rt
            .exec(name, &["cat".to_string(), "/version".to_string()])
            .await
            .expect("exec cat");
        assert_eq!(out.stdout, want, "{name}");
    }
    let info = rt.inspect(v2).await.expect("inspect").expect("exists");
    assert_eq!(info.version(), "v2");

    // httpd as PID 1 ignores SIGTERM: stop escalates to SIGKILL.
    rt.stop(v1, Duration::from_secs(1)).await.expect("stop");
    let info = rt.inspect(v1).await.expect("inspect").expect("exists");
    assert_eq!(info.exit_code, Some(137), "{info:?}");

    remove_quietly(&rt, &[v1, v2]).await;
}

#[tokio::test]
async fn podman_reports_crashes_and_unmanaged_containers() {
    let Some(p) = podman() else { return };
    let rt = p.runtime();
    let (crashy, legacy) = ("mcpcrash-api", "mcpadopt-legacy-web");
    remove_quietly(&rt, &[crashy, legacy]).await;

    // A process that exits by itself is reported with its exit code.
    let mut cfg = ContainerConfig::new(crashy, WEB_V1, "mcpcrash", "api", "node-a");
    cfg.cmd = vec!["sh".into(), "-c".into(), "sleep 0.3; exit 3".into()];
    rt.create_and_start(&cfg).await.expect("create");
    let mut info = None;
    for _ in 0..100 {
        let i = rt.inspect(crashy).await.expect("inspect").expect("exists");
        if i.state.has_finished() {
            info = Some(i);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let info = info.expect("container should have exited");
    assert_eq!(info.exit_code, Some(3), "{info:?}");
    assert!(info.finished_at >= info.started_at);

    // A container created outside MCP: found by prefix, not managed.
    let out = p
        .cli()
        .args(["create", "--name", legacy, WEB_V1])
        .output()
        .expect("podman create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found = rt.list_by_prefix("mcpadopt-legacy-").await.expect("list");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(!found[0].is_managed());
    assert_eq!(found[0].state, mcp_runtime::ContainerState::Created);
    let managed = rt.list_managed().await.expect("list");
    assert!(!managed.iter().any(|i| i.name == legacy));
    assert!(managed.iter().any(|i| i.name == crashy));

    remove_quietly(&rt, &[crashy, legacy]).await;
}

#[tokio::test]
async fn podman_errors_name_the_image_and_carry_stderr() {
    let Some(p) = podman() else { return };
    let rt = p.runtime();
    // Nothing listens on port 1: the registry is unreachable.
    let image = "127.0.0.1:1/mcp-test/none:v1";
    match rt.pull(image).await {
        Err(RuntimeError::Command { target, stderr, .. }) => {
            assert_eq!(target, image);
            assert!(!stderr.is_empty());
        }
        other => panic!("pull from an unreachable registry: {other:?}"),
    }
    let bad = Podman::new().binary("/nonexistent/podman");
    match bad.inspect("x").await {
        Err(e @ RuntimeError::Spawn { .. }) => {
            assert!(e.to_string().contains("/nonexistent/podman"), "{e}")
        }
        other => panic!("missing binary: {other:?}"),
    }
}
