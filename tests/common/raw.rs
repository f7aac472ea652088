//! Raw QUIC connections to a scheduler, for tests that speak the wire
//! themselves (forged frames, handshakes, abuse). The one place that knows
//! how a raw test peer connects (mutual TLS: with the credentials given).

use stratus_protocol::framing::{access, read_frame, send_message};
use stratus_protocol::messages::{ArchivedWelcome, Hello, PeerRole};
use stratus_protocol::pki::Role;
use stratus_protocol::tls::{CertifiedKeyPem, Credentials};

/// The client credential (`worker`: the worker credential) a zero set-up
/// scheduler file carries.
pub fn file_credentials(file: &serde_json::Value, worker: bool) -> Credentials {
    let (cert, key) = if worker {
        ("worker_tls_cert", "worker_tls_key")
    } else {
        ("tls_cert", "tls_key")
    };
    let text = |k: &str| {
        file[k]
            .as_str()
            .unwrap_or_else(|| panic!("the scheduler file has no {k}"))
            .to_string()
    };
    Credentials {
        ca_pem: text("tls_ca"),
        identity: CertifiedKeyPem {
            cert_pem: text(cert),
            key_pem: text(key),
        },
    }
}

/// A raw connection to the scheduler at `address`, presenting `credentials`.
pub async fn raw_connection(
    address: &str,
    credentials: &Credentials,
) -> (quinn::Endpoint, quinn::Connection) {
    let config = stratus_protocol::transport::client_config(
        credentials,
        Role::Scheduler,
        &Default::default(),
    )
    .unwrap();
    let endpoint = stratus_protocol::transport::client_endpoint(config).unwrap();
    let conn = stratus_protocol::transport::connect(&endpoint, address)
        .await
        .unwrap();
    (endpoint, conn)
}

/// Say `Hello` as `role` on a new control stream; the control stream if
/// welcomed, the reason if refused.
pub async fn raw_hello(
    conn: &quinn::Connection,
    role: PeerRole,
) -> Result<(quinn::SendStream, quinn::RecvStream), String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let hello = Hello {
        protocol_version: stratus_protocol::PROTOCOL_VERSION,
        stratus_version: stratus_protocol::STRATUS_VERSION.into(),
        role,
    };
    send_message(&mut send, &hello, "scheduler")
        .await
        .map_err(|e| e.to_string())?;
    let frame = read_frame(&mut recv, "scheduler")
        .await
        .map_err(|e| e.to_string())?
        .ok_or("closed during the handshake")?;
    match access::<ArchivedWelcome>(&frame, "scheduler").map_err(|e| e.to_string())? {
        ArchivedWelcome::Accepted { .. } => Ok((send, recv)),
        ArchivedWelcome::Rejected { reason } => Err(reason.to_string()),
    }
}

/// A raw client session: connected and welcomed as a client.
pub async fn raw_client(
    address: &str,
    credentials: &Credentials,
) -> (quinn::Endpoint, quinn::Connection) {
    let (endpoint, conn) = raw_connection(address, credentials).await;
    raw_hello(
        &conn,
        PeerRole::Client {
            name: "raw".into(),
            run: String::new(),
        },
    )
    .await
    .expect("a client is welcomed");
    (endpoint, conn)
}
