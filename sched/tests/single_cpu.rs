//! The scheduler on one host CPU: spawn, join, exit, round-robin yields, sleep, preemption through
//! simulated ticks, preemption-disabled sections, and the FPU and address-space decisions of the
//! switch path.

mod common;

use common::watchdog;
use sched::host::{self, HostPlatform};
use sched::{Builder, Config, CpuIndex, Mm, Platform, Scheduler, Semaphore, SpawnError};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
type Sched = &'static Scheduler<HostPlatform>;

#[test]
fn spawned_threads_return_their_values_to_join() {
    let _w = watchdog("spawned_threads_return_their_values_to_join", LIMIT);
    let (values, s) = host::run(1, Config::default(), |s: Sched| {
        let handles: Vec<_> = (0..10u64)
            .map(|i| s.spawn(Builder::new("square"), move || i * i).unwrap())
            .collect();
        handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
    });
    assert_eq!(values, (0..10u64).map(|i| Some(i * i)).collect::<Vec<_>>());
    assert!(s.total_counters().context_switches >= 10);
}

#[test]
fn yields_run_threads_in_round_robin_order() {
    let _w = watchdog("yields_run_threads_in_round_robin_order", LIMIT);
    let (log, s) = host::run(1, Config::default(), |s: Sched| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|name| {
                let log = log.clone();
                s.spawn(Builder::new(name), move || {
                    for _ in 0..5 {
                        log.lock().unwrap().push(name);
                        s.yield_now();
                    }
                })
                .unwrap()
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        Arc::try_unwrap(log).unwrap().into_inner().unwrap()
    });
    assert_eq!(log, ["a", "b", "c"].repeat(5));
    assert_eq!(s.total_counters().voluntary_yields, 15);
}

#[test]
fn exit_ends_the_thread_and_join_sees_none() {
    let _w = watchdog("exit_ends_the_thread_and_join_sees_none", LIMIT);
    let (after_exit, _) = host::run(1, Config::default(), |s: Sched| {
        let after = Arc::new(AtomicBool::new(false));
        let flag = after.clone();
        // Through a plain fn pointer, so the compiler cannot drop the code after the call.
        // SAFETY: the quitter's frame holds only `flag` (an Arc whose leak the test accepts) and
        // nothing pinned or lent.
        let quit: fn(Sched) = |s| unsafe { s.exit() };
        let h = s
            .spawn(Builder::new("quitter"), move || {
                quit(s);
                flag.store(true, Ordering::Relaxed)
            })
            .unwrap();
        assert_eq!(h.join(), None);
        after.load(Ordering::Relaxed)
    });
    assert!(!after_exit, "code after exit() ran");
}

#[test]
fn current_names_the_running_thread() {
    let _w = watchdog("current_names_the_running_thread", LIMIT);
    let ((seen, id), _) = host::run(1, Config::default(), |s: Sched| {
        let h = s
            .spawn(Builder::new("worker"), move || s.current().unwrap())
            .unwrap();
        let id = h.id();
        (h.join().unwrap(), id)
    });
    assert_eq!(seen.name, "worker");
    assert_eq!(seen.id, id);
    assert_eq!(seen.cpu, CpuIndex(0));
    assert_eq!(seen.to_string(), format!("thread {id} 'worker' on CPU 0"));
}

#[test]
fn sleep_never_wakes_before_its_deadline_and_wakes_in_deadline_order() {
    let _w = watchdog(
        "sleep_never_wakes_before_its_deadline_and_wakes_in_deadline_order",
        LIMIT,
    );
    let (results, _) = host::run(1, Config::default(), |s: Sched| {
        let order = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = [3_000_000u64, 1_000_000, 0, 2_000_000, 500_000]
            .into_iter()
            .map(|d| {
                let order = order.clone();
                s.spawn(Builder::new("sleeper"), move || {
                    let start = s.platform().now_ns();
                    s.sleep_ns(d);
                    let slept = s.platform().now_ns() - start;
                    order.lock().unwrap().push(d);
                    (d, slept)
                })
                .unwrap()
            })
            .collect();
        let slept: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (slept, Arc::try_unwrap(order).unwrap().into_inner().unwrap())
    });
    let (slept, order) = results;
    for (d, took) in slept {
        assert!(took >= d, "a sleep of {d} ns woke after {took} ns");
    }
    assert_eq!(order, [0, 500_000, 1_000_000, 2_000_000, 3_000_000]);
}

