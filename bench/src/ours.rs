//! Our side of the native rows: the kernel's own switch routine (`arch::switch`), extended-state
//! save and restore (`arch::fpu`) and scheduler (`sched`, on its host platform) driven from this
//! user-space process.
//!
//! - [`window_switch`]: `switch_window` round trips between two contexts, nothing else.
//! - [`sched_yield_pair`]: two `sched` threads on one CPU passing a turn with `yield_now`, with or
//!   without FPU state; the same ping-pong `linux::sched_yield_pair` runs through Linux.
//! - [`pick`]: the run-queue work of a yield (lock, put the current thread back, pop the next)
//!   with a chosen number of runnable threads.
//! - [`fpu_save`], [`fpu_restore`]: the extended-state save and restore of the switch path.
//!
//! Neighbours: `measure` for timing, `vector` for live vector state, `linux` for the peer rows.

use std::{
    ptr::NonNull,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
};

use arch::{
    fpu::{self, FpuArea, FpuFeatures},
    switch::{Window, switch_window},
};
use sched::{
    Builder, Config, Counters, CpuIndex, host,
    rq::{CpuQueue, Entity, Queued},
};

use crate::{
    measure::{BATCH, Sampling, cycles_per_op},
    vector::LiveVectors,
};

/// Bytes of the second context's stack: room for the partner loop and any signal frame Linux may
/// push while it runs.
const PARTNER_STACK_BYTES: usize = 256 * 1024;

/// The two windows of a ping-pong, and the partner's count of round trips.
#[derive(Default)]
struct Pair {
    caller: Window,
    partner: Window,
    nr_round_trips: u64,
}

/// Switch from `from` to `to` `nr_switches` times, counting in `*nr_resumed` each time this
/// context is resumed. Both contexts of the ping-pong run this loop, so every switch is made from
/// this one call site, as every switch of the scheduler is: the switch's `ret` then goes where the
/// return-stack buffer predicts, into the same loop of the other context.
///
/// # Safety
/// As for [`switch_window`], for each switch; `nr_resumed` is valid for writes whenever this
/// context runs.
#[inline(never)]
unsafe fn switch_loop(from: *mut Window, to: *const Window, nr_switches: u64, nr_resumed: *mut u64) {
    for _ in 0..nr_switches {
        // SAFETY: the caller's contract.
        unsafe {
            switch_window(from, to, 0);
            *nr_resumed += 1;
        }
    }
}

/// The second context: switch back to the caller forever, counting round trips. It is never
/// resumed after the last round trip; its stack is freed with it suspended.
extern "C" fn partner(pair_addr: usize, _handoff: usize) -> ! {
    let pair = pair_addr as *mut Pair;
    // SAFETY: the caller is suspended in its switch while this context runs, so this is the only
    // access to `*pair`; the caller's window was stored by that switch, and the partner's window
    // is ours to store into.
    unsafe {
        (*pair).nr_round_trips += 1;
        switch_loop(&raw mut (*pair).partner, &raw const (*pair).caller, u64::MAX, &raw mut (*pair).nr_round_trips);
    }
    unreachable!("2^64 switches")
}

/// Per-switch samples of `switch_window` round trips between two contexts on one thread, timed in
/// batches of [`BATCH`] round trips. The partner counts its round trips and the count is checked.
pub fn window_switch(sampling: Sampling) -> Vec<f64> {
    let mut stack = vec![0_u8; PARTNER_STACK_BYTES];
    let stack_top = stack.as_mut_ptr_range().end;
    let pair = Box::into_raw(Box::<Pair>::default());
    // SAFETY: `pair` comes from Box::into_raw and nothing else refers to it yet; `stack_top` ends
    // `stack`, which only the partner, not yet started, uses.
    unsafe { (*pair).partner = Window::new_thread(stack_top, partner, pair as usize) };
    let mut nr_resumed = 0_u64;
    let samples = cycles_per_op(sampling, 2 * BATCH, || {
        // SAFETY: `*pair` outlives every switch; the partner's window is either fresh from
        // new_thread or stored by the partner's own switch back to us, and its stack is alive; the
        // caller's window is ours to store into. Everything runs on this one thread.
        unsafe { switch_loop(&raw mut (*pair).caller, &raw const (*pair).partner, u64::from(BATCH), &raw mut nr_resumed) };
    });
    // SAFETY: the partner is suspended, so nothing else touches `*pair`; it came from Box::into_raw.
    let pair = unsafe { Box::from_raw(pair) };
    drop(stack);
    let expected = (sampling.nr_calls() * BATCH as usize) as u64;
    assert_eq!(pair.nr_round_trips, expected, "every switch to the partner must come back once");
    assert_eq!(nr_resumed, expected, "every switch back to the caller must resume it once");
    samples
}

