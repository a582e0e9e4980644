//! The one door through which the ring reaches atomics, so `--cfg loom` can swap in loom's
//! instrumented ones and model-check the ring (`tests/loom_ring.rs`) without a line of it changing.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