#[test]
fn sleep_queue_bytes_keep_the_most_crowded_moment_and_no_more() {
    let _w = watchdog("sleep_queue_bytes_keep_the_most_crowded_moment_and_no_more", LIMIT);
    let (bytes, _) = host::run(1, Config::default(), |s: Sched| {
        let empty = s.sleep_queue_bytes();
        let crowd = |n: u64| {
            let handles: Vec<_> = (0..n)
                .map(|i| s.spawn(Builder::new("sleeper"), move || s.sleep_ns(100_000 + i)).unwrap())
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            s.sleep_queue_bytes()
        };
        let after_10 = crowd(10);
        let after_3 = crowd(3);
        let after_10_again = crowd(10);
        (empty, after_10, after_3, after_10_again)
    });
    let (empty, after_10, after_3, after_10_again) = bytes;
    assert_eq!(empty, 0, "no sleeper yet, no capacity");
    // Ten sleepers at once: some capacity.
    assert!(after_10 > 0, "ten sleepers at once left no capacity");
    // Fewer sleepers later and as many again: the capacity neither shrinks nor grows.
    assert_eq!(after_3, after_10, "a smaller crowd changed the capacity");
    assert_eq!(after_10_again, after_10, "the same crowd again grew the capacity");
}

#[test]
fn join_sleeps_until_a_blocked_thread_is_released() {
    let _w = watchdog("join_sleeps_until_a_blocked_thread_is_released", LIMIT);
    let (v, s) = host::run(1, Config::default(), |s: Sched| {
        let sem = Arc::new(Semaphore::new(0));
        let gate = sem.clone();
        let h = s
            .spawn(Builder::new("gated"), move || {
                gate.acquire(s);
                7
            })
            .unwrap();
        for _ in 0..3 {
            s.yield_now();
        }
        assert!(
            !h.is_finished(),
            "the gated thread finished before its permit"
        );
        sem.release(s);
        h.join()
    });
    assert_eq!(v, Some(7));
    assert!(
        s.total_counters().wakeups >= 2,
        "the permit and the join both woke a thread"
    );
}

#[test]
fn a_failed_try_lock_leaves_the_mutex_locked() {
    let _w = watchdog("a_failed_try_lock_leaves_the_mutex_locked", LIMIT);
    let (held, _) = host::run(1, Config::default(), |s: Sched| {
        let m = sched::Mutex::new(0u32);
        let guard = m.lock(s);
        assert!(m.try_lock(s).is_none(), "try_lock succeeded on a held mutex");
        let held = m.try_lock(s).is_none();
        drop(guard);
        assert!(m.try_lock(s).is_some(), "try_lock failed on a free mutex");
        held
    });
    assert!(held, "a failed try_lock unlocked the mutex under its holder");
}

#[test]
fn spawn_rejects_a_cpu_the_scheduler_does_not_have() {
    let _w = watchdog("spawn_rejects_a_cpu_the_scheduler_does_not_have", LIMIT);
    let (r, _) = host::run(1, Config::default(), |s: Sched| {
        s.spawn(Builder::new("lost").pinned(CpuIndex(3)), || ())
            .err()
    });
    assert_eq!(r, Some(SpawnError::NoSuchCpu(CpuIndex(3))));
}

/// Two threads that never yield share one CPU only because simulated ticks preempt them: each
/// counts the times it saw the other's progress move while it was not looking (a hand-off), and
/// they stop only when both have seen five.
/// Run one thread that spins a little before each of 20 ticks, user-mode ones if `user`; returns
/// the CPU's counters and how long the run took.
fn spin_and_tick(user: bool) -> (sched::Counters, u64) {
    let start = std::time::Instant::now();
    let (_, s) = host::run(1, Config::default(), move |s: Sched| {
        s.spawn(Builder::new("ticked"), move || {
            for _ in 0..20 {
                let t = std::time::Instant::now();
                while t.elapsed() < std::time::Duration::from_micros(50) {
                    std::hint::spin_loop();
                }
                if user { host::tick_user(s) } else { host::tick(s) }
            }
        })
        .unwrap()
        .join()
        .unwrap();
    });
    (s.total_counters(), start.elapsed().as_nanos() as u64)
}

