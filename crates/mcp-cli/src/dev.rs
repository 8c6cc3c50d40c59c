//! `mcp dev`: a whole fleet on this machine, for trying MCP. The harness
//! (PKI, tokens, configs, daemons, clean-up) is the `mcp-dev` crate; this is
//! the command: options, the banner, running until Ctrl-C, `--down`.
//!
//! `mcp dev` never reads the operator's CLI config (`MCP_CONFIG` may point at
//! another fleet): everything it needs comes from its options.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use mcp_dev::{DevProcess, Fleet};

pub struct DevOptions {
    pub services: Option<PathBuf>,
    pub agents: u32,
    pub edge: bool,
    pub state_dir: Option<PathBuf>,
    /// Write the PKI, tokens and configs, print their paths, and exit
    /// (for harnesses that run the daemons themselves).
    pub prepare_only: bool,
    /// Stop the fleet's daemons and remove its containers.
    pub down: bool,
    /// `--down`, then delete the state directory.
    pub purge: bool,
    /// `--output json`.
    pub json: bool,
    /// Certificates from a Pebble ACME server instead of the dev CA.
    pub acme: bool,
}

pub fn run(opts: &DevOptions) -> Result<ExitCode> {
    if opts.down || opts.purge {
        return down(opts);
    }
    if opts.acme {
        eprintln!(
            "mcp: error: --acme (certificates from a Pebble ACME server) is not available yet; \
             without it the routes' certificates come from the dev CA"
        );
        return Ok(ExitCode::FAILURE);
    }
    mcp_dev::check_podman()?;
    mcp_dev::check_servers()?;
    let state = match &opts.state_dir {
        Some(d) => d.clone(),
        None => mcp_dev::default_state_dir()?,
    };
    let prep = mcp_dev::DevOptions {
        services: opts.services.clone(),
        agents: opts.agents,
        edge: opts.edge,
        state_dir: Some(state.clone()),
        containers_conf: std::env::var_os("CONTAINERS_CONF")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
    };
    // A running fleet's configs must not be rewritten under it.
    if opts.prepare_only {
        mcp_dev::ensure_running_none(&state)?;
        let fleet = mcp_dev::prepare(&prep)?;
        print_paths(&fleet, opts.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let bin_dir = binaries_dir()?;
    let _me = DevProcess::claim(&state)?;
    let fleet = mcp_dev::prepare(&prep)?;
    let mut daemons = fleet.daemons(&bin_dir);
    daemons.start_all()?;
    if let Err(e) = daemons.wait_listening(Duration::from_secs(60)) {
        daemons.stop_every();
        return Err(e.into());
    }
    let demo = demo_route(&fleet);
    print_banner(&fleet, &state, demo.as_ref());
    let died = wait_for_interrupt(&mut daemons, &fleet, &state, demo)?;
    eprintln!("stopping the fleet...");
    daemons.stop_every();
    match died {
        Some(msg) => {
            eprintln!("mcp: error: {msg}");
            Ok(ExitCode::FAILURE)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// `--down` / `--purge`.
fn down(opts: &DevOptions) -> Result<ExitCode> {
    let state = match &opts.state_dir {
        Some(d) => d.clone(),
        None => mcp_dev::default_state_dir()?,
    };
    let r = mcp_dev::down(&state, opts.purge)?;
    if opts.json {
        let v = serde_json::json!({
            "state_dir": state,
            "stopped": r.stopped,
            "containers_removed": r.containers.iter().map(|(n, c)| (n.clone(), *c)).collect::<std::collections::BTreeMap<_, _>>(),
            "problems": r.problems,
            "purged": r.purged,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if r.stopped.is_empty() {
            println!("no daemon of the fleet was running");
        } else {
            println!("stopped {}", r.stopped.join(", "));
        }
        let total: usize = r.containers.iter().map(|(_, c)| c).sum();
        println!("removed {total} container(s)");
        if r.purged {
            println!("deleted {}", state.display());
        }
        for p in &r.problems {
            eprintln!("mcp: warning: {p}");
        }
    }
    Ok(if r.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--prepare-only`: where everything was written, and how to run it.
fn print_paths(f: &Fleet, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&f.paths_json())?);
        return Ok(());
    }
    println!(
        "MCP dev fleet prepared in {} (nothing started).",
        f.state.display()
    );
    println!(
        "  master   mcp-master --config {} serve",
        f.master_config().display()
    );
    for n in &f.nodes {
        println!(
            "  {:<8} mcp-agent --config {} serve",
            n.name,
            f.agent_config(&n.name).display()
        );
    }
    println!("  CLI      export MCP_CONFIG={}", f.cli_config().display());
    Ok(())
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
            anyhow::bail!(
                "{b} not found next to {} (build every binary: `cargo build --release --bins`)",
                exe.display()
            );
        }
    }
    Ok(dir)
}

/// The route the banner's `curl` line reaches: `hello`'s first L7 route
/// when there is a `hello`, else the first active service's.
#[derive(Debug, Clone)]
struct DemoRoute {
    service: String,
    /// The route's hostname (`<service>.<zone>` unless it names its own).
    hostname: String,
    port: u16,
}

impl DemoRoute {
    /// The name the master writes in DNS: `<service>.<zone>`.
    fn dns_name(&self, f: &Fleet) -> String {
        format!("{}.{}", self.service, f.zone)
    }
}

fn demo_route(f: &Fleet) -> Option<DemoRoute> {
    let loaded = mcp_spec::load_dir(&f.services, &Default::default()).ok()?;
    let l7 = |s: &mcp_spec::ServiceSpec| {
        s.components
            .iter()
            .flat_map(|c| &c.routes)
            .find(|r| r.mode == mcp_spec::RouteMode::L7)
            .map(|r| DemoRoute {
                service: s.name.clone(),
                hostname: r
                    .hostname
                    .clone()
                    .unwrap_or_else(|| format!("{}.{}", s.name, f.zone)),
                port: r.port,
            })
    };
    let hello = loaded.services.get("hello").filter(|s| s.active);
    hello
        .into_iter()
        .chain(loaded.services.values().filter(|s| s.active))
        .find_map(l7)
}

/// The CA file as the state directory was given (relative stays relative,
/// so the line works from where `mcp dev` was started).
fn ca_shown(state: &Path) -> PathBuf {
    state.join("pki/ca.pem")
}

fn print_banner(f: &Fleet, state: &Path, demo: Option<&DemoRoute>) {
    let nodes: Vec<String> = f
        .nodes
        .iter()
        .map(|n| format!("{} ({}, {}:{})", n.name, n.role, n.address, n.port))
        .collect();
    let dns_port = f.dns_addr().map(|a| a.port()).unwrap_or_default();
    let probe = demo.map_or_else(|| format!("<service>.{}", f.zone), |d| d.dns_name(f));
    println!("MCP dev fleet is up.");
    println!("  master   {}", f.master_address());
    println!("  nodes    {}", nodes.join(", "));
    println!("  dns      {} (zone {})", f.dns, f.zone);
    println!("           kdig @127.0.0.1 -p {dns_port} {probe}");
    println!(
        "  ca       {} (the routes' certificates)",
        ca_shown(state).display()
    );
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
    println!("  logs     {}", f.state.join("logs").display());
    println!();
    println!("Point the CLI at it:");
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .filter(|d| !on_path(d))
    {
        println!("  export PATH={}:$PATH", dir.display());
    }
    println!("  export MCP_CONFIG={}", f.cli_config().display());
    println!("  mcp status");
    println!("  mcp sync --dry-run");
    println!();
    println!(
        "Ctrl-C stops the daemons; containers keep running, and `mcp dev` resumes the fleet. \
         `mcp dev --down` also removes the containers (`--purge`: and {}).",
        f.state.display()
    );
    if let Some(d) = demo {
        println!();
        println!(
            "Waiting for {} to be placed; its curl line follows once {} resolves and answers.",
            d.service,
            d.dns_name(f)
        );
    }
}

/// The curl line's arguments (after `curl`).
fn curl_args(state: &Path, d: &DemoRoute, ip: std::net::Ipv4Addr) -> Vec<String> {
    vec![
        "--cacert".into(),
        ca_shown(state).display().to_string(),
        "--resolve".into(),
        format!("{}:{}:{ip}", d.hostname, d.port),
        format!("https://{}:{}/", d.hostname, d.port),
    ]
}

/// Whether the curl line answers now (a success status, the certificate
/// verified): the name may resolve before the route works (a record kept
/// from the last run, the container still starting). Without curl: yes.
fn curl_answers(args: &[String]) -> bool {
    match std::process::Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "--max-time", "2"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(st) => st.success(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Once the demo service's route answers: the `curl` line that reaches it
/// through its node's proxy, as printed.
fn print_curl(f: &Fleet, d: &DemoRoute, ip: std::net::Ipv4Addr, args: &[String]) {
    let node = f
        .nodes
        .iter()
        .find(|n| n.address == ip.to_string())
        .map_or_else(|| "?".to_string(), |n| n.name.clone());
    println!();
    println!("{} is on {node} ({ip}):", d.service);
    println!("  curl {}", args.join(" "));
}

/// Whether `dir` is one of `$PATH`'s directories.
fn on_path(dir: &Path) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d == dir))
}

/// Runs until SIGINT/SIGTERM (`None`), or until a daemon dies (`Some(why)`);
/// prints the demo's curl line once its name resolves.
fn wait_for_interrupt(
    daemons: &mut mcp_dev::Daemons,
    f: &Fleet,
    state: &Path,
    mut demo: Option<DemoRoute>,
) -> Result<Option<String>> {
    let dns = f.dns_addr();
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
                    if let Some(why) = daemons.first_exited() {
                        return Ok(Some(why));
                    }
                    if let (Some(d), Some(dns)) = (&demo, dns) {
                        if let Some(ip) = mcp_dev::dns::lookup_a(dns, &d.dns_name(f)).first() {
                            let args = curl_args(state, d, *ip);
                            if curl_answers(&args) {
                                print_curl(f, d, *ip, &args);
                                demo = None;
                            }
                        }
                    }
                }
            }
        }
    })?;
    Ok(died)
}
