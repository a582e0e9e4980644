//! Waiting and waking between user threads: futexes ([`futex`]) and the interruptible sleep that
//! signals cut short ([`intr`]).
//!
//! Layer: a service (no unsafe code), below `process`, which wakes a futex when a thread with
//! `CLONE_CHILD_CLEARTID` exits.

pub mod futex;
pub mod intr;
