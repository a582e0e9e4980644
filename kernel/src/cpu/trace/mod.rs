//! The kernel's scheduling trace: the enable gate every trace point tests, the rings it records
//! into, and the dump to QEMU's debug console.
//!
//! - [`install`]`(tracer, mask)`: the rings (made by the caller, which may allocate; this layer does
//!   not) and the categories the `trace` command-line option chose; the gate opens here.
//! - [`event`]`(category, make)`: a trace point. While the category is off this is one test of the
//!   category's bit in memory (`arch::cpu::if_gate_bit`, on a copy of the gate kept there) and a
//!   branch never taken (the predictor learns it at once); the recording, out of line and cold,
//!   stamps the TSC and this CPU, builds the record and pushes it on this CPU's ring.
//! - [`sched_event`]: the scheduler's trace points (`sched::TraceEvent`), with thread names.
//! - [`dump`]: close the gate and write every ring to the debug console port (0xe9, `-debugcon
//!   file:...` on the QEMU command line), a channel that never mixes with the serial console.
//!
//! Neighbours: `trace` (records, rings, the dump format), `arch::tsc` and `arch::port` (the stamp and
//! the port write), `percpu` (this CPU's index). Trace points live with the code they observe: the
//! scheduler's platform (`task`), the IPI and interrupt paths (`irq`), TLB shootdowns (`vm`).

use ::trace::{Category, Gate, Mask, Record, Tracer, dump::Sink};

use crate::cpu::percpu;

#[cfg(feature = "ktest")]
mod tests;

static GATE: Gate = Gate::new();
static TRACER: spin::Once<&'static Tracer> = spin::Once::new();

/// Start recording `mask`'s categories into `tracer` (once; later calls change nothing).
pub fn install(tracer: &'static Tracer, mask: Mask) {
    if TRACER.is_completed() {
        return;
    }
    TRACER.call_once(|| tracer);
    set_gate(mask);
}

/// Open the gate for `mask`. The system-call entry has no trace test of its own: while the
/// `Syscall` category is on, every call takes its slow hook, which records it.
fn set_gate(mask: Mask) {
    GATE.set(mask);
    arch::cpu::set_trace_gate(mask.0);
    arch::syscall::route_all_to_slow(mask.contains(Category::Syscall));
}

/// Whether `category` is recorded now.
#[inline(always)]
pub fn enabled(category: Category) -> bool {
    GATE.enabled(category)
}

/// Run `f` if `category` is recorded now: [`enabled`] as one test of the gate's bit in memory
/// (`arch::cpu::if_gate_bit`), the category a constant wherever this is inlined.
#[inline(always)]
pub fn when(category: Category, f: impl FnOnce()) {
    use arch::cpu::if_gate_bit;
    match category {
        Category::Sched => if_gate_bit::<{ Category::Sched as u32 }>(f),
        Category::Ipi => if_gate_bit::<{ Category::Ipi as u32 }>(f),
        Category::Tlb => if_gate_bit::<{ Category::Tlb as u32 }>(f),
        Category::Timer => if_gate_bit::<{ Category::Timer as u32 }>(f),
        Category::Idle => if_gate_bit::<{ Category::Idle as u32 }>(f),
        Category::Syscall => if_gate_bit::<{ Category::Syscall as u32 }>(f),
        Category::Fault => if_gate_bit::<{ Category::Fault as u32 }>(f),
        Category::Signal => if_gate_bit::<{ Category::Signal as u32 }>(f),
    }
}

/// A trace point: if `category` is on, record what `make(tsc, cpu)` builds.
#[inline(always)]
pub fn event(category: Category, make: impl FnOnce(u64, u16) -> Record) {
    when(category, || record(make));
}

/// The recording half of [`event`], kept off the hot path.
#[cold]
#[inline(never)]
fn record(make: impl FnOnce(u64, u16) -> Record) {
    let Some(tracer) = TRACER.get() else { return };
    let cpu = percpu::cpu_index();
    tracer.record(cpu as usize, &make(arch::tsc::read(), cpu as u16));
}

/// The scheduler's trace point (`sched::Platform::trace`): its record, and its thread's name.
#[cold]
#[inline(never)]
pub fn sched_event(event: sched::TraceEvent) {
    let Some(tracer) = TRACER.get() else { return };
    let cpu = percpu::cpu_index();
    let (record, name) = event.record(arch::tsc::read(), cpu as u16);
    if let Some((id, name)) = name {
        tracer.name_thread(id, name);
    }
    if let Some(r) = record {
        tracer.record(cpu as usize, &r);
    }
}

/// The debug console as a dump sink, in chunks so each `rep outsb` moves many bytes.
struct Debugcon {
    buf: [u8; 4096],
    len: usize,
}

impl Debugcon {
    fn flush(&mut self) {
        arch::port::debugcon_write(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl Sink for Debugcon {
    fn write(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.len == self.buf.len() {
                self.flush();
            }
            let n = bytes.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
        }
    }
}

/// Stop recording and write every ring to the debug console; returns (records written, records
/// lost), or `None` when no trace was installed. Other CPUs may still be running: a record they
/// were writing when the gate closed is counted as lost, never written torn.
pub fn dump(tsc_hz: u64) -> Option<(u64, u64)> {
    let tracer = TRACER.get()?;
    let mask = GATE.mask();
    set_gate(Mask::NONE);
    let mut sink = Debugcon { buf: [0; 4096], len: 0 };
    let stats = tracer.dump(&mut sink, tsc_hz, mask);
    sink.flush();
    Some((stats.delivered, stats.dropped))
}

/// The installed rings, if tracing was switched on (for the in-kernel conservation test).
#[cfg_attr(not(feature = "ktest"), allow(dead_code, reason = "the trace test reads the rings in place"))]
pub fn tracer() -> Option<&'static Tracer> {
    TRACER.get().copied()
}

/// Stop (`Mask::NONE`) or restart recording with `mask` (for the in-kernel conservation test).
#[cfg_attr(not(feature = "ktest"), allow(dead_code, reason = "the trace test opens and closes the gate"))]
pub fn set_mask(mask: Mask) {
    if TRACER.is_completed() {
        set_gate(mask);
    }
}
