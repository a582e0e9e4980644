//! Synthetic traces: a small simulated SMP scheduler that records what a correct kernel would,
//! for the tests of the checker and the host tool, and for `tracetool synth` (a demo input).
//!
//! The simulation is sequential and seeded (an xorshift generator), so a seed names a trace. Each
//! step picks a CPU and does what the kernel's scheduler could do there: yield, preempt on a timer
//! tick, block, exit, wake a blocked thread onto its CPU (kicking it with a reschedule IPI when it
//! is halted), spawn, shoot down the TLB of every other CPU, arm the timer; an idle CPU runs its
//! queue, steals, or halts. [`generate`] ends with a quiet system (every queue drained, every IPI
//! received, every shootdown complete), so its dumps pass [`crate::check::check`] with
//! `complete: true`.

extern crate alloc;

use alloc::{collections::VecDeque, format, string::String, vec, vec::Vec};

use crate::{
    dump::{CpuBlock, Dump, Header},
    event::{
        IpiKind, Kind, Reason, Record, SWITCH_NEXT_IDLE, SWITCH_PREV_IDLE, SWITCH_PREV_QUEUED,
        WAKE_NEW,
    },
    mask::Mask,
};

/// What to simulate.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// CPUs.
    pub nr_cpus: usize,
    /// Threads spawned at the start (more may be spawned on the way, up to twice as many).
    pub threads: usize,
    /// Simulation steps before the system is brought to rest.
    pub steps: usize,
    /// The generator's seed (non-zero).
    pub seed: u64,
    /// Time stamp counter ticks per second (the mean step is about 25 ticks).
    pub tsc_hz: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            nr_cpus: 4,
            threads: 8,
            steps: 2000,
            seed: 0x9e37_79b9_7f4a_7c15,
            tsc_hz: 1_000_000,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Queued,
    Blocked,
    Dead,
}

struct Thread {
    id: u64,
    state: State,
    /// The CPU whose queue it belongs to.
    home: usize,
}

struct Cpu {
    idle: u64,
    current: u64,
    queue: VecDeque<u64>,
    halted: bool,
    shootdowns: u64,
}

struct Sim {
    rng: u64,
    clock: u64,
    cpus: Vec<Cpu>,
    threads: Vec<Thread>,
    names: Vec<(u64, String)>,
    out: Vec<Vec<Record>>,
    max_threads: usize,
}

/// First id of the simulated workers (idle threads are 1..=nr_cpus).
const FIRST_WORKER: u64 = 100;

impl Sim {
    fn rand(&mut self, below: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % below.max(1)
    }

    fn emit(&mut self, cpu: usize, mut r: Record) {
        self.clock += 1 + self.rand(50);
        r.tsc = self.clock;
        r.cpu = cpu as u16;
        self.out[cpu].push(r);
    }

    fn thread(&mut self, id: u64) -> &mut Thread {
        let i = (id - FIRST_WORKER) as usize;
        &mut self.threads[i]
    }

    fn spawn(&mut self, cpu: usize) {
        let id = FIRST_WORKER + self.threads.len() as u64;
        self.threads.push(Thread {
            id,
            state: State::Queued,
            home: cpu,
        });
        self.names
            .push((id, format!("worker-{}", id - FIRST_WORKER)));
        self.emit(cpu, Record::wakeup(0, 0, id, cpu as u32, WAKE_NEW));
        self.cpus[cpu].queue.push_back(id);
    }

    /// Switch CPU `cpu` from its current thread to the head of its queue (or its idle thread).
    fn switch(&mut self, cpu: usize, reason: Reason) {
        let prev = self.cpus[cpu].current;
        let prev_idle = prev == self.cpus[cpu].idle;
        if reason.stays_runnable() && !prev_idle {
            if self.cpus[cpu].queue.is_empty() {
                return;
            }
            self.cpus[cpu].queue.push_back(prev);
            self.thread(prev).state = State::Queued;
        }
        let next = self.cpus[cpu]
            .queue
            .pop_front()
            .unwrap_or(self.cpus[cpu].idle);
        let next_idle = next == self.cpus[cpu].idle;
        if next == prev {
            return;
        }
        let queued = reason.stays_runnable() && !prev_idle;
        let flags = if prev_idle { SWITCH_PREV_IDLE } else { 0 }
            | if next_idle { SWITCH_NEXT_IDLE } else { 0 }
            | if queued { SWITCH_PREV_QUEUED } else { 0 };
        self.emit(cpu, Record::switch(0, 0, prev, next, reason, flags));
        self.cpus[cpu].current = next;
        if !next_idle {
            let t = self.thread(next);
            t.state = State::Running;
            t.home = cpu;
        }
    }

    /// Deliver an IPI of `kind` to `target`; a halted target leaves its halt after the handler.
    fn ipi(&mut self, from: usize, target: usize, kind: IpiKind) {
        self.emit(from, Record::ipi_send(0, 0, kind, target as u32));
        self.emit(target, Record::ipi_receive(0, 0, kind));
    }

    fn leave_halt(&mut self, cpu: usize) {
        if self.cpus[cpu].halted {
            self.cpus[cpu].halted = false;
            self.emit(cpu, Record::new(0, 0, Kind::IdleExit));
        }
    }

    fn wake(&mut self, waker: usize, id: u64) {
        let target = self.thread(id).home;
        self.thread(id).state = State::Queued;
        self.emit(waker, Record::wakeup(0, 0, id, target as u32, 0));
        self.cpus[target].queue.push_back(id);
        if self.cpus[target].halted && target != waker {
            self.ipi(waker, target, IpiKind::Resched);
            self.leave_halt(target);
        }
    }

