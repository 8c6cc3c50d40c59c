//! The master's pass-through RPCs: `Deploy` with a component,
//! `PushServiceFile`, `PullServiceFile`, `AdoptService`, `ServiceLogs` and
//! `ServiceEvents` reach the node that runs the service (or the named
//! node), with clear errors when there is none. Against the fake fleet, and
//! against one real agent server (large files through every hop).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::{reg, start, start_with_real_agent, Client, Master};
use mcp_master::fake::Call;
use mcp_planner::ContainerState;
use mcp_proto::pb;
use mcp_security::identity::AccountType;
use mcp_security::registration::RateLimits;
use tokio_stream::StreamExt;
use tonic::Code;

const API_V1: &str = "registry.example:8443/shop-api:v1";
const API_V2: &str = "registry.example:8443/shop-api:v2";
const WORKER_V1: &str = "registry.example:8443/shop-worker:v1";
const WORKER_V2: &str = "registry.example:8443/shop-worker:v2";

fn shop(api: &str, worker: &str) -> pb::ServiceSpec {
    let comp = |name: &str, image: &str| pb::ComponentSpec {
        name: name.to_string(),
        image: image.to_string(),
        ..Default::default()
    };
    pb::ServiceSpec {
        name: "shop".to_string(),
        active: true,
        components: vec![comp("api", api), comp("worker", worker)],
        tier: "worker".to_string(),
        node: String::new(),
        snapshot: None,
        no_rollback: false,
    }
}

fn deploy_req(spec: pb::ServiceSpec, component: &str) -> pb::MasterDeployRequest {
    pb::MasterDeployRequest {
        service: Some(spec),
        component: component.to_string(),
    }
}

/// A master with node `vega` (fake fleet) registered, and alice's client.
async fn fleet_of_one() -> (Master, Client) {
    let m = start(&["agent-vega"], 16, RateLimits::new()).await;
    let mut vega = m.agent_client("vega", &["vega", "10.0.0.2"]).await;
    vega.register(reg("vega", "https://10.0.0.2:9444"))
        .await
        .unwrap();
    let alice = m.client("alice", AccountType::Human).await;
    (m, alice)
}

fn file(content: &[u8], mode: u32) -> pb::PushFileRequest {
    pb::PushFileRequest {
        service: "shop".to_string(),
        path: "conf/app.toml".to_string(),
        content: content.to_vec(),
        mode,
    }
}

fn pull(service: &str, path: &str) -> pb::PullFileRequest {
    pb::PullFileRequest {
        service: service.to_string(),
        path: path.to_string(),
    }
}

