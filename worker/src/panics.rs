//! The worker's last line of defence: a panic outside a task body (in the
//! actor, the QUIC edge, the peer endpoint) is logged and aborts the
//! process, so its supervisor (systemd, `stratus local`) restarts it; a
//! worker is never left alive with a dead actor. A panic inside a task body
//! (on a compute thread, inside [`Recoverable`]) only fails that task.

use std::cell::Cell;

thread_local! {
    static RECOVERABLE: Cell<bool> = const { Cell::new(false) };
}

/// While alive, panics on this thread fail only the current task.
pub struct Recoverable(());

impl Recoverable {
    pub fn enter() -> Recoverable {
        RECOVERABLE.with(|r| r.set(true));
        Recoverable(())
    }
}

impl Drop for Recoverable {
    fn drop(&mut self) {
        RECOVERABLE.with(|r| r.set(false));
    }
}

/// Install the process-wide hook: print the panic as usual, then abort
/// unless it happened inside a task body.
pub fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        if !RECOVERABLE.with(Cell::get) {
            tracing::error!("stratus-worker: panic outside a task body ({info}); aborting");
            std::process::abort();
        }
    }));
}
