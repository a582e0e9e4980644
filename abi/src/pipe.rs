//! A pipe's buffer with Linux's semantics, as a data structure without waiting: the kernel's pipe
//! object holds one [`Pipe`] under its lock and turns [`Blocked`] answers into sleeps on its wait
//! queues (readers wait for data or the last writer, writers for room or the last reader).
//!
//! The rules, from pipe(7):
//! - capacity [`PIPE_CAPACITY`] (64 KiB, Linux's default of 16 pages);
//! - a write of at most [`PIPE_BUF`] bytes is atomic: all of it goes in at once or none does;
//!   a larger write may be split and interleaved with other writers;
//! - a read returns what is there (up to its length); with nothing there it returns 0 (end of file)
//!   once every writer has closed, `EAGAIN` when non-blocking, and blocks otherwise;
//! - a write with no reader left fails with `EPIPE` (the caller also sends `SIGPIPE`);
//! - `FIONREAD` is the number of unread bytes.
//!
//! Trade-off: Linux counts room in page slots, so `POLLOUT` means "one free page". Here it means
//! "at least `PIPE_BUF` free bytes", which gives the promise programs rely on: after `POLLOUT` an
//! atomic write of `PIPE_BUF` bytes does not block.

use alloc::{boxed::Box, vec::Vec};

use crate::linux::errno;

/// Bytes a pipe holds before writers block.
pub const PIPE_CAPACITY: usize = 65536;
/// The largest write that is atomic (`PIPE_BUF` of `<limits.h>`).
pub const PIPE_BUF: usize = linux_raw_sys::general::PIPE_BUF as usize;

/// The call cannot proceed now: the caller sleeps (or returns `EAGAIN` if it was non-blocking, which
/// the methods here already do when told `nonblock`) and retries after the next wake-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocked;

/// The result of a read or write: `Ok(Ok(n))` bytes moved, `Ok(Err(Blocked))` to wait and retry,
/// `Err(errno)` to fail.
pub type PipeResult = Result<Result<usize, Blocked>, u32>;

/// `poll` readiness bits of one end, Linux's `POLL*` values.
pub mod poll {
    use linux_raw_sys::general as g;

    pub const POLLIN: u16 = g::POLLIN as u16;
    pub const POLLOUT: u16 = g::POLLOUT as u16;
    pub const POLLERR: u16 = g::POLLERR as u16;
    pub const POLLHUP: u16 = g::POLLHUP as u16;
    pub const POLLRDNORM: u16 = g::POLLRDNORM as u16;
    pub const POLLWRNORM: u16 = g::POLLWRNORM as u16;
}

/// The buffer and the number of open read and write ends.
///
/// The buffer is a ring of a power-of-two size (none before the first write, then doubled as
/// writes need, up to [`PIPE_CAPACITY`]) with two running counters: byte `i` of the stream sits at
/// `i & (size - 1)`. A one-byte read or write is then an index, a load or store and an increment,
/// where a `VecDeque` wraps its head with a compare and keeps a length besides.
#[derive(Debug)]
pub struct Pipe {
    ring: Box<[u8]>,
    /// Bytes read since the pipe was made (wrapping): the next byte to read is at `head`.
    head: usize,
    /// Bytes written since the pipe was made (wrapping): `tail - head` are unread.
    tail: usize,
    readers: usize,
    writers: usize,
}

/// The ring's first size: a ping-pong's or a short message's bytes without a second allocation.
const RING_MIN: usize = 64;
const _: () = assert!(PIPE_CAPACITY.is_power_of_two() && RING_MIN.is_power_of_two() && RING_MIN <= PIPE_CAPACITY);

impl Default for Pipe {
    fn default() -> Self {
        Self::new()
    }
}

impl Pipe {
    /// A new pipe with one reader and one writer (what `pipe2` returns).
    pub fn new() -> Self {
        Self { ring: Box::new([]), head: 0, tail: 0, readers: 1, writers: 1 }
    }

    /// Unread bytes (`FIONREAD`).
    #[inline]
    pub fn len(&self) -> usize {
        self.tail.wrapping_sub(self.head)
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.tail == self.head
    }

    /// Free room in bytes.
    #[inline]
    pub fn room(&self) -> usize {
        PIPE_CAPACITY - self.len()
    }

    /// The ring's index mask (its size less one; the ring is not empty).
    #[inline]
    fn mask(&self) -> usize {
        self.ring.len() - 1
    }

