//! The IDT: one for all CPUs, every vector pointing at its stub in [`crate::trap`], and the three
//! exceptions that must not run on a possibly broken stack on their IST stacks ([`crate::gdt`]).
#![cfg(target_os = "none")]

use x86_64::{VirtAddr, structures::idt::InterruptDescriptorTable};

static mut IDT: InterruptDescriptorTable = InterruptDescriptorTable::new();

/// Fill the IDT with every stub (boot CPU, once, before any interrupt can arrive).
///
/// # Safety
/// Called once, on the boot CPU, before any other CPU loads the IDT.
pub unsafe fn init() {
    // SAFETY: per the contract nobody else references IDT yet.
    let idt = unsafe { &mut *(&raw mut IDT) };
    for v in 0..=255u8 {
        let addr = VirtAddr::new(crate::trap::stub_address(v));
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
        idt.double_fault.set_handler_addr(VirtAddr::new(crate::trap::stub_address(8))).set_stack_index(crate::gdt::IST_DOUBLE_FAULT - 1);
        idt.non_maskable_interrupt.set_handler_addr(VirtAddr::new(crate::trap::stub_address(2))).set_stack_index(crate::gdt::IST_NMI - 1);
        idt.machine_check.set_handler_addr(VirtAddr::new(crate::trap::stub_address(18))).set_stack_index(crate::gdt::IST_MACHINE_CHECK - 1);
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
            // `int3` and `into` are instructions user code may run: their gates are DPL 3, so they
            // arrive as #BP/#OF (SIGTRAP/SIGSEGV) rather than as a #GP on the gate (SDM 6.12.1.1).
            3 => drop(idt.breakpoint.set_handler_addr(addr).set_privilege_level(x86_64::PrivilegeLevel::Ring3)),
            4 => drop(idt.overflow.set_handler_addr(addr).set_privilege_level(x86_64::PrivilegeLevel::Ring3)),
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
pub fn load() {
    // SAFETY: IDT is fully built by init_idt before any CPU calls this, and never changes after.
    unsafe { (*(&raw const IDT)).load() };
}

