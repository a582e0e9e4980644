//! Bringing up the application processors (APs), and the record of which CPUs run.
//!
//! The CPUs come from Limine's MP response when Limine started them, else from the MADT (`acpi`);
//! `maxcpus=N` keeps the boot CPU and the first N - 1 others. They are numbered densely into a
//! [`CpuMap`] (boot CPU = `CpuId` 0) and started all at once:
//!
//! - Limine: each parked AP's `goto_address` is written with [`limine_ap_entry`], which moves the
//!   AP onto the kernel's page tables (`mm::kernel_pml4_phys`) and then onto a kernel stack (the
//!   one in `extra`).
//! - Direct boot: the real-mode trampoline (`arch::trampoline`) is copied to a frame below 1 MiB
//!   (`mm::frames::alloc_below`), identity-mapped while the APs climb through it, and every AP gets
//!   INIT, 10 ms later a start-up IPI, 200 us later a second one (SDM vol. 3A, 9.4.4.1; the second
//!   is ignored by CPUs the first one started). Each AP reaches long mode on the kernel's PML4 and
//!   enters [`trampoline_ap_entry`] on the stack its ticket names. The page is unmapped and freed
//!   once every AP answered.
//!
//! AP stacks are kernel stacks with a guard page (`mm::stacks`), 32 KiB, kept as the AP's idle and
//! interrupt stack. Both paths end in `ap_start`: GDT and TSS (`tables::CpuTables::new_leaked`), IDT,
//! local APIC, its id -> its `CpuId`, its per-CPU block (`percpu::PerCpu` leaked on the heap,
//! installed on the AP itself), the boot CPU's CR0 and CR4. It logs `cpu N online: APIC id A, ACPI UID U`, joins the online set
//! and enters the AP main loop: halting with interrupts on and serving IPIs, until [`set_ap_main`]
//! names the function that takes over (the scheduler's per-CPU entry).
//!
//! The boot CPU waits until all are online or [`AP_TIMEOUT_NS`] has passed and prints one line,
//! `smp: N/M CPUs online`, naming by APIC id every CPU that did not answer. Each AP's state decides
//! races with the timeout: the AP moves it from Starting to Arrived, the boot CPU from Starting to
//! Abandoned; exactly one wins, and an AP that loses halts for good.
//!
//! Key API: [`start`], [`set_ap_main`], [`online`], [`nr_online`], [`apic_id_of`], [`percpu_of`].
//! Neighbours: `acpi` (MADT), `apic` (INIT/SIPI, per-CPU APIC), `mm` (tables, low frame, stacks),
//! `arch::gdt`, `arch::idt`, `percpu`, `xcall`
//! (its IPI handler is registered here before any AP runs), `panic` (stop-the-others by NMI).

use alloc::{boxed::Box, vec::Vec};
use core::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::atomic::AtomicCell;

use smp::{AcpiUid, ApicId, CpuId, CpuMap, MAX_CPUS};

use crate::{

    acpi,

    cpu::{map, percpu},

    cpus::xcall,

    irq::{apic::{self, Delivery, Dest}, ipi, panic},

    mm,

    time,

};

/// How long the boot CPU waits for the APs to come online, all together.
pub const AP_TIMEOUT_NS: u64 = 5_000_000_000;
/// Each AP's boot stack, which stays its interrupt and idle stack.
const AP_STACK_BYTES: usize = 32 * 1024;

const STATE_IDLE: u8 = 0;
const STATE_STARTING: u8 = 1;
const STATE_ARRIVED: u8 = 2;
const STATE_ONLINE: u8 = 3;
const STATE_ABANDONED: u8 = 4;

