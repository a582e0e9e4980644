//! The local APIC.

/// Signal end of interrupt to this CPU's local APIC.
pub fn eoi() {}
