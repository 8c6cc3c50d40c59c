//! The runtime suite and podman-specific checks against real podman.
//!
//! Isolated storage under `$CARGO_TARGET_TMPDIR/mcp-runtime-podman` (or
//! `MCP_PODMAN_TEST_DIR`), engine config `tests/podman/containers.conf`
//! (unless `CONTAINERS_CONF` is set), images built by
//! `scripts/build-test-images.sh`. Skips loudly when podman is missing,
//! unless `MCP_REQUIRE_PODMAN=1`. See the crate docs.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use mcp_runtime::testing::podman::{remove_quietly, TestPodman, WEB_V1, WEB_V2};
use mcp_runtime::{testing, ContainerConfig, ContainerRuntime, Podman, PortBinding, RuntimeError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The shared test podman (see `mcp_runtime::testing::podman`).
fn podman() -> Option<&'static TestPodman> {
    testing::podman::shared(Path::new(env!("CARGO_TARGET_TMPDIR")).join("mcp-runtime-podman"))
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

    // The image's shell traps SIGTERM and exits 0 (scripts/build-test-images.sh),
    // well before the timeout would escalate to SIGKILL (137).
    rt.stop(v1, Duration::from_secs(5)).await.expect("stop");
    let info = rt.inspect(v1).await.expect("inspect").expect("exists");
    assert_eq!(info.exit_code, Some(0), "{info:?}");

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

#[tokio::test]
async fn podman_log_line_without_newline_is_cut_at_the_cap() {
    let Some(p) = podman() else { return };
    let rt = p.runtime();
    let name = "mcplongline-out";
    remove_quietly(&rt, &[name]).await;
    let mut cfg = ContainerConfig::new(name, WEB_V1, "mcplongline", "out", "node-a");
    // 200 000 bytes without a newline, then a short line, then idle.
    cfg.cmd = vec![
        "sh".to_string(),
        "-c".to_string(),
        "head -c 200000 /dev/zero | tr '\\0' x; echo; echo after; \
         trap 'exit 0' TERM; while true; do sleep 1; done"
            .to_string(),
    ];
    rt.create_and_start(&cfg).await.expect("create");
    let mut lines = Vec::new();
    for _ in 0..50 {
        let mut s = rt
            .logs(name, mcp_runtime::LogOptions::default())
            .await
            .expect("logs");
        let (got, _) = testing::read_lines(&mut s, |_| false).await;
        lines = got;
        if lines.iter().any(|l| l.line == "after") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    remove_quietly(&rt, &[name]).await;
    let texts: Vec<&str> = lines.iter().map(|l| l.line.as_str()).collect();
    assert_eq!(
        texts.len(),
        2,
        "{:?}",
        texts.iter().map(|t| t.len()).collect::<Vec<_>>()
    );
    assert_eq!(
        texts[0],
        format!(
            "{}{}",
            "x".repeat(mcp_runtime::MAX_LOG_LINE_BYTES),
            mcp_runtime::TRUNCATION_MARKER
        )
    );
    assert_eq!(texts[1], "after");
}