    fn shootdown(&mut self, cpu: usize) {
        let n = self.cpus.len();
        self.cpus[cpu].shootdowns += 1;
        let seq = self.cpus[cpu].shootdowns;
        self.emit(cpu, Record::shootdown_begin(0, 0, seq, n as u32 - 1));
        for target in (0..n).filter(|&t| t != cpu) {
            self.emit(
                cpu,
                Record::ipi_send(0, 0, IpiKind::Shootdown, target as u32),
            );
        }
        for target in (0..n).filter(|&t| t != cpu) {
            self.emit(target, Record::ipi_receive(0, 0, IpiKind::Shootdown));
            self.emit(target, Record::shootdown_ack(0, 0, seq, cpu as u32));
            self.leave_halt(target);
        }
        self.emit(cpu, Record::shootdown_done(0, 0, seq));
    }

    /// The timer fires on a halted CPU: a sleeper's deadline passed, so a blocked thread wakes.
    fn timer_in_halt(&mut self, cpu: usize) {
        self.emit(cpu, Record::new(0, 0, Kind::TimerFire));
        self.wake_any(cpu);
        self.leave_halt(cpu);
    }

    /// Wake a random blocked thread, if there is one.
    fn wake_any(&mut self, waker: usize) {
        let blocked: Vec<u64> = self
            .threads
            .iter()
            .filter(|t| t.state == State::Blocked)
            .map(|t| t.id)
            .collect();
        if !blocked.is_empty() {
            let id = blocked[self.rand(blocked.len() as u64) as usize];
            self.wake(waker, id);
        }
    }

    fn idle_step(&mut self, cpu: usize) {
        if !self.cpus[cpu].queue.is_empty() {
            self.switch(cpu, Reason::Idle);
            return;
        }
        let n = self.cpus.len();
        for k in 1..n {
            let victim = (cpu + k) % n;
            if let Some(id) = self.cpus[victim].queue.pop_back() {
                self.emit(cpu, Record::steal(0, 0, id, victim as u32));
                self.thread(id).home = cpu;
                self.cpus[cpu].queue.push_back(id);
                self.switch(cpu, Reason::Idle);
                return;
            }
        }
        self.cpus[cpu].halted = true;
        self.emit(cpu, Record::new(0, 0, Kind::IdleEnter));
    }

    fn thread_step(&mut self, cpu: usize) {
        let current = self.cpus[cpu].current;
        match self.rand(100) {
            0..25 => self.switch(cpu, Reason::Yield),
            25..40 => {
                self.emit(cpu, Record::new(0, 0, Kind::TimerFire));
                self.switch(cpu, Reason::Preempt);
            }
            40..60 => {
                self.thread(current).state = State::Blocked;
                self.switch(cpu, Reason::Block);
            }
            60..82 => self.wake_any(cpu),
            82..86 => self.shootdown(cpu),
            86..88 if self.threads.len() < self.max_threads => self.spawn(cpu),
            88..90 => {
                self.thread(current).state = State::Dead;
                self.switch(cpu, Reason::Exit);
            }
            _ => {
                let deadline = self.clock + 1000 + self.rand(10_000);
                self.emit(
                    cpu,
                    Record {
                        a: deadline,
                        ..Record::new(0, 0, Kind::TimerArm)
                    },
                );
            }
        }
    }

    /// Bring the system to rest: every CPU runs its queue dry (each thread blocks), then halts.
    fn quiesce(&mut self) {
        loop {
            let mut busy = false;
            for cpu in 0..self.cpus.len() {
                let c = &self.cpus[cpu];
                if c.current != c.idle {
                    let id = c.current;
                    self.thread(id).state = State::Blocked;
                    self.switch(cpu, Reason::Block);
                    busy = true;
                } else if !c.queue.is_empty() {
                    self.leave_halt(cpu);
                    self.switch(cpu, Reason::Idle);
                    busy = true;
                }
            }
            if !busy {
                break;
            }
        }
        for cpu in 0..self.cpus.len() {
            if !self.cpus[cpu].halted {
                self.cpus[cpu].halted = true;
                self.emit(cpu, Record::new(0, 0, Kind::IdleEnter));
            }
        }
    }
}

/// A dump of a simulated run as `config` describes, ending at rest.
pub fn generate(config: &Config) -> Dump {
    let n = config.nr_cpus.max(1);
    let mut sim = Sim {
        rng: config.seed | 1,
        clock: 1000,
        cpus: (0..n)
            .map(|cpu| Cpu {
                idle: cpu as u64 + 1,
                current: cpu as u64 + 1,
                queue: VecDeque::new(),
                halted: false,
                shootdowns: 0,
            })
            .collect(),
        threads: Vec::new(),
        names: (0..n)
            .map(|cpu| (cpu as u64 + 1, String::from("idle")))
            .collect(),
        out: vec![Vec::new(); n],
        max_threads: config.threads * 2,
    };
    for i in 0..config.threads {
        sim.spawn(i % n);
    }
    for _ in 0..config.steps {
        let cpu = sim.rand(n as u64) as usize;
        if sim.cpus[cpu].halted {
            sim.timer_in_halt(cpu);
        } else if sim.cpus[cpu].current == sim.cpus[cpu].idle {
            sim.idle_step(cpu);
        } else {
            sim.thread_step(cpu);
        }
    }
    sim.quiesce();
    let capacity = sim
        .out
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(0)
        .next_power_of_two() as u32;
    Dump {
        header: Header {
            nr_cpus: n as u32,
            tsc_hz: config.tsc_hz,
            mask: Mask::ALL,
            capacity,
        },
        names: sim.names,
        cpus: sim
            .out
            .into_iter()
            .enumerate()
            .map(|(cpu, records)| CpuBlock {
                cpu: cpu as u32,
                records,
                dropped: 0,
            })
            .collect(),
    }
}
