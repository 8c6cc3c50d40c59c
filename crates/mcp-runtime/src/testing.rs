//! The shared test suite every [`ContainerRuntime`] must pass (feature
//! `testing`). It runs against [`crate::FakeRuntime`] in a unit test and
//! against real podman in `tests/podman.rs`, so the fake cannot drift from
//! the real thing.
//!
//! [`podman`] sets up real podman in an isolated storage for any crate's
//! podman tests.

pub mod podman;

use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use tokio_stream::StreamExt;

use crate::{
    ContainerConfig, ContainerRuntime, ContainerState, LogLine, LogOptions, LogSource, LogStream,
    PortBinding, PullOutcome, RuntimeError, LABEL_COMPONENT, LABEL_NODE, LABEL_SERVICE,
};

/// How long the suite waits for anything asynchronous (log lines).
const WAIT: Duration = Duration::from_secs(15);

/// A free TCP port on 127.0.0.1 (free when this returns, at least).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// The command of the suite's container: prints a greeting (stdout, with
/// `$MCP_SUITE_GREETING`) and a line on stderr, then idles until SIGTERM,
/// on which it exits 0. Needs `sh`, `echo`, `sleep` and `trap` in the image.
pub fn suite_cmd() -> Vec<String> {
    vec![
        "sh".to_string(),
        "-c".to_string(),
        "echo suite-start $MCP_SUITE_GREETING; echo suite-err >&2; \
         trap 'exit 0' TERM; while true; do sleep 1; done"
            .to_string(),
    ]
}

/// The next event of `name` with `status`, within 15 seconds (others are
/// skipped).
pub async fn next_event(
    events: &mut crate::EventStream,
    name: &str,
    status: &str,
) -> crate::ContainerEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(Ok(e))) if e.name == name && e.status == status => return e,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the event stream ended before {name} {status}"),
            Err(_) => panic!("no {status} event of {name} within {WAIT:?}"),
        }
    }
}

/// Reads `stream` until `done` holds for the lines so far, the stream ends,
/// or 15 seconds pass. Returns the lines and whether the stream ended.
pub async fn read_lines(
    stream: &mut LogStream,
    done: impl Fn(&[LogLine]) -> bool,
) -> (Vec<LogLine>, bool) {
    let mut lines = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if done(&lines) {
            return (lines, false);
        }
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return (lines, false),
            Ok(None) => return (lines, true),
            Ok(Some(Ok(l))) => lines.push(l),
            Ok(Some(Err(e))) => panic!("log stream error: {e}"),
        }
    }
}

fn has(lines: &[LogLine], source: LogSource, text: &str) -> bool {
    lines.iter().any(|l| l.source == source && l.line == text)
}

