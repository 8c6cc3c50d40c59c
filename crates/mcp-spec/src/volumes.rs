//! Where a volume may come from on the host: the confinement rule.
//!
//! A volume is `host:container[:options]`. By default its host side must be
//! the service's data directory, `/srv/<service>`, or lie under it. Other
//! host paths are allowed only when listed in `allowed_host_paths` (the
//! agent's `[podman]`, the master's `[services]` and the CLI's
//! configuration each have one); an entry allows itself and everything
//! under it, by whole path components (`/var/cache/builder` allows
//! `/var/cache/builder/x`, not `/var/cache/builderx`).
//!
//! Host paths are absolute and compared after lexical normalisation:
//! repeated `/`, `.` components and a trailing `/` are dropped; a `..`
//! component is refused outright (it could only be resolved against the
//! real filesystem). Named volumes (`data:/data`: no leading `/`) are
//! refused: their data lives in podman's storage, where snapshots and
//! migration cannot see it.
//!
//! The rule is lexical. Symbolic links are the agent's business: it refuses
//! a mount whose path below its files root passes through a link.

/// The host directory that holds every service's data directory, as
/// service files name it. The agent maps it onto its files root.
pub const DATA_ROOT: &str = "/srv";

/// The host side of a well-formed volume string (`host:container[:opts]`),
/// and the rest (`:container[:opts]`, the leading `:` included). `None`
/// when there is no `:`.
pub fn split_host(volume: &str) -> Option<(&str, &str)> {
    let i = volume.find(':')?;
    Some((&volume[..i], &volume[i..]))
}

/// The lexical normal form of an absolute path: no empty or `.` components,
/// no trailing `/` (except for `/` itself). `Err` says what is wrong: not
/// absolute, or a `..` component.
pub fn normalize(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err("must be absolute".to_string());
    }
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("must not contain \"..\"".to_string()),
            c => parts.push(c),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// True when the normalised path `path` is `prefix` or lies under it, by
/// whole components (`prefix` normalised too).
pub fn is_under(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The data directory of `service` as service files name it:
/// `/srv/<service>`.
pub fn service_dir(service: &str) -> String {
    format!("{DATA_ROOT}/{service}")
}

/// Checks the host side of one well-formed volume of `service` against the
/// rule (see the module docs), `allowed` being the extra allowed host paths
/// (entries that are not absolute or contain `..` allow nothing). Returns
/// the normalised host path, or the message: it names the volume and the
/// rule.
pub fn check_host_path(service: &str, volume: &str, allowed: &[String]) -> Result<String, String> {
    let host = split_host(volume).map_or(volume, |(h, _)| h);
    let own = service_dir(service);
    if !host.starts_with('/') {
        return Err(format!(
            "volume {volume:?}: named volumes are not allowed (their data lives in podman's \
             storage, out of reach of snapshots and migration); mount a directory under {own}/ \
             instead"
        ));
    }
    let path =
        normalize(host).map_err(|why| format!("volume {volume:?}: host path {host:?} {why}"))?;
    if is_under(&path, &own)
        || allowed
            .iter()
            .filter_map(|a| normalize(a).ok())
            .any(|a| is_under(&path, &a))
    {
        return Ok(path);
    }
    let extra = if allowed.is_empty() {
        "none are allowed".to_string()
    } else {
        let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        format!("allowed: {}", list.join(", "))
    };
    Err(format!(
        "volume {volume:?}: host path {path:?} is outside the service's data directory \
         {own}/; other host paths must be listed in allowed_host_paths ({extra})"
    ))
}

/// Checks a configured `allowed_host_paths` entry: absolute, no `..`.
/// `Err` is the message.
pub fn check_allowed_entry(entry: &str) -> Result<(), String> {
    normalize(entry)
        .map(|_| ())
        .map_err(|why| format!("{entry:?} {why}"))
}

#[cfg(test)]
mod tests;
