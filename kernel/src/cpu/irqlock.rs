//! A spin lock that keeps interrupts off on the holding CPU while held, as a `lock_api::RawMutex` so
//! that crates built on lock_api (the heap allocator) get it. An interrupt handler that takes the same
//! lock on the same CPU would otherwise deadlock against the code it interrupted.
//!
//! [`IrqSafeOnce`] is the same idea for a value made on first use: its initialiser runs with
//! interrupts off, so a handler that asks for the value never spins on an initialiser it interrupted.

use core::sync::atomic::{AtomicBool, Ordering};

use talc::lock_api::{GuardNoSend, Mutex as SpinMutex, RawMutex};

pub struct RawIrqSpin {
    locked: AtomicBool,
    /// Whether interrupts were on before `lock`; only the holder reads or writes it.
    irq_was_enabled: AtomicBool,
}

// SAFETY: `locked` is acquired with Acquire and released with Release, so at most one holder exists
// and the holder sees every write of the previous one; `try_lock` never blocks.
unsafe impl RawMutex for RawIrqSpin {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = Self { locked: AtomicBool::new(false), irq_was_enabled: AtomicBool::new(false) };

    // Interrupts-off state belongs to the CPU that took the lock.
    type GuardMarker = GuardNoSend;

    #[inline]
    fn lock(&self) {
        loop {
            if self.try_lock() {
                return;
            }
            while self.locked.load(Ordering::Relaxed) {
                core::hint::spin_loop();
            }
        }
    }

    #[inline]
    fn try_lock(&self) -> bool {
        let was = arch::interrupts::are_enabled();
        arch::interrupts::disable();
        if self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            self.irq_was_enabled.store(was, Ordering::Relaxed);
            true
        } else {
            if was {
                arch::interrupts::enable();
            }
            false
        }
    }

    #[inline]
    unsafe fn unlock(&self) {
        let was = self.irq_was_enabled.load(Ordering::Relaxed);
        self.locked.store(false, Ordering::Release);
        if was {
            arch::interrupts::enable();
        }
    }
}

impl RawIrqSpin {
    /// [`RawMutex::lock`] for a caller that runs with interrupts on: they go off without reading
    /// the flags first (nor recording them: [`IrqsOnGuard`] turns them on again).
    #[inline]
    fn lock_irqs_on(&self) {
        loop {
            arch::interrupts::disable();
            if self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return;
            }
            arch::interrupts::enable();
            while self.locked.load(Ordering::Relaxed) {
                core::hint::spin_loop();
            }
        }
    }
}

/// Lock `mutex` from a path that runs with interrupts on: a system call's own code (its entry
/// turns them on before the handler). The lock of [`RawIrqSpin`] less the read of the flags, which
/// the caller vouches for (checked in debug builds), and an unlock that turns them on without
/// reading a record of them: had interrupts been off, it would turn them on.
#[inline]
pub fn lock_irqs_on<T>(mutex: &SpinMutex<RawIrqSpin, T>) -> IrqsOnGuard<'_, T> {
    debug_assert!(arch::interrupts::are_enabled(), "lock_irqs_on with interrupts off");
    // SAFETY: reached only to take the lock, which the guard made here releases.
    unsafe { mutex.raw() }.lock_irqs_on();
    IrqsOnGuard { mutex, _not_send: core::marker::PhantomData }
}

/// The lock [`lock_irqs_on`] took: the value under it, and on drop the unlock, then interrupts on.
pub struct IrqsOnGuard<'a, T> {
    mutex: &'a SpinMutex<RawIrqSpin, T>,
    /// Interrupts-off state belongs to the CPU that took the lock (as `GuardNoSend`).
    _not_send: core::marker::PhantomData<*mut ()>,
}

impl<T> core::ops::Deref for IrqsOnGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so no one else reaches the value.
        unsafe { &*self.mutex.data_ptr() }
    }
}

impl<T> core::ops::DerefMut for IrqsOnGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only borrow through the guard.
        unsafe { &mut *self.mutex.data_ptr() }
    }
}

impl<T> Drop for IrqsOnGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: reached only to release the lock this guard holds.
        unsafe { self.mutex.raw() }.locked.store(false, Ordering::Release);
        arch::interrupts::enable();
    }
}

/// A value made on its first use, where that use may come from thread context or from an
/// interrupt handler: the wait queues an input interrupt wakes (the terminal's readers, `poll`'s
/// sleepers), made when the first one is needed.
///
/// `spin::Once` alone deadlocks there: if the interrupt arrives on the CPU that is running the
/// initialiser and its handler asks for the same value, the handler spins on the unfinished `Once`,
/// and the initialiser it interrupted cannot finish before the handler returns. (The heap lock
/// makes the window wide: the allocation re-enables interrupts as it unlocks, so an interrupt that
/// came during it is taken right there, between the allocation and the `Once`'s completion.) So the
/// initialiser runs with this CPU's interrupts off: an interrupt on this CPU waits until the value
/// is there, and one on another CPU spins only until this CPU, which waits for nothing, finishes.
///
/// The initialiser must therefore be short and must not sleep (an allocation is fine: the heap's
/// lock is a [`RawIrqSpin`] already).
pub struct IrqSafeOnce<T>(spin::Once<T>);

impl<T> IrqSafeOnce<T> {
    pub const fn new() -> Self {
        IrqSafeOnce(spin::Once::new())
    }

    /// The value, made by `init` with interrupts off if this is the first call.
    pub fn call_once(&self, init: impl FnOnce() -> T) -> &T {
        if let Some(v) = self.get() {
            return v;
        }
        arch::interrupts::without_interrupts(|| self.0.call_once(init))
    }

    /// The value, if it was made.
    pub fn get(&self) -> Option<&T> {
        self.0.get()
    }
}

impl<T> Default for IrqSafeOnce<T> {
    fn default() -> Self {
        Self::new()
    }
}
