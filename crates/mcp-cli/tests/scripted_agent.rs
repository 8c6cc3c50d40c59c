//! The real `mcp` binary with `--direct --node N` against a scripted agent
//! (tonic on 127.0.0.1 over TLS 1.3, token checked): what each command sends
//! and how the answers are shown; stop/start leave the file alone.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use common::{check_token, err, out, step, svc};
use mcp_proto::pb;
use mcp_proto::pb::mcp_agent_service_server::{McpAgentService, McpAgentServiceServer};
use tonic::{Request, Response, Status, Streaming};

type R<T> = Result<Response<T>, Status>;

fn no<T>() -> R<T> {
    Err(Status::unimplemented("not in this test"))
}

#[derive(Default)]
struct Seen {
    /// (rpc, service) in call order.
    calls: Vec<(String, String)>,
    deploys: Vec<pb::AgentDeployRequest>,
    pushes: Vec<pb::PushFileRequest>,
    /// `limit` of every Events call.
    event_limits: Vec<u32>,
}

struct Script {
    seen: Arc<Mutex<Seen>>,
}

impl Script {
    fn record(&self, rpc: &str, service: &str) {
        self.seen
            .lock()
            .unwrap()
            .calls
            .push((rpc.to_string(), service.to_string()));
    }
}

fn comp(name: &str, state: &str) -> pb::ComponentInfo {
    pb::ComponentInfo {
        name: name.to_string(),
        image: format!("r/{name}:v2"),
        version: "v2".to_string(),
        desired_state: "running".to_string(),
        observed_state: state.to_string(),
        ..Default::default()
    }
}

fn lifecycle(rpc: &str, req: &pb::AgentLifecycleRequest) -> pb::AgentLifecycleResponse {
    pb::AgentLifecycleResponse {
        results: vec![step(
            &format!("{rpc} {}", req.service_name),
            pb::StepStatus::Succeeded,
            "",
        )],
    }
}

