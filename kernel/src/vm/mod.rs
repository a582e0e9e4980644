//! Address spaces: user page tables, their tracked CPUs, and the TLB work their changes need
//! ([`space`]); this CPU's TLB, PCID mode and shootdown delivery ([`tlb`]); entering user mode
//! ([`user`]).
//!
//! Layer: above `task` (a space's edits sleep on a scheduler mutex, its threads are spawned
//! there), below the services.

pub mod space;
pub mod tlb;
pub mod user;
