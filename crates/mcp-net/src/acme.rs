//! The ACME issuer (RFC 8555): certificates from Let's Encrypt, ZeroSSL,
//! an internal step-ca, … for the node's CSR, proving control of each
//! name with the **dns-01** challenge written through a [`DnsRecords`].
//!
//! # Why dns-01
//!
//! A service's A/AAAA records are written by the master only after its
//! deploy (when it knows which nodes serve it). At deploy time the new name
//! does not resolve yet, or resolves to the nodes of the previous version,
//! so http-01 and tls-alpn-01 (the CA connects to the name) cannot validate
//! a fresh service. dns-01 needs only a TXT record
//! `_acme-challenge.<name>` holding a digest of the challenge: it works
//! before the name has any address, for names served only internally, and
//! for several nodes at once. The TXT is written with a TSIG key the DNS
//! server allows to update TXT records only, so the issuer's credentials
//! cannot redirect traffic.
//!
//! # What the operator configures
//!
//! - the ACME directory URL (e.g.
//!   `https://acme-v02.api.letsencrypt.org/directory`), and for a CA whose
//!   own HTTPS certificate is not publicly trusted, its root (PEM), trusted
//!   in addition to the system's roots for talking to the ACME server only;
//! - a file for the ACME account (created on first use with mode 0600 and
//!   reused afterwards: keep it, a CA rate-limits new accounts) and the
//!   account's contact URIs (`mailto:ops@example.com`);
//! - the zone the names live in and the DNS server and TXT-only key used
//!   to write the challenges ([`DnsRecords`], e.g. `Rfc2136`), the TTL of
//!   the challenge records (short: they live for one order), and how long a
//!   whole order may take.
//!
//! # What it does
//!
//! [`Acme::issue`] creates an order for the request's hostnames; for each
//! pending authorization it `replace`s the TXT `_acme-challenge.<name>`
//! with the key authorization's dns-01 value and tells the server the
//! challenge is ready; it polls the order until ready (backing off, within
//! the timeout), finalizes it with the request's CSR (the node's key is the
//! one certified: no key is made here), downloads the chain, and deletes
//! the TXT records it wrote, on failure too. Authorizations the server
//! already holds as valid (reused) need no record. Two orders for one
//! name at the same time would overwrite each other's TXT: callers issue a
//! name once at a time (the node's certificate loop does).
//!
//! The account file is tied to its directory (a file of another
//! directory is refused). A CA that forgot the account (a restarted
//! Pebble) answers its orders with `accountDoesNotExist`, `Rejected`:
//! delete the file to make a new account.
//!
//! Errors: a server that cannot be reached (or that does not finish within
//! the timeout) is `NetError::Unreachable` naming the directory URL; a
//! problem document or an authorization the CA found invalid is
//! `NetError::Rejected` with the problem's type and detail; a DNS failure
//! is the [`DnsRecords`] error with the ACME step prefixed to its detail.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, Problem, RetryPolicy,
};

use crate::cert::{cert_info, CertIssuer, CertRequest, IssuedCert};
use crate::dns::{DnsRecords, RecordData, RecordType};
use crate::{NetError, Result};

/// How an [`Acme`] issuer reaches its CA and its DNS.
#[derive(Clone)]
pub struct AcmeOptions {
    /// The directory URL, e.g. `https://acme-v02.api.letsencrypt.org/directory`.
    pub directory: String,
    /// An extra root (PEM) to trust for the ACME server's own TLS
    /// certificate, besides the system's (a test or internal CA).
    pub root_pem: Option<String>,
    /// The account's credentials (JSON): created on first use with mode
    /// 0600, reused afterwards.
    pub account_file: PathBuf,
    /// Contact URIs for a new account (`mailto:…`).
    pub contact: Vec<String>,
    /// Where the `_acme-challenge` TXT records are written.
    pub dns: Arc<dyn DnsRecords>,
    /// The TTL of those records, seconds.
    pub txt_ttl: u32,
    /// How long a whole order may take (from the first request to the
    /// chain).
    pub timeout: Duration,
}

