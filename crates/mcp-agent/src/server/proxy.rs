//! The proxy-route RPCs' message mapping: `AddProxyRoute`,
//! `RemoveProxyRoute`, `ListProxyRoutes`, and routes in the status.

use mcp_net::proxy::{BackendTls, ProxyRoute, RouteKey, RouteMode};
use mcp_proto::pb;

use crate::agent::{AgentError, RouteStatus};
use crate::clock::Timestamp;
use crate::registry::{CertRecord, RouteRecord};

/// A requested route in domain form; the backend TLS CA is the fleet CA.
pub(super) fn route_from_pb(
    r: Option<pb::ProxyRoute>,
    fleet_ca: Option<&std::path::Path>,
) -> Result<ProxyRoute, AgentError> {
    let bad = |m: String| AgentError::InvalidArgument { message: m };
    let r = r.ok_or_else(|| bad("AddProxyRoute: route is required".into()))?;
    let port = u16::try_from(r.listen_port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad(format!("route.listen_port {} is not a port", r.listen_port)))?;
    let mode = match r.mode.as_str() {
        "l7" | "" => RouteMode::L7,
        "l4" => RouteMode::L4,
        other => {
            return Err(bad(format!(
                "route.mode {other:?}: must be \"l4\" or \"l7\""
            )))
        }
    };
    let backend_tls = if r.backend_tls {
        let ca = fleet_ca.ok_or_else(|| {
            bad("route.backend_tls: this agent has no CA to verify backends with".into())
        })?;
        let name = if r.backend_server_name.is_empty() {
            r.hostname.clone()
        } else {
            r.backend_server_name.clone()
        };
        Some(BackendTls {
            server_name: name,
            ca: ca.to_path_buf(),
        })
    } else {
        None
    };
    let route = ProxyRoute {
        listen_port: port,
        hostname: r.hostname,
        backend: r.backend,
        mode,
        tls: None,
        backend_tls,
    };
    // The certificate is the agent's to provide; check the rest now.
    let mut probe = route.clone();
    if mode == RouteMode::L7 {
        probe.tls = Some(mcp_net::TlsFiles {
            cert: "/c".into(),
            key: "/k".into(),
        });
    }
    probe.check().map_err(|e| bad(e.to_string()))?;
    Ok(route)
}

pub(super) fn key_from_pb(r: &pb::RemoveProxyRouteRequest) -> Result<RouteKey, AgentError> {
    let port = u16::try_from(r.listen_port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| AgentError::InvalidArgument {
            message: format!("listen_port {} is not a port", r.listen_port),
        })?;
    Ok(RouteKey {
        listen_port: port,
        hostname: mcp_spec::names::normalize_hostname(&r.hostname),
    })
}

pub(super) fn route_to_pb(r: &RouteRecord, cert: Option<&CertRecord>) -> pb::ProxyRoute {
    pb::ProxyRoute {
        listen_port: u32::from(r.proxy.listen_port),
        hostname: r.proxy.hostname.clone(),
        backend: r.proxy.backend.clone(),
        mode: r.proxy.mode.as_str().to_string(),
        backend_tls: r.proxy.backend_tls.is_some(),
        service: r.service.clone(),
        component: r.component.clone(),
        cert_serial: cert.map(|c| c.serial.clone()).unwrap_or_default(),
        cert_expires: cert.map(|c| c.not_after.to_rfc3339()).unwrap_or_default(),
        backend_server_name: r
            .proxy
            .backend_tls
            .as_ref()
            .map(|b| b.server_name.clone())
            .unwrap_or_default(),
    }
}

pub(super) fn route_info(r: &RouteStatus) -> pb::RouteInfo {
    pb::RouteInfo {
        route: r.route.clone(),
        hostname: r.hostname.clone(),
        listen_port: u32::from(r.listen_port),
        mode: r.mode.as_str().to_string(),
        url: r.url.clone(),
        proxy_address: r.proxy_address.clone().unwrap_or_default(),
        backend: r.backend.clone(),
        cert_serial: r.cert_serial.clone().unwrap_or_default(),
        cert_expires: r
            .cert_expires
            .map(Timestamp::to_rfc3339)
            .unwrap_or_default(),
    }
}
