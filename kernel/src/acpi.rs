//! The firmware's ACPI tables, read once at boot with the `acpi` crate into a [`Platform`]: the
//! processors, the interrupt controllers and the timers the rest of the kernel needs.
//!
//! - Processors: every Local APIC (type 0) and Local x2APIC (type 9) entry of the MADT that is
//!   enabled or online-capable, with its APIC id and ACPI processor UID (32 bits each, so more than
//!   255 CPUs are describable). An APIC id listed twice is kept once.
//! - Interrupt controllers: the local APIC's physical address (with the MADT's 64-bit override),
//!   every I/O APIC, and whether legacy 8259 PICs exist. No device interrupts are used yet, so
//!   [`init`] masks every I/O APIC pin and both 8259s.
//! - Timers: the HPET (from its own table) and the FADT's ACPI PM timer, for `time` to calibrate
//!   the TSC and the local APIC timer against.
//!
//! Missing pieces are warned about and the boot carries on: no RSDP or no MADT leaves the boot CPU
//! alone; no HPET leaves the PM timer; neither leaves `time` to the PIT or CPUID.
//!
//! Tables are mapped read-only with `mm::map_firmware`, the I/O APICs' and a memory-mapped PM
//! timer's registers uncached with `mm::map_mmio`, all at their direct-map addresses and for good.
//! Key types: [`Platform`], [`MadtCpu`], [`IoApicInfo`], [`HpetInfo`], [`PmTimer`]. Neighbours:
//! `mm` (the mappings), `apic` (local APIC address), `time` (HPET, PM timer), `cpus::bringup`
//! (processors).
//!
//! Layer: above `mm` (the mappings), below `irq`.

use alloc::vec::Vec;
use core::ptr::NonNull;

use acpi::{
    AcpiHandler, AcpiTables, PhysicalMapping,
    address::AddressSpace,
    fadt::Fadt,
    madt::{Madt, MadtEntry},
};
use smp::{AcpiUid, ApicId};

/// One processor the MADT describes as usable.
#[derive(Clone, Copy, Debug)]
pub struct MadtCpu {
    pub apic_id: ApicId,
    pub uid: AcpiUid,
    /// Enabled at boot (flag bit 0); otherwise only online-capable (bit 1, ACPI 6.3).
    pub enabled: bool,
}

/// One I/O APIC.
#[derive(Clone, Copy, Debug)]
pub struct IoApicInfo {
    pub id: u8,
    pub phys: u64,
    /// The first global system interrupt its pins carry.
    pub gsi_base: u32,
    /// Its number of redirection entries (pins).
    pub pins: u32,
    /// Where its register window is mapped (uncached), once [`init`] mapped it; 0 before.
    pub va: u64,
}

/// An ISA interrupt the MADT moves to another global system interrupt (type 2 entry, ACPI 6.5
/// 5.2.12.5), with its MPS INTI flags: polarity in bits 0-1 (3 = active low), trigger mode in
/// bits 2-3 (3 = level).
#[derive(Clone, Copy, Debug)]
pub struct IsaOverride {
    pub irq: u8,
    pub gsi: u32,
    pub flags: u16,
}

/// The high-precision event timer, as its ACPI table describes it.
#[derive(Clone, Copy, Debug)]
pub struct HpetInfo {
    pub phys: u64,
    pub counter_64bit: bool,
    pub comparators: u8,
}

/// The ACPI power-management timer: 3.579545 MHz, 24 or 32 bits wide.
#[derive(Clone, Copy, Debug)]
pub enum PmTimer {
    Port { port: u16, bits32: bool },
    Mmio { phys: u64, bits32: bool },
}

