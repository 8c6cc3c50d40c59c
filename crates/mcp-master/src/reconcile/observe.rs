//! Observed state: the registry and records from the database, every
//! healthy agent's bulk status and the live DNS records the master created
//! (looked up on the DNS server), mapped to the planner's [`Observed`].

use super::*;

/// The host of a node address (`https://100.64.0.1:9444` → `100.64.0.1`):
/// what DNS records point at.
pub fn address_host(address: &str) -> String {
    match address.parse::<tonic::codegen::http::Uri>() {
        Ok(uri) if uri.host().is_some() => uri
            .host()
            .unwrap_or(address)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        _ => address.to_string(),
    }
}

fn planner_health(s: NodeStatus) -> mcp_planner::NodeHealth {
    match s {
        NodeStatus::Healthy => mcp_planner::NodeHealth::Healthy,
        NodeStatus::Unhealthy => mcp_planner::NodeHealth::Unhealthy,
        NodeStatus::Unknown => mcp_planner::NodeHealth::Unknown,
    }
}

impl Reconciler {
    /// What the master knows about the fleet now: the registry and records
    /// from the database, and every healthy agent's bulk status (queried
    /// concurrently, each within the list timeout). Heal records of
    /// components that stayed up are cleared on the way.
    pub async fn observe(&self) -> Result<Observed, ReconcileError> {
        let (nodes, placements, dns, edges, heal) = self
            .state
            .read(|r| {
                Ok((
                    r.nodes()?,
                    r.placements()?,
                    r.dns_records()?,
                    r.edge_routes()?,
                    r.heal_records()?,
                ))
            })
            .await?;
        let mut o = Observed::default();
        let mut calls = JoinSet::new();
        for n in &nodes {
            o.nodes.insert(
                n.name.clone(),
                mcp_planner::Node {
                    role: n.role,
                    address: address_host(&n.address),
                    health: planner_health(n.status),
                    containers: n.containers,
                },
            );
            if n.status != NodeStatus::Healthy {
                continue;
            }
            let agents = self.agents.clone();
            let t = AgentTarget {
                node: n.name.clone(),
                address: n.address.clone(),
            };
            let timeout = self.settings.list_timeout;
            calls.spawn(async move {
                let status = match tokio::time::timeout(timeout, agents.list_services(&t)).await {
                    Ok(Ok(r)) => r.into_status(),
                    Ok(Err(e)) => AgentStatus::Unreachable {
                        error: e.to_string(),
                    },
                    Err(_) => AgentStatus::Unreachable {
                        error: format!(
                            "ListServices timed out after {}",
                            humantime::format_duration(timeout)
                        ),
                    },
                };
                (t.node, status)
            });
        }
        // The DNS lookups run while the agents answer.
        let agents = async {
            let mut out = BTreeMap::new();
            while let Some(r) = calls.join_next().await {
                if let Ok((node, status)) = r {
                    out.insert(node, status);
                }
            }
            out
        };
        let (agents, dns) = tokio::join!(agents, self.observe_dns(dns));
        o.agents = agents;
        o.dns = dns;
        for p in placements {
            o.placements.insert(
                p.service.clone(),
                mcp_planner::Placement {
                    node: p.node,
                    tier: p.tier,
                    deployed_at: unix(p.deployed_at),
                    spec: Some(p.spec),
                    spec_hash: Some(p.spec_hash),
                },
            );
        }
        o.edge_routes = edges
            .into_iter()
            .map(|r| {
                (
                    r.hostname,
                    mcp_planner::EdgeRoute {
                        service: r.service,
                        edge_node: r.edge_node,
                        backend_hostname: r.backend_hostname,
                        backend_port: r.backend_port,
                    },
                )
            })
            .collect();
        let now = self.now();
        for h in heal {
            if self.heal_settled(&o, &h, now) {
                let (s, c) = (h.service.clone(), h.component.clone());
                self.state.write(move |w| w.reset_heal(&s, &c)).await?;
                tracing::info!(service = %h.service, component = %h.component, "component stayed up after self-heal: heal record cleared");
                continue;
            }
            o.heal.entry(h.service.clone()).or_default().insert(
                h.component.clone(),
                mcp_planner::HealRecord {
                    attempts: h.attempts,
                    last_attempt: unix(h.last_attempt),
                    alerted: h.alerted,
                },
            );
        }
        Ok(o)
    }

    /// True when the component of `h` runs and its last heal attempt is at
    /// least the settle time ago, or its service is no longer placed.
    fn heal_settled(&self, o: &Observed, h: &state::HealRecord, now: SystemTime) -> bool {
        let Some(p) = o.placements.get(&h.service) else {
            return true;
        };
        let up = o
            .agents
            .get(&p.node)
            .and_then(AgentStatus::services)
            .and_then(|s| s.get(&h.service))
            .and_then(|s| s.components.get(&h.component))
            .is_some_and(|c| {
                // Running and not failing its health check.
                c.state == ContainerState::Running
                    && c.health != Some(mcp_planner::ComponentHealth::Unhealthy)
            });
        let quiet = now
            .duration_since(h.last_attempt)
            .is_ok_and(|d| d >= self.settings.heal_settle);
        up && quiet
    }
}
