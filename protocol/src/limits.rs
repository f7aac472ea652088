//! Limits on connections and streams of a QUIC endpoint.
//!
//! [`ConnectionLimiter`] admits an incoming connection only while the
//! endpoint has fewer than `max_total` connections and its peer's IP fewer
//! than `max_per_ip`; the [`ConnectionPermit`] it hands out gives the slot
//! back when dropped (when the connection's task ends). Streams per
//! connection are a process-wide setting ([`set_max_streams_per_connection`],
//! read when an endpoint or client configuration is built).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// Default of concurrent bidirectional streams a peer may open on one
/// connection (a client uses one per request, a peer worker one per delivery).
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 256;

static MAX_STREAMS: AtomicU32 = AtomicU32::new(DEFAULT_MAX_STREAMS_PER_CONNECTION);

/// Set how many concurrent bidirectional streams a peer may open on one
/// connection (at least 1), for endpoints and client configurations built
/// from now on. Unidirectional streams are not used: peers may open none.
pub fn set_max_streams_per_connection(streams: u32) {
    MAX_STREAMS.store(streams.max(1), Ordering::Relaxed);
}

/// The current limit of concurrent bidirectional streams per connection.
pub fn max_streams_per_connection() -> u32 {
    MAX_STREAMS.load(Ordering::Relaxed)
}

/// How many connections an endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections in total.
    pub max_total: usize,
    /// Connections from one IP address.
    pub max_per_ip: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_total: 4096,
            max_per_ip: 256,
        }
    }
}

/// Counts an endpoint's connections against its [`ConnectionLimits`].
#[derive(Debug)]
pub struct ConnectionLimiter {
    limits: ConnectionLimits,
    /// Connections per IP, and in total.
    counts: Mutex<(HashMap<IpAddr, usize>, usize)>,
}

/// A connection's slot; given back when dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    limiter: Arc<ConnectionLimiter>,
    ip: IpAddr,
}

impl ConnectionLimiter {
    pub fn new(limits: ConnectionLimits) -> Arc<ConnectionLimiter> {
        Arc::new(ConnectionLimiter {
            limits,
            counts: Mutex::new((HashMap::new(), 0)),
        })
    }

    /// A slot for a connection from `ip`, or the reason there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, String> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (per_ip, total) = &mut *counts;
        if *total >= self.limits.max_total {
            return Err(format!(
                "{total} connections open, the limit is {} (setting max_connections)",
                self.limits.max_total
            ));
        }
        let mine = per_ip.entry(ip).or_insert(0);
        if *mine >= self.limits.max_per_ip {
            return Err(format!(
                "{mine} connections open from {ip}, the limit per address is {} (setting max_connections_per_ip)",
                self.limits.max_per_ip
            ));
        }
        *mine += 1;
        *total += 1;
        Ok(ConnectionPermit {
            limiter: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self
            .limiter
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (per_ip, total) = &mut *counts;
        *total = total.saturating_sub(1);
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_count_per_ip_and_in_total() {
        let limiter = ConnectionLimiter::new(ConnectionLimits {
            max_total: 3,
            max_per_ip: 2,
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = limiter.admit(a).unwrap();
        let _p2 = limiter.admit(a).unwrap();
        let e = limiter.admit(a).unwrap_err();
        assert!(e.contains("max_connections_per_ip"), "{e}");
        let _p3 = limiter.admit(b).unwrap();
        let e = limiter.admit(b).unwrap_err();
        assert!(e.contains("max_connections"), "{e}");
        drop(p1);
        assert_eq!(limiter.open(), 2);
        limiter.admit(a).unwrap();
    }
}
