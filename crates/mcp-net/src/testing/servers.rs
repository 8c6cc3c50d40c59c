//! Fixtures that start real servers (Knot, Pebble, Caddy, HAProxy) on
//! loopback for tests, each with its own configuration in its own
//! directory, and stop them when dropped. Shared by this crate's adapter
//! tests and by the daemons' tests.

pub mod caddy;
pub mod haproxy;
pub mod knot;
pub mod pebble;

use std::net::TcpListener;
use std::path::PathBuf;

/// A free TCP port on 127.0.0.1 (bound, read, released: the usual race
/// is accepted in tests).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A free port on 127.0.0.1 for both TCP and UDP (DNS servers).
pub fn free_tcp_udp_port() -> u16 {
    loop {
        let port = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The path of `binary` (searched in `PATH`, then `/usr/sbin`, `/sbin`),
/// or `None` after printing a loud skip line when it is missing and
/// `MCP_SKIP_MISSING_SERVERS=1`. Without that variable a missing binary
/// panics naming the Debian package to install.
pub fn server_binary(binary: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs =
        std::env::split_paths(&path).chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join(binary);
        if p.is_file() {
            return Some(p);
        }
    }
    if std::env::var("MCP_SKIP_MISSING_SERVERS").as_deref() == Ok("1") {
        eprintln!("SKIPPED: {binary} is missing (Debian package {package})");
        return None;
    }
    panic!(
        "{binary} is missing: install the Debian package {package} \
         (scripts/test.sh does), or set MCP_SKIP_MISSING_SERVERS=1 to skip"
    );
}