#[tokio::test]
async fn deploy_with_a_component_redeploys_only_that_component() {
    let (m, mut alice) = fleet_of_one().await;

    // Not deployed yet: a component cannot be deployed alone.
    let e = alice
        .deploy(deploy_req(shop(API_V1, WORKER_V1), "api"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("deploy the whole service"), "{e:?}");

    let r = alice
        .deploy(deploy_req(shop(API_V1, WORKER_V1), ""))
        .await
        .unwrap()
        .into_inner();
    assert!(r.success, "{r:?}");
    m.agents.clear_calls();

    // The api image changes: only api is redeployed, on the service's node.
    let r = alice
        .deploy(deploy_req(shop(API_V2, WORKER_V1), "api"))
        .await
        .unwrap()
        .into_inner();
    assert!(r.success, "{r:?}");
    assert_eq!(r.node, "vega");
    let d = r.deploy_result.unwrap();
    assert_eq!(d.status, pb::StepStatus::Succeeded as i32);
    assert!(d.detail.contains("recreate shop-api"), "{d:?}");
    assert_eq!(r.dns_result.unwrap().status, pb::StepStatus::Skipped as i32);
    let deploys: Vec<Call> = m
        .agents
        .mutations()
        .into_iter()
        .filter(|c| matches!(c, Call::Deploy { .. }))
        .collect();
    assert_eq!(deploys.len(), 1, "{deploys:?}");
    assert!(matches!(
        &deploys[0],
        Call::Deploy { node, component: Some(c), .. } if node == "vega" && c == "api"
    ));
    let on_vega = &m.agents.services_on("vega")["shop"];
    assert_eq!(on_vega.components["api"].version, "v2");
    assert_eq!(on_vega.components["worker"].version, "v1");
    // Recorded: the next pass has nothing to do.
    let placed = m.state.read(|r| r.placement("shop")).unwrap().unwrap();
    assert_eq!(placed.spec.components[0].image, API_V2);
    m.agents.clear_calls();
    let r = alice
        .sync(pb::SyncRequest {
            services: vec![shop(API_V2, WORKER_V1)],
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.changes, "{}", r.plan_json);

    // A change outside the component is refused: the whole service must go.
    let e = alice
        .deploy(deploy_req(shop(API_V2, WORKER_V2), "api"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("outside component api"), "{e:?}");
    let e = alice
        .deploy(deploy_req(shop(API_V2, WORKER_V1), "nope"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(m.agents.mutations().is_empty());
}

#[tokio::test]
async fn files_and_adopt_reach_the_services_node() {
    let (m, mut alice) = fleet_of_one().await;

    // No placement: NotFound naming the service.
    let e = alice.push_service_file(file(b"x", 0)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("service shop is not placed"), "{e:?}");

    alice
        .deploy(deploy_req(shop(API_V1, WORKER_V1), ""))
        .await
        .unwrap();
    alice
        .push_service_file(file(b"listen = 8080\n", 0o600))
        .await
        .unwrap();
    assert!(m.agents.calls().contains(&Call::PushFile {
        node: "vega".to_string(),
        service: "shop".to_string(),
        path: "conf/app.toml".to_string(),
    }));
    let got = alice
        .pull_service_file(pull("shop", "conf/app.toml"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.content, b"listen = 8080\n");
    assert_eq!(got.mode, 0o600);
    // The agent's errors come back with what was asked.
    let e = alice
        .pull_service_file(pull("shop", "missing.txt"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().starts_with("pull shop/missing.txt: "), "{e:?}");
    assert!(e.message().contains("vega"), "{e:?}");

    // Adopt on a named node; on an unknown node; with neither node nor
    // placement.
    m.agents
        .add_unmanaged("vega", "legacy-web", "registry.example:8443/legacy:v3");
    let r = alice
        .adopt_service(pb::MasterAdoptRequest {
            service: "legacy".to_string(),
            node: "vega".to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results[0].step, "adopt legacy-web");
    assert_eq!(r.results[0].status, pb::StepStatus::Succeeded as i32);
    assert!(m.agents.services_on("vega").contains_key("legacy"));
    let e = alice
        .adopt_service(pb::MasterAdoptRequest {
            service: "legacy".to_string(),
            node: "ghost".to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(
        e.message().contains("node ghost is not registered"),
        "{e:?}"
    );
    let e = alice
        .adopt_service(pb::MasterAdoptRequest {
            service: "other".to_string(),
            node: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("service other is not placed"), "{e:?}");

    // A node the master forgot, still named by a placement.
    m.state.write(|w| w.remove_node("vega")).unwrap();
    let e = alice
        .pull_service_file(pull("shop", "conf/app.toml"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message()
            .contains("service shop is placed on node vega, which is not registered"),
        "{e:?}"
    );

    // An unreachable node: said so, naming it.
    let mut vega = m.agent_client("vega", &["vega", "10.0.0.2"]).await;
    vega.register(reg("vega", "https://10.0.0.2:9444"))
        .await
        .unwrap();
    m.agents.set_unreachable("vega", true);
    let e = alice
        .pull_service_file(pull("shop", "conf/app.toml"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("agent vega"), "{e:?}");
}

#[tokio::test]
async fn logs_and_events_forward_since_and_limit() {
    let (m, mut alice) = fleet_of_one().await;
    alice
        .deploy(deploy_req(shop(API_V1, WORKER_V1), ""))
        .await
        .unwrap();
    m.agents.emit_log("vega", "shop", "api", "one");
    m.agents.emit_log("vega", "shop", "api", "two");
    let logs = |tail: u32, since: &str| pb::ServiceLogsRequest {
        service_name: "shop".to_string(),
        component: "api".to_string(),
        follow: false,
        tail,
        since: since.to_string(),
    };
    let lines: Vec<String> = alice
        .service_logs(logs(1, ""))
        .await
        .unwrap()
        .into_inner()
        .map(|l| l.unwrap().line)
        .collect()
        .await;
    assert_eq!(lines, ["two"]);
    // `since` is checked by the master, then forwarded.
    let e = alice.service_logs(logs(0, "yesterday")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let old = SystemTime::now() - Duration::from_secs(7200);
    m.agents.emit_log_at("vega", "shop", "api", "long ago", old);
    let hour_ago = humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(3600));
    let lines: Vec<String> = alice
        .service_logs(logs(0, &hour_ago.to_string()))
        .await
        .unwrap()
        .into_inner()
        .map(|l| l.unwrap().line)
        .collect()
        .await;
    assert_eq!(lines, ["one", "two"]);

    alice
        .stop_service(pb::ServiceLifecycleRequest {
            service_name: "shop".to_string(),
            component: "api".to_string(),
        })
        .await
        .unwrap();
    let events = |limit: u32, since: &str| pb::ServiceEventsRequest {
        service_name: String::new(),
        since: since.to_string(),
        limit,
    };
    let all = alice
        .service_events(events(0, ""))
        .await
        .unwrap()
        .into_inner()
        .events;
    let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["deploy", "deploy", "stop"], "{all:?}");
    assert!(all.iter().all(|e| e.node == "vega" && e.service == "shop"));
    assert_eq!(all[2].detail, "stopped by request");
    let newest = alice
        .service_events(events(1, ""))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].kind, "stop");
    let future = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600));
    let none = alice
        .service_events(events(0, &future.to_string()))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(none.is_empty(), "{none:?}");
    let e = alice.service_events(events(0, "soon")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

/// A master and one real agent: a 50 MiB file pushes and pulls intact
/// through the master (every hop has the shared message limit); a file
/// over the agent's limit is refused with a message naming it; a
/// component deploy recreates that container only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_agent_large_files_and_component_deploy_through_the_master() {
    let m = start_with_real_agent().await;
    let real = m.real.as_ref().unwrap();
    for image in [API_V1, API_V2, WORKER_V1] {
        real.agent.runtime().add_image(image);
    }
    let mut orion = m.agent_client("orion", &["orion", "127.0.0.1"]).await;
    orion.register(reg("orion", &real.url())).await.unwrap();
    let mut alice = m.client("alice", AccountType::Human).await;
    let r = alice
        .deploy(deploy_req(shop(API_V1, WORKER_V1), ""))
        .await
        .unwrap()
        .into_inner();
    assert!(r.success, "{r:?}");
    assert_eq!(r.node, "orion");

    let big: Vec<u8> = (0..50 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut alice = alice
        .max_decoding_message_size(mcp_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(mcp_proto::MAX_MESSAGE_BYTES);
    alice
        .push_service_file(pb::PushFileRequest {
            service: "shop".to_string(),
            path: "data/big.bin".to_string(),
            content: big.clone(),
            mode: 0o640,
        })
        .await
        .unwrap();
    let got = alice
        .pull_service_file(pull("shop", "data/big.bin"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.mode, 0o640);
    assert!(got.content == big, "content differs");
    drop(got);

    let over = vec![0u8; mcp_proto::MAX_FILE_BYTES + 1];
    let e = alice
        .push_service_file(pb::PushFileRequest {
            service: "shop".to_string(),
            path: "data/too-big.bin".to_string(),
            content: over,
            mode: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("64 MiB"), "{e:?}");

    // Only api is recreated.
    real.agent.runtime().take_calls();
    let r = alice
        .deploy(deploy_req(shop(API_V2, WORKER_V1), "api"))
        .await
        .unwrap()
        .into_inner();
    assert!(r.success, "{r:?}");
    let touched: Vec<String> = real
        .agent
        .runtime()
        .mutations()
        .iter()
        .map(|c| format!("{c:?}"))
        .collect();
    assert!(
        touched.iter().any(|c| c.contains("shop-api")),
        "{touched:?}"
    );
    assert!(
        touched.iter().all(|c| !c.contains("shop-worker")),
        "{touched:?}"
    );
    let st = alice
        .status(pb::StatusRequest {
            service_name: "shop".to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let comps = &st.services[0].components;
    let api = comps.iter().find(|c| c.name == "api").unwrap();
    assert_eq!(api.version, "v2");
    assert_eq!(api.observed_state, ContainerState::Running.as_str());
}
