//! Statistics of a process's live QUIC connections, by peer, for metrics.
//!
//! A [`ConnectionTracker`] remembers the connections a process holds, each
//! labelled with what the other end is ([`PeerKind`]) and a name for it.
//! [`ConnectionTracker::snapshot`] reads quinn's statistics of every tracked
//! connection: smoothed RTT and lost packets per live connection, and UDP
//! bytes sent and received per peer kind. Those byte totals include the final
//! statistics of connections that are no longer tracked, so they never go
//! backwards. The numbers are plain: the scheduler and the worker turn them
//! into Prometheus metrics.
//!
//! Tracking is scoped by a [`TrackedConnection`] guard rather than by the
//! connection's close: a tracked handle would otherwise keep alive a
//! connection its owner meant to close by dropping its last handle.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// What is at the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerKind {
    Scheduler,
    Worker,
    Client,
}

impl PeerKind {
    /// Every kind, in label order.
    pub const ALL: [PeerKind; 3] = [PeerKind::Scheduler, PeerKind::Worker, PeerKind::Client];

    /// The label value (`scheduler`, `worker`, `client`).
    pub fn as_str(self) -> &'static str {
        match self {
            PeerKind::Scheduler => "scheduler",
            PeerKind::Worker => "worker",
            PeerKind::Client => "client",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// UDP bytes of a peer kind's connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub sent_bytes: u64,
    pub received_bytes: u64,
}

impl Traffic {
    fn of(stats: &quinn::ConnectionStats) -> Traffic {
        Traffic {
            sent_bytes: stats.udp_tx.bytes,
            received_bytes: stats.udp_rx.bytes,
        }
    }

    fn add(&mut self, other: Traffic) {
        self.sent_bytes += other.sent_bytes;
        self.received_bytes += other.received_bytes;
    }
}

/// The live connections to one peer. A peer reached by two connections at
/// once (two workers that both sent to each other) shows the higher RTT and
/// the sum of their lost packets.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSample {
    pub peer_kind: PeerKind,
    pub peer: String,
    pub rtt: Duration,
    pub lost_packets: u64,
}

/// What [`ConnectionTracker::snapshot`] read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetSnapshot {
    /// Live (not closed) connections per kind; every kind is listed.
    pub connections: Vec<(PeerKind, usize)>,
    /// One entry per peer with a live connection, sorted by kind and peer.
    pub peers: Vec<PeerSample>,
    /// UDP bytes per kind since the tracker was made; every kind is listed.
    pub traffic: Vec<(PeerKind, Traffic)>,
}

struct Entry {
    peer_kind: PeerKind,
    peer: String,
    conn: quinn::Connection,
}

#[derive(Default)]
struct Inner {
    next: u64,
    tracked: HashMap<u64, Entry>,
    /// Bytes of connections no longer tracked, per kind.
    untracked: [Traffic; 3],
}

/// The connections a process holds; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct ConnectionTracker {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for ConnectionTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionTracker")
            .field("tracked", &self.lock().tracked.len())
            .finish()
    }
}

/// Keeps a connection tracked until dropped; then its final byte counts go
/// into its kind's totals. Keep it as long as the connection is in use.
#[must_use = "the connection is tracked only while this guard lives"]
pub struct TrackedConnection {
    inner: Arc<Mutex<Inner>>,
    key: u64,
}

impl Drop for TrackedConnection {
    fn drop(&mut self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = inner.tracked.remove(&self.key) {
            let traffic = Traffic::of(&entry.conn.stats());
            inner.untracked[entry.peer_kind.index()].add(traffic);
        }
    }
}

