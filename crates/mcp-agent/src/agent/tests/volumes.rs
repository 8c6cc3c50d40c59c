//! Volumes on a direct deploy: confined to `/srv/<service>/` (or the
//! node's `[podman] allowed_host_paths`), `/srv` mapped onto the files
//! root, the service directory created, links below the root refused.

use super::*;

/// A spec as the wire delivers it: volume forms checked, not confined.
fn wire_spec(name: &str, volumes: &[&str]) -> ServiceSpec {
    let list: Vec<String> = volumes.iter().map(|v| format!("{v:?}")).collect();
    let toml = format!(
        "name = \"{name}\"\n[[components]]\nname = \"{name}\"\nimage = \"{V1}\"\nvolumes = [{}]\n",
        list.join(", ")
    );
    match mcp_spec::parse_service(&format!("{name}.toml"), name, &toml, &LoadOptions::wire()) {
        Ok(s) => s,
        Err(d) => panic!("test spec {name}: {d:?}"),
    }
}

fn created_volumes(h: &Harness) -> Vec<Vec<String>> {
    h.fake
        .mutations()
        .into_iter()
        .filter_map(|c| match c {
            FakeCall::CreateAndStart(cfg) => Some(cfg.volumes),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn host_root_etc_and_other_services_data_are_refused_naming_the_volume() {
    let h = Harness::new();
    for volume in [
        "/:/host",
        "/etc:/etc",
        "/srv:/srv",
        "/srv/other:/o",
        "/srv/app/../other:/o",
        "data:/data",
    ] {
        let err = h
            .agent
            .deploy(wire_spec("app", &[volume]), None)
            .await
            .expect_err(volume);
        assert!(
            matches!(err, AgentError::InvalidSpec { .. }),
            "{volume}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&format!("{volume:?}")), "{msg}");
        assert!(
            msg.contains("allowed_host_paths")
                || msg.contains("named volumes")
                || msg.contains(".."),
            "{msg}"
        );
        assert_eq!(
            crate::server::status(&err).code(),
            tonic::Code::InvalidArgument,
            "{volume}"
        );
    }
    assert!(h.fake.mutations().is_empty(), "{:?}", h.fake.mutations());
    assert!(!h.dir.path().join("srv").join("app").exists());
}

#[tokio::test]
async fn srv_is_mapped_onto_the_files_root_and_the_service_directory_created() {
    let h = Harness::new();
    let root = h.dir.path().join("srv");
    h.agent
        .deploy(
            wire_spec("app", &["/srv/app:/data", "/srv/app//cache/.:/cache:ro"]),
            None,
        )
        .await
        .expect("deploy");
    assert!(root.join("app").is_dir());
    let r = root.display();
    assert_eq!(
        created_volumes(&h),
        vec![vec![
            format!("{r}/app:/data"),
            format!("{r}/app/cache:/cache:ro")
        ]]
    );
}

#[tokio::test]
async fn an_allowed_extra_path_is_mounted_as_is_only_when_configured() {
    let refused = Harness::new();
    let spec = wire_spec("app", &["/var/cache/builder/app:/cache"]);
    let err = refused
        .agent
        .deploy(spec.clone(), None)
        .await
        .expect_err("not allowed by default");
    assert!(err.to_string().contains("allowed_host_paths"), "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeRuntime::with_images([V1]);
    let h = Harness::with(fake, dir, |s| {
        s.allowed_host_paths = vec!["/var/cache/builder".into()];
    });
    h.agent.deploy(spec, None).await.expect("allowed");
    assert_eq!(
        created_volumes(&h),
        vec![vec!["/var/cache/builder/app:/cache".to_string()]]
    );
    // By whole components: /var/cache/builderx is not under it.
    let err = h
        .agent
        .deploy(wire_spec("app", &["/var/cache/builderx:/cache"]), None)
        .await
        .expect_err("builderx");
    assert!(err.to_string().contains("/var/cache/builderx"), "{err}");
}

#[tokio::test]
async fn a_symbolic_link_below_the_files_root_is_never_mounted() {
    let h = Harness::new();
    let svc = h.dir.path().join("srv").join("app");
    std::fs::create_dir_all(&svc).expect("mkdir");
    std::os::unix::fs::symlink("/", svc.join("host")).expect("symlink");
    let err = h
        .agent
        .deploy(wire_spec("app", &["/srv/app/host:/host"]), None)
        .await
        .expect_err("link");
    assert_eq!(
        crate::server::status(&err).code(),
        tonic::Code::InvalidArgument
    );
    assert!(created_volumes(&h).is_empty());
}
