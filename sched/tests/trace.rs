//! The scheduler's trace points, recorded natively: a workload of semaphore ping-pong, sleeps,
//! yields, ticks (preemption) and short-lived threads runs on 1, 2 and 4 host CPUs with a trace
//! hook that records every event into `trace` rings; the conservation check over the dump must
//! pass whole (the run starts and ends quiet), and fail once any switch, wake-up or steal is
//! removed.

mod common;

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use common::watchdog;
use sched::{
    Builder, Config, CpuIndex, Scheduler, Semaphore, TraceEvent,
    host::{self, HostPlatform},
};
use trace::{Dump, Kind, Mask, Tracer, check, event::WAKE_RUNNING};

type Sched = &'static Scheduler<HostPlatform>;

const CPU_COUNTS: [usize; 3] = [1, 2, 4];
/// One tracer per CPU count, so the runs need no shared state beyond them.
static TRACERS: [OnceLock<Tracer>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The host's stand-in for the TSC: monotonic nanoseconds, the same clock on every OS thread.
fn stamp() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn hook<const I: usize>(cpu: CpuIndex, event: TraceEvent) {
    let tracer = TRACERS[I].get().expect("tracer made before the run");
    let (record, name) = event.record(stamp(), cpu.0 as u16);
    if let Some((id, name)) = name {
        tracer.name_thread(id, name);
    }
    if let Some(r) = record {
        tracer.record(cpu.index(), &r);
    }
}

fn workload(s: Sched) {
    let sems = Arc::new([Semaphore::new(1), Semaphore::new(0)]);
    let pongs: Vec<_> = (0..2usize)
        .map(|side| {
            let sems = sems.clone();
            s.spawn(Builder::new("pong"), move || {
                for _ in 0..300 {
                    sems[side].acquire(s);
                    sems[1 - side].release(s);
                }
            })
            .unwrap()
        })
        .collect();
    let workers: Vec<_> = (0..6u64)
        .map(|i| {
            s.spawn(Builder::new("worker"), move || {
                for round in 0..40u64 {
                    match (i + round) % 4 {
                        0 => s.yield_now(),
                        1 => s.sleep_ns(20_000),
                        2 => host::tick(s),
                        _ => {
                            let h = s.spawn(Builder::new("short"), || 1u32).unwrap();
                            assert_eq!(h.join(), Some(1));
                        }
                    }
                }
            })
            .unwrap()
        })
        .collect();
    pongs.into_iter().chain(workers).for_each(|h| {
        h.join().unwrap();
    });
}

fn traced_run<const I: usize>() -> Dump {
    let nr_cpus = CPU_COUNTS[I];
    let tracer = TRACERS[I].get_or_init(|| Tracer::new(nr_cpus, 1 << 16));
    let platform = HostPlatform::new(nr_cpus).with_trace_hook(hook::<I>);
    host::run_on(
        platform,
        Config {
            slice_ns: 50_000,
            ..Config::default()
        },
        workload,
    );
    let mut bytes = Vec::new();
    tracer.dump(
        &mut bytes,
        1_000_000_000,
        Mask::NONE.with(trace::Category::Sched),
    );
    Dump::parse(&bytes).expect("the dump reads back")
}

fn assert_conserved(dump: &Dump, nr_cpus: usize) {
    let report = check::check(
        dump,
        check::Options {
            complete: true,
            running_at_end: None,
        },
    );
    assert!(report.is_ok(), "{nr_cpus} CPUs:\n{report}");
    assert_eq!(report.dropped, 0);
    assert!(
        report.counts.switches > 600 && report.counts.wakeups > 300,
        "{report}"
    );
}

#[test]
fn traced_host_runs_conserve_and_a_lost_event_is_caught() {
    let _w = watchdog(
        "traced_host_runs_conserve_and_a_lost_event_is_caught",
        Duration::from_secs(120),
    );
    let dumps = [traced_run::<0>(), traced_run::<1>(), traced_run::<2>()];
    for (dump, nr_cpus) in dumps.iter().zip(CPU_COUNTS) {
        assert_conserved(dump, nr_cpus);
        assert!(dump.names.iter().any(|(_, n)| n == "pong"));
        assert_eq!(
            dump.names.iter().filter(|(_, n)| n == "idle").count(),
            nr_cpus
        );
    }
    let dump = &dumps[2];
    for kind in [Kind::Switch, Kind::Wakeup, Kind::Steal] {
        let positions: Vec<(usize, usize)> = dump
            .cpus
            .iter()
            .enumerate()
            .flat_map(|(b, block)| {
                block
                    .records
                    .iter()
                    .enumerate()
                    // A wake-up of a thread still running queued nothing: losing it changes no
                    // state the checker follows (as in the in-kernel trace test).
                    .filter(|(_, r)| r.kind() == Some(kind) && !(kind == Kind::Wakeup && r.arg & WAKE_RUNNING != 0))
                    .map(move |(i, _)| (b, i))
            })
            .collect();
        for &(b, i) in positions.iter().step_by((positions.len() / 25).max(1)) {
            let mut lossy = dump.clone();
            lossy.cpus[b].records.remove(i);
            let report = check::check(
                &lossy,
                check::Options {
                    complete: true,
                    running_at_end: None,
                },
            );
            assert!(
                !report.is_ok(),
                "losing {kind:?} at CPU {b} record {i} went unnoticed"
            );
        }
    }
}
