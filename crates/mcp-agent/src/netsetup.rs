//! The node's integrations from its configuration: `[proxy]` → the
//! proxy adapters, `[certs]` → the certificate issuer. What is not
//! configured stays `None` (its steps are reported skipped).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mcp_net::{Acme, AcmeOptions, CertIssuer, LocalCa, ProxyRoutes, Rfc2136, Rfc2136Options};

use crate::agent::Networking;
use crate::config::{CertsConfig, Config, IssuerKind};

/// How long one ACME order may take.
const ACME_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one DNS update for a dns-01 challenge may take.
const DNS_TIMEOUT: Duration = Duration::from_secs(10);

/// The [`Networking`] of a validated configuration. Reads the files the
/// issuer needs (CA key, TSIG secret) now, so a bad file stops the start.
pub fn networking(config: &Config) -> anyhow::Result<Networking> {
    let mut net = Networking {
        cert_dir: config.cert_dir(),
        fleet_ca: Some(config.server.ca_cert.clone()),
        proxy_address: config.proxy_address(),
        ..Networking::default()
    };
    if let Some(p) = &config.proxy {
        net.internal_zone = Some(p.internal_zone.clone());
        let listen = config
            .proxy_address()
            .context("proxy.address: required when node.address is not an IP address")?;
        if let Some(l7) = &p.l7 {
            let caddy: Arc<dyn ProxyRoutes> = Arc::new(mcp_net::Caddy::new(l7.admin, listen));
            net.l7 = Some(caddy);
        }
        if let Some(l4) = &p.l4 {
            let haproxy: Arc<dyn ProxyRoutes> =
                Arc::new(mcp_net::Haproxy::new(mcp_net::HaproxyOptions {
                    config: l4.config.clone(),
                    master_socket: l4.master_socket.clone(),
                    binary: l4.binary.clone(),
                    listen,
                }));
            net.l4 = Some(haproxy);
        }
    }
    if let Some(c) = &config.certs {
        net.renew_before = c.renew_before;
        net.issuer = Some(issuer(config, c)?);
    }
    Ok(net)
}

fn issuer(config: &Config, c: &CertsConfig) -> anyhow::Result<Arc<dyn CertIssuer>> {
    Ok(match c.issuer {
        IssuerKind::LocalCa => {
            let (Some(cert), Some(key)) = (&c.ca_cert, &c.ca_key) else {
                anyhow::bail!("certs: issuer = \"local-ca\" needs ca_cert and ca_key");
            };
            let ca = LocalCa::load(cert, key)
                .with_context(|| format!("certs.ca_cert / certs.ca_key ({})", cert.display()))?;
            Arc::new(ca.with_validity(c.validity))
        }
        IssuerKind::Acme => {
            let a = c
                .acme
                .as_ref()
                .context("certs.acme: required with issuer = \"acme\"")?;
            let secret = Rfc2136Options::secret_from_base64_file(&a.dns.tsig_secret_file)
                .context("certs.acme.dns.tsig_secret_file")?;
            let dns = Rfc2136::new(Rfc2136Options {
                server: a.dns.server,
                zone: a.dns.zone.clone(),
                key_name: a.dns.tsig_key_name.clone(),
                algorithm: a.dns.tsig_algorithm.clone(),
                secret,
                timeout: DNS_TIMEOUT,
            })
            .context("certs.acme.dns")?;
            let root_pem = match &a.root_ca {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("certs.acme.root_ca: read {}", p.display()))?,
                ),
                None => None,
            };
            Arc::new(Acme::new(AcmeOptions {
                directory: a.directory.clone(),
                root_pem,
                account_file: a
                    .account_file
                    .clone()
                    .unwrap_or_else(|| config.state_dir().join("acme-account.json")),
                contact: a.contact.clone(),
                dns: Arc::new(dns),
                txt_ttl: 60,
                timeout: ACME_TIMEOUT,
            }))
        }
    })
}
