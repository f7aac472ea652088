//! What a task allocates while it runs: a counting wrapper around the
//! process's allocator ([`Counting`], the worker binary's global allocator
//! over mimalloc) keeps, per thread, the bytes allocated since a
//! [`Window`] opened and not freed since, and their high-water mark. A task
//! body runs on one compute thread, so a window around it gives the most
//! it held at once: its working memory, which the state machine learns from
//! to reserve memory for the next tasks of the same kind ([`crate::state`]).
//!
//! The count never goes below zero: freeing what the window did not
//! allocate (a task dropping delivered input) gives no credit. It can hide
//! some of the window's own allocations made after such frees, so the peak
//! is a lower bound for a task that frees its input first. Two thread-local
//! cells per thread, no lock, no allocation. Without the wrapper installed
//! (unit tests) the counts stay 0.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

thread_local! {
    /// Bytes this thread allocated since its window opened, minus those it
    /// freed since (at least 0).
    static HELD: Cell<u64> = const { Cell::new(0) };
    /// The most `HELD` was since the window opened.
    static PEAK: Cell<u64> = const { Cell::new(0) };
}

/// The allocator `A`, counting per thread.
pub struct Counting<A>(pub A);

fn allocated(bytes: usize) {
    // `try_with`: thread-local storage may be gone while a thread exits.
    let _ = HELD.try_with(|held| {
        let now = held.get() + bytes as u64;
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn freed(bytes: usize) {
    let _ = HELD.try_with(|held| held.set(held.get().saturating_sub(bytes as u64)));
}

// SAFETY: every call is forwarded to `A` unchanged; the counting touches
// only plain thread-local cells (no allocation, no locks).
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { self.0.alloc(layout) };
        if !p.is_null() {
            allocated(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { self.0.alloc_zeroed(layout) };
        if !p.is_null() {
            allocated(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { self.0.dealloc(ptr, layout) };
        freed(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            freed(layout.size());
            allocated(new_size);
        }
        p
    }
}

/// A measuring window on the current thread (one at a time per thread).
pub struct Window(());

impl Window {
    /// Start measuring on this thread: counts restart from zero.
    pub fn open() -> Window {
        HELD.with(|held| held.set(0));
        PEAK.with(|peak| peak.set(0));
        Window(())
    }

    /// The most this thread held at once of what it allocated since
    /// [`Window::open`].
    pub fn peak(&self) -> u64 {
        PEAK.with(Cell::get)
    }
}
