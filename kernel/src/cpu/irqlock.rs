//! A spin lock that keeps interrupts off on the holding CPU while held, as a `lock_api::RawMutex` so
//! that crates built on lock_api (the heap allocator) get it. An interrupt handler that takes the same
//! lock on the same CPU would otherwise deadlock against the code it interrupted.

use core::sync::atomic::{AtomicBool, Ordering};

use talc::lock_api::{GuardNoSend, RawMutex};

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
