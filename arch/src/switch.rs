//! The windowed context switch: the only code that moves a CPU from one thread's stack to another's.
//!
//! Key types and functions:
//! - [`Window`]: one 64-byte cache line per thread holding exactly what the switch must carry
//!   itself: `rbx` and `rbp` (the two callee-saved registers the compiler cannot be told are
//!   clobbered) and the stack pointer, which points at the resume point (the return address of
//!   the thread's own call into the switch).
//! - [`switch_window`]: saves the running thread into one window and resumes another from its window;
//!   inlined at its call site as a `call` into the naked `switch_core`, with `r12`-`r15` declared
//!   clobbered.
//! - [`Window::new_thread`]: builds the first window of a thread that has never run, so the very same
//!   switch starts it (through a small start trampoline that calls its entry function).
//! - [`prefetch`]: a cache hint the scheduler uses to warm the next window and stack top early.
//!
//! Neighbours: `sched` calls this from its switch path (in the kernel and natively on a Linux host,
//! where `bench` measures it); the extended (FPU/vector) state is not part of a window, it is handled
//! separately and only for threads that use it, by [`crate::fpu`].
//!
//! Why this is all there is to save. [`switch_window`]'s `asm!` block declares every caller-saved
//! register (`rax`, `rcx`, `rdx`, `rsi`, `rdi`, `r8`-`r11`, all vector registers) and also
//! `r12`-`r15` clobbered, so the compiler keeps nothing live in them across it: a value it needs
//! after the switch it keeps in `rbx`, `rbp` or the stack, and the callee-saved registers of the
//! switching function's own caller are in its frame already (its prologue saved the ones it uses).
//! Saving `r12`-`r15` again in the window would store each value a second time. What is left is
//! `rbx`, `rbp` (which `asm!` may not clobber) and `rsp`; the point to resume at stays where the
//! `call` put it, on the thread's own stack, and the switch's `ret` pops it there. `rflags` is
//! deliberately not carried:
//! - the interrupt flag: the contract is that the switch is always entered with interrupts disabled
//!   and leaves with them disabled; the scheduler re-enables them afterwards from state kept on the
//!   resumed thread's own stack, so `IF` never needs to travel with the window (and a `popfq` could
//!   re-enable interrupts halfway through the switch, on a half-loaded stack);
//! - the direction flag is clear at every call boundary by the ABI;
//! - the arithmetic flags are caller-clobbered, so no caller expects them to survive a call;
//! - the remaining system flags (`IOPL`, `AC`, `NT`, ...) are constant for all kernel threads.
//!
//! The x87 control word and `MXCSR`, which the ABI also calls callee-saved, are part of the extended
//! state: threads that use it get it saved and restored by the scheduler through [`crate::fpu`];
//! kernel threads never touch it.

use core::mem::offset_of;

/// The saved execution context of a thread that is not running: one cache line.
///
/// While a thread runs, its window holds stale values; the switch writes it when the thread stops and
/// reads it when the thread resumes.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Callee-saved `rbx` (a new thread's entry function).
    pub rbx: u64,
    /// Callee-saved `rbp` (the frame pointer when frame pointers are on; a new thread's argument,
    /// which its start trampoline moves to `rdi` before it zeroes `rbp` to end backtraces).
    pub rbp: u64,
    /// The stack pointer to resume with: it points at the instruction to resume at, the return
    /// address of the thread's call into `switch_core` (or, for a thread that has never run, the
    /// start trampoline's address, which [`Window::new_thread`] put just below its stack top), and
    /// the switch's `ret` pops it, leaving the value the caller had just before its `call`.
    pub rsp: u64,
}

const _: () = assert!(core::mem::size_of::<Window>() == 64);

