//! Reading podman's JSON output (`ps`, `inspect`) into the runtime's types.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::*;

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(
    out: &[u8],
    op: &'static str,
    target: &str,
) -> Result<T> {
    serde_json::from_slice(out).map_err(|e| RuntimeError::Parse {
        target: target.to_string(),
        op,
        reason: e.to_string(),
    })
}

#[derive(Deserialize)]
pub(super) struct PsRow {
    #[serde(rename = "Id")]
    pub(super) id: String,
    #[serde(rename = "Names", default)]
    pub(super) names: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct InspectJson {
    id: String,
    name: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    image_name: String,
    state: InspectState,
    #[serde(default)]
    restart_count: u32,
    #[serde(default)]
    config: Option<InspectConfig>,
    #[serde(default)]
    host_config: Option<InspectHostConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct InspectState {
    status: String,
    #[serde(default)]
    exit_code: i32,
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    finished_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct InspectConfig {
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    image: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct InspectHostConfig {
    #[serde(default)]
    port_bindings: Option<BTreeMap<String, Option<Vec<InspectPort>>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct InspectPort {
    #[serde(default)]
    host_ip: String,
    #[serde(default)]
    host_port: String,
}

pub(super) fn parse_inspect(out: &[u8], target: &str) -> Result<Vec<ContainerInfo>> {
    let raw: Vec<InspectJson> = parse_json(out, "inspect", target)?;
    Ok(raw.into_iter().map(info_from_inspect).collect())
}

pub(super) fn info_from_inspect(j: InspectJson) -> ContainerInfo {
    let state: ContainerState = match j.state.status.parse() {
        Ok(s) => s,
        Err(never) => match never {},
    };
    let exit_code = state.has_finished().then_some(j.state.exit_code);
    let (labels, config_image) = match j.config {
        Some(c) => (c.labels.unwrap_or_default(), c.image),
        None => (BTreeMap::new(), None),
    };
    let image = if !j.image_name.is_empty() {
        j.image_name
    } else {
        config_image.unwrap_or_else(|| j.image.clone())
    };
    let mut ports = Vec::new();
    for (key, bindings) in j
        .host_config
        .and_then(|h| h.port_bindings)
        .unwrap_or_default()
    {
        let Some((container_port, protocol)) = parse_port_key(&key) else {
            continue;
        };
        for b in bindings.unwrap_or_default() {
            let host_ip = if b.host_ip.is_empty() {
                IpAddr::from([0, 0, 0, 0])
            } else {
                match b.host_ip.trim_matches(['[', ']']).parse() {
                    Ok(ip) => ip,
                    Err(_) => continue,
                }
            };
            if let Ok(host_port) = b.host_port.parse() {
                ports.push(PortBinding {
                    host_ip,
                    host_port,
                    container_port,
                    protocol,
                });
            }
        }
    }
    ports.sort();
    ContainerInfo {
        name: j.name,
        id: j.id,
        image,
        image_id: j.image,
        state,
        exit_code,
        started_at: j.state.started_at.as_deref().and_then(parse_rfc3339),
        finished_at: j.state.finished_at.as_deref().and_then(parse_rfc3339),
        restart_count: j.restart_count,
        labels,
        ports,
    }
}

/// `8080/tcp` → (8080, Tcp).
pub(super) fn parse_port_key(key: &str) -> Option<(u16, Protocol)> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let protocol = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    Some((port.parse().ok()?, protocol))
}

/// Parses the RFC 3339 timestamps podman prints (`2024-05-01T10:00:00.123Z`,
/// `...+02:00`). Times before 1970 (podman's zero time `0001-01-01...`) are
/// `None`.
pub(super) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut nanos: u32 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let mut n: u32 = 0;
        for (i, d) in frac.bytes().take(digits).enumerate() {
            if i < 9 {
                n = n * 10 + u32::from(d - b'0');
            }
        }
        for _ in digits..9 {
            n *= 10;
        }
        nanos = n;
        rest = &frac[digits..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = rest.get(1..)?.split_once(':')?;
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
pub(super) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One line of `podman events --format json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct EventJson {
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
    #[serde(default, rename = "Type")]
    kind: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

/// A container event of one JSON line; `None` for other event types and
/// unreadable lines (podman's own problems are not the agent's).
pub(super) fn parse_event(line: &[u8]) -> Option<crate::types::ContainerEvent> {
    let e: EventJson = serde_json::from_slice(line).ok()?;
    if e.kind != "container" || e.name.is_empty() {
        return None;
    }
    Some(crate::types::ContainerEvent {
        name: e.name,
        status: e.status,
        labels: e.attributes,
    })
}
