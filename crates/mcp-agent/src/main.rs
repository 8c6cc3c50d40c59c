//! `mcp-agent`: the MCP node agent.
//!
//! ```text
//! mcp-agent --config FILE                 serve (the gRPC server is not assembled yet)
//! mcp-agent check-config --config FILE    validate the configuration (exit 0/1)
//! mcp-agent snapshot --config FILE        back up the agent database
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mcp_agent::{snapshot_database, Config, Timestamp};

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
    /// Run the agent (the default).
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
                let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
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
    anyhow::bail!(
        "the agent's gRPC server is not assembled yet (node {}, {}); \
         only check-config and snapshot work in this build",
        config.node.name,
        config.server.grpc_addr
    )
}
