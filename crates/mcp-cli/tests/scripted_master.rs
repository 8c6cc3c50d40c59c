//! The real `mcp` binary against a scripted master: an in-test tonic server
//! on 127.0.0.1 over TLS 1.3 (certificates made in the test), which checks
//! the bearer token, records what it is sent and answers with plans made by
//! the real planner. Covers what the CLI sends (specs, unreadable files,
//! source) and what it makes of the answers (rendering, exit statuses).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use common::{check_token, err, out, step, svc};

use mcp_planner::{AgentStatus, Desired, Node, NodeHealth, NodeRole, Observed, Policy, Timestamp};
use mcp_proto::pb;
use mcp_proto::pb::mcp_master_service_server::{McpMasterService, McpMasterServiceServer};
use tonic::{Request, Response, Status};

type R<T> = Result<Response<T>, Status>;

fn no<T>() -> R<T> {
    Err(Status::unimplemented("not in this test"))
}

/// What the scripted master was sent.
#[derive(Default)]
struct Seen {
    syncs: Vec<pb::SyncRequest>,
    deploys: Vec<pb::MasterDeployRequest>,
    audits: Vec<pb::ListAuditRequest>,
    restores: Vec<pb::RestoreRequest>,
}

struct Script {
    seen: Arc<Mutex<Seen>>,
    /// Answer a non-dry-run sync's first step with a failure.
    fail_apply: bool,
}

fn fleet() -> Observed {
    let mut o = Observed::default();
    o.nodes.insert(
        "w1".to_string(),
        Node {
            role: NodeRole::Worker,
            address: "100.64.0.2".to_string(),
            health: NodeHealth::Healthy,
            containers: 0,
        },
    );
    o.agents.insert("w1".to_string(), AgentStatus::empty());
    o
}

