//! The Chrome/Perfetto trace-event JSON (the "JSON Object Format" of the Trace Event Format that
//! chrome://tracing and ui.perfetto.dev open as they are).
//!
//! Layout: one process ("kernel"), one track per CPU (its `tid` is the CPU number, named `CPU n`
//! by `thread_name` metadata). On each track: a complete (`X`) slice per run of a thread, named by
//! the thread (`name:tid`), with the reason it left; `halt` slices where the CPU slept; a
//! zero-length `wakeup` slice where a CPU woke a thread, with a flow arrow (`s` -> `f`, bound to
//! the enclosing slice) to the switch-in it caused; IPIs, timer and shootdown events as instant
//! (`i`) events. Times are microseconds from the first event.
//!
//! Perfetto's own protobuf format would carry the same with CPU scheduling tracks of its own, but
//! no well-kept Rust crate writes it (the crates that exist are thin, rarely updated bindings over
//! generated code), and the JSON opens in both viewers; so JSON it is.

use serde_json::{Value, json};
use trace::{Kind, Record};

use crate::model::Timeline;

/// The process id every event uses.
const PID: u32 = 0;

/// The trace-event JSON of `t`.
pub fn to_json(t: &Timeline) -> Value {
    let mut events: Vec<Value> = Vec::new();
    events.push(json!({"ph": "M", "name": "process_name", "pid": PID, "tid": 0, "args": {"name": format!("kernel ({} CPUs)", t.nr_cpus)}}));
    for cpu in 0..t.nr_cpus {
        events.push(json!({"ph": "M", "name": "thread_name", "pid": PID, "tid": cpu, "args": {"name": format!("CPU {cpu}")}}));
        events.push(json!({"ph": "M", "name": "thread_sort_index", "pid": PID, "tid": cpu, "args": {"sort_index": cpu}}));
    }
    for s in t.slices.iter().filter(|s| !s.idle) {
        events.push(json!({
            "ph": "X", "cat": "sched", "name": t.label(s.tid), "pid": PID, "tid": s.cpu,
            "ts": t.us(s.start), "dur": t.us(s.end) - t.us(s.start),
            "args": {"tid": s.tid, "out": s.out.map_or("running", |r| r.name())},
        }));
    }
    for &(cpu, start, end) in &t.halts {
        events.push(json!({"ph": "X", "cat": "idle", "name": "halt", "pid": PID, "tid": cpu, "ts": t.us(start), "dur": t.us(end) - t.us(start)}));
    }
    for (id, w) in t.wakes.iter().enumerate() {
        let name = if w.new { "spawn" } else { "wakeup" };
        events.push(json!({
            "ph": "X", "cat": "sched", "name": format!("{name} {}", t.label(w.tid)), "pid": PID, "tid": w.waker_cpu,
            "ts": t.us(w.tsc), "dur": 0, "args": {"tid": w.tid, "target_cpu": w.target},
        }));
        if let Some((cpu, tsc)) = w.switch_in {
            events.push(json!({"ph": "s", "cat": "wakeup", "name": name, "id": id, "pid": PID, "tid": w.waker_cpu, "ts": t.us(w.tsc)}));
            events.push(json!({"ph": "f", "bp": "e", "cat": "wakeup", "name": name, "id": id, "pid": PID, "tid": cpu, "ts": t.us(tsc)}));
        }
    }
    for r in &t.records {
        if let Some(e) = instant(t, r) {
            events.push(e);
        }
    }
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {
            "tsc_hz": t.tsc_hz,
            "cpus": t.nr_cpus,
            "categories": t.mask.to_string(),
            "dropped": t.cpus.iter().map(|c| c.dropped).sum::<u64>(),
        },
    })
}

