//! Loading and validating service files.
//!
//! A file is parsed with `toml_edit` (which keeps source spans) and walked by
//! hand, so that every problem in it is reported at once, each at the line
//! and column of the offending key or value:
//!
//! ```text
//! services/mcq.toml:7:8: mode must be "l4" or "l7", found "l5"
//! ```
//!
//! The walk checks the shape of the file (known keys, value types, required
//! keys, enumerated values) and builds a [`ServiceSpec`]; the semantic rules
//! are then checked by [`crate::validate::validate`], the same function the
//! protocol conversion uses, and each violation's field path is mapped back
//! to its place in the file.
//!
//! Defaults applied by the loader: `tier = "worker"`, `active = true`,
//! route `mode = "l7"`, route `public = false`, health `timeout` and
//! `interval` from [`HealthCheck::DEFAULT_TIMEOUT`] and
//! [`HealthCheck::DEFAULT_INTERVAL`]. An empty `node`, `network`, `user` or
//! `restart` is the same as leaving the key out.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml_edit::{Document, Item, TableLike, Value};

use crate::model::{
    ComponentSpec, HealthCheck, HealthKind, RouteMode, RouteSpec, ServiceSpec, SnapshotConfig,
    SnapshotMethod, Tier,
};
use crate::validate::{self, index, join};

/// Settings the loader needs beyond the file itself.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Domains public route hostnames must fall under (label match). Empty:
    /// not checked here (the master checks against its own config).
    pub allowed_public_domains: Vec<String>,
    /// Host paths a volume may mount besides the service's own
    /// `/srv/<service>/` (see [`crate::volumes`]). Empty: only that.
    pub allowed_host_paths: Vec<String>,
    /// True: the host side of volumes is checked for its form only, not
    /// confined. For the protocol conversion: each agent confines volumes
    /// with its own `[podman] allowed_host_paths`.
    pub unconfined_volumes: bool,
}

impl LoadOptions {
    /// The options of the protocol conversion: no domain list, volumes not
    /// confined (the receiver checks them against its own configuration).
    pub fn wire() -> LoadOptions {
        LoadOptions {
            unconfined_volumes: true,
            ..LoadOptions::default()
        }
    }
}

/// One problem in one file, with its position (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// The display path given to the loader (e.g. `services/mcq.toml`).
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Lowercase, no final period: what was expected and what was found.
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// A service file that could not be turned into a spec. Its service is held:
/// never deployed, changed or pruned because of this file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    /// The file stem: the service the file is meant to define.
    pub name: String,
    pub file: PathBuf,
    pub errors: Vec<Diagnostic>,
}

/// The result of loading a services directory.
#[derive(Debug, Clone, Default)]
pub struct LoadedDir {
    /// Valid services by name (= file stem).
    pub services: BTreeMap<String, ServiceSpec>,
    /// Files with at least one problem, sorted by file name.
    pub unreadable: Vec<Unreadable>,
}

const SERVICE_KEYS: &[&str] = &[
    "name",
    "tier",
    "node",
    "active",
    "rollback",
    "snapshot",
    "components",
];
const SNAPSHOT_KEYS: &[&str] = &["method", "exclude"];
const COMPONENT_KEYS: &[&str] = &[
    "name", "image", "volumes", "cmd", "env", "network", "user", "restart", "routes", "health",
];
const ROUTE_KEYS: &[&str] = &["name", "port", "mode", "hostname", "public"];
const HEALTH_KEYS: &[&str] = &["kind", "route", "path", "status", "timeout", "interval"];

/// Parses and validates the text of one service file.
///
/// `display_path` prefixes every diagnostic (e.g. `services/mcq.toml`);
/// `stem` is the file name without `.toml`, which `name` must equal. On
/// failure, every problem found in the file is returned, sorted by position.
pub fn parse_service(
    display_path: &str,
    stem: &str,
    text: &str,
    opts: &LoadOptions,
) -> Result<ServiceSpec, Vec<Diagnostic>> {
    let doc = match Document::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let (line, column) = line_col(text, e.span().map_or(0, |s| s.start));
            return Err(vec![Diagnostic {
                file: display_path.to_string(),
                line,
                column,
                message: syntax_message(e.message()),
            }]);
        }
    };
    let mut w = Walker::default();
    let spec = w.service(doc.as_table(), stem);
    for v in validate::validate(&spec, opts) {
        if w.is_bad(&v.path) {
            continue;
        }
        let span = w.lookup(&v.path);
        let message = match &v.first {
            Some(first) => {
                let (line, _) = line_col(text, w.lookup(first).map_or(0, |s| s.start));
                format!("{} (first defined on line {line})", v.message)
            }
            None => v.message.clone(),
        };
        w.errors.push((span, message));
    }
    if w.errors.is_empty() {
        return Ok(spec);
    }
    let mut diags: Vec<Diagnostic> = w
        .errors
        .into_iter()
        .map(|(span, message)| {
            let (line, column) = line_col(text, span.map_or(0, |s| s.start));
            Diagnostic {
                file: display_path.to_string(),
                line,
                column,
                message,
            }
        })
        .collect();
    diags.sort_by_key(|d| (d.line, d.column));
    Err(diags)
}

