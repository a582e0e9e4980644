//! The console as a terminal: COM1's input arrives by interrupt (ISA IRQ 4 through the I/O APIC,
//! vector [`VECTOR_COM1`]) and goes through `abi::tty`'s line discipline; programs read it, write
//! through its output processing, and control it with the termios ioctls.
//!
//! ```text
//!   UART --IRQ 4--> on_input (interrupts off)          read(buf, nonblock)
//!     drain the FIFO (console lock)                      Tty::read under TTY; nothing yet:
//!     Tty::input per byte (TTY lock) ----> readers ----> sleep_for_input (the one sleep)
//!     echo -> console (write_raw)         wait queue
//!     INTR/QUIT/SUSP -> Hooks::signal_group(fg pgrp, signal)
//! ```
//!
//! The device API, for `/dev/console` and fds 0-2: [`read`], [`write`], [`ioctl`], [`readable`],
//! and [`pending`]; input also wakes the descriptor layer's poll sleepers (`fs::poll_notify`). Lock order: `TTY` -> console lock (echo is written
//! after `TTY` is dropped; only `write` holds both, to keep output in termios order).
//!
//! Job control follows Linux's rules (`abi::tty`'s `set_controlling`, `foreground`, ...): the
//! terminal has a session (`TIOCSCTTY` by a session leader, as its first open of a terminal does
//! on Linux) and a foreground process group (`TIOCSPGRP`). Outside that session `TIOCGPGRP` and
//! `TIOCSPGRP` fail with ENOTTY, as for a terminal that is not the caller's controlling one. The
//! caller's pid, group and session come from [`Hooks`], set by the process layer above.
//!
//! A background group of the terminal's session is held back as on Linux (`abi::tty`'s
//! `job_check`, with what [`JobControl`] tells of the caller): a read gets SIGTTIN for its group,
//! a write under `TOSTOP`, `TIOCSPGRP`, a termios change and `TCFLSH` get SIGTTOU (each then
//! answers `ERESTARTSYS`: retried once the group is continued); a read with SIGTTIN blocked or
//! ignored, and any of them from an orphaned group, fail with EIO (ENOTTY for `TIOCSPGRP`).
//!
//! `TIOCSPGRP` takes, as Linux's `tiocspgrp`, an id some process not yet reaped uses as its pid,
//! group or session id (ESRCH otherwise), whose group (or, for a plain pid, process) is in the
//! caller's session (EPERM otherwise).
//!
//! Not done (trade-off): output is never queued (the UART is written synchronously), so `TCSETSW`
//! is `TCSETS`.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use abi::{
    linux::{errno, general as g, ioctl as io},
    tty::{Caller, JobCheck, TERMIOS_SIZE, Termios, Tty, Wait, WinSize},
};
use arch::usercopy;
use crossbeam_utils::atomic::AtomicCell;
use talc::lock_api::Mutex as SpinMutex;

#[cfg(feature = "ktest")]
mod tests;
#[cfg(feature = "ktest")]
pub use tests::TESTS;

use crate::{
    cpu::{
        console,
        irqlock::{IrqSafeOnce, RawIrqSpin},
    },
    irq::{apic, trap},
    task,
};

/// The vector COM1's line is delivered on (32 + ISA IRQ 4, as PCs have always numbered it).
pub const VECTOR_COM1: u8 = 0x24;
/// COM1's ISA interrupt line.
const COM1_IRQ: u8 = 4;

/// What the terminal needs from the process layer (installed with [`set_hooks`]).
#[derive(Clone, Copy)]
pub struct Hooks {
    /// Send `signal` to every process of group `pgid`. Called from the interrupt handler
    /// (interrupts off, must not sleep) for INTR, QUIT and SUSP, and from `TIOCNOTTY` (and from
    /// `TIOCSWINSZ` before job control is installed).
    pub signal_group: fn(pgid: u32, signal: u32),
    /// The calling process's pid, group and session.
    pub caller: fn() -> Caller,
}

static HOOKS: AtomicCell<Option<Hooks>> = AtomicCell::new(None);

/// What job control asks the process layer about the caller of a background access (installed
/// with [`set_job_control`]; without it nobody is held back).
#[derive(Clone, Copy)]
pub struct JobControl {
    /// Whether the calling thread blocks `sig` or its process ignores it.
    pub ignores: fn(sig: u32) -> bool,
    /// Whether process group `pgrp` is orphaned.
    pub orphaned: fn(pgrp: u32) -> bool,
    /// Send `sig` to every process of group `pgrp` before returning (thread context), so the
    /// caller finds it pending on its way out of the call.
    pub signal_group: fn(pgrp: u32, sig: u32),
    /// `TIOCSPGRP`'s look-up of a group: its session (or none), or ESRCH when no process uses
    /// the id (`abi::jobs::ProcTree::session_of_group`).
    pub group_session: fn(pgrp: u32) -> Result<Option<u32>, u32>,
}

