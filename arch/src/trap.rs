//! Interrupt and exception entry: 256 small stubs and one common path into the kernel's Rust handler.
//!
//! Every vector enters a stub that makes the stack uniform (a dummy error code where the CPU pushes
//! none: SDM vol. 3A, table 6-1 lists the vectors with an error code), pushes its vector number and
//! joins a common path, which saves the general registers and calls
//! `trap_dispatch(frame: *mut TrapFrame)` (defined by the kernel): `trap_common` for exceptions
//! (vectors 0-31) and for every entry from ring 3 saves all fifteen, which a fault report prints and
//! a signal frame saves and restores; `trap_common_irq` for interrupts (32-255) of ring 0 stores
//! only the nine caller-saved ones (`rax`, `rcx`, `rdx`, `rsi`, `rdi`, `r8`-`r11`) into the same
//! layout and leaves the six callee-saved fields unwritten: the Rust handler keeps those registers
//! itself, as the ABI requires; `trap_direct_irq` and `trap_direct_ipi`, the same for the
//! interrupts of ring 0 on [`DIRECT_VECTOR`] (the timer's) and [`DIRECT_VECTOR_IPI`] (the
//! reschedule IPI's), call the entry the kernel installed for the vector with
//! [`set_direct_entry`] instead of `trap_dispatch`, so a preemption, and the wake-up of a halted
//! CPU, skip the dispatcher's table. Stack on that call:
//!
//! ```text
//!  higher  +-------------+
//!          | ss          |  pushed by the CPU (RSP aligned to 16 first, SDM 6.14.2)
//!          | rsp         |
//!          | rflags      |
//!          | cs          |
//!          | rip         |
//!          | error code  |  CPU or stub
//!          | vector      |  stub
//!          | rax ... r15 |  15 register slots (interrupts: the caller-saved 9 written)
//!  lower   +-------------+  <- rdi = &TrapFrame, RSP 16-byte aligned (5+2+15 = 22 words = 176 bytes)
//! ```
//!
//! The caller-saved registers of the interrupted code are thus on its own stack, so the handler may
//! switch threads with the windowed switch (which saves only the callee-saved ones) and resume the
//! interrupted thread much later; it then returns here and `iretq` restores RFLAGS, and with it the
//! interrupted thread's interrupt flag.
//!
//! Ring 3 (see [`crate::syscall`]): when the interrupted CS has RPL 3, the CPU took the stack from
//! TSS.RSP0, so the frame sits at the top of the thread's kernel stack with the layout of
//! [`crate::syscall::UserFrame`], and GS holds the user's base: `trap_common` runs `swapgs` on the way
//! in and again on the way out (with interrupts off, just before `iretq`). Inside a user-copy loop the
//! kernel runs with RFLAGS.AC set, which an interrupt does not clear, so the entry clears it (`clac`,
//! where SMAP is on) and `iretq` restores it.
//!
//! Paranoid entry: NMI, double fault and machine check (vectors 2, 8, 18) arrive on IST stacks at any
//! instruction, including the two between an exit path's `swapgs` and its `sysretq`/`iretq`, and the
//! two of the scheduler's `swapgs` pairs (`crate::fsbase::user_bases`), where CS is the kernel's but
//! GS is the user's. So CS cannot tell `trap_paranoid` whose GS it found. Two ways, picked at run time
//! by one flag byte (`crate::fsbase::ARCH_FSGSBASE`, as the `stac` byte picks `clac`):
//!
//! - CR4.FSGSBASE on: user code may load any canonical GS base with WRGSBASE, a kernel-half one
//!   included, so no test of the value can be trusted. The entry saves the interrupted GS base
//!   (RDGSBASE, into `rbx`, callee-saved across the handler), loads this CPU's own base (WRGSBASE)
//!   from the slot the IST stack keeps above the CPU's frame (`crate::gdt`: at a constant offset from
//!   RSP here, found without GS), and on exit writes the saved base back, whatever it was: GS is then
//!   exactly as interrupted, user's or kernel's, and IA32_KERNEL_GS_BASE is never touched (what
//!   Linux does since 5.9). No `swapgs` on this path.
//! - FSGSBASE off: user code cannot set GS base at all, and the kernel only lets a thread have 0, so
//!   the sign of the base (MSR IA32_GS_BASE) tells: the kernel's per-CPU blocks live in the upper
//!   half, user GS bases in the lower half; the entry swaps in and back out only when it found a
//!   user base.
#![cfg(target_os = "none")]

