//! TLB shootdown bookkeeping for one address space: who may hold its translations, which change
//! generation they are synced to, and whom a change must interrupt.
//!
//! Key types: [`TlbTracker`] (one per address space), [`ChangePlan`] (what one change of its page
//! tables requires), [`Request`] (what a remote CPU is asked to invalidate), [`FlushAction`] (what
//! a CPU must invalidate for a request), [`TlbStats`] (kernel-wide counters) and [`FreeAfter`]
//! (when unmapped frames and page-table pages may be reused). Neighbours: `pcid::PcidTable`
//! holds each CPU's slots and their synced generations; `shootdown` carries requests to other
//! CPUs and collects their acknowledgements. The kernel performs every CR3 write, INVLPG,
//! INVPCID and IPI these decide.
//!
//! # State of an address space
//!
//! - `tlb_gen`: bumped by every change that removes or narrows a translation (unmap, protection
//!   reduction, remap). Adding a mapping does not bump it: x86 does not cache non-present
//!   entries.
//! - `active`: CPUs that have this address space's CR3 loaded right now, whether they run one of
//!   its threads or, lazily, a kernel-only thread on top of it. Such a CPU can fill TLB entries
//!   and walk the page tables at any moment (speculation included), so every change interrupts it.
//!   (Linux spares lazy CPUs the IPIs of ordinary flushes and catches them up later; counting them
//!   as active costs those IPIs but keeps page-table freeing simple, see [`FreeAfter`]. A kernel
//!   that wants to spare an idle CPU loads the kernel-only context there instead.)
//! - `may_cache`: CPUs that may hold entries tagged with a PCID of this address space: the active
//!   ones plus those whose PCID slot for it survived a switch-out. A CPU leaves it only once those
//!   entries are gone (its slot was recycled with a flush), never merely on switch-out. A CPU
//!   whose CR3 carries no PCID empties its TLB at every CR3 write, holds entries of its loaded
//!   address space alone, and so never enters it ([`TlbTracker::switch_in_untagged`]): for such
//!   a CPU `active` is the whole story.
//!
//! A CPU in `may_cache` but not `active` gets no IPI: the Intel SDM (vol. 3A, 4.10) states that a
//! processor translates only through TLB and paging-structure-cache entries of the current PCID,
//! and its slot's synced generation falls behind `tlb_gen`, so [`PcidTable::switch_to`] flushes
//! before that PCID is loaded again. That is the lazy catch-up.
//!
//! # Protocols (the order matters)
//!
//! Switch from `prev` to `next` on `cpu`, interrupts off:
//! 1. `next.switch_in(cpu, table)` (`switch_in_untagged` on a CPU without PCIDs);
//! 2. load CR3 with the returned PCID, bit 63 set unless `flush`;
//! 3. `prev.switch_out(cpu)`, after the CR3 write (until then `prev` is still loaded);
//! 4. on [`SwitchKind::Recycled(evicted)`](crate::pcid::SwitchKind::Recycled), call
//!    `slot_recycled(cpu)` on `evicted`'s tracker, after the flushing CR3 write dropped its
//!    entries (not on a CPU without PCIDs: it never entered `evicted`'s `may_cache`).
//!
//! Entering the kernel-only context instead is `table.switch_to_kernel()`, the CR3 write, then
//! step 3.
//!
//! Change on `cpu` (preemption off):
//! 1. write the page-table entries;
//! 2. `plan = tracker.begin_change(cpu, range, stats)`; the edits must precede it, since a CPU
//!    that reads the new generation may refill its TLB right after;
//! 3. if `plan.local_flush`, perform `tracker.flush_action(&plan.request(), table)`;
//! 4. if `plan.ipi_targets` is not empty, `ShootdownMailbox::post` the request to them (if the
//!    CPU's previous request is still out, `post` answers `Busy`: wait for that one first), send
//!    the IPIs, and `wait` (servicing the own mailbox meanwhile) or keep a [`FreeAfter`];
//! 5. free the unmapped frames and page-table pages once the wait returned or the `FreeAfter` is
//!    releasable.
//!
//! Service on `cpu` (IPI handler, or the wait loop): `ShootdownMailbox::service` with a closure
//! that performs the current address space's `flush_action` for each request.
//!
//! # Why the generation check is sound
//!
//! `switch_in` inserts the CPU into `active` (a `SeqCst` read-modify-write), then loads `tlb_gen`
//! (`SeqCst`); `begin_change` bumps `tlb_gen` (a `SeqCst` read-modify-write), then loads `active`
//! (`SeqCst`). All four fall in the one total order of `SeqCst` operations, which each thread's
//! program order respects and from which a `SeqCst` load reads the latest write before it. If the
//! changer's bump comes first, the CPU's later load of `tlb_gen` sees it: its slot is behind, and
//! it flushes. If the CPU's insert comes first, the changer's later load sees the CPU's bit (or,
//! if the CPU already left, the CPU is not running the address space and its slot is behind: lazy
//! catch-up) and sends an IPI. On x86 each read-modify-write is a locked instruction, itself a
//! full barrier, and each `SeqCst` load a plain load: no `mfence`. loom treats `SeqCst` accesses
//! as merely acquire/release, so under `--cfg loom` a `SeqCst` fence sits between each
//! read-modify-write and the load after it, and the model checks the argument in that form. The
//! bump is a release after the page-table edits, and `tlb_gen` only ever changes by
//! read-modify-write, so a CPU that reads generation `g` also sees the edits of every change up to
//! `g`: entries it fills after its flush are synced to `g`.

