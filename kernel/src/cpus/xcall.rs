//! Cross-CPU calls: run a function on a set of CPUs and wait until every one of them has run it.
//!
//! ```text
//!   caller                                   each target CPU t
//!   Arc<Request { f, claimed, done }>
//!   push a Node onto t's mailbox  ───────>   QUEUES[t]: lock-free stack of Nodes (push: CAS,
//!   IPI 0xf2 to t                            take: swap the whole list out)
//!   (run f here if the caller is a target)   IPI handler: take the list, oldest first; for each
//!   wait, serving its own mailbox            node whose request it can claim: f(t), done += t
//!   until done == targets, or time is up
//! ```
//!
//! - A caller spins with interrupts off and serves ALL of this CPU's IPI work while it waits
//!   ([`serve_ipi_work`]: its cross-call mailbox and the other kinds registered with
//!   [`set_other_ipi_work`], the TLB shootdown mailbox), so two CPUs calling each other at once
//!   both finish, so does a call made from inside a called function (as long as its stack allows
//!   the nesting), and so does a call made while the target waits with interrupts off for a
//!   shootdown this CPU must answer. Every other interrupts-off wait of the kernel serves through
//!   [`serve_ipi_work`] too: a wait that served only its own kind would deadlock against one of
//!   the other kind.
//! - On timeout the caller withdraws the request from every target that has not claimed it
//!   (`claimed` decides, per target, between the target starting it and the caller withdrawing it:
//!   exactly one wins), and returns the set of targets that had not finished: each of them either
//!   never started the function and never will, or started it and may still finish it later.
//!   Targets that are not online are reported the same way, without waiting for them.
//! - The function is owned by the request (`'static`, behind an `Arc`), so a target that finishes
//!   after its caller gave up still runs valid code on valid data. Each call allocates the request
//!   and one small node per target.
//! - Counters: every IPI on 0xf2 bumps `IpisReceived`, every function run for another CPU bumps
//!   `XcallsServed` (a caller's own share is not counted).
//!
//! A called function runs in interrupt context with interrupts off: it must not wait for anything
//! the interrupted code might hold (a lock the caller holds, most obviously).
//!
//! Neighbours: `ipi` (the doorbell), `cpu::map` (which CPUs are online), `percpu` (counters).

use alloc::{boxed::Box, sync::Arc};
use core::{
    ptr,
    sync::atomic::{AtomicPtr, Ordering},
};

use arch::trap::TrapFrame;
use smp::{AtomicCpuSet, CpuId, CpuSet, MAX_CPUS};
use arch::interrupts;

use crate::{cpu::percpu, irq::{apic, ipi, trap}, time};

struct Request {
    f: Box<dyn Fn(CpuId) + Send + Sync>,
    /// Per target: set by whichever comes first, the target starting `f` or the caller withdrawing.
    claimed: AtomicCpuSet,
    /// Targets that have finished `f`.
    done: AtomicCpuSet,
}

/// One request in one target's mailbox.
struct Node {
    next: *mut Node,
    req: Arc<Request>,
}

/// The IPI work of the layers above (the TLB shootdown mailbox), served by every interrupts-off
/// wait along with the cross-call mailbox.
static OTHER_IPI_WORK: spin::Once<fn()> = spin::Once::new();

/// Register the one other kind of IPI work that interrupts-off waits must serve (`vm::space::init`,
/// boot CPU, once; later calls keep the first). `f` runs with interrupts off and serves this CPU's
/// pending requests of that kind.
pub fn set_other_ipi_work(f: fn()) {
    OTHER_IPI_WORK.call_once(|| f);
}

/// Serve every kind of IPI work pending for this CPU: its cross-call mailbox and the work
/// registered with [`set_other_ipi_work`]. Interrupts off. Every wait that spins with interrupts
/// off calls this on each turn.
pub fn serve_ipi_work() {
    serve();
    if let Some(f) = OTHER_IPI_WORK.get() {
        f();
    }
}

/// Each CPU's mailbox: the top of a stack of nodes, pushed by callers, emptied whole by its owner.
static QUEUES: [AtomicPtr<Node>; MAX_CPUS] = [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CPUS];

