//! Small privileged CPU operations: GS base and GS-relative access to the per-CPU block, the frame pointer for backtraces, halting with interrupts enabled atomically.
#![cfg(target_os = "none")]

/// Read the 64-bit word at `gs:[OFFSET]`.
///
/// # Safety
/// GS base must point at a live per-CPU block with a `u64` (or pointer-sized, 8-byte aligned) field at
/// `OFFSET`, as `offset_of!` gives it.
#[inline(always)]
pub unsafe fn gs_read_u64<const OFFSET: usize>() -> u64 {
    let v: u64;
    // SAFETY: the caller guarantees the field exists; a single load cannot be torn by migration.
    unsafe { core::arch::asm!("mov {}, gs:[{off}]", out(reg) v, off = const OFFSET, options(nostack, readonly, preserves_flags)) };
    v
}

/// Write `value` to the 64-bit word at `gs:[OFFSET]`.
///
/// # Safety
/// As for [`gs_read_u64`], and the field is one that only its own CPU writes, through this.
#[inline(always)]
pub unsafe fn gs_write_u64<const OFFSET: usize>(value: u64) {
    // SAFETY: per the caller's guarantee; one store, which migration cannot split.
    unsafe { core::arch::asm!("mov gs:[{off}], {}", in(reg) value, off = const OFFSET, options(nostack, preserves_flags)) };
}

/// Add one to the 64-bit counter at `gs:[OFFSET]` with one instruction (`inc`, no register to load
/// the 1 into first), so the update lands on the CPU the instruction ran on even if the thread
/// migrates just before or after (not atomic against other CPUs, which never write another CPU's
/// counters).
///
/// # Safety
/// As for [`gs_read_u64`], and the field is a counter only its own CPU writes.
#[inline(always)]
pub unsafe fn gs_inc_u64<const OFFSET: usize>() {
    // SAFETY: per the caller's guarantee; `inc` to memory is one instruction, so an interrupt cannot
    // split it.
    unsafe { core::arch::asm!("inc qword ptr gs:[{off}]", off = const OFFSET, options(nostack)) };
}

/// Point GS base (IA32_GS_BASE) at `block`.
///
/// # Safety
/// `block` is this CPU's per-CPU block, live for as long as the CPU runs, laid out as every
/// `gs:[offset]` access expects; the kernel runs in ring 0 only, so no SWAPGS ever exchanges it.
pub unsafe fn set_gs_base(block: *const u8) {
    // The x86_64 crate calls the WRMSR safe; what makes it sound is the caller's promise above.
    x86_64::registers::model_specific::GsBase::write(x86_64::VirtAddr::from_ptr(block));
}

/// The current frame pointer (the kernel is built with frame pointers).
#[inline(always)]
pub fn frame_pointer() -> u64 {
    let rbp: u64;
    // SAFETY: reads a register.
    unsafe { core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack, preserves_flags)) };
    rbp
}

/// Enable interrupts and halt until the next one, atomically: `sti` delays interrupt recognition by
/// one instruction, so no interrupt can slip in between and leave us halted with work pending
/// (SDM vol. 2B, STI). Returns with interrupts DISABLED again, so the caller re-checks its condition
/// with interrupts off.
#[inline(always)]
pub fn enable_interrupts_and_halt() {
    // SAFETY: halting is always sound in ring 0; the handler runs and returns here. No `nomem`:
    // the interrupt handlers that end the halt write memory (wake flags, queues) that the caller
    // reads next, so the compiler must not keep values in registers across it.
    unsafe { core::arch::asm!("sti", "hlt", "cli", options(nostack)) };
}

/// One turn of a wait that lets interrupts in: `sti; pause; cli`, then three more `pause`s.
/// `sti` holds interrupts off for one more instruction, so a pending one is taken right after the
/// first `pause`. The `pause`s are the spin-wait hint (on an SMT core they also yield to the
/// sibling); four per turn let a caller check its condition once per four, which keeps the
/// instructions of a long wait few (under QEMU's TCG each `pause` leaves the translated code
/// and takes about as long as a few hundred instructions, for one counted). Returns with
/// interrupts DISABLED.
#[inline(always)]
pub fn pause_with_interrupts() {
    // SAFETY: enabling interrupts for one instruction in ring 0 is sound wherever the caller
    // could halt (it is the caller's promise that handlers may run here); no `nomem`: handlers
    // write memory the caller reads next.
    unsafe { core::arch::asm!("sti", "pause", "cli", "pause", "pause", "pause", options(nostack)) };
}

/// Halt forever with interrupts off (NMIs still arrive and are handled; after each we halt again).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: as above.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Make every earlier store globally visible, and every earlier instruction complete, before the
/// next instruction starts: `mfence; lfence`. A WRMSR to an x2APIC register (the ICR, the
/// TSC-deadline MSR) is not serializing, so without this an IPI can overtake the stores it announces
/// (SDM vol. 3A, 11.12.3 "MSR Access in x2APIC Mode").
#[inline(always)]
pub fn fence_before_wrmsr() {
    // SAFETY: fences only order this CPU's own memory accesses and instruction execution.
    unsafe { core::arch::asm!("mfence", "lfence", options(nostack, preserves_flags)) };
}

/// 64 random bits from RDRAND, if the CPU has the instruction and it delivered (it may fail
/// transiently; a few tries are made, as Intel's DRNG guide advises).
pub fn rdrand64() -> Option<u64> {
    let rd = x86_64::instructions::random::RdRand::new()?;
    (0..10).find_map(|_| rd.get_u64())
}

/// CPUID leaf 1's EDX: the feature bits Linux passes to user programs as `AT_HWCAP`.
pub fn hwcap() -> u64 {
    u64::from(raw_cpuid::native_cpuid::cpuid_count(1, 0).edx)
}

/// A copy of the kernel's trace gate (its mask of categories being recorded, one bit each), kept
/// here so that a trace point can test its bit with one instruction that names the word by its
/// address ([`if_gate_bit`]): a test of an atomic load takes a load, then a test. Written only
/// through [`set_trace_gate`]; the gate it copies stays the one the recording side reads.
static TRACE_GATE: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// Set the copy of the trace gate [`if_gate_bit`] tests.
pub fn set_trace_gate(mask: u32) {
    TRACE_GATE.store(mask, core::sync::atomic::Ordering::Release);
}

/// Run `on` if bit `BIT` of the trace gate ([`set_trace_gate`]) is set: a `test` of the bit's byte
/// in memory and a branch, two instructions where a relaxed load and a test take three.
#[inline(always)]
pub fn if_gate_bit<const BIT: u32>(on: impl FnOnce()) {
    // SAFETY: a one-byte read inside TRACE_GATE (BIT < 32, so the byte is one of its four; x86 is
    // little-endian, so bit BIT of the word is bit BIT % 8 of byte BIT / 8), a read as a relaxed
    // atomic load of that byte would be; the branch goes to a label of this block.
    unsafe {
        core::arch::asm!(
            "test byte ptr [rip + {gate} + {byte}], {mask}",
            "jnz {on}",
            gate = sym TRACE_GATE,
            byte = const { assert!(BIT < 32); BIT / 8 },
            mask = const 1u8 << (BIT % 8),
            on = label { on() },
            options(nostack, readonly),
        );
    }
}
