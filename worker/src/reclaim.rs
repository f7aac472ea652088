//! Giving memory the worker has freed back to the OS.
//!
//! mimalloc (the worker's allocator) hands freed pages back lazily. A buffer
//! freed by a thread other than the one that allocated it (a dropped frame
//! whose columns a compute thread built) waits on its page until the owning
//! thread looks again, and free ranges are purged only once their delay
//! (mimalloc's `purge_delay`, 1 s) has passed *and* some thread next goes
//! through the allocator's slow path. An idle worker does neither: after a
//! shuffle it kept about twice the bytes it held until the next request
//! came (benches/README.md, "Memory per step").
//!
//! Two levers, both cheap: compute threads (tokio's blocking pool) exit
//! after [`COMPUTE_THREAD_KEEP_ALIVE`] idle, and an exiting thread hands its
//! pages back; and [`reclaim_loop`] asks the allocator every
//! [`RECLAIM_EVERY`] to collect what is free and purge what has expired.

use std::time::Duration;

/// How long an idle compute thread lives (tokio's default is 10 s).
pub const COMPUTE_THREAD_KEEP_ALIVE: Duration = Duration::from_secs(1);

/// How often [`reclaim_loop`] collects.
pub const RECLAIM_EVERY: Duration = Duration::from_millis(500);

/// Collect this thread's free pages and purge the process's free ranges
/// whose delay has expired (not forced: nothing is purged early).
pub fn collect_freed() {
    // SAFETY: `mi_collect` takes no pointers; it only walks the allocator's
    // own structures, and does nothing on a thread that never used it.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

/// Run [`collect_freed`] every [`RECLAIM_EVERY`], forever.
pub async fn reclaim_loop() {
    let mut every = tokio::time::interval(RECLAIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        collect_freed();
    }
}
