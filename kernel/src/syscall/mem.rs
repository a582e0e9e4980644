//! Memory: brk, mmap (anonymous), munmap, mprotect, mremap, madvise. The mapping set (`abi::vma`) decides;
//! the page tables follow through the address space's targeted shootdown (frames are freed after the
//! acknowledgements). Anonymous and heap pages are demand-zero: nothing is mapped until touched.
//!
//! `MAP_SHARED | MAP_ANONYMOUS` is a [`VmaKind::Shared`] mapping: demand-zero like private memory
//! until a fork, which fills its untouched pages and maps the same frames in the child (see
//! `AddressSpace::fork_cow`). Linux backs it with a shmem object instead, so its untouched pages
//! cost nothing at fork; here a fork pays for every page of every shared mapping. `MAP_SHARED` of a
//! file is refused as every file mapping is: `ENODEV` for the console descriptors, `EBADF` for
//! any other (no file can be mapped yet). Differences a program can see: `MADV_DONTNEED` and a
//! round trip through `PROT_NONE` give the calling process fresh zeroed pages, private to it
//! (Linux drops only its mapping and finds the shared bytes again).
//!
//! Trade-off: x86 pages cannot be present and inaccessible, so `PROT_NONE` unmaps the present pages
//! of the range; if the program later gives the range rights back it finds zeros, not its old bytes
//! (Linux keeps them). Guard pages, the common use, never notice.

use abi::{
    PAGE_SIZE,
    linux::{errno, general as g},
    vma::{PROT_MASK, VmaError, VmaKind},
};

use arch::usercopy;

use super::SysResult;
use crate::{
    process::{self, Process},
    task,
};

const MMAP_TOP: u64 = 0x7fff_ffff_e000 - (8 << 20) - (1 << 20);

fn pages(range: &core::ops::Range<u64>) -> u64 {
    (range.end - range.start) / PAGE_SIZE
}

/// Take `ranges` out of the page tables.
fn unmap_ranges(p: &Process, ranges: &[core::ops::Range<u64>]) -> Result<(), u32> {
    for r in ranges {
        p.space().unmap_present(r.start, pages(r)).map_err(|_| errno::ENOMEM)?;
    }
    Ok(())
}

fn current() -> Result<alloc::sync::Arc<Process>, u32> {
    process::current().ok_or(errno::ESRCH)
}

pub fn brk(addr: u64) -> SysResult {
    let p = current()?;
    let memory = p.mem();
    let mut mem = memory.lock(task::sched());
    if addr < mem.brk_start {
        return Ok(mem.brk);
    }
    let old_end = mem.brk.next_multiple_of(PAGE_SIZE);
    let Some(new_end) = addr.checked_next_multiple_of(PAGE_SIZE) else { return Ok(mem.brk) };
    if new_end > old_end {
        if new_end > MMAP_TOP || !mem.vmas.is_free(old_end, new_end - old_end) {
            return Ok(mem.brk);
        }
        if mem.vmas.map_fixed(old_end, new_end - old_end, g::PROT_READ | g::PROT_WRITE, VmaKind::Heap).is_err() {
            return Ok(mem.brk);
        }
    } else if new_end < old_end {
        let removed = mem.vmas.unmap(new_end, old_end - new_end).unwrap_or_default();
        if unmap_ranges(&p, &removed).is_err() {
            return Ok(mem.brk);
        }
    }
    mem.brk = addr;
    Ok(addr)
}

pub fn mmap(addr: u64, len: u64, prot: u64, flags: u64, fd: u64, off: u64) -> SysResult {
    let p = current()?;
    let (prot, flags) = (u32::try_from(prot).map_err(|_| errno::EINVAL)?, u32::try_from(flags).map_err(|_| errno::EINVAL)?);
    if len == 0 || prot & !PROT_MASK != 0 {
        return Err(errno::EINVAL);
    }
    let sharing = flags & (g::MAP_SHARED | g::MAP_PRIVATE);
    if sharing == 0 || sharing == g::MAP_SHARED | g::MAP_PRIVATE {
        return Err(errno::EINVAL);
    }
    if flags & g::MAP_ANONYMOUS == 0 {
        // No files yet: the console cannot be mapped, and there is no other descriptor.
        return Err(if fd <= 2 { errno::ENODEV } else { errno::EBADF });
    }
    if !off.is_multiple_of(PAGE_SIZE) {
        return Err(errno::EINVAL);
    }
    let len = len.checked_next_multiple_of(PAGE_SIZE).ok_or(errno::ENOMEM)?;
    let kind = if sharing == g::MAP_SHARED { VmaKind::Shared } else { VmaKind::Anon };
    let memory = p.mem();
    let mut mem = memory.lock(task::sched());
    if flags & (g::MAP_FIXED | g::MAP_FIXED_NOREPLACE) != 0 {
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(errno::EINVAL);
        }
        // Outside user memory: ENOMEM above it (Linux's TASK_SIZE check), EPERM below mmap_min_addr.
        if addr.checked_add(len).is_none_or(|end| end > abi::USER_TOP) {
            return Err(errno::ENOMEM);
        }
        if addr < abi::elf::MIN_USER_ADDR {
            return Err(errno::EPERM);
        }
        if flags & g::MAP_FIXED_NOREPLACE != 0 && flags & g::MAP_FIXED == 0 && !mem.vmas.is_free(addr, len) {
            return Err(errno::EEXIST);
        }
        let removed = mem.vmas.map_fixed(addr, len, prot, kind).map_err(VmaError::errno)?;
        unmap_ranges(&p, &removed)?;
        return Ok(addr);
    }
    mem.vmas.map_anywhere(addr, len, prot, kind, MMAP_TOP).map_err(VmaError::errno)
}

