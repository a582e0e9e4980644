//! The hand-shake between the boot CPU and one application processor (AP) it starts: each AP's
//! [`ApState`] decides every race between the AP coming online and the boot CPU giving up on it.
//!
//! ```text
//!   Idle --boot CPU: start--> Starting --AP: arrive--> Arrived --AP: go_online--> Online
//!                                |                        |
//!                                +---boot CPU: abandon----+-----> Abandoned
//! ```
//!
//! Every move out of Starting or Arrived is a compare-exchange, so of an AP and the boot CPU racing
//! for one state exactly one wins. The boot CPU abandons what is still Starting when its wait runs
//! out, then, after a grace period, what is still Arrived; after that every state is final, and a
//! CPU is Online exactly when its AP won `go_online`. An AP that loses halts for good, so a late
//! AP can never be running without the boot CPU having counted it (the loom model
//! `tests/loom_handshake.rs` checks this).

use crate::sync::{AtomicU64, Ordering};

/// Where one AP is in its bring-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApPhase {
    /// Not asked to start (or no longer: no trampoline).
    Idle,
    /// The boot CPU sent it on its way.
    Starting,
    /// The AP reached the kernel and claimed its place; it is setting itself up.
    Arrived,
    /// The AP is online: the boot CPU counts it.
    Online,
    /// The boot CPU gave up on it; the AP, if it ever arrives, halts.
    Abandoned,
}

impl ApPhase {
    const fn raw(self) -> u64 {
        self as u64
    }

    fn from_raw(raw: u64) -> ApPhase {
        match raw {
            0 => ApPhase::Idle,
            1 => ApPhase::Starting,
            2 => ApPhase::Arrived,
            3 => ApPhase::Online,
            _ => ApPhase::Abandoned,
        }
    }
}

/// One AP's phase, shared by the boot CPU and the AP.
pub struct ApState(AtomicU64);

impl ApState {
    #[cfg(not(loom))]
    pub const fn new() -> ApState {
        ApState(AtomicU64::new(ApPhase::Idle.raw()))
    }

    #[cfg(loom)]
    pub fn new() -> ApState {
        ApState(AtomicU64::new(ApPhase::Idle.raw()))
    }

    /// The current phase.
    pub fn phase(&self) -> ApPhase {
        ApPhase::from_raw(self.0.load(Ordering::Acquire))
    }

    /// Boot CPU, before it starts the AP: Starting.
    pub fn start(&self) {
        self.0.store(ApPhase::Starting.raw(), Ordering::Release);
    }

    /// Boot CPU, when it cannot start the AP after all (before the AP could run): Idle.
    pub fn cancel(&self) {
        self.0.store(ApPhase::Idle.raw(), Ordering::Release);
    }

    /// AP: Starting -> Arrived. False if the boot CPU abandoned it (or never started it).
    pub fn arrive(&self) -> bool {
        self.advance(ApPhase::Starting, ApPhase::Arrived)
    }

    /// AP, when it is ready to run work: Arrived -> Online. False if the boot CPU abandoned it.
    pub fn go_online(&self) -> bool {
        self.advance(ApPhase::Arrived, ApPhase::Online)
    }

    /// Boot CPU: `from` -> Abandoned, if the AP is still in `from`. True if it was abandoned.
    pub fn abandon_if(&self, from: ApPhase) -> bool {
        self.advance(from, ApPhase::Abandoned)
    }

    fn advance(&self, from: ApPhase, to: ApPhase) -> bool {
        self.0.compare_exchange(from.raw(), to.raw(), Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn an_ap_on_time_goes_online_and_stays() {
        let s = ApState::new();
        s.start();
        assert!(s.arrive());
        assert!(s.go_online());
        assert!(!s.abandon_if(ApPhase::Starting));
        assert!(!s.abandon_if(ApPhase::Arrived));
        assert_eq!(s.phase(), ApPhase::Online);
    }

    #[test]
    fn an_ap_abandoned_before_it_arrived_never_joins() {
        let s = ApState::new();
        s.start();
        assert!(s.abandon_if(ApPhase::Starting));
        assert!(!s.arrive());
        assert!(!s.go_online());
        assert_eq!(s.phase(), ApPhase::Abandoned);
    }

    #[test]
    fn an_ap_abandoned_while_setting_up_never_joins() {
        let s = ApState::new();
        s.start();
        assert!(s.arrive());
        assert!(!s.abandon_if(ApPhase::Starting));
        assert!(s.abandon_if(ApPhase::Arrived));
        assert!(!s.go_online());
        assert_eq!(s.phase(), ApPhase::Abandoned);
    }

    #[test]
    fn an_ap_never_started_cannot_arrive() {
        let s = ApState::new();
        assert!(!s.arrive());
        s.start();
        s.cancel();
        assert!(!s.arrive());
        assert_eq!(s.phase(), ApPhase::Idle);
    }
}
