//! Machine-level probes for tests: what the stack pointer is at a call site.
//!
//! [`caller_stack_pointer`] returns the stack pointer its caller had just before the `call`
//! instruction, so a test can record it at a fixed point of a thread (after each context switch, say)
//! and check that it never moves and keeps the 16-byte alignment the System V ABI demands at every
//! call. Portable: it runs in the kernel and in host unit tests alike.
//!
//! Neighbours: the kernel's scheduler tests (`kernel/src/sched_tests.rs`) use it against
//! [`crate::switch`]; nothing else depends on it.

/// The stack pointer the caller had just before its `call` to this function (the return address
/// excluded). The System V ABI requires it to be a multiple of 16 at every call site.
#[unsafe(naked)]
pub extern "C" fn caller_stack_pointer() -> u64 {
    // At entry `rsp` points at the return address the call pushed; one word above is the caller's
    // stack pointer before the call.
    core::arch::naked_asm!("lea rax, [rsp + 8]", "ret")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn probe_twice() -> (u64, u64) {
        let a = caller_stack_pointer();
        let b = caller_stack_pointer();
        (a, b)
    }

    #[test]
    fn caller_stack_pointer_is_aligned_and_stable_at_one_call_site() {
        let (a, b) = probe_twice();
        assert_eq!(a % 16, 0, "stack pointer {a:#x} at a call is not 16-byte aligned");
        assert_eq!(a, b, "two calls from the same frame saw different stack pointers");
        let local = 0u8;
        let here = &raw const local as u64;
        // The probe's caller frame lies below this frame's locals (the stack grows down), close by.
        assert!(a < here && here - a < 4096, "stack pointer {a:#x} is not just below a local at {here:#x}");
    }
}
