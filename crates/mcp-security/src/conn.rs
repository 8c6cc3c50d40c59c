//! The server's view of one TLS connection: who the peer is (address and
//! verified client certificate chain, for [`crate::layer::AuthLayer`]) and
//! the limits that keep idle or numerous connections from holding the
//! server ([`IncomingOptions`]).
//!
//! [`TlsConn`] is what [`crate::tls::tls_incoming`] yields. It implements
//! tonic's `Connected`, so every request on it carries a [`ConnInfo`] in its
//! extensions; [`Peer::from_extensions`] reads it (or tonic's own
//! `TlsConnectInfo`/`TcpConnectInfo`, for servers built otherwise).

use std::collections::HashMap;
use std::future::Future as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

/// Length of the HTTP/2 client connection preface
/// (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
pub const H2_PREFACE_LEN: usize = 24;

/// Limits applied by [`crate::tls::tls_incoming_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingOptions {
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How long after the handshake the client has to send the HTTP/2
    /// preface (24 bytes) before the connection is closed; `None`: no limit.
    /// Established connections (preface received) are never timed out here.
    pub preface_timeout: Option<Duration>,
    /// At most this many open connections (including ones still in the
    /// handshake) per peer IP address; further ones are closed at accept.
    /// `None`: no limit.
    pub max_connections_per_peer: Option<usize>,
}

/// Default [`IncomingOptions::preface_timeout`].
pub const DEFAULT_PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

impl IncomingOptions {
    /// The default handshake timeout with a preface timeout and a per-peer
    /// connection cap: what the daemons' `[server] preface_timeout` and
    /// `max_connections_per_peer` configure.
    pub fn per_peer(preface_timeout: Duration, max_connections_per_peer: usize) -> Self {
        Self {
            preface_timeout: Some(preface_timeout),
            max_connections_per_peer: Some(max_connections_per_peer),
            ..Self::default()
        }
    }
}

impl Default for IncomingOptions {
    /// The handshake timeout of [`crate::tls::HANDSHAKE_TIMEOUT`], a 10 s
    /// preface timeout (every gRPC client sends the preface right after the
    /// handshake), no per-peer connection limit.
    fn default() -> Self {
        Self {
            handshake_timeout: crate::tls::HANDSHAKE_TIMEOUT,
            preface_timeout: Some(DEFAULT_PREFACE_TIMEOUT),
            max_connections_per_peer: None,
        }
    }
}

/// Connection facts tonic puts into every request's extensions.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote_addr: Option<SocketAddr>,
    pub local_addr: Option<SocketAddr>,
    /// The client's certificate chain, leaf first, as verified by rustls
    /// against the server's client CA bundle; `None` when the client
    /// presented none.
    pub peer_certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// The peer of one request, as far as the connection tells.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub addr: Option<SocketAddr>,
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl Peer {
    /// Reads the connection facts from request extensions: [`ConnInfo`]
    /// (this crate's incoming stream), else tonic's TLS or TCP connect info.
    pub fn from_extensions(ext: &http::Extensions) -> Peer {
        if let Some(c) = ext.get::<ConnInfo>() {
            return Peer {
                addr: c.remote_addr,
                certs: c.peer_certs.clone(),
            };
        }
        if let Some(t) = ext.get::<TlsConnectInfo<TcpConnectInfo>>() {
            return Peer {
                addr: t.get_ref().remote_addr(),
                certs: t.peer_certs(),
            };
        }
        if let Some(t) = ext.get::<TcpConnectInfo>() {
            return Peer {
                addr: t.remote_addr(),
                certs: None,
            };
        }
        Peer::default()
    }

    /// The client's leaf certificate (DER), if it presented one.
    pub fn leaf(&self) -> Option<&[u8]> {
        self.certs
            .as_ref()
            .and_then(|c| c.first())
            .map(|c| c.as_ref())
    }

    /// The peer's IP address (IPv4-mapped IPv6 addresses as IPv4).
    pub fn ip(&self) -> Option<IpAddr> {
        self.addr.map(|a| a.ip().to_canonical())
    }
}

/// The peer of a request inside a handler (address and verified client
/// certificate chain), e.g. to check that a registering agent's certificate
/// names the address it claims ([`crate::binding::certificate_names`]).
/// tonic's own `Request::remote_addr`/`peer_certs` do not know [`ConnInfo`];
/// use this instead.
pub fn peer<T>(req: &tonic::Request<T>) -> Peer {
    Peer::from_extensions(req.extensions())
}

/// Open connections per peer IP, with a cap.
#[derive(Debug, Clone)]
pub(crate) struct PeerConnections {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max: Option<usize>,
}

/// Holds one slot of [`PeerConnections`] until dropped.
#[derive(Debug)]
pub(crate) struct PeerSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PeerConnections {
    pub(crate) fn new(max: Option<usize>) -> Self {
        Self {
            counts: Arc::default(),
            max,
        }
    }

    /// A slot for a new connection from `ip`, or `None` when the peer is at
    /// its limit.
    pub(crate) fn acquire(&self, ip: IpAddr) -> Option<PeerSlot> {
        let ip = ip.to_canonical();
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(ip).or_insert(0);
        if self.max.is_some_and(|max| *n >= max) {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            counts: self.counts.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Deadline for the HTTP/2 preface: until `remaining` bytes were read.
struct Preface {
    deadline: Pin<Box<tokio::time::Sleep>>,
    remaining: usize,
}

/// An established server-side TLS connection: the stream, its
/// [`ConnInfo`], the preface deadline and the per-peer slot it occupies.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: ConnInfo,
    preface: Option<Preface>,
    _slot: Option<PeerSlot>,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("remote_addr", &self.info.remote_addr)
            .finish_non_exhaustive()
    }
}

impl TlsConn {
    pub(crate) fn new(
        inner: tokio_rustls::server::TlsStream<TcpStream>,
        preface_timeout: Option<Duration>,
        slot: Option<PeerSlot>,
    ) -> Self {
        let (tcp, session) = inner.get_ref();
        let info = ConnInfo {
            remote_addr: tcp.peer_addr().ok(),
            local_addr: tcp.local_addr().ok(),
            peer_certs: session
                .peer_certificates()
                .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect())),
        };
        Self {
            inner,
            info,
            preface: preface_timeout.map(|t| Preface {
                deadline: Box::pin(tokio::time::sleep(t)),
                remaining: H2_PREFACE_LEN,
            }),
            _slot: slot,
        }
    }

    pub fn info(&self) -> &ConnInfo {
        &self.info
    }
}

impl Connected for TlsConn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if let Some(p) = &mut this.preface {
                    let n = buf.filled().len().saturating_sub(before);
                    p.remaining = p.remaining.saturating_sub(n);
                    if p.remaining == 0 || n == 0 {
                        this.preface = None;
                    }
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if let Some(p) = &mut this.preface {
                    if p.deadline.as_mut().poll(cx).is_ready() {
                        tracing::debug!(
                            peer = ?this.info.remote_addr,
                            "no HTTP/2 preface in time: closing the connection"
                        );
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no HTTP/2 preface in time",
                        )));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
