//! [`DnsRecords`] over RFC 2136 dynamic updates signed with TSIG (RFC 8945),
//! for any authoritative server that accepts them (Knot, BIND, PowerDNS).
//!
//! Every call opens one TCP connection to the server (TCP: a signed update
//! and its signed answer are never truncated, and a dead server is seen at
//! once as a refused connection), sends one message and closes it; the
//! whole call is bounded by [`Rfc2136Options::timeout`].
//!
//! - `replace` is ONE update message: "delete the RRset of this name and
//!   type" followed by "add" for each value, which the server applies
//!   atomically (RFC 2136 §3.4: all or nothing).
//! - `delete` is one update deleting the RRset.
//! - `lookup` is a plain unsigned query to the same server (authoritative
//!   data, no cache in between).
//!
//! Answers are checked here: any rcode but NOERROR is
//! [`NetError::Rejected`] naming the rcode (and the TSIG error the server
//! put in its answer, e.g. `NOTAUTH (TSIG BADKEY)`). A NOERROR answer to an
//! update must carry a valid TSIG signature of our key, else it is
//! [`NetError::Protocol`]. Error answers are often unsigned (the server
//! could not verify us): they are reported as they are, since a forged
//! error can only make us fail, never believe a change was made.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use hickory_client::client::Client;
use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_proto::dnssec::rdata::{DNSSECRData, TSIG};
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::{
    update_message::UpdateMessage, Message, MessageFinalizer, MessageType, MessageVerifier, OpCode,
    Query, ResponseCode,
};
use hickory_proto::rr::rdata::{A, AAAA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record};
use hickory_proto::runtime::TokioRuntimeProvider;
use hickory_proto::serialize::binary::BinEncodable;
use hickory_proto::tcp::TcpClientStream;
use hickory_proto::xfer::{DnsHandle, DnsRequest, DnsRequestOptions, DnsResponse, FirstAnswer};
use hickory_proto::ProtoError;

use crate::dns::{check_request, DnsRecords, RecordData, RecordType};
use crate::{NetError, Result};

/// How to reach and authenticate to the zone's primary server.
#[derive(Clone, PartialEq, Eq)]
pub struct Rfc2136Options {
    /// The primary server, e.g. `127.0.0.1:5353` (TCP).
    pub server: SocketAddr,
    /// The zone updated, e.g. `mcp.test` (lowercase, no trailing dot).
    pub zone: String,
    /// The TSIG key's name as the server knows it, e.g. `mcp-key`.
    pub key_name: String,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
    pub algorithm: String,
    /// The raw key bytes (the base64 of a `key` statement, decoded).
    pub secret: Vec<u8>,
    /// The bound on each call: connect, send, answer.
    pub timeout: Duration,
}

impl std::fmt::Debug for Rfc2136Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136Options")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("key_name", &self.key_name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Rfc2136Options {
    /// A TSIG secret from a file holding its base64 (as in a Knot or BIND
    /// `key` statement, or `keymgr -t` / `tsig-keygen` output's secret),
    /// surrounding whitespace ignored.
    pub fn secret_from_base64_file(path: &Path) -> Result<Vec<u8>> {
        let what = format!("TSIG secret file {}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| NetError::io(&what, e))?;
        let text = text.trim();
        if text.is_empty() {
            return Err(NetError::io(&what, "empty (expected the key's base64)"));
        }
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| NetError::io(&what, format!("not base64: {e}")))
    }
}

/// RFC 2136 updates of one zone on one server, signed with one TSIG key.
pub struct Rfc2136 {
    server: SocketAddr,
    zone: String,
    zone_name: Name,
    timeout: Duration,
    signer: TSigner,
}

impl std::fmt::Debug for Rfc2136 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("key", &self.signer.signer_name().to_string())
            .finish()
    }
}

/// TSIG fudge: the clock skew the server accepts, in seconds (RFC 8945
/// recommends 300).
const FUDGE: u16 = 300;