/// Route the cross-call IPI to its handler (boot CPU, before any AP is started).
pub fn init() {
    trap::register(trap::VECTOR_XCALL, on_ipi);
}

fn this_cpu() -> CpuId {
    CpuId::new(percpu::cpu_index()).expect("per-CPU index below MAX_CPUS")
}

/// Run `f(cpu)` on every CPU of `cpus` (this one included, if named) and wait until all have
/// returned, or until `timeout_ns` has passed. On timeout, returns the CPUs that had not finished
/// (see the module comment for what that means for each); CPUs that are not online are always in it.
#[cfg_attr(not(feature = "ktest"), expect(dead_code, reason = "only the in-kernel tests use it so far"))]
pub fn call<F>(cpus: &CpuSet, f: F, timeout_ns: u64) -> Result<(), CpuSet>
where
    F: Fn(CpuId) + Send + Sync + 'static,
{
    interrupts::without_interrupts(|| {
        let me = this_cpu();
        let online = crate::cpu::map::online();
        let offline = cpus.difference(&online);
        let mut remote = cpus.intersection(&online);
        remote.remove(me);
        let req = Arc::new(Request { f: Box::new(f), claimed: AtomicCpuSet::new(), done: AtomicCpuSet::new() });
        for t in remote.iter() {
            push(t, Box::new(Node { next: ptr::null_mut(), req: req.clone() }));
        }
        ipi::send_set(&remote, trap::VECTOR_XCALL);
        if cpus.contains(me) {
            (req.f)(me);
        }
        let deadline = time::now_ns().saturating_add(timeout_ns);
        let mut missing = loop {
            serve_ipi_work();
            let missing = remote.difference(&req.done.snapshot());
            if missing.is_empty() || time::now_ns() >= deadline {
                break missing;
            }
            core::hint::spin_loop();
        };
        if !missing.is_empty() {
            // Withdraw from the targets that have not started; the others are left to finish.
            for t in missing.iter() {
                req.claimed.insert(t);
            }
            missing = remote.difference(&req.done.snapshot());
        }
        let missing = missing.union(&offline);
        if missing.is_empty() { Ok(()) } else { Err(missing) }
    })
}

fn push(target: CpuId, node: Box<Node>) {
    let node = Box::into_raw(node);
    let q = &QUEUES[target.index()];
    let mut head = q.load(Ordering::Relaxed);
    loop {
        // SAFETY: `node` came from Box::into_raw above and is not yet shared.
        unsafe { (*node).next = head };
        match q.compare_exchange_weak(head, node, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(h) => head = h,
        }
    }
}

/// Run everything in this CPU's mailbox, oldest first, until it stays empty. Interrupts are off.
fn serve() {
    let me = this_cpu();
    let q = &QUEUES[me.index()];
    // A plain load first: a waiting caller polls here, and a swap would write the line every time.
    while !q.load(Ordering::Relaxed).is_null() {
        let mut top = q.swap(ptr::null_mut(), Ordering::Acquire);
        // The mailbox is a stack: reverse it so that requests run in the order they came.
        let mut oldest: *mut Node = ptr::null_mut();
        while !top.is_null() {
            // SAFETY: every node in the taken list was published by `push` (Release, paired with
            // the Acquire swap) and is now owned by this CPU alone.
            unsafe {
                let next = (*top).next;
                (*top).next = oldest;
                oldest = top;
                top = next;
            }
        }
        while !oldest.is_null() {
            // SAFETY: as above; each node is turned back into its Box exactly once.
            let node = unsafe { Box::from_raw(oldest) };
            oldest = node.next;
            if node.req.claimed.insert(me) {
                (node.req.f)(me);
                percpu::count(percpu::Counter::XcallsServed);
                node.req.done.insert(me);
            }
        }
    }
}

fn on_ipi(_frame: &mut TrapFrame) {
    percpu::count(percpu::Counter::IpisReceived);
    apic::eoi();
    serve();
}