#[tonic::async_trait]
impl McpMasterService for Script {
    async fn deploy(&self, req: Request<pb::MasterDeployRequest>) -> R<pb::MasterDeployResponse> {
        check_token(&req)?;
        self.seen.lock().unwrap().deploys.push(req.into_inner());
        Ok(Response::new(pb::MasterDeployResponse {
            node: "w1".to_string(),
            success: true,
            error: String::new(),
            deploy_result: Some(step("deploy", pb::StepStatus::Succeeded, "")),
            edge_route_result: Some(step("edge route", pb::StepStatus::Skipped, "")),
            dns_result: Some(step("dns", pb::StepStatus::Succeeded, "")),
        }))
    }
    async fn undeploy(
        &self,
        _: Request<pb::MasterUndeployRequest>,
    ) -> R<pb::MasterUndeployResponse> {
        no()
    }
    async fn forget_node(&self, _: Request<pb::ForgetNodeRequest>) -> R<pb::ForgetNodeResponse> {
        no()
    }
    async fn status(&self, req: Request<pb::StatusRequest>) -> R<pb::StatusResponse> {
        check_token(&req)?;
        let all = vec![
            pb::ServiceStatus {
                name: "mcq".to_string(),
                node: "w1".to_string(),
                tier: "worker".to_string(),
                status: "running".to_string(),
                components: vec![pb::ComponentInfo {
                    name: "api".to_string(),
                    image: "r/mcq:v1".to_string(),
                    version: "v1".to_string(),
                    observed_state: "running".to_string(),
                    routes: vec![pb::RouteInfo {
                        hostname: "mcq.mcp.test".to_string(),
                        listen_port: 8443,
                        mode: "l7".to_string(),
                        url: "https://mcq.mcp.test:8443".to_string(),
                        proxy_address: "127.0.0.12".to_string(),
                        backend: "127.0.0.1:10001".to_string(),
                        cert_serial: "0a1b".to_string(),
                        cert_expires: "2027-03-01T00:00:00Z".to_string(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            },
            pb::ServiceStatus {
                name: "web".to_string(),
                node: "w1".to_string(),
                tier: "worker".to_string(),
                status: "degraded".to_string(),
                detail: "web: exited".to_string(),
                ..Default::default()
            },
        ];
        let name = req.into_inner().service_name;
        Ok(Response::new(pb::StatusResponse {
            services: all
                .into_iter()
                .filter(|s| name.is_empty() || s.name == name)
                .collect(),
        }))
    }
    async fn sync(&self, req: Request<pb::SyncRequest>) -> R<pb::SyncResponse> {
        check_token(&req)?;
        let req = req.into_inner();
        self.seen.lock().unwrap().syncs.push(req.clone());
        let specs = req
            .services
            .iter()
            .cloned()
            .map(mcp_spec::ServiceSpec::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut desired = Desired::new(Some(req.source.clone()), specs, &[]);
        for u in &req.unreadable {
            desired.held.insert(
                u.name.clone(),
                mcp_planner::Held {
                    file: u.file.clone(),
                    errors: u.errors.clone(),
                    reason: None,
                },
            );
        }
        let plan = mcp_planner::plan(&desired, &fleet(), &Policy::default(), Timestamp(0));
        let results = if req.dry_run {
            Vec::new()
        } else {
            let mut r = vec![step(
                "deploy",
                if self.fail_apply {
                    pb::StepStatus::Failed
                } else {
                    pb::StepStatus::Succeeded
                },
                if self.fail_apply {
                    "image pull failed"
                } else {
                    ""
                },
            )];
            r.push(step("edge route", pb::StepStatus::Skipped, ""));
            r
        };
        Ok(Response::new(pb::SyncResponse {
            plan_json: mcp_planner::render_json(&plan),
            changes: plan.has_changes(),
            results,
        }))
    }
    async fn migrate(&self, _: Request<pb::MigrateRequest>) -> R<pb::MigrateResponse> {
        no()
    }
    async fn list_nodes(&self, req: Request<pb::ListNodesRequest>) -> R<pb::ListNodesResponse> {
        check_token(&req)?;
        Ok(Response::new(pb::ListNodesResponse {
            nodes: vec![pb::NodeInfo {
                name: "w1".to_string(),
                role: "worker".to_string(),
                address: "100.64.0.2".to_string(),
                arch: "amd64".to_string(),
                status: "healthy".to_string(),
                containers: 3,
                last_heartbeat: "2026-01-01T00:00:00Z".to_string(),
            }],
        }))
    }
    async fn create_snapshot(
        &self,
        req: Request<pb::CreateSnapshotRequest>,
    ) -> R<pb::CreateSnapshotResponse> {
        check_token(&req)?;
        if req.get_ref().service_name != "mcq" {
            return Err(Status::not_found("service web has no placement"));
        }
        Ok(Response::new(pb::CreateSnapshotResponse {
            filename: "/var/lib/mcp/snapshots/mcq/2026-12-03T15-04-05Z.tar.zst".to_string(),
            size_bytes: 4096,
            sha256: "ab".repeat(32),
            node: "w1".to_string(),
            mirror: "/mnt/off/mcq/2026-12-03T15-04-05Z.tar.zst".to_string(),
            mirror_error: String::new(),
            removed: vec!["2026-11-26T15-04-05Z.tar.zst".to_string()],
        }))
    }
    async fn list_snapshots(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> R<pb::ListSnapshotsResponse> {
        check_token(&req)?;
        Ok(Response::new(pb::ListSnapshotsResponse {
            snapshots: vec![pb::SnapshotInfo {
                service: "mcq".to_string(),
                node: "w1".to_string(),
                filename: "2026-12-03T15-04-05Z.tar.zst".to_string(),
                size: 4096,
                created_at: "2026-12-03T15:04:05Z".to_string(),
                checksum: "ab".repeat(32),
            }],
        }))
    }
    async fn restore(&self, req: Request<pb::RestoreRequest>) -> R<pb::RestoreResponse> {
        check_token(&req)?;
        let r = req.into_inner();
        let force = r.force;
        self.seen.lock().unwrap().restores.push(r);
        let import = if force {
            step("import", pb::StepStatus::Succeeded, "")
        } else {
            step(
                "import",
                pb::StepStatus::Failed,
                "/srv/mcq/ holds data (restore with --force to replace the service's data)",
            )
        };
        Ok(Response::new(pb::RestoreResponse {
            results: vec![
                step("stop mcq on w1", pb::StepStatus::Succeeded, ""),
                import,
                step("start mcq on w1", pb::StepStatus::Succeeded, ""),
            ],
        }))
    }
    async fn stop_service(
        &self,
        _: Request<pb::ServiceLifecycleRequest>,
    ) -> R<pb::ServiceLifecycleResponse> {
        no()
    }
    async fn start_service(
        &self,
        _: Request<pb::ServiceLifecycleRequest>,
    ) -> R<pb::ServiceLifecycleResponse> {
        no()
    }
    async fn restart_service(
        &self,
        req: Request<pb::ServiceLifecycleRequest>,
    ) -> R<pb::ServiceLifecycleResponse> {
        check_token(&req)?;
        Ok(Response::new(pb::ServiceLifecycleResponse {
            results: vec![step(
                &format!("restart {}", req.get_ref().service_name),
                pb::StepStatus::Failed,
                "node w1 unreachable",
            )],
        }))
    }
    type ServiceLogsStream = tokio_stream::wrappers::ReceiverStream<Result<pb::LogLine, Status>>;
    async fn service_logs(
        &self,
        req: Request<pb::ServiceLogsRequest>,
    ) -> R<Self::ServiceLogsStream> {
        check_token(&req)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for (stream, line) in [
                ("stdout", "hello"),
                ("stderr", "warning: x"),
                ("stdout", "bye"),
            ] {
                let l = pb::LogLine {
                    component: "api".to_string(),
                    line: line.to_string(),
                    stream: stream.to_string(),
                };
                if tx.send(Ok(l)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }
    async fn service_events(&self, _: Request<pb::ServiceEventsRequest>) -> R<pb::EventsResponse> {
        no()
    }
    async fn list_edge_routes(
        &self,
        _: Request<pb::ListMasterEdgeRoutesRequest>,
    ) -> R<pb::ListMasterEdgeRoutesResponse> {
        no()
    }
    async fn deploy_history(
        &self,
        _: Request<pb::DeployHistoryRequest>,
    ) -> R<pb::DeployHistoryResponse> {
        no()
    }
    async fn report_changes(
        &self,
        _: Request<pb::ReportChangesRequest>,
    ) -> R<pb::ReportChangesResponse> {
        no()
    }
    async fn push_service_file(&self, _: Request<pb::PushFileRequest>) -> R<pb::PushFileResponse> {
        no()
    }
    async fn pull_service_file(&self, _: Request<pb::PullFileRequest>) -> R<pb::PullFileResponse> {
        no()
    }
    async fn adopt_service(&self, _: Request<pb::MasterAdoptRequest>) -> R<pb::AdoptResponse> {
        no()
    }
    async fn list_audit(&self, req: Request<pb::ListAuditRequest>) -> R<pb::ListAuditResponse> {
        check_token(&req)?;
        self.seen.lock().unwrap().audits.push(req.into_inner());
        let row = |time: &str, caller: &str, class: &str, method: &str, target: &str, outcome| {
            pb::AuditRow {
                time: time.to_string(),
                caller: caller.to_string(),
                class: class.to_string(),
                method: format!("/mcp.v1.McpMasterService/{method}"),
                target: target.to_string(),
                outcome: String::from(outcome),
                duration_ms: 12,
            }
        };
        Ok(Response::new(pb::ListAuditResponse {
            rows: vec![
                row(
                    "2026-01-01T08:00:00.125Z",
                    "alice",
                    "operator",
                    "Deploy",
                    "service=web",
                    "Ok",
                ),
                row(
                    "2026-01-01T08:00:01.000Z",
                    "agent-w1",
                    "agent(w1)",
                    "ListAudit",
                    "",
                    "PermissionDenied",
                ),
            ],
        }))
    }
    async fn register(&self, _: Request<pb::RegisterRequest>) -> R<pb::RegisterResponse> {
        no()
    }
    async fn heartbeat(&self, _: Request<pb::HeartbeatRequest>) -> R<pb::HeartbeatResponse> {
        no()
    }
}

/// A running scripted master and a CLI config pointing at it.
struct Fixture {
    peer: common::Peer,
    cfg: PathBuf,
    services: PathBuf,
    seen: Arc<Mutex<Seen>>,
}

fn start(fail_apply: bool) -> Fixture {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let script = Script {
        seen: seen.clone(),
        fail_apply,
    };
    let peer = common::serve(
        tonic::transport::Server::builder().add_service(McpMasterServiceServer::new(script)),
    );
    let cfg = peer.config(&format!("[master]\naddress = \"https://{}\"\n", peer.addr));
    let services = peer.services.clone();
    Fixture {
        peer,
        cfg,
        services,
        seen,
    }
}

impl Fixture {
    fn mcp(&self, args: &[&str]) -> Output {
        self.mcp_env(args, &[])
    }

    fn mcp_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        common::mcp(&self.cfg, args, env)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        self.peer.write(name, text)
    }
}

fn dir_of(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn sync_dry_run_sends_the_directory_and_exits_2_with_changes() {
    let f = start(false);
    f.write("web.toml", &svc("web"));
    f.write("broken.toml", "name = \"broken\"\ntier = \"gold\"\n");
    let o = f.mcp(&["sync", "--dry-run"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "stdout:\n{}\nstderr:\n{}",
        out(&o),
        err(&o)
    );
    let text = out(&o);
    assert!(text.contains("+ web on w1"), "{text}");
    assert!(text.contains("broken"), "held service shown: {text}");
    assert!(!text.contains('\x1b'), "no colour when piped");
    assert!(err(&o).contains("broken.toml:2:8:"), "{}", err(&o));

    let seen = f.seen.lock().unwrap();
    let req = seen.syncs.last().unwrap();
    assert!(req.dry_run && !req.allow_mass_prune);
    assert_eq!(req.services.len(), 1);
    assert_eq!(req.services[0].name, "web");
    assert_eq!(req.unreadable.len(), 1);
    assert_eq!(req.unreadable[0].name, "broken");
    let want = format!("{}/broken.toml:2:8: ", dir_of(&f.services));
    assert!(
        req.unreadable[0]
            .errors
            .iter()
            .any(|e| e.starts_with(&want)),
        "{:?}",
        req.unreadable[0].errors
    );
    assert_eq!(req.source, dir_of(&f.services), "not a git work tree");
}

#[test]
fn sync_dry_run_with_nothing_to_do_exits_0_and_json_is_the_plan() {
    let f = start(false);
    let o = f.mcp(&["sync", "--dry-run", "--allow-mass-prune"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(f.seen.lock().unwrap().syncs[0].allow_mass_prune);

    f.write("web.toml", &svc("web"));
    let o = f.mcp(&["--output", "json", "sync", "--dry-run"]);
    assert_eq!(o.status.code(), Some(2));
    let plan: mcp_planner::Plan = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(plan.entries.len(), 1);
}

#[test]
fn sync_apply_prints_results_and_fails_on_a_failed_step() {
    let f = start(true);
    f.write("web.toml", &svc("web"));
    let o = f.mcp(&["sync"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    let text = out(&o);
    assert!(
        text.contains("  failed   deploy: image pull failed"),
        "{text}"
    );
    assert!(text.contains("  skipped  edge route"), "{text}");
    assert!(!f.seen.lock().unwrap().syncs[0].dry_run);

    let ok = start(false);
    ok.write("web.toml", &svc("web"));
    let o = ok.mcp(&["sync"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("1 ok, 0 failed, 1 skipped"), "{}", out(&o));
}

#[test]
fn a_refused_token_is_reported_as_such() {
    let f = start(false);
    let o = f.mcp_env(&["status"], &[("MCP_TOKEN", "someone-else")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("Unauthenticated") && err(&o).contains("token was refused"),
        "{}",
        err(&o)
    );
}

#[test]
fn stop_outside_git_edits_the_file_then_syncs_it() {
    let f = start(false);
    let file = f.write("web.toml", &svc("web"));
    let o = f.mcp(&["stop", "web"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("push mode"), "{}", out(&o));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("name = \"web\"\nactive = false\n"),
        "{text}"
    );
    let seen = f.seen.lock().unwrap();
    let req = &seen.syncs[0];
    assert!(!req.dry_run);
    assert!(!req.services[0].active, "the edited spec was sent");
}

#[test]
fn deploy_status_ps_nodes_logs_restart() {
    let f = start(false);
    f.write("web.toml", &svc("web"));

    let o = f.mcp(&["deploy", "web"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    let text = out(&o);
    assert!(text.contains("deploy web on w1"), "{text}");
    assert!(text.contains("  ok       deploy\n"), "{text}");
    assert!(
        text.contains("  skipped  edge route (not configured)\n"),
        "skipped is not ok: {text}"
    );
    assert_eq!(
        f.seen.lock().unwrap().deploys[0]
            .service
            .as_ref()
            .unwrap()
            .name,
        "web"
    );
    let o = f.mcp(&["deploy", "web", "--component", "nope"]);
    assert_eq!(o.status.code(), Some(1));

    let o = f.mcp(&["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let text = out(&o);
    assert!(
        text.starts_with("NAME  NODE  TIER    STATUS    DETAIL\n"),
        "{text}"
    );
    assert!(
        text.contains("web   w1    worker  degraded  web: exited"),
        "{text}"
    );
    assert!(
        text.contains("ROUTE                      COMPONENT  NODE  ADDRESS     HOST PORT  MODE  CERT EXPIRES\n")
            && text.contains("https://mcq.mcp.test:8443  mcq/api    w1    127.0.0.12  10001      l7    2027-03-01T00:00:00Z"),
        "routes as URLs with node, host port and certificate expiry: {text}"
    );

    let o = f.mcp(&["--output", "json", "status", "mcq"]);
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["services"][0]["status"], "running");
    let route = &v["services"][0]["components"][0]["routes"][0];
    assert_eq!(route["url"], "https://mcq.mcp.test:8443");
    assert_eq!(route["proxy_address"], "127.0.0.12");
    assert_eq!(route["host_port"], 10001);
    assert_eq!(route["cert_expires"], "2027-03-01T00:00:00Z");
    assert_eq!(f.mcp(&["status", "nope"]).status.code(), Some(1));

    let o = f.mcp(&["ps"]);
    let text = out(&o);
    assert!(
        text.contains("SERVICE  COMPONENT  NODE  IMAGE     VERSION  STATE")
            && text.contains("mcq      api        w1    r/mcq:v1  v1       running"),
        "{text}"
    );

    let o = f.mcp(&["node", "list"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(
        out(&o).contains("w1    worker  100.64.0.2  amd64  healthy"),
        "{}",
        out(&o)
    );

    let o = f.mcp(&["logs", "mcq"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(out(&o), "[api] hello\n[api] bye\n");
    assert_eq!(err(&o), "[api] warning: x\n");

    let o = f.mcp(&["restart", "mcq"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out(&o).contains("  failed   restart mcq: node w1 unreachable"),
        "{}",
        out(&o)
    );
}

fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {}", err(&o));
    out(&o).trim().to_string()
}

/// In a git work tree the source names the commit, and "(dirty)" when the
/// directory has uncommitted changes.
#[test]
fn sync_source_names_the_commit() {
    let f = start(false);
    f.write("web.toml", &svc("web"));
    git(&f.services, &["init", "-q"]);
    git(&f.services, &["config", "user.name", "T"]);
    git(&f.services, &["config", "user.email", "t@example.invalid"]);
    git(&f.services, &["add", "."]);
    git(&f.services, &["commit", "-q", "-m", "x"]);
    let head = git(&f.services, &["rev-parse", "--short", "HEAD"]);
    assert_eq!(f.mcp(&["sync", "--dry-run"]).status.code(), Some(2));
    f.write("mcq.toml", &svc("mcq"));
    assert_eq!(f.mcp(&["sync", "--dry-run"]).status.code(), Some(2));
    let seen = f.seen.lock().unwrap();
    let d = dir_of(&f.services);
    assert_eq!(seen.syncs[0].source, format!("{d} @ {head}"));
    assert_eq!(seen.syncs[1].source, format!("{d} @ {head} (dirty)"));
}

#[test]
fn audit_sends_the_filters_and_renders_a_table_or_json() {
    let f = start(false);
    let o = f.mcp(&[
        "audit",
        "--since",
        "2026-01-01T08:00:00Z",
        "--caller",
        "alice",
        "--limit",
        "5",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert_eq!(
        out(&o),
        "TIME                      CALLER    CLASS      METHOD                      TARGET       OUTCOME           DURATION\n\
         2026-01-01T08:00:00.125Z  alice     operator   McpMasterService/Deploy     service=web  Ok                12ms\n\
         2026-01-01T08:00:01.000Z  agent-w1  agent(w1)  McpMasterService/ListAudit  -            PermissionDenied  12ms\n"
    );
    {
        let seen = f.seen.lock().unwrap();
        let req = &seen.audits[0];
        assert_eq!(req.since, "2026-01-01T08:00:00Z");
        assert_eq!(req.caller, "alice");
        assert_eq!(req.limit, 5);
    }

    // A relative --since is sent as a UTC time before now; the defaults.
    let o = f.mcp(&["--output", "json", "audit", "--since", "2h"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["audit"][0]["caller"], "alice");
    assert_eq!(v["audit"][0]["method"], "/mcp.v1.McpMasterService/Deploy");
    assert_eq!(v["audit"][1]["outcome"], "PermissionDenied");
    assert_eq!(v["audit"][1]["target"], "");
    assert_eq!(v["audit"][1]["duration_ms"], 12);
    {
        let seen = f.seen.lock().unwrap();
        let req = &seen.audits[1];
        let since = humantime::parse_rfc3339(&req.since).unwrap();
        let ago = std::time::SystemTime::now().duration_since(since).unwrap();
        assert!(
            ago >= std::time::Duration::from_secs(7190)
                && ago <= std::time::Duration::from_secs(7300),
            "{}",
            req.since
        );
        assert_eq!((req.caller.as_str(), req.limit), ("", 100));
    }

    // Bad input fails before any call, naming the flag.
    let o = f.mcp(&["audit", "--since", "yesterday"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("--since \"yesterday\""), "{}", err(&o));
    let o = f.mcp(&["audit", "--limit", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("--limit"), "{}", err(&o));
    assert_eq!(f.seen.lock().unwrap().audits.len(), 2);
}

#[test]
fn snapshot_list_and_restore() {
    let f = start(false);
    let o = f.mcp(&["snapshot", "mcq"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    let text = out(&o);
    assert!(
        text.contains("file:   /var/lib/mcp/snapshots/mcq/2026-12-03T15-04-05Z.tar.zst"),
        "{text}"
    );
    assert!(text.contains("size:   4096 bytes"), "{text}");
    assert!(
        text.contains(&format!("sha256: {}", "ab".repeat(32))),
        "{text}"
    );
    assert!(text.contains("mirror: /mnt/off/mcq/"), "{text}");
    let o = f.mcp(&["snapshot", "web"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("web has no placement"), "{}", err(&o));
    let o = f.mcp(&["snapshot"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("snapshot list"), "{}", err(&o));

    let o = f.mcp(&["snapshot", "list", "mcq"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(out(&o).starts_with("FILE "), "{}", out(&o));
    assert!(
        out(&o).contains("2026-12-03T15-04-05Z.tar.zst  w1    4096  2026-12-03T15:04:05Z"),
        "{}",
        out(&o)
    );
    let o = f.mcp(&["--output", "json", "snapshot", "list", "mcq"]);
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["snapshots"][0]["file"], "2026-12-03T15-04-05Z.tar.zst");
    assert_eq!(v["snapshots"][0]["size"], 4096);

    // Without --force the import is refused: exit 1, every step shown.
    let o = f.mcp(&["restore", "mcq"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("stop mcq on w1"), "{}", out(&o));
    assert!(out(&o).contains("--force"), "{}", out(&o));
    let o = f.mcp(&[
        "restore",
        "mcq",
        "--snapshot",
        "2026-12-03T15-04-05Z.tar.zst",
        "--force",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("start mcq on w1"), "{}", out(&o));
    let seen = f.seen.lock().unwrap();
    assert_eq!(seen.restores.len(), 2);
    assert_eq!(
        (seen.restores[0].snapshot.as_str(), seen.restores[0].force),
        ("", false)
    );
    assert_eq!(
        (seen.restores[1].snapshot.as_str(), seen.restores[1].force),
        ("2026-12-03T15-04-05Z.tar.zst", true)
    );
}
