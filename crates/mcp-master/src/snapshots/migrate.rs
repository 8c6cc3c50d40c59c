//! Migration (`mcp migrate <svc> --to N [--force]`, `mcp migrate --all
//! --from A --to B`): move a service and its `/srv/<service>/` to another
//! node, journaled step by step.
//!
//! Steps, in order: **stop** on the source → **export** into the store (a
//! snapshot like any other, so the pre-move data is kept) → **import** on
//! the target → **deploy** on the target → **dns** (the service's internal
//! name → the target) → **edge** → **cleanup** (the source's containers
//! and data) → **placement**. A failure up to the deploy stops the move and
//! starts the service on the source again (its data was never touched);
//! a failure after it (DNS, cleanup) is reported and the move goes on: the
//! service runs on the target, the next pass repairs DNS, and a source
//! that could not be cleaned keeps a stopped copy.
//!
//! A source that is unreachable (or does not answer for the service): the
//! data comes from the latest stored snapshot, whose age is said, and
//! there is no stop and no cleanup.
//!
//! Each step is journaled (op `migrate`, the request as JSON in the detail)
//! before its side effects; a master killed mid-move resumes it at start-up
//! ([`Snapshots::pending_migrations`], [`Snapshots::resume`]) from the
//! journaled step — every step can be run twice — and the control loop
//! leaves a service alone while it moves ([`Reconciler::begin_move`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mcp_spec::{NodeRole, Tier};
use serde::{Deserialize, Serialize};

use super::{RestoreStep, SnapshotError, Snapshots, StepState};
use crate::agents::{AgentError, AgentTarget};
use crate::reconcile::{address_host, MoveGuard};
use crate::state::{JournalStatus, NodeStatus, Placement};

/// The journal's op name of a migration.
pub const MIGRATE_OP: &str = "migrate";

/// A migration as journaled (the entry's detail, JSON): enough to resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateRequest {
    pub service: String,
    pub from: String,
    pub to: String,
    pub force: bool,
    /// The stored snapshot that carries the data (after the export, or at
    /// the start when the source is gone).
    #[serde(default)]
    pub snapshot: Option<String>,
    /// The source was unreachable: the data comes from `snapshot`.
    #[serde(default)]
    pub source_gone: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Step {
    Stop,
    Export,
    Import,
    Deploy,
    Dns,
    Edge,
    Cleanup,
    Placement,
}

pub(crate) const STEPS: [Step; 8] = [
    Step::Stop,
    Step::Export,
    Step::Import,
    Step::Deploy,
    Step::Dns,
    Step::Edge,
    Step::Cleanup,
    Step::Placement,
];

impl Step {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Step::Stop => "stop",
            Step::Export => "export",
            Step::Import => "import",
            Step::Deploy => "deploy",
            Step::Dns => "dns",
            Step::Edge => "edge",
            Step::Cleanup => "cleanup",
            Step::Placement => "placement",
        }
    }

    fn parse(s: &str) -> Option<Step> {
        STEPS.into_iter().find(|x| x.name() == s)
    }

    /// A failure here ends the move (the service goes back to the source).
    fn fatal(self) -> bool {
        self <= Step::Deploy || self == Step::Placement
    }
}

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub steps: Vec<RestoreStep>,
    /// It runs on the target and its placement says so.
    pub moved: bool,
}

/// A migration a previous master left running, claimed for resuming.
#[derive(Debug)]
pub struct Pending {
    id: i64,
    req: MigrateRequest,
    step: String,
    guard: MoveGuard,
}

fn done(step: String, detail: String) -> RestoreStep {
    RestoreStep {
        step,
        state: StepState::Done,
        detail,
    }
}

fn failed(step: String, error: String) -> RestoreStep {
    RestoreStep {
        step,
        state: StepState::Failed(error),
        detail: String::new(),
    }
}

fn skipped(step: String, detail: String) -> RestoreStep {
    RestoreStep {
        step,
        state: StepState::Skipped,
        detail,
    }
}

/// The source cannot be asked: down, timed out, or it does not run the
/// service any more.
fn source_lost(e: &AgentError) -> bool {
    match e {
        AgentError::Unreachable { .. } | AgentError::Timeout { .. } => true,
        AgentError::Rpc { code, .. } => *code == tonic::Code::NotFound,
        _ => false,
    }
}

