//! In-kernel benchmarks (`bench` on the command line): the scheduler's and the address spaces'
//! whole paths timed on the running kernel, printed as `kbench` lines on the serial console for
//! the host's `bench` program to merge into its report, then power off.
//!
//! First the accelerator is measured: a chain of dependent adds (`arch::probe`) with interrupts
//! off, in TSC ticks per add. About 1 on a real core (bare metal or hardware-assisted KVM); several
//! under QEMU's TCG; over a thousand under a hypervisor that emulates guest ring 0. Above
//! [`MEANINGFUL_TICKS_PER_ADD_X100`] the cycle figures say nothing about hardware and the host
//! prints only the counts, which do not depend on the accelerator.
//!
//! Rows (one CPU is the "bench CPU": the highest online one, so the main thread on CPU 0 stays out
//! of its way; "this CPU" is CPU 0):
//! - `yield_same_as`: two kernel-only threads on the bench CPU passing the turn with `yield_now`;
//!   ticks per switch (batches of [`YIELD_BATCH`] round trips). Counts: switches per yield, CR3
//!   writes per switch (0: kernel-only threads borrow the loaded tables).
//! - `yield_cross_as`: the same with each thread in its own `AddressSpace`. Counts per switch: CR3
//!   writes (1), PCID hits (the write kept the space's TLB entries), flushing CR3 writes (a PCID
//!   miss, stale or recycled slot; every write when CR3 carries no PCID) and full flushes.
//! - `preempt_timer`: two busy threads on the bench CPU, each writing the TSC to a shared word
//!   without pause; when one sees the other's mark last, the gap from that mark to its own first
//!   read is one preemption, from the timer interrupt's arrival to the resumed thread. Counts:
//!   timer interrupts per preemption. Each sample waits for a time slice (`slice-us`).
//! - `wake_cross_cpu_idle`: a thread on this CPU wakes one blocked on the bench CPU (idle) through
//!   a semaphore and waits for its answer on another; ticks per half round trip. Counts: wake-ups
//!   per half round trip, reschedule IPIs per wake-up (1: both CPUs halt while they wait, the idle
//!   poll being off for this row).
//! - `wake_cross_cpu_polling`: the same with the idle poll on (its default bound): each CPU polls
//!   its queue while it waits, so a wake-up finds it polling. Counts as above (IPIs per wake-up
//!   near 0: only the first waits, before the poll limits have grown, halt).
//! - `wake_cross_cpu_busy`: the same while a busy thread holds the bench CPU. Wake-ups never
//!   preempt in round robin, so each answer waits for the busy thread's slice to end: the row's
//!   figures are the slice, its counts the point: IPIs per wake-up onto the busy CPU (0) and back
//!   onto the idle one (1).
//! - `shootdown_remote`: unmap one page of an address space loaded on the bench CPU only (a
//!   thread of it spins there) from a kernel-only thread here: ticks per unmap. Counts: shootdown
//!   IPIs per unmap (1), pages flushed there and here per unmap (1 and 0).
//! - `shootdown_local`: the same with the space loaded on this CPU only (the unmapping thread runs
//!   in it): IPIs per unmap (0), pages flushed here per unmap (1).
//!
//! Each row stops at its sample count or at its time budget (`Sizes::row_budget_ns`), whichever
//! comes first, so an emulator on a loaded host cannot stretch the run; its `n` says how many
//! samples it got. `bench=quick` takes tiny counts and budgets: it checks the code paths.
//!
//! Protocol, one line each (medians and p99s are nearest-rank, in TSC ticks per `unit`; counts are
//! ratios with two decimals, `-` when their denominator is zero):
//! ```text
//! kbench begin quick=no cpus=2 bench_cpu=1 tsc_hz=2445417000 slice_ns=10000000 pcid=no
//! kbench accel ticks_per_add=3.52 meaningful=no
//! kbench row name=yield_same_as unit=switch n=10000 median=812.4 p99=1630.0 counts=switches_per_yield:1.00,cr3_writes_per_switch:0.00
//! kbench skip name=wake_cross_cpu_idle reason=needs 2 CPUs, 1 online
//! kbench end rows=6 skipped=1 failed=0
//! ```
//! A row that fails prints `kbench error name=... reason=...`; the kernel then exits with failure.
//!
//! Counting windows: each row brackets its measured operations with `arch::marker` NOPs, one tag
//! per row and side, for the host's instruction counter (a QEMU TCG plugin). After its `row`
//! line a row prints one line per window tag: the side it covers, what one operation is, and the
//! operations inside its windows (`windows`: one per window, as for interrupt-armed windows,
//! whose number only the counter knows):
//! ```text
//! kbench marker name=yield_same_as tag=1 side=cpu per=switch ops=200000
//! kbench marker name=preempt_timer tag=3 side=cpu per=interrupt ops=windows
//! ```
//!
//! Neighbours: `task` (the scheduler and its counters), `vm::space` (address spaces, `spawn_in`),
//! `tlb` (per-CPU TLB counters), `percpu`/`cpu::map` (timer interrupt counts), `time` (TSC rate),
//! `arch::tsc` and `arch::probe` (the timed instructions), `power` (the exit).

