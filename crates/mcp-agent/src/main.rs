//! `mcp-agent`: the MCP node agent.
//!
//! ```text
//! mcp-agent --config FILE                 serve (the default command)
//! mcp-agent check-config --config FILE    validate the configuration (exit 0/1)
//! mcp-agent snapshot --config FILE        back up the agent database
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::sync::Arc;

use mcp_agent::server::{self, ServerSecurity};
use mcp_agent::{snapshot_database, Agent, Config, Registry, Timestamp};
use mcp_runtime::Podman;

#[derive(Debug, Parser)]
#[command(name = "mcp-agent", version, about = "MCP node agent")]
struct Cli {
    /// Agent configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "MCP_AGENT_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (the default): restore the registry's desired state,
    /// serve gRPC on `[server] grpc_addr` (TLS 1.3, bearer tokens) and run
    /// the monitor; stop gracefully on SIGTERM or Ctrl-C.
    Serve,
    /// Parse and validate the configuration; exit 0 when it is valid.
    CheckConfig,
    /// Back up the agent's database into the snapshot directory, keeping the
    /// newest `[snapshot] keep` copies.
    Snapshot,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let path = cli
        .config
        .context("no configuration file: pass --config FILE (or set MCP_AGENT_CONFIG)")?;
    let config = Config::load(&path)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&config),
        Command::CheckConfig => {
            let problems = config.check_files();
            if !problems.is_empty() {
                let lines: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
                anyhow::bail!(
                    "config {} is valid, but:\n{}",
                    path.display(),
                    lines.join("\n")
                );
            }
            println!(
                "{}: ok (node {}, role {}, grpc {})",
                path.display(),
                config.node.name,
                config.node.role,
                config.server.grpc_addr
            );
            Ok(())
        }
        Command::Snapshot => {
            let dir = config.snapshot_dir();
            let out = snapshot_database(
                &config.database.path,
                &dir,
                config.snapshot.keep,
                Timestamp::now(),
            )
            .with_context(|| format!("snapshot of {}", config.database.path.display()))?;
            println!("{} ({} bytes)", out.path.display(), out.size);
            for old in &out.removed {
                println!("removed {}", old.display());
            }
            Ok(())
        }
    }
}

fn serve(config: &Config) -> anyhow::Result<()> {
    init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(daemon(config))
}

fn init_tracing() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MCP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second initialisation (tests) is harmless: keep the first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// The podman runtime of `[podman]`.
fn podman(config: &Config) -> Podman {
    let mut p = Podman::new()
        .binary(&config.podman.binary)
        .global_args(&config.podman.global_args);
    for (k, v) in &config.podman.env {
        p = p.env(k, v);
    }
    p
}

