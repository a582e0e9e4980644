//! Pipes: an `abi::pipe::Pipe` (the buffer and Linux's rules) under an interrupts-off spin lock,
//! with two wait queues: readers wait for data or the last writer's close, writers for room or the
//! last reader's close.
//!
//! - A blocked call sleeps through [`sleep_until`], the one place file operations sleep, so an
//!   interruptible sleep (a signal ends it with `EINTR`) can replace it in one spot.
//! - A write with no reader left calls the `SIGPIPE` hook ([`set_sigpipe_hook`]) and fails with
//!   `EPIPE`.
//! - A write of at most `PIPE_BUF` bytes goes in whole (the buffer's rule; the writer waits until
//!   that much room is free); a longer one is split as room appears, as Linux's `pipe_write` does.
//! - Every change of readiness also wakes `poll` sleepers ([`super::poll_notify`]).
//! - A side's queue is woken only when a thread of that side is counted as sleeping
//!   ([`Side`]): the count is raised before the sleeper's condition takes the buffer's lock, and
//!   read after the waker has changed the buffer under that lock, so either the sleeper sees the
//!   change or the waker sees the sleeper. A read or write nobody waits for takes no queue lock;
//!   with one sleeper counted, `wake_one` does.
//! - A sleeping reader's condition (bytes, or no writer left) is one `SeqCst` load of a flag that
//!   every change of it stores, `SeqCst`, under the buffer's lock: no lock round per test. The
//!   store comes before the waker's `SeqCst` read of the sleeper count and the load after the
//!   sleeper's `SeqCst` raise of it, so in the one order of those four either the load sees the
//!   store or the waker sees the sleeper (and its `wake_one`, under the queue's lock, reaches the
//!   sleeper, or comes before it links and tests the flag).
//! - A read or write from a system call ([`PipeObj::read_as`], [`PipeObj::write_as`]) passes the
//!   caller's context, and sleeps through `intr::wait_as`, which searches no table for it.
//! - One reader from a system call sleeps without the lock or the queue: on seeing the flag false
//!   it offers its own parker to the pipe's slot (`sched::ParkSlot`) and parks until a waker took
//!   it, the flag is true, or a signal is pending ([`PipeObj::park_reader`]). Every store of the
//!   flag's true is followed by a take of the slot, so the slot's protocol (the offer before the
//!   sleeper's test of the flag, the flag's store before the waker's read of the slot) loses no
//!   wake-up. A reader that finds the slot full sleeps on the queue.
//! - A system call's one-byte write or blocking read (a ping-pong's) takes one locked push or pop
//!   outside the general loops; it locks with `irqlock::lock_irqs_on`, since a system call's
//!   handler runs with interrupts on: no read of the flags to save, nor a record to read back.
//!
//! Why an interrupts-off lock: a waiter's condition runs with interrupts disabled inside
//! `WaitQueue::wait_until` and takes the lock; a holder preempted on that CPU with the lock held
//! would make it spin for ever.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use abi::{
    linux::errno,
    pipe::{Blocked, PIPE_BUF, Pipe},
    ramfs::Errno,
};
use talc::lock_api::Mutex as SpinMutex;

use crate::{
    cpu::irqlock::{self, RawIrqSpin},
    task::{self, uctx::UserCtx},
};

pub struct PipeObj {
    buf: SpinMutex<RawIrqSpin, Pipe>,
    /// The readers' condition, [`readable`] of the buffer, as of its last change: stored under the
    /// buffer's lock by every change that can move it, so it follows the buffer exactly (the ends'
    /// counts only fall). A sleeping reader tests it without the lock; see [`Side`] for why the
    /// `SeqCst` store, made before the waker reads the sleeper count, loses no wake-up.
    readable: AtomicBool,
    /// The one reader that sleeps on its own parker ([`PipeObj::park_reader`]); taken and woken
    /// after every store of `readable`'s true.
    parked_reader: sched::ParkSlot,
    readers: Side,
    writers: Side,
    id: u64,
}

