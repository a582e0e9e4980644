//! The scheduler on 2-4 host CPUs: cross-CPU wake-ups, stealing, sleeping locks and timers under
//! load. Every stress test checks conservation: each exchange, thread, increment and wake-up is
//! accounted for, not merely that nothing crashed. A lost wake-up shows as a hang, which the
//! watchdog turns into a failure.

mod common;

use common::{one_scheduler_at_a_time, spawn_stray_waker, watchdog};
use sched::host::{self, HostPlatform};
use sched::{Builder, Config, CpuIndex, Mutex, Parker, Platform, Scheduler, Semaphore, WaitQueue};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);
type Sched = &'static Scheduler<HostPlatform>;

fn cpu_of(s: Sched) -> CpuIndex {
    s.current().expect("a scheduler thread").cpu
}

/// Two pairs of threads pass a ball back and forth through semaphores, 10^5 times per pair. The
/// ball's value proves every hand-off happened once, in order.
#[test]
fn ping_pong_pairs_account_for_every_exchange() {
    const EXCHANGES: u64 = 100_000;
    const PAIRS: usize = 2;
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("ping_pong_pairs_account_for_every_exchange", LIMIT);
    let (results, s) = host::run(4, Config::default(), |s: Sched| {
        let pairs: Vec<_> = (0..PAIRS)
            .map(|_| {
                let sems = Arc::new([Semaphore::new(1), Semaphore::new(0)]);
                let ball = Arc::new(AtomicU64::new(0));
                let sides: Vec<_> = (0..2u64)
                    .map(|side| {
                        let (sems, ball) = (sems.clone(), ball.clone());
                        s.spawn(Builder::new("pong"), move || {
                            let mut out_of_turn = 0u64;
                            for i in 0..EXCHANGES {
                                sems[side as usize].acquire(s);
                                if ball.load(Ordering::Relaxed) != 2 * i + side {
                                    out_of_turn += 1;
                                }
                                ball.store(2 * i + side + 1, Ordering::Relaxed);
                                sems[1 - side as usize].release(s);
                            }
                            out_of_turn
                        })
                        .unwrap()
                    })
                    .collect();
                (sides, ball)
            })
            .collect();
        pairs
            .into_iter()
            .map(|(sides, ball)| {
                let out_of_turn: u64 = sides.into_iter().map(|h| h.join().unwrap()).sum();
                (out_of_turn, ball.load(Ordering::Relaxed))
            })
            .collect::<Vec<_>>()
    });
    for (out_of_turn, ball) in results {
        assert_eq!(out_of_turn, 0, "a side ran out of turn");
        assert_eq!(ball, 2 * EXCHANGES, "hand-offs lost or duplicated");
    }
    let c = s.total_counters();
    assert!(c.wakeups >= EXCHANGES, "{c:?}");
    assert_eq!(c.migrations_in, c.migrations_out, "{c:?}");
}

