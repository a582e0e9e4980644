//! The conservation check against synthetic dumps: whole ones pass at 1, 2, 4 and 8 CPUs, and
//! removing one event of any conserved kind makes the check fail. Plus the races a real kernel
//! records that a naive check would misread.

use trace::{
    Dump, IpiKind, Kind, Reason, Record,
    check::{Options, check},
    dump::{CpuBlock, Header},
    event::{SWITCH_NEXT_IDLE, SWITCH_PREV_IDLE, SWITCH_PREV_QUEUED, WAKE_NEW, WAKE_RUNNING},
    synth::{self, Config},
};

const COMPLETE: Options = Options {
    complete: true,
    running_at_end: None,
};

fn synthetic(nr_cpus: usize, seed: u64) -> Dump {
    synth::generate(&Config {
        nr_cpus,
        threads: 3 * nr_cpus,
        steps: 400 * nr_cpus,
        seed,
        ..Config::default()
    })
}

/// The dump without the `nth` record of `kind` (in CPU order, then ring order).
fn without(dump: &Dump, kind: Kind, nth: usize) -> Dump {
    let mut d = dump.clone();
    let mut seen = 0;
    for block in &mut d.cpus {
        if let Some(i) = block
            .records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.kind() == Some(kind))
            .map(|(i, _)| i)
            .nth(nth - seen)
        {
            block.records.remove(i);
            return d;
        }
        seen += block
            .records
            .iter()
            .filter(|r| r.kind() == Some(kind))
            .count();
    }
    panic!("no record {nth} of {kind:?}");
}

fn count(dump: &Dump, kind: Kind) -> usize {
    dump.cpus
        .iter()
        .flat_map(|b| &b.records)
        .filter(|r| r.kind() == Some(kind))
        .count()
}

#[test]
fn synthetic_traces_conserve_at_1_2_4_and_8_cpus() {
    for nr_cpus in [1, 2, 4, 8] {
        for seed in [1, 2, 3] {
            let dump = synthetic(nr_cpus, seed);
            let report = check(&dump, COMPLETE);
            assert!(report.is_ok(), "{nr_cpus} CPUs, seed {seed}:\n{report}");
            assert!(report.open.is_empty());
            assert!(report.counts.switches > 0 && report.counts.wakeups > 0);
            if nr_cpus > 1 {
                assert!(report.counts.ipis_sent > 0 && report.counts.shootdowns > 0);
                assert_eq!(report.counts.ipis_sent, report.counts.ipis_received);
            }
        }
    }
}

#[test]
fn losing_any_conserved_event_fails_the_check() {
    let dump = synthetic(4, 7);
    let kinds = [
        Kind::Switch,
        Kind::Wakeup,
        Kind::Steal,
        Kind::IpiSend,
        Kind::ShootdownBegin,
        Kind::ShootdownAck,
        Kind::ShootdownDone,
    ];
    for kind in kinds {
        let n = count(&dump, kind);
        assert!(n > 0, "the synthetic trace has no {kind:?}");
        // Every occurrence for the rarer kinds, a spread of 60 for the frequent ones.
        let step = (n / 60).max(1);
        for nth in (0..n).step_by(step) {
            let report = check(&without(&dump, kind, nth), COMPLETE);
            if report.is_ok() {
                let lost: Vec<_> = dump
                    .cpus
                    .iter()
                    .flat_map(|b| &b.records)
                    .filter(|r| r.kind() == Some(kind))
                    .collect();
                let r = lost[nth];
                let related: Vec<_> = dump
                    .cpus
                    .iter()
                    .flat_map(|b| &b.records)
                    .filter(|x| x.tsc + 400 > r.tsc && x.tsc < r.tsc + 400)
                    .collect();
                panic!("losing {kind:?} number {nth} of {n} went unnoticed: {r:?}\n{related:#?}");
            }
        }
    }
}

#[test]
fn losing_the_last_ipi_receipt_of_a_cpu_fails_the_check() {
    // Earlier receipts can be covered by a later one: the APIC merges pending IPIs of a vector.
    let dump = synthetic(4, 11);
    for (b, block) in dump.cpus.iter().enumerate() {
        for kind in [IpiKind::Resched, IpiKind::Shootdown] {
            let last = block
                .records
                .iter()
                .rposition(|r| r.kind() == Some(Kind::IpiReceive) && r.arg == kind as u8);
            if let Some(i) = last {
                let mut d = dump.clone();
                d.cpus[b].records.remove(i);
                assert!(
                    !check(&d, COMPLETE).is_ok(),
                    "losing CPU {b}'s last {kind:?} receipt went unnoticed"
                );
            }
        }
    }
}

#[test]
fn an_incomplete_trace_reports_its_edges_without_failing() {
    let dump = synthetic(2, 5);
    // Cut the trace in the middle: causes without effects at the end, effects without causes at
    // the start of the second half.
    let mid = dump
        .cpus
        .iter()
        .flat_map(|b| &b.records)
        .map(|r| r.tsc)
        .max()
        .unwrap()
        / 2;
    let mut head = dump.clone();
    head.cpus
        .iter_mut()
        .for_each(|b| b.records.retain(|r| r.tsc < mid));
    let report = check(&head, Options::default());
    assert!(report.is_ok(), "{report}");
    assert!(!check(&head, COMPLETE).is_ok() || report.open.is_empty());
}

