//! The direct-boot (Xen PVH) entry: from 32-bit protected mode to the kernel's Rust entry in long mode.
//!
//! QEMU's `-kernel` reads the `XEN_ELFNOTE_PHYS32_ENTRY` note below, loads each PT_LOAD segment at
//! its physical address and enters `pvh_start32` with (x86/HVM direct boot ABI, Xen's
//! `arch/x86/include/public/hvm/start_info.h`): 32-bit protected mode, paging off, flat CS/DS,
//! interrupts off, `ebx` = physical address of the `hvm_start_info` block.
//!
//! The entry builds throw-away page tables in `.bss`, turns on long mode and jumps to the higher
//! half:
//!
//! ```text
//!   PML4[0]   -> PDPT_LOW  [0..4] -> PD0..PD3   identity 0..4 GiB   (2 MiB pages, for the jump only)
//!   PML4[256] -> PDPT_LOW                       HHDM at 0xffff_8000_0000_0000 -> 0..4 GiB
//!   PML4[511] -> PDPT_HIGH [510]  -> PD0        kernel at 0xffff_ffff_8000_0000 -> 0..1 GiB
//! ```
//!
//! then calls `pvh_main(start_info_phys: u64) -> !` (defined by the kernel) on a 64 KiB boot stack.
//!
//! Before it writes anything, the entry checks that the last byte of the image (`.bss` with the
//! page tables, the boot stack and the boot heap's arena) lies in a RAM region of the start info's
//! memory map (version 1 and later; an older block is trusted). QEMU loads a kernel into a machine
//! too small to hold its `.bss` without a word, and the first write there used to end in a silent
//! triple fault: now COM1 gets one line, QEMU's `isa-debug-exit` the failure code, and the CPU halts.
//! The kernel replaces these tables with its own (W^X, NX, no identity map) early in common code.
#![cfg(target_os = "none")]

/// Where the direct-boot entry maps all physical memory below 4 GiB (the same offset Limine uses for
/// its higher-half direct map with 4-level paging).
pub const PVH_HHDM_OFFSET: u64 = 0xffff_8000_0000_0000;

