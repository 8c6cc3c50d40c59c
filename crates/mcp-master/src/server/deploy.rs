//! `Deploy` (a whole service through a one-service pass, or one component
//! on the service's node), `Undeploy` and `Sync`.

use super::*;

impl MasterService {
    pub(super) async fn deploy_rpc(
        &self,
        req: Request<pb::MasterDeployRequest>,
    ) -> R<pb::MasterDeployResponse> {
        let caller = require_caller(&req)?.identity.name.clone();
        let inner = req.get_ref().clone();
        let spec = spec_from_pb(inner.service)?;
        let name = spec.name.clone();
        set_audit_target(&req, target(Some(&name), None));
        if !inner.component.is_empty() {
            return self.deploy_component(&caller, spec, &inner.component).await;
        }
        let mut note = None;
        let desired = if self.rec.gitops() {
            let d = self.rec.desired().await.map_err(rec_status)?;
            match d.services.get(&name) {
                None if d.held.contains_key(&name) => {
                    return Err(Status::failed_precondition(format!(
                        "GitOps mode: the committed file of {name} cannot be read; fix and commit it"
                    )))
                }
                None => {
                    return Err(Status::failed_precondition(format!(
                        "GitOps mode: {name} is not in the committed services directory; commit its file first"
                    )))
                }
                Some(committed) if *committed != spec => {
                    note = Some(format!(
                        "GitOps mode: deployed the committed spec of {name}; the request's spec differs (commit it to deploy it)"
                    ));
                }
                Some(_) => {}
            }
            d
        } else {
            let now = self.rec.now();
            self.rec
                .state()
                .write({
                    let (spec, source) = (spec.clone(), format!("deploy by {caller}"));
                    move |w| w.put_desired_spec(&spec, &source, now)
                })
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            self.rec.desired().await.map_err(rec_status)?
        };
        // An explicit deploy retries a spec an agent refused before.
        if self.rec.clear_failed(&name).await.map_err(rec_status)? {
            tracing::info!(service = %name, caller = %caller, "deploy: retrying a spec an agent refused before");
        }
        let out = self
            .pass(PassOptions {
                only: Some(name.clone()),
                desired: Some(desired),
                reason: format!("deploy {name} by {caller}"),
                ..PassOptions::default()
            })
            .await?;
        let node = self
            .rec
            .state()
            .read({
                let name = name.clone();
                move |r| r.placement(&name)
            })
            .await
            .ok()
            .flatten()
            .map(|p| p.node)
            .unwrap_or_default();
        let mut resp = deploy_response(&name, &out, node);
        if let (Some(n), Some(d)) = (note, resp.deploy_result.as_mut()) {
            d.detail = if d.detail.is_empty() {
                n
            } else {
                format!("{}; {n}", d.detail)
            };
        }
        Ok(Response::new(resp))
    }

