//! Signals as portable data: numbers and sets, the default action of each signal, which are job
//! control, the wait status encodings, `struct sigaction` and `siginfo_t` as bytes, the choice of
//! the next signal to deliver, the restart rule for interrupted calls, and the x86-64 signal frame
//! (`struct rt_sigframe`) with the checks `rt_sigreturn` applies before it trusts one.
//!
//! The frame a handler starts on (Linux's `arch/x86/kernel/signal_64.c` and
//! `arch/x86/include/uapi/asm/{sigcontext,ucontext}.h`), from high to low addresses:
//!
//! ```text
//!  user rsp - 128 (red zone skipped), or the top of the alternate stack
//!  +----------------------------------+ <- 64-aligned
//!  | extended state (XSAVE image)     |  fpstate: legacy 512 bytes, header, components, then
//!  |                                  |  FP_XSTATE_MAGIC2; its size is the CPU's XSAVE size + 4
//!  +----------------------------------+
//!  | siginfo          (128 bytes)     |  frame + 312
//!  | ucontext         (304 bytes)     |  frame + 8: uc_flags, uc_link, uc_stack (24),
//!  |                                  |  uc_mcontext = sigcontext (256), uc_sigmask (8)
//!  | pretcode = sa_restorer (8 bytes) |  frame + 0   <- rsp at handler entry; rsp + 8 is 16-aligned,
//!  +----------------------------------+                  as just after a `call`
//! ```
//!
//! `sigcontext`: r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags (18 words), then the
//! selectors cs, gs, fs, ss (16 bits each), err, trapno, oldmask, cr2, the fpstate pointer and eight
//! reserved words.
//!
//! `rt_sigreturn` reads the frame back and refuses it ([`BadFrame`]: the kernel then kills the
//! process with `SIGSEGV`, never itself) when the selectors are not the user ones, `rip` is not a
//! user address (so no `sysret` can ever go to a non-canonical address), or the extended-state
//! image would make `XRSTOR` fault (bad header, unknown components, reserved MXCSR bits). Flags are
//! merged as Linux does: only the arithmetic flags, DF, OF and AC come from the frame; IF is always
//! set and IOPL, NT, VM, TF and RF are never taken from user memory. That is stricter than Linux in
//! two places, named here as trade-offs: Linux accepts any ring-3 selector and lets the `iret`
//! fault, and it lets a frame set TF for single-stepping (we have no ptrace).

use alloc::vec::Vec;

use linux_raw_sys::general as g;

/// Highest signal number (real-time signals included).
pub const NSIG: u32 = 64;

pub use g::{
    SA_NOCLDSTOP, SA_NOCLDWAIT, SA_NODEFER, SA_ONSTACK, SA_RESETHAND, SA_RESTART, SA_RESTORER, SA_SIGINFO, SIGABRT, SIGALRM, SIGBUS,
    SIGCHLD, SIGCONT, SIGFPE, SIGHUP, SIGILL, SIGINT, SIGIO, SIGKILL, SIGPIPE, SIGPROF, SIGPWR, SIGQUIT, SIGSEGV, SIGSTKFLT, SIGSTOP,
    SIGSYS, SIGTERM, SIGTRAP, SIGTSTP, SIGTTIN, SIGTTOU, SIGURG, SIGUSR1, SIGUSR2, SIGVTALRM, SIGWINCH, SIGXCPU, SIGXFSZ,
};

/// A set of signals, bit `n - 1` for signal `n`, as Linux's 64-bit `sigset_t`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SigSet(pub u64);

impl SigSet {
    pub const EMPTY: SigSet = SigSet(0);
    /// SIGKILL and SIGSTOP: never blocked, caught or ignored.
    pub const UNBLOCKABLE: SigSet = SigSet((1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1)));

    fn bit(sig: u32) -> u64 {
        if (1..=NSIG).contains(&sig) { 1 << (sig - 1) } else { 0 }
    }

    pub fn of(sig: u32) -> Self {
        SigSet(Self::bit(sig))
    }

    pub fn contains(self, sig: u32) -> bool {
        self.0 & Self::bit(sig) != 0
    }

    pub fn add(&mut self, sig: u32) {
        self.0 |= Self::bit(sig);
    }

    pub fn remove(&mut self, sig: u32) {
        self.0 &= !Self::bit(sig);
    }

    pub fn union(self, o: SigSet) -> SigSet {
        SigSet(self.0 | o.0)
    }

    pub fn minus(self, o: SigSet) -> SigSet {
        SigSet(self.0 & !o.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// This set as a blocked mask: SIGKILL and SIGSTOP removed (`rt_sigprocmask` silently drops them).
    pub fn blockable(self) -> SigSet {
        self.minus(Self::UNBLOCKABLE)
    }

    /// `rt_sigprocmask(how, set)` applied to the current mask `self`; `EINVAL` for an unknown `how`.
    pub fn apply(self, how: u32, set: SigSet) -> Result<SigSet, u32> {
        let m = match how {
            g::SIG_BLOCK => self.union(set),
            g::SIG_UNBLOCK => self.minus(set),
            g::SIG_SETMASK => set,
            _ => return Err(crate::linux::errno::EINVAL),
        };
        Ok(m.blockable())
    }
}

/// What a signal does when its disposition is `SIG_DFL` (signal(7)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultAction {
    Terminate,
    /// Terminate and dump core. We write no core file; wait status carries the core bit (0x80).
    Core,
    Ignore,
    Stop,
    Continue,
}

