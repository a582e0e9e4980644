//! In-kernel tests of the scheduler on real CPUs: conservation under stress, not mere survival.
//!
//! Every test counts what it put in and checks that exactly that came out: ping-pong messages sent
//! and received, threads spawned and joined (and frames and heap bytes given back), mutex-protected
//! increments, wake-ups in racing rounds, CPU time shared by threads that never yield, steps of
//! migrating threads (never on two CPUs at once), stack pointers after a million switches, vector
//! registers under preemption, sleep deadlines, timer interrupts of idle CPUs, and reschedule IPIs
//! per remote wake-up. Figures worth keeping are printed as `  note:` lines.
//!
//! Threads that might hang (a lost wake-up) are waited for with a deadline ([`join_all`]) so a
//! failure names the stuck threads instead of hanging the run.
//!
//! Neighbours: `sched` (under test, through its public API and counters), `task` (the kernel's
//! scheduler instance), `cpu::map` (online CPUs and their per-CPU blocks), `mm` (frame and heap
//! levels), `time` (the clock), `arch::fpu` and `arch::testsupport` (register probes).

use alloc::{format, string::String, sync::Arc, vec, vec::Vec};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use sched::{Builder, CpuIndex, JoinHandle, Mutex, WaitQueue};

use crate::{

    cpu::percpu,

    ensure,

    mm,

    println_raw,

    task::{KernelPlatform, sched},

    testing::{Failures, Test},

    time,

};

crate::register_tests![
    Test { name: "sched_pingpong_storm", min_cpus: 1, expect_fault: false, run: pingpong_storm },
    Test { name: "sched_spawn_exit_churn", min_cpus: 1, expect_fault: false, run: spawn_exit_churn },
    Test { name: "sched_mutex_contention", min_cpus: 1, expect_fault: false, run: mutex_contention },
    Test { name: "sched_no_lost_wakeup", min_cpus: 1, expect_fault: false, run: no_lost_wakeup },
    Test { name: "sched_preemption_fairness", min_cpus: 1, expect_fault: false, run: preemption_fairness },
    Test { name: "sched_migration_storm", min_cpus: 1, expect_fault: false, run: migration_storm },
    Test { name: "sched_stack_no_drift", min_cpus: 1, expect_fault: false, run: stack_no_drift },
    Test { name: "sched_fpu_isolation", min_cpus: 1, expect_fault: false, run: fpu_isolation },
    Test { name: "sched_sleep_accuracy", min_cpus: 1, expect_fault: false, run: sleep_accuracy },
    Test { name: "sched_timed_wait_ends_at_its_wake", min_cpus: 1, expect_fault: false, run: timed_wait_ends_at_its_wake },
    Test { name: "sched_idle_is_tickless", min_cpus: 1, expect_fault: false, run: idle_is_tickless },
    Test { name: "sched_remote_wake_ipi", min_cpus: 2, expect_fault: false, run: remote_wake_ipi },
    Test { name: "sched_balance_spreads_busy_threads", min_cpus: 2, expect_fault: false, run: balance_spreads_busy_threads },
    Test { name: "sched_balance_pulls_threads_piled_on_one_cpu", min_cpus: 2, expect_fault: false, run: balance_pulls_threads_piled_on_one_cpu },
    Test { name: "sched_affinity_moves", min_cpus: 1, expect_fault: false, run: affinity_moves },
    Test { name: "idle_threads_run_on_guarded_stacks", min_cpus: 2, expect_fault: false, run: idle_threads_run_on_guarded_stacks },
];

type Handle<T> = JoinHandle<T, KernelPlatform>;

const MS: u64 = 1_000_000;

/// Stack of the test threads (they run small loops; the timer interrupt and the switch path run on
/// top of them).
const STACK_BYTES: usize = 16 * 1024;

/// The CPUs the scheduler runs threads on, in order (CPU 0, which runs the tests, first).
fn cpus() -> Vec<CpuIndex> {
    let nr_cpus = sched().nr_cpus();
    crate::cpu::map::online().iter().filter(|c| c.index() < nr_cpus).map(|c| CpuIndex(c.get())).collect()
}

fn pinned(name: &'static str, cpu: CpuIndex) -> Builder {
    Builder::new(name).pinned(cpu).stack_bytes(STACK_BYTES)
}

fn spawn<T: Send + 'static>(builder: Builder, f: impl FnOnce() -> T + Send + 'static) -> Result<Handle<T>, String> {
    let name = builder.name;
    sched().spawn(builder, f).map_err(|e| format!("spawning `{name}`: {e:?}"))
}

/// Wait until every thread has finished, polling every `poll_ns`, then join them all. If some are
/// still running `timeout_ns` from now, give up on them (their handles are dropped, detaching them)
/// and say which, as `describe(index)` puts it.
fn join_all<T>(
    handles: Vec<Handle<T>>,
    timeout_ns: u64,
    poll_ns: u64,
    describe: impl Fn(usize) -> String,
) -> Result<Vec<T>, String> {
    join_all_progressing(handles, timeout_ns, poll_ns, || 0, describe)
}

/// [`join_all`] for work whose pace depends on the host (vCPUs emulated on fewer host cores are
/// descheduled for whole host time slices): the deadline is `stall_ns` without any change of
/// `progress()`, so a stuck exchange (a lost wake-up) fails while a slow one finishes.
fn join_all_progressing<T>(
    handles: Vec<Handle<T>>,
    stall_ns: u64,
    poll_ns: u64,
    progress: impl Fn() -> u64,
    describe: impl Fn(usize) -> String,
) -> Result<Vec<T>, String> {
    let start_ns = time::now_ns();
    let mut last = progress();
    let mut deadline_ns = start_ns + stall_ns;
    while !handles.iter().all(|h| h.is_finished()) {
        let now = time::now_ns();
        let seen = progress();
        if seen != last {
            last = seen;
            deadline_ns = now + stall_ns;
        }
        if now > deadline_ns {
            let stuck: Vec<String> =
                handles.iter().enumerate().filter(|(_, h)| !h.is_finished()).map(|(i, _)| describe(i)).collect();
            return Err(format!(
                "{} of {} threads still running after {} ms, the last {} ms without progress: {}",
                stuck.len(),
                handles.len(),
                (now - start_ns) / MS,
                stall_ns / MS,
                stuck.join("; ")
            ));
        }
        sched().sleep_ns(poll_ns);
    }
    handles
        .into_iter()
        .enumerate()
        .map(|(i, h)| h.join().ok_or_else(|| format!("{} ended without a result", describe(i))))
        .collect()
}

/// A small xorshift generator for racing delays (no statistical ambitions).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Busy work the compiler cannot remove.
fn spin(iterations: u64) {
    for i in 0..iterations {
        core::hint::black_box(i);
    }
}

/// Median and maximum of `values` (sorted in place); `(0, 0)` if empty.
fn median_max(values: &mut [u64]) -> (u64, u64) {
    values.sort_unstable();
    match values.len() {
        0 => (0, 0),
        n => (values[n / 2], values[n - 1]),
    }
}

// ----------------------------------------------------------------------------------------------
// sched_pingpong_storm

/// Passes of the counter per pair (half each way): `PINGPONG_PASSES / 2` round trips.
const PINGPONG_PASSES: u64 = 100_000;
const PINGPONG_ROUND_TRIPS: u64 = PINGPONG_PASSES / 2;

/// A one-value channel. One wait queue serves both directions: in a ping-pong at most one side
/// waits on a given mailbox at a time (the sender only while it is full, the receiver only while it
/// is empty).
struct Mailbox {
    value: AtomicU64,
    full: AtomicBool,
    waiters: WaitQueue,
}

impl Mailbox {
    const fn new() -> Mailbox {
        Mailbox { value: AtomicU64::new(0), full: AtomicBool::new(false), waiters: WaitQueue::new() }
    }

    fn send(&self, value: u64) {
        let s = sched();
        self.waiters.wait_until(s, || !self.full.load(Ordering::Acquire));
        self.value.store(value, Ordering::Relaxed);
        self.full.store(true, Ordering::Release);
        self.waiters.wake_one(s);
    }

    fn receive(&self) -> u64 {
        let s = sched();
        self.waiters.wait_until(s, || self.full.load(Ordering::Acquire));
        let value = self.value.load(Ordering::Relaxed);
        self.full.store(false, Ordering::Release);
        self.waiters.wake_one(s);
        value
    }
}

/// What one side of a pair counted.
#[derive(Default)]
struct Side {
    sent: AtomicU64,
    received: AtomicU64,
    /// Messages whose value was not the one the exchange implies.
    wrong_value: AtomicU64,
}

struct PingPong {
    ping: Mailbox,
    pong: Mailbox,
    /// The server (sends `2i`, expects `2i + 1`) and the echo (adds one).
    sides: [Side; 2],
    cpus: [CpuIndex; 2],
    elapsed_ns: AtomicU64,
}

impl PingPong {
    fn describe(&self) -> String {
        let [a, b] = &self.sides;
        format!(
            "pair cpu{}<->cpu{}: server sent {} received {}, echo received {} sent {}",
            self.cpus[0].0,
            self.cpus[1].0,
            a.sent.load(Ordering::Relaxed),
            a.received.load(Ordering::Relaxed),
            b.received.load(Ordering::Relaxed),
            b.sent.load(Ordering::Relaxed)
        )
    }
}

fn pingpong_server(p: &PingPong) {
    let me = &p.sides[0];
    let start_ns = time::now_ns();
    for i in 0..PINGPONG_ROUND_TRIPS {
        p.ping.send(2 * i);
        me.sent.store(i + 1, Ordering::Relaxed);
        let v = p.pong.receive();
        me.received.store(i + 1, Ordering::Relaxed);
        if v != 2 * i + 1 {
            me.wrong_value.fetch_add(1, Ordering::Relaxed);
        }
    }
    p.elapsed_ns.store(time::now_ns() - start_ns, Ordering::Relaxed);
}