use crate::cpuset::{self, AtomicCpuSet, CpuSet};
use crate::ids::CpuId;
use crate::pcid::{AsId, Pcid, PcidTable, SwitchIn};
use crate::shootdown::{ShootdownMailbox, Ticket};
use crate::sync::{AtomicU64, Ordering};
#[cfg(loom)]
use crate::sync::fence;

/// Ranges of more pages than this are flushed whole (the PCID's every entry) instead of page by
/// page.
///
/// One INVLPG costs on the order of 100 to 250 cycles (more under a hypervisor), so 32 pages cost
/// some 3,000 to 8,000 cycles; a whole-PCID flush costs about one INVLPG but every entry still
/// needed afterwards costs a page walk (tens to a few hundred cycles each). Beyond about 32
/// pages, the page-by-page cost exceeds the refill of a typical working set; Linux draws the
/// line at 33 for the same reason.
pub const FULL_FLUSH_THRESHOLD_PAGES: u64 = 32;

/// A range of virtual pages, `start_vpage .. start_vpage + pages` (page numbers, not addresses).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PageRange {
    /// The first virtual page number.
    pub start_vpage: u64,
    /// The number of pages.
    pub pages: u64,
}

/// What one change asks of each CPU that may translate through stale entries.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Request {
    /// The address space that changed.
    pub asid: AsId,
    /// Its generation after the change.
    pub new_gen: u64,
    /// The pages whose translations changed.
    pub range: PageRange,
    /// Whether the range is too large to flush page by page.
    pub full_flush: bool,
}

/// What a change of one address space's page tables requires; see [`TlbTracker::begin_change`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ChangePlan {
    /// The address space.
    pub asid: AsId,
    /// The changed pages.
    pub range: PageRange,
    /// The generation this change created.
    pub new_gen: u64,
    /// Whether the calling CPU has the address space loaded and must flush its own entries.
    pub local_flush: bool,
    /// The other CPUs that have the address space loaded: each must flush and acknowledge.
    pub ipi_targets: CpuSet,
    /// CPUs that may cache entries but are not running the address space: no IPI, they flush at
    /// their next switch-in because their slot's generation is behind.
    pub avoided: CpuSet,
    /// Whether the range exceeds [`FULL_FLUSH_THRESHOLD_PAGES`].
    pub full_flush: bool,
}

impl ChangePlan {
    /// The request to post to `ipi_targets` and to apply locally.
    pub fn request(&self) -> Request {
        Request {
            asid: self.asid,
            new_gen: self.new_gen,
            range: self.range,
            full_flush: self.full_flush,
        }
    }
}

/// What a CPU must invalidate to honour a [`Request`]; see [`TlbTracker::flush_action`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FlushAction {
    /// Nothing: the address space is not loaded here (its slot catches up at the next
    /// switch-in) or a later flush already covered the change.
    Nothing,
    /// INVLPG every page of the range; the address space's PCID is the current one.
    Pages(PageRange),
    /// Invalidate every non-global entry of this PCID (INVPCID single-context, or a CR3 reload
    /// without bit 63).
    Pcid(Pcid),
}

