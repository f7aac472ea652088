//! The cluster's certificate authority and the certificates it issues.
//!
//! One CA per cluster (`ca.pem`, `ca.key`) signs every certificate. Each
//! certificate carries its holder's **role** (the subject's organizational
//! unit: `stratus-scheduler`, `stratus-worker` or `stratus-client`) and
//! **name** (the common name, repeated as a DNS subject-alternative name so
//! TLS name checks can verify it); a scheduler certificate also carries the
//! host names and IP addresses clients reach it by. The model is
//! CockroachDB's `cert create-ca / create-node / create-client`; keys and
//! certificates are made with rcgen and read back with x509-parser (no
//! OpenSSL).
//!
//! Private keys are written with mode 0600 and the CA directory, when this
//! module creates it, with mode 0700.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

use crate::tls::CertifiedKeyPem;
use crate::{ProtocolError, Result};

/// File name of the CA certificate in a certificate directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key in a certificate directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// Default lifetime of an issued certificate.
pub const DEFAULT_DAYS: u32 = 365;
/// Lifetime of a cluster CA.
const CA_DAYS: u32 = 3650;
/// Name of the certificate a scheduler without issued certificates gives itself.
pub const OWN_CERT_NAME: &str = "stratus-scheduler";
/// Name of the client credential such a scheduler writes into its scheduler file.
pub const FILE_CLIENT_NAME: &str = "scheduler-file-client";
/// Name of the worker credential such a scheduler writes into its scheduler
/// file (shared by every worker started with `--scheduler-file` alone).
pub const FILE_WORKER_NAME: &str = "scheduler-file-worker";
/// Organization every Stratus certificate names.
const ORGANIZATION: &str = "Stratus cluster";

/// What a certificate's holder may do in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Serves clients and workers (a TLS server certificate).
    Scheduler,
    /// Registers with the scheduler and serves and dials peer links (both ends).
    Worker,
    /// Submits requests (a TLS client certificate).
    Client,
}

impl Role {
    /// The role's name as the CLI and error messages spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Scheduler => "scheduler",
            Role::Worker => "worker",
            Role::Client => "client",
        }
    }

    /// The organizational unit that marks the role in a certificate.
    fn unit(self) -> String {
        format!("stratus-{}", self.as_str())
    }

    fn from_unit(unit: &str) -> Option<Role> {
        match unit {
            "stratus-scheduler" => Some(Role::Scheduler),
            "stratus-worker" => Some(Role::Worker),
            "stratus-client" => Some(Role::Client),
            _ => None,
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "scheduler" => Ok(Role::Scheduler),
            "worker" => Ok(Role::Worker),
            "client" => Ok(Role::Client),
            other => Err(format!(
                "unknown role '{other}' (expected scheduler, worker or client)"
            )),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A certificate name must be usable as a DNS name (TLS checks it as one):
/// 1-63 characters of ASCII letters, digits, `-` and `.`, not starting or
/// ending with `-` or `.`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.'])
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(ProtocolError::Tls(format!(
            "invalid certificate name '{name}': use 1-63 ASCII letters, digits, '-' and '.' (it is checked as a DNS name)"
        )))
    }
}

/// What a certificate to issue says.
#[derive(Debug, Clone)]
pub struct IssueSpec {
    pub role: Role,
    pub name: String,
    /// DNS names or IP addresses clients use to reach a scheduler.
    pub hosts: Vec<String>,
    pub days: u32,
}

/// A cluster certificate authority: its certificate and signing key (PEM).
#[derive(Clone)]
pub struct CertificateAuthority {
    pub cert_pem: String,
    key_pem: String,
}

fn tls_err(what: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::Tls(what.to_string())
}

fn file_err(path: &Path, what: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::File {
        path: path.display().to_string(),
        what: what.to_string(),
    }
}

/// `now + offset` seconds, as rcgen's date type.
fn at(offset_from_now: i64) -> time::OffsetDateTime {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64 + offset_from_now;
    time::OffsetDateTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| tls_err("no secure random source for a certificate serial"))?;
    // A positive INTEGER without a leading zero byte.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn distinguished_name(common_name: &str, unit: Option<String>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    if let Some(unit) = unit {
        dn.push(DnType::OrganizationalUnitName, unit);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

