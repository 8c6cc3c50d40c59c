//! `mcp node add|remove|list`: the CLI config's `[[nodes]]` (agents reachable
//! with `--direct`). Edits keep the file's comments and layout (toml_edit).

use std::path::Path;

use anyhow::{bail, Context, Result};
use toml_edit::{value, ArrayOfTables, DocumentMut, Item, Table};

use crate::config::Config;

fn read_doc(path: &Path) -> Result<DocumentMut> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .parse::<DocumentMut>()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DocumentMut::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_doc(path: &Path, doc: &DocumentMut) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, doc.to_string()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

fn nodes_mut<'a>(doc: &'a mut DocumentMut, path: &Path) -> Result<&'a mut ArrayOfTables> {
    let item = doc
        .entry("nodes")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
    item.as_array_of_tables_mut().with_context(|| {
        format!(
            "{}: `nodes` must be an array of tables ([[nodes]])",
            path.display()
        )
    })
}

pub fn add(path: &Path, name: &str, address: &str) -> Result<()> {
    if !mcp_spec::names::is_dns_label(name) {
        bail!("node name {name:?} must be a DNS label (lowercase letters, digits, '-')");
    }
    let mut doc = read_doc(path)?;
    let nodes = nodes_mut(&mut doc, path)?;
    if nodes
        .iter()
        .any(|t| t.get("name").and_then(Item::as_str) == Some(name))
    {
        bail!("node {name} is already in {}", path.display());
    }
    let mut t = Table::new();
    t.insert("name", value(name));
    t.insert("address", value(address));
    nodes.push(t);
    write_doc(path, &doc)
}

pub fn remove(path: &Path, name: &str) -> Result<()> {
    let mut doc = read_doc(path)?;
    let nodes = nodes_mut(&mut doc, path)?;
    let before = nodes.len();
    nodes.retain(|t| t.get("name").and_then(Item::as_str) != Some(name));
    if nodes.len() == before {
        bail!("node {name} is not in {}", path.display());
    }
    write_doc(path, &doc)
}

pub fn list(cfg: &Config, json: bool) -> Result<()> {
    if json {
        let nodes: Vec<_> = cfg
            .nodes
            .iter()
            .map(|n| serde_json::json!({"name": n.name, "address": n.address}))
            .collect();
        let v = serde_json::json!({
            "master": cfg.master.as_ref().map(|m| &m.address),
            "nodes": nodes,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match &cfg.master {
        Some(m) => println!("master: {}", m.address),
        None => println!("master: (not configured)"),
    }
    if cfg.nodes.is_empty() {
        println!("no nodes in the CLI config (add one with `mcp node add NAME ADDRESS`)");
    }
    let width = cfg
        .nodes
        .iter()
        .map(|n| n.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    if !cfg.nodes.is_empty() {
        println!("{:width$}  ADDRESS", "NODE");
    }
    for n in &cfg.nodes {
        println!("{:width$}  {}", n.name, n.address);
    }
    Ok(())
}
