//! The reader allocates in proportion to its input, whatever counts the input claims.
//!
//! A counting global allocator records the peak of live heap bytes while `read_image`
//! runs on inputs whose counts and lengths claim up to 2^64 bytes; the peak must stay
//! within a small multiple of the input's length. This file holds one test on purpose:
//! the counters are process-wide, and a second test running in parallel would disturb
//! them.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use appshot_image::*;
use common::*;

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees are this allocator's; the counters do not affect the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's promises for `alloc` are passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above (that is, from `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak live heap bytes that `read_image(bytes)` added.
fn peak_while_reading(bytes: &[u8]) -> usize {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let result = read_image(bytes);
    let peak = PEAK.load(Ordering::Relaxed) - before;
    drop(result);
    peak
}

#[test]
fn allocation_is_bounded_by_the_input() {
    let bytes = encode(&small_image());
    let offsets = record_offsets(&bytes);
    let descriptor = |index: usize| descriptor_offset(&bytes, &offsets, index);
    // Every count and length field, set to every absurd value.
    let fields: Vec<(usize, usize)> = vec![
        (descriptor(1) + 4, 4),
        (descriptor(4) + 48, 4),
        (descriptor(5) + 32, 8),
        (descriptor(6) + 72, 4),
        (descriptor(7) + 16, 4),
        (descriptor(7) + 20, 4),
        (descriptor(7) + 24, 4),
        (offsets[5] + 4, 2),
        (offsets[5] + 8, 4),
        (offsets[5] + 16, 8),
        (offsets[6] + 16, 8),
    ];
    let values = [
        u64::MAX,
        u64::from(u32::MAX),
        1 << 40,
        1 << 30,
        1 << 20,
        100_000,
    ];
    let mut checked = 0;
    for (at, width) in fields {
        for value in values {
            let mut changed = bytes.clone();
            changed[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
            fix_up(&mut changed);
            let peak = peak_while_reading(&changed);
            assert!(
                peak <= 16 * changed.len() + 16 * 1024,
                "field at {at} = {value}: {peak} bytes for {}",
                changed.len()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 66);

    // A large valid image needs about its own size, not more.
    let rich = encode(&rich_image());
    let peak = peak_while_reading(&rich);
    assert!(
        peak <= 2 * rich.len(),
        "{peak} bytes to read {} bytes",
        rich.len()
    );
}
