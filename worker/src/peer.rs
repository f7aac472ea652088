//! Worker-to-worker data over QUIC.
//!
//! Each worker runs one QUIC endpoint that is both a server (peers deliver
//! data to it) and a client (it delivers to peers), presenting its worker
//! certificate at both ends (mutual TLS). The endpoint admits only
//! certificates of the cluster CA with the worker role (not denied); a
//! worker dialing a peer checks the CA, the worker role and the certificate
//! name the scheduler saw on that peer's own connection (`PeerRef::cert_name`),
//! not host names. Certificates reload on SIGHUP ([`TlsConfigHandle`]).
//!
//! A delivery is one bidirectional stream: a [`PeerPush`] frame naming the
//! mailbox, then an Arrow IPC stream to the end; the receiver hands the
//! batches to its state machine (through its actor), which keeps or refuses
//! them, and answers one byte (or a refusal), so when the sender's task
//! reports, the data is already in the receiver's mailbox.
//!
//! Limits ([`PeerLimits`]): connections in total and per peer address; the
//! first frame is capped like a `Hello` and due within the `Hello` timeout;
//! the bytes buffered by all deliveries in progress are reserved against the
//! memory limit as they arrive, and a delivery that would go over it is
//! refused with the reason before it is buffered. Once decoded, a delivery
//! is the store's to count; the store may hold its answer back until spills
//! make room (backpressure on the sender, not a refusal).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use tracing::{debug, warn};

use stratus_protocol::framing::{
    access, read_frame_limited, send_message, to_owned, MAX_HELLO_FRAME_BYTES,
};
use stratus_protocol::handshake::HELLO_TIMEOUT;
use stratus_protocol::limits::{ConnectionLimiter, ConnectionLimits};
use stratus_protocol::messages::{
    ArchivedPeerPush, MailboxKey, PeerPush, PeerRef, PushPart, MAX_PUSH_PARTS,
};
use stratus_protocol::netstats::{ConnectionTracker, PeerKind, TrackedConnection};
use stratus_protocol::pki::Role;
use stratus_protocol::tls::{Credentials, DenyList};
use stratus_protocol::{tls, transport, ProtocolError};

use crate::state::TaskError;

/// Largest delivery accepted (one partition's share of a shuffle).
const MAX_DELIVERY_BYTES: usize = 8 << 30;

/// A worker's TLS material: its credentials and the serials it refuses.
#[derive(Clone)]
pub struct TlsConfig {
    credentials: Credentials,
    deny: DenyList,
}

impl TlsConfig {
    pub fn new(credentials: Credentials, deny: DenyList) -> TlsConfig {
        TlsConfig { credentials, deny }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    pub fn deny(&self) -> &DenyList {
        &self.deny
    }

    fn server_config(&self) -> Result<quinn::ServerConfig, ProtocolError> {
        transport::server_config(&self.credentials, &[Role::Worker], &self.deny)
    }
}

/// The worker's current [`TlsConfig`], shared by its connections and
/// swapped on SIGHUP: new connections use the new one, open ones carry on.
#[derive(Clone)]
pub struct TlsConfigHandle(Arc<Mutex<TlsSlot>>);

struct TlsSlot {
    config: TlsConfig,
    /// The peer endpoint, once bound, whose server side follows reloads.
    endpoint: Option<quinn::Endpoint>,
}

impl std::fmt::Debug for TlsConfigHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.current().credentials.own().map(|c| c.name);
        f.debug_struct("TlsConfigHandle")
            .field("certificate", &name.unwrap_or_default())
            .finish()
    }
}

impl TlsConfigHandle {
    pub fn new(config: TlsConfig) -> TlsConfigHandle {
        TlsConfigHandle(Arc::new(Mutex::new(TlsSlot {
            config,
            endpoint: None,
        })))
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, TlsSlot> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The config in force.
    pub fn current(&self) -> TlsConfig {
        self.slot().config.clone()
    }

    /// Put `config` in force; on an error (bad material) the old one stays.
    pub fn reload(&self, config: TlsConfig) -> Result<(), ProtocolError> {
        let server = config.server_config()?;
        let mut slot = self.slot();
        if let Some(endpoint) = &slot.endpoint {
            endpoint.set_server_config(Some(server));
        }
        slot.config = config;
        Ok(())
    }
}

/// What a worker's peer endpoint admits.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerLimits {
    pub connections: ConnectionLimits,
    /// Bytes all deliveries in progress may buffer together (the worker's
    /// memory limit; 0 = no limit but the per-delivery cap).
    pub max_buffered: u64,
}