impl Rfc2136 {
    pub fn new(o: Rfc2136Options) -> Result<Rfc2136> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            NetError::Invalid(format!("rfc2136 {}: {what}: {e}", o.server))
        };
        if !mcp_spec::names::is_hostname(&o.zone)
            || o.zone != mcp_spec::names::normalize_hostname(&o.zone)
        {
            return Err(bad(
                "zone",
                &format!(
                    "{:?} is not a lowercase DNS name without a trailing dot",
                    o.zone
                ),
            ));
        }
        let zone_name = fqdn(&o.zone).map_err(|e| bad("zone", &e))?;
        let algorithm = match o.algorithm.as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => {
                return Err(bad(
                    "algorithm",
                    &format!("{other:?} (use hmac-sha256, hmac-sha384 or hmac-sha512)"),
                ))
            }
        };
        if o.secret.is_empty() {
            return Err(bad("secret", &"empty"));
        }
        let key_name = Name::from_ascii(&o.key_name).map_err(|e| bad("key name", &e))?;
        if o.key_name.is_empty() {
            return Err(bad("key name", &"empty"));
        }
        let signer = TSigner::new(o.secret.clone(), algorithm, key_name, FUDGE)
            .map_err(|e| bad("TSIG key", &e))?;
        Ok(Rfc2136 {
            server: o.server,
            zone: o.zone,
            zone_name,
            timeout: o.timeout,
            signer,
        })
    }

    /// Sends `message` on a fresh TCP connection and returns the answer,
    /// whatever its rcode. `sign`: TSIG-sign it (updates).
    async fn exchange(&self, message: Message, sign: bool) -> Result<DnsResponse> {
        let server = self.server.to_string();
        let work = async {
            let (stream, handle) = TcpClientStream::new(
                self.server,
                None,
                Some(self.timeout),
                TokioRuntimeProvider::new(),
            );
            let signer: Option<std::sync::Arc<dyn MessageFinalizer>> = if sign {
                Some(std::sync::Arc::new(ReportErrors(self.signer.clone())))
            } else {
                None
            };
            let (client, background) =
                Client::with_timeout(stream, handle, self.timeout, signer).await?;
            let background = tokio::spawn(background);
            let answer = client
                .send(DnsRequest::new(message, DnsRequestOptions::default()))
                .first_answer()
                .await;
            background.abort();
            answer
        };
        match tokio::time::timeout(self.timeout, work).await {
            Err(_) => Err(NetError::unreachable(
                server,
                format!("no answer within {:?}", self.timeout),
            )),
            Ok(Err(e)) if is_tsig_failure(&e) => Err(NetError::protocol(
                server,
                format!("the answer's TSIG signature does not verify: {e}"),
            )),
            Ok(Err(e)) => Err(NetError::unreachable(server, e)),
            Ok(Ok(answer)) => Ok(answer),
        }
    }

    async fn update(&self, what: &str, name: &str, records: Vec<Record>) -> Result<()> {
        let mut message = Message::new();
        message
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Update)
            .set_recursion_desired(false);
        let mut zone = Query::new();
        zone.set_name(self.zone_name.clone())
            .set_query_class(DNSClass::IN)
            .set_query_type(hickory_proto::rr::RecordType::SOA);
        message.add_zone(zone);
        message.add_updates(records);
        let answer = self.exchange(message, true).await?;
        match answer.response_code() {
            ResponseCode::NoError => Ok(()),
            code => Err(NetError::rejected(
                self.server.to_string(),
                format!("{what} of {name} refused: {}", describe(code, &answer)),
            )),
        }
    }
}

/// The TSigner, except that an answer with an error rcode is handed back
/// unverified, so the caller can report the rcode (servers do not sign
/// the answer to a request they could not verify). NOERROR answers are
/// verified as usual.
struct ReportErrors(TSigner);

impl MessageFinalizer for ReportErrors {
    fn finalize_message(
        &self,
        message: &Message,
        current_time: u32,
    ) -> Result<(Vec<Record>, Option<MessageVerifier>), ProtoError> {
        let (records, mut verify) = self.0.finalize_message(message, current_time)?;
        let verifier: MessageVerifier = Box::new(move |bytes: &[u8]| {
            let answer = DnsResponse::from_buffer(bytes.to_vec())?;
            if answer.response_code() != ResponseCode::NoError {
                return Ok(answer);
            }
            match verify.as_mut() {
                Some(v) => v(bytes),
                None => Ok(answer),
            }
        });
        Ok((records, Some(verifier)))
    }
}

