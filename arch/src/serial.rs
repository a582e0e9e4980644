//! The first serial port (COM1, I/O ports 0x3f8-0x3ff, a 16550 UART), which carries the kernel's
//! console. The UART itself is driven by the `uart_16550` crate; this module owns its ports.
//!
//! Input: the crate's `init` leaves the "received data available" interrupt enabled (IER bit 0) and
//! OUT2 set in the modem control register (the bit that gates the UART's line to the interrupt
//! controller on PCs), so a byte raises ISA IRQ 4 once the I/O APIC routes it; the handler drains
//! the receive FIFO with [`Com1::try_receive`], which also acknowledges the interrupt (reading the
//! data register clears it, 16550 datasheet, "Interrupt identification").
//! GSI 4 is COM1's line on every PC unless the MADT overrides it.
#![cfg(target_os = "none")]

use uart_16550::SerialPort;

/// COM1, initialised: 8 data bits, no parity, one stop bit, FIFOs on.
pub struct Com1(SerialPort);

impl Com1 {
    /// Initialise COM1.
    ///
    /// # Safety
    /// At most one `Com1` exists at a time: the UART's registers are shared state, and a second
    /// driver would interleave its accesses with this one's.
    pub unsafe fn init() -> Com1 {
        // SAFETY: 0x3f8 is COM1 on every PC-compatible machine and QEMU; per the caller this is
        // its only driver.
        let mut port = unsafe { SerialPort::new(0x3f8) };
        port.init();
        Com1(port)
    }

    /// Send one byte as it is, waiting until the UART can take it. (The crate's `send` turns a
    /// backspace or DEL into "BS space BS"; the terminal layer does its own erasing, so every
    /// byte goes out raw.)
    pub fn send(&mut self, byte: u8) {
        self.0.send_raw(byte);
    }

    /// One received byte, if the receive buffer holds one (line status bit 0).
    pub fn try_receive(&mut self) -> Option<u8> {
        self.0.try_receive().ok()
    }
}