/// Bytes buffered by deliveries in progress, against a limit.
struct Buffered {
    used: AtomicU64,
    max: u64,
}

/// Bytes one delivery reserved; given back when dropped.
struct Reservation<'a> {
    pool: &'a Buffered,
    bytes: u64,
}

impl Reservation<'_> {
    /// Reserve `more` bytes, or say why not.
    fn grow(&mut self, more: u64) -> Result<(), String> {
        let before = self.pool.used.fetch_add(more, Ordering::AcqRel);
        if self.pool.max > 0 && before + more > self.pool.max {
            self.pool.used.fetch_sub(more, Ordering::AcqRel);
            return Err(format!(
                "deliveries in progress hold {before} bytes; {} more would exceed the memory limit of {}",
                self.bytes + more,
                self.pool.max
            ));
        }
        self.bytes += more;
        Ok(())
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.pool.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// How long a delivery waits for the scheduler's announcement of its job and
/// sender (which is sent before the sender runs, on another stream).
const ANNOUNCEMENT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Jobs whose announcements are kept (the oldest go first; a job's are also
/// dropped when the scheduler forgets it).
const ANNOUNCED_JOBS: usize = 4096;

/// The deliveries the scheduler announced (`ToWorker::Expect`): for each
/// job, the certificate names of the workers that will deliver to us. A
/// peer endpoint admits a delivery only for an announced job from an
/// announced sender, so a worker of the cluster can not push rows into a job
/// it has no part in.
#[derive(Clone, Default)]
pub struct Announcements(Arc<AnnouncementsInner>);

#[derive(Default)]
struct AnnouncementsInner {
    senders: Mutex<std::collections::BTreeMap<u64, std::collections::HashSet<String>>>,
    changed: tokio::sync::Notify,
}

impl Announcements {
    /// The scheduler announced `sender` for `job`.
    pub fn expect(&self, job: u64, sender: String) {
        let mut senders = self.0.senders.lock().unwrap_or_else(|e| e.into_inner());
        senders.entry(job).or_default().insert(sender);
        while senders.len() > ANNOUNCED_JOBS {
            senders.pop_first();
        }
        drop(senders);
        self.0.changed.notify_waiters();
    }

    /// The job ended.
    pub fn forget(&self, job: u64) {
        self.0
            .senders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&job);
    }

    fn announced(&self, job: u64, sender: &str) -> bool {
        self.0
            .senders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&job)
            .is_some_and(|s| s.contains(sender))
    }

    /// Whether `sender` is (or within `wait` becomes) announced for `job`.
    async fn wait_for(&self, job: u64, sender: &str, wait: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.0.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.announced(job, sender) {
                return true;
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => return self.announced(job, sender),
            }
        }
    }
}

/// The connection to one peer address, once opened (see
/// [`PeerService::connection`]).
type ConnectionSlot = tokio::sync::Mutex<Option<(quinn::Connection, TrackedConnection)>>;

/// A worker's peer endpoint.
pub struct PeerService {
    endpoint: quinn::Endpoint,
    /// Where peers reach us (`HOST:PORT`).
    pub address: String,
    tls: TlsConfigHandle,
    /// Our connections to peers, by peer address, tracked for metrics. Each
    /// address has one slot, held while its connection is being opened, so
    /// the tasks of one shuffle that start together share one handshake.
    connections: Mutex<HashMap<String, Arc<ConnectionSlot>>>,
    tracker: ConnectionTracker,
    /// Which jobs may deliver here, from whom.
    announcements: Announcements,
}

/// Something to do with delivered data: hand it to the worker's state
/// machine, which keeps it or refuses it with a reason.
pub type Deliver = Arc<
    dyn Fn(MailboxKey, u64, Vec<RecordBatch>) -> futures_like::BoxFuture<Result<(), String>>
        + Send
        + Sync,
>;

/// A minimal boxed future alias (avoids a dependency on `futures`).
pub mod futures_like {
    /// A boxed, sendable future.
    pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;
}

impl PeerService {
    /// Bind on `ip` (any free port), presenting the worker certificate of
    /// `tls`; connections to and from peers are tracked in `tracker`.
    pub fn bind(
        ip: std::net::IpAddr,
        tracker: ConnectionTracker,
        tls: TlsConfigHandle,
    ) -> Result<Arc<PeerService>, ProtocolError> {
        let config = tls.current().server_config()?;
        let endpoint = transport::server_endpoint(SocketAddr::new(ip, 0), config)?;
        let port = endpoint.local_addr()?.port();
        tls.slot().endpoint = Some(endpoint.clone());
        Ok(Arc::new(PeerService {
            endpoint,
            address: format!("{ip}:{port}"),
            tls,
            connections: Mutex::new(HashMap::new()),
            announcements: Announcements::default(),
            tracker,
        }))
    }