/// The futex hand-off on parkers: two threads on two CPUs pass a turn back and forth 10^5 times,
/// each sleeping on its own parker (made by its first park, as the kernel's futex wait does) and
/// waking the other's after giving the turn away, while a third thread wakes both parkers at random
/// (spurious wake-ups). Every turn is taken exactly once by the side it was given to, and a lost
/// wake-up shows as a hang.
#[test]
fn parker_hand_offs_survive_stray_wakes_and_lose_none() {
    const TURNS: u64 = 100_000;
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("parker_hand_offs_survive_stray_wakes_and_lose_none", LIMIT);
    let (taken, _) = host::run(3, Config::default(), |s: Sched| {
        let parkers: Arc<[std::sync::OnceLock<Parker>; 2]> = Arc::new(Default::default());
        let turn = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let wake = |parkers: &[std::sync::OnceLock<Parker>; 2], side: usize| {
            if let Some(p) = parkers[side].get() {
                p.wake(s);
            }
        };
        let sides: Vec<_> = (0..2u64)
            .map(|side| {
                let (parkers, turn, done) = (parkers.clone(), turn.clone(), done.clone());
                s.spawn(Builder::new("hand").pinned(CpuIndex(side as u32)), move || {
                    let me = parkers[side as usize].get_or_init(|| Parker::for_current(s));
                    let mut taken = 0u64;
                    for i in 0..TURNS {
                        let mine = 2 * i + side;
                        me.park_until(s, || turn.load(Ordering::Acquire) == mine);
                        taken += 1;
                        turn.store(mine + 1, Ordering::Release);
                        wake(&parkers, 1 - side as usize);
                    }
                    done.fetch_add(1, Ordering::Release);
                    taken
                })
                .unwrap()
            })
            .collect();
        let stray = spawn_stray_waker(s, CpuIndex(2), parkers.clone(), done.clone());
        let taken: Vec<u64> = sides.into_iter().map(|h| h.join().unwrap()).collect();
        stray.join().unwrap();
        (taken, turn.load(Ordering::Acquire))
    });
    assert_eq!(taken.0, vec![TURNS, TURNS], "a side missed or repeated a turn");
    assert_eq!(taken.1, 2 * TURNS, "hand-offs lost or duplicated");
}

/// 10^4 threads spawned from four spawners on four CPUs, each run exactly once and joined.
#[test]
fn spawn_exit_churn_runs_every_thread_exactly_once() {
    const SPAWNERS: usize = 4;
    const PER_SPAWNER: usize = 2_500;
    const BATCH: usize = 100;
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("spawn_exit_churn_runs_every_thread_exactly_once", LIMIT);
    let (runs, s) = host::run(4, Config::default(), |s: Sched| {
        let runs: Arc<Vec<AtomicU8>> = Arc::new(
            (0..SPAWNERS * PER_SPAWNER)
                .map(|_| AtomicU8::new(0))
                .collect(),
        );
        let spawners: Vec<_> = (0..SPAWNERS)
            .map(|k| {
                let runs = runs.clone();
                s.spawn(
                    Builder::new("spawner").pinned(CpuIndex(k as u32)),
                    move || {
                        let mut joined = 0;
                        for batch in (0..PER_SPAWNER).step_by(BATCH) {
                            let handles: Vec<_> = (batch..batch + BATCH)
                                .map(|j| {
                                    let i = k * PER_SPAWNER + j;
                                    let runs = runs.clone();
                                    let b = Builder::new("churn").stack_bytes(16 * 1024);
                                    s.spawn(b, move || {
                                        runs[i].fetch_add(1, Ordering::Relaxed);
                                        i
                                    })
                                    .unwrap()
                                })
                                .collect();
                            for (j, h) in (batch..).zip(handles) {
                                assert_eq!(h.join(), Some(k * PER_SPAWNER + j));
                                joined += 1;
                            }
                        }
                        joined
                    },
                )
                .unwrap()
            })
            .collect();
        let joined: usize = spawners.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(joined, SPAWNERS * PER_SPAWNER);
        runs.iter()
            .map(|r| r.load(Ordering::Relaxed))
            .collect::<Vec<_>>()
    });
    assert!(
        runs.iter().all(|&n| n == 1),
        "a thread ran {} times",
        runs.iter().find(|&&n| n != 1).unwrap()
    );
    let c = s.total_counters();
    assert!(
        c.context_switches >= (SPAWNERS * PER_SPAWNER) as u64,
        "{c:?}"
    );
    assert!(
        c.migrations_in > 0,
        "idle CPUs never stole from the spawners: {c:?}"
    );
    assert_eq!(c.migrations_in, c.migrations_out, "{c:?}");
}