use core::sync::atomic::{AtomicPtr, Ordering};

/// The saved state of an interrupted context, as the common paths lay it out. For interrupts
/// (vectors 32-255) of ring 0, `rbx`, `rbp` and `r12`-`r15` are not written: read them only for
/// exceptions and entries from ring 3.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub rax: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 22 * 8);

// The view below relies on the two layouts being the same, field for field.
const _: () = {
    use core::mem::offset_of;

    use crate::syscall::UserFrame as U;
    assert!(core::mem::size_of::<U>() == core::mem::size_of::<TrapFrame>());
    macro_rules! same {
        ($($t:ident = $u:ident),*) => { $( assert!(offset_of!(TrapFrame, $t) == offset_of!(U, $u)); )* };
    }
    same!(r15 = r15, r14 = r14, r13 = r13, r12 = r12, rbp = rbp, rbx = rbx, rax = rax, r11 = r11, r10 = r10, r9 = r9);
    same!(r8 = r8, rdi = rdi, rsi = rsi, rdx = rdx, rcx = rcx, vector = kind, error_code = orig_rax, rip = rip, cs = cs);
    same!(rflags = rflags, rsp = rsp, ss = ss);
};

impl TrapFrame {
    /// An entry from ring 3 as the [`crate::syscall::UserFrame`] it is (the same 22 words; `kind` is
    /// the vector, `orig_rax` the error code), so that signal delivery treats a system call and an
    /// interrupt alike. `None` for an entry from ring 0.
    pub fn user_frame_mut(&mut self) -> Option<&mut crate::syscall::UserFrame> {
        if self.cs & 3 != 3 {
            return None;
        }
        // SAFETY: both types are `repr(C)` structs of 22 `u64`s with the same fields at the same
        // offsets (asserted above), every bit pattern is valid for both, and the exclusive borrow
        // of `self` moves to the result.
        Some(unsafe { &mut *(self as *mut TrapFrame).cast::<crate::syscall::UserFrame>() })
    }
}

macro_rules! trap_stubs {
    ($($v:literal)*) => {
        core::arch::global_asm!(
            $(
                concat!(".pushsection .text.trap_stubs, \"ax\"\n",
                        ".balign 16\n",
                        "trap_stub_", $v, ":\n",
                        // Vectors 8, 10-14, 17, 21, 29 and 30 come with an error code.
                        ".if (", $v, " != 8) && (", $v, " < 10 || ", $v, " > 14) && (", $v, " != 17) && (", $v, " != 21) && (", $v, " != 29) && (", $v, " != 30)\n",
                        "  push 0\n",
                        ".endif\n",
                        "push ", $v, "\n",
                        ".if (", $v, " == 2) || (", $v, " == 8) || (", $v, " == 18)\n",
                        "  jmp trap_paranoid\n",
                        ".elseif ", $v, " < 32\n",
                        "  jmp trap_common\n",
                        ".elseif ", $v, " == {direct}\n",
                        "  jmp trap_direct_irq\n",
                        ".elseif ", $v, " == {direct_ipi}\n",
                        "  jmp trap_direct_ipi\n",
                        ".else\n",
                        "  jmp trap_common_irq\n",
                        ".endif\n",
                        ".popsection\n"),
            )*
            ".pushsection .rodata.trap_stub_table, \"a\"\n",
            ".balign 8\n",
            ".globl trap_stub_table\n",
            "trap_stub_table:\n",
            $( concat!(".quad trap_stub_", $v, "\n"), )*
            ".popsection\n",
            direct = const DIRECT_VECTOR,
            direct_ipi = const DIRECT_VECTOR_IPI,
        );
    };
}

trap_stubs!(
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
    32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63
    64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90 91 92 93 94 95
    96 97 98 99 100 101 102 103 104 105 106 107 108 109 110 111 112 113 114 115 116 117 118 119 120 121 122 123 124 125 126 127
    128 129 130 131 132 133 134 135 136 137 138 139 140 141 142 143 144 145 146 147 148 149 150 151 152 153 154 155 156 157 158 159
    160 161 162 163 164 165 166 167 168 169 170 171 172 173 174 175 176 177 178 179 180 181 182 183 184 185 186 187 188 189 190 191
    192 193 194 195 196 197 198 199 200 201 202 203 204 205 206 207 208 209 210 211 212 213 214 215 216 217 218 219 220 221 222 223
    224 225 226 227 228 229 230 231 232 233 234 235 236 237 238 239 240 241 242 243 244 245 246 247 248 249 250 251 252 253 254 255
);