/// The default action of `sig` (real-time signals terminate).
pub fn default_action(sig: u32) -> DefaultAction {
    use DefaultAction::*;
    match sig {
        SIGQUIT | SIGILL | SIGTRAP | SIGABRT | SIGBUS | SIGFPE | SIGSEGV | SIGXCPU | SIGXFSZ | SIGSYS => Core,
        SIGCHLD | SIGURG | SIGWINCH => Ignore,
        SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU => Stop,
        SIGCONT => Continue,
        _ => Terminate,
    }
}

/// Signals of job control: the stops and SIGCONT. A SIGCONT discards pending stops and a stop
/// discards a pending SIGCONT, as Linux's `prepare_signal` does.
pub fn is_job_control(sig: u32) -> bool {
    matches!(sig, SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU | SIGCONT)
}

/// Stops that a process in an orphaned process group ignores (all but SIGSTOP).
pub fn is_tty_stop(sig: u32) -> bool {
    matches!(sig, SIGTSTP | SIGTTIN | SIGTTOU)
}

/// Signals a fault raises synchronously; they are delivered before any other pending signal.
pub fn is_synchronous(sig: u32) -> bool {
    matches!(sig, SIGSEGV | SIGBUS | SIGILL | SIGTRAP | SIGFPE | SIGSYS)
}

/// The next signal to deliver from `pending` with `blocked` masked: a synchronous one first, then
/// the lowest number (Linux's `next_signal`).
pub fn next_deliverable(pending: SigSet, blocked: SigSet) -> Option<u32> {
    let ready = pending.minus(blocked.blockable());
    if ready.is_empty() {
        return None;
    }
    let sync = (1..32).filter(|&s| is_synchronous(s)).fold(0u64, |m, s| m | (1 << (s - 1)));
    let pick = if ready.0 & sync != 0 { ready.0 & sync } else { ready.0 };
    Some(pick.trailing_zeros() + 1)
}

/// The wait status encodings of `wait4` (`WIFEXITED` and friends decode them).
pub mod wstatus {
    /// The process called `exit(code)`.
    pub const fn exited(code: u8) -> i32 {
        (code as i32) << 8
    }
    /// The process was killed by `sig`, with the core bit if its default action dumps core.
    pub const fn signaled(sig: u32, core: bool) -> i32 {
        (sig as i32 & 0x7f) | if core { 0x80 } else { 0 }
    }
    /// The process stopped on `sig`.
    pub const fn stopped(sig: u32) -> i32 {
        ((sig as i32) << 8) | 0x7f
    }
    /// The process continued (`WCONTINUED`).
    pub const CONTINUED: i32 = 0xffff;
}

/// How a child changed, for `wait4`'s status and `waitid`'s `si_code`/`si_status` and SIGCHLD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildEvent {
    Exited(u8),
    Killed { sig: u32, core: bool },
    Stopped(u32),
    Continued,
}

impl ChildEvent {
    /// The `wait4` status word.
    pub fn wait_status(self) -> i32 {
        match self {
            ChildEvent::Exited(c) => wstatus::exited(c),
            ChildEvent::Killed { sig, core } => wstatus::signaled(sig, core),
            ChildEvent::Stopped(s) => wstatus::stopped(s),
            ChildEvent::Continued => wstatus::CONTINUED,
        }
    }

    /// `(si_code, si_status)` for `waitid` and the SIGCHLD siginfo.
    pub fn cld(self) -> (i32, i32) {
        match self {
            ChildEvent::Exited(c) => (g::CLD_EXITED as i32, c as i32),
            ChildEvent::Killed { sig, core: false } => (g::CLD_KILLED as i32, sig as i32),
            ChildEvent::Killed { sig, core: true } => (g::CLD_DUMPED as i32, sig as i32),
            ChildEvent::Stopped(s) => (g::CLD_STOPPED as i32, s as i32),
            ChildEvent::Continued => (g::CLD_CONTINUED as i32, SIGCONT as i32),
        }
    }

    /// The event a signal's default action causes (`None` for ignore).
    pub fn of_default(sig: u32) -> Option<ChildEvent> {
        match default_action(sig) {
            DefaultAction::Terminate => Some(ChildEvent::Killed { sig, core: false }),
            DefaultAction::Core => Some(ChildEvent::Killed { sig, core: true }),
            DefaultAction::Stop => Some(ChildEvent::Stopped(sig)),
            DefaultAction::Continue => Some(ChildEvent::Continued),
            DefaultAction::Ignore => None,
        }
    }
}

/// Signals waiting for delivery to one thread or to a whole process (Linux keeps one of each:
/// `task->pending` and `signal->shared_pending`). A standard signal (1..=31) is pending at most
/// once: a second one while the first waits is merged into it and lost, as POSIX allows. A
/// real-time signal (32..=64) is queued each time with its own siginfo, up to `limit` in all
/// (`RLIMIT_SIGPENDING`), after which a send by `sigqueue`-like callers fails with `EAGAIN`.
#[derive(Clone, Debug, Default)]
pub struct Pending {
    set: SigSet,
    /// siginfo of each pending standard signal (index `sig - 1`), and the queue of real-time ones.
    standard: [Option<SigInfo>; 31],
    rt: alloc::collections::VecDeque<SigInfo>,
}

/// Result of [`Pending::post`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Posted {
    /// Newly pending: the receiver may need a wake-up.
    Queued,
    /// A standard signal already pending: merged, nothing new to deliver.
    Merged,
}

impl Pending {
    pub fn set(&self) -> SigSet {
        self.set
    }

    /// Number of queued real-time signals (counted against `RLIMIT_SIGPENDING`).
    pub fn rt_len(&self) -> usize {
        self.rt.len()
    }

