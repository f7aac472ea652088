//! The scheduler file: where a cluster lives, how to trust it and, for a
//! cluster that made its own certificate authority, the right to use it.
//!
//! Written by the scheduler (Dask's `--scheduler-file`) once it is ready; read
//! by workers and clients. JSON, so other tools can read it too. A scheduler
//! started without certificates writes a client credential and a worker
//! credential into it (like Dask's `Security.temporary()`): holding the file
//! is the right to use the cluster, so it is created with mode 0600. A file
//! that carries no private key keeps mode 0644.

use crate::{ProtocolError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Contents of a scheduler file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SchedulerFile {
    /// `quic://HOST:PORT`
    pub address: String,
    /// Full `http://` URL of the dashboard.
    pub dashboard: String,
    /// PEM of the cluster CA: trust exactly the certificates it issued.
    pub tls_ca: String,
    /// A client credential (certificate and key, PEM) issued by the cluster
    /// CA, written by a scheduler that made its own CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    /// A worker credential for workers started with `--scheduler-file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_tls_cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_tls_key: Option<String>,
    /// Host name of the node the scheduler runs on.
    pub head_node: String,
    pub version: String,
    pub pid: u32,
    /// Bearer token the dashboard, its APIs and `/metrics` require, when the
    /// scheduler has one (`Authorization: Bearer TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard_token: Option<String>,
}

impl SchedulerFile {
    /// Read and parse a scheduler file; errors name the file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ProtocolError::File {
            path: path.display().to_string(),
            what: format!("cannot read scheduler file: {e}"),
        })?;
        serde_json::from_str(&text).map_err(|e| ProtocolError::File {
            path: path.display().to_string(),
            what: format!("not a valid scheduler file: {e}"),
        })
    }

    /// Remove the scheduler file at `path` if it is the one the process
    /// `pid` wrote (a newer scheduler's file is left alone); true if removed.
    pub fn remove_own(path: &Path, pid: u32) -> bool {
        match Self::read(path) {
            Ok(file) if file.pid == pid => std::fs::remove_file(path).is_ok(),
            _ => false,
        }
    }

    /// Whether the file carries a secret (a private key or the dashboard's
    /// token), and so must stay private.
    pub fn carries_credentials(&self) -> bool {
        self.tls_key.is_some() || self.worker_tls_key.is_some() || self.dashboard_token.is_some()
    }

    /// Write atomically (temporary name, then rename), so that the file's
    /// existence means it is complete; mode 0600 when it carries a key, from
    /// its first byte on.
    pub fn write(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let text = serde_json::to_string_pretty(self).expect("scheduler file serializes");
        let tmp = path.with_extension("tmp");
        let fail = |e: std::io::Error| ProtocolError::File {
            path: path.display().to_string(),
            what: format!("cannot write scheduler file: {e}"),
        };
        let mode = if self.carries_credentials() {
            0o600
        } else {
            0o644
        };
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(fail)?;
        // The umask may have narrowed a 0644 file; set the mode exactly.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(fail)?;
        file.write_all(text.as_bytes()).map_err(fail)?;
        file.sync_all().map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)
    }
}

/// How a worker or client finds the cluster and proves who it is:
/// `--scheduler-file PATH`, or `--scheduler quic://HOST:PORT` with
/// `--tls-ca`, `--tls-cert` and `--tls-key` files, or the `STRATUS_SCHEDULER`,
/// `STRATUS_TLS_CA`, `STRATUS_TLS_CERT`, `STRATUS_TLS_KEY` environment
/// variables (the caller's argument parser maps those onto the same fields).
/// Files given explicitly win over what a scheduler file carries.
#[derive(Debug, Clone, Default)]
pub struct Locator {
    pub scheduler_file: Option<std::path::PathBuf>,
    pub scheduler: Option<String>,
    pub tls_ca: Option<std::path::PathBuf>,
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
}

/// Where the cluster is, which CA to trust and the credential to present.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: String,
    pub ca_pem: String,
    /// Our certificate and key (PEM).
    pub cert_pem: String,
    pub key_pem: String,
    pub dashboard: Option<String>,
}

/// Which credential of a scheduler file a process takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    Client,
    Worker,
}

fn read_pem(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| ProtocolError::File {
        path: path.display().to_string(),
        what: format!("cannot read the TLS {what}: {e}"),
    })
}