    /// The deliveries announced to this endpoint (fed by the scheduler link).
    pub fn announcements(&self) -> &Announcements {
        &self.announcements
    }

    /// Accept deliveries forever (within `limits`), handing each to `deliver`.
    pub async fn serve(self: Arc<Self>, deliver: Deliver, limits: PeerLimits) {
        let limiter = ConnectionLimiter::new(limits.connections);
        let buffered = Arc::new(Buffered {
            used: AtomicU64::new(0),
            max: limits.max_buffered,
        });
        while let Some(incoming) = self.endpoint.accept().await {
            let remote = incoming.remote_address();
            let permit = match limiter.admit(remote.ip()) {
                Ok(permit) => permit,
                Err(reason) => {
                    warn!("refusing a peer connection from {remote}: {reason}");
                    incoming.refuse();
                    continue;
                }
            };
            let deliver = deliver.clone();
            let tracker = self.tracker.clone();
            let buffered = buffered.clone();
            let announcements = self.announcements.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let conn = match incoming.await {
                    Ok(conn) => conn,
                    Err(e) => {
                        warn!("refused a peer connection from {remote}: {e}");
                        return;
                    }
                };
                // The handshake checked the CA and the worker role.
                let name = match tls::peer_certificate(&conn) {
                    Ok(cert) => cert.name,
                    Err(e) => {
                        warn!("refused a peer connection from {remote}: {e}");
                        conn.close(2u32.into(), b"no usable certificate");
                        return;
                    }
                };
                // Peers connect from their peer endpoint: its address names them.
                let _tracked = tracker.track(PeerKind::Worker, remote.to_string(), &conn);
                let peer = format!("peer {remote} (certificate '{name}')");
                while let Ok((send, recv)) = conn.accept_bi().await {
                    let deliver = deliver.clone();
                    let peer = peer.clone();
                    let buffered = buffered.clone();
                    let name = name.clone();
                    let announcements = announcements.clone();
                    tokio::spawn(async move {
                        let from = Sender {
                            certificate: &name,
                            announcements: &announcements,
                        };
                        if let Err(e) = receive(send, recv, deliver, &peer, from, &buffered).await {
                            warn!("{e}");
                        }
                    });
                }
            });
        }
    }

    async fn connection(&self, to: &PeerRef) -> Result<quinn::Connection, String> {
        let slot = self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(to.address.clone())
            .or_default()
            .clone();
        let mut held = slot.lock().await;
        if let Some((conn, _)) = held.as_ref() {
            if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
        }
        let tls = self.tls.current();
        let config = transport::client_config(tls.credentials(), Role::Worker, tls.deny())
            .map_err(|e| e.to_string())?;
        let addr: SocketAddr = to.address.parse().map_err(|e| {
            format!(
                "worker {} has a bad peer address {}: {e}",
                to.worker, to.address
            )
        })?;
        let conn = self
            .endpoint
            .connect_with(config, addr, &to.cert_name)
            .map_err(|e| format!("cannot reach worker {} at {}: {e}", to.worker, to.address))?
            .await
            .map_err(|e| format!("cannot reach worker {} at {}: {e}", to.worker, to.address))?;
        let tracked = self.tracker.track(PeerKind::Worker, &to.address, &conn);
        *held = Some((conn.clone(), tracked));
        Ok(conn)
    }

    /// Open (in the background, all at once) the connections to `peers`
    /// this worker does not hold yet, so a task that is about to send to
    /// them overlaps the handshakes with its own compute. A failure is left
    /// for the send that needs the connection to report.
    pub fn warm(self: &Arc<Self>, peers: &[PeerRef], me: u64) {
        for peer in peers.iter().filter(|p| p.worker != me) {
            let (this, peer) = (self.clone(), peer.clone());
            tokio::spawn(async move {
                if let Err(e) = this.connection(&peer).await {
                    debug!("opening a connection ahead of a shuffle: {e}");
                }
            });
        }
    }

    /// Deliver batches to a mailbox on another worker; returns once the peer
    /// has stored them. Returns the bytes sent.
    pub async fn send(
        &self,
        to: &PeerRef,
        push: PeerPush,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<u64, TaskError> {
        // Column buffers go out as they are: no copy into one message.
        let chunks =
            stratus_protocol::ipc::encode_chunks(schema, batches).map_err(|e| e.to_string())?;
        self.push(to, push, chunks).await
    }

    /// Deliver several mailboxes' batches (`(tag, batches)` of job `job`,
    /// at most [`MAX_PUSH_PARTS`]) to another worker in one stream, each as
    /// its own Arrow IPC stream; returns once the peer has stored them all.
    pub async fn send_parts(
        &self,
        to: &PeerRef,
        job: u64,
        from_worker: u64,
        parts: Vec<(u32, Vec<RecordBatch>)>,
    ) -> Result<u64, TaskError> {
        let mut chunks = Vec::new();
        let mut heads = Vec::with_capacity(parts.len());
        for (tag, batches) in &parts {
            let Some(schema) = batches.first().map(|b| b.schema()) else {
                continue;
            };
            let encoded = stratus_protocol::ipc::encode_chunks(&schema, batches)
                .map_err(|e| e.to_string())?;
            let bytes = encoded.iter().map(|c| c.len() as u64).sum();
            heads.push(PushPart { tag: *tag, bytes });
            chunks.extend(encoded);
        }
        let Some(first) = heads.first() else {
            return Ok(0);
        };
        let push = PeerPush {
            mailbox: MailboxKey {
                job,
                tag: first.tag,
            },
            from_worker,
            parts: heads,
        };
        self.push(to, push, chunks).await
    }

    /// One delivery stream: the header, the payload, then the peer's answer.
    async fn push(
        &self,
        to: &PeerRef,
        push: PeerPush,
        mut chunks: Vec<bytes::Bytes>,
    ) -> Result<u64, TaskError> {
        let peer = format!("worker {} ({})", to.worker, to.address);
        // A failed connection or stream names the peer (it may have died:
        // the scheduler decides); a refusal is the peer's answer.
        let lost = |message: String| TaskError::unreachable(to.worker, message);
        let conn = self.connection(to).await.map_err(lost)?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| lost(format!("{peer}: cannot open a stream: {e}")))?;
        send_message(&mut send, &push, &peer)
            .await
            .map_err(|e| lost(e.to_string()))?;
        let bytes = chunks.iter().map(|c| c.len() as u64).sum();
        send.write_all_chunks(&mut chunks)
            .await
            .map_err(|e| lost(format!("{peer}: send failed: {e}")))?;
        send.finish().map_err(|e| lost(format!("{peer}: {e}")))?;
        let mut ack = [0u8; 1];
        recv.read_exact(&mut ack)
            .await
            .map_err(|e| lost(format!("{peer} did not acknowledge the delivery: {e}")))?;
        if ack[0] != 1 {
            let mut reason = Vec::new();
            let _ = recv.read_to_end(4096).await.map(|r| reason = r);
            return Err(format!(
                "{peer} refused the delivery: {}",
                String::from_utf8_lossy(&reason)
            )
            .into());
        }
        Ok(bytes)
    }
}

