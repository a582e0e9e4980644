//! The one door through which this crate reaches atomics and the spin-loop hint.
//!
//! Normal builds use `core::sync::atomic` and `core::hint::spin_loop`; builds with `--cfg loom`
//! use loom's instrumented versions instead (loom's spin hint yields to the other modelled
//! threads), so the lock-free parts (`cpuset::AtomicCpuSet`, `tracker`, `shootdown`) can be
//! model-checked by the tests under `tests/loom_*.rs` without a line of them changing.
//!
//! Loom atomics cannot be built in a `const fn`; the types that hold atomics therefore offer a
//! `const fn new` in normal builds and a plain `fn new` under loom.

#[cfg(loom)]
pub(crate) use loom::hint::spin_loop;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

#[cfg(not(loom))]
pub(crate) use core::hint::spin_loop;
#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