async fn must<T>(what: &str, fut: impl std::future::Future<Output = crate::Result<T>>) -> T {
    match fut.await {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

async fn cleanup<R: ContainerRuntime>(rt: &R, names: &[&str]) {
    for n in names {
        match rt.remove(n, true).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => panic!("cleanup of {n}: {e}"),
        }
    }
}

/// Runs the whole contract against `rt`.
///
/// `image` must be present locally, pinned (not `latest`), and provide
/// `sh`, `echo`, `sleep`, `env`, `true` and `false`. Containers are named
/// `<prefix>-...`; the suite removes them before and after, and asserts
/// only about containers with that prefix, so it can share a runtime with
/// other tests as long as prefixes differ.
pub async fn runtime_suite<R: ContainerRuntime>(rt: &R, image: &str, prefix: &str) {
    let web = format!("{prefix}-web");
    let missing = format!("{prefix}-missing");
    let no_image = format!("{prefix}-noimage");
    cleanup(rt, &[&web, &no_image]).await;
    let mut events = must("events", rt.events()).await;

    // Images.
    assert!(
        must("image_exists", rt.image_exists(image)).await,
        "{image} should exist"
    );
    let absent_image = "localhost/mcp-test/never-built:v0";
    assert!(!must("image_exists absent", rt.image_exists(absent_image)).await);
    assert_eq!(
        must("pull of a local pinned image", rt.pull(image)).await,
        PullOutcome::AlreadyPresent
    );

    // Missing containers.
    assert!(must("inspect missing", rt.inspect(&missing))
        .await
        .is_none());
    let nf = |what: &str, r: Result<(), RuntimeError>| match r {
        Err(RuntimeError::NotFound { name }) => assert_eq!(name, missing, "{what}"),
        other => panic!("{what} of a missing container: expected NotFound, got {other:?}"),
    };
    nf("start", rt.start(&missing).await);
    nf("stop", rt.stop(&missing, Duration::from_secs(1)).await);
    nf("remove", rt.remove(&missing, true).await);
    nf(
        "exec",
        rt.exec(&missing, &["true".to_string()]).await.map(drop),
    );
    nf(
        "logs",
        rt.logs(&missing, LogOptions::default()).await.map(drop),
    );

    // Creation failures leave nothing behind.
    let cfg_no_image = ContainerConfig::new(&no_image, absent_image, prefix, "noimage", "node-a");
    match rt.create_and_start(&cfg_no_image).await {
        Err(RuntimeError::ImageNotFound { image: i }) => assert_eq!(i, absent_image),
        other => panic!("create with an absent image: expected ImageNotFound, got {other:?}"),
    }
    assert!(must("inspect", rt.inspect(&no_image)).await.is_none());
    let mut bad = ContainerConfig::new(&web, image, prefix, "web", "node-a");
    bad.env = vec!["HOME".to_string()];
    assert!(
        matches!(
            rt.create_and_start(&bad).await,
            Err(RuntimeError::Invalid { .. })
        ),
        "env entry without = must be rejected"
    );
    assert!(
        matches!(rt.inspect("-rf").await, Err(RuntimeError::Invalid { .. })),
        "option-like names must be rejected"
    );

    // Create with labels, env, ports, cmd.
    let port = PortBinding::tcp(Ipv4Addr::LOCALHOST.into(), free_port(), 8080);
    let mut cfg = ContainerConfig::new(&web, image, prefix, "web", "node-a");
    cfg.labels
        .insert("mcp.test".to_string(), "suite".to_string());
    cfg.env = vec![
        "MCP_SUITE_GREETING=hello-suite".to_string(),
        "PORT=8080".to_string(),
    ];
    cfg.cmd = suite_cmd();
    cfg.ports = vec![port];
    let id = must("create_and_start", rt.create_and_start(&cfg)).await;
    assert!(!id.is_empty());
    let started = next_event(&mut events, &web, "start").await;
    assert_eq!(started.service(), Some(prefix), "{started:?}");
    match rt.create_and_start(&cfg).await {
        Err(RuntimeError::AlreadyExists { name }) => assert_eq!(name, web),
        other => panic!("second create: expected AlreadyExists, got {other:?}"),
    }

    let info = must("inspect", rt.inspect(&web))
        .await
        .unwrap_or_else(|| panic!("{web} should exist"));
    assert_eq!(info.name, web);
    assert_eq!(info.id, id);
    assert_eq!(info.image, image);
    assert_eq!(info.version(), mcp_spec::image_version(image));
    assert_eq!(info.state, ContainerState::Running, "{info:?}");
    assert!(info.is_running());
    assert_eq!(info.exit_code, None);
    assert!(info.started_at.is_some());
    assert_eq!(info.service(), Some(prefix));
    assert_eq!(info.component(), Some("web"));
    assert_eq!(info.node(), Some("node-a"));
    assert_eq!(
        info.labels.get("mcp.test").map(String::as_str),
        Some("suite")
    );
    assert_eq!(info.ports, vec![port]);

    // Listing.
    let managed = must("list_managed", rt.list_managed()).await;
    let mine: Vec<_> = managed
        .iter()
        .filter(|i| i.name.starts_with(prefix))
        .collect();
    assert_eq!(mine.len(), 1, "{managed:?}");
    assert_eq!(mine[0].id, id);
    assert_eq!(
        mine[0].labels.get(LABEL_SERVICE).map(String::as_str),
        Some(prefix)
    );
    assert_eq!(
        mine[0].labels.get(LABEL_COMPONENT).map(String::as_str),
        Some("web")
    );
    assert_eq!(
        mine[0].labels.get(LABEL_NODE).map(String::as_str),
        Some("node-a")
    );
    let by_prefix = must("list_by_prefix", rt.list_by_prefix(&format!("{prefix}-"))).await;
    assert_eq!(
        by_prefix
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>(),
        vec![web.as_str()]
    );
    assert!(
        must("list_by_prefix", rt.list_by_prefix(&format!("{prefix}-zz")))
            .await
            .is_empty()
    );

    // Exec.
    let env = must("exec env", rt.exec(&web, &["env".to_string()])).await;
    assert_eq!(env.exit_code, 0);
    assert!(
        env.stdout
            .lines()
            .any(|l| l == "MCP_SUITE_GREETING=hello-suite"),
        "env output: {}",
        env.stdout
    );
    let echo = must(
        "exec echo",
        rt.exec(&web, &["echo".into(), "a".into(), "b c".into()]),
    )
    .await;
    assert_eq!(echo.stdout, "a b c\n");
    let f = must("exec false", rt.exec(&web, &["false".to_string()])).await;
    assert_eq!(f.exit_code, 1, "a failing command is output, not an error");
    assert!(!f.success());
    assert!(matches!(
        rt.exec(&web, &[]).await,
        Err(RuntimeError::Invalid { .. })
    ));

    // Logs.
    let want = |l: &[LogLine]| {
        has(l, LogSource::Stdout, "suite-start hello-suite")
            && has(l, LogSource::Stderr, "suite-err")
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut s = must("logs", rt.logs(&web, LogOptions::default())).await;
        let (lines, ended) = read_lines(&mut s, |_| false).await;
        assert!(ended, "logs without follow must end");
        if want(&lines) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "log lines never appeared: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut s = must(
        "logs tail",
        rt.logs(
            &web,
            LogOptions {
                tail: Some(1),
                ..LogOptions::default()
            },
        ),
    )
    .await;
    let (lines, ended) = read_lines(&mut s, |_| false).await;
    assert!(ended);
    assert_eq!(lines.len(), 1, "tail 1: {lines:?}");
    // `since`: an hour ahead there is nothing yet; since 1970, everything.
    let since = |t: std::time::SystemTime| LogOptions {
        since: Some(t),
        ..LogOptions::default()
    };
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    let mut s = must("logs since later", rt.logs(&web, since(later))).await;
    let (lines, ended) = read_lines(&mut s, |_| false).await;
    assert!(ended && lines.is_empty(), "since an hour ahead: {lines:?}");
    let early = std::time::UNIX_EPOCH + Duration::from_secs(1);
    let mut s = must("logs since 1970", rt.logs(&web, since(early))).await;
    let (lines, ended) = read_lines(&mut s, |_| false).await;
    assert!(ended && want(&lines), "since 1970: {lines:?}");
    let mut s = must(
        "logs follow",
        rt.logs(
            &web,
            LogOptions {
                follow: true,
                ..LogOptions::default()
            },
        ),
    )
    .await;
    let (lines, ended) = read_lines(&mut s, want).await;
    assert!(want(&lines) && !ended, "follow: {lines:?} ended={ended}");
    drop(s);

    // Stop and start.
    match rt.remove(&web, false).await {
        Err(RuntimeError::WrongState { name, .. }) => assert_eq!(name, web),
        other => panic!("remove of a running container without force: {other:?}"),
    }
    let mut follow = must(
        "logs follow",
        rt.logs(
            &web,
            LogOptions {
                follow: true,
                ..LogOptions::default()
            },
        ),
    )
    .await;
    must("stop", rt.stop(&web, Duration::from_secs(5))).await;
    next_event(&mut events, &web, "died").await;
    let (_, ended) = read_lines(&mut follow, |_| false).await;
    assert!(ended, "a followed log stream ends when the container stops");
    let info = must("inspect", rt.inspect(&web))
        .await
        .unwrap_or_else(|| panic!("{web} gone"));
    assert!(info.state.has_finished(), "after stop: {info:?}");
    assert_eq!(
        info.exit_code,
        Some(0),
        "stops cleanly on SIGTERM: {info:?}"
    );
    assert!(info.finished_at.is_some());
    must("stop again", rt.stop(&web, Duration::from_secs(1))).await;
    assert!(matches!(
        rt.exec(&web, &["true".to_string()]).await,
        Err(RuntimeError::WrongState { .. })
    ));
    let managed = must("list_managed", rt.list_managed()).await;
    assert!(
        managed
            .iter()
            .any(|i| i.name == web && i.state.has_finished()),
        "list_managed includes stopped containers"
    );

    must("start", rt.start(&web)).await;
    next_event(&mut events, &web, "start").await;
    must("start again", rt.start(&web)).await;
    let info = must("inspect", rt.inspect(&web))
        .await
        .unwrap_or_else(|| panic!("{web} gone"));
    assert_eq!(info.state, ContainerState::Running);
    assert_eq!(info.exit_code, None);
    assert_eq!(info.id, id, "start keeps the container");
    let env = must("exec env", rt.exec(&web, &["env".to_string()])).await;
    assert!(env.stdout.contains("MCP_SUITE_GREETING=hello-suite"));

    // Remove.
    must("remove --force", rt.remove(&web, true)).await;
    next_event(&mut events, &web, "remove").await;
    assert!(must("inspect removed", rt.inspect(&web)).await.is_none());
    assert!(matches!(
        rt.remove(&web, true).await,
        Err(RuntimeError::NotFound { .. })
    ));
    let managed = must("list_managed", rt.list_managed()).await;
    assert!(!managed.iter().any(|i| i.name.starts_with(prefix)));
}
