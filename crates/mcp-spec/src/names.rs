//! DNS names: labels and domain membership by label match.

/// True when `s` is a DNS label: 1–63 of `[a-z0-9-]`, not starting or ending
/// with `-`. Lowercase only (service and component names are lowercase).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Lowercases and strips one trailing dot.
pub fn normalize_hostname(s: &str) -> String {
    s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase()
}

/// True when `host` equals `domain` or ends in `.` + `domain`, compared by
/// whole labels, case-insensitively, ignoring a trailing dot
/// (`evilexample.net` is not under `example.net`).
pub fn is_under_domain(host: &str, domain: &str) -> bool {
    let host = normalize_hostname(host);
    let domain = normalize_hostname(domain);
    if host.is_empty() || domain.is_empty() {
        return false;
    }
    host == domain
        || host
            .strip_suffix(domain.as_str())
            .is_some_and(|prefix| prefix.ends_with('.') && prefix.len() > 1)
}

/// True when `host` is a syntactically valid hostname: dot-separated labels
/// of letters, digits and `-`, at most 253 characters.
pub fn is_hostname(host: &str) -> bool {
    let h = host.strip_suffix('.').unwrap_or(host);
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "mcq", "web-2", "0day", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok:?}");
        }
        for bad in ["", "-a", "a-", "MCQ", "a_b", "a.b", "é", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad:?}");
        }
    }

    #[test]
    fn hostnames() {
        for ok in [
            "example.net",
            "mcq.example.net.",
            "MCQ.Example.NET",
            "localhost",
        ] {
            assert!(is_hostname(ok), "{ok:?}");
        }
        let long = vec!["a".repeat(63); 4].join(".");
        for bad in [
            "",
            ".",
            "a..b",
            "-a.net",
            "a-.net",
            "a_b.net",
            "a b.net",
            long.as_str(),
        ] {
            assert!(!is_hostname(bad), "{bad:?}");
        }
    }

    #[test]
    fn domain_membership_is_by_whole_labels() {
        let cases = [
            ("mcq.example.net", "example.net", true),
            ("example.net", "example.net", true),
            ("a.b.example.net", "example.net", true),
            ("evilexample.net", "example.net", false),
            ("example.net.evil.org", "example.net", false),
            ("net", "example.net", false),
            (".example.net", "example.net", false),
            ("mcq.example.net.", "example.net", true),
            ("mcq.example.net", "example.net.", true),
            ("MCQ.Example.NET", "example.net", true),
            ("mcq.example.net", "EXAMPLE.net", true),
            ("", "example.net", false),
            ("mcq.example.net", "", false),
        ];
        for (host, domain, want) in cases {
            assert_eq!(
                is_under_domain(host, domain),
                want,
                "{host:?} under {domain:?}"
            );
        }
    }

    #[test]
    fn normalize() {
        assert_eq!(normalize_hostname("MCQ.Example.NET."), "mcq.example.net");
        assert_eq!(normalize_hostname("mcq.example.net"), "mcq.example.net");
    }
}
