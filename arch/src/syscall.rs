//! Ring 3: the `syscall` entry, the two ways back (`sysretq` and `iretq`), the first entry to user
//! mode, and the per-CPU state these need.
//!
//! Key items:
//! - [`UserFrame`]: the user registers saved at the top of a thread's kernel stack, below the
//!   thread's slot ([`THREAD_SLOT_BYTES`]). A `syscall` and an interrupt or exception from ring 3
//!   (see [`crate::trap`]) leave the same 22-word layout at the same place, so [`frame_at`] is "the
//!   user state of this thread" however it entered (inside a system call, the slots of rax and the
//!   six callee-saved registers are written only where the whole frame is needed: see the stub's
//!   contract below);
//! - [`InSyscall`]: the proof the kernel's hooks get that they run in a system call
//!   ([`thread_slot`] needs it);
//! - [`EntryScratch`]: the per-CPU slots the entry stub reaches through GS. The kernel's per-CPU block
//!   embeds it at byte offset [`SCRATCH_GS_OFFSET`] (checked there with `offset_of!`);
//! - [`init_cpu`]: EFER.SCE, STAR, LSTAR, SFMASK on this CPU (SDM vol. 3A, 5.8.8 "Fast System Calls in
//!   64-Bit Mode"; vol. 4, MSRs C000_0080-C000_0084);
//! - [`set_kernel_stack`]: the scheduler calls it at each switch to a user thread: TSS.RSP0 (where
//!   the CPU puts interrupts from ring 3) and the scratch slot (where `syscall` switches to);
//! - [`set_hooks`]: the kernel's system-call table and hooks, set once; [`route_all_to_slow`]
//!   sends every call to the slow hook (the kernel's system-call trace);
//! - [`enter_user`]: start a thread in ring 3 from a built frame.
//!
//! Segment selectors: SYSCALL and SYSRET take their selectors from STAR, which fixes the GDT order:
//! kernel code, kernel data, user data, user code ([`KERNEL_CS`], [`KERNEL_SS`], [`USER_SS`],
//! [`USER_CS`]), then the TSS.
//!
//! The stub's contract, entry: `syscall` left RIP in RCX and RFLAGS in R11; SFMASK cleared IF, DF,
//! TF, AC and NT; CS/SS are the kernel's; RSP and GS are still the user's. The stub swaps GS, moves
//! to the thread's kernel stack, pushes what the kernel's code may change (the iret words, the
//! number, and the eight caller-saved registers other than rax) and calls the number's handler
//! straight from the kernel's table ([`UserEntryHooks`], [`TABLE_LEN`]) with RSP 16-byte aligned and
//! interrupts on. The six callee-saved registers, rbp included, stay live in the registers: Rust
//! code preserves them, so their slots are written only when something needs the whole frame (the
//! [`WHOLE_FRAME`] calls, the slow hook, the checked exit). Exit: interrupts off again.
//! The fast exit (the thread's work word is zero, so the frame is untouched): RCX and R11 are the
//! values `syscall` left, so SYSRET needs only RCX below [`USER_TOP`] and no TF/RF in R11; the stub
//! reloads the six caller-saved argument registers and RSP. Otherwise the checked exit completes
//! the frame, runs the kernel's exit work, and returns by SYSRET only when
//! [`UserFrame::prepare_return`] says the frame is one SYSRET restores exactly (RCX = RIP, R11 =
//! RFLAGS, no TF/RF) and RIP is below [`USER_TOP`]; both never return to a non-canonical RIP, which
//! on Intel CPUs faults in ring 0 with the user's RSP (CVE-2012-0217). Otherwise `iretq`, which
//! restores every register. `swapgs` sits right before `sysretq`/`iretq`, with interrupts off; an NMI or machine
//! check in that window finds the user's GS and is handled by [`crate::trap`]'s paranoid path.
//! Kernel frames above the entry thus hold the user's rbp as their caller's: [`is_entry_return`]
//! tells a backtrace where to stop.
//!
//! ```text
//!  kernel stack top ->  +----------+
//!                       | slot     |  THREAD_SLOT_BYTES: the kernel's per-thread word, padding
//!  entry top ->         +----------+  TSS.RSP0, and where `syscall` switches to
//!                       | ss       |  USER_SS
//!                       | rsp      |  user rsp (saved through the scratch slot)
//!                       | rflags   |  r11
//!                       | cs       |  USER_CS
//!                       | rip      |  rcx
//!                       | orig_rax |  the system call number (or the error code of an exception)
//!                       | kind     |  SYSCALL_KIND (or the vector of an exception/interrupt)
//!                       | rcx..r11 |  rcx, rdx, rsi, rdi, r8, r9, r10, r11: pushed by the stub
//!                       | rax      |  written on the way out
//!                       | rbx..r15 |  rbx, rbp, r12-r15: live in the registers (see above)
//!  frame, rdi ->        +----------+  176 bytes below the entry top: 16-byte aligned
//! ```