/// Everything the kernel took from the ACPI tables.
#[derive(Debug, Default)]
pub struct Platform {
    /// Usable processors in MADT order (empty without a MADT).
    pub cpus: Vec<MadtCpu>,
    /// MADT processor entries that were neither enabled nor online-capable.
    pub cpus_unusable: usize,
    /// Physical address of the local APIC registers per the MADT (None without a MADT).
    pub lapic_phys: Option<u64>,
    pub ioapics: Vec<IoApicInfo>,
    pub isa_overrides: Vec<IsaOverride>,
    /// The MADT's PCAT_COMPAT flag: legacy 8259 PICs are present (assumed without a MADT).
    pub has_8259: bool,
    pub hpet: Option<HpetInfo>,
    pub pm_timer: Option<PmTimer>,
}

static PLATFORM: spin::Once<Platform> = spin::Once::new();

/// Maps ACPI tables with `mm::map_firmware`; the mappings stay (they are cheap and tables are read
/// again by whoever needs them), so there is nothing to unmap.
#[derive(Clone, Copy)]
struct FirmwareMap;

impl AcpiHandler for FirmwareMap {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        let va = crate::mm::map_firmware(physical_address as u64, size as u64) as *mut T;
        // SAFETY: map_firmware made `size` bytes at `va` readable (tables in reserved memory are
        // mapped there, RAM already is); it is never null (the offset is a kernel-half address).
        unsafe {
            PhysicalMapping::new(physical_address, NonNull::new_unchecked(va), size, size, *self)
        }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// Read the tables, print what was found, mask every I/O APIC pin and the 8259s.
/// Boot CPU, once, after memory management is up.
pub fn init(rsdp_phys: Option<u64>) -> &'static Platform {
    PLATFORM.call_once(|| {
        let mut p = read(rsdp_phys);
        mask_legacy_interrupts(&mut p);
        report(&p);
        p
    })
}

/// What [`init`] found; an empty platform (boot CPU alone, no timers) before it ran.
pub fn platform() -> &'static Platform {
    static NONE: Platform = Platform {
        cpus: Vec::new(),
        cpus_unusable: 0,
        lapic_phys: None,
        ioapics: Vec::new(),
        isa_overrides: Vec::new(),
        has_8259: true,
        hpet: None,
        pm_timer: None,
    };
    PLATFORM.get().unwrap_or(&NONE)
}

fn read(rsdp_phys: Option<u64>) -> Platform {
    let mut p = Platform { has_8259: true, ..Platform::default() };
    let tables = match rsdp_phys {
        // SAFETY: the loader reported this address as the RSDP; the crate validates its signature
        // and checksum before trusting anything behind it.
        Some(pa) => unsafe { AcpiTables::from_rsdp(FirmwareMap, pa as usize) },
        // SAFETY: this kernel boots through BIOS-compatible paths (PVH, Limine on BIOS or UEFI with
        // the RSDP handed over); the search only reads the EBDA and 0xe0000-0xfffff, both mapped.
        None => unsafe { AcpiTables::search_for_rsdp_bios(FirmwareMap) },
    };
    let tables = match tables {
        Ok(t) => t,
        Err(e) => {
            log::warn!("acpi: no usable RSDP ({e:?}): only the boot CPU will run, timers fall back to the PIT");
            return p;
        }
    };
    match tables.find_table::<Madt>() {
        Ok(madt) => read_madt(&mut p, madt.get()),
        Err(e) => log::warn!("acpi: no MADT ({e:?}): only the boot CPU will run"),
    }
    match acpi::HpetInfo::new(&tables) {
        Ok(h) => {
            p.hpet = Some(HpetInfo {
                phys: h.base_address as u64,
                counter_64bit: h.main_counter_is_64bits(),
                comparators: h.num_comparators(),
            })
        }
        Err(e) => log::warn!("acpi: no HPET table ({e:?}): timers are calibrated against the PM timer"),
    }
    match tables.find_table::<Fadt>() {
        Ok(fadt) => {
            let bits32 = { fadt.flags }.pm_timer_is_32_bit();
            p.pm_timer = match fadt.pm_timer_block() {
                Ok(Some(gas)) => match gas.address_space {
                    AddressSpace::SystemIo => match u16::try_from(gas.address) {
                        Ok(port) => Some(PmTimer::Port { port, bits32 }),
                        Err(_) => None,
                    },
                    AddressSpace::SystemMemory => {
                        crate::mm::map_mmio(gas.address, 4);
                        Some(PmTimer::Mmio { phys: gas.address, bits32 })
                    }
                    _ => None,
                },
                Ok(None) | Err(_) => None,
            };
            if p.pm_timer.is_none() {
                log::warn!("acpi: the FADT describes no usable PM timer");
            }
        }
        Err(e) => log::warn!("acpi: no FADT ({e:?}): no PM timer"),
    }
    p
}

