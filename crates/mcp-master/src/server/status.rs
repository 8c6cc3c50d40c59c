//! The read side: `Status` (desired state, placements and the agents'
//! reports side by side), `ListNodes`, and `ServiceLogs` / `ServiceEvents`
//! passed through from the agents.

use super::*;

impl MasterService {
    /// Status of every service in `desired` ∪ placements (or just `only`).
    pub async fn status_of(&self, only: Option<&str>) -> Result<Vec<pb::ServiceStatus>, Status> {
        let mut desired = match self.rec.desired().await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "status: desired state unavailable");
                Desired::default()
            }
        };
        // Specs an agent refused show as failed, with its answer.
        self.rec
            .hold_failed(&mut desired, false)
            .await
            .map_err(rec_status)?;
        let observed = self.rec.observe().await.map_err(rec_status)?;
        let mut names: BTreeSet<&String> = desired.services.keys().collect();
        names.extend(desired.held.keys());
        names.extend(observed.placements.keys());
        let max = self.rec.settings().policy.heal_max_attempts;
        // What the loop would do now: says why a removed service still runs.
        let refused = self.rec.plan(&desired, &observed, false).refused;
        let mut out: Vec<pb::ServiceStatus> = names
            .into_iter()
            .filter(|n| only.is_none_or(|o| o == n.as_str()))
            .map(|n| {
                let mut s = service_status(n, &desired, &observed, max);
                if !desired.services.contains_key(n.as_str())
                    && !desired.held.contains_key(n.as_str())
                {
                    let why = match &refused {
                        Some(r) => {
                            format!("removed from the desired state but not undeployed: {r}")
                        }
                        None => "removed from the desired state: undeploy pending".to_string(),
                    };
                    s.detail = if s.detail.is_empty() {
                        why
                    } else {
                        format!("{why}; {}", s.detail)
                    };
                }
                s
            })
            .collect();
        self.add_snapshot_status(&mut out).await;
        if let Some(o) = only {
            if out.is_empty() {
                return Err(Status::not_found(format!(
                    "service {o} is neither desired nor placed"
                )));
            }
        }
        Ok(out)
    }

    pub(super) async fn status_rpc(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> R<pb::StatusResponse> {
        let name = req.get_ref().service_name.clone();
        if !name.is_empty() {
            set_audit_target(&req, target(Some(&name), None));
        }
        let services = self
            .status_of((!name.is_empty()).then_some(name.as_str()))
            .await?;
        Ok(Response::new(pb::StatusResponse { services }))
    }

    pub(super) async fn list_nodes_rpc(
        &self,
        _: Request<pb::ListNodesRequest>,
    ) -> R<pb::ListNodesResponse> {
        let nodes = self
            .rec
            .state()
            .read(|r| r.nodes())
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ListNodesResponse {
            nodes: nodes
                .into_iter()
                .map(|n| pb::NodeInfo {
                    name: n.name,
                    role: n.role.as_str().to_string(),
                    address: n.address,
                    arch: n.arch,
                    status: n.status.as_str().to_string(),
                    containers: n.containers,
                    last_heartbeat: n.last_heartbeat.map(rfc3339).unwrap_or_default(),
                })
                .collect(),
        }))
    }

    pub(super) async fn service_logs_rpc(
        &self,
        req: Request<pb::ServiceLogsRequest>,
    ) -> R<PbStream<pb::LogLine>> {
        set_audit_target(&req, target(Some(&req.get_ref().service_name), None));
        let req = req.into_inner();
        let p = self.placement(&req.service_name).await?;
        let t = self
            .rec
            .target(&p.node)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let stream = self
            .rec
            .agents()
            .logs(
                &t,
                LogsQuery {
                    component: opt(&req.component).map(str::to_string),
                    follow: req.follow,
                    tail: (req.tail > 0).then_some(req.tail),
                    since: parse_since(&req.since)?,
                    service: req.service_name,
                },
            )
            .await
            .map_err(agent_status)?;
        Ok(Response::new(Box::pin(stream.map(|item| {
            item.map(|l| pb::LogLine {
                component: l.component,
                line: l.line,
                stream: l.source.as_str().to_string(),
            })
            .map_err(|e| e.to_status())
        }))))
    }

    pub(super) async fn service_events_rpc(
        &self,
        req: Request<pb::ServiceEventsRequest>,
    ) -> R<pb::EventsResponse> {
        if !req.get_ref().service_name.is_empty() {
            set_audit_target(&req, target(Some(&req.get_ref().service_name), None));
        }
        let req = req.into_inner();
        let limit = if req.limit == 0 {
            DEFAULT_EVENTS_LIMIT
        } else {
            req.limit
        };
        let query = EventsQuery {
            service: opt(&req.service_name).map(str::to_string),
            component: None,
            since: parse_since(&req.since)?,
            limit: Some(limit),
        };
        let nodes: Vec<String> = if req.service_name.is_empty() {
            self.rec
                .state()
                .read(|r| r.nodes())
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .into_iter()
                .filter(|n| n.status == state::NodeStatus::Healthy)
                .map(|n| n.name)
                .collect()
        } else {
            vec![self.placement(&req.service_name).await?.node]
        };
        let mut events: Vec<EventRow> = Vec::new();
        for node in nodes {
            let t = self
                .rec
                .target(&node)
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            match self.rec.agents().events(&t, query.clone()).await {
                Ok(rows) => events.extend(rows),
                Err(e) if req.service_name.is_empty() => {
                    tracing::warn!(node = %node, error = %e, "events: node skipped")
                }
                Err(e) => return Err(agent_status(e)),
            }
        }
        // Oldest first; the newest `limit` of every node's newest `limit`.
        events.sort_by_key(|e| e.time);
        let drop = events.len().saturating_sub(limit as usize);
        events.drain(..drop);
        Ok(Response::new(pb::EventsResponse {
            events: events.into_iter().map(event_pb).collect(),
        }))
    }
}

