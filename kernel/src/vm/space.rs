//! Address spaces: page tables whose lower half is private and whose upper half is the kernel's,
//! the switch between them with per-CPU PCIDs, and TLB shootdowns sent only where needed.
//!
//! Key types: [`AddressSpace`] (the handle: `new`, `mm`, `map`, `map_range`, `unmap`, `protect`,
//! `remap`, `translate`; dropping the last `Arc` destroys it) and [`AsError`]. Functions: [`init`],
//! [`switch`] (the scheduler's `switch_mm`), [`spawn_in`] (a thread that keeps its space alive);
//! the counters are `tlb::counters`. Neighbours: `smp::pcid` and `smp::tracker` decide (PCID slots,
//! generations, whom to interrupt), `tlb` executes (instructions, mailboxes, IPIs, counters), `mm`
//! provides frames, the kernel's PML4 and the direct map, `kcore::paging` edits the tables,
//! `task` forwards the scheduler's `switch_mm` here (installed by [`init`]).
//!
//! # Structure
//!
//! An [`AddressSpace`] owns a `Space`: its PML4 (kernel half copied from the kernel's, whose PML4
//! entries never change after boot), an `AsId` that is never reused, a `TlbTracker` and a `dead`
//! mark. User-half pages are 4 KiB, supervisor (every thread runs in ring 0), no-execute, never
//! global; the space owns every frame mapped in it. Changes are serialised per space by a sleeping
//! lock and run with preemption off from the shootdown's first step to its last, so that one CPU
//! posts, waits and frees.
//!
//! Each CPU keeps, with interrupts off: its PCID table (`PcidTable` with six slots, or a
//! one-slot table when CR3 carries no PCID: every CR3 write then empties the TLB, exactly as
//! recycling the only slot would), with PCIDs the space owning each slot (to clear `may_cache`
//! when a slot is recycled; without them the CPU holds entries of its loaded space alone and
//! never enters `may_cache`, so a switch touches only `active`), and the space it has loaded.
//! Threads without a space keep whatever is loaded (lazy TLB), so a loaded space may have no
//! running thread left; the `Mm` word the scheduler remembers for the CPU is the space's `AsId`,
//! never reused for another space, and the CPU keeps a plain pointer to the `Space`: it is alive
//! while any CPU has it loaded (see Destruction), so a switch takes and drops no reference. A halted CPU keeps its space loaded too (no
//! CR3 write to halt, none to run the same space again), but marks itself lazy around the halt
//! ([`idle_enter`], [`idle_exit`]): a change that frees no page-table page spares it the IPI,
//! and it catches up by the space's generation when it wakes, before any thread runs. A change
//! that frees tables (the CPU may walk them speculatively), and the destruction, still interrupt
//! it; it then leaves the space for the kernel-only context, so that the next such change skips
//! it, and the scheduler switches it in again from none.
//!
//! # A change (unmap, protect, remap)
//!
//! Edit the entries (an unmap walks its range once, `paging::unmap_range`: it frees only the
//! tables the range covers whole, and keeps a table it leaves empty but covers in part for the
//! next mapping there rather than scan its 512 entries; the destruction frees those);
//! `begin_change` bumps the generation and names the CPUs with the space's CR3 loaded (running or
//! lazy). Post the request to the others and send IPIs (none if the space is loaded on this CPU
//! alone or nowhere; CPUs that only keep a stale slot catch up at their next switch-in); then,
//! while they work, flush here if loaded here (INVLPG per page, or the whole PCID above
//! `smp::FULL_FLUSH_THRESHOLD_PAGES`), otherwise, with INVPCID, bring a slot this CPU keeps for
//! the space up to date without loading it. Wait for every acknowledgement while servicing this
//! CPU's own mailbox, then free the unmapped frames and emptied page-table pages. A wait that
//! times out returns the CPUs that never answered ([`AsError::Unanswered`]); the memory then
//! waits, with its `FreeAfter` token, until they do.
//!
//! # Destruction
//!
//! Dropping the last handle marks the space dead, lists the frames and tables of its user half in
//! one walk (the tree stays as it is until they are freed), and shoots down every CPU
//! that has it loaded with a request that makes each leave it for the kernel's PML4. Once all have
//! acknowledged, no CPU can walk the tables, use the translations or read the `Space`: frames,
//! tables, the PML4 and the `Space` go back at once (if some CPU never answers, all of them wait
//! parked until it does). Slots naming
//! the dead space are given back at each CPU's next switch. A thread in a space owns a handle
//! ([`AddressSpace::mm`]) and drops it itself when its body has returned (the scheduler's
//! `exit_mm`), so no thread outlives its space and none is switched to it afterwards.

use alloc::{sync::Arc, vec::Vec};
use smallvec::SmallVec;
use core::{
    cell::{RefCell, UnsafeCell},
    fmt,
    num::NonZeroUsize,
    ptr::NonNull,
    sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
};

use kcore::{
    frame_alloc::FRAME_BYTES,
    paging::{self, ADDR_MASK, PageSize, Table, TableMemory},
};
use smp::{
    AsId, CpuId, CpuSet, DEFAULT_PCID_SLOTS, FlushAction, FreeAfter, MAX_CPUS, PageRange, PcidTable, Pcid,
    Request, ShootdownMailbox, SwitchIn, SwitchKind, TlbStats, TlbTracker,
};
use talc::lock_api::Mutex as SpinMutex;
use arch::interrupts;
use x86_64::structures::paging::PageTableFlags as Flags;

use crate::{cpu::{features, irqlock::RawIrqSpin}, irq::{apic, trap}, mm, task, vm::tlb};

#[cfg(feature = "ktest")]
#[path = "tests.rs"]
mod tests;

const PAGE: u64 = FRAME_BYTES;

/// The lowest address a space maps: page 0 stays unmapped, so null pointers still fault.
pub const USER_START: u64 = PAGE;
/// One past the highest address a space maps (the end of the lower half).
pub const USER_END: u64 = 0x0000_8000_0000_0000;

/// The whole lower half, as the destruction's change names it.
const USER_HALF: PageRange = PageRange { start_vpage: 0, pages: USER_END / PAGE };

/// Kernel-wide totals of the plans, kept by `begin_change` itself; the per-CPU counters in `tlb`
/// must add up to them (the torture test checks).
static PLAN_STATS: TlbStats = TlbStats::new();

/// The next address-space id; 0 is the kernel's (`tlb::KERNEL_ASID`).
static NEXT_ASID: AtomicU64 = AtomicU64::new(1);

/// Why an address-space operation refused or did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsError {
    /// Not page-aligned, outside `[USER_START, USER_END)`, or a frame that is not page-aligned.
    BadAddress(u64),
    /// A page of the range is already mapped (nothing was changed).
    AlreadyMapped(u64),
    /// A page of the range is not mapped (nothing was changed).
    NotMapped(u64),
    /// No frame for a page or a page table (nothing stays changed).
    NoMemory,
    /// The change is made, but these CPUs did not acknowledge its shootdown in time; the memory
    /// it released is kept until they do.
    Unanswered(CpuSet),
}

impl fmt::Display for AsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsError::BadAddress(a) => write!(f, "bad address {a:#x}"),
            AsError::AlreadyMapped(va) => write!(f, "{va:#x} is already mapped"),
            AsError::NotMapped(va) => write!(f, "{va:#x} is not mapped"),
            AsError::NoMemory => f.write_str("out of memory"),
            AsError::Unanswered(cpus) => write!(f, "CPUs {cpus} did not acknowledge the TLB shootdown"),
        }
    }
}

/// Decide whether CR3 carries PCIDs (`use_pcid` and the CPU has them; `nopcid` on the command line
/// says no), route the shootdown IPI, and take over kernel-half shootdowns from `mm`. Boot CPU,
/// once, before any address space exists. Each CPU sets its CR4.PCIDE when it first touches an
/// address space.
pub fn init(use_pcid: bool) {
    let f = features::features();
    let mode = tlb::set_mode(tlb::Mode { pcid: use_pcid && f.pcid, invpcid: f.invpcid });
    trap::register(trap::VECTOR_SHOOTDOWN, on_shootdown_ipi);
    crate::cpus::xcall::set_other_ipi_work(service_here);
    mm::set_shootdown(Some(kernel_shootdown));
    task::platform::set_mm_switch(switch);
    task::platform::set_mm_idle(idle_enter, idle_exit);
    let why = match (mode.pcid, use_pcid, f.pcid) {
        (true, ..) => "",
        (false, false, _) => " (nopcid)",
        (false, true, _) => " (the CPU has none)",
    };
    log::info!(
        "aspace: PCIDs {}{why}, {} slots per CPU; INVPCID {}; shootdown IPIs only to CPUs with the space loaded",
        if mode.pcid { "on" } else { "off" },
        if mode.pcid { DEFAULT_PCID_SLOTS } else { 1 },
        if mode.invpcid { "used" } else { "absent" },
    );
    INIT_DONE.store(true, Ordering::Release);
}

