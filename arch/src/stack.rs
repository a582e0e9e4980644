//! Running a function on another stack: [`call_on_stack`] moves RSP to a given stack, calls the
//! function there and comes back. The kernel's tests use it to run code on a kernel stack with a
//! guard page (a deliberate overflow, for one).
#![cfg(target_os = "none")]

/// Call `f(arg)` with RSP at `stack_top`, then return to the caller's stack.
///
/// # Safety
/// `stack_top` is the 16-byte aligned top of a mapped, writable stack that nothing else uses while
/// `f` runs and that stays mapped until `f` returns (or for ever, if it does not return); `f` uses
/// no more of it than there is (or hits a guard page, which ends the kernel).
pub unsafe fn call_on_stack(stack_top: u64, f: extern "C" fn(usize), arg: usize) {
    debug_assert!(stack_top.is_multiple_of(16), "stack top {stack_top:#x} is not 16-byte aligned");
    // SAFETY: r12 is callee-saved, so it still holds the old RSP when `f` returns; the call happens
    // with RSP 16-byte aligned as the SysV ABI wants; every caller-saved register is declared
    // clobbered (clobber_abi), and the stack `f` runs on is valid per the caller's guarantee.
    unsafe {
        core::arch::asm!(
            "mov r12, rsp",
            "mov rsp, {top}",
            "call {f}",
            "mov rsp, r12",
            top = in(reg) stack_top,
            f = in(reg) f,
            in("rdi") arg,
            out("r12") _,
            clobber_abi("C"),
        );
    }
}
