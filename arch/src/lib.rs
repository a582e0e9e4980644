//! Everything that is x86_64 machine code in this kernel lives in this crate.
//!
//! Two halves:
//! - modules that also build and run on a Linux host in user space (`switch`, `fpu`, `tsc`, `probe`), so the
//!   very routine the kernel switches threads with can be tested and benchmarked natively;
//! - privileged modules (`cfg(target_os = "none")`): entry code, interrupt stubs, control registers,
//!   local APIC, descriptor tables.
//!
//! Neighbours: `smp` and `sched` call the portable half; `kernel` wires the privileged half.
#![cfg_attr(not(test), no_std)]

pub mod tsc;
pub mod probe;
pub mod switch;
pub mod fpu;
pub mod boot;
pub mod trap;
pub mod cpu;
pub mod stack;
pub mod trampoline;
pub mod testsupport;