/// The turn word's values: whose move it is, or that the partner should leave.
const TURN_MEASURER: u32 = 0;
const TURN_PARTNER: u32 = 1;
const STOP: u32 = 2;

/// Per-switch samples of a `yield_now` ping-pong between two `sched` threads, and what the
/// scheduler counted meanwhile.
pub struct SchedYield {
    pub per_switch_cycles: Vec<f64>,
    /// The scheduler's counters for the whole run (warm-up, and the switches into and out of
    /// the main thread that starts the pair, included).
    pub counters: Counters,
}

/// Two `sched` threads on a one-CPU host scheduler (the calling OS thread, which the caller has
/// pinned, is that CPU) pass a turn back and forth: each calls `yield_now` until the turn is its
/// own. With `vectors`, both are FPU threads and load the live vector image before every yield, so
/// every switch saves and restores live AVX state. A round trip is too short to time alone, so a
/// sample is `round_trips_per_sample` round trips; samples are per switch. Every hand-off is
/// checked to be answered exactly once.
pub fn sched_yield_pair(
    sampling: Sampling,
    round_trips_per_sample: u32,
    vectors: Option<Arc<LiveVectors>>,
) -> SchedYield {
    let with_fpu = vectors.is_some();
    let builder = move |name| {
        let builder = Builder::new(name).pinned(CpuIndex(0));
        if with_fpu { builder.with_fpu() } else { builder }
    };
    let touch = move || {
        if let Some(vectors) = &vectors {
            vectors.touch();
        }
    };
    let ((per_switch_cycles, nr_answers), sched) = host::run(1, Config::default(), move |s| {
        let turn = Arc::new(AtomicU32::new(TURN_MEASURER));
        let partner = {
            let (turn, touch) = (Arc::clone(&turn), touch.clone());
            s.spawn(builder("yield partner"), move || {
                let mut nr_answers = 0_usize;
                loop {
                    match turn.load(Ordering::Acquire) {
                        TURN_PARTNER => {
                            nr_answers += 1;
                            turn.store(TURN_MEASURER, Ordering::Release);
                        }
                        STOP => return nr_answers,
                        _ => {
                            touch();
                            s.yield_now();
                        }
                    }
                }
            })
            .expect("spawn the yield partner")
        };
        let measurer = s
            .spawn(builder("yield measurer"), move || {
                let samples = cycles_per_op(sampling, 2 * round_trips_per_sample, || {
                    for _ in 0..round_trips_per_sample {
                        turn.store(TURN_PARTNER, Ordering::Release);
                        while turn.load(Ordering::Acquire) != TURN_MEASURER {
                            touch();
                            s.yield_now();
                        }
                    }
                });
                turn.store(STOP, Ordering::Release);
                samples
            })
            .expect("spawn the yield measurer");
        let samples = measurer.join().expect("the measurer returns its samples");
        (samples, partner.join().expect("the partner returns its count"))
    });
    let nr_round_trips = sampling.nr_calls() * round_trips_per_sample as usize;
    assert_eq!(nr_answers, nr_round_trips, "every hand-off must be answered exactly once");
    SchedYield { per_switch_cycles, counters: sched.counters(CpuIndex(0)) }
}

/// A stand-in thread for the run queue: just its scheduling state, one cache line per thread as in
/// a real control block.
#[repr(align(64))]
struct QueuedThread {
    entity: Entity<QueuedThread>,
}

// SAFETY: `entity` always returns the same field of `self`.
unsafe impl Queued for QueuedThread {
    fn entity(&self) -> &Entity<Self> {
        &self.entity
    }
}

