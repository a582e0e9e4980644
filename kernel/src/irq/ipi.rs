//! Inter-processor interrupts by CPU id: the kernel's dense [`CpuId`]s are turned into APIC ids
//! through the CPU map (`cpu::map`), and sent with `apic::send`.
//!
//! - [`send`]`(cpu, vector)` and [`send_set`]`(&cpus, vector)`: fixed interrupts to named CPUs;
//! - [`send_all_others`]`(vector)`: one ICR write with the all-but-self shorthand;
//! - [`send_nmi_all_others`]: the panic path's way to stop every other CPU (installed with
//!   `panic::set_stop_others` once the APs run).
//!
//! Every send makes the sender's earlier stores visible to the target before the interrupt can
//! arrive (`apic::send` fences), so a handler finds whatever was published for it. Receivers count
//! their IPIs in their handlers (`percpu::Counter::IpisReceived`). The trace records each send
//! per target CPU ([`trace_kind`] names the vector), and `trap` records each receipt. Neighbours:
//! `apic` below, `xcall` and the scheduler above.

use smp::{CpuId, CpuSet};
use ::trace::{Category, IpiKind, Record};

use crate::{
    cpu::trace,
    irq::{
        apic::{self, Delivery, Dest},
        trap,
    },
};

/// The trace's name for the IPI on `vector`.
pub fn trace_kind(vector: u8) -> IpiKind {
    match vector {
        trap::VECTOR_RESCHED => IpiKind::Resched,
        trap::VECTOR_SHOOTDOWN => IpiKind::Shootdown,
        trap::VECTOR_XCALL => IpiKind::Call,
        _ => IpiKind::Other,
    }
}

/// Trace point: `vector` is about to be sent to `cpu` (stamped before the ICR write, so before
/// the receipt it causes).
#[inline(always)]
fn trace_send(cpu: CpuId, vector: u8) {
    trace::event(Category::Ipi, |tsc, me| Record::ipi_send(tsc, me, trace_kind(vector), cpu.get()));
}

/// Send `vector` to `cpu` (which may be this CPU).
///
/// # Panics
/// If `cpu` is not one of this machine's CPUs.
#[inline]
pub fn send(cpu: CpuId, vector: u8) {
    let apic_id = match crate::cpu::map::apic_id_of(cpu) {
        Some(a) => a,
        None => apic_id_before_map(cpu, vector),
    };
    trace_send(cpu, vector);
    apic::send(Dest::Apic(apic_id), Delivery::Fixed(vector));
}

/// `send`'s target before the CPU map is installed: only the boot CPU, which is this one.
#[cold]
#[inline(never)]
fn apic_id_before_map(cpu: CpuId, vector: u8) -> smp::ApicId {
    if cpu == CpuId::BSP { apic::id() } else { not_a_cpu(cpu, vector) }
}

/// `send`'s panic, out of line: formatting its arguments in `send` itself kept them in stack
/// slots on every IPI.
#[cold]
#[inline(never)]
fn not_a_cpu(cpu: CpuId, vector: u8) -> ! {
    panic!("ipi::send of vector {vector:#x} to {cpu}, which is not a CPU of this machine")
}

/// Send `vector` to every CPU of `cpus`, one after another.
///
/// # Panics
/// If `cpus` names a CPU this machine does not have.
pub fn send_set(cpus: &CpuSet, vector: u8) {
    for cpu in cpus.iter() {
        send(cpu, vector);
    }
}

/// Send `vector` to every other CPU with one ICR write. CPUs that were found but never started
/// ignore it (they wait for a start-up IPI).
pub fn send_all_others(vector: u8) {
    if trace::enabled(Category::Ipi) {
        let me = crate::cpu::percpu::cpu_index();
        for cpu in crate::cpu::map::online().iter().filter(|c| c.get() != me) {
            trace_send(cpu, vector);
        }
    }
    apic::send(Dest::AllButSelf, Delivery::Fixed(vector));
}

/// Send a non-maskable interrupt to every other CPU: it arrives even where interrupts are off.
pub fn send_nmi_all_others() {
    apic::send(Dest::AllButSelf, Delivery::Nmi);
}
