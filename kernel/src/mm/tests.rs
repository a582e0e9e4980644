//! In-kernel tests of memory: frames, the heap's growth, the kernel's page tables and their rights,
//! device and firmware mappings, the trampoline's identity page, kernel stacks and their guards.

use alloc::{boxed::Box, string::String, sync::Arc, vec, vec::Vec};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kcore::{
    frame_alloc::{FRAME_BYTES, FrameAllocator, LOW_MEMORY_END},
    memmap::RegionKind,
    paging::{self, KERNEL_HALF_FIRST_SLOT, TableMemory},
};
use arch::cr::{self, CR0_WP, CR4_PGE, CR4_SMAP, CR4_SMEP};
use x86_64::structures::paging::PageTableFlags as Flags;

use super::{frames, heap, stacks::KernelStack, tables};
use crate::{ensure, testing::Test};

crate::register_tests![
    Test { name: "heap_alloc_free", min_cpus: 1, expect_fault: false, run: heap_alloc_free },
    Test { name: "frames_no_double_handout", min_cpus: 1, expect_fault: false, run: frames_no_double_handout },
    Test { name: "frames_contention", min_cpus: 2, expect_fault: false, run: frames_contention },
    Test { name: "heap_from_frames", min_cpus: 1, expect_fault: false, run: heap_from_frames },
    Test { name: "wx_kernel_mappings", min_cpus: 1, expect_fault: false, run: wx_kernel_mappings },
    Test { name: "mmio_mapping", min_cpus: 1, expect_fault: false, run: mmio_mapping },
    Test { name: "firmware_mapping", min_cpus: 1, expect_fault: false, run: firmware_mapping },
    Test { name: "identity_mapping", min_cpus: 1, expect_fault: false, run: identity_mapping },
    Test { name: "new_pml4_shares_kernel_half", min_cpus: 1, expect_fault: false, run: new_pml4_shares_kernel_half },
    Test { name: "kernel_stack_guard", min_cpus: 1, expect_fault: false, run: kernel_stack_guard },
    Test { name: "shootdown_on_unmap", min_cpus: 1, expect_fault: false, run: shootdown_on_unmap },
    Test { name: "fault_stack_overflow", min_cpus: 1, expect_fault: true, run: fault_stack_overflow },
];

/// Take every free frame, check each is new, aligned, at or above 1 MiB and inside free RAM, then
/// give them all back and check the counts return. The bookkeeping is allocated before the drain
/// (a heap that had to grow while no frame is left would fail).
fn frames_no_double_handout() -> Result<(), String> {
    let map = super::MAP.get().ok_or("mm::init has not run")?;
    let top = FrameAllocator::coverage(map);
    let mut seen = vec![0u64; (top / FRAME_BYTES).div_ceil(64) as usize];
    let mut taken: Vec<u64> = Vec::with_capacity(frames::stats().0);
    let in_free_ram = |pa: u64| {
        map.regions().iter().any(|r| {
            matches!(r.kind, RegionKind::Usable | RegionKind::BootloaderReclaimable)
                && r.base <= pa
                && pa + FRAME_BYTES <= r.end()
        })
    };
    let irq = arch::interrupts::are_enabled();
    arch::interrupts::disable();
    let (free_before, total) = frames::stats();
    let mut problem = None;
    while taken.len() < taken.capacity()
        && let Some(pa) = frames::alloc()
    {
        let (w, bit) = ((pa / FRAME_BYTES / 64) as usize, 1u64 << (pa / FRAME_BYTES % 64));
        if problem.is_none() {
            if pa % FRAME_BYTES != 0 || pa < LOW_MEMORY_END || !in_free_ram(pa) {
                problem = Some(alloc::format!("frame {pa:#x} is misaligned, below 1 MiB or not free RAM"));
            } else if seen.get(w).is_some_and(|s| s & bit != 0) {
                problem = Some(alloc::format!("frame {pa:#x} was handed out twice"));
            }
        }
        if let Some(s) = seen.get_mut(w) {
            *s |= bit;
        }
        taken.push(pa);
    }
    let exhausted = frames::alloc();
    let free_drained = frames::stats().0;
    for &pa in taken.iter().chain(&exhausted) {
        frames::free(pa);
    }
    let (free_after, total_after) = frames::stats();
    if irq {
        arch::interrupts::enable();
    }
    if let Some(p) = problem {
        return Err(p);
    }
    ensure!(exhausted.is_none(), "alloc still gave {exhausted:x?} after {} frames", taken.len());
    let low_free = (0..LOW_MEMORY_END / FRAME_BYTES).filter(|&i| frames::is_free(i * FRAME_BYTES)).count();
    ensure!(
        taken.len() + low_free == free_before,
        "took {} frames (+{low_free} below 1 MiB), but {free_before} were free",
        taken.len()
    );
    ensure!(
        free_drained == low_free,
        "{free_drained} frames counted free after draining, expected the {low_free} low ones"
    );
    ensure!(
        free_after == free_before && total_after == total,
        "after giving all back: {free_after}/{total_after} free, expected {free_before}/{total}"
    );
    let low = frames::alloc_below(LOW_MEMORY_END);
    if let Some(pa) = low {
        frames::free(pa);
    }
    ensure!(
        low_free == 0 || low.is_some_and(|pa| pa < LOW_MEMORY_END),
        "alloc_below(1 MiB) gave {low:x?} with {low_free} low frames free"
    );
    Ok(())
}

