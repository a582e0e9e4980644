//! One boot-information type for both boot paths.
//!
//! `limine.rs` and `pvh.rs` each turn what their loader handed over into a [`BootInfo`]; everything
//! after that (`kernel_main`) is common code and never asks which loader ran except to print it.
//!
//! Layer: above `cpu` (the entries start the console first), below everything else. The entries
//! end in the crate root's `kernel_main`, which is no layer: it is the init order.

pub mod limine;
pub mod pvh;

use kcore::memmap::MemoryMap;

/// Which entry the kernel came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootPath {
    Limine,
    Pvh,
}

/// Everything the common code needs from the boot loader.
pub struct BootInfo {
    pub path: BootPath,
    /// Name and version of the loader, for the log.
    pub loader: &'static str,
    /// Virtual address of physical address 0 in the higher-half direct map.
    pub hhdm_offset: u64,
    pub memory: MemoryMap,
    /// Physical address of the ACPI RSDP, if the loader found one.
    pub rsdp_phys: Option<u64>,
    pub cmdline: &'static str,
    /// What was cut or replaced in the loader's command line to make `cmdline`.
    pub cmdline_kept: kcore::cmdline::Kept,
    pub kernel_phys_base: u64,
    pub kernel_virt_base: u64,
    /// Limine's MP response: the loader started the APs and parks them for us.
    pub limine_mp: Option<&'static ::limine::response::MpResponse>,
    /// The initramfs (first boot module) as (physical address, length), reserved in `memory` as
    /// `Kernel` so the frame allocator never hands it out.
    pub initrd: Option<(u64, u64)>,
    /// What went missing or wrong in the hand-over, reported once the console is up.
    pub problems: [Option<&'static str>; 8],
}

impl BootInfo {
    /// What an entry knows before it reads its loader's data: everything else starts empty.
    pub(crate) fn new(path: BootPath, loader: &'static str, hhdm_offset: u64) -> BootInfo {
        BootInfo {
            path,
            loader,
            hhdm_offset,
            memory: MemoryMap::new(),
            rsdp_phys: None,
            cmdline: "",
            cmdline_kept: kcore::cmdline::Kept::default(),
            kernel_phys_base: 0,
            kernel_virt_base: 0,
            limine_mp: None,
            initrd: None,
            problems: [None; 8],
        }
    }

    pub(crate) fn problem(&mut self, what: &'static str) {
        if let Some(slot) = self.problems.iter_mut().find(|p| p.is_none()) {
            *slot = Some(what);
        }
    }
}

unsafe extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// The kernel image's virtual extent `[start, end)`.
pub fn kernel_image() -> (u64, u64) {
    // Only the addresses of the linker-script symbols are taken, which is safe.
    (&raw const __kernel_start as u64, &raw const __kernel_end as u64)
}

/// Where the kernel is linked: the top 2 GiB.
pub const KERNEL_VMA: u64 = 0xffff_ffff_8000_0000;

/// Keep a copy of the loader's command line that outlives the loader's memory, as printable
/// UTF-8 (`kcore::cmdline::keep` says what it cuts and replaces; `main` reports it).
pub(crate) fn keep_cmdline(info: &mut BootInfo, bytes: &[u8]) {
    static mut BUF: [u8; kcore::cmdline::MAX_LEN] = [0; kcore::cmdline::MAX_LEN];
    static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    assert!(!TAKEN.swap(true, core::sync::atomic::Ordering::AcqRel), "command line kept twice");
    // SAFETY: TAKEN makes this the only reference ever made to BUF.
    let buf: &'static mut [u8; kcore::cmdline::MAX_LEN] = unsafe { &mut *(&raw mut BUF) };
    (info.cmdline, info.cmdline_kept) = kcore::cmdline::keep(bytes, buf);
}
