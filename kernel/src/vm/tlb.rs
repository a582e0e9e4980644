//! This CPU's TLB as the kernel uses it: which invalidation each case takes (the instructions
//! themselves are `arch::mmu`), the per-CPU shootdown mailboxes with posting, IPIs and waiting,
//! and per-CPU counters of all of it.
//!
//! - Invalidation: [`flush_pages`] (INVLPG, the current PCID and global entries of each page),
//!   [`flush_kernel_pages`] (kernel-half pages in every PCID), [`flush_pcid_pages`] (INVPCID individual-address, for a PCID that is not loaded),
//!   [`flush_current`] (every non-global entry of the loaded PCID: INVPCID single-context, or a
//!   CR3 reload without the no-flush bit), [`flush_everything`] (every PCID, global entries too) and
//!   [`load_cr3`] (the one place CR3 is written for an address space or the kernel-only context).
//! - Mailboxes: one `smp::ShootdownMailbox` per CPU ([`mailboxes`]); [`post`] a request and send
//!   the shootdown IPI to its targets, then [`wait`] for their acknowledgements, servicing this
//!   CPU's own mailbox meanwhile (two CPUs shooting each other down both finish), with a timeout
//!   that names the CPUs that never answered.
//! - Counters: [`Counter`], bumped with [`count`] by the CPU they belong to, read by anyone with
//!   [`counters`] as a [`TlbCounters`] snapshot.
//!
//! Whether PCIDs are in use is decided once by `space::init` and kept here ([`set_mode`],
//! [`pcid_enabled`]). Neighbours: `smp::shootdown` and `smp::tracker` (the portable protocol and the
//! decisions), `space` (address spaces, the switch, the IPI handler that services requests),
//! `ipi` (delivery), `time` (the timeout).

use core::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use smp::{AsId, CpuId, CpuSet, MAX_CPUS, PageRange, Request, ShootdownMailbox, Ticket};
use arch::mmu::{self, Cr3Load, Invpcid};

use ::trace::{Category, Record};

use crate::{cpu::{percpu, trace}, irq::{ipi, trap}, time};

/// How long a CPU waits for the acknowledgements of one request before it reports the CPUs that
/// never answered. Generous: under emulation many virtual CPUs share few host cores.
pub const SHOOTDOWN_TIMEOUT_NS: u64 = 10_000_000_000;

/// Requests with this id are kernel-half removals (for every CPU, whatever it has loaded), not an
/// address space's; address spaces are numbered from 1.
pub const KERNEL_ASID: AsId = AsId::new(0);

static MAILBOXES: [ShootdownMailbox; MAX_CPUS] = [const { ShootdownMailbox::new() }; MAX_CPUS];

/// The mailboxes of every CPU, indexed by `CpuId`.
pub fn mailboxes() -> &'static [ShootdownMailbox] {
    &MAILBOXES
}

/// This CPU's id.
#[inline]
pub fn this_cpu() -> CpuId {
    CpuId::new(percpu::cpu_index()).expect("per-CPU indices are below MAX_CPUS")
}

/// Which invalidation instructions the kernel uses, fixed by `space::init`.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    /// CR4.PCIDE is set on every CPU that uses an address space: CR3 carries a PCID.
    pub pcid: bool,
    /// The INVPCID instruction is available.
    pub invpcid: bool,
}

static MODE: spin::Once<Mode> = spin::Once::new();

/// Fix the mode (once; later calls keep the first).
pub fn set_mode(mode: Mode) -> Mode {
    *MODE.call_once(|| mode)
}

fn mode() -> Mode {
    MODE.get().copied().unwrap_or(Mode { pcid: false, invpcid: false })
}

/// Whether CR3 carries PCIDs.
pub fn pcid_enabled() -> bool {
    mode().pcid
}

/// Set CR4.PCIDE on this CPU.
///
/// # Safety
/// PCIDs are enabled ([`pcid_enabled`]), this CPU has the PCID feature, and CR3 bits 0-11 are zero
/// (the kernel's PML4 loaded without flags), as the architecture requires for the bit to be set.
pub unsafe fn enable_pcide_here() {
    // SAFETY: per the caller: the feature exists and CR3's PCID field is 0; with PCIDE set, every
    // later CR3 write goes through `load_cr3`, which puts a PCID there.
    unsafe { mmu::enable_pcide() };
}

