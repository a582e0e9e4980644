//! `make run`'s demonstration workload: something for every core to do, and a per-CPU statistics
//! line once a second.
//!
//! Per CPU: one pinned compute thread (never yields: only the timer takes the CPU from it), one
//! free compute thread (may be stolen by idle CPUs), a pinned sleeper (wakes every 50 ms). Across
//! CPUs: ping-pong pairs, one thread on CPU i and its partner on CPU i+1, exchanging a token through
//! two semaphores. One address space shared by a reader pinned on every CPU, whose page a remapper
//! points at a fresh frame every 20 ms (each change is a TLB shootdown to the CPUs that have the
//! space loaded, and to no other). The reporter prints, for each CPU, the counters of the last
//! second: scheduler and TLB.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use sched::{Builder, CpuIndex, Semaphore};

use crate::task::sched;

static PINGS: AtomicU64 = AtomicU64::new(0);
static SLEEPS: AtomicU64 = AtomicU64::new(0);

fn spin_work(iterations: u64) -> u64 {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..iterations {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_add(i);
    }
    core::hint::black_box(x)
}

/// Start the workload on `nr_cpus` CPUs and the reporter; returns at once.
///
/// The reporter comes first, and each CPU's threads are spawned by a short-lived starter pinned to
/// that CPU, compute threads last: a new thread starts on its creator's CPU, and compute threads
/// never yield, so one spawner on CPU 0 would get one slice in every few hundred at 128 CPUs and
/// the demo (and its first statistics) would take minutes to start under emulation.
pub fn start(nr_cpus: u32) {
    let s = sched();
    let t0 = crate::time::now_ns();
    s.spawn(Builder::new("reporter").pinned(CpuIndex(0)), move || report(nr_cpus)).expect("spawn reporter");
    for cpu in 0..nr_cpus {
        s.spawn(Builder::new("demo-starter").pinned(CpuIndex(cpu)), move || {
            start_on(cpu, nr_cpus);
            if STARTED.fetch_add(1, Ordering::AcqRel) + 1 == u64::from(nr_cpus) {
                log::info!("demo: every CPU's threads started, {} ms after the first", (crate::time::now_ns() - t0) / 1_000_000);
            }
        })
        .expect("spawn demo-starter");
    }
    start_address_space_work(nr_cpus);
}

/// How many CPUs' starters finished.
static STARTED: AtomicU64 = AtomicU64::new(0);

/// Spawn the threads of CPU `cpu` (running on it): the sleeper, its ping and its partner's pong,
/// then the two compute threads.
fn start_on(cpu: u32, nr_cpus: u32) {
    let s = sched();
    let c = CpuIndex(cpu);
    s.spawn(Builder::new("sleeper").pinned(c), || loop {
        sched().sleep_ns(50_000_000);
        SLEEPS.fetch_add(1, Ordering::Relaxed);
    })
    .expect("spawn sleeper");
    let ping: &'static Semaphore = alloc::boxed::Box::leak(alloc::boxed::Box::new(Semaphore::new(0)));
    let pong: &'static Semaphore = alloc::boxed::Box::leak(alloc::boxed::Box::new(Semaphore::new(0)));
    let partner = CpuIndex((cpu + 1) % nr_cpus);
    s.spawn(Builder::new("ping").pinned(c), move || loop {
        ping.release(sched());
        pong.acquire(sched());
        PINGS.fetch_add(1, Ordering::Relaxed);
    })
    .expect("spawn ping");
    s.spawn(Builder::new("pong").pinned(partner), move || loop {
        ping.acquire(sched());
        pong.release(sched());
    })
    .expect("spawn pong");
    s.spawn(Builder::new("compute-free"), || loop {
        spin_work(1 << 16);
    })
    .expect("spawn compute-free");
    s.spawn(Builder::new("compute-pinned").pinned(c), || loop {
        spin_work(1 << 16);
    })
    .expect("spawn compute-pinned");
}

/// Where the shared page sits in the demo's address space.
const SHARED_VA: u64 = 0x4000_0000;