static JOB_CONTROL: AtomicCell<Option<JobControl>> = AtomicCell::new(None);

/// Install the process layer's job control (once, at boot).
pub fn set_job_control(j: JobControl) {
    JOB_CONTROL.store(Some(j));
}

/// Linux's `tty_check_change` for the calling thread and an access guarded by `sig` (SIGTTIN or
/// SIGTTOU): `Ok` to go on, else the errno (`ERESTARTSYS` once the caller's group has the signal).
fn job_control(sig: u32) -> Result<(), u32> {
    let (Some(h), Some(j)) = (HOOKS.load(), JOB_CONTROL.load()) else { return Ok(()) };
    let who = (h.caller)();
    if !tty().lock().is_background(who) {
        return Ok(());
    }
    // Asked outside the terminal's lock: both look at the process layer's state.
    let (ignored, orphaned) = ((j.ignores)(sig), (j.orphaned)(who.pgrp));
    let verdict = tty().lock().job_check(who, sig, ignored, orphaned);
    match verdict {
        JobCheck::Allow => Ok(()),
        JobCheck::Fail(e) => Err(e),
        JobCheck::Signal => {
            (j.signal_group)(who.pgrp, sig);
            Err(abi::signal::restart::ERESTARTSYS)
        }
    }
}

/// A write to the terminal from a background group under `TOSTOP` ([`job_control`] with SIGTTOU).
pub fn check_write() -> Result<(), u32> {
    if tty().lock().stops_background_output() { job_control(g::SIGTTOU) } else { Ok(()) }
}

/// Install the process layer's side (once, at boot; again at will).
pub fn set_hooks(hooks: Hooks) {
    HOOKS.store(Some(hooks));
}

// Both are made on first use, which may be the input interrupt's or a thread's: an
// `IrqSafeOnce` makes them with interrupts off, so the handler never spins on a `Once` whose
// initialiser it interrupted (that froze the console for good).
static TTY: IrqSafeOnce<SpinMutex<RawIrqSpin, Tty>> = IrqSafeOnce::new();
/// Readers (and pollers) waiting for input; woken after every batch of input and every change of
/// the settings.
static READERS_Q: IrqSafeOnce<Arc<sched::WaitQueue>> = IrqSafeOnce::new();

fn readers() -> &'static Arc<sched::WaitQueue> {
    READERS_Q.call_once(|| Arc::new(sched::WaitQueue::new()))
}
/// Counts batches of input and setting changes: a sleeper waits for it to move.
static INPUT_GEN: AtomicU64 = AtomicU64::new(0);

fn tty() -> &'static SpinMutex<RawIrqSpin, Tty> {
    TTY.call_once(|| SpinMutex::new(Tty::new()))
}

/// Route COM1's interrupt to this (the boot) CPU and start taking input. Boot CPU, once, after
/// the scheduler exists.
pub fn init() {
    tty();
    trap::register(VECTOR_COM1, on_input);
    match crate::acpi::route_isa_irq(COM1_IRQ, VECTOR_COM1, apic::id().get()) {
        Ok(gsi) => log::info!("tty: console input by interrupt (COM1, IRQ {COM1_IRQ} -> GSI {gsi}, vector {VECTOR_COM1:#x})"),
        Err(e) => log::warn!("tty: console input unavailable, COM1's interrupt cannot be routed: {e}"),
    }
    // Bytes that arrived before the line was routed raised no edge the I/O APIC saw: take them now.
    take_input();
}

/// The interrupt handler: take what the UART holds, then acknowledge.
fn on_input(_frame: &mut arch::trap::TrapFrame) {
    take_input();
    apic::eoi();
}

/// Drain the receive FIFO through the line discipline. Interrupts off (the handler, or `init`).
fn take_input() {
    loop {
        let mut bytes = [0u8; 64];
        let mut n = 0;
        {
            let mut c = console::lock(false);
            while n < bytes.len()
                && let Some(b) = c.receive()
            {
                bytes[n] = b;
                n += 1;
            }
        }
        feed(&bytes[..n]);
        if n < bytes.len() {
            break;
        }
    }
}