#[tonic::async_trait]
impl McpAgentService for Script {
    async fn deploy(&self, req: Request<pb::AgentDeployRequest>) -> R<pb::AgentDeployResponse> {
        check_token(&req)?;
        let req = req.into_inner();
        self.seen.lock().unwrap().deploys.push(req.clone());
        Ok(Response::new(pb::AgentDeployResponse {
            results: vec![
                step("pull image", pb::StepStatus::Succeeded, ""),
                step("proxy route", pb::StepStatus::Skipped, ""),
            ],
            components: vec![comp("api", "running")],
        }))
    }
    async fn undeploy(
        &self,
        req: Request<pb::AgentUndeployRequest>,
    ) -> R<pb::AgentUndeployResponse> {
        check_token(&req)?;
        if req.get_ref().remove_data {
            return Err(Status::invalid_argument("the CLI never removes data"));
        }
        self.record("Undeploy", &req.get_ref().service_name);
        Ok(Response::new(pb::AgentUndeployResponse {
            results: vec![step("remove containers", pb::StepStatus::Succeeded, "")],
        }))
    }
    async fn stop(&self, req: Request<pb::AgentLifecycleRequest>) -> R<pb::AgentLifecycleResponse> {
        check_token(&req)?;
        self.record("Stop", &req.get_ref().service_name);
        Ok(Response::new(lifecycle("stop", req.get_ref())))
    }
    async fn start(
        &self,
        req: Request<pb::AgentLifecycleRequest>,
    ) -> R<pb::AgentLifecycleResponse> {
        check_token(&req)?;
        self.record("Start", &req.get_ref().service_name);
        Ok(Response::new(lifecycle("start", req.get_ref())))
    }
    async fn restart(
        &self,
        req: Request<pb::AgentLifecycleRequest>,
    ) -> R<pb::AgentLifecycleResponse> {
        check_token(&req)?;
        self.record("Restart", &req.get_ref().service_name);
        Ok(Response::new(lifecycle("restart", req.get_ref())))
    }
    async fn list_services(
        &self,
        req: Request<pb::ListServicesRequest>,
    ) -> R<pb::ListServicesResponse> {
        check_token(&req)?;
        Ok(Response::new(pb::ListServicesResponse {
            services: vec![
                pb::ServiceInfo {
                    name: "mcq".to_string(),
                    active: true,
                    tier: "worker".to_string(),
                    components: vec![comp("api", "running"), comp("worker", "exited")],
                    ..Default::default()
                },
                pb::ServiceInfo {
                    name: "web".to_string(),
                    active: false,
                    tier: "worker".to_string(),
                    components: vec![comp("web", "stopped")],
                    ..Default::default()
                },
            ],
            orphans: vec!["old-thing".to_string()],
        }))
    }
    async fn adopt(&self, req: Request<pb::AdoptRequest>) -> R<pb::AdoptResponse> {
        check_token(&req)?;
        self.record("Adopt", &req.get_ref().service);
        Ok(Response::new(pb::AdoptResponse {
            results: vec![step("adopt mcq-api", pb::StepStatus::Succeeded, "")],
        }))
    }
    type LogsStream = tokio_stream::wrappers::ReceiverStream<Result<pb::LogLine, Status>>;
    async fn logs(&self, req: Request<pb::LogsRequest>) -> R<Self::LogsStream> {
        check_token(&req)?;
        let component = req.get_ref().component.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let l = pb::LogLine {
                component,
                line: "started".to_string(),
                stream: "stdout".to_string(),
            };
            let _ = tx.send(Ok(l)).await;
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }
    async fn events(&self, req: Request<pb::EventsRequest>) -> R<pb::EventsResponse> {
        check_token(&req)?;
        self.seen
            .lock()
            .unwrap()
            .event_limits
            .push(req.get_ref().limit);
        // Eight events whatever the limit (an agent that ignores it).
        let events = (0..8)
            .map(|i| pb::EventInfo {
                node: "orion".to_string(),
                service: "mcq".to_string(),
                component: "worker".to_string(),
                prev_state: "running".to_string(),
                new_state: "exited".to_string(),
                timestamp: format!("2026-01-01T00:00:0{i}Z"),
                kind: "state".to_string(),
                detail: String::new(),
            })
            .collect();
        Ok(Response::new(pb::EventsResponse { events }))
    }
    async fn push_file(&self, req: Request<pb::PushFileRequest>) -> R<pb::PushFileResponse> {
        check_token(&req)?;
        let req = req.into_inner();
        let refused = req.path.contains("..");
        self.seen.lock().unwrap().pushes.push(req);
        Ok(Response::new(pb::PushFileResponse {
            success: !refused,
            error: if refused {
                "path escapes /srv/mcq".to_string()
            } else {
                String::new()
            },
        }))
    }
    async fn pull_file(&self, req: Request<pb::PullFileRequest>) -> R<pb::PullFileResponse> {
        check_token(&req)?;
        if req.get_ref().path != "conf/mcq.toml" {
            return Ok(Response::new(pb::PullFileResponse {
                error: format!("no such file: {}", req.get_ref().path),
                ..Default::default()
            }));
        }
        Ok(Response::new(pb::PullFileResponse {
            content: b"secret = 1\n".to_vec(),
            mode: 0o600,
            error: String::new(),
        }))
    }
    async fn health_check(&self, _: Request<pb::HealthCheckRequest>) -> R<pb::HealthCheckResponse> {
        no()
    }
    async fn setup_edge_route(
        &self,
        _: Request<pb::SetupEdgeRouteRequest>,
    ) -> R<pb::SetupEdgeRouteResponse> {
        no()
    }
    async fn remove_edge_route(
        &self,
        _: Request<pb::RemoveEdgeRouteRequest>,
    ) -> R<pb::RemoveEdgeRouteResponse> {
        no()
    }
    async fn list_edge_routes(
        &self,
        _: Request<pb::ListEdgeRoutesRequest>,
    ) -> R<pb::ListEdgeRoutesResponse> {
        no()
    }
    type ExportServiceDataStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::ServiceDataChunk, Status>>;
    async fn export_service_data(
        &self,
        _: Request<pb::ExportServiceDataRequest>,
    ) -> R<Self::ExportServiceDataStream> {
        no()
    }
    async fn import_service_data(
        &self,
        _: Request<Streaming<pb::ImportServiceDataChunk>>,
    ) -> R<pb::ImportServiceDataResponse> {
        no()
    }
    async fn add_proxy_route(
        &self,
        _: Request<pb::AddProxyRouteRequest>,
    ) -> R<pb::AddProxyRouteResponse> {
        no()
    }
    async fn remove_proxy_route(
        &self,
        _: Request<pb::RemoveProxyRouteRequest>,
    ) -> R<pb::RemoveProxyRouteResponse> {
        no()
    }
    async fn list_proxy_routes(
        &self,
        _: Request<pb::ListProxyRoutesRequest>,
    ) -> R<pb::ListProxyRoutesResponse> {
        no()
    }
}

struct Fixture {
    peer: common::Peer,
    cfg: PathBuf,
    seen: Arc<Mutex<Seen>>,
}

/// A scripted agent "orion"; the config has no master at all.
fn start() -> Fixture {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let peer = common::serve(
        tonic::transport::Server::builder()
            .add_service(McpAgentServiceServer::new(Script { seen: seen.clone() })),
    );
    let cfg = peer.config(&format!(
        "\n[[nodes]]\nname = \"orion\"\naddress = \"https://{}\"\n",
        peer.addr
    ));
    Fixture { peer, cfg, seen }
}

const ORION: [&str; 3] = ["--direct", "--node", "orion"];

impl Fixture {
    fn mcp(&self, args: &[&str]) -> std::process::Output {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(ORION);
        common::mcp(&self.cfg, &a, &[])
    }
}

