//! Calls forwarded to the agent of the service's node (or of the named
//! node): `StopService` / `StartService` / `RestartService`,
//! `PushServiceFile`, `PullServiceFile`, `AdoptService`.

use super::*;

impl MasterService {
    pub(super) async fn lifecycle(
        &self,
        req: Request<pb::ServiceLifecycleRequest>,
        op: &'static str,
    ) -> R<pb::ServiceLifecycleResponse> {
        let req = req.into_inner();
        let p = self.placement(&req.service_name).await?;
        let t = self
            .rec
            .target(&p.node)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let _lock = self.rec.locks().lock(&req.service_name).await;
        let agents = self.rec.agents();
        let r = match op {
            "stop" => {
                agents
                    .stop(&t, &req.service_name, opt(&req.component))
                    .await
            }
            "start" => {
                agents
                    .start(&t, &req.service_name, opt(&req.component))
                    .await
            }
            _ => {
                agents
                    .restart(&t, &req.service_name, opt(&req.component))
                    .await
            }
        }
        .map_err(agent_status)?;
        let mut results: Vec<pb::StepResult> = r.iter().map(agent_step_pb).collect();
        if op != "restart" {
            let desired = if p.spec.active { "running" } else { "stopped" };
            results.push(step(
                "note",
                StepStatus::Skipped,
                "",
                &format!(
                    "{op} on {} done; the service file says {desired}, so the reconciler restores that on its next pass unless the file's `active` is changed",
                    p.node
                ),
            ));
        }
        Ok(Response::new(pb::ServiceLifecycleResponse { results }))
    }

    pub(super) async fn push_service_file_rpc(
        &self,
        req: Request<pb::PushFileRequest>,
    ) -> R<pb::PushFileResponse> {
        set_audit_target(&req, target(Some(&req.get_ref().service), None));
        let m = req.into_inner();
        let t = self.service_target(&m.service, None).await?;
        let file = FileContent {
            content: m.content,
            mode: m.mode,
        };
        self.rec
            .agents()
            .push_file(&t, &m.service, &m.path, file)
            .await
            .map_err(|e| passed_status(&format!("push {}/{}", m.service, m.path), &e))?;
        Ok(Response::new(pb::PushFileResponse {
            success: true,
            error: String::new(),
        }))
    }

    pub(super) async fn pull_service_file_rpc(
        &self,
        req: Request<pb::PullFileRequest>,
    ) -> R<pb::PullFileResponse> {
        set_audit_target(&req, target(Some(&req.get_ref().service), None));
        let m = req.into_inner();
        let t = self.service_target(&m.service, None).await?;
        let f = self
            .rec
            .agents()
            .pull_file(&t, &m.service, &m.path)
            .await
            .map_err(|e| passed_status(&format!("pull {}/{}", m.service, m.path), &e))?;
        Ok(Response::new(pb::PullFileResponse {
            content: f.content,
            mode: f.mode,
            error: String::new(),
        }))
    }

    pub(super) async fn adopt_service_rpc(
        &self,
        req: Request<pb::MasterAdoptRequest>,
    ) -> R<pb::AdoptResponse> {
        let m = req.get_ref().clone();
        set_audit_target(&req, target(Some(&m.service), opt(&m.node)));
        let t = self.service_target(&m.service, opt(&m.node)).await?;
        let _lock = self.rec.locks().lock(&m.service).await;
        let steps = self
            .rec
            .agents()
            .adopt(&t, &m.service)
            .await
            .map_err(|e| passed_status(&format!("adopt {} on {}", m.service, t.node), &e))?;
        let mut results: Vec<pb::StepResult> = steps.iter().map(agent_step_pb).collect();
        results.push(step(
            "note",
            StepStatus::Skipped,
            "",
            &format!(
                "adopted on {}; the master deploys {} from its service file on a later pass (which replaces the adopted containers), or undeploys it when there is no file",
                t.node, m.service
            ),
        ));
        Ok(Response::new(pb::AdoptResponse { results }))
    }
}