static STATE: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(STATE_IDLE) }; MAX_CPUS];
static AP_MAIN: AtomicCell<Option<fn() -> !>> = AtomicCell::new(None);
/// The boot CPU's CR0 and CR4 (protections, FPU setup), for the APs to copy.
static BSP_CR0: AtomicU64 = AtomicU64::new(0);
static BSP_CR4: AtomicU64 = AtomicU64::new(0);
/// The number of CPUs firmware or loader listed, before `maxcpus`.
static FOUND: AtomicUsize = AtomicUsize::new(1);
/// The stack tops handed to the trampoline, one per ticket.
static TRAMPOLINE_STACKS: spin::Once<Vec<u64>> = spin::Once::new();

/// Name the function every AP runs once it is online (instead of the built-in halt loop). APs
/// already idling switch to it at their next interrupt.
pub fn set_ap_main(f: fn() -> !) {
    AP_MAIN.store(Some(f));
}

/// Start every AP and wait for them; returns how many CPUs are online. Boot CPU, once, after
/// memory, the APIC and time calibration, with interrupts off.
pub fn start(limine_mp: Option<&'static ::limine::response::MpResponse>, maxcpus: Option<u32>) -> u32 {
    let bsp = apic::id();
    let listed: Vec<(ApicId, AcpiUid)> = match limine_mp {
        Some(mp) => mp.cpus().iter().map(|c| (ApicId::new(c.lapic_id), AcpiUid::new(c.id))).collect(),
        None => acpi::platform().cpus.iter().map(|c| (c.apic_id, c.uid)).collect(),
    };
    let found = listed.len().max(1);
    FOUND.store(found, Ordering::Relaxed);
    // An xAPIC addresses 8-bit ids, 0xff being broadcast: larger ids need x2APIC mode.
    let unreachable = |a: ApicId| !apic::is_x2apic() && a.get() >= 0xff;
    let too_wide = listed.iter().filter(|&&(a, _)| unreachable(a)).count();
    if too_wide > 0 {
        log::warn!("smp: {too_wide} CPUs have APIC ids above 254, which xAPIC mode cannot address; they stay off");
    }
    let keep = maxcpus.map_or(usize::MAX, |n| n as usize);
    let mut others = 0usize;
    let chosen = listed.iter().copied().filter(|&(a, _)| {
        a == bsp
            || !unreachable(a) && {
                others += 1;
                others < keep
            }
    });
    let map = match CpuMap::from_firmware(bsp, chosen) {
        Ok(m) => m,
        Err(e) => {
            if !listed.is_empty() {
                log::warn!("smp: unusable CPU list ({e}); running on the boot CPU alone");
            }
            CpuMap::from_firmware(bsp, [(bsp, AcpiUid::new(0))]).expect("a map of the boot CPU alone")
        }
    };
    let map = map::install(map);
    map::register_block(CpuId::BSP);
    xcall::init();
    panic::set_stop_others(ipi::send_nmi_all_others);
    BSP_CR0.store(arch::cr::cr0(), Ordering::Relaxed);
    BSP_CR4.store(arch::cr::cr4(), Ordering::Relaxed);

    let targets: Vec<(CpuId, ApicId)> = map.iter().filter(|&(c, _, _)| c != CpuId::BSP).map(|(c, a, _)| (c, a)).collect();
    let t0 = time::now_ns();
    let mut trampoline = None;
    if !targets.is_empty() {
        for &(cpu, _) in targets.iter() {
            STATE[cpu.index()].store(STATE_STARTING, Ordering::Release);
        }
        match limine_mp {
            Some(mp) => start_limine(mp, &targets),
            None => trampoline = start_with_sipi(&targets),
        }
    }
    let missing = wait_online(&targets, t0);
    // A CPU that has not answered may still wake in the trampoline later: its page stays mapped and
    // allocated then, rather than turning a late start into a fault with no handler.
    if let Some(page) = trampoline
        && missing.is_empty()
    {
        mm::unmap_identity(page, 0x1000);
        mm::frames::free(page);
    }
    let n = map::nr_online();
    let mut line = alloc::format!("smp: {n}/{found} CPUs online in {} ms", (time::now_ns() - t0) / 1_000_000);
    if map.nr_cpus() < found {
        line.push_str(&alloc::format!(" (maxcpus={})", map.nr_cpus()));
    }
    if !missing.is_empty() {
        line.push_str("; no answer from APIC id");
        for a in missing {
            line.push_str(&alloc::format!(" {}", a.get()));
        }
    }
    log::info!("{line}");
    n
}

