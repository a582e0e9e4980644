//! In-kernel tests of address spaces: no stale translation survives a change, spaces never see each
//! other's pages with more spaces than PCID slots, a change on a space loaded on one CPU sends no
//! IPI, and destroying a space gives every frame back.
//!
//! Neighbours: `space` (under test, through its public API and the tracker of a space), `tlb` (its
//! counters), `task` (spawning pinned threads), `mm::frames` (frame counts).

use alloc::{collections::VecDeque, format, string::String, sync::Arc, vec::Vec};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sched::{Builder, CpuIndex};
use smp::{CpuId, CpuSet};

use super::{AddressSpace, AsError, PAGE, USER_END, USER_START, spawn_in};
use crate::{ensure, mm, println_raw, task::sched, testing::{Failures, Test}, time, vm::tlb};

crate::register_tests![
    Test { name: "tlb_torture", min_cpus: 1, expect_fault: false, run: tlb_torture },
    Test { name: "aspace_more_than_slots", min_cpus: 1, expect_fault: false, run: aspace_more_than_slots },
    Test { name: "aspace_local_unmap_no_ipi", min_cpus: 2, expect_fault: false, run: aspace_local_unmap_no_ipi },
    Test { name: "aspace_destroy_returns_frames", min_cpus: 1, expect_fault: false, run: aspace_destroy_returns_frames },
    Test { name: "aspace_api_contract", min_cpus: 1, expect_fault: false, run: aspace_api_contract },
    Test { name: "aspace_map_user_filled_is_whole", min_cpus: 1, expect_fault: false, run: aspace_map_user_filled_is_whole },
    Test { name: "xcall_while_stack_freed", min_cpus: 2, expect_fault: false, run: xcall_while_stack_freed },
    Test { name: "aspace_threads_own_their_space", min_cpus: 2, expect_fault: false, run: aspace_threads_own_their_space },
    Test { name: "kernel_remap_seen_by_other_cpu", min_cpus: 2, expect_fault: false, run: kernel_remap_seen_by_other_cpu },
    Test { name: "aspace_idle_cpu_spared", min_cpus: 2, expect_fault: false, run: aspace_idle_cpu_spared },
    Test { name: "aspace_fork_cow_shares_then_copies", min_cpus: 1, expect_fault: false, run: aspace_fork_cow_shares_then_copies },
    Test { name: "aspace_fork_keeps_shared_ranges_shared", min_cpus: 1, expect_fault: false, run: aspace_fork_keeps_shared_ranges_shared },
];

fn pinned(name: &'static str, cpu: CpuId) -> Builder {
    Builder::new(name).pinned(CpuIndex(cpu.index() as u32))
}

fn online() -> (CpuSet, Vec<CpuId>) {
    let set = crate::cpu::map::online();
    (set, set.iter().collect())
}

fn new_frame() -> Result<u64, String> {
    mm::frames::alloc().ok_or_else(|| String::from("out of frames"))
}

/// Write `value` into the first word of frame `pa`, through the direct map.
fn put(pa: u64, value: u64) {
    // SAFETY: `pa` is a frame the test owns (not mapped anywhere it could be read meanwhile, or
    // mapped only behind the protocol's gate), reached through the direct map.
    unsafe { (mm::phys_to_virt(pa) as *mut u64).write_volatile(value) };
}

/// Read the first word of the page at `va` in the running thread's address space.
fn read(va: u64) -> u64 {
    // SAFETY: the callers read only while their protocol guarantees `va` is mapped in the space
    // their thread runs in.
    unsafe { (va as *const u64).read_volatile() }
}


/// The page every torture reader reads.
const TORTURE_VA: u64 = 0x4000_0000;
/// A 48-page region around it, unmapped and remapped whole now and then (a full flush).
const REGION_PAGES: u64 = 48;
const REGION_VA: u64 = TORTURE_VA - 24 * PAGE;
const TORTURE_CYCLES: u64 = 10_000;
/// Frames the remap cycles rotate through: a retired frame keeps its old value this many cycles.
const POOL_FRAMES: usize = 64;
/// A reader reads this many times in a row, then sleeps `READER_PAUSE_NS`.
const READS_PER_BURST: u64 = 64;
const READER_PAUSE_NS: u64 = 2_000_000;

/// What the torture's writer publishes and its readers check against.
#[derive(Default)]
struct Torture {
    /// The value of the last change whose call returned: no read that starts later may see less.
    committed: AtomicU64,
    /// The value of the change under way: no read that ends earlier may see more.
    upper: AtomicU64,
    /// Closed while the page is unmapped; readers announce themselves in `readers_in` first.
    gate_closed: AtomicBool,
    readers_in: AtomicU64,
    stop: AtomicBool,
    failures: Failures,
}

impl Torture {
    fn close_gate(&self) {
        self.gate_closed.store(true, Ordering::SeqCst);
        while self.readers_in.load(Ordering::SeqCst) != 0 {
            sched().yield_now();
        }
    }

    fn open_gate(&self) {
        self.gate_closed.store(false, Ordering::SeqCst);
    }

    /// Reader loop: returns how many reads it made.
    fn read_until_stopped(&self, cpu: CpuId) -> u64 {
        let mut reads = 0u64;
        while !self.stop.load(Ordering::Acquire) {
            // Announce, then look at the gate: the writer closes it, then waits for no announced
            // reader, so a reader past this check reads a mapped page.
            self.readers_in.fetch_add(1, Ordering::SeqCst);
            if self.gate_closed.load(Ordering::SeqCst) {
                self.readers_in.fetch_sub(1, Ordering::SeqCst);
                sched().yield_now();
                continue;
            }
            let lowest = self.committed.load(Ordering::SeqCst);
            let seen = read(TORTURE_VA);
            let highest = self.upper.load(Ordering::SeqCst);
            self.readers_in.fetch_sub(1, Ordering::SeqCst);
            if seen < lowest || seen > highest {
                self.failures.record(|| {
                    format!("{cpu} read {seen} at {TORTURE_VA:#x} while the changes returned so far reached {lowest} and none beyond {highest} had begun")
                });
            }
            reads += 1;
            if reads.is_multiple_of(READS_PER_BURST) {
                // Halt a little: under emulation, CPUs that never halt starve each other of host
                // time and an IPI waits for its target to be scheduled. A sleeping reader's CPU
                // goes idle and leaves the space, so changes meanwhile skip it and it catches up
                // through the generation when it reads again: both paths are tortured.
                sched().sleep_ns(READER_PAUSE_NS);
            }
        }
        reads
    }
}

