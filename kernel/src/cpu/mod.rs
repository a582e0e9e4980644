//! This CPU, and the devices every layer above writes to: the per-CPU block reached through GS
//! ([`percpu`]), the map of all CPUs ([`map`]), the CPU's features ([`features`]), the
//! interrupts-off spin lock ([`irqlock`]), the serial console ([`console`]), the power-off
//! device ([`power`]), the ring-3 entry set-up ([`ring3`]) and the scheduling trace's gate, rings
//! and dump ([`trace`]).
//!
//! Layer: the lowest but the test registry: `boot` sits above it (the entries write to the
//! console first), and so does everything else. Nothing here allocates or maps memory.

pub mod console;
pub mod features;
pub mod irqlock;
pub mod map;
pub mod percpu;
pub mod power;
pub mod ring3;
pub mod trace;