/// Eight threads on three CPUs increment one counter under the sleeping mutex, sometimes yielding
/// while holding it so that others must sleep on it.
#[test]
fn mutex_contention_loses_no_increment() {
    const THREADS: u64 = 8;
    const INCREMENTS: u64 = 10_000;
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("mutex_contention_loses_no_increment", LIMIT);
    let ((total, inside), s) = host::run(3, Config::default(), |s: Sched| {
        let counter = Arc::new(Mutex::new(0u64));
        let inside = Arc::new(AtomicUsize::new(0));
        let overlaps = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (counter, inside, overlaps) =
                    (counter.clone(), inside.clone(), overlaps.clone());
                s.spawn(Builder::new("incr"), move || {
                    for i in 0..INCREMENTS {
                        let mut g = counter.lock(s);
                        if inside.fetch_add(1, Ordering::Relaxed) != 0 {
                            overlaps.fetch_add(1, Ordering::Relaxed);
                        }
                        let v = *g;
                        if i % 64 == 0 {
                            s.yield_now();
                        }
                        *g = v + 1;
                        inside.fetch_sub(1, Ordering::Relaxed);
                    }
                })
                .unwrap()
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let total = *counter.lock(s);
        (total, overlaps.load(Ordering::Relaxed))
    });
    assert_eq!(total, THREADS * INCREMENTS);
    assert_eq!(inside, 0, "two threads were inside the mutex at once");
    assert!(
        s.total_counters().wakeups > 0,
        "the mutex never had a sleeping waiter"
    );
}

/// A waiter's check-then-sleep races a waker on another CPU, round after round, with the waker's
/// timing varied; a lost wake-up would leave the waiter asleep forever.
#[test]
fn wake_ups_racing_check_then_sleep_are_never_lost() {
    const ROUNDS: u64 = 20_000;
    const PAIRS: u32 = 2;
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("wake_ups_racing_check_then_sleep_are_never_lost", LIMIT);
    // No idle poll: every wake-up that finds its waiter asleep finds its CPU halting, so the race
    // with the halt and its IPI is the one exercised (the poll's own race is the next test's).
    let config = Config { idle_poll_ns: 0, ..Config::default() };
    let (results, s) = host::run(4, config, |s: Sched| {
        let pairs: Vec<_> = (0..PAIRS)
            .map(|p| {
                let round = Arc::new(AtomicU64::new(0));
                let ready = Arc::new(AtomicU64::new(0));
                let (round_wq, ready_wq) = (Arc::new(WaitQueue::new()), Arc::new(WaitQueue::new()));
                let waiter = {
                    let (round, ready, round_wq, ready_wq) = (
                        round.clone(),
                        ready.clone(),
                        round_wq.clone(),
                        ready_wq.clone(),
                    );
                    s.spawn(Builder::new("waiter").pinned(CpuIndex(2 * p)), move || {
                        let mut rounds = 0;
                        for r in 1..=ROUNDS {
                            ready.store(r, Ordering::Release);
                            ready_wq.wake_all(s);
                            round_wq.wait_until(s, || round.load(Ordering::Acquire) >= r);
                            rounds += 1;
                        }
                        rounds
                    })
                    .unwrap()
                };
                let waker = s
                    .spawn(
                        Builder::new("waker").pinned(CpuIndex(2 * p + 1)),
                        move || {
                            let mut woken = 0;
                            for r in 1..=ROUNDS {
                                ready_wq.wait_until(s, || ready.load(Ordering::Acquire) >= r);
                                // Vary where in the waiter's check-then-sleep the wake-up lands.
                                for _ in 0..(r * 7919) % 97 {
                                    std::hint::spin_loop();
                                }
                                round.store(r, Ordering::Release);
                                woken += round_wq.wake_all(s);
                            }
                            woken
                        },
                    )
                    .unwrap();
                (waiter, waker)
            })
            .collect();
        pairs
            .into_iter()
            .map(|(w, k)| (w.join().unwrap(), k.join().unwrap()))
            .collect::<Vec<_>>()
    });
    for (rounds, woken) in results {
        assert_eq!(rounds, ROUNDS);
        assert!(
            woken > 0,
            "the waiter never actually slept: the race was not exercised"
        );
    }
    let c = s.total_counters();
    assert!(c.ipis_sent > 0, "{c:?}");
}