/// Kinds of change the writer made, counted.
#[derive(Default)]
struct Cycles {
    remaps: u64,
    unmaps: u64,
    regions: u64,
}

/// The writer: `TORTURE_CYCLES` changes of the page at `TORTURE_VA`, each publishing its cycle
/// number as the page's value. Most are remaps to a frame from the pool (the retired frame comes
/// back and keeps its old value until reused); every 8th unmaps the page and maps a new frame
/// behind the gate; every 64th unmaps and remaps the whole 48-page region (a full flush).
fn torture_writer(space: &AddressSpace, t: &Torture) -> Result<Cycles, String> {
    let mut pool = VecDeque::with_capacity(POOL_FRAMES);
    for _ in 0..POOL_FRAMES {
        pool.push_back(new_frame()?);
    }
    let mut cycles = Cycles::default();
    let result = (|| {
        for i in 1..=TORTURE_CYCLES {
            if i.is_multiple_of(64) {
                t.close_gate();
                space.unmap(REGION_VA, REGION_PAGES).map_err(|e| format!("cycle {i}: unmapping the region: {e}"))?;
                space.map_range(REGION_VA, REGION_PAGES, true).map_err(|e| format!("cycle {i}: mapping the region: {e}"))?;
                let (pa, _) = space.translate(TORTURE_VA).ok_or("the region was mapped without the page")?;
                put(pa, i);
                t.upper.store(i, Ordering::SeqCst);
                t.committed.store(i, Ordering::SeqCst);
                t.open_gate();
                cycles.regions += 1;
            } else if i.is_multiple_of(8) {
                t.close_gate();
                space.unmap(TORTURE_VA, 1).map_err(|e| format!("cycle {i}: unmap: {e}"))?;
                let frame = pool.pop_front().expect("the pool is refilled every cycle");
                put(frame, i);
                t.upper.store(i, Ordering::SeqCst);
                space.map(TORTURE_VA, frame, true).map_err(|e| format!("cycle {i}: map: {e}"))?;
                t.committed.store(i, Ordering::SeqCst);
                t.open_gate();
                pool.push_back(new_frame()?);
                cycles.unmaps += 1;
            } else {
                let frame = pool.pop_front().expect("the pool is refilled every cycle");
                put(frame, i);
                t.upper.store(i, Ordering::SeqCst);
                let old = space.remap(TORTURE_VA, frame).map_err(|e| format!("cycle {i}: remap: {e}"))?;
                t.committed.store(i, Ordering::SeqCst);
                pool.push_back(old);
                cycles.remaps += 1;
            }
            // Let the reader of this CPU in between changes.
            sched().yield_now();
        }
        Ok(())
    })();
    t.stop.store(true, Ordering::Release);
    for frame in pool {
        mm::frames::free(frame);
    }
    result.map(|()| cycles)
}

/// Readers of one address space pinned on every CPU read one page while a writer (in the same
/// space, on the last CPU) changes it 10^4 times: remaps to other frames, unmap + map behind a
/// gate, and unmaps of a 48-page region around it. Every frame holds the number of the change that
/// mapped it; a read that began after a change returned and saw an older value would have gone
/// through a stale TLB entry. Conservation afterwards: one change planned per cycle (whole-PCID
/// flushes exactly for the region's), the per-CPU counters add up to the plans', every IPI's
/// request was serviced exactly once, no more IPIs than other CPUs per change, every reader read,
/// and (with more than one CPU) IPIs were sent. Prints the counters per 10^4 changes.
fn tlb_torture() -> Result<(), String> {
    let (set, cpus) = online();
    let space = AddressSpace::new().map_err(|e| format!("new address space: {e}"))?;
    space.map_range(REGION_VA, REGION_PAGES, true).map_err(|e| format!("mapping the region: {e}"))?;
    let t = Arc::new(Torture::default());
    let before = tlb::sum(&set);
    let plans_before = super::PLAN_STATS.snapshot();
    let start_ns = time::now_ns();
    let mut readers = Vec::new();
    for &cpu in &cpus {
        let t = t.clone();
        let reader = spawn_in(&space, pinned("tlb-reader", cpu), move || t.read_until_stopped(cpu));
        readers.push((cpu, reader.map_err(|e| format!("spawning a reader: {e:?}"))?));
    }
    let writer_cpu = *cpus.last().expect("one CPU at least");
    let (s2, t2) = (space.clone(), t.clone());
    let writer = spawn_in(&space, pinned("tlb-writer", writer_cpu), move || torture_writer(&s2, &t2))
        .map_err(|e| format!("spawning the writer: {e:?}"))?;
    let cycles = writer.join().ok_or("the writer exited")?;
    t.stop.store(true, Ordering::Release);
    let mut reads = Vec::new();
    for (cpu, reader) in readers {
        reads.push((cpu, reader.join().ok_or("a reader exited")?));
    }
    let elapsed_ms = (time::now_ns() - start_ns) / 1_000_000;
    let delta = tlb::sum(&set).since(&before);
    let plans = super::PLAN_STATS.snapshot();
    let cycles = cycles?;
    t.failures.check()?;
    ensure!(
        cycles.remaps + cycles.unmaps + cycles.regions == TORTURE_CYCLES,
        "the writer made {} + {} + {} changes, expected {TORTURE_CYCLES}",
        cycles.remaps,
        cycles.unmaps,
        cycles.regions
    );
    // One change per cycle (a map only adds, needing no shootdown); only the region's is whole.
    let (ranged, full) = (plans.ranged_flushes - plans_before.ranged_flushes, plans.full_flushes - plans_before.full_flushes);
    ensure!(delta.changes == TORTURE_CYCLES, "the counters show {} changes for {TORTURE_CYCLES} cycles", delta.changes);
    ensure!(
        (ranged, full) == (cycles.remaps + cycles.unmaps, cycles.regions),
        "{ranged} ranged and {full} whole changes planned, expected {} and {}",
        cycles.remaps + cycles.unmaps,
        cycles.regions
    );
    // The per-CPU counters add up to the plans', and every IPI's request was serviced once.
    let planned = (
        plans.shootdowns - plans_before.shootdowns,
        plans.ipis_sent - plans_before.ipis_sent,
        plans.no_ipi_changes - plans_before.no_ipi_changes,
        plans.ipis_avoided_lazy - plans_before.ipis_avoided_lazy,
    );
    let counted = (delta.changes, delta.ipis_sent, delta.changes_without_ipi, delta.avoided_lazy);
    ensure!(planned == counted, "the plans count (changes, IPIs, no-IPI changes, avoided) {planned:?}, the CPUs {counted:?}");
    ensure!(delta.requests_served == delta.ipis_sent, "{} requests serviced for {} IPIs sent", delta.requests_served, delta.ipis_sent);
    let most = delta.changes * (cpus.len() as u64 - 1);
    ensure!(delta.ipis_sent <= most, "{} IPIs for {} changes on {} CPUs", delta.ipis_sent, delta.changes, cpus.len());
    for (cpu, n) in &reads {
        ensure!(*n > 0, "the reader on {cpu} never read");
    }
    if cpus.len() > 1 {
        ensure!(delta.ipis_sent > 0, "{} CPUs ran the space but no shootdown IPI was sent", cpus.len());
    }
    let per_10k = |n: u64| n * 10_000 / delta.changes.max(1);
    println_raw!(
        "note: tlb_torture on {} CPUs: {} changes ({} remaps, {} unmap+map, {} 48-page) in {elapsed_ms} ms, {} reads; per 10^4 changes: IPIs sent {}, changes without IPI {}, IPIs avoided (lazy {}, never loaded {}), ranged flushes {} pages, full flushes {}, requests served {}, CR3 writes {}",
        cpus.len(),
        delta.changes,
        cycles.remaps,
        cycles.unmaps,
        cycles.regions,
        reads.iter().map(|(_, n)| n).sum::<u64>(),
        per_10k(delta.ipis_sent),
        per_10k(delta.changes_without_ipi),
        per_10k(delta.avoided_lazy),
        per_10k(delta.avoided_never_loaded),
        per_10k(delta.page_flushes),
        per_10k(delta.full_flushes),
        per_10k(delta.requests_served),
        per_10k(delta.cr3_writes),
    );
    Ok(())
}

