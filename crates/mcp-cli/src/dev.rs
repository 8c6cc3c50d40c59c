//! `mcp dev`: a whole fleet on this machine, for trying MCP.
//!
//! Starts one `mcp-master` and N `mcp-agent` processes over loopback, each
//! with TLS 1.3 certificates from a CA generated for the fleet, tokens signed
//! by a key generated for the fleet, its own SQLite database and its own
//! podman storage (so each agent's containers are kept apart), then prints how
//! to point the CLI at it and runs until Ctrl-C.
//!
//! `--prepare-only` does the same preparation (PKI, tokens, configs, images)
//! and exits after printing the paths (as JSON with `--output json`), for a
//! harness that starts, kills and restarts the daemons itself
//! (`crates/mcp-cli/tests/fleet.rs`).
//!
//! Layout of the state directory (kept between runs: databases, keys and
//! containers survive; configs are rewritten each run):
//!
//! ```text
//! pki/      ca.pem, master.{crt,key}, <node>.{crt,key}
//! keys/     issuer.pem (signs tokens), issuer.pem.pub
//! tokens/   master.token, agent-<node>.token, operator.token
//! master/   master.toml, master.db
//! nodes/<node>/  agent.toml, agent.db, srv/ (service data), storage/ (podman;
//!                 images are read from your own podman storage, read-only)
//! logs/     master.log, <node>.log
//! services/ the demo services repository (when --services is not given)
//! mcp.toml  CLI config: `export MCP_CONFIG=<state>/mcp.toml`
//! ```
//!
//! Node names: `m1` (role master), then `w1`, `w2`, ... (workers); `--edge`
//! adds `e1` (role edge).

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mcp_security::clock::SystemClock;
use mcp_security::identity::AccountType;
use mcp_security::jwt::{self, SigningKey, TokenRequest};
use mcp_security::pki::{Ca, Validity};

/// The demo services (`examples/dev/`), written into a new services
/// repository.
const DEMO_SERVICES: &[(&str, &str)] = &[
    (
        "hello.toml",
        include_str!("../../../examples/dev/hello.toml"),
    ),
    ("shop.toml", include_str!("../../../examples/dev/shop.toml")),
    (
        "notes.toml",
        include_str!("../../../examples/dev/notes.toml"),
    ),
];

pub struct DevOptions {
    pub services: Option<PathBuf>,
    pub agents: u32,
    pub edge: bool,
    pub state_dir: Option<PathBuf>,
    /// Write the PKI, tokens and configs, print their paths, and exit
    /// (for harnesses that run the daemons themselves).
    pub prepare_only: bool,
    /// `--output json` (with `prepare_only`: the paths as JSON).
    pub json: bool,
}

struct Node {
    name: String,
    role: &'static str,
    port: u16,
    range: (u16, u16),
}

struct Fleet {
    state: PathBuf,
    master_port: u16,
    nodes: Vec<Node>,
    services: PathBuf,
    gitops: bool,
    /// The operator's overlay image store, shared read-only with every
    /// agent (`--storage-opt overlay.imagestore=`), so images built or
    /// pulled later are seen too. `None`: images are copied at start.
    image_store: Option<String>,
}