/// Kernel-wide shootdown counters, updated by [`TlbTracker::begin_change`] (relaxed: they are
/// statistics and order nothing). Every plan is flushed either page by page or whole, so the
/// number of plans is the sum of those two counters, not a counter of its own: one locked add
/// fewer per change, on a line every CPU writes.
#[derive(Debug, Default)]
pub struct TlbStats {
    ipis_sent: AtomicU64,
    no_ipi_changes: AtomicU64,
    ipis_avoided_lazy: AtomicU64,
    ranged_flushes: AtomicU64,
    full_flushes: AtomicU64,
}

/// A copy of the [`TlbStats`] counters.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct TlbStatsSnapshot {
    /// Changes planned (calls of `begin_change`).
    pub shootdowns: u64,
    /// IPIs the plans asked for (CPUs in `ipi_targets`, summed).
    pub ipis_sent: u64,
    /// Changes that needed no IPI at all: the address space was active on no other CPU.
    pub no_ipi_changes: u64,
    /// IPIs not sent to CPUs that may cache the address space but do not run it (CPUs in
    /// `avoided`, summed): they catch up lazily.
    pub ipis_avoided_lazy: u64,
    /// Changes flushed page by page.
    pub ranged_flushes: u64,
    /// Changes flushed whole.
    pub full_flushes: u64,
}

impl TlbStats {
    /// All counters zero.
    #[cfg(not(loom))]
    pub const fn new() -> TlbStats {
        TlbStats {
            ipis_sent: AtomicU64::new(0),
            no_ipi_changes: AtomicU64::new(0),
            ipis_avoided_lazy: AtomicU64::new(0),
            ranged_flushes: AtomicU64::new(0),
            full_flushes: AtomicU64::new(0),
        }
    }

    /// All counters zero (loom atomics cannot be built in a `const fn`).
    #[cfg(loom)]
    pub fn new() -> TlbStats {
        TlbStats::default()
    }

    /// The counters now.
    pub fn snapshot(&self) -> TlbStatsSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (ranged_flushes, full_flushes) = (read(&self.ranged_flushes), read(&self.full_flushes));
        TlbStatsSnapshot {
            shootdowns: ranged_flushes + full_flushes,
            ipis_sent: read(&self.ipis_sent),
            no_ipi_changes: read(&self.no_ipi_changes),
            ipis_avoided_lazy: read(&self.ipis_avoided_lazy),
            ranged_flushes,
            full_flushes,
        }
    }

    fn record(&self, plan: &ChangePlan) {
        let add = |counter: &AtomicU64, n: u64| {
            if n != 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        };
        let ipis = plan.ipi_targets.len() as u64;
        add(&self.ipis_sent, ipis);
        add(&self.no_ipi_changes, u64::from(ipis == 0));
        add(&self.ipis_avoided_lazy, plan.avoided.len() as u64);
        add(&self.ranged_flushes, u64::from(!plan.full_flush));
        add(&self.full_flushes, u64::from(plan.full_flush));
    }
}

/// The TLB state of one address space shared by all CPUs; see the module comment.
#[derive(Debug)]
pub struct TlbTracker {
    asid: AsId,
    tlb_gen: AtomicU64,
    may_cache: AtomicCpuSet,
    active: AtomicCpuSet,
}

impl TlbTracker {
    /// A tracker for the new address space `asid`: generation 0, cached and loaded nowhere.
    #[cfg(not(loom))]
    pub const fn new(asid: AsId) -> TlbTracker {
        TlbTracker {
            asid,
            tlb_gen: AtomicU64::new(0),
            may_cache: AtomicCpuSet::new(),
            active: AtomicCpuSet::new(),
        }
    }

    /// A tracker for the new address space `asid` (loom atomics cannot be built in a `const fn`).
    #[cfg(loom)]
    pub fn new(asid: AsId) -> TlbTracker {
        TlbTracker {
            asid,
            tlb_gen: AtomicU64::new(0),
            may_cache: AtomicCpuSet::new(),
            active: AtomicCpuSet::new(),
        }
    }

    /// The address space tracked.
    pub fn asid(&self) -> AsId {
        self.asid
    }

    /// The current generation.
    #[inline]
    pub fn tlb_gen(&self) -> u64 {
        self.tlb_gen.load(Ordering::SeqCst)
    }

    /// The CPUs that have the address space loaded now.
    pub fn active(&self) -> CpuSet {
        self.active.snapshot()
    }

    /// The CPUs that may hold entries of the address space.
    pub fn may_cache(&self) -> CpuSet {
        self.may_cache.snapshot()
    }