use alloc::{format, string::String, sync::Arc, vec::Vec};
use core::{
    fmt,
    sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
};

use sched::{Builder, CpuIndex, Semaphore};
use smp::CpuId;

use crate::{cpu::power, println_raw, task::sched, time, vm::{space::{self, AddressSpace}, tlb}};

/// Sample counts and time budget of one run.
#[derive(Clone, Copy)]
struct Sizes {
    /// Samples of the yield, idle wake-up and shootdown rows.
    samples: usize,
    /// Unmeasured turns before those samples (caches, steady state).
    warmup: usize,
    /// Preemption samples; each waits for a time slice.
    preemptions: usize,
    /// Round trips onto a busy CPU; each waits for the busy thread's slice.
    busy_round_trips: usize,
    /// The most one row may take: a row stops sampling at its budget, whatever its count, so a
    /// slow emulator (or a loaded host under it) cannot stretch the run. The warm-up gets a tenth.
    row_budget_ns: u64,
}

/// `bench`: stable medians; at most seven budgets, about a minute and a half, under any accelerator.
const FULL: Sizes =
    Sizes { samples: 10_000, warmup: 1_000, preemptions: 1_000, busy_round_trips: 200, row_budget_ns: 12_000_000_000 };
/// `bench=quick`: every row's code path, in seconds.
const QUICK: Sizes = Sizes { samples: 100, warmup: 10, preemptions: 20, busy_round_trips: 5, row_budget_ns: 2_000_000_000 };

/// When a row's warm-up and its sampling must end.
#[derive(Clone, Copy)]
struct Budget {
    warm_until_ns: u64,
    until_ns: u64,
}

impl Budget {
    fn start(sizes: Sizes) -> Budget {
        let now = time::now_ns();
        Budget { warm_until_ns: now + sizes.row_budget_ns / 10, until_ns: now + sizes.row_budget_ns }
    }

    /// Whether the warm-up may go on.
    fn warming(&self) -> bool {
        time::now_ns() < self.warm_until_ns
    }

    /// Whether sampling may go on.
    fn left(&self) -> bool {
        time::now_ns() < self.until_ns
    }
}

/// Round trips per sample of the yield rows (two switches each).
const YIELD_BATCH: u64 = 10;
/// The accelerator probe: the cheapest of this many runs of [`CALIBRATION_ADDS`] adds.
const CALIBRATION_TRIALS: usize = 5;
const CALIBRATION_ADDS: u64 = 200_000;
/// Cycle figures count as meaningful up to this many TSC ticks per dependent add, in hundredths:
/// a real core needs about one (less under turbo, more when clocked below the TSC's rate).
const MEANINGFUL_TICKS_PER_ADD_X100: u64 = 200;
/// Counting window tags (`arch::marker`), one per row and side.
mod tag {
    pub const YIELD_SAME_AS: u16 = 1;
    pub const YIELD_CROSS_AS: u16 = 2;
    /// Armed: each timer interrupt on the bench CPU, up to the resumed thread.
    pub const PREEMPT_TIMER: u16 = 3;
    pub const WAKE_IDLE_SENDER: u16 = 4;
    pub const WAKE_IDLE_RECEIVER: u16 = 5;
    pub const WAKE_BUSY_SENDER: u16 = 6;
    pub const SHOOTDOWN_REMOTE: u16 = 7;
    /// Armed: each interrupt on the CPU that has the space loaded (the shootdown IPI).
    pub const SHOOTDOWN_REMOTE_TARGET: u16 = 8;
    pub const SHOOTDOWN_LOCAL: u16 = 9;
    pub const WAKE_POLL_SENDER: u16 = 10;
    pub const WAKE_POLL_RECEIVER: u16 = 11;
}

/// The page the shootdown rows map and unmap (any page-aligned user-half address).
const SHOOTDOWN_VA: u64 = 0x1000_0000;

/// A TSC read ordered after every earlier instruction and before every later one (`lfence; rdtsc;
/// lfence`), at both ends of a timed region: QEMU's default CPU model has no RDTSCP, which
/// `arch::tsc::end` uses.
fn stamp() -> u64 {
    arch::tsc::start()
}