/// Kernel code selector (GDT index 1).
pub const KERNEL_CS: u16 = 0x08;
/// Kernel stack selector (GDT index 2).
pub const KERNEL_SS: u16 = 0x10;
/// User data/stack selector (GDT index 3, RPL 3): SYSRET loads STAR[63:48] + 8.
pub const USER_SS: u16 = 0x1b;
/// User 64-bit code selector (GDT index 4, RPL 3): SYSRET loads STAR[63:48] + 16.
pub const USER_CS: u16 = 0x23;

/// End (exclusive) of user addresses: one page below the canonical boundary, as Linux's
/// `TASK_SIZE_MAX`. Nothing is ever mapped above, so a `syscall` at the very top of user memory
/// leaves RCX = `USER_TOP`, canonical, and returns by IRET into a user-mode page fault.
pub const USER_TOP: u64 = 0x0000_7fff_ffff_f000;

/// `kind` of a frame built by the `syscall` stub (exception and interrupt frames carry their vector,
/// always below 256).
pub const SYSCALL_KIND: u64 = 0x100;

/// RFLAGS bits user code may set (Linux's `FIX_EFLAGS`): CF, PF, AF, ZF, SF, TF, DF, OF, AC, ID and RF.
/// Never IOPL, NT, VM or VIF/VIP.
pub const USER_RFLAGS_MASK: u64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x400 | 0x800 | 0x4_0000 | 0x20_0000 | 0x1_0000;
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_RF: u64 = 1 << 16;
/// Bit 1 of RFLAGS always reads 1.
const RFLAGS_FIXED: u64 = 1 << 1;

/// The user registers of a thread in the kernel. See the module docs for where it lives.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    /// The system call's return value on the way out.
    pub rax: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    /// [`SYSCALL_KIND`] for a system call, else the vector.
    pub kind: u64,
    /// The system call number at entry (rax is overwritten by the result); the error code for an
    /// exception.
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<UserFrame>() == 22 * 8);

/// How the exit path leaves for user mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserReturn {
    /// `sysretq`: the frame is exactly what SYSRET restores.
    Sysret,
    /// `iretq`: restores every register of the frame.
    Iret,
    /// The frame cannot be returned to (RIP or RSP not a canonical address, RIP in the kernel half):
    /// the thread must end; the exit path calls the kernel's `invalid_return` hook.
    Invalid,
}

fn canonical(a: u64) -> bool {
    // Sign-extension of bit 47 (4-level paging).
    ((a as i64) << 16 >> 16) as u64 == a
}

impl UserFrame {
    /// A frame that starts user code at `rip` with stack `rsp`, every other register zero and
    /// interrupts enabled.
    pub fn new_user(rip: u64, rsp: u64) -> Self {
        UserFrame {
            rip,
            rsp,
            cs: u64::from(USER_CS),
            ss: u64::from(USER_SS),
            rflags: RFLAGS_IF | RFLAGS_FIXED,
            kind: SYSCALL_KIND,
            orig_rax: u64::MAX,
            ..Default::default()
        }
    }

    /// Make the frame safe to return to ring 3 and choose how: user selectors, only user-settable
    /// RFLAGS bits plus IF. Called by the exit path after every system call; the kernel may call it
    /// after changing a frame (a signal frame, `clone`'s child) to learn whether it is valid.
    pub fn prepare_return(&mut self) -> UserReturn {
        self.cs = u64::from(USER_CS);
        self.ss = u64::from(USER_SS);
        self.rflags = (self.rflags & USER_RFLAGS_MASK) | RFLAGS_IF | RFLAGS_FIXED;
        if !canonical(self.rip) || self.rip >= 1 << 47 || !canonical(self.rsp) {
            return UserReturn::Invalid;
        }
        let sysret_restores = self.rcx == self.rip && self.r11 == self.rflags;
        if self.rip < USER_TOP && sysret_restores && self.rflags & (RFLAGS_TF | RFLAGS_RF) == 0 {
            UserReturn::Sysret
        } else {
            UserReturn::Iret
        }
    }

    /// The six system-call arguments in Linux's order: rdi, rsi, rdx, r10, r8, r9.
    pub fn syscall_args(&self) -> [u64; 6] {
        [self.rdi, self.rsi, self.rdx, self.r10, self.r8, self.r9]
    }
}

/// Per-CPU slots of the entry paths, embedded in the kernel's per-CPU block at
/// [`SCRATCH_GS_OFFSET`].
#[repr(C)]
#[derive(Debug)]
pub struct EntryScratch {
    /// Top of the running thread's kernel stack (what `syscall` switches to).
    kernel_stack_top: u64,
    /// The user RSP between `syscall` and the push that saves it in the frame.
    user_rsp: u64,
    /// This CPU's TSS, for RSP0.
    tss: u64,
}