    /// Make the ring hold at least `len` bytes (at most [`PIPE_CAPACITY`]): a ring of the next
    /// power of two, the unread bytes moved to its start.
    #[inline(never)]
    fn grow(&mut self, len: usize) {
        debug_assert!(len <= PIPE_CAPACITY);
        let size = len.next_power_of_two().max(RING_MIN);
        let mut ring = Vec::with_capacity(size);
        let n = self.len();
        if n > 0 {
            let (front, back) = self.slices(n);
            ring.extend_from_slice(front);
            ring.extend_from_slice(back);
        }
        // Only the room past the unread bytes is cleared (safe code gives no uninitialised ring).
        ring.resize(size, 0);
        self.ring = ring.into_boxed_slice();
        self.head = 0;
        self.tail = n;
    }

    /// The first `n` unread bytes (at most all of them, the ring not empty) as the two runs they
    /// take in the ring: up to its end, then from its start.
    fn slices(&self, n: usize) -> (&[u8], &[u8]) {
        let start = self.head & self.mask();
        let first = n.min(self.ring.len() - start);
        (&self.ring[start..start + first], &self.ring[..n - first])
    }

    pub fn readers(&self) -> usize {
        self.readers
    }

    pub fn writers(&self) -> usize {
        self.writers
    }

    /// A read end was duplicated (dup, fork).
    pub fn add_reader(&mut self) {
        self.readers += 1;
    }

    /// A write end was duplicated (dup, fork).
    pub fn add_writer(&mut self) {
        self.writers += 1;
    }

    /// A read end closed. Returns true when it was the last: wake the writers (they get `EPIPE`).
    pub fn close_reader(&mut self) -> bool {
        debug_assert!(self.readers > 0);
        self.readers = self.readers.saturating_sub(1);
        if self.readers == 0 {
            // Nobody can read what is left; Linux frees it with the last reader too.
            self.ring = Box::new([]);
            self.head = 0;
            self.tail = 0;
            true
        } else {
            false
        }
    }

    /// A write end closed. Returns true when it was the last: wake the readers (they see EOF).
    pub fn close_writer(&mut self) -> bool {
        debug_assert!(self.writers > 0);
        self.writers = self.writers.saturating_sub(1);
        self.writers == 0
    }

    /// Read up to `out.len()` bytes.
    ///
    /// Inlined into the kernel's pipe for its common answers (nothing there, one byte); a longer
    /// read goes to [`Pipe::read_slices`].
    #[inline]
    pub fn read(&mut self, out: &mut [u8], nonblock: bool) -> PipeResult {
        if out.is_empty() {
            return Ok(Ok(0));
        }
        if self.is_empty() {
            return if self.writers == 0 {
                Ok(Ok(0))
            } else if nonblock {
                Err(errno::EAGAIN)
            } else {
                Ok(Err(Blocked))
            };
        }
        if out.len() == 1 || self.len() == 1 {
            // The one-byte read of a ping-pong: no copy routine.
            if let Some(byte) = self.pop_byte() {
                out[0] = byte;
            }
            return Ok(Ok(1));
        }
        self.read_slices(out)
    }

    /// The next unread byte, taken, if there is one (a read of one byte that needs no decision of
    /// [`Pipe::read`]'s).
    #[inline]
    pub fn pop_byte(&mut self) -> Option<u8> {
        if self.is_empty() {
            return None;
        }
        let byte = self.ring[self.head & self.mask()];
        self.head = self.head.wrapping_add(1);
        Some(byte)
    }

    /// The rest of [`Pipe::read`]: at least two bytes to move, the buffer not empty.
    #[inline(never)]
    fn read_slices(&mut self, out: &mut [u8]) -> PipeResult {
        let n = out.len().min(self.len());
        // Two slice copies, not a byte-by-byte drain.
        let (front, back) = self.slices(n);
        out[..front.len()].copy_from_slice(front);
        out[front.len()..n].copy_from_slice(back);
        self.head = self.head.wrapping_add(n);
        Ok(Ok(n))
    }

    /// Write from `data`. A write of at most `PIPE_BUF` bytes goes in whole or not at all; a longer
    /// one puts in what fits and returns the count, and the caller (if blocking) continues with the
    /// rest after waiting, as Linux's `pipe_write` loop does.
    ///
    /// Inlined into the kernel's pipe: a one-byte write is a test of the room and a push.
    #[inline]
    pub fn write(&mut self, data: &[u8], nonblock: bool) -> PipeResult {
        if self.readers == 0 {
            return Err(errno::EPIPE);
        }
        if data.is_empty() {
            return Ok(Ok(0));
        }
        let room = self.room();
        let n = if data.len() <= PIPE_BUF {
            if room >= data.len() { data.len() } else { 0 }
        } else {
            room.min(data.len())
        };
        if n == 0 {
            return if nonblock { Err(errno::EAGAIN) } else { Ok(Err(Blocked)) };
        }
        match data[..n] {
            // A one-byte message (a ping-pong, a token) is the common small write.
            [byte] if self.push_byte(byte) => {}
            _ => self.append(&data[..n]),
        }
        Ok(Ok(n))
    }