/// The INVPCID proof, when the mode uses the instruction.
fn invpcid() -> Option<Invpcid> {
    // SAFETY: the mode says INVPCID only where `space::init` found it in CPUID, and every CPU of
    // the machine has the boot CPU's features.
    mode().invpcid.then(|| unsafe { Invpcid::assume() })
}

/// Load CR3 with the tree at `pml4` and PCID `pcid` (ignored without PCIDs, where every load drops
/// all non-global entries). With PCIDs, `flush` false sets the no-flush bit (63) so the PCID's
/// entries survive.
///
/// # Safety
/// `pml4` is a PML4 whose kernel half is the kernel's (the running code, stack and data stay
/// mapped), live for as long as this CPU keeps it loaded; with PCIDs, CR4.PCIDE is set here and the
/// entries `pcid` keeps (when `flush` is false) are valid for this tree.
pub unsafe fn load_cr3(pml4: u64, pcid: u16, flush: bool) {
    // SAFETY: per the caller's guarantees.
    unsafe { write_cr3(pml4, pcid, flush) };
    count(Counter::Cr3Writes, 1);
}

/// [`load_cr3`] by `me`, the calling CPU, with interrupts off (the switch path).
///
/// # Safety
/// As for [`load_cr3`].
pub unsafe fn load_cr3_here(me: CpuId, pml4: u64, pcid: u16, flush: bool) {
    // SAFETY: per the caller's guarantees.
    unsafe { write_cr3(pml4, pcid, flush) };
    count_one_here(me, Counter::Cr3Writes);
}

/// [`load_cr3_here`] on a CPU whose CR3 carries no PCID: the plain write, which drops every
/// non-global entry, without reading the mode.
///
/// `#[inline]`: one CR3 write and a counter, in the untagged switch (every switch of a CPU
/// without PCIDs), which otherwise may pay a call for it depending on the inliner's budget.
///
/// # Safety
/// As for [`load_cr3`], and PCIDs are off ([`pcid_enabled`] is false).
#[inline]
pub unsafe fn load_cr3_untagged_here(me: CpuId, pml4: u64) {
    debug_assert!(!pcid_enabled());
    // SAFETY: per the caller's guarantees; CR4.PCIDE is clear without PCIDs, so CR3 takes no PCID.
    unsafe { mmu::load_cr3(pml4, Cr3Load::Plain) };
    count_one_here(me, Counter::Cr3Writes);
}

/// The CR3 write of [`load_cr3`], uncounted.
///
/// # Safety
/// As for [`load_cr3`].
unsafe fn write_cr3(pml4: u64, pcid: u16, flush: bool) {
    let how = match (pcid_enabled(), flush) {
        (false, _) => Cr3Load::Plain,
        (true, true) => Cr3Load::Flush(pcid),
        (true, false) => Cr3Load::Keep(pcid),
    };
    // SAFETY: per the caller's guarantees; PCIDE is set exactly when the mode uses PCIDs.
    unsafe { mmu::load_cr3(pml4, how) };
}

/// The virtual address of page number `vpage`.
fn page_va(vpage: u64) -> u64 {
    kcore::paging::canonical(vpage << 12)
}

/// INVLPG every page of `range`: drops this CPU's entries for them in the current PCID, and the
/// global ones.
#[inline]
pub fn flush_pages(range: PageRange) {
    for vpage in range.start_vpage..range.start_vpage + range.pages {
        mmu::flush_local_page(page_va(vpage));
    }
    count(Counter::PageFlushes, range.pages);
}

/// Drop this CPU's translations of the kernel-half pages of `range` in every PCID. The kernel
/// half is mapped global, so INVLPG reaches them whatever PCID is loaded; without global pages
/// (CR4.PGE clear) each PCID holds its own copies, and only a flush of everything reaches them.
pub fn flush_kernel_pages(range: PageRange) {
    if pcid_enabled() && !mmu::global_pages_enabled() {
        flush_everything();
    } else {
        flush_pages(range);
    }
}

/// INVPCID individual-address for every page of `range` in PCID `pcid` (which need not be loaded).
///
/// # Panics
/// Without INVPCID (callers check [`invpcid_available`]).
pub fn flush_pcid_pages(pcid: u16, range: PageRange) {
    let invpcid = invpcid().expect("INVPCID used without the instruction");
    for vpage in range.start_vpage..range.start_vpage + range.pages {
        invpcid.flush_page(pcid, page_va(vpage));
    }
    count(Counter::PageFlushes, range.pages);
}

/// Whether [`flush_pcid_pages`] may be used.
pub fn invpcid_available() -> bool {
    mode().invpcid
}