core::arch::global_asm!(
    ".pushsection .text.trap_common, \"ax\"",
    ".balign 16",
    "trap_common:",
    // rsp -> vector, error code, rip, cs: from ring 3, take the kernel's GS.
    "test byte ptr [rsp + 24], 3",
    "jz 1f",
    "swapgs",
    "1:",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push rax",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "cmp byte ptr [rip + {stac}], 0",
    "je 1f",
    "clac",
    "1:",
    "mov rdi, rsp",
    "cld",
    "call trap_dispatch",
    // The handler may have enabled interrupts; none may arrive between swapgs and iretq.
    "cli",
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
    // rsp -> rip, cs
    "test byte ptr [rsp + 8], 3",
    "jz 1f",
    "swapgs",
    "1:",
    "iretq",
    "",
    ".balign 16",
    "trap_paranoid:",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push rax",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    // r12 (callee-saved): 1 on the FSGSBASE way; rbx (callee-saved): what the exit needs.
    "movzx r12d, byte ptr [rip + {fsgsbase}]",
    "test r12d, r12d",
    "jz 2f",
    "rdgsbase rbx",        // the interrupted GS base, user's or kernel's
    "mov rax, [rsp + {slot}]", // this CPU's kernel GS base, from the slot above the CPU's frame
    "wrgsbase rax",
    "jmp 3f",
    "2:",
    "mov ecx, 0xc0000101", // IA32_GS_BASE
    "rdmsr",
    "xor ebx, ebx",        // rbx: 1 when this entry swapped GS
    "test edx, edx",       // bit 63 of the base: set for the kernel's per-CPU blocks
    "js 3f",
    "swapgs",
    "mov ebx, 1",
    "3:",
    "cmp byte ptr [rip + {stac}], 0",
    "je 1f",
    "clac",
    "1:",
    "mov rdi, rsp",
    "cld",
    "call trap_dispatch",
    "test r12d, r12d",
    "jz 2f",
    "wrgsbase rbx",        // GS exactly as interrupted
    "jmp 1f",
    "2:",
    "test ebx, ebx",
    "jz 1f",
    "swapgs",
    "1:",
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
    "iretq",
    ".popsection",
    stac = sym crate::usercopy::ARCH_USERCOPY_STAC,
    fsgsbase = sym crate::fsbase::ARCH_FSGSBASE,
    // The 15 registers, vector, error code and the CPU's 5 words lie between RSP and the IST entry,
    // where the slot is (`crate::gdt`).
    slot = const core::mem::size_of::<TrapFrame>(),
);

// Interrupts (vectors 32-255) of ring 0: the same frame, but only the nine caller-saved registers
// are stored in it (interrupts of ring 3 take `trap_common`'s full save). The handler is Rust
// code, which preserves the six callee-saved ones itself (and a thread switch inside it saves them
// in the thread's window), so the interrupted code finds them intact; their six fields stay
// unwritten. One `sub`/`add` replaces fifteen pushes and pops. Three paths of the same shape:
// `trap_common_irq` calls `trap_dispatch`, `trap_direct_irq` (vector `DIRECT_VECTOR` only) the
// entry in `DIRECT_ENTRY`, `trap_direct_ipi` (vector `DIRECT_VECTOR_IPI` only) the one in
// `DIRECT_ENTRY_IPI`.
macro_rules! irq_path {
    ($label:literal, $call:literal $(, $($operand:tt)+)?) => {
        core::arch::global_asm!(
            ".pushsection .text.trap_common, \"ax\"",
            ".balign 16",
            concat!($label, ":"),
            // rsp -> vector, error code, rip, cs: from ring 3, the full save of `trap_common`
            // (which also swaps GS), so that the frame holds every user register a signal frame
            // saves and restores.
            "test byte ptr [rsp + 24], 3",
            "jnz trap_common",
            "sub rsp, {regs}",
            "mov [rsp + {rax}], rax",
            "mov [rsp + {rcx}], rcx",
            "mov [rsp + {rdx}], rdx",
            "mov [rsp + {rsi}], rsi",
            "mov [rsp + {rdi}], rdi",
            "mov [rsp + {r8}], r8",
            "mov [rsp + {r9}], r9",
            "mov [rsp + {r10}], r10",
            "mov [rsp + {r11}], r11",
            "cmp byte ptr [rip + {stac}], 0",
            "je 1f",
            "clac",
            "1:",
            "mov rdi, rsp",
            "cld",
            $call,
            // The handler may have enabled interrupts; none may arrive before iretq.
            "cli",
            "mov r11, [rsp + {r11}]",
            "mov r10, [rsp + {r10}]",
            "mov r9, [rsp + {r9}]",
            "mov r8, [rsp + {r8}]",
            "mov rdi, [rsp + {rdi}]",
            "mov rsi, [rsp + {rsi}]",
            "mov rdx, [rsp + {rdx}]",
            "mov rcx, [rsp + {rcx}]",
            "mov rax, [rsp + {rax}]",
            // The fifteen register slots, then the vector and error code.
            "add rsp, {regs} + 16",
            // Only interrupts of ring 0 come here: GS is the kernel's on both sides.
            "iretq",
            ".popsection",
            stac = sym crate::usercopy::ARCH_USERCOPY_STAC,
            regs = const core::mem::offset_of!(TrapFrame, vector),
            rax = const core::mem::offset_of!(TrapFrame, rax),
            rcx = const core::mem::offset_of!(TrapFrame, rcx),
            rdx = const core::mem::offset_of!(TrapFrame, rdx),
            rsi = const core::mem::offset_of!(TrapFrame, rsi),
            rdi = const core::mem::offset_of!(TrapFrame, rdi),
            r8 = const core::mem::offset_of!(TrapFrame, r8),
            r9 = const core::mem::offset_of!(TrapFrame, r9),
            r10 = const core::mem::offset_of!(TrapFrame, r10),
            r11 = const core::mem::offset_of!(TrapFrame, r11),
            $($($operand)+)?
        );
    };
}

