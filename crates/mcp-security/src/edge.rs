//! Edge-route validation (docs/SECURITY.md): the public hostname is under an
//! allowed domain (whole-label match), the backend hostname is under the
//! internal zone and resolves into the overlay, backend TLS is on.
//!
//! Name matching reuses `mcp_spec::names`; resolution is the caller's job
//! (it does I/O), the resolved addresses are passed in.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use mcp_spec::names::{is_hostname, is_under_domain, normalize_hostname};

/// Default overlay network (CGNAT range, as used by Tailscale-style overlays).
pub const DEFAULT_OVERLAY_CIDR: &str = "100.64.0.0/10";

/// Why an edge route is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdgeError {
    #[error("{0:?} is not a valid hostname")]
    InvalidHostname(String),
    #[error("public hostname {host} is not under an allowed domain ({allowed})")]
    NotAllowedDomain { host: String, allowed: String },
    #[error("backend hostname {host} is not under the internal zone {zone}")]
    NotInternal { host: String, zone: String },
    #[error("backend {host} resolves to no address")]
    Unresolved { host: String },
    #[error("backend {host} address {addr} is outside the overlay ({overlay})")]
    OutsideOverlay {
        host: String,
        addr: IpAddr,
        overlay: String,
    },
    #[error("backend_tls must be true for edge routes")]
    BackendTlsOff,
    #[error("invalid CIDR {0:?}")]
    InvalidCidr(String),
}

impl EdgeError {
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::invalid_argument(self.to_string())
    }
}

/// An IPv4 or IPv6 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                self.prefix,
                32,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix, 128)
            }
            (IpAddr::V4(_), IpAddr::V6(ip)) => match ip.to_ipv4_mapped() {
                Some(v4) => self.contains(IpAddr::V4(v4)),
                None => false,
            },
            (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8, bits: u32) -> bool {
    let host_bits = bits - u32::from(prefix);
    if host_bits >= bits {
        return true;
    }
    (a >> host_bits) == (b >> host_bits)
}

impl FromStr for Cidr {
    type Err = EdgeError;
    fn from_str(s: &str) -> Result<Self, EdgeError> {
        let bad = || EdgeError::InvalidCidr(s.to_string());
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        let cidr = Cidr { addr, prefix };
        // Host bits must be zero: "100.64.0.1/10" is a typo, not a network.
        if !cidr.is_canonical() {
            return Err(bad());
        }
        Ok(cidr)
    }
}

impl Cidr {
    fn is_canonical(&self) -> bool {
        let (v, bits) = match self.addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32u32),
            IpAddr::V6(a) => (u128::from(a), 128u32),
        };
        let host_bits = bits - u32::from(self.prefix);
        match host_bits {
            0 => true,
            128.. => v == 0,
            _ => v & ((1u128 << host_bits) - 1) == 0,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The overlay networks; an address is inside when any contains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay(pub Vec<Cidr>);

impl Default for Overlay {
    fn default() -> Self {
        Overlay(vec![Cidr {
            addr: IpAddr::V4(std::net::Ipv4Addr::new(100, 64, 0, 0)),
            prefix: 10,
        }])
    }
}

impl Overlay {
    pub fn parse<S: AsRef<str>>(cidrs: &[S]) -> Result<Self, EdgeError> {
        cidrs
            .iter()
            .map(|c| c.as_ref().parse())
            .collect::<Result<Vec<_>, _>>()
            .map(Overlay)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }
}

impl fmt::Display for Overlay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Cidr::to_string).collect();
        f.write_str(&parts.join(", "))
    }
}

/// The `[edge]` part of the master config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgePolicy {
    pub allowed_domains: Vec<String>,
    pub internal_zone: String,
    pub overlay: Overlay,
}

impl EdgePolicy {
    /// A public hostname: valid, and equal to or under (by whole labels) one
    /// of the allowed domains. Returns it normalised (lowercase, no trailing
    /// dot).
    pub fn check_public_hostname(&self, host: &str) -> Result<String, EdgeError> {
        if !is_hostname(host) {
            return Err(EdgeError::InvalidHostname(host.to_string()));
        }
        if self
            .allowed_domains
            .iter()
            .any(|d| is_hostname(d) && is_under_domain(host, d))
        {
            Ok(normalize_hostname(host))
        } else {
            Err(EdgeError::NotAllowedDomain {
                host: host.to_string(),
                allowed: self.allowed_domains.join(", "),
            })
        }
    }

    /// A backend hostname: valid and strictly under the internal zone
    /// (`<service>.<zone>`, never the zone itself).
    pub fn check_backend_hostname(&self, host: &str) -> Result<String, EdgeError> {
        if !is_hostname(host) {
            return Err(EdgeError::InvalidHostname(host.to_string()));
        }
        let norm = normalize_hostname(host);
        let zone = normalize_hostname(&self.internal_zone);
        if is_hostname(&zone) && norm != zone && is_under_domain(&norm, &zone) {
            Ok(norm)
        } else {
            Err(EdgeError::NotInternal {
                host: host.to_string(),
                zone: self.internal_zone.clone(),
            })
        }
    }

    /// Every resolved backend address must be inside the overlay.
    pub fn check_backend_addresses(&self, host: &str, addrs: &[IpAddr]) -> Result<(), EdgeError> {
        if addrs.is_empty() {
            return Err(EdgeError::Unresolved {
                host: host.to_string(),
            });
        }
        match addrs.iter().find(|a| !self.overlay.contains(**a)) {
            Some(addr) => Err(EdgeError::OutsideOverlay {
                host: host.to_string(),
                addr: *addr,
                overlay: self.overlay.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// The whole check of a `SetupEdgeRoute`, with the backend's resolved
    /// addresses. Returns the normalised (public, backend) hostnames.
    pub fn check_route(
        &self,
        public_hostname: &str,
        backend_hostname: &str,
        backend_addrs: &[IpAddr],
        backend_tls: bool,
    ) -> Result<(String, String), EdgeError> {
        let public = self.check_public_hostname(public_hostname)?;
        let backend = self.check_backend_hostname(backend_hostname)?;
        self.check_backend_addresses(&backend, backend_addrs)?;
        if !backend_tls {
            return Err(EdgeError::BackendTlsOff);
        }
        Ok((public, backend))
    }
}