#[test]
fn ticks_from_user_mode_count_user_time_and_others_do_not() {
    let _w = watchdog("ticks_from_user_mode_count_user_time_and_others_do_not", LIMIT);
    let (kernel, _) = spin_and_tick(false);
    assert_eq!(kernel.user_ns, 0, "no tick came from user mode: {kernel:?}");
    let (user, wall_ns) = spin_and_tick(true);
    // Twenty spins of 50 us each ran before user-mode ticks: about 1 ms is user time (half of it
    // at least, whatever the scaling of the scheduler's clock), and never more than the run took.
    assert!(
        (500_000..=wall_ns).contains(&user.user_ns),
        "user time {} ns, the run took {wall_ns} ns",
        user.user_ns
    );
}

#[test]
fn ticks_preempt_threads_that_never_yield() {
    let _w = watchdog("ticks_preempt_threads_that_never_yield", LIMIT);
    let config = Config {
        slice_ns: 100_000,
        ..Config::default()
    };
    let (handoffs, s) = host::run(1, config, |s: Sched| {
        let progress = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let handoffs = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let handles: Vec<_> = (0..2)
            .map(|me| {
                let (progress, handoffs) = (progress.clone(), handoffs.clone());
                s.spawn(Builder::new("spinner"), move || {
                    let mut seen = progress[1 - me].load(Ordering::Relaxed);
                    loop {
                        progress[me].fetch_add(1, Ordering::Relaxed);
                        host::tick(s);
                        let now = progress[1 - me].load(Ordering::Relaxed);
                        if now != seen {
                            seen = now;
                            handoffs[me].fetch_add(1, Ordering::Relaxed);
                        }
                        if handoffs[me].load(Ordering::Relaxed) >= 5
                            && handoffs[1 - me].load(Ordering::Relaxed) >= 5
                        {
                            break;
                        }
                    }
                })
                .unwrap()
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        [
            handoffs[0].load(Ordering::Relaxed),
            handoffs[1].load(Ordering::Relaxed),
        ]
    });
    assert!(handoffs.iter().all(|&n| n >= 5), "{handoffs:?}");
    let c = s.total_counters();
    assert!(
        c.preemptions >= 9,
        "every hand-off but the last exit is a preemption: {c:?}"
    );
    assert_eq!(c.voluntary_yields, 0);
}

#[test]
fn preempt_disable_defers_preemption_to_the_last_guard() {
    let _w = watchdog("preempt_disable_defers_preemption_to_the_last_guard", LIMIT);
    let config = Config {
        slice_ns: 10_000,
        ..Config::default()
    };
    let ((ran_inside, ran_after_drop), s) = host::run(1, config, |s: Sched| {
        let other_ran = Arc::new(AtomicBool::new(false));
        let flag = other_ran.clone();
        let h = s
            .spawn(Builder::new("holder"), move || {
                let outer = s.preempt_disable();
                let inner = s.preempt_disable();
                let start = s.platform().now_ns();
                // Far past the slice, with another thread waiting.
                while s.platform().now_ns() - start < 2_000_000 {
                    host::tick(s);
                }
                drop(inner);
                for _ in 0..100 {
                    host::tick(s);
                }
                let inside = flag.load(Ordering::Relaxed);
                drop(outer);
                // The pending preemption happens in the drop; the other thread has run by now.
                (inside, flag.load(Ordering::Relaxed))
            })
            .unwrap();
        let other = s
            .spawn(Builder::new("waiting"), move || {
                other_ran.store(true, Ordering::Relaxed)
            })
            .unwrap();
        let r = h.join().unwrap();
        other.join().unwrap();
        r
    });
    assert!(!ran_inside, "a thread ran while preemption was disabled");
    assert!(
        ran_after_drop,
        "the deferred preemption did not happen when the last guard dropped"
    );
    assert!(s.total_counters().preemptions >= 1);
}

/// One FPU thread among non-FPU threads: its state stays live in the registers, so after the first
/// restore every return is a skipped restore; it is saved on every switch away.
#[test]
fn fpu_state_of_a_lone_fpu_thread_is_restored_once() {
    let _w = watchdog("fpu_state_of_a_lone_fpu_thread_is_restored_once", LIMIT);
    let (_, s) = host::run(1, Config::default(), |s: Sched| {
        let f = s
            .spawn(Builder::new("fpu").with_fpu(), move || {
                (0..100).for_each(|_| s.yield_now())
            })
            .unwrap();
        let n = s
            .spawn(Builder::new("plain"), move || {
                (0..100).for_each(|_| s.yield_now())
            })
            .unwrap();
        f.join().unwrap();
        n.join().unwrap();
    });
    let c = s.total_counters();
    assert_eq!(c.fpu_restores, 1, "{c:?}");
    assert_eq!(c.fpu_saves, 100, "{c:?}");
    assert_eq!(c.fpu_restores_skipped, 100, "{c:?}");
}

/// Two FPU threads alternating: each switch-in must restore, none may skip.
#[test]
fn fpu_state_of_alternating_fpu_threads_is_restored_every_time() {
    let _w = watchdog(
        "fpu_state_of_alternating_fpu_threads_is_restored_every_time",
        LIMIT,
    );
    let (_, s) = host::run(1, Config::default(), |s: Sched| {
        let a = s
            .spawn(Builder::new("fpu-a").with_fpu(), move || {
                (0..50).for_each(|_| s.yield_now())
            })
            .unwrap();
        let b = s
            .spawn(Builder::new("fpu-b").with_fpu(), move || {
                (0..50).for_each(|_| s.yield_now())
            })
            .unwrap();
        a.join().unwrap();
        b.join().unwrap();
    });
    let c = s.total_counters();
    assert_eq!(c.fpu_restores_skipped, 0, "{c:?}");
    assert_eq!(
        c.fpu_restores, 102,
        "each thread switched in 51 times: {c:?}"
    );
    assert_eq!(
        c.fpu_saves, 100,
        "each thread switched out 50 times alive: {c:?}"
    );
    // Nothing here touches x87: where the CPU lets XINUSE be read, every save is the plain
    // stores, and every restore after a save on the same switch is the plain loads.
    if arch::fpu::FpuFeatures::detect().for_threads().fast_switch() {
        assert_eq!(c.fpu_fast_saves, c.fpu_saves, "{c:?}");
        assert!(c.fpu_fast_restores >= c.fpu_saves, "{c:?}");
    } else {
        assert_eq!((c.fpu_fast_saves, c.fpu_fast_restores), (0, 0), "{c:?}");
    }
}

/// `switch_mm` runs exactly when the incoming thread has an address space that is not loaded;
/// kernel-only threads borrow the loaded one.
#[test]
fn address_space_switches_only_when_the_space_changes() {
    let _w = watchdog("address_space_switches_only_when_the_space_changes", LIMIT);
    let owners = [Arc::new(()), Arc::new(())];
    let mm = move |n: usize| host::mm(NonZeroUsize::new(n).unwrap(), owners[n - 1].clone());
    let ((log, spaces), s) = host::run(1, Config::default(), move |s: Sched| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let spaces = [Some(mm(1)), Some(mm(1)), None, Some(mm(2))];
        let handles: Vec<_> = spaces
            .iter()
            .enumerate()
            .map(|(i, space)| {
                let log = log.clone();
                let mut b = Builder::new("user");
                if let Some(m) = space {
                    b = b.in_mm(m.clone());
                }
                s.spawn(b, move || {
                    for _ in 0..4 {
                        log.lock().unwrap().push(i);
                        s.yield_now();
                    }
                    log.lock().unwrap().push(i);
                })
                .unwrap()
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        (Arc::try_unwrap(log).unwrap().into_inner().unwrap(), spaces)
    });
    // Replay the run order: every run of a thread with a space other than the loaded one loads it.
    let mut loaded = None;
    let mut expected = 0;
    for i in log {
        if let Some(m) = spaces[i].as_ref().map(Mm::word)
            && loaded != Some(m)
        {
            loaded = Some(m);
            expected += 1;
        }
    }
    assert!(expected >= 10);
    assert_eq!(s.platform().mm_switches(CpuIndex(0)), expected);
}

/// A thread owns its address space and gives it up itself when its body returns (`exit_mm`),
/// before its joiner wakes: once every thread in a space has been joined, only the spawner's
/// reference is left, whatever order they ran in.
#[test]
fn a_thread_gives_up_its_space_when_it_ends() {
    let _w = watchdog("a_thread_gives_up_its_space_when_it_ends", LIMIT);
    let owner = Arc::new(());
    let o = owner.clone();
    let (during, _) = host::run(2, Config::default(), move |s: Sched| {
        let space = host::mm(NonZeroUsize::new(7).unwrap(), o.clone());
        let (go, gate) = (Arc::new(AtomicBool::new(false)), Arc::new(Semaphore::new(0)));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (go, gate) = (go.clone(), gate.clone());
                s.spawn(Builder::new("in-space").in_mm(space.clone()), move || {
                    gate.acquire(s);
                    go.load(Ordering::Relaxed)
                })
                .unwrap()
            })
            .collect();
        drop(space);
        // The spawner's `o` and the eight threads' references.
        let during = Arc::strong_count(&o);
        go.store(true, Ordering::Relaxed);
        for _ in 0..8 {
            gate.release(s);
        }
        for h in handles {
            assert_eq!(h.join(), Some(true));
        }
        assert_eq!(Arc::strong_count(&o), 1 + 1, "a joined thread still holds its space");
        during
    });
    assert_eq!(during, 1 + 1 + 8);
    assert_eq!(Arc::strong_count(&owner), 1);
}

/// `execve`'s step: a thread moves itself to another space, which is loaded at once (one
/// `switch_mm`) and stays its space across later switches (no more loads while it alone runs);
/// the old space comes back to the caller, and the thread gives up the new one when it ends.
#[test]
fn a_thread_replaces_its_space_and_runs_on_in_the_new_one() {
    let _w = watchdog(
        "a_thread_replaces_its_space_and_runs_on_in_the_new_one",
        LIMIT,
    );
    let (old_owner, new_owner) = (Arc::new(()), Arc::new(()));
    let (o, n) = (old_owner.clone(), new_owner.clone());
    let ((before, after_replace, after_yields, old_back), s) =
        host::run(1, Config::default(), move |s: Sched| {
            let old = host::mm(NonZeroUsize::new(1).unwrap(), o.clone());
            let new = host::mm(NonZeroUsize::new(2).unwrap(), n.clone());
            drop((o, n));
            let h = s
                .spawn(Builder::new("exec").in_mm(old), move || {
                    let before = s.platform().mm_switches(CpuIndex(0));
                    let back = s.replace_current_mm(new);
                    let after_replace = s.platform().mm_switches(CpuIndex(0));
                    for _ in 0..5 {
                        s.yield_now();
                    }
                    let after_yields = s.platform().mm_switches(CpuIndex(0));
                    let old_back = back.map(|m| m.word().get());
                    (before, after_replace, after_yields, old_back)
                })
                .unwrap();
            h.join().unwrap()
        });
    assert_eq!(old_back, Some(1), "the old space is handed back");
    assert_eq!(
        after_replace,
        before + 1,
        "the new space is loaded before the call returns"
    );
    assert_eq!(
        after_yields, after_replace,
        "it stays loaded: the thread's space is the new one"
    );
    assert_eq!(
        Arc::strong_count(&old_owner),
        1,
        "the old space was dropped by its caller"
    );
    assert_eq!(
        Arc::strong_count(&new_owner),
        1,
        "the thread gave up the new space when it ended"
    );
    assert_eq!(s.platform().mm_switches(CpuIndex(0)), after_yields);
}

/// `fork`'s child starts with its parent's extended state: a thread spawned `with_fpu_of_caller`
/// by an FPU thread sees the spawner's MXCSR (flush-to-zero set), one spawned `with_fpu` sees the
/// clean state's.
#[test]
fn a_thread_spawned_with_the_callers_fpu_state_starts_from_it() {
    #![allow(
        deprecated,
        reason = "_mm_getcsr/_mm_setcsr are the plain way to reach MXCSR"
    )]
    use core::arch::x86_64::{_mm_getcsr, _mm_setcsr};
    const FTZ: u32 = 1 << 15;
    let _w = watchdog(
        "a_thread_spawned_with_the_callers_fpu_state_starts_from_it",
        LIMIT,
    );
    let ((copied, clean), _) = host::run(1, Config::default(), |s: Sched| {
        let parent = s
            .spawn(Builder::new("parent").with_fpu(), move || {
                // SAFETY: flush-to-zero changes only how denormal results round, in this thread
                // alone (its MXCSR is saved and restored at each switch).
                unsafe { _mm_setcsr(_mm_getcsr() | FTZ) };
                // SAFETY: reading MXCSR has no effect.
                let read = || unsafe { _mm_getcsr() };
                let copied = s
                    .spawn(Builder::new("child").with_fpu_of_caller(), read)
                    .unwrap();
                let clean = s.spawn(Builder::new("clean").with_fpu(), read).unwrap();
                let r = (copied.join().unwrap(), clean.join().unwrap());
                // SAFETY: as above, back to the clean value.
                unsafe { _mm_setcsr(_mm_getcsr() & !FTZ) };
                r
            })
            .unwrap();
        parent.join().unwrap()
    });
    assert_ne!(
        copied & FTZ,
        0,
        "the child starts with its spawner's MXCSR: {copied:#x}"
    );
    assert_eq!(
        clean & FTZ,
        0,
        "a plain FPU thread starts clean: {clean:#x}"
    );
}