    /// A one-byte write that needs no decision of [`Pipe::write`]'s: a reader is left and the ring
    /// has a free byte (so the pipe has room). Whether it went in; if not, `write` says why.
    #[inline]
    pub fn push_byte(&mut self, byte: u8) -> bool {
        if self.readers == 0 || self.len() >= self.ring.len() {
            return false;
        }
        let at = self.tail & self.mask();
        self.ring[at] = byte;
        self.tail = self.tail.wrapping_add(1);
        true
    }

    /// The copy of a write that the ring's room may not hold yet (more than one byte, or a full
    /// ring), out of line: the ring grows first if need be, then two slice copies.
    #[inline(never)]
    fn append(&mut self, data: &[u8]) {
        let len = self.len() + data.len();
        if len > self.ring.len() {
            self.grow(len);
        }
        let start = self.tail & self.mask();
        let first = data.len().min(self.ring.len() - start);
        self.ring[start..start + first].copy_from_slice(&data[..first]);
        self.ring[..data.len() - first].copy_from_slice(&data[first..]);
        self.tail = self.tail.wrapping_add(data.len());
    }

    /// `poll` bits of the read end.
    pub fn poll_read(&self) -> u16 {
        let mut m = 0;
        if !self.is_empty() {
            m |= poll::POLLIN | poll::POLLRDNORM;
        }
        if self.writers == 0 {
            m |= poll::POLLHUP;
        }
        m
    }

    /// `poll` bits of the write end.
    pub fn poll_write(&self) -> u16 {
        if self.readers == 0 {
            return poll::POLLERR;
        }
        if self.room() >= PIPE_BUF { poll::POLLOUT | poll::POLLWRNORM } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn bytes_come_out_in_order_and_eof_after_last_writer() {
        let mut p = Pipe::new();
        assert_eq!(p.write(b"hello ", false), Ok(Ok(6)));
        assert_eq!(p.write(b"world", false), Ok(Ok(5)));
        let mut out = [0u8; 8];
        assert_eq!(p.read(&mut out, false), Ok(Ok(8)));
        assert_eq!(&out, b"hello wo");
        assert!(p.close_writer());
        assert_eq!(p.read(&mut out, false), Ok(Ok(3)));
        assert_eq!(&out[..3], b"rld");
        assert_eq!(p.read(&mut out, false), Ok(Ok(0)), "EOF once empty and writerless");
        assert_eq!(p.read(&mut out, true), Ok(Ok(0)), "EOF beats EAGAIN");
    }

    #[test]
    fn empty_read_blocks_or_eagain() {
        let mut p = Pipe::new();
        let mut out = [0u8; 4];
        assert_eq!(p.read(&mut out, false), Ok(Err(Blocked)));
        assert_eq!(p.read(&mut out, true), Err(errno::EAGAIN));
        assert_eq!(p.read(&mut [], false), Ok(Ok(0)));
    }

    #[test]
    fn write_without_reader_is_epipe_and_drops_data() {
        let mut p = Pipe::new();
        p.write(b"abc", false).unwrap().unwrap();
        p.add_reader();
        assert!(!p.close_reader());
        assert!(p.close_reader());
        assert_eq!(p.write(b"x", false), Err(errno::EPIPE));
        assert_eq!(p.write(b"", true), Err(errno::EPIPE));
        assert_eq!(p.len(), 0);
        assert_eq!(p.poll_write(), poll::POLLERR);
    }

    #[test]
    fn small_writes_are_atomic_when_nearly_full() {
        let mut p = Pipe::new();
        let big = vec![7u8; PIPE_CAPACITY - 100];
        assert_eq!(p.write(&big, false), Ok(Ok(PIPE_CAPACITY - 100)));
        // 200 <= PIPE_BUF does not fit: nothing goes in.
        assert_eq!(p.write(&[1u8; 200], false), Ok(Err(Blocked)));
        assert_eq!(p.write(&[1u8; 200], true), Err(errno::EAGAIN));
        assert_eq!(p.len(), PIPE_CAPACITY - 100);
        assert_eq!(p.write(&[1u8; 100], true), Ok(Ok(100)));
        assert_eq!(p.room(), 0);
        assert_eq!(p.poll_write(), 0);
    }

    #[test]
    fn large_writes_are_split() {
        let mut p = Pipe::new();
        let data = vec![3u8; PIPE_CAPACITY + 5000];
        assert_eq!(p.write(&data, false), Ok(Ok(PIPE_CAPACITY)));
        assert_eq!(p.write(&data[PIPE_CAPACITY..], false), Ok(Err(Blocked)));
        let mut out = vec![0u8; 10];
        p.read(&mut out, false).unwrap().unwrap();
        // 5000 > PIPE_BUF: a partial write of the 10 free bytes is allowed.
        assert_eq!(p.write(&data[PIPE_CAPACITY..], true), Ok(Ok(10)));
    }

    #[test]
    fn poll_bits_follow_state() {
        let mut p = Pipe::new();
        assert_eq!(p.poll_read(), 0);
        assert_eq!(p.poll_write(), poll::POLLOUT | poll::POLLWRNORM);
        p.write(b"a", false).unwrap().unwrap();
        assert_eq!(p.poll_read(), poll::POLLIN | poll::POLLRDNORM);
        p.close_writer();
        assert_eq!(p.poll_read(), poll::POLLIN | poll::POLLRDNORM | poll::POLLHUP);
    }

    #[test]
    fn the_ring_wraps_and_grows_with_bytes_in_order() {
        let mut p = Pipe::new();
        let mut out = [0u8; 100];
        // Fill past the first ring's end one byte at a time, with reads in between, so the
        // unread bytes wrap; then a longer write grows the ring with them split in two runs.
        let mut next = 0u8;
        let mut expect = 0u8;
        for _ in 0..RING_MIN + 10 {
            p.write(&[next], false).unwrap().unwrap();
            next = next.wrapping_add(1);
            if p.len() > RING_MIN / 2 {
                assert_eq!(p.read(&mut out[..1], false), Ok(Ok(1)));
                assert_eq!(out[0], expect);
                expect = expect.wrapping_add(1);
            }
        }
        let long: Vec<u8> = (0..200u32).map(|i| next.wrapping_add(i as u8)).collect();
        assert_eq!(p.write(&long, false), Ok(Ok(200)));
        let mut got = Vec::new();
        while let Ok(Ok(n)) = p.read(&mut out, true) {
            got.extend_from_slice(&out[..n]);
        }
        let want: Vec<u8> = (0..got.len()).map(|i| expect.wrapping_add(i as u8)).collect();
        assert_eq!(got, want);
        assert_eq!(got.len(), RING_MIN / 2 + 200);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write(usize, bool),
        Read(usize, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..PIPE_CAPACITY + 9000, any::<bool>()).prop_map(|(n, b)| Op::Write(n, b)),
            (0usize..PIPE_CAPACITY + 9000, any::<bool>()).prop_map(|(n, b)| Op::Read(n, b)),
        ]
    }