impl Locator {
    /// Resolve for a client; a clear error if anything is missing.
    pub fn resolve(&self) -> Result<Target> {
        self.resolve_as(Holder::Client)
    }

    /// Resolve for `holder`: address, CA and credential.
    pub fn resolve_as(&self, holder: Holder) -> Result<Target> {
        let role = match holder {
            Holder::Client => "client",
            Holder::Worker => "worker",
        };
        let file = match &self.scheduler_file {
            Some(path) => Some((path, SchedulerFile::read(path)?)),
            None => None,
        };
        let address = match (&self.scheduler, &file) {
            (Some(a), _) => a.clone(),
            (None, Some((_, f))) => f.address.clone(),
            (None, None) => {
                return Err(ProtocolError::Address {
                    address: String::new(),
                    what: "no cluster given: pass --scheduler-file PATH, or --scheduler quic://HOST:PORT with --tls-ca, --tls-cert and --tls-key files (or set STRATUS_SCHEDULER_FILE, or STRATUS_SCHEDULER with STRATUS_TLS_CA, STRATUS_TLS_CERT and STRATUS_TLS_KEY)".into(),
                })
            }
        };
        let ca_pem = match (&self.tls_ca, &file) {
            (Some(ca), _) => read_pem(ca, "CA certificate")?,
            (None, Some((_, f))) => f.tls_ca.clone(),
            (None, None) => {
                return Err(ProtocolError::Tls(format!(
                    "--scheduler {address} needs --tls-ca FILE (or STRATUS_TLS_CA): certificates are always verified"
                )))
            }
        };
        let (cert_pem, key_pem) = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => (
                read_pem(cert, "certificate")?,
                read_pem(key, "private key")?,
            ),
            (Some(_), None) | (None, Some(_)) => return Err(ProtocolError::Tls(
                "--tls-cert and --tls-key go together (or STRATUS_TLS_CERT and STRATUS_TLS_KEY)"
                    .into(),
            )),
            (None, None) => {
                let carried = file.as_ref().and_then(|(_, f)| match holder {
                    Holder::Client => f.tls_cert.clone().zip(f.tls_key.clone()),
                    Holder::Worker => f.worker_tls_cert.clone().zip(f.worker_tls_key.clone()),
                });
                match (carried, &file) {
                    (Some(pair), _) => pair,
                    (None, Some((path, _))) => {
                        return Err(ProtocolError::File {
                            path: path.display().to_string(),
                            what: format!("this scheduler file carries no {role} credential (its cluster uses issued certificates): pass --tls-cert and --tls-key, issued with `stratus certs issue DIR --role {role} --name NAME`"),
                        })
                    }
                    (None, None) => {
                        return Err(ProtocolError::Tls(format!(
                            "--scheduler {address} needs --tls-cert and --tls-key (or STRATUS_TLS_CERT and STRATUS_TLS_KEY): a {role} certificate issued by the cluster CA (`stratus certs issue DIR --role {role} --name NAME`)"
                        )))
                    }
                }
            }
        };
        Ok(Target {
            address,
            ca_pem,
            cert_pem,
            key_pem,
            dashboard: file.map(|(_, f)| f.dashboard),
        })
    }
}

#[cfg(feature = "transport")]
impl Target {
    /// The TLS credentials this target resolved to.
    pub fn credentials(&self) -> crate::tls::Credentials {
        crate::tls::Credentials {
            ca_pem: self.ca_pem.clone(),
            identity: crate::tls::CertifiedKeyPem {
                cert_pem: self.cert_pem.clone(),
                key_pem: self.key_pem.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduler_removes_only_the_file_it_wrote() {
        let dir = std::env::temp_dir().join(format!("stratus-sf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("scheduler.json");
        let file = SchedulerFile {
            address: "quic://127.0.0.1:8786".into(),
            dashboard: "http://127.0.0.1:8787/".into(),
            tls_ca: "PEM".into(),
            tls_cert: None,
            tls_key: None,
            worker_tls_cert: None,
            worker_tls_key: None,
            head_node: "head".into(),
            version: "0".into(),
            pid: 4242,
            dashboard_token: None,
        };
        file.write(&path).unwrap();
        assert!(
            !SchedulerFile::remove_own(&path, 4343),
            "a newer scheduler's file"
        );
        assert!(path.exists());
        assert!(SchedulerFile::remove_own(&path, 4242));
        assert!(!path.exists());
        assert!(!SchedulerFile::remove_own(&path, 4242), "already gone");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
