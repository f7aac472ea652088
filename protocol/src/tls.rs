//! Mutual TLS for every QUIC connection, with roles.
//!
//! Every process holds [`Credentials`]: the cluster CA it trusts and its own
//! certificate and key, issued by that CA ([`crate::pki`]). Both ends of
//! every connection present a certificate, and each end checks three things
//! of the other's: it chains to the cluster CA (rustls' WebPKI verifiers:
//! signature, validity period, key usage), it carries an expected role
//! ([`Role`]: a worker certificate can not act as a client, a client
//! certificate can not register as a worker, and only a scheduler
//! certificate serves clients), and its serial is not on the [`DenyList`].
//! Servers are also checked by name: a scheduler by the host the client dialed,
//! a worker's peer endpoint by the certificate name the scheduler announced.
//!
//! Only the `ring` crypto provider is compiled in, and configs are built
//! with it explicitly, so no process-level provider lookup can fail.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::pki::{self, PeerCertificate, Role};
use crate::{ProtocolError, Result};

/// ALPN protocol id of Stratus over QUIC.
pub const ALPN: &[u8] = b"stratus/1";

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertifiedKeyPem {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What a process trusts (the cluster CA) and what it presents.
#[derive(Clone)]
pub struct Credentials {
    pub ca_pem: String,
    pub identity: CertifiedKeyPem,
}

impl Credentials {
    /// Read `--tls-ca`, `--tls-cert` and `--tls-key` files; errors name the file.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Credentials> {
        let read = |path: &Path, what: &str| {
            std::fs::read_to_string(path).map_err(|e| ProtocolError::File {
                path: path.display().to_string(),
                what: format!("cannot read the TLS {what}: {e}"),
            })
        };
        let credentials = Credentials {
            ca_pem: read(ca, "CA certificate")?,
            identity: CertifiedKeyPem {
                cert_pem: read(cert, "certificate")?,
                key_pem: read(key, "private key")?,
            },
        };
        credentials.check().map_err(|e| ProtocolError::File {
            path: cert.display().to_string(),
            what: e.to_string(),
        })?;
        Ok(credentials)
    }

    /// Role, name and serial of our own certificate.
    pub fn own(&self) -> Result<PeerCertificate> {
        pki::inspect(&pki::first_cert_der(&self.identity.cert_pem)?)
    }

    /// Parse everything once, so that bad material fails at start.
    pub fn check(&self) -> Result<PeerCertificate> {
        roots(&self.ca_pem)?;
        private_key(&self.identity.key_pem)?;
        self.own()
    }

    /// Fail unless our own certificate has `role`, saying how to get one.
    pub fn require_role(&self, role: Role) -> Result<PeerCertificate> {
        let own = self.check()?;
        if own.role != role {
            return Err(ProtocolError::Tls(format!(
                "certificate '{}' has role {}, but this process needs a {role} certificate (stratus certs issue DIR --role {role} --name NAME)",
                own.name, own.role
            )));
        }
        Ok(own)
    }
}

/// Certificate serials that are refused even though the CA signed them
/// (leaked credentials), as `stratus certs issue` prints them.
#[derive(Clone, Default, Debug)]
pub struct DenyList(Arc<HashSet<String>>);

