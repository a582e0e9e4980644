//! Everything that is x86_64 machine code in this kernel lives in this crate.
//!
//! Two halves:
//! - modules that also build and run on a Linux host in user space (`switch`, `fpu`, `tsc`, `probe`,
//!   `marker`), so the very routine the kernel switches threads with can be tested and benchmarked
//!   natively, and the counting markers run the same in both places;
//! - privileged modules (`cfg(target_os = "none")`): entry code and interrupt stubs (`boot`,
//!   `trap`, `trampoline`), descriptor tables (`gdt` with the TSS, `idt`), control registers
//!   (`cr`), CR3 loads and TLB flushes (`mmu`), the interrupt flag (`interrupts`), MSRs (`msr`),
//!   I/O ports (`port`), memory-mapped registers (`mmio`), the legacy interrupt controllers
//!   (`pic`), the serial port (`serial`), GS-based per-CPU access and halting (`cpu`), stacks
//!   (`stack`), and ring 3: the `syscall` entry and exits (`syscall`), the user-copy routines with their
//!   exception table (`usercopy`), the user FS base (`fsbase`). The kernel reaches the hardware only
//!   through these.
//!
//! Neighbours: `sched` (and `bench`) call the portable half; `kernel` wires the privileged half.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod tsc;
pub mod probe;
pub mod switch;
pub mod fpu;
pub mod boot;
pub mod trap;
pub mod cpu;
pub mod cr;
pub mod gdt;
pub mod idt;
pub mod interrupts;
pub mod mmio;
pub mod mmu;
pub mod msr;
pub mod pic;
pub mod serial;
pub mod port;
pub mod stack;
pub mod trampoline;
pub mod testsupport;
pub mod marker;
pub mod syscall;
pub mod usercopy;
pub mod fsbase;
