//! The keyed wait queue (a futex bucket) on 1-3 host CPUs: hand-offs that lose no wake-up under
//! stray parker wakes, wakes chosen by key and bitset, timeouts, stops racing with wakes, and
//! requeues. Each test accounts for every waiter: taken by exactly one wake, or gone by its own
//! stop, never both; a lost wake-up shows as a hang, which the watchdog turns into a failure.

mod common;

use common::{one_scheduler_at_a_time, spawn_stray_waker, watchdog};
use sched::host::{self, HostPlatform};
use sched::{Builder, Config, CpuIndex, KeyedWaitQueue, Parker, Scheduler};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);
type Sched = &'static Scheduler<HostPlatform>;
type Queue = KeyedWaitQueue<u64>;
const ANY: u32 = u32::MAX;

fn new_queue() -> &'static Queue {
    Box::leak(Box::new(Queue::new()))
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Why {
    Changed,
    Stopped,
    TimedOut,
}

/// Wake `key` until `n` waiters have been taken in all (they may not have queued yet).
fn wake_until(s: Sched, q: &Queue, key: u64, n: u32, bitset: u32) {
    let mut taken = 0;
    while taken < n {
        taken += q.wake(s, key, n - taken, bitset);
        if taken < n {
            s.yield_now();
        }
    }
}

