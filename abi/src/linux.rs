//! Linux's numbers, errno values and struct layouts, re-exported from `linux-raw-sys` (generated from
//! the kernel's own UAPI headers, so nothing here is typed by hand), and the names of system calls.

pub use linux_raw_sys::{auxvec, errno, general, ioctl, prctl, system};

/// Linux's name of system call `nr` on x86-64 (`"openat"`), for the log line of an unimplemented call.
pub fn syscall_name(nr: u64) -> Option<&'static str> {
    syscalls::Sysno::new(usize::try_from(nr).ok()?).map(|s| s.name())
}

/// Which missing system calls a process has already been told about in the log: one line per
/// (process, number). The numbers of Linux's table (below [`MissingCalls::TABLE`]) are a bitmap;
/// numbers beyond it, which no Linux has, are kept up to [`MissingCalls::BEYOND`] of them, so that a
/// program calling random numbers (a fuzzer) cannot grow the kernel's heap or flood the console
/// without bound: the last one kept says so, and later new ones are not logged.
#[derive(Clone, Debug, Default)]
pub struct MissingCalls {
    table: [u64; (Self::TABLE / 64) as usize],
    beyond: alloc::vec::Vec<u32>,
}

/// What to log for a missing call (see [`MissingCalls::note`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    /// The first call of this number: one log line.
    First,
    /// The first call of the last number beyond the table that is logged: its line, saying that
    /// new numbers beyond the table are no longer logged.
    FirstOfTheLast,
    /// Logged before, or beyond the table once the cap is reached: nothing.
    Quiet,
}

impl MissingCalls {
    /// Linux's x86-64 numbers are below this (the highest is in the 460s).
    pub const TABLE: u32 = 512;
    /// How many distinct numbers beyond the table are logged per process.
    pub const BEYOND: usize = 32;

    /// Note a call of missing number `nr` (the low 32 bits of `rax`).
    pub fn note(&mut self, nr: u32) -> Note {
        if nr < Self::TABLE {
            let (word, bit) = ((nr / 64) as usize, 1u64 << (nr % 64));
            let first = self.table[word] & bit == 0;
            self.table[word] |= bit;
            return if first { Note::First } else { Note::Quiet };
        }
        if self.beyond.len() >= Self::BEYOND || self.beyond.contains(&nr) {
            return Note::Quiet;
        }
        self.beyond.push(nr);
        if self.beyond.len() == Self::BEYOND { Note::FirstOfTheLast } else { Note::First }
    }
}

/// The value a system call returns for errno `e`: `-e` as the raw `rax`.
pub const fn errno_ret(e: u32) -> u64 {
    (-(e as i64)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_linux_numbers() {
        assert_eq!(syscall_name(u64::from(general::__NR_write)), Some("write"));
        assert_eq!(syscall_name(u64::from(general::__NR_rseq)), Some("rseq"));
        assert_eq!(syscall_name(u64::from(general::__NR_clone3)), Some("clone3"));
        assert_eq!(syscall_name(100_000), None);
        assert_eq!(syscall_name(u64::MAX), None);
    }

    #[test]
    fn each_missing_number_is_noted_once_and_those_beyond_the_table_are_capped() {
        let mut m = MissingCalls::default();
        assert_eq!(m.note(184), Note::First);
        assert_eq!(m.note(184), Note::Quiet);
        assert_eq!(m.note(0), Note::First);
        assert_eq!(m.note(511), Note::First);
        assert_eq!(m.note(511), Note::Quiet);
        for i in 0..MissingCalls::BEYOND as u32 - 1 {
            assert_eq!(m.note(1000 + i), Note::First);
            assert_eq!(m.note(1000 + i), Note::Quiet);
        }
        assert_eq!(m.note(u32::MAX), Note::FirstOfTheLast);
        assert_eq!(m.note(u32::MAX), Note::Quiet);
        // The cap reached: new numbers beyond the table are quiet, those of the table still log.
        assert_eq!(m.note(5000), Note::Quiet);
        assert_eq!(m.note(300), Note::First);
        assert_eq!(m.note(300), Note::Quiet);
    }

    #[test]
    fn errno_return_is_negative() {
        assert_eq!(errno_ret(errno::ENOSYS) as i64, -38);
        assert_eq!(errno_ret(errno::EFAULT) as i64, -14);
    }
}
