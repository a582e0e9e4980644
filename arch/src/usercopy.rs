//! The only way the kernel touches user memory: copy loops that may fault, and the exception table
//! that turns their faults into [`Fault`] instead of a kernel crash.
//!
//! - [`copy_from_user`], [`copy_to_user`], [`clear_user`], [`strncpy_from_user`], [`read_u32`]:
//!   check the user range ([`is_user_range`]; [`copy_to_user_range`] takes one already checked, a
//!   [`UserRange`]), open user access with `stac` where the CPU has SMAP,
//!   run one small loop (one load for `read_u32`), close it with `clac`;
//! - [`fixup_for`]: the page-fault and general-protection handlers ask it whether the faulting RIP is
//!   one of the loops' access instructions and, if so, resume at the returned address, which makes
//!   the routine return an error. A handler that can resolve the fault (a demand-zero page) does that
//!   instead and retries the instruction: `rep movsb`/`rep stosb` resume where they stopped;
//! - [`enable_smap_smep`]: CR4.SMEP and CR4.SMAP on this CPU where present (SDM vol. 3A, 4.6.1), and the
//!   switch that makes the loops use `stac`/`clac` (both are #UD without SMAP, so the choice is made at
//!   run time from one flag rather than by patching code).
//!
//! The table:
//!
//! ```text
//!  arch_usercopy_extable:   .quad access_ip, fixup_ip     one pair per instruction that touches
//!                           ...                           user memory (four)
//! ```
//!
//! The routines are safe to call: the range check keeps them off kernel memory, and a bad user
//! address returns [`Fault`]. What they rely on is system-wide: the kernel's #PF and #GP handlers
//! consult [`fixup_for`] for faults in ring 0, and the process whose memory is meant is the one whose
//! page tables are loaded. An interrupt that arrives inside a loop runs with AC still set, so the trap
//! entry clears AC ([`crate::trap`]) and `iretq` restores it.

/// The user access faulted (or the range was not a user range): the system call returns `EFAULT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault;

/// End (exclusive) of addresses a user pointer may name: the canonical lower half.
pub const USER_ADDR_END: u64 = 0x0000_8000_0000_0000;

/// Whether `[addr, addr + len)` lies entirely in the user half, without wrapping.
#[inline]
pub fn is_user_range(addr: u64, len: usize) -> bool {
    addr.checked_add(len as u64).is_some_and(|end| end <= USER_ADDR_END)
}

/// A range `[addr, addr + len)` found to lie in the user half ([`is_user_range`]): a copy into a
/// prefix of it ([`copy_to_user_range`]) needs no second test. For a caller that must refuse a bad
/// buffer before it produces the bytes (a pipe read, whose bytes a failed copy would lose).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserRange {
    addr: u64,
    len: usize,
}

impl UserRange {
    /// The range, if it lies in the user half.
    #[inline]
    pub fn new(addr: u64, len: usize) -> Option<UserRange> {
        is_user_range(addr, len).then_some(UserRange { addr, len })
    }

    pub fn addr(&self) -> u64 {
        self.addr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(target_os = "none")]
pub use self::hw::*;

/// Whether the loops bracket their accesses with `stac`/`clac`, and the trap entry clears AC: true
/// once SMAP is on. One byte, read by assembly.
#[cfg(target_os = "none")]
pub(crate) static ARCH_USERCOPY_STAC: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

#[cfg(target_os = "none")]
mod hw {
    use core::sync::atomic::Ordering;

    use x86_64::registers::control::{Cr4, Cr4Flags};

    use super::*;


    /// SMAP may be used where the CPU has it; [`forbid_smap`] clears it (command line `nosmap`).
    static SMAP_ALLOWED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);

    /// Never turn SMAP on, so no `stac`/`clac` runs: for emulators that cannot execute them (a
    /// nested KVM that emulates its guest's ring 0 stops the guest at the first `clac`). Call before
    /// [`enable_smap_smep`] and before the kernel's page tables are loaded.
    pub fn forbid_smap() {
        SMAP_ALLOWED.store(false, Ordering::Relaxed);
    }

