//! Interrupts and faults: the IDT and the vector table ([`trap`]), the local APIC ([`apic`]),
//! inter-processor interrupts ([`ipi`]), and the fault and panic reports ([`panic`]).
//!
//! Layer: above `acpi` and `mm` (the APIC's registers are mapped through `mm`), below `time`.

pub mod apic;
pub mod ipi;
pub mod panic;
pub mod trap;