static INIT_DONE: AtomicBool = AtomicBool::new(false);

/// What the CPUs share about one address space; the handle is [`AddressSpace`].
struct Space {
    asid: AsId,
    /// Physical address of the PML4; freed by the destruction once no CPU has it loaded.
    pml4: u64,
    tracker: TlbTracker,
    /// Set when the last handle is gone: CPUs leave it when they service the destruction's
    /// request, give back its PCID slots at their next switch, and never switch to it again.
    dead: AtomicBool,
}

/// An address space. Share it as `Arc<AddressSpace>`; the last `Arc` dropped destroys it, which
/// returns every frame mapped in it, its page tables and its PCID slots. Its operations, and the
/// drop of its last handle, run in thread context: they take a sleeping lock and wait for other
/// CPUs.
pub struct AddressSpace {
    space: Arc<Space>,
    /// Serialises changes of the tables (a sleeping lock: a change may wait for other CPUs).
    edits: sched::Mutex<()>,
    /// CPU time the threads running in this space have used (nanoseconds), charged by the
    /// scheduler at each switch away, tick and thread end: a process's CPU-time clock.
    cpu_ns: AtomicU64,
}

impl fmt::Debug for AddressSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AddressSpace({}, pml4 {:#x})", self.space.asid, self.space.pml4)
    }
}

/// The frames and page-table pages one change took out of the tree, to free once no CPU can reach
/// them.
#[derive(Default)]
struct Released {
    /// Kept inline up to [`INLINE_FRAMES`]: most unmaps take a few pages, and a heap list would
    /// cost an allocation and a free on every one.
    frames: SmallVec<[u64; INLINE_FRAMES]>,
    tables: Vec<u64>,
    /// The destroyed space itself, kept with its memory: a CPU reads the `Space` it has loaded
    /// until it has left it, so it goes only once every CPU has answered the destruction.
    space: Option<Arc<Space>>,
}

/// How many frames a [`Released`] holds without allocating.
const INLINE_FRAMES: usize = 8;

impl Released {
    /// Give back the frames: a data frame still shared with another space (copy-on-write) only
    /// loses this space's share; the last share frees it. Tables are never shared.
    fn free(self) {
        // No frame shared anywhere (no fork since the last shares went): each is this space's
        // alone, and no share of it can appear meanwhile, since only a fork of a space that maps a
        // frame shares it and none maps these any more. Then no lock and no lookup per frame.
        let any_shared = SHARED_FRAMES.load(Ordering::Acquire) != 0;
        for pa in self.frames {
            if !(any_shared && drop_share(pa)) {
                mm::frames::free(pa);
            }
        }
        for pa in self.tables {
            mm::frames::free(pa);
        }
        // A destroyed space's `Space` goes with its memory.
        drop(self.space);
    }
}

/// The software bit (available to the OS, SDM vol. 3A, table 4-19) marking a user page that is
/// shared copy-on-write: read-only in the tables although its mapping allows writes.
const COW: Flags = Flags::BIT_9;

/// Frames mapped by more than one space since a fork, with how many spaces beyond the first map
/// them. A frame absent here has one owner. Changed only with the edit lock of a space that maps
/// the frame (a fork adds, an unmap or a copy-on-write break removes), so a break that reads "no
/// other sharer" under the lock of its own space cannot be contradicted until it is done.
static SHARES: SpinMutex<RawIrqSpin, alloc::collections::BTreeMap<u64, u32>> = SpinMutex::new(alloc::collections::BTreeMap::new());

/// How many frames [`SHARES`] holds, written under its lock: a reader that sees 0 knows no frame
/// is shared without taking the lock.
static SHARED_FRAMES: AtomicUsize = AtomicUsize::new(0);

/// One more space maps `pa`.
fn add_share(pa: u64) {
    let mut shares = SHARES.lock();
    *shares.entry(pa).or_insert(0) += 1;
    SHARED_FRAMES.store(shares.len(), Ordering::Release);
}

/// One space stops mapping `pa`: `true` if others still do (the frame stays), `false` if that was
/// the last mapping (the caller frees it).
fn drop_share(pa: u64) -> bool {
    let mut shares = SHARES.lock();
    match shares.get_mut(&pa) {
        Some(n) if *n > 1 => {
            *n -= 1;
            true
        }
        Some(_) => {
            shares.remove(&pa);
            SHARED_FRAMES.store(shares.len(), Ordering::Release);
            true
        }
        None => false,
    }
}

/// Whether another space maps `pa` too.
fn is_shared(pa: u64) -> bool {
    SHARES.lock().contains_key(&pa)
}

/// How many frames are shared copy-on-write now (for tests: it must go back to its level).
#[cfg_attr(not(feature = "ktest"), expect(dead_code, reason = "only the in-kernel tests read it so far"))]
pub fn shared_frames() -> usize {
    SHARES.lock().len()
}

/// What a write fault on a user page found and did ([`AddressSpace::break_cow`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CowBreak {
    /// The page was copy-on-write and now maps a private, writable copy.
    Copied,
    /// The page was copy-on-write, but no other space maps its frame any more: it is writable again
    /// without a copy.
    Reclaimed,
    /// Already writable or unmapped by another thread meanwhile: retry the access.
    Retry,
    /// Not a copy-on-write page: a real protection violation.
    NotCow,
}

/// Memory released by changes whose shootdown timed out, with the token saying when it is safe.
static PARKED: SpinMutex<RawIrqSpin, Vec<(FreeAfter, Released)>> = SpinMutex::new(Vec::new());

/// Whether [`PARKED`] may hold something, written under its lock: every change reads this instead
/// of taking the lock. A reader that misses a park in progress reaps it at a later change.
static ANY_PARKED: AtomicBool = AtomicBool::new(false);

/// Free parked memory whose shootdown has been acknowledged since: one load (inline) when
/// nothing is parked, the common case.
#[inline]
fn reap_parked() {
    if ANY_PARKED.load(Ordering::Acquire) {
        reap_parked_now();
    }
}

/// [`reap_parked`] when something may be parked.
#[cold]
#[inline(never)]
fn reap_parked_now() {
    let ready: Vec<Released> = {
        let mut parked = PARKED.lock();
        if parked.is_empty() {
            return;
        }
        let (ready, waiting) = core::mem::take(&mut *parked).into_iter().partition(|(token, _)| token.is_releasable(tlb::mailboxes()));
        *parked = waiting;
        ANY_PARKED.store(!parked.is_empty(), Ordering::Release);
        ready.into_iter().map(|(_, released)| released).collect()
    };
    ready.into_iter().for_each(Released::free);
}

/// The page tables of one space, reached through the direct map. Table frames the edits empty are
/// collected (freed after the shootdown), not freed.
struct UserTables {
    emptied: RefCell<Vec<u64>>,
}

impl UserTables {
    fn new() -> UserTables {
        UserTables { emptied: RefCell::new(Vec::new()) }
    }
}

impl TableMemory for UserTables {
    fn table(&self, pa: u64) -> Option<&Table> {
        // SAFETY: the walks of this module start at a space's PML4 (from `mm::new_pml4`) and, for
        // user-half addresses only, follow entries that only this module writes, each naming a
        // table frame allocated by `alloc_table` below: RAM, page-aligned, covered by the direct
        // map, alive while its space is. Every bit pattern is a valid AtomicU64, and entries are
        // only accessed atomically.
        Some(unsafe { &*(mm::phys_to_virt(pa) as *const Table) })
    }

    fn alloc_table(&self) -> Option<u64> {
        let pa = mm::frames::alloc()?;
        // SAFETY: a fresh frame nobody else owns, reached through the direct map.
        unsafe { core::ptr::write_bytes(mm::phys_to_virt(pa) as *mut u8, 0, PAGE as usize) };
        Some(pa)
    }

    fn free_table(&self, pa: u64) {
        self.emptied.borrow_mut().push(pa);
    }
}

/// The index of `va` in its table at `level` (4 = PML4 ... 1 = PT).
const fn index(va: u64, level: usize) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// The trace line of a CR3 load without PCIDs, out of line so the switch carries only the level
/// test.
#[cold]
#[inline(never)]
fn trace_untagged_load(me: CpuId, asid: AsId) {
    log::trace!("pcid: {me} loads {asid} without a PCID (the CR3 write flushes)");
}

/// The leaf flags of a user-half page that only the kernel reaches.
fn leaf_flags(writable: bool) -> Flags {
    if writable { Flags::WRITABLE | Flags::NO_EXECUTE } else { Flags::NO_EXECUTE }
}

/// Rights of a page user code reaches (ring 3). Read access is implied: x86 has no write-only or
/// execute-only page (without protection keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserProt {
    pub writable: bool,
    pub exec: bool,
}