/// A fresh AP stack (a kernel stack with a guard page below it); returns its top. Never freed: it
/// becomes the AP's interrupt and idle stack.
fn new_ap_stack() -> u64 {
    let stack = mm::stacks::KernelStack::new(AP_STACK_BYTES, "ap-idle").expect("memory for an AP's stack");
    stack.into_raw().1
}

fn start_limine(mp: &'static ::limine::response::MpResponse, targets: &[(CpuId, ApicId)]) {
    for c in mp.cpus() {
        if targets.iter().any(|&(_, a)| a.get() == c.lapic_id) {
            c.extra.store(new_ap_stack(), Ordering::Release);
            c.goto_address.write(limine_ap_entry);
        }
    }
}

/// Limine jumps here on the AP, on Limine's stack and page tables, interrupts off. The kernel's
/// tables come first (the new stack is a kernel stack, which only they map; Limine's stack is in
/// the direct map, which both map), then the stack.
unsafe extern "C" fn limine_ap_entry(cpu: &::limine::mp::Cpu) -> ! {
    let top = cpu.extra.load(Ordering::Acquire);
    let pml4 = mm::kernel_pml4_phys();
    // SAFETY: the kernel's tree maps the kernel image, the direct map (this stack) and every kernel
    // stack, and uses NX bits, which EFER.NXE makes meaningful (set first); `top` is the top of a
    // kernel stack allocated for this AP alone and never freed.
    unsafe {
        arch::cr::enable_nx();
        arch::mmu::load_cr3(pml4, arch::mmu::Cr3Load::Plain);
        arch::trampoline::call_on_stack(top, limine_ap_on_our_stack, 0)
    }
}

extern "C" fn limine_ap_on_our_stack(_: u64) -> ! {
    ap_start()
}

/// Returns the trampoline page, identity-mapped until the caller unmaps it.
fn start_with_sipi(targets: &[(CpuId, ApicId)]) -> Option<u64> {
    let Some(page) = mm::frames::alloc_below(0x10_0000) else {
        log::warn!("smp: no free page below 1 MiB for the AP trampoline; only the boot CPU will run");
        for &(cpu, _) in targets {
            STATE[cpu.index()].store(STATE_IDLE, Ordering::Release);
        }
        return None;
    };
    // The AP turns paging on while it runs at the page's physical address.
    mm::map_identity(page, 0x1000);
    let cr3 = mm::kernel_pml4_phys();
    assert!(cr3 < 1 << 32, "the kernel's PML4 at {cr3:#x} is above 4 GiB, out of the trampoline's reach");
    let stacks = TRAMPOLINE_STACKS.call_once(|| targets.iter().map(|_| new_ap_stack()).collect());
    let image = arch::trampoline::image();
    assert!(image.len() <= 4096, "the AP trampoline is larger than a page");
    let va = mm::phys_to_virt(page);
    // SAFETY: `page` is a RAM frame below 1 MiB the frame allocator gave to this function alone,
    // reached through the direct map; the data block lies inside the copied image and has the
    // layout of TrampolineData (arch::trampoline keeps them in step).
    unsafe {
        core::ptr::copy_nonoverlapping(image.as_ptr(), va as *mut u8, image.len());
        let data = &mut *((va as usize + arch::trampoline::data_offset()) as *mut arch::trampoline::TrampolineData);
        data.cr3 = cr3 as u32;
        data.next_ticket = 0;
        data.nr_stacks = stacks.len() as u32;
        data.stacks = stacks.as_ptr() as u64;
        data.entry = trampoline_ap_entry as *const () as u64;
    }
    let vector = (page >> 12) as u8;
    for &(_, a) in targets {
        apic::send(Dest::Apic(a), Delivery::Init);
    }
    time::delay_us(10_000);
    for &(_, a) in targets {
        apic::send(Dest::Apic(a), Delivery::Startup(vector));
    }
    time::delay_us(200);
    for &(cpu, a) in targets {
        if STATE[cpu.index()].load(Ordering::Acquire) == STATE_STARTING {
            apic::send(Dest::Apic(a), Delivery::Startup(vector));
        }
    }
    Some(page)
}

