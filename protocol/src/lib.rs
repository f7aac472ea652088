//! Wire types and transport for Stratus.
//!
//! This crate owns everything that crosses a process boundary: the rkyv control
//! messages ([`messages`]), their length-prefixed framing and validation
//! ([`framing`]), Arrow IPC table data ([`ipc`]), the cluster CA and its
//! certificates ([`pki`]), mutual TLS with roles ([`tls`]), QUIC
//! endpoint setup ([`transport`]), the handshake every connection starts with
//! ([`handshake`]), statistics of live QUIC connections for
//! metrics ([`netstats`]), the scheduler's durable catalog ([`catalog`]) and the scheduler file that tells clients and
//! workers where a cluster lives ([`scheduler_file`]). It knows nothing about
//! scheduling or compute.
//!
//! The QUIC/TLS half (`pki`, `tls`, `transport`, `netstats`, the stream functions of
//! `framing`) is the default feature `transport`; without it the crate is
//! plain data, which is what the scheduler's sans-IO core depends on.

pub mod catalog;
pub mod framing;
#[cfg(feature = "transport")]
pub mod handshake;
pub mod ipc;
#[cfg(feature = "transport")]
pub mod limits;
#[cfg(feature = "logging")]
pub mod logging;
pub mod messages;
#[cfg(feature = "prometheus")]
pub mod metrics;
#[cfg(feature = "transport")]
pub mod netstats;
#[cfg(feature = "transport")]
pub mod pki;
pub mod scheduler_file;
/// systemd's `Type=notify` readiness messages (`READY=1`, `STOPPING=1`).
pub mod sd_notify;
#[cfg(feature = "transport")]
pub mod tls;
#[cfg(feature = "transport")]
pub mod transport;
pub mod units;

/// Version of the control protocol. Peers with a different version are refused
/// at the handshake with a message naming both versions.
pub const PROTOCOL_VERSION: u32 = 8;

/// Version of the Stratus release these binaries belong to.
pub const STRATUS_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Errors of the protocol layer. Each names the peer or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("peer {peer}: {what}")]
    Peer { peer: String, what: String },
    #[error("connection to {peer} failed: {what}")]
    Connect { peer: String, what: String },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("invalid address '{address}': {what}")]
    Address { address: String, what: String },
    #[error("Arrow IPC: {0}")]
    Ipc(String),
    #[error("{path}: {what}")]
    File { path: String, what: String },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Result with a [`ProtocolError`].
pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;
