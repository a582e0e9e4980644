//! A dump turned into what the outputs draw: run slices per CPU, wake-up links with the switch-in
//! each caused, IPIs with their receipt, halts, and per-thread waits.
//!
//! Neighbours: `json`, `svg` and `summary` read a [`Timeline`]; `trace::Dump` is the input.

use std::collections::{BTreeMap, HashMap};

use trace::{
    Dump, IpiKind, Kind, Reason, Record,
    event::{SWITCH_NEXT_IDLE, SWITCH_PREV_IDLE, SWITCH_PREV_QUEUED, WAKE_NEW, WAKE_RUNNING},
};

/// A thread running on a CPU from `start` to `end` (TSC).
#[derive(Clone, Debug, PartialEq)]
pub struct Slice {
    pub cpu: u16,
    pub tid: u64,
    pub start: u64,
    pub end: u64,
    /// Why it left the CPU (`None`: still running when the trace ended).
    pub out: Option<Reason>,
    /// The CPU's idle thread.
    pub idle: bool,
}

/// A wake-up (or spawn) and the switch-in it led to.
#[derive(Clone, Debug, PartialEq)]
pub struct WakeLink {
    pub waker_cpu: u16,
    pub tsc: u64,
    pub tid: u64,
    pub target: u32,
    pub new: bool,
    /// Where and when the thread was switched in next: (cpu, tsc).
    pub switch_in: Option<(u16, u64)>,
}

/// An IPI and the receipt that answered it.
#[derive(Clone, Debug, PartialEq)]
pub struct Ipi {
    pub from: u16,
    pub tsc: u64,
    pub kind: IpiKind,
    pub target: u32,
    pub received: Option<u64>,
}

/// Per-thread totals, as `perf sched latency` shows them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThreadStats {
    pub runtime: u64,
    pub switches_in: u64,
    /// Waits from runnable (woken, spawned, yielded, preempted) to running, in ticks.
    pub waits: Vec<u64>,
    /// Wake-up to switch-in latencies, in ticks.
    pub wake_latencies: Vec<u64>,
    /// The switch-in after the longest wait: (tsc, wait).
    pub max_wait: Option<(u64, u64)>,
    pub migrations: u64,
}

/// Per-CPU totals.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuStats {
    pub busy: u64,
    pub idle: u64,
    pub halted: u64,
    pub switches: u64,
    pub wakeups_in: u64,
    /// Waits of the threads switched in here (ticks).
    pub waits: Vec<u64>,
    /// Wake-up latencies of the threads woken onto, and run on, this CPU (ticks).
    pub wake_latencies: Vec<u64>,
    pub migrations_in: u64,
    pub steals: u64,
    pub ipis_sent: u64,
    pub ipis_received: u64,
    pub timer_fires: u64,
    pub records: u64,
    pub dropped: u64,
}

/// Everything the outputs need.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    pub tsc_hz: u64,
    pub nr_cpus: usize,
    /// First and last time stamp of the trace.
    pub start: u64,
    pub end: u64,
    pub names: HashMap<u64, String>,
    pub slices: Vec<Slice>,
    pub wakes: Vec<WakeLink>,
    pub ipis: Vec<Ipi>,
    /// (cpu, start, end) of each halt.
    pub halts: Vec<(u16, u64, u64)>,
    /// Every record, in time order.
    pub records: Vec<Record>,
    pub threads: BTreeMap<u64, ThreadStats>,
    pub cpus: Vec<CpuStats>,
    pub mask: trace::Mask,
}