/// The leaf flags of a page ring 3 reaches.
fn user_leaf_flags(prot: UserProt) -> Flags {
    let mut f = Flags::USER_ACCESSIBLE;
    if prot.writable {
        f |= Flags::WRITABLE;
    }
    if !prot.exec {
        f |= Flags::NO_EXECUTE;
    }
    f
}

/// `[va, va + pages * PAGE)` as a page range, if it lies within the user half and `va` is
/// page-aligned.
fn user_range(va: u64, pages: u64) -> Result<PageRange, AsError> {
    let end = pages.checked_mul(PAGE).and_then(|bytes| va.checked_add(bytes)).ok_or(AsError::BadAddress(va))?;
    if !va.is_multiple_of(PAGE) || va < USER_START || end > USER_END {
        return Err(AsError::BadAddress(va));
    }
    Ok(PageRange { start_vpage: va / PAGE, pages })
}

fn pages_of(range: PageRange) -> impl Iterator<Item = u64> {
    (range.start_vpage..range.start_vpage + range.pages).map(|vpage| vpage * PAGE)
}

impl AddressSpace {
    /// A new, empty address space (the kernel half shared), or `Err(NoMemory)` without a frame
    /// for its PML4.
    ///
    /// # Panics
    /// Before [`init`].
    pub fn new() -> Result<Arc<AddressSpace>, AsError> {
        assert!(INIT_DONE.load(Ordering::Acquire), "AddressSpace::new before space::init");
        let pml4 = mm::new_pml4().ok_or(AsError::NoMemory)?;
        let asid = AsId::new(NEXT_ASID.fetch_add(1, Ordering::Relaxed));
        Ok(Arc::new(AddressSpace {
            space: Arc::new(Space { asid, pml4, tracker: TlbTracker::new(asid), dead: AtomicBool::new(false) }),
            edits: sched::Mutex::new(()),
            cpu_ns: AtomicU64::new(0),
        }))
    }

    /// CPU time its threads have used so far (nanoseconds), without the running slices not yet
    /// charged (see `sched::Scheduler::current_cpu_time`).
    pub fn cpu_ns(&self) -> u64 {
        self.cpu_ns.load(Ordering::Relaxed)
    }

    /// A handle to this space for a thread to run in (`Builder::in_mm`): the thread owns it and
    /// drops it when its body has returned, as Linux's `exit_mm`, so the space lives as long as
    /// any thread in it. The scheduler knows it by its `AsId`, which no other space ever gets, so
    /// a CPU need not hold the space to keep the word unique while the scheduler remembers it.
    pub fn mm(self: &Arc<Self>) -> sched::Mm {
        static OPS: sched::MmOps = sched::MmOps { clone: clone_handle, release: release_handle, charge: charge_handle };
        let word = usize::try_from(self.space.asid.get()).ok().and_then(NonZeroUsize::new).expect("space ids start at 1 and fit a word");
        let owner = NonNull::new(Arc::into_raw(self.clone()).cast_mut()).expect("an Arc is never null").cast();
        // SAFETY: 1. one strong reference to the `AddressSpace` is handed over, counted by OPS
        // (atomic, from any thread; the last release destroys the space in thread context, which
        // the scheduler guarantees). 2. The word is the space's `AsId`, handed out once from a
        // counter and never reused, so it names this space alone for the kernel's lifetime. 3. That
        // counter, one per space created, never comes near `usize::MAX`.
        unsafe { sched::Mm::from_raw(word, owner, &OPS) }
    }

    /// Read the aligned `u64` at `va` through this CPU's own translation of it, so the TLB caches
    /// it (the demonstration's readers make CPUs hold translations a remap must shoot down).
    /// `Err(BadAddress)` unless `va` is an aligned user address and this space is the one loaded
    /// on this CPU, `Err(NotMapped)` unless its page is mapped.
    pub fn read_u64(&self, va: u64) -> Result<u64, AsError> {
        if !va.is_multiple_of(8) || !(USER_START..USER_END).contains(&va) {
            return Err(AsError::BadAddress(va));
        }
        let s = task::sched();
        // No edit runs while the edits lock is held, so the page stays mapped for the read.
        let _edits = self.edits.lock(s);
        let _on_this_cpu = s.preempt_disable();
        if mm::current_root() != self.space.pml4 {
            return Err(AsError::BadAddress(va));
        }
        if self.translate(va).is_none() {
            return Err(AsError::NotMapped(va));
        }
        // SAFETY: `va` is aligned, in the user half, and mapped in this space, which is the one
        // loaded on this CPU (preemption is off, so it stays loaded); the edits lock keeps every
        // unmap and remap out until the read is done, and the frame holds plain data.
        Ok(unsafe { core::ptr::read_volatile(va as *const u64) })
    }

    /// The physical address of the space's PML4 (what CR3 holds while it is loaded).
    pub fn root(&self) -> u64 {
        self.space.pml4
    }

    /// Where `va` leads: the physical address of the byte and whether the page is writable.
    pub fn translate(&self, va: u64) -> Option<(u64, bool)> {
        if !(USER_START..USER_END).contains(&va) {
            return None;
        }
        paging::translate(&UserTables::new(), self.space.pml4, va).map(|t| (t.pa, t.writable()))
    }

    /// Map the page at `va` to `frame`, which the space then owns (it is freed when unmapped or
    /// when the space is destroyed). On error the frame stays the caller's. Adding a translation
    /// needs no shootdown: the TLB caches no non-present entry.
    pub fn map(&self, va: u64, frame: u64, writable: bool) -> Result<(), AsError> {
        user_range(va, 1)?;
        if !frame.is_multiple_of(PAGE) || frame & !ADDR_MASK != 0 {
            return Err(AsError::BadAddress(frame));
        }
        let _edits = self.edits.lock(task::sched());
        let mem = UserTables::new();
        paging::map(&mem, self.space.pml4, va, frame, PageSize::Size4K, leaf_flags(writable)).map_err(|e| match e {
            paging::MapError::AlreadyMapped(_) => AsError::AlreadyMapped(va),
            paging::MapError::NoMemory => AsError::NoMemory,
            paging::MapError::BadAddress | paging::MapError::Unreadable => AsError::BadAddress(va),
        })
    }

    /// Map `pages` fresh zeroed frames at `va`: all of them, or (on `NoMemory` or `AlreadyMapped`)
    /// none.
    #[cfg_attr(not(any(feature = "ktest", feature = "kbench")), expect(dead_code, reason = "only the in-kernel tests and benchmarks use it so far"))]
    pub fn map_range(&self, va: u64, pages: u64, writable: bool) -> Result<(), AsError> {
        self.map_range_flags(va, pages, leaf_flags(writable))
    }

    /// Map `pages` fresh zeroed frames at `va` for user code, with rights `prot`: all of them or
    /// none, as [`AddressSpace::map_range`].
    pub fn map_user_range(&self, va: u64, pages: u64, prot: UserProt) -> Result<(), AsError> {
        self.map_range_flags(va, pages, user_leaf_flags(prot))
    }