fn service_status(name: &str, desired: &Desired, o: &Observed, max: u32) -> pb::ServiceStatus {
    let spec = desired.services.get(name);
    let placement = o.placements.get(name);
    let tier = spec
        .map(|s| s.tier)
        .or(placement.map(|p| p.tier))
        .map(|t| t.as_str().to_string())
        .unwrap_or_default();
    let mut s = pb::ServiceStatus {
        name: name.to_string(),
        node: placement.map(|p| p.node.clone()).unwrap_or_default(),
        tier,
        status: "unknown".to_string(),
        edge_routes: o
            .edge_routes
            .iter()
            .filter(|(_, r)| r.service == name)
            .map(|(h, r)| pb::EdgeRouteStatus {
                hostname: h.clone(),
                edge_node: r.edge_node.clone(),
                cert_expires: String::new(),
            })
            .collect(),
        detail: String::new(),
        components: Vec::new(),
        last_snapshot: String::new(),
        snapshot_stale: false,
    };
    let mut detail: Vec<String> = Vec::new();
    let mut failed = false;
    match desired.held.get(name) {
        Some(Held {
            reason: Some(reason),
            errors,
            ..
        }) => {
            failed = true;
            if errors.iter().any(|e| e.contains(mcp_proto::ROLLED_BACK)) {
                // "v2 failed its health check (...), rolled back to v1
                // (spec ...); commit a fix or run `mcp rollback <svc>`".
                detail.push(format!("{} ({reason})", errors.join("; ")));
            } else {
                detail.push(format!(
                    "{reason} (fix the file, or `mcp deploy {name}` to try again): {}",
                    errors.join("; ")
                ));
            }
        }
        Some(Held { file, errors, .. }) => detail.push(format!(
            "file {file} cannot be read, the service is held as it is: {}",
            errors.join("; ")
        )),
        None => {}
    }
    match placement {
        None => detail.push("not deployed yet".to_string()),
        Some(p) => {
            let node = o.nodes.get(&p.node);
            let report = o.agents.get(&p.node);
            match (node, report) {
                (None, _) => {
                    s.status = "unhealthy".to_string();
                    detail.push(format!("node {} is not registered", p.node));
                }
                (Some(n), _) if n.health != NodeHealth::Healthy => {
                    s.status = "unhealthy".to_string();
                    detail.push(format!("node {} is {}", p.node, n.health.as_str()));
                }
                (_, None) => {
                    s.status = "unknown".to_string();
                    detail.push(format!("node {} did not report", p.node));
                }
                (_, Some(AgentStatus::Unreachable { error })) => {
                    s.status = "unknown".to_string();
                    detail.push(format!("node {} is unreachable: {error}", p.node));
                }
                (_, Some(AgentStatus::Reported { services })) => match services.get(name) {
                    None => {
                        s.status = "unknown".to_string();
                        detail.push(format!("the agent on {} does not report it", p.node));
                    }
                    Some(r) => {
                        s.components = r
                            .components
                            .iter()
                            .map(|(c, cr)| pb::ComponentInfo {
                                name: c.clone(),
                                image: cr.image.clone(),
                                version: cr.version.clone(),
                                desired_state: if r.active { "running" } else { "stopped" }
                                    .to_string(),
                                observed_state: cr.state.as_str().to_string(),
                                restart_count: cr.restarts,
                                ports: cr
                                    .ports
                                    .iter()
                                    .map(|(k, v)| (k.clone(), u32::from(*v)))
                                    .collect(),
                                routes: cr.routes.iter().map(route_info).collect(),
                                health: cr
                                    .health
                                    .map(|h| h.as_str().to_string())
                                    .unwrap_or_default(),
                                health_detail: cr.health_detail.clone(),
                                ..Default::default()
                            })
                            .collect();
                        let unhealthy = |c: &mcp_planner::ComponentReport| {
                            c.health == Some(mcp_planner::ComponentHealth::Unhealthy)
                        };
                        let down: Vec<&String> = r
                            .components
                            .iter()
                            .filter(|(_, c)| c.state != ContainerState::Running || unhealthy(c))
                            .map(|(n, _)| n)
                            .collect();
                        let heal = o.heal.get(name);
                        let degraded: Vec<String> = down
                            .iter()
                            .filter_map(|c| {
                                heal.and_then(|h| h.get(*c))
                                    .filter(|h| h.attempts >= max)
                                    .map(|h| {
                                        format!("{c} degraded after {} heal attempts", h.attempts)
                                    })
                            })
                            .collect();
                        if !degraded.is_empty() {
                            s.status = "degraded".to_string();
                            detail.extend(degraded);
                        } else if down.is_empty() {
                            s.status = "running".to_string();
                        } else if !r.active && down.len() == r.components.len() {
                            s.status = "stopped".to_string();
                        } else {
                            s.status = "unhealthy".to_string();
                            detail.push(format!(
                                "down: {}",
                                down.iter()
                                    .map(|c| {
                                        let cr = &r.components[*c];
                                        if unhealthy(cr) {
                                            format!("{c} unhealthy: {}", cr.health_detail)
                                        } else {
                                            format!("{c} {}", cr.state.as_str())
                                        }
                                    })
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ));
                        }
                    }
                },
            }
        }
    }
    if failed {
        // What runs (if anything) is an older spec; the desired one failed.
        s.status = "failed".to_string();
    }
    s.detail = detail.join("; ");
    s
}

fn route_info(r: &mcp_planner::RouteReport) -> pb::RouteInfo {
    pb::RouteInfo {
        route: r.route.clone(),
        hostname: r.hostname.clone(),
        listen_port: u32::from(r.listen_port),
        mode: r.mode.clone(),
        url: r.url.clone(),
        proxy_address: r.proxy_address.clone(),
        backend: r.backend.clone(),
        cert_serial: r.cert_serial.clone(),
        cert_expires: r.cert_expires.clone(),
    }
}