const SLOT_TEST_SPACES: u64 = 10;
const SLOT_TEST_VA: u64 = 0x2000_0000;
const SLOT_TEST_ROUNDS: u64 = 200;

/// Ten address spaces (more than the six PCID slots), each mapping its own frame at the same
/// address; on every CPU one thread per space reads it and yields, so each switch changes spaces.
/// Meanwhile a kernel-only thread remaps each space's page to fresh frames. A value is
/// `space << 32 | version`: a thread must see its own space's number, and a version no older than
/// the last remap of its space that returned before the read. Conservation: every thread made all
/// its reads.
fn aspace_more_than_slots() -> Result<(), String> {
    let (set, cpus) = online();
    let mut spaces = Vec::new();
    let committed: Arc<Vec<AtomicU64>> = Arc::new((0..SLOT_TEST_SPACES).map(|_| AtomicU64::new(0)).collect());
    let upper: Arc<Vec<AtomicU64>> = Arc::new((0..SLOT_TEST_SPACES).map(|_| AtomicU64::new(0)).collect());
    for k in 0..SLOT_TEST_SPACES {
        let space = AddressSpace::new().map_err(|e| format!("new address space: {e}"))?;
        let frame = new_frame()?;
        put(frame, k << 32);
        space.map(SLOT_TEST_VA, frame, false).map_err(|e| format!("map: {e}"))?;
        spaces.push(space);
    }
    let failures = Arc::new(Failures::default());
    let before = tlb::sum(&set);
    let mut readers = Vec::new();
    for &cpu in &cpus {
        for (k, space) in spaces.iter().enumerate() {
            let k = k as u64;
            let (committed, upper, failures) = (committed.clone(), upper.clone(), failures.clone());
            let reader = spawn_in(space, pinned("slot-reader", cpu), move || {
                for round in 0..SLOT_TEST_ROUNDS {
                    let lowest = committed[k as usize].load(Ordering::SeqCst);
                    let seen = read(SLOT_TEST_VA);
                    let highest = upper[k as usize].load(Ordering::SeqCst);
                    let (owner, version) = (seen >> 32, seen & 0xffff_ffff);
                    if owner != k || version < lowest || version > highest {
                        failures.record(|| {
                            format!("a thread of space {k} on {cpu} read space {owner}'s version {version} in round {round} (its space was at versions {lowest}..={highest})")
                        });
                    }
                    sched().yield_now();
                }
                SLOT_TEST_ROUNDS
            });
            readers.push(reader.map_err(|e| format!("spawning a reader: {e:?}"))?);
        }
    }
    let done = Arc::new(AtomicBool::new(false));
    let mutator = {
        let (spaces, committed, upper, done) = (spaces.clone(), committed.clone(), upper.clone(), done.clone());
        sched()
            .spawn(pinned("slot-mutator", *cpus.last().expect("one CPU at least")), move || -> Result<u64, String> {
                let mut remaps = 0;
                let mut version = 0;
                while !done.load(Ordering::Acquire) {
                    version += 1;
                    for (k, space) in spaces.iter().enumerate() {
                        let frame = new_frame()?;
                        put(frame, (k as u64) << 32 | version);
                        upper[k].store(version, Ordering::SeqCst);
                        let old = space.remap(SLOT_TEST_VA, frame).map_err(|e| format!("remap: {e}"))?;
                        committed[k].store(version, Ordering::SeqCst);
                        mm::frames::free(old);
                        remaps += 1;
                    }
                    sched().sleep_ns(1_000_000);
                }
                Ok(remaps)
            })
            .map_err(|e| format!("spawning the mutator: {e:?}"))?
    };
    let mut reads = 0;
    for reader in readers {
        reads += reader.join().ok_or("a reader exited")?;
    }
    done.store(true, Ordering::Release);
    let remaps = mutator.join().ok_or("the mutator exited")??;
    let delta = tlb::sum(&set).since(&before);
    failures.check()?;
    let expected = SLOT_TEST_ROUNDS * SLOT_TEST_SPACES * cpus.len() as u64;
    ensure!(reads == expected, "{reads} reads made, expected {expected}");
    ensure!(remaps > 0, "the mutator never remapped");
    ensure!(
        delta.pcid_recycles > 0,
        "ten spaces cycled on every CPU but no PCID slot was ever recycled ({} hits, {} misses)",
        delta.pcid_hits,
        delta.pcid_misses
    );
    Ok(())
}

