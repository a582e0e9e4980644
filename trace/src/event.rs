//! The event record: 32 bytes, fixed layout, the same in a ring, in a dump and in the host tool.
//!
//! ```text
//!  byte 0        8        16       24    28  30   31
//!       +--------+--------+--------+-----+---+----+
//!       |  tsc   |   a    |   b    |  c  |cpu|kind|arg|
//!       +--------+--------+--------+-----+---+----+
//!         u64      u64      u64     u32  u16  u8  u8      (little endian in a dump)
//! ```
//!
//! What `a`, `b`, `c` and `arg` mean depends on the [`Kind`]; the table is on each variant.
//! Thread ids are the scheduler's (`sched::ThreadId`), CPU numbers its dense indices.
//!
//! Key types: [`Record`], [`Kind`] (with its [`Category`]), [`Reason`] (why a switch happened),
//! [`IpiKind`]. Neighbours: `ring` stores records as atomic words (`Record::to_words`), `dump`
//! writes and reads them as bytes, `check` and the host tool interpret them.

/// Size of one record in a dump, in bytes.
pub const RECORD_BYTES: usize = 32;

/// One trace event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Record {
    /// Time stamp counter when the event happened.
    pub tsc: u64,
    /// First argument (see [`Kind`]).
    pub a: u64,
    /// Second argument (see [`Kind`]).
    pub b: u64,
    /// Third argument, usually a CPU (see [`Kind`]).
    pub c: u32,
    /// The CPU that recorded the event.
    pub cpu: u16,
    /// What happened: a [`Kind`] as its number (kept raw, so a newer kernel's kinds survive an
    /// older tool; [`Record::kind`] decodes it).
    pub kind: u8,
    /// A small argument: a [`Reason`] with flags, an [`IpiKind`], ...
    pub arg: u8,
}

/// The category an event belongs to; each is one bit of the enable mask ([`crate::Mask`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Category {
    /// Switches, wake-ups, steals.
    Sched = 0,
    /// Inter-processor interrupts, sent and received.
    Ipi = 1,
    /// TLB shootdowns: begun, acknowledged, completed.
    Tlb = 2,
    /// The local timer: armed and fired.
    Timer = 3,
    /// The idle loop's halts.
    Idle = 4,
    /// System calls.
    Syscall = 5,
    /// Page faults.
    Fault = 6,
    /// Signals.
    Signal = 7,
}

impl Category {
    /// Every category, in bit order.
    pub const ALL: [Category; 8] = [
        Category::Sched,
        Category::Ipi,
        Category::Tlb,
        Category::Timer,
        Category::Idle,
        Category::Syscall,
        Category::Fault,
        Category::Signal,
    ];

    /// The name used on the command line and in the tool's output.
    pub const fn name(self) -> &'static str {
        match self {
            Category::Sched => "sched",
            Category::Ipi => "ipi",
            Category::Tlb => "tlb",
            Category::Timer => "timer",
            Category::Idle => "idle",
            Category::Syscall => "syscall",
            Category::Fault => "fault",
            Category::Signal => "signal",
        }
    }

    /// The category's bit in a [`crate::Mask`].
    #[inline(always)]
    pub const fn bit(self) -> u32 {
        1 << self as u32
    }
}

