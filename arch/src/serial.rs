//! The first serial port (COM1, I/O ports 0x3f8-0x3ff, a 16550 UART), which carries the kernel's
//! console. The UART itself is driven by the `uart_16550` crate; this module owns its ports.
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

    /// Send one byte, waiting until the UART can take it.
    pub fn send(&mut self, byte: u8) {
        self.0.send(byte);
    }
}