impl std::fmt::Debug for AcmeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeOptions")
            .field("directory", &self.directory)
            .field("root_pem", &self.root_pem.as_ref().map(|_| "…"))
            .field("account_file", &self.account_file)
            .field("contact", &self.contact)
            .field(
                "dns",
                &format_args!("{} {}", self.dns.kind(), self.dns.server()),
            )
            .field("txt_ttl", &self.txt_ttl)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A [`CertIssuer`] over RFC 8555 with dns-01 challenges.
pub struct Acme {
    options: AcmeOptions,
    account: tokio::sync::OnceCell<Account>,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("options", &self.options)
            .field("account", &self.account.get().map(Account::id))
            .finish()
    }
}

impl Acme {
    /// No I/O: the account is loaded (or created) on the first `issue`
    /// and kept.
    pub fn new(options: AcmeOptions) -> Acme {
        Acme {
            options,
            account: tokio::sync::OnceCell::new(),
        }
    }

    fn server(&self) -> &str {
        &self.options.directory
    }

    /// The account: from the account file, or new (and then saved).
    async fn account(&self) -> Result<&Account> {
        self.account
            .get_or_try_init(|| async {
                let http = Transport::new(self.options.root_pem.as_deref(), self.server())?;
                let file = &self.options.account_file;
                if file.exists() {
                    let credentials = read_credentials(file, self.server())?;
                    Account::builder_with_http(Box::new(http))
                        .from_credentials(credentials)
                        .await
                        .map_err(|e| self.error("load the account", e))
                } else {
                    let contact: Vec<&str> =
                        self.options.contact.iter().map(String::as_str).collect();
                    let (account, credentials) = Account::builder_with_http(Box::new(http))
                        .create(
                            &NewAccount {
                                contact: &contact,
                                terms_of_service_agreed: true,
                                only_return_existing: false,
                            },
                            self.options.directory.clone(),
                            None,
                        )
                        .await
                        .map_err(|e| self.error("create an account", e))?;
                    write_credentials(file, &credentials)?;
                    tracing::info!(directory = %self.server(), account = %account.id(),
                        file = %file.display(), "ACME account created");
                    Ok(account)
                }
            })
            .await
    }

    /// An instant-acme error as a [`NetError`] naming the directory and
    /// the step.
    fn error(&self, step: &str, e: instant_acme::Error) -> NetError {
        let server = self.server();
        match e {
            instant_acme::Error::Api(p) => {
                NetError::rejected(server, format!("{step}: {}", problem(&p)))
            }
            instant_acme::Error::Other(inner) if inner.is::<TransportError>() => {
                NetError::unreachable(server, format!("{step}: {inner}"))
            }
            instant_acme::Error::Hyper(inner) => {
                NetError::unreachable(server, format!("{step}: {inner}"))
            }
            instant_acme::Error::Timeout(_) => NetError::unreachable(
                server,
                format!(
                    "{step}: not done within the timeout of {:?}",
                    self.options.timeout
                ),
            ),
            other => NetError::protocol(server, format!("{step}: {other}")),
        }
    }