/// Who sends on a peer connection, and what they may send.
struct Sender<'a> {
    /// The name of the (verified) certificate of the connection.
    certificate: &'a str,
    announcements: &'a Announcements,
}

async fn refuse_delivery(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    peer: &str,
    reason: String,
) -> Result<(), ProtocolError> {
    let _ = recv.stop(1u32.into());
    let _ = send.write_all(&[0]).await;
    let _ = send.write_all(reason.as_bytes()).await;
    let _ = send.finish();
    Err(ProtocolError::Peer {
        peer: peer.to_string(),
        what: reason,
    })
}

async fn receive(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    deliver: Deliver,
    peer: &str,
    from: Sender<'_>,
    buffered: &Buffered,
) -> Result<(), ProtocolError> {
    let first = read_frame_limited(&mut recv, peer, MAX_HELLO_FRAME_BYTES);
    let Some(frame) = tokio::time::timeout(HELLO_TIMEOUT, first)
        .await
        .map_err(|_| ProtocolError::Peer {
            peer: peer.to_string(),
            what: format!(
                "sent no delivery header within {} s",
                HELLO_TIMEOUT.as_secs()
            ),
        })??
    else {
        return Ok(());
    };
    let push: PeerPush = to_owned(access::<ArchivedPeerPush>(&frame, peer)?, peer)?;
    let job = push.mailbox.job;
    if push.parts.len() > MAX_PUSH_PARTS {
        let reason = format!(
            "refused a delivery for job {job}: {} parts in one stream, at most {MAX_PUSH_PARTS}",
            push.parts.len()
        );
        return refuse_delivery(&mut send, &mut recv, peer, reason).await;
    }
    // Before any payload is read: is this sender announced for this job?
    if !from
        .announcements
        .wait_for(job, from.certificate, ANNOUNCEMENT_WAIT)
        .await
    {
        let reason = format!(
            "refused a delivery for job {job}: the scheduler announced no delivery from worker certificate '{}' for it",
            from.certificate
        );
        return refuse_delivery(&mut send, &mut recv, peer, reason).await;
    }
    // Collect the stream's chunks, then assemble them once into an aligned
    // buffer (the one copy on the receiving side); decoding is zero-copy.
    // Every chunk is reserved against the memory limit before it is kept.
    let mut reservation = Reservation {
        pool: buffered,
        bytes: 0,
    };
    let mut chunks = Vec::new();
    let mut total = 0usize;
    loop {
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => {
                total += chunk.bytes.len();
                let refused = if total > MAX_DELIVERY_BYTES {
                    Some(format!("delivery larger than {MAX_DELIVERY_BYTES} bytes"))
                } else {
                    reservation.grow(chunk.bytes.len() as u64).err()
                };
                if let Some(reason) = refused {
                    drop(chunks);
                    let reason =
                        format!("refused a delivery for job {}: {reason}", push.mailbox.job);
                    let _ = recv.stop(1u32.into());
                    let _ = send.write_all(&[0]).await;
                    let _ = send.write_all(reason.as_bytes()).await;
                    let _ = send.finish();
                    return Err(ProtocolError::Peer {
                        peer: peer.to_string(),
                        what: reason,
                    });
                }
                chunks.push(chunk.bytes);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(ProtocolError::Peer {
                    peer: peer.to_string(),
                    what: format!("delivery cut short: {e}"),
                })
            }
        }
    }
    // One aligned buffer per mailbox (a plain delivery is one part).
    let (mailboxes, lengths): (Vec<MailboxKey>, Vec<u64>) = if push.parts.is_empty() {
        (vec![push.mailbox], vec![total as u64])
    } else {
        push.parts
            .iter()
            .map(|p| (MailboxKey { job, tag: p.tag }, p.bytes))
            .unzip()
    };
    let buffers = stratus_protocol::ipc::assemble_parts(&chunks, &lengths);
    drop(chunks);
    // From here the store counts the bytes (kept, or parked until spills
    // make room), so the reservation goes before the answer is awaited.
    drop(reservation);
    let outcome = match buffers {
        None => Err(format!(
            "refused a delivery for job {job}: its parts add up to {} bytes, {total} were sent",
            lengths.iter().fold(0u64, |a, l| a.saturating_add(*l))
        )),
        Some(buffers) => deliver_parts(&deliver, push.from_worker, mailboxes, buffers, peer).await,
    };
    match outcome {
        Ok(()) => {
            let _ = send.write_all(&[1]).await;
        }
        Err(e) => {
            debug!("refusing a delivery from {peer}: {e}");
            let _ = send.write_all(&[0]).await;
            let _ = send.write_all(e.as_bytes()).await;
        }
    }
    let _ = send.finish();
    let _ = send.stopped().await;
    Ok(())
}

