//! Portable multiprocessor logic of the kernel: decisions and bookkeeping, no hardware access.
//!
//! The kernel calls this crate and performs the privileged steps it decides on (IPIs, CR3 writes,
//! TLB invalidations) through the `arch` crate. Everything here builds for the host as well as for
//! `x86_64-unknown-none`, so it is tested natively; no `unsafe` code at all, no allocator.
//!
//! # Modules and public API
//!
//! - [`ids`]: [`CpuId`] (dense index, `CpuId::new(u32) -> Option<CpuId>`, `.index() -> usize`,
//!   `CpuId::BSP`), [`ApicId`], [`AcpiUid`] (`new(u32)`, `.get() -> u32`), and
//!   [`MAX_CPUS`]` = 512`.
//! - [`cpuset`]: [`CpuSet`], a `Copy` bitset of `MAX_CPUS` bits (`insert`, `remove`, `contains`,
//!   `len`, `is_empty`, `iter`, `union`, `intersection`, `difference`, `single`, `first_n`,
//!   shown as `{0-3,6}`), and [`AtomicCpuSet`] (`insert -> bool`, `remove -> bool`, `contains`,
//!   `insert_all`, `remove_all`, `snapshot -> CpuSet`, `take -> CpuSet`, `is_empty`; all `SeqCst`);
//!   `cpuset::limit_ids(nr_cpus)` bounds the words whole-set operations visit, once at boot.
//! - [`cpumap`]: [`CpuMap::from_firmware`]`(bsp: ApicId, cpus) -> Result<CpuMap, CpuMapError>`,
//!   then `nr_cpus`, `cpus`, `cpu_of(ApicId)`, `apic_of(CpuId)`, `acpi_uid_of(CpuId)`, `iter`;
//!   [`choose_cpus`] picks what the map is built from (the boot CPU, then the first others up to
//!   `maxcpus` and [`MAX_CPUS`]).
//! - [`handshake`]: [`handshake::ApState`], the boot CPU / AP bring-up hand-shake (`start`,
//!   `arrive`, `go_online`, `abandon_if`, `phase`).
//! - [`pcid`]: [`Pcid`] (`new(u16) -> Option<Pcid>`, valid 1..=4095), [`AsId`] (`new(u64)`), and
//!   the per-CPU [`PcidTable<N = 6>`](PcidTable): `switch_to(AsId, as_gen: u64) -> SwitchIn
//!   { pcid, flush, kind: Hit | Stale | Miss | Recycled(AsId) }`, `switch_to_kernel()`,
//!   `current() -> Option<(AsId, Pcid)>`, `slot_of(AsId) -> Option<(Pcid, u64)>`,
//!   `note_flushed(AsId, tlb_gen) -> bool`, `forget(AsId) -> Option<Pcid>`, `stats() -> PcidStats`.
//! - [`tracker`]: [`TlbTracker`] per address space (`new(AsId)`, `switch_in(CpuId, &mut PcidTable)
//!   -> SwitchIn`, `switch_out(CpuId)`, `slot_recycled(CpuId)`, `begin_change(CpuId, PageRange,
//!   &TlbStats) -> ChangePlan { new_gen, local_flush, ipi_targets, avoided, full_flush, .. }`,
//!   `flush_action(&Request, &mut PcidTable) -> FlushAction`, and `tlb_gen`, `active`,
//!   `may_cache`), [`TlbStats`] (`snapshot() -> TlbStatsSnapshot`), [`FreeAfter`]
//!   (`new(&ChangePlan, Option<Ticket>)`, `is_releasable(&[ShootdownMailbox]) -> bool`) and
//!   [`FULL_FLUSH_THRESHOLD_PAGES`]` = 32`. Its module comment gives the protocols and the
//!   ordering argument.
//! - [`shootdown`]: one [`ShootdownMailbox`] per CPU in a slice indexed by `CpuId`:
//!   `ShootdownMailbox::post(&[ShootdownMailbox], sender, targets: CpuSet, &Request) ->
//!   Result<Ticket, Busy>`, `ShootdownMailbox::service(&[ShootdownMailbox], cpu, flush:
//!   impl FnMut(&Request)) -> usize`, and the sender's `outbox()`, a [`Shootdown`] with
//!   `wait(service: impl FnMut(), timeout_check: impl FnMut() -> bool) -> Result<(), CpuSet>`
//!   and `pending() -> CpuSet`; [`Ticket::is_complete`].
//!
//! Atomics come through the private `sync` module, which swaps in loom's under `--cfg loom` so the
//! lock-free parts are model-checked.
//!
//! # Tests
//!
//! - `cargo test -p smp`: unit tests of every module, and `tests/tlb_model.rs`, which drives the
//!   real tables, trackers and mailboxes against a software model of PCID-tagged TLBs.
//! - `RUSTFLAGS="--cfg loom" cargo test -p smp --release --test loom_switch_vs_change` (and
//!   `loom_mutual_shootdown`, `loom_cpuset`): the loom models.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod cpumap;
pub mod cpuset;
pub mod handshake;
pub mod ids;
pub mod pcid;
pub mod shootdown;
mod sync;
pub mod tracker;

pub use cpumap::{CpuMap, CpuMapError, choose_cpus};
pub use cpuset::{AtomicCpuSet, CpuSet};
pub use ids::{AcpiUid, ApicId, CpuId, MAX_CPUS};
pub use pcid::{AsId, DEFAULT_PCID_SLOTS, Pcid, PcidStats, PcidTable, SwitchIn, SwitchKind};
pub use shootdown::{Busy, Shootdown, ShootdownMailbox, Ticket};
pub use tracker::{
    ChangePlan, FULL_FLUSH_THRESHOLD_PAGES, FlushAction, FreeAfter, PageRange, Request, TlbStats,
    TlbStatsSnapshot, TlbTracker,
};