    /// Map one fresh frame at `va` for user code, with rights `prot`, holding `bytes` (the rest of
    /// the page zero) from the moment it is mapped: no thread of the space, on any CPU, can see
    /// the page before it is filled. Nothing changes on error (`AlreadyMapped`, `NoMemory`).
    pub fn map_user_filled(&self, va: u64, bytes: &[u8], prot: UserProt) -> Result<(), AsError> {
        user_range(va, 1)?;
        if bytes.len() as u64 > PAGE {
            return Err(AsError::BadAddress(va));
        }
        let _edits = self.edits.lock(task::sched());
        let mem = UserTables::new();
        if paging::translate(&mem, self.space.pml4, va).is_some() {
            return Err(AsError::AlreadyMapped(va));
        }
        let frame = mm::frames::alloc().ok_or(AsError::NoMemory)?;
        let page = mm::phys_to_virt(frame) as *mut u8;
        // SAFETY: a fresh frame nobody else owns, reached through the direct map; `bytes` fits in
        // it (checked) and, being a borrow of ordinary memory, does not overlap it.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), page, bytes.len());
            core::ptr::write_bytes(page.add(bytes.len()), 0, PAGE as usize - bytes.len());
        }
        // The release store of the entry (`paging::map`) orders the filling before it: a CPU that
        // walks to the new entry reads the filled frame.
        paging::map(&mem, self.space.pml4, va, frame, PageSize::Size4K, user_leaf_flags(prot)).map_err(|e| {
            mm::frames::free(frame);
            match e {
                paging::MapError::AlreadyMapped(_) => AsError::AlreadyMapped(va),
                paging::MapError::NoMemory => AsError::NoMemory,
                paging::MapError::BadAddress | paging::MapError::Unreadable => AsError::BadAddress(va),
            }
        })
    }

    fn map_range_flags(&self, va: u64, pages: u64, flags: Flags) -> Result<(), AsError> {
        let range = user_range(va, pages)?;
        let s = task::sched();
        let _edits = self.edits.lock(s);
        let mem = UserTables::new();
        if let Some(mapped) = pages_of(range).find(|&p| paging::translate(&mem, self.space.pml4, p).is_some()) {
            return Err(AsError::AlreadyMapped(mapped));
        }
        let mut done = 0;
        for page in pages_of(range) {
            let Some(frame) = mm::frames::alloc() else { break };
            // SAFETY: a fresh frame nobody else owns, reached through the direct map.
            unsafe { core::ptr::write_bytes(mm::phys_to_virt(frame) as *mut u8, 0, PAGE as usize) };
            if paging::map(&mem, self.space.pml4, page, frame, PageSize::Size4K, flags).is_err() {
                mm::frames::free(frame);
                break;
            }
            done += 1;
        }
        if done == pages {
            return Ok(());
        }
        // Undo: another CPU running this space may have cached the new pages already, so this
        // is a real change with its shootdown.
        let _on_this_cpu = s.preempt_disable();
        settle_previous()?;
        self.unmap_locked(PageRange { start_vpage: range.start_vpage, pages: done })?.free();
        Err(AsError::NoMemory)
    }

    /// Unmap `pages` pages at `va` and free their frames once no CPU can use them. Every page must
    /// be mapped (otherwise nothing changes).
    #[cfg_attr(not(any(feature = "ktest", feature = "kbench")), expect(dead_code, reason = "the tests and the benchmarks use it; services use unmap_present"))]
    pub fn unmap(&self, va: u64, pages: u64) -> Result<(), AsError> {
        let range = user_range(va, pages)?;
        let s = task::sched();
        let _edits = self.edits.lock(s);
        let _on_this_cpu = s.preempt_disable();
        settle_previous()?;
        self.unmap_locked(range)?.free();
        Ok(())
    }

    /// Unmap whichever pages of `[va, va + pages * PAGE)` are mapped (user mappings are filled on
    /// demand, so some may never have been), with one shootdown; returns how many were.
    pub fn unmap_present(&self, va: u64, pages: u64) -> Result<u64, AsError> {
        let range = user_range(va, pages)?;
        let s = task::sched();
        let _edits = self.edits.lock(s);
        let _on_this_cpu = s.preempt_disable();
        settle_previous()?;
        let mem = UserTables::new();
        let mut frames = SmallVec::new();
        // One walk of the range; tables it leaves empty but covers only in part stay for the next
        // mapping there (no scan of their entries), and go with the space.
        paging::unmap_range(&mem, self.space.pml4, va..va + pages * PAGE, |_, t| frames.push(t.pa));
        let n = frames.len() as u64;
        // A range over nothing but tables that earlier unmaps left empty frees those tables:
        // they too go through the change (a CPU may still cache the entries that led to them).
        let tables = mem.emptied.into_inner();
        if n > 0 || !tables.is_empty() {
            self.space.commit(range, Released { frames, tables, space: None })?.free();
        }
        Ok(n)
    }

    /// `unmap` with the edit lock held, preemption off and this CPU's previous request settled;
    /// returns the memory to free.
    fn unmap_locked(&self, range: PageRange) -> Result<Released, AsError> {
        let mem = UserTables::new();
        if let Some(hole) = pages_of(range).find(|&p| paging::translate(&mem, self.space.pml4, p).is_none()) {
            return Err(AsError::NotMapped(hole));
        }
        let mut frames = SmallVec::with_capacity(range.pages as usize);
        let va = range.start_vpage * PAGE;
        paging::unmap_range(&mem, self.space.pml4, va..va + range.pages * PAGE, |_, t| frames.push(t.pa));
        self.space.commit(range, Released { frames, tables: mem.emptied.into_inner(), space: None })
    }

    /// Make `pages` pages at `va` writable or read-only. Every page must be mapped (otherwise
    /// nothing changes). Widening is flushed as well as narrowing: a CPU may otherwise fault on a
    /// stale read-only entry (SDM 4.10.4.3), and the kernel treats every page fault as fatal.
    #[cfg_attr(not(feature = "ktest"), expect(dead_code, reason = "only the in-kernel tests use it so far"))]
    pub fn protect(&self, va: u64, pages: u64, writable: bool) -> Result<(), AsError> {
        let w = Flags::WRITABLE.bits();
        self.protect_bits(va, pages, if writable { w } else { 0 }, w, false)
    }

    /// Give `pages` user pages at `va` the rights `prot`; as [`AddressSpace::protect`].
    pub fn protect_user(&self, va: u64, pages: u64, prot: UserProt) -> Result<(), AsError> {
        let mask = (Flags::WRITABLE | Flags::NO_EXECUTE).bits();
        let bits = (user_leaf_flags(prot) & (Flags::WRITABLE | Flags::NO_EXECUTE)).bits();
        self.protect_bits(va, pages, bits, mask, false)
    }

    /// `mprotect` on demand-filled memory: give whichever pages of the range are mapped the rights
    /// `prot` (the others get them when they are first touched), with one shootdown.
    pub fn protect_user_present(&self, va: u64, pages: u64, prot: UserProt) -> Result<(), AsError> {
        let mask = (Flags::WRITABLE | Flags::NO_EXECUTE).bits();
        let bits = (user_leaf_flags(prot) & (Flags::WRITABLE | Flags::NO_EXECUTE)).bits();
        self.protect_bits(va, pages, bits, mask, true)
    }

    /// Set the bits `mask` of every leaf in the range to `bits` (skipping holes if `skip_holes`,
    /// else refusing them), with one shootdown if any changed.
    fn protect_bits(&self, va: u64, pages: u64, bits: u64, mask: u64, skip_holes: bool) -> Result<(), AsError> {
        let range = user_range(va, pages)?;
        let s = task::sched();
        let _edits = self.edits.lock(s);
        let _on_this_cpu = s.preempt_disable();
        settle_previous()?;
        let mem = UserTables::new();
        let mut entries = Vec::with_capacity(pages as usize);
        for page in pages_of(range) {
            match self.space.leaf(&mem, page) {
                Some(e) => entries.push(e),
                None if skip_holes => {}
                None => return Err(AsError::NotMapped(page)),
            }
        }
        let mut changed = false;
        for entry in entries {
            let old = entry.load(Ordering::Acquire);
            let mut new = (old & !mask) | bits;
            if old & COW.bits() != 0 {
                // Shared copy-on-write: stays read-only; a write fault copies it if the new rights
                // allow writes.
                new &= !Flags::WRITABLE.bits();
            }
            if new != old {
                entry.store(new, Ordering::Release);
                changed = true;
            }
        }
        if changed {
            self.space.commit(range, Released::default())?;
        }
        Ok(())
    }

    /// Point the page at `va` to `new_frame` (which the space then owns), keeping its rights, and
    /// return the frame it mapped before: no CPU can reach that one through this space any more,
    /// so it is the caller's again. A copy-on-write page is refused (`BadAddress`): its frame may
    /// still be mapped by another space. On `Unanswered` the change is made but the old frame stays
    /// with the space until the silent CPUs answer, and is then freed; on any other error nothing
    /// changed and `new_frame` is still the caller's.
    pub fn remap(&self, va: u64, new_frame: u64) -> Result<u64, AsError> {
        let range = user_range(va, 1)?;
        if !new_frame.is_multiple_of(PAGE) || new_frame & !ADDR_MASK != 0 {
            return Err(AsError::BadAddress(new_frame));
        }
        let s = task::sched();
        let _edits = self.edits.lock(s);
        let _on_this_cpu = s.preempt_disable();
        settle_previous()?;
        let mem = UserTables::new();
        let entry = self.space.leaf(&mem, va).ok_or(AsError::NotMapped(va))?;
        let old = entry.load(Ordering::Acquire);
        if old & COW.bits() != 0 {
            // Its frame may be another space's too: it is not the caller's to take.
            return Err(AsError::BadAddress(va));
        }
        entry.store((old & !ADDR_MASK) | new_frame, Ordering::Release);
        let back = self.space.commit(range, Released { frames: smallvec::smallvec![old & ADDR_MASK], ..Released::default() })?;
        Ok(back.frames[0])
    }
}