    /// Make `info.signo` pending. `EAGAIN` when the real-time queue is at `limit`; `EINVAL` for a
    /// number outside 1..=64.
    pub fn post(&mut self, info: SigInfo, limit: usize) -> Result<Posted, u32> {
        let sig = info.signo;
        if !(1..=NSIG).contains(&sig) {
            return Err(crate::linux::errno::EINVAL);
        }
        if sig < g::SIGRTMIN {
            if self.set.contains(sig) {
                return Ok(Posted::Merged);
            }
            self.standard[(sig - 1) as usize] = Some(info);
        } else {
            if self.rt.len() >= limit {
                return Err(crate::linux::errno::EAGAIN);
            }
            self.rt.push_back(info);
        }
        self.set.add(sig);
        Ok(Posted::Queued)
    }

    /// Take the next deliverable signal (see [`next_deliverable`]) with its siginfo.
    pub fn take(&mut self, blocked: SigSet) -> Option<SigInfo> {
        let sig = next_deliverable(self.set, blocked)?;
        Some(self.take_sig(sig))
    }

    /// Take one instance of `sig`, which must be pending.
    fn take_sig(&mut self, sig: u32) -> SigInfo {
        if sig < g::SIGRTMIN {
            self.set.remove(sig);
            self.standard[(sig - 1) as usize].take().unwrap_or(SigInfo::kernel(sig))
        } else {
            let i = self.rt.iter().position(|x| x.signo == sig);
            let info = i.and_then(|i| self.rt.remove(i)).unwrap_or(SigInfo::kernel(sig));
            if !self.rt.iter().any(|x| x.signo == sig) {
                self.set.remove(sig);
            }
            info
        }
    }

    /// Discard every pending instance of the signals in `which` (a SIGCONT discards the stops, a
    /// stop discards SIGCONT; a handler set to SIG_IGN discards its signal).
    pub fn discard(&mut self, which: SigSet) {
        for sig in 1..g::SIGRTMIN {
            if which.contains(sig) {
                self.standard[(sig - 1) as usize] = None;
            }
        }
        self.rt.retain(|x| !which.contains(x.signo));
        self.set = self.set.minus(which);
    }
}

/// `SIG_DFL` and `SIG_IGN` as handler values.
pub const SIG_DFL: u64 = 0;
pub const SIG_IGN: u64 = 1;

/// The kernel's `struct sigaction` as `rt_sigaction` passes it (32 bytes: handler, flags,
/// restorer, mask).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: SigSet,
}

pub const SIGACTION_SIZE: usize = 32;

impl SigAction {
    pub fn from_bytes(b: &[u8; SIGACTION_SIZE]) -> Self {
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        SigAction { handler: w(0), flags: w(1), restorer: w(2), mask: SigSet(w(3)) }
    }

    pub fn to_bytes(&self) -> [u8; SIGACTION_SIZE] {
        let mut b = [0u8; SIGACTION_SIZE];
        for (i, v) in [self.handler, self.flags, self.restorer, self.mask.0].into_iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    pub fn has(&self, flag: u32) -> bool {
        self.flags & u64::from(flag) != 0
    }

    /// Whether delivering `sig` under this action does nothing: ignored, or default-ignore.
    pub fn ignores(&self, sig: u32) -> bool {
        self.handler == SIG_IGN || (self.handler == SIG_DFL && default_action(sig) == DefaultAction::Ignore)
    }

    /// The blocked mask while the handler of `sig` runs: the old mask, `sa_mask`, and `sig` itself
    /// unless `SA_NODEFER`.
    pub fn handler_mask(&self, old: SigSet, sig: u32) -> SigSet {
        let mut m = old.union(self.mask);
        if !self.has(SA_NODEFER) {
            m.add(sig);
        }
        m.blockable()
    }
}

/// What an interrupted call returns once a signal is handled: Linux's internal restart codes.
pub mod restart {
    /// Restart if the handler has `SA_RESTART`, else `EINTR` (most blocking calls).
    pub const ERESTARTSYS: u32 = 512;
    /// Always restart (no handler can see the interruption).
    pub const ERESTARTNOINTR: u32 = 513;
    /// Restart only if no handler ran, else `EINTR` (`pause`-like waits, `poll`, `select`).
    pub const ERESTARTNOHAND: u32 = 514;
    /// `EINTR` after a handler, else continue through `restart_syscall` with what the call left
    /// in the thread's restart block (`nanosleep`'s time left).
    pub const ERESTART_RESTARTBLOCK: u32 = 516;
}

/// The outcome for a call that returned `-code` when a signal arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Not a restart code: the return value stands.
    Keep,
    /// Return `-EINTR`.
    Eintr,
    /// Re-execute the `syscall` instruction: `rip -= 2`, `rax = orig_rax`.
    Again,
    /// Execute `restart_syscall` instead: `rip -= 2`, `rax = __NR_restart_syscall`.
    Block,
}

/// Decide the restart for a call that returned errno `code`; `handler` is the action run (None
/// when the signal took its default or was ignored).
pub fn restart_rule(code: u32, handler: Option<&SigAction>) -> Restart {
    use restart::*;
    match (code, handler) {
        (ERESTARTNOINTR, _) => Restart::Again,
        (ERESTARTSYS | ERESTARTNOHAND, None) => Restart::Again,
        (ERESTARTSYS, Some(a)) if a.has(SA_RESTART) => Restart::Again,
        (ERESTARTSYS | ERESTARTNOHAND | ERESTART_RESTARTBLOCK, Some(_)) => Restart::Eintr,
        (ERESTART_RESTARTBLOCK, None) => Restart::Block,
        _ => Restart::Keep,
    }
}