macro_rules! kinds {
    ($($(#[$doc:meta])* $name:ident = $value:literal, $category:ident;)*) => {
        /// What an event says happened.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Kind {
            $($(#[$doc])* $name = $value,)*
        }

        impl Kind {
            /// The kind numbered `value`, if there is one (0 is never a kind: it ends a dump block).
            pub const fn from_u8(value: u8) -> Option<Kind> {
                match value {
                    $($value => Some(Kind::$name),)*
                    _ => None,
                }
            }

            /// The category the kind belongs to.
            pub const fn category(self) -> Category {
                match self {
                    $(Kind::$name => Category::$category,)*
                }
            }

            /// The kind's name, as the host tool prints it.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Kind::$name => stringify!($name),)*
                }
            }
        }
    };
}

kinds! {
    /// The CPU switched from thread `a` to thread `b`: `a`'s switch-out and `b`'s switch-in.
    /// `arg`: a [`Reason`] in the low bits, [`SWITCH_PREV_IDLE`] / [`SWITCH_NEXT_IDLE`] /
    /// [`SWITCH_PREV_QUEUED`] flags.
    Switch = 1, Sched;
    /// Thread `a` was made runnable on CPU `c` by the recording CPU. `arg`: [`WAKE_NEW`] when
    /// the thread is new (spawned), [`WAKE_RUNNING`] when it had not left its CPU yet, 0 when it
    /// was blocked and is now queued on `c`.
    Wakeup = 2, Sched;
    /// The recording CPU stole runnable thread `a` from CPU `c`'s queue.
    Steal = 3, Sched;
    /// An IPI of kind `arg` ([`IpiKind`]) was sent to CPU `c`.
    IpiSend = 10, Ipi;
    /// An IPI of kind `arg` ([`IpiKind`]) arrived on the recording CPU.
    IpiReceive = 11, Ipi;
    /// The recording CPU posted shootdown number `a` (its own count) to `c` CPUs.
    ShootdownBegin = 20, Tlb;
    /// The recording CPU served shootdown number `a` of CPU `c`.
    ShootdownAck = 21, Tlb;
    /// Every target acknowledged the recording CPU's shootdown number `a`.
    ShootdownDone = 22, Tlb;
    /// The recording CPU's timer was programmed for `a` ns on the kernel clock; `arg` 1: stopped.
    TimerArm = 30, Timer;
    /// The recording CPU's timer interrupt fired.
    TimerFire = 31, Timer;
    /// The recording CPU halted in its idle loop.
    IdleEnter = 40, Idle;
    /// The recording CPU left its halt.
    IdleExit = 41, Idle;
    /// Thread `b` entered system call number `a`.
    SyscallEnter = 50, Syscall;
    /// Thread `b`'s system call number `a` returned (`c`: the result's low 32 bits).
    SyscallExit = 51, Syscall;
    /// Thread `b` faulted at address `a` (`c`: the error code).
    PageFault = 60, Fault;
    /// Signal `c` was sent to thread `a`.
    Signal = 70, Signal;
}

/// Why a switch happened (the low bits of a [`Kind::Switch`]'s `arg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    /// The outgoing thread yielded: it stays runnable.
    Yield = 0,
    /// The outgoing thread was preempted (slice over, reschedule IPI): it stays runnable.
    Preempt = 1,
    /// The outgoing thread blocked (wait queue, sleep).
    Block = 2,
    /// The outgoing thread exited.
    Exit = 3,
    /// The outgoing thread is the idle thread, handing the CPU to work.
    Idle = 4,
}

impl Reason {
    /// Bits of `arg` that hold the reason.
    pub const MASK: u8 = 0x0f;

    /// The reason in a switch's `arg`.
    pub const fn from_arg(arg: u8) -> Option<Reason> {
        match arg & Self::MASK {
            0 => Some(Reason::Yield),
            1 => Some(Reason::Preempt),
            2 => Some(Reason::Block),
            3 => Some(Reason::Exit),
            4 => Some(Reason::Idle),
            _ => None,
        }
    }

    /// The name `perf sched` users know (`R` states print as yield/preempt).
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Yield => "yield",
            Reason::Preempt => "preempt",
            Reason::Block => "block",
            Reason::Exit => "exit",
            Reason::Idle => "idle",
        }
    }

    /// Whether the outgoing thread is still runnable after a switch for this reason.
    pub const fn stays_runnable(self) -> bool {
        matches!(self, Reason::Yield | Reason::Preempt)
    }
}

/// [`Kind::Switch`] flag: the outgoing thread is the CPU's idle thread.
pub const SWITCH_PREV_IDLE: u8 = 0x10;
/// [`Kind::Switch`] flag: the incoming thread is the CPU's idle thread.
pub const SWITCH_NEXT_IDLE: u8 = 0x20;
/// [`Kind::Switch`] flag: the outgoing thread stays runnable, queued on this CPU (always after a
/// yield or preemption; after a block when a wake-up overtook it, see [`WAKE_RUNNING`]).
pub const SWITCH_PREV_QUEUED: u8 = 0x40;
/// [`Kind::Wakeup`] flag: the thread is new (spawned), not woken from a block.
pub const WAKE_NEW: u8 = 0x01;
/// [`Kind::Wakeup`] flag: the thread had not yet left its CPU when it was woken, so it was not
/// queued and no switch-in follows (the scheduler just marked it runnable again).
pub const WAKE_RUNNING: u8 = 0x02;

/// Which IPI (the `arg` of [`Kind::IpiSend`] and [`Kind::IpiReceive`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum IpiKind {
    /// Reschedule: wake a halted CPU or make it look at its queue.
    Resched = 0,
    /// TLB shootdown.
    Shootdown = 1,
    /// Cross-CPU function call.
    Call = 2,
    /// Anything else.
    Other = 3,
}

