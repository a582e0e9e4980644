//! The per-CPU block, reached through GS.
//!
//! ```text
//!   GS base ──> PerCpu (one per CPU, 64-byte aligned, never freed)
//!               +0   self_ptr   (points at itself: one `mov reg, gs:[0]` yields a normal reference)
//!               +8   cpu_index  (dense CpuId)
//!               +16  apic_id
//!               +24  entry      (arch::syscall::EntryScratch: kernel stack top, user rsp, TSS)
//!               ...  counters, written only by their own CPU with single gs-relative instructions
//! ```
//!
//! Two kinds of access, as the types enforce: counters through [`count`] (one `add gs:[off]`, right
//! even if the thread migrates around it), and references only through [`get`], which takes a guard
//! proving interrupts are off on this CPU, so the borrow cannot outlive a migration.

use core::{
    mem::offset_of,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

/// The per-CPU block. Fields other than the counters are set once at bring-up.
#[repr(C, align(64))]
pub struct PerCpu {
    self_ptr: *const PerCpu,
    cpu_index: u64,
    apic_id: u64,
    /// The ring-3 entry's slots, at the offset its assembly uses.
    entry: arch::syscall::EntryScratch,
    pub counters: Counters,
    /// The scheduler's word for this CPU (`sched::Platform::cpu_word`): the address of the CPU's
    /// scheduler state once it joined, 0 before. Written and read by its own CPU only.
    sched_word: AtomicU64,
}

const _: () = assert!(offset_of!(PerCpu, entry) == arch::syscall::SCRATCH_GS_OFFSET);

/// Event counters: written by their own CPU only (gs-relative adds), read by anyone (racy snapshots
/// are fine for statistics).
#[repr(C)]
#[derive(Default)]
pub struct Counters {
    pub interrupts: AtomicU64,
    pub timer_interrupts: AtomicU64,
    pub ipis_received: AtomicU64,
    pub xcalls_served: AtomicU64,
    pub spurious: AtomicU64,
    pub nmis: AtomicU64,
}

/// Which counter to bump with [`count`].
#[derive(Clone, Copy)]
pub enum Counter {
    Interrupts,
    TimerInterrupts,
    IpisReceived,
    XcallsServed,
    Spurious,
    Nmis,
}

static READY: AtomicBool = AtomicBool::new(false);

impl PerCpu {
    pub const fn new(cpu_index: u32, apic_id: u32) -> Self {
        Self {
            self_ptr: core::ptr::null(),
            cpu_index: cpu_index as u64,
            apic_id: apic_id as u64,
            entry: arch::syscall::EntryScratch::new(),
            counters: Counters {
                interrupts: AtomicU64::new(0),
                timer_interrupts: AtomicU64::new(0),
                ipis_received: AtomicU64::new(0),
                xcalls_served: AtomicU64::new(0),
                spurious: AtomicU64::new(0),
                nmis: AtomicU64::new(0),
            },
            sched_word: AtomicU64::new(0),
        }
    }

    #[cfg_attr(not(feature = "ktest"), expect(dead_code, reason = "only the in-kernel tests use it so far"))]
    pub fn cpu_index(&self) -> u32 {
        self.cpu_index as u32
    }

    #[cfg_attr(not(feature = "ktest"), expect(dead_code, reason = "only the in-kernel tests use it so far"))]
    pub fn apic_id(&self) -> u32 {
        self.apic_id as u32
    }
}

/// Make `block` this CPU's per-CPU block.
///
/// # Safety
/// Called once per CPU, on that CPU, before anything on it reads the block; `block` lives forever.
pub unsafe fn install(block: &'static mut PerCpu) {
    block.self_ptr = block as *const PerCpu;
    // SAFETY: per the caller: this CPU's block, forever; its layout is the one `gs_read_u64` and
    // `gs_inc_u64` are given offsets into.
    unsafe { arch::cpu::set_gs_base((block as *const PerCpu).cast()) };
    READY.store(true, Ordering::Release);
}

/// This CPU's dense index; 0 before the boot CPU installed its block (only the boot CPU runs then).
#[inline]
pub fn cpu_index() -> u32 {
    if !READY.load(Ordering::Acquire) {
        return 0;
    }
    // SAFETY: READY is set only after the boot CPU installed its block, and every AP installs its own
    // before it runs any code that logs; cpu_index is an 8-byte field at this offset.
    unsafe { arch::cpu::gs_read_u64::<{ offset_of!(PerCpu, cpu_index) }>() as u32 }
}

/// This CPU's dense index, for a CPU that has installed its block: one GS-relative load, without
/// [`cpu_index`]'s test of `READY` (the scheduler's hot paths read it at every switch and tick).
///
/// # Safety
/// This CPU has run [`install`].
#[inline(always)]
pub unsafe fn cpu_index_installed() -> u32 {
    // SAFETY: the caller's CPU installed its block; cpu_index is an 8-byte field at this offset.
    unsafe { arch::cpu::gs_read_u64::<{ offset_of!(PerCpu, cpu_index) }>() as u32 }
}

/// Set this CPU's scheduler word ([`sched_word`]).
///
/// # Safety
/// This CPU has run [`install`].
#[inline(always)]
pub unsafe fn set_sched_word(word: usize) {
    // SAFETY: the caller's CPU installed its block; `sched_word` is an 8-byte field at this offset,
    // written only here, by its own CPU.
    unsafe { arch::cpu::gs_write_u64::<{ offset_of!(PerCpu, sched_word) }>(word as u64) }
}

/// This CPU's scheduler word: the scheduler's per-CPU state once this CPU joined it, 0 before; one
/// GS-relative load.
///
/// # Safety
/// This CPU has run [`install`].
#[inline(always)]
pub unsafe fn sched_word() -> usize {
    // SAFETY: the caller's CPU installed its block; `sched_word` is an 8-byte field at this offset.
    unsafe { arch::cpu::gs_read_u64::<{ offset_of!(PerCpu, sched_word) }>() as usize }
}

/// Proof that interrupts are disabled on this CPU, so the running code cannot migrate.
pub struct IrqOff(());

impl IrqOff {
    /// # Safety
    /// Interrupts must be disabled on this CPU for the guard's whole life.
    pub unsafe fn assume() -> Self {
        Self(())
    }
}

/// This CPU's block, for as long as the caller keeps interrupts off.
#[cfg_attr(not(feature = "ktest"), expect(dead_code, reason = "only the in-kernel tests use it so far"))]
pub fn get(_irq_off: &IrqOff) -> &PerCpu {
    // SAFETY: the self pointer was set by `install` and the block is 'static; the guard keeps this
    // CPU's identity fixed for the borrow's lifetime.
    unsafe { &*(arch::cpu::gs_read_u64::<{ offset_of!(PerCpu, self_ptr) }>() as *const PerCpu) }
}

/// This CPU's block as a `'static` reference, to record where it is (the boot CPU registers its own
/// in the CPU map). Unlike [`get`]'s borrow, it keeps naming this CPU's block after a migration.
pub fn this_block(_irq_off: &IrqOff) -> &'static PerCpu {
    // SAFETY: as in `get`; blocks are never freed (install's contract), so 'static is their life.
    unsafe { &*(arch::cpu::gs_read_u64::<{ offset_of!(PerCpu, self_ptr) }>() as *const PerCpu) }
}

/// Bump one of this CPU's counters with a single gs-relative instruction.
#[inline(always)]
pub fn count(c: Counter) {
    const BASE: usize = offset_of!(PerCpu, counters);
    // SAFETY: each offset names an AtomicU64 counter of the installed block, which only this CPU
    // writes (the adds are not atomic against other CPUs, and need not be).
    unsafe {
        match c {
            Counter::Interrupts => arch::cpu::gs_inc_u64::<{ BASE + offset_of!(Counters, interrupts) }>(),
            Counter::TimerInterrupts => arch::cpu::gs_inc_u64::<{ BASE + offset_of!(Counters, timer_interrupts) }>(),
            Counter::IpisReceived => arch::cpu::gs_inc_u64::<{ BASE + offset_of!(Counters, ipis_received) }>(),
            Counter::XcallsServed => arch::cpu::gs_inc_u64::<{ BASE + offset_of!(Counters, xcalls_served) }>(),
            Counter::Spurious => arch::cpu::gs_inc_u64::<{ BASE + offset_of!(Counters, spurious) }>(),
            Counter::Nmis => arch::cpu::gs_inc_u64::<{ BASE + offset_of!(Counters, nmis) }>(),
        }
    }
}