/// `siginfo_t` (128 bytes) with the fields this kernel fills.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigInfo {
    pub signo: u32,
    pub code: i32,
    /// kill, tkill, SIGCHLD: the sender or the child.
    pub pid: u32,
    pub uid: u32,
    /// SIGCHLD: exit code or signal.
    pub status: i32,
    /// SIGSEGV, SIGBUS, SIGILL, SIGFPE: the faulting address.
    pub addr: u64,
}

pub const SIGINFO_SIZE: usize = 128;

impl SigInfo {
    /// A signal sent by `kill` (`SI_USER`) or `tkill`/`tgkill` (`SI_TKILL`) from `pid`.
    pub fn user(signo: u32, pid: u32, tkill: bool) -> Self {
        SigInfo { signo, code: if tkill { g::SI_TKILL } else { g::SI_USER as i32 }, pid, ..Default::default() }
    }

    /// A signal the kernel raises itself (`SI_KERNEL`): SIGPIPE, SIGINT from the terminal.
    pub fn kernel(signo: u32) -> Self {
        SigInfo { signo, code: g::SI_KERNEL as i32, ..Default::default() }
    }

    /// A fault at `addr` with its `code` (`SEGV_MAPERR`, `FPE_INTDIV`, ...).
    pub fn fault(signo: u32, code: u32, addr: u64) -> Self {
        SigInfo { signo, code: code as i32, addr, ..Default::default() }
    }

    /// SIGCHLD for `child`'s event.
    pub fn child(child: u32, ev: ChildEvent) -> Self {
        let (code, status) = ev.cld();
        SigInfo { signo: SIGCHLD, code, pid: child, status, ..Default::default() }
    }

    fn is_fault(&self) -> bool {
        matches!(self.signo, SIGSEGV | SIGBUS | SIGILL | SIGFPE | SIGTRAP) && self.code > 0
    }

    pub fn to_bytes(&self) -> [u8; SIGINFO_SIZE] {
        let mut b = [0u8; SIGINFO_SIZE];
        b[0..4].copy_from_slice(&self.signo.to_le_bytes());
        b[8..12].copy_from_slice(&self.code.to_le_bytes());
        if self.is_fault() {
            b[16..24].copy_from_slice(&self.addr.to_le_bytes());
        } else {
            b[16..20].copy_from_slice(&self.pid.to_le_bytes());
            b[20..24].copy_from_slice(&self.uid.to_le_bytes());
            if self.signo == SIGCHLD {
                b[24..28].copy_from_slice(&self.status.to_le_bytes());
            }
        }
        b
    }
}

/// The user registers a signal frame saves and restores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserRegs {
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub rdx: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rsp: u64,
    pub rip: u64,
    pub rflags: u64,
    pub cs: u16,
    pub ss: u16,
}

impl UserRegs {
    fn gprs(&self) -> [u64; 18] {
        [
            self.r8, self.r9, self.r10, self.r11, self.r12, self.r13, self.r14, self.r15, self.rdi, self.rsi, self.rbp, self.rbx, self.rdx,
            self.rax, self.rcx, self.rsp, self.rip, self.rflags,
        ]
    }

    fn from_gprs(w: [u64; 18], cs: u16, ss: u16) -> Self {
        let [r8, r9, r10, r11, r12, r13, r14, r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, rflags] = w;
        UserRegs { r8, r9, r10, r11, r12, r13, r14, r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, rflags, cs, ss }
    }
}

/// The alternate signal stack (`stack_t`: sp, flags, size).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AltStack {
    pub sp: u64,
    pub flags: u32,
    pub size: u64,
}

impl AltStack {
    pub fn is_enabled(&self) -> bool {
        self.flags & g::SS_DISABLE == 0 && self.size != 0
    }

    /// Whether `rsp` lies on this stack (then a nested signal stays where it is).
    pub fn contains(&self, rsp: u64) -> bool {
        self.is_enabled() && rsp > self.sp && rsp - self.sp <= self.size
    }
}

/// Offsets inside the frame.
pub mod frame {
    /// `pretcode` (the return address the handler's `ret` uses: `sa_restorer`).
    pub const PRETCODE: usize = 0;
    pub const UC: usize = 8;
    pub const UC_FLAGS: usize = UC;
    pub const UC_LINK: usize = UC + 8;
    pub const UC_STACK: usize = UC + 16;
    pub const MCONTEXT: usize = UC + 40;
    /// In `sigcontext`: the selectors after the 18 words.
    pub const SC_CS: usize = MCONTEXT + 144;
    pub const SC_SS: usize = MCONTEXT + 150;
    pub const SC_ERR: usize = MCONTEXT + 152;
    pub const SC_TRAPNO: usize = MCONTEXT + 160;
    pub const SC_OLDMASK: usize = MCONTEXT + 168;
    pub const SC_CR2: usize = MCONTEXT + 176;
    pub const SC_FPSTATE: usize = MCONTEXT + 184;
    pub const SIGMASK: usize = UC + 296;
    pub const INFO: usize = UC + 304;
    /// Bytes from `pretcode` to the end of `siginfo`.
    pub const SIZE: usize = INFO + super::SIGINFO_SIZE;
}

/// `uc_flags` Linux sets: the extended state is in XSAVE form, and `ss` is saved and restored.
pub const UC_FP_XSTATE: u64 = 1;
pub const UC_SIGCONTEXT_SS: u64 = 2;
pub const UC_STRICT_RESTORE_SS: u64 = 4;

