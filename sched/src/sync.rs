//! The one door through which the run-queue protocol (`rq`) reaches atomics, locks, cells and the
//! spin hint, so `--cfg loom` can swap in loom's instrumented versions and model-check it.
//!
//! Key items: [`SpinLock`] (a test-and-test-and-set lock taken with one `xchg`; loom's `Mutex`
//! under loom),
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

/// A spin lock: a test-and-test-and-set byte taken with one `xchg` (the `spin` crate's lock takes
/// a `cmpxchg` and its setup, two more instructions on every switch path); loom's `Mutex` under loom.
pub(crate) struct SpinLock<T> {
    #[cfg(not(loom))]
    locked: AtomicBool,
    #[cfg(not(loom))]
    value: core::cell::UnsafeCell<T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
}

// SAFETY: the lock hands out the value to one holder at a time (`locked` with `Acquire` and
// `Release`), so sharing the lock across CPUs shares `T` only by moving access: `T: Send` suffices.
#[cfg(not(loom))]
unsafe impl<T: Send> Sync for SpinLock<T> {}

/// Guard of a [`SpinLock`]: the value while held; released when dropped.
///
/// The marker makes the guard `Sync` only where `T` is (a shared guard hands out `&T` through
/// `Deref` on every thread that holds it), as `std`'s and `spin`'s guards are; a bare `&SpinLock`
/// would make it `Sync` for every `T: Send`.
#[cfg(not(loom))]
pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
    _value: core::marker::PhantomData<&'a mut T>,
}
/// Guard of a [`SpinLock`].
#[cfg(loom)]
pub(crate) type SpinGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> SpinLock<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(not(loom))]
        return SpinLock { locked: AtomicBool::new(false), value: core::cell::UnsafeCell::new(value) };
        #[cfg(loom)]
        return SpinLock { inner: loom::sync::Mutex::new(value) };
    }

    #[inline]
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        #[cfg(not(loom))]
        {
            if self.locked.swap(true, Ordering::Acquire) {
                self.lock_contended();
            }
            SpinGuard { lock: self, _value: core::marker::PhantomData }
        }
        #[cfg(loom)]
        return self
            .inner
            .lock()
            .expect("a modelled thread panicked while holding the lock");
    }

    /// The lock was held: wait reading (the line stays shared) until it looks free, then try again.
    #[cfg(not(loom))]
    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        loop {
            while self.locked.load(Ordering::Relaxed) {
                spin_loop();
            }
            if !self.locked.swap(true, Ordering::Acquire) {
                return;
            }
        }
    }
}

#[cfg(not(loom))]
impl<T> core::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so no other reference to the value is live.
        unsafe { &*self.lock.value.get() }
    }
}

#[cfg(not(loom))]
impl<T> core::ops::DerefMut for SpinGuard<'_, T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock, and `&mut self` makes this the only reference through it.
        unsafe { &mut *self.lock.value.get() }
    }
}

#[cfg(not(loom))]
impl<T> Drop for SpinGuard<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
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