fn is_tsig_failure(e: &hickory_proto::ProtoError) -> bool {
    let text = e.to_string().to_lowercase();
    text.contains("tsig") || text.contains("hmac") || text.contains("signature")
}

fn fqdn(name: &str) -> Result<Name> {
    let mut n = Name::from_ascii(name)
        .map_err(|e| NetError::Invalid(format!("{name:?} is not a DNS name: {e}")))?;
    n.set_fqdn(true);
    Ok(n)
}

fn proto_type(t: RecordType) -> hickory_proto::rr::RecordType {
    match t {
        RecordType::A => hickory_proto::rr::RecordType::A,
        RecordType::Aaaa => hickory_proto::rr::RecordType::AAAA,
        RecordType::Txt => hickory_proto::rr::RecordType::TXT,
    }
}

fn rdata(v: &RecordData) -> RData {
    match v {
        RecordData::A(a) => RData::A(A(*a)),
        RecordData::Aaaa(a) => RData::AAAA(AAAA(*a)),
        // A TXT record is a sequence of strings of at most 255 bytes each;
        // a longer value is split (readers concatenate them).
        RecordData::Txt(t) => RData::TXT(TXT::new(txt_chunks(t))),
    }
}

fn txt_chunks(t: &str) -> Vec<String> {
    if t.is_empty() {
        return vec![String::new()];
    }
    let mut chunks = Vec::new();
    let mut current = String::new();
    for c in t.chars() {
        if current.len() + c.len_utf8() > 255 {
            chunks.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    chunks.push(current);
    chunks
}

/// The rcode's mnemonic (`NOTAUTH`), with the TSIG error of the answer's
/// TSIG record when it has one (`NOTAUTH (TSIG BADSIG)`).
fn describe(code: ResponseCode, answer: &Message) -> String {
    let value = u16::from(code);
    let name = match value {
        0 => "NOERROR".to_string(),
        1 => "FORMERR".to_string(),
        2 => "SERVFAIL".to_string(),
        3 => "NXDOMAIN".to_string(),
        4 => "NOTIMP".to_string(),
        5 => "REFUSED".to_string(),
        6 => "YXDOMAIN".to_string(),
        7 => "YXRRSET".to_string(),
        8 => "NXRRSET".to_string(),
        9 => "NOTAUTH".to_string(),
        10 => "NOTZONE".to_string(),
        other => format!("RCODE{other}"),
    };
    let tsig_error = answer.signature().iter().find_map(|r| match r.data() {
        RData::DNSSEC(DNSSECRData::TSIG(t)) => tsig_error(t).filter(|e| *e != 0),
        _ => None,
    });
    match tsig_error {
        Some(e) => {
            let e = match e {
                16 => "BADSIG".to_string(),
                17 => "BADKEY".to_string(),
                18 => "BADTIME".to_string(),
                22 => "BADTRUNC".to_string(),
                other => other.to_string(),
            };
            format!("{name} (TSIG {e})")
        }
        None => name,
    }
}

/// The error field of a TSIG rdata (hickory keeps it private): after the
/// algorithm name, 6 bytes of time, 2 of fudge, the MAC with its 2-byte
/// length, and 2 of original ID.
fn tsig_error(t: &TSIG) -> Option<u16> {
    let bytes = t.to_bytes().ok()?;
    let mut at = 0usize;
    loop {
        let len = usize::from(*bytes.get(at)?);
        at += 1 + len;
        if len == 0 {
            break;
        }
    }
    at += 6 + 2;
    let mac_len = usize::from(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]));
    at += 2 + mac_len + 2;
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

#[async_trait]
impl DnsRecords for Rfc2136 {
    fn kind(&self) -> &'static str {
        "rfc2136"
    }

    fn server(&self) -> String {
        self.server.to_string()
    }

    fn zone(&self) -> &str {
        &self.zone
    }

    async fn replace(&self, name: &str, ttl: u32, values: &[RecordData]) -> Result<()> {
        check_request(&self.zone, name, Some(values))?;
        let owner = fqdn(name)?;
        let rtype = proto_type(values[0].record_type());
        // RFC 2136 §2.5.2: delete an RRset = CLASS ANY, TTL 0, no rdata.
        let mut delete = Record::update0(owner.clone(), 0, rtype);
        delete.set_dns_class(DNSClass::ANY);
        let mut records = vec![delete];
        for v in values {
            let mut add = Record::from_rdata(owner.clone(), ttl, rdata(v));
            add.set_dns_class(DNSClass::IN);
            records.push(add);
        }
        self.update("update", name, records).await
    }

    async fn delete(&self, name: &str, rtype: RecordType) -> Result<()> {
        check_request(&self.zone, name, None)?;
        let mut delete = Record::update0(fqdn(name)?, 0, proto_type(rtype));
        delete.set_dns_class(DNSClass::ANY);
        self.update("delete", name, vec![delete]).await
    }

    async fn lookup(&self, name: &str, rtype: RecordType) -> Result<Vec<RecordData>> {
        check_request(&self.zone, name, None)?;
        let owner = fqdn(name)?;
        let mut message = Message::new();
        message
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(false);
        message.add_query(Query::query(owner.clone(), proto_type(rtype)));
        let answer = self.exchange(message, false).await?;
        match answer.response_code() {
            ResponseCode::NoError | ResponseCode::NXDomain => {}
            code => {
                return Err(NetError::rejected(
                    self.server.to_string(),
                    format!(
                        "lookup of {name} {rtype} refused: {}",
                        describe(code, &answer)
                    ),
                ))
            }
        }
        let mut values: Vec<RecordData> = answer
            .answers()
            .iter()
            .filter(|r| r.name() == &owner)
            .filter_map(|r| match (r.data(), rtype) {
                (RData::A(a), RecordType::A) => Some(RecordData::A(a.0)),
                (RData::AAAA(a), RecordType::Aaaa) => Some(RecordData::Aaaa(a.0)),
                (RData::TXT(t), RecordType::Txt) => {
                    let joined: Vec<u8> = t
                        .txt_data()
                        .iter()
                        .flat_map(|c| c.iter().copied())
                        .collect();
                    Some(RecordData::Txt(
                        String::from_utf8_lossy(&joined).into_owned(),
                    ))
                }
                _ => None,
            })
            .collect();
        values.sort();
        values.dedup();
        Ok(values)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn options() -> Rfc2136Options {
        Rfc2136Options {
            server: "127.0.0.1:53".parse().unwrap(),
            zone: "mcp.test".into(),
            key_name: "mcp-key".into(),
            algorithm: "hmac-sha256".into(),
            secret: vec![1; 32],
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn options_are_checked() {
        assert!(Rfc2136::new(options()).is_ok());
        let bad = |f: fn(&mut Rfc2136Options)| {
            let mut o = options();
            f(&mut o);
            Rfc2136::new(o).unwrap_err().to_string()
        };
        assert!(bad(|o| o.algorithm = "hmac-md5".into()).contains("hmac-md5"));
        assert!(bad(|o| o.zone = "MCP.test.".into()).contains("zone"));
        assert!(bad(|o| o.secret.clear()).contains("secret"));
        assert!(
            !format!("{:?}", options()).contains("[1, 1"),
            "secret redacted"
        );
    }

    #[test]
    fn secret_files_are_base64() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tsig.key");
        std::fs::write(&p, "  AQIDBA==\n").unwrap();
        assert_eq!(
            Rfc2136Options::secret_from_base64_file(&p).unwrap(),
            vec![1, 2, 3, 4]
        );
        std::fs::write(&p, "not base64!").unwrap();
        let e = Rfc2136Options::secret_from_base64_file(&p).unwrap_err();
        assert!(e.to_string().contains("tsig.key"), "{e}");
        let e = Rfc2136Options::secret_from_base64_file(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn long_txt_values_are_split() {
        let long = "x".repeat(600);
        let chunks = txt_chunks(&long);
        assert_eq!(
            chunks.iter().map(String::len).collect::<Vec<_>>(),
            [255, 255, 90]
        );
        assert_eq!(txt_chunks(""), vec![String::new()]);
    }

    #[test]
    fn the_tsig_error_is_read() {
        let t = TSIG::new(
            TsigAlgorithm::HmacSha256,
            1,
            300,
            vec![7; 32],
            5,
            17,
            vec![],
        );
        assert_eq!(tsig_error(&t), Some(17));
    }
}