/// `num / den` printed with two decimals, or `-` when `den` is zero.
#[derive(Clone, Copy)]
struct Ratio {
    num: u64,
    den: u64,
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 0 {
            return f.write_str("-");
        }
        let x100 = (u128::from(self.num) * 100 + u128::from(self.den) / 2) / u128::from(self.den);
        write!(f, "{}.{:02}", x100 / 100, x100 % 100)
    }
}

fn ratio(num: u64, den: u64) -> Ratio {
    Ratio { num, den }
}

/// `ticks / ops` with one decimal, rounded to nearest.
struct Tenths(u128);

impl Tenths {
    fn of(ticks: u64, ops: u64) -> Tenths {
        Tenths((u128::from(ticks) * 10 + u128::from(ops) / 2) / u128::from(ops.max(1)))
    }
}

impl fmt::Display for Tenths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0 / 10, self.0 % 10)
    }
}

/// One measured row: every sample covers `ops_per_sample` operations of `unit`.
struct Row {
    unit: &'static str,
    ops_per_sample: u64,
    samples_ticks: Vec<u64>,
    counts: Vec<(&'static str, Ratio)>,
    /// The row's counting windows.
    markers: Vec<Windows>,
}

/// One tag's counting windows in a row: which side of the operation they cover (`cpu` where
/// there is one), what one operation is, and how many they hold (`None`: one per window).
struct Windows {
    tag: u16,
    side: &'static str,
    per: &'static str,
    ops: Option<u64>,
}

impl Windows {
    fn new(tag: u16, side: &'static str, per: &'static str, ops: Option<u64>) -> Windows {
        Windows { tag, side, per, ops }
    }
}

impl Row {
    /// Print the row's `kbench row` line under `name`.
    ///
    /// # Panics
    /// Without samples (`run` checks first).
    fn print(mut self, name: &str) {
        assert!(!self.samples_ticks.is_empty(), "row {name} has no samples");
        self.samples_ticks.sort_unstable();
        let n = self.samples_ticks.len();
        let rank = |pct: usize| self.samples_ticks[(pct * n).div_ceil(100).clamp(1, n) - 1];
        let mut counts = String::new();
        for (i, (count, value)) in self.counts.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            counts.push_str(&format!("{sep}{count}:{value}"));
        }
        println_raw!(
            "kbench row name={name} unit={} n={n} median={} p99={} counts={counts}",
            self.unit,
            Tenths::of(rank(50), self.ops_per_sample),
            Tenths::of(rank(99), self.ops_per_sample),
        );
        for Windows { tag, side, per, ops } in &self.markers {
            match ops {
                Some(ops) => println_raw!("kbench marker name={name} tag={tag} side={side} per={per} ops={ops}"),
                None => println_raw!("kbench marker name={name} tag={tag} side={side} per={per} ops=windows"),
            }
        }
    }
}

/// Why a row produced no figures.
enum Missing {
    /// The machine cannot run it (too few CPUs).
    Skip(String),
    /// It ran and something went wrong.
    Error(String),
}

type RowResult = Result<Row, Missing>;

/// Where the rows run.
#[derive(Clone, Copy)]
struct Cpus {
    /// CPU 0, where the main thread (and so the waker and unmapper) runs.
    here: CpuId,
    /// The highest online CPU, or CPU 0 on a one-CPU machine.
    bench: CpuId,
}

impl Cpus {
    /// Rows that cross CPUs are skipped on a one-CPU machine.
    fn needs_two(&self) -> Result<(), Missing> {
        if self.here != self.bench {
            Ok(())
        } else {
            Err(Missing::Skip(format!("needs 2 CPUs, {} online", crate::cpu::map::nr_online())))
        }
    }
}

fn index(cpu: CpuId) -> CpuIndex {
    CpuIndex(cpu.get())
}

fn pinned(name: &'static str, cpu: CpuId) -> Builder {
    Builder::new(name).pinned(index(cpu))
}

fn spawn_failed(e: sched::SpawnError) -> Missing {
    Missing::Error(format!("spawning a thread failed: {e:?}"))
}

fn joined<T>(value: Option<T>) -> Result<T, Missing> {
    value.ok_or_else(|| Missing::Error(String::from("a benchmark thread exited without its result")))
}

/// Measures one row on `Cpus` within the budget of `Sizes`.
type Measure = fn(Cpus, Sizes) -> RowResult;

/// Every row, in the order they run and print.
const ROWS: [(&str, Measure); 8] = [
    ("yield_same_as", yield_same_as),
    ("yield_cross_as", yield_cross_as),
    ("preempt_timer", preempt_timer),
    ("wake_cross_cpu_idle", wake_cross_cpu_idle),
    ("wake_cross_cpu_polling", wake_cross_cpu_polling),
    ("wake_cross_cpu_busy", wake_cross_cpu_busy),
    ("shootdown_remote", shootdown_remote),
    ("shootdown_local", shootdown_local),
];

