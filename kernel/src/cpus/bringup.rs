//! Bringing up the application processors (APs), and the record of which CPUs run.
//!
//! The CPUs come from Limine's MP response when Limine started them, else from the MADT (`acpi`);
//! `maxcpus=N` keeps the boot CPU and the first N - 1 others, and at most [`MAX_CPUS`] are kept
//! whatever firmware lists (with a warning). They are numbered densely into a [`CpuMap`] (boot
//! CPU = `CpuId` 0).
//!
//! Before any AP runs, the boot CPU builds each one's kit: a 32 KiB kernel stack with a guard page
//! (kept as the AP's idle and interrupt stack), its per-CPU block (`percpu::PerCpu`, leaked), its
//! GDT and TSS (`arch::gdt::CpuTables`, leaked) whose IST stacks are guarded kernel stacks too. The
//! AP's first Rust code installs the block (GS) and the tables before anything that could allocate,
//! log or panic: the allocator and the console read the CPU's index through GS, and a heap growth
//! on an AP with a GS base of 0 used to fault inside the fault path once the boot heap ran out
//! (around 170 CPUs).
//!
//! The APs are started all at once:
//!
//! - Limine: each parked AP's `extra` is its `CpuId` and its `goto_address` [`limine_ap_entry`],
//!   which moves the AP onto the kernel's page tables (`mm::kernel_pml4_phys`) and its kit's stack.
//!   Limine's APs the kernel leaves out are sent to a parking stub on the kernel's tables and then
//!   INIT (where the APIC reaches them) before the loader's memory, which they poll, is reclaimed.
//! - Direct boot: the real-mode trampoline (`arch::trampoline`) is copied to a frame below 1 MiB
//!   (`mm::frames::alloc_below`), identity-mapped while the APs climb through it, and every AP gets
//!   INIT, 10 ms later a start-up IPI, 200 us later a second one (SDM vol. 3A, 9.4.4.1; the second
//!   is ignored by CPUs the first one started). Each AP reaches long mode on the kernel's PML4 and
//!   enters [`trampoline_ap_entry`] on a kit's stack; its APIC id names its `CpuId`. The page is
//!   unmapped and freed by [`release_trampoline`], once the kernel's shootdown hook exists, so the
//!   APs drop their translations of it too.
//!
//! Both paths end in `ap_start`: per-CPU block, GDT and TSS, IDT, local APIC, the boot CPU's CR0
//! and CR4; then the hand-shake below decides whether the AP joins. An AP that joins logs
//! `cpu N online: APIC id A, ACPI UID U` and halts with interrupts on, serving IPIs, until
//! [`set_ap_main`] names the function that takes over (the scheduler's per-CPU entry).
//!
//! The boot CPU waits until all are online or [`AP_TIMEOUT_NS`] (plus 10 ms per AP) has passed and
//! prints one line, `smp: N/M CPUs online`, naming by APIC id every CPU that did not answer. The
//! hand-shake (`smp::handshake`) decides each race with the timeout: an AP that loses halts and is
//! never in the online set or the scheduler.
//!
//! Key API: [`start`], [`release_trampoline`], [`set_ap_main`], [`new_ist_stacks`].
//! Neighbours: `acpi` (MADT), `apic` (INIT/SIPI, per-CPU APIC), `mm` (low frame, stacks),
//! `arch::gdt`, `arch::idt`, `percpu`, `map`, `xcall` (its IPI handler is registered here before
//! any AP runs), `panic` (stop-the-others by NMI).

use alloc::{boxed::Box, vec::Vec};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::atomic::AtomicCell;

use smp::{
    AcpiUid, ApicId, CpuId, CpuMap, MAX_CPUS,
    handshake::{ApPhase, ApState},
};

use crate::{

    acpi,

    cpu::{map, percpu},

    cpus::xcall,

    irq::{apic::{self, Delivery, Dest}, ipi, panic},

    mm,

    time,

};