impl DenyList {
    pub fn new<S: AsRef<str>>(serials: &[S]) -> DenyList {
        DenyList(Arc::new(
            serials
                .iter()
                .map(|s| pki::normalize_serial(s.as_ref()))
                .collect(),
        ))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn check(&self, peer: &PeerCertificate) -> std::result::Result<(), rustls::Error> {
        if self.0.contains(&peer.serial) {
            return Err(rustls::Error::General(format!(
                "certificate '{}' (serial {}) is on the deny-list",
                peer.name, peer.serial
            )));
        }
        Ok(())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| ProtocolError::Tls(format!("bad certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ProtocolError::Tls("no certificate found in PEM".into()));
    }
    Ok(certs)
}

fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| ProtocolError::Tls(format!("bad private key PEM: {e}")))?
        .ok_or_else(|| ProtocolError::Tls("no private key found in PEM".into()))
}

fn roots(ca_pem: &str) -> Result<Arc<rustls::RootCertStore>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in parse_certs(ca_pem)? {
        roots
            .add(cert)
            .map_err(|e| ProtocolError::Tls(format!("CA certificate rejected: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// Check a certificate the WebPKI verifier accepted: a Stratus role among
/// `allowed`, and not denied.
fn check_role(
    end_entity: &CertificateDer<'_>,
    allowed: &[Role],
    deny: &DenyList,
) -> std::result::Result<PeerCertificate, rustls::Error> {
    let peer = pki::inspect(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
    deny.check(&peer)?;
    if !allowed.contains(&peer.role) {
        let expected: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        return Err(rustls::Error::General(format!(
            "certificate '{}' has role {}; expected a {} certificate",
            peer.name,
            peer.role,
            expected.join(" or ")
        )));
    }
    Ok(peer)
}

/// A server's certificate: the CA, the dialed name, then role and deny-list.
#[derive(Debug)]
struct RoleServerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    role: Role,
    deny: DenyList,
}

impl ServerCertVerifier for RoleServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        check_role(end_entity, &[self.role], &self.deny)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client's certificate (mandatory): the CA, then role and deny-list.
#[derive(Debug)]
struct RoleClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    roles: Vec<Role>,
    deny: DenyList,
}

impl ClientCertVerifier for RoleClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        check_role(end_entity, &self.roles, &self.deny)?;
        Ok(ClientCertVerified::assertion())
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// rustls server config for QUIC (TLS 1.3): presents our certificate and
/// requires a client certificate of the CA with one of `accept`'s roles.
pub fn server_crypto(
    credentials: &Credentials,
    accept: &[Role],
    deny: &DenyList,
) -> Result<quinn::crypto::rustls::QuicServerConfig> {
    let certs = parse_certs(&credentials.identity.cert_pem)?;
    let key = private_key(&credentials.identity.key_pem)?;
    let inner = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots(&credentials.ca_pem)?,
        provider(),
    )
    .build()
    .map_err(|e| ProtocolError::Tls(format!("client verifier: {e}")))?;
    let verifier = Arc::new(RoleClientVerifier {
        inner,
        roles: accept.to_vec(),
        deny: deny.clone(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ProtocolError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| ProtocolError::Tls(format!("certificate/key rejected: {e}")))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    quinn::crypto::rustls::QuicServerConfig::try_from(config)
        .map_err(|e| ProtocolError::Tls(e.to_string()))
}

/// rustls client config for QUIC: presents our certificate and accepts a
/// server certificate of the CA with role `expect` (its name is checked
/// against the name given at connect time).
pub fn client_crypto(
    credentials: &Credentials,
    expect: Role,
    deny: &DenyList,
) -> Result<quinn::crypto::rustls::QuicClientConfig> {
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        roots(&credentials.ca_pem)?,
        provider(),
    )
    .build()
    .map_err(|e| ProtocolError::Tls(format!("server verifier: {e}")))?;
    let verifier = Arc::new(RoleServerVerifier {
        inner,
        role: expect,
        deny: deny.clone(),
    });
    let certs = parse_certs(&credentials.identity.cert_pem)?;
    let key = private_key(&credentials.identity.key_pem)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ProtocolError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certs, key)
        .map_err(|e| ProtocolError::Tls(format!("certificate/key rejected: {e}")))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    quinn::crypto::rustls::QuicClientConfig::try_from(config)
        .map_err(|e| ProtocolError::Tls(e.to_string()))
}

/// What the other end of an established connection proved it is (its
/// certificate was verified during the handshake).
pub fn peer_certificate(conn: &quinn::Connection) -> Result<PeerCertificate> {
    let missing = || {
        ProtocolError::Tls(format!(
            "peer {} presented no certificate",
            conn.remote_address()
        ))
    };
    let identity = conn.peer_identity().ok_or_else(missing)?;
    let certs = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| missing())?;
    let leaf = certs.first().ok_or_else(missing)?;
    pki::inspect(leaf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertificateAuthority, IssueSpec};

    fn creds(ca: &CertificateAuthority, role: Role, name: &str) -> Credentials {
        Credentials {
            ca_pem: ca.cert_pem.clone(),
            identity: ca
                .issue(&IssueSpec {
                    role,
                    name: name.into(),
                    hosts: vec!["127.0.0.1".into()],
                    days: 1,
                })
                .unwrap(),
        }
    }

    #[test]
    fn own_role_is_checked() {
        let ca = CertificateAuthority::generate().unwrap();
        let c = creds(&ca, Role::Client, "alice");
        assert_eq!(c.require_role(Role::Client).unwrap().name, "alice");
        let err = c.require_role(Role::Worker).unwrap_err().to_string();
        assert!(
            err.contains("role client") && err.contains("--role worker"),
            "{err}"
        );
        server_crypto(
            &creds(&ca, Role::Scheduler, "s"),
            &[Role::Worker],
            &DenyList::default(),
        )
        .unwrap();
        client_crypto(&c, Role::Scheduler, &DenyList::new(&["0A:0B"])).unwrap();
    }
}