/// Run every benchmark, print the lines, and power off (with failure if a row failed). Called by
/// the main thread, pinned to CPU 0, with nothing else running.
pub fn run(quick: bool) -> ! {
    let sizes = if quick { QUICK } else { FULL };
    let online = crate::cpu::map::online();
    let here = CpuId::BSP;
    let bench = online.iter().filter(|c| c.index() < sched().nr_cpus()).max().unwrap_or(here);
    let cpus = Cpus { here, bench };
    println_raw!(
        "kbench begin quick={} cpus={} bench_cpu={} tsc_hz={} slice_ns={} pcid={}",
        if quick { "yes" } else { "no" },
        online.len(),
        bench.get(),
        time::tsc_hz(),
        sched().config().slice_ns,
        if tlb::pcid_enabled() { "yes" } else { "no" },
    );
    let ticks_per_add_x100 = ticks_per_add_x100();
    println_raw!(
        "kbench accel ticks_per_add={} meaningful={}",
        ratio(ticks_per_add_x100, 100),
        if ticks_per_add_x100 <= MEANINGFUL_TICKS_PER_ADD_X100 { "yes" } else { "no" }
    );
    let (mut printed, mut skipped, mut failed) = (0, 0, 0);
    for (name, measure) in ROWS {
        match measure(cpus, sizes) {
            Ok(row) if !row.samples_ticks.is_empty() => {
                row.print(name);
                printed += 1;
            }
            Ok(_) => {
                println_raw!("kbench error name={name} reason=no sample within the row's time budget");
                failed += 1;
            }
            Err(Missing::Skip(reason)) => {
                println_raw!("kbench skip name={name} reason={reason}");
                skipped += 1;
            }
            Err(Missing::Error(reason)) => {
                println_raw!("kbench error name={name} reason={reason}");
                failed += 1;
            }
        }
    }
    println_raw!("kbench end rows={printed} skipped={skipped} failed={failed}");
    power::exit(if failed == 0 { power::Exit::Success } else { power::Exit::Failure })
}

/// TSC ticks per dependent add, in hundredths: the cheapest of a few runs, each with interrupts
/// off so that no handler lands inside it.
fn ticks_per_add_x100() -> u64 {
    (0..CALIBRATION_TRIALS)
        .map(|_| {
            arch::interrupts::without_interrupts(|| {
                let t0 = stamp();
                core::hint::black_box(arch::probe::dependent_adds(CALIBRATION_ADDS, t0));
                stamp() - t0
            })
        })
        .min()
        .map_or(0, |ticks| (u128::from(ticks) * 100 / u128::from(CALIBRATION_ADDS)) as u64)
}

/// What one CPU's scheduler counters did between two snapshots.
#[derive(Clone, Copy)]
struct SchedDelta {
    before: sched::Counters,
    after: sched::Counters,
}

impl SchedDelta {
    fn of(&self, counter: fn(&sched::Counters) -> u64) -> u64 {
        counter(&self.after).wrapping_sub(counter(&self.before))
    }
}

/// What the timing thread of a yield pair reports: its samples and the bench CPU's counters just
/// before and after them (only the pair ran there in between).
struct YieldRun {
    samples_ticks: Vec<u64>,
    sched: SchedDelta,
    tlb: tlb::TlbCounters,
}

/// Two threads on the bench CPU passing the turn with `yield_now`, in `spaces` if given (one each).
fn yield_pair<const TAG: u16>(
    cpus: Cpus,
    sizes: Sizes,
    spaces: Option<[Arc<AddressSpace>; 2]>,
) -> Result<YieldRun, Missing> {
    let s = sched();
    let cpu = cpus.bench;
    let budget = Budget::start(sizes);
    let partner_started = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let partner = {
        let (started, done) = (partner_started.clone(), done.clone());
        move || {
            started.store(true, Ordering::Release);
            while !done.load(Ordering::Acquire) {
                sched().yield_now();
            }
        }
    };
    let timer = move || {
        let s = sched();
        while !partner_started.load(Ordering::Acquire) {
            s.yield_now();
        }
        let round_trips = || {
            for _ in 0..YIELD_BATCH {
                s.yield_now();
            }
        };
        for _ in 0..sizes.warmup {
            if !budget.warming() {
                break;
            }
            round_trips();
        }
        let mut samples_ticks = Vec::with_capacity(sizes.samples);
        let (sched_before, tlb_before) = (s.counters(index(cpu)), tlb::counters(cpu));
        while samples_ticks.len() < sizes.samples && budget.left() {
            let t0 = stamp();
            arch::marker::begin::<TAG>();
            round_trips();
            arch::marker::end::<TAG>();
            samples_ticks.push(stamp() - t0);
        }
        let (sched_after, tlb_after) = (s.counters(index(cpu)), tlb::counters(cpu));
        done.store(true, Ordering::Release);
        YieldRun {
            samples_ticks,
            sched: SchedDelta { before: sched_before, after: sched_after },
            tlb: tlb_after.since(&tlb_before),
        }
    };
    let (partner, timer) = match &spaces {
        None => (
            s.spawn(pinned("kbench-yield-b", cpu), partner).map_err(spawn_failed)?,
            s.spawn(pinned("kbench-yield-a", cpu), timer).map_err(spawn_failed)?,
        ),
        Some([a, b]) => (
            space::spawn_in(b, pinned("kbench-yield-b", cpu), partner).map_err(spawn_failed)?,
            space::spawn_in(a, pinned("kbench-yield-a", cpu), timer).map_err(spawn_failed)?,
        ),
    };
    let run = joined(timer.join())?;
    joined(partner.join())?;
    Ok(run)
}

