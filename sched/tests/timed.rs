//! Sleeps with a deadline that a wake-up also ends (`Parker::park_until_deadline`,
//! `KeyedWaitQueue::wait_until`) on 2 host CPUs: a wake-up ends the sleep at once (the deadline
//! is an hour away, so a sleep that waited for it would hang into the watchdog), the deadline
//! ends it when nobody wakes, and the timer of a sleep that a wake-up ended wakes nobody later.

mod common;

use common::{one_scheduler_at_a_time, watchdog};
use sched::host::{self, HostPlatform};
use sched::{Builder, Config, CpuIndex, KeyedWaitQueue, Parker, Platform, Scheduler};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);
type Sched = &'static Scheduler<HostPlatform>;
const HOUR_NS: u64 = 3_600_000_000_000;
const ANY: u32 = u32::MAX;

/// A thread on CPU 1 sets a flag and wakes a thread parked on CPU 0 until the flag or a deadline
/// an hour away: the park returns that the flag held, having checked it at most three times (on
/// entry, after marking itself blocked, after the one wake-up): no naps.
#[test]
fn a_wake_up_ends_a_timed_park_at_once() {
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("a_wake_up_ends_a_timed_park_at_once", LIMIT);
    let ((held, checks), _) = host::run(2, Config::default(), |s: Sched| {
        let parker: Arc<OnceLock<Parker>> = Arc::new(OnceLock::new());
        let flag = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (parker, flag) = (parker.clone(), flag.clone());
            s.spawn(Builder::new("waiter").pinned(CpuIndex(0)), move || {
                let me = parker.get_or_init(|| Parker::for_current(s));
                let checks = AtomicU32::new(0);
                let deadline = s.platform().now_ns() + HOUR_NS;
                let held = me.park_until_deadline(s, deadline, || {
                    checks.fetch_add(1, Ordering::Relaxed);
                    flag.load(Ordering::Acquire)
                });
                (held, checks.load(Ordering::Relaxed))
            })
            .unwrap()
        };
        let waker = s
            .spawn(Builder::new("waker").pinned(CpuIndex(1)), move || {
                let p = loop {
                    match parker.get() {
                        Some(p) => break p,
                        None => s.yield_now(),
                    }
                };
                flag.store(true, Ordering::Release);
                p.wake(s);
            })
            .unwrap();
        waker.join().unwrap();
        waiter.join().unwrap()
    });
    assert!(held, "the park ended without its condition");
    assert!(checks <= 3, "the parked thread was woken {checks} times");
}

/// Nobody wakes: the deadline ends the park, which says its condition did not hold.
#[test]
fn the_deadline_ends_a_timed_park_nobody_wakes() {
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("the_deadline_ends_a_timed_park_nobody_wakes", LIMIT);
    let (held, _) = host::run(2, Config::default(), |s: Sched| {
        let me = Parker::for_current(s);
        let deadline = s.platform().now_ns() + 2_000_000;
        let held = me.park_until_deadline(s, deadline, || false);
        assert!(s.platform().now_ns() >= deadline, "ended before its deadline");
        held
    });
    assert!(!held);
}

/// A park with a deadline 10 ms away is ended by a wake-up 1 ms in; once that wake-up has
/// returned, the same thread parks untimed until a flag another thread sets 50 ms later. Had the first park's timer stayed queued,
/// its expiry would wake the second park, which would check its condition a third time.
#[test]
fn a_timed_park_ended_early_leaves_no_timer_behind() {
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("a_timed_park_ended_early_leaves_no_timer_behind", LIMIT);
    let (false_checks, _) = host::run(2, Config::default(), |s: Sched| {
        let parker: Arc<OnceLock<Parker>> = Arc::new(OnceLock::new());
        let first = Arc::new(AtomicU32::new(0));
        let second = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (parker, first, second) = (parker.clone(), first.clone(), second.clone());
            s.spawn(Builder::new("waiter").pinned(CpuIndex(0)), move || {
                let me = parker.get_or_init(|| Parker::for_current(s));
                let deadline = s.platform().now_ns() + 10_000_000;
                let _ = me.park_until_deadline(s, deadline, || first.load(Ordering::Acquire) != 0);
                // The waker's first wake-up has returned: it cannot reach the second park.
                while first.load(Ordering::Acquire) != 2 {
                    s.yield_now();
                }
                let false_checks = AtomicU32::new(0);
                me.park_until(s, || {
                    let set = second.load(Ordering::Acquire);
                    if !set {
                        false_checks.fetch_add(1, Ordering::Relaxed);
                    }
                    set
                });
                false_checks.load(Ordering::Relaxed)
            })
            .unwrap()
        };
        let waker = s
            .spawn(Builder::new("waker").pinned(CpuIndex(1)), move || {
                let p = loop {
                    match parker.get() {
                        Some(p) => break p,
                        None => s.yield_now(),
                    }
                };
                // Most likely after the waiter has blocked (if not, the test proves less).
                s.sleep_ns(1_000_000);
                first.store(1, Ordering::Release);
                p.wake(s);
                first.store(2, Ordering::Release);
                s.sleep_ns(50_000_000);
                second.store(true, Ordering::Release);
                p.wake(s);
            })
            .unwrap();
        waker.join().unwrap();
        waiter.join().unwrap()
    });
    assert!(false_checks <= 2, "the untimed park was woken spuriously");
}

/// The keyed queue's timed wait: taken by a wake-up with an hour left, it returns `Ok`; nobody
/// waking, its stop says the deadline passed, and nothing is left queued.
#[test]
fn a_keyed_timed_wait_ends_at_its_wake_or_its_deadline() {
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("a_keyed_timed_wait_ends_at_its_wake_or_its_deadline", LIMIT);
    let ((woken, timed_out, left), _) = host::run(2, Config::default(), |s: Sched| {
        let q: &'static KeyedWaitQueue<u64> = Box::leak(Box::new(KeyedWaitQueue::new()));
        let waiter = s
            .spawn(Builder::new("waiter").pinned(CpuIndex(0)), move || {
                let deadline = s.platform().now_ns() + HOUR_NS;
                let stop = || (s.platform().now_ns() >= deadline).then_some(());
                q.wait_until(s, &Parker::for_current(s), 3, ANY, || Ok(()), stop, deadline)
            })
            .unwrap();
        while q.wake(s, 3, 1, ANY) == 0 {
            s.yield_now();
        }
        let woken = waiter.join().unwrap();
        let deadline = s.platform().now_ns() + 2_000_000;
        let stop = || (s.platform().now_ns() >= deadline).then_some(());
        let timed_out = q.wait_until(s, &Parker::for_current(s), 4, ANY, || Ok(()), stop, deadline);
        (woken, timed_out, q.wake(s, 4, 8, ANY))
    });
    assert_eq!(woken, Ok(()));
    assert_eq!(timed_out, Err(()));
    assert_eq!(left, 0);
}