/// Drop every non-global entry of the loaded context: the PCID `pcid` of the tree `pml4` now in
/// CR3 (INVPCID single-context, or reloading CR3 without the no-flush bit), or, without PCIDs,
/// everything non-global.
pub fn flush_current(pml4: u64, pcid: u16) {
    if let (true, Some(invpcid)) = (pcid_enabled(), invpcid()) {
        invpcid.flush_context(pcid);
    } else {
        // SAFETY: reloads the tree and PCID that are loaded already (the caller names them), which
        // only drops cached entries.
        unsafe { load_cr3(pml4, pcid, true) };
    }
    count(Counter::FullFlushes, 1);
}

/// Drop every entry of every context, global ones included (kernel-half changes too large to flush
/// page by page).
pub fn flush_everything() {
    match invpcid() {
        Some(invpcid) => invpcid.flush_all(),
        None => arch::cr::flush_tlb_with_pge_toggle(),
    }
    count(Counter::FullFlushes, 1);
}

/// Post `request` from this CPU (`me`) to `targets` and send them the shootdown IPI. Interrupts
/// off, and this CPU's previous request acknowledged ([`wait`] returned `Ok` for it).
///
/// # Panics
/// If the previous request is still pending: the caller must settle it first.
pub fn post(me: CpuId, targets: CpuSet, request: &Request) -> Ticket {
    // Stamped before the post, so before any target can acknowledge it.
    let begun_tsc = arch::tsc::read();
    let ticket = match ShootdownMailbox::post(mailboxes(), me, targets, request) {
        Ok(ticket) => ticket,
        Err(busy) => panic!("{me} posted a shootdown while its previous one still waits for {}", busy.pending),
    };
    let seq = mailboxes()[me.index()].outbox().seq();
    trace::event(Category::Tlb, |_, cpu| Record::shootdown_begin(begun_tsc, cpu, seq, targets.len() as u32));
    log::trace!(
        "tlb: {me} shoots down {} of {}: {} pages from {:#x}{} (generation {})",
        targets,
        request.asid,
        request.range.pages,
        request.range.start_vpage * 4096,
        if request.full_flush { ", full flush" } else { "" },
        request.new_gen
    );
    ipi::send_set(&targets, trap::VECTOR_SHOOTDOWN);
    let kind = if request.asid == KERNEL_ASID { Counter::KernelIpis } else { Counter::IpisSent };
    count(kind, targets.len() as u64);
    ticket
}

/// Wait until every target of this CPU's posted request has acknowledged it, calling `service`
/// (which must service this CPU's own mailbox, with interrupts off) on every turn. After
/// [`SHOOTDOWN_TIMEOUT_NS`], returns the CPUs that never answered; the request stays posted, so a
/// later `wait` may still see it through. Preemption (or interrupts) must stay off between the
/// `post` and the end of this call, so that the caller stays on `me`.
pub fn wait(me: CpuId, mut service: impl FnMut()) -> Result<(), CpuSet> {
    let deadline = time::now_ns().saturating_add(SHOOTDOWN_TIMEOUT_NS);
    let outbox = mailboxes()[me.index()].outbox();
    let outcome = outbox.wait(&mut service, || time::now_ns() >= deadline);
    // Trace the completion once per request, whether the acknowledgements came before this wait
    // or during it.
    let seq = outbox.seq();
    let traced = &TRACED_DONE[me.index()];
    if outcome.is_ok() && traced.load(Ordering::Relaxed) != seq {
        traced.store(seq, Ordering::Relaxed);
        trace::event(Category::Tlb, |tsc, cpu| Record::shootdown_done(tsc, cpu, seq));
    }
    outcome
}

/// Per CPU: the last of its requests whose completion was traced (only that CPU touches it).
static TRACED_DONE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Trace point of a target: it served `sender`'s shootdown number `seq` (before acknowledging it;
/// `ShootdownMailbox::service_noting` calls this).
pub fn trace_ack(sender: CpuId, seq: u64) {
    trace::event(Category::Tlb, |tsc, cpu| Record::shootdown_ack(tsc, cpu, seq, sender.get()));
}

/// Whether every target of this CPU's last request has acknowledged it (one read, inline).
pub fn acknowledged(me: CpuId) -> bool {
    mailboxes()[me.index()].outbox().is_acknowledged()
}