/// A thread's CPU time grows while it runs and not while it sleeps: a thread that sleeps 200 ms
/// ran for less than half of that, a thread that spins sees its own time pass, and every reading
/// is at least the one before.
#[test]
fn thread_cpu_time_grows_while_running_not_while_sleeping() {
    let _w = watchdog("thread_cpu_time_grows_while_running_not_while_sleeping", LIMIT);
    let ((slept_ns, sleeper_cpu_ns), _) = host::run(1, Config::default(), |s: Sched| {
        let sleeper = s
            .spawn(Builder::new("sleeper"), move || {
                let before = s.current_cpu_time().0;
                let t0 = s.platform().now_ns();
                s.sleep_ns(200_000_000);
                (s.platform().now_ns() - t0, s.current_cpu_time().0 - before)
            })
            .unwrap();
        let spinner = s
            .spawn(Builder::new("spinner"), move || {
                let start = s.current_cpu_time().0;
                let mut last = start;
                // Ends only if the thread's own time advances while it runs.
                while last - start < 5_000_000 {
                    let now = s.current_cpu_time().0;
                    assert!(now >= last, "a thread's CPU time went back: {last} -> {now}");
                    last = now;
                }
            })
            .unwrap();
        spinner.join().unwrap();
        sleeper.join().unwrap()
    });
    assert!(slept_ns >= 200_000_000);
    assert!(
        sleeper_cpu_ns < slept_ns / 2,
        "a thread asleep for {slept_ns} ns was charged {sleeper_cpu_ns} ns"
    );
}