// The 32-bit code uses physical addresses only (paging is off): `sym - KERNEL_VMA`, which the linker
// resolves to a value below 4 GiB because the image is linked at KERNEL_VMA + its physical address.
core::arch::global_asm!(
    r#"
    .set pvh_kernel_vma, 0xffffffff80000000

    /* Xen PVH entry note: namesz 4 ("Xen"), descsz 8, type 18 (XEN_ELFNOTE_PHYS32_ENTRY). QEMU 7.2
       reads 8 bytes for an ELF64 image, later versions 4: a .quad satisfies both. */
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .balign 4
    .quad pvh_start32 - pvh_kernel_vma
    .popsection

    .pushsection .bss.pvh_boot, "aw", @nobits
    .balign 4096
pvh_pml4:       .skip 4096
pvh_pdpt_low:   .skip 4096
pvh_pdpt_high:  .skip 4096
pvh_pd:         .skip 4 * 4096
pvh_tables_end:
    .balign 16
pvh_boot_stack: .skip 65536
pvh_boot_stack_top:
    .popsection

    .pushsection .rodata.pvh_msg, "a"
pvh_too_small_msg:
    .asciz "pvh: the kernel does not fit in this machine's RAM (its image with page tables, boot stack and boot heap is larger than the memory below it): give it at least 16 MiB\r\n"
    .popsection

    .pushsection .rodata.pvh_gdt, "a"
    .balign 16
pvh_gdt:
    .quad 0                     /* null */
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00cf92000000ffff    /* 0x10: data, DPL 0 */
pvh_gdt_end:
    .balign 8
pvh_gdt_ptr:
    .word pvh_gdt_end - pvh_gdt - 1
    .quad pvh_gdt - pvh_kernel_vma
    .popsection

    .pushsection .text.pvh32, "ax"
    .code32
    .globl pvh_start32
pvh_start32:
    cli
    cld
    mov %ebx, %esi                          /* hvm_start_info, kept in esi until pvh_main */

    /* Does RAM hold the whole image? hvm_start_info: version at +4, memmap_paddr at +40 (64-bit),
       memmap_entries at +48; each entry: addr (64), size (64), type (32, 1 = RAM), reserved. Only
       registers are used: nothing of .bss may be written before this passes. */
    cmpl $1, 4(%esi)
    jb 5f                                   /* version 0: no memory map to check against */
    mov 48(%esi), %ecx
    test %ecx, %ecx
    jz 5f
    mov 40(%esi), %edi                      /* the map is below 4 GiB under QEMU */
    mov $(__kernel_end - pvh_kernel_vma - 1), %edx   /* the image's last byte, physical */
3:  cmpl $1, 16(%edi)
    jne 4f
    cmpl $0, 4(%edi)
    jne 4f                                  /* starts above 4 GiB: past the image */
    cmp (%edi), %edx
    jb 4f                                   /* starts after the last byte */
    cmpl $0, 12(%edi)
    jne 5f                                  /* 4 GiB or more long: covers it */
    mov (%edi), %eax
    add 8(%edi), %eax
    jc 5f                                   /* ends at or past 4 GiB: covers it */
    cmp %eax, %edx
    jb 5f                                   /* last byte < region end: covered */
4:  add $24, %edi
    loop 3b
    /* Not covered: say so on COM1 (polling the line status register's THR-empty bit), report
       failure to isa-debug-exit, halt. */
    mov $(pvh_too_small_msg - pvh_kernel_vma), %edi
6:  movzbl (%edi), %ecx
    test %ecx, %ecx
    jz 8f
    mov $0x3fd, %dx
7:  in %dx, %al
    test $0x20, %al
    jz 7b
    mov $0x3f8, %dx
    mov %cl, %al
    out %al, %dx
    inc %edi
    jmp 6b
8:  mov $0x11, %eax
    out %eax, $0xf4
9:  cli
    hlt
    jmp 9b
5:

    /* Zero the table pages (.bss is zeroed by the loader, but the entry does not rely on it). */
    mov $(pvh_pml4 - pvh_kernel_vma), %edi
    mov $((pvh_tables_end - pvh_pml4) / 4), %ecx
    xor %eax, %eax
    rep stosl

    /* PML4[0] and PML4[256] -> PDPT_LOW; PML4[511] -> PDPT_HIGH (present | writable). */
    mov $(pvh_pdpt_low - pvh_kernel_vma + 3), %eax
    mov %eax, (pvh_pml4 - pvh_kernel_vma)
    mov %eax, (pvh_pml4 - pvh_kernel_vma + 256 * 8)
    mov $(pvh_pdpt_high - pvh_kernel_vma + 3), %eax
    mov %eax, (pvh_pml4 - pvh_kernel_vma + 511 * 8)

    /* PDPT_LOW[0..4] -> PD0..PD3; PDPT_HIGH[510] -> PD0. */
    mov $(pvh_pd - pvh_kernel_vma + 3), %eax
    mov %eax, (pvh_pdpt_high - pvh_kernel_vma + 510 * 8)
    mov $(pvh_pdpt_low - pvh_kernel_vma), %edi
    mov $4, %ecx
1:  mov %eax, (%edi)
    add $4096, %eax
    add $8, %edi
    loop 1b

    /* PD0..PD3: 2048 entries of 2 MiB pages (present | writable | page size). */
    mov $(pvh_pd - pvh_kernel_vma), %edi
    mov $0x83, %eax
    xor %edx, %edx
    mov $2048, %ecx
2:  mov %eax, (%edi)
    mov %edx, 4(%edi)
    add $0x200000, %eax
    adc $0, %edx
    add $8, %edi
    loop 2b

    /* CR4.PAE, CR3, EFER.LME|NXE, CR0.PG|WP|PE (SDM vol. 3A, 10.8.5 "Initializing IA-32e mode"). */
    mov %cr4, %eax
    or $(1 << 5), %eax
    mov %eax, %cr4
    mov $(pvh_pml4 - pvh_kernel_vma), %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx
    rdmsr
    or $((1 << 8) | (1 << 11)), %eax
    wrmsr
    mov %cr0, %eax
    or $((1 << 31) | (1 << 16) | 1), %eax
    mov %eax, %cr0

    lgdt (pvh_gdt_ptr - pvh_kernel_vma)
    ljmp $0x08, $(pvh_long_mode - pvh_kernel_vma)

    .code64
pvh_long_mode:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    movabs $pvh_higher_half, %rax
    jmp *%rax
pvh_higher_half:
    movabs $pvh_boot_stack_top, %rsp
    xor %ebp, %ebp
    mov %esi, %edi                          /* zero-extends: the start info's physical address */
    call pvh_main
    ud2
    .popsection
"#,
    options(att_syntax)
);