/// Per-CPU events of TLB maintenance; see [`TlbCounters`] for what each counts.
#[derive(Clone, Copy, Debug)]
pub enum Counter {
    Changes,
    IpisSent,
    ChangesWithoutIpi,
    AvoidedLazy,
    AvoidedNeverLoaded,
    RequestsServed,
    PageFlushes,
    FullFlushes,
    Cr3Writes,
    PcidHits,
    PcidStale,
    PcidMisses,
    PcidRecycles,
    PcidForgets,
    Leaves,
    KernelShootdowns,
    KernelIpis,
    KernelRequestsServed,
    IdleLeaves,
    IdleCatchUps,
}

const NR_COUNTERS: usize = Counter::IdleCatchUps as usize + 1;

/// Each CPU's counters in cache lines of their own, so that a CPU counting on its switch path never
/// writes a line its neighbours count in.
static COUNTERS: [CachePadded<[AtomicU64; NR_COUNTERS]>; MAX_CPUS] =
    [const { CachePadded::new([const { AtomicU64::new(0) }; NR_COUNTERS]) }; MAX_CPUS];

/// Add `n` to this CPU's counter `c`.
pub fn count(c: Counter, n: u64) {
    if n != 0 {
        // Relaxed: statistics, written by their own CPU only, ordering nothing. With interrupts
        // off (the switch and shootdown paths) nothing can run between a load and a store on this
        // CPU, so those are the whole update; with interrupts on, an interrupt handler's count or a
        // migration could, and a locked add keeps every count.
        let cell = &COUNTERS[percpu::cpu_index() as usize % MAX_CPUS][c as usize];
        if arch::interrupts::are_enabled() {
            cell.fetch_add(n, Ordering::Relaxed);
        } else {
            cell.store(cell.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        }
    }
}

/// Add one to counter `c` of `me`, the calling CPU, with interrupts off (the switch path): a load
/// and a store, without [`count`]'s tests of the interrupt flag and of the per-CPU block.
#[inline]
pub fn count_one_here(me: CpuId, c: Counter) {
    debug_assert!(!arch::interrupts::are_enabled() && me == this_cpu());
    let cell = &COUNTERS[me.index()][c as usize];
    cell.store(cell.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

/// Add `n` to counter `c` of `me`, the calling CPU, with interrupts off: as [`count_one_here`].
#[inline]
pub fn count_here(me: CpuId, c: Counter, n: u64) {
    debug_assert!(!arch::interrupts::are_enabled() && me == this_cpu());
    let cell = &COUNTERS[me.index()][c as usize];
    cell.store(cell.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// One CPU's TLB counters (or a sum of several CPUs'); all count since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlbCounters {
    /// Changes of an address space made on this CPU that needed TLB work (shootdowns requested).
    pub changes: u64,
    /// Shootdown IPIs this CPU sent for changes of address spaces.
    pub ipis_sent: u64,
    /// Changes that sent no IPI at all: the address space was loaded on no other CPU.
    pub changes_without_ipi: u64,
    /// IPIs avoided because the CPU held only a stale PCID slot of the address space, not its CR3:
    /// it catches up at its next switch to it.
    pub avoided_lazy: u64,
    /// IPIs avoided to online CPUs that held nothing of the address space (what a broadcast
    /// would have cost).
    pub avoided_never_loaded: u64,
    /// Requests of other CPUs' address-space changes this CPU serviced.
    pub requests_served: u64,
    /// Pages invalidated one by one (INVLPG, INVPCID individual-address).
    pub page_flushes: u64,
    /// Whole-context flushes (INVPCID single-context or all, CR3 reloads, CR4.PGE toggles).
    pub full_flushes: u64,
    /// CR3 writes.
    pub cr3_writes: u64,
    /// Switches that found their PCID slot synced (no flush).
    pub pcid_hits: u64,
    /// Switches that found their slot behind the address space's generation (flush).
    pub pcid_stale: u64,
    /// Switches that took a free slot (flush).
    pub pcid_misses: u64,
    /// Switches that took the least recently used slot from another address space (flush).
    pub pcid_recycles: u64,
    /// Slots given back because their address space was destroyed.
    pub pcid_forgets: u64,
    /// Times this CPU left a destroyed address space it still had loaded for the kernel's tables.
    pub leaves: u64,
    /// Kernel-half shootdowns this CPU requested.
    pub kernel_shootdowns: u64,
    /// Shootdown IPIs this CPU sent for kernel-half removals.
    pub kernel_ipis: u64,
    /// Kernel-half requests of other CPUs this CPU serviced.
    pub kernel_requests_served: u64,
    /// Times this CPU woke from a halt with its address space kept loaded and flushed that
    /// space's PCID, because a change spared it the IPI while it was halted.
    pub idle_catch_ups: u64,
    /// Times a change that frees page tables interrupted this CPU in a lazy halt, and it left its
    /// address space (loading it again as it woke).
    pub idle_leaves: u64,
}

impl TlbCounters {
    fn from_cells(cells: &[AtomicU64; NR_COUNTERS]) -> TlbCounters {
        let get = |c: Counter| cells[c as usize].load(Ordering::Relaxed);
        TlbCounters {
            changes: get(Counter::Changes),
            ipis_sent: get(Counter::IpisSent),
            changes_without_ipi: get(Counter::ChangesWithoutIpi),
            avoided_lazy: get(Counter::AvoidedLazy),
            avoided_never_loaded: get(Counter::AvoidedNeverLoaded),
            requests_served: get(Counter::RequestsServed),
            page_flushes: get(Counter::PageFlushes),
            full_flushes: get(Counter::FullFlushes),
            cr3_writes: get(Counter::Cr3Writes),
            pcid_hits: get(Counter::PcidHits),
            pcid_stale: get(Counter::PcidStale),
            pcid_misses: get(Counter::PcidMisses),
            pcid_recycles: get(Counter::PcidRecycles),
            pcid_forgets: get(Counter::PcidForgets),
            leaves: get(Counter::Leaves),
            kernel_shootdowns: get(Counter::KernelShootdowns),
            kernel_ipis: get(Counter::KernelIpis),
            kernel_requests_served: get(Counter::KernelRequestsServed),
            idle_catch_ups: get(Counter::IdleCatchUps),
            idle_leaves: get(Counter::IdleLeaves),
        }
    }

    /// Field by field `self + other`.
    pub fn plus(&self, other: &TlbCounters) -> TlbCounters {
        self.zip(other, u64::wrapping_add)
    }

    /// Field by field `self - earlier`: what happened since `earlier` was taken.
    #[cfg_attr(not(any(feature = "ktest", feature = "kbench")), expect(dead_code, reason = "only the in-kernel tests and benchmarks use it so far"))]
    pub fn since(&self, earlier: &TlbCounters) -> TlbCounters {
        self.zip(earlier, u64::wrapping_sub)
    }

    fn zip(&self, o: &TlbCounters, f: impl Fn(u64, u64) -> u64) -> TlbCounters {
        TlbCounters {
            changes: f(self.changes, o.changes),
            ipis_sent: f(self.ipis_sent, o.ipis_sent),
            changes_without_ipi: f(self.changes_without_ipi, o.changes_without_ipi),
            avoided_lazy: f(self.avoided_lazy, o.avoided_lazy),
            avoided_never_loaded: f(self.avoided_never_loaded, o.avoided_never_loaded),
            requests_served: f(self.requests_served, o.requests_served),
            page_flushes: f(self.page_flushes, o.page_flushes),
            full_flushes: f(self.full_flushes, o.full_flushes),
            cr3_writes: f(self.cr3_writes, o.cr3_writes),
            pcid_hits: f(self.pcid_hits, o.pcid_hits),
            pcid_stale: f(self.pcid_stale, o.pcid_stale),
            pcid_misses: f(self.pcid_misses, o.pcid_misses),
            pcid_recycles: f(self.pcid_recycles, o.pcid_recycles),
            pcid_forgets: f(self.pcid_forgets, o.pcid_forgets),
            leaves: f(self.leaves, o.leaves),
            kernel_shootdowns: f(self.kernel_shootdowns, o.kernel_shootdowns),
            kernel_ipis: f(self.kernel_ipis, o.kernel_ipis),
            kernel_requests_served: f(self.kernel_requests_served, o.kernel_requests_served),
            idle_catch_ups: f(self.idle_catch_ups, o.idle_catch_ups),
            idle_leaves: f(self.idle_leaves, o.idle_leaves),
        }
    }
}

/// CPU `cpu`'s counters now (racy but never torn per field).
pub fn counters(cpu: CpuId) -> TlbCounters {
    TlbCounters::from_cells(&COUNTERS[cpu.index()])
}

/// The sum of the counters of the CPUs in `cpus`.
pub fn sum(cpus: &CpuSet) -> TlbCounters {
    cpus.iter().fold(TlbCounters::default(), |acc, c| acc.plus(&counters(c)))
}