impl Window {
    /// The first window of a thread that has never run.
    ///
    /// Switching to it runs a start trampoline on the stack ending at `stack_top` which calls
    /// `entry(arg, handoff)` (`handoff`: what the switch that started it passed) with `rsp` 16-byte
    /// aligned (as the System V ABI requires at a call), `rbp` = 0 and the return address column
    /// marked undefined, so frame-pointer walks and unwinders stop there. `entry` receives control
    /// with interrupts still disabled, as the switch left them.
    ///
    /// `stack_top` is the exclusive upper end of the new stack; it is rounded down to 16 bytes, and
    /// the trampoline's address is written into the 8 bytes below it: the slot a suspended thread's
    /// return address occupies, which the switch's `ret` pops (so the switch has one way to resume
    /// any thread, new or not).
    ///
    /// # Safety
    /// The 8 bytes below the rounded-down `stack_top` are valid for writes, belong to the new
    /// thread's stack and are used by nothing else until that thread has started.
    pub unsafe fn new_thread(
        stack_top: *mut u8,
        entry: extern "C" fn(arg: usize, handoff: usize) -> !,
        arg: usize,
    ) -> Window {
        let top = (stack_top as u64) & !15;
        let resume = (top - 8) as *mut u64;
        // SAFETY: the caller's contract: the slot is writable stack of the new thread, unused
        // until it runs; 8-byte aligned, as `top` is 16-byte aligned.
        unsafe { resume.write(thread_start as *const () as u64) };
        Window {
            rbx: entry as usize as u64,
            rbp: arg as u64,
            rsp: top - 8,
        }
    }
}

/// Save the running thread into `*prev`, resume the thread saved in `*next`, and hand it `handoff`.
///
/// Inlined: a `call` into `switch_core` (the naked function below) from an `asm!` block that
/// declares `r12`-`r15` and every caller-saved register clobbered, so the switch itself carries
/// only `rbx`, `rbp` and `rsp` (the resume point is the return address its `call` pushed).
///
/// Returns when some later switch resumes the thread saved into `*prev`, on whichever CPU does it,
/// with its callee-saved registers and stack exactly as at the call. The return value is the
/// `handoff` argument of *that* later switch: the thread that resumes learns who switched to it
/// (the scheduler passes the outgoing thread, like Linux's `switch_to(prev, next, last)`), with no
/// memory word to write before the switch and read back after it.
///
/// # Safety
/// - `prev` is valid for writes of a [`Window`] and no other CPU reads or writes it until this switch
///   has stored it (the scheduler's `on_cpu` handshake is what guarantees that);
/// - `next` holds either a window stored by an earlier `switch_window` for a thread that is suspended
///   in that call, or a window from [`Window::new_thread`] that has not been switched to before; its
///   stack is mapped and owned by that thread, and no other CPU resumes it concurrently;
/// - in the kernel, interrupts are disabled on entry (they stay disabled; the resumed thread decides
///   when to re-enable them);
/// - the caller keeps the scheduler's bookkeeping consistent: whoever eventually switches back to
///   `prev` must do so from a thread that may legitimately run on after the call returns.
///
/// Contract of the machine code:
/// - entry: `rdi` = `prev`, `rsi` = `next`, `rdx` = `handoff`; `[rsp]` is the return address into
///   the outgoing thread;
/// - saved into `*prev`: `rbx`, `rbp` and `rsp` as it is, pointing at that return address, which
///   stays on the outgoing stack;
/// - loaded from `*next`: the same three registers; `ret` then pops the incoming thread's resume
///   point from its own stack (the return address its own `call` pushed, or the trampoline's
///   address [`Window::new_thread`] wrote just below a new thread's stack top), leaving the
///   incoming stack exactly as its caller had it before its call (or, for a new thread, at its
///   16-byte aligned top);
/// - `rax` = `handoff` when the incoming thread resumes (for a new thread, when its start trampoline
///   runs, which passes it on to the entry function);
/// - no flags are saved or restored, no memory other than the two windows is written, and the
///   only stack read is that one slot of the incoming stack; `r12`-`r15` hold whatever the other
///   thread left in them (the `asm!` block says so).
///
/// Why `ret` and not a `jmp` to a resume point kept in the window: the `call` into this function
/// pushed a return-stack buffer entry that a `jmp` would never pop, so after a switch every `ret`
/// of the resumed thread would be predicted one frame off (Intel SDM vol. 3, and the optimization
/// manual's "return stack buffer" rules: calls and returns must pair). With the `ret`, the entry
/// the `call` pushed is the one popped. Every switch of the scheduler is made from one call site,
/// so that prediction is right: the resumed thread returns to the same instruction the outgoing
/// one called from.
#[inline(always)]
pub unsafe fn switch_window(prev: *mut Window, next: *const Window, handoff: usize) -> usize {
    let resumed_by: usize;
    // SAFETY: the caller's contract above; `switch_core` follows the calling convention this block
    // declares (arguments in rdi, rsi, rdx; result in rax; r12-r15 and the caller-saved registers
    // clobbered; rbx, rbp and rsp as they were), and the block is not `nostack`, so the compiler
    // keeps nothing below `rsp` for the `call` to overwrite and aligns `rsp` for it.
    unsafe {
        core::arch::asm!(
            "call {core}",
            core = sym switch_core,
            inout("rdi") prev => _,
            inout("rsi") next => _,
            inout("rdx") handoff => _,
            lateout("rax") resumed_by,
            out("r12") _,
            out("r13") _,
            out("r14") _,
            out("r15") _,
            clobber_abi("C"),
        );
    }
    resumed_by
}