    /// Whether SMAP may be turned on: the CPU has it and [`forbid_smap`] was not called.
    pub fn smap_usable() -> bool {
        SMAP_ALLOWED.load(Ordering::Relaxed)
            && raw_cpuid::CpuId::new().get_extended_feature_info().is_some_and(|f| f.has_smap())
    }

    /// Whether user-access windows need `stac`/`clac` (read by the trap entry too).
    pub fn smap_enabled() -> bool {
        ARCH_USERCOPY_STAC.load(Ordering::Relaxed)
    }

    /// What [`enable_smap_smep`] turned on.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Protections {
        pub smep: bool,
        pub smap: bool,
    }

    /// Turn on SMEP (the kernel never executes user pages) and SMAP (the kernel reads and writes user
    /// pages only inside the copy loops) on this CPU where the CPU has them.
    ///
    /// # Safety
    /// Called on every CPU at bring-up, before any user mapping exists, and with the same CPU features
    /// everywhere (the `stac` switch is global). No code outside this module may touch user pages
    /// afterwards.
    pub unsafe fn enable_smap_smep() -> Protections {
        let ext = raw_cpuid::CpuId::new().get_extended_feature_info();
        let smep = ext.as_ref().is_some_and(|f| f.has_smep());
        let smap = smap_usable();
        // SAFETY: both bits only restrict ring-0 access to user pages, which the caller guarantees
        // nothing needs outside the loops; the loops use stac/clac once the flag below is set, and
        // it is set before any user page exists.
        unsafe {
            Cr4::update(|f| {
                if smep {
                    f.insert(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION);
                }
                if smap {
                    f.insert(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION);
                }
            })
        };
        if smap {
            ARCH_USERCOPY_STAC.store(true, Ordering::Relaxed);
        }
        Protections { smep, smap }
    }

    unsafe extern "C" {
        static arch_usercopy_extable: [[u64; 2]; 4];
        fn arch_usercopy_movsb(dst: *mut u8, src: *const u8, len: usize) -> usize;
        fn arch_usercopy_stosb(dst: *mut u8, len: usize) -> usize;
        fn arch_usercopy_strncpy(dst: *mut u8, src: *const u8, max: usize) -> isize;
    }

    /// The address to resume at when the instruction at `rip` faulted, if it is a user access of the
    /// copy loops.
    pub fn fixup_for(rip: u64) -> Option<u64> {
        // SAFETY: an immutable table of four pairs laid down by the asm below.
        let table: &[[u64; 2]; 4] = unsafe { &arch_usercopy_extable };
        table.iter().find(|e| e[0] == rip).map(|e| e[1])
    }

    /// Copy `dst.len()` bytes from user address `src`. Inlined: the range test and the call of
    /// the loop are the whole of it, and a system call's few bytes should not pay a frame more.
    #[inline]
    pub fn copy_from_user(dst: &mut [u8], src: u64) -> Result<(), Fault> {
        if !is_user_range(src, dst.len()) {
            return Err(Fault);
        }
        // SAFETY: `dst` is valid for its length; `src` is a user range, so the loop reads user pages
        // only, and a fault there resumes at the fixup (the module's system-wide conditions).
        let left = unsafe { arch_usercopy_movsb(dst.as_mut_ptr(), src as *const u8, dst.len()) };
        if left == 0 { Ok(()) } else { Err(Fault) }
    }

    /// The aligned 32-bit word at user address `src`, read with one load (a futex word): four
    /// bytes through [`copy_from_user`]'s `rep movsb` cost several times the instructions.
    #[inline]
    pub fn read_u32(src: u64) -> Result<u32, Fault> {
        if !src.is_multiple_of(4) || !is_user_range(src, 4) {
            return Err(Fault);
        }
        let (word, faulted): (u32, u32);
        // SAFETY: `src` is an aligned user address, so the load reads user memory only, and a
        // fault there resumes at the fixup (the module's system-wide conditions). The routine
        // writes only eax, edx and the flags, and uses the stack only for its return address,
        // which the asm may push (no `nostack`: the compiler keeps the stack usable and aligned).
        // Called from here rather than as an `extern "C"` function, the caller keeps its other
        // registers live across the read instead of saving them.
        unsafe {
            core::arch::asm!(
                "call arch_usercopy_load32",
                in("rdi") src,
                lateout("eax") word,
                lateout("edx") faulted,
            );
        }
        if faulted == 0 { Ok(word) } else { Err(Fault) }
    }

    /// Copy `src` to user address `dst` (inlined as [`copy_from_user`]).
    #[inline]
    pub fn copy_to_user(dst: u64, src: &[u8]) -> Result<(), Fault> {
        if !is_user_range(dst, src.len()) {
            return Err(Fault);
        }
        // SAFETY: as in copy_from_user, with the user range as destination.
        let left = unsafe { arch_usercopy_movsb(dst as *mut u8, src.as_ptr(), src.len()) };
        if left == 0 { Ok(()) } else { Err(Fault) }
    }

    /// Copy `src` to the start of `dst`, a range already tested: only `src`'s length is compared
    /// with it (a test the compiler folds when `src` is a prefix of a buffer of `dst`'s length).
    #[inline]
    pub fn copy_to_user_range(dst: UserRange, src: &[u8]) -> Result<(), Fault> {
        if src.len() > dst.len {
            return Err(Fault);
        }
        // SAFETY: as in copy_to_user: `[dst.addr, dst.addr + src.len())` lies within `dst`, a
        // user range (tested when it was made).
        let left = unsafe { arch_usercopy_movsb(dst.addr as *mut u8, src.as_ptr(), src.len()) };
        if left == 0 { Ok(()) } else { Err(Fault) }
    }

    /// Zero `len` bytes at user address `dst`.
    pub fn clear_user(dst: u64, len: usize) -> Result<(), Fault> {
        if !is_user_range(dst, len) {
            return Err(Fault);
        }
        // SAFETY: as in copy_to_user.
        let left = unsafe { arch_usercopy_stosb(dst as *mut u8, len) };
        if left == 0 { Ok(()) } else { Err(Fault) }
    }

    /// Copy a NUL-terminated string from user address `src` into `dst`, at most `dst.len()` bytes.
    /// Returns the string's length without the NUL, or `dst.len()` when no NUL came within it
    /// (Linux's `strncpy_from_user`: the caller then answers `ENAMETOOLONG` or `E2BIG`).
    pub fn strncpy_from_user(dst: &mut [u8], src: u64) -> Result<usize, Fault> {
        if src >= USER_ADDR_END {
            return Err(Fault);
        }
        // The string may end before the range would leave user space: clip the range, not the call.
        let room = (USER_ADDR_END - src).min(dst.len() as u64) as usize;
        // SAFETY: `dst` is valid for `room` <= its length; `[src, src + room)` is a user range.
        let n = unsafe { arch_usercopy_strncpy(dst.as_mut_ptr(), src as *const u8, room) };
        match usize::try_from(n) {
            Ok(len) if len < room => Ok(len),
            // No NUL within `room`: when the user range ended before `dst` did, the next byte is
            // not a user address at all.
            Ok(_) if room < dst.len() => Err(Fault),
            Ok(len) => Ok(len),
            Err(_) => Err(Fault),
        }
    }

    // Each routine: System V arguments (rdi, rsi, rdx), returns in rax; the faulting instruction's
    // fixup is the instruction after it, so a fault simply ends the loop early with the count left.
    core::arch::global_asm!(
        ".pushsection .text.arch_usercopy, \"ax\"",
        // rdi = dst, rsi = src, rdx = len -> rax = bytes not copied
        ".balign 16",
        ".globl arch_usercopy_movsb",
        "arch_usercopy_movsb:",
        "mov rcx, rdx",
        "cmp byte ptr [rip + {stac}], 0",
        "je 1f",
        "stac",
        "1:",
        "arch_usercopy_movsb_access:",
        "rep movsb",
        "arch_usercopy_movsb_fixup:",
        "cmp byte ptr [rip + {stac}], 0",
        "je 2f",
        "clac",
        "2:",
        "mov rax, rcx",
        "ret",
        // rdi = src (4-aligned) -> eax = the word, edx = 0; edx = 1 on a fault (the fixup skips
        // the instruction that clears it). Writes nothing else but the flags: `read_u32` calls it
        // from inline asm that names only those registers.
        ".balign 16",
        ".globl arch_usercopy_load32",
        "arch_usercopy_load32:",
        "mov edx, 1",
        "cmp byte ptr [rip + {stac}], 0",
        "je 1f",
        "stac",
        "1:",
        "arch_usercopy_load32_access:",
        "mov eax, dword ptr [rdi]",
        "xor edx, edx",
        "arch_usercopy_load32_fixup:",
        "cmp byte ptr [rip + {stac}], 0",
        "je 2f",
        "clac",
        "2:",
        "ret",
        // rdi = dst, rsi = len -> rax = bytes not cleared
        ".balign 16",
        ".globl arch_usercopy_stosb",
        "arch_usercopy_stosb:",
        "mov rcx, rsi",
        "xor eax, eax",
        "cmp byte ptr [rip + {stac}], 0",
        "je 1f",
        "stac",
        "1:",
        "arch_usercopy_stosb_access:",
        "rep stosb",
        "arch_usercopy_stosb_fixup:",
        "cmp byte ptr [rip + {stac}], 0",
        "je 2f",
        "clac",
        "2:",
        "mov rax, rcx",
        "ret",
        // rdi = dst, rsi = src, rdx = max -> rax = length before the NUL, max if none, -1 on fault
        ".balign 16",
        ".globl arch_usercopy_strncpy",
        "arch_usercopy_strncpy:",
        "xor eax, eax",
        "cmp byte ptr [rip + {stac}], 0",
        "je 1f",
        "stac",
        "1:",
        "cmp rax, rdx",
        "je 3f",
        "arch_usercopy_strncpy_access:",
        "movzx ecx, byte ptr [rsi + rax]",
        "mov byte ptr [rdi + rax], cl",
        "test ecx, ecx",
        "jz 3f",
        "inc rax",
        "jmp 1b",
        "arch_usercopy_strncpy_fault:",
        "mov rax, -1",
        "3:",
        "cmp byte ptr [rip + {stac}], 0",
        "je 2f",
        "clac",
        "2:",
        "ret",
        ".popsection",
        ".pushsection .rodata.arch_usercopy_extable, \"a\"",
        ".balign 8",
        ".globl arch_usercopy_extable",
        "arch_usercopy_extable:",
        ".quad arch_usercopy_movsb_access, arch_usercopy_movsb_fixup",
        ".quad arch_usercopy_stosb_access, arch_usercopy_stosb_fixup",
        ".quad arch_usercopy_strncpy_access, arch_usercopy_strncpy_fault",
        ".quad arch_usercopy_load32_access, arch_usercopy_load32_fixup",
        ".popsection",
        stac = sym ARCH_USERCOPY_STAC,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_range_check() {
        assert!(is_user_range(0x1000, 0x1000));
        assert!(is_user_range(USER_ADDR_END - 1, 1));
        assert!(is_user_range(USER_ADDR_END, 0));
        assert!(!is_user_range(USER_ADDR_END - 1, 2));
        assert!(!is_user_range(0xffff_8000_0000_0000, 1));
        assert!(!is_user_range(u64::MAX, 2), "wrapping range");
        assert!(!is_user_range(0x1000, usize::MAX));
    }

    #[test]
    fn user_range_is_made_only_for_user_ranges() {
        let r = UserRange::new(USER_ADDR_END - 8, 8).expect("the top 8 bytes of user space");
        assert_eq!((r.addr(), r.len()), (USER_ADDR_END - 8, 8));
        assert!(UserRange::new(USER_ADDR_END - 8, 9).is_none());
        assert!(UserRange::new(u64::MAX, 2).is_none(), "wrapping range");
        assert!(UserRange::new(USER_ADDR_END, 0).is_some_and(|r| r.is_empty()));
    }
}
