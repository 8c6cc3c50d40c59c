//! The request fuzz bodies (`mcp_proto::fuzzing`, run by the workspace's
//! fuzz crate; their corpora are replayed by
//! `crates/mcp-security/tests/fuzz_corpus.rs`): they cover every request
//! message of both services, and they run on real messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use mcp_proto::fuzzing::{AGENT_REQUESTS, MASTER_REQUESTS};
use mcp_proto::pb;
use prost::Message;

/// The decoder lists are exactly the input messages of the two services
/// (a new RPC's request is fuzzed too), each once.
#[test]
fn the_decoders_cover_every_request_message() {
    let set = prost_types::FileDescriptorSet::decode(mcp_proto::FILE_DESCRIPTOR_SET).unwrap();
    for (service, decoders) in [
        ("McpAgentService", AGENT_REQUESTS),
        ("McpMasterService", MASTER_REQUESTS),
    ] {
        let mut inputs = BTreeSet::new();
        for file in &set.file {
            for svc in file.service.iter().filter(|s| s.name() == service) {
                for m in &svc.method {
                    inputs.insert(m.input_type().trim_start_matches('.').to_string());
                }
            }
        }
        let listed: BTreeSet<String> = decoders.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(
            listed.len(),
            decoders.len(),
            "{service}: a message listed twice"
        );
        assert_eq!(listed, inputs, "{service}");
    }
}

fn input(selector: u8, m: &impl Message) -> Vec<u8> {
    let mut v = vec![selector];
    v.extend(m.encode_to_vec());
    v
}

/// Each selector decodes its own message: a deploy request with a valid
/// spec and a sync with a valid and an invalid one go through the
/// conversion; truncated and unknown inputs are ignored or refused.
#[test]
fn the_bodies_run_on_real_messages() {
    let spec = pb::ServiceSpec {
        name: "mcq".into(),
        active: true,
        components: vec![pb::ComponentSpec {
            name: "api".into(),
            image: "registry.example:8443/mcq:v1".into(),
            volumes: vec!["/srv/mcq:/srv/mcq".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(mcp_spec::ServiceSpec::try_from(spec.clone()).is_ok());
    let at = |table: &[mcp_proto::fuzzing::Decoder], name: &str| {
        let i = table.iter().position(|(n, _)| *n == name).unwrap();
        u8::try_from(i).unwrap()
    };
    let deploy = pb::AgentDeployRequest {
        service: Some(spec.clone()),
        component: String::new(),
    };
    let d = at(AGENT_REQUESTS, "mcp.v1.AgentDeployRequest");
    mcp_proto::fuzzing::agent_requests(&input(d, &deploy));
    let sync = pb::SyncRequest {
        services: vec![
            spec,
            pb::ServiceSpec {
                name: "Bad Name".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let s = at(MASTER_REQUESTS, "mcp.v1.SyncRequest");
    mcp_proto::fuzzing::master_requests(&input(s, &sync));
    let s = at(MASTER_REQUESTS, "mcp.v1.ListAuditRequest");
    mcp_proto::fuzzing::master_requests(&input(
        s,
        &pb::ListAuditRequest {
            since: "2026-01-01T00:00:00Z".into(),
            caller: "alice".into(),
            limit: 7,
        },
    ));
    for data in [&[][..], &[200u8], &[0, 0x0a, 0xff], &[3, 0x0a, 0x05, 0x0a]] {
        mcp_proto::fuzzing::agent_requests(data);
        mcp_proto::fuzzing::master_requests(data);
    }
}