impl EntryScratch {
    pub const fn new() -> Self {
        Self { kernel_stack_top: 0, user_rsp: 0, tss: 0 }
    }
}

impl Default for EntryScratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Byte offset of [`EntryScratch`] in the per-CPU block GS points at. The kernel asserts
/// `offset_of!(PerCpu, entry) == SCRATCH_GS_OFFSET`.
pub const SCRATCH_GS_OFFSET: usize = 24;

/// Proof that the code holding it runs inside a system call of a user thread: only the `syscall`
/// entry makes one, and it lives as long as the call. A zero-sized value whose address is the
/// thread's slot ([`thread_slot`]): the hooks get it in a register, no load needed.
pub struct InSyscall {
    _not_send: core::marker::PhantomData<*const ()>,
}

/// A system-call handler as the entry stub calls it: the C ABI, the caller's frame and the proof,
/// the caller's `rax` back.
pub type SyscallFn = extern "C" fn(&mut UserFrame, &InSyscall) -> u64;

/// Entries of the kernel's system-call table: numbers below it go from the stub straight to their
/// handler (one bounds test, one indirect call); the rest go to [`UserEntryHooks::slow`].
pub const TABLE_LEN: usize = 512;

/// The kernel's side of the entry paths.
///
/// What a handler finds in its frame: a table handler (called straight from the stub) sees the
/// user's `rip`, `rflags`, `rsp`, `cs`, `ss`, `orig_rax`, `kind`, `rcx`, `r11` and the six argument
/// registers; the slots of `rax` and of the six callee-saved registers (`rbx`, `rbp`, `r12`-`r15`)
/// are not written yet: those registers still hold the user's values, which Rust code preserves.
/// The calls that copy or rewrite the whole frame (`fork`, `clone`, `rt_sigreturn`) are entered as
/// [`WHOLE_FRAME`]: their frame is complete, and the registers they leave in it are the ones user
/// mode gets back. `slow` and `exit_work` always see the complete frame.
pub struct UserEntryHooks {
    /// The handler of each number below [`TABLE_LEN`], called with interrupts on. A handler that
    /// writes the frame, or returns what the exit must look at (a restart code), sets a bit of the
    /// thread's work word (see [`thread_slot`]) so that `exit_work` runs. An entry may be
    /// [`WHOLE_FRAME`], which completes the frame and calls `whole_frame`.
    pub table: &'static [SyscallFn; TABLE_LEN],
    /// The numbers at or above [`TABLE_LEN`], and every number while [`route_all_to_slow`] is on
    /// (the system-call trace), with the frame complete.
    pub slow: SyscallFn,
    /// The calls whose `table` entry is [`WHOLE_FRAME`], with the frame complete.
    pub whole_frame: SyscallFn,
    /// The way out had work to do (the thread's work word was not zero, or SYSRET could not
    /// restore the frame): do it. `frame.rax` holds the result and the frame is complete. Called
    /// with interrupts off; may enable them; may rewrite the frame.
    pub exit_work: fn(&mut UserFrame, &InSyscall),
    /// The frame (after a system call) cannot be returned to: end the thread. Called with interrupts
    /// off; it must not return.
    pub invalid_return: fn(&mut UserFrame) -> !,
}

/// Bytes at the top of a user thread's kernel stack above its [`UserFrame`]: the thread's slot (one
/// word the kernel gives [`enter_user`], read back by [`thread_slot`]) and padding that keeps the
/// frame 16-byte aligned. Entries from ring 3 land below them.
///
/// ```text
///  stack top ->  +----------+
///                | padding  |
///                | slot     |  the address of the thread's work word, written by enter_user
///  entry top ->  +----------+  TSS.RSP0 and the syscall stack: the UserFrame ends here
/// ```
pub const THREAD_SLOT_BYTES: u64 = 16;

#[cfg(target_os = "none")]
pub use self::hw::*;

#[cfg(target_os = "none")]
mod hw {
    use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

    use x86_64::{
        VirtAddr,
        registers::{
            model_specific::{Efer, EferFlags, KernelGsBase, LStar, SFMask, Star},
            rflags::RFlags,
        },
        structures::{gdt::SegmentSelector, tss::TaskStateSegment},
    };

    use core::mem::offset_of;

    use super::*;

    const KSTACK: usize = SCRATCH_GS_OFFSET + offset_of!(EntryScratch, kernel_stack_top);
    const USER_RSP: usize = SCRATCH_GS_OFFSET + offset_of!(EntryScratch, user_rsp);
    const TSS: usize = SCRATCH_GS_OFFSET + offset_of!(EntryScratch, tss);

    static HOOKS: AtomicPtr<UserEntryHooks> = AtomicPtr::new(core::ptr::null_mut());

    /// The kernel's table as the stub calls it (`call [DISPATCH + rax*8]`): copied once by
    /// [`set_hooks`], then only read.
    static DISPATCH: [AtomicUsize; TABLE_LEN] = [const { AtomicUsize::new(0) }; TABLE_LEN];

