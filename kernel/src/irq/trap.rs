//! The IDT (one, shared by all CPUs) and the Rust side of every interrupt: exceptions become fault
//! reports, device and inter-processor vectors go to the handler registered for them.
//!
//! Vector plan (0-31 are the CPU's exceptions):
//!
//! | vector | use                                      |
//! |--------|------------------------------------------|
//! | 0xf0   | local APIC timer                         |
//! | 0xf1   | reschedule IPI                           |
//! | 0xf2   | cross-CPU call IPI                       |
//! | 0xf3   | TLB shootdown IPI                        |
//! | 0xfe   | local APIC error                         |
//! | 0xff   | local APIC spurious (no EOI, SDM 11.9)   |
//!
//! Stopping the other CPUs after a fault uses NMI, which arrives even with interrupts disabled.

use arch::trap::TrapFrame;
use crossbeam_utils::atomic::AtomicCell;
use x86_64::{VirtAddr, structures::idt::InterruptDescriptorTable};

use crate::{cpu::tables, cpu::percpu};

pub const VECTOR_TIMER: u8 = 0xf0;
pub const VECTOR_RESCHED: u8 = 0xf1;
pub const VECTOR_XCALL: u8 = 0xf2;
pub const VECTOR_SHOOTDOWN: u8 = 0xf3;
pub const VECTOR_APIC_ERROR: u8 = 0xfe;
pub const VECTOR_SPURIOUS: u8 = 0xff;

const NMI: u64 = 2;
const DOUBLE_FAULT: u64 = 8;
const MACHINE_CHECK: u64 = 18;

/// A handler for a device or IPI vector. It runs with interrupts off, on the interrupted thread's
/// stack, and may switch threads (the scheduler's preemption path). End-of-interrupt is the
/// handler's job (it must come before any switch: another thread may run for a long time).
pub type Handler = fn(&mut TrapFrame);

static HANDLERS: [AtomicCell<Option<Handler>>; 256] = [const { AtomicCell::new(None) }; 256];

static mut IDT: InterruptDescriptorTable = InterruptDescriptorTable::new();

/// Route `vector` (32-255) to `handler`.
pub fn register(vector: u8, handler: Handler) {
    assert!(vector >= 32, "vectors 0-31 are exceptions");
    HANDLERS[usize::from(vector)].store(Some(handler));
}

/// Fill the IDT with every stub (boot CPU, once, before any interrupt can arrive).
///
/// # Safety
/// Called once, on the boot CPU, before any other CPU loads the IDT.
pub unsafe fn init_idt() {
    // SAFETY: per the contract nobody else references IDT yet.
    let idt = unsafe { &mut *(&raw mut IDT) };
    for v in 0..=255u8 {
        let addr = VirtAddr::new(arch::trap::stub_address(v));
        // SAFETY: each stub is a real entry point that keeps the interrupt frame intact and ends in
        // iretq (arch::trap); the x86_64 crate's typed entries all share this raw layout.
        unsafe {
            match v {
                0..=31 => set_raw(idt, v, addr),
                _ => drop(idt[v].set_handler_addr(addr)),
            }
        }
    }
    // SAFETY: the IST slots are filled in every CPU's TSS before that CPU loads this IDT.
    unsafe {
        idt.double_fault.set_handler_addr(VirtAddr::new(arch::trap::stub_address(8))).set_stack_index(tables::IST_DOUBLE_FAULT - 1);
        idt.non_maskable_interrupt.set_handler_addr(VirtAddr::new(arch::trap::stub_address(2))).set_stack_index(tables::IST_NMI - 1);
        idt.machine_check.set_handler_addr(VirtAddr::new(arch::trap::stub_address(18))).set_stack_index(tables::IST_MACHINE_CHECK - 1);
    }
}