    /// The order, TXT names written go to `written` (so the caller can
    /// delete them whatever happens here, a timeout included).
    async fn order(
        &self,
        request: &CertRequest,
        deadline: Instant,
        written: &mut BTreeMap<String, Vec<RecordData>>,
    ) -> Result<String> {
        let dns = &self.options.dns;
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = request
            .hostnames
            .iter()
            .map(|h| Identifier::Dns(h.clone()))
            .collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| self.error("new order", e))?;

        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| self.error("fetch an authorization", e))?;
            let shown = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(NetError::rejected(
                        self.server(),
                        format!("authorization for {shown} is {other:?}"),
                    ))
                }
            }
            let Identifier::Dns(domain) = authz.identifier().identifier.clone() else {
                return Err(NetError::Invalid(format!(
                    "acme {}: {shown} is not a DNS name",
                    self.server()
                )));
            };
            let mut challenge = authz.challenge(ChallengeType::Dns01).ok_or_else(|| {
                NetError::rejected(
                    self.server(),
                    format!("no dns-01 challenge offered for {shown}"),
                )
            })?;
            let name = format!("_acme-challenge.{domain}");
            let values = written.entry(name.clone()).or_default();
            values.push(RecordData::Txt(challenge.key_authorization().dns_value()));
            let values = values.clone();
            dns.replace(&name, self.options.txt_ttl, &values)
                .await
                .map_err(|e| {
                    context(
                        e,
                        &format!(
                            "dns-01 for {shown} (acme {}): replace TXT {name}",
                            self.server()
                        ),
                    )
                })?;
            challenge
                .set_ready()
                .await
                .map_err(|e| self.error(&format!("dns-01 for {shown}: challenge ready"), e))?;
        }

        let failed = match order.poll_ready(&retry(deadline)).await {
            Ok(OrderStatus::Ready) => None,
            Ok(status) => Some(format!("order {status:?}")),
            Err(instant_acme::Error::Api(p)) => Some(format!("order invalid: {}", problem(&p))),
            Err(e) => return Err(self.error("wait for the order to be ready", e)),
        };
        if let Some(failed) = failed {
            // Say for which name: the challenges' own problems.
            let mut why = vec![failed];
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let Ok(mut authz) = authz else { continue };
                let shown = authz.identifier().to_string();
                let Ok(state) = authz.refresh().await else {
                    continue;
                };
                let problems: Vec<String> = state
                    .challenges
                    .iter()
                    .filter_map(|c| {
                        let p = c.error.as_ref()?;
                        let kind = match &c.r#type {
                            ChallengeType::Dns01 => "dns-01".to_string(),
                            other => format!("{other:?}"),
                        };
                        Some(format!("{shown}: {kind}: {}", problem(p)))
                    })
                    .collect();
                if problems.is_empty() && state.status != AuthorizationStatus::Valid {
                    why.push(format!("{shown}: authorization {:?}", state.status));
                }
                why.extend(problems);
            }
            return Err(NetError::rejected(self.server(), why.join("; ")));
        }
        order
            .finalize_csr(&request.csr_der)
            .await
            .map_err(|e| self.error("finalize with the CSR", e))?;
        order
            .poll_certificate(&retry(deadline))
            .await
            .map_err(|e| self.error("download the certificate", e))
    }
}

/// Polls every 250 ms at first, backing off by 1.5 up to the deadline.
fn retry(deadline: Instant) -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(deadline.saturating_duration_since(Instant::now()))
}

/// A problem document for a message: type, detail, subproblems.
fn problem(p: &Problem) -> String {
    let mut out = format!(
        "{}: {}",
        p.r#type.as_deref().unwrap_or("(no type)"),
        p.detail.as_deref().unwrap_or("(no detail)")
    );
    for s in &p.subproblems {
        out.push_str(&format!(
            "; {}: {}",
            s.r#type.as_deref().unwrap_or("(no type)"),
            s.detail.as_deref().unwrap_or("(no detail)")
        ));
    }
    out
}

/// `e` with `what` prefixed to its detail (the variant and server kept).
fn context(e: NetError, what: &str) -> NetError {
    match e {
        NetError::Unreachable { server, detail } => NetError::Unreachable {
            server,
            detail: format!("{what}: {detail}"),
        },
        NetError::Rejected { server, detail } => NetError::Rejected {
            server,
            detail: format!("{what}: {detail}"),
        },
        NetError::Protocol { server, detail } => NetError::Protocol {
            server,
            detail: format!("{what}: {detail}"),
        },
        NetError::Invalid(detail) => NetError::Invalid(format!("{what}: {detail}")),
        NetError::Io { what: w, detail } => NetError::Io {
            what: format!("{what}: {w}"),
            detail,
        },
    }
}