/// The threads of one side (readers or writers) that sleep on the pipe.
struct Side {
    queue: Arc<sched::WaitQueue>,
    /// Threads in (or entering) `sleep` on `queue`.
    sleepers: AtomicUsize,
}

impl Side {
    fn new() -> Side {
        Side { queue: Arc::new(sched::WaitQueue::new()), sleepers: AtomicUsize::new(0) }
    }

    /// Sleep until `cond()` (which takes the buffer's lock) holds; see [`sleep_until`]. `me`: the
    /// caller's context when it has it at hand. The caller has just found the condition false
    /// under the buffer's lock, so the wait's first test, made before the sleeper is linked on the
    /// queue (the one that can only save a sleep), is skipped (`wait_as` makes none) or answered
    /// without that lock: the test made once linked is the one that keeps a wake-up from being
    /// lost.
    fn sleep(&self, me: Option<&UserCtx>, mut cond: impl FnMut() -> bool) -> Result<(), Errno> {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let slept = match me {
            Some(me) => crate::ipc::intr::wait_as(me, &self.queue, cond).map_err(|_| abi::signal::restart::ERESTARTSYS),
            None => {
                let mut first = true;
                sleep_until(&self.queue, move || !core::mem::take(&mut first) && cond())
            }
        };
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        slept
    }

    /// Wake the side's sleepers, if any, after a change of the buffer made under its lock.
    /// `#[inline(always)]`: the test of the count, on every read and write, costs no call; the
    /// wake itself is out of line.
    #[inline(always)]
    fn wake(&self) {
        let sleepers = self.sleepers.load(Ordering::SeqCst);
        if sleepers != 0 {
            self.wake_sleepers(sleepers);
        }
    }

    /// [`Side::wake`] with `sleepers` counted.
    #[inline(never)]
    fn wake_sleepers(&self, sleepers: usize) {
        // The count is at least the number of threads on the queue (raised before a sleeper
        // links, lowered after it left): with one counted, waking one wakes them all.
        if sleepers == 1 {
            self.queue.wake_one(task::sched());
        } else {
            self.queue.wake_all(task::sched());
        }
    }
}

