//! Length-prefixed rkyv frames on QUIC streams.
//!
//! A frame is a little-endian `u32` length followed by that many bytes of rkyv
//! archive. Bytes off the network have no alignment, so each frame is read into
//! an [`AlignedVec`] once and validated (bytecheck) before anything reads it;
//! nothing that came off the wire is ever accessed unchecked. A frame that is
//! too large or fails validation is an error naming the peer, never a panic.
//!
//! The buffer grows as the body's bytes arrive ([`READ_CHUNK`] at a time), so
//! a header announcing [`MAX_FRAME_BYTES`] costs nothing until the peer
//! actually sends that much; before a peer's `Hello` is accepted, frames are
//! capped at [`MAX_HELLO_FRAME_BYTES`] ([`read_frame_limited`]).

use crate::{ProtocolError, Result};
use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::BoxedError;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::Portable;

/// Largest control frame accepted (head results ride in control frames).
pub const MAX_FRAME_BYTES: usize = 256 << 20;

/// Largest frame accepted before the handshake completes (a `Hello`, a
/// `PeerPush`): a stranger can make us buffer no more than this.
pub const MAX_HELLO_FRAME_BYTES: usize = 64 << 10;

/// A frame body is read (and its buffer grown) this many bytes at a time.
pub const READ_CHUNK: usize = 64 << 10;

/// A received, not yet validated frame.
pub type Frame = AlignedVec<16>;

/// Serialize a message into a frame body.
pub fn encode<T>(message: &T) -> Result<AlignedVec<16>>
where
    T: for<'a> rkyv::Serialize<HighSerializer<AlignedVec<16>, ArenaHandle<'a>, BoxedError>>,
{
    rkyv::to_bytes::<BoxedError>(message).map_err(|e| ProtocolError::Peer {
        peer: "self".into(),
        what: format!("cannot encode message: {e}"),
    })
}

/// Validate a frame and return the archived message, read in place.
pub fn access<'a, A>(frame: &'a [u8], peer: &str) -> Result<&'a A>
where
    A: Portable + for<'b> CheckBytes<HighValidator<'b, BoxedError>>,
{
    rkyv::access::<A, BoxedError>(frame).map_err(|e| ProtocolError::Peer {
        peer: peer.to_string(),
        what: format!("invalid frame ({} bytes): {e}", frame.len()),
    })
}

/// Deserialize an (already validated) archived value into its owned form.
pub fn to_owned<A, T>(archived: &A, peer: &str) -> Result<T>
where
    A: rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<BoxedError>>,
{
    rkyv::deserialize::<T, BoxedError>(archived).map_err(|e| ProtocolError::Peer {
        peer: peer.to_string(),
        what: format!("cannot deserialize message: {e}"),
    })
}

#[cfg(feature = "transport")]
/// Write one frame.
pub async fn write_frame(send: &mut quinn::SendStream, body: &[u8], peer: &str) -> Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| ProtocolError::Peer {
        peer: peer.to_string(),
        what: format!("frame of {} bytes is too large to send", body.len()),
    })?;
    let io = |e: quinn::WriteError| ProtocolError::Peer {
        peer: peer.to_string(),
        what: format!("write failed: {e}"),
    };
    send.write_all(&len.to_le_bytes()).await.map_err(io)?;
    send.write_all(body).await.map_err(io)?;
    Ok(())
}

#[cfg(feature = "transport")]
/// Encode and write one message.
pub async fn send_message<T>(send: &mut quinn::SendStream, message: &T, peer: &str) -> Result<()>
where
    T: for<'a> rkyv::Serialize<HighSerializer<AlignedVec<16>, ArenaHandle<'a>, BoxedError>>,
{
    let body = encode(message)?;
    write_frame(send, &body, peer).await
}

#[cfg(feature = "transport")]
/// Read one frame of at most [`MAX_FRAME_BYTES`]; `Ok(None)` when the peer
/// finished the stream cleanly between frames.
pub async fn read_frame(recv: &mut quinn::RecvStream, peer: &str) -> Result<Option<Frame>> {
    read_frame_limited(recv, peer, MAX_FRAME_BYTES).await
}

