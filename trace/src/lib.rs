//! A trace of scheduling events: what each CPU did and when, recorded cheaply in the kernel and
//! turned into timelines on the host.
//!
//! # Modules and public API
//! - [`event`]: [`Record`] (32 bytes: `tsc`, `a`, `b`, `c`, `cpu`, `kind`, `arg`; constructors
//!   `switch`, `wakeup`, `steal`, `ipi_send`, `ipi_receive`, `shootdown_begin/ack/done`),
//!   [`Kind`] (with its [`Category`]), [`Reason`], [`IpiKind`] and the `arg` flags.
//! - [`mask`]: [`Mask`], a set of categories, parsed from `trace` / `trace=sched,ipi,...`
//!   (`Mask::from_option`, `Mask::from_cmdline`, `Mask::parse_list`).
//! - [`ring`]: [`Ring`], one CPU's lock-free overwrite ring (`push` never blocks; `read` visits the
//!   surviving records and counts the lost ones).
//! - [`tracer`]: [`Gate`] (the enable mask a hook site tests: one load, one branch) and
//!   [`Tracer`] (a ring per CPU, the thread-name table, `record`, `dump`).
//! - [`dump`]: the byte format that leaves the machine ([`dump::Sink`], `write_*`,
//!   [`Dump::parse`]).
//! - [`check`]: the conservation rules over a parsed dump ([`check::check`] -> [`check::Report`]).
//! - [`synth`]: synthetic dumps from a simulated scheduler ([`synth::generate`]), for tests and demos.
//!
//! Portable and `no_std` (with `alloc`): the kernel records and dumps with it, the host tool
//! (`trace/tool`) and the kernel's trace test read dumps and check them with it. Time stamps come
//! from the caller (the kernel reads the TSC in `arch`), so the crate has no hardware access and
//! no `unsafe` code. Atomics come through the private `sync` module, which swaps in loom's under
//! `--cfg loom`.
//!
//! # Tests
//! - `cargo test -p trace`: unit tests of every module, and `tests/check.rs`, which runs the
//!   conservation check over synthetic dumps, whole and with single events removed.
//! - `RUSTFLAGS="--cfg loom" cargo test -p trace --release --test loom_ring`: the ring's model.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod check;
pub mod dump;
pub mod event;
pub mod mask;
pub mod ring;
mod sync;
pub mod synth;
pub mod tracer;

pub use dump::Dump;
pub use event::{Category, IpiKind, Kind, Reason, Record};
pub use mask::Mask;
pub use ring::Ring;
pub use tracer::{Gate, Tracer};
