//! `mcp-master serve`: everything wired together from a [`Config`].
//!
//! Start-up order:
//! 1. open the database; add the config's `[[nodes]]` bootstrap entries;
//! 2. mark operations a previous master left running as abandoned (logged);
//! 3. TLS (server and agent-client configs), the token verifier (maximum
//!    lifetime, leeway), the master's own token for agent calls (a warning
//!    when it is not bound to the master's certificate: agents refuse it);
//! 4. listen (TLS 1.3 with the preface timeout and per-peer connection cap,
//!    `AuthLayer` with the master's certificate binding, rate limits,
//!    per-peer refusal limits and the database audit sink) so agents can
//!    register during the warm-up;
//! 5. warm-up: probe every known node at once (no alerts), then plan
//!    without applying and log orphans, services on unavailable nodes and
//!    stored snapshots older than twice the interval;
//! 6. ready: the control loop (timer, commits, fleet changes, `Sync`), the
//!    health prober and, with `[snapshots]`, the snapshot schedule (whose
//!    first pass flags stale snapshots) run until SIGINT/SIGTERM, then the server stops
//!    accepting calls, the pass in progress finishes, and every queued
//!    audit row is written before `serve` returns.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mcp_planner::Note;
use mcp_proto::pb::mcp_master_service_server::McpMasterServiceServer;
use mcp_security::authz::AuthzTable;
use mcp_security::binding::MasterBinding;
use mcp_security::clock::{Clock, SystemClock};
use mcp_security::identity::TokenVerifier;
use mcp_security::layer::{AuthLayer, Authorizer};
use mcp_security::registration::{RateLimiter, RateLimits};
use mcp_security::tls::{self, CertKeyPaths, ClientAuth};
use mcp_spec::LoadOptions;
use tokio::sync::watch;

use crate::agents::{AgentApi, GrpcAgents};
use crate::config::{AgentServerName, Config, TokenVerification};
use crate::fleet::{Fleet, FleetSettings};
use crate::gitsource::GitSource;
use crate::reconcile::{dns_adapter, DesiredSource, PassOptions, Reconciler, Settings};
use crate::server::MasterService;
use crate::state::{audit, AuditLog, Db};
use crate::watch::{HeadWatcher, WatchOptions};

/// The gRPC paths of the registration RPCs (rate limited per identity).
pub const REGISTER_PATH: &str = "/mcp.v1.McpMasterService/Register";
pub const HEARTBEAT_PATH: &str = "/mcp.v1.McpMasterService/Heartbeat";

/// How long the server may take to finish open calls at shutdown.
const SERVER_DRAIN: Duration = Duration::from_secs(10);

/// Builds the token verifier the config asks for.
pub fn verifier(cfg: &Config) -> anyhow::Result<Arc<dyn TokenVerifier>> {
    match cfg.auth.verification() {
        Some(TokenVerification::Jwt {
            public_key,
            issuer,
            audience,
        }) => {
            let key = mcp_security::jwt::PublicKey::from_file(public_key)
                .with_context(|| format!("auth.issuer_public_key {}", public_key.display()))?;
            Ok(Arc::new(
                mcp_security::JwtVerifier::new(key, issuer, audience)
                    .with_max_lifetime(cfg.auth.max_token_lifetime)
                    .with_leeway(cfg.auth.leeway.as_secs()),
            ))
        }
        Some(TokenVerification::IdentityService { url }) => {
            let tls = tls::client_config(&cfg.server.ca_cert, None)
                .context("CA bundle for the identity service")?;
            let v = mcp_security::idsvc::IdentityServiceVerifier::new(url, Some(tls))
                .with_context(|| format!("auth.identity_service_url {url}"))?;
            Ok(Arc::new(v))
        }
        None => anyhow::bail!("auth: no token verification configured"),
    }
}

