//! Volumes against real podman: `/srv/<service>/` on the host side lands
//! under the agent's files root (what a container writes there is what
//! PullFile and snapshots read), and an extra host path works once the
//! node allows it. Storage and skipping as in `tests/podman.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use mcp_agent::{Agent, AgentSettings, PortRange, Registry};
use mcp_runtime::testing::podman::{remove_quietly, TestPodman, WEB_V1};
use mcp_runtime::{ContainerRuntime, Podman};
use mcp_spec::{LoadOptions, ServiceSpec};

fn podman() -> Option<&'static TestPodman> {
    mcp_runtime::testing::podman::shared(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("mcp-agent-podman"),
    )
}

fn new_agent(p: &TestPodman, dir: &Path, node: &str, allowed: &[String]) -> Agent<Podman> {
    let registry = Registry::open(&dir.join("agent.db")).unwrap();
    let mut settings = AgentSettings::new(node);
    settings.port_range = PortRange::new(31300, 31399).unwrap();
    settings.files_root = dir.join("srv");
    settings.allowed_host_paths = allowed.to_vec();
    settings.stop_timeout = Duration::from_secs(1);
    Agent::new(p.runtime(), registry, settings)
}

/// One component named like the service, from the test web image, with
/// `volumes`; parsed as the master would send it (wire: not confined here,
/// the agent confines).
fn spec(name: &str, volumes: &[String]) -> ServiceSpec {
    let list: Vec<String> = volumes.iter().map(|v| format!("{v:?}")).collect();
    let toml = format!(
        "name = \"{name}\"\n[[components]]\nname = \"{name}\"\nimage = \"{WEB_V1}\"\nvolumes = [{}]\n",
        list.join(", ")
    );
    mcp_spec::parse_service(&format!("{name}.toml"), name, &toml, &LoadOptions::wire())
        .unwrap_or_else(|d| panic!("test spec {name}: {d:?}"))
}

async fn sh(rt: &Podman, container: &str, script: &str) -> String {
    let out = rt
        .exec(
            container,
            &["sh".to_string(), "-c".to_string(), script.to_string()],
        )
        .await
        .expect("exec");
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_srv_volumes_land_under_the_files_root() {
    let Some(p) = podman() else { return };
    let rt = p.runtime();
    let svc = "agtvolsrv";
    remove_quietly(&rt, &[svc]).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = new_agent(p, dir.path(), "volnode", &[]);
    let root = dir.path().join("srv");
    assert!(!root.join(svc).exists());

    agent
        .deploy(spec(svc, &[format!("/srv/{svc}:/data")]), None)
        .await
        .expect("deploy");
    // Created before the container, under the files root.
    assert!(root.join(svc).is_dir());
    sh(&rt, svc, "echo from-the-container > /data/hello").await;
    assert_eq!(
        std::fs::read_to_string(root.join(svc).join("hello")).unwrap(),
        "from-the-container\n"
    );
    // And the other way: PullFile's and PushFile's files are the
    // container's.
    let (content, _) = agent.pull_file(svc, "hello").await.expect("pull");
    assert_eq!(content, b"from-the-container\n");
    agent
        .push_file(svc, "pushed", b"from-the-host\n".to_vec(), 0o644)
        .await
        .expect("push");
    assert_eq!(sh(&rt, svc, "cat /data/pushed").await, "from-the-host\n");

    // `/` is refused here too, whatever the master thought.
    let err = agent
        .deploy(spec(svc, &["/:/host".to_string()]), None)
        .await
        .expect_err("/:/host");
    assert!(err.to_string().contains("\"/:/host\""), "{err}");
    agent.undeploy(svc, false).await.expect("undeploy");
    assert!(rt.inspect(svc).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_an_allowed_extra_path_is_mounted() {
    let Some(p) = podman() else { return };
    let rt = p.runtime();
    let svc = "agtvolextra";
    remove_quietly(&rt, &[svc]).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let cache_s = cache.display().to_string();
    let volume = format!("{cache_s}:/cache");

    std::fs::create_dir_all(dir.path().join("strict")).unwrap();
    let strict = new_agent(p, &dir.path().join("strict"), "volstrict", &[]);
    let err = strict
        .deploy(spec(svc, std::slice::from_ref(&volume)), None)
        .await
        .expect_err("not allowed");
    assert!(err.to_string().contains("allowed_host_paths"), "{err}");
    assert!(rt.inspect(svc).await.unwrap().is_none());

    let agent = new_agent(p, dir.path(), "volextra", std::slice::from_ref(&cache_s));
    agent
        .deploy(spec(svc, &[volume]), None)
        .await
        .expect("deploy");
    sh(&rt, svc, "echo cached > /cache/entry").await;
    assert_eq!(
        std::fs::read_to_string(cache.join("entry")).unwrap(),
        "cached\n"
    );
    agent.undeploy(svc, false).await.expect("undeploy");
}
