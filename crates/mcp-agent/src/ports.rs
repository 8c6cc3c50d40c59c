//! Host port allocation for routes (`$PORT`, `$PORT_<NAME>`).
//!
//! Rules:
//! - one port per (service, component, route), persisted in the registry's
//!   `ports` table, whose primary key is the port: a port can never be
//!   handed to two routes, also across restarts;
//! - stable: allocating again for the same key returns the same port (a
//!   redeploy keeps its ports), unless the configured range changed and the
//!   port fell outside it;
//! - released with the service ([`Registry::remove_service`],
//!   [`Registry::release_ports`]) or when the component or route disappears
//!   from a redeployed spec ([`Registry::upsert_service`]);
//! - a port something else holds on the host is skipped: the
//!   [`PortProbe`] (a bind test, [`BindProbe`], in production) decides;
//! - next-fit: the search starts after the last port handed out (a cursor in
//!   the `meta` table) and wraps around, so a just-released port is the last
//!   to be reused; a stale proxy or edge route to it then fails instead of
//!   reaching another service.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr, TcpListener};

use mcp_spec::ServiceSpec;
use rusqlite::{params, OptionalExtension, Transaction};

use crate::clock::Timestamp;
use crate::registry::{Registry, RegistryError, Result, SqlContext};

/// An inclusive range of host ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// `None` unless `1 <= first <= last`.
    pub fn new(first: u16, last: u16) -> Option<PortRange> {
        (first >= 1 && first <= last).then_some(PortRange { first, last })
    }

    pub fn first(self) -> u16 {
        self.first
    }

    pub fn last(self) -> u16 {
        self.last
    }

    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    pub fn len(self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    pub fn is_empty(self) -> bool {
        false
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Whether a host port is free right now (nothing else listens on it).
pub trait PortProbe {
    fn is_free(&self, port: u16) -> bool;
}

impl<F: Fn(u16) -> bool> PortProbe for F {
    fn is_free(&self, port: u16) -> bool {
        self(port)
    }
}

/// The production probe: a port is free when a TCP listener can bind it on
/// the configured address (`[ports] bind_address`).
#[derive(Debug, Clone, Copy)]
pub struct BindProbe {
    pub addr: IpAddr,
}

impl PortProbe for BindProbe {
    fn is_free(&self, port: u16) -> bool {
        TcpListener::bind(SocketAddr::new(self.addr, port)).is_ok()
    }
}

/// One allocated port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortAllocation {
    pub port: u16,
    pub service: String,
    pub component: String,
    /// `None` for the unnamed route.
    pub route: Option<String>,
    pub allocated_at: Timestamp,
}

/// A route's port with the variable that carries it into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortAssignment {
    pub component: String,
    pub route: Option<String>,
    pub port: u16,
    /// `PORT` or `PORT_<NAME>` (see `mcp_spec::RouteSpec::port_env`).
    pub env: String,
}

const CURSOR_KEY: &str = "port_cursor";

impl Registry {
    /// The port of one route, allocating one if it has none. The component
    /// must be in the registry ([`Registry::upsert_service`] first).
    pub fn allocate_port(
        &mut self,
        service: &str,
        component: &str,
        route: Option<&str>,
        range: PortRange,
        probe: &dyn PortProbe,
    ) -> Result<u16> {
        let now = self.now();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx(|| format!("allocate port for {service}/{component}: begin"))?;
        let port = allocate_in(&tx, now, service, component, route, range, probe)?;
        tx.commit()
            .ctx(|| format!("allocate port for {service}/{component}: commit"))?;
        Ok(port)
    }

    /// Ports for every route of `spec`, in spec order, all allocated in one
    /// transaction (all or nothing). The service must be in the registry.
    pub fn allocate_service_ports(
        &mut self,
        spec: &ServiceSpec,
        range: PortRange,
        probe: &dyn PortProbe,
    ) -> Result<Vec<PortAssignment>> {
        let now = self.now();
        let svc = &spec.name;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx(|| format!("allocate ports for {svc}: begin"))?;
        let mut out = Vec::new();
        for c in &spec.components {
            for r in &c.routes {
                let port = allocate_in(&tx, now, svc, &c.name, r.name.as_deref(), range, probe)?;
                out.push(PortAssignment {
                    component: c.name.clone(),
                    route: r.name.clone(),
                    port,
                    env: r.port_env(),
                });
            }
        }
        tx.commit()
            .ctx(|| format!("allocate ports for {svc}: commit"))?;
        Ok(out)
    }

