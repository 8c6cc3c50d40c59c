//! Image reference syntax: the one check the CLI (`mcp validate`), the
//! master (loading service files) and the agent and its runtime (before
//! podman sees the reference) share, so a reference that validates is one
//! podman can parse.
//!
//! The grammar is the container registries' (`distribution/reference`,
//! which podman's `containers/image` uses):
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path            (at most 255 characters)
//! domain     := host [ ":" port ]              host: DNS name, IPv4, or [IPv6]
//! path       := component { "/" component }
//! component  := [a-z0-9]+ { ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ }
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" hex              (sha256: 64 hex digits, sha512: 128)
//! ```
//!
//! As podman does, the part before the first `/` is the registry when it
//! is a valid domain and the rest is a valid path; otherwise the whole name
//! is the path (`library/postgres`).

/// The longest name (registry and path) a reference may have.
pub const MAX_NAME_LEN: usize = 255;

/// Checks `image` against the reference grammar; `Err` says what is wrong
/// (without repeating the reference).
pub fn check_reference(image: &str) -> Result<(), String> {
    if image.is_empty() {
        return Err("must not be empty".to_string());
    }
    if image.chars().any(char::is_whitespace) {
        return Err("must not contain whitespace".to_string());
    }
    if image.chars().any(|c| c.is_control()) {
        return Err("must not contain control characters".to_string());
    }
    let (rest, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        check_digest(d)?;
    }
    // A tag follows the last ':' that is not part of the registry.
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') && !rest[i..].contains(']') => {
            (&rest[..i], Some(&rest[i + 1..]))
        }
        _ => (rest, None),
    };
    if let Some(t) = tag {
        check_tag(t)?;
    }
    if name.is_empty() {
        return Err("has no repository name".to_string());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "repository name is {} characters long, more than {MAX_NAME_LEN}",
            name.len()
        ));
    }
    let with_registry = name
        .split_once('/')
        .is_some_and(|(domain, path)| is_domain(domain) && is_path(path));
    if with_registry || is_path(name) {
        return Ok(());
    }
    let path = match name.split_once('/') {
        Some((domain, path)) if is_domain(domain) => path,
        _ => name,
    };
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("repository name must be lowercase, found {path:?}"));
    }
    Err(format!(
        "invalid repository name {name:?}: expected [registry[:port]/]path, each path component \
         of a-z and 0-9 joined by '.', '_', '__' or '-', components separated by '/'"
    ))
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    let ok = tag.len() <= 128
        && chars.next().is_some_and(word)
        && chars.all(|c| word(c) || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {tag:?}: expected 1 to 128 of A-Z a-z 0-9 _ . -, not starting with . or -"
        ))
    }
}

/// `algorithm:hex`, the algorithm's components `[A-Za-z][A-Za-z0-9]*`
/// joined by one of `+._-`, at least 32 hex digits (exactly 64 for sha256,
/// 128 for sha512).
fn check_digest(d: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid digest {d:?}: {why}"));
    let Some((alg, hex)) = d.split_once(':') else {
        return bad("expected <algorithm>:<hex>");
    };
    let alg_ok = alg.split(['+', '.', '_', '-']).all(|c| {
        let mut chars = c.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric())
    });
    if !alg_ok {
        return bad("invalid algorithm");
    }
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return bad("the digest must be hexadecimal");
    }
    let want = match alg {
        "sha256" => Some(64),
        "sha512" => Some(128),
        _ => None,
    };
    match want {
        Some(n) if hex.len() != n => {
            bad(&format!("{alg} takes {n} hex digits, found {}", hex.len()))
        }
        None if hex.len() < 32 => bad("at least 32 hex digits"),
        _ => Ok(()),
    }
}