const LOCAL_TEST_VA: u64 = 0x1_0000_0000;
const LOCAL_TEST_ROUNDS: u64 = 50;

/// A space whose only thread runs on one CPU: mapping, touching and unmapping pages there sends no
/// IPI at all (each change is counted as needing none). Control: once a second thread of the space
/// runs (and stays loaded) on another CPU, each unmap sends exactly one IPI.
fn aspace_local_unmap_no_ipi() -> Result<(), String> {
    let (_, cpus) = online();
    let (here, there) = (cpus[cpus.len() - 1], cpus[0]);
    let space = AddressSpace::new().map_err(|e| format!("new address space: {e}"))?;
    let churn = |space: &AddressSpace| -> Result<tlb::TlbCounters, String> {
        let me = tlb::this_cpu();
        let before = tlb::counters(me);
        for _ in 0..LOCAL_TEST_ROUNDS {
            space.map_range(LOCAL_TEST_VA, 4, true).map_err(|e| format!("map_range: {e}"))?;
            for page in 0..4 {
                let va = LOCAL_TEST_VA + page * PAGE;
                // SAFETY: just mapped, writable, in the space this thread runs in.
                unsafe { (va as *mut u64).write_volatile(page) };
            }
            space.unmap(LOCAL_TEST_VA, 4).map_err(|e| format!("unmap: {e}"))?;
        }
        Ok(tlb::counters(me).since(&before))
    };
    let s2 = space.clone();
    let alone = spawn_in(&space, pinned("local-churn", here), move || {
        let delta = churn(&s2);
        (delta, s2.space.tracker.active())
    })
    .map_err(|e| format!("spawn: {e:?}"))?
    .join()
    .ok_or("the thread exited")?;
    let (delta, active) = (alone.0?, alone.1);
    ensure!(active == CpuSet::single(here), "the space was loaded on {active} during the churn, expected {here} alone");
    ensure!(delta.changes == LOCAL_TEST_ROUNDS, "{} changes counted, expected {LOCAL_TEST_ROUNDS}", delta.changes);
    ensure!(delta.ipis_sent == 0, "{} IPIs sent for a space loaded on {here} alone", delta.ipis_sent);
    ensure!(delta.changes_without_ipi == LOCAL_TEST_ROUNDS, "{} of {LOCAL_TEST_ROUNDS} changes counted as needing no IPI", delta.changes_without_ipi);

    // Control: keep the space loaded on `there` too, by a thread that keeps running in it (a CPU
    // that halts keeps its space lazily, and a change that frees no table spares it the IPI).
    let (ready, release) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (r2, l2) = (ready.clone(), release.clone());
    let holder = spawn_in(&space, pinned("local-holder", there), move || {
        r2.store(true, Ordering::Release);
        while !l2.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
    })
    .map_err(|e| format!("spawn: {e:?}"))?;
    while !ready.load(Ordering::Acquire) {
        sched().sleep_ns(1_000_000);
    }
    let s3 = space.clone();
    let shared = spawn_in(&space, pinned("local-churn", here), move || churn(&s3))
        .map_err(|e| format!("spawn: {e:?}"))?
        .join()
        .ok_or("the thread exited")?;
    release.store(true, Ordering::Release);
    holder.join().ok_or("the holder exited")?;
    let delta = shared?;
    ensure!(delta.ipis_sent == LOCAL_TEST_ROUNDS, "{} IPIs sent for {LOCAL_TEST_ROUNDS} unmaps with the space loaded on {there} too, expected one each", delta.ipis_sent);
    ensure!(delta.changes_without_ipi == 0, "{} changes needed no IPI although {there} had the space loaded", delta.changes_without_ipi);
    Ok(())
}

/// Let threads that just ended give back their stacks (their CPUs free them at the next switch).
fn settle() {
    sched().sleep_ns(20_000_000);
}

fn free_frames() -> usize {
    // Stacks of threads that are gone stay mapped in the CPUs' caches until trimmed.
    mm::stacks::trim();
    mm::frames::stats().0
}