/// The trampoline calls this in long mode, on the stack of `ticket`, interrupts off, on the
/// kernel's tables.
extern "C" fn trampoline_ap_entry(_ticket: u32) -> ! {
    ap_start()
}

/// Common AP bring-up, on the AP's own stack and the kernel's page tables, interrupts off.
fn ap_start() -> ! {
    // Descriptor tables first: the GDT the AP arrived with (the loader's, or the trampoline's in a
    // page that is unmapped after bring-up) does not have the selectors the IDT's gates name.
    // SAFETY: once, on this CPU, interrupts off; the tables are leaked, so they live for ever.
    let loaded = unsafe { arch::gdt::CpuTables::new_leaked().load() };
    arch::idt::load();
    apic::init_ap();
    let apic_id = apic::id();
    let map = map::get().expect("APs start after the CPU map exists");
    let Some(cpu) = map.cpu_of(apic_id) else { arch::cpu::halt_forever() };
    if STATE[cpu.index()]
        .compare_exchange(STATE_STARTING, STATE_ARRIVED, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // The boot CPU gave up on this CPU (or never asked for it): stay out of the way.
        arch::cpu::halt_forever();
    }
    let block = Box::leak(Box::new(percpu::PerCpu::new(cpu.get(), apic_id.get())));
    // SAFETY: this AP's own block, installed once, on this AP, before anything reads it.
    unsafe { percpu::install(block) };
    map::register_block(cpu);
    // SAFETY: the boot CPU's CR0 and CR4 (write protection, global pages, SMEP/SMAP, FPU bits) are
    // valid on this identical CPU, in long mode on the same tables (CR3 carries no PCID, so
    // CR4.PCIDE may be set too).
    unsafe {
        arch::cr::write_cr0(BSP_CR0.load(Ordering::Relaxed));
        arch::cr::write_cr4(BSP_CR4.load(Ordering::Relaxed));
    }
    // SAFETY: this AP, once, interrupts off, its per-CPU block installed above, before it runs any
    // thread (so before any user mapping reaches it).
    unsafe { crate::cpu::ring3::init_this_cpu(loaded) };
    let uid = map.acpi_uid_of(cpu).map_or(0, |u| u.get());
    log::info!("cpu {} online: APIC id {}, ACPI UID {uid}", cpu.get(), apic_id.get());
    map::mark_online(cpu);
    STATE[cpu.index()].store(STATE_ONLINE, Ordering::Release);
    ap_idle()
}

/// Halt with interrupts on, serving IPIs, until [`set_ap_main`] names the real work.
fn ap_idle() -> ! {
    loop {
        if let Some(f) = AP_MAIN.load() {
            f();
        }
        arch::cpu::enable_interrupts_and_halt();
    }
}