/// Loads every `*.toml` file of `dir`, in file-name order. Other files,
/// subdirectories and hidden files (names starting with `.`, e.g. editor
/// lock files) are ignored.
///
/// A bad file never prevents loading the others: it goes to
/// [`LoadedDir::unreadable`] with all its diagnostics (a file that cannot be
/// read, is larger than [`crate::MAX_SERVICE_FILE_BYTES`] or is not UTF-8 gets one
/// diagnostic at 1:1). The only error is a
/// directory that cannot be listed.
pub fn load_dir(dir: &Path, opts: &LoadOptions) -> std::io::Result<LoadedDir> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.starts_with('.') || !name.ends_with(".toml") {
            continue;
        }
        // Follows symlinks: a link to a file counts as a file.
        if std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        names.push(name);
    }
    names.sort();

    let mut out = LoadedDir::default();
    for name in names {
        let stem = name.strip_suffix(".toml").unwrap_or(&name).to_string();
        let path = dir.join(&name);
        let display = path.display().to_string();
        let result = match crate::filesize::read_service_bytes(&path) {
            Err(e) => Err(vec![whole_file(&display, e)]),
            Ok(bytes) => match String::from_utf8(bytes) {
                Err(e) => Err(vec![whole_file(
                    &display,
                    format!(
                        "file must be utf-8, found an invalid byte at offset {}",
                        e.utf8_error().valid_up_to()
                    ),
                )]),
                Ok(text) => parse_service(&display, &stem, &text, opts),
            },
        };
        match result {
            Ok(spec) => {
                out.services.insert(stem, spec);
            }
            Err(errors) => out.unreadable.push(Unreadable {
                name: stem,
                file: path,
                errors,
            }),
        }
    }
    Ok(out)
}

fn whole_file(display: &str, message: String) -> Diagnostic {
    Diagnostic {
        file: display.to_string(),
        line: 1,
        column: 1,
        message,
    }
}

fn syntax_message(raw: &str) -> String {
    let msg = raw.trim().trim_end_matches('.');
    let mut chars = msg.chars();
    let first = chars.next().map(|c| c.to_lowercase().collect::<String>());
    format!(
        "invalid toml: {}{}",
        first.unwrap_or_default(),
        chars.as_str()
    )
}

/// 1-based line and column (in characters) of byte offset `pos`.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let mut pos = pos.min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The TOML type name as the messages say it.
fn type_name(item: &Item) -> &'static str {
    match item {
        Item::Value(Value::InlineTable(_)) | Item::Table(_) => "table",
        other => other.type_name(),
    }
}

/// Walks a parsed document, building the spec and collecting shape errors.
/// Where a value is missing or malformed, a placeholder goes into the spec
/// and its path is marked bad, so the semantic rules do not report it again.
#[derive(Default)]
struct Walker {
    /// Field path → span of its value (or table header).
    spans: HashMap<String, Range<usize>>,
    /// Field path → span of its key.
    key_spans: HashMap<String, Range<usize>>,
    errors: Vec<(Option<Range<usize>>, String)>,
    bad: Vec<String>,
}

impl Walker {
    fn error(&mut self, span: Option<Range<usize>>, path: &str, message: String) {
        self.errors.push((span, message));
        self.bad.push(path.to_string());
    }

    /// True when `path` or one of its parents had a shape error.
    fn is_bad(&self, path: &str) -> bool {
        self.bad.iter().any(|b| validate::path_within(path, b))
    }