/// Where a frame goes: the frame itself, the extended-state image above it, and the stack the
/// handler runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramePlace {
    /// Address of `pretcode`; the handler's `rsp`.
    pub frame: u64,
    /// Address of the XSAVE image (64-aligned).
    pub fpstate: u64,
}

/// Place a frame for a thread at `rsp` with an extended-state image of `xstate_size` bytes, on
/// `alt` when the action asks for it and the thread is not already there. `None` when the
/// addresses would wrap (the kernel then kills with SIGSEGV, as Linux's `force_sigsegv`).
pub fn place_frame(rsp: u64, on_alt: bool, alt: &AltStack, xstate_size: usize) -> Option<FramePlace> {
    let top = if on_alt && alt.is_enabled() && !alt.contains(rsp) { alt.sp.checked_add(alt.size)? } else { rsp.checked_sub(128)? };
    let fp = top.checked_sub(xstate_size as u64 + 4)? & !63;
    let frame = (fp.checked_sub(frame::SIZE as u64)? & !15).checked_sub(8)?;
    Some(FramePlace { frame, fpstate: fp })
}

/// The frame bytes (without the extended state, which the kernel saves at `fpstate` itself).
pub fn build_frame(regs: &UserRegs, blocked: SigSet, info: &SigInfo, restorer: u64, fpstate: u64, alt: &AltStack, cr2: u64) -> Vec<u8> {
    let mut b = alloc::vec![0u8; frame::SIZE];
    let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
    put(frame::PRETCODE, &restorer.to_le_bytes());
    put(frame::UC_FLAGS, &(UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS).to_le_bytes());
    put(frame::UC_STACK, &alt.sp.to_le_bytes());
    let ss_flags = if alt.contains(regs.rsp) { g::SS_ONSTACK } else if alt.is_enabled() { 0 } else { g::SS_DISABLE };
    put(frame::UC_STACK + 8, &ss_flags.to_le_bytes());
    put(frame::UC_STACK + 16, &alt.size.to_le_bytes());
    for (i, w) in regs.gprs().iter().enumerate() {
        put(frame::MCONTEXT + i * 8, &w.to_le_bytes());
    }
    put(frame::SC_CS, &regs.cs.to_le_bytes());
    put(frame::SC_SS, &regs.ss.to_le_bytes());
    put(frame::SC_TRAPNO, &0u64.to_le_bytes());
    put(frame::SC_OLDMASK, &blocked.0.to_le_bytes());
    put(frame::SC_CR2, &cr2.to_le_bytes());
    put(frame::SC_FPSTATE, &fpstate.to_le_bytes());
    put(frame::SIGMASK, &blocked.0.to_le_bytes());
    put(frame::INFO, &info.to_bytes());
    b
}

/// Why `rt_sigreturn` refused a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadFrame {
    Selector,
    Rip,
    FpstatePointer,
    XstateHeader,
    Mxcsr,
}

/// RFLAGS bits a frame may set: CF, PF, AF, ZF, SF, DF, OF and AC.
pub const RFLAGS_USER: u64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800 | 0x4_0000;
/// IF, and the always-one bit 1.
pub const RFLAGS_FIXED: u64 = 0x200 | 0x2;

/// What a valid frame restores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restored {
    pub regs: UserRegs,
    pub blocked: SigSet,
    /// Address of the XSAVE image, 0 for none (then the extended state is reset).
    pub fpstate: u64,
}

/// Read a frame (the bytes at the handler's `rsp - 8` after its `ret` popped `pretcode`: the
/// kernel passes the [`frame::SIZE`] bytes from `rsp - 8`) and check it; `user_cs`/`user_ss` are the
/// only selectors accepted.
pub fn parse_frame(b: &[u8], user_cs: u16, user_ss: u16) -> Result<Restored, BadFrame> {
    if b.len() < frame::SIZE {
        return Err(BadFrame::Selector);
    }
    let w = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
    let h = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let mut words = [0u64; 18];
    for (i, x) in words.iter_mut().enumerate() {
        *x = w(frame::MCONTEXT + i * 8);
    }
    let (cs, ss) = (h(frame::SC_CS), h(frame::SC_SS));
    if cs != user_cs || ss != user_ss {
        return Err(BadFrame::Selector);
    }
    let mut regs = UserRegs::from_gprs(words, cs, ss);
    if regs.rip >= crate::USER_TOP {
        return Err(BadFrame::Rip);
    }
    regs.rflags = (regs.rflags & RFLAGS_USER) | RFLAGS_FIXED;
    let fpstate = w(frame::SC_FPSTATE);
    if fpstate != 0 && (fpstate % 64 != 0 || fpstate >= crate::USER_TOP) {
        return Err(BadFrame::FpstatePointer);
    }
    Ok(Restored { regs, blocked: SigSet(w(frame::SIGMASK)).blockable(), fpstate })
}

