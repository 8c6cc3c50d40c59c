//! Proxy routes and certificates: what the agent registered on its node's
//! reverse proxy and the certificates it holds for them.

use std::path::PathBuf;

use mcp_net::proxy::{BackendTls, ProxyRoute, RouteMode, TlsFiles};
use rusqlite::{params, OptionalExtension, Row};

use crate::clock::Timestamp;

use super::*;

/// A route the agent registered, and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRecord {
    /// `""` for a route added by `AddProxyRoute`.
    pub service: String,
    pub component: String,
    /// Route name; `""` for the unnamed route.
    pub route: String,
    /// The route as registered; `tls` is the certificate row's files.
    pub proxy: ProxyRoute,
    /// L7: the hostname of the certificate it terminates TLS with.
    pub cert_hostname: Option<String>,
    pub created_at: Timestamp,
}

/// A certificate the node holds (its key never leaves the node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    pub hostname: String,
    /// `None` for certificates not tied to a service.
    pub service: Option<String>,
    pub serial: String,
    pub not_after: Timestamp,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub issued_at: Timestamp,
}

fn mode_of(s: &str) -> rusqlite::Result<RouteMode> {
    match s {
        "l4" => Ok(RouteMode::L4),
        "l7" => Ok(RouteMode::L7),
        other => Err(rusqlite::Error::FromSqlConversionFailure(
            5,
            rusqlite::types::Type::Text,
            format!("route mode {other:?}").into(),
        )),
    }
}

const ROUTE_COLUMNS: &str = "r.listen_port, r.hostname, r.service, r.component, r.route, r.mode, \
     r.backend, r.backend_tls, r.cert_hostname, r.created_at, c.cert_path, c.key_path";

fn route_row(r: &Row<'_>) -> rusqlite::Result<RouteRecord> {
    let backend_tls = match r.get::<_, Option<String>>(7)? {
        None => None,
        Some(json) => Some(serde_json::from_str::<BackendTls>(&json).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Text, e.into())
        })?),
    };
    let cert: Option<String> = r.get(10)?;
    let key: Option<String> = r.get(11)?;
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
        }),
        _ => None,
    };
    Ok(RouteRecord {
        service: r.get(2)?,
        component: r.get(3)?,
        route: r.get(4)?,
        proxy: ProxyRoute {
            listen_port: r.get(0)?,
            hostname: r.get(1)?,
            backend: r.get(6)?,
            mode: mode_of(&r.get::<_, String>(5)?)?,
            tls,
            backend_tls,
        },
        cert_hostname: r.get(8)?,
        created_at: Timestamp::from_unix(r.get(9)?),
    })
}

fn cert_row(r: &Row<'_>) -> rusqlite::Result<CertRecord> {
    Ok(CertRecord {
        hostname: r.get(0)?,
        service: r.get(1)?,
        serial: r.get(2)?,
        not_after: Timestamp::from_unix(r.get(3)?),
        cert_path: PathBuf::from(r.get::<_, String>(4)?),
        key_path: PathBuf::from(r.get::<_, String>(5)?),
        issued_at: Timestamp::from_unix(r.get(6)?),
    })
}

impl Registry {
    /// Routes, of one service or all (`None`), ordered by port and hostname.
    pub fn routes(&self, service: Option<&str>) -> Result<Vec<RouteRecord>> {
        let sql = format!(
            "SELECT {ROUTE_COLUMNS} FROM proxy_routes r \
             LEFT JOIN certificates c ON c.hostname = r.cert_hostname \
             WHERE ?1 IS NULL OR r.service = ?1 ORDER BY r.listen_port, r.hostname"
        );
        let mut stmt = self.conn.prepare(&sql).ctx(|| "list routes".to_string())?;
        let rows = stmt
            .query_map([service], route_row)
            .ctx(|| "list routes".to_string())?;
        rows.collect::<rusqlite::Result<_>>()
            .ctx(|| "list routes".to_string())
    }