fn read_madt(p: &mut Platform, madt: core::pin::Pin<&Madt>) {
    p.lapic_phys = Some(u64::from(madt.local_apic_address));
    p.has_8259 = madt.supports_8259();
    for e in madt.entries() {
        match e {
            MadtEntry::LocalApic(l) => add(p, u32::from(l.apic_id), u32::from(l.processor_id), l.flags),
            MadtEntry::LocalX2Apic(x) => add(p, x.x2apic_id, x.processor_uid, x.flags),
            MadtEntry::IoApic(io) => p.ioapics.push(IoApicInfo {
                id: io.io_apic_id,
                phys: u64::from(io.io_apic_address),
                gsi_base: io.global_system_interrupt_base,
                pins: 0,
                va: 0,
            }),
            MadtEntry::InterruptSourceOverride(o) if o.bus == 0 => p.isa_overrides.push(IsaOverride {
                irq: o.irq,
                gsi: o.global_system_interrupt,
                flags: o.flags,
            }),
            MadtEntry::LocalApicAddressOverride(o) => p.lapic_phys = Some(o.local_apic_address),
            _ => {}
        }
    }
}

/// Record one MADT processor entry: flag bit 0 is "enabled", bit 1 "online capable".
fn add(p: &mut Platform, apic: u32, uid: u32, flags: u32) {
    let (enabled, online_capable) = (flags & 1 != 0, flags & 2 != 0);
    if !(enabled || online_capable) {
        p.cpus_unusable += 1;
    } else if !p.cpus.iter().any(|c| c.apic_id.get() == apic) {
        p.cpus.push(MadtCpu { apic_id: ApicId::new(apic), uid: AcpiUid::new(uid), enabled });
    }
}

fn report(p: &Platform) {
    // Without a MADT (warned about already) there are no processors or controllers to list.
    if let Some(lapic) = p.lapic_phys {
        let online_capable = p.cpus.iter().filter(|c| !c.enabled).count();
        log::info!(
            "acpi: {} CPUs in the MADT ({} enabled, {} online-capable, {} unusable), local APIC at {lapic:#x}, {} I/O APIC(s), 8259 PICs {}",
            p.cpus.len(),
            p.cpus.len() - online_capable,
            online_capable,
            p.cpus_unusable,
            p.ioapics.len(),
            if p.has_8259 { "present" } else { "absent" },
        );
    }
    for io in p.ioapics.iter() {
        log::info!(
            "acpi: I/O APIC id {} at {:#x}, GSIs {}-{}",
            io.id,
            io.phys,
            io.gsi_base,
            io.gsi_base + io.pins.max(1) - 1
        );
    }
    match (&p.hpet, &p.pm_timer) {
        (Some(h), pm) => log::info!(
            "acpi: HPET at {:#x} ({}-bit counter, {} comparators), PM timer {}",
            h.phys,
            if h.counter_64bit { 64 } else { 32 },
            h.comparators,
            pm_timer_name(pm)
        ),
        (None, pm) => log::info!("acpi: no HPET, PM timer {}", pm_timer_name(pm)),
    }
}

