//! The legacy interrupt controllers: every I/O APIC pin and both 8259 PICs are masked at boot, and
//! a driver then routes the one line it uses (the serial console's) through the I/O APIC.
#![cfg(target_os = "none")]

/// Mask every redirection entry of the I/O APIC whose register window is mapped at `va`; returns
/// how many pins it has (IOAPICVER bits 16-23 hold the last entry's index). The window is IOREGSEL
/// at +0x00 and IOWIN at +0x10; entry `n` is registers `0x10 + 2n` (low half, mask bit 16) and
/// `0x11 + 2n` (82093AA I/O APIC datasheet, 3.2).
///
/// # Safety
/// `va` maps an I/O APIC's register window uncached, and nothing else uses that I/O APIC
/// meanwhile (IOREGSEL selects the register the next IOWIN access reaches).
pub unsafe fn mask_ioapic(va: u64) -> u32 {
    const IOREGSEL: u64 = 0x00;
    const IOWIN: u64 = 0x10;
    const MASKED: u32 = 1 << 16;
    // SAFETY: per the caller: the window is mapped and ours; selecting and writing redirection
    // entries only masks interrupt lines (no memory effect).
    unsafe {
        crate::mmio::write_u32(va + IOREGSEL, 1);
        let last = (crate::mmio::read_u32(va + IOWIN) >> 16) & 0xff;
        for pin in 0..=last {
            crate::mmio::write_u32(va + IOREGSEL, 0x10 + 2 * pin);
            let low = crate::mmio::read_u32(va + IOWIN);
            crate::mmio::write_u32(va + IOWIN, low | MASKED);
        }
        last + 1
    }
}

/// Mask every line of both 8259 PICs (their interrupt mask registers, ports 0x21 and 0xa1).
///
/// # Safety
/// The machine has 8259 PICs (the MADT says so), so those ports are theirs.
pub unsafe fn mask_8259() {
    // SAFETY: per the caller; all ones masks every line, which touches no memory.
    unsafe {
        crate::port::write_u8(0x21, 0xff);
        crate::port::write_u8(0xa1, 0xff);
    }
}

/// Point pin `pin` of the I/O APIC at `va` to `vector` on the CPU whose APIC id is `dest`, fixed
/// delivery, physical destination, unmasked, with the polarity and trigger mode given (ISA lines are
/// active high and edge triggered unless the MADT says otherwise). The high half (destination,
/// bits 56-63) is written first, so the entry never fires at a stale CPU (82093AA datasheet, 3.2.4).
///
/// # Safety
/// As [`mask_ioapic`]; `pin` is below the pin count it returned, and `vector` has a handler.
pub unsafe fn route_ioapic(va: u64, pin: u32, vector: u8, dest: u8, active_low: bool, level: bool) {
    const IOREGSEL: u64 = 0x00;
    const IOWIN: u64 = 0x10;
    let low = u32::from(vector) | (u32::from(active_low) << 13) | (u32::from(level) << 15);
    // SAFETY: per the caller: the window is mapped and ours, and the vector is handled.
    unsafe {
        crate::mmio::write_u32(va + IOREGSEL, 0x11 + 2 * pin);
        crate::mmio::write_u32(va + IOWIN, u32::from(dest) << 24);
        crate::mmio::write_u32(va + IOREGSEL, 0x10 + 2 * pin);
        crate::mmio::write_u32(va + IOWIN, low);
    }
}