fn pingpong_echo(p: &PingPong) {
    let me = &p.sides[1];
    for i in 0..PINGPONG_ROUND_TRIPS {
        let v = p.ping.receive();
        me.received.store(i + 1, Ordering::Relaxed);
        if v != 2 * i {
            me.wrong_value.fetch_add(1, Ordering::Relaxed);
        }
        p.pong.send(v + 1);
        me.sent.store(i + 1, Ordering::Relaxed);
    }
}

/// Pairs of threads pass a counter back and forth through two mailboxes, `PINGPONG_PASSES` times
/// per pair: a pair on one core (the last CPU), one across CPUs 0 and 1 with two or more CPUs, and
/// with four or more a second pair on one core (CPU 2) and a second across cores (CPUs 1 and 3).
/// Every pass is counted on both sides: each side sent and received exactly `PINGPONG_ROUND_TRIPS`,
/// every value was the expected one, and both mailboxes end empty.
fn pingpong_storm() -> Result<(), String> {
    let cpus = cpus();
    let n = cpus.len();
    let mut layouts = vec![[cpus[n - 1]; 2]];
    if n >= 2 {
        layouts.push([cpus[0], cpus[1]]);
    }
    if n >= 4 {
        layouts.push([cpus[2]; 2]);
        layouts.push([cpus[1], cpus[3]]);
    }
    let pairs: Vec<Arc<PingPong>> = layouts
        .iter()
        .map(|&cpus| {
            Arc::new(PingPong {
                ping: Mailbox::new(),
                pong: Mailbox::new(),
                sides: Default::default(),
                cpus,
                elapsed_ns: AtomicU64::new(0),
            })
        })
        .collect();
    let mut handles = Vec::new();
    for p in &pairs {
        let (a, b) = (p.clone(), p.clone());
        handles.push(spawn(pinned("ping-server", p.cpus[0]), move || pingpong_server(&a))?);
        handles.push(spawn(pinned("ping-echo", p.cpus[1]), move || pingpong_echo(&b))?);
    }
    // A lost wake-up stops a pair for good; a host that deschedules the vCPUs only slows it.
    let passes = || -> u64 {
        pairs.iter().flat_map(|p| &p.sides).map(|s| s.sent.load(Ordering::Relaxed) + s.received.load(Ordering::Relaxed)).sum()
    };
    join_all_progressing(handles, 60_000 * MS, 20 * MS, passes, |i| pairs[i / 2].describe())?;
    for p in &pairs {
        let [a, b] = &p.sides;
        let counts = [&a.sent, &a.received, &b.received, &b.sent].map(|c| c.load(Ordering::Relaxed));
        ensure!(
            counts == [PINGPONG_ROUND_TRIPS; 4],
            "{}: expected {PINGPONG_ROUND_TRIPS} passes each way, counted on both sides",
            p.describe()
        );
        let wrong = a.wrong_value.load(Ordering::Relaxed) + b.wrong_value.load(Ordering::Relaxed);
        ensure!(wrong == 0, "{}: {wrong} messages carried an unexpected value", p.describe());
        ensure!(
            !p.ping.full.load(Ordering::Relaxed) && !p.pong.full.load(Ordering::Relaxed),
            "{}: a message is left in a mailbox",
            p.describe()
        );
        let ns = p.elapsed_ns.load(Ordering::Relaxed);
        println_raw!(
            "  note: ping-pong cpu{}<->cpu{}: {PINGPONG_PASSES} passes in {} ms ({} ns per round trip)",
            p.cpus[0].0,
            p.cpus[1].0,
            ns / MS,
            ns / PINGPONG_ROUND_TRIPS
        );
    }
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// sched_spawn_exit_churn

/// Threads spawned and joined, whatever the CPU count. A dead thread's stack goes back to its
/// CPU's stack cache (no TLB shootdown per exit), so a thread costs about the same on any count.
const CHURN_THREADS: usize = 100_000;
/// Threads alive at a time.
const CHURN_WAVE: usize = 16;
const CHURN_STACK_BYTES: usize = 8 * 1024;

/// One pinned thread per CPU that runs only when asked. When every witness has answered, every
/// thread that died before the question has been reaped: a dead thread's stack and control block are
/// freed by the next thread to run on its CPU, before that CPU runs anything else, and a witness
/// runs on that CPU only after that. Witnesses block between questions, so they leave nothing to
/// reap themselves.
struct Witnesses {
    asked: AtomicU64,
    answered: AtomicU64,
    stop: AtomicBool,
    questions: WaitQueue,
    answers: WaitQueue,
}

impl Witnesses {
    fn start(cpus: &[CpuIndex]) -> Result<(Arc<Witnesses>, Vec<Handle<()>>), String> {
        let w = Arc::new(Witnesses {
            asked: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            questions: WaitQueue::new(),
            answers: WaitQueue::new(),
        });
        let handles = cpus
            .iter()
            .map(|&cpu| {
                let w = w.clone();
                spawn(pinned("witness", cpu), move || {
                    let s = sched();
                    let mut seen = 0;
                    loop {
                        w.questions
                            .wait_until(s, || w.asked.load(Ordering::Acquire) > seen || w.stop.load(Ordering::Acquire));
                        if w.stop.load(Ordering::Acquire) {
                            return;
                        }
                        seen = w.asked.load(Ordering::Acquire);
                        w.answered.fetch_add(1, Ordering::AcqRel);
                        w.answers.wake_one(s);
                    }
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok((w, handles))
    }

    /// Return once every thread that died before the call has been reaped.
    fn sync(&self, nr_witnesses: u64) {
        let s = sched();
        let question = self.asked.fetch_add(1, Ordering::AcqRel) + 1;
        self.questions.wake_all(s);
        self.answers.wait_until(s, || self.answered.load(Ordering::Acquire) >= question * nr_witnesses);
    }

    fn stop(&self, handles: Vec<Handle<()>>) {
        self.stop.store(true, Ordering::Release);
        self.questions.wake_all(sched());
        for h in handles {
            h.join();
        }
    }
}

/// `(free frames, heap bytes allocated)`.
fn memory_level() -> (usize, usize) {
    // Stacks of threads that are gone stay mapped in the CPUs' caches until trimmed.
    mm::stacks::trim();
    (mm::frames::stats().0, mm::heap::allocated_bytes())
}

/// The kernel-stack slot the calling thread runs on.
fn stack_slot() -> usize {
    let sp = arch::testsupport::caller_stack_pointer();
    (sp.wrapping_sub(mm::STACKS_BASE) / mm::stacks::SLOT_BYTES) as usize
}

/// Stack slots per last-level page table (each maps 2 MiB).
const SLOTS_PER_TABLE: usize = ((2 << 20) / mm::stacks::SLOT_BYTES) as usize;

/// Which last-level page tables of the stacks' region some set of threads ran on, one bit each.
struct TableSet([u64; mm::stacks::MAX_STACKS / SLOTS_PER_TABLE / 64]);

impl TableSet {
    fn new() -> TableSet {
        TableSet([0; mm::stacks::MAX_STACKS / SLOTS_PER_TABLE / 64])
    }

    fn insert(&mut self, slot: usize) {
        let t = (slot / SLOTS_PER_TABLE).min(self.0.len() * 64 - 1);
        self.0[t / 64] |= 1 << (t % 64);
    }

    /// Tables in `self` but not in `other`.
    fn count_outside(&self, other: &TableSet) -> u32 {
        self.0.iter().zip(&other.0).map(|(a, b)| (a & !b).count_ones()).sum()
    }
}

/// Spawn `count` threads pinned round robin over `cpus`, all blocked on one gate until every one
/// exists, then release and join them, so `count` stacks live at once; returns their slots.
fn gated_wave(cpus: &[CpuIndex], count: usize) -> Result<Vec<usize>, String> {
    let gate = Arc::new((AtomicBool::new(false), WaitQueue::new()));
    let mut handles = Vec::with_capacity(count);
    for i in 0..count {
        let gate = gate.clone();
        let builder = Builder::new("churn-warm-up").pinned(cpus[i % cpus.len()]).stack_bytes(CHURN_STACK_BYTES);
        handles.push(spawn(builder, move || {
            gate.1.wait_until(sched(), || gate.0.load(Ordering::Acquire));
            stack_slot()
        })?);
    }
    gate.0.store(true, Ordering::Release);
    gate.1.wake_all(sched());
    Ok(handles.into_iter().filter_map(|h| h.join()).collect())
}

/// Short threads (`CHURN_THREADS`), pinned round robin over
/// every CPU, spawned and joined in waves of `CHURN_WAVE`. Each runs exactly once (its slot in a
/// table goes from 0 to 1, and the ids joined add up), and free frames and allocated heap bytes
/// return exactly to their level before the churn.
///
/// Two things are made on demand and kept, by design: the heap's growth, and the page tables of the
/// kernel stacks' region (kernel-half tables are shared by every address space, so they are never
/// freed). A warm-up makes both first: a gated wave with as many threads alive at once as the churn
/// can have (a wave, plus one dead thread per CPU not reaped yet), then every free stack slot
/// mapped at once (the others are live threads' stacks, whose tables exist), so that every table
/// of the region exists; the churn checks it used no page table the warm-up did not. Dead threads'
/// stacks stay mapped in the CPUs' stack caches; the memory levels are taken after trimming them.
fn spawn_exit_churn() -> Result<(), String> {
    let cpus = cpus();
    let churn_threads = CHURN_THREADS;
    let ran: Arc<[AtomicU8]> = (0..churn_threads).map(|_| AtomicU8::new(0)).collect();
    let mut handles: Vec<Handle<(u64, usize)>> = Vec::with_capacity(CHURN_WAVE);
    let (witnesses, witness_handles) = Witnesses::start(&cpus)?;
    let nr_witnesses = witness_handles.len() as u64;
    gated_wave(&cpus, CHURN_WAVE + cpus.len())?;
    mm::stacks::trim();
    let mut warm = TableSet::new();
    let mut every_free_slot = Vec::with_capacity(mm::stacks::MAX_STACKS);
    while let Some(stack) = mm::stacks::KernelStack::new(4096, "churn-warm-up") {
        every_free_slot.push(stack);
    }
    drop(every_free_slot);
    (0..mm::stacks::MAX_STACKS).for_each(|slot| warm.insert(slot));
    witnesses.sync(nr_witnesses);
    let before = memory_level();
    let online = crate::cpu::map::online();
    let shootdowns_before = crate::vm::tlb::sum(&online).kernel_shootdowns;
    let start_ns = time::now_ns();
    let (mut id_sum, mut joined, mut used) = (0u64, 0usize, TableSet::new());
    for wave_start in (0..churn_threads).step_by(CHURN_WAVE) {
        for i in wave_start..(wave_start + CHURN_WAVE).min(churn_threads) {
            let ran = ran.clone();
            let builder = Builder::new("churn").pinned(cpus[i % cpus.len()]).stack_bytes(CHURN_STACK_BYTES);
            handles.push(spawn(builder, move || {
                ran[i].fetch_add(1, Ordering::Relaxed);
                (i as u64, stack_slot())
            })?);
        }
        for h in handles.drain(..) {
            if let Some((id, slot)) = h.join() {
                id_sum += id;
                joined += 1;
                used.insert(slot);
            }
        }
    }
    let elapsed_ns = time::now_ns() - start_ns;
    let shootdowns = crate::vm::tlb::sum(&online).kernel_shootdowns - shootdowns_before;
    witnesses.sync(nr_witnesses);
    let after = memory_level();
    witnesses.stop(witness_handles);
    let not_once = ran.iter().filter(|r| r.load(Ordering::Relaxed) != 1).count();
    ensure!(not_once == 0, "{not_once} of {churn_threads} threads did not run exactly once");
    let n = churn_threads as u64;
    ensure!(
        joined == churn_threads && id_sum == n * (n - 1) / 2,
        "joined {joined} of {churn_threads} threads, their ids add up to {id_sum} (expected {})",
        n * (n - 1) / 2
    );
    let new_tables = used.count_outside(&warm);
    ensure!(
        new_tables == 0,
        "the churn ran on stacks under {new_tables} page tables the warm-up never used, so page tables may have been made during the measurement"
    );
    ensure!(
        after == before,
        "memory did not return to its level: free frames {} -> {}, heap bytes allocated {} -> {}",
        before.0,
        after.0,
        before.1,
        after.1
    );
    // A dead thread's stack goes to its CPU's cache or the unmap list, which is unmapped a batch at a
    // time with one kernel shootdown: never one shootdown per exit (which was an interrupts-off wait
    // for every CPU inside the switch path).
    let bound = n / mm::stacks::UNMAP_BATCH as u64 + 1;
    ensure!(
        shootdowns <= bound,
        "{shootdowns} kernel shootdowns for {churn_threads} thread exits, more than one per {} stacks ({bound})",
        mm::stacks::UNMAP_BATCH
    );
    println_raw!(
        "  note: spawn-exit churn: {churn_threads} threads on {} CPUs in {} ms ({} us per thread), {shootdowns} kernel shootdowns",
        cpus.len(),
        elapsed_ns / MS,
        elapsed_ns / 1000 / n
    );
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// sched_mutex_contention

const MUTEX_THREADS_PER_CPU: usize = 2;
const MUTEX_INCREMENTS_PER_THREAD: u64 = 50_000;
/// Work inside the critical section between reading and writing the counter, so two holders at
/// once would lose increments.
const MUTEX_CRITICAL_SPINS: u64 = 50;
/// Every this many increments the holder yields inside the critical section, so threads on the
/// same CPU find the mutex taken too (not only threads on other CPUs).
const MUTEX_YIELD_EVERY: u64 = 64;

struct Counted {
    counter: Mutex<u64>,
    /// The thread inside the critical section (0: none), to catch two holders at once.
    holder: AtomicU64,
    two_holders: AtomicU64,
    contended: AtomicU64,
}

/// `MUTEX_THREADS_PER_CPU` threads on every CPU add one to a shared counter under `sched::Mutex`
/// (read, a little work, now and then a yield, write) `MUTEX_INCREMENTS_PER_THREAD` times each. The
/// counter ends equal to the number of increments, no thread ever entered the critical section while
/// another was inside, and the lock was contended (some `try_lock` failed and the thread slept in
/// `lock`), so the sleeping path was exercised.
fn mutex_contention() -> Result<(), String> {
    let cpus = cpus();
    let shared = Arc::new(Counted {
        counter: Mutex::new(0),
        holder: AtomicU64::new(0),
        two_holders: AtomicU64::new(0),
        contended: AtomicU64::new(0),
    });
    let mut handles = Vec::new();
    for &cpu in &cpus {
        for _ in 0..MUTEX_THREADS_PER_CPU {
            let shared = shared.clone();
            let me = handles.len() as u64 + 1;
            handles.push(spawn(pinned("mutex-adder", cpu), move || {
                let s = sched();
                for i in 0..MUTEX_INCREMENTS_PER_THREAD {
                    let mut guard = match shared.counter.try_lock(s) {
                        Some(g) => g,
                        None => {
                            shared.contended.fetch_add(1, Ordering::Relaxed);
                            shared.counter.lock(s)
                        }
                    };
                    if shared.holder.swap(me, Ordering::AcqRel) != 0 {
                        shared.two_holders.fetch_add(1, Ordering::Relaxed);
                    }
                    let v = *guard;
                    spin(MUTEX_CRITICAL_SPINS);
                    if i % MUTEX_YIELD_EVERY == 0 {
                        s.yield_now();
                    }
                    *guard = v + 1;
                    shared.holder.store(0, Ordering::Release);
                }
            })?);
        }
    }
    let threads = handles.len() as u64;
    let start_ns = time::now_ns();
    join_all(handles, 120_000 * MS, 10 * MS, |i| format!("adder {i}"))?;
    let elapsed_ns = time::now_ns() - start_ns;
    let total = *shared.counter.lock(sched());
    let expected = threads * MUTEX_INCREMENTS_PER_THREAD;
    let two_holders = shared.two_holders.load(Ordering::Relaxed);
    ensure!(two_holders == 0, "{two_holders} times a thread entered the critical section while another was inside");
    ensure!(
        total == expected,
        "counter is {total}, expected {expected} ({threads} threads x {MUTEX_INCREMENTS_PER_THREAD})"
    );
    let contended = shared.contended.load(Ordering::Relaxed);
    ensure!(
        contended > 0,
        "the mutex was never contended in {expected} acquisitions: the test did not exercise waiting"
    );
    println_raw!(
        "  note: mutex: {expected} increments by {threads} threads in {} ms, {contended} acquisitions had to wait",
        elapsed_ns / MS
    );
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// sched_no_lost_wakeup

/// Rounds in all, divided among the groups (one per CPU).
const WAKEUP_TOTAL_ROUNDS: u64 = 40_000;
const WAKEUP_SLEEPERS: usize = 2;
/// A group whose round has not completed after this long has lost a wake-up.
const WAKEUP_STUCK_NS: u64 = 2_000 * MS;
/// How often the test thread looks at the groups' progress.
const WAKEUP_WATCH_NS: u64 = 20 * MS;
/// Random delays before waiting and before waking span about the length of the waiting path, so
/// the waker's change lands before, during and after the sleeper's check-then-sleep.
const WAKEUP_MAX_DELAY_SPINS: u64 = 3_000;

struct WakeGroup {
    /// The sleepers wait here for their round to be released.
    queue: WaitQueue,
    /// The waker waits here for the sleepers' acknowledgements.
    acks: WaitQueue,
    /// The last round the waker released.
    round: AtomicU64,
    /// The last round each sleeper saw released.
    acked: [AtomicU64; WAKEUP_SLEEPERS],
    /// How often each sleeper's current wait has checked its condition (0: not waiting).
    checks: [AtomicU64; WAKEUP_SLEEPERS],
    stop: AtomicBool,
    rounds: u64,
    waker_cpu: CpuIndex,
    sleeper_cpus: [CpuIndex; WAKEUP_SLEEPERS],
    /// How the sleepers' waits ended: the condition held at the first check; it became true between
    /// the first check and the re-check after queueing (the race itself); the sleeper blocked and
    /// was woken.
    fast: AtomicU64,
    raced: AtomicU64,
    slept: AtomicU64,
}

impl WakeGroup {
    fn describe(&self) -> String {
        let load = |a: &[AtomicU64; WAKEUP_SLEEPERS]| a.each_ref().map(|x| x.load(Ordering::Relaxed));
        format!(
            "group with waker on cpu{} and sleepers on cpu{} and cpu{}: released round {}, acknowledged {:?}, \
             condition checks of the sleepers' current waits {:?} (0: not waiting; 2: queued and blocked)",
            self.waker_cpu.0,
            self.sleeper_cpus[0].0,
            self.sleeper_cpus[1].0,
            self.round.load(Ordering::Relaxed),
            load(&self.acked),
            load(&self.checks)
        )
    }

    fn all_acked(&self, round: u64) -> bool {
        self.acked.iter().all(|a| a.load(Ordering::Acquire) >= round)
    }

    /// A number that grows whenever the group makes progress.
    fn progress(&self) -> u64 {
        self.round.load(Ordering::Acquire) + self.acked.iter().map(|a| a.load(Ordering::Acquire)).sum::<u64>()
    }

    fn finished(&self) -> bool {
        self.all_acked(self.rounds)
    }
}

fn wake_sleeper(g: &WakeGroup, k: usize, seed: u64) {
    let s = sched();
    let mut rng = Rng::new(seed);
    for r in 1..=g.rounds {
        spin(rng.below(WAKEUP_MAX_DELAY_SPINS));
        let mut checks = 0;
        g.queue.wait_until(s, || {
            checks += 1;
            g.checks[k].store(checks, Ordering::Relaxed);
            g.round.load(Ordering::Acquire) >= r || g.stop.load(Ordering::Acquire)
        });
        g.checks[k].store(0, Ordering::Relaxed);
        let how = match checks {
            1 => &g.fast,
            2 => &g.raced,
            _ => &g.slept,
        };
        how.fetch_add(1, Ordering::Relaxed);
        if g.stop.load(Ordering::Acquire) {
            return;
        }
        g.acked[k].store(r, Ordering::Release);
        g.acks.wake_one(s);
    }
}

fn wake_waker(g: &WakeGroup, seed: u64) {
    let s = sched();
    let mut rng = Rng::new(seed);
    for r in 1..=g.rounds {
        spin(rng.below(WAKEUP_MAX_DELAY_SPINS));
        g.round.store(r, Ordering::Release);
        if r % 2 == 0 {
            g.queue.wake_all(s);
        } else {
            for _ in 0..WAKEUP_SLEEPERS {
                g.queue.wake_one(s);
            }
        }
        g.acks.wait_until(s, || g.all_acked(r) || g.stop.load(Ordering::Acquire));
        if g.stop.load(Ordering::Acquire) {
            return;
        }
    }
}

/// Watch the groups until all finish; if one makes no progress for `WAKEUP_STUCK_NS`, describe it,
/// wake its queues once more (a lost wake-up is then released; a thread stuck elsewhere is not) and
/// stop every group.
fn watch_wake_groups(groups: &[Arc<WakeGroup>]) -> Result<(), String> {
    let s = sched();
    let mut seen: Vec<(u64, u64)> = groups.iter().map(|g| (g.progress(), time::now_ns())).collect();
    while !groups.iter().all(|g| g.finished()) {
        s.sleep_ns(WAKEUP_WATCH_NS);
        let now = time::now_ns();
        for (g, (progress, since)) in groups.iter().zip(seen.iter_mut()) {
            if g.progress() != *progress || g.finished() {
                *progress = g.progress();
                *since = now;
                continue;
            }
            if now - *since < WAKEUP_STUCK_NS {
                continue;
            }
            let stuck = g.describe();
            // Are the group's CPUs alive (switching threads, or idling) while it is stuck?
            let group_cpus = [g.waker_cpu, g.sleeper_cpus[0], g.sleeper_cpus[1]];
            let before = group_cpus.map(|c| s.counters(c));
            s.sleep_ns(100 * MS);
            let activity: Vec<String> = group_cpus
                .iter()
                .zip(&before)
                .map(|(&c, b)| {
                    let a = s.counters(c);
                    format!(
                        "cpu{}: {} switches, {} ms idle",
                        c.0,
                        a.context_switches - b.context_switches,
                        (a.idle_ns - b.idle_ns) / MS
                    )
                })
                .collect();
            g.queue.wake_all(s);
            g.acks.wake_all(s);
            s.sleep_ns(500 * MS);
            let verdict = if g.progress() != *progress {
                "a second wake-up released it"
            } else {
                "a second wake-up did not release it"
            };
            for g in groups {
                g.stop.store(true, Ordering::Release);
                g.queue.wake_all(s);
                g.acks.wake_all(s);
            }
            return Err(format!(
                "no progress for {} ms: {stuck}; in the next 100 ms {}; {verdict}",
                WAKEUP_STUCK_NS / MS,
                activity.join(", ")
            ));
        }
    }
    Ok(())
}

/// One group per CPU: a waker on that CPU and two sleepers on the next two CPUs (wrapping, so with
/// one CPU everything shares it); the groups share `WAKEUP_TOTAL_ROUNDS` rounds. Each round the
/// sleepers wait (random delay, then `wait_until` the round is released) while the waker (random
/// delay) releases the round and wakes them, alternately with `wake_one` per sleeper and `wake_all`,
/// then sleeps until both acknowledged. Every round of every group completes: a group that stops
/// making progress is reported with its round and state. Some waits must have blocked and been
/// woken, and with more than one CPU some must have found their round already released, so the race
/// was run both ways.
fn no_lost_wakeup() -> Result<(), String> {
    let cpus = cpus();
    let n = cpus.len();
    let groups: Vec<Arc<WakeGroup>> = (0..n)
        .map(|i| {
            Arc::new(WakeGroup {
                queue: WaitQueue::new(),
                acks: WaitQueue::new(),
                round: AtomicU64::new(0),
                acked: Default::default(),
                checks: Default::default(),
                stop: AtomicBool::new(false),
                rounds: WAKEUP_TOTAL_ROUNDS / n as u64,
                waker_cpu: cpus[i],
                sleeper_cpus: [cpus[(i + 1) % n], cpus[(i + 2) % n]],
                fast: AtomicU64::new(0),
                raced: AtomicU64::new(0),
                slept: AtomicU64::new(0),
            })
        })
        .collect();
    let mut handles = Vec::new();
    let start_ns = time::now_ns();
    for (i, g) in groups.iter().enumerate() {
        for k in 0..WAKEUP_SLEEPERS {
            let g = g.clone();
            let seed = (i * 8 + k) as u64 + 1;
            handles.push(spawn(pinned("wake-sleeper", g.sleeper_cpus[k]), move || wake_sleeper(&g, k, seed))?);
        }
        let g = g.clone();
        handles.push(spawn(pinned("waker", g.waker_cpu), move || wake_waker(&g, (i as u64 + 1) << 32))?);
    }
    let watched = watch_wake_groups(&groups);
    let elapsed_ns = time::now_ns() - start_ns;
    let per_group = WAKEUP_SLEEPERS + 1;
    join_all(handles, 10_000 * MS, 10 * MS, |i| {
        let role = if i % per_group == WAKEUP_SLEEPERS { "waker" } else { "sleeper" };
        format!("{role} of {}", groups[i / per_group].describe())
    })?;
    watched?;
    let sum = |f: fn(&WakeGroup) -> &AtomicU64| groups.iter().map(|g| f(g).load(Ordering::Relaxed)).sum::<u64>();
    let (fast, raced, slept) = (sum(|g| &g.fast), sum(|g| &g.raced), sum(|g| &g.slept));
    // On one CPU the waker cannot run inside a sleeper's check-then-sleep (interrupts are off
    // there), so only sleeping is certain; with more, both outcomes must have happened.
    ensure!(slept > 0, "no wait ever slept: {fast} found the round released, {raced} saw it while queueing");
    if n > 1 {
        ensure!(fast > 0, "no wait found its round already released ({slept} slept): the race was not run both ways");
    }
    println_raw!(
        "  note: wake-ups: {} groups x {} rounds in {} ms; waits: {fast} found the round released, {raced} saw it released while queueing, {slept} slept and were woken",
        groups.len(),
        groups[0].rounds,
        elapsed_ns / MS
    );
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// sched_preemption_fairness

const FAIR_THREADS_PER_CPU: usize = 3;
const FAIR_WINDOW_NS: u64 = 1_000 * MS;
/// The deviation of a thread's CPU time from its CPU's mean above which the note says so (not a
/// failure: see `preemption_fairness`).
const FAIR_TOLERANCE_PERCENT: u64 = 10;

/// A busy thread that never yields, measuring its own time on the CPU inside `[start_tsc,
/// end_tsc)`. The threads of one CPU share `owner`: whoever finds another's mark there has just been
/// switched in and starts a new slice; the time between two of its own consecutive TSC reads counts
/// only while the mark stayed its own, so time spent by the other threads is never counted, while
/// interrupts and a host pausing the virtual CPU count for the thread that was running, as they do
/// for the scheduler's slices. Returns `(TSC ticks on the CPU, slices)`.
fn fair_spinner(owner: &AtomicU64, me: u64, start_tsc: u64, end_tsc: u64) -> (u64, u64) {
    let (mut run_ticks, mut slices) = (0u64, 0u64);
    let mut last_tsc: Option<u64> = None;
    loop {
        let now_tsc = arch::tsc::read();
        if owner.load(Ordering::Relaxed) == me {
            if let Some(prev_tsc) = last_tsc {
                run_ticks += now_tsc.min(end_tsc).saturating_sub(prev_tsc.max(start_tsc));
            }
        } else {
            owner.store(me, Ordering::Relaxed);
            if (start_tsc..end_tsc).contains(&now_tsc) {
                slices += 1;
            }
        }
        last_tsc = Some(now_tsc);
        if now_tsc >= end_tsc {
            return (run_ticks, slices);
        }
    }
}

/// `FAIR_THREADS_PER_CPU` busy threads that never yield pinned to each CPU. Over one second each
/// got the CPU in several slices (the timer took the CPU from threads that never give it up), and
/// as many as the others within two (the window cuts one turn of the round robin at each end: the
/// slice running as it opens is not counted, the last round may be incomplete). That is the
/// scheduler's fairness; the milliseconds each got are printed, not asserted: under emulation the
/// host's scheduling of the virtual CPU, not ours, decides how long a slice lasts in host time
/// (on a loaded two-core host, shares of [180, 89, 96] ms came with slices of [13, 12, 13]).
/// The CPUs are measured one after another, so that busy virtual CPUs compete less.
fn preemption_fairness() -> Result<(), String> {
    let mut worst_percent = 0;
    for cpu in cpus() {
        worst_percent = worst_percent.max(fairness_on(cpu)?);
    }
    println_raw!(
        "  note: fairness: worst deviation of CPU time from a CPU's mean {worst_percent}%{}",
        if worst_percent > FAIR_TOLERANCE_PERCENT { ", over the host-independent bound: the host paused virtual CPUs (the slices were equal)" } else { "" }
    );
    Ok(())
}

/// One fairness window on `cpu`; the worst deviation from the mean, in percent.
fn fairness_on(cpu: CpuIndex) -> Result<u64, String> {
    let window_ticks = time::ns_to_tsc_ticks_ceil(FAIR_WINDOW_NS).ok_or("the TSC is not calibrated")?;
    let start_tsc = arch::tsc::read() + time::ns_to_tsc_ticks_ceil(50 * MS).unwrap_or(0);
    let end_tsc = start_tsc + window_ticks;
    let owner = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for k in 0..FAIR_THREADS_PER_CPU {
        let owner = owner.clone();
        let me = k as u64 + 1;
        handles.push(spawn(pinned("fair-spinner", cpu), move || fair_spinner(&owner, me, start_tsc, end_tsc))?);
    }
    sched().sleep_ns(FAIR_WINDOW_NS + 100 * MS);
    let results = join_all(handles, 10_000 * MS, 10 * MS, |k| format!("spinner {k} on cpu{}", cpu.0))?;
    let mean_ticks = results.iter().map(|r| r.0).sum::<u64>() / FAIR_THREADS_PER_CPU as u64;
    let shares: Vec<u64> = results.iter().map(|r| time::tsc_ticks_to_ns(r.0) / MS).collect();
    let slices: Vec<u64> = results.iter().map(|r| r.1).collect();
    ensure!(mean_ticks > 0, "cpu{}: the spinners got no CPU time at all", cpu.0);
    let mut worst_percent = 0;
    let (fewest, most) = (slices.iter().min().copied().unwrap_or(0), slices.iter().max().copied().unwrap_or(0));
    ensure!(
        most - fewest <= 2,
        "cpu{}: the spinners got unequal turns: slices each {slices:?} (ms each: {shares:?})",
        cpu.0
    );
    for (k, &(run_ticks, nr_slices)) in results.iter().enumerate() {
        let off_percent = run_ticks.abs_diff(mean_ticks) * 100 / mean_ticks;
        worst_percent = worst_percent.max(off_percent);
        ensure!(
            nr_slices >= 2,
            "cpu{}: spinner {k} ran in {nr_slices} slice(s): the CPU was not shared (slices each: {slices:?})",
            cpu.0
        );
    }
    println_raw!("  note: fairness cpu{}: ms on the CPU each {shares:?}, slices each {slices:?}", cpu.0);
    Ok(worst_percent)
}

// ----------------------------------------------------------------------------------------------
// sched_migration_storm

const MIGRATION_STEPS: u64 = 10_000;
const MIGRATION_STEP_SPINS: u64 = 4_000;

/// What a migrating thread saw: steps done, the CPUs it started steps on (a bit mask of CPU indices
/// modulo 64), and how often consecutive steps started on different CPUs.
struct Wanderings {
    steps: u64,
    cpu_mask: u64,
    moves: u64,
}

fn wanderer(marker: &AtomicU64, failures: &Failures, index: usize) -> Wanderings {
    let s = sched();
    let mut rng = Rng::new(index as u64 + 77);
    let mut w = Wanderings { steps: 0, cpu_mask: 0, moves: 0 };
    let mut last_cpu = None;
    for step in 0..MIGRATION_STEPS {
        let cpu = percpu::cpu_index();
        w.cpu_mask |= 1 << (cpu % 64);
        if last_cpu.is_some_and(|c| c != cpu) {
            w.moves += 1;
        }
        last_cpu = Some(cpu);
        let token = (step << 16) | (u64::from(cpu) + 1);
        if let Err(held) = marker.compare_exchange(0, token, Ordering::AcqRel, Ordering::Acquire) {
            failures.record(|| format!("thread {index} step {step} on cpu{cpu}: its marker was already held ({held:#x}): it ran on two CPUs at once"));
        }
        spin(MIGRATION_STEP_SPINS / 2 + rng.below(MIGRATION_STEP_SPINS));
        if let Err(now) = marker.compare_exchange(token, 0, Ordering::AcqRel, Ordering::Acquire) {
            failures.record(|| {
                format!(
                    "thread {index} step {step}: its marker changed under it to {now:#x}: it ran on two CPUs at once"
                )
            });
        }
        w.steps += 1;
        match rng.below(16) {
            0 => s.sleep_ns(rng.below(500_000)),
            1..=3 => s.yield_now(),
            _ => {}
        }
    }
    w
}

/// Twice as many unpinned threads as CPUs, plus two, each doing `MIGRATION_STEPS` steps of busy work
/// with random yields and short sleeps, so CPUs keep going idle and stealing. Each step is bracketed
/// by a compare-and-swap on the thread's own marker: a failure means the thread ran on two CPUs at
/// once. All threads are joined with every step done; with more than one CPU, threads migrated (the
/// scheduler's counters, in and out equal, and threads seen starting steps on several CPUs).
fn migration_storm() -> Result<(), String> {
    let s = sched();
    let n = cpus().len();
    let threads = 2 * n + 2;
    let markers: Arc<[AtomicU64]> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    let failures = Arc::new(Failures::default());
    let before = s.total_counters();
    let start_ns = time::now_ns();
    let mut handles = Vec::new();
    for i in 0..threads {
        let (markers, failures) = (markers.clone(), failures.clone());
        let builder = Builder::new("wanderer").stack_bytes(STACK_BYTES);
        handles.push(spawn(builder, move || wanderer(&markers[i], &failures, i))?);
    }
    let results = join_all(handles, 120_000 * MS, 10 * MS, |i| format!("wanderer {i}"))?;
    let elapsed_ns = time::now_ns() - start_ns;
    let after = s.total_counters();
    failures.check()?;
    let steps: u64 = results.iter().map(|w| w.steps).sum();
    ensure!(
        steps == threads as u64 * MIGRATION_STEPS,
        "{steps} steps done, expected {}",
        threads as u64 * MIGRATION_STEPS
    );
    ensure!(
        after.migrations_in == after.migrations_out,
        "the counters disagree: {} migrations in, {} out",
        after.migrations_in,
        after.migrations_out
    );
    let migrations = after.migrations_in - before.migrations_in;
    let travelled = results.iter().filter(|w| w.cpu_mask.count_ones() >= 2).count();
    let moves: u64 = results.iter().map(|w| w.moves).sum();
    let most_cpus = results.iter().map(|w| w.cpu_mask.count_ones()).max().unwrap_or(0);
    if n > 1 {
        ensure!(migrations > 0, "no migrations in {steps} steps of {threads} threads on {n} CPUs");
        ensure!(travelled > 0, "the counters show {migrations} migrations, but no thread started steps on two CPUs");
    }
    println_raw!(
        "  note: migration storm: {threads} threads x {MIGRATION_STEPS} steps in {} ms; {migrations} migrations; {travelled} threads ran on 2+ CPUs (up to {most_cpus}); {moves} steps started on another CPU than the previous one",
        elapsed_ns / MS
    );
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// sched_stack_no_drift

/// Probes per thread. The two threads alternate strictly once both run, so each yield is a switch;
/// a few more than half a million each make sure of a million switches.
const DRIFT_YIELDS_PER_THREAD: u64 = 502_000;
const DRIFT_MIN_SWITCHES: u64 = 1_000_000;

/// Yield, then take the stack pointer at a call site of this frame. Not inlined, so every call
/// from the same loop runs at the same depth.
#[inline(never)]
fn yield_then_probe() -> u64 {
    sched().yield_now();
    core::hint::black_box(arch::testsupport::caller_stack_pointer())
}

/// What a drift thread saw: its first stack pointer, how many later ones differed (and the first
/// that did), how many were misaligned.
struct Drift {
    first: u64,
    moved: u64,
    first_moved: Option<u64>,
    misaligned: u64,
}

fn drift_thread(arrived: &AtomicU64) -> Drift {
    // Start together, so every yield has the other thread to switch to.
    arrived.fetch_add(1, Ordering::AcqRel);
    while arrived.load(Ordering::Acquire) < 2 {
        sched().yield_now();
    }
    let first = yield_then_probe();
    let mut d = Drift { first, moved: 0, first_moved: None, misaligned: u64::from(!first.is_multiple_of(16)) };
    for _ in 1..DRIFT_YIELDS_PER_THREAD {
        let sp = yield_then_probe();
        if sp != first {
            d.moved += 1;
            d.first_moved.get_or_insert(sp);
        }
        if !sp.is_multiple_of(16) {
            d.misaligned += 1;
        }
    }
    d
}

/// Two threads on one CPU yield to each other over a million times; after every switch back each
/// takes its stack pointer at the same call site. It never moves, and it is 16-byte aligned as the
/// ABI demands at a call.
fn stack_no_drift() -> Result<(), String> {
    let s = sched();
    let cpu = *cpus().last().expect("at least one CPU");
    let arrived = Arc::new(AtomicU64::new(0));
    let before = s.counters(cpu).context_switches;
    let start_ns = time::now_ns();
    let (a, b) = (arrived.clone(), arrived.clone());
    let handles = vec![
        spawn(pinned("drift-a", cpu), move || drift_thread(&a))?,
        spawn(pinned("drift-b", cpu), move || drift_thread(&b))?,
    ];
    let results = join_all(handles, 120_000 * MS, 20 * MS, |i| format!("drift thread {i}"))?;
    let elapsed_ns = time::now_ns() - start_ns;
    let switches = s.counters(cpu).context_switches - before;
    for (i, d) in results.iter().enumerate() {
        ensure!(
            d.moved == 0,
            "thread {i}: the stack pointer moved after {} of {DRIFT_YIELDS_PER_THREAD} switches (first {:#x}, then {:#x})",
            d.moved,
            d.first,
            d.first_moved.unwrap_or(0)
        );
        ensure!(
            d.misaligned == 0,
            "thread {i}: {} stack pointers at a call were not 16-byte aligned (first {:#x})",
            d.misaligned,
            d.first
        );
    }
    ensure!(
        switches >= DRIFT_MIN_SWITCHES,
        "only {switches} context switches on cpu{}, expected at least {DRIFT_MIN_SWITCHES}",
        cpu.0
    );
    println_raw!(
        "  note: stack drift: {switches} switches on cpu{} in {} ms ({} ns per yield and switch)",
        cpu.0,
        elapsed_ns / MS,
        elapsed_ns / switches.max(1)
    );
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// sched_fpu_isolation

/// How long each phase runs.
const FPU_PHASE_NS: u64 = 600 * MS;
/// Longest busy wait between filling and reading the registers (each window waits a random part of
/// it): a fair part of a time slice, so the timer often preempts a thread inside a window.
const FPU_MAX_WINDOW_NS: u64 = 3 * MS;

/// What an FPU thread saw: windows checked, windows whose registers came back wrong (and the first
/// such), windows during which its CPU switched to another thread, windows that ended on another
/// CPU than they began.
#[derive(Default)]
struct FpuOutcome {
    windows: u64,
    corrupted: u64,
    first_corruption: Option<String>,
    switched: u64,
    migrated: u64,
}

/// Fill the vector registers with a pattern unique to this thread and window, busy-wait a random
/// while (or, with `sleep_in_window`, sleep, which may end on another CPU), read them back and
/// compare; repeat until `deadline_ns`.
fn fpu_worker(tag: u64, deadline_ns: u64, sleep_in_window: bool) -> FpuOutcome {
    let s = sched();
    // Lanes that exist read back as the pattern plus their index; the others (ymm upper halves
    // without AVX state) as zero.
    let shape = arch::fpu::expected_vector_regs(1);
    let mut rng = Rng::new(tag);
    let mut out = FpuOutcome::default();
    while time::now_ns() < deadline_ns {
        let pattern = (tag << 48) | (out.windows << 8);
        let cpu_before = percpu::cpu_index();
        let switches_before = s.counters(CpuIndex(cpu_before)).context_switches;
        // SAFETY: every CPU enabled SSE (and AVX state where present) before running threads, and
        // this thread was created `with_fpu`, so its registers are saved and restored on switches.
        unsafe { arch::fpu::fill_vector_regs(pattern) };
        let window_ns = rng.below(FPU_MAX_WINDOW_NS);
        if sleep_in_window {
            s.sleep_ns(window_ns);
        } else {
            let until_ns = time::now_ns() + window_ns;
            while time::now_ns() < until_ns {
                core::hint::spin_loop();
            }
        }
        // SAFETY: as above.
        let got = unsafe { arch::fpu::read_vector_regs() };
        let cpu_after = percpu::cpu_index();
        let switches_after = s.counters(CpuIndex(cpu_after)).context_switches;
        if cpu_after != cpu_before {
            out.migrated += 1;
        } else if switches_after != switches_before {
            out.switched += 1;
        }
        let expected = shape.map(|reg| reg.map(|lane| if lane == 0 { 0 } else { pattern.wrapping_add(lane - 1) }));
        if got != expected {
            out.corrupted += 1;
            if out.first_corruption.is_none() {
                let reg = (0..got.len()).find(|&i| got[i] != expected[i]).unwrap_or(0);
                out.first_corruption = Some(format!(
                    "window {} (cpu{cpu_before} -> cpu{cpu_after}): register {reg} read {:x?}, expected {:x?}",
                    out.windows, got[reg], expected[reg]
                ));
            }
        }
        out.windows += 1;
    }
    out
}

/// Phase 1, every CPU at once: two FPU threads and a thread that never touches the vector registers
/// share each CPU under timer preemption (no yields), each FPU thread filling, spinning and reading
/// back its own patterns. Phase 2: more unpinned FPU threads than CPUs sleep inside their windows,
/// so CPUs idle and steal them and a window can end on another CPU. No thread ever reads back
/// anything but its own pattern; in phase 1 every FPU thread had windows interrupted by switches,
/// and with more than one CPU some phase-2 windows ended on another CPU.
fn fpu_isolation() -> Result<(), String> {
    let cpus = cpus();
    let n = cpus.len();
    // Phase 1.
    let deadline_ns = time::now_ns() + FPU_PHASE_NS;
    let mut handles = Vec::new();
    let mut plain = Vec::new();
    for (c, &cpu) in cpus.iter().enumerate() {
        for k in 0..2 {
            let tag = (c * 2 + k) as u64 + 1;
            handles.push(spawn(pinned("fpu-pinned", cpu).with_fpu(), move || fpu_worker(tag, deadline_ns, false))?);
        }
        plain.push(spawn(pinned("no-fpu", cpu), move || {
            while time::now_ns() < deadline_ns {
                core::hint::spin_loop();
            }
        })?);
    }
    let pinned_results =
        join_all(handles, 30_000 * MS, 10 * MS, |i| format!("FPU thread {} on cpu{}", i % 2, cpus[i / 2].0))?;
    join_all(plain, 30_000 * MS, 10 * MS, |i| format!("plain thread on cpu{}", cpus[i].0))?;
    // Phase 2.
    let deadline_ns = time::now_ns() + FPU_PHASE_NS;
    let mut handles = Vec::new();
    for k in 0..n + 2 {
        let tag = 0x100 + k as u64;
        handles.push(spawn(Builder::new("fpu-wanderer").with_fpu().stack_bytes(STACK_BYTES), move || {
            fpu_worker(tag, deadline_ns, true)
        })?);
    }
    let wandering_results = join_all(handles, 30_000 * MS, 10 * MS, |i| format!("wandering FPU thread {i}"))?;
    for (i, r) in pinned_results.iter().chain(&wandering_results).enumerate() {
        ensure!(
            r.corrupted == 0,
            "FPU thread {i}: {} of {} windows read back foreign register contents; first: {}",
            r.corrupted,
            r.windows,
            r.first_corruption.clone().unwrap_or_default()
        );
    }
    for (i, r) in pinned_results.iter().enumerate() {
        ensure!(
            r.switched > 0,
            "pinned FPU thread {i} on cpu{}: none of its {} windows spanned a switch",
            cpus[i / 2].0,
            r.windows
        );
    }
    let windows = |rs: &[FpuOutcome]| rs.iter().map(|r| r.windows).sum::<u64>();
    let switched = |rs: &[FpuOutcome]| rs.iter().map(|r| r.switched).sum::<u64>();
    let migrated: u64 = wandering_results.iter().map(|r| r.migrated).sum();
    if n > 1 {
        ensure!(
            migrated > 0,
            "none of {} windows of the wandering FPU threads ended on another CPU",
            windows(&wandering_results)
        );
    }
    let c = sched().total_counters();
    println_raw!(
        "  note: fpu: pinned {} windows ({} spanned a switch); wandering {} windows ({} ended on another CPU, {} switched); saves {} restores {} skipped {}",
        windows(&pinned_results),
        switched(&pinned_results),
        windows(&wandering_results),
        migrated,
        switched(&wandering_results),
        c.fpu_saves,
        c.fpu_restores,
        c.fpu_restores_skipped
    );
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// sched_sleep_accuracy

const SLEEP_DURATIONS_NS: [u64; 3] = [MS, 5 * MS, 20 * MS];
const SLEEP_REPEATS: usize = 10;

/// A thread pinned to each CPU sleeps `SLEEP_REPEATS` times for each of 1, 5 and 20 ms. No sleep
/// ends early (measured on the same clock the scheduler uses); the lateness is reported, not judged.
fn sleep_accuracy() -> Result<(), String> {
    let cpus = cpus();
    let mut handles = Vec::new();
    for &cpu in &cpus {
        handles.push(spawn(pinned("sleeper", cpu), || {
            let s = sched();
            SLEEP_DURATIONS_NS.map(|d| {
                (0..SLEEP_REPEATS)
                    .map(|_| {
                        let t0 = time::now_ns();
                        s.sleep_ns(d);
                        (time::now_ns() - t0) as i64 - d as i64
                    })
                    .collect::<Vec<i64>>()
            })
        })?);
    }
    let results = join_all(handles, 30_000 * MS, 10 * MS, |i| format!("sleeper on cpu{}", cpus[i].0))?;
    for (k, d) in SLEEP_DURATIONS_NS.iter().enumerate() {
        let all: Vec<i64> = results.iter().flat_map(|r| r[k].iter().copied()).collect();
        let earliest = all.iter().copied().min().unwrap_or(0);
        ensure!(earliest >= 0, "a {} ms sleep ended {} us early", d / MS, earliest.unsigned_abs() / 1000);
        let mut late_us: Vec<u64> = all.iter().map(|&l| l as u64 / 1000).collect();
        let (median, max) = median_max(&mut late_us);
        println_raw!("  note: sleep {} ms: late by median {median} us, max {max} us ({} sleeps)", d / MS, all.len());
    }
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// sched_timed_wait_ends_at_its_wake

/// How long the waker of `sched_timed_wait_ends_at_its_wake` lets the waiter sleep first.
const TIMED_WAKE_AFTER_NS: u64 = 20 * MS;

/// A thread on the last CPU waits on a keyed queue (a futex bucket's timed wait) with a deadline
/// 10 s away; a thread on CPU 0 sleeps 20 ms, then wakes it. The wait returns taken, having
/// checked its stop condition at most twice (before its sleep, and once more if it was woken
/// before it blocked): it slept once, through to the wake-up, and never woke at a timer before it
/// (naps of 1 ms would have checked it about 20 times). Then a wait nobody wakes ends at its
/// 5 ms deadline, not earlier.
fn timed_wait_ends_at_its_wake() -> Result<(), String> {
    static QUEUE: sched::KeyedWaitQueue<u64> = sched::KeyedWaitQueue::new();
    let cpus = cpus();
    let waiter_cpu = cpus[cpus.len() - 1];
    let ready = Arc::new(AtomicBool::new(false));
    let waiter = {
        let ready = ready.clone();
        spawn(pinned("timed-waiter", waiter_cpu), move || {
            let s = sched();
            let parker = sched::Parker::for_current(s);
            let deadline = time::now_ns() + 10_000 * MS;
            let mut stops = 0u32;
            let stop = || {
                stops += 1;
                ready.store(true, Ordering::Release);
                (time::now_ns() >= deadline).then_some(())
            };
            let r = QUEUE.wait_until(s, &parker, 1, u32::MAX, || Ok::<(), ()>(()), stop, deadline);
            (r, stops)
        })?
    };
    let waker = spawn(pinned("timed-waker", cpus[0]), move || {
        let s = sched();
        while !ready.load(Ordering::Acquire) {
            s.sleep_ns(MS);
        }
        s.sleep_ns(TIMED_WAKE_AFTER_NS);
        let mut woken = 0;
        while woken == 0 {
            woken = QUEUE.wake(s, 1, 1, u32::MAX);
            if woken == 0 {
                s.sleep_ns(MS);
            }
        }
    })?;
    let mut results = join_all(vec![waiter], 30_000 * MS, 10 * MS, |_| String::from("the timed waiter"))?;
    join_all(vec![waker], 30_000 * MS, 10 * MS, |_| String::from("its waker"))?;
    let (r, stops) = results.pop().ok_or("no result")?;
    ensure!(r == Ok(()), "the woken timed wait returned {r:?}");
    ensure!(stops <= 2, "the timed wait checked its stop condition {stops} times: it woke before its wake-up");
    let s = sched();
    let parker = sched::Parker::for_current(s);
    let deadline = time::now_ns() + 5 * MS;
    let r = QUEUE.wait_until(s, &parker, 2, u32::MAX, || Ok::<(), ()>(()), || (time::now_ns() >= deadline).then_some(()), deadline);
    ensure!(r == Err(()), "a timed wait nobody woke returned {r:?}");
    ensure!(time::now_ns() >= deadline, "a timed wait ended before its deadline");
    ensure!(QUEUE.wake(s, 2, 8, u32::MAX) == 0, "a timed-out waiter was left queued");
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// sched_idle_is_tickless

const TICKLESS_WINDOW_NS: u64 = 200 * MS;
/// Timer interrupts allowed per CPU in the window: the one that ends the test thread's own sleep on
/// CPU 0, and one more for a deadline armed just before the window.
const TICKLESS_ALLOWED: u64 = 2;

/// With no thread to run anywhere (the test thread sleeps), no CPU takes more than a couple of timer
/// interrupts in 200 ms: idle CPUs run no periodic tick.
fn idle_is_tickless() -> Result<(), String> {
    let s = sched();
    let cpus: Vec<_> = crate::cpu::map::online().iter().collect();
    let ticks = || {
        cpus.iter()
            .map(|&c| crate::cpu::map::percpu_of(c).map_or(0, |p| p.counters.timer_interrupts.load(Ordering::Relaxed)))
            .collect::<Vec<u64>>()
    };
    s.sleep_ns(20 * MS);
    let before = ticks();
    s.sleep_ns(TICKLESS_WINDOW_NS);
    let taken: Vec<u64> = ticks().iter().zip(&before).map(|(a, b)| a - b).collect();
    for (cpu, &t) in cpus.iter().zip(&taken) {
        ensure!(
            t <= TICKLESS_ALLOWED,
            "{cpu} took {t} timer interrupts in {} ms while idle (per CPU: {taken:?})",
            TICKLESS_WINDOW_NS / MS
        );
    }
    println_raw!("  note: tickless: timer interrupts per CPU in {} ms of idling: {taken:?}", TICKLESS_WINDOW_NS / MS);
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// sched_remote_wake_ipi

const IPI_IDLE_ROUNDS: u64 = 50;
const IPI_BUSY_ROUNDS: u64 = 20;
/// Long enough for the woken thread to block again and its CPU to halt.
const IPI_SETTLE_NS: u64 = 3 * MS;

struct Remote {
    queue: WaitQueue,
    round: AtomicU64,
    acked: AtomicU64,
    stop: AtomicBool,
}

/// Wait until the sleeper acknowledged `round` (or the deadline passes).
fn wait_ack(r: &Remote, round: u64) -> Result<(), String> {
    // A lost wake-up never runs; a late one is the host's doing: under TCG on a loaded 2-core host
    // (load average 12) a woken thread behind a busy one once took over 2 s to run.
    let deadline_ns = time::now_ns() + 30_000 * MS;
    while r.acked.load(Ordering::Acquire) < round {
        ensure!(time::now_ns() < deadline_ns, "round {round}: the woken thread did not run within 30 s");
        sched().yield_now();
    }
    Ok(())
}

fn ipis_received(cpu: CpuIndex) -> u64 {
    smp::CpuId::new(cpu.0).and_then(crate::cpu::map::percpu_of).map_or(0, |p| p.counters.ipis_received.load(Ordering::Relaxed))
}

/// A thread sleeps on a wait queue on the last CPU; the test thread on CPU 0 wakes it, round after
/// round. While that CPU is idle (halted), each wake-up sends exactly one reschedule IPI and the CPU
/// receives exactly one (a wake-up that finds the CPU not yet halted sends none, is counted as
/// avoided, and is repeated after a longer pause, as is one that finds the sleeper not yet back in
/// its wait); while a busy thread runs there, wake-ups send
/// none (each counted as avoided) and the thread still runs once the busy thread's slice ends.
fn remote_wake_ipi() -> Result<(), String> {
    let s = sched();
    let here = CpuIndex(percpu::cpu_index());
    let target = *cpus().last().expect("at least two CPUs");
    let r = Arc::new(Remote {
        queue: WaitQueue::new(),
        round: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let sleeper = {
        let r = r.clone();
        spawn(pinned("remote-sleeper", target), move || {
            let mut next = 1;
            loop {
                r.queue
                    .wait_until(sched(), || r.round.load(Ordering::Acquire) >= next || r.stop.load(Ordering::Acquire));
                if r.stop.load(Ordering::Acquire) {
                    return;
                }
                r.acked.store(next, Ordering::Release);
                next += 1;
            }
        })?
    };
    let result = (|| {
        let (mut sent_idle, mut received_idle, mut not_halted, mut not_waiting, mut round) = (0, 0, 0, 0, 0);
        for _ in 0..IPI_IDLE_ROUNDS {
            let mut settle_ns = IPI_SETTLE_NS;
            loop {
                s.sleep_ns(settle_ns);
                round += 1;
                let (before, got0) = (s.total_counters(), ipis_received(target));
                r.round.store(round, Ordering::Release);
                if !r.queue.wake_one(s) {
                    // The sleeper had not reached its wait yet (its emulated CPU may wait for a
                    // host core): it finds this round due and acknowledges without sleeping. Not
                    // a wake-up; try again after a longer pause.
                    wait_ack(&r, round)?;
                    not_waiting += 1;
                    ensure!(not_waiting <= IPI_IDLE_ROUNDS, "the sleeper was found not waiting {not_waiting} times");
                    settle_ns *= 2;
                    continue;
                }
                let after = s.total_counters();
                let (sent, avoided) = (after.ipis_sent - before.ipis_sent, after.ipis_avoided - before.ipis_avoided);
                wait_ack(&r, round)?;
                let got = ipis_received(target) - got0;
                if (sent, avoided, got) == (0, 1, 0) {
                    // The target had not halted yet (an emulated CPU may wait for a host core):
                    // not a wake-up of an idle CPU. Try again after a longer pause.
                    not_halted += 1;
                    ensure!(
                        not_halted <= IPI_IDLE_ROUNDS,
                        "cpu{} was found not halted {not_halted} times after its thread blocked",
                        target.0
                    );
                    settle_ns *= 2;
                    continue;
                }
                ensure!(
                    sent == 1 && got == 1,
                    "round {round}: waking a thread on idle cpu{} from cpu{} sent {sent} reschedule IPIs (avoided {avoided}) and cpu{} received {got}, expected exactly one",
                    target.0,
                    here.0,
                    target.0
                );
                sent_idle += sent;
                received_idle += got;
                break;
            }
        }
        let hog_stop = Arc::new(AtomicBool::new(false));
        let hog = {
            let stop = hog_stop.clone();
            spawn(pinned("busy-hog", target), move || {
                while !stop.load(Ordering::Relaxed) {
                    spin(1000);
                }
            })?
        };
        let busy = (|| {
            // Let the IPI that woke the idle CPU for the hog arrive before counting.
            s.sleep_ns(IPI_SETTLE_NS);
            let (sent0, avoided0, got0) =
                (s.total_counters().ipis_sent, s.total_counters().ipis_avoided, ipis_received(target));
            for round in round + 1..=round + IPI_BUSY_ROUNDS {
                s.sleep_ns(IPI_SETTLE_NS);
                r.round.store(round, Ordering::Release);
                ensure!(r.queue.wake_one(s), "round {round}: the sleeper was not waiting");
                wait_ack(&r, round)?;
            }
            let c = s.total_counters();
            Ok((c.ipis_sent - sent0, c.ipis_avoided - avoided0, ipis_received(target) - got0))
        })();
        hog_stop.store(true, Ordering::Relaxed);
        hog.join();
        let (sent_busy, avoided_busy, received_busy) = busy?;
        ensure!(
            sent_busy == 0 && received_busy == 0,
            "{IPI_BUSY_ROUNDS} wake-ups onto busy cpu{} sent {sent_busy} IPIs and it received {received_busy}, expected none",
            target.0
        );
        ensure!(
            avoided_busy == IPI_BUSY_ROUNDS,
            "{IPI_BUSY_ROUNDS} wake-ups onto a busy CPU counted {avoided_busy} avoided IPIs"
        );
        println_raw!(
            "  note: remote wake-ups: idle target {sent_idle} IPIs sent, {received_idle} received for {IPI_IDLE_ROUNDS} wake-ups ({}.{:02} per wake-up; {not_halted} more found it not yet halted); busy target {sent_busy} IPIs for {IPI_BUSY_ROUNDS} wake-ups ({avoided_busy} avoided)",
            sent_idle / IPI_IDLE_ROUNDS,
            sent_idle * 100 / IPI_IDLE_ROUNDS % 100
        );
        Ok(())
    })();
    r.stop.store(true, Ordering::Release);
    r.queue.wake_all(s);
    sleeper.join();
    result
}

// ----------------------------------------------------------------------------------------------
// sched_balance_spreads_busy_threads

/// Busy threads per CPU in the balancing test.
const BALANCE_PER_CPU: usize = 4;

/// 4·N free-running threads spawned from CPU 0 on N CPUs (fork balancing places them, periodic
/// balancing corrects what it got wrong): within a few slices every CPU runs 4 ± 1 of them. Each
/// thread publishes the CPU it last ran on; the CPUs' shares are sampled once a slice, and the
/// last of several samples must be balanced. Prints the migrations it took.
fn balance_spreads_busy_threads() -> Result<(), String> {
    let (per_cpu, migrations, pulls) = busy_threads_spread(false)?;
    println_raw!(
        "  note: balance: {} busy threads from cpu0 on {} CPUs: {per_cpu:?} per CPU, {migrations} migrations ({pulls} balancing pulls)",
        per_cpu.iter().sum::<usize>(),
        per_cpu.len()
    );
    Ok(())
}

/// The same 4·N busy threads, but all created on CPU 0's queue (pinned there, each then allows
/// itself every CPU and stays where it is), so fork balancing cannot place them: idle CPUs steal
/// one each and are then busy for good, so only periodic balancing of busy queues can spread the
/// rest. Every CPU must end with 4 ± 1, and the balancing pulls must have done it.
fn balance_pulls_threads_piled_on_one_cpu() -> Result<(), String> {
    let (per_cpu, migrations, pulls) = busy_threads_spread(true)?;
    ensure!(pulls > 0, "{per_cpu:?} per CPU without a single balancing pull ({migrations} migrations)");
    println_raw!(
        "  note: balance: {} busy threads piled on cpu0, {} CPUs: {per_cpu:?} per CPU, {migrations} migrations ({pulls} balancing pulls)",
        per_cpu.iter().sum::<usize>(),
        per_cpu.len()
    );
    Ok(())
}

/// Run `BALANCE_PER_CPU` busy threads per CPU, spawned from CPU 0 (`piled`: pinned to it, each
/// releasing its pin once it runs), sample where they run once every four slices for 32 slices,
/// and require the last sample to be balanced. Returns the threads per CPU, the migrations and
/// the balancing pulls meanwhile.
fn busy_threads_spread(piled: bool) -> Result<(Vec<usize>, u64, u64), String> {
    let cpus = cpus();
    let n = cpus.len();
    let threads = BALANCE_PER_CPU * n;
    let slice_ns = sched().config().slice_ns;
    let before = sched().total_counters();
    let stop = Arc::new(AtomicBool::new(false));
    let on: Arc<[AtomicU64]> = (0..threads).map(|_| AtomicU64::new(u64::MAX)).collect();
    let (stop2, on2) = (stop.clone(), on.clone());
    let home = cpus[0];
    let spawner = spawn(pinned("balance-spawner", home), move || -> Result<Vec<Handle<()>>, String> {
        (0..threads)
            .map(|k| {
                let (stop, on) = (stop2.clone(), on2.clone());
                let builder = if piled { pinned("busy", home) } else { Builder::new("busy").stack_bytes(STACK_BYTES) };
                spawn(builder, move || {
                    if piled {
                        // Every CPU allowed: the thread stays on CPU 0's queue, now migratable.
                        let _ = sched().set_current_affinity(&[u64::MAX; smp::MAX_CPUS / 64]);
                    }
                    while !stop.load(Ordering::Relaxed) {
                        on[k].store(u64::from(percpu::cpu_index()), Ordering::Relaxed);
                        core::hint::spin_loop();
                    }
                })
            })
            .collect()
    })?;
    let handles = spawner.join().ok_or("the spawner exited")??;
    let count = |on: &[AtomicU64]| {
        let mut per_cpu = vec![0usize; n];
        for k in on.iter() {
            let c = k.load(Ordering::Relaxed) as usize;
            if let Some(i) = cpus.iter().position(|cpu| cpu.index() == c) {
                per_cpu[i] += 1;
            }
        }
        per_cpu
    };
    let mut per_cpu = Vec::new();
    for _ in 0..8 {
        sched().sleep_ns(4 * slice_ns);
        per_cpu = count(&on);
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().ok_or("a busy thread exited")?;
    }
    let delta = sched().total_counters();
    let (migrations, pulls) = (delta.migrations_in - before.migrations_in, delta.balance_pulls - before.balance_pulls);
    let how = if piled { "piled on cpu0" } else { "spawned from cpu0" };
    ensure!(
        per_cpu.iter().all(|&c| c.abs_diff(BALANCE_PER_CPU) <= 1),
        "{threads} busy threads {how} run {per_cpu:?} per CPU after 32 slices, expected {BALANCE_PER_CPU} +- 1 each ({migrations} migrations, {pulls} balancing pulls)"
    );
    Ok((per_cpu, migrations, pulls))
}

// ----------------------------------------------------------------------------------------------
// sched_affinity_moves

/// Affinity changes per thread.
const AFFINITY_ROUNDS: u64 = 2_000;

/// Threads that never block move themselves from CPU to CPU by changing their affinity (one CPU,
/// then every CPU, in turn), with the timer preempting them: after each change the CPU's own
/// per-CPU block says it is the allowed one, and it still is after a stretch of preemptible work.
/// Every round is accounted for, and every migration out of a CPU is one into another.
fn affinity_moves() -> Result<(), String> {
    let s = sched();
    let cpus = cpus();
    let n = cpus.len();
    let threads = n + 1;
    let failures = Arc::new(Failures::default());
    let before = s.total_counters();
    let mut handles = Vec::new();
    for i in 0..threads {
        let (cpus, failures) = (cpus.clone(), failures.clone());
        let builder = Builder::new("affine").stack_bytes(STACK_BYTES);
        handles.push(spawn(builder, move || {
            let mut rounds = 0u64;
            for round in 0..AFFINITY_ROUNDS {
                if round % 4 == 3 {
                    let all: Vec<u64> = (0..n.div_ceil(64))
                        .map(|w| cpus.iter().filter(|c| c.index() / 64 == w).fold(0, |m, c| m | 1 << (c.index() % 64)))
                        .collect();
                    if s.set_current_affinity(&all).is_err() {
                        failures.record(|| format!("thread {i}: every CPU refused"));
                    }
                } else {
                    let want = cpus[(i + round as usize) % n].index();
                    let mut mask = vec![0u64; want / 64 + 1];
                    mask[want / 64] = 1 << (want % 64);
                    match s.set_current_affinity(&mask) {
                        Ok(on) if on.index() == want => {}
                        other => failures.record(|| format!("thread {i}: pinned to {want}, got {other:?}")),
                    }
                    for when in ["at once", "after work"] {
                        let here = percpu::cpu_index() as usize;
                        if here != want {
                            failures.record(|| format!("thread {i}: pinned to CPU {want}, runs on {here} {when}"));
                        }
                        let mut x = round;
                        for _ in 0..2_000 {
                            x = core::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                        }
                    }
                }
                rounds += 1;
            }
            rounds
        })?);
    }
    let results = join_all(handles, 120_000 * MS, 10 * MS, |i| format!("affine {i}"))?;
    let after = s.total_counters();
    failures.check()?;
    let rounds: u64 = results.iter().sum();
    ensure!(rounds == threads as u64 * AFFINITY_ROUNDS, "{rounds} rounds done, expected {}", threads as u64 * AFFINITY_ROUNDS);
    ensure!(
        after.migrations_in == after.migrations_out,
        "the counters disagree: {} migrations in, {} out",
        after.migrations_in,
        after.migrations_out
    );
    let migrations = after.migrations_in - before.migrations_in;
    if n > 1 {
        ensure!(migrations > 0, "no migrations in {rounds} affinity changes on {n} CPUs");
    }
    println_raw!("  note: affinity moves: {threads} threads x {AFFINITY_ROUNDS} changes; {migrations} migrations");
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// idle_threads_run_on_guarded_stacks

/// What a cross-call found it interrupted: 0 no answer yet, 1 a stack with no guard page (the boot
/// stack), 2 that CPU's idle stack, 3 another guarded kernel stack (a thread was running).
const ON_NOTHING: u64 = 0;
const ON_UNGUARDED: u64 = 1;
const ON_IDLE: u64 = 2;
const ON_OTHER: u64 = 3;

/// Every CPU's idle thread runs on a guarded kernel stack: the boot CPU's on `bsp-idle` (it once
/// idled on the boot stack, which has no guard page), each AP's on its `ap-idle` stack. A
/// cross-call to a CPU runs on the stack of whatever it interrupted; an idle CPU's is its idle
/// thread's. The boot CPU is asked from CPU 1 while the test thread, the boot CPU's only work,
/// waits for the answer. A thread that blocks with nothing else to run first halts in place, on
/// its own stack, and its CPU goes over to the idle thread only when that halt ends with nothing
/// to run: so the boot CPU gets a first cross-call that ends the test thread's halt, then the one
/// that asks. A CPU that happens to run a thread when asked is asked again; every answer must be a
/// guarded stack.
fn idle_threads_run_on_guarded_stacks() -> Result<(), String> {
    let cpus = cpus();
    for (i, &cpu) in cpus.iter().enumerate() {
        let expected = if i == 0 { "bsp-idle" } else { "ap-idle" };
        let mut answers = Vec::new();
        let idle = (0..100).any(|_| {
            let found = Arc::new(AtomicU64::new(ON_NOTHING));
            let f = found.clone();
            let target = smp::CpuId::new(cpu.0).expect("an online CPU");
            let ask = move || {
                if i == 0 {
                    // Ends the halt in place of the test thread (see above); the boot CPU then
                    // switches to its idle thread, where the next call finds it.
                    crate::cpus::xcall::call(&smp::CpuSet::single(target), |_| {}, 10_000_000_000)?;
                }
                crate::cpus::xcall::call(
                    &smp::CpuSet::single(target),
                    move |_| {
                        let on = match crate::mm::stacks::running_on() {
                            None => ON_UNGUARDED,
                            Some(name) if name == expected => ON_IDLE,
                            Some(_) => ON_OTHER,
                        };
                        f.store(on, Ordering::Relaxed);
                    },
                    10_000_000_000,
                )
            };
            let asked = if i == 0 {
                // From CPU 1, while this thread (on CPU 0) blocks in the join.
                spawn(pinned("ask-cpu0", cpus[1]), ask).and_then(|h| h.join().ok_or_else(|| String::from("the asker exited")))
            } else {
                sched().sleep_ns(MS);
                Ok(ask())
            };
            let on = match asked {
                Ok(Ok(())) => found.load(Ordering::Relaxed),
                _ => ON_NOTHING,
            };
            answers.push(on);
            on == ON_IDLE || on == ON_UNGUARDED
        });
        ensure!(!answers.contains(&ON_NOTHING), "cpu{}: a cross-call got no answer ({answers:?})", cpu.0);
        ensure!(
            !answers.contains(&ON_UNGUARDED),
            "cpu{} ran on a stack without a guard page when interrupted (answers {answers:?}: 1 unguarded, 2 {expected}, 3 another kernel stack)",
            cpu.0
        );
        ensure!(idle, "cpu{} was never found idle on its {expected} stack in {} tries", cpu.0, answers.len());
    }
    Ok(())
}
