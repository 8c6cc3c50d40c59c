//! The command tree of docs/CLI.md, as clap derive types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "mcp",
    version,
    about = "MCP: GitOps control plane for a small container fleet",
    long_about = "MCP keeps one TOML file per service in a git repository; a master daemon \
                  converges the fleet's agents to what those files declare. The CLI edits \
                  files and previews what will happen (`mcp sync --dry-run`)."
)]
pub struct Cli {
    /// CLI config file (default: ~/.config/mcp/mcp.toml).
    #[arg(long, global = true, env = "MCP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// `--direct --node N`: talk to one agent instead of the master.
#[derive(Debug, Clone, Args)]
pub struct Direct {
    /// Bypass the master and talk to one agent (escape hatch when the master is down).
    #[arg(long)]
    pub direct: bool,
    /// The agent's node (from the CLI config's [[nodes]]); needed with --direct.
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check every service file of a directory; list every problem as file:line:col.
    Validate {
        /// Services directory (default: [services] dir from the config, else ".").
        dir: Option<PathBuf>,
    },
    /// Print a service's canonical spec (what is hashed and diffed).
    Show {
        service: String,
        #[arg(long, value_name = "DIR")]
        services: Option<PathBuf>,
    },
    /// Plan (and apply) the services directory against the fleet.
    Sync {
        /// Only show the plan; exit 0 when nothing to do, 2 when changes are pending.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_name = "DIR")]
        services: Option<PathBuf>,
        /// Let the plan prune more than half of the placements.
        #[arg(long)]
        allow_mass_prune: bool,
        /// Apply only if the desired state is still at this commit (the
        /// one a `--dry-run` previewed); otherwise exit 1, nothing applied.
        #[arg(long, value_name = "SHA")]
        expect_commit: Option<String>,
    },
    /// Deploy or redeploy one service.
    Deploy {
        service: String,
        /// Only this component.
        #[arg(long)]
        component: Option<String>,
        #[command(flatten)]
        direct: Direct,
    },
    /// Remove a service from its node (its /srv data is kept).
    Undeploy {
        service: String,
        #[command(flatten)]
        direct: Direct,
    },
    /// Stop a service (sets `active = false` in its file).
    ///
    /// Sets `active = false` in <services dir>/<service>.toml (comments kept, validated), then:
    /// when the services directory is in a git work tree, commits that file alone and the
    /// master (GitOps) applies the commit; otherwise sends the directory to the master
    /// (push mode, like `mcp sync`).
    ///
    /// With --direct, only the agent is told; the file is unchanged.
    Stop {
        service: String,
        #[command(flatten)]
        direct: Direct,
    },
    /// Start a service (sets `active = true` in its file).
    ///
    /// Sets `active = true` in <services dir>/<service>.toml (comments kept, validated), then:
    /// when the services directory is in a git work tree, commits that file alone and the
    /// master (GitOps) applies the commit; otherwise sends the directory to the master
    /// (push mode, like `mcp sync`).
    ///
    /// With --direct, only the agent is told; the file is unchanged.
    Start {
        service: String,
        #[command(flatten)]
        direct: Direct,
    },
    /// Restart a service's containers.
    Restart {
        service: String,
        #[command(flatten)]
        direct: Direct,
    },
    /// List the fleet's containers.
    Ps {
        #[command(flatten)]
        direct: Direct,
    },
    /// Status of all services, or one.
    Status {
        service: Option<String>,
        #[command(flatten)]
        direct: Direct,
    },
    /// A service's container logs.
    Logs {
        service: String,
        /// Keep following.
        #[arg(short, long)]
        follow: bool,
        #[arg(long)]
        component: Option<String>,
        /// Only lines since then: a duration before now (10m, 1h30m, 2d) or a UTC time in
        /// RFC 3339 (2026-01-01T12:00:00Z).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        #[command(flatten)]
        direct: Direct,
    },
    /// What happened to services' containers: state changes and operations, oldest first.
    Events {
        service: Option<String>,
        /// At most this many events (the newest).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// Only events since then: a duration before now (10m, 1h30m, 2d) or a UTC time in
        /// RFC 3339 (2026-01-01T12:00:00Z).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        #[command(flatten)]
        direct: Direct,
    },
    /// Who called what on the master, when, with what outcome (operators only), oldest first.
    Audit {
        /// Only calls since then: a duration before now (10m, 1h30m, 2d) or a UTC time in
        /// RFC 3339 (2026-01-01T12:00:00Z).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only this caller's calls (identity name, e.g. alice or agent-orion).
        #[arg(long, value_name = "IDENTITY")]
        caller: Option<String>,
        /// At most this many calls (the newest).
        #[arg(long, default_value_t = 100,
              value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Edit a service file in $VISUAL / $EDITOR (default vi); an invalid file is not saved.
    Edit { service: String },
    /// Take over existing containers named <service>-*.
    ///
    /// Through the master: on the node the service is placed on, or the node given with --node.
    /// With --direct --node N: that agent, without the master.
    Adopt {
        service: String,
        #[command(flatten)]
        direct: Direct,
    },
    /// Copy a local file (at most 64 MiB) to /srv/<service>/<path> on the service's node.
    ///
    /// Through the master, which forwards it to the node that runs the service; with
    /// --direct --node N, to that agent.
    Push {
        file: PathBuf,
        service: String,
        path: String,
        #[command(flatten)]
        direct: Direct,
    },
    /// Copy /srv/<service>/<path> from the service's node to a local file.
    ///
    /// Through the master, which asks the node that runs the service; with --direct --node N,
    /// that agent.
    Pull {
        service: String,
        path: String,
        dest: PathBuf,
        #[command(flatten)]
        direct: Direct,
    },
    /// Fleet nodes.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Edge routes.
    Edge {
        #[command(subcommand)]
        command: EdgeCommand,
    },
    /// The commits that changed a service's file, with how each spec fared when deployed.
    History { service: String },
    /// Commit the service's file as it was at an earlier commit.
    ///
    /// Default: the newest earlier commit whose spec the master deployed healthy. Only that
    /// file is written and committed; the master deploys it like any commit.
    Rollback {
        service: String,
        /// Restore the file as of this commit instead.
        #[arg(long, value_name = "COMMIT")]
        to: Option<String>,
        /// Show the master's plan with the file restored; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Move a service (and its data) to another node.
    Migrate(MigrateArgs),
    /// Snapshot a service's data now (live), or list its stored snapshots.
    Snapshot(SnapshotArgs),
    /// Restore a service's data from a stored snapshot: stop, import, start.
    Restore {
        service: String,
        /// A stored snapshot's file name (`mcp snapshot list`); default: the newest.
        #[arg(long, value_name = "FILE")]
        snapshot: Option<String>,
        /// Replace the service's existing data.
        #[arg(long)]
        force: bool,
    },
    /// Agents.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Log in to the identity service and store a token.
    Login,
    /// Tokens for operators and agents.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// A whole fleet on this machine (master + agents over loopback), for trying MCP.
    ///
    /// Never reads the CLI config (MCP_CONFIG may name another fleet's).
    Dev {
        #[arg(long, value_name = "DIR")]
        services: Option<PathBuf>,
        /// Number of agents: the first is the master node, the others workers.
        #[arg(long, default_value_t = 3)]
        agents: u32,
        /// Also start an edge node (role edge).
        #[arg(long)]
        edge: bool,
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Write the PKI, tokens and configs, print their paths as JSON with --output json, and
        /// exit (start `mcp-master`/`mcp-agent --config <file> serve` yourself).
        #[arg(long, conflicts_with_all = ["down", "purge"])]
        prepare_only: bool,
        /// Stop the fleet of --state-dir (its `mcp dev` and daemons) and remove its containers.
        #[arg(long)]
        down: bool,
        /// Like --down, then delete the state directory (keys, databases, logs, demo services).
        #[arg(long)]
        purge: bool,
        /// Routes' certificates from a Pebble ACME server (dns-01 through the dev Knot)
        /// instead of the dev CA. Not available yet: exits 1.
        #[arg(long, conflicts_with_all = ["down", "purge"])]
        acme: bool,
    },
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Nodes known to the master.
    List,
    /// Add a node to the CLI config's [[nodes]].
    Add { name: String, address: String },
    /// Remove a node from the CLI config's [[nodes]].
    Remove { name: String },
    /// Remove a node from the master's registry (frees its registration
    /// slot); refused while it holds placements.
    Forget {
        name: String,
        /// Restore its services elsewhere from their snapshots (not
        /// available yet: refused).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum EdgeCommand {
    /// Edge routes the master created.
    List,
    /// Edge routes with certificate state.
    Status,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["service", "all"])))]
pub struct MigrateArgs {
    /// The service to move.
    pub service: Option<String>,
    /// Move every service from --from to --to.
    #[arg(long, requires = "from")]
    pub all: bool,
    #[arg(long, value_name = "NODE")]
    pub from: Option<String>,
    #[arg(long, value_name = "NODE")]
    pub to: String,
    /// Overwrite data already on the target.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SnapshotArgs {
    /// The service to snapshot now.
    pub service: Option<String>,
    #[command(subcommand)]
    pub command: Option<SnapshotCommand>,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Stored snapshots of a service.
    List { service: String },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Upgrade the agent on one node, or all.
    Upgrade { node: Option<String> },
    /// Agent versions and health.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Sign a token for an identity with the configured Ed25519 key.
    Issue(Box<IssueCommand>),
    /// Create an Ed25519 key pair for signing tokens.
    Keygen {
        /// Where to write the private key; the public key goes to <FILE>.pub.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// `mcp token issue`.
#[derive(Debug, clap::Args)]
pub struct IssueCommand {
    pub identity: String,
    #[arg(long = "type", value_name = "human|system", default_value = "human")]
    pub account_type: String,
    /// Comma-separated roles.
    #[arg(long, value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Lifetime, e.g. "12h", "30d".
    #[arg(long, default_value = "12h")]
    pub ttl: String,
    /// The Ed25519 private key (PKCS#8 PEM), from `mcp token keygen`.
    #[arg(long, env = "MCP_SIGNING_KEY", value_name = "FILE")]
    pub key: PathBuf,
    /// The `iss` claim; verifiers check it.
    #[arg(long, default_value = mcp_security::jwt::DEFAULT_ISSUER)]
    pub issuer: String,
    /// The `aud` claim; verifiers check it.
    #[arg(long, default_value = mcp_security::jwt::DEFAULT_AUDIENCE)]
    pub audience: String,
    /// Write the token to this file (mode 0600) instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Bind the token to this certificate (PEM; RFC 8705 `cnf`
    /// `x5t#S256`): servers accept it only from a client presenting that
    /// certificate. The master's token must be bound to the master's.
    #[arg(long, value_name = "FILE")]
    pub bind_cert: Option<PathBuf>,
    /// Refuse a --ttl longer than this: the daemons' `[auth]
    /// max_token_lifetime` (default 90d), which refuse longer tokens.
    #[arg(long, default_value = "90d")]
    pub max_lifetime: String,
}
