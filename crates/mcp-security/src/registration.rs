//! Binding agent registrations to identities (docs/ARCHITECTURE.md): node name from
//! the `agent-<node>` identity, allowlist, node limit, per-identity rate
//! limits; and what a registration may say about the node
//! (docs/SECURITY.md, "Node registration"):
//!
//! - **Role** ([`check_role`]): fixed by the master's configuration, or,
//!   for a node it does not configure, by the node's first registration. A
//!   registration asking for another role is refused.
//! - **Address** ([`check_address`]): an address the master does not have on
//!   record for the node (a change, or a new node's first one) is accepted
//!   only when the agent's client certificate names its host (a DNS or IP
//!   subject alternative name, [`crate::binding::certificate_names`]), or,
//!   when the master allows it, when the host is an IP address inside the
//!   overlay networks. The master connects to that address verifying the
//!   server certificate against the same host, so a genuine agent's
//!   certificate names it already.
//! - **Cool-down** ([`check_cooldown`]): a change within the cool-down of
//!   the previous change is refused.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use mcp_spec::names::is_dns_label;
use mcp_spec::NodeRole;

use crate::clock::{Clock, SystemClock};
use crate::edge::Cidr;
use crate::identity::{AccountType, Identity};

/// Prefix of agent identities.
pub const AGENT_PREFIX: &str = "agent-";

/// Default maximum number of registered nodes.
pub const DEFAULT_MAX_NODES: usize = 16;

/// Why a registration or heartbeat is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    #[error("identity {0} is not a system account")]
    NotSystem(String),
    #[error("identity {0} is not of the form agent-<node>")]
    NotAgent(String),
    #[error("identity {identity} may only register node {expected}, not {requested}")]
    NameMismatch {
        identity: String,
        expected: String,
        requested: String,
    },
    #[error("identity {0} is not on the agent allowlist")]
    NotAllowed(String),
    #[error("node limit reached ({max} nodes); cannot add {node}")]
    TooManyNodes { node: String, max: usize },
    #[error(
        "node {node} asked to register as {requested}, but its role is {role} ({from}); \
         a node cannot change its own role: change it in the master's configuration"
    )]
    RoleFixed {
        node: String,
        role: NodeRole,
        requested: NodeRole,
        /// Where the role comes from.
        from: RoleSource,
    },
    #[error("node {node}: address {address:?} is not an address of the form https://host:port")]
    BadAddress { node: String, address: String },
    #[error(
        "node {node}: address {address} refused: its client certificate does not name {host}{overlay}; \
         the master keeps {kept}",
        overlay = if *.overlay { " and it is not inside the overlay networks" } else { "" },
        kept = .kept.as_deref().map_or("no address for it".to_string(), |k| format!("calling {k}"))
    )]
    AddressNotNamed {
        node: String,
        address: String,
        host: String,
        /// Overlay addresses were allowed (and this one is not inside).
        overlay: bool,
        /// The address on record, still used.
        kept: Option<String>,
    },
    #[error(
        "node {node}: address change to {address} refused: its address changed {ago} ago, \
         less than the cool-down ({cooldown}); the master keeps calling {kept}"
    )]
    AddressCooldown {
        node: String,
        address: String,
        kept: String,
        ago: String,
        cooldown: String,
    },
}

/// Where a node's fixed role comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleSource {
    /// The master's configuration (`[registration.roles]` or `[[nodes]]`).
    Config,
    /// The node's first registration (it is not in the configuration).
    FirstRegistration,
}

impl std::fmt::Display for RoleSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RoleSource::Config => "set by the master's configuration",
            RoleSource::FirstRegistration => "set by its first registration",
        })
    }
}

impl RegistrationError {
    /// `ResourceExhausted` for the node limit, `InvalidArgument` for an
    /// unreadable address, `FailedPrecondition` within the address cool-down,
    /// `PermissionDenied` otherwise.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            RegistrationError::TooManyNodes { .. } => {
                tonic::Status::resource_exhausted(self.to_string())
            }
            RegistrationError::BadAddress { .. } => {
                tonic::Status::invalid_argument(self.to_string())
            }
            RegistrationError::AddressCooldown { .. } => {
                tonic::Status::failed_precondition(self.to_string())
            }
            _ => tonic::Status::permission_denied(self.to_string()),
        }
    }
}