#[cfg(feature = "ktest")]
mod tests {
    use alloc::{format, string::String, sync::Arc, vec::Vec};
    use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    use smp::{CpuId, CpuSet, MAX_CPUS};

    use super::{call, this_cpu};
    use crate::{cpu::percpu, ensure, irq::{ipi, trap}, testing::Test, time};

    crate::register_tests![
        Test { name: "xcall_exact_targets", min_cpus: 1, expect_fault: false, run: xcall_exact_targets },
        Test { name: "xcall_timeout_names_silent_cpus", min_cpus: 2, expect_fault: false, run: xcall_timeout_names_silent_cpus },
        Test { name: "ipi_all_others_storm", min_cpus: 2, expect_fault: false, run: ipi_all_others_storm },
    ];

    /// Generous: TCG runs many virtual CPUs on few host cores, which other work may share. A
    /// deadlock still fails the test (and the harness's boot timeout still ends the run).
    const TIMEOUT_NS: u64 = 30_000_000_000;

    /// A small xorshift generator: the tests need varied subsets, not good randomness.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn counters() -> Arc<[AtomicU64]> {
        (0..MAX_CPUS).map(|_| AtomicU64::new(0)).collect()
    }

    /// Many rounds over random subsets of the online CPUs (sometimes empty, sometimes with the
    /// caller): exactly the CPUs asked run the function, each once per round, and each is told its
    /// own id. Then a call to a CPU that is not online must name it and run nowhere.
    fn xcall_exact_targets() -> Result<(), String> {
        let online = crate::cpu::map::online();
        let cpus: Vec<CpuId> = online.iter().collect();
        let hits = counters();
        let wrong_id = Arc::new(AtomicU32::new(0));
        let mut rng = XorShift(arch::tsc::read() | 1);
        for round in 0..200 {
            let bits = rng.next();
            let subset: CpuSet = cpus.iter().copied().filter(|c| bits >> (c.index() % 64) & 1 != 0).collect();
            let (h, w) = (hits.clone(), wrong_id.clone());
            call(
                &subset,
                move |me| {
                    let real = percpu::cpu_index();
                    if real != me.get() {
                        w.fetch_add(1, Ordering::Relaxed);
                    }
                    h[real as usize].fetch_add(1, Ordering::Relaxed);
                },
                TIMEOUT_NS,
            )
            .map_err(|missing| format!("round {round}: {missing} did not answer a call to {subset}"))?;
            for c in cpus.iter() {
                let got = hits[c.index()].swap(0, Ordering::Relaxed);
                let want = u64::from(subset.contains(*c));
                ensure!(got == want, "round {round}: {c} ran the call {got} times, expected {want} (targets {subset})");
            }
        }
        ensure!(wrong_id.load(Ordering::Relaxed) == 0, "a called function was handed another CPU's id");
        if let Some(absent) = CpuId::new(cpus.len() as u32).filter(|c| !online.contains(*c)) {
            let h = hits.clone();
            let r = call(&CpuSet::single(absent), move |_| {
                h[0].fetch_add(1, Ordering::Relaxed);
            }, TIMEOUT_NS);
            ensure!(r == Err(CpuSet::single(absent)), "a call to {absent}, which is not online, returned {r:?}");
            ensure!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 0), "a call to an offline CPU ran somewhere");
        }
        Ok(())
    }

    /// A CPU kept busy with interrupts off cannot answer: a call to it times out naming it, its
    /// withdrawn request never runs, even after the CPU is free again, and the next call succeeds.
    fn xcall_timeout_names_silent_cpus() -> Result<(), String> {
        let me = this_cpu();
        let Some(busy) = crate::cpu::map::online().iter().find(|&c| c != me) else {
            return Err(String::from("no second CPU online"));
        };
        let target = CpuSet::single(busy);
        let hold_ns = 300_000_000;
        // Keeps `busy` in its interrupt handler (interrupts off) for hold_ns.
        let r = call(&target, move |_| time::delay_us(hold_ns / 1_000), 20_000_000);
        ensure!(r == Err(target), "a 20 ms call to a function spinning 300 ms returned {r:?}, expected Err({target})");
        let ran = Arc::new(AtomicU32::new(0));
        let ran2 = ran.clone();
        let r = call(&target, move |_| {
            ran2.fetch_add(1, Ordering::Relaxed);
        }, 20_000_000);
        ensure!(r == Err(target), "a call to {busy} while it spins returned {r:?}, expected Err({target})");
        time::delay_us(2 * hold_ns / 1_000);
        ensure!(ran.load(Ordering::Relaxed) == 0, "a withdrawn request ran on {busy} after it was withdrawn");
        let ran3 = ran.clone();
        call(&target, move |_| {
            ran3.fetch_add(1, Ordering::Relaxed);
        }, TIMEOUT_NS)
            .map_err(|m| format!("{m} did not answer once free again"))?;
        ensure!(ran.load(Ordering::Relaxed) == 1, "the call after the timeout ran {} times", ran.load(Ordering::Relaxed));
        Ok(())
    }

    /// Every CPU at once (started by one call to all) sends, round after round, a bare IPI to all
    /// others with the shorthand and a cross-call to all others, while serving everyone else's.
    /// Conservation: each CPU ran exactly rounds x (n - 1) of the storm's calls, its served counter
    /// grew by exactly that (+1 for the starting call, except on the caller), every call returned
    /// in time, and its IPI counter grew (not by an exact amount: IPIs to a CPU that has one pending
    /// merge, and the scheduler's reschedule IPIs count there too).
    fn ipi_all_others_storm() -> Result<(), String> {
        let online = crate::cpu::map::online();
        let n = online.len() as u64;
        // The work grows as n^2 per round: 20 rounds up to 8 CPUs, fewer beyond, at least 2.
        let rounds = (160 / n).clamp(2, 20);
        let me = this_cpu();
        let block = |c: CpuId| crate::cpu::map::percpu_of(c).expect("online CPUs have a per-CPU block");
        let served_before: Vec<u64> = online.iter().map(|c| block(c).counters.xcalls_served.load(Ordering::Relaxed)).collect();
        let ipis_before: Vec<u64> = online.iter().map(|c| block(c).counters.ipis_received.load(Ordering::Relaxed)).collect();
        let received = counters();
        let failures = Arc::new(AtomicU32::new(0));
        let (r, fl) = (received.clone(), failures.clone());
        call(
            &online,
            move |cpu| {
                let mut others = online;
                others.remove(cpu);
                for _ in 0..rounds {
                    ipi::send_all_others(trap::VECTOR_XCALL);
                    let r = r.clone();
                    let res = call(&others, move |t| {
                        r[t.index()].fetch_add(1, Ordering::Relaxed);
                    }, TIMEOUT_NS);
                    if res.is_err() {
                        fl.fetch_add(1, Ordering::Relaxed);
                    }
                }
            },
            TIMEOUT_NS,
        )
        .map_err(|m| format!("{m} never finished its share of the storm"))?;
        ensure!(failures.load(Ordering::Relaxed) == 0, "{} storm calls timed out", failures.load(Ordering::Relaxed));
        // The caller waited with interrupts off: its IPIs are still pending.
        crate::irq::apic::deliver_pending(trap::VECTOR_XCALL);
        for (i, c) in online.iter().enumerate() {
            let got = received[c.index()].load(Ordering::Relaxed);
            ensure!(got == rounds * (n - 1), "{c} ran {got} storm calls, expected {} ({rounds} rounds x {} senders)", rounds * (n - 1), n - 1);
            let served = block(c).counters.xcalls_served.load(Ordering::Relaxed) - served_before[i];
            let want = rounds * (n - 1) + u64::from(c != me);
            ensure!(served == want, "{c}'s served counter grew by {served}, expected {want}");
            let ipis = block(c).counters.ipis_received.load(Ordering::Relaxed) - ipis_before[i];
            ensure!(ipis >= 1, "{c} counted no IPI, though {} were sent to it", 2 * rounds * (n - 1) + u64::from(c != me));
        }
        Ok(())
    }
}