/// The switch's machine code, entered only by the `call` in [`switch_window`] (see its contract).
///
/// # Safety
/// As for [`switch_window`]; called only from its `asm!` block.
#[unsafe(naked)]
unsafe extern "C" fn switch_core(prev: *mut Window, next: *const Window, handoff: usize) -> usize {
    core::arch::naked_asm!(
        ".cfi_startproc",
        // Outgoing thread: the two callee-saved registers, and rsp with the return address still
        // on top: it is where the outgoing thread resumes, and a resumption's `ret` pops it.
        "mov [rdi + {rbx}], rbx",
        "mov [rdi + {rbp}], rbp",
        "mov [rdi + {rsp}], rsp",
        "mov rax, rdx",
        // Incoming thread. From the rsp load on, the unwind info above no longer describes the frame;
        // nothing can observe it (interrupts are off) until the ret lands in the incoming thread.
        "mov rbx, [rsi + {rbx}]",
        "mov rbp, [rsi + {rbp}]",
        "mov rsp, [rsi + {rsp}]",
        "ret",
        ".cfi_endproc",
        rbx = const offset_of!(Window, rbx),
        rbp = const offset_of!(Window, rbp),
        rsp = const offset_of!(Window, rsp),
    )
}

/// Where a thread built by [`Window::new_thread`] first runs: `rbx` = entry, `rbp` = argument, `rax`
/// = the handoff of the switch that started it, `rsp` the 16-byte aligned stack top.
///
/// It marks the bottom of the stack for backtraces (`rbp` = 0, return address undefined), passes the
/// argument in `rdi` and the handoff in `rsi`, and calls the entry function with the stack aligned as
/// the ABI requires at a call. The entry never returns; `ud2` catches it if it ever did.
///
/// # Safety
/// Never called: only entered by [`switch_window`] through a window from [`Window::new_thread`],
/// which puts a valid entry function in `rbx` and a valid stack top in `rsp`.
#[unsafe(naked)]
unsafe extern "C" fn thread_start() -> ! {
    core::arch::naked_asm!(
        ".cfi_startproc",
        ".cfi_undefined rip",
        "mov rdi, rbp",
        "xor ebp, ebp",
        "mov rsi, rax",
        "call rbx",
        "ud2",
        ".cfi_endproc",
    )
}

