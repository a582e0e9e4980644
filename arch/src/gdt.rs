//! Each CPU's GDT and TSS, with separate IST stacks for the exceptions that must not run on a stack
//! that may be broken: double fault (a kernel stack overflow ends there), NMI (arrives anywhere, even
//! mid-switch) and machine check (SDM vol. 3A, 7.14.5 "Interrupt Stack Table").
//!
//! GDT order: null, kernel code, kernel data, user data, user code, TSS. SYSCALL and SYSRET derive
//! their selectors from STAR in exactly this order (`crate::syscall` names the numbers).
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

/// One CPU's descriptor tables and emergency stacks.
pub struct CpuTables {
    gdt: GlobalDescriptorTable,
    tss: TaskStateSegment,
    ist: [IstStack; 3],
    code: SegmentSelector,
    data: SegmentSelector,
    tss_sel: SegmentSelector,
}

static mut BSP_TABLES: CpuTables = CpuTables::empty();

impl CpuTables {
    const fn empty() -> Self {
        CpuTables {
            gdt: GlobalDescriptorTable::new(),
            tss: TaskStateSegment::new(),
            ist: [const { IstStack([0; IST_STACK_BYTES]) }; 3],
            code: SegmentSelector(0),
            data: SegmentSelector(0),
            tss_sel: SegmentSelector(0),
        }
    }

    /// The boot CPU's tables, static so that they exist before the heap does.
    ///
    /// # Safety
    /// Called once, by the boot CPU.
    pub unsafe fn bsp() -> &'static mut CpuTables {
        // SAFETY: called once, so this is the only reference.
        unsafe { &mut *(&raw mut BSP_TABLES) }
    }

    /// Fresh tables for one CPU, on the heap (they live as long as the CPU: leaked on purpose).
    pub fn new_leaked() -> &'static mut CpuTables {
        // Built in place: the value is 48 KiB, too big to pass through a small boot stack.
        let layout = core::alloc::Layout::new::<CpuTables>();
        // SAFETY: the layout is non-zero-sized; the result is checked for null below.
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) }.cast::<CpuTables>();
        if p.is_null() {
            alloc::alloc::handle_alloc_error(layout);
        }
        // SAFETY: `p` is valid for writes of a CpuTables and zeroed, which is a valid value for the IST
        // stacks (plain bytes); every other field is written here before the reference is made.
        unsafe {
            (&raw mut (*p).gdt).write(GlobalDescriptorTable::new());
            (&raw mut (*p).tss).write(TaskStateSegment::new());
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
        for (i, slot) in [IST_DOUBLE_FAULT, IST_NMI, IST_MACHINE_CHECK].into_iter().enumerate() {
            let top = VirtAddr::from_ptr(self.ist[i].0.as_ptr()) + IST_STACK_BYTES as u64;
            self.tss.interrupt_stack_table[usize::from(slot - 1)] = top;
        }
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
