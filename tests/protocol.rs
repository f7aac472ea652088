//! The wire against a real `stratus-scheduler` process: version mismatch,
//! invalid frames, certificate verification.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use stratus_protocol::framing::{access, read_frame, send_message, write_frame};
use stratus_protocol::messages::{ArchivedWelcome, Hello, PeerRole};
use stratus_protocol::scheduler_file::SchedulerFile;

struct Scheduler {
    child: Child,
    file: SchedulerFile,
    _dir: TempDir,
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_scheduler() -> Scheduler {
    let dir = TempDir::new("proto");
    let path = dir.path().join("s.json");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_stratus"))
        .parent()
        .unwrap()
        .join("stratus-scheduler");
    let child = Command::new(binary)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--dashboard-address",
            "127.0.0.1:0",
        ])
        .arg("--scheduler-file")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start stratus-scheduler (build with cargo build --workspace --bins)");
    eventually(Duration::from_secs(30), "scheduler file", || {
        path.exists().then_some(())
    });
    let file = SchedulerFile::read(&path).unwrap();
    Scheduler {
        child,
        file,
        _dir: dir,
    }
}

fn file_target(s: &Scheduler) -> stratus::Target {
    stratus::Target {
        address: s.file.address.clone(),
        ca_pem: s.file.tls_ca.clone(),
        cert_pem: s.file.tls_cert.clone().expect("a client credential"),
        key_pem: s.file.tls_key.clone().expect("a client credential"),
        dashboard: None,
    }
}

async fn raw_connection(s: &Scheduler) -> (quinn::Endpoint, quinn::Connection) {
    let config = stratus_protocol::transport::client_config(
        &file_target(s).credentials(),
        stratus_protocol::pki::Role::Scheduler,
        &Default::default(),
    )
    .unwrap();
    let endpoint = stratus_protocol::transport::client_endpoint(config).unwrap();
    let conn = stratus_protocol::transport::connect(&endpoint, &s.file.address)
        .await
        .unwrap();
    (endpoint, conn)
}

#[tokio::test(flavor = "current_thread")]
async fn protocol_version_mismatch_is_a_clear_error() {
    let s = start_scheduler();
    let (_endpoint, conn) = raw_connection(&s).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = Hello {
        protocol_version: 999,
        stratus_version: "9.9.9".into(),
        role: PeerRole::Client {
            name: "old".into(),
            run: "old".into(),
        },
    };
    send_message(&mut send, &hello, "scheduler").await.unwrap();
    let frame = read_frame(&mut recv, "scheduler").await.unwrap().unwrap();
    match access::<ArchivedWelcome>(&frame, "scheduler").unwrap() {
        ArchivedWelcome::Rejected { reason } => {
            let reason = reason.as_str();
            assert!(reason.contains("protocol version mismatch"), "{reason}");
            let ours = format!("speaks {}", stratus_protocol::PROTOCOL_VERSION);
            assert!(reason.contains("999") && reason.contains(&ours), "{reason}");
        }
        ArchivedWelcome::Accepted { .. } => panic!("a peer speaking version 999 was accepted"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn invalid_frames_close_that_connection_only() {
    let s = start_scheduler();
    let (_endpoint, conn) = raw_connection(&s).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    // A frame of garbage where the handshake should be.
    write_frame(&mut send, &[0xffu8; 64], "scheduler")
        .await
        .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the scheduler closes a connection that sent garbage");
    assert!(
        reason.to_string().contains("invalid handshake frame"),
        "{reason}"
    );

    // An absurd length prefix.
    let (_endpoint2, conn2) = raw_connection(&s).await;
    let (mut send2, _recv2) = conn2.open_bi().await.unwrap();
    send2.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = send2.write_all(&[0u8; 16]).await;
        conn2.closed().await
    })
    .await
    .expect("the scheduler closes a connection announcing an oversized frame");
    assert!(
        reason.to_string().contains("invalid handshake frame"),
        "{reason}"
    );

    // The scheduler still serves well-behaved clients.
    let client = stratus::Client::connect(&file_target(&s)).await.unwrap();
    let info = client.info().await.unwrap();
    assert_eq!(info.workers, 0);
    assert_eq!(info.address, s.file.address);
    client.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn certificates_are_verified() {
    let s = start_scheduler();
    let other = stratus_protocol::pki::CertificateAuthority::generate().unwrap();
    let target = stratus::Target {
        ca_pem: other.cert_pem,
        ..file_target(&s)
    };
    let err = stratus::Client::connect(&target)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&s.file.address), "{err}");
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
}