/// Hint the CPU to pull the cache line at `addr` into all cache levels (`prefetcht0`).
///
/// Never faults, whatever `addr` is; used to warm the next thread's window and stack top while the
/// switch path does other work.
#[inline(always)]
pub fn prefetch(addr: *const u8) {
    // SAFETY: prefetcht0 is a hint: it does not fault on any address (mapped or not), changes no
    // architectural state and writes no memory.
    unsafe {
        core::arch::asm!("prefetcht0 [{}]", in(reg) addr, options(nostack, preserves_flags, readonly))
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// Round trips per test: each is two switches, so 10^6 of them are 2 * 10^6 switches.
    const ROUND_TRIPS: u64 = 1_000_000;

    /// The caller's `rsp` just before it called this function (what the ABI requires to be 16-byte
    /// aligned at a call).
    #[unsafe(naked)]
    extern "C" fn caller_sp() -> u64 {
        core::arch::naked_asm!("lea rax, [rsp + 8]", "ret")
    }

    /// Load `seed + i` into the i-th register the switch carries (`rbx`, `rbp`), switch from `prev`
    /// to `next` through `switch_core`, and when resumed return the OR of `register ^ (seed + i)`
    /// over the two: zero exactly when both survived the round trip. (`r12`-`r15`, which the switch
    /// leaves to its caller, are pushed and popped here, as the compiler does around
    /// [`switch_window`].)
    ///
    /// # Safety
    /// As for [`switch_window`].
    #[unsafe(naked)]
    unsafe extern "C" fn switch_with_marks(
        prev: *mut Window,
        next: *const Window,
        seed: u64,
    ) -> u64 {
        core::arch::naked_asm!(
            "push rbx",
            "push rbp",
            "push r12",
            "push r13",
            "push r14",
            "push r15",
            // Six pushes on top of the return address leave rsp 8 bytes off alignment; this slot
            // fixes that and keeps the seed across the call.
            "sub rsp, 8",
            "mov [rsp], rdx",
            "mov rbx, rdx",
            "lea rbp, [rdx + 1]",
            "call {switch}",
            "mov rdx, [rsp]",
            "mov rax, rbx",
            "xor rax, rdx",
            "lea rcx, [rdx + 1]",
            "xor rcx, rbp",
            "or rax, rcx",
            "add rsp, 8",
            "pop r15",
            "pop r14",
            "pop r13",
            "pop r12",
            "pop rbp",
            "pop rbx",
            "ret",
            switch = sym switch_core,
        )
    }

    /// State shared by the test's own thread ("main") and the second context ("other").
    #[derive(Default)]
    struct PingPong {
        main: Window,
        other: Window,
        /// `caller_sp()` at the fixed point of each side, from its first round.
        main_sp: u64,
        other_sp: u64,
        /// Rounds in which the fixed-point rsp differed from the first one or was misaligned.
        main_sp_faults: u64,
        other_sp_faults: u64,
        /// Rounds in which a callee-saved register came back wrong.
        main_reg_faults: u64,
        other_reg_faults: u64,
        /// Rounds the other side completed.
        other_rounds: u64,
        /// A running checksum the other side keeps in locals across its switches.
        other_checksum: u64,
    }

    fn check_sp(sp: u64, first: &mut u64, faults: &mut u64) {
        if *first == 0 {
            *first = sp;
        }
        if sp != *first || !sp.is_multiple_of(16) {
            *faults += 1;
        }
    }

    extern "C" fn other_side(arg: usize, _handoff: usize) -> ! {
        let pp = arg as *mut PingPong;
        // Locals the compiler keeps in callee-saved registers or on this stack across the switches.
        let mut checksum = 0u64;
        let mut round = 0u64;
        loop {
            // SAFETY: main is suspended in its switch while this side runs, so this side has the
            // only access to `*pp`.
            let done = unsafe {
                check_sp(caller_sp(), &mut (*pp).other_sp, &mut (*pp).other_sp_faults);
                (*pp).other_rounds == ROUND_TRIPS
            };
            if done {
                // SAFETY: as above.
                unsafe { (*pp).other_checksum = checksum };
            }
            let seed = 0x5a5a_0000_0000_0000 | (round << 4);
            // SAFETY: both windows live in `*pp`, which outlives this side; main is suspended in a
            // switch (its window is complete) and resumes only through this call.
            let bad =
                unsafe { switch_with_marks(&raw mut (*pp).other, &raw const (*pp).main, seed) };
            // SAFETY: main is suspended again, as above.
            unsafe {
                if bad != 0 {
                    (*pp).other_reg_faults += 1;
                }
                (*pp).other_rounds += 1;
            }
            checksum = checksum.wrapping_mul(31).wrapping_add(round);
            round += 1;
        }
    }

    /// Run `ROUND_TRIPS` round trips between the test's own stack and a heap stack.
    fn ping_pong() -> Box<PingPong> {
        let mut stack = vec![0u8; 64 * 1024];
        let mut pp = Box::<PingPong>::default();
        let pp_ptr: *mut PingPong = &mut *pp;
        // SAFETY: the end pointer of the stack buffer is in bounds (one past the end).
        let top = unsafe { stack.as_mut_ptr().add(stack.len()) };
        // SAFETY: `top` ends `stack`, which only the other side uses, and it has not run yet.
        pp.other = unsafe { Window::new_thread(top, other_side, pp_ptr as usize) };
        for round in 0..=ROUND_TRIPS {
            // SAFETY: only this side runs between switches.
            unsafe {
                check_sp(
                    caller_sp(),
                    &mut (*pp_ptr).main_sp,
                    &mut (*pp_ptr).main_sp_faults,
                )
            };
            let seed = 0xa5a5_0000_0000_0000 | (round << 4);
            // SAFETY: `other` is either fresh from new_thread or suspended in its switch; its stack
            // (`stack`) lives until the end of this function, after the last switch.
            let bad = unsafe {
                switch_with_marks(&raw mut (*pp_ptr).main, &raw const (*pp_ptr).other, seed)
            };
            if bad != 0 {
                // SAFETY: as above.
                unsafe { (*pp_ptr).main_reg_faults += 1 };
            }
        }
        drop(stack);
        pp
    }

    #[test]
    fn two_million_switches_keep_stacks_fixed_and_aligned() {
        let pp = ping_pong();
        assert_eq!(
            pp.other_rounds, ROUND_TRIPS,
            "the other side ran once per round trip"
        );
        assert_eq!(
            pp.main_sp_faults, 0,
            "main's rsp at its fixed point moved or was misaligned"
        );
        assert_eq!(
            pp.other_sp_faults, 0,
            "the other side's rsp at its fixed point moved or was misaligned"
        );
        assert!(pp.main_sp.is_multiple_of(16));
        assert!(pp.other_sp.is_multiple_of(16));
    }

    #[test]
    fn callee_saved_registers_and_locals_survive_switches() {
        let pp = ping_pong();
        assert_eq!(
            pp.main_reg_faults, 0,
            "a callee-saved register of main changed across a switch"
        );
        assert_eq!(
            pp.other_reg_faults, 0,
            "a callee-saved register of the other side changed across a switch"
        );
        let expected = (0..ROUND_TRIPS).fold(0u64, |c, r| c.wrapping_mul(31).wrapping_add(r));
        assert_eq!(
            pp.other_checksum, expected,
            "locals kept across switches were corrupted"
        );
    }

    #[test]
    fn new_thread_window_is_aligned_and_marks_the_stack_bottom() {
        extern "C" fn never(_: usize, _: usize) -> ! {
            unreachable!()
        }
        let mut stack = [0u64; 4];
        // One byte past the stack's end, so the rounding down to 16 bytes is exercised.
        let top = stack.as_mut_ptr().wrapping_add(stack.len()).cast::<u8>().wrapping_add(1);
        let aligned = (top as u64) & !15;
        // SAFETY: the 8 bytes below `aligned` are within `stack`, which nothing else uses.
        let w = unsafe { Window::new_thread(top, never, 7) };
        assert_eq!(w.rsp, aligned - 8);
        assert_eq!(w.rbp, 7);
        assert_eq!(w.rbx, never as *const () as u64);
        // SAFETY: `w.rsp` points into `stack`, just written by `new_thread`.
        assert_eq!(unsafe { *(w.rsp as *const u64) }, thread_start as *const () as u64);
    }

    /// Windows and what each side saw for the handoff test.
    #[derive(Default)]
    struct Handoff {
        main: Window,
        other: Window,
        /// The handoff `other_entry` got at its start, and what each of its switches returned.
        other_saw: Vec<usize>,
    }

    extern "C" fn other_entry(arg: usize, handoff: usize) -> ! {
        let h = arg as *mut Handoff;
        // SAFETY: main is suspended in its switch while this side runs: the only access to `*h`.
        unsafe { (*h).other_saw.push(handoff) };
        for round in 0.. {
            // SAFETY: as above; both windows live in `*h`, which outlives every switch.
            let got = unsafe { switch_window(&raw mut (*h).other, &raw const (*h).main, 1000 + round) };
            // SAFETY: as above.
            unsafe { (*h).other_saw.push(got) };
        }
        unreachable!()
    }

    #[test]
    fn each_resumed_side_returns_the_handoff_of_the_switch_that_resumed_it() {
        let mut stack = vec![0u8; 64 * 1024];
        let mut h = Box::<Handoff>::default();
        let h_ptr: *mut Handoff = &mut *h;
        // SAFETY: the end pointer of the stack buffer is in bounds (one past the end).
        let top = unsafe { stack.as_mut_ptr().add(stack.len()) };
        // SAFETY: `top` ends `stack`, which only the other side uses, and it has not run yet.
        h.other = unsafe { Window::new_thread(top, other_entry, h_ptr as usize) };
        let mut main_saw = Vec::new();
        for round in 0..4 {
            // SAFETY: `other` is fresh or suspended in its switch; its stack outlives the switches.
            let got = unsafe {
                switch_window(&raw mut (*h_ptr).main, &raw const (*h_ptr).other, 2000 + round)
            };
            main_saw.push(got);
        }
        drop(stack);
        assert_eq!(main_saw, [1000, 1001, 1002, 1003], "main gets what other passed");
        assert_eq!(h.other_saw, [2000, 2001, 2002, 2003], "other gets what main passed, first at entry");
    }

    #[test]
    fn prefetch_accepts_any_address() {
        let v = [1u8; 64];
        prefetch(v.as_ptr());
        prefetch(core::ptr::null());
        prefetch(usize::MAX as *const u8);
        let unused: Vec<u8> = Vec::new();
        prefetch(unused.as_ptr());
    }
}