pub fn munmap(addr: u64, len: u64) -> SysResult {
    let p = current()?;
    let memory = p.mem();
    let mut mem = memory.lock(task::sched());
    // munmap answers EINVAL for a range outside user memory (Linux), where mmap says ENOMEM.
    // Each removed range leaves the page tables as it leaves the set, with no list built between.
    let mut unmapped = Ok(());
    mem.vmas
        .unmap_with(addr, len, |r| {
            if unmapped.is_ok() {
                unmapped = unmap_ranges(&p, core::slice::from_ref(&r));
            }
        })
        .map_err(|e| if e == VmaError::OutOfRange { errno::EINVAL } else { e.errno() })?;
    unmapped?;
    Ok(0)
}

pub fn mprotect(addr: u64, len: u64, prot: u64) -> SysResult {
    let p = current()?;
    let prot = u32::try_from(prot).map_err(|_| errno::EINVAL)?;
    if prot & !PROT_MASK != 0 {
        return Err(errno::EINVAL);
    }
    if len == 0 && addr.is_multiple_of(PAGE_SIZE) {
        return Ok(0);
    }
    let memory = p.mem();
    let mut mem = memory.lock(task::sched());
    let changed = mem.vmas.protect(addr, len, prot).map_err(VmaError::errno)?;
    for r in &changed {
        if prot == 0 {
            p.space().unmap_present(r.start, pages(r)).map_err(|_| errno::ENOMEM)?;
        } else {
            p.space().protect_user_present(r.start, pages(r), process::user_prot(prot)).map_err(|_| errno::ENOMEM)?;
        }
    }
    Ok(0)
}

/// The advice values Linux knows (MADV_NORMAL .. MADV_COLLAPSE; 5-7 are unassigned). All are
/// hints this kernel may ignore except MADV_DONTNEED, whose zeroing programs rely on.
fn known_advice(advice: u64) -> bool {
    advice <= u64::from(g::MADV_COLLAPSE) && !(5..=7).contains(&advice)
}

pub fn madvise(addr: u64, len: u64, advice: u64) -> SysResult {
    if !addr.is_multiple_of(PAGE_SIZE) || !known_advice(advice) {
        return Err(errno::EINVAL);
    }
    if advice == u64::from(g::MADV_DONTNEED) && len > 0 {
        // Private anonymous memory reads as zeros afterwards: drop the pages, they refill on demand.
        let p = current()?;
        let memory = p.mem();
        let mem = memory.lock(task::sched());
        let Some(end) = addr.checked_add(len).and_then(|e| e.checked_next_multiple_of(PAGE_SIZE)) else {
            return Err(errno::EINVAL);
        };
        let mapped: alloc::vec::Vec<core::ops::Range<u64>> = mem
            .vmas
            .iter()
            .filter(|v| v.start < end && v.end > addr)
            .map(|v| v.start.max(addr)..v.end.min(end))
            .collect();
        unmap_ranges(&p, &mapped)?;
    }
    Ok(0)
}