    /// Allocated ports, of one service or all, ordered by port.
    pub fn ports(&self, service: Option<&str>) -> Result<Vec<PortAllocation>> {
        let ctx = || format!("list ports of {}", service.unwrap_or("all services"));
        let mut stmt = self
            .conn
            .prepare(
                "SELECT port, service, component, route, allocated_at FROM ports
                 WHERE ?1 IS NULL OR service = ?1 ORDER BY port",
            )
            .ctx(ctx)?;
        let rows = stmt
            .query_map([service], |r| {
                let route: String = r.get(3)?;
                Ok(PortAllocation {
                    port: r.get(0)?,
                    service: r.get(1)?,
                    component: r.get(2)?,
                    route: (!route.is_empty()).then_some(route),
                    allocated_at: Timestamp::from_unix(r.get(4)?),
                })
            })
            .ctx(ctx)?;
        rows.collect::<rusqlite::Result<_>>().ctx(ctx)
    }

    /// Releases every port of `service` (undeploy); returns them.
    pub fn release_ports(&mut self, service: &str) -> Result<Vec<u16>> {
        let tx = self
            .conn
            .transaction()
            .ctx(|| format!("release ports of {service}: begin"))?;
        let ports = crate::registry::ports_of(&tx, service)?;
        tx.execute("DELETE FROM ports WHERE service = ?1", [service])
            .ctx(|| format!("release ports of {service}"))?;
        tx.commit()
            .ctx(|| format!("release ports of {service}: commit"))?;
        Ok(ports)
    }
}

fn allocate_in(
    tx: &Transaction<'_>,
    now: Timestamp,
    service: &str,
    component: &str,
    route: Option<&str>,
    range: PortRange,
    probe: &dyn PortProbe,
) -> Result<u16> {
    let route_key = route.unwrap_or("");
    let ctx = || format!("allocate port for {service}/{component} route {route_key:?}");

    let existing: Option<u16> = tx
        .query_row(
            "SELECT port FROM ports WHERE service = ?1 AND component = ?2 AND route = ?3",
            params![service, component, route_key],
            |r| r.get(0),
        )
        .optional()
        .ctx(ctx)?;
    match existing {
        Some(port) if range.contains(port) => return Ok(port),
        Some(port) => {
            // The range was changed since: move the route into it.
            tx.execute("DELETE FROM ports WHERE port = ?1", [port])
                .ctx(ctx)?;
        }
        None => {}
    }

    let known: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM components WHERE service = ?1 AND name = ?2)",
            params![service, component],
            |r| r.get(0),
        )
        .ctx(ctx)?;
    if !known {
        return Err(RegistryError::ComponentNotFound {
            service: service.to_string(),
            component: component.to_string(),
        });
    }

    let taken: BTreeSet<u16> = {
        let mut stmt = tx
            .prepare("SELECT port FROM ports WHERE port BETWEEN ?1 AND ?2")
            .ctx(ctx)?;
        let rows = stmt
            .query_map(params![range.first(), range.last()], |r| r.get(0))
            .ctx(ctx)?;
        rows.collect::<rusqlite::Result<_>>().ctx(ctx)?
    };

    let cursor: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = ?1", [CURSOR_KEY], |r| {
            r.get(0)
        })
        .optional()
        .ctx(ctx)?;
    let start = cursor
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|p| range.contains(*p))
        .unwrap_or(range.first());

    let candidates = (start..=range.last()).chain(range.first()..start);
    for port in candidates {
        if taken.contains(&port) || !probe.is_free(port) {
            continue;
        }
        tx.execute(
            "INSERT INTO ports (port, service, component, route, allocated_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![port, service, component, route_key, now.as_unix()],
        )
        .ctx(ctx)?;
        let next = if port >= range.last() {
            range.first()
        } else {
            port + 1
        };
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![CURSOR_KEY, next.to_string()],
        )
        .ctx(ctx)?;
        return Ok(port);
    }
    Err(RegistryError::PortsExhausted {
        service: service.to_string(),
        component: component.to_string(),
        route: route_key.to_string(),
        first: range.first(),
        last: range.last(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_rules() {
        assert!(PortRange::new(0, 10).is_none());
        assert!(PortRange::new(10, 9).is_none());
        let r = PortRange::new(10, 10).expect("one port");
        assert_eq!(r.len(), 1);
        assert!(r.contains(10) && !r.contains(11));
        assert_eq!(r.to_string(), "10-10");
    }

    #[test]
    fn bind_probe_sees_a_listener() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let probe = BindProbe {
            addr: IpAddr::from([127, 0, 0, 1]),
        };
        assert!(!probe.is_free(port));
        drop(l);
        assert!(probe.is_free(port));
    }
}