impl AddressSpace {
    /// `fork`: a new space that maps every user page of this one to the same frame. Pages inside
    /// `shared` (the `MAP_SHARED` anonymous ranges, with their rights) stay writable where they
    /// were, in both spaces: each is first made present here (a fresh zeroed frame where it was
    /// never touched, so both spaces get the same frame), then mapped in the child with the same
    /// rights and one more share. Every other page becomes copy-on-write in both, and those
    /// writable here become read-only; the change to this space is shot down on every CPU that may
    /// cache its translations before this returns, so no thread of this space writes a
    /// copy-on-write frame afterwards. Holds the edit lock throughout: faults and other edits of
    /// this space wait. On `NoMemory` the new space is dropped (its shares with it) and this space
    /// keeps its read-only copy-on-write pages, which its next writes take back, and the shared
    /// pages it filled, which are ordinary demand-zero pages filled early.
    pub fn fork_cow(&self, shared: &[(core::ops::Range<u64>, UserProt)]) -> Result<Arc<AddressSpace>, AsError> {
        let child = AddressSpace::new()?;
        let s = task::sched();
        let _edits = self.edits.lock(s);
        let _on_this_cpu = s.preempt_disable();
        settle_previous()?;
        let mem = UserTables::new();
        // Fill the untouched pages of the shared ranges: adding translations needs no shootdown.
        for (range, prot) in shared {
            let pages = (range.end - range.start) / PAGE;
            for page in pages_of(user_range(range.start, pages)?) {
                if paging::translate(&mem, self.space.pml4, page).is_some() {
                    continue;
                }
                let frame = mm::frames::alloc().ok_or(AsError::NoMemory)?;
                // SAFETY: a fresh frame nobody else owns, reached through the direct map.
                unsafe { core::ptr::write_bytes(mm::phys_to_virt(frame) as *mut u8, 0, PAGE as usize) };
                if paging::map(&mem, self.space.pml4, page, frame, PageSize::Size4K, user_leaf_flags(*prot)).is_err() {
                    mm::frames::free(frame);
                    return Err(AsError::NoMemory);
                }
            }
        }
        let mut leaves = Vec::new();
        paging::for_each_leaf(&mem, self.space.pml4, 0..paging::KERNEL_HALF_FIRST_SLOT, |va, _| leaves.push(va));
        let mut result = Ok(());
        let mut narrowed = false;
        for va in leaves {
            let Some(entry) = self.space.leaf(&mem, va) else { continue };
            let current = entry.load(Ordering::Acquire);
            let e = if current & COW.bits() == 0 && shared.iter().any(|(r, _)| r.contains(&va)) {
                // Shared: the same frame with the same rights in both, no mark, nothing narrowed.
                current
            } else {
                // Atomic read-modify-writes: the CPU may set the dirty bit in the same entry
                // meanwhile. Read-only pages are marked too: an mprotect that later allows writes
                // in either space must not make a shared frame writable (`protect_bits` keeps
                // marked pages read-only; the write fault copies).
                let before = entry.fetch_and(!Flags::WRITABLE.bits(), Ordering::AcqRel);
                narrowed |= before & Flags::WRITABLE.bits() != 0;
                entry.fetch_or(COW.bits(), Ordering::AcqRel) | COW.bits()
            };
            let pa = e & ADDR_MASK;
            let flags = Flags::from_bits_truncate(e & !ADDR_MASK) & !(Flags::ACCESSED | Flags::DIRTY | Flags::PRESENT);
            if paging::map(&mem, child.space.pml4, va, pa, PageSize::Size4K, flags).is_err() {
                result = Err(AsError::NoMemory);
                break;
            }
            add_share(pa);
        }
        if narrowed {
            self.space.commit(USER_HALF, Released::default())?;
        }
        result.map(|()| child)
    }

    /// `mremap` of shared memory: move the present pages of `[from, from + pages * PAGE)` to the
    /// same offsets at `to` (free there), the frames, rights and shares unchanged, so the other
    /// spaces that map those frames keep seeing this one's writes (a copy would split them). One
    /// shootdown of the old range. On `NoMemory` (a table for the new place) the pages moved so far
    /// stay moved and the rest stay where they were.
    pub fn move_present(&self, from: u64, to: u64, pages: u64) -> Result<(), AsError> {
        let range = user_range(from, pages)?;
        user_range(to, pages)?;
        let s = task::sched();
        let _edits = self.edits.lock(s);
        let _on_this_cpu = s.preempt_disable();
        settle_previous()?;
        let mem = UserTables::new();
        let mut result = Ok(());
        let mut moved = 0;
        for i in 0..pages {
            let (old, new) = (from + i * PAGE, to + i * PAGE);
            let Some(t) = paging::translate(&mem, self.space.pml4, old) else { continue };
            let flags = t.flags & !(Flags::ACCESSED | Flags::DIRTY | Flags::PRESENT);
            // Map the new place first: on failure the page stays where it was, whole.
            if paging::map(&mem, self.space.pml4, new, t.pa, PageSize::Size4K, flags).is_err() {
                result = Err(AsError::NoMemory);
                break;
            }
            paging::unmap(&mem, self.space.pml4, old).expect("found mapped under the lock");
            moved += 1;
        }
        if moved > 0 {
            self.space.commit(range, Released { frames: SmallVec::new(), tables: mem.emptied.into_inner(), space: None })?.free();
        }
        result
    }

    /// A write fault at `va` (page-aligned): if the page is copy-on-write, make it private and
    /// writable in this space, copying the frame unless no other space maps it any more, and flush
    /// the old translation on every CPU that may hold it before the old frame loses this space's
    /// share (so another sharer taking the frame back never writes under a stale entry here).
    pub fn break_cow(&self, va: u64) -> Result<CowBreak, AsError> {
        let range = user_range(va, 1)?;
        let s = task::sched();
        let _edits = self.edits.lock(s);
        let _on_this_cpu = s.preempt_disable();
        settle_previous()?;
        let mem = UserTables::new();
        let Some(entry) = self.space.leaf(&mem, va) else { return Ok(CowBreak::Retry) };
        let e = entry.load(Ordering::Acquire);
        if e & Flags::WRITABLE.bits() != 0 {
            return Ok(CowBreak::Retry);
        }
        if e & COW.bits() == 0 {
            return Ok(CowBreak::NotCow);
        }
        let old = e & ADDR_MASK;
        if !is_shared(old) {
            entry.fetch_or(Flags::WRITABLE.bits(), Ordering::AcqRel);
            entry.fetch_and(!COW.bits(), Ordering::AcqRel);
            // Widening, the frame unchanged: no shootdown (Linux's reuse of a page it owns alone
            // sends none either). The write fault that led here dropped this CPU's entry for the
            // page (SDM vol. 3A, 4.10.4.1: a page fault invalidates the TLB entries of its linear
            // address); another CPU holding the read-only entry reads the same frame through it,
            // and its first write there faults once more and finds the page writable: `Retry`.
            // Under a shootdown to the space's CPUs, each fork would cost every thread that writes
            // afterwards one IPI round per page it had before the fork.
            return Ok(CowBreak::Reclaimed);
        }
        let new = mm::frames::alloc().ok_or(AsError::NoMemory)?;
        // SAFETY: `new` is a fresh frame nobody else owns; `old` is a mapped user frame that no
        // space can write (every sharer maps it read-only copy-on-write, and its last sharer can
        // only take it back after this space dropped its share, below); both are RAM reached
        // through the direct map, and they differ.
        unsafe { core::ptr::copy_nonoverlapping(mm::phys_to_virt(old) as *const u8, mm::phys_to_virt(new) as *mut u8, PAGE as usize) };
        let flags = (e & !ADDR_MASK & !COW.bits()) | Flags::WRITABLE.bits();
        entry.store(new | flags, Ordering::Release);
        self.space.commit(range, Released { frames: smallvec::smallvec![old], ..Released::default() })?.free();
        Ok(CowBreak::Copied)
    }
}

/// Before a change: if this CPU's previous shootdown is still unacknowledged (its wait timed
/// out), wait for it again; a CPU posts one request at a time. Preemption off.
fn settle_previous() -> Result<(), AsError> {
    reap_parked();
    let me = tlb::this_cpu();
    if tlb::acknowledged(me) {
        return Ok(());
    }
    tlb::wait(me, serve_ipi_work).map_err(AsError::Unanswered)?;
    reap_parked();
    Ok(())
}