fn yield_same_as(cpus: Cpus, sizes: Sizes) -> RowResult {
    let run = yield_pair::<{ tag::YIELD_SAME_AS }>(cpus, sizes, None)?;
    let switches = run.sched.of(|c| c.context_switches);
    let ops = 2 * YIELD_BATCH * run.samples_ticks.len() as u64;
    Ok(Row {
        markers: alloc::vec![Windows::new(tag::YIELD_SAME_AS, "cpu", "switch", Some(ops))],
        unit: "switch",
        ops_per_sample: 2 * YIELD_BATCH,
        samples_ticks: run.samples_ticks,
        counts: alloc::vec![
            ("switches_per_yield", ratio(switches, run.sched.of(|c| c.voluntary_yields))),
            ("cr3_writes_per_switch", ratio(run.tlb.cr3_writes, switches)),
        ],
    })
}

fn new_space() -> Result<Arc<AddressSpace>, Missing> {
    AddressSpace::new().map_err(|e| Missing::Error(format!("a new address space: {e}")))
}

fn yield_cross_as(cpus: Cpus, sizes: Sizes) -> RowResult {
    let run = yield_pair::<{ tag::YIELD_CROSS_AS }>(cpus, sizes, Some([new_space()?, new_space()?]))?;
    let switches = run.sched.of(|c| c.context_switches);
    let per_switch = |n: u64| ratio(n, switches);
    let t = &run.tlb;
    let ops = 2 * YIELD_BATCH * run.samples_ticks.len() as u64;
    Ok(Row {
        markers: alloc::vec![Windows::new(tag::YIELD_CROSS_AS, "cpu", "switch", Some(ops))],
        unit: "switch",
        ops_per_sample: 2 * YIELD_BATCH,
        samples_ticks: run.samples_ticks,
        counts: alloc::vec![
            ("switches_per_yield", ratio(switches, run.sched.of(|c| c.voluntary_yields))),
            ("cr3_writes_per_switch", per_switch(t.cr3_writes)),
            ("pcid_hits_per_switch", per_switch(t.pcid_hits)),
            // Without PCIDs every CR3 write drops the TLB: the one-slot table counts a recycle.
            ("flushing_cr3_writes_per_switch", per_switch(t.pcid_misses + t.pcid_recycles + t.pcid_stale)),
            ("full_flushes_per_switch", per_switch(t.full_flushes)),
        ],
    })
}

/// What the two busy threads of the preemption row share.
struct PreemptWatch {
    /// The last TSC read by either thread, shifted left by one, with the reader's id (0 or 1) in
    /// bit 0; 0 before the first read.
    last_mark: AtomicU64,
    /// Gaps recorded so far by both threads.
    recorded: AtomicUsize,
    /// The bench CPU's timer interrupts and preemptions when the first gap was recorded, and when
    /// the latest one was.
    first: [AtomicU64; 2],
    latest: [AtomicU64; 2],
}

impl PreemptWatch {
    fn snapshot(cpu: CpuId, into: &[AtomicU64; 2]) {
        let timer_interrupts =
            crate::cpu::map::percpu_of(cpu).map_or(0, |p| p.counters.timer_interrupts.load(Ordering::Relaxed));
        into[0].store(timer_interrupts, Ordering::Relaxed);
        into[1].store(sched().counters(index(cpu)).preemptions, Ordering::Relaxed);
    }

