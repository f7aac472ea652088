//! Attacks on a cluster's TLS, each tried against real processes over real
//! QUIC on loopback: strangers without a certificate, certificates of
//! another CA, certificates of the wrong role (a client registering as a
//! worker, a worker submitting requests, a worker posing as the scheduler),
//! a scheduler certificate not valid for the dialed name, forged deliveries
//! to a worker's peer endpoint, a leaked certificate put on the deny-list
//! with a SIGHUP. Each attack must fail with a clear error, and the cluster
//! must still answer a `len` with the right count afterwards.
//!
//! Also the certificate tooling (`stratus certs init|issue`) and the zero
//! set-up cluster (its own CA in `<data-dir>/tls`, kept across restarts, and
//! a private scheduler file).

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use stratus_protocol::messages::{PeerRole, WorkerInfo};
use stratus_protocol::pki::{self, Role};
use stratus_protocol::scheduler_file::SchedulerFile;
use stratus_protocol::tls::{CertifiedKeyPem, Credentials, DenyList};
use stratus_protocol::transport;

fn bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_stratus"))
        .parent()
        .unwrap()
        .join(name)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `stratus ARGS` with no cluster variables from the environment.
fn stratus_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args(args)
        .env_remove("STRATUS_SCHEDULER")
        .env_remove("STRATUS_SCHEDULER_FILE")
        .env_remove("STRATUS_TLS_CA")
        .env_remove("STRATUS_TLS_CERT")
        .env_remove("STRATUS_TLS_KEY")
        .env_remove("STRATUS_RUN")
        .output()
        .expect("run stratus")
}

/// A certificate directory made with `stratus certs`.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = TempDir::new(tag);
        let o = stratus_cli(&[
            "certs",
            "init",
            &dir.path().join("ca").display().to_string(),
        ]);
        assert!(o.status.success(), "certs init: {}", stderr(&o));
        Pki { dir }
    }

    fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    fn ca(&self) -> PathBuf {
        self.ca_dir().join("ca.pem")
    }

    fn ca_pem(&self) -> String {
        read_text(&self.ca())
    }

    /// Issue `name` with `role`; returns (cert, key) paths.
    fn issue(&self, role: &str, name: &str, hosts: &str) -> (PathBuf, PathBuf) {
        let dir = self.ca_dir().display().to_string();
        let mut args = vec!["certs", "issue", &dir, "--role", role, "--name", name];
        if !hosts.is_empty() {
            args.extend(["--host", hosts]);
        }
        let o = stratus_cli(&args);
        assert!(o.status.success(), "certs issue {name}: {}", stderr(&o));
        (
            self.ca_dir().join(format!("{name}.pem")),
            self.ca_dir().join(format!("{name}.key")),
        )
    }

    fn credentials(&self, name: &str) -> Credentials {
        Credentials {
            ca_pem: self.ca_pem(),
            identity: CertifiedKeyPem {
                cert_pem: read_text(&self.ca_dir().join(format!("{name}.pem"))),
                key_pem: read_text(&self.ca_dir().join(format!("{name}.key"))),
            },
        }
    }
}

/// A scheduler and workers started with issued certificates only.
struct IssuedCluster {
    scheduler: Child,
    workers: Vec<Child>,
    address: String,
    file: PathBuf,
    config: PathBuf,
    dir: TempDir,
}

