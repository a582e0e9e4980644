//! The conservation check: what went in must come out, across every CPU of a dump.
//!
//! Rules (each broken one is a [`Violation`] naming the time, the CPU and the thread or IPI):
//! - **Switches chain.** On each CPU, the thread a switch brings in is the one the next switch
//!   takes out; a thread is never switched in on one CPU while it still runs on another; an
//!   exited thread never runs again.
//! - **Runnable threads run where they are queued.** A wake-up (or a spawn) onto CPU `X`, and a
//!   yield or preemption on `X`, queue the thread on `X`; its next switch-in is on `X`, unless a
//!   steal moved it (then on the thief). A thread woken twice without running in between, or that
//!   blocked and ran again without a wake-up, lost an event.
//! - **IPIs arrive.** Every IPI sent to `X` is followed by a receipt of its kind on `X`. The local
//!   APIC merges IPIs of one vector that arrive while one is pending, so one receipt may answer
//!   several sends made before it, and a lost receipt is only noticed when no later one covers
//!   its send; but each receipt needs a send of its own, so at no time may `X` have received more
//!   IPIs of a kind than were sent to it. (A send is stamped before the interrupt command is
//!   written, so a send racing a receipt is counted before it.)
//! - **Shootdowns complete.** Every shootdown begun is completed on its CPU after exactly as many
//!   acknowledgements as it had targets, none after completion.
//! - **Halts pair.** Each CPU leaves a halt before it enters the next, and leaves only halts it
//!   entered (but its first event may end a halt from before the trace).
//!
//! The edges of a trace are special: a trace switched on while IPIs were in flight, or one whose
//! rings overflowed (the check then starts where every CPU's events are complete), can hold effects
//! whose causes are missing; one switched off mid-flight holds causes without effects. Such edge
//! findings are [`Report::open`], and become violations only when the caller says the trace is
//! [`Options::complete`]: recorded from a quiet system until a quiet system (the in-kernel test).
//!
//! Cross-CPU order comes from the TSC, which must be synchronised between CPUs (invariant TSC, as
//! QEMU and current hardware give). Neighbours: `dump::Dump` (the input); the host tool's `--check`
//! and the kernel's trace test call [`check`].

extern crate alloc;

use alloc::{
    collections::{BTreeMap, BTreeSet},
    format,
    string::String,
    vec::Vec,
};
use core::fmt;

use crate::{
    dump::Dump,
    event::{
        IpiKind, Kind, Reason, Record, SWITCH_NEXT_IDLE, SWITCH_PREV_QUEUED, WAKE_NEW, WAKE_RUNNING,
    },
};

/// How to judge a trace's edges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// The trace starts and ends with nothing in flight: unmatched events at its edges are
    /// violations too, and every CPU ends in its idle thread, except for `running_at_end`.
    pub complete: bool,
    /// The one thread a complete trace may end with still running: (CPU, thread id), e.g. the
    /// thread that stopped the trace to check it.
    pub running_at_end: Option<(u16, u64)>,
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// When (TSC).
    pub tsc: u64,
    /// On which CPU the event that broke it was recorded.
    pub cpu: u16,
    /// What went wrong.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tsc {} cpu {}: {}", self.tsc, self.cpu, self.what)
    }
}

/// What the check counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Switches.
    pub switches: u64,
    /// Wake-ups and spawns that queued a thread.
    pub wakeups: u64,
    /// Steals.
    pub steals: u64,
    /// IPIs sent.
    pub ipis_sent: u64,
    /// IPIs received.
    pub ipis_received: u64,
    /// Shootdowns completed.
    pub shootdowns: u64,
    /// Shootdown acknowledgements.
    pub acks: u64,
}

/// The outcome of [`check`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Broken rules.
    pub violations: Vec<Violation>,
    /// Unmatched events at the trace's edges (violations instead when the trace is complete).
    pub open: Vec<Violation>,
    /// What was checked.
    pub counts: Counts,
    /// Records the rings lost.
    pub dropped: u64,
    /// Where the check started (TSC), if lost records made it skip a prefix.
    pub window_start: Option<u64>,
}

impl Report {
    /// Whether no rule was broken.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        writeln!(
            f,
            "conservation: {} switches, {} wake-ups, {} steals, {} IPIs sent / {} received, {} shootdowns / {} acks, {} records dropped",
            c.switches,
            c.wakeups,
            c.steals,
            c.ipis_sent,
            c.ipis_received,
            c.shootdowns,
            c.acks,
            self.dropped
        )?;
        if let Some(start) = self.window_start {
            writeln!(
                f,
                "  records were lost: checked from tsc {start} on, where every CPU's events are complete"
            )?;
        }
        for v in &self.violations {
            writeln!(f, "  VIOLATION {v}")?;
        }
        for v in &self.open {
            writeln!(f, "  open at an edge: {v}")?;
        }
        write!(
            f,
            "{}",
            if self.is_ok() {
                "conservation: ok"
            } else {
                "conservation: FAILED"
            }
        )
    }
}

