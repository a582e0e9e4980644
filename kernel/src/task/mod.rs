//! Threads on these CPUs: the scheduler's [`sched::Platform`] for this kernel ([`platform`]) and
//! the scheduler instance every layer above spawns, sleeps and waits through.
//!
//! Layer: above `cpus`, below `vm` (address spaces spawn their threads here and register their
//! switch with [`platform::set_mm_switch`]).

pub mod platform;
pub mod uctx;
pub mod xstate;
#[cfg(feature = "ktest")]
mod tests;

pub use platform::{KernelPlatform, exit_user_thread, init, run_this_cpu, sched};