impl Drop for IssuedCluster {
    fn drop(&mut self) {
        for child in self
            .workers
            .iter_mut()
            .chain(std::iter::once(&mut self.scheduler))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl IssuedCluster {
    fn start(pki: &Pki, workers: u32) -> IssuedCluster {
        let dir = TempDir::new("issued");
        let file = dir.path().join("scheduler.json");
        let config = dir.path().join("scheduler.toml");
        write_text(&config, "");
        let (cert, key) = pki.issue("scheduler", "head", "127.0.0.1,localhost");
        let scheduler = Command::new(bin("stratus-scheduler"))
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--dashboard-address", "127.0.0.1:0"])
            .arg("--scheduler-file")
            .arg(&file)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&config)
            .arg("--tls-ca")
            .arg(pki.ca())
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .stderr(std::fs::File::create(dir.path().join("scheduler.log")).unwrap())
            .spawn()
            .expect("start stratus-scheduler (cargo build --workspace --bins)");
        eventually(Duration::from_secs(30), "the scheduler file", || {
            file.exists().then_some(())
        });
        let address = SchedulerFile::read(&file).unwrap().address;
        let mut cluster = IssuedCluster {
            scheduler,
            workers: Vec::new(),
            address,
            file,
            config,
            dir,
        };
        pki.issue("client", "admin", "");
        for i in 0..workers {
            let name = format!("node-{i}");
            let (cert, key) = pki.issue("worker", &name, "");
            let mut command = Command::new(bin("stratus-worker"));
            command.arg(&cluster.address);
            if i == 0 {
                command
                    .arg("--tls-ca")
                    .arg(pki.ca())
                    .arg("--tls-cert")
                    .arg(&cert)
                    .arg("--tls-key")
                    .arg(&key);
            } else {
                // The same files from the worker's TOML settings.
                let toml = cluster.dir.path().join(format!("{name}.toml"));
                write_text(
                    &toml,
                    &format!(
                        "tls_ca = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
                        pki.ca().display().to_string(),
                        cert.display().to_string(),
                        key.display().to_string()
                    ),
                );
                command.arg("--config").arg(&toml);
            }
            let child = command
                .args(["--nthreads", "1", "--memory-limit", "2GiB"])
                .arg("--data-root")
                .arg(env!("CARGO_MANIFEST_DIR"))
                .env_remove("STRATUS_SCHEDULER_FILE")
                .stderr(
                    std::fs::File::create(cluster.dir.path().join(format!("{name}.log"))).unwrap(),
                )
                .spawn()
                .expect("start stratus-worker");
            cluster.workers.push(child);
        }
        eventually(Duration::from_secs(60), "every worker registered", || {
            let o = cluster.as_client(pki, "admin", &["info"]);
            let text = stdout(&o);
            text.contains(&format!("workers={workers} ")).then_some(())
        });
        cluster
    }

    /// `stratus --scheduler ADDR` with the CA and the credential `name`.
    fn as_client(&self, pki: &Pki, name: &str, args: &[&str]) -> Output {
        let cert = pki.ca_dir().join(format!("{name}.pem"));
        let key = pki.ca_dir().join(format!("{name}.key"));
        let mut all: Vec<String> = vec![
            "--scheduler".into(),
            self.address.clone(),
            "--tls-ca".into(),
            pki.ca().display().to_string(),
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        stratus_cli(&all)
    }

    /// The cluster still answers a `len` with the right count.
    fn still_answers(&self, pki: &Pki) {
        let o = self.as_client(pki, "admin", &["len", &fixture()]);
        assert!(
            o.status.success(),
            "the cluster stopped answering: {}\n{}",
            stderr(&o),
            self.log("scheduler")
        );
        assert_eq!(stdout(&o), format!("{FIXTURE_ROWS}\n"));
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    fn dashboard(&self) -> String {
        SchedulerFile::read(&self.file).unwrap().dashboard
    }
}

/// A QUIC connection to `address` trusting `ca_pem`, presenting
/// `credentials` (or no certificate at all).
async fn raw_connect(
    address: &str,
    ca_pem: &str,
    credentials: Option<&Credentials>,
    expect: Role,
) -> Result<quinn::Connection, String> {
    let config = match credentials {
        Some(c) => transport::client_config(c, expect, &DenyList::default()).unwrap(),
        None => anonymous_config(ca_pem),
    };
    let endpoint = transport::client_endpoint(config).unwrap();
    let address = if address.contains("://") {
        address.to_string()
    } else {
        format!("quic://{address}")
    };
    let conn = transport::connect(&endpoint, &address)
        .await
        .map_err(|e| e.to_string())?;
    // The server checks our certificate after the client's handshake
    // completes: a refusal shows as the connection closing.
    match tokio::time::timeout(Duration::from_millis(500), conn.closed()).await {
        Ok(reason) => Err(reason.to_string()),
        Err(_) => Ok(conn),
    }
}

/// A client config that trusts `ca_pem` but presents no certificate.
fn anonymous_config(ca_pem: &str) -> quinn::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(pki::first_cert_der(ca_pem).unwrap().into())
        .unwrap();
    let mut crypto = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    crypto.alpn_protocols = vec![b"stratus/1".to_vec()];
    quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap(),
    ))
}