/// Two threads on two CPUs hand a turn back and forth through semaphores while each CPU polls
/// its queue before halting, with a bound far above any hand-off (1 s): once a CPU's limit has
/// grown (a few halts), the partner's wake-up finds it polling, and takes no IPI. Every turn is
/// taken once, in order, and nearly every wake-up needed no IPI.
#[test]
fn wake_ups_of_a_polling_cpu_need_no_ipi_and_lose_nothing() {
    const TURNS: u64 = 20_000;
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("wake_ups_of_a_polling_cpu_need_no_ipi_and_lose_nothing", LIMIT);
    let config = Config { idle_poll_ns: 1_000_000_000, ..Config::default() };
    let (taken, s) = host::run(2, config, |s: Sched| {
        let sems = Arc::new([Semaphore::new(1), Semaphore::new(0)]);
        let ball = Arc::new(AtomicU64::new(0));
        let sides: Vec<_> = (0..2u64)
            .map(|side| {
                let (sems, ball) = (sems.clone(), ball.clone());
                s.spawn(Builder::new("turn").pinned(CpuIndex(side as u32)), move || {
                    let mut in_turn = 0u64;
                    for i in 0..TURNS {
                        sems[side as usize].acquire(s);
                        if ball.load(Ordering::Relaxed) == 2 * i + side {
                            in_turn += 1;
                        }
                        ball.store(2 * i + side + 1, Ordering::Relaxed);
                        sems[1 - side as usize].release(s);
                    }
                    in_turn
                })
                .unwrap()
            })
            .collect();
        let taken: Vec<u64> = sides.into_iter().map(|h| h.join().unwrap()).collect();
        (taken, ball.load(Ordering::Relaxed))
    });
    assert_eq!(taken.0, vec![TURNS, TURNS], "a side missed a turn or took one out of order");
    assert_eq!(taken.1, 2 * TURNS, "hand-offs lost or duplicated");
    let c = s.total_counters();
    // Each halt that ends in a wake-up doubles the limit (from 50 us, to 1 s in 15 steps), and no
    // idle period here is long enough to halve it: a few dozen IPIs at most, out of 40,000 turns.
    assert!(c.ipis_sent < TURNS / 20, "most wake-ups should have found the CPU polling: {c:?}");
    assert!(c.ipis_avoided > TURNS, "{c:?}");
}