/// Where a thread stands, as far as the trace has shown.
#[derive(Default)]
struct ThreadState {
    /// The CPU it runs on (between its switch-in and switch-out).
    running_on: Option<u16>,
    /// Runnable and queued on this CPU since (tsc, why), until it is switched in.
    queued: Option<(u16, u64, &'static str)>,
    /// Its last switch-out was a block that left it off every queue, and no wake-up queued it
    /// since.
    blocked_unwoken: bool,
    /// It was seen switching in at least once.
    seen_in: bool,
    /// It was seen at all (switched, woken, stolen).
    known: bool,
    exited: bool,
}

/// One CPU's IPIs of one kind.
#[derive(Default)]
struct IpiLine {
    /// Sent so far.
    sent: u64,
    /// Received so far.
    received: u64,
    /// Sends since the last receipt: how many, and the first one's (tsc, sending CPU).
    unanswered: Option<(u64, u64, u16)>,
}

/// One shootdown.
#[derive(Default)]
struct ShootdownState {
    /// When it began (TSC), if that is in the trace.
    begun: Option<u64>,
    targets: u32,
    acks: u32,
    done: bool,
}

struct Checker {
    report: Report,
    complete: bool,
    threads: BTreeMap<u64, ThreadState>,
    /// Per (target CPU, IPI kind).
    ipis: BTreeMap<(u32, IpiKind), IpiLine>,
    /// Per (initiator CPU, its shootdown number).
    shootdowns: BTreeMap<(u32, u64), ShootdownState>,
    /// Per CPU: halted since (tsc).
    halted: BTreeMap<u16, u64>,
    /// CPUs known to be outside a halt from before the trace (they switched, stole or halted).
    cpus_seen: BTreeSet<u16>,
    /// Per CPU: the thread the last switch brought in, and whether it is the idle thread.
    current: BTreeMap<u16, (u64, bool)>,
    running_at_end: Option<(u16, u64)>,
}

impl Checker {
    fn violation(&mut self, r: &Record, what: String) {
        self.report.violations.push(Violation {
            tsc: r.tsc,
            cpu: r.cpu,
            what,
        });
    }

    fn edge(&mut self, tsc: u64, cpu: u16, what: String) {
        let v = Violation { tsc, cpu, what };
        if self.complete {
            self.report.violations.push(v);
        } else {
            self.report.open.push(v);
        }
    }

    fn event(&mut self, r: &Record) {
        match r.kind() {
            Some(Kind::Switch) => self.switch(r),
            Some(Kind::Wakeup) => self.wakeup(r),
            Some(Kind::Steal) => self.steal(r),
            Some(Kind::IpiSend) => {
                self.report.counts.ipis_sent += 1;
                let line = self
                    .ipis
                    .entry((r.c, IpiKind::from_arg(r.arg)))
                    .or_default();
                line.sent += 1;
                let first = line.unanswered.map_or((r.tsc, r.cpu), |(_, t, c)| (t, c));
                line.unanswered = Some((line.unanswered.map_or(0, |u| u.0) + 1, first.0, first.1));
            }
            Some(Kind::IpiReceive) => {
                self.report.counts.ipis_received += 1;
                let kind = IpiKind::from_arg(r.arg);
                let line = self.ipis.entry((u32::from(r.cpu), kind)).or_default();
                line.received += 1;
                line.unanswered = None;
                if line.received > line.sent {
                    let what = format!(
                        "{} {} IPIs received, but only {} sent here",
                        line.received,
                        kind.name(),
                        line.sent
                    );
                    line.received = line.sent;
                    self.edge(r.tsc, r.cpu, what);
                }
            }
            Some(Kind::ShootdownBegin) => {
                let sd = self.shootdowns.entry((u32::from(r.cpu), r.a)).or_default();
                if sd.begun.is_some() {
                    self.violation(r, format!("shootdown {} begun twice", r.a));
                } else {
                    sd.begun = Some(r.tsc);
                    sd.targets = r.c;
                }
            }
            Some(Kind::ShootdownAck) => {
                self.report.counts.acks += 1;
                let sd = self.shootdowns.entry((r.c, r.a)).or_default();
                sd.acks += 1;
                if sd.done {
                    self.violation(
                        r,
                        format!(
                            "acknowledged shootdown {} of CPU {} after it completed",
                            r.a, r.c
                        ),
                    );
                }
            }
            Some(Kind::ShootdownDone) => {
                self.report.counts.shootdowns += 1;
                let sd = self.shootdowns.entry((u32::from(r.cpu), r.a)).or_default();
                sd.done = true;
                let (begun, targets, acks) = (sd.begun, sd.targets, sd.acks);
                match begun {
                    Some(_) if acks != targets => self.violation(
                        r,
                        format!("shootdown {} completed with {acks} acknowledgements for {targets} targets", r.a),
                    ),
                    Some(_) => {}
                    None => self.edge(r.tsc, r.cpu, format!("shootdown {} completed but its beginning is not in the trace", r.a)),
                }
            }
            Some(Kind::IdleEnter) => {
                if let Some(since) = self.halted.insert(r.cpu, r.tsc) {
                    self.violation(
                        r,
                        format!("halted again without leaving the halt entered at tsc {since}"),
                    );
                }
            }
            // A CPU's first event may end a halt from before the trace: nothing was in flight.
            Some(Kind::IdleExit)
                if self.halted.remove(&r.cpu).is_none() && self.cpus_seen.contains(&r.cpu) =>
            {
                self.violation(r, String::from("left a halt it was not seen to enter"));
            }
            _ => {}
        }
        // Interrupt handlers run (and record wake-ups, IPIs, timer settings) inside a halt that
        // may have begun before the trace; only these happen outside one.
        if matches!(
            r.kind(),
            Some(Kind::Switch | Kind::Steal | Kind::IdleEnter | Kind::IdleExit)
        ) {
            self.cpus_seen.insert(r.cpu);
        }
    }

