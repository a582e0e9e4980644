//! Per-CPU scheduler counters: atomics each CPU updates for itself and anyone may read.
//!
//! Key types: [`Counters`] (a plain snapshot, summable across CPUs) and the crate-internal
//! `CpuCounters` (the live atomics, one cache-line-padded set per CPU).
//!
//! Neighbours: `Scheduler` updates them on its paths and hands out snapshots through
//! `Scheduler::counters` / `Scheduler::total_counters`.
//!
//! Update rule: a counter is either written only by its own CPU, always with interrupts disabled
//! (`bump`/`add`: a plain load and store, no locked instruction on the switch path), or written
//! by other CPUs too (`migrations_in` and `migrations_out`, always with `fetch_add`, by their own
//! CPU as well: a thief counts the victim's out and its own in, a migrating thread's CPU its own
//! out and the target's in). Never a plain store to a counter another CPU adds to, so no update
//! is lost.

use core::ops::{Add, AddAssign};
use core::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// A snapshot of one CPU's counters (or of their sum).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Counters {
            $($(#[$doc])* pub $name: u64,)*
        }

        /// The live counters of one CPU.
        #[derive(Default)]
        pub(crate) struct CpuCounters {
            $(pub(crate) $name: AtomicU64,)*
        }

        impl CpuCounters {
            pub(crate) fn snapshot(&self) -> Counters {
                Counters { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl AddAssign for Counters {
            fn add_assign(&mut self, other: Counters) {
                $(self.$name += other.$name;)*
            }
        }
    };
}

counters! {
    /// Switches from one thread to a different one.
    context_switches,
    /// Involuntary switches: the timer (or a reschedule) took the CPU from a thread.
    preemptions,
    /// `yield_now` calls.
    voluntary_yields,
    /// Threads that came to this CPU from another: stolen or pulled by it, or moved here by an
    /// affinity change.
    migrations_in,
    /// Threads that left this CPU for another (the other side of `migrations_in`).
    migrations_out,
    /// Of `migrations_in`, the threads this busy CPU pulled from a busier one (periodic balancing).
    balance_pulls,
    /// Nanoseconds spent idle: polling the queue before a halt, and halted in `idle_wait`.
    idle_ns,
    /// Nanoseconds of thread time charged at ticks that interrupted user mode (sampled, as
    /// Linux's tick-based user/system split: what a thread ran since the last accounting point is
    /// user time when the tick finds it in user mode).
    user_ns,
    /// Reschedule IPIs this CPU sent.
    ipis_sent,
    /// Wake-ups by this CPU onto another CPU that needed no IPI (it was busy, or already kicked).
    ipis_avoided,
    /// Threads this CPU woke (from wait queues and sleep).
    wakeups,
    /// Extended-state saves of outgoing FPU threads.
    fpu_saves,
    /// Extended-state restores of incoming FPU threads, at a switch or at their trap on first use,
    /// and loads of the clean state over another space's before a lazy switch.
    fpu_restores,
    /// Of `fpu_saves`, those made with plain stores of the vector registers (x87 in its init
    /// state, `arch::fpu::save_switch`) instead of the save instruction.
    fpu_fast_saves,
    /// Of `fpu_restores`, those made with plain loads of the vector registers (x87 in its init
    /// state in the image and on the CPU, `arch::fpu::restore_switch`) instead of the restore
    /// instruction.
    fpu_fast_restores,
    /// Restores skipped because the incoming thread's state was still live in this CPU's registers.
    fpu_restores_skipped,
    /// Switches that let the incoming thread run without its own extended state in the registers
    /// (they hold the clean state, or the state of a thread of its space), the trap on first use
    /// armed (lazy switching).
    fpu_lazy_switches,
    /// First uses of the extended state trapped after a lazy switch (or by a thread that had not
    /// used it lately): each gave the running thread its state.
    fpu_traps,
}

impl Add for Counters {
    type Output = Counters;
    fn add(mut self, other: Counters) -> Counters {
        self += other;
        self
    }
}

/// Add one to a counter only this CPU writes (interrupts disabled).
#[inline(always)]
pub(crate) fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

/// Add `n` to a counter only this CPU writes (interrupts disabled).
#[inline(always)]
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}
