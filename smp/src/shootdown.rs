//! Carrying shootdown requests to other CPUs and collecting their acknowledgements, without a lock
//! and without allocation.
//!
//! Key types: [`ShootdownMailbox`] (one per CPU, in a slice indexed by `CpuId` that the kernel
//! keeps for the machine's lifetime), [`Shootdown`] (a mailbox's outgoing request: the request
//! itself, a sequence number, and the `pending` set of targets yet to acknowledge) and
//! [`Ticket`] (names one posted request). Neighbours: `tracker` decides what to request and what a
//! target must flush; the kernel sends the IPIs and performs the flushes.
//!
//! Each CPU has at most one outgoing request: [`ShootdownMailbox::post`] refuses while the
//! previous one is unacknowledged. Posting writes the request into the sender's outbox, sets the
//! targets in `pending`, bumps the outbox's sequence number, then rings each target's doorbell
//! (the set of senders with a request for it). A target's [`ShootdownMailbox::service`] takes
//! its doorbell, reads each sender's request, flushes, and clears itself from that sender's
//! `pending`; the sender's [`Shootdown::wait`] returns once `pending` is empty. A sender stays on
//! its CPU (preemption off) from `post` to the end of `wait`: the outbox is that CPU's.
//!
//! Deadlock freedom: two CPUs may shoot each other down at the same moment, each spinning with
//! interrupts off so that neither takes the other's IPI. `wait` therefore calls a `service`
//! closure on every turn, in which the waiter services its own mailbox; each then answers the
//! other from inside its own wait.
//!
//! Ordering: the request fields are written before the `SeqCst` insertion into `pending` and the
//! doorbell; a target reads them after its `SeqCst` take of the doorbell, so it sees the whole
//! request. The request is not rewritten before every target cleared its bit (`post` checks
//! `pending` is empty), so a target never reads a half-written one. A target's clearing comes
//! after its flush, and the sender reads `pending` with `SeqCst`, so whoever sees the request
//! acknowledged also sees the flushes done. [`Ticket::is_complete`] reads the sequence number,
//! stored after the targets became pending, and then `pending`: seeing the ticket's number, it
//! also sees those targets pending unless they answered; seeing a later number, the later post
//! found them answered. Every pairing here is release-then-acquire; none needs a store-then-load
//! order, so no fence.

use crate::cpuset::{AtomicCpuSet, CpuSet};
use crate::ids::CpuId;
use crate::pcid::AsId;
use crate::sync::{AtomicBool, AtomicU64, Ordering};
use crate::tracker::{PageRange, Request};

/// How many times [`Shootdown::wait`] reads `pending` between two turns of servicing its own
/// mailbox and checking the timeout. A read and a spin hint are some ten instructions, a turn
/// some hundred and thirty: at 128 the turns are under a tenth of a long wait, and a CPU that
/// shoots this one down meanwhile is still served within microseconds. Under loom one, so that
/// every turn services and the models explore the same interleavings as before.
pub const CHECKS_PER_TURN: usize = if cfg!(loom) { 1 } else { 128 };

/// [`ShootdownMailbox::post`] was refused: the sender's previous request still waits for these
/// CPUs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Busy {
    /// The CPUs that have not acknowledged the previous request yet.
    pub pending: CpuSet,
}

/// Names one posted request: its sender and the sender's sequence number for it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ticket {
    sender: CpuId,
    seq: u64,
}

impl Ticket {
    /// The CPU that posted the request.
    pub fn sender(&self) -> CpuId {
        self.sender
    }

    /// Whether every target has acknowledged the request. True as well once the sender has
    /// posted a later request, since posting requires the previous one complete.
    pub fn is_complete(&self, mailboxes: &[ShootdownMailbox]) -> bool {
        let outbox = &mailboxes[self.sender.index()].outbox;
        outbox.seq.load(Ordering::SeqCst) != self.seq || outbox.pending.is_empty()
    }
}

/// A CPU's outgoing request and the targets that still owe an acknowledgement.
#[derive(Debug)]
pub struct Shootdown {
    /// The number of requests posted from this outbox so far.
    seq: AtomicU64,
    pending: AtomicCpuSet,
    asid: AtomicU64,
    new_gen: AtomicU64,
    start_vpage: AtomicU64,
    pages: AtomicU64,
    full_flush: AtomicBool,
}