    /// First step of a switch to this address space on `cpu` (interrupts off): marks `cpu` as
    /// caching and active, then reads the generation, then picks the PCID slot. The caller then
    /// writes CR3 as the result says; see the module comment for the whole sequence and the
    /// ordering argument.
    pub fn switch_in<const N: usize>(&self, cpu: CpuId, table: &mut PcidTable<N>) -> SwitchIn {
        // `may_cache` first, so that whoever sees the `active` bit also sees this one. Only `cpu`
        // itself adds or removes its bit there, so when it is still set (the CPU kept its slot
        // since it last left) a load tells, and the locked read-modify-write is saved.
        if !self.may_cache.contains(cpu) {
            self.may_cache.insert(cpu);
        }
        self.active.insert(cpu);
        // The mark above must be visible before the generation is read, and `begin_change`'s
        // bump before its read of `active`. Both sides are a SeqCst read-modify-write followed by
        // a SeqCst load, which the single total order of SeqCst operations already keeps from
        // both reading the old value (and which x86 compiles to a locked instruction, itself a
        // full barrier, then a plain load). loom does not model SeqCst accesses in full, so its
        // runs keep the fences that say the same.
        #[cfg(loom)]
        fence(Ordering::SeqCst);
        let now = self.tlb_gen.load(Ordering::SeqCst);
        table.switch_to(self.asid, now)
    }

    /// [`TlbTracker::switch_in`] on a CPU whose CR3 carries no PCID (its table has the one slot):
    /// every CR3 write there empties the TLB of all but global entries, so the CPU holds entries
    /// of the address space it has loaded and of no other. `active` then says all that
    /// `may_cache` would, and the CPU never enters `may_cache` (nor calls `slot_recycled`): one
    /// locked read-modify-write per switch-in instead of two, none for the recycled slot. The
    /// ordering argument is `switch_in`'s, with the `active` insert as the read-modify-write.
    #[inline]
    pub fn switch_in_untagged(&self, cpu: CpuId, table: &mut PcidTable<1>) -> SwitchIn {
        self.active.insert(cpu);
        // As in `switch_in`: the insert is ordered before the load by the SeqCst total order.
        #[cfg(loom)]
        fence(Ordering::SeqCst);
        let now = self.tlb_gen.load(Ordering::SeqCst);
        table.switch_to_only(self.asid, now)
    }

    /// Last step of a switch away from this address space on `cpu`, after the CR3 write that
    /// unloaded it. `cpu` stays in `may_cache`: its PCID still holds entries.
    pub fn switch_out(&self, cpu: CpuId) {
        self.active.remove(cpu);
    }

    /// `cpu` recycled its slot for this address space with a flushing CR3 write
    /// ([`SwitchKind::Recycled`](crate::pcid::SwitchKind::Recycled)): it holds no entries of it
    /// anymore. Call after that CR3 write.
    pub fn slot_recycled(&self, cpu: CpuId) {
        debug_assert!(
            !self.active.contains(cpu),
            "a CPU recycles only slots of address spaces it has left"
        );
        self.may_cache.remove(cpu);
    }

    /// Starts the TLB side of a change to `range`, made by `cpu`, whose page-table edits are
    /// already written: bumps the generation, then reads who must flush.
    ///
    /// No IPI when the address space is loaded on `cpu` alone (or nowhere).
    pub fn begin_change(&self, cpu: CpuId, range: PageRange, stats: &TlbStats) -> ChangePlan {
        self.begin_change_sparing(cpu, range, stats, |_| CpuSet::new())
    }

    /// [`TlbTracker::begin_change`], sparing the IPI to the CPUs among the others with the
    /// address space loaded that `spare` names: they count as `avoided`. `spare` runs after the
    /// generation's bump (SeqCst), so a CPU it spares because it reads a flag the CPU clears
    /// (SeqCst) before reading the generation either is seen with the flag still set, and then
    /// reads the new generation and catches up by itself, or is sent the IPI. The caller spares
    /// only CPUs that run no thread of the space until they have caught up, and only for a change
    /// that frees no page-table page (a CPU with the space loaded may walk the tables
    /// speculatively, so a freed table must wait for its acknowledgement).
    pub fn begin_change_sparing(
        &self,
        cpu: CpuId,
        range: PageRange,
        stats: &TlbStats,
        spare: impl FnOnce(&CpuSet) -> CpuSet,
    ) -> ChangePlan {
        let new_gen = self.tlb_gen.fetch_add(1, Ordering::SeqCst) + 1;
        // The bump must be visible before `active` is read: see `switch_in`.
        #[cfg(loom)]
        fence(Ordering::SeqCst);
        // Built in place, in the plan itself, in one pass over the words in use: the reads of
        // two snapshots (every word of `active`, then of `may_cache`), without their copies.
        let mut plan = ChangePlan {
            asid: self.asid,
            range,
            new_gen,
            local_flush: false,
            ipi_targets: CpuSet::EMPTY,
            avoided: CpuSet::EMPTY,
            full_flush: range.pages > FULL_FLUSH_THRESHOLD_PAGES,
        };
        plan.local_flush = cpuset::load_plan_sets(&self.active, &self.may_cache, cpu, &mut plan.ipi_targets, &mut plan.avoided);
        if !plan.ipi_targets.is_empty() {
            let spared = spare(&plan.ipi_targets);
            cpuset::move_spared(&spared, &mut plan.ipi_targets, &mut plan.avoided);
        }
        stats.record(&plan);
        plan
    }