/// The readers' condition: bytes to read, or no writer left (end of file).
fn readable(b: &Pipe) -> bool {
    !b.is_empty() || b.writers() == 0
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static SIGPIPE_HOOK: spin::Once<fn()> = spin::Once::new();

/// What a write to a pipe without readers calls before it fails with `EPIPE`: the sender of
/// `SIGPIPE` to the calling thread, set once by the signal service.
pub fn set_sigpipe_hook(hook: fn()) {
    SIGPIPE_HOOK.call_once(|| hook);
}

fn on_sigpipe() {
    if let Some(hook) = SIGPIPE_HOOK.get() {
        hook();
    }
}

/// Sleep on `queue` until `cond()` holds. The condition runs with interrupts off and must not
/// block. A signal for the calling thread ends the sleep with `ERESTARTSYS` (the signal layer
/// restarts the call under `SA_RESTART`, else the caller sees `EINTR`), as Linux's pipe_read.
pub fn sleep_until(queue: &Arc<sched::WaitQueue>, cond: impl FnMut() -> bool) -> Result<(), Errno> {
    crate::ipc::intr::wait(queue, cond).map_err(|_| abi::signal::restart::ERESTARTSYS)
}

impl PipeObj {
    /// A new pipe with one reader and one writer (the two ends `pipe2` returns).
    pub fn new() -> Self {
        Self { buf: SpinMutex::new(Pipe::new()), readable: AtomicBool::new(false), parked_reader: sched::ParkSlot::new(), readers: Side::new(), writers: Side::new(), id: NEXT_ID.fetch_add(1, Ordering::Relaxed) }
    }

    /// The number `fstat` shows as the inode.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Unread bytes (`FIONREAD`).
    pub fn len(&self) -> usize {
        self.buf.lock().len()
    }

    /// An end closed: wake the other side (readers see EOF, writers `EPIPE`).
    pub fn close_end(&self, write: bool) {
        {
            let mut b = self.buf.lock();
            if write {
                b.close_writer();
                self.readable.store(readable(&b), Ordering::SeqCst);
            } else {
                b.close_reader();
            }
        }
        self.wake_readers();
        self.writers.wake();
        super::poll_notify();
    }

    /// Wake the readers that sleep, if any, after a change of the buffer (made under its lock,
    /// with the flag's store).
    #[inline(always)]
    fn wake_readers(&self) {
        self.parked_reader.wake(task::sched());
        self.readers.wake();
    }

    /// [`PipeObj::wake_readers`] from a system call's own code (the caller's context `me`), which
    /// runs with interrupts on: the parked reader's wake turns them off without a read of the flag.
    #[inline(always)]
    fn wake_readers_irqs_on(&self, me: &UserCtx) {
        self.parked_reader.wake_irqs_on(me.sched());
        self.readers.wake();
    }

    /// The first step of a reader from a system call that saw the flag false: offer its parker to
    /// the slot and park until a waker took it, the flag is true, or a signal is pending. `Ok`:
    /// read again (under the lock: the buffer may be empty again by then, another reader having
    /// been quicker); `ERESTARTSYS`: a signal with nothing to read (the readable flag and a take
    /// win when both hold, as in [`sleep_until`]); `Ok` too when the slot is full, and the caller's
    /// locked read then sleeps on the queue. `#[inline(always)]`: in the one-byte read's frame.
    #[inline(always)]
    fn park_reader(&self, me: &UserCtx) -> Result<(), Errno> {
        let parker = me.park.parker();
        if !self.parked_reader.offer(parker) {
            return Ok(());
        }
        // The offer is made: the park's first test, after the fence, is the one that counts. A
        // system call's read: interrupts are on here, as the park asks.
        parker.park_until_blocked(me.sched(), || {
            self.readable.load(Ordering::SeqCst) || !self.parked_reader.holds(parker) || me.intr.pending.load(Ordering::SeqCst)
        });
        // Still there (no waker took it): take it back. A pending signal with no byte ends the
        // read; without one the park ended on a flag that another reader has cleared since, and
        // the caller's locked read finds the buffer empty and sleeps again.
        if self.parked_reader.withdraw(parker) && !self.readable.load(Ordering::SeqCst) && me.intr.pending.load(Ordering::SeqCst) {
            return Err(abi::signal::restart::ERESTARTSYS);
        }
        Ok(())
    }

    pub fn read(&self, out: &mut [u8], nonblock: bool) -> Result<usize, Errno> {
        self.read_as(None, out, nonblock)
    }

    /// [`PipeObj::read`] by the thread whose context is `me`, if given.
    ///
    /// A blocking one-byte read from a system call (a ping-pong's) parks if the flag says empty,
    /// then takes its byte with one locked pop; an empty buffer then (end of file, or another
    /// reader was quicker) goes to the general loop, which decides and sleeps again.
    #[inline]
    pub fn read_as(&self, me: Option<&UserCtx>, out: &mut [u8], nonblock: bool) -> Result<usize, Errno> {
        if let (Some(me), false, [slot]) = (me, nonblock, &mut *out) {
            if !self.readable.load(Ordering::SeqCst) {
                self.park_reader(me)?;
            }
            let got = {
                // A system call's read: interrupts are on here.
                let mut b = irqlock::lock_irqs_on(&self.buf);
                let got = b.pop_byte();
                // As in the loop: the flag changes only when this pop took the last byte.
                if got.is_some() && b.is_empty() {
                    self.readable.store(b.writers() == 0, Ordering::SeqCst);
                }
                got
            };
            if let Some(byte) = got {
                *slot = byte;
                self.writers.wake();
                super::poll_notify();
                return Ok(1);
            }
        }
        self.read_loop(me, out, nonblock)
    }

    /// The rest of [`PipeObj::read_as`]: every read that may wait, end or fail.
    #[inline(never)]
    fn read_loop(&self, me: Option<&UserCtx>, out: &mut [u8], nonblock: bool) -> Result<usize, Errno> {
        loop {
            // An empty buffer with a writer (the flag false): sleep before taking the lock.
            if let Some(me) = me
                && !nonblock
                && !out.is_empty()
                && !self.readable.load(Ordering::SeqCst)
            {
                self.park_reader(me)?;
            }
            let r = {
                let mut b = self.buf.lock();
                let had = !b.is_empty();
                let r = b.read(out, nonblock);
                // A read only takes bytes: the flag, true while any were there, changes only when
                // this read took the last.
                if had && b.is_empty() {
                    self.readable.store(b.writers() == 0, Ordering::SeqCst);
                }
                r?
            };
            match r {
                Ok(n) => {
                    if n > 0 {
                        self.writers.wake();
                        super::poll_notify();
                    }
                    return Ok(n);
                }
                Err(Blocked) => self.readers.sleep(me, || self.readable.load(Ordering::SeqCst))?,
            }
        }
    }

    pub fn write(&self, data: &[u8], nonblock: bool) -> Result<usize, Errno> {
        self.write_as(None, data, nonblock)
    }

    /// [`PipeObj::write`] by the thread whose context is `me`, if given.
    ///
    /// A one-byte write to a pipe with a reader and a free byte in its ring (a ping-pong, a
    /// token) goes in without the general loop: one locked push, the flag, the wake-ups.
    /// `#[inline(always)]`: in the write handler's frame (through `File::write_as`).
    #[inline(always)]
    pub fn write_as(&self, me: Option<&UserCtx>, data: &[u8], nonblock: bool) -> Result<usize, Errno> {
        if let [byte] = *data {
            let pushed = match me {
                // A system call's write: interrupts are on here.
                Some(_) => self.push_locked(&mut irqlock::lock_irqs_on(&self.buf), byte),
                None => self.push_locked(&mut self.buf.lock(), byte),
            };
            if pushed {
                match me {
                    Some(me) => self.wake_readers_irqs_on(me),
                    None => self.wake_readers(),
                }
                super::poll_notify();
                return Ok(1);
            }
        }
        self.write_loop(me, data, nonblock)
    }

    /// The one-byte write's step under the buffer's lock: the push, and the flag if it went in.
    #[inline(always)]
    fn push_locked(&self, b: &mut Pipe, byte: u8) -> bool {
        let pushed = b.push_byte(byte);
        if pushed {
            self.readable.store(true, Ordering::SeqCst);
        }
        pushed
    }

    /// The rest of [`PipeObj::write_as`]: every write that may wait, fail or split.
    #[inline(never)]
    fn write_loop(&self, me: Option<&UserCtx>, data: &[u8], nonblock: bool) -> Result<usize, Errno> {
        // Linux's pipe_write returns 0 for an empty write before it looks for readers.
        if data.is_empty() {
            return Ok(0);
        }
        let mut done = 0;
        loop {
            let r = {
                let mut b = self.buf.lock();
                let r = b.write(&data[done..], nonblock);
                // A write only adds bytes: bytes there now make the flag true.
                if !b.is_empty() {
                    self.readable.store(true, Ordering::SeqCst);
                }
                r
            };
            match r {
                Ok(Ok(n)) => {
                    done += n;
                    if n > 0 {
                        self.wake_readers();
                        super::poll_notify();
                    }
                    if done == data.len() {
                        return Ok(done);
                    }
                }
                Ok(Err(Blocked)) => {
                    let rest = data.len() - done;
                    let need = if rest <= PIPE_BUF { rest } else { 1 };
                    self.writers.sleep(me, || {
                        let b = self.buf.lock();
                        b.readers() == 0 || b.room() >= need
                    })?;
                }
                Err(errno::EPIPE) => {
                    // As Linux's pipe_write: the signal in any case, the count if some went in.
                    on_sigpipe();
                    return if done > 0 { Ok(done) } else { Err(errno::EPIPE) };
                }
                Err(errno::EAGAIN) if done > 0 => return Ok(done),
                Err(e) => return Err(e),
            }
        }
    }

    /// `poll` bits of one end.
    pub fn poll(&self, write: bool) -> u16 {
        let b = self.buf.lock();
        if write { b.poll_write() } else { b.poll_read() }
    }
}