    proptest! {
        /// Against a model: bytes are conserved and come out in the order they went in, the buffer
        /// never exceeds its capacity, and atomic writes are never split.
        #[test]
        fn conserves_bytes_and_order(ops in proptest::collection::vec(op(), 1..60)) {
            let mut p = Pipe::new();
            let mut next: u32 = 0;
            let mut written: Vec<u8> = Vec::new();
            let mut read: Vec<u8> = Vec::new();
            for o in ops {
                match o {
                    Op::Write(n, nb) => {
                        let data: Vec<u8> = (0..n).map(|i| (next as usize + i) as u8).collect();
                        let before = p.len();
                        match p.write(&data, nb) {
                            Ok(Ok(k)) => {
                                prop_assert!(k <= n);
                                if n <= PIPE_BUF { prop_assert_eq!(k, n); }
                                written.extend_from_slice(&data[..k]);
                                next += k as u32;
                            }
                            Ok(Err(Blocked)) => {
                                prop_assert!(!nb);
                                prop_assert!(before + n.min(PIPE_BUF) > PIPE_CAPACITY || n > PIPE_BUF && before == PIPE_CAPACITY);
                            }
                            Err(e) => { prop_assert!(nb); prop_assert_eq!(e, errno::EAGAIN); }
                        }
                    }
                    Op::Read(n, nb) => {
                        let mut out = vec![0u8; n];
                        match p.read(&mut out, nb) {
                            Ok(Ok(k)) => read.extend_from_slice(&out[..k]),
                            Ok(Err(Blocked)) => prop_assert!(p.is_empty() && !nb),
                            Err(e) => { prop_assert!(p.is_empty() && nb); prop_assert_eq!(e, errno::EAGAIN); }
                        }
                    }
                }
                prop_assert!(p.len() <= PIPE_CAPACITY);
                prop_assert_eq!(written.len(), read.len() + p.len());
            }
            prop_assert_eq!(&written[..read.len()], &read[..]);
        }
    }
}
