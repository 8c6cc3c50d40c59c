//! A DNS query over UDP, just enough to ask the fleet's Knot: is the zone
//! served (SOA), where does a name point (A). No recursion, no EDNS.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

pub const A: u16 = 1;
pub const SOA: u16 = 6;

/// Asks `server` for `name`'s `qtype` records: (rcode, the records' data),
/// or `None` without a well-formed answer within 500 ms.
pub fn query(server: SocketAddr, name: &str, qtype: u16) -> Option<(u8, Vec<Vec<u8>>)> {
    let id: u16 = 0x4d43;
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // no RD; 1 question
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| *l > 0 && *l < 64)?;
        q.push(len);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // IN
    let bind: SocketAddr = if server.is_ipv4() {
        ([127, 0, 0, 1], 0).into()
    } else {
        (std::net::Ipv6Addr::LOCALHOST, 0).into()
    };
    let sock = UdpSocket::bind(bind).ok()?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    sock.send_to(&q, server).ok()?;
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    parse(&buf[..n], id, qtype)
}

/// The IPv4 addresses `name` has on `server` (empty: none, or no answer).
pub fn lookup_a(server: SocketAddr, name: &str) -> Vec<Ipv4Addr> {
    query(server, name, A)
        .map(|(_, rdata)| {
            rdata
                .into_iter()
                .filter_map(|d| <[u8; 4]>::try_from(d.as_slice()).ok().map(Ipv4Addr::from))
                .collect()
        })
        .unwrap_or_default()
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Skips a (possibly compressed) name at `at`; the offset after it.
fn skip_name(b: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *b.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}

fn parse(b: &[u8], id: u16, qtype: u16) -> Option<(u8, Vec<Vec<u8>>)> {
    if u16_at(b, 0)? != id || b.get(2)? & 0x80 == 0 {
        return None;
    }
    let rcode = b.get(3)? & 0x0f;
    let (qd, an) = (u16_at(b, 4)?, u16_at(b, 6)?);
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(b, at)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        at = skip_name(b, at)?;
        let rtype = u16_at(b, at)?;
        let len = usize::from(u16_at(b, at + 8)?);
        let data = b.get(at + 10..at + 10 + len)?;
        if rtype == qtype {
            out.push(data.to_vec());
        }
        at += 10 + len;
    }
    Some((rcode, out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// An answer with a compressed name and two A records, one CNAME
    /// skipped.
    #[test]
    fn parses_answers() {
        let mut b = vec![0x4d, 0x43, 0x84, 0x00, 0, 1, 0, 3, 0, 0, 0, 0];
        b.extend_from_slice(b"\x05hello\x03mcp\x04test\x00\x00\x01\x00\x01");
        for (t, data) in [
            (1u16, &[127u8, 1, 2, 12][..]),
            (5, &[0xc0, 12]),
            (1, &[10, 0, 0, 1]),
        ] {
            b.extend_from_slice(&[0xc0, 12]);
            b.extend_from_slice(&t.to_be_bytes());
            b.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
            b.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
            b.extend_from_slice(data);
        }
        let (rcode, rdata) = parse(&b, 0x4d43, A).unwrap();
        assert_eq!(rcode, 0);
        assert_eq!(rdata, vec![vec![127, 1, 2, 12], vec![10, 0, 0, 1]]);
        assert_eq!(parse(&b, 1, A), None, "another query's answer");
        assert_eq!(parse(&b[..40], 0x4d43, A), None, "truncated");
    }
}
