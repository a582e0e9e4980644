//! The kernel's portable core: plain logic that the kernel binary uses and the host tests
//! (`cargo test -p kcore`). Nothing here touches hardware.
//!
//! - [`cmdline`]: the kernel command line, parsed into [`cmdline::Options`] with warnings for
//!   unknown or malformed options.
//! - [`memmap`]: the boot loader's memory map in one form for both boot paths, normalised.
//! - [`frame_alloc`]: the lock-free physical frame allocator over the memory map.
//! - [`paging`]: four-level page tables over an abstract table memory, and the direct map's plan.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod cmdline;
pub mod frame_alloc;
pub mod memmap;
pub mod paging;