/// Every online CPU allocates and frees frames in batches at the same time (a cross-CPU call)
/// while only a few frames are left, so that they all fight over the same bitmap words: an owner
/// table catches any frame held by two CPUs at once, and afterwards every frame is back.
fn frames_contention() -> Result<(), String> {
    const ROUNDS: usize = 2000;
    const BATCH: usize = 8;
    const LEFT_FREE: usize = 24;
    const NOBODY: u32 = u32::MAX;
    let map = super::MAP.get().ok_or("mm::init has not run")?;
    let top = FrameAllocator::coverage(map);
    let owners: Arc<Vec<AtomicU32>> = Arc::new((0..top / FRAME_BYTES).map(|_| AtomicU32::new(NOBODY)).collect());
    let clashes = Arc::new(AtomicU64::new(0));
    let handed_out = Arc::new(AtomicU64::new(0));
    let online = crate::cpu::map::online();
    // Leave only LEFT_FREE frames (above 1 MiB) in the pool; the bookkeeping is allocated first.
    let mut parked: Vec<u64> = Vec::with_capacity(frames::stats().0);
    let free_before = frames::stats().0;
    while parked.len() < parked.capacity()
        && let Some(pa) = frames::alloc()
    {
        parked.push(pa);
    }
    for pa in parked.drain(parked.len().saturating_sub(LEFT_FREE)..) {
        frames::free(pa);
    }
    let (o, c, h) = (owners.clone(), clashes.clone(), handed_out.clone());
    let outcome = crate::cpus::xcall::call(
        &online,
        move |cpu| {
            let me = cpu.get();
            let mut held = [0u64; BATCH];
            for _ in 0..ROUNDS {
                let mut n = 0;
                while n < BATCH
                    && let Some(pa) = frames::alloc()
                {
                    if o[(pa / FRAME_BYTES) as usize].swap(me, Ordering::AcqRel) != NOBODY {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    held[n] = pa;
                    n += 1;
                }
                h.fetch_add(n as u64, Ordering::Relaxed);
                for &pa in &held[..n] {
                    let released = o[(pa / FRAME_BYTES) as usize].compare_exchange(
                        me,
                        NOBODY,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                    if released.is_err() {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    frames::free(pa);
                }
            }
        },
        30_000_000_000,
    );
    for pa in parked {
        frames::free(pa);
    }
    outcome.map_err(|missing| alloc::format!("{missing} did not finish allocating"))?;
    let (clashes, handed_out) = (clashes.load(Ordering::Relaxed), handed_out.load(Ordering::Relaxed));
    ensure!(clashes == 0, "{clashes} times a frame was held by two CPUs at once");
    ensure!(handed_out > (ROUNDS * BATCH) as u64, "only {handed_out} frames handed out in all");
    let free_after = frames::stats().0;
    ensure!(free_after == free_before, "{free_after} frames free afterwards, {free_before} before");
    ensure!(owners.iter().all(|o| o.load(Ordering::Relaxed) == NOBODY), "a frame is still marked as held");
    Ok(())
}

/// Allocate more than the boot arena holds, check the heap grew from frames into its own region,
/// free it all (usage returns to where it was), then allocate the same again without growing.
fn heap_from_frames() -> Result<(), String> {
    const CHUNK_WORDS: usize = 32 * 1024;
    let target = heap::boot_arena_bytes() + (4 << 20);
    let used_before = heap::allocated_bytes();
    // Each chunk is zeroed (a block fill, cheap even where instructions are emulated one by one),
    // then each of its pages gets a tag naming the chunk and the page.
    let tag = |chunk: usize, page: usize| ((chunk as u64) << 32 | page as u64) ^ 0x5a5a_5a5a;
    let fill = |rounds: usize| -> Vec<Box<[u64]>> {
        (0..rounds)
            .map(|i| {
                let mut c = vec![0u64; CHUNK_WORDS].into_boxed_slice();
                for (p, page) in c.chunks_mut(512).enumerate() {
                    page[0] = tag(i, p);
                }
                c
            })
            .collect()
    };
    let rounds = target / (CHUNK_WORDS * 8);
    let chunks = fill(rounds);
    let claimed = heap::claimed_bytes();
    ensure!(
        claimed > heap::boot_arena_bytes(),
        "heap holds {claimed} bytes after allocating {target}: it did not grow"
    );
    for (i, c) in chunks.iter().enumerate() {
        let intact = c.chunks(512).enumerate().all(|(p, page)| page[0] == tag(i, p) && page[511] == 0);
        ensure!(intact, "chunk {i} lost its contents");
    }
    let grown = chunks
        .iter()
        .find(|c| (super::HEAP_BASE..super::HEAP_BASE + super::HEAP_MAX_BYTES).contains(&(c.as_ptr() as u64)));
    let Some(grown) = grown else { return Err("no chunk lies in the heap's growth region".into()) };
    let t = super::translate(grown.as_ptr() as u64).ok_or("a grown chunk is not mapped")?;
    ensure!(t.writable() && !t.executable(), "grown heap mapped with {:?}, expected RW NX", t.flags);
    drop(chunks);
    let used_after = heap::allocated_bytes();
    ensure!(used_after == used_before, "heap use {used_before} bytes before, {used_after} after freeing everything");
    let again = fill(rounds);
    ensure!(
        heap::claimed_bytes() == claimed,
        "the heap grew again ({} -> {}) instead of reusing",
        claimed,
        heap::claimed_bytes()
    );
    drop(again);
    Ok(())
}

/// Every page of the kernel image has its section's rights, no page of the kernel half is both
/// writable and executable, the lower half is empty, the image's direct-map alias is read-only, and
/// the control registers enforce it all.
fn wx_kernel_mappings() -> Result<(), String> {
    for (start, end, flags, name) in super::kernel_sections() {
        let (want_w, want_x) = (flags.contains(Flags::WRITABLE), !flags.contains(Flags::NO_EXECUTE));
        for va in (start..end).step_by(FRAME_BYTES as usize) {
            let t = super::translate(va).ok_or_else(|| alloc::format!("{name} page {va:#x} is not mapped"))?;
            ensure!(
                t.writable() == want_w && t.executable() == want_x,
                "{name} page {va:#x}: writable {} executable {}, expected {want_w} {want_x}",
                t.writable(),
                t.executable()
            );
            let alias = super::translate(super::phys_to_virt(t.pa))
                .ok_or_else(|| alloc::format!("{name} page {va:#x} has no direct-map alias"))?;
            ensure!(
                !alias.writable() && !alias.executable(),
                "the direct-map alias of {name} page {va:#x} is {:?}",
                alias.flags
            );
        }
    }
    let root = super::current_root();
    let mut leaves = 0usize;
    let mut bad = None;
    paging::for_each_leaf(&tables::Frames, root, KERNEL_HALF_FIRST_SLOT..paging::ENTRIES, |va, t| {
        leaves += 1;
        if t.writable() && t.executable() && bad.is_none() {
            bad = Some(va);
        }
    });
    ensure!(bad.is_none(), "kernel page {:#x} is writable and executable", bad.unwrap_or(0));
    ensure!(leaves > 0, "the walk found no kernel mappings at all");
    let mut user = 0usize;
    paging::for_each_leaf(&tables::Frames, root, 0..KERNEL_HALF_FIRST_SLOT, |_, _| user += 1);
    ensure!(user == 0, "{user} pages are mapped in the lower half (no identity map expected)");
    let f = super::FEATURES.get().ok_or("mm::init has not run")?;
    ensure!(cr::nx_enabled(), "EFER.NXE is off");
    ensure!(cr::cr0() & CR0_WP != 0, "CR0.WP is off");
    let cr4 = cr::cr4();
    ensure!(
        (cr4 & CR4_PGE != 0) == f.pge,
        "CR4.PGE {} with CPU support {}",
        (cr4 & CR4_PGE != 0),
        f.pge
    );
    ensure!(
        (cr4 & CR4_SMEP != 0) == f.smep,
        "CR4.SMEP does not match CPU support ({})",
        f.smep
    );
    ensure!(
        (cr4 & CR4_SMAP != 0) == f.smap,
        "CR4.SMAP does not match CPU support ({})",
        f.smap
    );
    ensure!(super::kernel_pml4_phys() < 1 << 32, "the kernel PML4 at {:#x} is above 4 GiB", super::kernel_pml4_phys());
    Ok(())
}

/// The local APIC's page maps uncached, read-write, no-execute, the same address every time, and (in
/// xAPIC mode) its version register reads back a plausible value.
fn mmio_mapping() -> Result<(), String> {
    const LAPIC: u64 = 0xfee0_0000;
    let va = super::map_mmio(LAPIC, 0x1000);
    ensure!(va == super::phys_to_virt(LAPIC), "map_mmio gave {va:#x}, expected the direct-map address");
    ensure!(super::map_mmio(LAPIC, 0x1000) == va, "a second map_mmio of the same page moved it");
    ensure!(super::map_mmio(LAPIC + 0x30, 4) == va + 0x30, "a sub-range is not at its offset");
    let t = super::translate(va).ok_or("the mapped page does not translate")?;
    ensure!(t.pa == LAPIC, "maps {:#x}, expected {LAPIC:#x}", t.pa);
    ensure!(
        t.flags.contains(Flags::NO_CACHE | Flags::WRITE_THROUGH | Flags::WRITABLE | Flags::NO_EXECUTE),
        "mapped with {:?}, expected PCD PWT RW NX",
        t.flags
    );
    // SAFETY: IA32_APIC_BASE exists on every CPU with a local APIC, which this kernel requires.
    let apic_base = unsafe { arch::msr::read(arch::msr::IA32_APIC_BASE) };
    let xapic = apic_base & (1 << 11) != 0 && apic_base & (1 << 10) == 0;
    if xapic && apic_base & 0xf_ffff_f000 == LAPIC {
        // SAFETY: the local APIC's version register (offset 0x30) is a 32-bit read-only register in
        // the page just mapped uncached; in xAPIC mode the MMIO interface is live.
        let version = unsafe { arch::mmio::read_u32(va + 0x30) } & 0xff;
        ensure!((0x10..=0x15).contains(&version), "local APIC version register reads {version:#x}");
    }
    Ok(())
}

/// Reserved memory (where firmware keeps ACPI tables) maps read-only, no-execute and cached.
fn firmware_mapping() -> Result<(), String> {
    let map = super::MAP.get().ok_or("mm::init has not run")?;
    let reserved =
        map.regions().iter().find(|r| r.kind == RegionKind::Reserved && r.base >= LOW_MEMORY_END && r.base < 1 << 32);
    let Some(r) = reserved else { return Ok(()) };
    let va = super::map_firmware(r.base, 16);
    ensure!(super::map_firmware(r.base, 16) == va, "a second map_firmware moved the mapping");
    let t = super::translate(va).ok_or("the firmware page does not translate")?;
    ensure!(t.pa == r.base, "maps {:#x}, expected {:#x}", t.pa, r.base);
    ensure!(
        !t.writable() && !t.executable() && !t.flags.contains(Flags::NO_CACHE),
        "mapped with {:?}, expected R NX cached",
        t.flags
    );
    // SAFETY: just mapped readable; reading firmware memory has no side effects.
    let _ = unsafe { (va as *const u8).read_volatile() };
    let ram = map.regions().iter().find(|r| r.kind == RegionKind::Usable).ok_or("no usable RAM")?;
    ensure!(super::map_firmware(ram.base, 8) == super::phys_to_virt(ram.base), "map_firmware of RAM moved it");
    Ok(())
}

/// A low page maps at its own address, executable and writable, shows the same bytes as its
/// direct-map address, and unmapping it leaves the lower half empty again.
fn identity_mapping() -> Result<(), String> {
    let pa = frames::alloc_below(LOW_MEMORY_END).ok_or("no frame below 1 MiB")?;
    super::map_identity(pa, FRAME_BYTES);
    super::map_identity(pa, FRAME_BYTES);
    let t = super::translate(pa);
    let outcome = (|| {
        let t = t.ok_or("the identity page does not translate")?;
        ensure!(t.pa == pa && t.writable() && t.executable(), "identity page maps {:#x} with {:?}", t.pa, t.flags);
        // SAFETY: the frame is ours (alloc_below) and mapped at both addresses.
        unsafe {
            (super::phys_to_virt(pa) as *mut u64).write_volatile(0x1d3a_7e57);
            ensure!((pa as *const u64).read_volatile() == 0x1d3a_7e57, "the identity page shows other bytes");
        }
        Ok(())
    })();
    super::unmap_identity(pa, FRAME_BYTES);
    let after = super::translate(pa);
    frames::free(pa);
    outcome?;
    ensure!(after.is_none(), "the identity page is still mapped after unmap_identity");
    let mut user = 0usize;
    paging::for_each_leaf(&tables::Frames, super::current_root(), 0..KERNEL_HALF_FIRST_SLOT, |_, _| user += 1);
    let slot0 = tables::Frames.table(super::current_root()).map(|t| t[0].load(Ordering::Acquire));
    ensure!(user == 0 && slot0 == Some(0), "the lower half still holds {user} pages, PML4[0] = {slot0:x?}");
    Ok(())
}

/// A new PML4 has an empty lower half and the kernel's exact kernel half.
fn new_pml4_shares_kernel_half() -> Result<(), String> {
    let pml4 = super::new_pml4().ok_or("no frame for a PML4")?;
    let (mine, kernel) = (tables::Frames.table(pml4), tables::Frames.table(super::kernel_pml4_phys()));
    let result = match (mine, kernel) {
        (Some(mine), Some(kernel)) => {
            let load = |e: &AtomicU64| e.load(Ordering::Acquire);
            let lower_empty = mine[..KERNEL_HALF_FIRST_SLOT].iter().all(|e| load(e) == 0);
            let same = mine[KERNEL_HALF_FIRST_SLOT..]
                .iter()
                .zip(&kernel[KERNEL_HALF_FIRST_SLOT..])
                .all(|(a, b)| load(a) == load(b));
            let populated = kernel[KERNEL_HALF_FIRST_SLOT..].iter().all(|e| load(e) & Flags::PRESENT.bits() != 0);
            if lower_empty && same && populated {
                Ok(())
            } else {
                Err(alloc::format!(
                    "lower half empty {lower_empty}, kernel half copied {same}, kernel half populated {populated}"
                ))
            }
        }
        _ => Err("a PML4 cannot be read through the direct map".into()),
    };
    frames::free(pml4);
    result
}

extern "C" fn note_stack_address(out: usize) {
    let local = 0u64;
    // SAFETY: `out` is the address of the caller's u64, alive across call_on_stack.
    unsafe { (out as *mut u64).write(core::hint::black_box(&raw const local) as u64) };
}

/// A kernel stack is mapped RW NX between an unmapped guard page and an unmapped gap, zeroed, code
/// runs on it, the guard hook names it, and dropping it returns its frames and unmaps it.
fn kernel_stack_guard() -> Result<(), String> {
    // A first stack in an untouched part of the region costs page-table frames that stay; make sure
    // they exist before counting.
    drop(KernelStack::new(16 * 1024, "warm-up").ok_or("no kernel stack")?);
    let frames_before = frames::stats().0;
    let s = KernelStack::new(16 * 1024, "guard-test").ok_or("no kernel stack")?;
    let (bottom, top) = (s.bottom(), s.top());
    ensure!(top - bottom == 16 * 1024 && top % 16 == 0, "stack {bottom:#x}..{top:#x} has the wrong size or alignment");
    ensure!(
        !super::is_mapped(bottom - FRAME_BYTES, 1) && super::virt_to_phys(bottom - 1).is_none(),
        "the guard page below {bottom:#x} is mapped"
    );
    ensure!(!super::is_mapped(top, 1), "the gap above {top:#x} is mapped");
    ensure!(super::is_mapped(bottom, top - bottom), "the stack itself is not wholly mapped");
    for va in (bottom..top).step_by(FRAME_BYTES as usize) {
        let t = super::translate(va).ok_or("stack page not mapped")?;
        ensure!(t.writable() && !t.executable(), "stack page {va:#x} mapped with {:?}", t.flags);
        // SAFETY: the page is mapped and belongs to the stack this test owns.
        let words = unsafe { (va as *const [u64; 512]).read() };
        ensure!(words.iter().all(|&w| w == 0), "stack page {va:#x} is not zeroed");
    }
    ensure!(frames::stats().0 + 4 <= frames_before, "four stack frames did not come from the frame allocator");
    let mut sp = 0u64;
    // SAFETY: the stack is mapped, unused and outlives the call; note_stack_address needs little.
    unsafe { arch::stack::call_on_stack(top, note_stack_address, &raw mut sp as usize) };
    ensure!((bottom..top).contains(&sp), "a local of the called function sat at {sp:#x}, not on the stack");
    let mut report = String::new();
    ensure!(super::stacks::guard_hit(bottom - 8, &mut report), "the guard hook does not recognise the guard page");
    ensure!(report.contains("stack overflow") && report.contains("`guard-test`"), "guard report: {report}");
    ensure!(!super::stacks::guard_hit(bottom + 8, &mut String::new()), "the guard hook claims a stack address");
    let (b, t) = s.into_raw();
    // SAFETY: just given up by into_raw, taken back once.
    let s = unsafe { KernelStack::from_raw(b, t) };
    drop(s);
    ensure!(super::virt_to_phys(bottom).is_none(), "the stack is still mapped after drop");
    ensure!(frames::stats().0 == frames_before, "frames free {} after drop, {frames_before} before", frames::stats().0);
    let mut report = String::new();
    ensure!(
        super::stacks::guard_hit(bottom - 8, &mut report) && !report.contains("guard-test"),
        "a freed slot is still named: {report}"
    );
    Ok(())
}

static SHOT: spin::Mutex<Option<(u64, u64)>> = spin::Mutex::new(None);
type Shootdown = fn(u64, u64);
static PREVIOUS_SHOOTDOWN: spin::Mutex<Option<Shootdown>> = spin::Mutex::new(None);

fn record_shootdown(start: u64, end: u64) {
    {
        let mut shot = SHOT.lock();
        let (s, e) = shot.unwrap_or((start, end));
        *shot = Some((s.min(start), e.max(end)));
    }
    let previous = *PREVIOUS_SHOOTDOWN.lock();
    if let Some(f) = previous {
        f(start, end);
    }
}

/// Dropping a kernel stack asks the shootdown hook to flush exactly the stack's pages (other CPUs
/// may hold its translations) before its frames are reused.
fn shootdown_on_unmap() -> Result<(), String> {
    let s = KernelStack::new(8 * 1024, "shootdown-test").ok_or("no kernel stack")?;
    let (bottom, top) = (s.bottom(), s.top());
    *SHOT.lock() = None;
    *PREVIOUS_SHOOTDOWN.lock() = super::set_shootdown(Some(record_shootdown));
    drop(s);
    let previous = PREVIOUS_SHOOTDOWN.lock().take();
    super::set_shootdown(previous);
    let shot = SHOT.lock().take();
    ensure!(shot == Some((bottom, top)), "shootdown covered {shot:x?}, expected the stack {bottom:#x}..{top:#x}");
    Ok(())
}

/// Recurse without end, each frame holding a buffer the optimiser cannot remove.
#[allow(unconditional_recursion, reason = "overflowing the stack is the point")]
fn recurse(depth: u64) -> u64 {
    let mut buf = [0u8; 512];
    buf[0] = depth as u8;
    let buf = core::hint::black_box(buf);
    recurse(depth + 1).wrapping_add(u64::from(buf[(depth % 512) as usize]))
}

extern "C" fn overflow(_: usize) {
    core::hint::black_box(recurse(0));
}

/// Overflow a kernel stack on purpose: the report must say `stack overflow` and name the stack's
/// thread, `overflower`.
fn fault_stack_overflow() -> Result<(), String> {
    let s = KernelStack::new(16 * 1024, "overflower").ok_or("no kernel stack")?;
    let top = s.top();
    // The stack stays mapped for ever: the kernel dies on it.
    let _ = s.into_raw();
    // SAFETY: a fresh mapped stack with a guard page below it; overflowing into the guard is the point.
    unsafe { arch::stack::call_on_stack(top, overflow, 0) };
    Err("the recursion returned without overflowing".into())
}

/// Allocate and free a vector: the heap's allocated bytes return to where they were.
fn heap_alloc_free() -> Result<(), String> {
    // The heap is shared: another CPU may free a reaped thread's memory between the two reads (seen
    // at -smp 2, a 12 KiB drop). An attempt counts only if the rest of the kernel kept still, which
    // a few tries find; a real leak shows in every attempt.
    let mut seen = Vec::new();
    for _ in 0..8 {
        let before = heap::allocated_bytes();
        let v: Vec<u64> = (0..10_000).collect();
        ensure!(v.iter().sum::<u64>() == 10_000 * 9_999 / 2, "vector contents wrong");
        drop(v);
        let after = heap::allocated_bytes();
        if after == before {
            return Ok(());
        }
        seen.push(after as i64 - before as i64);
        crate::task::sched().sleep_ns(1_000_000);
    }
    Err(alloc::format!("the heap did not come back to its level after freeing everything; change in bytes per attempt: {seen:?}"))
}