    /// What this CPU must invalidate for `request`, this tracker's address space being the one
    /// loaded here (or not: then there is nothing to do). Updates the slot's synced generation as
    /// if the returned action were already done; the caller performs it before acknowledging.
    ///
    /// - not loaded here, or the slot is already synced to `new_gen`: [`FlushAction::Nothing`];
    /// - the slot is synced to `new_gen - 1` and the range is small: [`FlushAction::Pages`], the
    ///   slot is then synced to `new_gen`;
    /// - otherwise (a large range, or an earlier change not yet flushed here): the whole PCID,
    ///   and the slot is synced to the generation read before the flush.
    pub fn flush_action<const N: usize>(
        &self,
        request: &Request,
        table: &mut PcidTable<N>,
    ) -> FlushAction {
        let loaded = match table.current() {
            Some((asid, pcid)) if asid == self.asid && request.asid == self.asid => pcid,
            _ => return FlushAction::Nothing,
        };
        let (_, synced) = table
            .slot_of(self.asid)
            .expect("the current address space holds a slot");
        if synced >= request.new_gen {
            return FlushAction::Nothing;
        }
        if !request.full_flush && synced + 1 == request.new_gen {
            table.note_flushed(self.asid, request.new_gen);
            return FlushAction::Pages(request.range);
        }
        // Every change up to `now` wrote its edits before its bump; the flush comes after this
        // load, so afterwards the PCID holds nothing older than `now`.
        let now = self.tlb_gen.load(Ordering::SeqCst);
        table.note_flushed(self.asid, now);
        FlushAction::Pcid(loaded)
    }
}

/// Permission to reuse the frames and page-table pages one change unmapped, bound to the change's
/// address space and generation.
///
/// The CPUs that can still use a stale translation or walk a freed page-table page are exactly
/// those that had the address space loaded when the change was planned: the calling CPU (its
/// flush is done before the token is made) and `ipi_targets` (they acknowledge the posted
/// request after flushing). CPUs in `avoided` have another CR3 loaded, cannot use this PCID's
/// entries, and flush before loading it again. So the token is releasable once the request is
/// acknowledged by every target.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FreeAfter {
    asid: AsId,
    tlb_gen: u64,
    ticket: Option<Ticket>,
}

impl FreeAfter {
    /// The token for `plan`, made after its local flush (if `plan.local_flush`) and after
    /// posting its request to `plan.ipi_targets` as `ticket` (`None` if there were none).
    ///
    /// # Panics
    /// If `plan.ipi_targets` is not empty but `ticket` is `None`.
    pub fn new(plan: &ChangePlan, ticket: Option<Ticket>) -> FreeAfter {
        assert!(
            ticket.is_some() || plan.ipi_targets.is_empty(),
            "a change with IPI targets needs the ticket of its posted request"
        );
        FreeAfter {
            asid: plan.asid,
            tlb_gen: plan.new_gen,
            ticket,
        }
    }

    /// The address space the change was made to.
    pub fn asid(&self) -> AsId {
        self.asid
    }

    /// The generation the change created.
    pub fn tlb_gen(&self) -> u64 {
        self.tlb_gen
    }