    /// Records a route (replacing the one with the same port and hostname).
    pub fn upsert_route(&mut self, rec: &RouteRecord) -> Result<()> {
        let p = &rec.proxy;
        let backend_tls = p
            .backend_tls
            .as_ref()
            .map(|b| serde_json::to_string(b).unwrap_or_default());
        self.conn
            .execute(
                "INSERT OR REPLACE INTO proxy_routes (listen_port, hostname, service, component, \
                 route, mode, backend, backend_tls, cert_hostname, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    p.listen_port,
                    p.hostname,
                    rec.service,
                    rec.component,
                    rec.route,
                    p.mode.as_str(),
                    p.backend,
                    backend_tls,
                    rec.cert_hostname,
                    rec.created_at.as_unix()
                ],
            )
            .ctx(|| format!("record route {}:{}", p.hostname, p.listen_port))?;
        Ok(())
    }

    /// Forgets a route; whether there was one.
    pub fn remove_route(&mut self, listen_port: u16, hostname: &str) -> Result<bool> {
        let n = self
            .conn
            .execute(
                "DELETE FROM proxy_routes WHERE listen_port = ?1 AND hostname = ?2",
                params![listen_port, hostname],
            )
            .ctx(|| format!("forget route {hostname}:{listen_port}"))?;
        Ok(n > 0)
    }

    pub fn certificate(&self, hostname: &str) -> Result<Option<CertRecord>> {
        self.conn
            .query_row(
                "SELECT hostname, service, serial, not_after, cert_path, key_path, issued_at \
                 FROM certificates WHERE hostname = ?1",
                [hostname],
                cert_row,
            )
            .optional()
            .ctx(|| format!("read certificate {hostname}"))
    }

    /// Every certificate, ordered by hostname.
    pub fn certificates(&self) -> Result<Vec<CertRecord>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT hostname, service, serial, not_after, cert_path, key_path, issued_at \
                 FROM certificates ORDER BY hostname",
            )
            .ctx(|| "list certificates".to_string())?;
        let rows = stmt
            .query_map([], cert_row)
            .ctx(|| "list certificates".to_string())?;
        rows.collect::<rusqlite::Result<_>>()
            .ctx(|| "list certificates".to_string())
    }

    pub fn upsert_certificate(&mut self, c: &CertRecord) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO certificates (hostname, service, serial, not_after, \
                 cert_path, key_path, issued_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    c.hostname,
                    c.service,
                    c.serial,
                    c.not_after.as_unix(),
                    c.cert_path.to_string_lossy(),
                    c.key_path.to_string_lossy(),
                    c.issued_at.as_unix()
                ],
            )
            .ctx(|| format!("record certificate {}", c.hostname))?;
        Ok(())
    }

    /// Forgets a certificate; the record it had.
    pub fn remove_certificate(&mut self, hostname: &str) -> Result<Option<CertRecord>> {
        let old = self.certificate(hostname)?;
        self.conn
            .execute("DELETE FROM certificates WHERE hostname = ?1", [hostname])
            .ctx(|| format!("forget certificate {hostname}"))?;
        Ok(old)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn route(port: u16, host: &str, service: &str) -> RouteRecord {
        RouteRecord {
            service: service.into(),
            component: service.into(),
            route: String::new(),
            proxy: ProxyRoute {
                listen_port: port,
                hostname: host.into(),
                backend: "127.0.0.1:10000".into(),
                mode: RouteMode::L7,
                tls: None,
                backend_tls: None,
            },
            cert_hostname: Some(host.into()),
            created_at: Timestamp::from_unix(100),
        }
    }

    #[test]
    fn routes_carry_their_certificate_files() {
        let mut r = Registry::open_in_memory().unwrap();
        r.upsert_route(&route(8443, "b.mcp.test", "b")).unwrap();
        r.upsert_route(&route(8443, "a.mcp.test", "a")).unwrap();
        let no_cert = r.routes(Some("a")).unwrap();
        assert_eq!(no_cert.len(), 1);
        assert_eq!(no_cert[0].proxy.tls, None, "no certificate row yet");
        r.upsert_certificate(&CertRecord {
            hostname: "a.mcp.test".into(),
            service: Some("a".into()),
            serial: "0a".into(),
            not_after: Timestamp::from_unix(1000),
            cert_path: "/c/a.crt".into(),
            key_path: "/c/a.key".into(),
            issued_at: Timestamp::from_unix(10),
        })
        .unwrap();
        let all = r.routes(None).unwrap();
        let hosts: Vec<&str> = all.iter().map(|r| r.proxy.hostname.as_str()).collect();
        assert_eq!(hosts, ["a.mcp.test", "b.mcp.test"]);
        assert_eq!(
            all[0].proxy.tls,
            Some(TlsFiles {
                cert: "/c/a.crt".into(),
                key: "/c/a.key".into()
            })
        );
        assert!(r.remove_route(8443, "a.mcp.test").unwrap());
        assert!(!r.remove_route(8443, "a.mcp.test").unwrap());
        assert_eq!(
            r.remove_certificate("a.mcp.test").unwrap().unwrap().serial,
            "0a"
        );
        assert_eq!(r.certificates().unwrap(), vec![]);
    }
}