    /// Numbers below this value go to [`DISPATCH`], the others to [`SLOW_HOOK`]: [`TABLE_LEN`] once
    /// the table is in place, 0 before that and while every call is routed to the slow hook.
    static DIRECT_LIMIT: AtomicU64 = AtomicU64::new(0);

    /// `HOOKS.slow` and `HOOKS.whole_frame`, for the stub's one-instruction indirect calls. Written
    /// once by [`set_hooks`]; only the stub reads them, and calls them as [`SyscallFn`]s.
    static SLOW_HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
    static WHOLE_HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

    /// [`DISPATCH`] and the hooks are in place.
    static READY: AtomicBool = AtomicBool::new(false);
    /// [`route_all_to_slow`]'s setting.
    static ALL_SLOW: AtomicBool = AtomicBool::new(false);

    /// [`set_hooks`] was called before.
    #[derive(Debug, PartialEq, Eq)]
    pub struct HooksAlreadySet;

    /// Install the kernel's hooks, once.
    pub fn set_hooks(hooks: &'static UserEntryHooks) -> Result<(), HooksAlreadySet> {
        let p = hooks as *const UserEntryHooks as *mut UserEntryHooks;
        HOOKS.compare_exchange(core::ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire).map_err(|_| HooksAlreadySet)?;
        for (slot, handler) in DISPATCH.iter().zip(hooks.table) {
            slot.store(*handler as usize, Ordering::Relaxed);
        }
        SLOW_HOOK.store(hooks.slow as *mut (), Ordering::Release);
        WHOLE_HOOK.store(hooks.whole_frame as *mut (), Ordering::Release);
        READY.store(true, Ordering::SeqCst);
        update_limit();
        Ok(())
    }

    /// Send every system call (`on`) or only the numbers beyond the table (`!on`) to the slow hook:
    /// the kernel's system-call trace turns it on, so that the fast path carries no trace test.
    pub fn route_all_to_slow(on: bool) {
        ALL_SLOW.store(on, Ordering::SeqCst);
        update_limit();
    }

    /// [`DIRECT_LIMIT`] from [`READY`] and [`ALL_SLOW`]. Whoever changed one of them last stores
    /// last a value computed from both (the loop reads them again after its store).
    fn update_limit() {
        loop {
            let (ready, slow) = (READY.load(Ordering::SeqCst), ALL_SLOW.load(Ordering::SeqCst));
            DIRECT_LIMIT.store(if ready && !slow { TABLE_LEN as u64 } else { 0 }, Ordering::SeqCst);
            if (READY.load(Ordering::SeqCst), ALL_SLOW.load(Ordering::SeqCst)) == (ready, slow) {
                return;
            }
        }
    }

