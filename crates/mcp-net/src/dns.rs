//! Records in a DNS zone.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{NetError, Result};

/// The record types MCP writes: service addresses and ACME dns-01 tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RecordType {
    A,
    Aaaa,
    Txt,
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Txt => "TXT",
        })
    }
}

/// One record's data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RecordData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Txt(String),
}

impl RecordData {
    pub fn record_type(&self) -> RecordType {
        match self {
            RecordData::A(_) => RecordType::A,
            RecordData::Aaaa(_) => RecordType::Aaaa,
            RecordData::Txt(_) => RecordType::Txt,
        }
    }

    /// An address as an A or AAAA record.
    pub fn address(ip: std::net::IpAddr) -> RecordData {
        match ip {
            std::net::IpAddr::V4(a) => RecordData::A(a),
            std::net::IpAddr::V6(a) => RecordData::Aaaa(a),
        }
    }
}

impl fmt::Display for RecordData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordData::A(a) => write!(f, "A {a}"),
            RecordData::Aaaa(a) => write!(f, "AAAA {a}"),
            RecordData::Txt(t) => write!(f, "TXT {t:?}"),
        }
    }
}

/// A zone on a DNS server.
///
/// Names are fully qualified, lowercase, without the trailing dot, and
/// must lie inside [`DnsRecords::zone`] (equal to it or under it by label);
/// anything else is `NetError::Invalid` before the server is asked.
///
/// Semantics every implementation shares (checked by `testing::dns_suite`):
/// - `replace` sets the record set of `name` and the values' type to
///   exactly `values` (one update: a reader sees the old set or the new
///   one, never none); `values` is non-empty and of one type.
/// - `delete` removes the record set of that name and type; deleting one
///   that does not exist succeeds.
/// - `lookup` asks the server (not a cache) and returns the values, sorted;
///   empty when there are none (NXDOMAIN or no data).
/// - A refused update is `NetError::Rejected` carrying the server's
///   answer (the rcode, e.g. `NOTAUTH` for a wrong TSIG key).
#[async_trait]
pub trait DnsRecords: Send + Sync {
    /// `rfc2136`, `fake`, …
    fn kind(&self) -> &'static str;
    /// The server, for messages (`127.0.0.1:5353`).
    fn server(&self) -> String;
    /// The zone written to, e.g. `mcp.test`.
    fn zone(&self) -> &str;
    async fn replace(&self, name: &str, ttl: u32, values: &[RecordData]) -> Result<()>;
    async fn delete(&self, name: &str, rtype: RecordType) -> Result<()>;
    async fn lookup(&self, name: &str, rtype: RecordType) -> Result<Vec<RecordData>>;
}

/// Whether `name` is `zone` or under it by label (`evilmcp.test` is not
/// under `mcp.test`). Both lowercase without trailing dots.
pub fn in_zone(name: &str, zone: &str) -> bool {
    name == zone
        || name
            .strip_suffix(zone)
            .is_some_and(|head| head.ends_with('.') && head.len() > 1)
}

/// The checks every adapter makes on a name and the values it is given.
pub fn check_request(zone: &str, name: &str, values: Option<&[RecordData]>) -> Result<()> {
    if !mcp_spec::names::is_hostname(name.trim_start_matches("_acme-challenge."))
        || name != mcp_spec::names::normalize_hostname(name)
    {
        return Err(NetError::Invalid(format!(
            "{name:?} is not a lowercase DNS name without a trailing dot"
        )));
    }
    if !in_zone(name, zone) {
        return Err(NetError::Invalid(format!(
            "{name} is outside the zone {zone}"
        )));
    }
    if let Some(values) = values {
        let Some(first) = values.first() else {
            return Err(NetError::Invalid(format!(
                "replace {name}: no values (use delete)"
            )));
        };
        if values
            .iter()
            .any(|v| v.record_type() != first.record_type())
        {
            return Err(NetError::Invalid(format!(
                "replace {name}: values of more than one type"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn in_zone_is_by_label() {
        assert!(in_zone("mcp.test", "mcp.test"));
        assert!(in_zone("web.mcp.test", "mcp.test"));
        assert!(!in_zone("evilmcp.test", "mcp.test"));
        assert!(!in_zone(".mcp.test", "mcp.test"));
        assert!(!in_zone("test", "mcp.test"));
    }

    #[test]
    fn requests_are_checked() {
        assert!(check_request("mcp.test", "web.mcp.test", None).is_ok());
        assert!(check_request("mcp.test", "_acme-challenge.web.mcp.test", None).is_ok());
        assert!(check_request("mcp.test", "Web.mcp.test", None).is_err());
        assert!(check_request("mcp.test", "web.other.test", None).is_err());
        assert!(check_request("mcp.test", "web.mcp.test", Some(&[])).is_err());
        let mixed = [
            RecordData::A(Ipv4Addr::LOCALHOST),
            RecordData::Txt("x".into()),
        ];
        assert!(check_request("mcp.test", "web.mcp.test", Some(&mixed)).is_err());
    }
}