irq_path!("trap_common_irq", "call trap_dispatch");
irq_path!("trap_direct_irq", "call qword ptr [rip + {entry}]", entry = sym DIRECT_ENTRY);
irq_path!("trap_direct_ipi_saving", "call qword ptr [rip + {entry}]", entry = sym DIRECT_ENTRY_IPI);

// `DIRECT_VECTOR_IPI` of ring 0: if it interrupted the idle halt (`arch_idle_halt`, its RIP the
// label after `hlt`) and the kernel installed a halt-exit entry, call that entry with nothing
// saved and return: no register of the interrupted code is live there (see `idle_halt`). Otherwise
// `trap_direct_ipi_saving`, the path every other direct vector takes. Stack at the call: the five
// words of the CPU, error code, vector and the saved `rax` slot: 64 bytes below a 16-byte aligned
// RSP, so aligned as a call needs.
core::arch::global_asm!(
    ".pushsection .text.trap_common, \"ax\"",
    ".balign 16",
    "trap_direct_ipi:",
    "test byte ptr [rsp + 24], 3",
    "jnz trap_common",
    "push rax",
    "lea rax, [rip + arch_idle_halt_resume]",
    "cmp rax, [rsp + 24]",
    "jne 1f",
    "mov rax, [rip + {entry}]",
    "test rax, rax",
    "jz 1f",
    "call rax",
    // The `rax` slot, the vector and the error code.
    "add rsp, 24",
    "iretq",
    "1:",
    "pop rax",
    "jmp trap_direct_ipi_saving",
    ".popsection",
    entry = sym HALT_EXIT_ENTRY,
);

/// A vector whose interrupts of ring 0 skip `trap_dispatch` and its handler table: their stub
/// calls the function [`set_direct_entry`] installed for it (the kernel's timer vector, which
/// preempts threads: the path every preemption takes). Its interrupts of ring 3 take
/// `trap_common` as every other vector's do.
pub const DIRECT_VECTOR: u8 = 0xf0;

/// The other vector with a direct entry from ring 0 (the kernel's reschedule IPI: the path every
/// wake-up of a halted CPU takes), as [`DIRECT_VECTOR`].
pub const DIRECT_VECTOR_IPI: u8 = 0xf1;

/// A handler `trap_direct_irq` or `trap_direct_ipi` may call: it gets the frame `trap_dispatch`
/// would get (vector and error code included), with interrupts off, and may switch threads.
pub type DirectEntry = extern "C" fn(frame: *mut TrapFrame);

unsafe extern "C" {
    /// The kernel's dispatcher of every vector.
    fn trap_dispatch(frame: *mut TrapFrame);
}

/// The function `trap_direct_irq` calls; `trap_dispatch` until [`set_direct_entry`]. Read by the
/// assembly with one load (an aligned 8-byte load, atomic on x86).
static DIRECT_ENTRY: AtomicPtr<()> = AtomicPtr::new(trap_dispatch as unsafe extern "C" fn(*mut TrapFrame) as *mut ());

