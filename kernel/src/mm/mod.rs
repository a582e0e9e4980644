//! Memory: physical frames, the kernel's own page tables, the heap, kernel stacks.
//!
//! [`init`] (boot CPU, right after the per-CPU block exists) builds, in order: the frame allocator
//! from the memory map ([`frames`]); a fresh PML4 below 4 GiB (so a 32-bit AP trampoline can load
//! it) holding the kernel image with its real rights and the direct map; then it switches CR3 and
//! turns on the protections the CPU has; last, the heap may grow from frames ([`heap`]) and kernel
//! stacks with guard pages exist ([`stacks`]). Application processors take the boot CPU's CR0, CR4
//! and [`kernel_pml4_phys`] (with EFER.NXE set before paging, as the tables use NX).
//!
//! Kernel virtual layout (4-level paging; the lower half holds nothing but, briefly, the AP
//! trampoline's identity page):
//!
//! ```text
//!   0xffff_8000_0000_0000  direct map (the loader's HHDM offset): RAM read-write, the kernel
//!                          image read-only, all no-execute, in 1 GiB / 2 MiB pages where aligned;
//!                          device registers (`map_mmio`) and firmware tables (`map_firmware`) are
//!                          added at the same offset, 4 KiB pages
//!   0xffff_c000_0000_0000  kernel stacks: 4096 slots of 1 MiB (guard page, stack, gap)
//!   0xffff_d000_0000_0000  heap growth, up to 64 GiB
//!   0xffff_ffff_8000_0000  kernel image: text RX, rodata R NX, data and bss RW NX (W^X)
//! ```
//!
//! PML4 slots 256-511 (the kernel half) all point at PDPTs from the start and never change, so a
//! new address space shares the kernel half by copying those 256 entries ([`new_pml4`]). Removing a
//! kernel mapping flushes this CPU's TLB and then calls the shootdown hook ([`set_shootdown`]) so
//! that other CPUs drop theirs before the frames are reused.
//!
//! Neighbours: `kcore::frame_alloc` and `kcore::paging` hold the portable logic; `boot` supplies
//! the memory map; `panic` asks [`is_mapped`] and [`stacks::guard_hit`] while reporting a fault.
//!
//! Layer: above `boot` and `cpu`, below `acpi` and `irq` (which map their tables and registers
//! here); `vm`, far above, installs the kernel-half shootdown with [`set_shootdown`].

pub mod frames;
pub mod heap;
pub mod stacks;
mod tables;
#[cfg(feature = "ktest")]
pub mod tests;

use core::sync::atomic::{AtomicBool, Ordering};

use crossbeam_utils::atomic::AtomicCell;

use kcore::{
    frame_alloc::FRAME_BYTES,
    memmap::MemoryMap,
    paging::{self, DirectMapChunks, KERNEL_HALF_FIRST_SLOT, MapError, PageSize, TableMemory, Translation},
};
use x86_64::structures::paging::PageTableFlags as Flags;

use crate::boot::BootInfo;
use tables::{Frames, with_tables};

/// Start of the kernel stacks' region.
pub const STACKS_BASE: u64 = 0xffff_c000_0000_0000;
/// Start of the heap's growth region.
pub const HEAP_BASE: u64 = 0xffff_d000_0000_0000;
/// How far the heap may grow.
pub const HEAP_MAX_BYTES: u64 = 64 << 30;

const PAGE: u64 = FRAME_BYTES;

/// The rights of each kind of kernel mapping. GLOBAL: kernel-half translations survive CR3 switches.
const TEXT: Flags = Flags::GLOBAL;
const RODATA: Flags = Flags::GLOBAL.union(Flags::NO_EXECUTE);
const DATA: Flags = Flags::GLOBAL.union(Flags::WRITABLE).union(Flags::NO_EXECUTE);
const MMIO: Flags = DATA.union(Flags::NO_CACHE).union(Flags::WRITE_THROUGH);
const FIRMWARE: Flags = RODATA;
/// The trampoline page: the AP fetches code and writes data through it in 32-bit mode.
const IDENTITY: Flags = Flags::WRITABLE;