impl Shootdown {
    #[cfg(not(loom))]
    const fn new() -> Shootdown {
        Shootdown {
            seq: AtomicU64::new(0),
            pending: AtomicCpuSet::new(),
            asid: AtomicU64::new(0),
            new_gen: AtomicU64::new(0),
            start_vpage: AtomicU64::new(0),
            pages: AtomicU64::new(0),
            full_flush: AtomicBool::new(false),
        }
    }

    #[cfg(loom)]
    fn new() -> Shootdown {
        Shootdown {
            seq: AtomicU64::new(0),
            pending: AtomicCpuSet::new(),
            asid: AtomicU64::new(0),
            new_gen: AtomicU64::new(0),
            start_vpage: AtomicU64::new(0),
            pages: AtomicU64::new(0),
            full_flush: AtomicBool::new(false),
        }
    }

    /// The targets that have not acknowledged the current request yet.
    pub fn pending(&self) -> CpuSet {
        self.pending.snapshot()
    }

    /// Whether every target has acknowledged the current request (or none was posted).
    #[inline]
    pub fn is_acknowledged(&self) -> bool {
        self.pending.is_empty()
    }

    /// The number of requests posted from this outbox so far (the last one's sequence number).
    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Spins until every target has acknowledged, calling `service` on each turn (the caller
    /// services its own mailbox there, so that a CPU shooting this one down meanwhile is answered)
    /// and then `timeout_check`; when that returns true, gives up and returns the CPUs that never
    /// answered. The request stays posted in that case: the caller may wait again, but cannot
    /// post anew until it is acknowledged.
    ///
    /// Between two turns it only reads `pending`, up to [`CHECKS_PER_TURN`] times with the spin
    /// hint between reads (`AtomicCpuSet::spin_until_empty`: one word, once the words already
    /// answered are passed): the answer usually comes within those, and servicing the mailboxes
    /// and reading the clock cost far more than a read of `pending`.
    pub fn wait(
        &self,
        mut service: impl FnMut(),
        mut timeout_check: impl FnMut() -> bool,
    ) -> Result<(), CpuSet> {
        loop {
            // Only this CPU adds to `pending`, and not while it waits: the set only empties.
            if self.pending.spin_until_empty(CHECKS_PER_TURN) {
                return Ok(());
            }
            service();
            if timeout_check() {
                let unanswered = self.pending.snapshot();
                return if unanswered.is_empty() {
                    Ok(())
                } else {
                    Err(unanswered)
                };
            }
        }
    }

    fn write_request(&self, request: &Request) {
        // Relaxed: published by the SeqCst insertions into `pending` and the doorbells that
        // follow (see the module comment).
        self.asid.store(request.asid.get(), Ordering::Relaxed);
        self.new_gen.store(request.new_gen, Ordering::Relaxed);
        self.start_vpage
            .store(request.range.start_vpage, Ordering::Relaxed);
        self.pages.store(request.range.pages, Ordering::Relaxed);
        self.full_flush.store(request.full_flush, Ordering::Relaxed);
    }

    fn read_request(&self) -> Request {
        // Relaxed: the caller took the doorbell rung after the request was written.
        Request {
            asid: AsId::new(self.asid.load(Ordering::Relaxed)),
            new_gen: self.new_gen.load(Ordering::Relaxed),
            range: PageRange {
                start_vpage: self.start_vpage.load(Ordering::Relaxed),
                pages: self.pages.load(Ordering::Relaxed),
            },
            full_flush: self.full_flush.load(Ordering::Relaxed),
        }
    }
}

/// One CPU's shootdown mailbox: the doorbell other CPUs ring and this CPU's own outgoing request.
#[derive(Debug)]
pub struct ShootdownMailbox {
    /// Senders whose outbox holds a request for this CPU not yet taken.
    doorbell: AtomicCpuSet,
    outbox: Shootdown,
}

impl ShootdownMailbox {
    /// An empty mailbox.
    #[cfg(not(loom))]
    pub const fn new() -> ShootdownMailbox {
        ShootdownMailbox {
            doorbell: AtomicCpuSet::new(),
            outbox: Shootdown::new(),
        }
    }

