//! The serial console (COM1) behind the `log` facade, shared with user output and input.
//!
//! Every line is written whole under one lock taken with interrupts disabled, so lines from different
//! CPUs (and from an interrupt on the same CPU) never interleave mid-line; each carries the CPU id.
//! The panic path can take the console over even if the panicking CPU died holding the lock.
//!
//! User programs write through the same lock (the terminal layer, `tty`, sends its processed output
//! with [`ConsoleGuard::write_raw`]), one piece at a time. The console remembers whether the last
//! byte sent ended a line: a log line that would land after a user's unfinished line (a prompt)
//! starts on a new line instead, so neither tears the other. Received bytes are taken under the
//! same lock ([`ConsoleGuard::receive`]), by the terminal layer's interrupt handler.

use core::{
    fmt::Write,
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
};

use arch::serial::Com1;

use crate::cpu::percpu;

/// The lock word: 0 when free, else 1 + the id of the CPU that holds it.
static OWNER: AtomicU32 = AtomicU32::new(0);
/// Whether the last byte sent was a line feed (or nothing was sent yet); only the lock holder
/// writes it.
static AT_LINE_START: AtomicBool = AtomicBool::new(true);
static mut PORT: Option<Com1> = None;

/// A held console: writes go straight to the UART.
pub struct ConsoleGuard {
    irq_was_enabled: bool,
    reentered: bool,
}

impl ConsoleGuard {
    /// Write raw bytes (a user program's output need not be UTF-8), `\n` as CR LF.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        // SAFETY: only the holder of OWNER reaches PORT (see `lock`), so this is the only reference.
        let port = unsafe { (*(&raw mut PORT)).as_mut() };
        if let Some(port) = port {
            for &b in bytes {
                if b == b'\n' {
                    port.send(b'\r');
                }
                port.send(b);
            }
        }
        if let Some(&last) = bytes.last() {
            AT_LINE_START.store(last == b'\n', Ordering::Relaxed);
        }
    }

    /// Write bytes exactly as given (a terminal's output, already processed: its own CR LF).
    pub fn write_raw(&mut self, bytes: &[u8]) {
        // SAFETY: only the holder of OWNER reaches PORT (see `lock`), so this is the only reference.
        let port = unsafe { (*(&raw mut PORT)).as_mut() };
        if let Some(port) = port {
            for &b in bytes {
                port.send(b);
            }
        }
        if let Some(&last) = bytes.last() {
            AT_LINE_START.store(last == b'\n', Ordering::Relaxed);
        }
    }

    /// One byte the UART received, if it holds one.
    pub fn receive(&mut self) -> Option<u8> {
        // SAFETY: only the holder of OWNER reaches PORT (see `lock`), so this is the only reference.
        let port = unsafe { (*(&raw mut PORT)).as_mut() };
        port.and_then(|p| p.try_receive())
    }

    /// Start a new line unless the console is at the start of one.
    fn fresh_line(&mut self) {
        if !AT_LINE_START.load(Ordering::Relaxed) {
            self.write_bytes(b"\n");
        }
    }
}

impl Write for ConsoleGuard {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

impl Drop for ConsoleGuard {
    fn drop(&mut self) {
        if !self.reentered {
            OWNER.store(0, Ordering::Release);
        }
        if self.irq_was_enabled {
            arch::interrupts::enable();
        }
    }
}

/// Take the console. `force` (the panic path) takes it after a bounded wait even if another CPU
/// holds it, and re-enters it if this CPU holds it: a half-written line beats a silent death.
pub fn lock(force: bool) -> ConsoleGuard {
    let irq_was_enabled = arch::interrupts::are_enabled();
    arch::interrupts::disable();
    let me = percpu::cpu_index() + 1;
    let mut spins: u64 = 0;
    loop {
        match OWNER.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return ConsoleGuard { irq_was_enabled, reentered: false },
            Err(owner) if force && (owner == me || spins > 50_000_000) => {
                return ConsoleGuard { irq_was_enabled, reentered: owner == me };
            }
            Err(_) => {
                spins += 1;
                core::hint::spin_loop();
            }
        }
    }
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let mut c = lock(false);
        c.fresh_line();
        let _ = write!(c, "[cpu{}] ", percpu::cpu_index());
        let _ = match record.level() {
            log::Level::Error => c.write_str("error: "),
            log::Level::Warn => c.write_str("warning: "),
            log::Level::Info => Ok(()),
            log::Level::Debug => c.write_str("debug: "),
            log::Level::Trace => c.write_str("trace: "),
        };
        let _ = writeln!(c, "{}", record.args());
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Initialise COM1 and route `log` to it. Called once, first thing, on the boot CPU.
pub fn init() {
    // SAFETY: this runs once, on the boot CPU before any other CPU or interrupt exists, so this
    // is the only Com1 and the only reference to PORT.
    unsafe { *(&raw mut PORT) = Some(Com1::init()) };
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

/// Apply the command line's `loglevel=`.
pub fn set_level(level: kcore::cmdline::LogLevel) {
    use kcore::cmdline::LogLevel as L;
    log::set_max_level(match level {
        L::Error => log::LevelFilter::Error,
        L::Warn => log::LevelFilter::Warn,
        L::Info => log::LevelFilter::Info,
        L::Debug => log::LevelFilter::Debug,
        L::Trace => log::LevelFilter::Trace,
    });
}

/// Print a raw line without the `[cpuN]` prefix (test protocol lines the host harness parses).
#[macro_export]
macro_rules! println_raw {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let mut c = $crate::cpu::console::lock(false);
        let _ = writeln!(c, $($arg)*);
    }};
}
