//! Recording fakes of the three traits, answering as the real adapters do.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use crate::cert::{CertIssuer, CertRequest, IssuedCert};
use crate::dns::{check_request, DnsRecords, RecordData, RecordType};
use crate::proxy::{ProxyRoute, ProxyRoutes, RouteKey, RouteMode};
use crate::{LocalCa, NetError, Result};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default)]
struct ProxyState {
    routes: BTreeMap<RouteKey, ProxyRoute>,
    down: bool,
    calls: Vec<String>,
    cert_reloads: usize,
}

/// A proxy in memory serving both modes. `restart_empty` simulates a proxy
/// restarted with an empty configuration, `set_down` one that is not
/// running.
#[derive(Debug, Default)]
pub struct FakeProxy {
    state: Mutex<ProxyState>,
}

impl FakeProxy {
    pub fn new() -> FakeProxy {
        FakeProxy::default()
    }

    /// Forgets every route, as a proxy restarted with an empty config.
    pub fn restart_empty(&self) {
        lock(&self.state).routes.clear();
    }

    /// While down, every call fails with `NetError::Unreachable`.
    pub fn set_down(&self, down: bool) {
        lock(&self.state).down = down;
    }

    /// The calls so far: `add <host>:<port>`, `remove <host>:<port>`,
    /// `list`, `reload`.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.state).calls.clone()
    }

    /// How many times certificates were reloaded.
    pub fn cert_reloads(&self) -> usize {
        lock(&self.state).cert_reloads
    }

    fn enter(&self, call: String) -> Result<MutexGuard<'_, ProxyState>> {
        let mut s = lock(&self.state);
        s.calls.push(call);
        if s.down {
            return Err(NetError::unreachable("fake proxy", "connection refused"));
        }
        Ok(s)
    }
}

#[async_trait]
impl ProxyRoutes for FakeProxy {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn modes(&self) -> &'static [RouteMode] {
        &[RouteMode::L7, RouteMode::L4]
    }

    async fn add(&self, route: &ProxyRoute) -> Result<()> {
        let mut s = self.enter(format!("add {}:{}", route.hostname, route.listen_port))?;
        route.check()?;
        if let Some(other) = s
            .routes
            .values()
            .find(|r| r.listen_port == route.listen_port && r.mode != route.mode)
        {
            return Err(NetError::Invalid(format!(
                "port {} serves {} routes ({}); a {} route cannot share it",
                route.listen_port,
                other.mode.as_str(),
                other.hostname,
                route.mode.as_str()
            )));
        }
        s.routes.insert(route.key(), route.clone());
        Ok(())
    }

    async fn remove(&self, key: &RouteKey) -> Result<bool> {
        let mut s = self.enter(format!("remove {}:{}", key.hostname, key.listen_port))?;
        Ok(s.routes.remove(key).is_some())
    }

    async fn list(&self) -> Result<Vec<ProxyRoute>> {
        let s = self.enter("list".to_string())?;
        Ok(s.routes.values().cloned().collect())
    }

    async fn reload_certificates(&self) -> Result<()> {
        let mut s = self.enter("reload".to_string())?;
        s.cert_reloads += 1;
        Ok(())
    }
}

#[derive(Debug, Default)]
struct DnsState {
    records: BTreeMap<(String, RecordType), Vec<RecordData>>,
    reject: Option<String>,
    calls: Vec<String>,
}

/// A zone in memory. `reject_updates` makes every update fail as a server
/// refusing it (e.g. `"NOTAUTH"` for a wrong key); `delete_by_hand`
/// changes the zone behind MCP's back.
#[derive(Debug)]
pub struct FakeDns {
    zone: String,
    state: Mutex<DnsState>,
}

impl FakeDns {
    pub fn new(zone: &str) -> FakeDns {
        FakeDns {
            zone: zone.to_string(),
            state: Mutex::default(),
        }
    }

    pub fn reject_updates(&self, rcode: Option<&str>) {
        lock(&self.state).reject = rcode.map(str::to_string);
    }

    pub fn delete_by_hand(&self, name: &str, rtype: RecordType) {
        lock(&self.state).records.remove(&(name.to_string(), rtype));
    }