/// Phase 1: create a space, map pages in several page tables and PML4 slots, remap, protect and
/// unmap some, drop it: the free-frame count is back where it started. Phase 2: a space whose
/// threads ran on every CPU, whose CPUs then went idle keeping it loaded: dropping it frees
/// exactly its pages, their tables and its PML4, each CPU that kept it leaves it, and each of its
/// frames is free again.
fn aspace_destroy_returns_frames() -> Result<(), String> {
    settle();
    let start = free_frames();
    {
        let space = AddressSpace::new().map_err(|e| format!("new: {e}"))?;
        space.map_range(0x1000_0000, 700, true).map_err(|e| format!("map_range: {e}"))?;
        space.map_range(0x80_0000_0000, 3, false).map_err(|e| format!("map_range: {e}"))?;
        for i in 0..5 {
            space.map(0x7f00_0000_0000 + i * PAGE, new_frame()?, true).map_err(|e| format!("map: {e}"))?;
        }
        for i in 0..2 {
            let old = space.remap(0x7f00_0000_0000 + i * PAGE, new_frame()?).map_err(|e| format!("remap: {e}"))?;
            mm::frames::free(old);
        }
        space.protect(0x1000_0000, 10, false).map_err(|e| format!("protect: {e}"))?;
        space.unmap(0x1000_0000 + 100 * PAGE, 50).map_err(|e| format!("unmap: {e}"))?;
        let used = start.saturating_sub(free_frames());
        ensure!(used >= 700 + 3 + 5 - 50, "a space mapping 658 pages took only {used} frames");
    }
    let end = free_frames();
    ensure!(end == start, "{start} frames free before the space, {end} after it was destroyed");

    const PAGES: u64 = 64;
    const VA: u64 = 0x3000_0000;
    let (set, cpus) = online();
    let space = AddressSpace::new().map_err(|e| format!("new: {e}"))?;
    space.map_range(VA, PAGES, true).map_err(|e| format!("map_range: {e}"))?;
    let mut touchers = Vec::new();
    for &cpu in &cpus {
        let toucher = spawn_in(&space, pinned("destroy-touch", cpu), move || {
            (0..PAGES).map(|p| read(VA + p * PAGE)).sum::<u64>()
        })
        .map_err(|e| format!("spawn: {e:?}"))?;
        touchers.push(toucher);
    }
    for toucher in touchers {
        let sum = toucher.join().ok_or("a thread exited")?;
        ensure!(sum == 0, "fresh pages read {sum:#x}, expected zeroes");
    }
    settle();
    let frames: Vec<u64> = (0..PAGES).filter_map(|p| space.translate(VA + p * PAGE).map(|(pa, _)| pa)).collect();
    ensure!(frames.len() as u64 == PAGES, "{} of {PAGES} pages translate", frames.len());
    // Every CPU went idle (or runs this kernel thread) after its toucher ended, and keeps the
    // space loaded, lazily.
    let loaded = space.space.tracker.active();
    ensure!(!loaded.is_empty(), "after its threads ended the space is loaded nowhere, expected kept lazily where they ran");
    let (leaves, before) = (tlb::sum(&set).leaves, free_frames());
    drop(space);
    let (left, after) = (tlb::sum(&set).leaves - leaves, free_frames());
    // The pages, one page table, one page directory, one PDPT and the PML4.
    let expected = PAGES as usize + 4;
    ensure!(after - before == expected, "destroying the space freed {} frames, expected {expected}", after as i64 - before as i64);
    ensure!(left == loaded.len() as u64, "{left} CPUs left the destroyed space at its destruction, expected the {} that kept it loaded", loaded.len());
    if let Some(busy) = frames.iter().find(|&&pa| !mm::frames::is_free(pa)) {
        return Err(format!("frame {busy:#x} of the destroyed space is still in use"));
    }
    Ok(())
}

/// The operations refuse what they promise to refuse and change nothing when they do: addresses
/// outside the lower half, unaligned or on the null page; mapping over a mapping (whole or in a
/// range); unmapping or protecting a range with a hole. Protect and remap change exactly the
/// rights and the frame, and remap hands the old frame back.
fn aspace_api_contract() -> Result<(), String> {
    const VA: u64 = 0x5000_0000;
    let space = AddressSpace::new().map_err(|e| format!("new: {e}"))?;
    let frame = new_frame()?;
    for bad in [0, VA + 8, USER_END, USER_END - PAGE / 2, 0xffff_8000_0000_0000] {
        let got = space.map(bad, frame, true);
        ensure!(matches!(got, Err(AsError::BadAddress(_))), "map at {bad:#x} returned {got:?}");
    }
    ensure!(matches!(space.map(VA, frame + 8, true), Err(AsError::BadAddress(_))), "an unaligned frame was accepted");
    ensure!(matches!(space.unmap(USER_END - PAGE, 2), Err(AsError::BadAddress(_))), "a range past the lower half was accepted");
    space.map(VA, frame, true).map_err(|e| format!("map: {e}"))?;
    ensure!(space.translate(VA + 0x123) == Some((frame + 0x123, true)), "translate after map: {:?}", space.translate(VA + 0x123));
    ensure!(space.translate(USER_START - 1).is_none(), "the null page translates");
    let spare = new_frame()?;
    let got = space.map(VA, spare, false);
    ensure!(got == Err(AsError::AlreadyMapped(VA)), "mapping over a mapping returned {got:?}");
    let got = space.map_range(VA - PAGE, 3, true);
    ensure!(got == Err(AsError::AlreadyMapped(VA)), "map_range over a mapping returned {got:?}");
    ensure!(space.translate(VA - PAGE).is_none() && space.translate(VA + PAGE).is_none(), "a refused map_range left pages behind");
    let got = space.unmap(VA, 2);
    ensure!(got == Err(AsError::NotMapped(VA + PAGE)), "unmapping a range with a hole returned {got:?}");
    let got = space.protect(VA - PAGE, 2, false);
    ensure!(got == Err(AsError::NotMapped(VA - PAGE)), "protecting a range with a hole returned {got:?}");
    ensure!(space.translate(VA) == Some((frame, true)), "a refused call changed the page: {:?}", space.translate(VA));
    space.protect(VA, 1, false).map_err(|e| format!("protect: {e}"))?;
    ensure!(space.translate(VA) == Some((frame, false)), "after protect(read-only): {:?}", space.translate(VA));
    space.protect(VA, 1, true).map_err(|e| format!("protect: {e}"))?;
    ensure!(space.translate(VA) == Some((frame, true)), "after protect(writable): {:?}", space.translate(VA));
    let old = space.remap(VA, spare).map_err(|e| format!("remap: {e}"))?;
    ensure!(old == frame, "remap handed back {old:#x}, expected {frame:#x}");
    ensure!(space.translate(VA) == Some((spare, true)), "after remap: {:?}", space.translate(VA));
    mm::frames::free(old);
    space.unmap(VA, 1).map_err(|e| format!("unmap: {e}"))?;
    ensure!(space.translate(VA).is_none(), "the page translates after unmap");
    ensure!(mm::frames::is_free(spare), "the unmapped frame {spare:#x} was not freed");
    Ok(())
}