    fn switch(&mut self, r: &Record) {
        self.report.counts.switches += 1;
        let (prev, next) = (r.a, r.b);
        let reason = Reason::from_arg(r.arg);
        if let Some(&(current, _)) = self.current.get(&r.cpu)
            && current != prev
        {
            self.violation(r, format!("switch out of thread {prev}, but the last switch here brought in thread {current}"));
        }
        self.current
            .insert(r.cpu, (next, r.arg & SWITCH_NEXT_IDLE != 0));
        let p = self.threads.entry(prev).or_default();
        let switched_out_while_queued = p.running_on.is_none() && p.queued.is_some();
        let seen_in = p.seen_in;
        p.known = true;
        p.running_on = None;
        match reason {
            Some(Reason::Yield | Reason::Preempt) => {
                p.queued = Some((r.cpu, r.tsc, "yielded or was preempted"))
            }
            // A wake-up overtook the block: the switch path put it back on this queue.
            Some(Reason::Block) if r.arg & SWITCH_PREV_QUEUED != 0 => {
                p.queued = Some((r.cpu, r.tsc, "was woken before it left the CPU"))
            }
            // Off every queue, unless a wake-up queued it already (it may be stamped before the
            // switch that took it off, which it waited for).
            Some(Reason::Block) => p.blocked_unwoken = p.queued.is_none(),
            Some(Reason::Exit) => p.exited = true,
            Some(Reason::Idle) | None => {}
        }
        let n = self.threads.entry(next).or_default();
        let mut problems: Vec<String> = Vec::new();
        let mut unqueued_unknown = false;
        if n.queued.is_none() && r.arg & SWITCH_NEXT_IDLE == 0 {
            if n.known {
                problems.push(format!("thread {next} switched in, but it was not queued (no wake-up, spawn, yield or preemption)"));
            } else {
                unqueued_unknown = true;
            }
        }
        if n.exited {
            problems.push(format!("thread {next} switched in after it exited"));
        }
        if let Some(other) = n.running_on {
            problems.push(format!(
                "thread {next} switched in while it still runs on CPU {other}"
            ));
        }
        if n.blocked_unwoken {
            problems.push(format!(
                "thread {next} blocked and was switched in again without a wake-up"
            ));
        }
        if let Some((cpu, _, why)) = n.queued
            && cpu != r.cpu
        {
            problems.push(format!(
                "thread {next} {why} onto CPU {cpu} but was switched in here without a steal"
            ));
        }
        n.running_on = Some(r.cpu);
        n.seen_in = true;
        n.known = true;
        n.queued = None;
        n.blocked_unwoken = false;
        for p in problems {
            self.violation(r, p);
        }
        if unqueued_unknown {
            self.edge(
                r.tsc,
                r.cpu,
                format!("thread {next} switched in, but was not seen queued"),
            );
        }
        if switched_out_while_queued {
            let what =
                format!("thread {prev} switched out, but it was queued and never switched in");
            if seen_in {
                self.violation(r, what);
            } else {
                self.edge(r.tsc, r.cpu, what);
            }
        }
    }

