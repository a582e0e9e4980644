//! Waiting and waking between user threads: futexes ([`futex`]).
//!
//! Layer: a service (no unsafe code), below `process`, which wakes a futex when a thread with
//! `CLONE_CHILD_CLEARTID` exits.

pub mod futex;
