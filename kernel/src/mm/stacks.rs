//! Kernel stacks with guard pages, each in its own slot of a dedicated virtual region.
//!
//! ```text
//!   STACKS_BASE + i * SLOT_BYTES
//!   +-------------+---------------------------+---------------------------+
//!   | guard page  | stack pages (mapped RW NX) | unmapped gap (to the next |
//!   | (unmapped)  | bottom()          top() -> |  slot's guard page)       |
//!   +-------------+---------------------------+---------------------------+
//! ```
//!
//! A thread that overflows its stack touches the guard page. The CPU then cannot push the page
//! fault's frame onto the same stack and raises a double fault, which runs on its own IST stack and
//! reaches the fault report with CR2 in the guard page; [`guard_hit`] (installed as the panic path's
//! guard hook) turns that address back into "stack overflow" and the name of the stack's thread.
//!
//! Slots come from a lock-free bitmap ([`kcore::frame_alloc::BitAlloc`]); the names of live stacks
//! sit in a table indexed by slot, read without a lock by the fault path.
//!
//! Threads' stacks are recycled ([`obtain`], [`release`]): a dead thread's stack is given back
//! on the scheduler's switch path, with interrupts off, where unmapping it (a kernel TLB shootdown
//! of every CPU, waited for) must not happen. [`release`] keeps it mapped in this CPU's cache of
//! [`CACHE_STACKS`] stacks, or, past that, on a global list of stacks to unmap; [`obtain`] (thread
//! context) takes a cached stack of the right size first, and unmaps the listed stacks in one
//! batch with one shootdown once [`UNMAP_BATCH`] have gathered. [`trim`] empties caches and list
//! (before memory levels are compared, or when slots or frames run out).
//!
//! Key type: [`KernelStack`]. Neighbours: the scheduler allocates every thread's stack here; `mm`
//! maps and unmaps the pages.

use core::{
    fmt::Write,
    ptr::null_mut,
    sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering},
};

use alloc::{boxed::Box, vec::Vec};
use crossbeam_utils::CachePadded;
use kcore::frame_alloc::BitAlloc;
use smp::MAX_CPUS;
use talc::lock_api::Mutex as SpinMutex;

use crate::cpu::{irqlock::RawIrqSpin, percpu};

/// How many stacks can exist at once.
pub const MAX_STACKS: usize = 4096;

/// The virtual span of one slot: guard page, stack, gap.
pub const SLOT_BYTES: u64 = 1 << 20;

const PAGE: u64 = 4096;

/// The largest stack a slot holds: one page goes to the guard, at least one to the gap above.
pub const MAX_STACK_BYTES: u64 = SLOT_BYTES - 2 * PAGE;

static SLOT_WORDS: [AtomicU64; BitAlloc::storage_words(MAX_STACKS)] =
    [const { AtomicU64::new(0) }; BitAlloc::storage_words(MAX_STACKS)];
static SLOTS: spin::Once<BitAlloc<'static>> = spin::Once::new();
static SLOT_CURSOR: AtomicUsize = AtomicUsize::new(0);

/// What the fault path needs to know about a live stack.
struct StackInfo {
    name: &'static str,
    bottom: u64,
    top: u64,
}

/// The live stacks' descriptions, by slot (null when the slot is free).
static INFO: [AtomicPtr<StackInfo>; MAX_STACKS] = [const { AtomicPtr::new(null_mut()) }; MAX_STACKS];

/// Make every slot available (`mm::init`).
pub(super) fn init() {
    SLOTS.call_once(|| {
        let slots = BitAlloc::new(&SLOT_WORDS, MAX_STACKS);
        slots.insert_range(0..MAX_STACKS);
        slots
    });
}

fn slot_base(slot: usize) -> u64 {
    super::STACKS_BASE + slot as u64 * SLOT_BYTES
}

/// A kernel stack: mapped pages with an unmapped guard page below them. Dropping it unmaps the pages
/// and returns their frames and the slot.
pub struct KernelStack {
    slot: usize,
    bytes: u64,
}

impl KernelStack {
    /// A stack of at least `bytes` (rounded up to whole pages, at most [`MAX_STACK_BYTES`]) for the
    /// thread `name`, zero-filled. `None` if the size is out of range or memory or slots ran out.
    pub fn new(bytes: usize, name: &'static str) -> Option<KernelStack> {
        let bytes = (bytes as u64).next_multiple_of(PAGE);
        if bytes == 0 || bytes > MAX_STACK_BYTES {
            return None;
        }
        let slots = SLOTS.get().expect("kernel stack requested before mm::init");
        let slot = slots.alloc_in(0..MAX_STACKS, &SLOT_CURSOR)?;
        let bottom = slot_base(slot) + PAGE;
        // Allocated before any page is mapped: the heap may grow, which takes the page-table lock.
        let info = Box::new(StackInfo { name, bottom, top: bottom + bytes });
        if !super::map_stack_pages(bottom, bytes) {
            // Nothing of the slot is mapped any more (map_stack_pages undoes a partial mapping).
            slots.free(slot).expect("a slot taken just now is not free");
            return None;
        }
        INFO[slot].store(Box::into_raw(info), Ordering::Release);
        Some(KernelStack { slot, bytes })
    }