/// The role a registering node gets: `configured` (the master's
/// configuration) when set, else `recorded` (its first registration) when
/// it registered before, else `requested`. A request for another role than
/// the fixed one is refused.
pub fn check_role(
    node: &str,
    configured: Option<NodeRole>,
    recorded: Option<NodeRole>,
    requested: NodeRole,
) -> Result<NodeRole, RegistrationError> {
    let fixed = configured
        .map(|r| (r, RoleSource::Config))
        .or(recorded.map(|r| (r, RoleSource::FirstRegistration)));
    match fixed {
        Some((role, from)) if role != requested => Err(RegistrationError::RoleFixed {
            node: node.to_string(),
            role,
            requested,
            from,
        }),
        Some((role, _)) => Ok(role),
        None => Ok(requested),
    }
}

/// The host of an agent address `https://host:port` (IPv6 without its
/// brackets); `None` when there is none.
pub fn address_host(address: &str) -> Option<String> {
    let uri: http::Uri = address.parse().ok()?;
    uri.scheme()?;
    let host = uri.host()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_string())
}

/// Checks an address the master does not have on record for `node` (see
/// the module docs): the client certificate `leaf` (DER) must name its
/// host, or, with `overlay` given, the host must be an IP address inside
/// one of those networks. `kept` is the address on record (for the
/// message).
pub fn check_address(
    node: &str,
    address: &str,
    leaf: Option<&[u8]>,
    overlay: Option<&[Cidr]>,
    kept: Option<&str>,
) -> Result<(), RegistrationError> {
    let host = address_host(address).ok_or_else(|| RegistrationError::BadAddress {
        node: node.to_string(),
        address: address.to_string(),
    })?;
    if leaf.is_some_and(|l| crate::binding::certificate_names(l, &host)) {
        return Ok(());
    }
    if let Some(cidrs) = overlay {
        if let Ok(ip) = host.parse::<IpAddr>() {
            if cidrs.iter().any(|c| c.contains(ip.to_canonical())) {
                return Ok(());
            }
        }
    }
    Err(RegistrationError::AddressNotNamed {
        node: node.to_string(),
        address: address.to_string(),
        host,
        overlay: overlay.is_some(),
        kept: kept.map(str::to_string),
    })
}

/// Refuses an address change less than `cooldown` after the previous
/// change (`last_change`; `None`: never changed).
pub fn check_cooldown(
    node: &str,
    address: &str,
    kept: &str,
    last_change: Option<SystemTime>,
    now: SystemTime,
    cooldown: Duration,
) -> Result<(), RegistrationError> {
    let Some(last) = last_change else {
        return Ok(());
    };
    // A change recorded in the future (a clock step back) counts as just now.
    let ago = now.duration_since(last).unwrap_or(Duration::ZERO);
    if ago >= cooldown {
        return Ok(());
    }
    Err(RegistrationError::AddressCooldown {
        node: node.to_string(),
        address: address.to_string(),
        kept: kept.to_string(),
        ago: humantime::format_duration(Duration::from_secs(ago.as_secs())).to_string(),
        cooldown: humantime::format_duration(cooldown).to_string(),
    })
}

/// The node an agent identity speaks for: `agent-orion` → `orion`. The
/// identity must be a system account and the rest a DNS label.
pub fn node_from_identity(identity: &Identity) -> Result<String, RegistrationError> {
    if identity.account_type != AccountType::System {
        return Err(RegistrationError::NotSystem(identity.name.clone()));
    }
    match identity.name.strip_prefix(AGENT_PREFIX) {
        Some(node) if is_dns_label(node) => Ok(node.to_string()),
        _ => Err(RegistrationError::NotAgent(identity.name.clone())),
    }
}

/// The `[registration]` part of the master config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationPolicy {
    /// Identities allowed to register (`agent-<node>`). Empty: nobody.
    pub allowed_agents: BTreeSet<String>,
    pub max_nodes: usize,
}

impl Default for RegistrationPolicy {
    fn default() -> Self {
        Self {
            allowed_agents: BTreeSet::new(),
            max_nodes: DEFAULT_MAX_NODES,
        }
    }
}