    fn wakeup(&mut self, r: &Record) {
        let t = self.threads.entry(r.a).or_default();
        t.known = true;
        if r.arg & WAKE_RUNNING != 0 {
            // It had not left its CPU: the block is cancelled, and its switch-out (if any) says
            // it was put back (`SWITCH_PREV_QUEUED`).
            return;
        }
        t.blocked_unwoken = false;
        self.report.counts.wakeups += 1;
        let why = if r.arg & WAKE_NEW != 0 {
            "was spawned"
        } else {
            "was woken"
        };
        let was = t.queued.replace((r.c as u16, r.tsc, why));
        if let Some((cpu, since, _)) = was {
            self.violation(r, format!("thread {} woken onto CPU {} while already queued on CPU {cpu} since tsc {since}", r.a, r.c));
        }
    }

    fn steal(&mut self, r: &Record) {
        self.report.counts.steals += 1;
        let t = self.threads.entry(r.a).or_default();
        let known = core::mem::replace(&mut t.known, true);
        if t.queued.is_none() {
            t.queued = Some((r.cpu, r.tsc, "was stolen"));
            let what = format!(
                "stole thread {} from CPU {}, but it was not seen queued",
                r.a, r.c
            );
            if known {
                self.violation(r, what);
            } else {
                self.edge(r.tsc, r.cpu, what);
            }
            return;
        }
        match t.queued {
            Some((cpu, since, _)) if u32::from(cpu) != r.c => {
                let what = format!(
                    "stole thread {} from CPU {}, but it was queued on CPU {cpu} since tsc {since}",
                    r.a, r.c
                );
                t.queued = Some((r.cpu, r.tsc, "was stolen"));
                self.violation(r, what);
            }
            _ => t.queued = Some((r.cpu, r.tsc, "was stolen")),
        }
    }

    fn finish(&mut self) {
        let mut edges: Vec<(u64, u16, String)> = Vec::new();
        for (id, t) in &self.threads {
            if let Some((cpu, since, why)) = t.queued {
                edges.push((
                    since,
                    cpu,
                    format!("thread {id} {why} onto CPU {cpu} and never ran"),
                ));
            }
        }
        for ((target, kind), line) in &self.ipis {
            if let Some((sends, tsc, cpu)) = line.unanswered {
                edges.push((
                    tsc,
                    cpu,
                    format!(
                        "{sends} {} IPI(s) sent to CPU {target} never arrived",
                        kind.name()
                    ),
                ));
            }
        }
        for (
            (cpu, seq),
            ShootdownState {
                begun,
                targets,
                acks,
                done,
            },
        ) in &self.shootdowns
        {
            if let (Some(tsc), false) = (begun, *done) {
                edges.push((
                    *tsc,
                    *cpu as u16,
                    format!(
                        "shootdown {seq} never completed ({acks} of {targets} acknowledgements)"
                    ),
                ));
            }
        }
        for (&cpu, &(tid, idle)) in &self.current {
            if self.complete && !idle && self.running_at_end != Some((cpu, tid)) {
                let what = format!("CPU {cpu} ends running thread {tid}, not its idle thread");
                edges.push((self.report.window_start.unwrap_or(0), cpu, what));
            }
        }
        edges.sort();
        for (tsc, cpu, what) in edges {
            self.edge(tsc, cpu, what);
        }
    }
}

/// Check `dump` against the conservation rules.
pub fn check(dump: &Dump, options: Options) -> Report {
    // With lost records, start where every CPU that lost some has its first surviving record.
    let lossy = dump.cpus.iter().filter(|c| c.dropped > 0);
    let window_start = lossy
        .map(|c| c.records.first().map_or(u64::MAX, |r| r.tsc))
        .max();
    let mut all: Vec<(u64, u16, usize, Record)> = Vec::new();
    for block in &dump.cpus {
        for (i, r) in block.records.iter().enumerate() {
            if window_start.is_none_or(|start| r.tsc >= start) {
                all.push((r.tsc, block.cpu as u16, i, *r));
            }
        }
    }
    // Time order across CPUs; ring order within one.
    all.sort_by_key(|&(tsc, cpu, i, _)| (tsc, cpu, i));
    let mut checker = Checker {
        report: Report {
            dropped: dump.dropped(),
            window_start,
            ..Report::default()
        },
        complete: options.complete && window_start.is_none(),
        threads: BTreeMap::new(),
        ipis: BTreeMap::new(),
        shootdowns: BTreeMap::new(),
        halted: BTreeMap::new(),
        cpus_seen: BTreeSet::new(),
        current: BTreeMap::new(),
        running_at_end: options.running_at_end,
    };
    if options.complete && window_start.is_some() {
        checker.report.violations.push(Violation {
            tsc: window_start.unwrap_or(0),
            cpu: 0,
            what: format!(
                "{} records were lost: a complete trace cannot be checked whole",
                dump.dropped()
            ),
        });
    }
    for (_, _, _, r) in &all {
        checker.event(r);
    }
    checker.finish();
    checker.report
}