fn read_credentials(file: &Path, directory: &str) -> Result<AccountCredentials> {
    let what = || format!("ACME account file {}", file.display());
    let text = std::fs::read_to_string(file).map_err(|e| NetError::io(what(), e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| NetError::Invalid(format!("{}: {e}", what())))?;
    if let Some(dir) = json.get("directory").and_then(|d| d.as_str()) {
        if dir != directory {
            return Err(NetError::Invalid(format!(
                "{}: the account is of {dir}, not of {directory} (give each directory its own file)",
                what()
            )));
        }
    }
    serde_json::from_value(json).map_err(|e| NetError::Invalid(format!("{}: {e}", what())))
}

/// Writes the credentials with mode 0600 (a temporary file renamed into
/// place: a crash leaves no half-written account).
fn write_credentials(file: &Path, credentials: &AccountCredentials) -> Result<()> {
    let what = || format!("write the ACME account file {}", file.display());
    let json = serde_json::to_vec_pretty(credentials).map_err(|e| NetError::io(what(), e))?;
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| NetError::io(what(), e))?;
    }
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        open.mode(0o600);
    }
    let mut f = open.open(&tmp).map_err(|e| NetError::io(what(), e))?;
    f.write_all(&json)
        .and_then(|()| f.sync_all())
        .map_err(|e| NetError::io(what(), e))?;
    std::fs::rename(&tmp, file).map_err(|e| NetError::io(what(), e))
}

#[async_trait]
impl CertIssuer for Acme {
    fn kind(&self) -> &'static str {
        "acme"
    }

    async fn issue(&self, request: &CertRequest) -> Result<IssuedCert> {
        if request.hostnames.is_empty() {
            return Err(NetError::Invalid(format!(
                "acme {}: a certificate for no name",
                self.server()
            )));
        }
        let timeout = self.options.timeout;
        let deadline = Instant::now() + timeout;
        let mut written = BTreeMap::new();
        let result = tokio::time::timeout(timeout, self.order(request, deadline, &mut written))
            .await
            .unwrap_or_else(|_| {
                Err(NetError::unreachable(
                    self.server(),
                    format!(
                        "no certificate for {} within {timeout:?}",
                        request.hostnames.join(", ")
                    ),
                ))
            });
        for name in written.keys() {
            if let Err(e) = self.options.dns.delete(name, RecordType::Txt).await {
                // The certificate (or the order's own error) matters more
                // than a stale challenge record; the next order replaces it.
                tracing::warn!(name = %name, error = %e, "ACME challenge record not deleted");
            }
        }
        let chain_pem = result?;
        let info = cert_info(&chain_pem).map_err(|e| {
            NetError::protocol(self.server(), format!("the certificate downloaded: {e}"))
        })?;
        Ok(IssuedCert { chain_pem, info })
    }
}

/// A failure to exchange an HTTP request with the ACME server (connect,
/// TLS, I/O), as opposed to an answer: told apart in [`Acme::error`].
#[derive(Debug)]
struct TransportError(String);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TransportError {}

type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// The HTTPS client instant-acme talks through: the system's roots plus
/// the optional extra root, ring, HTTP/1.1, a connect timeout.
struct Transport(hyper_util::client::legacy::Client<Connector, BodyWrapper<Bytes>>);

impl Transport {
    fn new(root_pem: Option<&str>, server: &str) -> Result<Transport> {
        use rustls_pki_types::pem::PemObject as _;
        let bad = |e: &dyn std::fmt::Display| {
            NetError::Invalid(format!("acme {server}: root for its TLS: {e}"))
        };
        let extra = match root_pem {
            Some(pem) => rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad(&e))?,
            None => Vec::new(),
        };
        if root_pem.is_some() && extra.is_empty() {
            return Err(bad(&"no certificate in the PEM"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
                .map_err(|e| bad(&e))?;
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&e))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Ok(Transport(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https),
        ))
    }
}

impl instant_acme::HttpClient for Transport {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<BytesResponse, instant_acme::Error>> + Send>>
    {
        let fut = self.0.request(req);
        Box::pin(async move {
            match fut.await {
                Ok(rsp) => Ok(BytesResponse::from(rsp)),
                Err(e) => {
                    // The whole chain: "client error (Connect)" alone
                    // does not say "connection refused".
                    let mut detail = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        detail.push_str(&format!(": {s}"));
                        source = s.source();
                    }
                    Err(instant_acme::Error::Other(Box::new(TransportError(detail))))
                }
            }
        })
    }
}
