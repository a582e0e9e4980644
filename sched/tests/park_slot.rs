//! The one-sleeper slot (`ParkSlot`) on host CPUs: a ping-pong through two slots, as two pipes'
//! sleeping readers use them, under stray parker wakes, and the slot's own rules (one offer at a
//! time, a withdraw that loses to a take). A lost wake-up shows as a hang, which the watchdog
//! turns into a failure.

mod common;

use common::{one_scheduler_at_a_time, spawn_stray_waker, watchdog};
use sched::host::{self, HostPlatform};
use sched::{Builder, Config, CpuIndex, ParkSlot, Parker, Scheduler};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);
type Sched = &'static Scheduler<HostPlatform>;

/// Two threads on two CPUs pass a turn back and forth, each sleeping in its own slot while the
/// turn is the other's (offer, park until the turn is its own or the offer was taken, withdraw),
/// each giving the turn away and then taking the other's slot and waking whoever it held, while a
/// third thread wakes both parkers at random. Every turn is taken exactly once by its side, and
/// both slots end empty.
#[test]
fn ping_pong_through_two_slots_loses_no_wake_up() {
    const TURNS: u32 = 50_000;
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("ping_pong_through_two_slots_loses_no_wake_up", LIMIT);
    let (taken, turn, empty) = host::run(3, Config::default(), |s: Sched| {
        let slots: Arc<[ParkSlot; 2]> = Arc::new(Default::default());
        let parkers: Arc<[OnceLock<Parker>; 2]> = Arc::new(Default::default());
        let turn = Arc::new(AtomicU32::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let sides: Vec<_> = (0..2u32)
            .map(|side| {
                let (slots, parkers, turn, done) =
                    (slots.clone(), parkers.clone(), turn.clone(), done.clone());
                s.spawn(Builder::new("side").pinned(CpuIndex(side)), move || {
                    let me = parkers[side as usize].get_or_init(|| Parker::for_current(s));
                    let mine = &slots[side as usize];
                    let mut taken = 0u32;
                    for i in 0..TURNS {
                        let want = 2 * i + side;
                        while turn.load(Ordering::SeqCst) != want {
                            if mine.offer(me) {
                                me.park_until_blocked(s, || {
                                    turn.load(Ordering::SeqCst) == want || !mine.holds(me)
                                });
                                mine.withdraw(me);
                            }
                        }
                        taken += 1;
                        turn.store(want + 1, Ordering::SeqCst);
                        slots[1 - side as usize].wake(s);
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
        let empty = slots.iter().all(|slot| slot.take().is_none());
        (taken, turn.load(Ordering::Acquire), empty)
    })
    .0;
    assert_eq!(
        taken,
        vec![TURNS, TURNS],
        "a side missed or repeated a turn"
    );
    assert_eq!(turn, 2 * TURNS, "hand-offs lost or duplicated");
    assert!(empty, "an offer was left in a slot");
}

/// A slot holds one offer: a second is refused; its owner's withdraw empties it; once a waker
/// took the offer, the withdraw says so (false) and the slot stays empty; a wake takes an offer
/// as a take does.
#[test]
fn a_slot_holds_one_offer_and_a_take_beats_a_withdraw() {
    let _serial = one_scheduler_at_a_time();
    let _w = watchdog("a_slot_holds_one_offer_and_a_take_beats_a_withdraw", LIMIT);
    let (r, _) = host::run(1, Config::default(), |s: Sched| {
        let me = Parker::for_current(s);
        let other = s
            .spawn(Builder::new("other").pinned(CpuIndex(0)), move || {
                Parker::for_current(s)
            })
            .unwrap()
            .join()
            .unwrap();
        let slot = ParkSlot::new();
        let first = slot.offer(&me) && slot.holds(&me) && !slot.holds(&other);
        let second_refused = !slot.offer(&other) && slot.holds(&me);
        let withdrawn = slot.withdraw(&me) && !slot.holds(&me) && slot.take().is_none();
        let again = slot.offer(&me);
        let taken = slot.take().is_some();
        let withdraw_lost = !slot.withdraw(&me) && slot.take().is_none();
        // A wake takes what is there (its owner running: a spurious wake-up) and finds an empty
        // slot empty.
        let woke = slot.offer(&me) && slot.wake(s) && !slot.holds(&me) && !slot.wake(s);
        [
            first,
            second_refused,
            withdrawn,
            again,
            taken,
            withdraw_lost,
            woke,
        ]
    });
    assert_eq!(
        r, [true; 7],
        "offer, refusal, withdraw, re-offer, take, lost withdraw, wake"
    );
}
