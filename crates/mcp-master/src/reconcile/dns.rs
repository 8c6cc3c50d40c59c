//! DNS records of services through the configured [`DnsRecords`] adapter:
//! building it from `[dns]`, observing the live records the master
//! created, and the `SetDns` / `RemoveDns` steps.
//!
//! The table `dns_records` lists the records the master created (name →
//! address). Every pass looks each of them up on the server, so a record
//! deleted or changed behind the master's back is observed as missing or
//! wrong and set again by that pass; a failed lookup is logged and the
//! record counts as missing (its row is kept).

use std::net::{IpAddr, SocketAddr};

use mcp_net::{DnsRecords, RecordData, RecordType, Rfc2136, Rfc2136Options};

use super::*;
use crate::config::DnsConfig;

/// The bound on each DNS call (connect, update or query, answer).
pub const DNS_TIMEOUT: Duration = Duration::from_secs(10);

/// Lookups in flight at once during observation.
const LOOKUP_CONCURRENCY: usize = 16;

/// The DNS adapter `[dns]` configures, or `None` without `[dns]`. Reads
/// the TSIG secret file and resolves the server's address.
pub async fn dns_adapter(cfg: &Config) -> Result<Option<Arc<dyn DnsRecords>>, String> {
    match &cfg.dns {
        None => Ok(None),
        Some(DnsConfig::Mcns(_)) => {
            Err("dns.adapter: \"mcns\" is not available in this build; use \"rfc2136\"".into())
        }
        Some(DnsConfig::Rfc2136(c)) => {
            let server = resolve(&c.server).await?;
            let secret = Rfc2136Options::secret_from_base64_file(&c.tsig_secret_file)
                .map_err(|e| format!("dns.tsig_secret_file: {e}"))?;
            let zone = cfg
                .dns
                .as_ref()
                .map_or(cfg.edge.internal_zone.as_str(), |d| {
                    d.zone(&cfg.edge.internal_zone)
                });
            let zone = zone.to_string();
            let adapter = Rfc2136::new(Rfc2136Options {
                server,
                zone,
                key_name: c.tsig_key_name.clone(),
                algorithm: c.tsig_algorithm.clone(),
                secret,
                timeout: DNS_TIMEOUT,
            })
            .map_err(|e| format!("[dns]: {e}"))?;
            Ok(Some(Arc::new(adapter)))
        }
    }
}

async fn resolve(server: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = server.parse::<SocketAddr>() {
        return Ok(a);
    }
    tokio::net::lookup_host(server)
        .await
        .map_err(|e| format!("dns.server: cannot resolve {server}: {e}"))?
        .next()
        .ok_or_else(|| format!("dns.server: {server} resolves to no address"))
}

/// The record type of an address; `None` when it is not an IP address.
fn family(address: &str) -> Option<RecordType> {
    address.parse::<IpAddr>().ok().map(|ip| match ip {
        IpAddr::V4(_) => RecordType::A,
        IpAddr::V6(_) => RecordType::Aaaa,
    })
}