    /// The span for a field path: its value, else its key, else the nearest
    /// parent that has one.
    fn lookup(&self, path: &str) -> Option<Range<usize>> {
        let mut p = path;
        loop {
            if let Some(s) = self.spans.get(p).or_else(|| self.key_spans.get(p)) {
                return Some(s.clone());
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    /// Reports keys of `t` not in `allowed`.
    fn check_keys(&mut self, t: &dyn TableLike, path: &str, section: &str, allowed: &[&str]) {
        for (k, item) in t.iter() {
            if allowed.contains(&k) {
                continue;
            }
            let span = t.key(k).and_then(|key| key.span()).or_else(|| item.span());
            let mut msg = format!("unknown key {k:?}");
            if !section.is_empty() {
                msg.push_str(&format!(" in {section}"));
            }
            if let Some(hint) = did_you_mean(k, allowed) {
                msg.push_str(&format!(" (did you mean {hint:?}?)"));
            }
            self.error(span, &join(path, k), msg);
        }
    }

    /// The item at `key`, recording its spans.
    fn get<'t>(&mut self, t: &'t dyn TableLike, path: &str, key: &str) -> Option<&'t Item> {
        let (k, item) = t.get_key_value(key)?;
        if item.is_none() {
            return None;
        }
        let p = join(path, key);
        if let Some(s) = k.span() {
            self.key_spans.insert(p.clone(), s);
        }
        if let Some(s) = item.span() {
            self.spans.insert(p, s);
        }
        Some(item)
    }

    fn wrong_type(&mut self, item: &Item, path: &str, key: &str, expected: &str) {
        let found = type_name(item);
        self.error(
            item.span(),
            &join(path, key),
            format!("{key} must be {expected}, found {found}"),
        );
    }

    fn missing(&mut self, at: Option<Range<usize>>, path: &str, key: &str, section: &str) {
        let msg = if section.is_empty() {
            format!("missing required key {key:?}")
        } else {
            format!("missing required key {key:?} in {section}")
        };
        self.error(at, &join(path, key), msg);
    }

    fn string(&mut self, t: &dyn TableLike, path: &str, key: &str) -> Option<String> {
        let item = self.get(t, path, key)?;
        match item.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.wrong_type(item, path, key, "a string");
                None
            }
        }
    }

    /// A string where `""` means "not set".
    fn opt_string(&mut self, t: &dyn TableLike, path: &str, key: &str) -> Option<String> {
        self.string(t, path, key).filter(|s| !s.is_empty())
    }

    fn boolean(&mut self, t: &dyn TableLike, path: &str, key: &str) -> Option<bool> {
        let item = self.get(t, path, key)?;
        match item.as_bool() {
            Some(b) => Some(b),
            None => {
                self.wrong_type(item, path, key, "a boolean");
                None
            }
        }
    }

    fn integer(&mut self, t: &dyn TableLike, path: &str, key: &str) -> Option<i64> {
        let item = self.get(t, path, key)?;
        match item.as_integer() {
            Some(n) => Some(n),
            None => {
                self.wrong_type(item, path, key, "an integer");
                None
            }
        }
    }

    fn string_array(&mut self, t: &dyn TableLike, path: &str, key: &str) -> Vec<String> {
        let Some(item) = self.get(t, path, key) else {
            return Vec::new();
        };
        let Some(arr) = item.as_array() else {
            self.wrong_type(item, path, key, "an array of strings");
            return Vec::new();
        };
        let p = join(path, key);
        let mut out = Vec::new();
        for (i, v) in arr.iter().enumerate() {
            let vp = index(&p, i);
            if let Some(s) = v.span() {
                self.spans.insert(vp.clone(), s);
            }
            match v.as_str() {
                Some(s) => out.push(s.to_string()),
                None => {
                    // Keep indexes aligned with the file; the path is bad.
                    out.push(String::new());
                    let found = v.type_name();
                    let found = if found == "inline table" {
                        "table"
                    } else {
                        found
                    };
                    self.error(
                        v.span(),
                        &vp,
                        format!(
                            "{key} must be an array of strings, found {found} at position {}",
                            i + 1
                        ),
                    );
                }
            }
        }
        out
    }

    /// A sub-table (`[x]` or inline `{..}`) with the span of its header.
    fn table<'t>(
        &mut self,
        t: &'t dyn TableLike,
        path: &str,
        key: &str,
    ) -> Option<(&'t dyn TableLike, Option<Range<usize>>)> {
        let item = self.get(t, path, key)?;
        match item.as_table_like() {
            Some(sub) => Some((sub, item.span())),
            None => {
                self.wrong_type(item, path, key, "a table");
                None
            }
        }
    }

    /// An array of tables (`[[x]]` or an inline array of `{..}`), each with
    /// the span of its header. Elements that are not tables are reported and
    /// skipped.
    fn tables<'t>(
        &mut self,
        t: &'t dyn TableLike,
        path: &str,
        key: &str,
    ) -> Vec<(&'t dyn TableLike, Option<Range<usize>>)> {
        let Some(item) = self.get(t, path, key) else {
            return Vec::new();
        };
        match item {
            Item::ArrayOfTables(aot) => aot
                .iter()
                .map(|tb| (tb as &dyn TableLike, tb.span()))
                .collect(),
            Item::Value(Value::Array(arr)) => {
                let mut out = Vec::new();
                for (i, v) in arr.iter().enumerate() {
                    match v.as_inline_table() {
                        Some(it) => out.push((it as &dyn TableLike, v.span())),
                        None => {
                            let found = v.type_name();
                            self.errors.push((
                                v.span(),
                                format!("{key} must be an array of tables, found {found} at position {}", i + 1),
                            ));
                        }
                    }
                }
                out
            }
            other => {
                let found = type_name(other);
                self.error(
                    other.span(),
                    &join(path, key),
                    format!(
                        "{key} must be an array of tables ([[{}]]), found {found}",
                        join(&path_section(path), key)
                    ),
                );
                Vec::new()
            }
        }
    }

    fn service(&mut self, top: &dyn TableLike, stem: &str) -> ServiceSpec {
        self.check_keys(top, "", "", SERVICE_KEYS);
        let name = match self.string(top, "", "name") {
            Some(n) => {
                if n != stem {
                    // Not a shape error: the DNS-label rule still applies.
                    let span = self.spans.get("name").cloned();
                    self.errors.push((
                        span,
                        format!("name {n:?} does not match file name \"{stem}.toml\""),
                    ));
                }
                n
            }
            None => {
                if top.get("name").is_none() {
                    self.missing(Some(0..0), "", "name", "");
                }
                String::new()
            }
        };
        let tier = match self.string(top, "", "tier") {
            None => Tier::default(),
            Some(s) => match validate::parse_tier(&s) {
                Ok(t) => t,
                Err(msg) => {
                    let span = self.spans.get("tier").cloned();
                    self.error(span, "tier", msg);
                    Tier::default()
                }
            },
        };
        let node = self.opt_string(top, "", "node");
        let active = self.boolean(top, "", "active").unwrap_or(true);
        let rollback = self.boolean(top, "", "rollback").unwrap_or(true);
        let snapshot = self
            .table(top, "", "snapshot")
            .map(|(t, _)| self.snapshot(t, "snapshot"));
        let components = self
            .tables(top, "", "components")
            .into_iter()
            .enumerate()
            .map(|(i, (t, span))| self.component(t, &index("components", i), span))
            .collect();
        ServiceSpec {
            name,
            tier,
            node,
            active,
            rollback,
            snapshot,
            components,
        }
    }

    fn snapshot(&mut self, t: &dyn TableLike, path: &str) -> SnapshotConfig {
        self.check_keys(t, path, "[snapshot]", SNAPSHOT_KEYS);
        let method = match self.string(t, path, "method") {
            None => SnapshotMethod::Default,
            Some(s) => match validate::parse_snapshot_method(&s) {
                Ok(m) => m,
                Err(msg) => {
                    let p = join(path, "method");
                    let span = self.spans.get(&p).cloned();
                    self.error(span, &p, msg);
                    SnapshotMethod::Default
                }
            },
        };
        let exclude = self.string_array(t, path, "exclude");
        SnapshotConfig { method, exclude }
    }

    fn component(
        &mut self,
        t: &dyn TableLike,
        path: &str,
        header: Option<Range<usize>>,
    ) -> ComponentSpec {
        const SECTION: &str = "[[components]]";
        if let Some(s) = &header {
            self.spans.insert(path.to_string(), s.clone());
        }
        self.check_keys(t, path, SECTION, COMPONENT_KEYS);
        let name = self.required_string(t, path, "name", SECTION, header.clone());
        let image = self.required_string(t, path, "image", SECTION, header.clone());
        let volumes = self.string_array(t, path, "volumes");
        let cmd = self.string_array(t, path, "cmd");
        let env = self.string_array(t, path, "env");
        let network = self.opt_string(t, path, "network");
        let user = self.opt_string(t, path, "user");
        let restart = self.opt_string(t, path, "restart");
        let routes_path = join(path, "routes");
        let routes = self
            .tables(t, path, "routes")
            .into_iter()
            .enumerate()
            .map(|(i, (rt, span))| self.route(rt, &index(&routes_path, i), span))
            .collect();
        let health_path = join(path, "health");
        let health = self
            .table(t, path, "health")
            .map(|(ht, span)| self.health(ht, &health_path, span));
        ComponentSpec {
            name,
            image,
            volumes,
            cmd,
            env,
            network,
            user,
            restart,
            routes,
            health,
        }
    }

    fn required_string(
        &mut self,
        t: &dyn TableLike,
        path: &str,
        key: &str,
        section: &str,
        header: Option<Range<usize>>,
    ) -> String {
        match self.string(t, path, key) {
            Some(s) => s,
            None => {
                if t.get(key).is_none() {
                    self.missing(header, path, key, section);
                }
                String::new()
            }
        }
    }

    fn route(&mut self, t: &dyn TableLike, path: &str, header: Option<Range<usize>>) -> RouteSpec {
        const SECTION: &str = "[[components.routes]]";
        if let Some(s) = &header {
            self.spans.insert(path.to_string(), s.clone());
        }
        self.check_keys(t, path, SECTION, ROUTE_KEYS);
        let name = self.string(t, path, "name");
        let port_path = join(path, "port");
        let port = match self.integer(t, path, "port") {
            Some(n) => match validate::parse_port(n) {
                Ok(p) => p,
                Err(msg) => {
                    let span = self.spans.get(&port_path).cloned();
                    self.error(span, &port_path, msg);
                    0
                }
            },
            None => {
                if t.get("port").is_none() {
                    self.missing(header, path, "port", SECTION);
                }
                0
            }
        };
        let mode = match self.string(t, path, "mode") {
            None => RouteMode::L7,
            Some(s) => match validate::parse_route_mode(&s) {
                Ok(m) => m,
                Err(msg) => {
                    let p = join(path, "mode");
                    let span = self.spans.get(&p).cloned();
                    self.error(span, &p, msg);
                    RouteMode::L7
                }
            },
        };
        let hostname = self.string(t, path, "hostname");
        let public = self.boolean(t, path, "public");
        if public.is_none() && t.get("public").is_some() {
            // Malformed `public`: do not also report a missing hostname.
            self.bad.push(join(path, "public"));
        }
        RouteSpec {
            name,
            port,
            mode,
            hostname,
            public: public.unwrap_or(false),
        }
    }

    fn health(
        &mut self,
        t: &dyn TableLike,
        path: &str,
        header: Option<Range<usize>>,
    ) -> HealthCheck {
        const SECTION: &str = "[components.health]";
        self.check_keys(t, path, SECTION, HEALTH_KEYS);
        let kind_path = join(path, "kind");
        let kind = match self.string(t, path, "kind") {
            Some(s) => match validate::parse_health_kind(&s) {
                Ok(k) => k,
                Err(msg) => {
                    let span = self.spans.get(&kind_path).cloned();
                    self.error(span, &kind_path, msg);
                    // A placeholder; the path rule below must not fire on it.
                    self.bad.push(join(path, "path"));
                    HealthKind::Http
                }
            },
            None => {
                if t.get("kind").is_none() {
                    self.missing(header, path, "kind", SECTION);
                }
                self.bad.push(join(path, "path"));
                HealthKind::Http
            }
        };
        let route = self.string(t, path, "route");
        let hpath = self.string(t, path, "path");
        let status_path = join(path, "status");
        let status = self
            .integer(t, path, "status")
            .and_then(|n| match u16::try_from(n) {
                Ok(s) if (100..=599).contains(&s) => Some(s),
                _ => {
                    let span = self.spans.get(&status_path).cloned();
                    self.error(
                        span,
                        &status_path,
                        format!("status must be an HTTP status code (100-599), found {n}"),
                    );
                    None
                }
            });
        let timeout = self.duration(t, path, "timeout", HealthCheck::DEFAULT_TIMEOUT);
        let interval = self.duration(t, path, "interval", HealthCheck::DEFAULT_INTERVAL);
        HealthCheck {
            kind,
            route,
            path: hpath,
            timeout,
            interval,
            status,
        }
    }

    fn duration(
        &mut self,
        t: &dyn TableLike,
        path: &str,
        key: &str,
        default: Duration,
    ) -> Duration {
        let Some(item) = self.get(t, path, key) else {
            return default;
        };
        let p = join(path, key);
        match item.as_str() {
            Some(s) => match validate::parse_duration(key, s) {
                Ok(d) => d,
                Err(msg) => {
                    self.error(item.span(), &p, msg);
                    default
                }
            },
            None => {
                self.wrong_type(item, path, key, "a duration string like \"5s\"");
                default
            }
        }
    }
}

/// `components[0].routes` → `components.routes` (for `[[...]]` headers).
fn path_section(path: &str) -> String {
    path.split('.')
        .map(|seg| seg.split('[').next().unwrap_or(seg))
        .collect::<Vec<_>>()
        .join(".")
}

fn did_you_mean<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (strsim::damerau_levenshtein(key, a), *a))
        .filter(|(d, a)| *d <= 2 && *d < a.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}
