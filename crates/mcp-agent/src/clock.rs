//! Time as the agent stores it: whole unix seconds (UTC).
//!
//! The registry stores every time as an `INTEGER` of unix seconds: it sorts
//! and compares in SQL without parsing, cannot carry a time zone by mistake,
//! and second resolution is all monitoring and auditing need. RFC 3339 is
//! only a rendering ([`Timestamp::to_rfc3339`]) for people and file names.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, in whole seconds since the unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix(secs: i64) -> Timestamp {
        Timestamp(secs)
    }

    pub const fn as_unix(self) -> i64 {
        self.0
    }

    /// The current wall-clock time (before 1970 reads as the epoch).
    pub fn now() -> Timestamp {
        Timestamp::from_system(SystemTime::now())
    }

    pub fn from_system(t: SystemTime) -> Timestamp {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(secs)
    }

    pub fn to_system(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(self.0).unwrap_or(0))
    }

    /// `self - d`, saturating.
    pub fn minus(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        )
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        )
    }

    /// `2024-05-01T12:00:00Z`.
    pub fn to_rfc3339(self) -> String {
        humantime::format_rfc3339_seconds(self.to_system()).to_string()
    }

    /// `20240501T120000Z`: RFC 3339 basic format, safe in file names and
    /// sorting chronologically as a string.
    pub fn to_compact(self) -> String {
        self.to_rfc3339().replace(['-', ':'], "")
    }

    /// Parses [`Timestamp::to_compact`] output.
    pub fn parse_compact(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
            return None;
        }
        let rfc = format!(
            "{}-{}-{}T{}:{}:{}Z",
            s.get(0..4)?,
            s.get(4..6)?,
            s.get(6..8)?,
            s.get(9..11)?,
            s.get(11..13)?,
            s.get(13..15)?
        );
        humantime::parse_rfc3339(&rfc)
            .ok()
            .map(Timestamp::from_system)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renderings() {
        let t = Timestamp::from_unix(1_714_564_800);
        assert_eq!(t.to_rfc3339(), "2024-05-01T12:00:00Z");
        assert_eq!(t.to_compact(), "20240501T120000Z");
        assert_eq!(Timestamp::parse_compact("20240501T120000Z"), Some(t));
        assert_eq!(Timestamp::parse_compact("20240501T120000"), None);
        assert_eq!(Timestamp::parse_compact("2024-05-01T12:00:00Z"), None);
        assert_eq!(t.minus(Duration::from_secs(60)).as_unix(), 1_714_564_740);
        assert_eq!(t.plus(Duration::from_secs(60)).as_unix(), 1_714_564_860);
    }
}