fn shown(values: &[RecordData]) -> String {
    values
        .iter()
        .map(|v| match v {
            RecordData::A(a) => a.to_string(),
            RecordData::Aaaa(a) => a.to_string(),
            RecordData::Txt(t) => t.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Reconciler {
    /// Uses `dns` for the DNS steps, with records of `ttl`. The planner's
    /// DNS integration is configured exactly when an adapter is given.
    pub fn with_dns(mut self, dns: Option<Arc<dyn DnsRecords>>, ttl: Duration) -> Self {
        let integrations = &mut self.settings.policy.integrations;
        match &dns {
            Some(_) => integrations.dns = Integration::Configured,
            None if integrations.dns == Integration::Configured => {
                integrations.dns = Integration::not_configured("DNS adapter not configured");
            }
            None => {}
        }
        self.dns = dns;
        self.dns_ttl = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX).max(1);
        self
    }

    /// The DNS adapter, if any.
    pub fn dns(&self) -> Option<&Arc<dyn DnsRecords>> {
        self.dns.as_ref()
    }

    /// The live value of every record in `records` (name → address as
    /// stored): looked up on the server concurrently. A record the server
    /// does not have is absent; so is one whose lookup failed (logged).
    /// Without an adapter, the stored values as they are.
    pub(super) async fn observe_dns(
        &self,
        records: Vec<state::DnsRecord>,
    ) -> BTreeMap<String, String> {
        let Some(dns) = self.dns.clone() else {
            return records.into_iter().map(|d| (d.name, d.address)).collect();
        };
        let sem = Arc::new(Semaphore::new(LOOKUP_CONCURRENCY));
        let mut set = JoinSet::new();
        for r in records {
            let (dns, sem) = (dns.clone(), sem.clone());
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let rtype = family(&r.address).unwrap_or(RecordType::A);
                let live = dns.lookup(&r.name, rtype).await;
                (r, live)
            });
        }
        let mut out = BTreeMap::new();
        while let Some(joined) = set.join_next().await {
            let Ok((r, live)) = joined else { continue };
            match live {
                Ok(values) if values.is_empty() => {
                    // Gone: forgotten, so a record of a service no longer
                    // deployed does not linger; a deployed service's is set
                    // again by this pass (and recorded again).
                    tracing::warn!(name = %r.name, address = %r.address, server = %dns.server(), "DNS record missing on the server");
                    let name = r.name.clone();
                    if let Err(e) = self.state.write(move |w| w.remove_dns_record(&name)).await {
                        tracing::error!(name = %r.name, error = %e, "cannot forget a missing DNS record");
                    }
                }
                Ok(values) => {
                    let live = shown(&values);
                    if live != r.address {
                        tracing::warn!(name = %r.name, recorded = %r.address, live = %live, "DNS record changed on the server");
                    }
                    out.insert(r.name, live);
                }
                Err(e) => {
                    tracing::warn!(name = %r.name, error = %e, "DNS lookup failed; the record counts as missing");
                }
            }
        }
        out
    }

    /// `SetDns`: the record set of `name` becomes exactly `address`, then
    /// it is recorded as the master's.
    pub(crate) async fn set_dns(&self, name: &str, address: &str) -> Result<String, String> {
        let dns = self
            .dns
            .as_ref()
            .ok_or_else(|| format!("dns {name}: no DNS adapter was given to the control loop"))?;
        let ip: IpAddr = address.parse().map_err(|_| {
            format!("dns {name}: {address:?} is not an IP address (A and AAAA records need one)")
        })?;
        let data = RecordData::address(ip);
        let rtype = data.record_type();
        dns.replace(name, self.dns_ttl, &[data])
            .await
            .map_err(|e| format!("dns {name}: {e}"))?;
        let n = name.to_string();
        let previous = self
            .state
            .read(move |r| r.dns_record(&n))
            .await
            .map_err(|e| format!("dns {name}: set, but reading its record failed: {e}"))?;
        let mut detail = format!("{name} {rtype} {address} (ttl {}s)", self.dns_ttl);
        // The node's address changed family: the old set would linger.
        if let Some(old) = previous.and_then(|p| family(&p.address)) {
            if old != rtype {
                if let Err(e) = dns.delete(name, old).await {
                    detail.push_str(&format!("; removing the old {old} set failed: {e}"));
                }
            }
        }
        let (n, a, now) = (name.to_string(), address.to_string(), self.now());
        self.state
            .write(move |w| w.put_dns_record(&n, &a, now))
            .await
            .map_err(|e| format!("dns {name}: set, but recording it failed: {e}"))?;
        Ok(detail)
    }

    /// `RemoveDns`: deletes the record set of `name` (of the family of
    /// the recorded address), then forgets it.
    pub(super) async fn remove_dns(&self, name: &str) -> Result<String, String> {
        let dns = self
            .dns
            .as_ref()
            .ok_or_else(|| format!("dns {name}: no DNS adapter was given to the control loop"))?;
        let n = name.to_string();
        let recorded = self
            .state
            .read(move |r| r.dns_record(&n))
            .await
            .map_err(|e| format!("dns {name}: reading its record failed: {e}"))?;
        let rtype = recorded
            .and_then(|r| family(&r.address))
            .unwrap_or(RecordType::A);
        dns.delete(name, rtype)
            .await
            .map_err(|e| format!("dns {name}: {e}"))?;
        let n = name.to_string();
        self.state
            .write(move |w| w.remove_dns_record(&n))
            .await
            .map_err(|e| format!("dns {name}: deleted, but forgetting it failed: {e}"))?;
        Ok(format!("{name} {rtype} removed"))
    }
}

#[cfg(test)]
mod tests;