/// What the CPU offers that the page tables use.
#[derive(Clone, Copy, Debug)]
pub struct Features {
    pub nx: bool,
    pub gib_pages: bool,
    pub pge: bool,
    pub smep: bool,
    pub smap: bool,
}

impl Features {
    fn detect() -> Self {
        let c = raw_cpuid::CpuId::new();
        let ext = c.get_extended_processor_and_feature_identifiers();
        let leaf7 = c.get_extended_feature_info();
        Features {
            nx: ext.as_ref().is_some_and(|e| e.has_execute_disable()),
            gib_pages: ext.as_ref().is_some_and(|e| e.has_1gib_pages()),
            pge: c.get_feature_info().is_some_and(|f| f.has_pge()),
            smep: leaf7.as_ref().is_some_and(|f| f.has_smep()),
            smap: leaf7.as_ref().is_some_and(|f| f.has_smap()) && arch::usercopy::smap_usable(),
        }
    }
}

static FEATURES: spin::Once<Features> = spin::Once::new();
static MAP: spin::Once<MemoryMap> = spin::Once::new();
/// Makes every other CPU drop its translations of `[start, end)`.
type Shootdown = fn(u64, u64);

static SHOOTDOWN: AtomicCell<Option<Shootdown>> = AtomicCell::new(None);
static RECLAIMED: AtomicBool = AtomicBool::new(false);

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
}