    /// An empty mailbox (loom atomics cannot be built in a `const fn`).
    #[cfg(loom)]
    pub fn new() -> ShootdownMailbox {
        ShootdownMailbox {
            doorbell: AtomicCpuSet::new(),
            outbox: Shootdown::new(),
        }
    }

    /// This CPU's outgoing request, to `wait` on.
    pub fn outbox(&self) -> &Shootdown {
        &self.outbox
    }

    /// Posts `request` from `sender` to `targets` (`mailboxes` is indexed by `CpuId`); the caller
    /// then sends the IPIs to `targets` and waits, or keeps the ticket. An empty `targets` gives a
    /// ticket that is complete at once.
    ///
    /// # Panics
    /// If `targets` contains `sender` (its own flush is the caller's to do directly), or names a
    /// CPU without a mailbox.
    pub fn post(
        mailboxes: &[ShootdownMailbox],
        sender: CpuId,
        targets: CpuSet,
        request: &Request,
    ) -> Result<Ticket, Busy> {
        assert!(
            !targets.contains(sender),
            "a CPU does not post a shootdown to itself"
        );
        let outbox = &mailboxes[sender.index()].outbox;
        // Only this CPU writes its outbox, so nothing can become pending behind this check.
        let pending = outbox.pending.snapshot();
        if !pending.is_empty() {
            return Err(Busy { pending });
        }
        outbox.write_request(request);
        outbox.pending.insert_all(&targets);
        // After the targets are pending: whoever reads this sequence number sees them.
        let seq = outbox.seq.load(Ordering::Relaxed) + 1;
        outbox.seq.store(seq, Ordering::SeqCst);
        targets.for_each(|target| {
            mailboxes[target.index()].doorbell.insert(sender);
        });
        Ok(Ticket { sender, seq })
    }

    /// Services every request posted to `cpu`: for each, calls `flush` (which performs the
    /// invalidation, see `tracker::TlbTracker::flush_action`), then acknowledges it. Called from the
    /// shootdown IPI handler and from the `service` closure of `Shootdown::wait`, with interrupts
    /// off. Returns the number of requests serviced.
    pub fn service(
        mailboxes: &[ShootdownMailbox],
        cpu: CpuId,
        flush: impl FnMut(&Request),
    ) -> usize {
        Self::service_noting(mailboxes, cpu, flush, |_, _| {})
    }