#[cfg(feature = "transport")]
/// Read one frame of at most `max` bytes; `Ok(None)` when the peer finished
/// the stream cleanly between frames. The buffer grows with the bytes that
/// arrived, never to the announced length up front.
pub async fn read_frame_limited(
    recv: &mut quinn::RecvStream,
    peer: &str,
    max: usize,
) -> Result<Option<Frame>> {
    let mut len_bytes = [0u8; 4];
    let err = |what: String| ProtocolError::Peer {
        peer: peer.to_string(),
        what,
    };
    // Distinguish a clean end of stream (no byte of a new frame) from a cut frame.
    match recv.read(&mut len_bytes[..1]).await {
        Ok(None) => return Ok(None),
        Ok(Some(0)) => return Ok(None),
        Ok(Some(_)) => {}
        Err(e) => return Err(err(format!("read failed: {}", read_error(&e)))),
    }
    recv.read_exact(&mut len_bytes[1..]).await.map_err(|e| {
        err(format!(
            "stream ended inside a frame header: {}",
            read_exact_error(&e)
        ))
    })?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    check_frame_len(len, max).map_err(err)?;
    let mut frame = AlignedVec::<16>::with_capacity(len.min(READ_CHUNK));
    while frame.len() < len {
        let start = frame.len();
        let end = start + (len - start).min(READ_CHUNK);
        frame.resize(end, 0);
        recv.read_exact(&mut frame[start..end]).await.map_err(|e| {
            err(format!(
                "stream ended inside a {len}-byte frame (after {start} bytes): {}",
                read_exact_error(&e)
            ))
        })?;
    }
    Ok(Some(frame))
}

/// Whether an announced frame length is acceptable under `max`.
pub fn check_frame_len(len: usize, max: usize) -> std::result::Result<(), String> {
    if len > max {
        return Err(format!(
            "frame of {len} bytes exceeds the limit of {max} bytes on this stream"
        ));
    }
    Ok(())
}

#[cfg(feature = "transport")]
/// A read error with its cause: quinn's "connection lost" hides why (a TLS
/// alert saying our certificate was refused, a timeout).
fn read_error(e: &quinn::ReadError) -> String {
    match e {
        quinn::ReadError::ConnectionLost(cause) => format!("connection lost: {cause}"),
        other => other.to_string(),
    }
}

#[cfg(feature = "transport")]
fn read_exact_error(e: &quinn::ReadExactError) -> String {
    match e {
        quinn::ReadExactError::ReadError(e) => read_error(e),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{ArchivedFromWorker, FromWorker, TaskOutput, TaskReport};

    #[test]
    fn roundtrip_in_place() {
        let msg = FromWorker::Reports(vec![TaskReport::Finished {
            id: 7,
            output: TaskOutput::Loaded {
                key: crate::messages::PartitionKey { frame: 1, index: 2 },
                rows: 10,
                bytes: 80,
                fetched: 0,
            },
        }]);
        let body = encode(&msg).unwrap();
        let archived = access::<ArchivedFromWorker>(&body, "test").unwrap();
        let owned: FromWorker = to_owned(archived, "test").unwrap();
        assert_eq!(owned, msg);
    }

    #[test]
    fn corrupt_frame_is_an_error_naming_the_peer() {
        let msg = FromWorker::Heartbeat {
            memory_used: 1,
            running: 2,
            spilled: 3,
            paused: true,
        };
        let body = encode(&msg).unwrap();
        let mut bad = AlignedVec::<16>::new();
        bad.extend_from_slice(&body);
        let n = bad.len();
        // An enum tag far outside the variants.
        for b in bad[..n].iter_mut() {
            *b = 0xff;
        }
        let Err(err) = access::<ArchivedFromWorker>(&bad, "worker-9 (127.0.0.1:5)") else {
            panic!("corrupt frame validated");
        };
        assert!(err.to_string().contains("worker-9"), "{err}");
        let empty = AlignedVec::<16>::new();
        assert!(access::<ArchivedFromWorker>(&empty, "p").is_err());
    }
}