    /// Every record set: (name, type) → values.
    pub fn records(&self) -> BTreeMap<(String, RecordType), Vec<RecordData>> {
        lock(&self.state).records.clone()
    }

    /// The calls so far: `replace <name> <values>`, `delete <name> <type>`,
    /// `lookup <name> <type>`.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.state).calls.clone()
    }

    fn update(&self, call: String) -> Result<MutexGuard<'_, DnsState>> {
        let mut s = lock(&self.state);
        s.calls.push(call);
        if let Some(rcode) = &s.reject {
            return Err(NetError::rejected(
                "fake DNS",
                format!("update refused: {rcode}"),
            ));
        }
        Ok(s)
    }
}

#[async_trait]
impl DnsRecords for FakeDns {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn server(&self) -> String {
        "fake DNS".to_string()
    }

    fn zone(&self) -> &str {
        &self.zone
    }

    async fn replace(&self, name: &str, _ttl: u32, values: &[RecordData]) -> Result<()> {
        check_request(&self.zone, name, Some(values))?;
        let shown: Vec<String> = values.iter().map(ToString::to_string).collect();
        let mut s = self.update(format!("replace {name} {}", shown.join(",")))?;
        let mut v = values.to_vec();
        v.sort();
        v.dedup();
        s.records
            .insert((name.to_string(), values[0].record_type()), v);
        Ok(())
    }

    async fn delete(&self, name: &str, rtype: RecordType) -> Result<()> {
        check_request(&self.zone, name, None)?;
        let mut s = self.update(format!("delete {name} {rtype}"))?;
        s.records.remove(&(name.to_string(), rtype));
        Ok(())
    }

    async fn lookup(&self, name: &str, rtype: RecordType) -> Result<Vec<RecordData>> {
        check_request(&self.zone, name, None)?;
        let mut s = lock(&self.state);
        s.calls.push(format!("lookup {name} {rtype}"));
        Ok(s.records
            .get(&(name.to_string(), rtype))
            .cloned()
            .unwrap_or_default())
    }
}

#[derive(Debug, Default)]
struct IssuerState {
    fail: Option<String>,
    requests: Vec<Vec<String>>,
}

/// A CA in memory (a [`LocalCa`] of a fresh key) that records requests and
/// can be told to fail like an unreachable ACME server.
pub struct FakeIssuer {
    ca: LocalCa,
    state: Mutex<IssuerState>,
}

impl std::fmt::Debug for FakeIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeIssuer").finish_non_exhaustive()
    }
}

impl FakeIssuer {
    pub fn new() -> FakeIssuer {
        FakeIssuer::with_validity(LocalCa::DEFAULT_VALIDITY)
    }

    /// Certificates valid for `validity` (renewal tests).
    pub fn with_validity(validity: Duration) -> FakeIssuer {
        let ca = new_ca();
        FakeIssuer {
            ca: ca.with_validity(validity),
            state: Mutex::default(),
        }
    }

    /// The root its chains lead to, PEM.
    pub fn root_pem(&self) -> String {
        self.ca.ca_pem().to_string()
    }

    /// While set, `issue` fails with `NetError::Unreachable` and this text.
    pub fn fail(&self, why: Option<&str>) {
        lock(&self.state).fail = why.map(str::to_string);
    }

    /// The hostnames of every request so far, failed ones included.
    pub fn requests(&self) -> Vec<Vec<String>> {
        lock(&self.state).requests.clone()
    }
}

impl Default for FakeIssuer {
    fn default() -> FakeIssuer {
        FakeIssuer::new()
    }
}

fn new_ca() -> LocalCa {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fake issuer CA");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = rcgen::KeyPair::generate().expect("key generation");
    let cert = params.self_signed(&key).expect("self-signed CA");
    LocalCa::from_pem(&cert.pem(), &key.serialize_pem(), "fake issuer").expect("fake CA")
}

#[async_trait]
impl CertIssuer for FakeIssuer {
    fn kind(&self) -> &'static str {
        "fake"
    }

    async fn issue(&self, request: &CertRequest) -> Result<IssuedCert> {
        {
            let mut s = lock(&self.state);
            s.requests.push(request.hostnames.clone());
            if let Some(why) = &s.fail {
                return Err(NetError::unreachable("fake issuer", why));
            }
        }
        self.ca.sign(request)
    }
}