    /// Whether every CPU that could use the unmapped memory has flushed.
    pub fn is_releasable(&self, mailboxes: &[ShootdownMailbox]) -> bool {
        self.ticket
            .is_none_or(|ticket| ticket.is_complete(mailboxes))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::pcid::SwitchKind;

    fn cpu(index: u32) -> CpuId {
        CpuId::new(index).unwrap()
    }

    fn cpus(indices: &[u32]) -> CpuSet {
        indices.iter().map(|&i| cpu(i)).collect()
    }

    fn range(start_vpage: u64, pages: u64) -> PageRange {
        PageRange { start_vpage, pages }
    }

    const AS: AsId = AsId::new(7);

    #[test]
    fn a_new_tracker_is_at_gen_0_and_loaded_nowhere() {
        let t = TlbTracker::new(AS);
        assert_eq!(t.asid(), AS);
        assert_eq!(t.tlb_gen(), 0);
        assert!(t.active().is_empty());
        assert!(t.may_cache().is_empty());
    }

    #[test]
    fn a_spared_cpu_gets_no_ipi_and_counts_as_avoided() {
        let t = TlbTracker::new(AS);
        let stats = TlbStats::new();
        let mut tables: [PcidTable<2>; 4] = core::array::from_fn(|_| PcidTable::new());
        for (i, table) in tables.iter_mut().enumerate() {
            t.switch_in(cpu(i as u32), table);
        }
        // CPU 0 changes; it names CPUs 2 and 3 (and itself, which is never a target) to spare.
        let plan = t.begin_change_sparing(cpu(0), range(0x10, 1), &stats, |others| {
            assert_eq!(*others, cpus(&[1, 2, 3]), "spare is asked about the other active CPUs");
            cpus(&[0, 2, 3])
        });
        assert!(plan.local_flush);
        assert_eq!(plan.ipi_targets, cpus(&[1]));
        assert_eq!(plan.avoided, cpus(&[2, 3]));
        assert_eq!(plan.new_gen, 1);
        assert_eq!(t.begin_change(cpu(0), range(0x10, 1), &stats).ipi_targets, cpus(&[1, 2, 3]));
    }

    #[test]
    fn switch_in_marks_the_cpu_and_syncs_the_slot_to_the_current_gen() {
        let t = TlbTracker::new(AS);
        let stats = TlbStats::new();
        t.begin_change(cpu(0), range(0, 1), &stats);
        let mut table = PcidTable::<2>::new();
        let s = t.switch_in(cpu(3), &mut table);
        assert_eq!(s.kind, SwitchKind::Miss);
        assert!(s.flush);
        assert_eq!(t.active(), cpus(&[3]));
        assert_eq!(t.may_cache(), cpus(&[3]));
        assert_eq!(table.slot_of(AS), Some((s.pcid, 1)));
    }

    #[test]
    fn switch_out_clears_active_but_not_may_cache() {
        let t = TlbTracker::new(AS);
        let mut table = PcidTable::<2>::new();
        t.switch_in(cpu(1), &mut table);
        t.switch_out(cpu(1));
        assert!(t.active().is_empty());
        assert_eq!(t.may_cache(), cpus(&[1]));
    }

    #[test]
    fn slot_recycled_clears_may_cache() {
        let t = TlbTracker::new(AS);
        let mut table = PcidTable::<2>::new();
        t.switch_in(cpu(1), &mut table);
        t.switch_out(cpu(1));
        t.slot_recycled(cpu(1));
        assert!(t.may_cache().is_empty());
    }

    #[test]
    fn switch_back_after_a_change_is_stale_and_flushes() {
        let t = TlbTracker::new(AS);
        let stats = TlbStats::new();
        let mut table = PcidTable::<2>::new();
        t.switch_in(cpu(1), &mut table);
        t.switch_out(cpu(1));
        assert_eq!(t.switch_in(cpu(1), &mut table).kind, SwitchKind::Hit);
        t.switch_out(cpu(1));
        t.begin_change(cpu(0), range(0, 1), &stats);
        let s = t.switch_in(cpu(1), &mut table);
        assert_eq!((s.kind, s.flush), (SwitchKind::Stale, true));
    }

    #[test]
    fn begin_change_bumps_the_gen_and_targets_the_other_active_cpus() {
        let t = TlbTracker::new(AS);
        let stats = TlbStats::new();
        let mut tables = [PcidTable::<2>::new(), PcidTable::new(), PcidTable::new()];
        for (i, table) in tables.iter_mut().enumerate() {
            t.switch_in(cpu(i as u32), table);
        }
        let plan = t.begin_change(cpu(0), range(10, 3), &stats);
        assert_eq!(plan.new_gen, 1);
        assert_eq!(t.tlb_gen(), 1);
        assert!(plan.local_flush);
        assert_eq!(plan.ipi_targets, cpus(&[1, 2]));
        assert!(plan.avoided.is_empty());
        assert!(!plan.full_flush);
        assert_eq!(
            plan.request(),
            Request {
                asid: AS,
                new_gen: 1,
                range: range(10, 3),
                full_flush: false
            }
        );
        assert_eq!(t.begin_change(cpu(0), range(10, 3), &stats).new_gen, 2);
    }

    #[test]
    fn begin_change_sends_no_ipi_when_only_the_caller_runs_the_address_space() {
        let t = TlbTracker::new(AS);
        let stats = TlbStats::new();
        let mut table = PcidTable::<2>::new();
        t.switch_in(cpu(4), &mut table);
        let plan = t.begin_change(cpu(4), range(0, 1), &stats);
        assert!(plan.local_flush);
        assert!(plan.ipi_targets.is_empty());
        // Loaded nowhere: nothing to flush at all.
        t.switch_out(cpu(4));
        let plan = t.begin_change(cpu(4), range(0, 1), &stats);
        assert!(!plan.local_flush);
        assert!(plan.ipi_targets.is_empty());
    }

    #[test]
    fn begin_change_avoids_cpus_that_cache_but_do_not_run_the_address_space() {
        let t = TlbTracker::new(AS);
        let stats = TlbStats::new();
        let mut tables = [PcidTable::<2>::new(), PcidTable::new(), PcidTable::new()];
        for (i, table) in tables.iter_mut().enumerate() {
            t.switch_in(cpu(i as u32), table);
        }
        t.switch_out(cpu(0));
        t.switch_out(cpu(2));
        let plan = t.begin_change(cpu(0), range(0, 1), &stats);
        assert!(!plan.local_flush);
        assert_eq!(plan.ipi_targets, cpus(&[1]));
        // The caller's own stale slot is not an avoided IPI.
        assert_eq!(plan.avoided, cpus(&[2]));
    }

    #[test]
    fn ranges_above_the_threshold_are_flushed_whole() {
        let t = TlbTracker::new(AS);
        let stats = TlbStats::new();
        let at = t.begin_change(cpu(0), range(0, FULL_FLUSH_THRESHOLD_PAGES), &stats);
        assert!(!at.full_flush);
        let above = t.begin_change(cpu(0), range(0, FULL_FLUSH_THRESHOLD_PAGES + 1), &stats);
        assert!(above.full_flush);
        assert!(above.request().full_flush);
    }

    #[test]
    fn stats_count_every_plan() {
        let t = TlbTracker::new(AS);
        let stats = TlbStats::new();
        assert_eq!(stats.snapshot(), TlbStatsSnapshot::default());
        let mut tables = [PcidTable::<2>::new(), PcidTable::new(), PcidTable::new()];
        for (i, table) in tables.iter_mut().enumerate() {
            t.switch_in(cpu(i as u32), table);
        }
        t.switch_out(cpu(2));
        t.begin_change(cpu(0), range(0, 1), &stats); // IPI to 1, 2 avoided
        t.switch_out(cpu(1));
        t.begin_change(cpu(0), range(0, 100), &stats); // no IPI, 1 and 2 avoided
        assert_eq!(
            stats.snapshot(),
            TlbStatsSnapshot {
                shootdowns: 2,
                ipis_sent: 1,
                no_ipi_changes: 1,
                ipis_avoided_lazy: 3,
                ranged_flushes: 1,
                full_flushes: 1,
            }
        );
    }

    /// A tracker loaded on CPU 0 with its slot synced to the current generation.
    fn loaded() -> (TlbTracker, PcidTable<2>, TlbStats) {
        let t = TlbTracker::new(AS);
        let mut table = PcidTable::new();
        t.switch_in(cpu(0), &mut table);
        (t, table, TlbStats::new())
    }

    #[test]
    fn flush_action_for_the_next_gen_is_a_ranged_flush() {
        let (t, mut table, stats) = loaded();
        let plan = t.begin_change(cpu(1), range(5, 2), &stats);
        let action = t.flush_action(&plan.request(), &mut table);
        assert_eq!(action, FlushAction::Pages(range(5, 2)));
        assert_eq!(table.slot_of(AS).map(|(_, synced)| synced), Some(1));
        // Serviced once; a repeat asks for nothing.
        assert_eq!(
            t.flush_action(&plan.request(), &mut table),
            FlushAction::Nothing
        );
    }

    #[test]
    fn flush_action_for_a_large_range_flushes_the_whole_pcid() {
        let (t, mut table, stats) = loaded();
        let pcid = table.current().unwrap().1;
        let plan = t.begin_change(cpu(1), range(0, 1000), &stats);
        assert_eq!(
            t.flush_action(&plan.request(), &mut table),
            FlushAction::Pcid(pcid)
        );
        assert_eq!(table.slot_of(AS).map(|(_, synced)| synced), Some(1));
    }

    #[test]
    fn flush_action_behind_by_more_than_one_change_flushes_all_and_catches_up() {
        let (t, mut table, stats) = loaded();
        let pcid = table.current().unwrap().1;
        let first = t.begin_change(cpu(1), range(0, 1), &stats);
        let second = t.begin_change(cpu(2), range(9, 1), &stats);
        // The second request arrives first: the first change is not flushed here yet.
        assert_eq!(
            t.flush_action(&second.request(), &mut table),
            FlushAction::Pcid(pcid)
        );
        assert_eq!(table.slot_of(AS).map(|(_, synced)| synced), Some(2));
        assert_eq!(
            t.flush_action(&first.request(), &mut table),
            FlushAction::Nothing
        );
    }

    #[test]
    fn flush_action_does_nothing_where_the_address_space_is_not_loaded() {
        let (t, mut table, stats) = loaded();
        let other = TlbTracker::new(AsId::new(8));
        other.switch_in(cpu(0), &mut table);
        t.switch_out(cpu(0));
        let plan = t.begin_change(cpu(1), range(0, 1), &stats);
        assert_eq!(
            t.flush_action(&plan.request(), &mut table),
            FlushAction::Nothing
        );
        // The slot stays behind, so the next switch-in flushes.
        assert_eq!(table.slot_of(AS).map(|(_, synced)| synced), Some(0));
        assert_eq!(t.switch_in(cpu(0), &mut table).kind, SwitchKind::Stale);
        // A request for another address space is not this tracker's either.
        let foreign = other.begin_change(cpu(1), range(0, 1), &stats).request();
        assert_eq!(t.flush_action(&foreign, &mut table), FlushAction::Nothing);
        table.switch_to_kernel();
        let plan = t.begin_change(cpu(1), range(0, 1), &stats);
        assert_eq!(
            t.flush_action(&plan.request(), &mut table),
            FlushAction::Nothing
        );
    }

    #[test]
    fn free_after_without_targets_is_releasable_at_once() {
        let (t, _table, stats) = loaded();
        let mailboxes = [ShootdownMailbox::new(), ShootdownMailbox::new()];
        let plan = t.begin_change(cpu(0), range(0, 1), &stats);
        let token = FreeAfter::new(&plan, None);
        assert_eq!((token.asid(), token.tlb_gen()), (AS, 1));
        assert!(token.is_releasable(&mailboxes));
    }

    #[test]
    fn free_after_waits_for_every_target_to_acknowledge() {
        let t = TlbTracker::new(AS);
        let stats = TlbStats::new();
        let mut tables = [PcidTable::<2>::new(), PcidTable::new(), PcidTable::new()];
        for (i, table) in tables.iter_mut().enumerate() {
            t.switch_in(cpu(i as u32), table);
        }
        let mailboxes = [
            ShootdownMailbox::new(),
            ShootdownMailbox::new(),
            ShootdownMailbox::new(),
        ];
        let plan = t.begin_change(cpu(0), range(0, 1), &stats);
        let ticket = ShootdownMailbox::post(&mailboxes, cpu(0), plan.ipi_targets, &plan.request());
        let token = FreeAfter::new(&plan, Some(ticket.unwrap()));
        assert!(!token.is_releasable(&mailboxes));
        ShootdownMailbox::service(&mailboxes, cpu(1), |_| {});
        assert!(!token.is_releasable(&mailboxes));
        ShootdownMailbox::service(&mailboxes, cpu(2), |_| {});
        assert!(token.is_releasable(&mailboxes));
    }

    #[test]
    #[should_panic(expected = "needs the ticket")]
    fn free_after_refuses_a_plan_with_targets_but_no_ticket() {
        let t = TlbTracker::new(AS);
        let mut table = PcidTable::<2>::new();
        t.switch_in(cpu(1), &mut table);
        let plan = t.begin_change(cpu(0), range(0, 1), &TlbStats::new());
        let _ = FreeAfter::new(&plan, None);
    }
}