/// `map_user_filled` (what mremap's move uses) maps a frame that already holds the bytes, the rest
/// of the page zero, with the rights asked for; over a mapping it refuses and leaves the page as it
/// was. The frame is the space's: unmapping frees it.
fn aspace_map_user_filled_is_whole() -> Result<(), String> {
    use super::UserProt;
    const VA: u64 = 0x5100_0000;
    let space = AddressSpace::new().map_err(|e| format!("new: {e}"))?;
    let bytes: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8 + 1).collect();
    let read_only = UserProt { writable: false, exec: false };
    space.map_user_filled(VA, &bytes, read_only).map_err(|e| format!("map_user_filled: {e}"))?;
    let Some((frame, writable)) = space.translate(VA) else { return Err(String::from("the filled page does not translate")) };
    ensure!(!writable, "a read-only filled page is writable");
    // SAFETY: the frame is mapped in `space` only, which no thread runs; read through the direct map.
    let page = unsafe { core::slice::from_raw_parts(mm::phys_to_virt(frame) as *const u8, PAGE as usize) };
    ensure!(page[..bytes.len()] == bytes[..], "the filled page does not hold the bytes");
    ensure!(page[bytes.len()..].iter().all(|&b| b == 0), "the rest of the filled page is not zero");
    let got = space.map_user_filled(VA, &[0xaa; 8], UserProt { writable: true, exec: false });
    ensure!(got == Err(AsError::AlreadyMapped(VA)), "filling over a mapping returned {got:?}");
    ensure!(space.translate(VA) == Some((frame, false)) && page[0] == bytes[0], "a refused fill changed the page");
    let got = space.map_user_filled(VA + PAGE, &[0; PAGE as usize + 1], read_only);
    ensure!(matches!(got, Err(AsError::BadAddress(_))) && space.translate(VA + PAGE).is_none(), "more than a page was accepted: {got:?}");
    space.unmap(VA, 1).map_err(|e| format!("unmap: {e}"))?;
    ensure!(mm::frames::is_free(frame), "the unmapped filled frame {frame:#x} was not freed");
    Ok(())
}

/// Cross-calls from one CPU to a second one that frees kernel stacks meanwhile.
const XCALL_VS_SHOOTDOWN_CALLS: u64 = 10_000;

/// One CPU cross-calls a second one, over and over, while the second frees kernel stacks (each a
/// kernel shootdown of every other CPU, waited for with interrupts off). Both waits spin with
/// interrupts off, so each must serve the other's kind of IPI work, or the two wait for each
/// other until their timeouts. Every call must finish, and the stacks freed must give back their
/// frames.
fn xcall_while_stack_freed() -> Result<(), String> {
    let (_, cpus) = online();
    let (caller_cpu, freer_cpu) = (cpus[0], cpus[1]);
    // Every stack slot used once first, so that the page tables of the stacks' region (which stay)
    // are all there before the frames are counted.
    let mut all = Vec::with_capacity(mm::stacks::MAX_STACKS);
    while let Some(stack) = mm::stacks::KernelStack::new(PAGE as usize, "warm-up") {
        all.push(stack);
    }
    drop(all);
    let (frames_before, claimed_before) = (free_frames(), mm::heap::claimed_bytes());
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let freer = sched()
        .spawn(pinned("stack-freer", freer_cpu), move || {
            let mut freed = 0u64;
            while !stop2.load(Ordering::Acquire) {
                let Some(stack) = mm::stacks::KernelStack::new(4 * PAGE as usize, "freed") else { return Err(freed) };
                drop(stack);
                freed += 1;
            }
            Ok(freed)
        })
        .map_err(|e| format!("spawn: {e:?}"))?;
    let caller = sched()
        .spawn(pinned("xcaller", caller_cpu), move || {
            let target = CpuSet::single(freer_cpu);
            let ran = Arc::new(AtomicU64::new(0));
            for i in 0..XCALL_VS_SHOOTDOWN_CALLS {
                let r = ran.clone();
                if let Err(missing) = crate::cpus::xcall::call(&target, move |_| { r.fetch_add(1, Ordering::Relaxed); }, 30_000_000_000) {
                    return Err(format!("call {i}: {missing} did not run it"));
                }
            }
            Ok(ran.load(Ordering::Relaxed))
        })
        .map_err(|e| format!("spawn: {e:?}"))?;
    let called = caller.join().ok_or("the caller exited");
    stop.store(true, Ordering::Release);
    let freed = freer.join().ok_or("the freer exited")?.map_err(|n| format!("no kernel stack after {n} freed"))?;
    let ran = called??;
    ensure!(ran == XCALL_VS_SHOOTDOWN_CALLS, "{ran} of {XCALL_VS_SHOOTDOWN_CALLS} calls ran");
    settle();
    // Frames the heap grew by are the heap's, not lost.
    let grown = (mm::heap::claimed_bytes() - claimed_before) / PAGE as usize;
    let frames_after = free_frames() + grown;
    ensure!(frames_after == frames_before, "free frames {frames_before} before, {frames_after} after (heap growth of {grown} frames counted back)");
    println_raw!("  note: {XCALL_VS_SHOOTDOWN_CALLS} cross-calls {caller_cpu}->{freer_cpu} while it freed {freed} kernel stacks");
    Ok(())
}

/// Threads spawned into a space whose spawner dropped its handle at once.
const OWNED_SPACE_THREADS: u64 = 1000;

/// A spinner in space Y keeps a second CPU busy (and Y loaded there) while threads in fresh
/// spaces X are spawned onto that CPU, each X dropped by its spawner right away, so each thread
/// holds the last handle of its space and destroys it as it ends. Destruction ends with a
/// preemption point; run with a short slice (`slice-us=100`) a thread is often preempted there
/// and resumed after Y was loaded again. Each thread must run once, every space must be destroyed
/// while no CPU is switched to it, and nothing may be switched to a freed space.
fn aspace_threads_own_their_space() -> Result<(), String> {
    let (_, cpus) = online();
    let cpu = cpus[1];
    let y = AddressSpace::new().map_err(|e| format!("new address space: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let spinner = spawn_in(&y, pinned("y-spinner", cpu), move || {
        let mut turns = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            turns += 1;
            core::hint::spin_loop();
        }
        turns
    })
    .map_err(|e| format!("spawn: {e:?}"))?;
    drop(y);
    let ran = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for i in 0..OWNED_SPACE_THREADS {
        let x = AddressSpace::new().map_err(|e| format!("new address space {i}: {e}"))?;
        let r = ran.clone();
        let h = spawn_in(&x, pinned("x-owner", cpu), move || {
            r.fetch_add(1, Ordering::Relaxed);
            i
        })
        .map_err(|e| format!("spawn {i}: {e:?}"))?;
        drop(x);
        handles.push(h);
        if handles.len() == 64 {
            for h in handles.drain(..) {
                h.join().ok_or("a thread in X exited")?;
            }
        }
    }
    let mut sum = 0;
    for h in handles.drain(..) {
        sum += h.join().ok_or("a thread in X exited")?;
    }
    stop.store(true, Ordering::Relaxed);
    let turns = spinner.join().ok_or("the spinner exited")?;
    let ran = ran.load(Ordering::Relaxed);
    ensure!(ran == OWNED_SPACE_THREADS, "{ran} of {OWNED_SPACE_THREADS} threads ran");
    let _ = sum;
    println_raw!("  note: {OWNED_SPACE_THREADS} threads each ended holding the last handle of their space, beside a spinner in another ({turns} turns)");
    Ok(())
}