/// The kernel image's sections as page ranges with their rights: text, rodata, data + bss.
fn kernel_sections() -> [(u64, u64, Flags, &'static str); 3] {
    let (image_start, image_end) = crate::boot::kernel_image();
    let up = |a: u64| a.next_multiple_of(PAGE);
    // Only the addresses of the linker-script symbols are taken, which is safe. black_box: the
    // compiler assumes distinct statics have distinct addresses and would fold comparisons of
    // symbols that the linker placed at one address.
    let addr = |p: *const u8| core::hint::black_box(p) as u64;
    let (text, text_end) = (addr(&raw const __text_start), addr(&raw const __text_end));
    let (ro, ro_end) = (addr(&raw const __rodata_start), addr(&raw const __rodata_end));
    let data = addr(&raw const __data_start);
    let sections =
        [(text, up(text_end), TEXT, "text"), (ro, up(ro_end), RODATA, "rodata"), (data, image_end, DATA, "data")];
    assert!(
        sections[0].0 == image_start && sections[0].1 <= ro && sections[1].1 <= data && data < image_end,
        "the linker script's section symbols are out of order: {sections:x?}"
    );
    sections
}

/// Set up physical memory, the kernel's page tables and the heap's growth (boot CPU, once, right
/// after the per-CPU block exists).
pub fn init(info: &BootInfo) {
    let features = *FEATURES.call_once(Features::detect);
    assert!(features.nx, "the CPU has no no-execute bit (CPUID 0x80000001 EDX.NX): W^X cannot be enforced");
    let map = MAP.call_once(|| info.memory.clone());
    let mut direct = tables::DirectRanges::new();
    paging::direct_map_ranges(map, |r| direct.push(r));
    let direct_top = direct.as_slice().last().map_or(0, |r| r.end);
    assert!(
        info.hhdm_offset >= 0xffff_8000_0000_0000
            && info.hhdm_offset.checked_add(direct_top).is_some_and(|e| e <= STACKS_BASE),
        "the direct map at {:#x} with RAM up to {direct_top:#x} does not fit below the stacks region",
        info.hhdm_offset
    );
    tables::set_direct_map(info.hhdm_offset, direct);
    frames::init(map, info.hhdm_offset);

    let pml4 = build_kernel_tables(info, features);
    // SAFETY: the new tree maps everything the kernel touches from here on at the addresses it uses
    // now (image, direct map with the boot stack, the per-CPU block and the boot information), and
    // its PML4 is below 4 GiB; see `load_kernel_tables`.
    unsafe { load_kernel_tables(pml4, features) };
    tables::set_root(pml4);
    stacks::init();
    heap::enable_growth();

    let (free, total) = frames::stats();
    log::info!(
        "mm: {} MiB free in {} frames; page tables at {pml4:#x}; NX, WP{}{}{}{}",
        (free * PAGE as usize) >> 20,
        total,
        if features.pge { ", global pages" } else { "" },
        if features.smep { ", SMEP" } else { "" },
        if features.smap { ", SMAP" } else { "" },
        if features.gib_pages { ", 1 GiB pages" } else { "" },
    );
}

/// Build the kernel's tree: kernel half populated, direct map, kernel image. Returns the PML4.
fn build_kernel_tables(info: &BootInfo, features: Features) -> u64 {
    let mem = &Frames;
    let pml4 = mem.alloc_table().expect("no frame below 4 GiB for the kernel's PML4");
    paging::populate_slots(mem, pml4, KERNEL_HALF_FIRST_SLOT..paging::ENTRIES).expect("no frames for the kernel half");
    let mut pages = [0usize; 3];
    for r in tables::direct_ranges() {
        let flags = if r.writable { DATA } else { RODATA };
        for (pa, size) in DirectMapChunks::new(*r, features.gib_pages) {
            paging::map(mem, pml4, info.hhdm_offset + pa, pa, size, flags)
                .unwrap_or_else(|e| panic!("direct map of {pa:#x} ({size:?}): {e:?}"));
            pages[size as usize] += 1;
        }
    }
    let mut sizes_kib = [0u64; 3];
    for (i, (start, end, flags, name)) in kernel_sections().into_iter().enumerate() {
        for va in (start..end).step_by(PAGE as usize) {
            let pa = va - info.kernel_virt_base + info.kernel_phys_base;
            paging::map(mem, pml4, va, pa, PageSize::Size4K, flags)
                .unwrap_or_else(|e| panic!("kernel {name} page {va:#x}: {e:?}"));
        }
        sizes_kib[i] = (end - start) >> 10;
    }
    log::info!(
        "mm: direct map at {:#x}: {} x 1 GiB, {} x 2 MiB, {} x 4 KiB pages; kernel image: text {} KiB RX, rodata {} KiB R, data+bss {} KiB RW",
        info.hhdm_offset,
        pages[PageSize::Size1G as usize],
        pages[PageSize::Size2M as usize],
        pages[PageSize::Size4K as usize],
        sizes_kib[0],
        sizes_kib[1],
        sizes_kib[2]
    );
    pml4
}

/// Turn on the protections and switch this CPU to the kernel's tree: EFER.NXE, CR0.WP, then CR3 with
/// CR4.PGE briefly off (which flushes every translation, the boot loader's global ones too), then
/// PGE, SMEP and SMAP as the CPU has them.
///
/// # Safety
/// `pml4` is a complete kernel tree that maps the running code, stack and data at their current
/// addresses, and lies below 4 GiB.
unsafe fn load_kernel_tables(pml4: u64, f: Features) {
    // SAFETY: per the caller, the tree maps the running code, stack and data; `init` checked that
    // the CPU has NX, PGE, SMEP and SMAP are asked only where the CPU has them (`Features`), and
    // the kernel tree has no user pages.
    unsafe { arch::mmu::load_kernel_tree(pml4, f.pge, f.smep, f.smap) };
}

/// The kernel's PML4 (physical), for the AP trampoline and for address spaces to share.
pub fn kernel_pml4_phys() -> u64 {
    tables::root()
}

/// A fresh PML4 for a new address space: an empty user half and the kernel half shared with the
/// kernel's tree (its 256 entries copied). Free it with [`frames::free`] once no CPU uses it.
pub fn new_pml4() -> Option<u64> {
    let pml4 = Frames.alloc_table()?;
    paging::copy_slots(&Frames, tables::root(), pml4, KERNEL_HALF_FIRST_SLOT..paging::ENTRIES)
        .expect("both PML4s are RAM frames");
    Some(pml4)
}

/// The virtual address of physical address `pa` in the direct map (only RAM is mapped there, plus
/// what [`map_mmio`] and [`map_firmware`] added).
pub fn phys_to_virt(pa: u64) -> u64 {
    tables::hhdm_offset() + pa
}

/// The current CR3's tree, masked to the PML4's address.
pub fn current_root() -> u64 {
    arch::cr::cr3_root()
}

/// Where the current page tables send `va`, if anywhere. `None` before [`init`].
pub fn virt_to_phys(va: u64) -> Option<u64> {
    translate(va).map(|t| t.pa)
}

fn translate(va: u64) -> Option<Translation> {
    if tables::hhdm_offset() == 0 {
        return None;
    }
    paging::translate(&Frames, current_root(), va)
}

/// Is `[va, va + len)` mapped in the current page tables? Used by the fault path before it reads
/// a frame record, so a corrupt frame pointer ends the backtrace instead of faulting again. It reads
/// only table frames inside the direct map, so it never faults itself. Before [`init`] it cannot
/// walk and says yes.
pub fn is_mapped(va: u64, len: u64) -> bool {
    if tables::hhdm_offset() == 0 {
        return true;
    }
    let Some(last) = va.checked_add(len.max(1) - 1) else { return false };
    let mut at = va;
    loop {
        let Some(t) = translate(at) else { return false };
        let page_end = (at | (t.size.bytes() - 1)).saturating_add(1);
        if page_end > last || page_end == 0 {
            return true;
        }
        at = page_end;
    }
}

/// Map `[pa, pa + len)` at the direct map's offset with `flags`, 4 KiB pages. A page already mapped
/// to the same frame is accepted if `compatible` says so (idempotence); anything else is a bug.
fn map_window(pa: u64, len: u64, flags: Flags, compatible: fn(&Translation) -> bool, what: &str) -> u64 {
    let offset = tables::hhdm_offset();
    assert!(offset != 0 && tables::root() != 0, "{what} before mm::init");
    let (first, end) = (pa / PAGE * PAGE, pa.saturating_add(len.max(1)).next_multiple_of(PAGE));
    assert!(end <= STACKS_BASE - offset, "{what}({pa:#x}, {len:#x}) reaches past the direct map's window");
    with_tables(|mem, root| {
        for page in (first..end).step_by(PAGE as usize) {
            match paging::map(mem, root, offset + page, page, PageSize::Size4K, flags) {
                Ok(()) => {}
                Err(MapError::AlreadyMapped(t)) if t.pa == page && compatible(&t) => {}
                Err(e) => panic!("{what}({pa:#x}, {len:#x}): page {page:#x}: {e:?}"),
            }
        }
    });
    offset + pa
}

/// Map device registers at `[pa, pa + len)` uncached (PCD | PWT), read-write, no-execute, and return
/// the virtual address of `pa` (its direct-map address). Mapping the same registers again returns the
/// same address. Panics if the range is RAM (already mapped cacheable): that is a caller's bug.
pub fn map_mmio(pa: u64, len: u64) -> u64 {
    map_window(
        pa,
        len,
        MMIO,
        |t| t.flags.contains(Flags::NO_CACHE | Flags::WRITE_THROUGH | Flags::WRITABLE),
        "map_mmio",
    )
}

/// Make firmware tables at `[pa, pa + len)` (ACPI tables in reserved memory, for instance) readable:
/// cached, read-only, no-execute, at their direct-map address, which it returns. Ranges the direct
/// map already covers as RAM cost nothing.
pub fn map_firmware(pa: u64, len: u64) -> u64 {
    map_window(pa, len, FIRMWARE, |t| !t.flags.contains(Flags::NO_CACHE), "map_firmware")
}

/// Identity-map `[pa, pa + len)` (virtual = physical, lower half) read-write and executable: the
/// application processors' trampoline, which runs there while it switches to long mode. Undo with
/// [`unmap_identity`]. Panics if the range is not in the lower half or memory for tables ran out.
pub fn map_identity(pa: u64, len: u64) {
    let (first, end) = (pa / PAGE * PAGE, pa.saturating_add(len.max(1)).next_multiple_of(PAGE));
    assert!(end <= 0x0000_8000_0000_0000, "map_identity({pa:#x}, {len:#x}): not in the lower half");
    with_tables(|mem, root| {
        for page in (first..end).step_by(PAGE as usize) {
            match paging::map(mem, root, page, page, PageSize::Size4K, IDENTITY) {
                Ok(()) => {}
                Err(MapError::AlreadyMapped(t)) if t.pa == page && t.executable() && t.writable() => {}
                Err(e) => panic!("map_identity({pa:#x}, {len:#x}): page {page:#x}: {e:?}"),
            }
        }
    });
}

/// Remove an identity mapping made by [`map_identity`] (pages not mapped are skipped), free the
/// tables it used, and flush the TLBs.
pub fn unmap_identity(pa: u64, len: u64) {
    let (first, end) = (pa / PAGE * PAGE, pa.saturating_add(len.max(1)).next_multiple_of(PAGE));
    assert!(end <= 0x0000_8000_0000_0000, "unmap_identity({pa:#x}, {len:#x}): not in the lower half");
    with_tables(|mem, root| {
        for page in (first..end).step_by(PAGE as usize) {
            if paging::unmap(mem, root, page).is_ok() {
                arch::mmu::flush_local_page(page);
            }
        }
    });
    shootdown(first, end);
}

/// Install (or, with `None`, remove) the function that makes every other CPU drop its translations
/// of `[start, end)`: a TLB shootdown, once other CPUs run. It is called after kernel mappings are
/// removed and before their frames are reused, from whatever context removes them. Returns the
/// function installed before.
pub fn set_shootdown(f: Option<fn(u64, u64)>) -> Option<fn(u64, u64)> {
    SHOOTDOWN.swap(f)
}

/// Whether a shootdown hook is installed: unmapping a kernel or identity mapping then reaches the
/// other CPUs' TLBs too.
pub fn has_shootdown() -> bool {
    SHOOTDOWN.load().is_some()
}

fn shootdown(start: u64, end: u64) {
    if let Some(f) = SHOOTDOWN.load() {
        f(start, end);
    }
}

/// Turn the boot loader's memory (Limine's BootloaderReclaimable regions) into free frames. Call it
/// once nothing reads the boot information or runs on the loader's page tables any more (after the
/// application processors are up); the region holding the current stack is kept, in case this CPU
/// still runs on the loader's boot stack. Later calls do nothing. Returns the number of frames freed.
pub fn reclaim_bootloader_memory() -> usize {
    if RECLAIMED.swap(true, Ordering::AcqRel) {
        return 0;
    }
    let Some(map) = MAP.get() else { return 0 };
    let marker = 0u8;
    let stack_pa = virt_to_phys(&raw const marker as u64);
    let freed = frames::reclaim(map, |base, end| stack_pa.is_some_and(|sp| (base..end).contains(&sp)));
    log::info!("mm: reclaimed {} KiB of boot loader memory", (freed * PAGE as usize) >> 10);
    freed
}

/// Map fresh frames at `[start, start + bytes)` in the heap's region; returns the end of what got
/// mapped (`start` if nothing could be).
fn map_heap_pages(start: u64, bytes: u64) -> u64 {
    let end = start.saturating_add(bytes).min(HEAP_BASE + HEAP_MAX_BYTES);
    with_tables(|mem, root| {
        let mut at = start;
        while at < end {
            let Some(pa) = frames::alloc() else { break };
            if paging::map(mem, root, at, pa, PageSize::Size4K, DATA).is_err() {
                frames::free(pa);
                break;
            }
            at += PAGE;
        }
        at
    })
}

/// Map zeroed fresh frames at `[bottom, bottom + bytes)` in the stacks' region; on failure undo and
/// return false.
fn map_stack_pages(bottom: u64, bytes: u64) -> bool {
    let mapped = with_tables(|mem, root| {
        let mut at = bottom;
        while at < bottom + bytes {
            let Some(pa) = frames::alloc() else { break };
            // SAFETY: a fresh frame nobody else owns, reached through the direct map.
            unsafe { core::ptr::write_bytes(phys_to_virt(pa) as *mut u8, 0, PAGE as usize) };
            if paging::map(mem, root, at, pa, PageSize::Size4K, DATA).is_err() {
                frames::free(pa);
                break;
            }
            at += PAGE;
        }
        at
    });
    if mapped == bottom + bytes {
        return true;
    }
    unmap_stack_pages(bottom, mapped - bottom);
    false
}

/// Unmap the stacks `[bottom, bottom + bytes)` of `stacks` in the stacks' region, flush them here,
/// make every other CPU drop them with one shootdown (of the span from the lowest to the highest,
/// a full flush when it is large), then free their frames.
fn unmap_stack_batch(stacks: &[(u64, u64)]) {
    let (Some(lo), Some(hi)) = (stacks.iter().map(|s| s.0).min(), stacks.iter().map(|s| s.0 + s.1).max()) else { return };
    // Sized before the page-table lock is taken: growing the heap under it would take it again.
    let pages = stacks.iter().map(|s| (s.1 / PAGE) as usize).sum();
    let mut frames_freed = alloc::vec::Vec::with_capacity(pages);
    with_tables(|mem, root| {
        for &(bottom, bytes) in stacks {
            for at in (bottom..bottom + bytes).step_by(PAGE as usize) {
                let t = paging::unmap(mem, root, at).expect("a stack page is mapped");
                arch::mmu::flush_local_page(at);
                frames_freed.push(t.pa);
            }
        }
    });
    shootdown(lo, hi);
    for pa in frames_freed {
        frames::free(pa);
    }
}

/// Point the mapped page `va` of the stacks' region at frame `new_pa` instead of its frame, which
/// is returned (the caller owns it now): flushed here and shot down elsewhere before returning, so
/// no CPU reads the old frame through `va` afterwards. For the tests of the shootdown path.
///
/// # Safety
/// `va` is a page of a live `KernelStack` that no thread uses as its stack, and `new_pa` a frame
/// the caller owns and gives to that stack (its drop frees it).
#[cfg(feature = "ktest")]
pub unsafe fn remap_stack_page(va: u64, new_pa: u64) -> u64 {
    let old = with_tables(|mem, root| {
        let old = paging::unmap(mem, root, va).expect("a stack page is mapped");
        paging::map(mem, root, va, new_pa, PageSize::Size4K, DATA).expect("the table is still there");
        arch::mmu::flush_local_page(va);
        old.pa
    });
    shootdown(va, va + PAGE);
    old
}

/// Unmap `[bottom, bottom + bytes)` in the stacks' region and free its frames once no CPU can still
/// reach them: in batches, each unmapped, flushed here, shot down elsewhere, then freed.
fn unmap_stack_pages(bottom: u64, bytes: u64) {
    const BATCH: usize = 32;
    let end = bottom + bytes;
    let mut at = bottom;
    while at < end {
        let mut batch = [0u64; BATCH];
        let batch_start = at;
        let n = with_tables(|mem, root| {
            let mut n = 0;
            while n < BATCH && at < end {
                let t = paging::unmap(mem, root, at).expect("a stack page is mapped");
                arch::mmu::flush_local_page(at);
                batch[n] = t.pa;
                n += 1;
                at += PAGE;
            }
            n
        });
        shootdown(batch_start, at);
        for &pa in &batch[..n] {
            frames::free(pa);
        }
    }
}
