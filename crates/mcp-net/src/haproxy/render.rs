//! MCP's haproxy.cfg: rendered whole from the route set, which it also
//! carries (one `# mcp-route <json>` comment line per route), so the file
//! is the adapter's state.
//!
//! ```text
//! # mcp-route {"listen_port":8443,"hostname":"a.mcp.test",...}
//! global / defaults (mode tcp, timeouts)
//! frontend mcp_fe_<port>
//!     bind <ip>:<port>
//!     tcp-request inspect-delay 5s
//!     tcp-request content accept if { req_ssl_hello_type 1 }
//!     use_backend mcp_<port>_<host, dots as _> if { req.ssl_sni -i <host> }
//! backend mcp_<port>_<host, dots as _>
//!     server s1 <backend>
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::proxy::ProxyRoute;
use crate::{NetError, Result};

/// The prefix of the lines carrying the route set.
const ROUTE_LINE: &str = "# mcp-route ";

/// The prefix of every backend MCP renders.
pub(crate) const BACKEND_PREFIX: &str = "mcp_";

const HEADER: &str = "\
# MCP's HAProxy configuration, rendered by mcp-net (mcp_net::haproxy).
# Do not edit: the next route change rewrites it. The `# mcp-route` lines
# are the routes MCP wants; `list` reports those the running HAProxy has.
";

const GLOBAL: &str = "\
global
    # Run under `haproxy -W -S <master socket>` (master-worker, foreground);
    # a reload lets old workers finish their connections for this long.
    hard-stop-after 30s

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
";

/// The HAProxy name of a route's backend: `mcp_<port>_<host>` with the
/// hostname's dots as `_` (hostnames have no `_`, so names are distinct;
/// [`render`] checks anyway).
pub(crate) fn backend_name(r: &ProxyRoute) -> String {
    format!(
        "{BACKEND_PREFIX}{}_{}",
        r.listen_port,
        r.hostname.replace('.', "_")
    )
}

/// An address in HAProxy's syntax: IPv6 with the `ipv6@` prefix (the port
/// after the last colon), the rest as is.
fn address(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("ipv6@{ip}:{port}"),
        _ => format!("{host}:{port}"),
    }
}

/// A route's backend in HAProxy's syntax, refusing what could break the
/// file (a backend is `host:port`; the host is a name or an address).
fn backend_address(r: &ProxyRoute) -> Result<String> {
    let bad = || {
        NetError::Invalid(format!(
            "route {}:{}: backend {:?} is not a host name or IP address with a port",
            r.hostname, r.listen_port, r.backend
        ))
    };
    let (host, port) = r.backend.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.parse::<IpAddr>().is_err() && !mcp_spec::names::is_hostname(host) {
        return Err(bad());
    }
    Ok(address(host, port))
}

/// The configuration of no routes: what a fresh HAProxy of MCP's runs.
/// (HAProxy 2.6's `-c` says "will not start (no listener)" about it, exit
/// code 2, yet a master-worker HAProxy runs it fine.)
pub fn empty_config() -> String {
    format!("{HEADER}\n{GLOBAL}")
}

