//! What the boot CPU can do, read once from CPUID (through `raw-cpuid`) and kept for every other
//! module to ask: [`Features`], reached with [`features`].
//!
//! [`init`] runs first in `kernel_main` (before memory, ACPI and the APIC, which all depend on the
//! answers) and prints one line naming the CPU and the features the kernel cares about. All CPUs of a
//! machine are assumed to match the boot CPU (the application processors are not re-checked).
//!
//! Neighbours: `apic` asks for x2APIC and TSC-deadline, `time` for the invariant TSC and the CPUID
//! frequency leaves, memory management for PCID, INVPCID, 1 GiB pages, SMEP and SMAP, the FPU code
//! for the XSAVE family.

use core::fmt::Write as _;

use alloc::string::String;
use raw_cpuid::CpuId;

/// The features of this machine's CPUs that the kernel asks about.
#[derive(Clone, Debug, Default)]
pub struct Features {
    /// Process-context identifiers (CR4.PCIDE), CPUID.1:ECX.PCID.
    pub pcid: bool,
    /// The INVPCID instruction, CPUID.7.0:EBX.INVPCID.
    pub invpcid: bool,
    /// x2APIC mode of the local APIC (MSR access), CPUID.1:ECX.x2APIC.
    pub x2apic: bool,
    /// The local APIC timer's TSC-deadline mode, CPUID.1:ECX.TSC-Deadline.
    pub tsc_deadline: bool,
    /// XSAVE/XRSTOR, CPUID.1:ECX.XSAVE.
    pub xsave: bool,
    /// XSAVEOPT, CPUID.0xD.1:EAX.
    pub xsaveopt: bool,
    /// XSAVES/XRSTORS (supervisor state, compacted form), CPUID.0xD.1:EAX.
    pub xsaves: bool,
    /// The TSC ticks at a constant rate in every power state, CPUID.0x80000007:EDX.
    pub invariant_tsc: bool,
    /// 1 GiB pages, CPUID.0x80000001:EDX.Page1GB.
    pub pdpe1gb: bool,
    /// Supervisor-mode execution prevention, CPUID.7.0:EBX.SMEP.
    pub smep: bool,
    /// Supervisor-mode access prevention, CPUID.7.0:EBX.SMAP.
    pub smap: bool,
    /// Running under a hypervisor, CPUID.1:ECX bit 31.
    pub hypervisor: bool,
    /// The TSC frequency in Hz as CPUID leaf 0x15 states it (crystal clock x ratio), where it does.
    pub tsc_hz_cpuid_15: Option<u64>,
    /// The processor base frequency in Hz from CPUID leaf 0x16, where present: close to the TSC
    /// frequency on the CPUs that have the leaf, but only a nominal figure.
    pub base_hz_cpuid_16: Option<u64>,
}

static FEATURES: spin::Once<Features> = spin::Once::new();

/// Read CPUID on this (the boot) CPU, print the summary line and keep the answers.
pub fn init() -> &'static Features {
    FEATURES.call_once(|| {
        let (f, line) = detect();
        log::info!("{line}");
        f
    })
}

/// The features found by [`init`]; all false before it ran.
pub fn features() -> &'static Features {
    static NONE: Features = Features {
        pcid: false,
        invpcid: false,
        x2apic: false,
        tsc_deadline: false,
        xsave: false,
        xsaveopt: false,
        xsaves: false,
        invariant_tsc: false,
        pdpe1gb: false,
        smep: false,
        smap: false,
        hypervisor: false,
        tsc_hz_cpuid_15: None,
        base_hz_cpuid_16: None,
    };
    FEATURES.get().unwrap_or(&NONE)
}

fn detect() -> (Features, String) {
    let id = CpuId::new();
    let mut f = Features::default();
    if let Some(fi) = id.get_feature_info() {
        f.pcid = fi.has_pcid();
        f.x2apic = fi.has_x2apic();
        f.tsc_deadline = fi.has_tsc_deadline();
        f.xsave = fi.has_xsave();
        f.hypervisor = fi.has_hypervisor();
    }
    if let Some(ef) = id.get_extended_feature_info() {
        f.invpcid = ef.has_invpcid();
        f.smep = ef.has_smep();
        f.smap = ef.has_smap();
    }
    if let Some(xs) = id.get_extended_state_info() {
        f.xsaveopt = xs.has_xsaveopt();
        f.xsaves = xs.has_xsaves_xrstors();
    }
    if let Some(apm) = id.get_advanced_power_mgmt_info() {
        f.invariant_tsc = apm.has_invariant_tsc();
    }
    if let Some(ext) = id.get_extended_processor_and_feature_identifiers() {
        f.pdpe1gb = ext.has_1gib_pages();
    }
    f.tsc_hz_cpuid_15 = id.get_tsc_info().and_then(|t| t.tsc_frequency());
    f.base_hz_cpuid_16 = id
        .get_processor_frequency_info()
        .map(|p| u64::from(p.processor_base_frequency()) * 1_000_000)
        .filter(|&hz| hz != 0);

    let mut line = String::from("cpu: ");
    match id.get_vendor_info() {
        Some(v) => line.push_str(v.as_str()),
        None => line.push_str("unknown vendor"),
    }
    if let Some(b) = id.get_processor_brand_string() {
        let _ = write!(line, " \"{}\"", b.as_str().trim());
    }
    if let Some(fi) = id.get_feature_info() {
        let _ = write!(line, " family {:#x} model {:#x}", fi.family_id(), fi.model_id());
    }
    if f.hypervisor {
        line.push_str(" (virtual)");
    }
    let named = [
        ("pcid", f.pcid),
        ("invpcid", f.invpcid),
        ("x2apic", f.x2apic),
        ("tsc-deadline", f.tsc_deadline),
        ("xsave", f.xsave),
        ("xsaveopt", f.xsaveopt),
        ("xsaves", f.xsaves),
        ("invariant-tsc", f.invariant_tsc),
        ("pdpe1gb", f.pdpe1gb),
        ("smep", f.smep),
        ("smap", f.smap),
    ];
    line.push_str("; has:");
    for (name, _) in named.iter().filter(|(_, on)| *on) {
        let _ = write!(line, " {name}");
    }
    line.push_str("; lacks:");
    for (name, _) in named.iter().filter(|(_, on)| !*on) {
        let _ = write!(line, " {name}");
    }
    (f, line)
}