impl IpiKind {
    /// The kind in an IPI event's `arg` (unknown numbers read as [`IpiKind::Other`]).
    pub const fn from_arg(arg: u8) -> IpiKind {
        match arg {
            0 => IpiKind::Resched,
            1 => IpiKind::Shootdown,
            2 => IpiKind::Call,
            _ => IpiKind::Other,
        }
    }

    /// Its name in the tool's output.
    pub const fn name(self) -> &'static str {
        match self {
            IpiKind::Resched => "resched",
            IpiKind::Shootdown => "shootdown",
            IpiKind::Call => "call",
            IpiKind::Other => "other",
        }
    }
}

impl Record {
    /// A record of `kind` on `cpu` at `tsc`, its arguments zero.
    pub const fn new(tsc: u64, cpu: u16, kind: Kind) -> Record {
        Record {
            tsc,
            a: 0,
            b: 0,
            c: 0,
            cpu,
            kind: kind as u8,
            arg: 0,
        }
    }

    /// A switch on `cpu` from thread `prev` to `next` (`arg`: the reason and idle flags).
    pub const fn switch(
        tsc: u64,
        cpu: u16,
        prev: u64,
        next: u64,
        reason: Reason,
        arg_flags: u8,
    ) -> Record {
        Record {
            a: prev,
            b: next,
            arg: reason as u8 | arg_flags,
            ..Record::new(tsc, cpu, Kind::Switch)
        }
    }

    /// `cpu` made thread `thread` runnable on `target` (`flags`: [`WAKE_NEW`] or 0).
    pub const fn wakeup(tsc: u64, cpu: u16, thread: u64, target: u32, flags: u8) -> Record {
        Record {
            a: thread,
            c: target,
            arg: flags,
            ..Record::new(tsc, cpu, Kind::Wakeup)
        }
    }

    /// `cpu` stole `thread` from `victim`.
    pub const fn steal(tsc: u64, cpu: u16, thread: u64, victim: u32) -> Record {
        Record {
            a: thread,
            c: victim,
            ..Record::new(tsc, cpu, Kind::Steal)
        }
    }

    /// `cpu` sent an IPI of `kind` to `target`.
    pub const fn ipi_send(tsc: u64, cpu: u16, kind: IpiKind, target: u32) -> Record {
        Record {
            c: target,
            arg: kind as u8,
            ..Record::new(tsc, cpu, Kind::IpiSend)
        }
    }

    /// An IPI of `kind` arrived on `cpu`.
    pub const fn ipi_receive(tsc: u64, cpu: u16, kind: IpiKind) -> Record {
        Record {
            arg: kind as u8,
            ..Record::new(tsc, cpu, Kind::IpiReceive)
        }
    }

    /// `cpu` posted its shootdown number `seq` to `targets` CPUs.
    pub const fn shootdown_begin(tsc: u64, cpu: u16, seq: u64, targets: u32) -> Record {
        Record {
            a: seq,
            c: targets,
            ..Record::new(tsc, cpu, Kind::ShootdownBegin)
        }
    }

    /// `cpu` served shootdown number `seq` of `initiator`.
    pub const fn shootdown_ack(tsc: u64, cpu: u16, seq: u64, initiator: u32) -> Record {
        Record {
            a: seq,
            c: initiator,
            ..Record::new(tsc, cpu, Kind::ShootdownAck)
        }
    }

    /// Every target acknowledged `cpu`'s shootdown number `seq`.
    pub const fn shootdown_done(tsc: u64, cpu: u16, seq: u64) -> Record {
        Record {
            a: seq,
            ..Record::new(tsc, cpu, Kind::ShootdownDone)
        }
    }

    /// Thread `tid` entered system call number `nr` on `cpu`.
    pub const fn syscall_enter(tsc: u64, cpu: u16, nr: u64, tid: u64) -> Record {
        Record {
            a: nr,
            b: tid,
            ..Record::new(tsc, cpu, Kind::SyscallEnter)
        }
    }

    /// Thread `tid`'s system call number `nr` returned `ret` (its low 32 bits are kept).
    pub const fn syscall_exit(tsc: u64, cpu: u16, nr: u64, tid: u64, ret: u64) -> Record {
        Record {
            a: nr,
            b: tid,
            c: ret as u32,
            ..Record::new(tsc, cpu, Kind::SyscallExit)
        }
    }

    /// Thread `tid` faulted at `addr` with page-fault error code `error` (its low 32 bits).
    pub const fn page_fault(tsc: u64, cpu: u16, addr: u64, tid: u64, error: u64) -> Record {
        Record {
            a: addr,
            b: tid,
            c: error as u32,
            ..Record::new(tsc, cpu, Kind::PageFault)
        }
    }

