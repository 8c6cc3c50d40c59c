//! `mcp`: the operator's command-line tool.

mod cli;
mod commands;
mod config;
mod dev;
mod edit;
mod files;
mod nodes;
mod remote;
mod report;
mod tokens;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser};

use cli::{Cli, Command, NodeCommand, Output, SnapshotArgs, SnapshotCommand, TokenCommand};
use mcp_spec::{LoadOptions, LoadedDir};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mcp: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Completions { shell } = &cli.command {
        let mut cmd = Cli::command();
        clap_complete::generate(*shell, &mut cmd, "mcp", &mut std::io::stdout());
        return Ok(ExitCode::SUCCESS);
    }
    // `mcp dev` makes its own config: the operator's (or another fleet's,
    // through MCP_CONFIG) is never read.
    if let Command::Dev {
        services,
        agents,
        edge,
        state_dir,
        prepare_only,
        down,
        purge,
        acme,
    } = &cli.command
    {
        return dev::run(&dev::DevOptions {
            services: services.clone(),
            agents: *agents,
            edge: *edge,
            state_dir: state_dir.clone(),
            prepare_only: *prepare_only,
            down: *down,
            purge: *purge,
            json: cli.output == Output::Json,
            acme: *acme,
        });
    }
    let cfg = config::load(cli.config.as_deref())?;
    let ctx = commands::Ctx {
        cfg: &cfg,
        label: remote::config_label(cli.config.as_deref()),
        output: cli.output,
    };
    match &cli.command {
        Command::Validate { dir } => validate(&cfg.services_dir(dir.as_deref()), cli.output),
        Command::Show { service, services } => {
            show(&cfg.services_dir(services.as_deref()), service, cli.output)
        }
        Command::Node { command } => {
            let path = match &cli.config {
                Some(p) => p.clone(),
                None => config::default_path().context("no HOME: pass --config")?,
            };
            match command {
                NodeCommand::Add { name, address } => nodes::add(&path, name, address)?,
                NodeCommand::Remove { name } => nodes::remove(&path, name)?,
                NodeCommand::List => return commands::node_list(&ctx),
                NodeCommand::Forget { name, force } => {
                    return commands::node_forget(&ctx, name, *force)
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync {
            dry_run,
            services,
            allow_mass_prune,
            expect_commit,
        } => commands::sync(
            &ctx,
            &cfg.services_dir(services.as_deref()),
            *dry_run,
            *allow_mass_prune,
            expect_commit.as_deref(),
        ),
        Command::Deploy {
            service,
            component,
            direct,
        } => commands::deploy(&ctx, service, component.as_deref(), direct),
        Command::Undeploy { service, direct } => commands::undeploy(&ctx, service, direct),
        Command::Stop { service, direct } => commands::set_active(&ctx, service, false, direct),
        Command::Start { service, direct } => commands::set_active(&ctx, service, true, direct),
        Command::Restart { service, direct } => commands::restart(&ctx, service, direct),
        Command::Status { service, direct } => commands::status(&ctx, service.as_deref(), direct),
        Command::Ps { direct } => commands::ps(&ctx, direct),
        Command::Logs {
            service,
            follow,
            component,
            since,
            direct,
        } => commands::logs(
            &ctx,
            service,
            *follow,
            component.as_deref(),
            since.as_deref(),
            direct,
        ),
        Command::Events {
            service,
            limit,
            since,
            direct,
        } => commands::events(&ctx, service.as_deref(), *limit, since.as_deref(), direct),
        Command::Audit {
            since,
            caller,
            limit,
        } => commands::audit(&ctx, since.as_deref(), caller.as_deref(), *limit),
        Command::Edit { service } => edit::edit(&cfg.services_dir(None), service),
        Command::Adopt { service, direct } => commands::adopt(&ctx, service, direct),
        Command::Push {
            file,
            service,
            path,
            direct,
        } => commands::push(&ctx, file, service, path, direct),
        Command::Pull {
            service,
            path,
            dest,
            direct,
        } => commands::pull(&ctx, service, path, dest, direct),
        Command::Snapshot(SnapshotArgs {
            command: Some(SnapshotCommand::List { service }),
            ..
        }) => commands::snapshot_list(&ctx, service),
        Command::Snapshot(SnapshotArgs {
            service: Some(service),
            command: None,
        }) => commands::snapshot_now(&ctx, service),
        Command::Restore {
            service,
            snapshot,
            force,
        } => commands::restore(&ctx, service, snapshot.as_deref(), *force),
        Command::Migrate(a) => commands::migrate(&ctx, a),
        Command::History { service } => commands::history(&ctx, service),
        Command::Rollback {
            service,
            to,
            dry_run,
        } => commands::rollback(&ctx, service, to.as_deref(), *dry_run),
        Command::Snapshot(_) => {
            anyhow::bail!("mcp snapshot: name a service (`mcp snapshot <svc>`), or list with `mcp snapshot list <svc>`")
        }
        Command::Token { command } => {
            match command {
                TokenCommand::Keygen { out } => tokens::keygen(out)?,
                TokenCommand::Issue(c) => tokens::issue(&tokens::IssueArgs {
                    identity: &c.identity,
                    account_type: &c.account_type,
                    roles: &c.roles,
                    ttl: &c.ttl,
                    key: &c.key,
                    issuer: &c.issuer,
                    audience: &c.audience,
                    out: c.out.as_deref(),
                    bind_cert: c.bind_cert.as_deref(),
                    max_lifetime: &c.max_lifetime,
                })?,
            }
            Ok(ExitCode::SUCCESS)
        }
        other => not_available(other),
    }
}

fn load(dir: &Path) -> Result<LoadedDir> {
    mcp_spec::load_dir(dir, &LoadOptions::default())
        .with_context(|| format!("reading services directory {}", dir.display()))
}

/// `mcp validate [DIR]`: every problem of every file, exit 1 if any.
fn validate(dir: &Path, output: Output) -> Result<ExitCode> {
    let loaded = load(dir)?;
    let ok = loaded.unreadable.is_empty();
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            let errors: Vec<_> = loaded.unreadable.iter().flat_map(|u| &u.errors).collect();
            let v = serde_json::json!({
                "valid": loaded.services.keys().collect::<Vec<_>>(),
                "invalid": loaded.unreadable.iter().map(|u| &u.name).collect::<Vec<_>>(),
                "errors": errors,
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        Output::Text => {
            for u in &loaded.unreadable {
                for d in &u.errors {
                    writeln!(out, "{d}")?;
                }
            }
            writeln!(
                out,
                "{} valid, {} invalid ({})",
                loaded.services.len(),
                loaded.unreadable.len(),
                dir.display()
            )?;
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `mcp show <svc>`: the canonical spec.
fn show(dir: &Path, service: &str, output: Output) -> Result<ExitCode> {
    let loaded = load(dir)?;
    if let Some(u) = loaded.unreadable.iter().find(|u| u.name == service) {
        for d in &u.errors {
            eprintln!("{d}");
        }
        bail!("service {service}: {} is invalid", u.file.display());
    }
    let Some(spec) = loaded.services.get(service) else {
        bail!("service {service}: no {service}.toml in {}", dir.display());
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(spec)?),
        Output::Text => print!("{}", mcp_spec::canonical_toml(spec)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Commands whose daemon side does not exist yet say so and fail.
fn not_available(cmd: &Command) -> Result<ExitCode> {
    let (name, needs) = match cmd {
        Command::Edge { .. } => ("edge", "edge routing"),
        Command::Agent { .. } => ("agent", "agent upgrades and fleet agent status"),
        Command::Login => ("login", "an identity service client"),
        Command::Validate { .. }
        | Command::Show { .. }
        | Command::Sync { .. }
        | Command::Deploy { .. }
        | Command::Undeploy { .. }
        | Command::Stop { .. }
        | Command::Start { .. }
        | Command::Restart { .. }
        | Command::Ps { .. }
        | Command::Status { .. }
        | Command::Logs { .. }
        | Command::Events { .. }
        | Command::Audit { .. }
        | Command::Edit { .. }
        | Command::Adopt { .. }
        | Command::Push { .. }
        | Command::Pull { .. }
        | Command::Node { .. }
        | Command::Restore { .. }
        | Command::Migrate(_)
        | Command::History { .. }
        | Command::Rollback { .. }
        | Command::Snapshot(_)
        | Command::Token { .. }
        | Command::Dev { .. }
        | Command::Completions { .. } => {
            unreachable!("handled above")
        }
    };
    bail!("`mcp {name}` is not available yet: it needs {needs}, which this build does not have")
}
