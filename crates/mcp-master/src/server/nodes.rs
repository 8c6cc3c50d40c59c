//! `ForgetNode`: removes a node from the registry, freeing its
//! `[registration] max_nodes` slot (operators only).

use super::*;

impl MasterService {
    pub(super) async fn forget_node_rpc(
        &self,
        req: Request<pb::ForgetNodeRequest>,
    ) -> R<pb::ForgetNodeResponse> {
        let node = req.get_ref().node.clone();
        set_audit_target(&req, target(None, Some(&node)));
        let force = req.get_ref().force;
        let state = self.rec.state();
        let (known, placed) = {
            let n = node.clone();
            state
                .read(move |r| {
                    let known = r.nodes()?.into_iter().any(|x| x.name == n);
                    Ok((known, r.placements_on(&n)?))
                })
                .await
                .map_err(|e| Status::internal(e.to_string()))?
        };
        if !known {
            return Err(Status::not_found(format!("node {node} is not registered")));
        }
        if !placed.is_empty() {
            let names: Vec<&str> = placed.iter().map(|p| p.service.as_str()).collect();
            if !force {
                return Err(Status::failed_precondition(format!(
                    "node {node} holds {}: {}; move them first (mcp migrate --all --from {node} \
                     --to <node>), or forget it with --force to restore them elsewhere from \
                     their snapshots",
                    if names.len() == 1 {
                        "a placement"
                    } else {
                        "placements"
                    },
                    names.join(", ")
                )));
            }
            return Err(Status::unimplemented(format!(
                "node {node} holds {}: restoring its services elsewhere from snapshots \
                 (--force) is not available yet; nothing was changed",
                names.join(", ")
            )));
        }
        let n = node.clone();
        let removed = state
            .write(move |w| w.remove_node(&n))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::warn!(node = %node, removed, "node forgotten");
        Ok(Response::new(pb::ForgetNodeResponse {
            results: vec![step(
                &format!("forget node {node}"),
                StepStatus::Succeeded,
                "",
                "removed from the registry; its registration slot is free (it must \
                 register again to rejoin)",
            )],
        }))
    }
}
