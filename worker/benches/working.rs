//! What the counting allocator (`stratus_worker::working::Counting`, the
//! worker's global allocator) adds to an allocation: the same
//! allocate/free loops through bare mimalloc and through the wrapper, in
//! the same run, best of 5.
//!
//! `cargo bench -p stratus-worker --bench working`

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::time::Instant;

use mimalloc::MiMalloc;
use stratus_worker::working::{Counting, Window};

/// ns per allocate + free of `size` bytes (`live` kept at once, freed in
/// order), best of 5.
fn per_op(alloc: &dyn GlobalAlloc, size: usize, live: usize, rounds: usize) -> f64 {
    let layout = Layout::from_size_align(size, 8).unwrap();
    let mut best = f64::MAX;
    let mut held = Vec::with_capacity(live);
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..rounds {
            for _ in 0..live {
                // SAFETY: a valid non-zero layout; freed below with it.
                held.push(unsafe { alloc.alloc(layout) });
            }
            for p in held.drain(..) {
                // SAFETY: allocated above by the same allocator and layout.
                unsafe { alloc.dealloc(black_box(p), layout) };
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / (rounds * live) as f64;
        best = best.min(ns);
    }
    best
}

fn main() {
    let bare = MiMalloc;
    let counting = Counting(MiMalloc);
    let _window = Window::open();
    println!("| allocation | mimalloc ns/op | counting ns/op | ratio |");
    println!("|---|---|---|---|");
    for (size, live, rounds) in [(64, 1000, 2000), (4096, 100, 5000), (1 << 20, 8, 2000)] {
        let a = per_op(&bare, size, live, rounds);
        let b = per_op(&counting, size, live, rounds);
        println!(
            "| {size} B, {live} at once | {a:.1} | {b:.1} | {:.2}x |",
            b / a
        );
    }
}