    /// `Deploy` with a component: redeploys that component alone on the
    /// service's node. The spec (the committed one in GitOps mode) may
    /// differ from the deployed one only inside that component, so what the
    /// node records as deployed is what runs.
    pub(super) async fn deploy_component(
        &self,
        caller: &str,
        requested: ServiceSpec,
        component: &str,
    ) -> R<pb::MasterDeployResponse> {
        let name = requested.name.clone();
        let mut note = None;
        let spec = if self.rec.gitops() {
            let d = self.rec.desired().await.map_err(rec_status)?;
            match d.services.get(&name) {
                None => {
                    return Err(Status::failed_precondition(format!(
                        "GitOps mode: {name} is not in the committed services directory, or its file cannot be read; commit it first"
                    )))
                }
                Some(committed) => {
                    if *committed != requested {
                        note = Some(format!(
                            "GitOps mode: deployed the committed spec of {name}; the request's spec differs (commit it to deploy it)"
                        ));
                    }
                    committed.clone()
                }
            }
        } else {
            requested
        };
        if spec.component(component).is_none() {
            return Err(Status::invalid_argument(format!(
                "service {name} has no component {component}"
            )));
        }
        let placed = self.placement(&name).await.map_err(|_| {
            Status::failed_precondition(format!(
                "service {name} is not deployed on any node yet: deploy the whole service first"
            ))
        })?;
        if !differs_only_in(&placed.spec, &spec, component) {
            return Err(Status::failed_precondition(format!(
                "the spec of {name} differs from the one deployed on {} outside component {component}: deploy the whole service",
                placed.node
            )));
        }
        let t = self.service_target(&name, None).await?;
        let _lock = self.rec.locks().lock(&name).await;
        if !self.rec.gitops() {
            let now = self.rec.now();
            self.rec
                .state()
                .write({
                    let (spec, source) = (spec.clone(), format!("deploy by {caller}"));
                    move |w| w.put_desired_spec(&spec, &source, now)
                })
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        let what = format!("deploy {name}/{component} on {}", t.node);
        let skipped = |s: &str| {
            step(
                s,
                StepStatus::Skipped,
                "",
                "one component redeployed: no change",
            )
        };
        let result = self.rec.agents().deploy(&t, &spec, Some(component)).await;
        let (success, error, deploy) = match result {
            Ok(steps) => {
                self.rec
                    .record_deployed(&spec, &t.node)
                    .await
                    .map_err(Status::internal)?;
                let mut detail: Vec<String> = steps
                    .iter()
                    .filter(|s| s.state == StepState::Done)
                    .map(|s| s.step.clone())
                    .collect();
                if detail.is_empty() {
                    detail.push("unchanged; nothing recreated".to_string());
                }
                detail.extend(note);
                let ok = step(&what, StepStatus::Succeeded, "", &detail.join("; "));
                (true, String::new(), ok)
            }
            Err(e) => {
                let error = e.to_string();
                let failed = step(&what, StepStatus::Failed, &error, "");
                (false, error, failed)
            }
        };
        Ok(Response::new(pb::MasterDeployResponse {
            node: t.node.clone(),
            success,
            error,
            deploy_result: Some(deploy),
            edge_route_result: Some(skipped("edge route")),
            dns_result: Some(skipped("dns")),
        }))
    }

    pub(super) async fn undeploy_rpc(
        &self,
        req: Request<pb::MasterUndeployRequest>,
    ) -> R<pb::MasterUndeployResponse> {
        let caller = require_caller(&req)?.identity.name.clone();
        let name = req.get_ref().service_name.clone();
        set_audit_target(&req, target(Some(&name), None));
        let mut desired = self.rec.desired().await.map_err(rec_status)?;
        if self.rec.gitops() {
            if desired.services.contains_key(&name) || desired.held.contains_key(&name) {
                return Err(Status::failed_precondition(format!(
                    "GitOps mode: {name} is still in the committed services directory; delete its file and commit (the master then undeploys it)"
                )));
            }
        } else {
            self.rec
                .state()
                .write({
                    let name = name.clone();
                    move |w| w.remove_desired_spec(&name)
                })
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            desired.services.remove(&name);
        }
        let placed = self
            .rec
            .state()
            .read({
                let name = name.clone();
                move |r| r.placement(&name)
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        if placed.is_none() {
            return Ok(Response::new(pb::MasterUndeployResponse {
                success: true,
                error: String::new(),
                results: vec![step(
                    &format!("undeploy {name}"),
                    StepStatus::Succeeded,
                    "",
                    "not placed on any node; nothing to do",
                )],
            }));
        }
        let out = self
            .pass(PassOptions {
                only: Some(name.clone()),
                desired: Some(desired),
                reason: format!("undeploy {name} by {caller}"),
                ..PassOptions::default()
            })
            .await?;
        let mut errors: Vec<String> = out
            .results
            .iter()
            .filter(|r| r.status == StepStatus::Failed)
            .map(|r| format!("{}: {}", r.step(), r.error))
            .collect();
        if let Some(e) = not_done(&out.plan, &name) {
            errors.push(e);
        }
        Ok(Response::new(pb::MasterUndeployResponse {
            success: errors.is_empty(),
            error: errors.join("; "),
            results: out.results.iter().map(outcome_pb).collect(),
        }))
    }

    pub(super) async fn sync_rpc(&self, req: Request<pb::SyncRequest>) -> R<pb::SyncResponse> {
        let caller = require_caller(&req)?.identity.name.clone();
        let req = req.into_inner();
        let mut specs = Vec::new();
        for m in req.services {
            specs.push(spec_from_pb(Some(m))?);
        }
        let mut names = BTreeSet::new();
        for s in &specs {
            if !names.insert(s.name.clone()) {
                return Err(Status::invalid_argument(format!(
                    "service {} appears twice in the request",
                    s.name
                )));
            }
        }
        let held: BTreeMap<String, Held> = req
            .unreadable
            .into_iter()
            .map(|u| {
                (
                    u.name,
                    Held {
                        file: u.file,
                        errors: u.errors,
                        reason: None,
                    },
                )
            })
            .collect();
        let source = if req.source.is_empty() {
            format!("sync by {caller}")
        } else {
            req.source.clone()
        };
        let requested = Desired {
            source: Some(source.clone()),
            services: specs.iter().map(|s| (s.name.clone(), s.clone())).collect(),
            held: held.clone(),
        };
        let gitops = self.rec.gitops();
        let reason = format!("sync by {caller}");
        let mut prefix = Vec::new();
        // `--expect-commit`: GitOps applies exactly the checked tree.
        let mut checked: Option<Desired> = None;
        if !req.expect_commit.is_empty() {
            let at = if gitops {
                let d = self.rec.desired().await.map_err(rec_status)?;
                let at = d.source.clone().unwrap_or_default();
                checked = Some(d);
                at
            } else {
                req.source.clone()
            };
            check_expected_commit(&req.expect_commit, &at, gitops)?;
            prefix.push(step(
                "expect-commit",
                StepStatus::Succeeded,
                "",
                &format!("the desired state is at {at}, as expected"),
            ));
        }
        let out = if req.dry_run {
            let desired = if gitops && specs.is_empty() && held.is_empty() {
                checked
            } else {
                Some(requested)
            };
            self.pass(PassOptions {
                allow_mass_prune: req.allow_mass_prune,
                dry_run: true,
                desired,
                reason,
                ..PassOptions::default()
            })
            .await?
        } else if gitops {
            prefix.push(step(
                "source",
                StepStatus::Succeeded,
                "",
                &format!(
                    "GitOps mode: the request's {} specs are ignored; the committed tree at HEAD of the services directory is applied",
                    specs.len()
                ),
            ));
            self.pass(PassOptions {
                allow_mass_prune: req.allow_mass_prune,
                desired: checked,
                reason,
                ..PassOptions::default()
            })
            .await?
        } else {
            // Check the guard before the new desired state is stored, so a
            // refused sync leaves the previous one in force.
            let preview = self
                .pass(PassOptions {
                    allow_mass_prune: req.allow_mass_prune,
                    dry_run: true,
                    desired: Some(requested),
                    reason: reason.clone(),
                    ..PassOptions::default()
                })
                .await?;
            if preview.plan.refused.is_some() {
                preview
            } else {
                let held_names: Vec<String> = held.keys().cloned().collect();
                self.rec
                    .store_pushed(&specs, &held_names, &source)
                    .await
                    .map_err(rec_status)?;
                self.pass(PassOptions {
                    allow_mass_prune: req.allow_mass_prune,
                    reason,
                    ..PassOptions::default()
                })
                .await?
            }
        };
        let mut results = prefix;
        results.extend(out.results.iter().map(outcome_pb));
        Ok(Response::new(pb::SyncResponse {
            plan_json: mcp_planner::render_json(&out.plan),
            results,
            changes: out.plan.has_changes(),
        }))
    }
}

/// `--expect-commit E` against the desired state's source `at`: `E` (4 to
/// 40 hex digits) must be a prefix of the commit id `at` starts with, and
/// a pushed work tree must be clean.
fn check_expected_commit(expect: &str, at: &str, gitops: bool) -> Result<(), Status> {
    let e = expect.trim().to_ascii_lowercase();
    if e.len() < 4 || e.len() > 40 || !e.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Status::invalid_argument(format!(
            "expect_commit {expect:?} is not a commit id (4 to 40 hex digits)"
        )));
    }
    let where_ = if gitops {
        "the master's services repository is at"
    } else {
        "the pushed services come from"
    };
    let commit = at
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let is_commit = !commit.is_empty() && commit.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_commit {
        return Err(Status::failed_precondition(format!(
            "--expect-commit {expect}: {where_} {at:?}, which is not a commit (a git work tree is needed); nothing applied"
        )));
    }
    if at.contains("dirty") {
        return Err(Status::failed_precondition(format!(
            "--expect-commit {expect}: {where_} {at}, with uncommitted changes; commit them and preview again; nothing applied"
        )));
    }
    if !(commit.starts_with(&e) || e.starts_with(&commit)) {
        return Err(Status::failed_precondition(format!(
            "--expect-commit {expect}: {where_} {at}, not {expect}: it moved since the preview; run `mcp sync --dry-run` again; nothing applied"
        )));
    }
    Ok(())
}

/// The entry of `service` in a plan that is not going to happen (held,
/// blocked, refused...), as an error line.
fn not_done(plan: &Plan, service: &str) -> Option<String> {
    if let Some(r) = &plan.refused {
        return Some(r.clone());
    }
    let e = plan.entry(service)?;
    match e.kind {
        Kind::Held | Kind::Blocked | Kind::Refused | Kind::Degraded | Kind::Waiting => {
            let mut s = format!("{}: {}", e.kind.as_str(), e.reason);
            for d in &e.details {
                s.push_str("; ");
                s.push_str(d);
            }
            for st in &e.steps {
                if let Some(b) = st.blocked_reason() {
                    s.push_str(&format!("; {} blocked: {b}", st.action));
                }
            }
            Some(s)
        }
        _ => None,
    }
}

/// True when `new` is `deployed` with only `component` changed (or not
/// changed at all).
fn differs_only_in(deployed: &ServiceSpec, new: &ServiceSpec, component: &str) -> bool {
    let mut probe = deployed.clone();
    match (
        probe.components.iter_mut().find(|c| c.name == component),
        new.component(component),
    ) {
        (Some(slot), Some(c)) => {
            *slot = c.clone();
            probe == *new
        }
        _ => false,
    }
}

/// The main result of a one-service pass: the deploy-like step, DNS, edge.
fn deploy_response(service: &str, out: &PassOutcome, node: String) -> pb::MasterDeployResponse {
    let mut deploy = None;
    let mut dns = None;
    let mut edge = None;
    let mut errors = Vec::new();
    for r in out.results.iter().filter(|r| r.service == service) {
        match &r.action {
            Action::SetDns { .. } | Action::RemoveDns { .. } => {
                dns.get_or_insert_with(|| outcome_pb(r));
            }
            Action::SetEdgeRoute { .. } | Action::RemoveEdgeRoute { .. } => {
                edge.get_or_insert_with(|| outcome_pb(r));
            }
            _ => {
                if deploy.is_none() || r.status == StepStatus::Failed {
                    deploy = Some(outcome_pb(r));
                }
            }
        }
        if r.status == StepStatus::Failed {
            errors.push(format!("{}: {}", r.step(), r.error));
        }
    }
    if let Some(e) = not_done(&out.plan, service) {
        errors.push(e);
    }
    let deploy = deploy.unwrap_or_else(|| {
        if errors.is_empty() {
            step(
                &format!("deploy {service}"),
                StepStatus::Succeeded,
                "",
                "already deployed as desired; nothing to do",
            )
        } else {
            step(
                &format!("deploy {service}"),
                StepStatus::Failed,
                &errors.join("; "),
                "",
            )
        }
    });
    let dns = dns.unwrap_or_else(|| {
        step(
            "dns",
            StepStatus::Skipped,
            "",
            "no DNS change (or no DNS adapter configured)",
        )
    });
    let edge = edge.unwrap_or_else(|| {
        step(
            "edge route",
            StepStatus::Skipped,
            "",
            "no edge route change (no public route, or no edge adapter configured)",
        )
    });
    pb::MasterDeployResponse {
        node,
        success: errors.is_empty(),
        error: errors.join("; "),
        deploy_result: Some(deploy),
        edge_route_result: Some(edge),
        dns_result: Some(dns),
    }
}