/// The space's account gets the run time of every thread in it, on any CPU: after the threads
/// end, it holds at least the sum of their last readings; a thread outside the space adds
/// nothing to it.
#[test]
fn a_space_is_charged_the_cpu_time_of_its_threads() {
    let _w = watchdog("a_space_is_charged_the_cpu_time_of_its_threads", LIMIT);
    let account = Arc::new(AtomicU64::new(0));
    let space = host::mm_with_account(NonZeroUsize::new(1).unwrap(), account.clone());
    let (sum_ns, _) = host::run(2, Config::default(), move |s: Sched| {
        let spin_until = move |ns: u64| {
            let start = s.current_cpu_time().0;
            loop {
                let now = s.current_cpu_time().0;
                if now - start >= ns {
                    return now;
                }
            }
        };
        let outsider = s
            .spawn(Builder::new("outsider"), move || spin_until(2_000_000))
            .unwrap();
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let b = Builder::new("user").in_mm(space.clone()).pinned(CpuIndex(i % 2));
                s.spawn(b, move || spin_until(2_000_000)).unwrap()
            })
            .collect();
        drop(space);
        outsider.join().unwrap();
        handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    let charged = account.load(Ordering::Relaxed);
    assert!(sum_ns >= 4 * 2_000_000);
    assert!(charged >= sum_ns, "the space was charged {charged} ns, its threads ran {sum_ns}");
}