impl RegistrationPolicy {
    pub fn new<I, S>(allowed_agents: I, max_nodes: usize) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            allowed_agents: allowed_agents.into_iter().map(Into::into).collect(),
            max_nodes,
        }
    }

    /// Checks a `Register(name, ..)` from `identity`. `known_nodes` are the
    /// nodes already registered; re-registering one of them never counts
    /// against the limit. Returns the node name.
    pub fn check_register(
        &self,
        identity: &Identity,
        requested_name: &str,
        known_nodes: &BTreeSet<String>,
    ) -> Result<String, RegistrationError> {
        let node = self.check_name(identity, requested_name)?;
        if !self.allowed_agents.contains(&identity.name) {
            return Err(RegistrationError::NotAllowed(identity.name.clone()));
        }
        if !known_nodes.contains(&node) && known_nodes.len() >= self.max_nodes {
            return Err(RegistrationError::TooManyNodes {
                node,
                max: self.max_nodes,
            });
        }
        Ok(node)
    }

    /// Checks a `Heartbeat(name, ..)`: the name must match the identity, and
    /// the identity must still be allowlisted.
    pub fn check_heartbeat(
        &self,
        identity: &Identity,
        name: &str,
    ) -> Result<String, RegistrationError> {
        let node = self.check_name(identity, name)?;
        if !self.allowed_agents.contains(&identity.name) {
            return Err(RegistrationError::NotAllowed(identity.name.clone()));
        }
        Ok(node)
    }

    fn check_name(
        &self,
        identity: &Identity,
        requested: &str,
    ) -> Result<String, RegistrationError> {
        let node = node_from_identity(identity)?;
        if node != requested {
            return Err(RegistrationError::NameMismatch {
                identity: identity.name.clone(),
                expected: node,
                requested: requested.to_string(),
            });
        }
        Ok(node)
    }
}

/// Minimum spacing between accepted calls, per identity and method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// gRPC path → minimum interval between accepted calls.
    pub intervals: HashMap<String, Duration>,
}

impl Default for RateLimits {
    /// Register 1/min, Heartbeat 1/10 s (docs/ARCHITECTURE.md).
    fn default() -> Self {
        Self::new()
            .with("/mcp.v1.McpMasterService/Register", Duration::from_secs(60))
            .with(
                "/mcp.v1.McpMasterService/Heartbeat",
                Duration::from_secs(10),
            )
    }
}

impl RateLimits {
    /// No limits.
    pub fn new() -> Self {
        Self {
            intervals: HashMap::new(),
        }
    }

    pub fn with(mut self, method: &str, interval: Duration) -> Self {
        self.intervals.insert(method.to_string(), interval);
        self
    }
}

/// A call refused by the rate limiter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limit: {identity} may call {method} once per {interval:?}; retry in {retry_after:?}")]
pub struct RateLimited {
    pub identity: String,
    pub method: String,
    pub interval: Duration,
    pub retry_after: Duration,
}

impl RateLimited {
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::resource_exhausted(self.to_string())
    }
}

/// Per-identity, per-method limiter: a call is accepted when at least the
/// configured interval has passed since the identity's last accepted call
/// of that method (refused calls do not push the window). Methods without a
/// configured interval are never limited.
pub struct RateLimiter {
    limits: RateLimits,
    clock: Arc<dyn Clock>,
    last: Mutex<HashMap<(String, String), Instant>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Entries kept before old ones are swept.
const SWEEP_AT: usize = 4096;

impl RateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        Self::with_clock(limits, Arc::new(SystemClock))
    }

    pub fn with_clock(limits: RateLimits, clock: Arc<dyn Clock>) -> Self {
        Self {
            limits,
            clock,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Accepts (and records) or refuses one call.
    pub fn check(&self, identity: &str, method: &str) -> Result<(), RateLimited> {
        let Some(&interval) = self.limits.intervals.get(method) else {
            return Ok(());
        };
        let now = self.clock.instant();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (identity.to_string(), method.to_string());
        if let Some(&prev) = last.get(&key) {
            let elapsed = now.saturating_duration_since(prev);
            if elapsed < interval {
                return Err(RateLimited {
                    identity: identity.to_string(),
                    method: method.to_string(),
                    interval,
                    retry_after: interval - elapsed,
                });
            }
        }
        if last.len() >= SWEEP_AT {
            let limits = &self.limits.intervals;
            last.retain(|(_, m), t| {
                limits
                    .get(m)
                    .is_some_and(|iv| now.saturating_duration_since(*t) < *iv)
            });
        }
        last.insert(key, now);
        Ok(())
    }
}