/// The futex hand-off: two threads on two CPUs pass a turn through a word, each waiting while the
/// word says it is the other's turn, 10^5 times, while a third thread wakes both parkers at random
/// (as signals' kicks would). Every turn is taken exactly once by its side.
#[test]
fn hand_offs_through_the_word_lose_no_wake_up() {
    const TURNS: u32 = 50_000;
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("hand_offs_through_the_word_lose_no_wake_up", LIMIT);
    let (taken, _) = host::run(3, Config::default(), |s: Sched| {
        let q = new_queue();
        let parkers: Arc<[OnceLock<Parker>; 2]> = Arc::new(Default::default());
        let turn = Arc::new(AtomicU32::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let sides: Vec<_> = (0..2u32)
            .map(|side| {
                let (parkers, turn, done) = (parkers.clone(), turn.clone(), done.clone());
                s.spawn(Builder::new("hand").pinned(CpuIndex(side)), move || {
                    let me = parkers[side as usize].get_or_init(|| Parker::for_current(s));
                    let mut taken = 0u32;
                    for i in 0..TURNS {
                        let mine = 2 * i + side;
                        loop {
                            let now = turn.load(Ordering::Acquire);
                            if now == mine {
                                break;
                            }
                            let check = || {
                                if turn.load(Ordering::Relaxed) == now {
                                    Ok(())
                                } else {
                                    Err(Why::Changed)
                                }
                            };
                            let _ = q.wait(s, me, 7, ANY, check, || None::<Why>, None);
                        }
                        taken += 1;
                        turn.store(mine + 1, Ordering::Release);
                        q.wake(s, 7, 1, ANY);
                    }
                    done.fetch_add(1, Ordering::Release);
                    taken
                })
                .unwrap()
            })
            .collect();
        let stray = spawn_stray_waker(s, CpuIndex(2), parkers.clone(), done.clone());
        let taken: Vec<u32> = sides.into_iter().map(|h| h.join().unwrap()).collect();
        stray.join().unwrap();
        (taken, turn.load(Ordering::Acquire))
    });
    assert_eq!(
        taken.0,
        vec![TURNS, TURNS],
        "a side missed or repeated a turn"
    );
    assert_eq!(taken.1, 2 * TURNS, "hand-offs lost or duplicated");
}

/// A failed check queues nothing; wakes take only waiters of their key whose bitset they meet,
/// oldest first, and say how many they took.
#[test]
fn wakes_choose_by_key_and_bitset_in_queue_order() {
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("wakes_choose_by_key_and_bitset_in_queue_order", LIMIT);
    let (order, _) = host::run(1, Config::default(), |s: Sched| {
        let q = new_queue();
        assert_eq!(
            q.wait(
                s,
                &Parker::for_current(s),
                1,
                ANY,
                || Err(Why::Changed),
                || None,
                None
            ),
            Err(Why::Changed)
        );
        assert_eq!(q.wake(s, 1, 1, ANY), 0, "a failed check left an entry");
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        // (name, key, bitset), queued in this order: the one CPU runs each until it sleeps.
        let waiters = [(0, 1, 0b01), (1, 2, ANY), (2, 1, 0b10), (3, 1, 0b11)];
        let handles: Vec<_> = waiters
            .iter()
            .map(|&(name, key, bits)| {
                let order = order.clone();
                let h = s
                    .spawn(Builder::new("waiter"), move || {
                        let r = q.wait(
                            s,
                            &Parker::for_current(s),
                            key,
                            bits,
                            || Ok::<(), Why>(()),
                            || None,
                            None,
                        );
                        order.lock().unwrap().push(name);
                        r
                    })
                    .unwrap();
                s.yield_now();
                h
            })
            .collect();
        assert_eq!(q.wake(s, 1, 8, 0b10), 2, "bit 1 names waiters 2 and 3");
        assert_eq!(q.wake(s, 3, 8, ANY), 0, "no waiter has key 3");
        assert_eq!(q.wake(s, 1, 1, ANY), 1);
        assert_eq!(q.wake(s, 2, 1, ANY), 1);
        for h in handles {
            assert_eq!(h.join().unwrap(), Ok(()));
        }
        order.lock().unwrap().clone()
    });
    assert_eq!(order, vec![2, 3, 0, 1]);
}

/// A timed waiter nobody wakes returns its stop reason, and leaves no entry behind for a later
/// wake to take.
#[test]
fn a_timed_out_waiter_leaves_nothing_queued() {
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("a_timed_out_waiter_leaves_nothing_queued", LIMIT);
    let (r, _) = host::run(2, Config::default(), |s: Sched| {
        let q = new_queue();
        let naps = AtomicU32::new(0);
        let stop = || (naps.load(Ordering::Relaxed) >= 3).then_some(Why::TimedOut);
        let nap = || {
            naps.fetch_add(1, Ordering::Relaxed);
            s.sleep_ns(100_000);
        };
        let r = q.wait(
            s,
            &Parker::for_current(s),
            5,
            ANY,
            || Ok(()),
            stop,
            Some(&nap),
        );
        (r, q.wake(s, 5, 8, ANY), naps.load(Ordering::Relaxed))
    });
    assert_eq!(r, (Err(Why::TimedOut), 0, 3));
}

/// Waiters that stop on their own (a flag, then their parker woken, as a signal does) race with
/// wakes: every waiter ends exactly once, `Ok` if and only if a wake took it, so the wakes'
/// counts add up to the `Ok`s, and nothing is left queued.
#[test]
fn stops_racing_wakes_account_for_every_waiter() {
    const ROUNDS: u64 = 2_000;
    const WAITERS: usize = 3;
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("stops_racing_wakes_account_for_every_waiter", LIMIT);
    let ((oks, stopped, woken, left), _) = host::run(3, Config::default(), |s: Sched| {
        let q = new_queue();
        let (mut oks, mut stopped, mut woken) = (0u64, 0u64, 0u64);
        for round in 0..ROUNDS {
            let ready = Arc::new(AtomicUsize::new(0));
            let flags: Arc<Vec<AtomicBool>> =
                Arc::new((0..WAITERS).map(|_| AtomicBool::new(false)).collect());
            let parkers: Arc<Vec<OnceLock<Parker>>> =
                Arc::new((0..WAITERS).map(|_| OnceLock::new()).collect());
            let waiters: Vec<_> = (0..WAITERS)
                .map(|i| {
                    let (ready, flags, parkers) = (ready.clone(), flags.clone(), parkers.clone());
                    s.spawn(
                        Builder::new("waiter").pinned(CpuIndex(i as u32 % 3)),
                        move || {
                            let p = parkers[i].get_or_init(|| Parker::for_current(s));
                            let check = || {
                                ready.fetch_add(1, Ordering::Release);
                                Ok(())
                            };
                            let stop = || flags[i].load(Ordering::SeqCst).then_some(Why::Stopped);
                            q.wait(s, p, round, ANY, check, stop, None)
                        },
                    )
                    .unwrap()
                })
                .collect();
            while ready.load(Ordering::Acquire) < WAITERS {
                s.yield_now();
            }
            // Stop the odd ones while waking two of the three.
            for i in (1..WAITERS).step_by(2) {
                flags[i].store(true, Ordering::SeqCst);
                parkers[i].get().unwrap().wake(s);
            }
            woken += u64::from(q.wake(s, round, 2, ANY));
            // Whoever neither stopped nor was taken yet is taken now.
            for (i, h) in waiters.into_iter().enumerate() {
                if i % 2 == 0 {
                    while !h.is_finished() {
                        woken += u64::from(q.wake(s, round, 1, ANY));
                        s.yield_now();
                    }
                }
                match h.join().unwrap() {
                    Ok(()) => oks += 1,
                    Err(Why::Stopped) => stopped += 1,
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
        }
        let left: u32 = (0..ROUNDS).map(|k| q.wake(s, k, u32::MAX, ANY)).sum();
        (oks, stopped, woken, left)
    });
    assert_eq!(
        oks + stopped,
        ROUNDS * WAITERS as u64,
        "a waiter ended twice or never"
    );
    assert_eq!(
        oks, woken,
        "a wake was counted for a waiter that reported a stop, or lost"
    );
    assert_eq!(left, 0, "an entry outlived its wait");
}

/// A requeue wakes `nr_wake` waiters of the old key and moves `nr_requeue` more to the new key in
/// another queue (and in the same one), in order; moved waiters are woken by the new key only, and
/// one that stops after the move takes itself off the queue it was moved to.
#[test]
fn requeue_wakes_then_moves_waiters_to_the_new_key() {
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("requeue_wakes_then_moves_waiters_to_the_new_key", LIMIT);
    let (results, _) = host::run(2, Config::default(), |s: Sched| {
        let mut results = Vec::new();
        for same in [false, true] {
            let from = new_queue();
            let to = if same { from } else { new_queue() };
            let order = Arc::new(std::sync::Mutex::new(Vec::new()));
            let stop_last = Arc::new(AtomicBool::new(false));
            let parker_last: Arc<OnceLock<Parker>> = Arc::new(OnceLock::new());
            let queued = Arc::new(AtomicU64::new(0));
            let handles: Vec<_> = (0..5u64)
                .map(|i| {
                    let (order, stop_last, parker_last) =
                        (order.clone(), stop_last.clone(), parker_last.clone());
                    let queued_now = queued.clone();
                    let h = s
                        .spawn(Builder::new("waiter").pinned(CpuIndex(0)), move || {
                            let own;
                            let p = if i == 4 {
                                parker_last.get_or_init(|| Parker::for_current(s))
                            } else {
                                own = Parker::for_current(s);
                                &own
                            };
                            let stop = || {
                                (i == 4 && stop_last.load(Ordering::SeqCst)).then_some(Why::Stopped)
                            };
                            // Runs under the lock, right before the waiter is linked.
                            let check = || {
                                queued_now.fetch_add(1, Ordering::Release);
                                Ok(())
                            };
                            let r = from.wait(s, p, 10, ANY, check, stop, None);
                            order.lock().unwrap().push(i);
                            r
                        })
                        .unwrap();
                    // Queued in order: the next waiter starts once this one is linked.
                    while queued.load(Ordering::Acquire) <= i {
                        s.yield_now();
                    }
                    h
                })
                .collect();
            let changed = from.requeue(s, 10, to, 20, 1, 2, || Err(Why::Changed));
            assert_eq!(changed, Err(Why::Changed), "a failed check moves nothing");
            assert_eq!(
                from.requeue(s, 10, to, 20, 1, 2, || Ok::<(), Why>(())),
                Ok((1, 2))
            );
            // Waiter 0 was woken; 1 and 2 wait on key 20 in `to`; 3 and 4 still on key 10.
            assert_eq!(
                from.requeue(s, 10, to, 20, 0, 1, || Ok::<(), Why>(())),
                Ok((0, 1))
            );
            // Now 3 moved as well; 4 stays and stops.
            stop_last.store(true, Ordering::SeqCst);
            parker_last.get().unwrap().wake(s);
            let last = handles.into_iter().collect::<Vec<_>>();
            while !last[4].is_finished() {
                s.yield_now();
            }
            assert_eq!(from.wake(s, 10, 8, ANY), 0, "key 10 is empty");
            wake_until(s, to, 20, 3, ANY);
            let rs: Vec<_> = last.into_iter().map(|h| h.join().unwrap()).collect();
            assert_eq!(to.wake(s, 20, 8, ANY), 0, "key 20 is empty");
            results.push((rs, order.lock().unwrap().clone()));
        }
        results
    });
    for (rs, order) in results {
        assert_eq!(rs, vec![Ok(()), Ok(()), Ok(()), Ok(()), Err(Why::Stopped)]);
        assert_eq!(order, vec![0, 4, 1, 2, 3]);
    }
}

/// Many waiters, a few wakers, on one CPU each: wakes of many at once take exactly the waiters
/// there are, and every waiter returns once.
#[test]
fn storms_of_waits_and_wakes_conserve_waiters() {
    const WAITS: u64 = 20_000;
    const WAITERS: u64 = 4;
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("storms_of_waits_and_wakes_conserve_waiters", LIMIT);
    let ((done, woken), _) = host::run(3, Config::default(), |s: Sched| {
        let q = new_queue();
        let generation = Arc::new(AtomicU64::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let waiters: Vec<_> = (0..WAITERS)
            .map(|i| {
                let (generation, finished) = (generation.clone(), finished.clone());
                s.spawn(
                    Builder::new("waiter").pinned(CpuIndex((i % 2) as u32)),
                    move || {
                        let p = Parker::for_current(s);
                        let mut ok = 0u64;
                        for _ in 0..WAITS {
                            let g = generation.load(Ordering::Acquire);
                            let check = || {
                                if generation.load(Ordering::Relaxed) == g {
                                    Ok(())
                                } else {
                                    Err(Why::Changed)
                                }
                            };
                            if q.wait(s, &p, 1, ANY, check, || None, None).is_ok() {
                                ok += 1;
                            }
                        }
                        finished.fetch_add(1, Ordering::Release);
                        ok
                    },
                )
                .unwrap()
            })
            .collect();
        let waker = {
            let (generation, finished) = (generation.clone(), finished.clone());
            s.spawn(Builder::new("waker").pinned(CpuIndex(2)), move || {
                let mut woken = 0u64;
                let mut n = 0u32;
                while finished.load(Ordering::Acquire) < WAITERS as usize {
                    generation.fetch_add(1, Ordering::Release);
                    woken += u64::from(q.wake(s, 1, n % 3 + 1, ANY));
                    n += 1;
                }
                woken
            })
            .unwrap()
        };
        let done: u64 = waiters.into_iter().map(|h| h.join().unwrap()).sum();
        (done, waker.join().unwrap())
    });
    assert_eq!(
        done, woken,
        "every Ok is one waiter a wake took, and every take one Ok"
    );
}
