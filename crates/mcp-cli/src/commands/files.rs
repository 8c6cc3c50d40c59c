//! `mcp push`, `mcp pull` and `mcp adopt`: through the master, which
//! forwards the call to the node that runs the service, or with `--direct
//! --node N` to one agent (when the master is down).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use mcp_proto::{pb, MAX_FILE_BYTES};
use serde_json::json;

use super::{agent_client, block_on, finish, master_client, print_json, Ctx};
use crate::cli::Direct;
use crate::files;
use crate::remote::{self, Target};
use crate::report;

/// `64 MiB`.
fn limit_text() -> String {
    format!("{} MiB", MAX_FILE_BYTES / (1024 * 1024))
}

/// Who is told: the master (`None`) or one agent.
fn peer(ctx: &Ctx<'_>, direct: &Direct) -> Result<(Target, Option<String>)> {
    match remote::direct_node(direct)? {
        Some(n) => Ok((ctx.agent(n)?, Some(n.to_string()))),
        None => Ok((ctx.master()?, None)),
    }
}

/// `mcp adopt <svc> [--node N] [--direct --node N]`: records the existing
/// containers `<svc>-*`. Through the master, `--node` names the node whose
/// containers are adopted (default: the node the service is placed on).
pub fn adopt(ctx: &Ctx<'_>, service: &str, direct: &Direct) -> Result<ExitCode> {
    files::check_service_name(service)?;
    let (title, results) = if direct.direct {
        let (t, _) = peer(ctx, direct)?;
        let resp = block_on(async {
            agent_client(&t)
                .await?
                .adopt(pb::AdoptRequest {
                    service: service.to_string(),
                })
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| t.rpc_error("Adopt", &s))
        })?;
        (format!("adopt {service} on {}", t.what), resp.results)
    } else {
        let t = ctx.master()?;
        let node = direct.node.clone().unwrap_or_default();
        let title = if node.is_empty() {
            format!("adopt {service}")
        } else {
            format!("adopt {service} on {node}")
        };
        let resp = block_on(async {
            master_client(&t)
                .await?
                .adopt_service(pb::MasterAdoptRequest {
                    service: service.to_string(),
                    node,
                })
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| t.rpc_error("AdoptService", &s))
        })?;
        (title, resp.results)
    };
    finish(ctx, &title, &report::steps(&results), "", None)
}

/// `mcp push <file> <svc> <path> [--direct --node N]`: the file's bytes and
/// permission bits to `/srv/<svc>/<path>` on the service's node. A file
/// over the 64 MiB limit is refused before anything is sent.
pub fn push(
    ctx: &Ctx<'_>,
    file: &Path,
    service: &str,
    path: &str,
    direct: &Direct,
) -> Result<ExitCode> {
    use std::os::unix::fs::PermissionsExt as _;
    files::check_service_name(service)?;
    let (t, node) = peer(ctx, direct)?;
    let meta = std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?;
    if meta.len() > MAX_FILE_BYTES as u64 {
        bail!(
            "{} is {} bytes: larger than the {} file limit of push and pull ({MAX_FILE_BYTES} bytes); \
             nothing was sent",
            file.display(),
            meta.len(),
            limit_text()
        );
    }
    let mode = meta.permissions().mode() & 0o7777;
    let content = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let size = content.len();
    let req = pb::PushFileRequest {
        service: service.to_string(),
        path: path.to_string(),
        content,
        mode,
    };
    let resp = block_on(async {
        match node {
            Some(_) => agent_client(&t)
                .await?
                .push_file(req)
                .await
                .map_err(|s| t.rpc_error("PushFile", &s)),
            None => master_client(&t)
                .await?
                .push_service_file(req)
                .await
                .map_err(|s| t.rpc_error("PushServiceFile", &s)),
        }
        .map(tonic::Response::into_inner)
    })?;
    if !resp.success {
        let why = if resp.error.is_empty() {
            "refused"
        } else {
            &resp.error
        };
        bail!(
            "{}: push {} to /srv/{service}/{path}: {why}",
            t.name(),
            file.display()
        );
    }
    let place = node.as_deref().unwrap_or("the service's node");
    if ctx.json() {
        print_json(&json!({
            "node": node, "service": service, "path": path, "bytes": size,
            "mode": format!("{mode:o}"),
        }))?;
    } else {
        println!(
            "pushed {} ({size} bytes, mode {mode:o}) to /srv/{service}/{path} on {place}",
            file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `mcp pull <svc> <path> <dest> [--direct --node N]`: written atomically
/// with the returned mode; a directory `dest` receives the file under its
/// name.
pub fn pull(
    ctx: &Ctx<'_>,
    service: &str,
    path: &str,
    dest: &Path,
    direct: &Direct,
) -> Result<ExitCode> {
    files::check_service_name(service)?;
    let (t, node) = peer(ctx, direct)?;
    let dest = if dest.is_dir() {
        let name = Path::new(path)
            .file_name()
            .with_context(|| format!("{path} has no file name to put in {}", dest.display()))?;
        dest.join(name)
    } else {
        dest.to_path_buf()
    };
    let req = pb::PullFileRequest {
        service: service.to_string(),
        path: path.to_string(),
    };
    let resp = block_on(async {
        match node {
            Some(_) => agent_client(&t)
                .await?
                .pull_file(req)
                .await
                .map_err(|s| t.rpc_error("PullFile", &s)),
            None => master_client(&t)
                .await?
                .pull_service_file(req)
                .await
                .map_err(|s| t.rpc_error("PullServiceFile", &s)),
        }
        .map(tonic::Response::into_inner)
    })?;
    if !resp.error.is_empty() {
        bail!("{}: pull /srv/{service}/{path}: {}", t.name(), resp.error);
    }
    files::write_atomic_mode(&dest, &resp.content, resp.mode)?;
    let size = resp.content.len();
    let place = node.as_deref().unwrap_or("the service's node");
    if ctx.json() {
        print_json(
            &json!({"node": node, "service": service, "path": path, "dest": dest, "bytes": size}),
        )?;
    } else {
        println!(
            "pulled /srv/{service}/{path} from {place} to {} ({size} bytes)",
            dest.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