impl CertificateAuthority {
    /// A new CA, in memory.
    pub fn generate() -> Result<Self> {
        let key = KeyPair::generate().map_err(tls_err)?;
        let mut params = CertificateParams::default();
        let serial = random_serial()?;
        // A name of its own: a certificate of another cluster's CA then has
        // an unknown issuer, not a bad signature.
        let id: String = serial.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        params.distinguished_name = distinguished_name(&format!("Stratus cluster CA {id}"), None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(serial);
        params.not_before = at(-3600);
        params.not_after = at(i64::from(CA_DAYS) * 86_400);
        let cert = params.self_signed(&key).map_err(tls_err)?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Make a CA in `dir` (created with mode 0700 if missing); refuses to
    /// replace an existing one.
    pub fn init(dir: &Path) -> Result<Self> {
        let cert_path = dir.join(CA_CERT_FILE);
        if cert_path.exists() || dir.join(CA_KEY_FILE).exists() {
            return Err(file_err(
                &cert_path,
                "a certificate authority already exists here; every certificate it issued depends on it, so it is not replaced",
            ));
        }
        create_private_dir(dir)?;
        let ca = Self::generate()?;
        write_file(&dir.join(CA_KEY_FILE), &ca.key_pem, 0o600)?;
        write_file(&cert_path, &ca.cert_pem, 0o644)?;
        Ok(ca)
    }

    /// Read the CA of `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| {
                file_err(
                    &path,
                    format!(
                        "cannot read the cluster CA ({e}); make one with `stratus certs init DIR`"
                    ),
                )
            })
        };
        let ca = CertificateAuthority {
            cert_pem: read(CA_CERT_FILE)?,
            key_pem: read(CA_KEY_FILE)?,
        };
        // Fail now, naming the directory, rather than at the first issue.
        ca.issuer()
            .map_err(|e| file_err(dir, format!("not a usable CA: {e}")))?;
        Ok(ca)
    }

    /// The CA of `dir`, made on first use (zero set-up clusters).
    pub fn load_or_init(dir: &Path) -> Result<Self> {
        if dir.join(CA_CERT_FILE).exists() {
            Self::load(dir)
        } else {
            Self::init(dir)
        }
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| tls_err(format!("CA key: {e}")))?;
        Issuer::from_ca_cert_pem(&self.cert_pem, key)
            .map_err(|e| tls_err(format!("CA certificate: {e}")))
    }

    /// Issue a certificate and key for `spec`.
    pub fn issue(&self, spec: &IssueSpec) -> Result<CertifiedKeyPem> {
        check_name(&spec.name)?;
        if spec.days == 0 {
            return Err(tls_err("a certificate must be valid for at least 1 day"));
        }
        let issuer = self.issuer()?;
        let key = KeyPair::generate().map_err(tls_err)?;
        let mut names = vec![spec.name.clone()];
        for host in &spec.hosts {
            let host = host.trim();
            if !host.is_empty() && !names.iter().any(|n| n == host) {
                names.push(host.to_string());
            }
        }
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
        for name in &names {
            params.subject_alt_names.push(match name.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.as_str().try_into().map_err(|e| {
                    tls_err(format!(
                        "'{name}' is neither an IP address nor a DNS name: {e}"
                    ))
                })?),
            });
        }
        params.distinguished_name = distinguished_name(&spec.name, Some(spec.role.unit()));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match spec.role {
            Role::Scheduler => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Role::Worker => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        params.not_before = at(-3600);
        params.not_after = at(i64::from(spec.days) * 86_400);
        let cert = params.signed_by(&key, &issuer).map_err(tls_err)?;
        Ok(CertifiedKeyPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// What a verified peer certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    pub role: Role,
    pub name: String,
    /// Lower-case hex, no separators (as `stratus certs issue` prints it).
    pub serial: String,
}

/// Read role, name and serial from a certificate (DER). A certificate
/// without a Stratus role is an error naming what it holds instead.
pub fn inspect(der: &[u8]) -> Result<PeerCertificate> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| tls_err(format!("unreadable certificate: {e}")))?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_string();
    let units: Vec<&str> = subject
        .iter_organizational_unit()
        .filter_map(|u| u.as_str().ok())
        .collect();
    let role = units
        .iter()
        .find_map(|u| Role::from_unit(u))
        .ok_or_else(|| {
            tls_err(format!(
                "certificate '{name}' carries no Stratus role (issue it with `stratus certs issue DIR --role ...`)"
            ))
        })?;
    Ok(PeerCertificate {
        role,
        name,
        serial: serial_hex(cert.raw_serial()),
    })
}

