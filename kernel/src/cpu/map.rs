//! The CPU map: which dense [`CpuId`] has which APIC id, which CPUs are online, and where each
//! one's per-CPU block is. `cpus::bringup` fills it while it starts the APs; every layer reads it.

use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use smp::{ApicId, AtomicCpuSet, CpuId, CpuMap, CpuSet, MAX_CPUS};

use super::percpu;

static MAP: spin::Once<CpuMap> = spin::Once::new();
static ONLINE: AtomicCpuSet = AtomicCpuSet::new();
/// Each CPU's APIC id by index, [`NO_APIC`] for an index that is not a CPU of the map (all of them
/// before [`install`]): the IPI path's lookup, one bounded load instead of the map's `Once` state,
/// slice and length checks.
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(NO_APIC) }; MAX_CPUS];
/// No CPU's APIC id: the x2APIC broadcast destination, which no CPU has.
const NO_APIC: u32 = u32::MAX;
static BLOCKS: [AtomicPtr<percpu::PerCpu>; MAX_CPUS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];

/// Install the map of every CPU firmware or loader listed (once, boot CPU, before any AP starts),
/// and bound CPU sets to its CPUs (`smp::cpuset::limit_ids`): no id beyond them is ever used.
pub fn install(map: CpuMap) -> &'static CpuMap {
    MAP.call_once(|| {
        smp::cpuset::limit_ids(map.nr_cpus());
        for (i, slot) in APIC_IDS.iter().enumerate().take(map.nr_cpus()) {
            if let Some(apic) = smp::CpuId::new(i as u32).and_then(|cpu| map.apic_of(cpu)) {
                slot.store(apic.get(), Ordering::Relaxed);
            }
        }
        map
    })
}

/// The map, once installed.
pub fn get() -> Option<&'static CpuMap> {
    MAP.get()
}

/// Mark `cpu` online: from now on it takes interrupts, IPIs and threads.
pub fn mark_online(cpu: CpuId) {
    ONLINE.insert(cpu);
}

/// The CPUs that are online (the boot CPU alone before `cpus::bringup::start`).
pub fn online() -> CpuSet {
    let mut s = ONLINE.snapshot();
    s.insert(CpuId::BSP);
    s
}

/// How many CPUs are online.
pub fn nr_online() -> u32 {
    online().len() as u32
}

/// The APIC id of `cpu`, if it is one of the CPUs in the map (none before [`install`]).
///
/// Read from a table the boot CPU filled in `install` before any AP started (an AP's start is
/// ordered after it), so a relaxed load sees it on every CPU that can send an IPI.
#[inline]
pub fn apic_id_of(cpu: CpuId) -> Option<ApicId> {
    let raw = APIC_IDS.get(cpu.index())?.load(Ordering::Relaxed);
    (raw != NO_APIC).then_some(ApicId::new(raw))
}

/// The per-CPU block of an online CPU (for reading its counters).
#[cfg_attr(not(any(feature = "ktest", feature = "kbench")), expect(dead_code, reason = "only the in-kernel tests and benchmarks use it so far"))]
pub fn percpu_of(cpu: CpuId) -> Option<&'static percpu::PerCpu> {
    let p = BLOCKS[cpu.index()].load(Ordering::Acquire);
    // SAFETY: only `register_block` stores here, a pointer to a block that is never freed and whose
    // shared fields are atomics or set once before it was stored.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// Record `block` as the per-CPU block of `cpu` (boot CPU, at bring-up, before `cpu` is marked
/// online).
pub fn register_block(cpu: CpuId, block: &'static percpu::PerCpu) {
    BLOCKS[cpu.index()].store((block as *const percpu::PerCpu).cast_mut(), Ordering::Release);
}

