//! In-kernel test of the trace: a workload that exercises every conserved kind of event on every
//! CPU (cross-CPU ping-pong, sleeps, yields of migratable threads that idle CPUs steal, spawns,
//! and address-space changes that shoot down other CPUs' TLBs) is recorded from a quiet system
//! to a quiet system. The conservation check must pass on the whole trace, and fail once any one
//! switch, queued wake-up, steal, reschedule IPI sent, or shootdown begin, acknowledgement or
//! completion is removed from it. (Shootdown IPIs from several CPUs to one merge in the target's
//! APIC, which the check accepts, so one lost among merged ones cannot be told; reschedule IPIs
//! never merge: a CPU is kicked once per halt.)
//!
//! Neighbours: `cpu::trace` (under test: the gate, the rings, the trace points below it), `task`
//! (the scheduler the workload runs on), `vm` (address spaces, for the shootdowns).

use alloc::{boxed::Box, format, string::String, sync::Arc, vec::Vec};
use core::sync::atomic::{AtomicBool, Ordering};

use ::trace::{Category, Dump, IpiKind, Kind, Mask, Tracer, check, event::WAKE_RUNNING};
use sched::{Builder, CpuIndex, Semaphore};

use crate::{
    ensure, println_raw,
    task::sched,
    testing::Test,
    time,
    vm::space::{AddressSpace, spawn_in},
};

crate::register_tests![
    Test { name: "trace_conservation", min_cpus: 1, expect_fault: false, run: trace_conservation },
];

const MS: u64 = 1_000_000;
const STACK_BYTES: usize = 16 * 1024;
/// The categories recorded (all that the kernel emits so far).
const RECORDED: Mask =
    Mask::NONE.with(Category::Sched).with(Category::Ipi).with(Category::Tlb).with(Category::Timer).with(Category::Idle);
/// Records per CPU when the test makes its own rings.
const RING_RECORDS: usize = 1 << 15;
const EXCHANGES: u32 = 150;
const ROUNDS: u32 = 40;
/// Whether losing the reschedule IPI sent to CPU `target` at `tsc` can be noticed at all. The local
/// APIC merges IPIs of one vector that arrive while one is pending, so the check accepts fewer
/// receipts than sends; a lost send shows only if a later receipt brought the target's receipts up
/// to its sends (then that receipt would lack a send). When the sends to `target` stayed ahead of
/// its receipts from `tsc` on, one of them merged, and which one was lost cannot be told.
fn ipi_loss_detectable(dump: &Dump, tsc: u64, target: u32) -> bool {
    let resched = |r: &&::trace::Record| IpiKind::from_arg(r.arg) == IpiKind::Resched;
    let mut events: Vec<(u64, bool)> = dump
        .cpus
        .iter()
        .flat_map(|b| b.records.iter())
        .filter(resched)
        .filter_map(|r| match r.kind() {
            Some(Kind::IpiSend) if r.c == target => Some((r.tsc, true)),
            Some(Kind::IpiReceive) if u32::from(r.cpu) == target => Some((r.tsc, false)),
            _ => None,
        })
        .collect();
    // Sends before receipts at one stamp, as the check orders them.
    events.sort_by_key(|&(t, send)| (t, !send));
    let (mut sent, mut received) = (0u64, 0u64);
    for (t, send) in events {
        if send {
            sent += 1;
        } else {
            received += 1;
            if t > tsc && received == sent {
                return true;
            }
        }
    }
    false
}

/// A user page the shootdown part maps and unmaps.
const VA: u64 = 0x5000_0000;

fn cpus() -> Vec<CpuIndex> {
    let nr_cpus = sched().nr_cpus();
    crate::cpu::map::online().iter().filter(|c| c.index() < nr_cpus).map(|c| CpuIndex(c.get())).collect()
}

/// The workload; returns once every thread it made has been joined.
fn workload() -> Result<(), String> {
    let s = sched();
    let cpus = cpus();
    let n = cpus.len();
    let mut handles = Vec::new();
    // Ping-pong between neighbouring CPUs: cross-CPU wake-ups, reschedule IPIs to halted CPUs.
    for i in 0..n {
        let sems = Arc::new([Semaphore::new(1), Semaphore::new(0)]);
        for side in 0..2usize {
            let sems = sems.clone();
            let cpu = cpus[(i + side) % n];
            let h = s
                .spawn(Builder::new("trace-pingpong").pinned(cpu).stack_bytes(STACK_BYTES), move || {
                    for _ in 0..EXCHANGES {
                        sems[side].acquire(sched());
                        sems[1 - side].release(sched());
                    }
                })
                .map_err(|e| format!("spawn: {e:?}"))?;
            handles.push(h);
        }
    }
    // Migratable threads spawned here, which yield, sleep and spawn: idle CPUs steal them.
    for i in 0..2 * n as u32 {
        let h = s
            .spawn(Builder::new("trace-roamer").stack_bytes(STACK_BYTES), move || {
                for round in 0..ROUNDS {
                    match (i + round) % 3 {
                        0 => sched().yield_now(),
                        1 => sched().sleep_ns(200_000),
                        _ => {
                            if let Ok(h) = sched().spawn(Builder::new("trace-short").stack_bytes(STACK_BYTES), || ()) {
                                h.join();
                            }
                        }
                    }
                }
            })
            .map_err(|e| format!("spawn: {e:?}"))?;
        handles.push(h);
    }
    // Shootdowns: the space stays loaded on the other CPUs while one CPU maps and unmaps in it.
    let mut shootdowns = Ok(());
    if n >= 2 {
        shootdowns = shootdown_storm(&cpus);
    }
    for h in handles {
        h.join();
    }
    shootdowns
}