#[test]
fn lost_records_move_the_window_and_fail_a_complete_check() {
    let mut dump = synthetic(2, 9);
    let cut = dump.cpus[1].records.len() / 3;
    dump.cpus[1].records.drain(..cut);
    dump.cpus[1].dropped = cut as u64;
    let report = check(&dump, Options::default());
    assert_eq!(report.window_start, Some(dump.cpus[1].records[0].tsc));
    assert_eq!(report.dropped, cut as u64);
    assert!(!check(&dump, COMPLETE).is_ok());
}

fn dump_of(records: Vec<Record>, nr_cpus: u32) -> Dump {
    Dump {
        header: Header {
            nr_cpus,
            tsc_hz: 1_000_000,
            mask: trace::Mask::ALL,
            capacity: 64,
        },
        names: vec![],
        cpus: (0..nr_cpus)
            .map(|cpu| CpuBlock {
                cpu,
                records: records
                    .iter()
                    .copied()
                    .filter(|r| u32::from(r.cpu) == cpu)
                    .collect(),
                dropped: 0,
            })
            .collect(),
    }
}

#[test]
fn a_wake_up_recorded_before_the_sleepers_switch_out_is_fine() {
    // Thread 10 blocks on CPU 0; CPU 1 wakes it after CPU 0 took it off the queue but before
    // CPU 0 recorded the switch; then CPU 0 runs it again.
    let records = vec![
        Record::switch(1, 0, 1, 10, Reason::Idle, SWITCH_PREV_IDLE),
        Record::wakeup(2, 1, 10, 0, 0),
        Record::switch(3, 0, 10, 1, Reason::Block, SWITCH_NEXT_IDLE),
        Record::switch(4, 0, 1, 10, Reason::Idle, SWITCH_PREV_IDLE),
    ];
    let report = check(&dump_of(records, 2), Options::default());
    assert!(report.is_ok(), "{report}");
}

#[test]
fn a_wake_up_of_a_thread_still_on_its_cpu_expects_no_switch_in() {
    let records = vec![
        Record::wakeup(1, 0, 10, 0, WAKE_NEW),
        Record::wakeup(2, 0, 11, 0, WAKE_NEW),
        Record::switch(3, 0, 1, 10, Reason::Idle, SWITCH_PREV_IDLE),
        Record::wakeup(4, 1, 10, 0, WAKE_RUNNING),
        Record::switch(5, 0, 10, 11, Reason::Block, SWITCH_PREV_QUEUED),
        Record::switch(6, 0, 11, 10, Reason::Yield, 0),
    ];
    let options = Options {
        running_at_end: Some((0, 10)),
        ..COMPLETE
    };
    let report = check(&dump_of(records, 2), options);
    // Thread 11 yielded and is queued at the end: a complete trace says so.
    assert_eq!(report.violations.len(), 1, "{report}");
    assert!(report.violations[0].what.contains("thread 11"));
}

#[test]
fn a_steal_moves_the_expected_cpu_and_a_missing_one_is_caught() {
    let base = vec![
        Record::wakeup(1, 0, 10, 0, 0),
        Record::steal(2, 1, 10, 0),
        Record::switch(3, 1, 2, 10, Reason::Idle, SWITCH_PREV_IDLE),
    ];
    let options = Options {
        running_at_end: Some((1, 10)),
        ..COMPLETE
    };
    assert!(check(&dump_of(base.clone(), 2), options).is_ok());
    let mut lost = base;
    lost.remove(1);
    let report = check(&dump_of(lost, 2), options);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.what.contains("without a steal")),
        "{report}"
    );
}

#[test]
fn merged_ipis_pass_and_an_unanswered_one_fails() {
    let merged = vec![
        Record::ipi_send(1, 0, IpiKind::Shootdown, 1),
        Record::ipi_send(2, 2, IpiKind::Shootdown, 1),
        Record::ipi_receive(3, 1, IpiKind::Shootdown),
    ];
    assert!(check(&dump_of(merged, 3), COMPLETE).is_ok());
    let lost = vec![
        Record::ipi_send(1, 0, IpiKind::Resched, 1),
        Record::ipi_receive(2, 1, IpiKind::Resched),
        Record::ipi_send(3, 0, IpiKind::Resched, 1),
    ];
    assert!(!check(&dump_of(lost.clone(), 2), COMPLETE).is_ok());
    assert_eq!(check(&dump_of(lost, 2), Options::default()).open.len(), 1);
}

#[test]
fn a_shootdown_needs_exactly_its_acknowledgements() {
    let short = vec![
        Record::shootdown_begin(1, 0, 5, 2),
        Record::shootdown_ack(2, 1, 5, 0),
        Record::shootdown_done(3, 0, 5),
    ];
    let report = check(&dump_of(short, 3), COMPLETE);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.what.contains("1 acknowledgements for 2 targets")),
        "{report}"
    );
}
