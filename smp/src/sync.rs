//! The one door through which this crate reaches atomics.
//!
//! Normal builds use `core::sync::atomic`; builds with `--cfg loom` use loom's
//! instrumented versions instead, so the lock-free parts (`cpuset::AtomicCpuSet`, `tlb`) can be
//! model-checked by the tests under `tests/loom_*.rs` without a line of them changing.
//!
//! Loom atomics cannot be built in a `const fn`; the types that hold atomics therefore offer a
//! `const fn new` in normal builds and a plain `fn new` under loom.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicU64, Ordering};