impl Space {
    /// The leaf entry mapping `va` (a 4 KiB page of the user half), if present.
    fn leaf<'a>(&self, mem: &'a UserTables, va: u64) -> Option<&'a AtomicU64> {
        let mut table = self.pml4;
        for level in (2..=4).rev() {
            let e = mem.table(table)?[index(va, level)].load(Ordering::Acquire);
            if e & Flags::PRESENT.bits() == 0 || e & Flags::HUGE_PAGE.bits() != 0 {
                return None;
            }
            table = e & ADDR_MASK;
        }
        let entry = &mem.table(table)?[index(va, 1)];
        (entry.load(Ordering::Acquire) & Flags::PRESENT.bits() != 0).then_some(entry)
    }

    /// The TLB side of a change whose edits are written: plan, flush here, shoot down the other
    /// CPUs that have the space loaded, wait, and hand `released` back once no CPU can reach it
    /// (or, if some CPU did not answer, keep it parked until they do). The caller holds the edit
    /// lock, keeps preemption off, and settled this CPU's previous request.
    fn commit(&self, range: PageRange, released: Released) -> Result<Released, AsError> {
        let me = tlb::this_cpu();
        // A change that frees page-table pages interrupts lazy CPUs too: they may walk the tables.
        let frees_tables = !released.tables.is_empty();
        // The plan (two CPU sets and the request) stays inside: only what the wait needs leaves,
        // and nothing when no other CPU was asked.
        let token = interrupts::without_interrupts(|| {
            let spare_lazy = |others: &CpuSet| if frees_tables { CpuSet::new() } else { lazy_among(others) };
            let plan = self.tracker.begin_change_sparing(me, range, &PLAN_STATS, spare_lazy);
            let ticket = (!plan.ipi_targets.is_empty()).then(|| tlb::post(me, plan.ipi_targets, &plan.request()));
            // This CPU's own flush and counting come after the IPIs, overlapping the targets'
            // work instead of delaying it (only this CPU, interrupts off, touches its state, and
            // the wait below still comes after both).
            with_this_cpu(|_, cpu| cpu.flush_for_change(me, self, &plan));
            count_plan(me, &plan);
            ticket.map(|ticket| FreeAfter::new(&plan, Some(ticket)))
        });
        // No other CPU had the space loaded: this CPU's flush is all there was.
        let Some(token) = token else { return Ok(released) };
        match tlb::wait(me, serve_ipi_work) {
            Ok(()) => {
                assert!(token.is_releasable(tlb::mailboxes()), "a shootdown acknowledged by all is releasable");
                Ok(released)
            }
            Err(cpus) => {
                log::error!("aspace: {me}: CPUs {cpus} did not acknowledge the shootdown of {} gen {}", self.asid, token.tlb_gen());
                let mut parked = PARKED.lock();
                parked.push((token, released));
                ANY_PARKED.store(true, Ordering::Release);
                Err(AsError::Unanswered(cpus))
            }
        }
    }
}

/// Count `plan` in this CPU's counters (interrupts off).
fn count_plan(me: CpuId, plan: &smp::ChangePlan) {
    use tlb::Counter::*;
    tlb::count_here(me, Changes, 1);
    tlb::count_here(me, ChangesWithoutIpi, u64::from(plan.ipi_targets.is_empty()));
    let avoided = plan.avoided.len();
    tlb::count_here(me, AvoidedLazy, avoided as u64);
    // The plan's targets, its avoided CPUs and this one are disjoint sets of online CPUs: the
    // online CPUs outside all three are counted by a subtraction, not by two set differences.
    debug_assert!(!plan.ipi_targets.contains(me) && !plan.avoided.contains(me) && plan.ipi_targets.intersection(&plan.avoided).is_empty());
    let online = crate::cpu::map::nr_online() as usize;
    tlb::count_here(me, AvoidedNeverLoaded, online.saturating_sub(plan.ipi_targets.len() + avoided + 1) as u64);
}

impl Drop for AddressSpace {
    /// Destroy the space: see the module comment. Runs in the thread that dropped the last handle.
    fn drop(&mut self) {
        let space = &self.space;
        let s = task::sched();
        let _edits = self.edits.lock(s);
        let _on_this_cpu = s.preempt_disable();
        // A CPU posts one request at a time; destruction cannot give up, so it waits its turn.
        while let Err(e) = settle_previous() {
            log::error!("aspace: destroying {}: {e}; waiting on", space.asid);
        }
        space.dead.store(true, Ordering::SeqCst);
        DEATHS.fetch_add(1, Ordering::Release);
        // One walk lists the frames and the tables; the tree is left as it is (no entry cleared,
        // which unmapping leaf by leaf did, scanning each table for emptiness at every step): no
        // thread runs in it any more, and a CPU that still has it loaded may only walk it until
        // it has served the change below, before anything listed is freed.
        let mem = UserTables::new();
        let (mut frames, mut tables) = (SmallVec::new(), Vec::new());
        paging::for_each_leaf_and_table(&mem, space.pml4, 0..paging::KERNEL_HALF_FIRST_SLOT, |_, t| frames.push(t.pa), |pa| tables.push(pa));
        tables.push(space.pml4);
        let released = Released { frames, tables, space: Some(space.clone()) };
        // Every CPU with the space loaded leaves it while servicing this change (this one in
        // `flush_for_change`); if some do not answer, the memory stays parked until they have.
        match space.commit(USER_HALF, released) {
            Ok(released) => {
                let still = space.tracker.active();
                assert!(still.is_empty(), "{} destroyed while CPUs {still} switched to it: a thread outlived its address space", space.asid);
                released.free();
            }
            Err(e) => log::error!("aspace: destroying {}: {e}; its memory waits for them", space.asid),
        }
    }
}

/// Add `ns` of CPU time to the space behind a handle given out by [`AddressSpace::mm`].
///
/// # Safety
/// `owner` came from `Arc::into_raw` of an `Arc<AddressSpace>` with a reference still alive.
unsafe fn charge_handle(owner: NonNull<()>, ns: u64) {
    // SAFETY: per the caller, the space is alive while we hold the reference.
    unsafe { owner.cast::<AddressSpace>().as_ref() }.cpu_ns.fetch_add(ns, Ordering::Relaxed);
}

/// Take one more strong reference of an `Arc<AddressSpace>` given out by [`AddressSpace::mm`].
///
/// # Safety
/// `owner` came from `Arc::into_raw` of an `Arc<AddressSpace>` with a reference still alive.
unsafe fn clone_handle(owner: NonNull<()>) {
    // SAFETY: per the caller.
    unsafe { Arc::increment_strong_count(owner.cast::<AddressSpace>().as_ptr().cast_const()) };
}

/// Give back one strong reference of an `Arc<AddressSpace>` given out by [`AddressSpace::mm`]
/// (the last one destroys the space: thread context).
///
/// # Safety
/// As for [`clone_handle`], and the reference given back is the caller's to give.
unsafe fn release_handle(owner: NonNull<()>) {
    // SAFETY: per the caller.
    drop(unsafe { Arc::from_raw(owner.cast::<AddressSpace>().as_ptr().cast_const()) });
}

/// Spawn a thread in `space`; the thread holds a handle to it until its function has returned,
/// so the space outlives it.
pub fn spawn_in<F, T>(
    space: &Arc<AddressSpace>,
    builder: sched::Builder,
    f: F,
) -> Result<sched::JoinHandle<T, task::KernelPlatform>, sched::SpawnError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    task::sched().spawn(builder.in_mm(space.mm()), f)
}

// ---------------------------------------------------------------------------------------------
// Per-CPU state.

/// A CPU's PCID slots: six tagged ones, or one when CR3 carries no PCID.
enum Slots {
    Tagged(PcidTable),
    Untagged(PcidTable<1>),
}

macro_rules! on_table {
    ($slots:expr, $t:ident => $body:expr) => {
        match $slots {
            Slots::Tagged($t) => $body,
            Slots::Untagged($t) => $body,
        }
    };
}

impl Slots {
    /// `#[inline]`: a change's TLB step on this CPU (every `munmap`), in its caller's frame.
    #[inline]
    fn flush_action(&mut self, tracker: &TlbTracker, request: &Request) -> FlushAction {
        on_table!(self, t => tracker.flush_action(request, t))
    }

    fn switch_to_kernel(&mut self) {
        on_table!(self, t => t.switch_to_kernel())
    }

    fn slot_of(&self, asid: AsId) -> Option<(Pcid, u64)> {
        on_table!(self, t => t.slot_of(asid))
    }

    fn note_flushed(&mut self, asid: AsId, tlb_gen: u64) -> bool {
        on_table!(self, t => t.note_flushed(asid, tlb_gen))
    }

    fn forget(&mut self, asid: AsId) -> Option<Pcid> {
        on_table!(self, t => t.forget(asid))
    }
}

/// What one CPU knows about address spaces; touched only by that CPU, with interrupts off.
struct CpuSpaces {
    slots: Slots,
    /// The space holding each slot (slot `i` owns PCID `i + 1`); with PCIDs only: without them
    /// a CPU holds entries of its loaded space alone, which `loaded` keeps, and the tracker needs
    /// no word when the one slot is recycled.
    owners: [Option<Arc<Space>>; DEFAULT_PCID_SLOTS],
    /// The space whose PML4 CR3 holds, `None` for the kernel's. Not counted: a space is alive
    /// while any CPU has it loaded, since this CPU is in its `active` set from before the CR3 write
    /// that loads it until after the one that leaves it, and its destruction interrupts every CPU
    /// there and frees the `Space` (with its memory) only once each has left it and answered.
    loaded: Option<NonNull<Space>>,
    /// [`DEATHS`] as of the last `forget_dead` that looked at the owners.
    deaths_seen: u64,
}