    /// The lowest mapped address (the guard page ends here).
    pub fn bottom(&self) -> u64 {
        slot_base(self.slot) + PAGE
    }

    /// One past the highest mapped address: the initial stack pointer (16-byte aligned).
    pub fn top(&self) -> u64 {
        self.bottom() + self.bytes
    }

    /// Give up ownership without freeing anything; returns `(bottom, top)` for [`KernelStack::from_raw`].
    pub fn into_raw(self) -> (u64, u64) {
        let bounds = (self.bottom(), self.top());
        core::mem::forget(self);
        bounds
    }

    /// Take back ownership of a stack given up with [`KernelStack::into_raw`]. Panics if no live stack
    /// has exactly these bounds.
    ///
    /// # Safety
    /// `(bottom, top)` came from `into_raw` and this is the only `from_raw` for it, so the stack has
    /// one owner again (two would unmap it twice, or under a thread still using it).
    pub unsafe fn from_raw(bottom: u64, top: u64) -> KernelStack {
        let slot = (bottom.wrapping_sub(super::STACKS_BASE + PAGE) / SLOT_BYTES) as usize;
        let info = INFO.get(slot).map_or(null_mut(), |i| i.load(Ordering::Acquire));
        // SAFETY: a non-null entry points at the StackInfo of a live stack, which its owner (the caller,
        // per the contract) is not dropping at the same time.
        let live = !info.is_null() && unsafe { ((*info).bottom, (*info).top) } == (bottom, top);
        assert!(live, "KernelStack::from_raw({bottom:#x}, {top:#x}): no live stack has these bounds");
        KernelStack { slot, bytes: top - bottom }
    }
}

/// Take the description of a stack in `slot` out of the table and free it.
fn forget_info(slot: usize) {
    let info = INFO[slot].swap(null_mut(), Ordering::AcqRel);
    if !info.is_null() {
        // SAFETY: `info` came from Box::into_raw in `new` and was just taken out of the table, so
        // this is its only owner.
        drop(unsafe { Box::from_raw(info) });
    }
}

fn free_slot(slot: usize) {
    let slots = SLOTS.get().expect("a KernelStack exists, so mm::init ran");
    slots.free(slot).expect("a live stack's slot is taken");
}

impl Drop for KernelStack {
    fn drop(&mut self) {
        forget_info(self.slot);
        super::unmap_stack_pages(self.bottom(), self.bytes);
        free_slot(self.slot);
    }
}

/// Stacks each CPU keeps mapped for its next threads.
pub const CACHE_STACKS: usize = 8;

/// How many released stacks gather on the unmap list before [`obtain`] unmaps them together.
pub const UNMAP_BATCH: usize = 32;

/// One CPU's mapped, unused stacks.
struct Cache([Option<KernelStack>; CACHE_STACKS]);

/// Each CPU's cache, behind an interrupts-off lock that only [`trim`] takes from another CPU.
static CACHES: [CachePadded<SpinMutex<RawIrqSpin, Cache>>; MAX_CPUS] =
    [const { CachePadded::new(SpinMutex::new(Cache([const { None }; CACHE_STACKS]))) }; MAX_CPUS];

/// Released stacks that did not fit their CPU's cache, still mapped, waiting to be unmapped
/// (at most every slot; a fixed array, so that releasing never allocates).
struct UnmapList {
    stacks: [Option<KernelStack>; MAX_STACKS],
    len: usize,
}

static TO_UNMAP: SpinMutex<RawIrqSpin, UnmapList> =
    SpinMutex::new(UnmapList { stacks: [const { None }; MAX_STACKS], len: 0 });
static TO_UNMAP_LEN: AtomicUsize = AtomicUsize::new(0);

fn this_cache() -> &'static SpinMutex<RawIrqSpin, Cache> {
    &CACHES[percpu::cpu_index() as usize % MAX_CPUS]
}

/// Give back a thread's stack once its thread has switched away for the last time, from any
/// context (the scheduler's switch path, interrupts off): kept mapped in this CPU's cache, or
/// listed for unmapping later. Never unmaps, waits for other CPUs or allocates.
pub fn release(stack: KernelStack) {
    let stack = {
        let mut cache = this_cache().lock();
        match cache.0.iter_mut().find(|s| s.is_none()) {
            Some(free) => {
                *free = Some(stack);
                return;
            }
            None => stack,
        }
    };
    let mut list = TO_UNMAP.lock();
    let n = list.len;
    list.stacks[n] = Some(stack);
    list.len = n + 1;
    TO_UNMAP_LEN.store(n + 1, Ordering::Relaxed);
}

