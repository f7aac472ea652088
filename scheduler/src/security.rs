//! The scheduler's TLS identity and what it hands out.
//!
//! Either the operator gives issued certificates (`--tls-ca`, `--tls-cert`,
//! `--tls-key`, role scheduler), or the scheduler makes a cluster CA once in
//! `<data-dir>/tls` and reuses it on every later start (so a restart keeps
//! the cluster's identity), issues itself a scheduler certificate for the
//! names clients dial, and issues the client and worker credentials that go
//! into the scheduler file (zero set-up, like Dask's `Security.temporary()`).
//!
//! The QUIC endpoint admits only certificates of the CA with role worker or
//! client and not on the deny-list; [`ServerTls::server_config`] is rebuilt on
//! SIGHUP so renewed files and a new deny-list apply to new connections
//! while existing ones carry on.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use stratus_protocol::pki::{self, CertificateAuthority, IssueSpec, Role};
use stratus_protocol::tls::{CertifiedKeyPem, Credentials, DenyList};

use crate::settings::Settings;

use stratus_protocol::pki::{FILE_CLIENT_NAME, FILE_WORKER_NAME, OWN_CERT_NAME};

/// Where the scheduler's certificate comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Issued certificates, re-read on SIGHUP.
    Files {
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    },
    /// The cluster CA in this directory, made on first start.
    OwnCa { dir: PathBuf },
}

/// The scheduler's credentials and the ones it hands out.
pub struct ServerTls {
    pub source: Source,
    pub credentials: Credentials,
    /// For the scheduler file (zero set-up only).
    pub file_client: Option<CertifiedKeyPem>,
    pub file_worker: Option<CertifiedKeyPem>,
    pub deny: DenyList,
}

impl ServerTls {
    /// Set up from settings; `names` are the hosts and IPs clients may dial
    /// (used only for a self-issued certificate).
    pub fn load(settings: &Settings, names: &[String]) -> anyhow::Result<ServerTls> {
        let deny = DenyList::new(&settings.tls_deny_serials);
        match (&settings.tls_ca, &settings.tls_cert, &settings.tls_key) {
            (Some(ca), Some(cert), Some(key)) => {
                let credentials = read_files(ca, cert, key)?;
                Ok(ServerTls {
                    source: Source::Files {
                        ca: ca.clone(),
                        cert: cert.clone(),
                        key: key.clone(),
                    },
                    credentials,
                    file_client: None,
                    file_worker: None,
                    deny,
                })
            }
            (None, None, None) => {
                let dir = settings.data_dir.join("tls");
                let ca = CertificateAuthority::load_or_init(&dir)
                    .with_context(|| format!("the cluster CA in {}", dir.display()))?;
                let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
                hosts.extend(names.iter().cloned());
                hosts.extend(settings.tls_hosts.iter().cloned());
                hosts.retain(|h| h != "0.0.0.0" && h != "::" && !h.is_empty());
                let issue = |role, name: &str, hosts: Vec<String>| {
                    ca.issue(&IssueSpec {
                        role,
                        name: name.into(),
                        hosts,
                        days: pki::DEFAULT_DAYS,
                    })
                };
                let credentials = Credentials {
                    ca_pem: ca.cert_pem.clone(),
                    identity: issue(Role::Scheduler, OWN_CERT_NAME, hosts)?,
                };
                Ok(ServerTls {
                    source: Source::OwnCa { dir },
                    credentials,
                    file_client: Some(issue(Role::Client, FILE_CLIENT_NAME, vec![])?),
                    file_worker: Some(issue(Role::Worker, FILE_WORKER_NAME, vec![])?),
                    deny,
                })
            }
            _ => bail!(
                "--tls-ca, --tls-cert and --tls-key go together (or none of them, and the scheduler keeps its own cluster CA in <data-dir>/tls)"
            ),
        }
    }

    /// The QUIC server settings: workers and clients of our CA only.
    pub fn server_config(&self) -> anyhow::Result<quinn::ServerConfig> {
        Ok(stratus_protocol::transport::server_config(
            &self.credentials,
            &[Role::Worker, Role::Client],
            &self.deny,
        )?)
    }

    /// Re-read certificate files (issued certificates) and the deny-list
    /// from fresh settings; a self-made CA keeps its credentials.
    pub fn reload(&mut self, settings: &Settings) -> anyhow::Result<()> {
        if let Source::Files { ca, cert, key } = &self.source {
            // The paths stay those of the start; their contents may change.
            self.credentials = read_files(ca, cert, key)?;
        }
        self.deny = DenyList::new(&settings.tls_deny_serials);
        Ok(())
    }

    /// A one-line description for the log.
    pub fn describe(&self) -> String {
        let own = self
            .credentials
            .own()
            .map(|c| format!("'{}' (serial {})", c.name, c.serial));
        let origin = match &self.source {
            Source::Files { cert, .. } => format!("issued certificate {}", cert.display()),
            Source::OwnCa { dir } => format!("cluster CA in {}", dir.display()),
        };
        format!(
            "TLS: {origin}, certificate {}; {} denied serial(s)",
            own.unwrap_or_else(|e| e.to_string()),
            self.deny.len()
        )
    }
}

fn read_files(ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<Credentials> {
    let credentials = Credentials::from_files(ca, cert, key)?;
    credentials
        .require_role(Role::Scheduler)
        .with_context(|| format!("{}", cert.display()))?;
    Ok(credentials)
}
