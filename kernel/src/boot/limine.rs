//! The Limine boot protocol: requests the loader fills in before it jumps to [`limine_entry`].
//!
//! Base revision 2 is requested: the newest Limine release that can be checked here (8.2) accepts
//! revisions up to 2. Under revision 2 the RSDP response is a virtual (HHDM) address, from revision 3
//! a physical one; [`limine_entry`] accepts either.

use kcore::memmap::{Region, RegionKind};
use limine::{
    BaseRevision,
    memory_map::EntryType,
    request::{
        BootloaderInfoRequest, ExecutableAddressRequest, ExecutableCmdlineRequest, ExecutableFileRequest, HhdmRequest, MemoryMapRequest,
        ModuleRequest, MpRequest, RequestsEndMarker, RequestsStartMarker, RsdpRequest, StackSizeRequest,
    },
};

use super::{BootInfo, BootPath};

#[used]
#[unsafe(link_section = ".requests_start_marker")]
static START_MARKER: RequestsStartMarker = RequestsStartMarker::new();

#[used]
#[unsafe(link_section = ".requests")]
static BASE_REVISION: BaseRevision = BaseRevision::with_revision(2);

#[used]
#[unsafe(link_section = ".requests")]
static LOADER: BootloaderInfoRequest = BootloaderInfoRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static HHDM: HhdmRequest = HhdmRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static MEMMAP: MemoryMapRequest = MemoryMapRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static MP: MpRequest = MpRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static RSDP: RsdpRequest = RsdpRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static EXEC_ADDR: ExecutableAddressRequest = ExecutableAddressRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static CMDLINE: ExecutableCmdlineRequest = ExecutableCmdlineRequest::new();

/// Limine 8 passes the command line only with the executable file (the dedicated request is newer).
#[used]
#[unsafe(link_section = ".requests")]
static EXEC_FILE: ExecutableFileRequest = ExecutableFileRequest::new();

/// The boot stack Limine gives is 64 KiB by default; ask for the same as the PVH stack explicitly.
#[used]
#[unsafe(link_section = ".requests")]
static STACK: StackSizeRequest = StackSizeRequest::new().with_size(64 * 1024);

/// Boot modules (`module_path:` in limine.conf): the first is the initramfs.
#[used]
#[unsafe(link_section = ".requests")]
static MODULES: ModuleRequest = ModuleRequest::new();

#[used]
#[unsafe(link_section = ".requests_end_marker")]
static END_MARKER: RequestsEndMarker = RequestsEndMarker::new();

fn kind(t: EntryType) -> RegionKind {
    match t {
        EntryType::USABLE => RegionKind::Usable,
        EntryType::BOOTLOADER_RECLAIMABLE => RegionKind::BootloaderReclaimable,
        EntryType::ACPI_RECLAIMABLE => RegionKind::AcpiReclaimable,
        EntryType::ACPI_NVS => RegionKind::AcpiNvs,
        EntryType::BAD_MEMORY => RegionKind::Bad,
        EntryType::EXECUTABLE_AND_MODULES => RegionKind::Kernel,
        EntryType::FRAMEBUFFER => RegionKind::Framebuffer,
        _ => RegionKind::Reserved,
    }
}

/// The ELF entry point: Limine jumps here in long mode on its own page tables, interrupts off.
#[unsafe(no_mangle)]
extern "C" fn limine_entry() -> ! {
    crate::cpu::console::init();
    let mut info = BootInfo::new(BootPath::Limine, "Limine", 0);
    if !BASE_REVISION.is_supported() {
        info.problem("the loader does not support Limine base revision 2; responses may be missing");
    }
    if let Some(l) = LOADER.get_response() {
        info.loader = l.name();
    }
    let Some(hhdm) = HHDM.get_response() else {
        panic!("Limine gave no HHDM response: the kernel cannot reach physical memory")
    };
    info.hhdm_offset = hhdm.offset();
    let Some(mm) = MEMMAP.get_response() else {
        panic!("Limine gave no memory map response: the kernel cannot place anything")
    };
    for e in mm.entries() {
        if info.memory.push(Region { base: e.base, len: e.length, kind: kind(e.entry_type) }).is_err() {
            info.problem("memory map has more regions than the kernel keeps; the rest is ignored");
            break;
        }
    }
    if info.memory.normalize().is_err() {
        info.problem("memory map too large to normalise");
    }
    match RSDP.get_response() {
        // Revision 2 hands over an HHDM address, revision 3 a physical one.
        Some(r) => {
            let a = r.address() as u64;
            info.rsdp_phys = Some(if a >= info.hhdm_offset { a - info.hhdm_offset } else { a });
        }
        None => info.problem("Limine gave no RSDP response; ACPI tables will be searched for in the BIOS area"),
    }
    let (start, _) = super::kernel_image();
    match EXEC_ADDR.get_response() {
        Some(a) => {
            info.kernel_phys_base = a.physical_base();
            info.kernel_virt_base = a.virtual_base();
        }
        None => panic!("Limine gave no executable address response: the kernel cannot map itself"),
    }
    debug_assert_eq!(info.kernel_virt_base, start);
    match (CMDLINE.get_response(), EXEC_FILE.get_response()) {
        (Some(c), _) => super::keep_cmdline(&mut info, c.cmdline().to_bytes()),
        (None, Some(f)) => super::keep_cmdline(&mut info, f.file().string().to_bytes()),
        (None, None) => info.problem("Limine gave no command line (neither response); using an empty one"),
    }
    if let Some(m) = MODULES.get_response().and_then(|r| r.modules().first()) {
        // Modules sit in "executable and modules" memory (kept as Kernel) at an HHDM address.
        let va = m.addr() as u64;
        if va >= info.hhdm_offset && m.size() > 0 {
            info.initrd = Some((va - info.hhdm_offset, m.size()));
        }
    }
    match MP.get_response() {
        Some(mp) => info.limine_mp = Some(mp),
        None => info.problem("Limine gave no MP response: only the boot CPU will run"),
    }
    crate::kernel_main(info)
}
