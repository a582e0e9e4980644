//! Each CPU's GDT and TSS, with separate IST stacks for the exceptions that must not run on a stack
//! that may be broken: double fault (a kernel stack overflow ends there), NMI (arrives anywhere, even
//! mid-switch) and machine check (SDM vol. 3A, 7.14.5 "Interrupt Stack Table").
//!
//! GDT order: null, kernel code, kernel data, user data, user code, TSS. SYSCALL and SYSRET derive
//! their selectors from STAR in exactly this order (`crate::syscall` names the numbers).
//!
//! The IST stacks are not part of the tables: whoever builds them names the stack tops, so that
//! they can be kernel stacks with a guard page below (an overflow of an IST stack then faults
//! instead of running into whatever lies below). The boot CPU starts on three static stacks, because
//! its tables exist before memory management does, and moves to guarded ones with
//! [`CpuTables::set_bsp_ist`] as soon as it can.
//!
//! The top [`IST_SLOT_BYTES`] of each IST stack are not stack: the TSS's IST entry points just below
//! them, so the CPU pushes its frame below, and the word at the entry's address holds this CPU's
//! kernel GS base (its per-CPU block). The paranoid trap entry ([`crate::trap`]) reads it there, at
//! a constant offset from its stack pointer, when GS may hold anything a user loaded with WRGSBASE
//! (see [`crate::fsbase`]): it cannot use GS to find it, and the IST stack is the one memory it
//! knows is this CPU's. Written wherever the tables get their stacks, before an NMI can use them.
#![cfg(target_os = "none")]

use x86_64::{
    VirtAddr,
    instructions::{
        segmentation::{CS, DS, ES, SS, Segment},
        tables::load_tss,
    },
    structures::{
        gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector},
        tss::TaskStateSegment,
    },
};

/// IST slots (1-based in the IDT, 0-based in the TSS).
pub const IST_DOUBLE_FAULT: u16 = 1;
pub const IST_NMI: u16 = 2;
pub const IST_MACHINE_CHECK: u16 = 3;

const IST_STACK_BYTES: usize = 16 * 1024;

/// The bytes at the top of each IST stack above the entry the TSS names: the kernel GS base slot
/// (the word at the entry), and padding that keeps the entry 16-byte aligned.
pub const IST_SLOT_BYTES: u64 = 16;

/// The IST entry for a stack whose top is `top`, with the kernel GS base slot above it.
fn ist_entry(top: u64) -> u64 {
    top - IST_SLOT_BYTES
}

/// Write `gs` into the kernel GS base slot above the IST entry `entry`.
///
/// # Safety
/// `entry` came from [`ist_entry`] for a live stack that only this CPU uses.
unsafe fn write_slot(entry: u64, gs: u64) {
    // SAFETY: per the caller, the slot is the stack's own top word, which no frame uses.
    unsafe { (entry as *mut u64).write_volatile(gs) };
}

/// Write this CPU's kernel GS base `gs` into the slot of each IST stack `tss` names.
///
/// # Safety
/// `tss` is this CPU's TSS, its IST entries set by [`CpuTables`] (so each has its slot) to stacks
/// that live for ever; `gs` is this CPU's per-CPU block.
pub unsafe fn write_ist_kernel_gs(tss: *const TaskStateSegment, gs: u64) {
    for slot in IST_SLOTS {
        // SAFETY: per the caller; the TSS is packed, so the entry is read unaligned, through a raw
        // place; each entry is a stack's `ist_entry`.
        unsafe {
            let entry = (&raw const (*tss).interrupt_stack_table[usize::from(slot - 1)]).cast::<u64>().read_unaligned();
            write_slot(entry, gs);
        }
    }
}

#[repr(C, align(16))]
struct IstStack([u8; IST_STACK_BYTES]);

/// What [`CpuTables::load`] set up that the ring-3 entry needs.
pub struct Loaded {
    /// This CPU's TSS (it lives for ever).
    pub tss: *mut TaskStateSegment,
    pub kernel_cs: SegmentSelector,
    pub kernel_ss: SegmentSelector,
    pub user_cs: SegmentSelector,
    pub user_ss: SegmentSelector,
}