/// Received bytes through the line discipline: echo them, wake readers, raise signals.
fn feed(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let mut signals: Vec<(u32, u32)> = Vec::new();
    let mut wake = false;
    let echo = {
        let mut t = tty().lock();
        for &b in bytes {
            let fx = t.input(b);
            if let Some(sig) = fx.signal {
                signals.push((t.fg_pgrp, sig));
                // A signal character discards pending input: a reader waiting for its line
                // must look again.
                wake = true;
            }
            wake |= fx.wake_readers;
        }
        t.take_output()
    };
    if !echo.is_empty() {
        console::lock(false).write_raw(&echo);
    }
    if wake {
        INPUT_GEN.fetch_add(1, Ordering::Release);
        readers().wake_all(task::sched());
        crate::fs::poll_notify();
    }
    deliver(&signals);
}

fn deliver(signals: &[(u32, u32)]) {
    for &(pgid, sig) in signals {
        if pgid == 0 {
            // No foreground group (nobody's controlling terminal): Linux sends nothing either.
            continue;
        }
        match HOOKS.load() {
            Some(h) => (h.signal_group)(pgid, sig),
            None => log::info!("tty: signal {sig} for process group {pgid}, but no process layer to send it"),
        }
    }
}

/// Sleep until input arrives (the generation moves past `seen`) or `timeout_ns` passes; returns
/// whether the timeout ended it. The one place a terminal read sleeps; a signal for the reader
/// ends it with `ERESTARTSYS` (restarted under `SA_RESTART`, `EINTR` otherwise), as Linux's
/// n_tty_read.
fn sleep_for_input(seen: u64, timeout_ns: Option<u64>) -> Result<bool, u32> {
    let interrupted = |_| abi::signal::restart::ERESTARTSYS;
    let moved = || INPUT_GEN.load(Ordering::Acquire) != seen;
    let Some(timeout) = timeout_ns else {
        crate::ipc::intr::wait(readers(), moved).map_err(interrupted)?;
        return Ok(false);
    };
    // The scheduler has no timed wait on a queue: sleep in slices and look in between.
    const SLICE_NS: u64 = 10_000_000;
    let deadline = crate::time::now_ns() + timeout;
    loop {
        if moved() {
            return Ok(false);
        }
        let now = crate::time::now_ns();
        if now >= deadline {
            return Ok(true);
        }
        crate::ipc::intr::sleep_ns((deadline - now).min(SLICE_NS)).map_err(interrupted)?;
    }
}

/// Read what the line discipline lets through: a line in canonical mode, bytes by VMIN/VTIME in
/// raw mode. `nonblock`: EAGAIN instead of sleeping.
pub fn read(buf: &mut [u8], nonblock: bool) -> Result<usize, u32> {
    job_control(g::SIGTTIN)?;
    let mut timed_out = false;
    loop {
        let seen = INPUT_GEN.load(Ordering::Acquire);
        let r = tty().lock().read(buf, nonblock, timed_out);
        match r? {
            Ok(n) => return Ok(n),
            Err(Wait::Input) => {
                timed_out = false;
                sleep_for_input(seen, None)?;
            }
            Err(Wait::Timeout { deciseconds }) => {
                timed_out = sleep_for_input(seen, Some(u64::from(deciseconds) * 100_000_000))?;
            }
        }
    }
}

/// Write `buf` through output processing (ONLCR under OPOST); the whole buffer goes out.
pub fn write(buf: &[u8]) -> Result<usize, u32> {
    let t = tty().lock();
    let out = t.output(buf);
    console::lock(false).write_raw(&out);
    drop(t);
    Ok(buf.len())
}

/// Would a read return at once (poll's POLLIN)?
pub fn readable() -> bool {
    tty().lock().poll_readable()
}

fn settings_changed() {
    INPUT_GEN.fetch_add(1, Ordering::Release);
    readers().wake_all(task::sched());
    crate::fs::poll_notify();
}

fn get_user<const N: usize>(arg: u64) -> Result<[u8; N], u32> {
    let mut b = [0u8; N];
    usercopy::copy_from_user(&mut b, arg).map_err(|_| errno::EFAULT)?;
    Ok(b)
}

fn put_user(arg: u64, bytes: &[u8]) -> Result<u64, u32> {
    usercopy::copy_to_user(arg, bytes).map_err(|_| errno::EFAULT)?;
    Ok(0)
}