/// One address space, a reader per CPU and a remapper: the shootdown path under a steady load.
fn start_address_space_work(nr_cpus: u32) {
    let space = match crate::vm::space::AddressSpace::new() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("demo: no address space ({e:?}); the TLB part of the demo is off");
            return;
        }
    };
    let Some(frame) = crate::mm::frames::alloc() else { return };
    if space.map(SHARED_VA, frame, true).is_err() {
        crate::mm::frames::free(frame);
        return;
    }
    for cpu in 0..nr_cpus {
        let space_of_reader = space.clone();
        let r = crate::vm::space::spawn_in(&space, Builder::new("as-reader").pinned(CpuIndex(cpu)), move || loop {
            // SHARED_VA stays mapped in this thread's space (the remapper swaps the frame behind
            // it, never unmaps it), so the read cannot fail.
            core::hint::black_box(space_of_reader.read_u64(SHARED_VA).ok());
            sched().sleep_ns(5_000_000);
        });
        if r.is_err() {
            log::warn!("demo: could not start an address-space reader on cpu{cpu}");
        }
    }
    let writer = space.clone();
    let r = crate::vm::space::spawn_in(&space, Builder::new("as-remapper"), move || {
        let mut n: u64 = 0;
        loop {
            sched().sleep_ns(20_000_000);
            let Some(fresh) = crate::mm::frames::alloc_with_word(n + 1) else { continue };
            n += 1;
            match writer.remap(SHARED_VA, fresh) {
                Ok(old) => crate::mm::frames::free(old),
                Err(_) => crate::mm::frames::free(fresh),
            }
        }
    });
    if r.is_err() {
        log::warn!("demo: could not start the remapper");
    }
}

fn report(nr_cpus: u32) -> ! {
    let s = sched();
    let mut last: Vec<sched::Counters> = (0..nr_cpus).map(|c| s.counters(CpuIndex(c))).collect();
    let mut last_tlb: Vec<crate::vm::tlb::TlbCounters> =
        (0..nr_cpus).map(|c| crate::vm::tlb::counters(smp::CpuId::new(c).expect("valid CpuId"))).collect();
    let mut last_pings = 0;
    let mut last_t = crate::time::now_ns();
    loop {
        s.sleep_ns(1_000_000_000);
        let now = crate::time::now_ns();
        let dt_ns = (now - last_t).max(1);
        let pings = PINGS.load(Ordering::Relaxed);
        log::info!(
            "stats: last {} ms: ping-pong round trips {}, sleeper wake-ups {} in all",
            dt_ns / 1_000_000,
            pings - last_pings,
            SLEEPS.load(Ordering::Relaxed)
        );
        for (cpu, prev) in last.iter_mut().enumerate() {
            let c = s.counters(CpuIndex(cpu as u32));
            let d = |f: fn(&sched::Counters) -> u64| f(&c) - f(prev);
            log::info!(
                "stats: cpu{cpu:<3} switches {:>6} preempt {:>5} yield {:>5} mig-in {:>4} mig-out {:>4} idle {:>3}% wakeups {:>5} ipi {:>4} (avoided {:>4})",
                d(|c| c.context_switches),
                d(|c| c.preemptions),
                d(|c| c.voluntary_yields),
                d(|c| c.migrations_in),
                d(|c| c.migrations_out),
                d(|c| c.idle_ns) * 100 / dt_ns,
                d(|c| c.wakeups),
                d(|c| c.ipis_sent),
                d(|c| c.ipis_avoided),
            );
            *prev = c;
            let id = smp::CpuId::new(cpu as u32).expect("a scheduler CPU is a valid CpuId");
            let t = crate::vm::tlb::counters(id);
            let p = &mut last_tlb[cpu];
            log::info!(
                "stats: cpu{cpu:<3} tlb: changes {:>3} shootdown ipis {:>3} (none needed {:>3}, avoided lazily {:>3}) served {:>3} page flushes {:>4} full {:>3} cr3 writes {:>4} pcid hit/miss/recycle {}/{}/{}",
                t.changes - p.changes,
                t.ipis_sent - p.ipis_sent,
                t.changes_without_ipi - p.changes_without_ipi,
                (t.avoided_lazy + t.avoided_never_loaded) - (p.avoided_lazy + p.avoided_never_loaded),
                t.requests_served - p.requests_served,
                t.page_flushes - p.page_flushes,
                t.full_flushes - p.full_flushes,
                t.cr3_writes - p.cr3_writes,
                t.pcid_hits - p.pcid_hits,
                t.pcid_misses - p.pcid_misses,
                t.pcid_recycles - p.pcid_recycles,
            );
            *p = t;
        }
        last_pings = pings;
        last_t = now;
    }
}