/// The instant event a record shows as, if any.
fn instant(t: &Timeline, r: &Record) -> Option<Value> {
    let (cat, name, args) = match r.kind()? {
        Kind::IpiSend => {
            let kind = trace::IpiKind::from_arg(r.arg).name();
            (
                "ipi",
                format!("ipi {kind} -> CPU {}", r.c),
                json!({"kind": kind, "target_cpu": r.c}),
            )
        }
        Kind::IpiReceive => {
            let kind = trace::IpiKind::from_arg(r.arg).name();
            ("ipi", format!("ipi {kind} received"), json!({"kind": kind}))
        }
        Kind::Steal => (
            "sched",
            format!("steal {} from CPU {}", t.label(r.a), r.c),
            json!({"tid": r.a, "victim_cpu": r.c}),
        ),
        Kind::ShootdownBegin => (
            "tlb",
            format!("shootdown {} begin", r.a),
            json!({"seq": r.a, "targets": r.c}),
        ),
        Kind::ShootdownAck => (
            "tlb",
            format!("shootdown {} of CPU {} ack", r.a, r.c),
            json!({"seq": r.a, "initiator": r.c}),
        ),
        Kind::ShootdownDone => (
            "tlb",
            format!("shootdown {} done", r.a),
            json!({"seq": r.a}),
        ),
        Kind::TimerArm if r.arg == 1 => ("timer", String::from("timer stopped"), json!({})),
        Kind::TimerArm => (
            "timer",
            String::from("timer armed"),
            json!({"deadline_ns": r.a}),
        ),
        Kind::TimerFire => ("timer", String::from("timer fired"), json!({})),
        Kind::SyscallEnter => (
            "syscall",
            format!("syscall {} enter", r.a),
            json!({"nr": r.a, "tid": r.b}),
        ),
        Kind::SyscallExit => (
            "syscall",
            format!("syscall {} exit", r.a),
            json!({"nr": r.a, "tid": r.b, "ret": r.c}),
        ),
        Kind::PageFault => (
            "fault",
            format!("page fault {:#x}", r.a),
            json!({"addr": r.a, "tid": r.b, "error": r.c}),
        ),
        Kind::Signal => (
            "signal",
            format!("signal {} -> {}", r.c, r.a),
            json!({"signo": r.c, "tid": r.a}),
        ),
        Kind::Switch | Kind::Wakeup | Kind::IdleEnter | Kind::IdleExit => return None,
    };
    Some(
        json!({"ph": "i", "s": "t", "cat": cat, "name": name, "pid": PID, "tid": r.cpu, "ts": t.us(r.tsc), "args": args}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::validate;
    use trace::synth;

    fn timeline(nr_cpus: usize) -> Timeline {
        Timeline::new(&synth::generate(&synth::Config {
            nr_cpus,
            seed: 3,
            ..Default::default()
        }))
    }

    #[test]
    fn the_json_of_synthetic_traces_passes_the_schema_check_at_1_2_4_and_8_cpus() {
        for n in [1, 2, 4, 8] {
            let json = to_json(&timeline(n));
            let counts = validate(&json).unwrap_or_else(|e| panic!("{n} CPUs: {e:#?}"));
            assert!(
                counts.slices > 0 && counts.flows > 0,
                "{n} CPUs: {counts:?}"
            );
        }
    }

    #[test]
    fn one_named_track_per_cpu_and_one_flow_pair_per_wake_up_that_ran() {
        let t = timeline(4);
        let json = to_json(&t);
        let events = json["traceEvents"].as_array().unwrap();
        let tracks: Vec<&str> = events
            .iter()
            .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
            .map(|e| e["args"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(tracks, ["CPU 0", "CPU 1", "CPU 2", "CPU 3"]);
        let ran = t.wakes.iter().filter(|w| w.switch_in.is_some()).count();
        assert_eq!(events.iter().filter(|e| e["ph"] == "s").count(), ran);
        assert_eq!(events.iter().filter(|e| e["ph"] == "f").count(), ran);
        // Every flow ends on the track and at the time of the switch-in it names.
        for w in t.wakes.iter().filter(|w| w.switch_in.is_some()) {
            let (cpu, tsc) = w.switch_in.unwrap();
            let starts_there = events.iter().any(|e| {
                e["ph"] == "X"
                    && e["tid"] == u64::from(cpu)
                    && e["ts"].as_f64() == Some(t.us(tsc))
                    && e["args"]["tid"] == w.tid
            });
            assert!(
                starts_there,
                "no slice of {} starts at its switch-in",
                w.tid
            );
        }
        let ipis = events
            .iter()
            .filter(|e| e["ph"] == "i" && e["cat"] == "ipi")
            .count();
        assert_eq!(ipis, t.ipis.len() * 2);
        let names: Vec<&str> = events
            .iter()
            .filter(|e| e["ph"] == "X" && e["cat"] == "sched")
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert!(names.iter().any(|n| n.starts_with("worker-")));
    }
}
