//! TLS material for QUIC.
//!
//! The scheduler makes a self-signed certificate at start; its PEM goes into
//! the scheduler file, and workers and clients trust exactly that certificate.
//! Certificates are always verified: clients check the certificate against the
//! pinned PEM and the server name [`SERVER_NAME`] that it carries. Only the
//! `ring` crypto provider is compiled in, and configs are built with it
//! explicitly, so no process-level provider lookup can fail.

use crate::{ProtocolError, Result};
use std::sync::Arc;

/// Server name every scheduler certificate carries and every client verifies.
pub const SERVER_NAME: &str = "stratus-scheduler";

/// Server name of a worker's peer endpoint (worker-to-worker data).
pub const WORKER_SERVER_NAME: &str = "stratus-worker";

/// ALPN protocol id of Stratus over QUIC.
pub const ALPN: &[u8] = b"stratus/1";

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertifiedKeyPem {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Make a self-signed certificate for the scheduler, valid for [`SERVER_NAME`],
/// `localhost`, 127.0.0.1 and the given extra host names or IPs.
pub fn self_signed(extra_names: &[String]) -> Result<CertifiedKeyPem> {
    self_signed_as(SERVER_NAME, extra_names)
}

/// A self-signed certificate for `server_name` (plus localhost, 127.0.0.1 and
/// `extra_names`).
pub fn self_signed_as(server_name: &str, extra_names: &[String]) -> Result<CertifiedKeyPem> {
    let mut names = vec![
        server_name.to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ];
    for n in extra_names {
        if !n.is_empty() && !names.contains(n) && n != "0.0.0.0" {
            names.push(n.clone());
        }
    }
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| ProtocolError::Tls(format!("cannot make a certificate: {e}")))?;
    Ok(CertifiedKeyPem {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn parse_certs(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| ProtocolError::Tls(format!("bad certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ProtocolError::Tls("no certificate found in PEM".into()));
    }
    Ok(certs)
}

/// rustls server config for QUIC (TLS 1.3) from PEM cert and key.
pub fn server_crypto(pair: &CertifiedKeyPem) -> Result<quinn::crypto::rustls::QuicServerConfig> {
    let certs = parse_certs(&pair.cert_pem)?;
    let key = rustls_pemfile::private_key(&mut pair.key_pem.as_bytes())
        .map_err(|e| ProtocolError::Tls(format!("bad private key PEM: {e}")))?
        .ok_or_else(|| ProtocolError::Tls("no private key found in PEM".into()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ProtocolError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ProtocolError::Tls(format!("certificate/key rejected: {e}")))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    quinn::crypto::rustls::QuicServerConfig::try_from(config)
        .map_err(|e| ProtocolError::Tls(e.to_string()))
}

/// rustls client config for QUIC that trusts exactly the certificates in `ca_pem`.
pub fn client_crypto(ca_pem: &str) -> Result<quinn::crypto::rustls::QuicClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in parse_certs(ca_pem)? {
        roots
            .add(cert)
            .map_err(|e| ProtocolError::Tls(format!("CA certificate rejected: {e}")))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ProtocolError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    quinn::crypto::rustls::QuicClientConfig::try_from(config)
        .map_err(|e| ProtocolError::Tls(e.to_string()))
}