/// Per-pick samples of the run-queue work of a yield with `nr_runnable` runnable threads (one
/// running, the rest queued): lock the CPU's queue, put the running thread back at the tail, pop
/// the head, unlock. Timed in batches of [`BATCH`] picks. Afterwards the queue must still hold
/// every other thread, and one more round of picks must visit each thread exactly once.
pub fn pick(sampling: Sampling, nr_runnable: usize) -> Vec<f64> {
    assert!(nr_runnable >= 2, "a pick needs a thread to put back and one to take");
    let threads: Vec<QueuedThread> =
        (0..nr_runnable).map(|_| QueuedThread { entity: Entity::new(0, false) }).collect();
    let queue = CpuQueue::<QueuedThread>::new();
    for thread in &threads {
        // SAFETY: `threads` is neither moved nor dropped while the queue is in use, the entity is
        // on no queue and belongs to CPU 0, this queue's CPU.
        unsafe { queue.activate(NonNull::from(thread)) };
    }
    let mut current = queue.lock().pop().expect("the queue holds every thread");
    let pick_next = |current: NonNull<QueuedThread>| {
        let mut rq = queue.lock();
        // SAFETY: `current` is the thread "running" on this queue's CPU (taken off the queue by the
        // previous pick) and is alive in `threads`.
        unsafe { rq.put_prev_pick_next(current, false) }.expect("another thread is runnable")
    };
    let samples = cycles_per_op(sampling, BATCH, || {
        for _ in 0..BATCH {
            current = pick_next(current);
        }
    });
    let mut seen = vec![false; nr_runnable];
    for _ in 0..nr_runnable {
        current = pick_next(current);
        let index = threads.iter().position(|t| std::ptr::eq(t, current.as_ptr())).expect("one of ours");
        assert!(!seen[index], "round robin picks every thread once per round");
        seen[index] = true;
    }
    assert_eq!(queue.lock().len(), nr_runnable - 1, "every thread but the running one stays queued");
    samples
}

/// Per-save samples of the switch path's extended-state save (`arch::fpu::save_switch`: stores
/// while x87 is in its init state, else the kind `sched` picks here) of live vector state, timed
/// in batches of [`BATCH`] saves. The state is loaded from `vectors` first, as an FPU thread's
/// would be, so an `xsaveopt` cannot take the "unmodified since the last restore from this area"
/// shortcut.
pub fn fpu_save(sampling: Sampling, vectors: &LiveVectors) -> Vec<f64> {
    let features = FpuFeatures::detect().for_threads();
    let mut area = FpuArea::new(vectors.kind(), &features).expect("memory for a save area");
    vectors.touch();
    cycles_per_op(sampling, BATCH, || {
        for _ in 0..BATCH {
            // SAFETY: the area was sized for this kind on this machine, whose user space has it
            // enabled (LiveVectors::new saved with it already).
            unsafe { fpu::save_switch(&mut area, vectors.kind()) };
        }
    })
}

/// Per-restore samples of the switch path's extended-state restore (`arch::fpu::restore_switch`,
/// reading XINUSE itself) of the live vector image, timed in batches of [`BATCH`] restores.
pub fn fpu_restore(sampling: Sampling, vectors: &LiveVectors) -> Vec<f64> {
    cycles_per_op(sampling, BATCH, || {
        for _ in 0..BATCH {
            // SAFETY: the image was saved with this kind in this process, whose user space has it
            // enabled.
            unsafe { fpu::restore_switch(vectors.area(), vectors.kind(), false) };
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: Sampling = Sampling { nr_warmup: 2, nr_samples: 10 };

    #[test]
    fn window_switch_counts_every_round_trip_and_returns_one_sample_per_batch() {
        assert_eq!(window_switch(TINY).len(), 10);
    }

    /// Round trips per sample in the yield tests.
    const ROUND_TRIPS: u32 = 3;
    /// Switches a yield ping-pong sampled with TINY must at least make: two per round trip.
    const MIN_SWITCHES: u64 = 2 * ROUND_TRIPS as u64 * (TINY.nr_warmup + TINY.nr_samples) as u64;

    #[test]
    fn sched_yield_pair_answers_every_hand_off_with_at_least_two_switches_per_round_trip() {
        let pong = std::thread::spawn(|| sched_yield_pair(TINY, ROUND_TRIPS, None)).join().unwrap();
        assert_eq!(pong.per_switch_cycles.len(), 10);
        assert!(pong.counters.context_switches >= MIN_SWITCHES);
        assert_eq!(pong.counters.fpu_saves, 0);
    }

    #[test]
    fn sched_yield_pair_with_fpu_saves_and_restores_at_every_switch_between_the_two() {
        let vectors = Arc::new(LiveVectors::new().unwrap());
        let pong = std::thread::spawn(move || sched_yield_pair(TINY, ROUND_TRIPS, Some(vectors))).join().unwrap();
        assert_eq!(pong.per_switch_cycles.len(), 10);
        assert!(pong.counters.fpu_saves >= MIN_SWITCHES);
        assert!(pong.counters.fpu_restores >= MIN_SWITCHES);
    }

    #[test]
    fn pick_keeps_every_thread_queued_and_round_robin_with_two_and_many() {
        for nr_runnable in [2, 3, 100] {
            assert_eq!(pick(TINY, nr_runnable).len(), 10);
        }
    }

    #[test]
    fn fpu_save_returns_one_sample_per_batch() {
        let vectors = LiveVectors::new().unwrap();
        assert_eq!(fpu_save(TINY, &vectors).len(), 10);
        assert_eq!(fpu_restore(TINY, &vectors).len(), 10);
    }
}