impl ConnectionTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The data stays consistent even if a holder panicked: every update
        // is a single insert, remove or addition.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Track `conn` to `peer` (a worker's name or address, `scheduler`, a
    /// client's address) while the returned guard lives.
    pub fn track(
        &self,
        peer_kind: PeerKind,
        peer: impl Into<String>,
        conn: &quinn::Connection,
    ) -> TrackedConnection {
        let mut inner = self.lock();
        let key = inner.next;
        inner.next += 1;
        inner.tracked.insert(
            key,
            Entry {
                peer_kind,
                peer: peer.into(),
                conn: conn.clone(),
            },
        );
        TrackedConnection {
            inner: self.inner.clone(),
            key,
        }
    }

    /// Read the statistics of every tracked connection.
    pub fn snapshot(&self) -> NetSnapshot {
        let inner = self.lock();
        let mut traffic = inner.untracked;
        let mut live = [0usize; 3];
        let mut peers: BTreeMap<(PeerKind, &str), (Duration, u64)> = BTreeMap::new();
        for entry in inner.tracked.values() {
            let stats = entry.conn.stats();
            let kind = entry.peer_kind;
            traffic[kind.index()].add(Traffic::of(&stats));
            if entry.conn.close_reason().is_some() {
                continue;
            }
            live[kind.index()] += 1;
            let sample = peers.entry((kind, entry.peer.as_str())).or_default();
            sample.0 = sample.0.max(stats.path.rtt);
            sample.1 += stats.path.lost_packets;
        }
        NetSnapshot {
            connections: PeerKind::ALL
                .iter()
                .map(|&k| (k, live[k.index()]))
                .collect(),
            peers: peers
                .into_iter()
                .map(|((peer_kind, peer), (rtt, lost_packets))| PeerSample {
                    peer_kind,
                    peer: peer.to_string(),
                    rtt,
                    lost_packets,
                })
                .collect(),
            traffic: PeerKind::ALL
                .iter()
                .map(|&k| (k, traffic[k.index()]))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertificateAuthority, IssueSpec, Role};
    use crate::{tls, transport};

    async fn pair() -> (quinn::Endpoint, quinn::Connection, quinn::Connection) {
        let ca = CertificateAuthority::generate().unwrap();
        let creds = |role, name: &str| tls::Credentials {
            ca_pem: ca.cert_pem.clone(),
            identity: ca
                .issue(&IssueSpec {
                    role,
                    name: name.into(),
                    hosts: vec!["127.0.0.1".into()],
                    days: 1,
                })
                .unwrap(),
        };
        let deny = tls::DenyList::default();
        let config =
            transport::server_config(&creds(Role::Scheduler, "s"), &[Role::Client], &deny).unwrap();
        let server = transport::server_endpoint("127.0.0.1:0".parse().unwrap(), config).unwrap();
        let address = format!("quic://{}", server.local_addr().unwrap());
        let client = transport::client_endpoint(
            transport::client_config(&creds(Role::Client, "c"), Role::Scheduler, &deny).unwrap(),
        )
        .unwrap();
        let accept = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            (server, conn)
        });
        let outgoing = transport::connect(&client, &address).await.unwrap();
        let (server, incoming) = accept.await.unwrap();
        drop(client);
        (server, outgoing, incoming)
    }

    fn traffic(s: &NetSnapshot, kind: PeerKind) -> Traffic {
        s.traffic.iter().find(|(k, _)| *k == kind).unwrap().1
    }

    fn live(s: &NetSnapshot, kind: PeerKind) -> usize {
        s.connections.iter().find(|(k, _)| *k == kind).unwrap().1
    }

    #[tokio::test]
    async fn totals_survive_the_connection_and_live_samples_do_not() {
        let (_server, outgoing, incoming) = pair().await;
        let tracker = ConnectionTracker::new();
        let guard = tracker.track(PeerKind::Scheduler, "scheduler", &outgoing);
        let other = tracker.track(PeerKind::Client, "127.0.0.1:1", &incoming);

        // Send something so both sides count bytes.
        let (mut send, _recv) = outgoing.open_bi().await.unwrap();
        send.write_all(&[7u8; 10_000]).await.unwrap();
        let (_s, mut recv) = incoming.accept_bi().await.unwrap();
        let mut got = vec![0u8; 10_000];
        recv.read_exact(&mut got).await.unwrap();

        let before = tracker.snapshot();
        assert_eq!(live(&before, PeerKind::Scheduler), 1);
        assert_eq!(live(&before, PeerKind::Client), 1);
        assert_eq!(live(&before, PeerKind::Worker), 0);
        assert_eq!(before.peers.len(), 2);
        assert_eq!(before.peers[0].peer, "scheduler");
        assert!(before.peers[0].rtt > Duration::ZERO);
        assert!(traffic(&before, PeerKind::Scheduler).sent_bytes >= 10_000);
        assert!(traffic(&before, PeerKind::Client).received_bytes >= 10_000);

        // A closed connection leaves the live samples but keeps counting.
        outgoing.close(0u32.into(), b"done");
        let closed = tracker.snapshot();
        assert_eq!(live(&closed, PeerKind::Scheduler), 0);
        assert!(closed.peers.iter().all(|p| p.peer != "scheduler"));
        drop(guard);
        let after = tracker.snapshot();
        let (b, a) = (
            traffic(&before, PeerKind::Scheduler),
            traffic(&after, PeerKind::Scheduler),
        );
        assert!(a.sent_bytes >= b.sent_bytes && a.received_bytes >= b.received_bytes);
        drop(other);
        assert_eq!(tracker.lock().tracked.len(), 0);
    }
}
