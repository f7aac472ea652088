//! Stopping a worker gracefully: SIGTERM (what systemd sends on stop) to a
//! worker connected to its scheduler asks the scheduler to retire it
//! (`FromWorker::Retire`): its partitions move to other workers, its tasks
//! end, and the scheduler tells it to exit (`ToWorker::Exit`, status 0).
//! A worker with no scheduler connection has nothing to hand over and exits
//! at once; so does one told twice, or interrupted (SIGINT, Ctrl-C).
//!
//! [`Drain`] is the one thing `main` and the connection share: the outbox of
//! the live connection, if any.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use stratus_protocol::messages::FromWorker;
use tokio::sync::mpsc::UnboundedSender;

/// The way to ask the scheduler for a retire, while connected.
#[derive(Debug, Default)]
pub struct Drain {
    outbox: Mutex<Option<UnboundedSender<FromWorker>>>,
    /// A retire was asked for: a lost connection ends the worker instead of
    /// a reconnect.
    requested: AtomicBool,
}

impl Drain {
    fn outbox(&self) -> std::sync::MutexGuard<'_, Option<UnboundedSender<FromWorker>>> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registered: messages to the scheduler go through `outbox`.
    pub fn connected(&self, outbox: UnboundedSender<FromWorker>) {
        *self.outbox() = Some(outbox);
    }

    /// The connection ended.
    pub fn disconnected(&self) {
        *self.outbox() = None;
    }

    /// Ask the scheduler to retire this worker; false when not connected
    /// (then there is nothing to wait for).
    pub fn request(&self) -> bool {
        let sent = self
            .outbox()
            .as_ref()
            .is_some_and(|outbox| outbox.send(FromWorker::Retire).is_ok());
        if sent {
            self.requested.store(true, Ordering::SeqCst);
        }
        sent
    }

    /// Whether a retire was asked for.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}