/// The spec deployed on the target: a pinned one pinned there (an agent
/// refuses a spec pinned to another node; `mcp migrate` re-pins the file).
fn moved_spec(p: &Placement, to: &str) -> mcp_spec::ServiceSpec {
    let mut spec = p.spec.clone();
    if spec.node.is_some() {
        spec.node = Some(to.to_string());
    }
    spec
}

fn age(now: SystemTime, then: SystemTime) -> String {
    let secs = now.duration_since(then).unwrap_or_default().as_secs();
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

impl Snapshots {
    /// Migrates `service` to `to` under its lock: see the module doc.
    pub async fn migrate(
        &self,
        service: &str,
        to: &str,
        force: bool,
    ) -> Result<Migration, SnapshotError> {
        let _lock = self.rec.locks().lock(service).await;
        self.migrate_locked(service, to, force).await
    }

    /// [`Snapshots::migrate`] with the service's lock already held (the
    /// control loop's `migrate` step under `allow_auto_migrate`).
    pub async fn migrate_locked(
        &self,
        service: &str,
        to: &str,
        force: bool,
    ) -> Result<Migration, SnapshotError> {
        let name = service.to_string();
        let p = self
            .rec
            .state()
            .read(move |r| r.placement(&name))
            .await?
            .ok_or_else(|| SnapshotError::NotPlaced(service.to_string()))?;
        self.validate(&p, to).await?;
        let guard = self.rec.begin_move(service).ok_or_else(|| {
            SnapshotError::Refused(format!("{service} is already being migrated"))
        })?;
        let req = MigrateRequest {
            service: service.to_string(),
            from: p.node.clone(),
            to: to.to_string(),
            force,
            snapshot: None,
            source_gone: false,
        };
        let detail = serde_json::to_string(&req).unwrap_or_default();
        let (svc, now) = (service.to_string(), self.rec.now());
        let id = self
            .rec
            .state()
            .write(move |w| w.journal_begin(MIGRATE_OP, &svc, Step::Stop.name(), &detail, now))
            .await?;
        tracing::info!(service, from = %req.from, to, "migration started");
        Ok(self.run(id, req, p, Step::Stop, guard).await)
    }

    /// Every service placed on `from`, one at a time (by name), to `to`;
    /// stops at the first that does not move. Run it again to go on: the
    /// services already moved are no longer on `from`.
    pub async fn migrate_all(
        &self,
        from: &str,
        to: &str,
        force: bool,
    ) -> Result<Migration, SnapshotError> {
        if from == to {
            return Err(SnapshotError::Refused(format!(
                "--from and --to are both {from}"
            )));
        }
        let node = from.to_string();
        let mut on = self
            .rec
            .state()
            .read(move |r| r.placements_on(&node))
            .await?;
        on.sort_by(|a, b| a.service.cmp(&b.service));
        let mut all = Migration {
            steps: Vec::new(),
            moved: true,
        };
        for p in on {
            match self.migrate(&p.service, to, force).await {
                Ok(m) => {
                    all.steps.extend(m.steps);
                    if !m.moved {
                        all.moved = false;
                        break;
                    }
                }
                Err(e) => {
                    all.steps.push(failed(
                        format!("migrate {} from {from} to {to}", p.service),
                        e.to_string(),
                    ));
                    all.moved = false;
                    break;
                }
            }
        }
        Ok(all)
    }

    /// The target is a registered, healthy worker other than the source;
    /// the service is not a core one.
    async fn validate(&self, p: &Placement, to: &str) -> Result<(), SnapshotError> {
        let refuse = |why: String| Err(SnapshotError::Refused(why));
        let service = &p.service;
        if p.tier == Tier::Core {
            return refuse(format!(
                "{service} is a core service: core services run on the master and are not migrated"
            ));
        }
        if p.node == to {
            return refuse(format!("{service} already runs on {to}"));
        }
        let name = to.to_string();
        let Some(n) = self.rec.state().read(move |r| r.node(&name)).await? else {
            return refuse(format!("node {to} is not registered"));
        };
        match n.role {
            NodeRole::Edge => {
                return refuse(format!(
                    "{to} is an edge node: edge nodes run no application containers"
                ))
            }
            NodeRole::Master => {
                return refuse(format!(
                    "{to} is the master node: worker services run on worker nodes"
                ))
            }
            NodeRole::Worker => {}
        }
        if n.status != NodeStatus::Healthy {
            return refuse(format!(
                "{to} is {}: the target must be a healthy worker",
                n.status.as_str()
            ));
        }
        Ok(())
    }

    /// Runs the steps from `from` on, journaling each before it acts.
    async fn run(
        &self,
        id: i64,
        mut req: MigrateRequest,
        p: Placement,
        from: Step,
        guard: MoveGuard,
    ) -> Migration {
        let service = req.service.clone();
        let mut steps = Vec::new();
        let mut error: Option<String> = None;
        for step in STEPS.into_iter().filter(|s| *s >= from) {
            let detail = serde_json::to_string(&req).unwrap_or_default();
            let name = step.name();
            if let Err(e) = self
                .rec
                .state()
                .write(move |w| w.journal_step(id, name, Some(&detail)))
                .await
            {
                error = Some(format!("cannot journal step {name}: {e}"));
                steps.push(failed(format!("journal {name}"), e.to_string()));
                break;
            }
            #[cfg(test)]
            if self.crashes(name, false) {
                return Migration {
                    steps,
                    moved: false,
                };
            }
            let r = self.step(step, &mut req, &p).await;
            tracing::info!(service = %service, step = name, result = ?r.state, detail = %r.detail, "migration step");
            #[cfg(test)]
            if self.crashes(name, true) {
                return Migration {
                    steps,
                    moved: false,
                };
            }
            let fatal = matches!(r.state, StepState::Failed(_)) && step.fatal();
            if let StepState::Failed(e) = &r.state {
                if fatal {
                    error = Some(format!("{}: {e}", r.step));
                }
            }
            steps.push(r);
            if fatal {
                if step <= Step::Deploy && !req.source_gone && from <= Step::Deploy {
                    steps.push(self.restart_source(&req).await);
                }
                break;
            }
        }
        let moved = error.is_none();
        let summary = match &error {
            None => {
                let notes: Vec<String> = steps
                    .iter()
                    .filter_map(|s| match &s.state {
                        StepState::Failed(e) => Some(format!("{}: {e}", s.step)),
                        _ => None,
                    })
                    .collect();
                let mut d = format!("moved from {} to {}", req.from, req.to);
                if req.source_gone {
                    d.push_str(&format!(
                        " from snapshot {} (the source was unreachable)",
                        req.snapshot.as_deref().unwrap_or("?")
                    ));
                }
                if !notes.is_empty() {
                    d.push_str(&format!("; {}", notes.join("; ")));
                }
                d
            }
            Some(e) => format!("not moved ({e}); it stays on {}", req.from),
        };
        let status = if moved {
            JournalStatus::Succeeded
        } else {
            JournalStatus::Failed
        };
        let now = self.rec.now();
        if let Err(e) = self
            .rec
            .state()
            .write(move |w| w.journal_finish(id, status, Some(&summary), now))
            .await
        {
            tracing::error!(service = %service, error = %e, "cannot journal the end of a migration");
        }
        drop(guard);
        self.rec.kick();
        Migration { steps, moved }
    }

    async fn step(&self, step: Step, req: &mut MigrateRequest, p: &Placement) -> RestoreStep {
        let (svc, from, to) = (req.service.clone(), req.from.clone(), req.to.clone());
        let agents = self.rec.agents().clone();
        match step {
            Step::Stop => {
                let title = format!("stop {svc} on {from}");
                if req.source_gone {
                    return skipped(title, "the source is unreachable".to_string());
                }
                let why = match self.source(&from).await {
                    Ok(src) => match agents.stop(&src, &svc, None).await {
                        Ok(_) => return done(title, String::new()),
                        Err(e) if source_lost(&e) => e.to_string(),
                        Err(e) => return failed(title, e.to_string()),
                    },
                    Err(why) => why,
                };
                match self.choose(&svc, None).await {
                    Ok(r) => {
                        req.source_gone = true;
                        req.snapshot = Some(r.file.clone());
                        skipped(
                            title,
                            format!(
                                "the source is unreachable ({why}): restoring from the latest snapshot {} taken {} ago on {}",
                                r.file,
                                age(self.rec.now(), r.created_at),
                                r.node
                            ),
                        )
                    }
                    Err(e) => failed(
                        title,
                        format!("the source is unreachable ({why}) and there is nothing to restore from: {e}"),
                    ),
                }
            }
            Step::Export => {
                let title = format!("export {svc} from {from}");
                if req.source_gone {
                    return skipped(
                        title,
                        format!(
                            "the data comes from snapshot {}",
                            req.snapshot.as_deref().unwrap_or("?")
                        ),
                    );
                }
                let src = match self.source(&from).await {
                    Ok(t) => t,
                    Err(why) => return failed(title, why),
                };
                match self.store_from(&svc, &src).await {
                    Ok(t) => {
                        req.snapshot = Some(t.record.file.clone());
                        done(
                            title,
                            format!(
                                "{} bytes stored as {} (sha256 {})",
                                t.record.size,
                                self.path_of(&t.record).display(),
                                t.record.checksum
                            ),
                        )
                    }
                    Err(e) => failed(title, e.to_string()),
                }
            }
            Step::Import => {
                let title = format!("import {svc} on {to}");
                let r = match self.choose(&svc, req.snapshot.as_deref()).await {
                    Ok(r) => r,
                    Err(e) => return failed(title, e.to_string()),
                };
                let path = match self.readable(&r) {
                    Ok(p) => p,
                    Err(e) => return failed(title, e.to_string()),
                };
                let t = match self.rec.target(&to).await {
                    Ok(t) => t,
                    Err(e) => return failed(title, e.to_string()),
                };
                let mut r = self.import_into(&t, &r, path, req.force).await;
                if let StepState::Failed(e) = &mut r.state {
                    if !req.force && e.contains("--force") {
                        e.push_str(&format!(
                            "; to replace {to}'s copy run `mcp migrate {svc} --to {to} --force` (after a master restart during an import, that copy may be this migration's own)"
                        ));
                    }
                }
                r
            }
            Step::Deploy => {
                let title = format!("deploy {svc} on {to}");
                let t = match self.rec.target(&to).await {
                    Ok(t) => t,
                    Err(e) => return failed(title, e.to_string()),
                };
                match agents.deploy(&t, &moved_spec(p, &to), None).await {
                    Ok(_) => done(title, String::new()),
                    Err(e) => failed(title, e.to_string()),
                }
            }
            Step::Dns => self.move_dns(&svc, &to).await,
            Step::Edge => {
                let title = format!("edge routes of {svc}");
                let s = svc.clone();
                match self.rec.state().read(move |r| r.edge_routes_of(&s)).await {
                    Ok(routes) if routes.is_empty() => {
                        skipped(title, format!("no edge route points at {svc}"))
                    }
                    Ok(routes) => {
                        let names: Vec<String> = routes.into_iter().map(|r| r.hostname).collect();
                        skipped(
                            title,
                            format!(
                                "edge routing is not available in this build: {} left as they are",
                                names.join(", ")
                            ),
                        )
                    }
                    Err(e) => failed(title, e.to_string()),
                }
            }
            Step::Cleanup => {
                let title = format!("clean up {svc} on {from}");
                if req.source_gone {
                    return skipped(
                        title,
                        format!(
                            "{from} is unreachable: whatever it still holds of {svc} stays there"
                        ),
                    );
                }
                let src = match self.source(&from).await {
                    Ok(t) => t,
                    Err(why) => return failed(title, why),
                };
                match agents.undeploy(&src, &svc, true).await {
                    Ok(_) => done(title, format!("containers and /srv/{svc}/ removed")),
                    Err(AgentError::Rpc {
                        code: tonic::Code::NotFound,
                        ..
                    }) => done(title, "not deployed there any more".to_string()),
                    Err(e) => failed(title, e.to_string()),
                }
            }
            Step::Placement => {
                let title = format!("placement of {svc}");
                match self.rec.record_deployed(&moved_spec(p, &to), &to).await {
                    Ok(()) => done(title, format!("{svc} runs on {to}")),
                    Err(e) => failed(title, e),
                }
            }
        }
    }

    /// Tests: arms a simulated master death at `step` (see `crash_at`).
    #[cfg(test)]
    pub(crate) fn crash_at(&self, at: Option<(&'static str, bool)>) {
        *self
            .crash_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = at;
    }

    #[cfg(test)]
    fn crashes(&self, step: &str, after: bool) -> bool {
        let g = self
            .crash_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        matches!(*g, Some((s, a)) if s == step && a == after)
    }

    /// The source's agent, unless the registry says it is not healthy.
    async fn source(&self, node: &str) -> Result<AgentTarget, String> {
        let name = node.to_string();
        match self.rec.state().read(move |r| r.node(&name)).await {
            Ok(Some(n)) if n.status == NodeStatus::Healthy => Ok(AgentTarget {
                node: n.name,
                address: n.address,
            }),
            Ok(Some(n)) => Err(format!("{node} is {}", n.status.as_str())),
            Ok(None) => Err(format!("{node} is not registered")),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn move_dns(&self, service: &str, to: &str) -> RestoreStep {
        let name = self.rec.settings().policy.internal_name(service);
        let title = format!("dns {name}");
        if self.rec.dns().is_none() {
            return skipped(title, "no DNS adapter is configured ([dns])".to_string());
        }
        let n = to.to_string();
        let address = match self.rec.state().read(move |r| r.node(&n)).await {
            Ok(Some(n)) => address_host(&n.address),
            Ok(None) => return failed(title, format!("node {to} is not registered")),
            Err(e) => return failed(title, e.to_string()),
        };
        match self.rec.set_dns(&name, &address).await {
            Ok(d) => done(title, d),
            Err(e) => failed(title, e),
        }
    }

    /// After a failed move: the service runs on the source again.
    async fn restart_source(&self, req: &MigrateRequest) -> RestoreStep {
        let title = format!("start {} on {} again", req.service, req.from);
        let src = match self.source(&req.from).await {
            Ok(t) => t,
            Err(why) => return failed(title, why),
        };
        match self.rec.agents().start(&src, &req.service, None).await {
            Ok(_) => done(
                title,
                "the move failed; its data there was not touched".to_string(),
            ),
            Err(e) => failed(title, e.to_string()),
        }
    }

    /// Claims the migrations a previous master left running: each service
    /// is marked as moving now (so the control loop, started next, leaves
    /// it alone); [`Snapshots::resume`] finishes them.
    pub async fn pending_migrations(&self) -> Result<Vec<Pending>, SnapshotError> {
        let open = self.rec.state().read(|r| r.journal_unfinished()).await?;
        let mut out = Vec::new();
        for e in open.into_iter().filter(|e| e.op == MIGRATE_OP) {
            let Some(guard) = self.rec.begin_move(&e.service) else {
                continue;
            };
            match serde_json::from_str::<MigrateRequest>(&e.detail) {
                Ok(req) => out.push(Pending {
                    id: e.id,
                    req,
                    step: e.step,
                    guard,
                }),
                Err(err) => {
                    let detail = format!(
                        "interrupted by a master restart at step {}; its journal entry is unreadable ({err}): check where {} runs",
                        e.step, e.service
                    );
                    let (id, now) = (e.id, self.rec.now());
                    self.rec
                        .state()
                        .write(move |w| {
                            w.journal_finish(id, JournalStatus::Abandoned, Some(&detail), now)
                        })
                        .await?;
                }
            }
        }
        Ok(out)
    }

    /// Resumes claimed migrations one at a time, each from its journaled
    /// step (a stop or export redone from the stop; an import without its
    /// snapshot from the stop too).
    pub async fn resume(self: Arc<Self>, pending: Vec<Pending>) {
        for Pending {
            id,
            req,
            step,
            guard,
        } in pending
        {
            let service = req.service.clone();
            let _lock = self.rec.locks().lock(&service).await;
            let from = match Step::parse(&step) {
                Some(Step::Stop | Step::Export) => Step::Stop,
                Some(Step::Import) if req.snapshot.is_none() => Step::Stop,
                Some(s) => s,
                None => Step::Stop,
            };
            let s = service.clone();
            let placement = match self.rec.state().read(move |r| r.placement(&s)).await {
                Ok(Some(p)) => p,
                Ok(None) | Err(_) => {
                    let detail = format!(
                        "interrupted by a master restart at step {step}; {service} has no placement any more: not resumed"
                    );
                    let now = self.rec.now();
                    let _ = self
                        .rec
                        .state()
                        .write(move |w| {
                            w.journal_finish(id, JournalStatus::Abandoned, Some(&detail), now)
                        })
                        .await;
                    continue;
                }
            };
            tracing::warn!(service = %service, step = %step, from = %req.from, to = %req.to, "resuming a migration interrupted by a master restart");
            let m = self.run(id, req, placement, from, guard).await;
            tracing::info!(service = %service, moved = m.moved, "resumed migration finished");
        }
    }
}

/// The reconciler's `migrate` step (`allow_auto_migrate`): the same flow.
#[tonic::async_trait]
impl crate::reconcile::Migrator for Snapshots {
    async fn migrate_locked(&self, service: &str, to: &str) -> Result<String, String> {
        match Snapshots::migrate_locked(self, service, to, false).await {
            Ok(m) if m.moved => Ok(format!("migrated to {to}")),
            Ok(m) => Err(m
                .steps
                .iter()
                .filter_map(|s| match &s.state {
                    StepState::Failed(e) => Some(format!("{}: {e}", s.step)),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("; ")),
            Err(e) => Err(e.to_string()),
        }
    }
}