impl Timeline {
    /// Build the timeline of `dump`.
    pub fn new(dump: &Dump) -> Timeline {
        let nr_cpus = dump
            .cpus
            .iter()
            .map(|b| b.cpu as usize + 1)
            .max()
            .unwrap_or(0)
            .max(dump.header.nr_cpus as usize);
        let mut records: Vec<(u64, u16, usize, Record)> = Vec::new();
        let mut cpus = vec![CpuStats::default(); nr_cpus];
        for block in &dump.cpus {
            cpus[block.cpu as usize].dropped = block.dropped;
            cpus[block.cpu as usize].records = block.records.len() as u64;
            records.extend(
                block
                    .records
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (r.tsc, block.cpu as u16, i, *r)),
            );
        }
        records.sort_by_key(|&(tsc, cpu, i, _)| (tsc, cpu, i));
        let start = records.first().map_or(0, |r| r.0);
        let end = records.last().map_or(0, |r| r.0);
        let mut t = Timeline {
            tsc_hz: dump.header.tsc_hz.max(1),
            nr_cpus,
            start,
            end,
            names: dump.names.iter().cloned().collect(),
            records: records.iter().map(|r| r.3).collect(),
            cpus,
            mask: dump.header.mask,
            ..Timeline::default()
        };
        t.build();
        t
    }

    fn build(&mut self) {
        // Per CPU: the open slice (tid, start, idle).
        let mut open: HashMap<u16, (u64, u64, bool)> = HashMap::new();
        let mut pending_wake: HashMap<u64, usize> = HashMap::new();
        let mut runnable_since: HashMap<u64, u64> = HashMap::new();
        let mut last_cpu: HashMap<u64, u16> = HashMap::new();
        let mut pending_ipis: HashMap<(u32, IpiKind), Vec<usize>> = HashMap::new();
        let mut halted: HashMap<u16, u64> = HashMap::new();
        let records = std::mem::take(&mut self.records);
        for r in &records {
            let cpu = r.cpu;
            if cpu as usize >= self.cpus.len() {
                continue;
            }
            match r.kind() {
                Some(Kind::Switch) => {
                    let (prev, next) = (r.a, r.b);
                    let reason = Reason::from_arg(r.arg);
                    let (start, prev_idle) = match open.remove(&cpu) {
                        Some((tid, start, idle)) if tid == prev => (start, idle),
                        _ => (self.start, r.arg & SWITCH_PREV_IDLE != 0),
                    };
                    self.close(Slice {
                        cpu,
                        tid: prev,
                        start,
                        end: r.tsc,
                        out: reason,
                        idle: prev_idle,
                    });
                    let next_idle = r.arg & SWITCH_NEXT_IDLE != 0;
                    open.insert(cpu, (next, r.tsc, next_idle));
                    self.cpus[cpu as usize].switches += 1;
                    let requeued = reason.is_some_and(Reason::stays_runnable)
                        || r.arg & SWITCH_PREV_QUEUED != 0;
                    if requeued && !prev_idle {
                        runnable_since.insert(prev, r.tsc);
                    }
                    if next_idle {
                        continue;
                    }
                    let th = self.threads.entry(next).or_default();
                    th.switches_in += 1;
                    if let Some(prev_cpu) = last_cpu.insert(next, cpu)
                        && prev_cpu != cpu
                    {
                        th.migrations += 1;
                        self.cpus[cpu as usize].migrations_in += 1;
                    }
                    if let Some(since) = runnable_since.remove(&next) {
                        let wait = r.tsc.saturating_sub(since);
                        th.waits.push(wait);
                        if th.max_wait.is_none_or(|(_, w)| wait > w) {
                            th.max_wait = Some((r.tsc, wait));
                        }
                        self.cpus[cpu as usize].waits.push(wait);
                    }
                    if let Some(i) = pending_wake.remove(&next) {
                        let link = &mut self.wakes[i];
                        link.switch_in = Some((cpu, r.tsc));
                        let latency = r.tsc.saturating_sub(link.tsc);
                        th.wake_latencies.push(latency);
                        self.cpus[cpu as usize].wake_latencies.push(latency);
                    }
                }
                Some(Kind::Wakeup) if r.arg & WAKE_RUNNING == 0 => {
                    pending_wake.insert(r.a, self.wakes.len());
                    runnable_since.insert(r.a, r.tsc);
                    if let Some(target) = self.cpus.get_mut(r.c as usize) {
                        target.wakeups_in += 1;
                    }
                    self.wakes.push(WakeLink {
                        waker_cpu: cpu,
                        tsc: r.tsc,
                        tid: r.a,
                        target: r.c,
                        new: r.arg & WAKE_NEW != 0,
                        switch_in: None,
                    });
                }
                Some(Kind::Steal) => self.cpus[cpu as usize].steals += 1,
                Some(Kind::IpiSend) => {
                    let kind = IpiKind::from_arg(r.arg);
                    pending_ipis
                        .entry((r.c, kind))
                        .or_default()
                        .push(self.ipis.len());
                    self.cpus[cpu as usize].ipis_sent += 1;
                    self.ipis.push(Ipi {
                        from: cpu,
                        tsc: r.tsc,
                        kind,
                        target: r.c,
                        received: None,
                    });
                }
                Some(Kind::IpiReceive) => {
                    self.cpus[cpu as usize].ipis_received += 1;
                    // The APIC merges pending IPIs of one vector: this receipt answers them all.
                    for i in pending_ipis
                        .remove(&(u32::from(cpu), IpiKind::from_arg(r.arg)))
                        .unwrap_or_default()
                    {
                        self.ipis[i].received = Some(r.tsc);
                    }
                }
                Some(Kind::IdleEnter) => {
                    halted.insert(cpu, r.tsc);
                }
                Some(Kind::IdleExit) => {
                    if let Some(since) = halted.remove(&cpu) {
                        self.halts.push((cpu, since, r.tsc));
                        self.cpus[cpu as usize].halted += r.tsc - since;
                    }
                }
                Some(Kind::TimerFire) => self.cpus[cpu as usize].timer_fires += 1,
                _ => {}
            }
        }
        let mut still_open: Vec<_> = open.into_iter().collect();
        still_open.sort();
        for (cpu, (tid, start, idle)) in still_open {
            self.close(Slice {
                cpu,
                tid,
                start,
                end: self.end,
                out: None,
                idle,
            });
        }
        let mut still_halted: Vec<_> = halted.into_iter().collect();
        still_halted.sort();
        for (cpu, since) in still_halted {
            self.halts.push((cpu, since, self.end));
            self.cpus[cpu as usize].halted += self.end - since;
        }
        self.records = records;
        self.slices.sort_by_key(|s| (s.cpu, s.start));
        self.halts.sort();
    }

    fn close(&mut self, slice: Slice) {
        let len = slice.end - slice.start;
        let cpu = &mut self.cpus[slice.cpu as usize];
        if slice.idle {
            cpu.idle += len;
        } else {
            cpu.busy += len;
            self.threads.entry(slice.tid).or_default().runtime += len;
        }
        if slice.end > slice.start || !slice.idle {
            self.slices.push(slice);
        }
    }

    /// A thread's name as the outputs show it: `name:tid`, or `tid N` when the dump lacks it.
    pub fn label(&self, tid: u64) -> String {
        match self.names.get(&tid) {
            Some(name) => format!("{name}:{tid}"),
            None => format!("tid {tid}"),
        }
    }

    /// Ticks as microseconds since the trace's start.
    pub fn us(&self, tsc: u64) -> f64 {
        self.ticks_us(tsc.saturating_sub(self.start))
    }

    /// A duration in ticks as microseconds.
    pub fn ticks_us(&self, ticks: u64) -> f64 {
        ticks as f64 * 1e6 / self.tsc_hz as f64
    }

    /// The trace's length in ticks.
    pub fn span(&self) -> u64 {
        self.end - self.start
    }
}