/// The whole configuration serving `routes` (L4, checked) on `listen`.
pub(crate) fn render(listen: IpAddr, routes: &[ProxyRoute]) -> Result<String> {
    let mut names: BTreeMap<String, &ProxyRoute> = BTreeMap::new();
    let mut by_port: BTreeMap<u16, Vec<(&ProxyRoute, String)>> = BTreeMap::new();
    let mut out = String::from(HEADER);
    for r in routes {
        let name = backend_name(r);
        if let Some(other) = names.insert(name.clone(), r) {
            return Err(NetError::Invalid(format!(
                "routes {}:{} and {}:{} would share the HAProxy backend name {name}",
                other.hostname, other.listen_port, r.hostname, r.listen_port
            )));
        }
        let json = serde_json::to_string(r)
            .map_err(|e| NetError::Invalid(format!("route {}: {e}", r.hostname)))?;
        let _ = writeln!(out, "{ROUTE_LINE}{json}");
        by_port.entry(r.listen_port).or_default().push((r, name));
    }
    out.push('\n');
    out.push_str(GLOBAL);
    for (port, routes) in &by_port {
        let _ = write!(
            out,
            "\nfrontend mcp_fe_{port}\n    bind {}\n    tcp-request inspect-delay 5s\n    \
             tcp-request content accept if {{ req_ssl_hello_type 1 }}\n",
            address(&listen.to_string(), *port)
        );
        for (r, name) in routes {
            let _ = writeln!(
                out,
                "    use_backend {name} if {{ req.ssl_sni -i {} }}",
                r.hostname
            );
        }
    }
    for routes in by_port.values() {
        for (r, name) in routes {
            let _ = write!(
                out,
                "\nbackend {name}\n    server s1 {}\n",
                backend_address(r)?
            );
        }
    }
    Ok(out)
}

/// The routes a rendered file carries. `what` names the file in errors.
pub(crate) fn parse(text: &str, what: &str) -> Result<Vec<ProxyRoute>> {
    let mut routes: Vec<ProxyRoute> = text
        .lines()
        .filter_map(|l| l.strip_prefix(ROUTE_LINE))
        .map(|json| {
            serde_json::from_str(json)
                .map_err(|e| NetError::protocol(what, format!("route line {json:?}: {e}")))
        })
        .collect::<Result<_>>()?;
    routes.sort();
    Ok(routes)
}

/// The backend names of `routes`.
pub(crate) fn backend_names(routes: &[ProxyRoute]) -> BTreeSet<String> {
    routes.iter().map(backend_name).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proxy::RouteMode;

    fn route(port: u16, host: &str, backend: &str) -> ProxyRoute {
        ProxyRoute {
            listen_port: port,
            hostname: host.into(),
            backend: backend.into(),
            mode: RouteMode::L4,
            tls: None,
            backend_tls: None,
        }
    }

    #[test]
    fn the_file_carries_its_routes() {
        let routes = vec![
            route(8443, "a.mcp.test", "127.0.0.1:9001"),
            route(8443, "b.mcp.test", "[::1]:9002"),
            route(9443, "a.mcp.test", "localhost:9003"),
        ];
        let text = render("127.0.0.1".parse().unwrap(), &routes).unwrap();
        assert_eq!(parse(&text, "cfg").unwrap(), routes);
        assert!(text.contains("frontend mcp_fe_8443\n    bind 127.0.0.1:8443\n"));
        assert!(text.contains("use_backend mcp_8443_b_mcp_test if { req.ssl_sni -i b.mcp.test }"));
        assert!(text.contains("backend mcp_8443_b_mcp_test\n    server s1 ipv6@::1:9002\n"));
        assert!(text.contains("backend mcp_9443_a_mcp_test\n    server s1 localhost:9003\n"));
        assert_eq!(parse(&empty_config(), "cfg").unwrap(), vec![]);
        let v6 = render("::1".parse().unwrap(), &routes[..1]).unwrap();
        assert!(v6.contains("bind ipv6@::1:8443\n"));
    }

    #[test]
    fn a_backend_that_could_break_the_file_is_refused() {
        for backend in ["evil host:80", "a\nbackend x:80", "a{b}:80"] {
            let r = route(8443, "a.mcp.test", backend);
            assert!(
                matches!(
                    render("127.0.0.1".parse().unwrap(), &[r]),
                    Err(NetError::Invalid(_))
                ),
                "{backend:?}"
            );
        }
    }

    #[test]
    fn a_mangled_route_line_is_a_protocol_error() {
        assert!(matches!(
            parse("# mcp-route {nope\n", "cfg"),
            Err(NetError::Protocol { .. })
        ));
    }
}