    /// Busy loop of thread `id` until `wanted` gaps are recorded or the budget is spent; returns
    /// the gaps it saw, in TSC ticks from the other thread's last mark to its own first read
    /// after resuming.
    fn spin(&self, id: u64, cpu: CpuId, wanted: usize, budget: Budget) -> Vec<u64> {
        let mut gaps = Vec::with_capacity(wanted);
        let mut ran_before = false;
        while self.recorded.load(Ordering::Relaxed) < wanted && budget.left() {
            arch::marker::arm::<{ tag::PREEMPT_TIMER }>();
            let now = arch::tsc::read();
            let mark = self.last_mark.load(Ordering::Relaxed);
            self.last_mark.store((now << 1) | id, Ordering::Relaxed);
            // The other thread's mark is the newest: it ran since our last read, so we were
            // preempted and have just resumed. Our own first turn resumes nothing.
            if ran_before && mark != 0 && mark & 1 != id {
                let seq = self.recorded.fetch_add(1, Ordering::Relaxed);
                if seq < wanted {
                    gaps.push(now.wrapping_sub(mark >> 1));
                    Self::snapshot(cpu, if seq == 0 { &self.first } else { &self.latest });
                }
            }
            ran_before = true;
        }
        // Disarm, if this thread armed at all (it may find the row done before its first turn).
        if ran_before {
            arch::marker::end::<{ tag::PREEMPT_TIMER }>();
        }
        gaps
    }
}

fn preempt_timer(cpus: Cpus, sizes: Sizes) -> RowResult {
    let s = sched();
    let cpu = cpus.bench;
    let budget = Budget::start(sizes);
    let watch = Arc::new(PreemptWatch {
        last_mark: AtomicU64::new(0),
        recorded: AtomicUsize::new(0),
        first: [AtomicU64::new(0), AtomicU64::new(0)],
        latest: [AtomicU64::new(0), AtomicU64::new(0)],
    });
    let spawn = |name, id| {
        let watch = watch.clone();
        s.spawn(pinned(name, cpu), move || watch.spin(id, cpu, sizes.preemptions, budget)).map_err(spawn_failed)
    };
    let a = spawn("kbench-busy-a", 0)?;
    let b = spawn("kbench-busy-b", 1)?;
    let mut samples_ticks = joined(a.join())?;
    samples_ticks.extend(joined(b.join())?);
    let delta =
        |i: usize| watch.latest[i].load(Ordering::Relaxed).wrapping_sub(watch.first[i].load(Ordering::Relaxed));
    let counted = samples_ticks.len() > 1;
    Ok(Row {
        markers: alloc::vec![Windows::new(tag::PREEMPT_TIMER, "cpu", "interrupt", None)],
        unit: "preemption",
        ops_per_sample: 1,
        samples_ticks,
        counts: alloc::vec![(
            "timer_interrupts_per_preemption",
            if counted { ratio(delta(0), delta(1)) } else { ratio(0, 0) }
        )],
    })
}

/// The waker's view of a semaphore ping-pong: its samples (one round trip each) and the
/// scheduler counters of both CPUs over them.
struct PingPong {
    samples_ticks: Vec<u64>,
    here: SchedDelta,
    there: SchedDelta,
}

