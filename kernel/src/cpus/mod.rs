//! All the CPUs together: bringing the application processors up ([`bringup`]) and running a
//! function on other CPUs and waiting for it ([`xcall`]).
//!
//! Layer: above `time` (bring-up waits and calls time out), below `task`.

pub mod bringup;
pub mod xcall;
