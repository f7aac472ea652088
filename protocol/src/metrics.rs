//! Prometheus pieces shared by the scheduler and the workers (feature
//! `prometheus`): registering families, and the QUIC families of the metric
//! contract read from a [`ConnectionTracker`].

use std::sync::Mutex;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts};

use crate::netstats::ConnectionTracker;

/// The QUIC families of the metric contract, read from the tracked
/// connections at every scrape (the scheduler and every worker register one).
pub struct QuicCollector {
    connections: ConnectionTracker,
    open: IntGaugeVec,
    rtt: GaugeVec,
    lost: IntCounterVec,
    sent: IntCounterVec,
    received: IntCounterVec,
    /// One scrape at a time: each refills the families before reading them.
    scrape: Mutex<()>,
}

impl QuicCollector {
    pub fn new(connections: ConnectionTracker) -> Self {
        let opts = Opts::new;
        QuicCollector {
            connections,
            open: IntGaugeVec::new(
                opts("stratus_quic_connections", "Open QUIC connections by peer kind."),
                &["peer_kind"],
            )
            .expect("valid metric"),
            rtt: GaugeVec::new(
                opts(
                    "stratus_quic_rtt_seconds",
                    "Smoothed round-trip time of each live QUIC connection.",
                ),
                &["peer_kind", "peer"],
            )
            .expect("valid metric"),
            lost: IntCounterVec::new(
                opts(
                    "stratus_quic_lost_packets_total",
                    "Packets lost on each live QUIC connection.",
                ),
                &["peer_kind", "peer"],
            )
            .expect("valid metric"),
            sent: IntCounterVec::new(
                opts(
                    "stratus_network_sent_bytes_total",
                    "UDP bytes sent on QUIC connections, by peer kind (closed connections included).",
                ),
                &["peer_kind"],
            )
            .expect("valid metric"),
            received: IntCounterVec::new(
                opts(
                    "stratus_network_received_bytes_total",
                    "UDP bytes received on QUIC connections, by peer kind (closed connections included).",
                ),
                &["peer_kind"],
            )
            .expect("valid metric"),
            scrape: Mutex::new(()),
        }
    }
}

impl Collector for QuicCollector {
    fn desc(&self) -> Vec<&Desc> {
        [
            self.open.desc(),
            self.rtt.desc(),
            self.lost.desc(),
            self.sent.desc(),
            self.received.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one_scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = self.connections.snapshot();
        // Counters are refilled from quinn's own counts: reset, then add.
        for family in [&self.lost, &self.sent, &self.received] {
            family.reset();
        }
        self.rtt.reset();
        for (kind, open) in &snapshot.connections {
            self.open
                .with_label_values(&[kind.as_str()])
                .set(*open as i64);
        }
        for p in &snapshot.peers {
            let labels = [p.peer_kind.as_str(), p.peer.as_str()];
            self.rtt.with_label_values(&labels).set(p.rtt.as_secs_f64());
            self.lost.with_label_values(&labels).inc_by(p.lost_packets);
        }
        for (kind, traffic) in &snapshot.traffic {
            let label = [kind.as_str()];
            self.sent
                .with_label_values(&label)
                .inc_by(traffic.sent_bytes);
            self.received
                .with_label_values(&label)
                .inc_by(traffic.received_bytes);
        }
        [
            self.open.collect(),
            self.rtt.collect(),
            self.lost.collect(),
            self.sent.collect(),
            self.received.collect(),
        ]
        .concat()
    }
}

/// Register `collector` in `registry` and hand it back.
pub fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &prometheus::Registry,
    collector: C,
) -> C {
    registry
        .register(Box::new(collector.clone()))
        .expect("metric names are unique");
    collector
}

/// The Prometheus text exposition of `registry`.
pub fn render(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .expect("text encoding cannot fail");
    String::from_utf8(buf).expect("exposition is UTF-8")
}