/// A serial number as lower-case hex without separators or leading zeros.
pub fn serial_hex(raw: &[u8]) -> String {
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    normalize_serial(&hex)
}

/// Normalize a serial someone typed (`0A:1B`, `0x0a1b`, `A1B`) for comparison.
pub fn normalize_serial(text: &str) -> String {
    let hex: String = text
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.to_string()
    }
}

/// The first certificate of a PEM bundle as DER.
pub fn first_cert_der(pem: &str) -> Result<Vec<u8>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .ok_or_else(|| tls_err("no certificate found in PEM"))?
        .map(|c| c.to_vec())
        .map_err(|e| tls_err(format!("bad certificate PEM: {e}")))
}

/// Create `dir` (and parents) with mode 0700 if it does not exist.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, format!("cannot create: {e}")))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| file_err(dir, format!("cannot restrict to mode 0700: {e}")))?;
    }
    Ok(())
}

/// Write `text` to a new file `path` with `mode`, refusing to replace one.
pub fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                file_err(path, "already exists; remove it first to replace it")
            } else {
                file_err(path, format!("cannot create: {e}"))
            }
        })?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| file_err(path, format!("cannot write: {e}")))
}

/// Write an issued credential as `DIR/NAME.pem` and `DIR/NAME.key` (0600).
pub fn write_credential(
    dir: &Path,
    name: &str,
    pair: &CertifiedKeyPem,
) -> Result<(PathBuf, PathBuf)> {
    check_name(name)?;
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    if cert.exists() || key.exists() {
        return Err(file_err(
            &cert,
            "already exists; remove it (and its .key) first to replace it",
        ));
    }
    write_file(&key, &pair.key_pem, 0o600)?;
    write_file(&cert, &pair.cert_pem, 0o644)?;
    Ok((cert, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(role: Role, name: &str) -> IssueSpec {
        IssueSpec {
            role,
            name: name.into(),
            hosts: vec!["10.1.0.8".into(), "head.example".into()],
            days: 30,
        }
    }

    #[test]
    fn issued_certificates_carry_role_name_and_serial() {
        let ca = CertificateAuthority::generate().unwrap();
        for role in [Role::Scheduler, Role::Worker, Role::Client] {
            let pair = ca.issue(&spec(role, "node-7")).unwrap();
            let der = first_cert_der(&pair.cert_pem).unwrap();
            let seen = inspect(&der).unwrap();
            assert_eq!(seen.role, role);
            assert_eq!(seen.name, "node-7");
            assert!(seen.serial.len() >= 30, "{}", seen.serial);
        }
        let a = inspect(
            &first_cert_der(&ca.issue(&spec(Role::Client, "a")).unwrap().cert_pem).unwrap(),
        )
        .unwrap();
        let b = inspect(
            &first_cert_der(&ca.issue(&spec(Role::Client, "a")).unwrap().cert_pem).unwrap(),
        )
        .unwrap();
        assert_ne!(a.serial, b.serial, "serials are random");
    }

    #[test]
    fn a_certificate_without_a_role_is_refused() {
        let ca = CertificateAuthority::generate().unwrap();
        let der = first_cert_der(&ca.cert_pem).unwrap();
        let err = inspect(&der).unwrap_err().to_string();
        assert!(err.contains("no Stratus role"), "{err}");
    }

    #[test]
    fn names_are_checked() {
        for good in ["alice", "node-7", "w1.pool"] {
            check_name(good).unwrap();
        }
        for bad in ["", "-x", "a b", "x/../y", "é", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn serials_normalize() {
        assert_eq!(serial_hex(&[0, 0x0a, 0x1b]), "a1b");
        assert_eq!(normalize_serial("0A:1B"), "a1b");
        assert_eq!(normalize_serial("0x0a1b"), "a1b");
    }

    #[test]
    fn ca_directory_files_and_modes() {
        let dir = std::env::temp_dir().join(format!("stratus-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = CertificateAuthority::init(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(CA_KEY_FILE)), 0o600);
        assert!(
            CertificateAuthority::init(&dir).is_err(),
            "a CA is never replaced"
        );
        let again = CertificateAuthority::load_or_init(&dir).unwrap();
        assert_eq!(again.cert_pem, ca.cert_pem);
        let pair = again.issue(&spec(Role::Worker, "w1")).unwrap();
        let (cert, key) = write_credential(&dir, "w1", &pair).unwrap();
        assert_eq!(mode(&key), 0o600);
        assert!(cert.exists());
        assert!(write_credential(&dir, "w1", &pair).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
