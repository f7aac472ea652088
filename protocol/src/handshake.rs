//! The handshake every connection to the scheduler starts with, written
//! once for both sides: the connecting side ([`introduce`]: clients and
//! workers) opens the control stream, sends [`Hello`] with its role and
//! versions and reads [`Welcome`]; the scheduler ([`receive`], then
//! [`welcome`] or [`refuse`]) reads and validates the `Hello` and refuses a
//! peer that speaks another protocol version, naming both versions.
//!
//! Before a `Hello` is accepted the peer is a stranger: its frame is capped
//! at [`MAX_HELLO_FRAME_BYTES`] and it has [`HELLO_TIMEOUT`] to send it, after
//! which the connection is closed.

use std::time::Duration;

use crate::framing::{
    access, read_frame, read_frame_limited, send_message, to_owned, MAX_HELLO_FRAME_BYTES,
};
use crate::messages::{ArchivedHello, ArchivedWelcome, Hello, PeerRole, Welcome};
use crate::{ProtocolError, Result, PROTOCOL_VERSION, STRATUS_VERSION};

/// A peer that has not sent its `Hello` this long after connecting is closed.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The control stream of a connection whose handshake succeeded.
pub struct Introduced {
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    /// The id the scheduler gave this peer.
    pub peer_id: u64,
    /// Which start of the scheduler welcomed it ([`Welcome::Accepted`]).
    pub incarnation: u64,
}

/// Introduce ourselves to the scheduler at the other end of `conn` as `role`;
/// `peer` names the scheduler in errors.
pub async fn introduce(conn: &quinn::Connection, role: PeerRole, peer: &str) -> Result<Introduced> {
    // A server that refuses our certificate does so once its side of the TLS
    // handshake ends, so the refusal shows here: say what it means.
    introduce_inner(conn, role, peer)
        .await
        .map_err(|e| match e {
            ProtocolError::Peer { peer, what } => ProtocolError::Peer {
                what: crate::transport::explain_handshake_failure(&what, &peer),
                peer,
            },
            other => other,
        })
}

async fn introduce_inner(
    conn: &quinn::Connection,
    role: PeerRole,
    peer: &str,
) -> Result<Introduced> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| ProtocolError::Peer {
        peer: peer.to_string(),
        what: format!("cannot open the control stream: {e}"),
    })?;
    let refused_as = match &role {
        PeerRole::Worker(_) => "this worker",
        PeerRole::Client { .. } => "this client",
    };
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        stratus_version: STRATUS_VERSION.to_string(),
        role,
    };
    send_message(&mut send, &hello, peer).await?;
    let frame = read_frame(&mut recv, peer)
        .await?
        .ok_or_else(|| ProtocolError::Peer {
            peer: peer.to_string(),
            what: "closed the connection during the handshake".into(),
        })?;
    match access::<ArchivedWelcome>(&frame, peer)? {
        ArchivedWelcome::Accepted {
            peer_id,
            incarnation,
            ..
        } => Ok(Introduced {
            send,
            recv,
            peer_id: peer_id.to_native(),
            incarnation: incarnation.to_native(),
        }),
        ArchivedWelcome::Rejected { reason } => Err(ProtocolError::Peer {
            peer: peer.to_string(),
            what: format!("refused {refused_as}: {reason}"),
        }),
    }
}

/// A peer's `Hello`, read and validated, with its control stream.
pub struct Received {
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub hello: Hello,
}

/// Accept a peer's control stream and read its `Hello`. A frame that is not
/// a valid `Hello` closes the connection; a peer speaking another protocol
/// version is refused (told why, then closed). Errors name `remote`.
pub async fn receive(conn: &quinn::Connection, remote: &str) -> Result<Received> {
    receive_within(conn, remote, HELLO_TIMEOUT).await
}

/// [`receive`] with a given `Hello` timeout.
pub async fn receive_within(
    conn: &quinn::Connection,
    remote: &str,
    timeout: Duration,
) -> Result<Received> {
    let peer = format!("peer {remote}");
    let first = async {
        let (send, mut recv) = conn.accept_bi().await.map_err(|e| ProtocolError::Peer {
            peer: remote.to_string(),
            what: format!("no handshake stream: {e}"),
        })?;
        let frame = read_frame_limited(&mut recv, &peer, MAX_HELLO_FRAME_BYTES).await;
        Ok::<_, ProtocolError>((send, recv, frame))
    };
    let (mut send, recv, frame) = match tokio::time::timeout(timeout, first).await {
        Ok(Ok(first)) => first,
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            conn.close(3u32.into(), b"no Hello in time");
            return Err(ProtocolError::Peer {
                peer: remote.to_string(),
                what: format!(
                    "sent no Hello within {} s; connection closed",
                    timeout.as_secs_f64()
                ),
            });
        }
    };
    let hello = match frame {
        Ok(Some(frame)) => {
            access::<ArchivedHello>(&frame, &peer).and_then(|h| to_owned::<_, Hello>(h, &peer))
        }
        Ok(None) => Err(ProtocolError::Peer {
            peer: remote.to_string(),
            what: "closed before its handshake".into(),
        }),
        Err(e) => Err(e),
    };
    let hello = match hello {
        Ok(hello) => hello,
        Err(e) => {
            conn.close(2u32.into(), b"invalid handshake frame");
            return Err(e);
        }
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        let reason = format!(
            "protocol version mismatch: scheduler speaks {PROTOCOL_VERSION} (stratus {STRATUS_VERSION}), peer {remote} speaks {} (stratus {})",
            hello.protocol_version, hello.stratus_version
        );
        refuse(conn, &mut send, &reason, &peer).await?;
        return Err(ProtocolError::Peer {
            peer: remote.to_string(),
            what: reason,
        });
    }
    Ok(Received { send, recv, hello })
}

/// Accept a peer that said `Hello`, giving it `peer_id`, on behalf of the
/// scheduler's `incarnation`.
pub async fn welcome(
    send: &mut quinn::SendStream,
    peer_id: u64,
    incarnation: u64,
    peer: &str,
) -> Result<()> {
    let welcome = Welcome::Accepted {
        peer_id,
        scheduler_version: STRATUS_VERSION.to_string(),
        incarnation,
    };
    send_message(send, &welcome, peer).await
}

/// Refuse a peer, telling it why, and give it a moment to read the reason
/// before the connection goes.
pub async fn refuse(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    reason: &str,
    peer: &str,
) -> Result<()> {
    let refusal = Welcome::Rejected {
        reason: reason.to_string(),
    };
    send_message(send, &refusal, peer).await?;
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    Ok(())
}
