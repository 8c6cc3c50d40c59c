//! The one error type of every adapter.

/// What went wrong talking to an integration. Every variant names the
/// server (or file) involved, so a failed step says where to look.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// The server could not be reached (connection refused, timeout, …).
    #[error("cannot reach {server}: {detail}")]
    Unreachable { server: String, detail: String },
    /// The server answered and said no (a DNS rcode such as REFUSED or
    /// NOTAUTH, an ACME problem document, a proxy refusing a config).
    #[error("{server} refused: {detail}")]
    Rejected { server: String, detail: String },
    /// The server's answer could not be understood.
    #[error("unexpected answer from {server}: {detail}")]
    Protocol { server: String, detail: String },
    /// The request itself is wrong (a name outside the zone, a route mode
    /// the adapter does not serve, a malformed certificate).
    #[error("{0}")]
    Invalid(String),
    /// A local file or system call failed.
    #[error("{what}: {detail}")]
    Io { what: String, detail: String },
}

impl NetError {
    pub fn unreachable(server: impl Into<String>, detail: impl std::fmt::Display) -> NetError {
        NetError::Unreachable {
            server: server.into(),
            detail: detail.to_string(),
        }
    }

    pub fn rejected(server: impl Into<String>, detail: impl std::fmt::Display) -> NetError {
        NetError::Rejected {
            server: server.into(),
            detail: detail.to_string(),
        }
    }

    pub fn protocol(server: impl Into<String>, detail: impl std::fmt::Display) -> NetError {
        NetError::Protocol {
            server: server.into(),
            detail: detail.to_string(),
        }
    }

    pub fn io(what: impl Into<String>, detail: impl std::fmt::Display) -> NetError {
        NetError::Io {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

pub type Result<T, E = NetError> = std::result::Result<T, E>;
