//! Entering user mode, for the process layer (which has no unsafe code): a checked wrapper around
//! `arch::syscall::enter_user`.
//!
//! Neighbours: `space` (the address space that must be loaded), `task` (the thread must be a user
//! thread, so the scheduler has pointed TSS.RSP0 and the syscall stack at its kernel stack).

use arch::syscall::UserFrame;

use crate::{mm, task};

/// Start ring-3 code from `frame` in the space whose page tables are `root`
/// ([`crate::vm::space::AddressSpace::root`]). Never returns: the thread comes back to the kernel
/// only through system calls and exceptions, and whatever the caller's frames still own is never
/// dropped, so callers pass a plain number and drop every handle first.
///
/// # Panics
/// If that space is not the one loaded on this CPU, or the frame cannot be returned to.
pub fn enter(root: u64, frame: &UserFrame) -> ! {
    arch::interrupts::disable();
    assert_eq!(mm::current_root(), root, "entering user mode in a space that is not loaded");
    let _ = task::sched();
    let ctx = task::uctx::current_address().expect("entering user mode from a thread without a user context");
    // SAFETY: 1. ring 3 was set up on every CPU at bring-up and the scheduler called
    // `switch_user` for this thread when it switched to it (the process layer spawns every
    // thread that gets here with `Builder::user_thread`), so the entry stack is this thread's; the
    // syscall hooks are set by the syscall layer before the first process starts (checked inside).
    // 2. the space is loaded (asserted) and `frame` is a valid reference. 3. the stack below is
    // abandoned: callers own nothing there any more (documented above). GS is the kernel's: this is
    // kernel code. `ctx` stays registered until the thread ends.
    unsafe { arch::syscall::enter_user(frame, ctx) }
}
