//! The podman this harness runs itself: on the fleet's own storage, for
//! set-up (the operator's image store, copying images in) and clean-up
//! (removing the fleet's containers). Running services is the agents' job.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::prepare::Fleet;
use crate::{failed, io, DevError};

/// `podman` with the fleet's `CONTAINERS_CONF` (if any).
fn podman(containers_conf: Option<&Path>) -> Command {
    let mut c = Command::new("podman");
    if let Some(conf) = containers_conf {
        c.env("CONTAINERS_CONF", conf);
    }
    c.stdin(Stdio::null());
    c
}

/// podman runs, or an error saying how to install it.
pub fn check_podman() -> Result<(), DevError> {
    match Command::new("podman").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => failed(
            "podman is not installed (or does not run): install it with \
             `sudo apt-get install podman runc`, or run scripts/dev.sh, which does",
        ),
    }
}

/// The short run root of a node: podman refuses run roots longer than 50
/// characters, so it lives under /tmp, named after the state directory.
fn runroot(state: &Path, node: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    state.hash(&mut h);
    PathBuf::from(format!("/tmp/mcp-dev-{:08x}/{node}", h.finish() as u32))
}

/// podman's global arguments for one node's own storage.
pub(crate) fn podman_args(state: &Path, node: &str, image_store: Option<&str>) -> Vec<String> {
    let dir = state.join("nodes").join(node);
    let rr = runroot(state, node);
    let mut args = vec![
        "--root".into(),
        dir.join("storage").to_string_lossy().into_owned(),
        "--runroot".into(),
        rr.to_string_lossy().into_owned(),
        "--tmpdir".into(),
        rr.join("tmp").to_string_lossy().into_owned(),
    ];
    if let Some(store) = image_store {
        args.push("--storage-driver".into());
        args.push("overlay".into());
        args.push("--storage-opt".into());
        args.push(format!("overlay.imagestore={store}"));
    }
    args
}

/// The operator's image store when podman uses the overlay driver (which
/// can serve it read-only to other storage roots).
pub(crate) fn operator_image_store(containers_conf: Option<&Path>) -> Option<String> {
    let out = podman(containers_conf)
        .args([
            "info",
            "--format",
            "{{.Store.GraphDriverName}}|{{.Store.GraphRoot}}",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (driver, root) = text.trim().split_once('|')?;
    (driver == "overlay" && !root.is_empty()).then(|| root.to_string())
}

/// When the image store cannot be shared: images the services use at start,
/// copied from the operator's podman storage into each agent's own storage
/// (no registry is needed for local images; images added later are not seen).
pub(crate) fn copy_images(f: &Fleet) -> Result<(), DevError> {
    let conf = f.containers_conf.as_deref();
    let loaded = mcp_spec::load_dir(&f.services, &mcp_spec::LoadOptions::default())
        .map_err(|e| DevError::Failed(format!("reading {}: {e}", f.services.display())))?;
    let images: BTreeSet<String> = loaded
        .services
        .values()
        .flat_map(|s| s.components.iter().map(|c| c.image.clone()))
        .collect();
    let mut archive: Option<(String, PathBuf)> = None;
    for image in &images {
        let local = podman(conf)
            .args(["image", "exists", image])
            .status()
            .is_ok_and(|s| s.success());
        if !local {
            eprintln!(
                "note: image {image} is not in your podman storage; agents will try to pull it"
            );
            continue;
        }
        for n in &f.nodes {
            let present = podman(conf)
                .args(&n.podman_args)
                .args(["image", "exists", image])
                .status()
                .is_ok_and(|s| s.success());
            if present {
                continue;
            }
            let tar = match &archive {
                Some((img, path)) if img == image => path.clone(),
                _ => {
                    let path = f.state.join("image.tar");
                    let _ = std::fs::remove_file(&path);
                    run_quiet(
                        podman(conf)
                            .args(["save", "-q", "-o"])
                            .arg(&path)
                            .arg(image),
                        &format!("saving {image}"),
                    )?;
                    archive = Some((image.clone(), path.clone()));
                    path
                }
            };
            run_quiet(
                podman(conf)
                    .args(&n.podman_args)
                    .args(["load", "-q", "-i"])
                    .arg(&tar),
                &format!("loading {image} into node {}", n.name),
            )?;
        }
    }
    if let Some((_, path)) = archive {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

fn run_quiet(cmd: &mut Command, what: &str) -> Result<(), DevError> {
    let out = cmd.output().map_err(io(what))?;
    if !out.status.success() {
        return failed(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Removes every container of the fleet (each node's own podman storage:
/// nothing of the operator's), unmounts what podman leaves mounted in the
/// state directory and removes the nodes' run roots. Best effort; returns
/// how many containers each node had, and the problems met.
pub fn remove_containers(f: &Fleet) -> (Vec<(String, usize)>, Vec<String>) {
    let conf = f.containers_conf.as_deref();
    let mut removed = Vec::new();
    let mut problems = Vec::new();
    for n in &f.nodes {
        match podman(conf)
            .args(&n.podman_args)
            .args(["rm", "--all", "--force", "--time", "0"])
            .stderr(Stdio::piped())
            .output()
        {
            Ok(o) if o.status.success() => {
                let count = String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .count();
                removed.push((n.name.clone(), count));
            }
            Ok(o) => problems.push(format!(
                "podman rm on {}: {}",
                n.name,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => problems.push(format!("podman rm on {}: {e}", n.name)),
        }
    }
    // podman (as root) may leave the overlay driver's home mounted on
    // itself, which would keep the state directory from being removed.
    for n in &f.nodes {
        let overlay = f.state.join("nodes").join(&n.name).join("storage/overlay");
        let _ = Command::new("umount")
            .arg(&overlay)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    // A container's exit clean-up can still write to its run root just
    // after `rm`, hence a second try.
    for attempt in 0..2 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        for n in &f.nodes {
            if let Some(parent) = runroot(&f.state, &n.name).parent() {
                let _ = std::fs::remove_dir_all(parent);
            }
        }
    }
    (removed, problems)
}