fn shootdown_storm(cpus: &[CpuIndex]) -> Result<(), String> {
    let space = AddressSpace::new().map_err(|e| format!("new address space: {e}"))?;
    let release = Arc::new(AtomicBool::new(false));
    let mut holders = Vec::new();
    for &cpu in &cpus[1..] {
        let release = release.clone();
        // The holders spin: a CPU whose thread sleeps goes idle and leaves the space, and then no
        // shootdown needs to reach it.
        let h = spawn_in(&space, Builder::new("trace-holder").pinned(cpu).stack_bytes(STACK_BYTES), move || {
            while !release.load(Ordering::Acquire) {
                core::hint::spin_loop();
            }
        })
        .map_err(|e| format!("spawn: {e:?}"))?;
        holders.push(h);
    }
    let s2 = space.clone();
    let churn = spawn_in(&space, Builder::new("trace-churn").pinned(cpus[0]).stack_bytes(STACK_BYTES), move || {
        for _ in 0..ROUNDS {
            s2.map_range(VA, 2, true).map_err(|e| format!("map_range: {e}"))?;
            s2.unmap(VA, 2).map_err(|e| format!("unmap: {e}"))?;
        }
        Ok::<(), String>(())
    })
    .map_err(|e| format!("spawn: {e:?}"))?;
    let outcome = churn.join().ok_or("the churn thread exited")?;
    release.store(true, Ordering::Release);
    for h in holders {
        h.join();
    }
    drop(space);
    outcome
}

fn trace_conservation() -> Result<(), String> {
    let cpus = cpus();
    // Our own rings unless the command line switched the trace on.
    let previous = crate::cpu::trace::tracer().map(|_| RECORDED);
    let tracer = match crate::cpu::trace::tracer() {
        Some(t) => t,
        None => {
            let t: &'static Tracer = Box::leak(Box::new(Tracer::new(sched().nr_cpus(), RING_RECORDS)));
            crate::cpu::trace::install(t, Mask::NONE);
            t
        }
    };
    // Quiet start: nothing runs but this thread; then record.
    crate::cpu::trace::set_mask(Mask::NONE);
    sched().sleep_ns(20 * MS);
    tracer.clear();
    crate::cpu::trace::set_mask(RECORDED);
    let outcome = workload();
    // Quiet end: every CPU back in its idle loop and every IPI delivered.
    sched().sleep_ns(100 * MS);
    crate::cpu::trace::set_mask(Mask::NONE);
    outcome?;
    let me = sched().current().ok_or("no current thread")?;
    let mut bytes = Vec::new();
    let stats = tracer.dump(&mut bytes, time::tsc_hz(), RECORDED);
    crate::cpu::trace::set_mask(previous.unwrap_or(Mask::NONE));
    let dump = Dump::parse(&bytes).map_err(|e| format!("the dump does not read back: {e}"))?;
    ensure!(stats.dropped == 0, "{} records lost: the rings of {RING_RECORDS} are too small for the workload", stats.dropped);
    let options = check::Options { complete: true, running_at_end: Some((me.cpu.0 as u16, me.id.0)) };
    let report = check::check(&dump, options);
    if !report.is_ok() {
        for line in format!("{report}").lines().take(20) {
            println_raw!("  {line}");
        }
        return Err(format!("{} conservation violations on {} CPUs", report.violations.len(), cpus.len()));
    }
    let c = report.counts;
    ensure!(c.switches > 0 && c.wakeups > 0, "too little traced: {c:?}");
    if cpus.len() >= 2 {
        ensure!(c.ipis_sent > 0 && c.shootdowns > 0 && c.acks > 0, "no IPI or shootdown traced on {} CPUs: {c:?}", cpus.len());
    }
    // Any one lost event must be noticed.
    let lossy_kinds = [
        Kind::Switch,
        Kind::Wakeup,
        Kind::Steal,
        Kind::IpiSend,
        Kind::ShootdownBegin,
        Kind::ShootdownAck,
        Kind::ShootdownDone,
    ];
    let mut removals = 0;
    let whole = &dump;
    for kind in lossy_kinds {
        let at: Vec<(usize, usize)> = dump
            .cpus
            .iter()
            .enumerate()
            .flat_map(|(b, block)| {
                block.records.iter().enumerate().filter(move |(_, r)| {
                    r.kind() == Some(kind)
                        && !(kind == Kind::Wakeup && r.arg & WAKE_RUNNING != 0)
                        && !(kind == Kind::IpiSend
                            && (IpiKind::from_arg(r.arg) != IpiKind::Resched || !ipi_loss_detectable(whole, r.tsc, r.c)))
                })
                .map(move |(i, _)| (b, i))
            })
            .collect();
        for &(b, i) in at.iter().step_by((at.len() / 6).max(1)) {
            let mut lossy = dump.clone();
            lossy.cpus[b].records.remove(i);
            ensure!(!check::check(&lossy, options).is_ok(), "losing {kind:?} record {i} of CPU {b} went unnoticed");
            removals += 1;
        }
    }
    println_raw!(
        "  note: {} records on {} CPUs conserve ({} switches, {} wake-ups, {} steals, {} IPIs, {} shootdowns); {removals} single losses all caught",
        stats.delivered,
        cpus.len(),
        c.switches,
        c.wakeups,
        c.steals,
        c.ipis_sent,
        c.shootdowns
    );
    Ok(())
}