/// Check a standard-form XSAVE image before `XRSTOR` loads it, so that `XRSTOR` cannot fault in the
/// kernel (SDM Vol. 1 13.8: #GP on reserved header bits, on XSTATE_BV bits outside XCR0, on a
/// compacted image given to the standard form, and on MXCSR bits outside MXCSR_MASK). Returns the
/// XSTATE_BV to restore.
pub fn check_xsave(image: &[u8], xcr0: u64, mxcsr_mask: u32) -> Result<u64, BadFrame> {
    if image.len() < 576 {
        return Err(BadFrame::XstateHeader);
    }
    let mxcsr = u32::from_le_bytes([image[24], image[25], image[26], image[27]]);
    if mxcsr & !mxcsr_mask != 0 {
        return Err(BadFrame::Mxcsr);
    }
    let w = |at: usize| u64::from_le_bytes(image[at..at + 8].try_into().unwrap_or_default());
    let (xstate_bv, xcomp_bv) = (w(512), w(520));
    if xstate_bv & !xcr0 != 0 || xcomp_bv != 0 || image[528..576].iter().any(|&x| x != 0) {
        return Err(BadFrame::XstateHeader);
    }
    Ok(xstate_bv)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn default_actions_match_signal7() {
        use DefaultAction::*;
        for (s, a) in [(SIGHUP, Terminate), (SIGINT, Terminate), (SIGQUIT, Core), (SIGSEGV, Core), (SIGPIPE, Terminate), (SIGALRM, Terminate), (SIGCHLD, Ignore), (SIGWINCH, Ignore), (SIGURG, Ignore), (SIGCONT, Continue), (SIGSTOP, Stop), (SIGTSTP, Stop), (SIGTTIN, Stop), (SIGKILL, Terminate), (SIGUSR1, Terminate), (40, Terminate)] {
            assert_eq!(default_action(s), a, "signal {s}");
        }
        assert!(is_job_control(SIGCONT) && is_job_control(SIGTSTP) && !is_job_control(SIGINT));
    }

    #[test]
    fn wait_status_matches_the_macros() {
        // WIFEXITED(s) = (s & 0x7f) == 0, WEXITSTATUS = (s >> 8) & 0xff.
        let s = ChildEvent::Exited(3).wait_status();
        assert_eq!((s & 0x7f, (s >> 8) & 0xff), (0, 3));
        // WIFSIGNALED: ((s & 0x7f) + 1) >> 1 > 0 as signed char; WTERMSIG = s & 0x7f; WCOREDUMP = s & 0x80.
        let s = ChildEvent::Killed { sig: SIGSEGV, core: true }.wait_status();
        assert_eq!((s & 0x7f, s & 0x80), (11, 0x80));
        assert_eq!(ChildEvent::Killed { sig: SIGINT, core: false }.wait_status(), 2);
        // WIFSTOPPED: (s & 0xff) == 0x7f, WSTOPSIG = (s >> 8) & 0xff.
        let s = ChildEvent::Stopped(SIGTSTP).wait_status();
        assert_eq!((s & 0xff, (s >> 8) & 0xff), (0x7f, 20));
        assert_eq!(ChildEvent::Continued.wait_status(), 0xffff);
        assert_eq!(ChildEvent::Killed { sig: 9, core: false }.cld(), (g::CLD_KILLED as i32, 9));
        assert_eq!(ChildEvent::of_default(SIGQUIT), Some(ChildEvent::Killed { sig: SIGQUIT, core: true }));
        assert_eq!(ChildEvent::of_default(SIGCHLD), None);
    }

    #[test]
    fn masks_never_hold_kill_or_stop() {
        let all = SigSet(u64::MAX);
        assert_eq!(SigSet::EMPTY.apply(g::SIG_BLOCK, all), Ok(SigSet(u64::MAX).minus(SigSet::UNBLOCKABLE)));
        assert!(!all.blockable().apply(g::SIG_UNBLOCK, SigSet::of(SIGINT)).unwrap().contains(SIGINT));
        assert_eq!(SigSet::EMPTY.apply(7, all), Err(crate::linux::errno::EINVAL));
        let a = SigAction { handler: 0x1000, flags: 0, restorer: 0, mask: SigSet::of(SIGKILL).union(SigSet::of(SIGUSR2)) };
        let m = a.handler_mask(SigSet::EMPTY, SIGUSR1);
        assert!(m.contains(SIGUSR1) && m.contains(SIGUSR2) && !m.contains(SIGKILL));
        let a = SigAction { flags: u64::from(SA_NODEFER), ..a };
        assert!(!a.handler_mask(SigSet::EMPTY, SIGUSR1).contains(SIGUSR1));
    }

    #[test]
    fn synchronous_signals_go_first() {
        let p = SigSet::of(SIGINT).union(SigSet::of(SIGSEGV)).union(SigSet::of(SIGHUP));
        assert_eq!(next_deliverable(p, SigSet::EMPTY), Some(SIGSEGV));
        assert_eq!(next_deliverable(p, SigSet::of(SIGSEGV)), Some(SIGHUP));
        assert_eq!(next_deliverable(SigSet::of(SIGKILL), SigSet(u64::MAX)), Some(SIGKILL), "SIGKILL cannot be blocked");
        assert_eq!(next_deliverable(SigSet::of(SIGINT), SigSet::of(SIGINT)), None);
    }

    #[test]
    fn restart_rules() {
        let plain = SigAction { handler: 0x1000, ..Default::default() };
        let restarting = SigAction { flags: u64::from(SA_RESTART), ..plain };
        assert_eq!(restart_rule(restart::ERESTARTSYS, Some(&plain)), Restart::Eintr);
        assert_eq!(restart_rule(restart::ERESTARTSYS, Some(&restarting)), Restart::Again);
        assert_eq!(restart_rule(restart::ERESTARTSYS, None), Restart::Again);
        assert_eq!(restart_rule(restart::ERESTARTNOHAND, Some(&restarting)), Restart::Eintr);
        assert_eq!(restart_rule(restart::ERESTARTNOINTR, Some(&plain)), Restart::Again);
        assert_eq!(restart_rule(restart::ERESTART_RESTARTBLOCK, Some(&restarting)), Restart::Eintr);
        assert_eq!(restart_rule(restart::ERESTART_RESTARTBLOCK, None), Restart::Block);
        assert_eq!(restart_rule(crate::linux::errno::EAGAIN, Some(&plain)), Restart::Keep);
    }

    #[test]
    fn sigaction_and_siginfo_bytes() {
        let a = SigAction { handler: 1, flags: u64::from(SA_SIGINFO | SA_RESTORER), restorer: 3, mask: SigSet(4) };
        assert_eq!(SigAction::from_bytes(&a.to_bytes()), a);
        assert_eq!(core::mem::size_of::<g::kernel_sigaction>(), SIGACTION_SIZE);
        assert_eq!(core::mem::size_of::<g::siginfo>(), SIGINFO_SIZE);
        let b = SigInfo::fault(SIGSEGV, g::SEGV_MAPERR, 0xdead_0000).to_bytes();
        assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), 0xdead_0000);
        let b = SigInfo::child(42, ChildEvent::Exited(7)).to_bytes();
        assert_eq!((b[0], b[8], b[16], b[24]), (SIGCHLD as u8, g::CLD_EXITED as u8, 42, 7));
        assert_eq!(i32::from_le_bytes(SigInfo::user(SIGUSR1, 5, true).to_bytes()[8..12].try_into().unwrap()), g::SI_TKILL);
    }

    #[test]
    fn frame_is_placed_below_red_zone_and_aligned() {
        let alt = AltStack { flags: g::SS_DISABLE, ..Default::default() };
        let p = place_frame(0x7fff_0000_1000, false, &alt, 832).unwrap();
        assert_eq!(p.fpstate % 64, 0);
        assert!(p.fpstate + 836 <= 0x7fff_0000_1000 - 128);
        assert!(p.frame + frame::SIZE as u64 <= p.fpstate);
        assert_eq!((p.frame + 8) % 16, 0, "rsp + 8 aligned as after a call");
        let alt = AltStack { sp: 0x5000_0000, flags: 0, size: 0x4000 };
        let p = place_frame(0x7fff_0000_1000, true, &alt, 832).unwrap();
        assert!(p.frame > 0x5000_0000 && p.fpstate < 0x5000_4000);
        // Already on the alternate stack: nest below the current rsp.
        let p2 = place_frame(0x5000_2000, true, &alt, 832).unwrap();
        assert!(p2.fpstate < 0x5000_2000 - 128);
        assert_eq!(place_frame(100, false, &AltStack::default(), 832), None);
    }

    fn regs() -> UserRegs {
        let mut r = UserRegs::default();
        for (i, x) in [&mut r.r8, &mut r.r9, &mut r.r10, &mut r.r11, &mut r.r12, &mut r.r13, &mut r.r14, &mut r.r15, &mut r.rdi, &mut r.rsi, &mut r.rbp, &mut r.rbx, &mut r.rdx, &mut r.rax, &mut r.rcx].into_iter().enumerate() {
            *x = 0x1111 * (i as u64 + 1);
        }
        r.rsp = 0x7fff_0000_0ff8;
        r.rip = 0x40_1000;
        r.rflags = 0x246;
        r.cs = 0x23;
        r.ss = 0x1b;
        r
    }

    #[test]
    fn frame_round_trips_and_offsets_match_linux() {
        let r = regs();
        let info = SigInfo::kernel(SIGINT);
        let b = build_frame(&r, SigSet(0x55), &info, 0x40_2000, 0x7fff_0000_0c00, &AltStack::default(), 0);
        assert_eq!(b.len(), 440, "pretcode + ucontext (304) + siginfo (128)");
        assert_eq!(u64::from_le_bytes(b[0..8].try_into().unwrap()), 0x40_2000);
        // rip is word 16 of sigcontext; sigcontext starts at 40 in ucontext.
        assert_eq!(u64::from_le_bytes(b[8 + 40 + 128..8 + 40 + 136].try_into().unwrap()), 0x40_1000);
        assert_eq!(b[frame::INFO], SIGINT as u8);
        let back = parse_frame(&b, 0x23, 0x1b).unwrap();
        assert_eq!(back.regs, r);
        assert_eq!(back.blocked, SigSet(0x55));
        assert_eq!(back.fpstate, 0x7fff_0000_0c00);
    }

    #[test]
    fn forged_frames_are_refused() {
        let r = regs();
        let ok = build_frame(&r, SigSet::EMPTY, &SigInfo::kernel(SIGINT), 0, 0, &AltStack::default(), 0);
        let mut b = ok.clone();
        b[frame::SC_CS..frame::SC_CS + 2].copy_from_slice(&0x08u16.to_le_bytes());
        assert_eq!(parse_frame(&b, 0x23, 0x1b), Err(BadFrame::Selector), "ring-0 code selector");
        let mut b = ok.clone();
        b[frame::SC_SS..frame::SC_SS + 2].copy_from_slice(&0x10u16.to_le_bytes());
        assert_eq!(parse_frame(&b, 0x23, 0x1b), Err(BadFrame::Selector));
        for rip in [0x0000_8000_0000_0000u64, 0xffff_8000_0000_0000, crate::USER_TOP] {
            let mut b = ok.clone();
            b[frame::MCONTEXT + 128..frame::MCONTEXT + 136].copy_from_slice(&rip.to_le_bytes());
            assert_eq!(parse_frame(&b, 0x23, 0x1b), Err(BadFrame::Rip), "rip {rip:#x}");
        }
        let mut b = ok.clone();
        b[frame::SC_FPSTATE..frame::SC_FPSTATE + 8].copy_from_slice(&0x1001u64.to_le_bytes());
        assert_eq!(parse_frame(&b, 0x23, 0x1b), Err(BadFrame::FpstatePointer));
        assert_eq!(parse_frame(&ok[..100], 0x23, 0x1b), Err(BadFrame::Selector));
    }

    #[test]
    fn xsave_images_that_would_fault_are_refused() {
        let mut img = alloc::vec![0u8; 832];
        img[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        img[512..520].copy_from_slice(&3u64.to_le_bytes());
        assert_eq!(check_xsave(&img, 0x7, 0xffff), Ok(3));
        let mut b = img.clone();
        b[512..520].copy_from_slice(&0x8u64.to_le_bytes());
        assert_eq!(check_xsave(&b, 0x7, 0xffff), Err(BadFrame::XstateHeader), "component outside XCR0");
        let mut b = img.clone();
        b[527] = 0x80;
        assert_eq!(check_xsave(&b, 0x7, 0xffff), Err(BadFrame::XstateHeader), "compacted form");
        let mut b = img.clone();
        b[540] = 1;
        assert_eq!(check_xsave(&b, 0x7, 0xffff), Err(BadFrame::XstateHeader), "reserved header bytes");
        let mut b = img.clone();
        b[26] = 1;
        assert_eq!(check_xsave(&b, 0x7, 0xffff), Err(BadFrame::Mxcsr));
        assert_eq!(check_xsave(&img[..500], 0x7, 0xffff), Err(BadFrame::XstateHeader));
    }

    #[test]
    fn standard_signals_merge_and_realtime_ones_queue() {
        let mut p = Pending::default();
        assert_eq!(p.post(SigInfo::user(SIGUSR1, 10, false), 8), Ok(Posted::Queued));
        assert_eq!(p.post(SigInfo::user(SIGUSR1, 11, false), 8), Ok(Posted::Merged));
        for pid in 0..3 {
            assert_eq!(p.post(SigInfo::user(40, pid, false), 3), Ok(Posted::Queued));
        }
        assert_eq!(p.post(SigInfo::user(41, 0, false), 3), Err(crate::linux::errno::EAGAIN), "queue full");
        assert_eq!(p.post(SigInfo::user(65, 0, false), 3), Err(crate::linux::errno::EINVAL));
        assert_eq!(p.take(SigSet::EMPTY).map(|i| (i.signo, i.pid)), Some((SIGUSR1, 10)), "the first sender's info");
        for pid in 0..3 {
            assert_eq!(p.take(SigSet::EMPTY).map(|i| (i.signo, i.pid)), Some((40, pid)), "in order, each once");
        }
        assert_eq!(p.take(SigSet::EMPTY), None);
        p.post(SigInfo::kernel(SIGTSTP), 3).unwrap();
        p.post(SigInfo::kernel(SIGINT), 3).unwrap();
        assert_eq!(p.take(SigSet::of(SIGINT)).map(|i| i.signo), Some(SIGTSTP));
        p.post(SigInfo::kernel(SIGTTIN), 3).unwrap();
        p.discard(SigSet::of(SIGTTIN).union(SigSet::of(SIGTSTP)));
        assert_eq!(p.set(), SigSet::of(SIGINT), "blocked SIGINT stays pending");
    }

    proptest! {
        /// Every send reported `Queued` is delivered exactly once; `Merged` ones never are.
        #[test]
        fn pending_conserves_queued_signals(ops in proptest::collection::vec((1u32..=64, any::<bool>(), any::<u64>()), 1..200)) {
            let mut p = Pending::default();
            let (mut queued, mut taken) = (0usize, 0usize);
            for (sig, send, blocked) in ops {
                if send {
                    if p.post(SigInfo::kernel(sig), 16) == Ok(Posted::Queued) { queued += 1; }
                } else if let Some(i) = p.take(SigSet(blocked)) {
                    prop_assert!(!SigSet(blocked).blockable().contains(i.signo));
                    taken += 1;
                }
            }
            while p.take(SigSet::EMPTY).is_some() { taken += 1; }
            prop_assert_eq!(queued, taken);
            prop_assert!(p.set().is_empty());
        }
    }

    proptest! {
        /// Whatever bytes a frame holds, what parse_frame accepts returns to ring 3 with the user
        /// selectors, a user rip, IF on and no privileged flag.
        #[test]
        fn any_accepted_frame_is_safe(bytes in proptest::collection::vec(any::<u8>(), frame::SIZE), cs_ok: bool, rip in any::<u64>(), fl in any::<u64>()) {
            let mut b = bytes;
            if cs_ok {
                b[frame::SC_CS..frame::SC_CS + 2].copy_from_slice(&0x23u16.to_le_bytes());
                b[frame::SC_SS..frame::SC_SS + 2].copy_from_slice(&0x1bu16.to_le_bytes());
            }
            b[frame::MCONTEXT + 128..frame::MCONTEXT + 136].copy_from_slice(&(rip >> (rip & 63)).to_le_bytes());
            b[frame::MCONTEXT + 136..frame::MCONTEXT + 144].copy_from_slice(&fl.to_le_bytes());
            if let Ok(r) = parse_frame(&b, 0x23, 0x1b) {
                prop_assert_eq!((r.regs.cs, r.regs.ss), (0x23, 0x1b));
                prop_assert!(r.regs.rip < crate::USER_TOP);
                prop_assert_eq!(r.regs.rflags & !RFLAGS_USER, RFLAGS_FIXED);
                prop_assert!(!r.blocked.contains(SIGKILL) && !r.blocked.contains(SIGSTOP));
            }
        }
    }
}