/// A kernel address remapped from frame F1 to F2 while another CPU holds its translation (it read
/// the address just before, and keeps spinning on the same CPU): that CPU's next read must see
/// F2's contents, which only the kernel shootdown of the remap can make sure of.
fn kernel_remap_seen_by_other_cpu() -> Result<(), String> {
    const F1_WORD: u64 = 0xf1f1_f1f1_0000_0001;
    const F2_WORD: u64 = 0xf2f2_f2f2_0000_0002;
    let (_, cpus) = online();
    let stack = mm::stacks::KernelStack::new(PAGE as usize, "remap-test").ok_or("no kernel stack")?;
    let va = stack.bottom();
    // SAFETY: the page is mapped, writable and the test's own (no thread runs on this stack).
    unsafe { (va as *mut u64).write_volatile(F1_WORD) };
    let f2 = new_frame()?;
    put(f2, F2_WORD);
    let state = Arc::new(AtomicU64::new(0));
    let s2 = state.clone();
    let reader = sched()
        .spawn(pinned("remap-reader", cpus[1]), move || {
            let first = read(va);
            s2.store(1, Ordering::Release);
            while s2.load(Ordering::Acquire) != 2 {
                core::hint::spin_loop();
            }
            (first, read(va))
        })
        .map_err(|e| format!("spawn: {e:?}"))?;
    let s3 = state.clone();
    // The remap runs on another CPU than the reader's, so only the shootdown can reach the reader.
    let remapper = sched()
        .spawn(pinned("remapper", cpus[0]), move || {
            while s3.load(Ordering::Acquire) != 1 {
                core::hint::spin_loop();
            }
            // SAFETY: `va` is the test stack's page, used by no thread as a stack; `f2` is ours
            // and goes to the stack, whose drop frees it; the old frame comes back to us.
            let f1 = unsafe { mm::remap_stack_page(va, f2) };
            s3.store(2, Ordering::Release);
            f1
        })
        .map_err(|e| format!("spawn: {e:?}"))?;
    let f1 = remapper.join().ok_or("the remapper exited")?;
    let (first, second) = reader.join().ok_or("the reader exited")?;
    drop(stack);
    mm::frames::free(f1);
    ensure!(first == F1_WORD, "{} read {first:#x} before the remap, expected F1's {F1_WORD:#x}", cpus[1]);
    ensure!(second == F2_WORD, "{} read {second:#x} after the remap, expected F2's {F2_WORD:#x}", cpus[1]);
    Ok(())
}

/// A CPU whose last thread in a space ended halts with the space still loaded, lazily: a remap
/// made on another CPU (it frees no page table) then sends it no IPI, and the next thread of the
/// space on it reads the new frame (the CPU, behind by the change, flushed the space's PCID as it
/// woke).
fn aspace_idle_cpu_spared() -> Result<(), String> {
    const VA: u64 = 0x6000_0000;
    let (_, cpus) = online();
    let (idle_cpu, changer_cpu) = (cpus[1], cpus[0]);
    let space = AddressSpace::new().map_err(|e| format!("new address space: {e}"))?;
    let (f1, f2) = (new_frame()?, new_frame()?);
    put(f1, 1);
    put(f2, 2);
    space.map(VA, f1, false).map_err(|e| format!("map: {e}"))?;
    let first = spawn_in(&space, pinned("idle-reader", idle_cpu), move || read(VA)).map_err(|e| format!("spawn: {e:?}"))?;
    let first = first.join().ok_or("the reader exited")?;
    settle();
    let active = space.space.tracker.active();
    ensure!(active.contains(idle_cpu), "{idle_cpu} went idle and left the space ({active}), expected it kept loaded");
    let s2 = space.clone();
    let delta = spawn_in(&space, pinned("changer", changer_cpu), move || -> Result<tlb::TlbCounters, String> {
        let me = tlb::this_cpu();
        let before = tlb::counters(me);
        let old = s2.remap(VA, f2).map_err(|e| format!("remap: {e}"))?;
        mm::frames::free(old);
        Ok(tlb::counters(me).since(&before))
    })
    .map_err(|e| format!("spawn: {e:?}"))?
    .join()
    .ok_or("the changer exited")??;
    let second = spawn_in(&space, pinned("idle-reader", idle_cpu), move || read(VA)).map_err(|e| format!("spawn: {e:?}"))?;
    let second = second.join().ok_or("the reader exited")?;
    ensure!(first == 1, "{idle_cpu} read {first} before the remap, expected 1");
    ensure!(delta.ipis_sent == 0, "the remap sent {} IPIs with {idle_cpu} idle", delta.ipis_sent);
    ensure!(second == 2, "{idle_cpu} read {second} after the remap, expected 2 (a stale translation)");
    Ok(())
}

/// The first word of frame `pa`, through the direct map.
fn peek(pa: u64) -> u64 {
    // SAFETY: `pa` is a frame mapped by a space the test owns and nobody writes meanwhile.
    unsafe { (mm::phys_to_virt(pa) as *const u64).read_volatile() }
}

