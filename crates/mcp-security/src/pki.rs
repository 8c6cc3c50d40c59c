//! A small certificate authority for fleets without one: `mcp dev`'s
//! loopback fleet and the daemons' tests. Production fleets use the
//! platform CA (docs/ARCHITECTURE.md); this module only issues what a dev fleet needs:
//! a self-signed CA and leaf certificates usable as TLS server and client
//! certificates, with DNS-name and IP-address SANs.
//!
//! Private keys are written with mode 0600 and never printed.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating {what}: {message}")]
    Generate { what: String, message: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn gen_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |e| PkiError::Generate {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// A self-signed CA held in memory.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// Paths of a written certificate and its key.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How long a leaf is valid.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// From now for this many days.
    Days(u32),
    /// Valid only in the first half of 2020: for tests of expiry checks.
    Expired,
}

impl Ca {
    /// Generates a CA named `<name> CA`.
    pub fn generate(name: &str) -> Result<Ca, PkiError> {
        let what = format!("CA {name}");
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err(&what))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(gen_err(&what))?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(gen_err(&what))?;
        Ok(Ca { issuer })
    }

    /// The CA certificate, PEM: what peers put in their CA bundle.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate (not its key) to `path`.
    pub fn write_cert(&self, path: &Path) -> Result<(), PkiError> {
        write_file(path, self.cert_pem().as_bytes(), 0o644)
    }

    /// Writes the CA's private key (PEM, mode 0600) to `path`: for an
    /// issuer that signs with this CA elsewhere (a dev fleet's agents
    /// issue their routes' certificates from it; never in production).
    pub fn write_key(&self, path: &Path) -> Result<(), PkiError> {
        write_file(path, self.issuer.key().serialize_pem().as_bytes(), 0o600)
    }

    /// Issues a leaf for `sans` (DNS names or IP addresses; the first is also
    /// the common name), usable for both server and client authentication.
    /// Returns (certificate PEM, private key PEM).
    pub fn issue(&self, sans: &[&str], validity: Validity) -> Result<(String, String), PkiError> {
        let what = format!("certificate for {}", sans.join(", "));
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map_err(gen_err(&what))?;
        params
            .distinguished_name
            .push(DnType::CommonName, sans.first().copied().unwrap_or("mcp"));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        match validity {
            Validity::Days(days) => {
                let now = time::OffsetDateTime::now_utc();
                params.not_before = now - time::Duration::hours(1);
                params.not_after = now + time::Duration::days(i64::from(days));
            }
            Validity::Expired => {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2020, 6, 1);
            }
        }
        let key = KeyPair::generate().map_err(gen_err(&what))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(gen_err(&what))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Issues a leaf and writes `<dir>/<file>.crt` and `<dir>/<file>.key`
    /// (the key with mode 0600).
    pub fn write_leaf(
        &self,
        dir: &Path,
        file: &str,
        sans: &[&str],
        validity: Validity,
    ) -> Result<CertFiles, PkiError> {
        let (cert_pem, key_pem) = self.issue(sans, validity)?;
        let files = CertFiles {
            cert: dir.join(format!("{file}.crt")),
            key: dir.join(format!("{file}.key")),
        };
        write_file(&files.cert, cert_pem.as_bytes(), 0o644)?;
        write_file(&files.key, key_pem.as_bytes(), 0o600)?;
        Ok(files)
    }
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let werr = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(werr)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(werr)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn issued_leaves_load_as_tls_1_3_configs() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("test").unwrap();
        let ca_path = dir.path().join("ca.pem");
        ca.write_cert(&ca_path).unwrap();
        let leaf = ca
            .write_leaf(
                dir.path(),
                "node",
                &["localhost", "127.0.0.1"],
                Validity::Days(30),
            )
            .unwrap();
        let mode = std::fs::metadata(&leaf.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        crate::tls::server_config(
            &crate::tls::CertKeyPaths {
                cert: leaf.cert.clone(),
                key: leaf.key.clone(),
            },
            &crate::tls::ClientAuth::Optional(ca_path.clone()),
        )
        .unwrap();
        crate::tls::client_config(
            &ca_path,
            Some(&crate::tls::CertKeyPaths {
                cert: leaf.cert,
                key: leaf.key,
            }),
        )
        .unwrap();
    }
}