/// The calling process's ids; without a process layer nobody may do job control.
fn caller() -> Result<Caller, u32> {
    HOOKS.load().map(|h| (h.caller)()).ok_or(errno::ENOTTY)
}

/// Bytes a read would get now (`FIONREAD`).
pub fn pending() -> usize {
    tty().lock().readable_bytes()
}

/// The terminal ioctls: termios (`TCGETS`, `TCSETS`, `TCSETSW`, `TCSETSF`), window size, the
/// foreground group and controlling terminal, `FIONREAD`, `TCFLSH`; others are ENOTTY, as Linux
/// answers for a request no layer of a terminal knows.
pub fn ioctl(cmd: u32, arg: u64) -> Result<u64, u32> {
    match cmd {
        io::TCGETS => {
            let b = tty().lock().termios.to_bytes();
            put_user(arg, &b)
        }
        io::TCSETS | io::TCSETSW | io::TCSETSF => {
            job_control(g::SIGTTOU)?;
            let t = Termios::from_bytes(&get_user::<TERMIOS_SIZE>(arg)?);
            tty().lock().set_termios(t, cmd == io::TCSETSF);
            settings_changed();
            Ok(0)
        }
        io::TIOCGWINSZ => {
            let b = tty().lock().winsize.to_bytes();
            put_user(arg, &b)
        }
        io::TIOCSWINSZ => {
            let w = WinSize::from_bytes(&get_user::<8>(arg)?);
            let (changed, fg) = {
                let mut t = tty().lock();
                let changed = t.winsize != w;
                t.winsize = w;
                (changed, t.fg_pgrp)
            };
            // Sent before the call returns, as Linux's tiocswinsz does: a caller in the
            // foreground group runs its handler on the way out (the interrupt path's `deliver`
            // goes through a worker thread and would come later).
            match (changed, JOB_CONTROL.load()) {
                (false, _) => {}
                (true, Some(j)) if fg != 0 => (j.signal_group)(fg, g::SIGWINCH),
                (true, _) => deliver(&[(fg, g::SIGWINCH)]),
            }
            Ok(0)
        }
        io::FIONREAD => {
            let n = tty().lock().readable_bytes() as i32;
            put_user(arg, &n.to_ne_bytes())
        }
        io::TIOCGPGRP => {
            let pg = tty().lock().foreground(caller()?)?;
            put_user(arg, &(pg as i32).to_ne_bytes())
        }
        io::TIOCSPGRP => {
            // Linux's order: the background check (where it answers ENOTTY for EIO), the argument,
            // then `Tty::set_foreground`'s checks.
            job_control(g::SIGTTOU).map_err(|e| if e == errno::EIO { errno::ENOTTY } else { e })?;
            let pg = i32::from_ne_bytes(get_user::<4>(arg)?);
            let who = caller()?;
            // The group's session, asked before the terminal is locked (the process layer's
            // state); a negative id is refused before it is used.
            let group_session = match (u32::try_from(pg), JOB_CONTROL.load()) {
                (Ok(pg), Some(j)) => (j.group_session)(pg),
                (Err(_), _) => Err(errno::EINVAL),
                // No process layer: no groups to look at, the id is taken as given.
                (Ok(_), None) => Ok(Some(who.sid)),
            };
            tty().lock().set_foreground(who, pg, group_session).map(|()| 0)
        }
        io::TIOCGSID => {
            let who = caller()?;
            let t = tty().lock();
            t.foreground(who)?;
            let sid = t.session as i32;
            drop(t);
            put_user(arg, &sid.to_ne_bytes())
        }
        io::TIOCSCTTY => {
            let who = caller()?;
            tty().lock().set_controlling(who, arg == 1).map(|()| 0)
        }
        io::TIOCNOTTY => {
            let who = caller()?;
            let hung_up = tty().lock().give_up(who)?;
            if let Some(fg) = hung_up {
                deliver(&[(fg, g::SIGHUP), (fg, g::SIGCONT)]);
            }
            Ok(0)
        }
        io::TCFLSH => match job_control(g::SIGTTOU).map(|()| arg as u32)? {
            g::TCIFLUSH | g::TCIOFLUSH => {
                tty().lock().flush_input();
                Ok(0)
            }
            g::TCOFLUSH => Ok(0),
            _ => Err(errno::EINVAL),
        },
        // Output is never queued: draining, breaks and flow control have nothing to wait for.
        io::TCSBRK | io::TCXONC => Ok(0),
        io::TIOCOUTQ => put_user(arg, &0i32.to_ne_bytes()),
        _ => Err(errno::ENOTTY),
    }
}
