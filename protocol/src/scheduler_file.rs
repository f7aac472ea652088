//! The scheduler file: where a cluster lives and how to trust it.
//!
//! Written by the scheduler (Dask's `--scheduler-file`) once it is ready; read
//! by workers and clients. JSON, so other tools can read it too.

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
    /// PEM of the certificate the scheduler presents; trust exactly this.
    pub tls_ca: String,
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

    /// Write atomically (temporary name, then rename), so that the file's
    /// existence means it is complete.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("scheduler file serializes");
        let tmp = path.with_extension("tmp");
        let fail = |e: std::io::Error| ProtocolError::File {
            path: path.display().to_string(),
            what: format!("cannot write scheduler file: {e}"),
        };
        std::fs::write(&tmp, text).map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)
    }
}

/// How a worker or client finds the cluster: `--scheduler-file PATH`, or
/// `--scheduler quic://HOST:PORT` with `--tls-ca FILE`, or the
/// `STRATUS_SCHEDULER` / `STRATUS_TLS_CA` environment variables (the caller's
/// argument parser maps those onto the same fields).
#[derive(Debug, Clone, Default)]
pub struct Locator {
    pub scheduler_file: Option<std::path::PathBuf>,
    pub scheduler: Option<String>,
    pub tls_ca: Option<std::path::PathBuf>,
}

/// Where the cluster is and which certificate to trust.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: String,
    pub ca_pem: String,
    pub dashboard: Option<String>,
}

impl Locator {
    /// Resolve to an address and a trusted certificate; a clear error if
    /// anything is missing.
    pub fn resolve(&self) -> Result<Target> {
        if let Some(path) = &self.scheduler_file {
            let file = SchedulerFile::read(path)?;
            return Ok(Target {
                address: self.scheduler.clone().unwrap_or(file.address),
                ca_pem: file.tls_ca,
                dashboard: Some(file.dashboard),
            });
        }
        let Some(address) = &self.scheduler else {
            return Err(ProtocolError::Address {
                address: String::new(),
                what: "no cluster given: pass --scheduler-file PATH, or --scheduler quic://HOST:PORT with --tls-ca FILE (or set STRATUS_SCHEDULER and STRATUS_TLS_CA)".into(),
            });
        };
        let Some(ca) = &self.tls_ca else {
            return Err(ProtocolError::Tls(format!(
                "--scheduler {address} needs --tls-ca FILE (or STRATUS_TLS_CA): certificates are always verified"
            )));
        };
        let ca_pem = std::fs::read_to_string(ca).map_err(|e| ProtocolError::File {
            path: ca.display().to_string(),
            what: format!("cannot read TLS CA: {e}"),
        })?;
        Ok(Target {
            address: address.clone(),
            ca_pem,
            dashboard: None,
        })
    }
}