/// A thread on this CPU wakes one on the bench CPU and waits for its answer, up to `round_trips`
/// times after up to `warmup` unmeasured ones, while with `busy` a spinning thread holds the
/// bench CPU.
fn ping_pong<const SENDER: u16, const RECEIVER: u16>(
    cpus: Cpus,
    sizes: Sizes,
    warmup: usize,
    round_trips: usize,
    busy: bool,
) -> Result<PingPong, Missing> {
    cpus.needs_two()?;
    let s = sched();
    let budget = Budget::start(sizes);
    let ping = Arc::new(Semaphore::new(0));
    let pong = Arc::new(Semaphore::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let hog = if busy {
        let stop = stop.clone();
        let spinner = move || {
            while !stop.load(Ordering::Acquire) {
                core::hint::spin_loop();
            }
        };
        Some(s.spawn(pinned("kbench-hog", cpus.bench), spinner).map_err(spawn_failed)?)
    } else {
        None
    };
    let answerer = {
        let (ping, pong, stop) = (ping.clone(), pong.clone(), stop.clone());
        s.spawn(pinned("kbench-answer", cpus.bench), move || {
            // With a RECEIVER tag (0: none), each round trip here is a counting window, from
            // waiting for the ping to having answered it; the last one, which wakes for `stop`,
            // closes unanswered.
            loop {
                if RECEIVER != 0 {
                    arch::marker::begin::<RECEIVER>();
                }
                ping.acquire(sched());
                if stop.load(Ordering::Acquire) {
                    if RECEIVER != 0 {
                        arch::marker::end::<RECEIVER>();
                    }
                    break;
                }
                pong.release(sched());
                if RECEIVER != 0 {
                    arch::marker::end::<RECEIVER>();
                }
            }
        })
        .map_err(spawn_failed)?
    };
    let waker = {
        let stop = stop.clone();
        s.spawn(pinned("kbench-wake", cpus.here), move || {
            let s = sched();
            let round_trip = || {
                ping.release(s);
                pong.acquire(s);
            };
            for _ in 0..warmup {
                if !budget.warming() {
                    break;
                }
                round_trip();
            }
            let counters = || (s.counters(index(cpus.here)), s.counters(index(cpus.bench)));
            let mut samples_ticks = Vec::with_capacity(round_trips);
            let (here_before, there_before) = counters();
            while samples_ticks.len() < round_trips && budget.left() {
                let t0 = stamp();
                arch::marker::begin::<SENDER>();
                round_trip();
                arch::marker::end::<SENDER>();
                samples_ticks.push(stamp() - t0);
            }
            let (here_after, there_after) = counters();
            // Let the answerer go: it takes this permit, sees `stop` and returns.
            stop.store(true, Ordering::Release);
            ping.release(s);
            PingPong {
                samples_ticks,
                here: SchedDelta { before: here_before, after: here_after },
                there: SchedDelta { before: there_before, after: there_after },
            }
        })
        .map_err(spawn_failed)?
    };
    let run = joined(waker.join())?;
    joined(answerer.join())?;
    if let Some(hog) = hog {
        joined(hog.join())?;
    }
    Ok(run)
}

fn wake_cross_cpu_idle(cpus: Cpus, sizes: Sizes) -> RowResult {
    // The halt and its IPI are this row's subject: no poll before the halts.
    with_idle_poll(0, || {
        wake_row::<{ tag::WAKE_IDLE_SENDER }, { tag::WAKE_IDLE_RECEIVER }>(cpus, sizes)
    })
}

fn wake_cross_cpu_polling(cpus: Cpus, sizes: Sizes) -> RowResult {
    with_idle_poll(sched::Config::DEFAULT_IDLE_POLL_NS, || {
        wake_row::<{ tag::WAKE_POLL_SENDER }, { tag::WAKE_POLL_RECEIVER }>(cpus, sizes)
    })
}

/// Run `f` with the idle poll's bound at `ns`, then put the bound back as it was.
fn with_idle_poll<R>(ns: u64, f: impl FnOnce() -> R) -> R {
    let s = sched();
    let was = s.idle_poll_ns();
    s.set_idle_poll_ns(ns);
    let r = f();
    s.set_idle_poll_ns(was);
    r
}

/// The two idle-target wake-up rows: the semaphore ping-pong with both CPUs otherwise idle.
fn wake_row<const SENDER: u16, const RECEIVER: u16>(cpus: Cpus, sizes: Sizes) -> RowResult {
    let run = ping_pong::<SENDER, RECEIVER>(cpus, sizes, sizes.warmup, sizes.samples, false)?;
    let wakeups = run.here.of(|c| c.wakeups) + run.there.of(|c| c.wakeups);
    let ipis = run.here.of(|c| c.ipis_sent) + run.there.of(|c| c.ipis_sent);
    let half_round_trips = 2 * run.samples_ticks.len() as u64;
    Ok(Row {
        // The receiver's windows run from waiting for a ping to having answered it: one round
        // trip each, warm-up included.
        markers: alloc::vec![
            Windows::new(SENDER, "sender", "half_round_trip", Some(half_round_trips)),
            Windows::new(RECEIVER, "receiver", "round_trip", None)
        ],
        unit: "half_round_trip",
        ops_per_sample: 2,
        samples_ticks: run.samples_ticks,
        counts: alloc::vec![
            ("wakeups_per_half_round_trip", ratio(wakeups, half_round_trips)),
            ("ipis_per_wakeup", ratio(ipis, wakeups)),
        ],
    })
}

fn wake_cross_cpu_busy(cpus: Cpus, sizes: Sizes) -> RowResult {
    let run = ping_pong::<{ tag::WAKE_BUSY_SENDER }, 0>(cpus, sizes, 1, sizes.busy_round_trips, true)?;
    let (here, there) = (run.here, run.there);
    let half_round_trips = 2 * run.samples_ticks.len() as u64;
    Ok(Row {
        markers: alloc::vec![Windows::new(tag::WAKE_BUSY_SENDER, "sender", "half_round_trip", Some(half_round_trips))],
        unit: "half_round_trip",
        ops_per_sample: 2,
        samples_ticks: run.samples_ticks,
        counts: alloc::vec![
            ("ipis_per_wakeup_onto_busy", ratio(here.of(|c| c.ipis_sent), here.of(|c| c.wakeups))),
            ("ipis_per_wakeup_onto_idle", ratio(there.of(|c| c.ipis_sent), there.of(|c| c.wakeups))),
        ],
    })
}

/// Map and unmap the page at [`SHOOTDOWN_VA`] of `space` again and again, timing each unmap
/// after the warm-up; returns the samples and the TLB counters of this CPU and the bench CPU over
/// them.
fn map_unmap<const TAG: u16>(
    space: &AddressSpace,
    cpus: Cpus,
    sizes: Sizes,
) -> Result<(Vec<u64>, [tlb::TlbCounters; 2]), String> {
    let budget = Budget::start(sizes);
    let counters = || [tlb::counters(cpus.here), tlb::counters(cpus.bench)];
    let turn = |counted: bool| -> Result<u64, String> {
        space.map_range(SHOOTDOWN_VA, 1, true).map_err(|e| format!("map: {e}"))?;
        let t0 = stamp();
        if counted {
            arch::marker::begin::<TAG>();
        }
        let unmapped = space.unmap(SHOOTDOWN_VA, 1);
        if counted {
            arch::marker::end::<TAG>();
        }
        let t1 = stamp();
        unmapped.map_err(|e| format!("unmap: {e}"))?;
        Ok(t1 - t0)
    };
    for _ in 0..sizes.warmup {
        if !budget.warming() {
            break;
        }
        turn(false)?;
    }
    let mut samples_ticks = Vec::with_capacity(sizes.samples);
    let before = counters();
    while samples_ticks.len() < sizes.samples && budget.left() {
        samples_ticks.push(turn(true)?);
    }
    let after = counters();
    Ok((samples_ticks, [after[0].since(&before[0]), after[1].since(&before[1])]))
}

fn shootdown_remote(cpus: Cpus, sizes: Sizes) -> RowResult {
    cpus.needs_two()?;
    let space = new_space()?;
    let running = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let spinner = {
        let (running, stop) = (running.clone(), stop.clone());
        space::spawn_in(&space, pinned("kbench-in-space", cpus.bench), move || {
            running.store(true, Ordering::Release);
            while !stop.load(Ordering::Acquire) {
                arch::marker::arm::<{ tag::SHOOTDOWN_REMOTE_TARGET }>();
                core::hint::spin_loop();
            }
            arch::marker::end::<{ tag::SHOOTDOWN_REMOTE_TARGET }>();
        })
        .map_err(spawn_failed)?
    };
    while !running.load(Ordering::Acquire) {
        sched().yield_now();
    }
    // This kernel-only thread never loads the space: only the bench CPU has it.
    let measured = map_unmap::<{ tag::SHOOTDOWN_REMOTE }>(&space, cpus, sizes);
    stop.store(true, Ordering::Release);
    joined(spinner.join())?;
    let (samples_ticks, [here, there]) = measured.map_err(Missing::Error)?;
    let n = samples_ticks.len() as u64;
    Ok(Row {
        // The target's windows: every interrupt it takes while its thread spins, from the entry
        // to the resumed spin (shootdown IPIs of the warm-up included, and any timer tick).
        markers: alloc::vec![
            Windows::new(tag::SHOOTDOWN_REMOTE, "initiator", "unmap", Some(n)),
            Windows::new(tag::SHOOTDOWN_REMOTE_TARGET, "target", "interrupt", None)
        ],
        unit: "unmap",
        ops_per_sample: 1,
        samples_ticks,
        counts: alloc::vec![
            ("ipis_per_unmap", ratio(here.ipis_sent, n)),
            ("remote_page_flushes_per_unmap", ratio(there.page_flushes, n)),
            ("local_flushes_per_unmap", ratio(here.page_flushes + here.full_flushes, n)),
        ],
    })
}

fn shootdown_local(cpus: Cpus, sizes: Sizes) -> RowResult {
    let space = new_space()?;
    let unmapper = {
        let in_thread = space.clone();
        space::spawn_in(&space, pinned("kbench-unmap", cpus.here), move || {
            map_unmap::<{ tag::SHOOTDOWN_LOCAL }>(&in_thread, cpus, sizes)
        })
            .map_err(spawn_failed)?
    };
    let (samples_ticks, [here, _]) = joined(unmapper.join())?.map_err(Missing::Error)?;
    let n = samples_ticks.len() as u64;
    Ok(Row {
        markers: alloc::vec![Windows::new(tag::SHOOTDOWN_LOCAL, "cpu", "unmap", Some(n))],
        unit: "unmap",
        ops_per_sample: 1,
        samples_ticks,
        counts: alloc::vec![
            ("ipis_per_unmap", ratio(here.ipis_sent, n)),
            ("local_page_flushes_per_unmap", ratio(here.page_flushes, n)),
            ("local_full_flushes_per_unmap", ratio(here.full_flushes, n)),
        ],
    })
}