/// Migratable threads bounce between CPUs under load (sleeps leave CPUs idle, and idle CPUs
/// steal). A per-thread "running on" marker, claimed at the start of each burst and checked
/// throughout, proves no thread ever runs on two CPUs at once.
#[test]
fn migrating_threads_never_run_on_two_cpus_at_once() {
    const THREADS: usize = 8;
    const BURSTS: u64 = 2_000;
    const NOBODY: usize = usize::MAX;
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("migrating_threads_never_run_on_two_cpus_at_once", LIMIT);
    let (results, s) = host::run(4, Config::default(), |s: Sched| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let running_on = Arc::new(AtomicUsize::new(NOBODY));
                s.spawn(Builder::new("bouncer"), move || {
                    let (mut violations, mut moves, mut bursts) = (0u64, 0u64, 0u64);
                    let mut last_cpu = cpu_of(s);
                    for b in 0..BURSTS {
                        let cpu = cpu_of(s);
                        if cpu != last_cpu {
                            moves += 1;
                            last_cpu = cpu;
                        }
                        if running_on
                            .compare_exchange(
                                NOBODY,
                                cpu.index(),
                                Ordering::AcqRel,
                                Ordering::Relaxed,
                            )
                            .is_err()
                        {
                            violations += 1;
                        }
                        for _ in 0..200 {
                            if running_on.load(Ordering::Relaxed) != cpu.index() {
                                violations += 1;
                            }
                            std::hint::spin_loop();
                        }
                        if cpu_of(s) != cpu {
                            violations += 1;
                        }
                        running_on.store(NOBODY, Ordering::Release);
                        bursts += 1;
                        if (b + t as u64).is_multiple_of(5) {
                            s.sleep_ns(20_000);
                        } else {
                            s.yield_now();
                        }
                    }
                    (violations, moves, bursts)
                })
                .unwrap()
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let moves: u64 = results.iter().map(|r| r.1).sum();
    for (violations, _, bursts) in &results {
        assert_eq!(
            *violations, 0,
            "a thread ran on two CPUs at once or moved mid-burst"
        );
        assert_eq!(*bursts, BURSTS);
    }
    let c = s.total_counters();
    assert!(moves > 0 && c.migrations_in > 0, "nothing migrated: {c:?}");
    assert_eq!(c.migrations_in, c.migrations_out, "{c:?}");
}

/// Pinned threads stay on their CPU through yields, sleeps and wake-ups while others steal around
/// them.
#[test]
fn pinned_threads_never_leave_their_cpu() {
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("pinned_threads_never_leave_their_cpu", LIMIT);
    let (strays, s) = host::run(3, Config::default(), |s: Sched| {
        let sem = Arc::new(Semaphore::new(0));
        let pinned: Vec<_> = (0..6u32)
            .map(|i| {
                let sem = sem.clone();
                let home = CpuIndex(i % 3);
                s.spawn(Builder::new("pinned").pinned(home), move || {
                    let mut strays = 0;
                    for round in 0..500 {
                        match round % 3 {
                            0 => s.yield_now(),
                            1 => s.sleep_ns(10_000),
                            _ => {
                                sem.release(s);
                                sem.acquire(s);
                            }
                        }
                        if cpu_of(s) != home {
                            strays += 1;
                        }
                    }
                    strays
                })
                .unwrap()
            })
            .collect();
        let free: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(Builder::new("free"), move || {
                    (0..500).for_each(|_| s.sleep_ns(5_000))
                })
                .unwrap()
            })
            .collect();
        free.into_iter().for_each(|h| h.join().unwrap());
        pinned.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    assert_eq!(strays, 0, "a pinned thread ran on another CPU");
    assert!(
        s.total_counters().migrations_in > 0,
        "the free threads never migrated"
    );
}

/// Threads change their own affinity thousands of times (one CPU, two CPUs, every CPU) while
/// yielding, sleeping and handing a semaphore around: after each change the thread runs on an
/// allowed CPU and reads back the mask it set, and stays on allowed CPUs until the next change;
/// every migration out of a CPU is one into another.
#[test]
fn affinity_changes_move_threads_and_keep_them_on_allowed_cpus() {
    const CPUS: usize = 3;
    const ROUNDS: u64 = 600;
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog(
        "affinity_changes_move_threads_and_keep_them_on_allowed_cpus",
        LIMIT,
    );
    let ((strays, rounds, spawned_masks), s) = host::run(CPUS, Config::default(), |s: Sched| {
        let sem = Arc::new(Semaphore::new(0));
        let movers: Vec<_> = (0..4u64)
            .map(|i| {
                let sem = sem.clone();
                s.spawn(Builder::new("mover"), move || {
                    let (mut strays, mut rounds) = (0u64, 0u64);
                    for round in 0..ROUNDS {
                        let k = (round + i) as usize;
                        let mask: u64 = match round % 3 {
                            0 => 1 << (k % CPUS),
                            1 => (1 << (k % CPUS)) | (1 << ((k + 1) % CPUS)),
                            _ => (1 << CPUS) - 1,
                        };
                        let on = s.set_current_affinity(&[mask]).unwrap();
                        let mut back = [0u64; 1];
                        s.current_affinity(&mut back);
                        assert_eq!(back[0], mask, "the mask read back is not the one set");
                        let check = |strays: &mut u64| {
                            if mask & (1 << cpu_of(s).index()) == 0 {
                                *strays += 1;
                            }
                        };
                        if mask & (1 << on.index()) == 0 {
                            strays += 1;
                        }
                        check(&mut strays);
                        match round % 4 {
                            0 => s.yield_now(),
                            1 => s.sleep_ns(10_000),
                            2 => {
                                sem.release(s);
                                sem.acquire(s);
                            }
                            _ => host::tick(s),
                        }
                        check(&mut strays);
                        rounds += 1;
                    }
                    (strays, rounds)
                })
                .unwrap()
            })
            .collect();
        let pinned = s
            .spawn(Builder::new("pinned").pinned(CpuIndex(1)), move || {
                let mut m = [0u64; 1];
                s.current_affinity(&mut m);
                m[0]
            })
            .unwrap();
        let free = s
            .spawn(Builder::new("free"), move || {
                let mut m = [0u64; 1];
                s.current_affinity(&mut m);
                let empty = s.set_current_affinity(&[1 << CPUS]);
                (m[0], empty)
            })
            .unwrap();
        let (strays, rounds) = movers
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
        (
            strays,
            rounds,
            (pinned.join().unwrap(), free.join().unwrap()),
        )
    });
    assert_eq!(
        strays, 0,
        "a thread ran on a CPU its affinity did not allow"
    );
    assert_eq!(rounds, 4 * ROUNDS, "a round was lost");
    assert_eq!(spawned_masks.0, 1 << 1, "a pinned thread's mask is its CPU");
    assert_eq!(
        spawned_masks.1.0,
        (1 << CPUS) - 1,
        "a free thread's mask is every CPU"
    );
    assert_eq!(
        spawned_masks.1.1,
        Err(sched::AffinityError::NoCpu),
        "a mask of absent CPUs is refused"
    );
    let c = s.total_counters();
    assert!(c.migrations_out > 0, "{c:?}");
    assert_eq!(c.migrations_in, c.migrations_out, "{c:?}");
}

/// Sleeps across CPUs never end early; an idle CPU with no sleeper has no timer armed (tickless)
/// and one with a sleeper has exactly its deadline armed.
#[test]
fn sleeps_are_never_early_and_idle_cpus_are_tickless() {
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("sleeps_are_never_early_and_idle_cpus_are_tickless", LIMIT);
    let ((early, tickless, armed), _) = host::run(2, Config::default(), |s: Sched| {
        // The checks run pinned to CPU 0 and watch CPU 1, where no sleeper exists until the test
        // places one.
        let checker = s.spawn(Builder::new("checker").pinned(CpuIndex(0)), move || {
            check_sleeps_and_ticks(s)
        });
        checker.unwrap().join().unwrap()
    });
    assert_eq!(early, 0, "a sleep ended before its deadline");
    assert!(tickless, "an idle CPU without sleepers kept a timer armed");
    assert!(armed, "an idle CPU with a sleeper had not exactly its deadline armed");
}

fn check_sleeps_and_ticks(s: Sched) -> (usize, bool, bool) {
    let other = CpuIndex(1);
    // Let the other CPU run out of work and halt.
    while !s.platform().is_halted(other) {
        s.sleep_ns(100_000);
    }
    let tickless = s.platform().timer_deadline(other).is_none();
    const LONG_NS: u64 = 200_000_000;
    // The clock just before the sleeper's call (0: not yet).
    let sleeper_start = Arc::new(AtomicU64::new(0));
    let started = sleeper_start.clone();
    let long = s
        .spawn(Builder::new("long-sleeper").pinned(other), move || {
            started.store(s.platform().now_ns().max(1), Ordering::Release);
            s.sleep_ns(LONG_NS);
        })
        .unwrap();
    let t0 = loop {
        match sleeper_start.load(Ordering::Acquire) {
            0 => s.sleep_ns(100_000),
            t0 => break t0,
        }
    };
    s.sleep_ns(20_000_000);
    // Its deadline is `LONG_NS` after the clock read inside `sleep_ns`, which came after `t0` and
    // before this check.
    let deadline = s.platform().timer_deadline(other);
    let latest = s.platform().now_ns() + LONG_NS;
    let armed = deadline.is_some_and(|d| (t0 + LONG_NS..=latest).contains(&d));
    let sleepers: Vec<_> = (0..40u64)
        .map(|i| {
            s.spawn(Builder::new("sleeper"), move || {
                let d = (i * 37 % 11) * 100_000;
                let start = s.platform().now_ns();
                s.sleep_ns(d);
                s.platform().now_ns() - start < d
            })
            .unwrap()
        })
        .collect();
    let early = sleepers
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|&e| e)
        .count();
    long.join().unwrap();
    (early, tickless, armed)
}