#[test]
fn deploy_sends_the_local_spec_and_shows_skipped_steps() {
    let f = start();
    f.peer.write("mcq.toml", &svc("mcq"));
    let o = f.mcp(&["deploy", "mcq"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    let text = out(&o);
    assert!(text.contains("deploy mcq on agent orion"), "{text}");
    assert!(text.contains("  ok       pull image\n"), "{text}");
    assert!(
        text.contains("  skipped  proxy route (not configured)\n"),
        "{text}"
    );
    assert!(text.contains("mcq      api        orion"), "{text}");
    let seen = f.seen.lock().unwrap();
    let spec = seen.deploys[0].service.as_ref().unwrap();
    assert_eq!(spec.name, "mcq");
    assert_eq!(spec.components[0].image, "r/mcq:v1");
}

#[test]
fn stop_and_start_direct_leave_the_file_alone() {
    let f = start();
    let file = f.peer.write("mcq.toml", &svc("mcq"));
    for cmd in ["stop", "start", "restart", "undeploy", "adopt"] {
        let o = f.mcp(&[cmd, "mcq"]);
        assert_eq!(o.status.code(), Some(0), "{cmd}: {}{}", out(&o), err(&o));
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), svc("mcq"));
    let calls: Vec<String> = f
        .seen
        .lock()
        .unwrap()
        .calls
        .iter()
        .map(|(rpc, s)| format!("{rpc} {s}"))
        .collect();
    assert_eq!(
        calls,
        [
            "Stop mcq",
            "Start mcq",
            "Restart mcq",
            "Undeploy mcq",
            "Adopt mcq"
        ]
    );
}

#[test]
fn status_ps_events_and_logs_from_one_agent() {
    let f = start();
    let o = f.mcp(&["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(
        out(&o),
        "NAME  NODE   TIER    STATUS    DETAIL\nmcq   orion  worker  degraded  worker: exited\nweb   orion  worker  stopped   -\n"
    );
    let o = f.mcp(&["ps"]);
    let text = out(&o);
    assert!(
        text.contains("mcq      worker     orion  r/worker:v2  v2       exited"),
        "{text}"
    );
    assert!(text.contains("orphan: old-thing"), "{text}");

    let o = f.mcp(&["events", "mcq"]);
    assert!(
        out(&o)
            .contains("2026-01-01T00:00:00Z  orion  mcq      worker     state  running -> exited"),
        "{}",
        out(&o)
    );
    let o = f.mcp(&["logs", "mcq", "--component", "api"]);
    assert_eq!(out(&o), "started\n", "no prefix with --component");
}

#[test]
fn push_and_pull_files() {
    use std::os::unix::fs::PermissionsExt;
    let f = start();
    let local = f.peer.dir.path().join("mcq.toml");
    std::fs::write(&local, "x = 1\n").unwrap();
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o640)).unwrap();
    let l = local.to_str().unwrap();
    let o = f.mcp(&["push", l, "mcq", "conf/mcq.toml"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    {
        let seen = f.seen.lock().unwrap();
        let p = &seen.pushes[0];
        assert_eq!(
            (
                p.service.as_str(),
                p.path.as_str(),
                p.content.as_slice(),
                p.mode
            ),
            ("mcq", "conf/mcq.toml", &b"x = 1\n"[..], 0o640)
        );
    }
    let o = f.mcp(&["push", l, "mcq", "../etc/passwd"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("path escapes /srv/mcq"), "{}", err(&o));

    // Into a directory: the file keeps its name and gets the returned mode.
    let dest = f.peer.dir.path().join("pulled");
    std::fs::create_dir(&dest).unwrap();
    let o = f.mcp(&["pull", "mcq", "conf/mcq.toml", dest.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    let got = dest.join("mcq.toml");
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "secret = 1\n");
    let mode = std::fs::metadata(&got).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        std::fs::read_dir(&dest).unwrap().count(),
        1,
        "no temp file left"
    );

    let o = f.mcp(&["pull", "mcq", "nope", dest.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("no such file: nope"), "{}", err(&o));
}

#[test]
fn events_are_limited_to_the_newest() {
    let f = start();
    let o = f.mcp(&["events", "mcq"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(
        out(&o).lines().count(),
        9,
        "a header and 8 rows:\n{}",
        out(&o)
    );
    let o = f.mcp(&["events", "mcq", "--limit", "5"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let text = out(&o);
    assert_eq!(text.lines().count(), 6, "a header and 5 rows:\n{text}");
    assert!(
        text.contains("2026-01-01T00:00:07Z"),
        "the newest are kept:\n{text}"
    );
    assert!(!text.contains("2026-01-01T00:00:02Z"), "{text}");
    assert_eq!(f.seen.lock().unwrap().event_limits, [100, 5]);
    let o = f.mcp(&["events", "mcq", "--limit", "0"]);
    assert_eq!(o.status.code(), Some(2), "a limit of 0 is a usage error");
    let o = f.mcp(&["events", "mcq", "--since", "soon"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("RFC 3339"), "{}", err(&o));
}