    fn hooks() -> Option<&'static UserEntryHooks> {
        let p = HOOKS.load(Ordering::Acquire);
        // SAFETY: HOOKS is null or was set from a `&'static UserEntryHooks` by `set_hooks`.
        unsafe { p.as_ref() }
    }

    #[allow(improper_ctypes, reason = "the proof is a pointer the asm passes on, never reads through")]
    // SAFETY (of the `safe` declaration): the asm below defines this symbol with the C ABI and
    // this signature; it only writes the frame it is given and calls the kernel's `whole_frame`
    // hook, so a call from safe code cannot break memory safety.
    unsafe extern "C" {
        /// The table entry of the calls that need the whole frame (see [`WHOLE_FRAME`]).
        safe fn arch_syscall_whole_frame(frame: &mut UserFrame, proof: &InSyscall) -> u64;
    }

    /// The table entry of a call that copies or rewrites the caller's whole frame: the stub's entry
    /// leaves the callee-saved registers live in the registers, this entry stores them into the
    /// frame, calls [`UserEntryHooks::whole_frame`], and reloads them from the frame, so that what
    /// the call left there is what user mode gets back.
    pub const WHOLE_FRAME: SyscallFn = arch_syscall_whole_frame;

    /// Why [`init_cpu`] refused.
    #[derive(Debug, PartialEq, Eq)]
    pub enum InitError {
        /// The GDT's selectors are not in the order SYSCALL/SYSRET need.
        SelectorOrder,
    }

    /// Enable `syscall` on this CPU and record its TSS.
    ///
    /// # Safety
    /// 1. GS base points at this CPU's per-CPU block, which embeds an [`EntryScratch`] at
    ///    [`SCRATCH_GS_OFFSET`] and lives forever;
    /// 2. `tss` is this CPU's loaded TSS and lives forever;
    /// 3. the GDT in use has [`KERNEL_CS`], [`KERNEL_SS`], [`USER_SS`], [`USER_CS`] as 64-bit kernel
    ///    code, kernel data, user data and 64-bit user code descriptors (the selectors passed are
    ///    checked against these numbers, not against the GDT).
    pub unsafe fn init_cpu(
        kernel_cs: SegmentSelector,
        kernel_ss: SegmentSelector,
        user_cs: SegmentSelector,
        user_ss: SegmentSelector,
        tss: *mut TaskStateSegment,
    ) -> Result<(), InitError> {
        if (kernel_cs.0, kernel_ss.0, user_cs.0, user_ss.0) != (KERNEL_CS, KERNEL_SS, USER_CS, USER_SS) {
            return Err(InitError::SelectorOrder);
        }
        Star::write(user_cs, user_ss, kernel_cs, kernel_ss).map_err(|_| InitError::SelectorOrder)?;
        LStar::write(VirtAddr::new(syscall_entry_address()));
        // SFMASK: the flags cleared on entry (SDM vol. 3A 5.8.8): interrupts off until the kernel is
        // on its own stack, DF clear for Rust, no single-step, no user access (AC, for SMAP), no NT.
        SFMask::write(
            RFlags::INTERRUPT_FLAG
                | RFlags::DIRECTION_FLAG
                | RFlags::TRAP_FLAG
                | RFlags::ALIGNMENT_CHECK
                | RFlags::NESTED_TASK
                | RFlags::IOPL_HIGH
                | RFlags::IOPL_LOW,
        );
        // The user's GS base while the kernel runs: 0 (user programs get no GS base of their own).
        KernelGsBase::write(VirtAddr::zero());
        // SAFETY: per condition 1, the slot exists; a single store.
        unsafe { core::arch::asm!("mov gs:[{off}], {}", in(reg) tss as u64, off = const TSS, options(nostack, preserves_flags)) };
        // SAFETY: EFER.SCE only enables the SYSCALL instruction; the MSRs it uses are set above.
        unsafe { Efer::update(|f| f.insert(EferFlags::SYSTEM_CALL_EXTENSIONS)) };
        Ok(())
    }

    /// Make the kernel stack whose top is `top` the one that ring-3 entries of this CPU land on, below
    /// the thread's slot ([`THREAD_SLOT_BYTES`]): TSS.RSP0 for interrupts and exceptions, the scratch
    /// slot for `syscall`. The scheduler calls it when it switches to a user thread.
    ///
    /// # Safety
    /// [`init_cpu`] ran on this CPU; interrupts are off; `top` is the 16-byte aligned top of the
    /// kernel stack of the thread that will run in ring 3 next, valid while it runs.
    pub unsafe fn set_kernel_stack(top: u64) {
        let top = top - THREAD_SLOT_BYTES;
        // SAFETY: the scratch slot and the TSS pointer exist per init_cpu; RSP0 is the first entry of
        // privilege_stack_table, 4 bytes into the (packed) TSS, hence the unaligned write.
        unsafe {
            let tss: u64;
            core::arch::asm!("mov {}, gs:[{off}]", out(reg) tss, off = const TSS, options(nostack, readonly, preserves_flags));
            let rsp0 = core::ptr::addr_of_mut!((*(tss as *mut TaskStateSegment)).privilege_stack_table).cast::<u64>();
            rsp0.write_unaligned(top);
            core::arch::asm!("mov gs:[{off}], {}", in(reg) top, off = const KSTACK, options(nostack, preserves_flags));
        }
    }

    /// Where [`UserFrame`] of the thread whose kernel stack ends at `top` lives.
    pub fn frame_at(top: u64) -> *mut UserFrame {
        (top - THREAD_SLOT_BYTES - core::mem::size_of::<UserFrame>() as u64) as *mut UserFrame
    }

    /// The calling thread's slot: the word [`enter_user`] stored at the top of its kernel stack (the
    /// address of the thread's work word, which the kernel may put first in a larger context).
    #[inline(always)]
    pub fn thread_slot(proof: &InSyscall) -> u64 {
        // The stub and the checked exit make the proof at the slot's value (see InSyscall).
        proof as *const InSyscall as u64
    }

    /// Start user mode from `frame` (built with [`UserFrame::new_user`], say). Never returns: the
    /// thread's next kernel entry starts afresh at its kernel stack top.
    ///
    /// # Safety
    /// 1. [`init_cpu`] and [`set_kernel_stack`] ran for this CPU and this thread; the hooks are set;
    /// 2. the thread's user address space is loaded (CR3) and `frame` is readable;
    /// 3. the caller keeps nothing on this stack that must outlive the call (it is abandoned), and
    ///    GS is the kernel's.
    ///
    /// 4. `slot` is the address of the thread's work word, a 4-byte aligned `u32` that stays valid
    ///    for as long as the thread can make system calls: the system-call exit reads it (zero: no
    ///    work, return at once; else the `exit_work` hook runs). It becomes the thread's slot, which
    ///    [`thread_slot`] returns in its system calls.
    pub unsafe fn enter_user(frame: &UserFrame, slot: u64) -> ! {
        let mut f = *frame;
        if f.prepare_return() == UserReturn::Invalid || !READY.load(Ordering::Acquire) {
            panic!("enter_user: frame not returnable or entry hooks missing: {f:?}");
        }
        // SAFETY: per conditions 1-3; the copy `f` lives on this stack, which iretq leaves; the exit
        // path pops it, swaps GS to the user's and returns with interrupts off until iretq sets them.
        // The slot is written once on `f`'s stack: the word above the entry top belongs to the
        // outermost frame of this thread's first kernel code, abandoned here (condition 3), and `f`
        // lies below it (in this function's own frame).
        unsafe {
            core::arch::asm!(
                "cli",
                "mov rsp, {f}",
                "mov {f}, gs:[{kstack}]",
                "mov [{f}], {slot}",
                "jmp arch_user_return_iret",
                f = in(reg) &raw const f,
                slot = in(reg) slot,
                kstack = const KSTACK,
                options(noreturn),
            )
        }
    }

    /// The slot of the thread whose entry frame is `frame`: the word right above it.
    fn frame_slot(frame: &UserFrame) -> u64 {
        // SAFETY: only called with the stub's frame, which ends at the entry top, right below the
        // thread's slot (THREAD_SLOT_BYTES), written by enter_user; the stack is this thread's.
        unsafe { *((frame as *const UserFrame).add(1) as *const u64) }
    }

    /// The stub's way back when there is work (the work word, an error) or the fast exit's SYSRET
    /// test failed: the kernel's `exit_work`, then [`UserFrame::prepare_return`]. Returns 1 for
    /// SYSRET, 0 for IRET, with interrupts off.
    extern "C" fn syscall_exit_checked(frame: &mut UserFrame) -> u64 {
        // set in `enter_user`'s precondition, before any thread reached ring 3.
        let Some(h) = hooks() else { panic!("syscall before the entry hooks were set") };
        let slot = frame_slot(frame);
        // SAFETY: `slot` is the thread's slot (frame_slot), the address of its work word, which
        // is non-null and 4-byte aligned (enter_user's condition 4): a valid place for a
        // zero-sized value, which is all InSyscall is.
        let proof = unsafe { &*(slot as *const InSyscall) };
        (h.exit_work)(frame, proof);
        crate::interrupts::disable();
        match frame.prepare_return() {
            UserReturn::Sysret => 1,
            UserReturn::Iret => 0,
            UserReturn::Invalid => (h.invalid_return)(frame),
        }
    }

    /// [`USER_TOP`] in memory, for the stub's one-instruction compare.
    static USER_TOP_WORD: u64 = USER_TOP;

    /// Whether `ret`, a return address found on a kernel stack, points into the system-call entry
    /// (the stub or [`WHOLE_FRAME`]). The entry leaves the user's rbp in place, so the frame record
    /// that holds such a return address holds a user value as the caller's rbp: a backtrace ends
    /// there.
    pub fn is_entry_return(ret: u64) -> bool {
        // Declared only to take the label's address; it is never called.
        unsafe extern "C" {
            fn arch_user_return_iret();
        }
        (syscall_entry_address()..arch_user_return_iret as *const () as u64).contains(&ret)
    }

    fn syscall_entry_address() -> u64 {
        // Declared only to take the label's address; it is never called.
        unsafe extern "C" {
            fn arch_syscall_entry();
        }
        arch_syscall_entry as *const () as u64
    }

    core::arch::global_asm!(
        ".pushsection .text.arch_syscall, \"ax\"",
        // The entry, the whole-frame path and the iret return (about 400 bytes) inside one
        // 512-byte block, so never across a page boundary: a page crossing costs a second TLB
        // lookup on hardware, and under TCG it counts the instruction that straddles it twice,
        // which made instruction counts depend on the kernel's layout.
        ".balign 512",
        ".globl arch_syscall_entry",
        "arch_syscall_entry:",
        "swapgs",
        "mov gs:[{user_rsp}], rsp",
        "mov rsp, gs:[{kstack}]",
        "push {user_ss}",
        "push qword ptr gs:[{user_rsp}]",
        "push r11",
        "push {user_cs}",
        "push rcx",
        "push rax",
        "push {kind}",
        // The caller-saved registers the kernel's code may change: the user gets them back.
        "push rcx",
        "push rdx",
        "push rsi",
        "push rdi",
        "push r8",
        "push r9",
        "push r10",
        "push r11",
        // rax is written on the way out; the callee-saved ones stay live (UserEntryHooks).
        "sub rsp, {unsaved}",
        "mov rdi, rsp",
        // The proof argument: a zero-sized value at the thread's slot (see InSyscall).
        "mov rsi, [rsp + {slot}]",
        "sti",
        "cmp rax, [rip + {direct_limit}]",
        "jae 4f",
        "call qword ptr [{dispatch} + rax*8]",
        "1:",
        "cli",
        // Work on the way out: the thread's work word, whose address is the thread's slot above
        // the frame (a handler that returns a restart code sets a bit there).
        "mov rcx, [rsp + {slot}]",
        "cmp dword ptr [rcx], 0",
        "jne 3f",
        // The fast exit: the frame is untouched, callee-saved registers are the user's (the
        // handler preserved them). SYSRET only to RIP < USER_TOP, never with TF or RF (SYSRET
        // cannot restore RF, and TF would trap on the first user instruction).
        "mov rcx, [rsp + {rip}]",
        "mov r11, [rsp + {rflags}]",
        "cmp rcx, [rip + {user_top}]",
        "jae 3f",
        "test r11d, {tf_rf}",
        "jnz 3f",
        "mov rdi, [rsp + {rdi}]",
        "mov rsi, [rsp + {rsi}]",
        "mov rdx, [rsp + {rdx}]",
        "mov r10, [rsp + {r10}]",
        "mov r8, [rsp + {r8}]",
        "mov r9, [rsp + {r9}]",
        "mov rsp, [rsp + {rsp}]",
        "swapgs",
        "sysretq",
        // The checked exit: complete the frame (the value, and the callee-saved registers, still
        // the user's), then the kernel's exit work and prepare_return decide.
        "3:",
        "mov [rsp + {rax}], rax",
        "mov [rsp + {rbx}], rbx",
        "mov [rsp + {rbp}], rbp",
        "mov [rsp + {r12}], r12",
        "mov [rsp + {r13}], r13",
        "mov [rsp + {r14}], r14",
        "mov [rsp + {r15}], r15",
        "mov rdi, rsp",
        "call {exit_checked}",
        "test eax, eax",
        "jz arch_user_return_iret",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbp",
        "pop rbx",
        "pop rax",
        "pop r11",
        "pop r10",
        "pop r9",
        "pop r8",
        "pop rdi",
        "pop rsi",
        "pop rdx",
        "pop rcx",
        // rsp -> kind, orig_rax, rip, cs, rflags, rsp, ss: load the user rsp last.
        "mov rsp, [rsp + 40]",
        "swapgs",
        "sysretq",
        // The slow hook (numbers beyond the table, or every call while traced), with the frame
        // complete as for a whole-frame call.
        "4:",
        "mov rax, [rip + {slow_hook}]",
        "call 5f",
        "jmp 1b",
        "",
        // WHOLE_FRAME: called from the stub's `call` with rdi = frame, rsi = proof and the user's
        // callee-saved registers. Stores them, calls the hook in rax with the same arguments, and
        // reloads them from the frame, which the hook may have rewritten (rt_sigreturn).
        ".balign 16",
        ".globl arch_syscall_whole_frame",
        "arch_syscall_whole_frame:",
        "mov rax, [rip + {whole_hook}]",
        "5:",
        "mov [rdi + {rbx}], rbx",
        "mov [rdi + {rbp}], rbp",
        "mov [rdi + {r12}], r12",
        "mov [rdi + {r13}], r13",
        "mov [rdi + {r14}], r14",
        "mov [rdi + {r15}], r15",
        // A frame record for backtraces; RSP is 16-byte aligned after the push.
        "push rbp",
        "mov rbp, rsp",
        "mov rbx, rdi",
        "call rax",
        "mov r12, [rbx + {r12}]",
        "mov r13, [rbx + {r13}]",
        "mov r14, [rbx + {r14}]",
        "mov r15, [rbx + {r15}]",
        "mov rbp, [rbx + {rbp}]",
        "mov rbx, [rbx + {rbx}]",
        "add rsp, 8",
        "ret",
        "",
        ".balign 16",
        ".globl arch_user_return_iret",
        "arch_user_return_iret:",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbp",
        "pop rbx",
        "pop rax",
        "pop r11",
        "pop r10",
        "pop r9",
        "pop r8",
        "pop rdi",
        "pop rsi",
        "pop rdx",
        "pop rcx",
        "add rsp, 16",
        "swapgs",
        "iretq",
        ".popsection",
        user_rsp = const USER_RSP,
        kstack = const KSTACK,
        user_ss = const USER_SS,
        user_cs = const USER_CS,
        kind = const SYSCALL_KIND,
        unsaved = const offset_of!(UserFrame, r11),
        direct_limit = sym DIRECT_LIMIT,
        dispatch = sym DISPATCH,
        slow_hook = sym SLOW_HOOK,
        whole_hook = sym WHOLE_HOOK,
        exit_checked = sym syscall_exit_checked,
        user_top = sym USER_TOP_WORD,
        tf_rf = const RFLAGS_TF | RFLAGS_RF,
        rax = const offset_of!(UserFrame, rax),
        rbx = const offset_of!(UserFrame, rbx),
        rbp = const offset_of!(UserFrame, rbp),
        r12 = const offset_of!(UserFrame, r12),
        r13 = const offset_of!(UserFrame, r13),
        r14 = const offset_of!(UserFrame, r14),
        r15 = const offset_of!(UserFrame, r15),
        rip = const offset_of!(UserFrame, rip),
        rflags = const offset_of!(UserFrame, rflags),
        rdi = const offset_of!(UserFrame, rdi),
        rsi = const offset_of!(UserFrame, rsi),
        rdx = const offset_of!(UserFrame, rdx),
        r10 = const offset_of!(UserFrame, r10),
        r8 = const offset_of!(UserFrame, r8),
        r9 = const offset_of!(UserFrame, r9),
        rsp = const offset_of!(UserFrame, rsp),
        slot = const core::mem::size_of::<UserFrame>(),
    );

    // The stub pushes the eight caller-saved registers from rcx down to r11 right below `kind`,
    // and leaves the seven slots below them (rax, then the callee-saved six) to a `sub`.
    const _: () = {
        assert!(offset_of!(UserFrame, rcx) + 8 == offset_of!(UserFrame, kind));
        assert!(offset_of!(UserFrame, rdx) + 8 == offset_of!(UserFrame, rcx));
        assert!(offset_of!(UserFrame, rsi) + 8 == offset_of!(UserFrame, rdx));
        assert!(offset_of!(UserFrame, rdi) + 8 == offset_of!(UserFrame, rsi));
        assert!(offset_of!(UserFrame, r8) + 8 == offset_of!(UserFrame, rdi));
        assert!(offset_of!(UserFrame, r9) + 8 == offset_of!(UserFrame, r8));
        assert!(offset_of!(UserFrame, r10) + 8 == offset_of!(UserFrame, r9));
        assert!(offset_of!(UserFrame, r11) + 8 == offset_of!(UserFrame, r10));
        assert!(offset_of!(UserFrame, r11) == 7 * 8);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syscall_frame(rip: u64) -> UserFrame {
        let mut f = UserFrame::new_user(rip, 0x7fff_0000_0000);
        f.rflags = 0x246;
        f.rcx = rip;
        f.r11 = 0x246;
        f
    }

    #[test]
    fn plain_syscall_returns_by_sysret() {
        let mut f = syscall_frame(0x40_1000);
        assert_eq!(f.prepare_return(), UserReturn::Sysret);
    }

    #[test]
    fn syscall_at_the_top_of_user_memory_returns_by_iret() {
        // A 2-byte `syscall` in the last user page leaves RCX = USER_TOP: canonical, but the kernel
        // never sysrets there; iret returns and the user faults in ring 3.
        let mut f = syscall_frame(USER_TOP);
        assert_eq!(f.prepare_return(), UserReturn::Iret);
        let mut f = syscall_frame(1 << 47);
        assert_eq!(f.prepare_return(), UserReturn::Invalid, "non-canonical rip must never be returned to");
        let mut f = syscall_frame(0xffff_8000_0000_0000);
        assert_eq!(f.prepare_return(), UserReturn::Invalid, "kernel-half rip is refused");
    }

    #[test]
    fn frames_sysret_cannot_restore_go_by_iret() {
        let mut f = syscall_frame(0x40_1000);
        f.rcx = 5; // e.g. a signal handler frame
        assert_eq!(f.prepare_return(), UserReturn::Iret);
        let mut f = syscall_frame(0x40_1000);
        f.r11 = 0x202;
        assert_eq!(f.prepare_return(), UserReturn::Iret);
        let mut f = syscall_frame(0x40_1000);
        f.rflags |= RFLAGS_TF;
        f.r11 = f.rflags;
        assert_eq!(f.prepare_return(), UserReturn::Iret);
        let mut f = syscall_frame(0x40_1000);
        f.rsp = 0x8000_0000_0000;
        assert_eq!(f.prepare_return(), UserReturn::Invalid);
    }

    #[test]
    fn privileged_flags_and_selectors_are_forced() {
        let mut f = syscall_frame(0x40_1000);
        f.rflags = u64::MAX;
        f.cs = 0x08;
        f.ss = 0x10;
        f.prepare_return();
        assert_eq!(f.cs, u64::from(USER_CS));
        assert_eq!(f.ss, u64::from(USER_SS));
        assert_ne!(f.rflags & RFLAGS_IF, 0);
        assert_eq!(f.rflags & (3 << 12), 0, "IOPL");
        assert_eq!(f.rflags & (1 << 14), 0, "NT");
        assert_eq!(f.rflags & (1 << 17), 0, "VM");
        assert_ne!(f.rflags & RFLAGS_FIXED, 0);
    }

    #[test]
    fn syscall_arguments_follow_linux_order() {
        let f = UserFrame { rdi: 1, rsi: 2, rdx: 3, r10: 4, r8: 5, r9: 6, rcx: 99, ..Default::default() };
        assert_eq!(f.syscall_args(), [1, 2, 3, 4, 5, 6]);
    }
}
