//! Loom model (b): two CPUs shoot each other down at the same moment, interrupts off.
//!
//! Each posts a request to the other and spins in `Shootdown::wait`, answering only through the
//! `service` closure that services its own mailbox (no IPI is taken while interrupts are off).
//! Both waits must complete, each CPU must receive exactly the other's request intact, and a
//! sender whose wait returned must see the target's flush (recorded in a relaxed flag) done.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p smp --release --test loom_mutual_shootdown`
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use smp::{AsId, CpuId, CpuSet, PageRange, Request, ShootdownMailbox};

fn cpu(index: usize) -> CpuId {
    CpuId::new(index as u32).unwrap()
}

fn request_from(sender: usize) -> Request {
    Request {
        asid: AsId::new(sender as u64 + 10),
        new_gen: sender as u64 + 1,
        range: PageRange {
            start_vpage: 0x100 * sender as u64,
            pages: 3,
        },
        full_flush: sender == 1,
    }
}

struct Machine {
    mailboxes: Vec<ShootdownMailbox>,
    /// `flushed[i]`: CPU `i` performed a flush (stands in for the invalidation itself).
    flushed: [AtomicBool; 2],
}

/// CPU `me`: post to the other, wait while servicing its own mailbox, then keep servicing until
/// the other's request has arrived (as it would from its IPI once interrupts are back on).
fn run_cpu(machine: &Machine, me: usize) -> Vec<Request> {
    let other = 1 - me;
    let mb = &machine.mailboxes;
    let ticket = ShootdownMailbox::post(mb, cpu(me), CpuSet::single(cpu(other)), &request_from(me))
        .expect("the outbox starts idle");
    let mut received = Vec::new();
    let service = |received: &mut Vec<Request>| {
        ShootdownMailbox::service(mb, cpu(me), |request| {
            machine.flushed[me].store(true, Ordering::Relaxed);
            received.push(*request);
        });
    };
    let result = mb[me].outbox().wait(|| service(&mut received), || false);
    assert_eq!(result, Ok(()));
    assert!(ticket.is_complete(mb));
    // The acknowledgement is ordered after the target's flush.
    assert!(machine.flushed[other].load(Ordering::Relaxed));
    while received.is_empty() {
        service(&mut received);
        thread::yield_now();
    }
    received
}

#[test]
fn cpus_shooting_each_other_down_both_complete() {
    loom::model(|| {
        let machine = Arc::new(Machine {
            mailboxes: (0..2).map(|_| ShootdownMailbox::new()).collect(),
            flushed: [AtomicBool::new(false), AtomicBool::new(false)],
        });
        let m = Arc::clone(&machine);
        let cpu1 = thread::spawn(move || run_cpu(&m, 1));
        let received0 = run_cpu(&machine, 0);
        let received1 = cpu1.join().unwrap();
        assert_eq!(received0, vec![request_from(1)]);
        assert_eq!(received1, vec![request_from(0)]);
        for mailbox in &machine.mailboxes {
            assert!(mailbox.outbox().pending().is_empty());
        }
    });
}