    /// [`ShootdownMailbox::service`], calling `note(sender, seq)` for each request after its
    /// flush and before its acknowledgement, so that whatever `note` records comes before the
    /// sender can see the request complete.
    pub fn service_noting(
        mailboxes: &[ShootdownMailbox],
        cpu: CpuId,
        mut flush: impl FnMut(&Request),
        mut note: impl FnMut(CpuId, u64),
    ) -> usize {
        let doorbell = &mailboxes[cpu.index()].doorbell;
        // A waiter calls this on every turn of its wait, where the doorbell is nearly always
        // empty: a read of it (inline) is then the whole call.
        if doorbell.is_empty() {
            return 0;
        }
        let senders = doorbell.take();
        let mut served = 0;
        senders.for_each(|sender| {
            let outbox = &mailboxes[sender.index()].outbox;
            // The sender set this bit before ringing, and only this CPU clears it.
            debug_assert!(outbox.pending.contains(cpu));
            let request = outbox.read_request();
            flush(&request);
            // The request's number: stored before the doorbell we took, and not advanced before
            // we acknowledge (a new post needs `pending` empty).
            note(sender, outbox.seq.load(Ordering::SeqCst));
            outbox.pending.remove(cpu);
            served += 1;
        });
        served
    }
}

impl Default for ShootdownMailbox {
    fn default() -> ShootdownMailbox {
        ShootdownMailbox::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn cpu(index: u32) -> CpuId {
        CpuId::new(index).unwrap()
    }

    fn cpus(indices: &[u32]) -> CpuSet {
        indices.iter().map(|&i| cpu(i)).collect()
    }

    fn mailboxes(nr_cpus: usize) -> Vec<ShootdownMailbox> {
        (0..nr_cpus).map(|_| ShootdownMailbox::default()).collect()
    }

    fn request(new_gen: u64) -> Request {
        Request {
            asid: AsId::new(3),
            new_gen,
            range: PageRange {
                start_vpage: 0x40,
                pages: 2,
            },
            full_flush: false,
        }
    }

    #[test]
    fn service_noting_names_each_request_by_sender_and_number_before_acknowledging() {
        let mb = mailboxes(3);
        for round in 1..=2u64 {
            ShootdownMailbox::post(&mb, cpu(0), cpus(&[2]), &request(round)).unwrap();
            ShootdownMailbox::post(&mb, cpu(1), cpus(&[2]), &request(round)).unwrap();
            assert_eq!(mb[0].outbox().seq(), round);
            let mut noted = Vec::new();
            let served = ShootdownMailbox::service_noting(
                &mb,
                cpu(2),
                |_| {},
                |sender, seq| {
                    // Not yet acknowledged while the note is taken.
                    assert!(mb[sender.index()].outbox().pending().contains(cpu(2)));
                    noted.push((sender, seq));
                },
            );
            assert_eq!(served, 2);
            assert_eq!(noted, [(cpu(0), round), (cpu(1), round)]);
            assert!(mb[0].outbox().pending().is_empty() && mb[1].outbox().pending().is_empty());
        }
    }

    #[test]
    fn a_posted_request_reaches_each_target_intact_and_is_acknowledged() {
        let mb = mailboxes(3);
        let ticket = ShootdownMailbox::post(&mb, cpu(0), cpus(&[1, 2]), &request(5)).unwrap();
        assert_eq!(ticket.sender(), cpu(0));
        assert_eq!(mb[0].outbox().pending(), cpus(&[1, 2]));
        assert!(!ticket.is_complete(&mb));
        for target in [1, 2] {
            let mut seen = Vec::new();
            assert_eq!(
                ShootdownMailbox::service(&mb, cpu(target), |r| seen.push(*r)),
                1
            );
            assert_eq!(seen, vec![request(5)]);
        }
        assert!(mb[0].outbox().pending().is_empty());
        assert!(ticket.is_complete(&mb));
        assert_eq!(mb[0].outbox().wait(|| {}, || false), Ok(()));
    }

    #[test]
    fn service_with_nothing_posted_does_nothing() {
        let mb = mailboxes(2);
        assert_eq!(
            ShootdownMailbox::service(&mb, cpu(1), |_| panic!("no request")),
            0
        );
    }

    #[test]
    fn a_second_post_before_the_acknowledgements_is_refused() {
        let mb = mailboxes(3);
        ShootdownMailbox::post(&mb, cpu(0), cpus(&[1, 2]), &request(1)).unwrap();
        ShootdownMailbox::service(&mb, cpu(2), |_| {});
        assert_eq!(
            ShootdownMailbox::post(&mb, cpu(0), cpus(&[2]), &request(2)),
            Err(Busy {
                pending: cpus(&[1])
            })
        );
        ShootdownMailbox::service(&mb, cpu(1), |_| {});
        assert!(ShootdownMailbox::post(&mb, cpu(0), cpus(&[2]), &request(2)).is_ok());
    }

    #[test]
    fn a_ticket_is_complete_once_its_sender_has_posted_again() {
        let mb = mailboxes(2);
        let first = ShootdownMailbox::post(&mb, cpu(0), cpus(&[1]), &request(1)).unwrap();
        ShootdownMailbox::service(&mb, cpu(1), |_| {});
        let second = ShootdownMailbox::post(&mb, cpu(0), cpus(&[1]), &request(2)).unwrap();
        assert!(first.is_complete(&mb));
        assert!(!second.is_complete(&mb));
    }

    #[test]
    fn posting_to_nobody_is_complete_at_once() {
        let mb = mailboxes(2);
        let ticket = ShootdownMailbox::post(&mb, cpu(1), CpuSet::EMPTY, &request(1)).unwrap();
        assert!(ticket.is_complete(&mb));
    }

    #[test]
    #[should_panic(expected = "does not post a shootdown to itself")]
    fn posting_to_oneself_is_refused() {
        let mb = mailboxes(2);
        let _ = ShootdownMailbox::post(&mb, cpu(0), cpus(&[0, 1]), &request(1));
    }

    #[test]
    fn one_service_answers_every_sender() {
        let mb = mailboxes(3);
        ShootdownMailbox::post(&mb, cpu(0), cpus(&[2]), &request(1)).unwrap();
        ShootdownMailbox::post(&mb, cpu(1), cpus(&[2]), &request(2)).unwrap();
        let mut gens = Vec::new();
        assert_eq!(
            ShootdownMailbox::service(&mb, cpu(2), |r| gens.push(r.new_gen)),
            2
        );
        assert_eq!(gens, vec![1, 2]);
        assert!(mb[0].outbox().pending().is_empty() && mb[1].outbox().pending().is_empty());
    }

    #[test]
    fn wait_times_out_with_the_silent_cpus_and_can_wait_again() {
        let mb = mailboxes(3);
        ShootdownMailbox::post(&mb, cpu(0), cpus(&[1, 2]), &request(1)).unwrap();
        let turns = std::cell::Cell::new(0);
        let result = mb[0].outbox().wait(
            || {
                turns.set(turns.get() + 1);
                if turns.get() == 2 {
                    ShootdownMailbox::service(&mb, cpu(2), |_| {});
                }
            },
            || turns.get() == 5,
        );
        assert_eq!(turns.get(), 5);
        assert_eq!(result, Err(cpus(&[1])));
        // Still posted: CPU 1 answers late, and the next wait succeeds.
        ShootdownMailbox::service(&mb, cpu(1), |_| {});
        assert_eq!(mb[0].outbox().wait(|| {}, || true), Ok(()));
    }

    #[test]
    fn wait_reports_success_when_the_last_answer_comes_during_the_final_turn() {
        let mb = mailboxes(2);
        ShootdownMailbox::post(&mb, cpu(0), cpus(&[1]), &request(1)).unwrap();
        let result = mb[0].outbox().wait(
            || {
                ShootdownMailbox::service(&mb, cpu(1), |_| {});
            },
            || true,
        );
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn cpus_shooting_each_other_down_with_interrupts_off_all_complete() {
        // Each of three threads posts to the two others and then waits, answering only from
        // inside its own wait (as with interrupts off). Conservation: every request posted is
        // serviced exactly once, by each of its targets.
        const ROUNDS: u64 = 5_000;
        let mb = mailboxes(3);
        let serviced: Vec<Vec<u64>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..3u32)
                .map(|me| {
                    let mb = &mb;
                    scope.spawn(move || {
                        let others = cpus(&[0, 1, 2]).difference(&CpuSet::single(cpu(me)));
                        let mut seen = vec![0u64; 3];
                        for round in 1..=ROUNDS {
                            let req = Request {
                                asid: AsId::new(me.into()),
                                ..request(round)
                            };
                            ShootdownMailbox::post(mb, cpu(me), others, &req).unwrap();
                            let result = mb[me as usize].outbox().wait(
                                || {
                                    ShootdownMailbox::service(mb, cpu(me), |r| {
                                        let from = r.asid.get() as usize;
                                        // Requests from one sender arrive in order, none lost.
                                        assert_eq!(r.new_gen, seen[from] + 1);
                                        seen[from] = r.new_gen;
                                    });
                                    // The host may have fewer cores than threads here.
                                    std::thread::yield_now();
                                },
                                || false,
                            );
                            assert_eq!(result, Ok(()));
                        }
                        // Answer whatever the others still post after this thread is done.
                        while seen
                            .iter()
                            .enumerate()
                            .any(|(i, &n)| i != me as usize && n < ROUNDS)
                        {
                            ShootdownMailbox::service(mb, cpu(me), |r| {
                                let from = r.asid.get() as usize;
                                assert_eq!(r.new_gen, seen[from] + 1);
                                seen[from] = r.new_gen;
                            });
                            std::thread::yield_now();
                        }
                        seen
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (me, seen) in serviced.iter().enumerate() {
            for (from, &n) in seen.iter().enumerate() {
                assert_eq!(
                    n,
                    if from == me { 0 } else { ROUNDS },
                    "cpu {me} from {from}"
                );
            }
        }
    }
}
