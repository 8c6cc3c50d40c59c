//! `mcp-master`: the MCP master daemon.
//!
//! ```text
//! mcp-master --config FILE                 serve (the control loop)
//! mcp-master check-config --config FILE    validate the config and the paths it names
//! mcp-master snapshot --config FILE        back up the master database (and mirror it)
//! ```
//!
//! Exit status: 0 success, 1 error (a usage error is 2, as clap reports it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mcp_master::config::{Config, ConfigError};

/// The default config path.
const DEFAULT_CONFIG: &str = "/etc/mcp/master.toml";

#[derive(Debug, Parser)]
#[command(
    name = "mcp-master",
    version,
    about = "The MCP master: reconciles the fleet with the service definitions"
)]
struct Cli {
    /// Master config file.
    #[arg(long, short, global = true, env = "MCP_MASTER_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the master (the default).
    Serve,
    /// Check the config file and the files and directories it names; exit 0
    /// when it is usable, 1 otherwise.
    CheckConfig,
    /// Back up the master's database while it runs: a checked copy
    /// (`VACUUM INTO`) as `<snapshots dir>/_master/mcp-master-<time>.db`,
    /// keeping the newest `[snapshots] retain`, copied (verified) to
    /// `[snapshots] mirror` when set.
    Snapshot,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config),
        Command::CheckConfig => check_config(&cli.config),
        Command::Snapshot => snapshot(&cli.config),
    }
}

fn snapshot(path: &Path) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let s = cfg
        .snapshots
        .clone()
        .unwrap_or_else(|| mcp_master::config::SnapshotsConfig::defaults_for(&cfg.database.path));
    match mcp_master::snapshots::snapshot_database(
        &cfg.database.path,
        &s.dir,
        s.mirror.as_deref(),
        s.retain,
        std::time::SystemTime::now(),
    ) {
        Ok(out) => {
            println!(
                "snapshot {} ({} bytes, sha256 {})",
                out.path.display(),
                out.size,
                out.sha256
            );
            if let Some(m) = &out.mirrored {
                println!("mirrored to {} (verified)", m.display());
            }
            for r in &out.removed {
                println!("removed {}", r.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mcp-master: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: &Path) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MCP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcp-master: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(mcp_master::daemon::serve(cfg, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-master: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn check_config(path: &Path) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let problems = cfg.check_paths();
    if !problems.is_empty() {
        eprintln!(
            "mcp-master: error: config {} names paths that cannot be used:",
            path.display()
        );
        for p in &problems {
            eprintln!("  - {p}");
        }
        return ExitCode::FAILURE;
    }
    println!("config {} is valid", path.display());
    match &cfg.services {
        Some(s) => println!(
            "  mode: gitops, services dir {} (debounce {}, poll {})",
            s.dir.display(),
            humantime::format_duration(s.debounce),
            humantime::format_duration(s.poll)
        ),
        None => println!("  mode: push (specs sent by `mcp sync`)"),
    }
    println!("  listen: {}", cfg.server.grpc_addr);
    println!("  database: {}", cfg.database.path.display());
    println!(
        "  dns: {}",
        match &cfg.dns {
            None => "not configured (DNS steps are skipped)",
            Some(mcp_master::config::DnsConfig::Rfc2136(_)) => "rfc2136",
            Some(mcp_master::config::DnsConfig::Mcns(_)) => "mcns",
        }
    );
    match &cfg.snapshots {
        Some(s) => println!(
            "  snapshots: {} every {}, keep {}, mirror {}",
            s.dir.display(),
            humantime::format_duration(s.interval),
            s.retain,
            s.mirror
                .as_ref()
                .map_or("none".to_string(), |m| m.display().to_string())
        ),
        None => println!("  snapshots: not configured"),
    }
    println!(
        "  registration: {} allowed agents, at most {} nodes; {} bootstrap nodes",
        cfg.registration.allowed_agents.len(),
        cfg.registration.max_nodes,
        cfg.nodes.len()
    );
    ExitCode::SUCCESS
}

fn fail(e: &ConfigError) -> ExitCode {
    eprintln!("mcp-master: error: {e}");
    ExitCode::FAILURE
}