    /// Signal `sig` was sent to thread `tid` (0: to a process none of whose threads can take it
    /// now).
    pub const fn signal(tsc: u64, cpu: u16, tid: u64, sig: u32) -> Record {
        Record {
            a: tid,
            c: sig,
            ..Record::new(tsc, cpu, Kind::Signal)
        }
    }

    /// The kind, if the number is one this crate knows.
    pub const fn kind(&self) -> Option<Kind> {
        Kind::from_u8(self.kind)
    }

    /// The record as four words (how a ring slot stores it).
    #[inline(always)]
    pub const fn to_words(&self) -> [u64; 4] {
        [
            self.tsc,
            self.a,
            self.b,
            self.c as u64
                | (self.cpu as u64) << 32
                | (self.kind as u64) << 48
                | (self.arg as u64) << 56,
        ]
    }

    /// The record stored as `words` by [`Record::to_words`].
    #[inline]
    pub const fn from_words(words: [u64; 4]) -> Record {
        let w = words[3];
        Record {
            tsc: words[0],
            a: words[1],
            b: words[2],
            c: w as u32,
            cpu: (w >> 32) as u16,
            kind: (w >> 48) as u8,
            arg: (w >> 56) as u8,
        }
    }

    /// The record's dump encoding: its four words, little endian.
    pub fn to_bytes(&self) -> [u8; RECORD_BYTES] {
        let mut bytes = [0; RECORD_BYTES];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(self.to_words()) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        bytes
    }

    /// The record encoded as `bytes` by [`Record::to_bytes`].
    pub fn from_bytes(bytes: &[u8; RECORD_BYTES]) -> Record {
        let mut words = [0; 4];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut le = [0; 8];
            le.copy_from_slice(chunk);
            *word = u64::from_le_bytes(le);
        }
        Record::from_words(words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_and_fault_records_keep_their_fields() {
        let r = Record::from_bytes(&Record::syscall_exit(7, 2, 39, 5, (-14i64) as u64).to_bytes());
        assert_eq!((r.kind(), r.a, r.b, r.c as i32, r.cpu), (Some(Kind::SyscallExit), 39, 5, -14, 2));
        let r = Record::page_fault(1, 0, 0xdead_0000, 9, 6);
        assert_eq!((r.kind(), r.a, r.b, r.c), (Some(Kind::PageFault), 0xdead_0000, 9, 6));
        assert_eq!(Record::syscall_enter(1, 0, 0, 3).kind().map(Kind::category), Some(Category::Syscall));
    }

    #[test]
    fn a_record_survives_words_and_bytes() {
        let r = Record {
            tsc: 0x0123_4567_89ab_cdef,
            a: u64::MAX,
            b: 7,
            c: 0xdead_beef,
            cpu: 511,
            kind: Kind::Switch as u8,
            arg: Reason::Exit as u8 | SWITCH_NEXT_IDLE,
        };
        assert_eq!(Record::from_words(r.to_words()), r);
        assert_eq!(Record::from_bytes(&r.to_bytes()), r);
    }

    #[test]
    fn the_byte_layout_is_the_documented_one() {
        let r = Record::switch(1, 2, 3, 4, Reason::Block, SWITCH_PREV_IDLE);
        let b = r.to_bytes();
        assert_eq!(b[0], 1);
        assert_eq!(b[8], 3);
        assert_eq!(b[16], 4);
        assert_eq!(&b[24..28], &[0, 0, 0, 0]);
        assert_eq!(&b[28..30], &[2, 0]);
        assert_eq!(b[30], Kind::Switch as u8);
        assert_eq!(b[31], Reason::Block as u8 | SWITCH_PREV_IDLE);
    }

    #[test]
    fn every_kind_decodes_from_its_number_and_zero_is_none() {
        assert_eq!(Kind::from_u8(0), None);
        for k in [
            Kind::Switch,
            Kind::Wakeup,
            Kind::IpiReceive,
            Kind::ShootdownDone,
            Kind::Signal,
        ] {
            assert_eq!(Kind::from_u8(k as u8), Some(k));
        }
        assert_eq!(Kind::TimerFire.category(), Category::Timer);
        assert_eq!(Kind::Steal.category(), Category::Sched);
    }

    #[test]
    fn reason_and_flags_share_the_arg() {
        let r = Record::switch(
            0,
            0,
            1,
            2,
            Reason::Preempt,
            SWITCH_PREV_IDLE | SWITCH_NEXT_IDLE,
        );
        assert_eq!(Reason::from_arg(r.arg), Some(Reason::Preempt));
        assert!(Reason::Preempt.stays_runnable());
        assert!(!Reason::Block.stays_runnable());
    }
}