/// Decode each part and hand it to the store, in order; the first refusal
/// (or undecodable part) ends the delivery with its reason.
async fn deliver_parts(
    deliver: &Deliver,
    from_worker: u64,
    mailboxes: Vec<MailboxKey>,
    buffers: Vec<arrow_buffer::Buffer>,
    peer: &str,
) -> Result<(), String> {
    for (mailbox, buffer) in mailboxes.into_iter().zip(buffers) {
        let (_, batches) = stratus_protocol::ipc::decode_batches(buffer).map_err(|e| {
            format!(
                "bad Arrow IPC from {peer} for mailbox tag {}: {e}",
                mailbox.tag
            )
        })?;
        deliver(mailbox, from_worker, batches).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_in_progress_are_reserved_against_the_limit() {
        let pool = Buffered {
            used: AtomicU64::new(0),
            max: 100,
        };
        let mut a = Reservation {
            pool: &pool,
            bytes: 0,
        };
        a.grow(60).unwrap();
        let mut b = Reservation {
            pool: &pool,
            bytes: 0,
        };
        b.grow(30).unwrap();
        let e = b.grow(20).unwrap_err();
        assert!(e.contains("memory limit of 100"), "{e}");
        assert_eq!(
            pool.used.load(Ordering::Relaxed),
            90,
            "a refused chunk is not kept"
        );
        drop(a);
        b.grow(20).unwrap();
        drop(b);
        assert_eq!(pool.used.load(Ordering::Relaxed), 0);
        // No limit: anything goes (the per-delivery cap still applies).
        let open = Buffered {
            used: AtomicU64::new(0),
            max: 0,
        };
        Reservation {
            pool: &open,
            bytes: 0,
        }
        .grow(1 << 40)
        .unwrap();
    }
}
