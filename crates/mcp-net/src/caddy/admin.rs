//! A minimal client of Caddy's admin API: one HTTP/1.1 connection per
//! request (hyper's connection API, no pooling client), every request
//! bounded by [`TIMEOUT`].

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

use crate::{NetError, Result};

/// How long one admin request may take, connection included.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

/// Caddy's admin endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    addr: SocketAddr,
}

impl Admin {
    pub(crate) fn new(addr: SocketAddr) -> Admin {
        Admin { addr }
    }

    /// How errors name this server.
    pub(crate) fn server(&self) -> String {
        format!("caddy admin {}", self.addr)
    }

    /// `GET /config/`: the running configuration (`null` when empty).
    pub(crate) async fn config(&self) -> Result<serde_json::Value> {
        // A read is safe to repeat: Caddy closes or resets the admin
        // connection while it rolls back a refused load, so a read right
        // after one may meet a connection error once or twice.
        let mut tries = 0;
        let body = loop {
            match self.request(Method::GET, "/config/", None, false).await {
                Err(NetError::Unreachable { .. }) if tries < 3 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                other => break other?,
            }
        };
        serde_json::from_slice(&body)
            .map_err(|e| NetError::protocol(self.server(), format!("GET /config/: not JSON: {e}")))
    }

    /// `POST /load` of a whole configuration. Caddy applies it atomically
    /// (a config it cannot provision is refused and the old one stays).
    /// `must_revalidate` makes Caddy load a configuration identical to the
    /// running one (it skips it otherwise), which re-reads certificate
    /// files.
    pub(crate) async fn load(
        &self,
        config: &serde_json::Value,
        must_revalidate: bool,
    ) -> Result<()> {
        let body = serde_json::to_vec(config)
            .map_err(|e| NetError::protocol(self.server(), format!("encode config: {e}")))?;
        self.request(Method::POST, "/load", Some(body), must_revalidate)
            .await
            .map(drop)
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        must_revalidate: bool,
    ) -> Result<Bytes> {
        let what = format!("{method} {path}");
        match tokio::time::timeout(TIMEOUT, self.exchange(&method, path, body, must_revalidate))
            .await
        {
            Err(_) => Err(NetError::unreachable(
                self.server(),
                format!("{what}: no answer within {} s", TIMEOUT.as_secs()),
            )),
            Ok(Err(e)) => Err(e),
            Ok(Ok((status, body))) if status.is_success() => Ok(body),
            Ok(Ok((status, body))) => {
                // Caddy's errors are `{"error": "..."}`.
                let text = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
                Err(NetError::rejected(
                    self.server(),
                    format!("{what}: {status}: {text}"),
                ))
            }
        }
    }

    async fn exchange(
        &self,
        method: &Method,
        path: &str,
        body: Option<Vec<u8>>,
        must_revalidate: bool,
    ) -> Result<(StatusCode, Bytes)> {
        let what = format!("{method} {path}");
        let unreachable = |e: &dyn std::fmt::Display| {
            NetError::unreachable(self.server(), format!("{what}: {e}"))
        };
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| unreachable(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
        let conn = tokio::spawn(conn);
        // Caddy checks the Host header against its admin address.
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, self.addr.to_string());
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        if must_revalidate {
            req = req.header(header::CACHE_CONTROL, "must-revalidate");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| NetError::protocol(self.server(), format!("{what}: request: {e}")))?;
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| unreachable(&e))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(&e))?
                .to_bytes();
            Ok((status, body))
        }
        .await;
        conn.abort();
        result
    }
}