async fn daemon(config: &Config) -> anyhow::Result<()> {
    let security = ServerSecurity::from_config(config)?;
    let registry = Registry::open(&config.database.path)?;
    let net = mcp_agent::netsetup::networking(config)?;
    // Monitor rounds name the services that changed; the master is told.
    let (changes_tx, changes_rx) = tokio::sync::mpsc::channel(1024);
    let agent = Arc::new(
        Agent::from_config(config, podman(config), registry)?
            .with_networking(net)
            .with_change_sink(changes_tx),
    );
    agent
        .prune_events()
        .await
        .context("pruning the event history")?;
    let listener = server::bind(config).await?;
    tracing::info!(
        node = %config.node.name,
        role = %config.node.role,
        addr = %config.server.grpc_addr,
        "mcp-agent serving"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // Start-up convergence, then the monitor, beside the server; neither
    // waits for the master.
    let background = {
        let agent = agent.clone();
        let interval = config.monitor.interval;
        let rx = stop_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stopped(rx.clone()) => return,
                result = agent.converge_until_done(&mcp_agent::agent::STARTUP_RETRIES) => match result {
                    Ok(rounds) => {
                        let last = rounds.last().map(Vec::as_slice).unwrap_or_default();
                        let failed = last.iter().filter(|s| s.is_failed()).count();
                        tracing::info!(rounds = rounds.len(), steps = last.len(), failed, "start-up convergence done");
                    }
                    Err(e) => tracing::error!(error = %e, "start-up convergence failed"),
                },
            }
            agent.run_monitor(interval, stopped(rx)).await;
        })
    };

    // Proxy repair and certificate renewal on their own short interval.
    let net_checks = {
        let agent = agent.clone();
        let interval = config
            .proxy
            .as_ref()
            .map_or(std::time::Duration::from_secs(5), |p| p.check_interval);
        let rx = stop_rx.clone();
        tokio::spawn(async move { agent.run_net_checks(interval, stopped(rx)).await })
    };

    // Container events from podman wake the monitor.
    let events = {
        let agent = agent.clone();
        let rx = stop_rx.clone();
        tokio::spawn(async move { agent.run_events(stopped(rx)).await })
    };

    // Health checks on their own intervals.
    let health = {
        let agent = agent.clone();
        let rx = stop_rx.clone();
        tokio::spawn(async move { agent.run_health(stopped(rx)).await })
    };

    let registration = registration(config, agent.clone(), changes_rx, stopped(stop_rx.clone()))?;

    let result = server::serve(agent, listener, security, shutdown_signal()).await;
    let _ = stop_tx.send(true);
    for (what, task) in [
        ("background", background),
        ("net checks", net_checks),
        ("health checks", health),
        ("container events", events),
        ("registration", registration),
    ] {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "{what} task failed");
        }
    }
    tracing::info!("mcp-agent stopped");
    result.map_err(Into::into)
}

/// Registers with the master (retrying with back-off until it answers) and
/// heartbeats on `[master] heartbeat_interval`; the container count comes
/// from the agent's own health check, refreshed before each heartbeat.
fn registration<R>(
    config: &Config,
    agent: Arc<Agent<R>>,
    changes: tokio::sync::mpsc::Receiver<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>>
where
    R: mcp_runtime::ContainerRuntime + 'static,
{
    use mcp_agent::config::https_url;
    use mcp_agent::register::{
        run_change_reports, run_registration, with_message_limits, RegistrationConfig,
    };
    use mcp_proto::pb::mcp_master_service_client::McpMasterServiceClient;
    use mcp_security::{tls, token};
    use std::sync::atomic::{AtomicU32, Ordering};

    let client_tls = tls::client_config(
        &config.server.ca_cert,
        Some(&tls::CertKeyPaths {
            cert: config.server.tls_cert.clone(),
            key: config.server.tls_key.clone(),
        }),
    )?;
    let master = https_url(&config.master.address);
    // The master's certificate must name the master, whatever host
    // `[master] address` uses.
    let server_name = config.master_server_name();
    let connector = tls::TlsConnector::new(Arc::new(client_tls))
        .with_server_name(server_name)
        .with_context(|| format!("master.server_name {server_name:?}"))?;
    let channel = tls::connect_channel_lazy(&master, connector)?;
    let token = token::read_token(Some(&config.auth.token_file))?;
    let client = with_message_limits(McpMasterServiceClient::with_interceptor(
        channel,
        token::BearerInterceptor::new(&token)?,
    ));
    let cfg = RegistrationConfig::new(
        &config.node.name,
        config.node.role.as_str(),
        &https_url(&config.node.address),
        config.master.heartbeat_interval,
    );
    let interval = config.master.heartbeat_interval;
    let reports = run_change_reports(
        client.clone(),
        config.node.name.clone(),
        changes,
        std::future::pending(),
    );
    let containers = Arc::new(AtomicU32::new(0));
    let count = containers.clone();
    Ok(tokio::spawn(async move {
        let refresh = async move {
            loop {
                if let Ok(h) = agent.health().await {
                    count.store(h.containers, Ordering::Relaxed);
                }
                tokio::time::sleep(interval).await;
            }
        };
        tokio::select! {
            () = refresh => {}
            () = reports => {}
            () = run_registration(client, cfg, move || containers.load(Ordering::Relaxed), shutdown) => {}
        }
    }))
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
    }
}
