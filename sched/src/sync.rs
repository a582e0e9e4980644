//! The one door through which the run-queue protocol (`rq`) reaches atomics, locks, cells and the
//! spin hint, so `--cfg loom` can swap in loom's instrumented versions and model-check it.
//!
//! Key items: [`SpinLock`] (a `spin` test-and-test-and-set lock; loom's `Mutex` under loom),
//! [`UnsafeCell`] (loom's access-tracking cell under loom, a zero-cost `core` cell otherwise; both
//! with the `with`/`with_mut` closure API), the atomics and [`spin_loop`].
//!
//! Neighbours: `rq` only. The rest of the crate (counters, wait queues, the switch path) uses `core`
//! and `spin` directly: what loom checks is the queue/wake/steal/on_cpu protocol, and, in
//! `tests/loom_wait.rs`, the wait queue, the timed sleep and `PreemptGuard` mirrored on top of it.
//!
//! Callers of [`SpinLock::lock`] keep interrupts disabled while they hold it (the scheduler always
//! does), so a holder can be neither preempted nor interrupted by code that wants the same lock.

#[cfg(loom)]
pub(crate) use loom::hint::spin_loop;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

#[cfg(not(loom))]
pub(crate) use core::hint::spin_loop;
#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

/// A spin lock: `spin::mutex::SpinMutex`, or loom's `Mutex` under loom.
pub(crate) struct SpinLock<T> {
    #[cfg(not(loom))]
    inner: spin::mutex::SpinMutex<T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
}

/// Guard of a [`SpinLock`].
#[cfg(not(loom))]
pub(crate) type SpinGuard<'a, T> = spin::mutex::SpinMutexGuard<'a, T>;
/// Guard of a [`SpinLock`].
#[cfg(loom)]
pub(crate) type SpinGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> SpinLock<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(not(loom))]
        let inner = spin::mutex::SpinMutex::new(value);
        #[cfg(loom)]
        let inner = loom::sync::Mutex::new(value);
        SpinLock { inner }
    }

    #[inline]
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        #[cfg(not(loom))]
        return self.inner.lock();
        #[cfg(loom)]
        return self
            .inner
            .lock()
            .expect("a modelled thread panicked while holding the lock");
    }
}

/// An `UnsafeCell` whose accesses loom can check for races.
#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// An `UnsafeCell` whose accesses loom can check for races (here: `core`'s, at no cost).
#[cfg(not(loom))]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        UnsafeCell(core::cell::UnsafeCell::new(value))
    }

    /// Run `f` with a shared pointer to the contents.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Run `f` with a unique pointer to the contents.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