/// How long the boot CPU waits for the APs to come online, all together: this much...
pub const AP_TIMEOUT_NS: u64 = 5_000_000_000;
/// ...plus this much per AP. Hardware starts hundreds of CPUs in milliseconds, but an emulator
/// running many virtual CPUs on few host cores does not: 600 under TCG on two cores need over 5 s.
const AP_TIMEOUT_PER_AP_NS: u64 = 10_000_000;
/// How long the boot CPU waits, after the timeout, for APs that arrived to finish coming online.
const AP_GRACE_NS: u64 = 5_000_000_000;
/// How long the boot CPU waits for Limine's left-out APs to reach the parking stub.
const PARK_TIMEOUT_NS: u64 = 1_000_000_000;
/// Each AP's boot stack, which stays its interrupt and idle stack.
const AP_STACK_BYTES: usize = 32 * 1024;
/// Each IST stack (double fault, NMI, machine check), with a guard page below it.
const IST_STACK_BYTES: usize = 16 * 1024;

// The hand-shake, per AP (`smp::handshake`): Starting -> Arrived -> Online by the AP, Starting or
// Arrived -> Abandoned by the boot CPU, each a compare-exchange. The boot CPU abandons what has
// not arrived when its wait is out, and what arrived but is not online AP_GRACE_NS later; after
// that every state is final, and the boot CPU alone marks the Online ones in the CPU map.
static STATE: [ApState; MAX_CPUS] = [const { ApState::new() }; MAX_CPUS];
/// What the boot CPU built for each AP before starting it: its per-CPU block, its descriptor tables
/// (with guarded IST stacks) and its stack. An AP installs the first two before any code that may
/// allocate, log or panic, so nothing on an AP ever runs with a GS base of 0.
static KIT_BLOCK: [AtomicPtr<percpu::PerCpu>; MAX_CPUS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
static KIT_TABLES: [AtomicPtr<arch::gdt::CpuTables>; MAX_CPUS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
static KIT_STACK: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static AP_MAIN: AtomicCell<Option<fn() -> !>> = AtomicCell::new(None);
/// The boot CPU's CR0 and CR4 (protections, FPU setup), for the APs to copy.
static BSP_CR0: AtomicU64 = AtomicU64::new(0);
static BSP_CR4: AtomicU64 = AtomicU64::new(0);
/// The number of CPUs firmware or loader listed, before `maxcpus`.
static FOUND: AtomicUsize = AtomicUsize::new(1);
/// The stack tops handed to the trampoline, one per ticket.
static TRAMPOLINE_STACKS: spin::Once<Vec<u64>> = spin::Once::new();
/// The trampoline page while it is identity-mapped (0: none), for [`release_trampoline`].
static TRAMPOLINE_PAGE: AtomicU64 = AtomicU64::new(0);
/// How many of Limine's left-out APs reached the parking stub.
static PARKED: AtomicUsize = AtomicUsize::new(0);

/// Name the function every AP runs once it is online (instead of the built-in halt loop). APs
/// already idling switch to it at their next interrupt.
pub fn set_ap_main(f: fn() -> !) {
    AP_MAIN.store(Some(f));
}

/// Three guarded IST stacks (double fault, NMI, machine check), never freed; their tops.
pub fn new_ist_stacks() -> Option<[u64; 3]> {
    let mut tops = [0u64; 3];
    for (top, name) in tops.iter_mut().zip(["ist-double-fault", "ist-nmi", "ist-machine-check"]) {
        *top = mm::stacks::KernelStack::new(IST_STACK_BYTES, name)?.into_raw().1;
    }
    Some(tops)
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
    if maxcpus.is_none_or(|n| n as usize > MAX_CPUS) && listed.len() > MAX_CPUS {
        log::warn!("smp: {} CPUs listed, more than the {MAX_CPUS} this kernel supports; using the boot CPU and the first {} others", listed.len(), MAX_CPUS - 1);
    }
    let keep = maxcpus.map_or(usize::MAX, |n| n as usize);
    let chosen = smp::cpumap::choose_cpus(bsp, listed.iter().copied(), keep, |a| !unreachable(a));
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
    {
        // SAFETY: boot CPU, interrupts off, for the borrow's length.
        let guard = unsafe { percpu::IrqOff::assume() };
        map::register_block(CpuId::BSP, percpu::this_block(&guard));
    }
    xcall::init();
    panic::set_stop_others(ipi::send_nmi_all_others);
    BSP_CR0.store(arch::cr::cr0(), Ordering::Relaxed);
    BSP_CR4.store(arch::cr::cr4(), Ordering::Relaxed);
    for (cpu, apic_id, uid) in map.iter() {
        log::debug!("smp: {cpu} is APIC id {}, ACPI UID {}", apic_id.get(), uid.get());
    }

    let t0 = time::now_ns();
    let targets = prepare(map);
    log::debug!("smp: {} AP kits built in {} us", targets.len(), (time::now_ns() - t0) / 1000);
    let t0 = time::now_ns();
    if !targets.is_empty() {
        for &(cpu, _) in targets.iter() {
            STATE[cpu.index()].start();
        }
        match limine_mp {
            Some(mp) => start_limine(mp, &targets),
            None => start_with_sipi(&targets),
        }
    }
    let missing = wait_online(&targets, t0);
    for &(c, _) in targets.iter() {
        if STATE[c.index()].phase() == ApPhase::Online {
            map::register_block(c, kit_block(c).expect("an online CPU has its kit"));
            map::mark_online(c);
        }
    }
    if let Some(mp) = limine_mp {
        park_left_out(mp, &targets, bsp);
    }
    let n = map::nr_online();
    let mut line = alloc::format!("smp: {n}/{found} CPUs online in {} ms", (time::now_ns() - t0) / 1_000_000);
    if let Some(m) = maxcpus
        && (m as usize) < found
    {
        line.push_str(&alloc::format!(" (maxcpus={m})"));
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

/// Unmap and free the trampoline page. Called once the kernel's shootdown hook is installed, so
/// that the APs, which walked the identity mapping, drop its TLB and paging-structure entries too;
/// kept if a CPU never answered (it may still wake in the trampoline).
pub fn release_trampoline() {
    let page = TRAMPOLINE_PAGE.swap(0, Ordering::AcqRel);
    if page == 0 {
        return;
    }
    // Unmapped without the hook, the page would leave its translations (and paging-structure
    // entries) in every AP's TLB, and the frame is freed for reuse right after.
    assert!(mm::has_shootdown(), "smp: the AP trampoline is released before the shootdown hook exists");
    let late = STATE.iter().any(|s| s.phase() == ApPhase::Abandoned);
    if late {
        log::warn!("smp: the AP trampoline at {page:#x} stays mapped: a CPU that did not answer may still run it");
        return;
    }
    mm::unmap_identity(page, 0x1000);
    mm::frames::free(page);
}

/// Build, on the boot CPU, everything each AP needs before it runs Rust code that may allocate:
/// its stack, its per-CPU block, its tables with guarded IST stacks. Returns the APs whose kit
/// could be built (the others stay off, with a warning).
fn prepare(map: &CpuMap) -> Vec<(CpuId, ApicId)> {
    let mut targets = Vec::new();
    let mut short = 0usize;
    for (cpu, apic_id, _) in map.iter().filter(|&(c, _, _)| c != CpuId::BSP) {
        let kit = (|| {
            let stack = mm::stacks::KernelStack::new(AP_STACK_BYTES, "ap-idle")?.into_raw().1;
            let ist = new_ist_stacks()?;
            Some((stack, ist))
        })();
        let Some((stack, ist)) = kit else {
            short += 1;
            continue;
        };
        let block = Box::leak(Box::new(percpu::PerCpu::new(cpu.get(), apic_id.get())));
        // SAFETY: the IST stacks are fresh, never freed, and only this AP's tables use them.
        let tables = unsafe { arch::gdt::CpuTables::new_leaked(ist, core::ptr::from_ref(&*block) as u64) };
        KIT_STACK[cpu.index()].store(stack, Ordering::Relaxed);
        KIT_BLOCK[cpu.index()].store(block, Ordering::Relaxed);
        KIT_TABLES[cpu.index()].store(tables, Ordering::Relaxed);
        targets.push((cpu, apic_id));
    }
    if short > 0 {
        log::warn!("smp: no memory for the stacks of {short} CPUs; they stay off");
    }
    targets
}

fn kit_block(cpu: CpuId) -> Option<&'static percpu::PerCpu> {
    let p = KIT_BLOCK[cpu.index()].load(Ordering::Acquire);
    // SAFETY: a non-null entry is a leaked block (never freed) whose shared fields are atomics.
    (!p.is_null()).then(|| unsafe { &*p })
}

fn start_limine(mp: &'static ::limine::response::MpResponse, targets: &[(CpuId, ApicId)]) {
    for c in mp.cpus() {
        if let Some(&(cpu, _)) = targets.iter().find(|&&(_, a)| a.get() == c.lapic_id) {
            c.extra.store(u64::from(cpu.get()), Ordering::Release);
            c.goto_address.write(limine_ap_entry);
        }
    }
}

/// Limine jumps here on the AP, on Limine's stack and page tables, interrupts off. The kernel's
/// tables come first (the new stack is a kernel stack, which only they map; Limine's stack is in
/// the direct map, which both map), then the stack.
unsafe extern "C" fn limine_ap_entry(cpu: &::limine::mp::Cpu) -> ! {
    let index = cpu.extra.load(Ordering::Acquire);
    let top = KIT_STACK.get(index as usize).map_or(0, |s| s.load(Ordering::Acquire));
    if top == 0 {
        arch::cpu::halt_forever();
    }
    let pml4 = mm::kernel_pml4_phys();
    // SAFETY: the kernel's tree maps the kernel image, the direct map (this stack) and every kernel
    // stack, and uses NX bits, which EFER.NXE makes meaningful (set first); `top` is the top of a
    // kernel stack allocated for this AP alone and never freed.
    unsafe {
        arch::cr::enable_nx();
        arch::mmu::load_cr3(pml4, arch::mmu::Cr3Load::Plain);
        arch::trampoline::call_on_stack(top, limine_ap_on_our_stack, index)
    }
}

extern "C" fn limine_ap_on_our_stack(index: u64) -> ! {
    ap_start(CpuId::new(index as u32))
}

/// Where Limine's APs that the kernel does not start go before the loader's memory is reclaimed:
/// they poll their `limine_mp_info` (in that memory) and run on the loader's page tables (also in
/// it). The stub moves them onto the kernel's tables, says it arrived, and halts with interrupts
/// off without touching its stack again.
unsafe extern "C" fn limine_park_entry(_cpu: &::limine::mp::Cpu) -> ! {
    let pml4 = mm::kernel_pml4_phys();
    // SAFETY: as in `limine_ap_entry`; the kernel's tables map this code and PARKED.
    unsafe {
        arch::cr::enable_nx();
        arch::mmu::load_cr3(pml4, arch::mmu::Cr3Load::Plain);
    }
    PARKED.fetch_add(1, Ordering::AcqRel);
    arch::cpu::halt_forever()
}

/// Send every CPU Limine started but the kernel left out (maxcpus, unaddressable APIC ids, no
/// memory for its stack, or abandoned before it arrived) to [`limine_park_entry`], then INIT those
/// the APIC can address, so that none reads the loader's memory once it is reclaimed. Waits for the
/// stub's acknowledgements, at most [`PARK_TIMEOUT_NS`].
fn park_left_out(mp: &'static ::limine::response::MpResponse, targets: &[(CpuId, ApicId)], bsp: ApicId) {
    let left_out: Vec<&::limine::mp::Cpu> = mp
        .cpus()
        .iter()
        .map(|c| &**c)
        .filter(|c| c.lapic_id != bsp.get() && !targets.iter().any(|&(_, a)| a.get() == c.lapic_id))
        .collect();
    if left_out.is_empty() {
        return;
    }
    for c in left_out.iter() {
        c.goto_address.write(limine_park_entry);
    }
    let t0 = time::now_ns();
    while PARKED.load(Ordering::Acquire) < left_out.len() && time::now_ns() - t0 < PARK_TIMEOUT_NS {
        core::hint::spin_loop();
    }
    let reachable = |a: u32| apic::is_x2apic() || a < 0xff;
    for c in left_out.iter().filter(|c| reachable(c.lapic_id)) {
        apic::send(Dest::Apic(ApicId::new(c.lapic_id)), Delivery::Init);
    }
    log::info!(
        "smp: {} CPUs left out of {} parked before the loader's memory is reclaimed ({} in the stub)",
        left_out.len(),
        mp.cpus().len(),
        PARKED.load(Ordering::Acquire)
    );
}

/// Start the APs through the trampoline; its page stays identity-mapped until
/// [`release_trampoline`].
fn start_with_sipi(targets: &[(CpuId, ApicId)]) {
    let Some(page) = mm::frames::alloc_below(0x10_0000) else {
        log::warn!("smp: no free page below 1 MiB for the AP trampoline; only the boot CPU will run");
        for &(cpu, _) in targets {
            STATE[cpu.index()].cancel();
        }
        return;
    };
    // The AP turns paging on while it runs at the page's physical address.
    mm::map_identity(page, 0x1000);
    TRAMPOLINE_PAGE.store(page, Ordering::Release);
    let cr3 = mm::kernel_pml4_phys();
    assert!(cr3 < 1 << 32, "the kernel's PML4 at {cr3:#x} is above 4 GiB, out of the trampoline's reach");
    let stacks = TRAMPOLINE_STACKS.call_once(|| targets.iter().map(|&(c, _)| KIT_STACK[c.index()].load(Ordering::Relaxed)).collect());
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
    let t0 = time::now_ns();
    for &(_, a) in targets {
        apic::send(Dest::Apic(a), Delivery::Init);
    }
    time::delay_us(10_000);
    for &(_, a) in targets {
        apic::send(Dest::Apic(a), Delivery::Startup(vector));
    }
    time::delay_us(200);
    let mut second = 0;
    for &(cpu, a) in targets {
        if STATE[cpu.index()].phase() == ApPhase::Starting {
            apic::send(Dest::Apic(a), Delivery::Startup(vector));
            second += 1;
        }
    }
    log::debug!(
        "smp: INIT, start-up IPI (vector {vector:#x}) to {} APs; a second one to {second} not yet arrived, {} us in",
        targets.len(),
        (time::now_ns() - t0) / 1000
    );
}

/// The trampoline calls this in long mode, on the stack of `ticket`, interrupts off, on the
/// kernel's tables.
extern "C" fn trampoline_ap_entry(_ticket: u32) -> ! {
    ap_start(None)
}

/// Common AP bring-up, on the AP's own stack and the kernel's page tables, interrupts off. `known`
/// is the CPU the loader path already knows this is; otherwise the APIC id says.
///
/// Until its per-CPU block is installed the AP allocates nothing, logs nothing and cannot panic
/// (the console and the allocator read the CPU's index through GS); a CPU it cannot place halts.
fn ap_start(known: Option<CpuId>) -> ! {
    apic::init_ap();
    let Some(map) = map::get() else { arch::cpu::halt_forever() };
    let Some(cpu) = known.or_else(|| map.cpu_of(apic::id())) else { arch::cpu::halt_forever() };
    let (block, tables) = (KIT_BLOCK[cpu.index()].load(Ordering::Acquire), KIT_TABLES[cpu.index()].load(Ordering::Acquire));
    if block.is_null() || tables.is_null() {
        arch::cpu::halt_forever();
    }
    if !STATE[cpu.index()].arrive() {
        // The boot CPU gave up on this CPU (or never asked for it): stay out of the way.
        arch::cpu::halt_forever();
    }
    // SAFETY: the boot CPU built this block and these tables for this CPU alone, leaked them, and
    // no other CPU installs or loads them (winning Starting -> Arrived makes this the only AP with
    // this index); interrupts are off. The GDT comes before the IDT: the GDT the AP arrived with
    // (the loader's, or the trampoline's) lacks the selectors the IDT's gates name.
    let loaded = unsafe {
        percpu::install(&mut *block);
        (*tables).load()
    };
    // SAFETY: the boot CPU's CR0 and CR4 (write protection, global pages, SMEP/SMAP, FSGSBASE, FPU
    // bits) are valid on this identical CPU, in long mode on the same tables (CR3 carries no PCID,
    // so CR4.PCIDE may be set too). Before the IDT: once the IDT routes an NMI to the paranoid
    // entry, that entry uses RDGSBASE if the boot CPU turned FSGSBASE on, so CR4 must say so here
    // too (the IST slots it reads were written with the tables).
    unsafe {
        arch::cr::write_cr0(BSP_CR0.load(Ordering::Relaxed));
        arch::cr::write_cr4(BSP_CR4.load(Ordering::Relaxed));
    }
    arch::idt::load();
    // SAFETY: this AP, once, interrupts off, its per-CPU block installed above, before it runs any
    // thread (so before any user mapping reaches it).
    unsafe { crate::cpu::ring3::init_this_cpu(loaded) };
    if !STATE[cpu.index()].go_online() {
        // Too late: the boot CPU sized the machine without this CPU. It must never join.
        arch::cpu::halt_forever();
    }
    let uid = map.acpi_uid_of(cpu).map_or(0, |u| u.get());
    log::info!("cpu {} online: APIC id {}, ACPI UID {uid}", cpu.get(), map.apic_of(cpu).map_or(0, |a| a.get()));
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

/// Wait for the targets to come online; make every state final (see the hand-shake above); return
/// the APIC ids of those that are not online.
fn wait_online(targets: &[(CpuId, ApicId)], t0: u64) -> Vec<ApicId> {
    let settled = || {
        targets.iter().all(|&(c, _)| matches!(STATE[c.index()].phase(), ApPhase::Online | ApPhase::Idle | ApPhase::Abandoned))
    };
    let timeout_ns = AP_TIMEOUT_NS + AP_TIMEOUT_PER_AP_NS * targets.len() as u64;
    while !settled() && time::now_ns() - t0 < timeout_ns {
        core::hint::spin_loop();
    }
    // Time is up: abandon the CPUs that never arrived, then give the ones that did a moment more.
    abandon(targets, ApPhase::Starting);
    let t1 = time::now_ns();
    while !settled() && time::now_ns() - t1 < AP_GRACE_NS {
        core::hint::spin_loop();
    }
    abandon(targets, ApPhase::Arrived);
    targets
        .iter()
        .filter(|&&(c, _)| STATE[c.index()].phase() != ApPhase::Online)
        .map(|&(_, a)| a)
        .collect()
}

/// Move every target still in `from` to Abandoned (the AP loses its next compare-exchange).
fn abandon(targets: &[(CpuId, ApicId)], from: ApPhase) {
    for &(c, _) in targets {
        STATE[c.index()].abandon_if(from);
    }
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
        Test { name: "ist_stacks_have_guard_pages", min_cpus: 1, expect_fault: false, run: ist_stacks_have_guard_pages },
    ];

    /// On every online CPU, the TSS it has loaded names IST stacks that are kernel stacks of
    /// [`IST_STACK_BYTES`]: the page just below each one's bottom is a kernel stack's guard page.
    fn ist_stacks_have_guard_pages() -> Result<(), String> {
        let tops: Arc<Vec<AtomicU64>> = Arc::new((0..3 * MAX_CPUS).map(|_| AtomicU64::new(0)).collect());
        for cpu in map::online().iter() {
            let t = tops.clone();
            xcall::call(
                &CpuSet::single(cpu),
                move |_| {
                    for (i, top) in arch::gdt::this_cpu_ist_tops().into_iter().enumerate() {
                        t[3 * cpu.index() + i].store(top, Ordering::Relaxed);
                    }
                },
                10_000_000_000,
            )
            .map_err(|m| format!("{m} did not answer"))?;
            for (i, name) in ["double fault", "NMI", "machine check"].into_iter().enumerate() {
                let top = tops[3 * cpu.index() + i].load(Ordering::Relaxed);
                let below = top.wrapping_sub(IST_STACK_BYTES as u64 + 8);
                let mut who = String::new();
                ensure!(
                    crate::mm::stacks::guard_hit(below, &mut who) && who.contains("ist-"),
                    "{cpu}'s {name} IST stack (top {top:#x}) has no guard page below it ({below:#x}: {who:?})"
                );
            }
        }
        Ok(())
    }

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