/// The desired-state source of the config.
pub fn desired_source(cfg: &Config) -> anyhow::Result<DesiredSource> {
    Ok(match &cfg.services {
        Some(s) => DesiredSource::Git {
            source: GitSource::open(&s.dir)
                .with_context(|| format!("services.dir {}", s.dir.display()))?,
            options: LoadOptions {
                allowed_public_domains: cfg.edge.allowed_domains.clone(),
                allowed_host_paths: s.allowed_host_paths.clone(),
                ..LoadOptions::default()
            },
        },
        None => DesiredSource::Push,
    })
}

/// Runs the master until `shutdown` resolves.
pub async fn serve(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state = Db::open(&cfg.database.path)
        .await
        .context("opening the master database")?;
    let (bootstrap, roles) = (cfg.nodes.clone(), cfg.node_roles());
    let changed = state
        .write(move |w| {
            for n in &bootstrap {
                w.add_bootstrap_node(&n.name, n.role, &n.address)?;
            }
            w.apply_configured_roles(&roles)
        })
        .await?;
    for (node, old) in changed {
        tracing::warn!(node = %node, old_role = %old, "node role set from the configuration");
    }
    let audit_log = AuditLog::start_with_retention(
        state.clone(),
        audit::DEFAULT_CAPACITY,
        audit::Retention {
            max_age: cfg.audit.max_age,
            max_rows: cfg.audit.max_rows,
            interval: cfg.audit.prune_interval,
            clock: clock.clone(),
        },
    );

    // TLS and tokens.
    let server_tls = tls::server_config(
        &CertKeyPaths {
            cert: cfg.server.tls_cert.clone(),
            key: cfg.server.tls_key.clone(),
        },
        &ClientAuth::Optional(cfg.server.ca_cert.clone()),
    )
    .context("server TLS")?;
    let client_tls = tls::client_config(
        &cfg.server.ca_cert,
        Some(&CertKeyPaths {
            cert: cfg.server.tls_cert.clone(),
            key: cfg.server.tls_key.clone(),
        }),
    )
    .context("TLS for calls to agents")?;
    let token = mcp_security::token::read_token(Some(&cfg.auth.token_file))
        .context("the master's own token (auth.token_file)")?;
    warn_if_token_unbound(&cfg, token.expose());
    let bearer =
        mcp_security::token::BearerInterceptor::new(&token).context("the master's own token")?;
    let mut grpc_agents = GrpcAgents::new(Arc::new(client_tls), bearer, cfg.timeouts);
    if cfg.server.agent_server_name == AgentServerName::Node {
        grpc_agents = grpc_agents.verify_node_names();
    }
    let agents: Arc<dyn AgentApi> = Arc::new(grpc_agents);

    // The loop and the registry.
    let source = desired_source(&cfg)?;
    let dns = dns_adapter(&cfg).await.map_err(anyhow::Error::msg)?;
    if let Some(d) = &dns {
        tracing::info!(adapter = d.kind(), server = %d.server(), zone = d.zone(), "DNS records through the configured adapter");
    }
    let dns_ttl = match &cfg.dns {
        Some(crate::config::DnsConfig::Rfc2136(c)) => c.ttl,
        Some(crate::config::DnsConfig::Mcns(c)) => c.ttl,
        None => Duration::from_secs(60),
    };
    let alerts = Arc::new(crate::alerts::Alerts::from_config(&cfg, clock.clone()));
    if let Some(argv) = &cfg.alerts.command {
        tracing::info!(command = ?argv, cooldown = %humantime::format_duration(cfg.alerts.cooldown), "alerts through the configured command");
    }
    let rec = Arc::new(
        Reconciler::new(
            state.clone(),
            agents.clone(),
            clock.clone(),
            source.clone(),
            Settings::from_config(&cfg),
        )
        .with_dns(dns, dns_ttl)
        .with_alerts(alerts.clone()),
    );
    // Migrations are resumed by the snapshot store (below); other
    // interrupted operations are re-planned.
    let resumable: &[&str] = if cfg.snapshots.is_some() {
        &[crate::snapshots::MIGRATE_OP]
    } else {
        &[]
    };
    let abandoned = rec.recover_journal_except(resumable).await?;
    if !abandoned.is_empty() {
        tracing::warn!(
            count = abandoned.len(),
            "operations interrupted by the previous master were marked abandoned"
        );
    }
    let kick_rec = rec.clone();
    let fleet = Arc::new(
        Fleet::new(
            state.clone(),
            agents.clone(),
            clock.clone(),
            FleetSettings::from_config(&cfg),
            Box::new(move || kick_rec.kick()),
        )
        .with_alerts(alerts.clone()),
    );

    // The server.
    let rate = RateLimits::new()
        .with(REGISTER_PATH, cfg.registration.register_min_interval)
        .with(HEARTBEAT_PATH, cfg.registration.heartbeat_min_interval);
    let authorizer = Authorizer::new(
        verifier(&cfg)?,
        AuthzTable::standard(cfg.auth.master_identity.clone()),
    )
    .with_rate_limiter(RateLimiter::new(rate))
    .with_master_binding(MasterBinding::new(cfg.auth.master_cert_name()));
    let layer = AuthLayer::new(authorizer)
        .with_audit_sink(Arc::new(audit_log.sink()))
        .with_failure_limits(cfg.server.failure_limits());
    let listener = tls::bind(cfg.server.grpc_addr)
        .await
        .context("listening for gRPC")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let store = crate::snapshots::StoreSettings::from_config(&cfg)
        .map(|s| Arc::new(crate::snapshots::Snapshots::new(rec.clone(), s)));
    let mut master = MasterService::new(rec.clone(), fleet.clone());
    let mut pending = Vec::new();
    if let Some(s) = &store {
        master = master.with_snapshots(s.clone());
        let weak: std::sync::Weak<dyn crate::reconcile::Migrator> = Arc::downgrade(s) as _;
        rec.set_migrator(weak);
        // Claimed before the control loop starts, so no pass touches them.
        pending = s.pending_migrations().await?;
        if !pending.is_empty() {
            tracing::warn!(
                count = pending.len(),
                "migrations interrupted by the previous master: resuming them after warm-up"
            );
        }
    }
    let svc = McpMasterServiceServer::new(master)
        .max_decoding_message_size(mcp_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(mcp_proto::MAX_MESSAGE_BYTES);
    let mut server_stop = stop_rx.clone();
    let mut server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(svc)
            .serve_with_incoming_shutdown(
                tls::tls_incoming_with(
                    listener,
                    Arc::new(server_tls),
                    cfg.server.incoming_options(),
                ),
                async move {
                    let _ = server_stop.wait_for(|s| *s).await;
                },
            ),
    );
    tracing::info!(addr = %cfg.server.grpc_addr, mode = if rec.gitops() { "gitops" } else { "push" }, "listening");

    // Warm-up.
    fleet.warm_up().await?;
    warm_up_report(&rec).await;
    tracing::info!("mcp-master ready");

    // GitOps watcher.
    let (head_tx, head_rx) = tokio::sync::mpsc::channel(8);
    let _watcher = match (&source, &cfg.services) {
        (DesiredSource::Git { source, .. }, Some(s)) => {
            let last = source.head().ok().flatten();
            Some(HeadWatcher::spawn(
                source.clone(),
                last,
                WatchOptions {
                    debounce: s.debounce,
                    poll: s.poll,
                    file_events: true,
                },
                head_tx,
            ))
        }
        _ => None,
    };
    let heads = _watcher.as_ref().map(|_| head_rx);
    if let Some(s) = store.clone().filter(|_| !pending.is_empty()) {
        tokio::spawn(s.resume(pending));
    }
    let control = tokio::spawn(rec.clone().run(heads, stop_rx.clone()));
    let probe_every = (cfg.registration.heartbeat_timeout / 3).max(Duration::from_millis(100));
    let prober = tokio::spawn(fleet.clone().run_prober(probe_every, stop_rx.clone()));
    // The snapshot schedule (its first pass reports stale snapshots).
    let schedule = store
        .clone()
        .map(|s| tokio::spawn(s.run_schedule(stop_rx.clone())));

    // Run until asked to stop, or until the server fails.
    let server_failed = tokio::select! {
        () = shutdown => None,
        r = &mut server => Some(r),
    };
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), control).await;
    let _ = prober.await;
    if let Some(s) = schedule {
        // A snapshot in flight is bounded by [timeouts] snapshot.
        s.abort();
    }
    // The server has stopped (or failed): every call's audit row is queued.
    // Write them all before exiting.
    if server_failed.is_none()
        && tokio::time::timeout(SERVER_DRAIN, &mut server)
            .await
            .is_err()
    {
        tracing::warn!(
            "calls still open {}s after the shutdown signal; not waiting for them",
            SERVER_DRAIN.as_secs()
        );
        server.abort();
    }
    let audit = audit_log.shutdown().await;
    tracing::info!(
        rows = audit.rows,
        batches = audit.batches,
        failed = audit.failed,
        "audit log written"
    );
    match server_failed {
        Some(Ok(Err(e))) => Err(anyhow::Error::new(e).context("gRPC server failed")),
        Some(Err(e)) => Err(anyhow::Error::new(e).context("gRPC server task failed")),
        _ => Ok(()),
    }
}

