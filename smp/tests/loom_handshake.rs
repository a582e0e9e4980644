//! Loom model: the AP bring-up hand-shake (`smp::handshake`). An AP arriving and going online
//! races the boot CPU abandoning first what is Starting, then what is Arrived; in every
//! interleaving the AP runs as online exactly when the final phase is Online (so the boot CPU,
//! which counts the Online ones after its two abandon steps, counted it), and the phase is final.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p smp --release --test loom_handshake`
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use smp::handshake::{ApPhase, ApState};

#[test]
fn a_late_ap_is_online_exactly_when_the_boot_cpu_counts_it() {
    loom::model(|| {
        let state = Arc::new(ApState::new());
        state.start();
        let s = Arc::clone(&state);
        let ap = thread::spawn(move || s.arrive() && s.go_online());
        state.abandon_if(ApPhase::Starting);
        state.abandon_if(ApPhase::Arrived);
        let counted = state.phase() == ApPhase::Online;
        let joined = ap.join().unwrap();
        assert_eq!(joined, counted);
        let last = state.phase();
        assert!(last == ApPhase::Online || last == ApPhase::Abandoned, "phase {last:?} is not final");
        assert_eq!(last == ApPhase::Online, joined);
    });
}