pub fn run(opts: &DevOptions) -> Result<ExitCode> {
    if opts.agents == 0 || opts.agents > 16 {
        bail!("--agents must be between 1 and 16 (the master accepts at most 16 nodes)");
    }
    check_podman()?;
    if opts.prepare_only {
        let fleet = prepare_fleet(opts)?;
        print_paths(&fleet, opts.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let bin_dir = binaries_dir()?;
    let fleet = prepare_fleet(opts)?;
    let mut children = start(&fleet, &bin_dir)?;
    let ready = wait_ready(&fleet, &mut children);
    if let Err(e) = ready {
        stop(&mut children);
        return Err(e);
    }
    print_banner(&fleet);
    wait_for_interrupt(&mut children)
}

/// The shared prepare step: chooses ports and node names, writes the PKI,
/// tokens and configs, and makes the images visible to every agent.
fn prepare_fleet(opts: &DevOptions) -> Result<Fleet> {
    let state = match &opts.state_dir {
        Some(d) => d.clone(),
        None => default_state_dir()?,
    };
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    let state = state
        .canonicalize()
        .with_context(|| format!("resolving {}", state.display()))?;

    let services = match &opts.services {
        Some(d) => d
            .canonicalize()
            .with_context(|| format!("services directory {}", d.display()))?,
        None => demo_services(&state)?,
    };
    let gitops = is_git_work_tree(&services);

    let mut nodes = Vec::new();
    for i in 0..opts.agents {
        let (name, role) = if i == 0 {
            ("m1".to_string(), "master")
        } else {
            (format!("w{i}"), "worker")
        };
        nodes.push((name, role));
    }
    if opts.edge {
        nodes.push(("e1".to_string(), "edge"));
    }
    let fleet = Fleet {
        master_port: free_port()?,
        nodes: nodes
            .into_iter()
            .enumerate()
            .map(|(i, (name, role))| {
                let base = 20000 + u16::try_from(i).unwrap_or(0) * 1000;
                Ok(Node {
                    name,
                    role,
                    port: free_port()?,
                    range: (base, base + 999),
                })
            })
            .collect::<Result<_>>()?,
        state,
        services,
        gitops,
        image_store: operator_image_store(),
    };

    prepare(&fleet)?;
    if fleet.image_store.is_none() {
        copy_images(&fleet)?;
    }
    Ok(fleet)
}

/// `--prepare-only`: where everything was written, and how to run it.
fn print_paths(f: &Fleet, json: bool) -> Result<()> {
    let s = &f.state;
    let master = serde_json::json!({
        "config": s.join("master/master.toml"),
        "address": format!("127.0.0.1:{}", f.master_port),
        "log": s.join("logs/master.log"),
        "command": ["mcp-master", "--config", s.join("master/master.toml"), "serve"],
    });
    let nodes: Vec<_> = f
        .nodes
        .iter()
        .map(|n| {
            let config = s.join("nodes").join(&n.name).join("agent.toml");
            serde_json::json!({
                "name": n.name,
                "role": n.role,
                "config": config,
                "address": format!("127.0.0.1:{}", n.port),
                "log": s.join(format!("logs/{}.log", n.name)),
                "podman_args": podman_args(f, n),
                "command": ["mcp-agent", "--config", config, "serve"],
            })
        })
        .collect();
    let v = serde_json::json!({
        "state_dir": s,
        "cli_config": s.join("mcp.toml"),
        "services": f.services,
        "gitops": f.gitops,
        "master": master,
        "nodes": nodes,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "MCP dev fleet prepared in {} (nothing started).",
        s.display()
    );
    println!(
        "  master   mcp-master --config {} serve",
        s.join("master/master.toml").display()
    );
    for n in &f.nodes {
        println!(
            "  {:<8} mcp-agent --config {} serve",
            n.name,
            s.join("nodes").join(&n.name).join("agent.toml").display()
        );
    }
    println!(
        "  CLI      export MCP_CONFIG={}",
        s.join("mcp.toml").display()
    );
    Ok(())
}

fn check_podman() -> Result<()> {
    match Command::new("podman").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => bail!(
            "podman is not installed (or does not run): install it with \
             `sudo apt-get install podman runc`, or run scripts/dev.sh, which does"
        ),
    }
}

/// `mcp-master` and `mcp-agent` are expected next to `mcp`.
fn binaries_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the mcp binary")?;
    let dir = exe
        .parent()
        .context("the mcp binary has no parent directory")?
        .to_path_buf();
    for b in ["mcp-master", "mcp-agent"] {
        if !dir.join(b).is_file() {
            bail!(
                "{b} not found next to {} (build every binary: `cargo build --release --bins`)",
                exe.display()
            );
        }
    }
    Ok(dir)
}

fn default_state_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(d).join("mcp/dev"));
    }
    let home = std::env::var_os("HOME").context("no HOME: pass --state-dir")?;
    Ok(PathBuf::from(home).join(".local/state/mcp/dev"))
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

