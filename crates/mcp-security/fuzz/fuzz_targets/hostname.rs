//! Arbitrary strings through the edge and registration validators: no
//! panics, and whatever is accepted really is under the domain.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_security::edge::{Cidr, EdgePolicy, Overlay};
use mcp_security::identity::{AccountType, Identity};
use mcp_security::registration::node_from_identity;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let policy = EdgePolicy {
        allowed_domains: vec!["example.net".into()],
        internal_zone: "svc.mcp.internal".into(),
        overlay: Overlay::default(),
    };
    if let Ok(h) = policy.check_public_hostname(s) {
        assert!(h == "example.net" || h.ends_with(".example.net"), "{h}");
    }
    if let Ok(h) = policy.check_backend_hostname(s) {
        assert!(h.ends_with(".svc.mcp.internal"), "{h}");
    }
    if let Ok(c) = s.parse::<Cidr>() {
        // Display round-trips.
        assert_eq!(c.to_string().parse::<Cidr>().ok(), Some(c));
    }
    if let Ok(node) = node_from_identity(&Identity::new(s, AccountType::System, &[])) {
        assert_eq!(format!("agent-{node}"), s);
    }
});
