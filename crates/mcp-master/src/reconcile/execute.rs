//! Executing a plan: the ready steps of every entry under its service's
//! lock, core tier first, bounded concurrency, every operation journaled;
//! each action through the agents and recorded in the database.

use super::*;

impl Reconciler {
    /// Executes the plan's ready steps: core tier first, then workers; up to
    /// `concurrency` services at a time; each service's steps in order under
    /// its lock. Skipped steps are reported as skipped.
    pub async fn apply(self: &Arc<Self>, plan: &Plan, desired: &Desired) -> Vec<StepOutcome> {
        let epoch = self.move_epoch();
        self.apply_since(plan, desired, epoch).await
    }

    /// [`Reconciler::apply`] of a plan made from an observation taken at
    /// move epoch `epoch`: a service migrated since (or being migrated) is
    /// left for the next pass, which sees where it runs now.
    pub async fn apply_since(
        self: &Arc<Self>,
        plan: &Plan,
        desired: &Desired,
        epoch: u64,
    ) -> Vec<StepOutcome> {
        if plan.refused.is_some() {
            return Vec::new();
        }
        let mut all: Vec<(usize, Vec<StepOutcome>)> = Vec::new();
        for tier in [Tier::Core, Tier::Worker] {
            let sem = Arc::new(Semaphore::new(self.settings.concurrency));
            let mut set = JoinSet::new();
            for (i, e) in plan.entries.iter().enumerate() {
                if e.tier != tier || !e.steps.iter().any(Step::is_ready) {
                    continue;
                }
                let me = self.clone();
                let entry = e.clone();
                let spec = desired.spec(&e.service).cloned();
                let source = plan.source.clone();
                let sem = sem.clone();
                set.spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    (i, me.apply_entry(entry, spec, source, epoch).await)
                });
            }
            while let Some(r) = set.join_next().await {
                match r {
                    Ok(x) => all.push(x),
                    Err(e) => tracing::error!(error = %e, "a service's apply task failed"),
                }
            }
        }
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().flat_map(|(_, r)| r).collect()
    }

    async fn apply_entry(
        self: Arc<Self>,
        entry: Entry,
        spec: Option<ServiceSpec>,
        source: Option<String>,
        epoch: u64,
    ) -> Vec<StepOutcome> {
        let _lock = self.locks.lock(&entry.service).await;
        let service = entry.service.clone();
        let steps: Vec<_> = entry.steps.iter().filter(runnable).collect();
        if let Some(why) = self.moved_since(&service, epoch) {
            return steps
                .iter()
                .map(|s| StepOutcome {
                    service: service.clone(),
                    action: s.action.clone(),
                    status: StepStatus::Skipped,
                    error: String::new(),
                    detail: format!("{why}; the next pass plans from where it runs now"),
                })
                .collect();
        }
        let mut out = Vec::new();
        let first = steps
            .iter()
            .find(|s| s.is_ready())
            .map(|s| s.action.to_string());
        let journal = match first {
            None => None,
            Some(first) => {
                let detail = format!(
                    "{}; source {}",
                    entry.reason,
                    source.as_deref().unwrap_or("-")
                );
                let now = self.now();
                let (kind, svc) = (entry.kind.as_str(), service.clone());
                match self
                    .state
                    .write(move |w| w.journal_begin(kind, &svc, &first, &detail, now))
                    .await
                {
                    Ok(id) => Some(id),
                    Err(e) => {
                        tracing::error!(service = %service, error = %e, "cannot journal; not applying");
                        return vec![StepOutcome {
                            service: service.clone(),
                            action: steps[0].action.clone(),
                            status: StepStatus::Failed,
                            error: format!("cannot journal the operation: {e}"),
                            detail: String::new(),
                        }];
                    }
                }
            }
        };
        let mut failed: Option<String> = None;
        for s in steps {
            if let Some(why) = s.skipped_reason() {
                out.push(StepOutcome {
                    service: service.clone(),
                    action: s.action.clone(),
                    status: StepStatus::Skipped,
                    error: String::new(),
                    detail: why.to_string(),
                });
                continue;
            }
            if let Some(f) = &failed {
                out.push(StepOutcome {
                    service: service.clone(),
                    action: s.action.clone(),
                    status: StepStatus::Failed,
                    error: format!("not run: an earlier step failed ({f})"),
                    detail: String::new(),
                });
                continue;
            }
            let step_name = s.action.to_string();
            if let Some(id) = journal {
                let name = step_name.clone();
                if let Err(e) = self
                    .state
                    .write(move |w| w.journal_step(id, &name, None))
                    .await
                {
                    tracing::error!(service = %service, error = %e, "cannot journal step");
                }
            }
            let r = self.execute(&s.action, spec.as_ref()).await;
            match r {
                Ok(detail) => {
                    tracing::info!(service = %service, step = %step_name, "step succeeded");
                    out.push(StepOutcome {
                        service: service.clone(),
                        action: s.action.clone(),
                        status: StepStatus::Succeeded,
                        error: String::new(),
                        detail,
                    });
                }
                Err(error) => {
                    tracing::warn!(service = %service, step = %step_name, error = %error, "step failed; retried on the next pass");
                    let event = if error.contains(mcp_proto::ROLLED_BACK) {
                        "rolled_back"
                    } else {
                        "step_failed"
                    };
                    self.alerts.raise(crate::alerts::alert(
                        event,
                        format!("{event}:{service}:{step_name}"),
                        &service,
                        s.action.placement_target().unwrap_or_default(),
                        format!("{step_name}: {error}"),
                    ));
                    failed = Some(error.clone());
                    out.push(StepOutcome {
                        service: service.clone(),
                        action: s.action.clone(),
                        status: StepStatus::Failed,
                        error,
                        detail: String::new(),
                    });
                }
            }
        }
        if let Some(id) = journal {
            let now = self.now();
            let (status, detail) = match &failed {
                None => (JournalStatus::Succeeded, None),
                Some(e) => (JournalStatus::Failed, Some(e.clone())),
            };
            if let Err(e) = self
                .state
                .write(move |w| w.journal_finish(id, status, detail.as_deref(), now))
                .await
            {
                tracing::error!(service = %service, error = %e, "cannot journal the end of an operation");
            }
        }
        out
    }

    /// Executes one action; `Ok` carries a detail for the operator.
    async fn execute(&self, action: &Action, spec: Option<&ServiceSpec>) -> Result<String, String> {
        let now = self.now();
        let need_spec =
            |service: &str| spec.ok_or_else(|| format!("no desired spec of {service} to deploy"));
        match action {
            Action::Deploy {
                service,
                node,
                spec_hash,
            } => {
                let spec = need_spec(service)?;
                let t = self.target(node).await.map_err(|e| e.to_string())?;
                if let Err(e) = self.agents.deploy(&t, spec, None).await {
                    return Err(self.spec_call_failed(spec, node, e).await);
                }
                self.record_placement(spec, node, spec_hash, now, true)
                    .await?;
                Ok(format!("deployed on {node}"))
            }
            Action::Start {
                service,
                node,
                spec_hash,
            }
            | Action::Stop {
                service,
                node,
                spec_hash,
            } => {
                // The agent is sent the new desired spec: it differs from the
                // deployed one only in `active`, so the agent records it (and
                // its hash) and starts or stops the components.
                let spec = need_spec(service)?;
                let t = self.target(node).await.map_err(|e| e.to_string())?;
                if let Err(e) = self.agents.deploy(&t, spec, None).await {
                    return Err(self.spec_call_failed(spec, node, e).await);
                }
                self.record_placement(spec, node, spec_hash, now, false)
                    .await?;
                Ok(format!(
                    "{} on {node}",
                    if spec.active { "started" } else { "stopped" }
                ))
            }
            Action::Undeploy { service, node } => {
                let t = self.target(node).await.map_err(|e| e.to_string())?;
                self.agents
                    .undeploy(&t, service, false)
                    .await
                    .map_err(|e| e.to_string())?;
                let s = service.clone();
                self.state
                    .write(move |w| {
                        w.remove_placement(&s)?;
                        w.reset_heal_of_service(&s)
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(format!("undeployed from {node} (data kept)"))
            }
            Action::Heal {
                service,
                node,
                components,
                method,
            } => {
                let (s, cs) = (service.clone(), components.clone());
                self.state
                    .write(move |w| {
                        for c in &cs {
                            w.record_heal_attempt(&s, c, now, None)?;
                        }
                        Ok(())
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                let t = self.target(node).await.map_err(|e| e.to_string())?;
                let r = match method {
                    HealMethod::Start | HealMethod::Restart => {
                        let mut r = Ok(());
                        for c in components {
                            let done = if *method == HealMethod::Restart {
                                self.agents.restart(&t, service, Some(c)).await
                            } else {
                                self.agents.start(&t, service, Some(c)).await
                            };
                            if let Err(e) = done {
                                r = Err(e.to_string());
                                break;
                            }
                        }
                        r
                    }
                    HealMethod::Redeploy => {
                        let spec = need_spec(service)?;
                        match self.agents.deploy(&t, spec, None).await {
                            Ok(_) => {
                                self.record_placement(
                                    spec,
                                    node,
                                    &mcp_spec::spec_hash(spec),
                                    now,
                                    false,
                                )
                                .await
                            }
                            Err(e) => Err(self.spec_call_failed(spec, node, e).await),
                        }
                    }
                };
                if let Err(e) = &r {
                    for c in components {
                        let (s, c, e) = (service.clone(), c.clone(), e.clone());
                        let _ = self
                            .state
                            .write(move |w| w.record_heal_error(&s, &c, &e))
                            .await;
                    }
                }
                r.map(|()| format!("self-heal attempt for {}", components.join(", ")))
            }
            Action::Alert {
                service,
                node,
                component,
                detail,
            } => {
                let alert = mcp_alert::Alert {
                    key: format!("degraded:{service}/{component}"),
                    service: service.clone(),
                    component: component.clone(),
                    event: "degraded".to_string(),
                    detail: format!("self-heal gave up: {detail}"),
                    node: node.clone(),
                };
                // A failed command is not marked sent: the next pass plans
                // the alert again.
                let sent = self
                    .alerts
                    .send(&alert)
                    .await
                    .map_err(|e| format!("alert command failed (retried next pass): {e}"))?;
                let (s, c) = (service.clone(), component.clone());
                self.state
                    .write(move |w| w.mark_heal_alerted(&s, &c))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(match sent {
                    crate::alerts::Sent::Sent => "alert sent".to_string(),
                    crate::alerts::Sent::HeldBack => {
                        "alert held back: the same alert was sent within [alerts] cooldown"
                            .to_string()
                    }
                    crate::alerts::Sent::NotConfigured => {
                        "alert logged (no alert command is configured)".to_string()
                    }
                })
            }
            Action::Migrate { service, from, to } => {
                match self.migrator.get().and_then(std::sync::Weak::upgrade) {
                    Some(m) => m.migrate_locked(service, to).await,
                    None => Err(format!(
                        "migrating {service} from {from} to {to} needs the snapshot store ([snapshots] dir): the data travels through it; the service stays on {from}"
                    )),
                }
            }
            Action::SetDns { name, address } => self.set_dns(name, address).await,
            Action::RemoveDns { name } => self.remove_dns(name).await,
            Action::SetEdgeRoute { .. } | Action::RemoveEdgeRoute { .. } => {
                Err("no adapter is available for this step".to_string())
            }
        }
    }

    /// Records that `spec` now runs on `node` after a deploy outside a pass
    /// (one component, `Deploy` with `component`); heal records are kept.
    pub async fn record_deployed(&self, spec: &ServiceSpec, node: &str) -> Result<(), String> {
        let hash = mcp_spec::spec_hash(spec);
        self.record_placement(spec, node, &hash, self.now(), false)
            .await
    }

    async fn record_placement(
        &self,
        spec: &ServiceSpec,
        node: &str,
        spec_hash: &str,
        now: SystemTime,
        reset_heal: bool,
    ) -> Result<(), String> {
        let (spec, node, spec_hash) = (spec.clone(), node.to_string(), spec_hash.to_string());
        self.state
            .write(move |w| {
                let deployed_at = match w.placement(&spec.name)? {
                    Some(p) if !reset_heal && p.node == node => p.deployed_at,
                    _ => now,
                };
                w.put_placement(&state::Placement {
                    service: spec.name.clone(),
                    node: node.to_string(),
                    tier: spec.tier,
                    spec_hash: spec_hash.to_string(),
                    spec: spec.clone(),
                    deployed_at,
                })?;
                if reset_heal {
                    w.reset_heal_of_service(&spec.name)?;
                }
                // It deployed: whatever was refused before is past.
                w.clear_failed_spec(&spec.name)?;
                w.record_deploy_outcome(&state::DeployOutcome {
                    service: spec.name.clone(),
                    spec_hash: spec_hash.clone(),
                    outcome: state::Outcome::Deployed,
                    node: node.clone(),
                    detail: String::new(),
                    at: now,
                })?;
                Ok(())
            })
            .await
            .map_err(|e| format!("deployed, but recording the placement failed: {e}"))
    }
}

/// Ready or skipped (reported as skipped); blocked steps are left out.
fn runnable(s: &&Step) -> bool {
    s.blocked_reason().is_none()
}