fn is_git_work_tree(dir: &Path) -> bool {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--is-inside-work-tree"])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"true"))
}

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=mcp dev",
            "-c",
            "user.email=mcp-dev@localhost",
        ])
        .args(args)
        .output()
        .context("running git (install it: `sudo apt-get install git`)")?;
    if !out.status.success() {
        bail!(
            "git {} in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A services repository with the demo services, created once.
fn demo_services(state: &Path) -> Result<PathBuf> {
    let dir = state.join("services");
    if dir.join(".git").exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir)?;
    for (file, text) in DEMO_SERVICES {
        std::fs::write(dir.join(file), text)?;
    }
    git(&dir, &["init", "-q", "-b", "main"])?;
    git(&dir, &["add", "."])?;
    git(
        &dir,
        &["commit", "-q", "-m", "demo services (examples/dev)"],
    )?;
    Ok(dir)
}

/// Writes (once) the PKI, signing key and tokens; (every run) the configs.
fn prepare(f: &Fleet) -> Result<()> {
    let s = &f.state;
    for d in ["pki", "keys", "tokens", "master", "logs"] {
        std::fs::create_dir_all(s.join(d))?;
    }
    if !s.join("pki/ca.pem").exists() {
        let ca = Ca::generate("mcp dev")?;
        let sans = ["localhost", "127.0.0.1"];
        ca.write_leaf(&s.join("pki"), "master", &sans, Validity::Days(365))?;
        for n in &f.nodes {
            ca.write_leaf(&s.join("pki"), &n.name, &sans, Validity::Days(365))?;
        }
        // Written last: its presence means the whole PKI is there.
        ca.write_cert(&s.join("pki/ca.pem"))?;
    }
    let key_path = s.join("keys/issuer.pem");
    if !key_path.exists() {
        let kp = jwt::generate_keypair()?;
        jwt::write_keypair(&kp, &key_path, &s.join("keys/issuer.pem.pub"))?;
    }
    let key = SigningKey::from_file(&key_path)?;
    let mut tokens = vec![
        ("master", "mcp-master".to_string(), AccountType::System),
        ("operator", "operator".to_string(), AccountType::Human),
    ];
    for n in &f.nodes {
        tokens.push(("", format!("agent-{}", n.name), AccountType::System));
    }
    for (file, identity, account_type) in tokens {
        let file = if file.is_empty() {
            identity.as_str()
        } else {
            file
        };
        let req = TokenRequest {
            identity: identity.clone(),
            account_type,
            roles: vec![],
            ttl: Duration::from_secs(30 * 24 * 3600),
            issuer: jwt::DEFAULT_ISSUER.to_string(),
            audience: jwt::DEFAULT_AUDIENCE.to_string(),
        };
        let token = jwt::issue_token(&key, &req, &SystemClock)?;
        write_private(&s.join(format!("tokens/{file}.token")), token.expose())?;
    }
    std::fs::write(s.join("master/master.toml"), master_config(f))?;
    for n in &f.nodes {
        let dir = s.join("nodes").join(&n.name);
        std::fs::create_dir_all(dir.join("srv"))?;
        std::fs::create_dir_all(dir.join("storage"))?;
        std::fs::write(dir.join("agent.toml"), agent_config(f, n))?;
    }
    std::fs::write(s.join("mcp.toml"), cli_config(f))?;
    Ok(())
}

fn write_private(path: &Path, data: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{data}").with_context(|| format!("writing {}", path.display()))
}

/// TOML string literal (escaped).
fn q(s: impl AsRef<str>) -> String {
    toml_edit::Value::from(s.as_ref())
        .to_string()
        .trim()
        .to_string()
}

fn qp(p: &Path) -> String {
    q(p.to_string_lossy())
}

fn master_config(f: &Fleet) -> String {
    let s = &f.state;
    let agents: Vec<String> = f
        .nodes
        .iter()
        .map(|n| q(format!("agent-{}", n.name)))
        .collect();
    let services = if f.gitops {
        format!(
            "[services]\ndir = {}\ndebounce = \"200ms\"\npoll = \"10s\"\n\n",
            qp(&f.services)
        )
    } else {
        String::new()
    };
    let mut out = format!(
        r#"# Generated by `mcp dev`; rewritten on every run.
[server]
grpc_addr = "127.0.0.1:{port}"
tls_cert = {cert}
tls_key = {key}
ca_cert = {ca}

[database]
path = {db}

[auth]
issuer_public_key = {pubkey}
issuer = "mcp"
audience = "mcp"
token_file = {token}

{services}[edge]
internal_zone = "mcp.test"
allowed_domains = ["example.test"]

[registration]
allowed_agents = [{agents}]
heartbeat_interval = "5s"
heartbeat_timeout = "15s"
register_min_interval = "1s"
heartbeat_min_interval = "1s"

[reconcile]
interval = "10s"
"#,
        port = f.master_port,
        cert = qp(&s.join("pki/master.crt")),
        key = qp(&s.join("pki/master.key")),
        ca = qp(&s.join("pki/ca.pem")),
        db = qp(&s.join("master/master.db")),
        pubkey = qp(&s.join("keys/issuer.pem.pub")),
        token = qp(&s.join("tokens/master.token")),
        agents = agents.join(", "),
    );
    for n in &f.nodes {
        out.push_str(&format!(
            "\n[[nodes]]\nname = {}\naddress = \"https://127.0.0.1:{}\"\nrole = \"{}\"\n",
            q(&n.name),
            n.port,
            n.role
        ));
    }
    out
}

fn runroot(f: &Fleet, node: &str) -> PathBuf {
    // podman refuses run roots longer than 50 characters.
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    f.state.hash(&mut h);
    PathBuf::from(format!("/tmp/mcp-dev-{:08x}/{node}", h.finish() as u32))
}

fn podman_args(f: &Fleet, n: &Node) -> Vec<String> {
    let dir = f.state.join("nodes").join(&n.name);
    let rr = runroot(f, &n.name);
    let mut args = vec![
        "--root".into(),
        dir.join("storage").to_string_lossy().into_owned(),
        "--runroot".into(),
        rr.to_string_lossy().into_owned(),
        "--tmpdir".into(),
        rr.join("tmp").to_string_lossy().into_owned(),
    ];
    if let Some(store) = &f.image_store {
        args.push("--storage-driver".into());
        args.push("overlay".into());
        args.push("--storage-opt".into());
        args.push(format!("overlay.imagestore={store}"));
    }
    args
}

/// The operator's image store when podman uses the overlay driver (which
/// can serve it read-only to other storage roots).
fn operator_image_store() -> Option<String> {
    let out = Command::new("podman")
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

fn agent_config(f: &Fleet, n: &Node) -> String {
    let s = &f.state;
    let dir = s.join("nodes").join(&n.name);
    let global: Vec<String> = podman_args(f, n).iter().map(q).collect();
    let env = std::env::var("CONTAINERS_CONF")
        .map(|c| format!("env = {{ CONTAINERS_CONF = {} }}\n", q(c)))
        .unwrap_or_default();
    format!(
        r#"# Generated by `mcp dev`; rewritten on every run.
[server]
grpc_addr = "127.0.0.1:{port}"
tls_cert = {cert}
tls_key = {key}
ca_cert = {ca}

[node]
name = {name}
role = "{role}"
address = "127.0.0.1:{port}"

[master]
address = "127.0.0.1:{master_port}"
heartbeat_interval = "5s"

[auth]
issuer_public_key = {pubkey}
issuer = "mcp"
audience = "mcp"
token_file = {token}

[database]
path = {db}

[podman]
global_args = [{global}]
{env}
[ports]
range = [{lo}, {hi}]
bind_address = "127.0.0.1"

[monitor]
interval = "2s"

[files]
root = {srv}
"#,
        port = n.port,
        cert = qp(&s.join(format!("pki/{}.crt", n.name))),
        key = qp(&s.join(format!("pki/{}.key", n.name))),
        ca = qp(&s.join("pki/ca.pem")),
        name = q(&n.name),
        role = n.role,
        master_port = f.master_port,
        pubkey = qp(&s.join("keys/issuer.pem.pub")),
        token = qp(&s.join(format!("tokens/agent-{}.token", n.name))),
        db = qp(&dir.join("agent.db")),
        global = global.join(", "),
        lo = n.range.0,
        hi = n.range.1,
        srv = qp(&dir.join("srv")),
    )
}

fn cli_config(f: &Fleet) -> String {
    let s = &f.state;
    let mut out = format!(
        "# Generated by `mcp dev`: export MCP_CONFIG={}\n\n[master]\naddress = \"https://127.0.0.1:{}\"\n\n[auth]\ntoken_path = {}\n\n[services]\ndir = {}\n\n[tls]\nca_cert = {}\n",
        s.join("mcp.toml").display(),
        f.master_port,
        qp(&s.join("tokens/operator.token")),
        qp(&f.services),
        qp(&s.join("pki/ca.pem")),
    );
    for n in &f.nodes {
        out.push_str(&format!(
            "\n[[nodes]]\nname = {}\naddress = \"https://127.0.0.1:{}\"\n",
            q(&n.name),
            n.port
        ));
    }
    out
}

/// When the image store cannot be shared: images the services use at start,
/// copied from the operator's podman storage into each agent's own storage
/// (no registry is needed for local images; images added later are not seen).
fn copy_images(f: &Fleet) -> Result<()> {
    let loaded = mcp_spec::load_dir(&f.services, &mcp_spec::LoadOptions::default())
        .with_context(|| format!("reading {}", f.services.display()))?;
    let images: BTreeSet<String> = loaded
        .services
        .values()
        .flat_map(|s| s.components.iter().map(|c| c.image.clone()))
        .collect();
    let mut archive = None;
    for image in &images {
        let local = Command::new("podman")
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
            let args = podman_args(f, n);
            let present = Command::new("podman")
                .args(&args)
                .args(["image", "exists", image])
                .status()
                .is_ok_and(|s| s.success());
            if present {
                continue;
            }
            let tar = match &archive {
                Some((img, path)) if img == image => PathBuf::clone(path),
                _ => {
                    let path = f.state.join("image.tar");
                    let _ = std::fs::remove_file(&path);
                    run_quiet(
                        Command::new("podman")
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
                Command::new("podman")
                    .args(&args)
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

fn run_quiet(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| what.to_string())?;
    if !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

fn start(f: &Fleet, bin_dir: &Path) -> Result<Vec<Proc>> {
    let mut procs = Vec::new();
    let spawn = |name: &str, bin: &str, config: PathBuf| -> Result<Proc> {
        let log = f.state.join(format!("logs/{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = Command::new(bin_dir.join(bin))
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {bin}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    };
    // Agents first: they keep running their containers without a master,
    // and register (with backoff) once it is up.
    for n in &f.nodes {
        let config = f.state.join("nodes").join(&n.name).join("agent.toml");
        match spawn(&n.name, "mcp-agent", config) {
            Ok(p) => procs.push(p),
            Err(e) => {
                stop(&mut procs);
                return Err(e);
            }
        }
    }
    match spawn("master", "mcp-master", f.state.join("master/master.toml")) {
        Ok(p) => procs.push(p),
        Err(e) => {
            stop(&mut procs);
            return Err(e);
        }
    }
    Ok(procs)
}

/// Every process listening on its port, none exited.
fn wait_ready(f: &Fleet, procs: &mut [Proc]) -> Result<()> {
    let mut ports: Vec<(String, u16)> = f.nodes.iter().map(|n| (n.name.clone(), n.port)).collect();
    ports.push(("master".into(), f.master_port));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for p in procs.iter_mut() {
            if let Some(status) = p.child.try_wait()? {
                bail!(
                    "{} exited ({status}) while starting; its log is {}:\n{}",
                    p.name,
                    p.log.display(),
                    tail(&p.log, 15)
                );
            }
        }
        ports.retain(|(_, port)| std::net::TcpStream::connect(("127.0.0.1", *port)).is_err());
        if ports.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let names: Vec<&str> = ports.iter().map(|(n, _)| n.as_str()).collect();
            bail!(
                "{} did not start listening within 60s (logs in {})",
                names.join(", "),
                f.state.join("logs").display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn print_banner(f: &Fleet) {
    let s = &f.state;
    let nodes: Vec<String> = f
        .nodes
        .iter()
        .map(|n| format!("{} ({}, 127.0.0.1:{})", n.name, n.role, n.port))
        .collect();
    println!("MCP dev fleet is up.");
    println!("  master   127.0.0.1:{}", f.master_port);
    println!("  nodes    {}", nodes.join(", "));
    if f.gitops {
        println!(
            "  services {} (GitOps: the master follows its commits)",
            f.services.display()
        );
    } else {
        println!(
            "  services {} (not a git work tree: push mode, run `mcp sync`)",
            f.services.display()
        );
    }
    println!("  logs     {}", s.join("logs").display());
    println!();
    println!("Point the CLI at it:");
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .filter(|d| !on_path(d))
    {
        println!("  export PATH={}:$PATH", dir.display());
    }
    println!("  export MCP_CONFIG={}", s.join("mcp.toml").display());
    println!("  mcp status");
    println!("  mcp sync --dry-run");
    println!();
    println!("Ctrl-C stops the daemons; containers keep running, and `mcp dev` resumes the fleet.");
}

/// Whether `dir` is one of `$PATH`'s directories.
fn on_path(dir: &Path) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d == dir))
}

fn stop(procs: &mut [Proc]) {
    for p in procs.iter_mut() {
        let pid = rustix::process::Pid::from_raw(i32::try_from(p.child.id()).unwrap_or(0));
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for p in procs.iter_mut() {
        loop {
            match p.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// Runs until SIGINT/SIGTERM, or until a daemon dies (then exits 1).
fn wait_for_interrupt(procs: &mut [Proc]) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?;
    let died = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok::<_, std::io::Error>(None),
                _ = term.recv() => return Ok(None),
                _ = tick.tick() => {
                    for p in procs.iter_mut() {
                        if let Ok(Some(status)) = p.child.try_wait() {
                            return Ok(Some(format!(
                                "{} exited ({status}); its log is {}:\n{}",
                                p.name,
                                p.log.display(),
                                tail(&p.log, 15)
                            )));
                        }
                    }
                }
            }
        }
    })?;
    eprintln!("stopping the fleet...");
    stop(procs);
    match died {
        Some(msg) => {
            eprintln!("mcp: error: {msg}");
            Ok(ExitCode::FAILURE)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo fleet starts from valid files only.
    #[test]
    fn demo_services_are_valid() {
        for (file, text) in DEMO_SERVICES {
            let stem = file.trim_end_matches(".toml");
            if let Err(d) = mcp_spec::parse_service(file, stem, text, &Default::default()) {
                panic!("{file}: {d:?}");
            }
        }
    }
}
