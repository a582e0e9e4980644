//! The application processors' way in: the real-mode trampoline that INIT-SIPI-SIPI starts them
//! on, and the stack switch for CPUs a boot loader already started.
//!
//! The trampoline is position independent and copied by the boot CPU to a free page below 1 MiB;
//! a start-up IPI with vector `page >> 12` starts each AP there in real mode with CS = page >> 4,
//! IP = 0. It then climbs (SDM vol. 3A, 10.8 and 10.8.5):
//!
//! ```text
//!   16-bit real mode     CS base = the page; compute the page's linear address into ebx,
//!                        patch the far pointers and the GDT base, lgdt, CR0.PE
//!   32-bit protected     flat segments; CR4.PAE, CR3 = the kernel's PML4 (below 4 GiB),
//!                        EFER.LME|NXE, CR0.PG|WP: compatibility mode
//!   64-bit long mode     still at the page's identity address: take a ticket (lock xadd),
//!                        rsp = stacks[ticket], call entry(ticket) in the higher half
//! ```
//!
//! The data area at the end of the page (layout [`TrampolineData`], filled by the boot CPU before
//! the first start-up IPI) carries the CR3, the entry point and an array of stack tops; the ticket
//! counter hands each arriving AP its own stack, so any number of APs may climb at once. A ticket at
//! or past `nr_stacks` (an AP that was not counted on) halts. The kernel's page tables must map the
//! page at its identity address, executable, until every AP has left it.
//!
//! [`call_on_stack`] moves a CPU that Limine started (on Limine's stack) onto a kernel stack.
#![cfg(target_os = "none")]

/// The trampoline's parameters, at [`data_offset`] in the copied page. The boot CPU writes
/// `cr3`, `nr_stacks`, `stacks` and `entry` and zeroes `next_ticket`; the other fields are patched
/// by the trampoline itself.
#[repr(C)]
pub struct TrampolineData {
    /// The kernel's PML4, physical, below 4 GiB.
    pub cr3: u32,
    /// The next ticket: the number of APs that reached long mode.
    pub next_ticket: u32,
    /// How many entries `stacks` has.
    pub nr_stacks: u32,
    _pad: u32,
    /// Virtual address of an array of `nr_stacks` stack tops (16-byte aligned).
    pub stacks: u64,
    /// `extern "C" fn(ticket: u32) -> !`, entered on the ticket's stack with interrupts off.
    pub entry: u64,
}

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_data: u8;
    static ap_trampoline_end: u8;
}

/// The trampoline's bytes, to be copied to the start of a page below 1 MiB.
pub fn image() -> &'static [u8] {
    // SAFETY: the three symbols delimit the trampoline blob in .rodata (start <= data <= end).
    unsafe {
        let start = &raw const ap_trampoline_start;
        let len = (&raw const ap_trampoline_end as usize) - (start as usize);
        core::slice::from_raw_parts(start, len)
    }
}

/// Where [`TrampolineData`] sits in the copied page.
pub fn data_offset() -> usize {
    (&raw const ap_trampoline_data as usize) - (&raw const ap_trampoline_start as usize)
}

const _: () = assert!(core::mem::size_of::<TrampolineData>() == 32);

// Offsets are taken relative to ap_trampoline_start, so the code runs wherever it is copied. The
// data block must match TrampolineData: cr3 +0, next_ticket +4, nr_stacks +8, stacks +16, entry +24.
core::arch::global_asm!(
    r#"
    .set TR_CR3,       ap_trampoline_data - ap_trampoline_start
    .set TR_TICKET,    ap_trampoline_data - ap_trampoline_start + 4
    .set TR_NR_STACKS, ap_trampoline_data - ap_trampoline_start + 8
    .set TR_STACKS,    ap_trampoline_data - ap_trampoline_start + 16
    .set TR_ENTRY,     ap_trampoline_data - ap_trampoline_start + 24
    .set TR_GDTR,      tr_gdtr - ap_trampoline_start
    .set TR_FAR32,     tr_far32 - ap_trampoline_start
    .set TR_FAR64,     tr_far64 - ap_trampoline_start

    .pushsection .rodata.ap_trampoline, "a"
    .balign 4096
    .globl ap_trampoline_start
ap_trampoline_start:
    .code16
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    movzwl %ax, %ebx
    shl $4, %ebx                              /* ebx = linear address of this page */

    lea (tr_gdt - ap_trampoline_start)(%ebx), %eax
    mov %eax, (TR_GDTR + 2)                   /* GDT base: linear */
    lea (tr_32 - ap_trampoline_start)(%ebx), %eax
    mov %eax, (TR_FAR32)                      /* far pointer offset: linear */
    lea (tr_64 - ap_trampoline_start)(%ebx), %eax
    mov %eax, (TR_FAR64)

    lgdtl (TR_GDTR)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl *(TR_FAR32)

    .code32
tr_32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs

    mov %cr4, %eax
    or $(1 << 5), %eax                        /* PAE */
    mov %eax, %cr4
    mov TR_CR3(%ebx), %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx                     /* EFER: LME, NXE */
    rdmsr
    or $((1 << 8) | (1 << 11)), %eax
    wrmsr
    mov %cr0, %eax
    or $((1 << 31) | (1 << 16) | 1), %eax     /* PG, WP, PE */
    mov %eax, %cr0
    ljmp *TR_FAR64(%ebx)

    .code64
tr_64:
    mov %ebx, %ebx                            /* the upper half is undefined after the switch */
    mov $1, %eax
    lock xadd %eax, TR_TICKET(%rbx)
    cmp TR_NR_STACKS(%rbx), %eax
    jae 2f
    mov TR_STACKS(%rbx), %rsi
    mov (%rsi, %rax, 8), %rsp
    xor %ebp, %ebp
    mov %eax, %edi
    mov TR_ENTRY(%rbx), %rax
    call *%rax
2:  cli
    hlt
    jmp 2b

    .balign 16
tr_gdt:
    .quad 0                                   /* null */
    .quad 0x00cf9a000000ffff                  /* 0x08: 32-bit code */
    .quad 0x00cf92000000ffff                  /* 0x10: data */
    .quad 0x00af9a000000ffff                  /* 0x18: 64-bit code */
tr_gdtr:
    .word 4 * 8 - 1
    .long 0
    .balign 4
tr_far32:
    .long 0
    .word 0x08
    .balign 4
tr_far64:
    .long 0
    .word 0x18

    .balign 16
    .globl ap_trampoline_data
ap_trampoline_data:
    .skip 32
    .globl ap_trampoline_end
ap_trampoline_end:
    .popsection
"#,
    options(att_syntax)
);

/// Switch to the stack whose top is `stack_top` and call `entry(arg)` there; never returns.
///
/// # Safety
/// `stack_top` is the 16-byte aligned top of an unused stack that stays valid for as long as
/// `entry` runs (for ever); nothing on the current stack is used again.
pub unsafe fn call_on_stack(stack_top: u64, entry: extern "C" fn(u64) -> !, arg: u64) -> ! {
    // SAFETY: per the contract the new stack is ours; `call` pushes the return address so that
    // `entry` starts with the ABI's alignment (rsp + 8 a multiple of 16); it never returns.
    unsafe {
        core::arch::asm!(
            "mov rsp, {top}",
            "xor ebp, ebp",
            "call {entry}",
            "ud2",
            top = in(reg) stack_top,
            entry = in(reg) entry,
            in("rdi") arg,
            options(noreturn)
        )
    }
}