/// A stack of at least `bytes` for a new thread (thread context: it may unmap a batch of released
/// stacks first, which shoots down every CPU): a stack of the same size from this CPU's cache (its
/// memory holds whatever its last thread left there), or a fresh zero-filled one. `None` if the
/// size is out of range or memory or slots ran out even after [`trim`].
pub fn obtain(bytes: usize, name: &'static str) -> Option<KernelStack> {
    if TO_UNMAP_LEN.load(Ordering::Relaxed) >= UNMAP_BATCH {
        unmap_listed();
    }
    let want = (bytes as u64).next_multiple_of(PAGE);
    let cached = this_cache().lock().0.iter_mut().find(|s| s.as_ref().is_some_and(|s| s.bytes == want)).and_then(Option::take);
    if let Some(stack) = cached {
        return Some(stack);
    }
    KernelStack::new(bytes, name).or_else(|| {
        trim();
        KernelStack::new(bytes, name)
    })
}

/// Unmap every listed stack: one batch, one shootdown.
fn unmap_listed() {
    let stacks: Vec<KernelStack> = {
        let mut list = TO_UNMAP.lock();
        let n = list.len;
        list.len = 0;
        TO_UNMAP_LEN.store(0, Ordering::Relaxed);
        list.stacks[..n].iter_mut().filter_map(Option::take).collect()
    };
    unmap_batch(stacks);
}

/// Unmap `stacks` together (one kernel shootdown for all), then free their frames and slots.
fn unmap_batch(stacks: Vec<KernelStack>) {
    if stacks.is_empty() {
        return;
    }
    let ranges: Vec<(u64, u64)> = stacks
        .into_iter()
        .map(|s| {
            let (slot, bottom, bytes) = (s.slot, s.bottom(), s.bytes);
            core::mem::forget(s);
            forget_info(slot);
            (bottom, bytes)
        })
        .collect();
    super::unmap_stack_batch(&ranges);
    for &(bottom, _) in &ranges {
        free_slot(((bottom - super::STACKS_BASE - PAGE) / SLOT_BYTES) as usize);
    }
}

/// Unmap every stack that [`release`] kept: every CPU's cache and the unmap list (thread context).
/// Afterwards the stacks of threads that are gone hold no frames.
pub fn trim() {
    let mut stacks = Vec::new();
    for cache in &CACHES {
        // Take the stacks out under the lock, unmap them after it (interrupts back on).
        let taken: Vec<KernelStack> = cache.lock().0.iter_mut().filter_map(Option::take).collect();
        stacks.extend(taken);
    }
    unmap_batch(stacks);
    unmap_listed();
}

/// The name of the kernel stack the caller runs on (found from its frame pointer), or `None` when
/// it runs on a stack that is no kernel stack, with no guard page below it (the boot stack).
#[cfg(feature = "ktest")]
pub fn running_on() -> Option<&'static str> {
    let addr = arch::cpu::frame_pointer();
    let offset = addr.checked_sub(super::STACKS_BASE)?;
    let slot = (offset / SLOT_BYTES) as usize;
    let info = INFO.get(slot)?.load(Ordering::Acquire);
    if info.is_null() {
        return None;
    }
    // SAFETY: a non-null entry points at the StackInfo of a live stack, and this one is the stack
    // the caller runs on, which is not dropped while it runs.
    let info = unsafe { &*info };
    (info.bottom..info.top).contains(&addr).then_some(info.name)
}

/// If `addr` lies in a kernel stack's guard page, say whose and return true (the fault report's
/// guard hook, installed by `mm::init`).
pub fn guard_hit(addr: u64, w: &mut dyn Write) -> bool {
    let Some(offset) = addr.checked_sub(super::STACKS_BASE) else { return false };
    let slot = (offset / SLOT_BYTES) as usize;
    if slot >= MAX_STACKS || offset % SLOT_BYTES >= PAGE {
        return false;
    }
    let info = INFO[slot].load(Ordering::Acquire);
    if info.is_null() {
        let _ = writeln!(w, "access to the guard page of a free kernel stack slot ({addr:#x})");
        return true;
    }
    // SAFETY: a non-null entry points at the StackInfo of a live stack. The only stack whose guard a
    // running thread can hit is its own, and a running thread's stack is not being dropped.
    let info = unsafe { &*info };
    let _ = writeln!(
        w,
        "stack overflow: guard page of thread `{}`'s stack (bytes at {:#x}..{:#x}, {} KiB) hit at {addr:#x}",
        info.name,
        info.bottom,
        info.top,
        (info.top - info.bottom) >> 10
    );
    true
}
