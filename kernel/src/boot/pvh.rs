//! Direct boot (Xen PVH, as QEMU's `-kernel` does it): `arch::boot` enters long mode on throw-away page
//! tables and calls [`pvh_main`] with the physical address of the `hvm_start_info` block
//! (Xen's `public/arch-x86/hvm/start_info.h`).

use kcore::memmap::{Region, RegionKind};

use super::{BootInfo, BootPath, KERNEL_VMA};

const START_INFO_MAGIC: u32 = 0x336e_c578;

#[repr(C)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

/// `hvm_modlist_entry`: one boot module (QEMU's `-initrd` is module 0).
#[repr(C)]
struct ModlistEntry {
    paddr: u64,
    size: u64,
    cmdline_paddr: u64,
    reserved: u64,
}

#[repr(C)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    ty: u32,
    reserved: u32,
}

fn phys<T>(pa: u64) -> *const T {
    (pa + arch::boot::PVH_HHDM_OFFSET) as *const T
}

/// Entered from `arch::boot` on the boot CPU, interrupts off, on the 64 KiB boot stack.
#[unsafe(no_mangle)]
extern "C" fn pvh_main(start_info_pa: u64) -> ! {
    crate::cpu::console::init();
    let mut info = BootInfo::new(BootPath::Pvh, "QEMU direct boot (PVH)", arch::boot::PVH_HHDM_OFFSET);
    // SAFETY: the PVH ABI passes the start info's physical address in ebx, which arch::boot forwards;
    // the entry's page tables map all memory below 4 GiB at PVH_HHDM_OFFSET, and QEMU puts the block
    // there. Only reads are made, and only of the fields of the version the block announces.
    let si = unsafe { &*phys::<StartInfo>(start_info_pa) };
    if si.magic != START_INFO_MAGIC {
        panic!("PVH start info at {start_info_pa:#x} has magic {:#x}, not {START_INFO_MAGIC:#x}", si.magic);
    }
    if si.version >= 1 && si.memmap_paddr != 0 {
        // SAFETY: version 1 of the block describes memmap_entries entries at memmap_paddr (< 4 GiB).
        let entries = unsafe { core::slice::from_raw_parts(phys::<MemmapEntry>(si.memmap_paddr), si.memmap_entries as usize) };
        for e in entries {
            let r = Region { base: e.addr, len: e.size, kind: RegionKind::from_e820(e.ty) };
            if info.memory.push(r).is_err() {
                info.problem("memory map has more regions than the kernel keeps; the rest is ignored");
                break;
            }
        }
    } else {
        panic!("PVH start info version {} carries no memory map; the kernel cannot place anything", si.version);
    }
    if si.cmdline_paddr != 0 {
        // SAFETY: a NUL-terminated string below 4 GiB; CStr stops at the NUL.
        let c = unsafe { core::ffi::CStr::from_ptr(phys::<core::ffi::c_char>(si.cmdline_paddr)) };
        super::keep_cmdline(&mut info, c.to_bytes());
    }
    info.rsdp_phys = (si.rsdp_paddr != 0).then_some(si.rsdp_paddr);
    let (start, end) = super::kernel_image();
    info.kernel_virt_base = start;
    info.kernel_phys_base = start - KERNEL_VMA;
    if si.nr_modules > 0 && si.modlist_paddr != 0 {
        // SAFETY: the block announces nr_modules entries at modlist_paddr (< 4 GiB, mapped as above).
        let m = unsafe { &*phys::<ModlistEntry>(si.modlist_paddr) };
        if m.size > 0 {
            info.initrd = Some((m.paddr, m.size));
        }
    }
    // The E820 map calls the kernel's memory RAM, and QEMU does not reserve the initrd either; take
    // both out of the pool before the frame allocator sees it.
    if info.memory.normalize().is_err()
        || info.memory.carve(info.kernel_phys_base, end - start, RegionKind::Kernel).is_err()
    {
        info.problem("memory map too large to normalise");
    }
    if let Some((pa, len)) = info.initrd {
        let (base, end) = (pa & !0xfff, (pa + len).next_multiple_of(0x1000));
        if info.memory.carve(base, end - base, RegionKind::Kernel).is_err() {
            info.problem("memory map too large to reserve the initramfs; it is ignored");
            info.initrd = None;
        }
    }
    crate::kernel_main(info)
}