/// The `p`th percentile (0..=100) of `values` by nearest rank, or `None` if empty.
pub fn percentile(values: &[u64], p: u32) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((p as usize * sorted.len()).div_ceil(100)).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use trace::synth;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v = [5, 1, 4, 2, 3];
        assert_eq!(percentile(&v, 50), Some(3));
        assert_eq!(percentile(&v, 100), Some(5));
        assert_eq!(percentile(&v, 0), Some(1));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn slices_cover_each_cpu_without_overlap_and_busy_plus_idle_is_the_span() {
        let dump = synth::generate(&synth::Config {
            nr_cpus: 4,
            ..Default::default()
        });
        let t = Timeline::new(&dump);
        for cpu in 0..4u16 {
            let mine: Vec<&Slice> = t.slices.iter().filter(|s| s.cpu == cpu).collect();
            assert!(
                mine.windows(2).all(|w| w[0].end <= w[1].start),
                "CPU {cpu} slices overlap"
            );
            assert!(
                mine.windows(2).all(|w| w[0].end == w[1].start),
                "CPU {cpu} slices leave a gap"
            );
            let c = &t.cpus[cpu as usize];
            assert_eq!(c.busy + c.idle, t.span(), "CPU {cpu}");
        }
    }

    #[test]
    fn every_wake_up_of_a_complete_trace_finds_its_switch_in_on_the_right_cpu() {
        let dump = synth::generate(&synth::Config {
            nr_cpus: 2,
            ..Default::default()
        });
        let t = Timeline::new(&dump);
        assert!(!t.wakes.is_empty());
        for w in &t.wakes {
            let (cpu, tsc) = w.switch_in.expect("a wake-up without its switch-in");
            assert!(tsc >= w.tsc);
            // Unless stolen, it runs where it was woken onto.
            let stolen = t.records.iter().any(|r| {
                r.kind() == Some(Kind::Steal) && r.a == w.tid && r.tsc > w.tsc && r.tsc < tsc
            });
            assert!(stolen || u32::from(cpu) == w.target);
        }
        assert!(t.ipis.iter().all(|i| i.received.is_some()));
    }
}
