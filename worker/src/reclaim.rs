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
//! Three levers, all cheap: compute threads (tokio's blocking pool) exit
//! after [`COMPUTE_THREAD_KEEP_ALIVE`] idle, and an exiting thread hands its
//! pages back; [`reclaim_loop`] asks the allocator every [`RECLAIM_EVERY`]
//! to collect what is free and purge what has expired; and the purge delay
//! is [`PURGE_DELAY_MS`], not mimalloc's 1 s, so a step that frees as it
//! goes (an in-place sort replaces each partition as its sorted one is
//! held) does not hold a second of its churn on top of the data. Measured
//! (`cargo bench --bench memory -- --settle 2`, 12 M rows, station order),
//! the in-place sort's peak RSS over the persisted bytes went from 1.62x to
//! 1.38x (0 ms: 1.22x, but 1.6x the time); the other steps did not change.
//! `MIMALLOC_PURGE_DELAY` in the environment still wins.

use std::time::Duration;

/// How long an idle compute thread lives (tokio's default is 10 s).
pub const COMPUTE_THREAD_KEEP_ALIVE: Duration = Duration::from_secs(1);

/// mimalloc's purge delay the worker sets (milliseconds).
pub const PURGE_DELAY_MS: std::ffi::c_long = 100;

/// `mi_option_purge_delay` (15 in mimalloc's `mi_option_t`, v2 and v3; the
/// Rust binding names only the older options).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Set the allocator's purge delay to [`PURGE_DELAY_MS`], unless the
/// environment sets `MIMALLOC_PURGE_DELAY`. Call once, first thing.
pub fn configure_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: `mi_option_set` takes an option number and a value; the
        // number is mimalloc's purge delay (see the constant).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_mimallocs_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // the environment's value wins, by design
        }
        // SAFETY: reading an option by number has no preconditions.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            get(),
            1000,
            "option 15 should be purge_delay (1000 ms in mimalloc v3)"
        );
        configure_allocator();
        assert_eq!(get(), PURGE_DELAY_MS);
    }
}