/// One CPU's descriptor tables.
pub struct CpuTables {
    gdt: GlobalDescriptorTable,
    tss: TaskStateSegment,
    code: SegmentSelector,
    data: SegmentSelector,
    tss_sel: SegmentSelector,
}

static mut BSP_TABLES: CpuTables = CpuTables::empty();
/// The boot CPU's first IST stacks: no guard page, used only until [`CpuTables::set_bsp_ist`].
static mut BSP_IST: [IstStack; 3] = [const { IstStack([0; IST_STACK_BYTES]) }; 3];

/// The IST slots, in the order of the stack tops the functions below take.
const IST_SLOTS: [u16; 3] = [IST_DOUBLE_FAULT, IST_NMI, IST_MACHINE_CHECK];

impl CpuTables {
    const fn empty() -> Self {
        CpuTables {
            gdt: GlobalDescriptorTable::new(),
            tss: TaskStateSegment::new(),
            code: SegmentSelector(0),
            data: SegmentSelector(0),
            tss_sel: SegmentSelector(0),
        }
    }

    /// The boot CPU's tables, static so that they exist before the heap does, with the static IST
    /// stacks.
    ///
    /// # Safety
    /// Called once, by the boot CPU.
    pub unsafe fn bsp() -> &'static mut CpuTables {
        // SAFETY: called once, so this is the only reference to BSP_TABLES; BSP_IST is only ever
        // addressed (here), never referenced.
        unsafe {
            let t = &mut *(&raw mut BSP_TABLES);
            let ist = &raw mut BSP_IST;
            for (i, slot) in IST_SLOTS.into_iter().enumerate() {
                let top = (&raw mut (*ist)[i].0) as u64 + IST_STACK_BYTES as u64;
                // The slots are written once GS is this CPU's (`crate::fsbase::init_cpu`).
                t.tss.interrupt_stack_table[usize::from(slot - 1)] = VirtAddr::new(ist_entry(top));
            }
            t
        }
    }

    /// Move the boot CPU's IST entries to the stacks whose tops are `tops` (double fault, NMI,
    /// machine check). Only this CPU reads the entries (at each IST delivery), and interrupts arrive
    /// between instructions, so a delivery during the update uses either stack, both valid.
    ///
    /// Each new stack's kernel GS base slot gets the current GS base before its entry is used.
    ///
    /// # Safety
    /// Boot CPU, after its tables were loaded and its per-CPU block installed (GS base); each top is
    /// the 16-byte aligned top of a stack that lives for ever and is used by nothing else.
    pub unsafe fn set_bsp_ist(tops: [u64; 3]) {
        let gs = x86_64::registers::model_specific::GsBase::read().as_u64();
        for (top, slot) in tops.into_iter().zip(IST_SLOTS) {
            // SAFETY: the new stack is this CPU's alone (caller); no reference to BSP_TABLES is live
            // after `load` consumed it; the field is written through a raw place (the TSS is packed:
            // 4-byte aligned entries).
            unsafe {
                write_slot(ist_entry(top), gs);
                let entry = (&raw mut BSP_TABLES.tss.interrupt_stack_table[usize::from(slot - 1)]).cast::<u64>();
                entry.write_unaligned(ist_entry(top));
            }
        }
    }

    /// Fresh tables for one CPU, on the heap (they live as long as the CPU: leaked on purpose),
    /// with IST stacks whose tops are `ist_tops` (double fault, NMI, machine check), their kernel GS
    /// base slots holding `kernel_gs`, the AP's per-CPU block. Built by the boot CPU for an AP, so
    /// that the AP needs no memory of its own before it has its per-CPU block.
    ///
    /// # Safety
    /// Each top is the 16-byte aligned top of a stack that lives for ever and is used by nothing but
    /// these tables' CPU.
    pub unsafe fn new_leaked(ist_tops: [u64; 3], kernel_gs: u64) -> &'static mut CpuTables {
        let layout = core::alloc::Layout::new::<CpuTables>();
        // SAFETY: the layout is non-zero-sized; the result is checked for null below.
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) }.cast::<CpuTables>();
        if p.is_null() {
            alloc::alloc::handle_alloc_error(layout);
        }
        // SAFETY: `p` is valid for writes of a CpuTables; every field is written here before the
        // reference is made; the stacks are the caller's, unused so far.
        unsafe {
            (&raw mut (*p).gdt).write(GlobalDescriptorTable::new());
            let mut tss = TaskStateSegment::new();
            for (top, slot) in ist_tops.into_iter().zip(IST_SLOTS) {
                write_slot(ist_entry(top), kernel_gs);
                tss.interrupt_stack_table[usize::from(slot - 1)] = VirtAddr::new(ist_entry(top));
            }
            (&raw mut (*p).tss).write(tss);
            (&raw mut (*p).code).write(SegmentSelector(0));
            (&raw mut (*p).data).write(SegmentSelector(0));
            (&raw mut (*p).tss_sel).write(SegmentSelector(0));
            &mut *p
        }
    }

    /// Fill in the tables and load them on this CPU: GDT, CS/SS/DS/ES, the TSS. Returns what the
    /// ring-3 entry needs ([`crate::syscall::init_cpu`]).
    ///
    /// # Safety
    /// Runs on the CPU that will use these tables, once, with interrupts off.
    pub unsafe fn load(&'static mut self) -> Loaded {
        let this: *mut CpuTables = self;
        // SAFETY: the tables are 'static (leaked), so the TSS outlives the GDT entry naming it, and the
        // GDT outlives its loading; `this` is the only path to them from here on.
        unsafe {
            let t = &mut *this;
            t.code = t.gdt.append(Descriptor::kernel_code_segment());
            t.data = t.gdt.append(Descriptor::kernel_data_segment());
            let user_ss = t.gdt.append(Descriptor::user_data_segment());
            let user_cs = t.gdt.append(Descriptor::user_code_segment());
            t.tss_sel = t.gdt.append(Descriptor::tss_segment(&*(&raw const t.tss)));
            (*this).gdt.load();
            CS::set_reg(t.code);
            SS::set_reg(t.data);
            DS::set_reg(t.data);
            ES::set_reg(t.data);
            load_tss(t.tss_sel);
            Loaded { tss: &raw mut t.tss, kernel_cs: t.code, kernel_ss: t.data, user_cs, user_ss }
        }
    }
}