/// Agents accept the master's calls only with a token bound to the
/// master's certificate (`cnf` `x5t#S256`): say so at start when the token
/// is not bound to `[server] tls_cert`, rather than with every call failing.
fn warn_if_token_unbound(cfg: &Config, token: &str) {
    let cert = &cfg.server.tls_cert;
    let want = match mcp_security::jwt::cert_thumbprint_from_pem_file(cert) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "cannot check the master's token binding");
            return;
        }
    };
    let hint = format!(
        "agents refuse it: issue it bound to the certificate, e.g. `mcp token issue {} --type system --bind-cert {}`",
        cfg.auth.master_identity,
        cert.display()
    );
    match mcp_security::jwt::unverified_cnf_thumbprint(token) {
        Some(t) if t == want => {}
        Some(_) => tracing::error!(
            token_file = %cfg.auth.token_file.display(),
            "the master's token is bound to another certificate than server.tls_cert; {hint}"
        ),
        None => tracing::error!(
            token_file = %cfg.auth.token_file.display(),
            "the master's token is not bound to its certificate (no cnf claim); {hint}"
        ),
    }
}

/// Start-up checks: plan without applying and log orphans, services on
/// unavailable nodes and pending changes (stale snapshots: the schedule's first
/// pass).
async fn warm_up_report(rec: &Arc<Reconciler>) {
    match rec
        .reconcile(PassOptions {
            dry_run: true,
            reason: "start-up check".to_string(),
            ..PassOptions::default()
        })
        .await
    {
        Ok(out) => {
            for n in &out.plan.notes {
                match n {
                    Note::Orphan { .. } => tracing::warn!(note = %n, "start-up: orphan"),
                    Note::NodeUnavailable { .. } => {
                        tracing::warn!(note = %n, "start-up: stale placement")
                    }
                    Note::MassPruneRefused { .. } => tracing::warn!(note = %n, "start-up"),
                }
            }
            tracing::info!(
                entries = out.plan.entries.len(),
                source = out.plan.source.as_deref().unwrap_or("-"),
                "start-up: plan computed; the control loop applies it"
            );
        }
        Err(e) => tracing::warn!(error = %e, "start-up: cannot plan yet"),
    }
    if let Ok(routes) = rec.state().read(|r| r.edge_routes()).await {
        if !routes.is_empty() {
            tracing::info!(
                routes = routes.len(),
                "start-up: edge routes recorded (not verified: no edge adapter)"
            );
        }
    }
}
