//! Model checks of the frame allocator's bitmap (`kcore::frame_alloc::BitAlloc`) under loom: every
//! interleaving of two CPUs, within the preemption bound, keeps one owner per index and never hides
//! a free index behind a cleared summary bit.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release -p kcore --test loom_frame_alloc`.
#![cfg(loom)]

use std::ops::Range;

use kcore::frame_alloc::BitAlloc;
use loom::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize},
};

/// An allocator over `len` indices with `free` free, shared between model threads. Its storage is
/// leaked: a model run is short and the allocator borrows it for as long as any thread lives.
fn shared(len: usize, free: Range<usize>) -> Arc<BitAlloc<'static>> {
    let storage: &'static [AtomicU64] =
        Box::leak((0..BitAlloc::storage_words(len)).map(|_| AtomicU64::new(0)).collect::<Vec<_>>().into_boxed_slice());
    let b = BitAlloc::new(storage, len);
    b.insert_range(free);
    Arc::new(b)
}

/// One CPU takes the last free bit of a word (and so clears its summary bit) while another frees
/// into the same word: afterwards the freed bit is still reachable through the summary, and no index
/// is both taken and free.
#[test]
fn emptying_races_with_a_free() {
    loom::model(|| {
        let b = shared(64, 0..2);
        let held = b.alloc_in(0..64, &AtomicUsize::new(0)).unwrap();
        let b2 = Arc::clone(&b);
        let taker = loom::thread::spawn(move || b2.alloc_in(0..64, &AtomicUsize::new(0)));
        b.free(held).unwrap();
        let took = taker.join().unwrap().expect("one index was free throughout");
        assert!(!b.is_free(took), "index {took} is both taken and free");
        assert_eq!(b.stats(), (1, 2));
        let again = b.alloc_in(0..64, &AtomicUsize::new(0));
        assert!(again.is_some_and(|i| i != took), "the freed index is hidden: got {again:?}");
    });
}

/// Two CPUs race for one free index: exactly one gets it.
#[test]
fn one_index_one_owner() {
    loom::model(|| {
        let b = shared(64, 5..6);
        let b2 = Arc::clone(&b);
        let other = loom::thread::spawn(move || b2.alloc_in(0..64, &AtomicUsize::new(0)));
        let mine = b.alloc_in(0..64, &AtomicUsize::new(0));
        let theirs = other.join().unwrap();
        assert_eq!(mine.xor(theirs), Some(5), "mine {mine:?}, theirs {theirs:?}");
        assert_eq!(b.stats(), (0, 1));
    });
}