fn worker_hello(name: &str) -> PeerRole {
    PeerRole::Worker(WorkerInfo {
        name: name.into(),
        host: "attacker".into(),
        pid: 1,
        nthreads: 100_000,
        memory_limit: 1 << 40,
        metrics_address: None,
        peer_address: "127.0.0.1:9".into(),
        cert_name: "node-0".into(),
    })
}

fn client_hello() -> PeerRole {
    PeerRole::Client {
        name: "attacker".into(),
        run: String::new(),
    }
}

/// Say hello on `conn`; the scheduler's refusal (or the connection's end) as an error.
async fn hello(conn: &quinn::Connection, role: PeerRole) -> Result<u64, String> {
    stratus_protocol::handshake::introduce(conn, role, "scheduler")
        .await
        .map(|i| i.peer_id)
        .map_err(|e| e.to_string())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn certs_cli_makes_a_ca_and_certificates_with_roles() {
    let dir = TempDir::new("certs");
    let ca_dir = dir.path().join("cluster-ca");
    let ca_arg = ca_dir.display().to_string();
    let o = stratus_cli(&["certs", "init", &ca_arg]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(mode(&ca_dir), 0o700);
    assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);
    // A CA is never replaced: everything it issued depends on it.
    let o = stratus_cli(&["certs", "init", &ca_arg]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));

    for (role, expected) in [
        ("scheduler", Role::Scheduler),
        ("worker", Role::Worker),
        ("client", Role::Client),
    ] {
        let name = format!("{role}-1");
        let o = stratus_cli(&[
            "certs",
            "issue",
            &ca_arg,
            "--role",
            role,
            "--name",
            &name,
            "--host",
            "10.1.0.8,head.example",
            "--days",
            "30",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains("serial"), "{}", stdout(&o));
        assert_eq!(mode(&ca_dir.join(format!("{name}.key"))), 0o600);
        let pem = read_text(&ca_dir.join(format!("{name}.pem")));
        let seen = pki::inspect(&pki::first_cert_der(&pem).unwrap()).unwrap();
        assert_eq!((seen.role, seen.name.as_str()), (expected, name.as_str()));
    }
    // Clear refusals: an existing name, a bad role, a bad name, no CA.
    let o = stratus_cli(&[
        "certs", "issue", &ca_arg, "--role", "client", "--name", "client-1",
    ]);
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    let o = stratus_cli(&["certs", "issue", &ca_arg, "--role", "admin", "--name", "x"]);
    assert!(
        stderr(&o).contains("unknown role 'admin'"),
        "{}",
        stderr(&o)
    );
    let o = stratus_cli(&[
        "certs", "issue", &ca_arg, "--role", "client", "--name", "a b",
    ]);
    assert!(
        stderr(&o).contains("invalid certificate name 'a b'"),
        "{}",
        stderr(&o)
    );
    let missing = dir.path().join("nowhere").display().to_string();
    let o = stratus_cli(&[
        "certs", "issue", &missing, "--role", "client", "--name", "x",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("stratus certs init"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_cluster_of_issued_certificates_lets_no_stranger_in() {
    let pki = Pki::new("tls-pki");
    let cluster = IssuedCluster::start(&pki, 2);
    cluster.still_answers(&pki);
    // Its scheduler file carries no key: it stays readable (0644).
    let file = SchedulerFile::read(&cluster.file).unwrap();
    assert!(file.tls_key.is_none() && file.worker_tls_key.is_none());
    assert_eq!(mode(&cluster.file), 0o644);
    assert_eq!(file.tls_ca, pki.ca_pem());
    let rt = runtime();

    // 1. No certificate at all: the handshake fails.
    let err = rt
        .block_on(raw_connect(
            &cluster.address,
            &pki.ca_pem(),
            None,
            Role::Scheduler,
        ))
        .expect_err("a client without a certificate was let in");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    cluster.still_answers(&pki);

    // 2. A worker with only the CA: it says what it lacks, and never joins.
    let o = Command::new(bin("stratus-worker"))
        .arg(&cluster.address)
        .arg("--tls-ca")
        .arg(pki.ca())
        .env_remove("STRATUS_SCHEDULER_FILE")
        .env_remove("STRATUS_TLS_CERT")
        .env_remove("STRATUS_TLS_KEY")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--tls-cert"), "{}", stderr(&o));

    // 3. A certificate of another CA (with the right role and name).
    let other = Pki::new("tls-other");
    other.issue("client", "admin", "");
    other.issue("worker", "node-0", "");
    let forged = Credentials {
        ca_pem: pki.ca_pem(),
        ..other.credentials("admin")
    };
    let err = rt
        .block_on(raw_connect(
            &cluster.address,
            &pki.ca_pem(),
            Some(&forged),
            Role::Scheduler,
        ))
        .expect_err("a certificate of another CA was let in");
    assert!(
        err.contains("error 48") && err.contains("UnknownIssuer"),
        "{err}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args(["--scheduler", &cluster.address, "--tls-ca"])
        .arg(pki.ca())
        .arg("--tls-cert")
        .arg(other.ca_dir().join("admin.pem"))
        .arg("--tls-key")
        .arg(other.ca_dir().join("admin.key"))
        .args(["len", &fixture()])
        .env_remove("STRATUS_SCHEDULER_FILE")
        .output()
        .unwrap();
    assert!(!o.status.success() && stdout(&o).is_empty());
    assert!(stderr(&o).contains("cluster's CA"), "{}", stderr(&o));
    cluster.still_answers(&pki);

    // 4. A client certificate registering as a worker (claiming 100,000 threads).
    pki.issue("client", "mallory", "");
    let mallory = pki.credentials("mallory");
    let conn = rt
        .block_on(raw_connect(
            &cluster.address,
            &pki.ca_pem(),
            Some(&mallory),
            Role::Scheduler,
        ))
        .unwrap();
    let err = rt
        .block_on(hello(&conn, worker_hello("rogue")))
        .expect_err("a client certificate registered as a worker");
    assert!(
        err.contains("certificate 'mallory' has role client")
            && err.contains("needs a worker certificate"),
        "{err}"
    );
    // ... and the real worker binary refuses such a certificate itself.
    let o = Command::new(bin("stratus-worker"))
        .arg(&cluster.address)
        .arg("--tls-ca")
        .arg(pki.ca())
        .arg("--tls-cert")
        .arg(pki.ca_dir().join("mallory.pem"))
        .arg("--tls-key")
        .arg(pki.ca_dir().join("mallory.key"))
        .env_remove("STRATUS_SCHEDULER_FILE")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("needs a worker certificate"),
        "{}",
        stderr(&o)
    );
    let info = cluster.as_client(&pki, "admin", &["info"]);
    assert!(stdout(&info).contains("workers=2 "), "{}", stdout(&info));
    cluster.still_answers(&pki);

    // 5. A worker certificate submitting requests.
    let worker = pki.credentials("node-0");
    let conn = rt
        .block_on(raw_connect(
            &cluster.address,
            &pki.ca_pem(),
            Some(&worker),
            Role::Scheduler,
        ))
        .unwrap();
    let err = rt
        .block_on(hello(&conn, client_hello()))
        .expect_err("a worker certificate acted as a client");
    assert!(err.contains("needs a client certificate"), "{err}");
    let o = cluster.as_client(&pki, "node-0", &["len", &fixture()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("needs a client certificate"),
        "{}",
        stderr(&o)
    );
    cluster.still_answers(&pki);

    // 6. Forged deliveries to a worker's peer endpoint: only worker
    // certificates of this CA get a connection.
    let workers = get_json(&format!("{}api/cluster", cluster.dashboard()))["workers"].clone();
    let peer = workers[0]["peer_address"].as_str().unwrap().to_string();
    let cert_name = workers[0]["certificate"].as_str().unwrap().to_string();
    assert!(cert_name.starts_with("node-"), "{workers}");
    for (what, creds) in [
        ("no certificate", None),
        ("a client certificate", Some(pki.credentials("admin"))),
        (
            "a worker certificate of another CA",
            Some(Credentials {
                ca_pem: pki.ca_pem(),
                ..other.credentials("node-0")
            }),
        ),
    ] {
        let admitted = rt.block_on(async {
            let Ok(conn) = raw_connect_peer(&peer, &cert_name, &pki.ca_pem(), creds.as_ref()).await
            else {
                return false;
            };
            // Had it got in, a push would follow on a stream: the
            // connection must be gone by then.
            if let Ok((mut send, _recv)) = conn.open_bi().await {
                let _ = send.write_all(b"forged").await;
            }
            tokio::time::timeout(Duration::from_secs(2), conn.closed())
                .await
                .is_err()
        });
        assert!(!admitted, "{what} got a peer connection to {peer}");
    }
    // A worker of the cluster (valid certificate, right role) pushing rows
    // into a job the scheduler never announced it for: refused before any
    // payload is read.
    let insider = pki.credentials("node-1");
    let answer = rt.block_on(async {
        let conn = raw_connect_peer(&peer, &cert_name, &pki.ca_pem(), Some(&insider))
            .await
            .expect("a worker certificate of the cluster connects");
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let push = stratus_protocol::messages::PeerPush {
            mailbox: stratus_protocol::messages::MailboxKey {
                job: 987_654,
                tag: 0,
            },
            from_worker: 1,
            parts: vec![],
        };
        stratus_protocol::framing::send_message(&mut send, &push, "peer")
            .await
            .unwrap();
        let _ = send.write_all(&[7u8; 1024]).await;
        let _ = send.finish();
        recv.read_to_end(4096).await.unwrap_or_default()
    });
    assert_eq!(
        answer.first(),
        Some(&0u8),
        "a forged delivery was acknowledged"
    );
    let reason = String::from_utf8_lossy(&answer[1..]).to_string();
    assert!(
        reason.contains("job 987654")
            && reason.contains("announced no delivery from worker certificate 'node-1'"),
        "{reason}"
    );
    // A header naming more mailboxes than one stream may carry: refused on
    // its header too.
    let answer = rt.block_on(async {
        let conn = raw_connect_peer(&peer, &cert_name, &pki.ca_pem(), Some(&insider))
            .await
            .expect("a worker certificate of the cluster connects");
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let parts = (0..=stratus_protocol::messages::MAX_PUSH_PARTS as u32)
            .map(|tag| stratus_protocol::messages::PushPart { tag, bytes: 1 })
            .collect();
        let push = stratus_protocol::messages::PeerPush {
            mailbox: stratus_protocol::messages::MailboxKey {
                job: 987_655,
                tag: 0,
            },
            from_worker: 1,
            parts,
        };
        stratus_protocol::framing::send_message(&mut send, &push, "peer")
            .await
            .unwrap();
        let _ = send.finish();
        recv.read_to_end(4096).await.unwrap_or_default()
    });
    let reason = String::from_utf8_lossy(answer.get(1..).unwrap_or_default()).to_string();
    assert!(
        answer.first() == Some(&0u8) && reason.contains("1025 parts in one stream, at most 1024"),
        "{reason}"
    );
    // Legitimate peer links still work: a group-by exchanges partials.
    let o = cluster.as_client(&pki, "admin", &["persist", &fixture(), "--as", "isd"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cluster.as_client(
        &pki,
        "admin",
        &["groupby", "isd", "--by", "year", "--agg", "count"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("2019"), "{}", stdout(&o));
    cluster.still_answers(&pki);

    // 7. A leaked certificate: on the deny-list, then SIGHUP.
    pki.issue("client", "leaked", "");
    let o = cluster.as_client(&pki, "leaked", &["len", &fixture()]);
    assert!(o.status.success(), "before the deny-list: {}", stderr(&o));
    let serial =
        pki::inspect(&pki::first_cert_der(&read_text(&pki.ca_dir().join("leaked.pem"))).unwrap())
            .unwrap()
            .serial;
    write_text(
        &cluster.config,
        &format!("tls_deny_serials = [\"{serial}\"]\n"),
    );
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(cluster.scheduler.id() as libc::pid_t, libc::SIGHUP);
    }
    eventually(Duration::from_secs(10), "the reload", || {
        cluster
            .log("scheduler")
            .contains("SIGHUP: reloaded")
            .then_some(())
    });
    let o = cluster.as_client(&pki, "leaked", &["len", &fixture()]);
    assert!(!o.status.success(), "a denied certificate still got in");
    assert!(
        stderr(&o).contains("refused our certificate"),
        "{}",
        stderr(&o)
    );
    // The client may hear the refusal before the scheduler's log line lands.
    let denied = format!("serial {serial}) is on the deny-list");
    eventually(
        Duration::from_secs(10),
        "the deny-list refusal logged",
        || cluster.log("scheduler").contains(&denied).then_some(()),
    );
    cluster.still_answers(&pki);

    // Every request is logged with the client certificate that sent it.
    let log = cluster.log("scheduler");
    assert!(log.contains("from client 'admin': len"), "{log}");
    let jobs = get_json(&format!("{}api/dashboard", cluster.dashboard()));
    let text = jobs.to_string();
    assert!(text.contains("\"client\":\"admin\""), "{text}");
}

/// Dial a worker's peer endpoint as a peer would (name checked: `cert_name`).
async fn raw_connect_peer(
    peer: &str,
    cert_name: &str,
    ca_pem: &str,
    credentials: Option<&Credentials>,
) -> Result<quinn::Connection, String> {
    let config = match credentials {
        Some(c) => transport::client_config(c, Role::Worker, &DenyList::default()).unwrap(),
        None => anonymous_config(ca_pem),
    };
    let endpoint = transport::client_endpoint(config).unwrap();
    let conn = endpoint
        .connect(peer.parse().unwrap(), cert_name)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_millis(500), conn.closed()).await {
        Ok(reason) => Err(reason.to_string()),
        Err(_) => Ok(conn),
    }
}

#[test]
fn clients_check_the_scheduler_role_and_name() {
    let pki = Pki::new("tls-names");
    pki.issue("worker", "impostor", "127.0.0.1");
    pki.issue("scheduler", "head", "127.0.0.1");
    pki.issue("client", "alice", "");
    let rt = runtime();
    rt.block_on(async {
        // A server presenting `cert` of our CA, accepting our clients.
        let serve = |name: &str| {
            let config = transport::server_config(
                &pki.credentials(name),
                &[Role::Client],
                &DenyList::default(),
            )
            .unwrap();
            let endpoint =
                transport::server_endpoint("127.0.0.1:0".parse().unwrap(), config).unwrap();
            let port = endpoint.local_addr().unwrap().port();
            let accept = endpoint.clone();
            tokio::spawn(async move {
                while let Some(incoming) = accept.accept().await {
                    tokio::spawn(async move {
                        if let Ok(conn) = incoming.await {
                            conn.closed().await;
                        }
                    });
                }
            });
            (endpoint, port)
        };
        let alice = pki.credentials("alice");
        // A worker certificate of the same CA can not pose as the scheduler.
        let (_impostor, port) = serve("impostor");
        let err = raw_connect(
            &format!("127.0.0.1:{port}"),
            &pki.ca_pem(),
            Some(&alice),
            Role::Scheduler,
        )
        .await
        .expect_err("a worker certificate posed as the scheduler");
        assert!(err.contains("expected a scheduler certificate"), "{err}");
        // A scheduler certificate is checked against the name dialed.
        let (_head, port) = serve("head");
        raw_connect(
            &format!("127.0.0.1:{port}"),
            &pki.ca_pem(),
            Some(&alice),
            Role::Scheduler,
        )
        .await
        .expect("the scheduler's certificate names 127.0.0.1");
        let err = raw_connect(
            &format!("localhost:{port}"),
            &pki.ca_pem(),
            Some(&alice),
            Role::Scheduler,
        )
        .await
        .expect_err("a certificate without 'localhost' was accepted for it");
        assert!(err.contains("not valid for 'localhost'"), "{err}");
    });
}

#[test]
fn a_zero_set_up_cluster_keeps_its_ca_and_guards_its_scheduler_file() {
    let data = TempDir::new("tls-zero");
    let data_dir = data.path().join("data");
    let data_arg = data_dir.display().to_string();
    let first = start_local(1, &["--data-dir", &data_arg, "--no-nanny"]);
    assert_eq!(
        first.client(&["len", &fixture()]).unwrap(),
        format!("{FIXTURE_ROWS}\n")
    );
    // The scheduler file carries credentials: only its owner may read it.
    assert_eq!(mode(&first.file), 0o600);
    let file = SchedulerFile::read(&first.file).unwrap();
    assert!(file.tls_cert.is_some() && file.tls_key.is_some());
    let tls_dir = data_dir.join("tls");
    assert_eq!(mode(&tls_dir), 0o700);
    assert_eq!(mode(&tls_dir.join("ca.key")), 0o600);
    let ca = read_text(&tls_dir.join("ca.pem"));
    assert_eq!(file.tls_ca, ca);
    // Its workers have certificates of their own names.
    let workers = first.json("api/cluster")["workers"].clone();
    assert_eq!(workers[0]["certificate"], "local-0", "{workers}");

    // A worker on "another host" joins with a certificate issued from the
    // cluster's CA directory.
    let tls_arg = tls_dir.display().to_string();
    let o = stratus_cli(&[
        "certs", "issue", &tls_arg, "--role", "worker", "--name", "far-away",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut far = Command::new(bin("stratus-worker"))
        .arg(&file.address)
        .arg("--tls-ca")
        .arg(tls_dir.join("ca.pem"))
        .arg("--tls-cert")
        .arg(tls_dir.join("far-away.pem"))
        .arg("--tls-key")
        .arg(tls_dir.join("far-away.key"))
        .args(["--nthreads", "1", "--memory-limit", "1GiB"])
        .arg("--data-root")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .env_remove("STRATUS_SCHEDULER_FILE")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), "the far-away worker", || {
        let info = first.client(&["info"]).ok()?;
        info.contains("workers=2 ").then_some(())
    });
    assert_eq!(
        first.client(&["len", &fixture()]).unwrap(),
        format!("{FIXTURE_ROWS}\n")
    );
    let _ = far.kill();
    let _ = far.wait();
    let old_file = file;
    drop(first);

    // A restart on the same data directory keeps the CA: credentials from
    // the old scheduler file still work against the new scheduler.
    let second = start_local(1, &["--data-dir", &data_arg, "--no-nanny"]);
    let new_file = SchedulerFile::read(&second.file).unwrap();
    assert_eq!(
        new_file.tls_ca, ca,
        "the cluster CA changed across a restart"
    );
    let target = stratus::Target {
        address: new_file.address.clone(),
        ca_pem: old_file.tls_ca.clone(),
        cert_pem: old_file.tls_cert.clone().unwrap(),
        key_pem: old_file.tls_key.clone().unwrap(),
        dashboard: None,
    };
    let rows = runtime().block_on(async {
        let client = stratus::Client::connect_with(&target, None).await.unwrap();
        let rows = client.len(&fixture()).await.unwrap();
        client.close().await;
        rows
    });
    assert_eq!(rows, FIXTURE_ROWS);
}