/// One thread changes another's affinity (`set_affinity`, Linux's sched_setaffinity with a tid):
/// a running user thread moves at its next switch point (here a tick) and stays on the allowed
/// CPU; a blocked one runs on an allowed CPU from the moment its wait returns; the mask reads
/// back through `affinity`; an id that is no live user thread is refused.
#[test]
fn another_thread_sets_the_affinity_of_a_running_and_of_a_blocked_thread() {
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog(
        "another_thread_sets_the_affinity_of_a_running_and_of_a_blocked_thread",
        LIMIT,
    );
    let (result, _) = host::run(3, Config::default(), |s: Sched| {
        let started = Arc::new(AtomicU8::new(0));
        let set = Arc::new(AtomicU8::new(0));
        let runner = {
            let (started, set) = (started.clone(), set.clone());
            s.spawn(Builder::new("runner").user_thread().pinned(CpuIndex(0)), move || {
                started.store(1, Ordering::Release);
                // Spin on CPU 0, passing switch points, until it runs on CPU 2.
                let mut ticks_before_move = 0u64;
                while cpu_of(s) != CpuIndex(2) {
                    assert_eq!(cpu_of(s), CpuIndex(0), "it left CPU 0 for another than CPU 2");
                    if set.load(Ordering::Acquire) == 1 {
                        ticks_before_move += 1;
                    }
                    host::tick(s);
                }
                // Moved: it stays there through yields and ticks.
                for i in 0..1000 {
                    if i % 2 == 0 { s.yield_now() } else { host::tick(s) }
                    assert_eq!(cpu_of(s), CpuIndex(2), "it left its only allowed CPU");
                }
                ticks_before_move
            })
            .unwrap()
        };
        let sem = Arc::new(Semaphore::new(0));
        let sleeper = {
            let sem = sem.clone();
            s.spawn(Builder::new("sleeper").user_thread().pinned(CpuIndex(1)), move || {
                sem.acquire(s);
                let woke_on = cpu_of(s);
                s.yield_now();
                (woke_on, cpu_of(s))
            })
            .unwrap()
        };
        while started.load(Ordering::Acquire) == 0 {
            s.yield_now();
        }
        s.set_affinity(runner.id(), &[1 << 2]).unwrap();
        set.store(1, Ordering::Release);
        let mut back = [0u64; 1];
        s.affinity(runner.id(), &mut back).unwrap();
        // The sleeper is blocked (or about to be) on CPU 1; it must wake to run on CPU 0 only.
        s.set_affinity(sleeper.id(), &[1 << 0]).unwrap();
        sem.release(s);
        let runner_id = runner.id();
        let ticks = runner.join().unwrap();
        let gone = s.affinity(runner_id, &mut [0u64; 1]);
        (back[0], ticks, sleeper.join().unwrap(), gone)
    });
    let (back, ticks, (woke_on, then_on), gone) = result;
    assert_eq!(back, 1 << 2, "the mask read back is not the one set");
    assert!(ticks <= 1, "the runner passed {ticks} ticks on CPU 0 after its affinity was changed");
    assert_eq!((woke_on, then_on), (CpuIndex(0), CpuIndex(0)), "the woken thread ran on a CPU it was not allowed");
    assert_eq!(gone, Err(sched::AffinityError::NoThread));
}
