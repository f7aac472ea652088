//! The counting allocator as the process's global allocator (as in the
//! worker binary): a window sees the most a thread held at once.

use stratus_worker::working::{Counting, Window};

#[global_allocator]
static GLOBAL: Counting<std::alloc::System> = Counting(std::alloc::System);

#[test]
fn a_window_sees_the_most_its_thread_held_at_once() {
    let kept = vec![1u8; 1 << 20]; // held before the window: not counted
    let window = Window::open();
    let big = vec![7u8; 8 << 20];
    let bigger: Vec<u64> = big.iter().map(|&b| u64::from(b)).collect();
    drop(big);
    drop(bigger);
    let peak = window.peak();
    assert!(
        (72 << 20..80 << 20).contains(&peak),
        "8 MiB and 64 MiB at once: {peak}"
    );
    // A new window starts from what is held now.
    let window = Window::open();
    let small = vec![0u8; 4096];
    assert!(
        (4096..1 << 20).contains(&window.peak()),
        "{}",
        window.peak()
    );
    drop(small);
    drop(kept);
}

#[test]
fn what_another_thread_allocated_and_this_one_frees_does_not_count_against_it() {
    let buffer = std::thread::spawn(|| vec![1u8; 16 << 20]).join().unwrap();
    let window = Window::open();
    drop(buffer); // freed here, allocated there
    let after = vec![0u8; 1 << 20];
    assert!(window.peak() >= 1 << 20, "{}", window.peak());
    assert!(window.peak() < 2 << 20, "{}", window.peak());
    drop(after);
}