/// The function `trap_direct_ipi` calls, as [`DIRECT_ENTRY`].
static DIRECT_ENTRY_IPI: AtomicPtr<()> = AtomicPtr::new(trap_dispatch as unsafe extern "C" fn(*mut TrapFrame) as *mut ());

/// Route the interrupts of ring 0 on `vector` ([`DIRECT_VECTOR`] or [`DIRECT_VECTOR_IPI`]; panics
/// for any other) to `entry` instead of `trap_dispatch`. `entry` must do for the vector what
/// `trap_dispatch` would (count, trace, handle it).
pub fn set_direct_entry(vector: u8, entry: DirectEntry) {
    let slot = match vector {
        DIRECT_VECTOR => &DIRECT_ENTRY,
        DIRECT_VECTOR_IPI => &DIRECT_ENTRY_IPI,
        _ => panic!("vector {vector:#x} has no direct entry"),
    };
    slot.store(entry as *mut (), Ordering::Release);
}

/// The function `trap_direct_ipi` calls when its interrupt ended [`idle_halt`]; null: none, that
/// interrupt takes `trap_direct_ipi_saving` as any other. Read by the assembly with one load.
static HALT_EXIT_ENTRY: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// A function the reschedule IPI that ends [`idle_halt`] calls, with interrupts off and no frame.
/// It must do for the vector what `trap_dispatch` would (count, trace, EOI) and must not switch
/// threads or enable interrupts: it returns straight to the halt's caller.
pub type HaltExitEntry = extern "C" fn();

/// Route the interrupts on [`DIRECT_VECTOR_IPI`] that end an [`idle_halt`] to `entry`, called
/// with no register saved and no frame built (the rest of that vector's interrupts of ring 0 still
/// take its direct entry, [`set_direct_entry`]).
pub fn set_halt_exit_entry(entry: HaltExitEntry) {
    HALT_EXIT_ENTRY.store(entry as *mut (), Ordering::Release);
}

/// [`crate::cpu::enable_interrupts_and_halt`] for a CPU's idle loop: enable interrupts, halt until
/// the next one, and return with interrupts disabled again. A [`DIRECT_VECTOR_IPI`] interrupt that
/// ends this halt takes the shortest way in (see [`set_halt_exit_entry`]): nothing saved, no frame.
///
/// That is sound because the halt is a call of a C-ABI function (`arch_idle_halt`): its callers
/// treat every caller-saved register and the flags as clobbered by it, the entry (Rust code)
/// preserves the callee-saved ones, and `iretq` restores RFLAGS and RSP. The direction flag is
/// clear and AC is not set at the halt (the ABI's state at a call; only the user-copy loops set
/// AC), as the entry's Rust code assumes.
#[inline(always)]
pub fn idle_halt() {
    // SAFETY: `arch_idle_halt` only enables interrupts, halts, disables them and returns; halting
    // is sound in ring 0, and the interrupt handlers that end it return there.
    unsafe { arch_idle_halt() }
}

/// The halt of [`idle_halt`]; `arch_idle_halt_resume`, right after `hlt`, is where every interrupt
/// that ends it returns (`sti` holds interrupts off for one instruction, so none arrives before
/// the `hlt`), which `trap_direct_ipi` recognises.
///
/// Only an NMI can arrive in `sti`'s shadow, and an interrupt pending behind it would then be
/// taken at the `hlt` and return into the halt, its wake-up unheeded until the next interrupt. The
/// kernel never returns from an NMI (it is the panic's stop, or a fault that ends in a panic): if
/// that changes, the NMI's return must move a saved RIP at the `hlt` to the resume label.
///
/// # Safety
/// Ring 0; called only by [`idle_halt`].
#[unsafe(naked)]
unsafe extern "C" fn arch_idle_halt() {
    core::arch::naked_asm!(
        "sti",
        "hlt",
        ".globl arch_idle_halt_resume",
        "arch_idle_halt_resume:",
        "cli",
        "ret",
    )
}

unsafe extern "C" {
    static trap_stub_table: [u64; 256];
}

/// The entry address of vector `v`'s stub, for the IDT.
pub fn stub_address(v: u8) -> u64 {
    // SAFETY: trap_stub_table is an immutable table of 256 addresses laid down by the asm above.
    unsafe { trap_stub_table[usize::from(v)] }
}