/// `host[:port]`: a DNS name or IPv4 address (components of letters,
/// digits and inner '-', joined by '.'), or `[IPv6]`.
fn is_domain(s: &str) -> bool {
    let (host_ok, port) = if let Some(inner) = s.strip_prefix('[') {
        let Some((v6, after)) = inner.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            },
        };
        (v6.parse::<std::net::Ipv6Addr>().is_ok(), port)
    } else {
        let (host, port) = match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        let component = |c: &str| {
            !c.is_empty()
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
                && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        };
        (host.split('.').all(component), port)
    };
    host_ok && port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// `component { "/" component }`.
fn is_path(s: &str) -> bool {
    s.split('/').all(is_path_component)
}

/// `[a-z0-9]+ { ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ }`.
fn is_path_component(c: &str) -> bool {
    let alnum = |ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit();
    if !c.starts_with(alnum) || !c.ends_with(alnum) {
        return false;
    }
    let mut sep = String::new();
    for ch in c.chars() {
        if alnum(ch) {
            let ok = matches!(sep.as_str(), "" | "." | "_" | "__") || sep.chars().all(|s| s == '-');
            if !ok {
                return false;
            }
            sep.clear();
        } else if matches!(ch, '.' | '_' | '-') {
            sep.push(ch);
        } else {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn references_podman_accepts() {
        let sha = "a".repeat(64);
        for ok in [
            "postgres",
            "postgres:16",
            "library/postgres:16.2-alpine",
            "docker.io/library/postgres:16",
            "registry.example:8443/team/mcq:v1",
            "localhost/mcq:dev",
            "localhost:5000/mcq",
            "127.0.0.1:5000/a/b/c:T_1.x",
            "[fd00::1]:5000/mcq:v1",
            "[fd00::1]/mcq",
            "Registry.Example/mcq",
            "a__b/c.d/e--f_g",
            &format!("mcq@sha256:{sha}"),
            &format!("reg:8443/mcq:v1@sha256:{sha}"),
            &format!("mcq@sha512:{}", "0".repeat(128)),
            &format!("mcq@multihash+base58:{}", "0".repeat(32)),
            &format!("{}:{}", "a".repeat(255), "t".repeat(128)),
        ] {
            assert_eq!(check_reference(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn references_podman_refuses() {
        for (bad, why) in [
            ("", "must not be empty"),
            ("mcq :v1", "whitespace"),
            ("mcq\u{7}", "control characters"),
            ("-mcq", "invalid repository name"),
            ("MCQ", "must be lowercase, found \"MCQ\""),
            (
                "registry.example/Team/mcq",
                "must be lowercase, found \"Team/mcq\"",
            ),
            ("mcq:", "invalid tag \"\""),
            ("mcq:.v1", "invalid tag"),
            ("mcq:v1:v2", "invalid repository name \"mcq:v1\""),
            ("mcq::v1", "invalid repository name \"mcq:\""),
            (":v1", "has no repository name"),
            ("mcq/", "invalid repository name"),
            ("/mcq", "invalid repository name"),
            ("a//b", "invalid repository name"),
            ("a..b", "invalid repository name"),
            ("a___b", "invalid repository name"),
            ("a-.b", "invalid repository name"),
            ("reg:port/mcq", "invalid repository name"),
            ("reg:/mcq", "invalid repository name"),
            ("[fd00::1:5000/mcq", "invalid repository name"),
            ("mcq@sha256:abc", "sha256 takes 64 hex digits, found 3"),
            ("mcq@sha256", "expected <algorithm>:<hex>"),
            (
                "mcq@1sha:0123456789abcdef0123456789abcdef",
                "invalid algorithm",
            ),
            ("mcq@md5:xyz", "hexadecimal"),
            ("mcq@foo:0123", "at least 32 hex digits"),
        ] {
            let e = check_reference(bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let long = "a".repeat(256);
        assert!(check_reference(&long)
            .unwrap_err()
            .contains("more than 255"));
        assert!(check_reference(&format!("mcq:{}", "t".repeat(129))).is_err());
    }
}
