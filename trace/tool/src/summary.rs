//! The text summary: per CPU (busy, idle and halted time, switches, waits, wake-up-to-run latency
//! percentiles, migrations, IPIs, lost records) and per thread, like `perf sched latency`
//! (runtime, switches, average and maximum delay and when the maximum happened).

use std::fmt::Write;

use crate::model::{Timeline, percentile};

fn ms(t: &Timeline, ticks: u64) -> f64 {
    t.ticks_us(ticks) / 1000.0
}

fn us_or_dash(t: &Timeline, v: Option<u64>) -> String {
    v.map_or_else(|| String::from("-"), |v| format!("{:.1}", t.ticks_us(v)))
}

/// The summary of `t`.
pub fn to_text(t: &Timeline) -> String {
    let mut out = String::new();
    let records: u64 = t.cpus.iter().map(|c| c.records).sum();
    let dropped: u64 = t.cpus.iter().map(|c| c.dropped).sum();
    let _ = writeln!(
        out,
        "trace: {} CPUs, {:.3} ms, TSC {:.1} MHz, categories {}, {records} records, {dropped} dropped",
        t.nr_cpus,
        ms(t, t.span()),
        t.tsc_hz as f64 / 1e6,
        t.mask
    );
    if dropped > 0 {
        let _ = writeln!(
            out,
            "note: rings overflowed; the earliest events of the CPUs that dropped records are missing"
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>4} {:>10} {:>10} {:>10} {:>9} {:>8} {:>10} {:>33} {:>6} {:>6} {:>11} {:>8}",
        "CPU",
        "busy ms",
        "idle ms",
        "halt ms",
        "switches",
        "wakeups",
        "wait ms",
        "wake-to-run us p50/p90/p99/max",
        "migr",
        "steal",
        "IPIs out/in",
        "dropped"
    );
    for (cpu, c) in t.cpus.iter().enumerate() {
        let lat = &c.wake_latencies;
        let pct = format!(
            "{}/{}/{}/{}",
            us_or_dash(t, percentile(lat, 50)),
            us_or_dash(t, percentile(lat, 90)),
            us_or_dash(t, percentile(lat, 99)),
            us_or_dash(t, lat.iter().copied().max())
        );
        let _ = writeln!(
            out,
            "{cpu:>4} {:>10.3} {:>10.3} {:>10.3} {:>9} {:>8} {:>10.3} {pct:>33} {:>6} {:>6} {:>11} {:>8}",
            ms(t, c.busy),
            ms(t, c.idle),
            ms(t, c.halted),
            c.switches,
            c.wakeups_in,
            ms(t, c.waits.iter().sum()),
            c.migrations_in,
            c.steals,
            format!("{}/{}", c.ipis_sent, c.ipis_received),
            c.dropped
        );
    }
    let all: Vec<u64> = t
        .cpus
        .iter()
        .flat_map(|c| c.wake_latencies.iter().copied())
        .collect();
    let _ = writeln!(
        out,
        "all  wake-to-run latency us: p50 {} p90 {} p99 {} max {} ({} wake-ups ran)",
        us_or_dash(t, percentile(&all, 50)),
        us_or_dash(t, percentile(&all, 90)),
        us_or_dash(t, percentile(&all, 99)),
        us_or_dash(t, all.iter().copied().max()),
        all.len()
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        " {:<28}| {:>12} | {:>9} | {:>12} | {:>12} | {:>14} | {:>5}",
        "Task", "Runtime ms", "Switches", "Avg delay ms", "Max delay ms", "Max delay at", "Migr"
    );
    let _ = writeln!(out, "{}", "-".repeat(110));
    let mut threads: Vec<(&u64, &crate::model::ThreadStats)> = t.threads.iter().collect();
    threads.sort_by(|a, b| b.1.runtime.cmp(&a.1.runtime).then(a.0.cmp(b.0)));
    for (tid, th) in threads {
        let avg = if th.waits.is_empty() {
            0
        } else {
            th.waits.iter().sum::<u64>() / th.waits.len() as u64
        };
        let (at, max) = th.max_wait.unwrap_or((t.start, 0));
        let _ = writeln!(
            out,
            " {:<28}| {:>12.3} | {:>9} | {:>12.3} | {:>12.3} | {:>12.6} s | {:>5}",
            t.label(*tid),
            ms(t, th.runtime),
            th.switches_in,
            ms(t, avg),
            ms(t, max),
            t.us(at) / 1e6,
            th.migrations
        );
    }
    out
}
