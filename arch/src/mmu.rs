//! This CPU's MMU: loading a page-table tree into CR3 (with or without a PCID), and the TLB
//! invalidation instructions (INVLPG, INVPCID). The policy (which PCID, when to flush) is the
//! kernel's `vm` layer; this module only executes (SDM vol. 3A, 4.10 "Caching Translation
//! Information").
#![cfg(target_os = "none")]

use x86_64::{
    PhysAddr, VirtAddr,
    instructions::tlb::{self, InvPcidCommand, Pcid},
    registers::control::{Cr3, Cr3Flags, Cr4, Cr4Flags},
    structures::paging::PhysFrame,
};

#[inline]
fn frame(pml4: u64) -> PhysFrame {
    PhysFrame::from_start_address(PhysAddr::new(pml4)).expect("a PML4 is page-aligned")
}

#[inline]
fn pcid(id: u16) -> Pcid {
    Pcid::new(id).expect("PCIDs are 12 bits")
}

/// How a CR3 load treats the TLB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cr3Load {
    /// No PCIDs (CR4.PCIDE clear): every non-global entry is dropped.
    Plain,
    /// Load with this PCID and drop its entries.
    Flush(u16),
    /// Load with this PCID and keep its entries (bit 63 set).
    Keep(u16),
}

/// Load CR3 with the tree at `pml4`.
///
/// # Safety
/// `pml4` is a PML4 whose kernel half maps the running code, stack and data, live for as long as
/// this CPU keeps it loaded; `Flush`/`Keep` only with CR4.PCIDE set, `Plain` only with it clear;
/// with `Keep`, the entries the PCID holds are valid for this tree.
///
/// `#[inline]`: every switch between processes loads CR3, with `how` a constant at the call.
#[inline]
pub unsafe fn load_cr3(pml4: u64, how: Cr3Load) {
    let frame = frame(pml4);
    // SAFETY: per the caller's guarantees.
    unsafe {
        match how {
            Cr3Load::Plain => Cr3::write(frame, Cr3Flags::empty()),
            Cr3Load::Flush(id) => Cr3::write_pcid(frame, pcid(id)),
            Cr3Load::Keep(id) => Cr3::write_pcid_no_flush(frame, pcid(id)),
        }
    }
}

/// Switch this CPU to a new kernel tree and turn on its protections: EFER.NXE, CR0.WP, then CR3
/// with CR4.PGE briefly off (which flushes every translation, a boot loader's global ones too),
/// then CR4 with PGE, SMEP and SMAP as asked.
///
/// # Safety
/// `pml4` is a complete kernel tree that maps the running code, stack and data at their current
/// addresses; the CPU has NX, and PGE/SMEP/SMAP where asked; the tree has no user pages the kernel
/// would execute or touch.
pub unsafe fn load_kernel_tree(pml4: u64, pge: bool, smep: bool, smap: bool) {
    let mut cr4 = Cr4::read();
    cr4.set(Cr4Flags::PAGE_GLOBAL, pge);
    cr4.set(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION, smep);
    cr4.set(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION, smap);
    // SAFETY: NXE only gives meaning to the NX bits the new tree sets; WP makes read-only pages
    // read-only for the kernel too, and nothing writes to read-only memory on purpose; the CR3
    // write is sound per the caller's guarantee; clearing PGE while switching only flushes; SMEP
    // and SMAP are supported and harmless per the caller.
    unsafe {
        crate::cr::enable_nx();
        crate::cr::write_cr0(crate::cr::cr0() | crate::cr::CR0_WP);
        Cr4::write(cr4 - Cr4Flags::PAGE_GLOBAL);
        Cr3::write(frame(pml4), Cr3Flags::empty());
        Cr4::write(cr4);
    }
}

/// Set CR4.PCIDE on this CPU.
///
/// # Safety
/// This CPU has the PCID feature and CR3 bits 0-11 are zero, as the architecture requires for the
/// bit to be set; every later CR3 load passes a PCID ([`Cr3Load::Flush`] or [`Cr3Load::Keep`]).
pub unsafe fn enable_pcide() {
    // SAFETY: per the caller.
    unsafe { Cr4::update(|f| f.insert(Cr4Flags::PCID)) };
}

/// CR4.PGE (global pages) is set.
pub fn global_pages_enabled() -> bool {
    Cr4::read().contains(Cr4Flags::PAGE_GLOBAL)
}

/// INVLPG `va`: drops this CPU's entries for its page in the current PCID, and the global one.
#[inline]
pub fn flush_local_page(va: u64) {
    tlb::flush(VirtAddr::new(va));
}

/// A CPU with INVPCID (CPUID 7.0:EBX bit 10), as the kernel checked it: the proof the INVPCID
/// flushes take.
#[derive(Clone, Copy, Debug)]
pub struct Invpcid(());

impl Invpcid {
    /// # Safety
    /// This CPU (and every CPU the value reaches) has the INVPCID instruction.
    pub unsafe fn assume() -> Self {
        Self(())
    }

    /// Drop this CPU's entries for the page at `va` in PCID `id` (which need not be loaded).
    pub fn flush_page(self, id: u16, va: u64) {
        // SAFETY: the CPU has INVPCID (the proof); invalidating entries only costs refills.
        unsafe { tlb::flush_pcid(InvPcidCommand::Address(VirtAddr::new(va), pcid(id))) };
    }

    /// Drop every non-global entry of PCID `id`.
    pub fn flush_context(self, id: u16) {
        // SAFETY: as above.
        unsafe { tlb::flush_pcid(InvPcidCommand::Single(pcid(id))) };
    }

    /// Drop every entry of every PCID, global ones included.
    pub fn flush_all(self) {
        // SAFETY: as above.
        unsafe { tlb::flush_pcid(InvPcidCommand::All) };
    }
}