/// Wait for the targets to come online; return the APIC ids of those that did not.
fn wait_online(targets: &[(CpuId, ApicId)], t0: u64) -> Vec<ApicId> {
    let all_settled = |after_timeout: bool| {
        targets.iter().all(|&(c, _)| {
            let s = STATE[c.index()].load(Ordering::Acquire);
            s == STATE_ONLINE || s == STATE_IDLE || (after_timeout && s == STATE_ABANDONED)
        })
    };
    while !all_settled(false) && time::now_ns() - t0 < AP_TIMEOUT_NS {
        core::hint::spin_loop();
    }
    // Time is up: abandon the CPUs that never arrived, then give the ones that did a moment more.
    for &(c, _) in targets {
        let _ = STATE[c.index()].compare_exchange(STATE_STARTING, STATE_ABANDONED, Ordering::AcqRel, Ordering::Acquire);
    }
    let t1 = time::now_ns();
    while !all_settled(true) && time::now_ns() - t1 < AP_TIMEOUT_NS {
        core::hint::spin_loop();
    }
    targets
        .iter()
        .filter(|&&(c, _)| STATE[c.index()].load(Ordering::Acquire) != STATE_ONLINE)
        .map(|&(_, a)| a)
        .collect()
}

#[cfg(feature = "ktest")]
mod tests {
    use alloc::{format, string::String, sync::Arc, vec::Vec};
    use core::sync::atomic::{AtomicU64, Ordering};

    use smp::{CpuSet, MAX_CPUS};

    use super::*;
    use crate::{ensure, testing::Test};

    /// The number of CPUs the bring-up tried to start: those found, limited by `maxcpus`.
    fn nr_expected() -> usize {
        map::get().map_or(1, CpuMap::nr_cpus)
    }

    crate::register_tests![
        Test { name: "cpus_online", min_cpus: 1, expect_fault: false, run: cpus_online },
        Test { name: "percpu_own_id", min_cpus: 1, expect_fault: false, run: percpu_own_id },
    ];

    /// Every CPU the bring-up started (all found, unless `maxcpus` limited it) came online, and the
    /// online set is exactly CPUs 0..N.
    fn cpus_online() -> Result<(), String> {
        let expected = nr_expected();
        let online = map::online();
        ensure!(
            online == CpuSet::first_n(expected),
            "online CPUs are {online}, expected {} (found {}, maxcpus kept {expected})",
            CpuSet::first_n(expected),
            FOUND.load(Ordering::Relaxed)
        );
        Ok(())
    }

    /// A call to each CPU alone reads that CPU's per-CPU block and its APIC: the index and APIC id
    /// it reports must be those of the CPU the call was sent to.
    fn percpu_own_id() -> Result<(), String> {
        let map = map::get().ok_or_else(|| String::from("no CPU map"))?;
        let answers: Arc<Vec<AtomicU64>> = Arc::new((0..3 * MAX_CPUS).map(|_| AtomicU64::new(u64::MAX)).collect());
        for cpu in map::online().iter() {
            let a = answers.clone();
            xcall::call(
                &CpuSet::single(cpu),
                move |_| {
                    // SAFETY: called functions run with interrupts off.
                    let guard = unsafe { percpu::IrqOff::assume() };
                    let block = percpu::get(&guard);
                    let i = 3 * cpu.index();
                    a[i].store(u64::from(block.cpu_index()), Ordering::Relaxed);
                    a[i + 1].store(u64::from(block.apic_id()), Ordering::Relaxed);
                    a[i + 2].store(u64::from(apic::id().get()), Ordering::Relaxed);
                },
                10_000_000_000,
            )
            .map_err(|m| format!("{m} did not answer"))?;
            let i = 3 * cpu.index();
            let (index, block_apic, hw_apic) =
                (answers[i].load(Ordering::Relaxed), answers[i + 1].load(Ordering::Relaxed), answers[i + 2].load(Ordering::Relaxed));
            let want_apic = u64::from(map.apic_of(cpu).map_or(u32::MAX, |a| a.get()));
            ensure!(index == u64::from(cpu.get()), "a call sent to {cpu} ran where the per-CPU index is {index}");
            ensure!(block_apic == want_apic, "{cpu}'s per-CPU block says APIC id {block_apic}, the map says {want_apic}");
            ensure!(hw_apic == want_apic, "{cpu}'s local APIC says id {hw_apic}, the map says {want_apic}");
        }
        Ok(())
    }
}