fn pm_timer_name(pm: &Option<PmTimer>) -> alloc::string::String {
    match pm {
        Some(PmTimer::Port { port, bits32 }) => alloc::format!("at port {port:#x} ({} bits)", if *bits32 { 32 } else { 24 }),
        Some(PmTimer::Mmio { phys, bits32 }) => alloc::format!("at {phys:#x} ({} bits)", if *bits32 { 32 } else { 24 }),
        None => alloc::string::String::from("absent"),
    }
}

/// Mask every I/O APIC pin (noting how many each has) and both legacy PICs: nothing may interrupt
/// through them until a driver routes its line on purpose.
fn mask_legacy_interrupts(p: &mut Platform) {
    let mut masked = 0u32;
    for io in p.ioapics.iter_mut() {
        let va = crate::mm::map_mmio(io.phys, 0x20);
        // SAFETY: the MADT names this as an I/O APIC's register window, mapped uncached just now;
        // only the boot CPU touches I/O APICs here, and [`route_isa_irq`] later under its lock.
        io.pins = unsafe { arch::pic::mask_ioapic(va) };
        io.va = va;
        masked += io.pins;
    }
    if p.has_8259 {
        // SAFETY: 0x21 and 0xa1 are the 8259s' interrupt mask registers on every PC-compatible
        // machine that has them (the MADT says it does); all ones masks every line.
        unsafe { arch::pic::mask_8259() };
    }
    log::info!(
        "acpi: masked {masked} I/O APIC pins{} (drivers route the lines they use)",
        if p.has_8259 { " and both 8259 PICs" } else { "" }
    );
}

/// Why an ISA interrupt could not be routed.
#[derive(Clone, Copy, Debug)]
pub enum RouteError {
    /// No I/O APIC carries the line's global system interrupt.
    NoIoApic { gsi: u32 },
    /// The destination's APIC id does not fit the redirection entry's 8-bit physical destination.
    DestinationTooHigh { apic_id: u32 },
}

impl core::fmt::Display for RouteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RouteError::NoIoApic { gsi } => write!(f, "no I/O APIC carries GSI {gsi}"),
            RouteError::DestinationTooHigh { apic_id } => {
                write!(f, "APIC id {apic_id} does not fit an I/O APIC's 8-bit destination")
            }
        }
    }
}

/// Deliver ISA interrupt `irq` as `vector` to the CPU whose APIC id is `dest_apic_id`: the MADT's
/// override for the line applies (its GSI, polarity and trigger mode), else GSI `irq`, active high,
/// edge triggered. Returns the GSI used. The caller registered a handler for `vector` first.
pub fn route_isa_irq(irq: u8, vector: u8, dest_apic_id: u32) -> Result<u32, RouteError> {
    static ROUTING: spin::Mutex<()> = spin::Mutex::new(());
    let p = platform();
    let (gsi, active_low, level) = match p.isa_overrides.iter().find(|o| o.irq == irq) {
        Some(o) => (o.gsi, o.flags & 3 == 3, (o.flags >> 2) & 3 == 3),
        None => (u32::from(irq), false, false),
    };
    let io = p
        .ioapics
        .iter()
        .find(|io| io.va != 0 && gsi >= io.gsi_base && gsi < io.gsi_base + io.pins)
        .ok_or(RouteError::NoIoApic { gsi })?;
    let dest = u8::try_from(dest_apic_id).map_err(|_| RouteError::DestinationTooHigh { apic_id: dest_apic_id })?;
    let _one_at_a_time = ROUTING.lock();
    // SAFETY: `io.va` is this I/O APIC's register window, mapped uncached by `init`; the pin is
    // below its pin count; the ROUTING lock keeps IOREGSEL/IOWIN pairs from interleaving (nothing
    // else touches I/O APICs after boot); the caller registered the vector's handler.
    unsafe { arch::pic::route_ioapic(io.va, gsi - io.gsi_base, vector, dest, active_low, level) };
    Ok(gsi)
}
