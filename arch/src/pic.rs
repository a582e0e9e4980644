//! The legacy interrupt controllers, only to silence them: the kernel uses no device interrupts
//! yet, so every I/O APIC pin and both 8259 PICs are masked at boot.
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
