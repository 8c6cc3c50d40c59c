//! MCP's Caddy configuration: rendered whole from the route set, and the
//! route set parsed back from a running Caddy's configuration.
//!
//! Every object MCP renders carries an `@id` starting with `mcp-`; parsing
//! reads only those (a foreign server or route is ignored, a foreign
//! config lists nothing).
//!
//! ```text
//! admin.listen                              the adapter's admin address
//! apps.http.servers["mcp-<port>"]           @id mcp-server-<port>
//!   listen ["<ip>:<port>"], protocols [h1, h2], automatic_https.disable
//!   tls_connection_policies[]               @id mcp-tls-<port>-<host>
//!     match.sni [<host>] → certificate_selection.any_tag [mcp-<port>-<host>]
//!   routes[]                                @id mcp-route-<port>-<host>
//!     match [{host: [<host>]}] → reverse_proxy upstreams [{dial: <backend>}]
//!       (+ transport {protocol: http, tls: {server_name, root_ca_pem_files}})
//!   routes[last]                            @id mcp-fallback-<port>: 404
//! apps.tls.certificates.load_files[]        one per (cert, key) pair,
//!   tags: every route tag using that pair
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::proxy::{BackendTls, ProxyRoute, RouteMode, TlsFiles};
use crate::{NetError, Result};

const SERVER_ID: &str = "mcp-server-";
const ROUTE_ID: &str = "mcp-route-";

/// The tag of a route's certificate (and the suffix of its ids).
fn tag(port: u16, host: &str) -> String {
    format!("mcp-{port}-{host}")
}

/// The whole configuration serving `routes` (all L7, checked) on `listen`,
/// with the admin API kept on `admin`.
pub(crate) fn render(admin: SocketAddr, listen: IpAddr, routes: &[ProxyRoute]) -> Value {
    let mut by_port: BTreeMap<u16, Vec<&ProxyRoute>> = BTreeMap::new();
    let mut files: BTreeMap<&TlsFiles, Vec<String>> = BTreeMap::new();
    for r in routes {
        by_port.entry(r.listen_port).or_default().push(r);
        if let Some(tls) = &r.tls {
            files
                .entry(tls)
                .or_default()
                .push(tag(r.listen_port, &r.hostname));
        }
    }
    let mut servers = serde_json::Map::new();
    for (port, routes) in by_port {
        let policies: Vec<Value> = routes
            .iter()
            .map(|r| {
                let t = tag(port, &r.hostname);
                json!({
                    "@id": format!("mcp-tls-{port}-{}", r.hostname),
                    "match": {"sni": [r.hostname]},
                    "certificate_selection": {"any_tag": [t]},
                })
            })
            .collect();
        let mut handlers: Vec<Value> = routes
            .iter()
            .map(|r| {
                let mut proxy = json!({
                    "handler": "reverse_proxy",
                    "upstreams": [{"dial": r.backend}],
                });
                if let Some(b) = &r.backend_tls {
                    proxy["transport"] = json!({
                        "protocol": "http",
                        "tls": {
                            "server_name": b.server_name,
                            "root_ca_pem_files": [b.ca],
                        },
                    });
                }
                json!({
                    "@id": format!("{ROUTE_ID}{port}-{}", r.hostname),
                    "match": [{"host": [r.hostname]}],
                    "handle": [proxy],
                    "terminal": true,
                })
            })
            .collect();
        // A Host no route matches is a 404, not Caddy's empty 200.
        handlers.push(json!({
            "@id": format!("mcp-fallback-{port}"),
            "handle": [{"handler": "static_response", "status_code": 404}],
        }));
        servers.insert(
            format!("mcp-{port}"),
            json!({
                "@id": format!("{SERVER_ID}{port}"),
                "listen": [SocketAddr::new(listen, port).to_string()],
                // No HTTP/3: it would also bind the UDP port.
                "protocols": ["h1", "h2"],
                "automatic_https": {"disable": true},
                "tls_connection_policies": policies,
                "routes": handlers,
            }),
        );
    }
    let load_files: Vec<Value> = files
        .into_iter()
        .map(|(f, tags)| json!({"certificate": f.cert, "key": f.key, "tags": tags}))
        .collect();
    let mut config = json!({"admin": {"listen": admin.to_string()}});
    if !servers.is_empty() {
        config["apps"] = json!({
            "http": {"servers": servers},
            "tls": {"certificates": {"load_files": load_files}},
        });
    }
    config
}