/// mremap without `MREMAP_FIXED`: shrink in place, grow in place when the next pages are free, or
/// (with `MREMAP_MAYMOVE`) move. A move copies the pages that exist, through a kernel buffer, into
/// pages mapped up front (so the copy never faults while the mapping lock is held), then unmaps the
/// old range with one shootdown.
pub fn mremap(old: u64, old_len: u64, new_len: u64, flags: u64, new_addr: u64) -> SysResult {
    let flags = u32::try_from(flags).map_err(|_| errno::EINVAL)?;
    if flags & !(g::MREMAP_MAYMOVE | g::MREMAP_FIXED | g::MREMAP_DONTUNMAP) != 0 || !old.is_multiple_of(PAGE_SIZE) {
        return Err(errno::EINVAL);
    }
    if flags & g::MREMAP_DONTUNMAP != 0 {
        // Not yet: Linux programs use it rarely.
        return Err(errno::EINVAL);
    }
    let p = current()?;
    let memory = p.mem();
    let mut mem = memory.lock(task::sched());
    if flags & g::MREMAP_FIXED != 0 {
        if flags & g::MREMAP_MAYMOVE == 0 {
            return Err(errno::EINVAL);
        }
        return remap_fixed(&p, &mut mem, old, old_len, new_len, new_addr);
    }
    let outcome = mem.vmas.remap(old, old_len, new_len, flags & g::MREMAP_MAYMOVE != 0, MMAP_TOP).map_err(VmaError::errno)?;
    match &outcome {
        abi::vma::Remap::Unchanged { .. } | abi::vma::Remap::Grown { .. } => {}
        abi::vma::Remap::Shrunk { unmapped, .. } => unmap_ranges(&p, core::slice::from_ref(unmapped))?,
        abi::vma::Remap::Moved { from, to, .. } => {
            let vma = *mem.vmas.find(to.start).ok_or(errno::EFAULT)?;
            move_or_copy(&p, vma.kind, from.start, to.start, from.end - from.start, vma.prot)?;
            unmap_ranges(&p, core::slice::from_ref(from))?;
        }
    }
    Ok(outcome.addr())
}

/// Carry the pages of `[from, from + len)` to `to`: shared memory moves its frames (a copy would no
/// longer be shared with the other processes that map them), private memory is copied.
fn move_or_copy(p: &Process, kind: VmaKind, from: u64, to: u64, len: u64, prot: u32) -> Result<(), u32> {
    if kind == VmaKind::Shared {
        return p.space().move_present(from, to, len / PAGE_SIZE).map_err(|_| errno::ENOMEM);
    }
    copy_pages(p, from, to, len, prot)
}

/// Copy the pages of `[from, from + len)` that exist to `to`, each into a frame filled before it
/// is mapped there with the rights `prot`: a sibling thread reading the destination (a fault waits
/// for the mapping lock, an access to a page already mapped does not) sees either no page or the
/// copied one, never a zero page on its way to being filled.
fn copy_pages(p: &Process, from: u64, to: u64, len: u64, prot: u32) -> Result<(), u32> {
    let rights = process::user_prot(prot);
    let mut buf = alloc::vec![0u8; PAGE_SIZE as usize];
    for offset in (0..len).step_by(PAGE_SIZE as usize) {
        if p.space().translate(from + offset).is_none() {
            continue;
        }
        usercopy::copy_from_user(&mut buf, from + offset).map_err(|_| errno::EFAULT)?;
        p.space().map_user_filled(to + offset, &buf, rights).map_err(|_| errno::ENOMEM)?;
    }
    Ok(())
}

/// `MREMAP_MAYMOVE | MREMAP_FIXED`: move `[old, old + old_len)` (inside one mapping) to exactly
/// `new_addr`, replacing whatever was mapped there, resized to `new_len`. The mapping lock is held
/// throughout, so a sibling thread that touches either range waits in its page fault and then sees
/// the new contents.
fn remap_fixed(p: &Process, mem: &mut process::MemState, old: u64, old_len: u64, new_len: u64, new_addr: u64) -> SysResult {
    if !new_addr.is_multiple_of(PAGE_SIZE) || new_len == 0 {
        return Err(errno::EINVAL);
    }
    let old_len = old_len.checked_next_multiple_of(PAGE_SIZE).ok_or(errno::EINVAL)?;
    let new_len = new_len.checked_next_multiple_of(PAGE_SIZE).ok_or(errno::EINVAL)?;
    let vma = *mem.vmas.find(old).ok_or(errno::EFAULT)?;
    let old_end = old.checked_add(old_len).ok_or(errno::EINVAL)?;
    let new_end = new_addr.checked_add(new_len).ok_or(errno::EINVAL)?;
    if old_end > vma.end || old_len == 0 {
        return Err(errno::EFAULT);
    }
    if new_addr < old_end && old < new_end {
        return Err(errno::EINVAL);
    }
    let replaced = mem.vmas.map_fixed(new_addr, new_len, vma.prot, vma.kind).map_err(VmaError::errno)?;
    unmap_ranges(p, &replaced)?;
    move_or_copy(p, vma.kind, old, new_addr, old_len.min(new_len), vma.prot)?;
    let removed = mem.vmas.unmap(old, old_len).map_err(VmaError::errno)?;
    unmap_ranges(p, &removed)?;
    Ok(new_addr)
}