/// How many address spaces have been destroyed: a CPU looks for dead slot owners only when this
/// moved since it last looked.
static DEATHS: AtomicU64 = AtomicU64::new(0);

impl CpuSpaces {
    /// The state of a CPU touching address spaces for the first time: sets its CR4.PCIDE when CR3
    /// is to carry PCIDs.
    fn new() -> CpuSpaces {
        let slots = if tlb::pcid_enabled() {
            let cr3_low = arch::cr::cr3() & 0xfff;
            assert_eq!(cr3_low, 0, "CR4.PCIDE can only be set with CR3 bits 0-11 clear");
            // SAFETY: PCIDs are enabled, so the CPU has them (all CPUs match the boot CPU's
            // features), and CR3's low bits are clear (checked).
            unsafe { tlb::enable_pcide_here() };
            Slots::Tagged(PcidTable::new())
        } else {
            Slots::Untagged(PcidTable::new())
        };
        CpuSpaces { slots, owners: [const { None }; DEFAULT_PCID_SLOTS], loaded: None, deaths_seen: 0 }
    }

    /// Give back the slots of destroyed spaces. One load of [`DEATHS`] when no space died since
    /// the last look, instead of one per slot owner, whose lines other CPUs write.
    fn forget_dead(&mut self) {
        let deaths = DEATHS.load(Ordering::Acquire);
        if deaths == self.deaths_seen {
            return;
        }
        // A death counted after this load is seen at a later switch; its slot is only held longer.
        self.deaths_seen = deaths;
        for owner in self.owners.iter_mut() {
            if let Some(space) = owner
                && space.dead.load(Ordering::Acquire)
            {
                self.slots.forget(space.asid);
                *owner = None;
                tlb::count(tlb::Counter::PcidForgets, 1);
            }
        }
    }

    /// The space loaded here, if any.
    fn loaded(&self) -> Option<&Space> {
        // SAFETY: `loaded` names a space whose PML4 this CPU has in CR3, alive until this CPU has
        // left it (see the field); the borrow ends before this CPU changes `loaded`.
        self.loaded.map(|space| unsafe { space.as_ref() })
    }

    /// Load `next` (see `switch`).
    #[inline(always)]
    fn switch_to(&mut self, me: CpuId, next: &Arc<Space>) {
        // The caller's thread holds a handle to `next`, so it cannot have been destroyed.
        debug_assert!(!next.dead.load(Ordering::Relaxed), "a thread switched to {}, which was destroyed: it outlived its address space", next.asid);
        let decision = match &mut self.slots {
            Slots::Untagged(table) => {
                // The one slot names no space that needs forgetting or owning: the CR3 write
                // empties the TLB, and a dead space's slot is recycled at the next switch (ids
                // are never reused, so none switches to it again).
                let decision = next.tracker.switch_in_untagged(me, table);
                // SAFETY: the PML4 shares the kernel half (mm::new_pml4); it is freed only after
                // every CPU with it loaded has left it, and a thread of `next` is about to run.
                // PCIDs are off on this CPU (its table is the untagged one).
                unsafe { tlb::load_cr3_untagged_here(me, next.pml4) };
                // Without PCIDs (every TCG boot) the only `pcid:` trace line, which `make
                // first-run` looks for under loglevel=trace.
                if log::log_enabled!(log::Level::Trace) {
                    trace_untagged_load(me, next.asid);
                }
                self.unload_prev(me, next);
                decision
            }
            Slots::Tagged(_) => self.load_tagged(me, next),
        };
        // The counter of this switch's kind: the CPU's counters follow its table's `PcidStats`
        // one switch at a time (the table counts every switch here, and nothing else).
        let counter = match decision.kind {
            SwitchKind::Hit => tlb::Counter::PcidHits,
            SwitchKind::Stale => tlb::Counter::PcidStale,
            SwitchKind::Miss => tlb::Counter::PcidMisses,
            SwitchKind::Recycled(_) => tlb::Counter::PcidRecycles,
        };
        tlb::count_one_here(me, counter);
    }

    /// After the CR3 write that loaded `next`: the space loaded until then is left.
    #[inline(always)]
    fn unload_prev(&mut self, me: CpuId, next: &Arc<Space>) {
        if let Some(prev) = self.loaded() {
            prev.tracker.switch_out(me);
        }
        self.loaded = Some(NonNull::from(&**next));
    }

    /// With PCIDs: the slot for `next`, its CR3 write, the previous space left, then the slot's
    /// new owner noted (see [`CpuSpaces::note_owner`]).
    #[inline(never)]
    fn load_tagged(&mut self, me: CpuId, next: &Arc<Space>) -> SwitchIn {
        self.forget_dead();
        let Slots::Tagged(table) = &mut self.slots else { unreachable!("called for tagged slots") };
        let decision = next.tracker.switch_in(me, table);
        // SAFETY: the PML4 shares the kernel half (mm::new_pml4); it is freed only after every
        // CPU with it loaded has left it, and a thread of `next` is about to run. Entries the PCID
        // keeps (no flush) are synced to the space's generation: the tracker decided so.
        unsafe { tlb::load_cr3_here(me, next.pml4, decision.pcid.get(), decision.flush) };
        self.unload_prev(me, next);
        self.note_owner(me, next, decision);
        decision
    }

    /// With PCIDs: record `next` as the owner of the slot `decision` gave it, and tell a space
    /// whose slot was recycled that this CPU holds nothing of it any more (after the flushing CR3
    /// write).
    fn note_owner(&mut self, me: CpuId, next: &Arc<Space>, decision: SwitchIn) {
        let slot = usize::from(decision.pcid.get()) - 1;
        match decision.kind {
            SwitchKind::Recycled(evicted) => {
                log::trace!("pcid: {me} recycles PCID {} from {evicted} for {}", decision.pcid.get(), next.asid);
                let owner = self.owners[slot].replace(next.clone()).expect("a recycled slot has an owner");
                debug_assert_eq!(owner.asid, evicted);
                owner.tracker.slot_recycled(me);
            }
            SwitchKind::Miss => {
                log::trace!("pcid: {me} gives free PCID {} to {}", decision.pcid.get(), next.asid);
                self.owners[slot] = Some(next.clone());
            }
            SwitchKind::Hit | SwitchKind::Stale => {
                debug_assert!(self.owners[slot].as_ref().is_some_and(|o| o.asid == next.asid), "slot {slot} of {me} is {}'s", next.asid);
            }
        }
    }

    /// Leave the space loaded here for the kernel's PML4: it was destroyed (`idle` false), or a
    /// change interrupted this CPU in a lazy halt (`idle`).
    fn leave(&mut self, me: CpuId, idle: bool) {
        let space = self.loaded.take().expect("a CPU leaves only a space it has loaded");
        self.slots.switch_to_kernel();
        // SAFETY: the kernel's own PML4 maps everything the kernel uses; PCID 0 is the kernel-only
        // context's and is flushed by this write.
        unsafe { tlb::load_cr3(mm::kernel_pml4_phys(), 0, true) };
        // SAFETY: still alive: this CPU is in its `active` set until this call returns.
        unsafe { space.as_ref() }.tracker.switch_out(me);
        tlb::count(if idle { tlb::Counter::IdleLeaves } else { tlb::Counter::Leaves }, 1);
    }

    /// This CPU woke from a lazy halt: if a change made it leave its space
    /// ([`CpuSpaces::service`]), return `true` (the scheduler then switches to the next thread's
    /// space, with no `prev`), else flush the space's PCID if a change spared this CPU meanwhile
    /// (its slot's generation is behind the space's).
    fn catch_up(&mut self) -> bool {
        let Some(space) = self.loaded else { return true };
        // SAFETY: loaded here, so alive (see the field); nothing below changes `loaded`.
        let space = unsafe { space.as_ref() };
        let new_gen = space.tracker.tlb_gen();
        // The common wake-up: no change spared this CPU during the halt, its slot is synced (what
        // `flush_action` would find too, after building the request and matching the loaded slot).
        if self.slots.slot_of(space.asid).is_some_and(|(_, synced)| synced >= new_gen) {
            return false;
        }
        let request = Request { asid: space.asid, new_gen, range: USER_HALF, full_flush: true };
        let pml4 = space.pml4;
        let action = self.slots.flush_action(&space.tracker, &request);
        if action != FlushAction::Nothing {
            tlb::count(tlb::Counter::IdleCatchUps, 1);
        }
        Self::perform(action, pml4);
        false
    }

    /// Perform `action` on the space loaded here.
    fn perform(action: FlushAction, pml4: u64) {
        match action {
            FlushAction::Nothing => {}
            FlushAction::Pages(range) => tlb::flush_pages(range),
            FlushAction::Pcid(pcid) => tlb::flush_current(pml4, pcid.get()),
        }
    }