/// Point exception vector `v` at `addr` through the typed field the x86_64 crate exposes for it.
///
/// # Safety
/// `addr` must be a valid interrupt entry for vector `v`.
unsafe fn set_raw(idt: &mut InterruptDescriptorTable, v: u8, addr: VirtAddr) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match v {
            0 => drop(idt.divide_error.set_handler_addr(addr)),
            1 => drop(idt.debug.set_handler_addr(addr)),
            2 => drop(idt.non_maskable_interrupt.set_handler_addr(addr)),
            3 => drop(idt.breakpoint.set_handler_addr(addr)),
            4 => drop(idt.overflow.set_handler_addr(addr)),
            5 => drop(idt.bound_range_exceeded.set_handler_addr(addr)),
            6 => drop(idt.invalid_opcode.set_handler_addr(addr)),
            7 => drop(idt.device_not_available.set_handler_addr(addr)),
            8 => drop(idt.double_fault.set_handler_addr(addr)),
            10 => drop(idt.invalid_tss.set_handler_addr(addr)),
            11 => drop(idt.segment_not_present.set_handler_addr(addr)),
            12 => drop(idt.stack_segment_fault.set_handler_addr(addr)),
            13 => drop(idt.general_protection_fault.set_handler_addr(addr)),
            14 => drop(idt.page_fault.set_handler_addr(addr)),
            16 => drop(idt.x87_floating_point.set_handler_addr(addr)),
            17 => drop(idt.alignment_check.set_handler_addr(addr)),
            18 => drop(idt.machine_check.set_handler_addr(addr)),
            19 => drop(idt.simd_floating_point.set_handler_addr(addr)),
            20 => drop(idt.virtualization.set_handler_addr(addr)),
            21 => drop(idt.cp_protection_exception.set_handler_addr(addr)),
            28 => drop(idt.hv_injection_exception.set_handler_addr(addr)),
            29 => drop(idt.vmm_communication_exception.set_handler_addr(addr)),
            30 => drop(idt.security_exception.set_handler_addr(addr)),
            // 9, 15, 22-27, 31: reserved vectors; the x86_64 crate keeps them private. They never
            // fire on a conforming CPU.
            _ => {}
        }
    }
}

/// Load the shared IDT on this CPU.
pub fn load_idt() {
    // SAFETY: IDT is fully built by init_idt before any CPU calls this, and never changes after.
    unsafe { (*(&raw const IDT)).load() };
}

/// Called by `arch::trap`'s common stub for every vector, interrupts off.
#[unsafe(no_mangle)]
extern "C" fn trap_dispatch(frame: *mut TrapFrame) {
    // SAFETY: the stub passes a pointer to the frame it just built on this stack.
    let frame = unsafe { &mut *frame };
    let v = frame.vector;
    if v == NMI {
        if crate::irq::panic::stop_requested() {
            crate::irq::panic::park_this_cpu();
        }
        crate::irq::panic::fault(frame, "non-maskable interrupt");
    }
    if v < 32 {
        let what = match v {
            DOUBLE_FAULT => "double fault",
            MACHINE_CHECK => "machine check",
            _ => exception_name(v),
        };
        crate::irq::panic::fault(frame, what);
    }
    percpu::count(percpu::Counter::Interrupts);
    let Some(h) = HANDLERS[v as usize].load() else {
        if v == u64::from(VECTOR_SPURIOUS) {
            percpu::count(percpu::Counter::Spurious);
            return;
        }
        log::warn!("interrupt on vector {v:#x} with no handler; ignored");
        crate::irq::apic::eoi();
        return;
    };
    h(frame);
}

pub fn exception_name(v: u64) -> &'static str {
    match v {
        0 => "divide error",
        1 => "debug",
        2 => "non-maskable interrupt",
        3 => "breakpoint",
        4 => "overflow",
        5 => "bound range exceeded",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack-segment fault",
        13 => "general protection fault",
        14 => "page fault",
        16 => "x87 floating-point error",
        17 => "alignment check",
        18 => "machine check",
        19 => "SIMD floating-point exception",
        20 => "virtualization exception",
        21 => "control protection exception",
        _ => "reserved exception",
    }
}