/// `fork_cow` and `break_cow` without user code: the child maps the parent's frames, read-only in
/// both, each shared frame counted; a break in the child copies (a new frame with the same data,
/// writable); the parent's break of that page then takes its frame back without a copy (no other
/// sharer) and without TLB work (the frame stays); a page that was never shared is no copy-on-write page; once the child is gone the
/// parent owns the rest alone; and when both are gone every frame is free again, each once.
fn aspace_fork_cow_shares_then_copies() -> Result<(), String> {
    use super::{CowBreak, shared_frames};
    const VA: u64 = 0x2000_0000;
    let e = |what: &str, err: AsError| format!("{what}: {err}");
    settle();
    let start = free_frames();
    let shared_start = shared_frames();
    {
        let parent = AddressSpace::new().map_err(|x| e("new", x))?;
        for i in 0..4 {
            let f = new_frame()?;
            put(f, 100 + i);
            parent.map(VA + i * PAGE, f, true).map_err(|x| e("map", x))?;
        }
        parent.map_range(VA + 4 * PAGE, 1, false).map_err(|x| e("map_range", x))?;
        let child = parent.fork_cow(&[]).map_err(|x| e("fork_cow", x))?;
        ensure!(shared_frames() - shared_start == 5, "{} frames shared after forking 5 pages", shared_frames() - shared_start);
        for i in 0..5 {
            let (pp, pw) = parent.translate(VA + i * PAGE).ok_or("a parent page went")?;
            let (cp, cw) = child.translate(VA + i * PAGE).ok_or("a page is missing in the child")?;
            ensure!(pp == cp && !pw && !cw, "page {i}: parent {pp:#x} writable {pw}, child {cp:#x} writable {cw}");
        }
        let (old, _) = parent.translate(VA).ok_or("page 0 went")?;
        ensure!(child.break_cow(VA).map_err(|x| e("break", x))? == CowBreak::Copied, "the child's break did not copy");
        let (cp, cw) = child.translate(VA).ok_or("the child lost page 0")?;
        ensure!(cp != old && cw && peek(cp) == 100, "the child's copy: {cp:#x} (old {old:#x}), writable {cw}, word {}", peek(cp));
        // Taking the frame back changes no translation's frame: no TLB work anywhere.
        let online = crate::cpu::map::online();
        let before = tlb::sum(&online);
        ensure!(parent.break_cow(VA).map_err(|x| e("break", x))? == CowBreak::Reclaimed, "the last sharer copied");
        let changes = tlb::sum(&online).since(&before).changes;
        ensure!(changes == 0, "taking a page back writable made {changes} TLB changes");
        ensure!(parent.translate(VA) == Some((old, true)), "the parent does not own its frame again writable");
        ensure!(parent.break_cow(VA).map_err(|x| e("break", x))? == CowBreak::Retry, "a writable page is broken twice");
        parent.map_range(VA + 10 * PAGE, 1, false).map_err(|x| e("map_range", x))?;
        ensure!(parent.break_cow(VA + 10 * PAGE).map_err(|x| e("break", x))? == CowBreak::NotCow, "a private read-only page counts as copy-on-write");
        ensure!(shared_frames() - shared_start == 4, "{} frames shared after one page was split", shared_frames() - shared_start);
        drop(child);
        ensure!(shared_frames() == shared_start, "the child is gone but {} frames stay shared", shared_frames() - shared_start);
        ensure!(parent.break_cow(VA + PAGE).map_err(|x| e("break", x))? == CowBreak::Reclaimed, "a page the parent owns alone was copied");
        ensure!(peek(parent.translate(VA + PAGE).ok_or("page 1 went")?.0) == 101, "page 1 lost its data");
    }
    let end = free_frames();
    ensure!(end == start, "{start} frames free before, {end} after both spaces were destroyed");
    Ok(())
}

/// `fork_cow` with a shared range (MAP_SHARED anonymous memory): its untouched page is filled in
/// the parent first, and both its pages map the same frame writable in parent and child, unmarked
/// (a write fault there is no copy-on-write), while the page outside stays copy-on-write; a fork
/// of the child shares the frames again; an unmap in one space leaves the others theirs; and when
/// every space is gone every frame is free again, each once.
fn aspace_fork_keeps_shared_ranges_shared() -> Result<(), String> {
    use super::{CowBreak, UserProt, shared_frames};
    const VA: u64 = 0x2000_0000;
    let rw = UserProt { writable: true, exec: false };
    let e = |what: &str, err: AsError| format!("{what}: {err}");
    settle();
    let start = free_frames();
    let shared_start = shared_frames();
    {
        let parent = AddressSpace::new().map_err(|x| e("new", x))?;
        parent.map_user_range(VA, 1, rw).map_err(|x| e("map_user_range", x))?;
        parent.map_user_range(VA + 4 * PAGE, 1, rw).map_err(|x| e("map_user_range", x))?;
        let shared = [(VA..VA + 2 * PAGE, rw)];
        let child = parent.fork_cow(&shared).map_err(|x| e("fork_cow", x))?;
        ensure!(shared_frames() - shared_start == 3, "{} frames shared after forking 2 shared pages and 1 private", shared_frames() - shared_start);
        for i in 0..2 {
            let (pp, pw) = parent.translate(VA + i * PAGE).ok_or("a shared page is missing in the parent")?;
            let (cp, cw) = child.translate(VA + i * PAGE).ok_or("a shared page is missing in the child")?;
            ensure!(pp == cp && pw && cw, "shared page {i}: parent {pp:#x} writable {pw}, child {cp:#x} writable {cw}");
            ensure!(child.break_cow(VA + i * PAGE).map_err(|x| e("break", x))? == CowBreak::Retry, "a shared page is copy-on-write");
        }
        let (pp, pw) = parent.translate(VA + 4 * PAGE).ok_or("the private page went")?;
        ensure!(!pw && child.translate(VA + 4 * PAGE) == Some((pp, false)), "the private page is not copy-on-write in both");
        let frame = parent.translate(VA + PAGE).ok_or("page 1 went")?.0;
        put(frame, 4242);
        ensure!(child.translate(VA + PAGE).map(|(pa, _)| peek(pa)) == Some(4242), "the child does not see the parent's word");
        let grandchild = child.fork_cow(&shared).map_err(|x| e("fork_cow", x))?;
        ensure!(grandchild.translate(VA + PAGE) == Some((frame, true)), "the grandchild does not share page 1 writable");
        child.unmap_present(VA, 2).map_err(|x| e("unmap", x))?;
        ensure!(parent.translate(VA + PAGE) == Some((frame, true)) && grandchild.translate(VA + PAGE).map(|(pa, _)| peek(pa)) == Some(4242), "an unmap in the child took the others' page");
        drop(child);
        drop(parent);
        ensure!(peek(grandchild.translate(VA + PAGE).ok_or("the last sharer lost page 1")?.0) == 4242, "page 1 lost its data");
    }
    ensure!(shared_frames() == shared_start, "every space is gone but {} frames stay shared", shared_frames() - shared_start);
    let end = free_frames();
    ensure!(end == start, "{start} frames free before, {end} after every space was destroyed");
    Ok(())
}