/// The IST entries (double fault, NMI, machine check: each stack's top less [`IST_SLOT_BYTES`]) of
/// the TSS this CPU has loaded, read back through the task register and the GDT (SDM vol. 3A, 8.2.3
/// "TSS Descriptor in 64-bit mode"), for tests that check where the emergency stacks really are.
pub fn this_cpu_ist_tops() -> [u64; 3] {
    let gdtr = x86_64::instructions::tables::sgdt();
    let selector: u16;
    // SAFETY: STR only reads the task register.
    unsafe { core::arch::asm!("str {0:x}", out(reg) selector, options(nomem, nostack, preserves_flags)) };
    let desc = gdtr.base.as_u64() + u64::from(selector & !7);
    // SAFETY: the loaded GDT is mapped for as long as it is loaded, and the task register's selector
    // names a 16-byte TSS descriptor inside it; the TSS it names is mapped (this CPU uses it).
    unsafe {
        let low = (desc as *const u64).read_unaligned();
        let high = ((desc + 8) as *const u64).read_unaligned();
        let base = ((low >> 16) & 0xff_ffff) | (((low >> 56) & 0xff) << 24) | ((high & 0xffff_ffff) << 32);
        let tss = &*(base as *const TaskStateSegment);
        IST_SLOTS.map(|slot| tss.interrupt_stack_table[usize::from(slot - 1)].as_u64())
    }
}