/// The routes MCP rendered into `config` (a running Caddy's), sorted by
/// key. `server` names the Caddy in errors.
pub(crate) fn parse(config: &Value, server: &str) -> Result<Vec<ProxyRoute>> {
    let bad =
        |what: &str, id: &str| NetError::protocol(server, format!("config object {id:?}: {what}"));
    let mut files: BTreeMap<&str, TlsFiles> = BTreeMap::new();
    if let Some(list) = config
        .pointer("/apps/tls/certificates/load_files")
        .and_then(Value::as_array)
    {
        for f in list {
            let tags = f.get("tags").and_then(Value::as_array);
            for t in tags.into_iter().flatten().filter_map(Value::as_str) {
                if !t.starts_with("mcp-") {
                    continue;
                }
                let path = |k: &str| {
                    f.get(k)
                        .and_then(Value::as_str)
                        .map(PathBuf::from)
                        .ok_or_else(|| bad(&format!("load_files entry without {k}"), t))
                };
                files.insert(
                    t,
                    TlsFiles {
                        cert: path("certificate")?,
                        key: path("key")?,
                    },
                );
            }
        }
    }
    let mut routes = Vec::new();
    let servers = config
        .pointer("/apps/http/servers")
        .and_then(Value::as_object);
    for srv in servers.into_iter().flat_map(|m| m.values()) {
        let Some(id) = srv.get("@id").and_then(Value::as_str) else {
            continue;
        };
        if !id.starts_with(SERVER_ID) {
            continue;
        }
        let port = srv
            .pointer("/listen/0")
            .and_then(Value::as_str)
            .and_then(|l| l.rsplit_once(':'))
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .ok_or_else(|| bad("no listen address with a port", id))?;
        let list = srv.get("routes").and_then(Value::as_array);
        for r in list.into_iter().flatten() {
            let Some(id) = r.get("@id").and_then(Value::as_str) else {
                continue;
            };
            if !id.starts_with(ROUTE_ID) {
                continue;
            }
            let text = |ptr: &str| {
                r.pointer(ptr)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| bad(&format!("no {ptr}"), id))
            };
            let hostname = text("/match/0/host/0")?;
            let backend = text("/handle/0/upstreams/0/dial")?;
            let backend_tls = match r.pointer("/handle/0/transport/tls") {
                None => None,
                Some(_) => Some(BackendTls {
                    server_name: text("/handle/0/transport/tls/server_name")?,
                    ca: PathBuf::from(text("/handle/0/transport/tls/root_ca_pem_files/0")?),
                }),
            };
            let tls = files
                .get(tag(port, &hostname).as_str())
                .cloned()
                .ok_or_else(|| bad("no certificate loaded with its tag", id))?;
            routes.push(ProxyRoute {
                listen_port: port,
                hostname,
                backend,
                mode: RouteMode::L7,
                tls: Some(tls),
                backend_tls,
            });
        }
    }
    routes.sort();
    Ok(routes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn route(port: u16, host: &str, cert: &str) -> ProxyRoute {
        ProxyRoute {
            listen_port: port,
            hostname: host.into(),
            backend: "127.0.0.1:9000".into(),
            mode: RouteMode::L7,
            tls: Some(TlsFiles {
                cert: format!("/c/{cert}.crt").into(),
                key: format!("/c/{cert}.key").into(),
            }),
            backend_tls: None,
        }
    }

    #[test]
    fn rendering_parses_back_to_the_same_routes() {
        let mut edge = route(8443, "b.mcp.test", "shared");
        edge.backend_tls = Some(BackendTls {
            server_name: "worker.mcp.test".into(),
            ca: "/c/ca.pem".into(),
        });
        let mut routes = vec![
            route(8443, "a.mcp.test", "a"),
            edge,
            route(9443, "a.mcp.test", "shared"),
        ];
        routes.sort();
        let admin: SocketAddr = "127.0.0.1:2019".parse().unwrap();
        let config = render(admin, "10.0.0.1".parse().unwrap(), &routes);
        assert_eq!(config["admin"]["listen"], "127.0.0.1:2019");
        assert_eq!(
            config["apps"]["http"]["servers"]["mcp-9443"]["listen"][0],
            "10.0.0.1:9443"
        );
        // One load_files entry per file pair, tagged for every route using it.
        let files = config["apps"]["tls"]["certificates"]["load_files"]
            .as_array()
            .unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(parse(&config, "caddy").unwrap(), routes);
    }

    #[test]
    fn foreign_and_empty_configs_list_nothing() {
        assert_eq!(parse(&Value::Null, "caddy").unwrap(), vec![]);
        let foreign = json!({"apps": {"http": {"servers": {"srv0": {
            "listen": [":443"],
            "routes": [{"match": [{"host": ["x.test"]}], "handle": [{"handler": "static_response"}]}],
        }}}}});
        assert_eq!(parse(&foreign, "caddy").unwrap(), vec![]);
        let empty = render(
            "127.0.0.1:2019".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
            &[],
        );
        assert!(empty.get("apps").is_none());
        assert_eq!(parse(&empty, "caddy").unwrap(), vec![]);
    }

    #[test]
    fn a_mangled_mcp_route_is_a_protocol_error() {
        let mut config = render(
            "127.0.0.1:2019".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
            &[route(8443, "a.mcp.test", "a")],
        );
        config["apps"]["tls"]["certificates"]["load_files"] = json!([]);
        assert!(matches!(
            parse(&config, "caddy"),
            Err(NetError::Protocol { .. })
        ));
    }
}