    /// This CPU's step of a change it makes to `space`.
    fn flush_for_change(&mut self, me: CpuId, space: &Space, plan: &smp::ChangePlan) {
        if plan.local_flush {
            debug_assert!(self.loaded().is_some_and(|l| l.asid == space.asid), "the tracker says {} is loaded on {me}", space.asid);
            if space.dead.load(Ordering::SeqCst) {
                self.leave(me, false);
            } else {
                Self::perform(self.slots.flush_action(&space.tracker, &plan.request()), space.pml4);
            }
        } else if tlb::pcid_enabled()
            && tlb::invpcid_available()
            && !plan.full_flush
            && let Some((pcid, synced)) = self.slots.slot_of(space.asid)
            && synced + 1 == plan.new_gen
        {
            // A slot kept here for the space, behind by this change alone: catch it up now
            // without loading it, so the next switch to the space is a hit.
            tlb::flush_pcid_pages(pcid.get(), plan.range);
            self.slots.note_flushed(space.asid, plan.new_gen);
        }
    }

    /// Honour one request of another CPU.
    fn service(&mut self, me: CpuId, request: &Request) {
        let Some(space) = self.loaded else { return };
        // SAFETY: loaded here, so alive (see the field); used before `leave` changes `loaded`.
        let space = unsafe { space.as_ref() };
        if space.asid != request.asid {
            // Not loaded here: a slot kept for it is behind and flushes at the next switch-in.
            return;
        }
        let (dead, lazy) = (space.dead.load(Ordering::SeqCst), LAZY[me.index()].load(Ordering::Relaxed));
        if !dead && !lazy {
            Self::perform(self.slots.flush_action(&space.tracker, request), space.pml4);
        } else {
            // Destroyed: leave it for good. Or interrupted in a lazy halt (a change that frees
            // tables): leave the space rather than flush it, so that the next such change need not
            // interrupt this CPU again. Its slot stays behind by this change and flushes when the
            // space is loaded again.
            self.leave(me, !dead);
        }
    }
}

struct CpuCell {
    /// Set while the state is borrowed: catches a nested borrow instead of aliasing it.
    busy: AtomicBool,
    state: UnsafeCell<Option<CpuSpaces>>,
}

// SAFETY: each cell is touched only by its own CPU with interrupts off (`with_this_cpu` checks
// both), and `busy` turns a nested borrow into a panic, so there is never more than one reference.
unsafe impl Sync for CpuCell {}

static CPUS: [CpuCell; MAX_CPUS] = [const { CpuCell { busy: AtomicBool::new(false), state: UnsafeCell::new(None) } }; MAX_CPUS];

/// Run `f` on this CPU's state. Interrupts must be off.
fn with_this_cpu<R>(f: impl FnOnce(CpuId, &mut CpuSpaces) -> R) -> R {
    assert!(!interrupts::are_enabled(), "per-CPU address-space state touched with interrupts on");
    let me = tlb::this_cpu();
    let cell = &CPUS[me.index()];
    // Only this CPU, with interrupts off, touches its cell: a load and a store suffice (no locked
    // exchange) to catch a nested borrow.
    assert!(!cell.busy.load(Ordering::Relaxed), "{me}: per-CPU address-space state borrowed twice");
    cell.busy.store(true, Ordering::Relaxed);
    // SAFETY: see `impl Sync for CpuCell`: this CPU, interrupts off, and `busy` was clear.
    let state = unsafe { &mut *cell.state.get() };
    let result = f(me, state.get_or_insert_with(CpuSpaces::new));
    cell.busy.store(false, Ordering::Relaxed);
    result
}

/// Load address space `next` on this CPU: the scheduler's `switch_mm` (interrupts off). `prev`
/// is what the scheduler remembers as loaded here, which this CPU's own record matches.
pub fn switch(prev: Option<NonZeroUsize>, next: &sched::Mm) {
    // SAFETY: every `Mm` comes from `AddressSpace::mm`, whose owner is an `Arc<AddressSpace>`
    // that `next` keeps alive for as long as this borrow.
    let handle = unsafe { next.owner().cast::<AddressSpace>().as_ref() };
    with_this_cpu(|me, cpu| {
        // The scheduler's word is this CPU's space, or one it left (destroyed, or during a halt).
        debug_assert!(cpu.loaded().is_none_or(|l| prev.is_some_and(|p| p.get() as u64 == l.asid.get())));
        cpu.switch_to(me, &handle.space);
    });
}

/// Per CPU: halted (or about to) with a space still loaded, which changes may spare the IPI.
static LAZY: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// The CPUs among `cpus` that are lazy now (read after the change's generation bump).
fn lazy_among(cpus: &CpuSet) -> CpuSet {
    let mut lazy = *cpus;
    lazy.retain(|cpu| LAZY[cpu.index()].load(Ordering::SeqCst));
    lazy
}

/// This CPU is about to halt (interrupts off, right before the halt): keep the loaded space, and
/// let changes that free no table spare this CPU until [`idle_exit`].
fn idle_enter() {
    LAZY[tlb::this_cpu().index()].store(true, Ordering::SeqCst);
}

/// This CPU's halt ended (interrupts off, before anything else runs here): stop being lazy, then
/// read the loaded space's generation and flush its PCID if a change spared this CPU; or, if a
/// change that freed tables made it leave the space, forget it and return `true` (the scheduler's
/// `mm_after_idle`: its next thread with a space is switched in from none). Clearing
/// the flag (SeqCst) before that read pairs with the changer's bump before its read of the flag
/// (`TlbTracker::begin_change_sparing`): a change either sees this CPU not lazy and interrupts
/// it, or bumped the generation this read sees.
fn idle_exit() -> bool {
    with_this_cpu(|me, cpu| {
        // A SeqCst store (x86: `xchg`, a full barrier) before the SeqCst load of the generation
        // in `catch_up`; inside the borrow, so the CPU's index is read once.
        LAZY[me.index()].store(false, Ordering::SeqCst);
        cpu.catch_up()
    })
}

/// Service every request posted to this CPU. Interrupts off.
fn service_here() {
    let me = tlb::this_cpu();
    let flush = |request: &Request| {
        if request.asid == tlb::KERNEL_ASID {
            if request.full_flush {
                tlb::flush_everything();
            } else {
                tlb::flush_kernel_pages(request.range);
            }
            tlb::count(tlb::Counter::KernelRequestsServed, 1);
        } else {
            with_this_cpu(|me, cpu| cpu.service(me, request));
            tlb::count(tlb::Counter::RequestsServed, 1);
        }
    };
    ShootdownMailbox::service_noting(tlb::mailboxes(), me, flush, tlb::trace_ack);
}

/// One turn of a shootdown wait: serve every kind of IPI work pending here (this CPU's shootdown
/// mailbox and its cross-call mailbox), so that a CPU waiting for us with interrupts off, for
/// either kind, is answered while we wait for it.
///
/// With interrupts on (a change's wait, preemption off) the turn has nothing to do: the IPIs reach
/// this CPU themselves and their handlers serve both mailboxes, so the turn is only the wait's
/// timeout check, and a wait that spins while the other CPU is slow to answer counts far fewer
/// instructions per turn.
fn serve_ipi_work() {
    if !interrupts::are_enabled() {
        crate::cpus::xcall::serve_ipi_work();
    }
}

fn on_shootdown_ipi(_frame: &mut arch::trap::TrapFrame) {
    crate::cpu::percpu::count(crate::cpu::percpu::Counter::IpisReceived);
    apic::eoi();
    service_here();
}

/// `mm`'s shootdown hook: make every other online CPU drop its (global) translations of the
/// kernel-half range `[start, end)`, which this CPU has flushed already, before the frames are
/// reused. Waits with interrupts off, serving all of this CPU's IPI work.
///
/// # Panics
/// If some CPU does not answer within `tlb::SHOOTDOWN_TIMEOUT_NS`: the caller frees the memory
/// right after, which would then still be reachable.
fn kernel_shootdown(start: u64, end: u64) {
    interrupts::without_interrupts(|| {
        let me = tlb::this_cpu();
        let mut targets = crate::cpu::map::online();
        targets.remove(me);
        if targets.is_empty() {
            return;
        }
        if let Err(cpus) = tlb::wait(me, serve_ipi_work) {
            panic!("kernel TLB shootdown: {me}'s previous request is still unanswered by {cpus}");
        }
        let first = start / PAGE;
        let pages = end.div_ceil(PAGE) - first;
        let range = PageRange { start_vpage: first, pages };
        let request = Request { asid: tlb::KERNEL_ASID, new_gen: 0, range, full_flush: pages > smp::FULL_FLUSH_THRESHOLD_PAGES };
        tlb::post(me, targets, &request);
        tlb::count(tlb::Counter::KernelShootdowns, 1);
        if let Err(cpus) = tlb::wait(me, serve_ipi_work) {
            panic!("kernel TLB shootdown of {start:#x}..{end:#x}: CPUs {cpus} never acknowledged");
        }
    });
}
