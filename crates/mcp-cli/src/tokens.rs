//! `mcp token keygen|issue`: an Ed25519 key pair and signed tokens, so a fleet
//! can run without an external identity service. Secrets never reach a
//! terminal or a log: keys go to files (0600), and a token is printed only to
//! a pipe or a file.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mcp_security::clock::SystemClock;
use mcp_security::identity::AccountType;
use mcp_security::jwt::{self, IssueOptions, SigningKey, TokenRequest};

pub fn keygen(out: &Path) -> Result<()> {
    let kp = jwt::generate_keypair().context("generating an Ed25519 key pair")?;
    let public = public_path(out);
    jwt::write_keypair(&kp, out, &public)?;
    eprintln!(
        "wrote private key {} (mode 0600) and public key {}",
        out.display(),
        public.display()
    );
    Ok(())
}

/// `<key>.pub`, next to the private key.
fn public_path(private: &Path) -> PathBuf {
    let mut s = private.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

pub struct IssueArgs<'a> {
    pub identity: &'a str,
    pub account_type: &'a str,
    pub roles: &'a [String],
    pub ttl: &'a str,
    pub key: &'a Path,
    pub issuer: &'a str,
    pub audience: &'a str,
    pub out: Option<&'a Path>,
    pub bind_cert: Option<&'a Path>,
    pub max_lifetime: &'a str,
}

pub fn issue(a: &IssueArgs<'_>) -> Result<()> {
    let account_type: AccountType = a
        .account_type
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--type: {e}"))?;
    let ttl = humantime::parse_duration(a.ttl).with_context(|| {
        format!(
            "--ttl {:?}: expected a duration like \"12h\" or \"30d\"",
            a.ttl
        )
    })?;
    if ttl.is_zero() {
        bail!("--ttl must be longer than zero");
    }
    let max = humantime::parse_duration(a.max_lifetime).with_context(|| {
        format!(
            "--max-lifetime {:?}: expected a duration like \"90d\"",
            a.max_lifetime
        )
    })?;
    if ttl > max {
        bail!(
            "--ttl {} is longer than the maximum token lifetime {} (--max-lifetime): \
             the daemons refuse such tokens ([auth] max_token_lifetime, default 90d)",
            a.ttl,
            a.max_lifetime
        );
    }
    let cert_thumbprint = match a.bind_cert {
        Some(path) => Some(
            jwt::cert_thumbprint_from_pem_file(path)
                .with_context(|| format!("--bind-cert {}", path.display()))?,
        ),
        None => None,
    };
    let key = SigningKey::from_file(a.key)?;
    let req = TokenRequest {
        identity: a.identity.to_string(),
        account_type,
        roles: a.roles.to_vec(),
        ttl,
        issuer: a.issuer.to_string(),
        audience: a.audience.to_string(),
    };
    let opts = IssueOptions {
        cert_thumbprint,
        max_lifetime: Some(max),
    };
    let token = jwt::issue_token_with(&key, &req, &opts, &SystemClock)?;
    match a.out {
        Some(path) => {
            write_secret(path, token.expose())?;
            eprintln!("wrote a token for {} to {}", a.identity, path.display());
        }
        None if std::io::stdout().is_terminal() => bail!(
            "refusing to print a token to a terminal: use --out FILE or redirect standard output"
        ),
        None => println!("{}", token.expose()),
    }
    Ok(())
}

/// Writes a secret with mode 0600, replacing the file atomically.
fn write_secret(path: &Path, secret: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = {
        let mut s = path.as_os_str().to_owned();
        s.push(".tmp");
        PathBuf::from(s)
    };
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    writeln!(f, "{secret}")
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}
