//! Signals: the state of each process and thread, sending, delivery on every return to ring 3,
//! the x86-64 signal frame and `rt_sigreturn`, default actions, user faults to handlers, and the
//! real-time interval timer (`alarm`, `setitimer`).
//!
//! State ([`Signals`], a field of every `Process`, one interrupts-off lock):
//! - per process: the 64 actions ([`Actions`]: shared by every thread, since `CLONE_SIGHAND` is
//!   what thread libraries pass, and with every process a `clone(CLONE_VM | CLONE_SIGHAND)` made,
//!   until it execs), the process-wide pending set, the stop state, the `ITIMER_REAL` timer;
//! - per thread (by thread id): the blocked mask, the thread's own pending set, the alternate stack
//!   and the mask `rt_sigsuspend` saved.
//!
//! The data structures are `abi::signal`'s (sets, `Pending` with merging of standard signals and
//! queueing of real-time ones, the choice of the next signal, the restart rule, the frame layout and
//! its checks); this module applies them to threads.
//!
//! Sending ([`send_to_thread`], [`send_to_process`]; the process tree's `kill(-pgrp)` and the
//! SIGCHLD of an exit call the latter): a stop discards pending SIGCONTs and SIGCONT discards pending
//! stops and resumes a stopped process at once, as Linux's `prepare_signal`; an ignored signal is
//! dropped unless the target blocks it; otherwise it is posted to the thread's or the process's
//! pending set and the thread chosen to take it (the target, or the first thread that does not
//! block it) is woken from an interruptible sleep. Callable from interrupt context for standard
//! signals (nothing allocates then; the caller must not drop the last reference of a process there).
//!
//! Interruptible sleep is `ipc::intr` (it lives below `fs` and `process` so that pipe reads, `poll`
//! and `wait4` use it too): a blocking call sleeps with `intr::wait(&queue, ready)` or
//! `intr::sleep_ns(ns)` and, when it returns `Err(Interrupted)`, answers one of Linux's restart codes
//! (`abi::signal::restart`): `ERESTARTSYS` (restart under `SA_RESTART`, else `EINTR`),
//! `ERESTARTNOHAND` (`EINTR` after a handler, restart otherwise), `ERESTART_RESTARTBLOCK` (the
//! same, but the restart continues what [`set_restart`] recorded, through `restart_syscall`) or
//! `ERESTARTNOINTR`. This module
//! keeps each thread's `intr` flag equal to "it has a signal to act on" (or its process is stopping
//! or dying) after every change.
//!
//! Delivery ([`on_syscall_return`], [`on_interrupt_return`]): on every way back to ring 3, while the
//! thread's flag is up (every deliverable signal gets its frame, each on top of the previous, as
//! Linux's exit loop does): a stopped process parks the thread until SIGCONT or SIGKILL; the next
//! deliverable signal (synchronous faults first, then the lowest number; the thread's own before the
//! process's) is taken; an ignored one is skipped, a default one terminates (core: the same, with a
//! report; the status has no core bit because no core file is written, as Linux with
//! `RLIMIT_CORE` 0), stops or continues; a handler gets a frame and the thread returns into it with
//! `rdi` = signal, `rsi` = &siginfo, `rdx` = &ucontext, `rsp` = the frame. An interrupted call's
//! restart code becomes `-EINTR` or a re-execution of the `syscall` instruction (`rip -= 2`, `rax`
//! = the number) per the rule, decided before the registers are saved in the frame.
//!
//! The frame (see `abi::signal` for the picture): below the red zone or at the top of the alternate
//! stack (`SA_ONSTACK`), the extended-state image (`task::xstate`, standard XSAVE form, with Linux's
//! software-reserved bytes and trailing magic), then `ucontext` and `siginfo`, and `sa_restorer` as
//! the return address; `SA_RESTORER` is required, as on Linux x86-64. A frame that cannot be written
//! (a bad stack) kills the process with SIGSEGV. `rt_sigreturn` reads it back through
//! `abi::signal::parse_frame` (user selectors, user `rip`, merged flags) and the XSAVE checks, and a
//! forged frame ends the process with SIGSEGV and a report line, never the kernel.
//!
//! User faults (`process::fault`): a fault whose signal has a handler and is not blocked is posted
//! to the thread with its `si_code` and `si_addr` ([`force_fault`]) and delivered on the way out of
//! the exception; otherwise (no handler, or a fault inside a handler that blocks it) the process
//! ends as before.
//!
//! Stop and continue: a default stop parks every thread of the process at its next return to ring 3
//! (their flags go up, sleepers are woken); SIGCONT (or SIGKILL) releases them. The process tree is
//! told through [`set_job_hooks`] (its wait reports and SIGCHLD).
//!
//! Timers: a process's `ITIMER_REAL` is `abi::timer::RealTimer`; one kernel thread (`itimer`,
//! started at the first `alarm`/`setitimer`) sleeps until the earliest deadline, in slices of at
//! most [`TIMER_SLICE_NS`] so that a new earlier deadline is noticed, and sends SIGALRM.
//!
//! Lock order: `Signals::state` -> `ipc::intr`'s locks -> a wait queue's lock. The lock of
//! [`Actions`] (the table processes may share) is taken only under `state`, and nothing under it.

use alloc::{collections::BTreeMap, string::String, sync::Arc, sync::Weak, vec::Vec};
use core::sync::atomic::Ordering;

use abi::{
    linux::{errno, general as g},
    signal::{self as sig, AltStack, DefaultAction, Pending, Posted, SigAction, SigInfo, SigSet},
    timer::{ITimerVal, RealTimer},
};
use arch::syscall::{USER_CS, USER_SS, UserFrame};
use talc::lock_api::Mutex as SpinMutex;

use super::{NOT_KILLED, Process, THREADS, current, current_tid};
use ::trace::{Category, Record};

use crate::{
    cpu::{irqlock::RawIrqSpin, trace},
    ipc::intr,
    task,
};

/// Real-time signals queued at most per pending set (Linux's `RLIMIT_SIGPENDING` is per user and
/// larger; this bounds what one process can make the kernel hold).
const RT_QUEUE_LIMIT: usize = 1024;
/// Longest sleep of the timer thread before it looks for a new earlier deadline.
pub const TIMER_SLICE_NS: u64 = 2_000_000;

/// Linux's `fpx_sw_bytes` magic numbers (`arch/x86/include/uapi/asm/sigcontext.h`).
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
/// RFLAGS.TF and RFLAGS.DF, cleared for a handler (Linux's `signal_setup_done` path).
const RFLAGS_TF_DF: u64 = (1 << 8) | (1 << 10);

/// One thread's signal state.
#[derive(Clone, Debug, Default)]
struct ThreadSig {
    blocked: SigSet,
    pending: Pending,
    alt: AltStack,
    /// The mask `rt_sigsuspend` replaced, put back when its handler returns (or at once when none
    /// runs).
    saved: Option<SigSet>,
    /// What `restart_syscall` continues after a call answered `ERESTART_RESTARTBLOCK`.
    restart: Option<RestartBlock>,
}

/// The rest of an interrupted call, for `restart_syscall` (Linux's `restart_block`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartBlock {
    /// A relative sleep: until `deadline_ns` (monotonic), the time left to `rem` if non-zero.
    Sleep { deadline_ns: u64, rem: u64 },
}

/// The signal actions of one process, or of several: a `clone` with `CLONE_SIGHAND` and without
/// `CLONE_THREAD` gives the child its parent's table itself, so an action either installs is the
/// other's (Linux's `sighand_struct`), until one of them execs ([`Signals::on_exec`] takes a copy
/// of its own first, as Linux's `unshare_sighand`). Reached only with the owner's `state` held.
struct Actions(SpinMutex<RawIrqSpin, [SigAction; sig::NSIG as usize]>);

impl Actions {
    fn new(table: [SigAction; sig::NSIG as usize]) -> Arc<Self> {
        Arc::new(Actions(SpinMutex::new(table)))
    }

    /// The action of signal `signo` (1..=64).
    fn get(&self, signo: u32) -> SigAction {
        self.0.lock()[(signo - 1) as usize]
    }
}

struct State {
    actions: Arc<Actions>,
    shared: Pending,
    threads: BTreeMap<u64, ThreadSig>,
    /// The signal that stopped the process, while it is stopped.
    stopped: Option<u32>,
    /// The process is ending (a fatal signal, exit_group): every sleeper leaves.
    dying: bool,
    timer: RealTimer,
}

/// The signal state of a process and its threads.
pub struct Signals {
    state: SpinMutex<RawIrqSpin, State>,
    /// Threads of a stopped process wait here for SIGCONT or SIGKILL.
    resume: sched::WaitQueue,
}

impl Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}

impl Signals {
    pub fn new() -> Self {
        Signals {
            state: SpinMutex::new(State {
                actions: Actions::new([SigAction::default(); sig::NSIG as usize]),
                shared: Pending::default(),
                threads: BTreeMap::new(),
                stopped: None,
                dying: false,
                timer: RealTimer::default(),
            }),
            resume: sched::WaitQueue::new(),
        }
    }

    /// Whether the process is stopped (by SIGSTOP, SIGTSTP, SIGTTIN or SIGTTOU, until SIGCONT):
    /// `/proc`'s state `T`.
    pub fn is_stopped(&self) -> bool {
        self.state.lock().stopped.is_some()
    }

    /// The signal state of a `fork` child: a copy of the actions; no pending signals, no threads
    /// yet (the child's thread attaches with the forking thread's mask), no timer (fork(2): timers
    /// are not inherited).
    pub fn fork_copy(&self) -> Self {
        let child = Self::new();
        let table = *self.state.lock().actions.0.lock();
        child.state.lock().actions = Actions::new(table);
        child
    }

    /// `CLONE_SIGHAND` without `CLONE_THREAD`: this (new) process uses `parent`'s table of actions
    /// itself, not a copy.
    pub fn share_actions_of(&self, parent: &Signals) {
        let table = parent.state.lock().actions.clone();
        self.state.lock().actions = table;
    }

    /// `execve`: a table shared with another process becomes a copy of its own first (Linux's
    /// `unshare_sighand`), so the reset below leaves the other's handlers alone; then caught
    /// signals go back to their default action, ignored ones stay ignored; the mask, the pending
    /// signals and the timer survive (execve(2)); the alternate stack goes.
    pub fn on_exec(&self, tid: u64) {
        let mut st = self.state.lock();
        // Another holder may be a process that has ended and not yet been dropped: a copy then
        // costs 64 actions, never a wrong answer.
        if Arc::strong_count(&st.actions) > 1 {
            let table = *st.actions.0.lock();
            st.actions = Actions::new(table);
        }
        for a in st.actions.0.lock().iter_mut() {
            if a.handler != sig::SIG_DFL && a.handler != sig::SIG_IGN {
                *a = SigAction::default();
            }
        }
        if let Some(t) = st.threads.get_mut(&tid) {
            t.alt = AltStack { flags: g::SS_DISABLE, ..Default::default() };
        }
    }

    /// A new thread `tid` of the process, with the creator's mask `blocked` (as `clone` gives it).
    pub fn attach(&self, tid: u64, blocked: SigSet) {
        intr::register(tid);
        let mut st = self.state.lock();
        st.threads.insert(tid, ThreadSig { blocked: blocked.blockable(), alt: AltStack { flags: g::SS_DISABLE, ..Default::default() }, ..Default::default() });
        st.sync_flag(tid);
    }

    /// Thread `tid` ends: its own pending signals go with it; with the last thread, the timer
    /// disarms (the timer thread then forgets the process).
    pub fn detach(&self, tid: u64) {
        let gone = {
            let mut st = self.state.lock();
            let gone = st.threads.remove(&tid);
            if st.threads.is_empty() {
                st.timer = RealTimer::default();
            }
            gone
        };
        drop(gone);
        intr::forget(tid);
    }

    /// The process is ending: raise every thread's flag and wake the sleepers, so each one reaches
    /// its exit at once; release a stopped process.
    pub fn dying(&self) {
        let tids: Vec<u64> = {
            let mut st = self.state.lock();
            st.dying = true;
            st.stopped = None;
            let tids: Vec<u64> = st.threads.keys().copied().collect();
            for &t in &tids {
                st.sync_flag(t);
            }
            tids
        };
        for t in tids {
            intr::kick(t);
        }
        self.resume.wake_all(task::sched());
    }
}

impl State {
    /// Whether thread `tid` has something to act on: a deliverable signal, a stop, the end.
    fn wants_attention(&self, tid: u64) -> bool {
        let Some(t) = self.threads.get(&tid) else { return false };
        self.dying || self.stopped.is_some() || sig::next_deliverable(t.pending.set().union(self.shared.set()), t.blocked).is_some()
    }

    fn sync_flag(&self, tid: u64) {
        intr::set_pending(tid, self.wants_attention(tid));
    }

    fn sync_all(&self) {
        for &t in self.threads.keys() {
            self.sync_flag(t);
        }
    }

    fn discard_everywhere(&mut self, which: SigSet) {
        self.shared.discard(which);
        for t in self.threads.values_mut() {
            t.pending.discard(which);
        }
    }
}

/// How the process tree learns of stops and continues (its wait reports and SIGCHLD).
#[derive(Clone, Copy)]
pub struct JobHooks {
    /// Process `pid` stopped on signal `sig`.
    pub stopped: fn(pid: u32, sig: u32),
    /// Process `pid` was continued by SIGCONT.
    pub continued: fn(pid: u32),
}

static JOB_HOOKS: spin::Once<JobHooks> = spin::Once::new();

/// Install the process tree's hooks (once).
#[allow(dead_code, reason = "the process tree installs them; until it exists nobody is told")]
pub fn set_job_hooks(hooks: JobHooks) {
    JOB_HOOKS.call_once(|| hooks);
}

/// The process whose id is `pid`, if it has not ended: from the process tree's table, which has
/// it from its creation on (a signal sent right after `fork` returns, before the child's thread
/// ran, must not be lost), or a thread of it.
fn process_by_pid(pid: u32) -> Option<Arc<Process>> {
    super::tree::live(pid).or_else(|| THREADS.lock().values().find(|p| p.pid() == pid).cloned())
}

/// Send `info` to thread `tid` (tkill, tgkill, a fault). `ESRCH` when no such thread exists;
/// `EAGAIN` when its real-time queue is full; `EINVAL` for a bad number.
pub fn send_to_thread(tid: u64, info: SigInfo) -> Result<(), u32> {
    let p = THREADS.lock().get(&tid).cloned().ok_or(errno::ESRCH)?;
    post(&p, Some(tid), info)
}

/// Send `info` to process `pid` (kill, SIGCHLD, the terminal's SIGINT, SIGALRM): any thread that
/// does not block it takes it. Errors as [`send_to_thread`].
pub fn send_to_process(pid: u32, info: SigInfo) -> Result<(), u32> {
    let p = process_by_pid(pid).ok_or(errno::ESRCH)?;
    post(&p, None, info)
}

/// Whether the thread or process exists and the number is valid (`kill(pid, 0)`).
pub fn check_target(tid: Option<u64>, pid: Option<u32>) -> Result<(), u32> {
    let found = match (tid, pid) {
        (Some(t), _) => THREADS.lock().contains_key(&t),
        (None, Some(p)) => process_by_pid(p).is_some(),
        (None, None) => false,
    };
    if found { Ok(()) } else { Err(errno::ESRCH) }
}

fn is_stop(s: u32) -> bool {
    sig::default_action(s) == DefaultAction::Stop
}

fn stops() -> SigSet {
    [g::SIGSTOP, g::SIGTSTP, g::SIGTTIN, g::SIGTTOU].into_iter().fold(SigSet::EMPTY, |mut m, s| {
        m.add(s);
        m
    })
}

fn post(p: &Arc<Process>, target: Option<u64>, info: SigInfo) -> Result<(), u32> {
    let signo = info.signo;
    if !(1..=sig::NSIG).contains(&signo) {
        return Err(errno::EINVAL);
    }
    let s = &p.signals;
    let mut continued = false;
    let mut wake: Vec<u64> = Vec::new();
    {
        let mut st = s.state.lock();
        if let Some(t) = target
            && !st.threads.contains_key(&t)
        {
            return Err(errno::ESRCH);
        }
        if is_stop(signo) {
            st.discard_everywhere(SigSet::of(g::SIGCONT));
        }
        if signo == g::SIGCONT || signo == g::SIGKILL {
            if signo == g::SIGCONT {
                st.discard_everywhere(stops());
            }
            continued = st.stopped.take().is_some();
        }
        let act = st.actions.get(signo);
        // A blocked signal is never ignored: its action may change before it is unblocked (Linux's
        // `sig_ignored`). A signal to the process asks the thread its pid names, the main thread
        // (any thread once that one has ended), as Linux asks the task the pid found.
        let asked = target.or_else(|| Some(p.ids.main_tid.load(Ordering::Acquire)).filter(|t| st.threads.contains_key(t)));
        let blocked = match asked {
            Some(t) => st.threads.get(&t).is_some_and(|t| t.blocked.contains(signo)),
            None => st.threads.values().any(|t| t.blocked.contains(signo)),
        };
        if act.ignores(signo) && !blocked {
            // Dropped (SIGCONT has done its work above).
        } else {
            let pending = match target {
                Some(t) => st.threads.get_mut(&t).map(|t| &mut t.pending),
                None => Some(&mut st.shared),
            };
            let posted = match pending {
                Some(q) => q.post(info, RT_QUEUE_LIMIT)?,
                None => return Err(errno::ESRCH),
            };
            if posted == Posted::Queued {
                match target {
                    Some(t) => wake.push(t),
                    None if signo == g::SIGKILL => wake.extend(st.threads.keys().copied()),
                    None => {
                        // Linux's `complete_signal`: the first thread that does not block it.
                        if let Some((&t, _)) = st.threads.iter().find(|(_, t)| !t.blocked.contains(signo)) {
                            wake.push(t);
                        }
                    }
                }
            }
        }
        st.sync_all();
    }
    let whom = wake.first().copied().unwrap_or(0);
    trace::event(Category::Signal, |tsc, cpu| Record::signal(tsc, cpu, whom, signo));
    for t in wake {
        intr::kick(t);
    }
    if continued {
        s.resume.wake_all(task::sched());
        if signo == g::SIGCONT
            && let Some(h) = JOB_HOOKS.get()
        {
            (h.continued)(p.pid());
        }
    }
    Ok(())
}

/// Post fault signal `info` to the calling thread if its process has a handler for it that the
/// thread does not block; false otherwise (the caller then ends the process, as Linux's
/// `force_sig_info` does by resetting the action to the default).
pub fn force_fault(info: SigInfo) -> bool {
    let Some(p) = current() else { return false };
    let tid = current_tid();
    let mut st = p.signals.state.lock();
    let act = st.actions.get(info.signo);
    let Some(t) = st.threads.get_mut(&tid) else { return false };
    if act.handler == sig::SIG_DFL || act.handler == sig::SIG_IGN || t.blocked.contains(info.signo) {
        return false;
    }
    // A fault is synchronous: it replaces a pending instance of the same signal.
    t.pending.discard(SigSet::of(info.signo));
    let ok = t.pending.post(info, RT_QUEUE_LIMIT).is_ok();
    st.sync_flag(tid);
    drop(st);
    drop(p);
    ok
}

// ---- the calls' state access (syscall::signal) -------------------------------------------------

/// The calling thread's process and id, or `ESRCH` for a kernel thread.
fn me() -> Result<(Arc<Process>, u64), u32> {
    Ok((current().ok_or(errno::ESRCH)?, current_tid()))
}

/// Whether the calling thread blocks `signo` or its process ignores it (SIG_IGN), as the
/// terminal's job control asks (Linux's `is_ignored`).
pub fn current_ignores(signo: u32) -> bool {
    let Some(p) = current() else { return false };
    let st = p.signals.state.lock();
    let blocked = st.threads.get(&current_tid()).is_some_and(|t| t.blocked.contains(signo));
    let ignored = (1..=sig::NSIG).contains(&signo) && st.actions.get(signo).handler == sig::SIG_IGN;
    drop(st);
    drop(p);
    blocked || ignored
}

/// The calling thread's blocked mask (what `clone` gives a new thread).
pub fn current_blocked() -> SigSet {
    current().and_then(|p| p.signals.state.lock().threads.get(&current_tid()).map(|t| t.blocked)).unwrap_or_default()
}

/// `rt_sigaction`: install `new` (if any) for `signo`, return the old action.
pub fn set_action(signo: u32, new: Option<SigAction>) -> Result<SigAction, u32> {
    if !(1..=sig::NSIG).contains(&signo) || (new.is_some() && SigSet::UNBLOCKABLE.contains(signo)) {
        return Err(errno::EINVAL);
    }
    let (p, _) = me()?;
    let mut st = p.signals.state.lock();
    let mut table = st.actions.0.lock();
    let old = table[(signo - 1) as usize];
    if let Some(mut a) = new {
        a.mask = a.mask.blockable();
        table[(signo - 1) as usize] = a;
        drop(table);
        // POSIX: setting SIG_IGN (or SIG_DFL of an ignored signal) discards the pending ones.
        if a.ignores(signo) {
            st.discard_everywhere(SigSet::of(signo));
            st.sync_all();
        }
    }
    Ok(old)
}

/// `rt_sigprocmask`: apply `how` with `set` (if any) to the calling thread's mask; the old mask.
pub fn change_mask(how: u32, set: Option<SigSet>) -> Result<SigSet, u32> {
    let (p, tid) = me()?;
    let mut st = p.signals.state.lock();
    let t = st.threads.get_mut(&tid).ok_or(errno::ESRCH)?;
    let old = t.blocked;
    if let Some(s) = set {
        t.blocked = old.apply(how, s)?;
    }
    st.sync_flag(tid);
    Ok(old)
}

/// `rt_sigpending`: the signals pending for the thread or its process that it blocks.
pub fn pending_blocked() -> Result<SigSet, u32> {
    let (p, tid) = me()?;
    let st = p.signals.state.lock();
    let t = st.threads.get(&tid).ok_or(errno::ESRCH)?;
    Ok(SigSet(t.pending.set().union(st.shared.set()).0 & t.blocked.0))
}

/// `rt_sigtimedwait`'s take: one pending signal of `want` (thread's first, then the process's),
/// none while SIGKILL or SIGSTOP is pending (their delivery comes first).
pub fn take_waited(want: SigSet) -> Result<Option<SigInfo>, u32> {
    let (p, tid) = me()?;
    let mut st = p.signals.state.lock();
    let not_wanted = SigSet(!want.blockable().0);
    let st = &mut *st;
    let t = st.threads.get_mut(&tid).ok_or(errno::ESRCH)?;
    let all = t.pending.set().union(st.shared.set());
    if all.0 & SigSet::UNBLOCKABLE.0 != 0 {
        return Ok(None);
    }
    let got = t.pending.take(not_wanted).or_else(|| st.shared.take(not_wanted));
    for &k in st.threads.keys() {
        intr::set_pending(k, st.wants_attention(k));
    }
    Ok(got)
}

/// Record the rest of the calling thread's interrupted call (before it answers
/// `ERESTART_RESTARTBLOCK`).
pub fn set_restart(block: RestartBlock) {
    if let Ok((p, tid)) = me()
        && let Some(t) = p.signals.state.lock().threads.get_mut(&tid)
    {
        t.restart = Some(block);
    }
}

/// `restart_syscall`: the recorded rest, once.
pub fn take_restart() -> Option<RestartBlock> {
    let (p, tid) = me().ok()?;
    p.signals.state.lock().threads.get_mut(&tid).and_then(|t| t.restart.take())
}

/// `rt_sigsuspend`: replace the mask with `mask` until a signal is delivered; the wait itself is
/// the caller's (`intr`), and delivery puts the old mask back.
pub fn suspend_mask(mask: SigSet) -> Result<(), u32> {
    let (p, tid) = me()?;
    let mut st = p.signals.state.lock();
    let t = st.threads.get_mut(&tid).ok_or(errno::ESRCH)?;
    if t.saved.is_none() {
        t.saved = Some(t.blocked);
    }
    t.blocked = mask.blockable();
    st.sync_flag(tid);
    Ok(())
}

/// `sigaltstack`: the old stack (with `SS_ONSTACK` when `rsp` is on it), and `new` installed
/// unless the thread runs on the current one (`EPERM`) or `new` is too small (`ENOMEM`).
pub fn alt_stack(new: Option<AltStack>, rsp: u64) -> Result<AltStack, u32> {
    let (p, tid) = me()?;
    let mut st = p.signals.state.lock();
    let t = st.threads.get_mut(&tid).ok_or(errno::ESRCH)?;
    let mut old = t.alt;
    let on = old.contains(rsp);
    if on {
        old.flags = g::SS_ONSTACK;
    } else if !old.is_enabled() {
        old = AltStack { flags: g::SS_DISABLE, ..Default::default() };
    }
    if let Some(n) = new {
        if on {
            return Err(errno::EPERM);
        }
        // SS_AUTODISARM (bit 31) is accepted and ignored; anything else but SS_DISABLE/SS_ONSTACK is EINVAL.
        let mode = n.flags & !(1 << 31);
        if mode != 0 && mode != g::SS_DISABLE && mode != g::SS_ONSTACK {
            return Err(errno::EINVAL);
        }
        t.alt = if mode == g::SS_DISABLE {
            AltStack { flags: g::SS_DISABLE, ..Default::default() }
        } else if n.size < u64::from(g::MINSIGSTKSZ) {
            return Err(errno::ENOMEM);
        } else {
            AltStack { sp: n.sp, size: n.size, flags: 0 }
        };
    }
    Ok(old)
}

/// Change the calling process's real-time timer with `f` (given the monotonic clock), then tell
/// the timer thread whether it is armed.
fn change_timer<R>(f: impl FnOnce(&mut RealTimer, u64) -> Result<R, u32>) -> Result<R, u32> {
    let (p, _) = me()?;
    let now = crate::time::now_ns();
    let (r, armed) = {
        let mut st = p.signals.state.lock();
        let r = f(&mut st.timer, now)?;
        (r, st.timer.deadline().is_some())
    };
    timer_changed(&p, armed);
    Ok(r)
}

/// `alarm`: seconds left on the previous one.
pub fn alarm(seconds: u32) -> Result<u32, u32> {
    change_timer(|t, now| Ok(t.alarm(now, seconds)))
}

/// `setitimer(ITIMER_REAL)`: the old setting.
pub fn set_timer(new: ITimerVal) -> Result<ITimerVal, u32> {
    change_timer(|t, now| t.set(now, new))
}

/// `getitimer(ITIMER_REAL)`.
pub fn get_timer() -> Result<ITimerVal, u32> {
    let (p, _) = me()?;
    let now = crate::time::now_ns();
    Ok(p.signals.state.lock().timer.get(now))
}

// ---- delivery -----------------------------------------------------------------------------------

/// What to do with the next signal.
enum Next {
    Nothing,
    Stop(u32),
    Die { signo: u32, core: bool },
    Handle { info: SigInfo, act: SigAction },
}

fn take_next(p: &Process, tid: u64) -> Next {
    let mut st = p.signals.state.lock();
    loop {
        let Some(t) = st.threads.get_mut(&tid) else { return Next::Nothing };
        let blocked = t.blocked;
        let info = match t.pending.take(blocked) {
            Some(i) => i,
            None => match st.shared.take(blocked) {
                Some(i) => i,
                None => {
                    st.sync_flag(tid);
                    return Next::Nothing;
                }
            },
        };
        let signo = info.signo;
        // Read, and reset under SA_RESETHAND, in one hold of the table: a process sharing it
        // (`CLONE_SIGHAND`) may take the same signal at the same time, and only one of them
        // runs the handler's one-shot instance.
        let act = {
            let mut table = st.actions.0.lock();
            let act = table[(signo - 1) as usize];
            if act.handler != sig::SIG_DFL && act.handler != sig::SIG_IGN && signo != g::SIGKILL && act.has(sig::SA_RESETHAND) {
                table[(signo - 1) as usize] = SigAction::default();
            }
            act
        };
        if act.handler == sig::SIG_IGN && signo != g::SIGKILL {
            continue;
        }
        if act.handler == sig::SIG_DFL || signo == g::SIGKILL {
            match sig::default_action(signo) {
                DefaultAction::Ignore | DefaultAction::Continue => continue,
                DefaultAction::Stop => {
                    st.sync_flag(tid);
                    return Next::Stop(signo);
                }
                DefaultAction::Terminate => return Next::Die { signo, core: false },
                DefaultAction::Core => return Next::Die { signo, core: true },
            }
        }
        return Next::Handle { info, act };
    }
}

/// End the process by `signo` (the caller holds nothing that must be dropped).
fn die(signo: u32, core: bool) -> ! {
    if core && let Some(p) = current() {
        log::warn!(
            "signal: pid {} tid {} '{}': killed by {} (its default action dumps core; no core file is written)",
            p.pid(),
            current_tid(),
            p.name(),
            signal_name(signo)
        );
    }
    super::exit_current(signo as i32, true)
}

/// Park the calling thread while its process is stopped (by `signo`, if this thread stops it).
fn stop(p: &Arc<Process>, signo: Option<u32>) {
    let s = &p.signals;
    let mut first = false;
    let tids: Vec<u64> = {
        let mut st = s.state.lock();
        if let Some(sg) = signo
            && st.stopped.is_none()
            && !st.dying
        {
            st.stopped = Some(sg);
            first = true;
        }
        st.sync_all();
        st.threads.keys().copied().collect()
    };
    if first {
        for t in tids {
            intr::kick(t);
        }
        if let (Some(h), Some(sg)) = (JOB_HOOKS.get(), signo) {
            (h.stopped)(p.pid(), sg);
        }
    }
    s.resume.wait_until(task::sched(), || {
        let st = s.state.lock();
        st.stopped.is_none() || st.dying
    });
}

/// The system call in `frame` returned (its result in `rax`): deliver what is pending. `restart`:
/// whether a restart code in `rax` is to be resolved (false after `rt_sigreturn`, whose `rax` is
/// the restored one). Interrupts on.
pub fn on_syscall_return(frame: &mut UserFrame, restart: bool) {
    let code = (frame.rax as i64).checked_neg().and_then(|c| u32::try_from(c).ok());
    let restart_code = restart
        && code.is_some_and(|c| {
            matches!(c, sig::restart::ERESTARTSYS | sig::restart::ERESTARTNOINTR | sig::restart::ERESTARTNOHAND | sig::restart::ERESTART_RESTARTBLOCK)
        });
    if !restart_code && !intr::is_pending(current_tid()) {
        return;
    }
    deliver(frame, if restart_code { code } else { None });
}

/// An interrupt or exception is about to return to ring 3 with `frame`. Interrupts off; they are
/// enabled only when there is work.
pub fn on_interrupt_return(frame: &mut UserFrame) {
    if !intr::is_pending(current_tid()) && !super::is_being_killed() {
        return;
    }
    arch::interrupts::enable();
    super::exit_if_killed();
    deliver(frame, None);
    // A handler's address is the user's to choose (sigaction checks none, as Linux's does not),
    // and this way back is `iretq`, which on Intel CPUs faults in ring 0 on a non-canonical rip,
    // after the exit's `swapgs` has loaded the user's GS base (which WRGSBASE lets the user
    // choose): the return a system call's exit would refuse is refused here too.
    if frame.prepare_return() == arch::syscall::UserReturn::Invalid {
        impossible_return(frame);
    }
}

/// The calling thread's way back to user mode is `frame`, which cannot be returned to
/// ([`arch::syscall::UserReturn::Invalid`]): report it and end the process by SIGSEGV, as a fault
/// there would.
pub fn impossible_return(frame: &UserFrame) -> ! {
    arch::interrupts::enable();
    // The same shape as the fault report of `process::fault`, with the program's name.
    let (pid, name) = current().map_or((0, String::from("?")), |p| (p.pid(), p.name()));
    log::error!(
        "user fault: pid {pid} tid {} '{name}': return to rip {:#x} rsp {:#x} is impossible: killed by SIGSEGV",
        current_tid(),
        frame.rip,
        frame.rsp
    );
    // The thread never returns here: nothing may stay owned on its stack.
    drop(name);
    super::exit_current(11, true)
}

fn deliver(frame: &mut UserFrame, mut restart: Option<u32>) {
    let Some(p) = current() else { return };
    let tid = current_tid();
    loop {
        if p.kill_status.load(Ordering::Acquire) != NOT_KILLED {
            drop(p);
            super::exit_if_killed();
            return;
        }
        if p.signals.state.lock().stopped.is_some() {
            stop(&p, None);
            continue;
        }
        match take_next(&p, tid) {
            Next::Nothing => break,
            Next::Stop(s) => stop(&p, Some(s)),
            Next::Die { signo, core } => {
                drop(p);
                die(signo, core)
            }
            Next::Handle { info, act } => {
                if let Some(code) = restart.take() {
                    apply_restart(frame, sig::restart_rule(code, Some(&act)));
                }
                if setup_frame(&p, tid, frame, &info, &act).is_err() {
                    log::error!(
                        "signal: pid {} tid {tid} '{}': no room for the frame of {} at rsp {:#x}: killed by SIGSEGV",
                        p.pid(),
                        p.name(),
                        signal_name(info.signo),
                        frame.rsp
                    );
                    drop(p);
                    die(g::SIGSEGV, false)
                }
                // As Linux's exit loop: the next deliverable signal (under the handler's mask) gets
                // its frame on top of this one, and its handler runs first.
            }
        }
    }
    // No handler ran: an interrupted call restarts, and a suspended mask comes back.
    if let Some(code) = restart {
        apply_restart(frame, sig::restart_rule(code, None));
    }
    let mut st = p.signals.state.lock();
    if let Some(t) = st.threads.get_mut(&tid)
        && let Some(m) = t.saved.take()
    {
        t.blocked = m;
    }
    st.sync_flag(tid);
}

fn apply_restart(frame: &mut UserFrame, r: sig::Restart) {
    match r {
        sig::Restart::Keep => {}
        sig::Restart::Eintr => frame.rax = abi::linux::errno_ret(errno::EINTR),
        sig::Restart::Again => {
            frame.rax = frame.orig_rax;
            frame.rip = frame.rip.wrapping_sub(2);
        }
        sig::Restart::Block => {
            frame.rax = u64::from(g::__NR_restart_syscall);
            frame.rip = frame.rip.wrapping_sub(2);
        }
    }
}

fn user_regs(f: &UserFrame) -> sig::UserRegs {
    sig::UserRegs {
        r8: f.r8,
        r9: f.r9,
        r10: f.r10,
        r11: f.r11,
        r12: f.r12,
        r13: f.r13,
        r14: f.r14,
        r15: f.r15,
        rdi: f.rdi,
        rsi: f.rsi,
        rbp: f.rbp,
        rbx: f.rbx,
        rdx: f.rdx,
        rax: f.rax,
        rcx: f.rcx,
        rsp: f.rsp,
        rip: f.rip,
        rflags: f.rflags,
        cs: USER_CS,
        ss: USER_SS,
    }
}

/// Write the frame for `info` under `act` and point `frame` at the handler; the thread's mask
/// becomes the handler's.
fn setup_frame(p: &Process, tid: u64, frame: &mut UserFrame, info: &SigInfo, act: &SigAction) -> Result<(), ()> {
    if !act.has(sig::SA_RESTORER) {
        return Err(());
    }
    let (alt, blocked, saved) = {
        let st = p.signals.state.lock();
        let t = st.threads.get(&tid).ok_or(())?;
        (t.alt, t.blocked, t.saved)
    };
    let image = task::xstate::save_current();
    let xsize = image.as_ref().map_or(0, |i| i.len());
    let place = sig::place_frame(frame.rsp, act.has(sig::SA_ONSTACK), &alt, xsize).ok_or(())?;
    let fpstate = match image {
        Some(mut img) => {
            if let Some(fmt) = task::xstate::format().filter(|f| f.xsave) {
                // Linux's `fpx_sw_bytes` in the legacy area's software-reserved bytes 464..512.
                img[464..468].copy_from_slice(&FP_XSTATE_MAGIC1.to_le_bytes());
                img[468..472].copy_from_slice(&((xsize + 4) as u32).to_le_bytes());
                img[472..480].copy_from_slice(&fmt.xcr0.to_le_bytes());
                img[480..484].copy_from_slice(&(xsize as u32).to_le_bytes());
            }
            arch::usercopy::copy_to_user(place.fpstate, &img).map_err(|_| ())?;
            arch::usercopy::copy_to_user(place.fpstate + xsize as u64, &FP_XSTATE_MAGIC2.to_le_bytes()).map_err(|_| ())?;
            place.fpstate
        }
        None => 0,
    };
    let cr2 = if info.signo == g::SIGSEGV || info.signo == g::SIGBUS { info.addr } else { 0 };
    // The mask the handler's return restores: the one before rt_sigsuspend, if it replaced it.
    let old = saved.unwrap_or(blocked);
    let bytes = sig::build_frame(&user_regs(frame), old, info, act.restorer, fpstate, &alt, cr2);
    arch::usercopy::copy_to_user(place.frame, &bytes).map_err(|_| ())?;
    frame.rsp = place.frame;
    frame.rip = act.handler;
    frame.rdi = u64::from(info.signo);
    frame.rsi = place.frame + sig::frame::INFO as u64;
    frame.rdx = place.frame + sig::frame::UC as u64;
    frame.rax = 0;
    frame.rflags &= !RFLAGS_TF_DF;
    let mut st = p.signals.state.lock();
    if let Some(t) = st.threads.get_mut(&tid) {
        t.saved = None;
        t.blocked = act.handler_mask(blocked, info.signo);
    }
    st.sync_flag(tid);
    Ok(())
}

/// `rt_sigreturn`: restore the registers, mask and extended state from the frame the handler
/// returned through; `rax` as restored. A forged frame ends the process with SIGSEGV.
pub fn sigreturn(frame: &mut UserFrame) -> u64 {
    match restore(frame) {
        Ok(rax) => rax,
        Err(why) => {
            let (pid, name) = current().map_or((0, String::from("?")), |p| (p.pid(), p.name()));
            log::error!(
                "signal: pid {pid} tid {} '{name}': rt_sigreturn refused the frame at {:#x} ({why}): killed by SIGSEGV",
                current_tid(),
                frame.rsp.wrapping_sub(8)
            );
            drop(name);
            die(g::SIGSEGV, false)
        }
    }
}

fn restore(frame: &mut UserFrame) -> Result<u64, &'static str> {
    let (p, tid) = me().map_err(|_| "no process")?;
    let base = frame.rsp.wrapping_sub(8);
    let mut b = alloc::vec![0u8; sig::frame::SIZE];
    arch::usercopy::copy_from_user(&mut b, base).map_err(|_| "unreadable frame")?;
    let r = sig::parse_frame(&b, USER_CS, USER_SS).map_err(|e| match e {
        sig::BadFrame::Selector => "segment selectors",
        sig::BadFrame::Rip => "rip outside user memory",
        sig::BadFrame::FpstatePointer => "extended-state pointer",
        sig::BadFrame::XstateHeader => "extended-state header",
        sig::BadFrame::Mxcsr => "MXCSR",
    })?;
    let loaded = if r.fpstate == 0 {
        task::xstate::load_current(None)
    } else {
        let size = task::xstate::format().map_or(0, |f| f.size);
        let mut img = alloc::vec![0u8; size];
        arch::usercopy::copy_from_user(&mut img, r.fpstate).map_err(|_| "unreadable extended state")?;
        task::xstate::load_current(Some(&img))
    };
    if !loaded {
        return Err("extended-state image XRSTOR would refuse");
    }
    let g = r.regs;
    frame.r8 = g.r8;
    frame.r9 = g.r9;
    frame.r10 = g.r10;
    frame.r11 = g.r11;
    frame.r12 = g.r12;
    frame.r13 = g.r13;
    frame.r14 = g.r14;
    frame.r15 = g.r15;
    frame.rdi = g.rdi;
    frame.rsi = g.rsi;
    frame.rbp = g.rbp;
    frame.rbx = g.rbx;
    frame.rdx = g.rdx;
    frame.rcx = g.rcx;
    frame.rsp = g.rsp;
    frame.rip = g.rip;
    frame.rflags = g.rflags;
    // No restart of a call the restored registers may show as interrupted.
    frame.orig_rax = u64::MAX;
    let mut st = p.signals.state.lock();
    if let Some(t) = st.threads.get_mut(&tid) {
        t.blocked = r.blocked;
    }
    st.sync_flag(tid);
    Ok(g.rax)
}

/// Linux's name of a signal, for reports.
pub fn signal_name(s: u32) -> &'static str {
    const NAMES: [&str; 32] = [
        "signal 0", "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL", "SIGUSR1", "SIGSEGV",
        "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU",
        "SIGURG", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS",
    ];
    NAMES.get(s as usize).copied().unwrap_or("a real-time signal")
}

// ---- ITIMER_REAL --------------------------------------------------------------------------------

/// Processes with an armed timer.
static TIMERS: SpinMutex<RawIrqSpin, BTreeMap<u32, Weak<Process>>> = SpinMutex::new(BTreeMap::new());
/// The timer thread sleeps here while no timer is armed.
static TIMER_IDLE: sched::WaitQueue = sched::WaitQueue::new();
static TIMER_THREAD: spin::Once<bool> = spin::Once::new();

fn timer_changed(p: &Arc<Process>, armed: bool) {
    {
        let mut t = TIMERS.lock();
        if armed {
            t.insert(p.pid(), Arc::downgrade(p));
        } else {
            t.remove(&p.pid());
        }
    }
    if armed {
        TIMER_THREAD.call_once(|| task::sched().spawn(sched::Builder::new("itimer"), timer_thread).is_ok());
        TIMER_IDLE.wake_all(task::sched());
    }
}

fn timer_thread() {
    let s = task::sched();
    loop {
        TIMER_IDLE.wait_until(s, || !TIMERS.lock().is_empty());
        let armed: Vec<(u32, Weak<Process>)> = TIMERS.lock().iter().map(|(&k, v)| (k, v.clone())).collect();
        let now = crate::time::now_ns();
        let mut next = u64::MAX;
        for (pid, w) in armed {
            let Some(p) = w.upgrade() else {
                TIMERS.lock().remove(&pid);
                continue;
            };
            let (fired, deadline) = {
                let mut st = p.signals.state.lock();
                (st.timer.expire(now), st.timer.deadline())
            };
            match deadline {
                Some(d) => next = next.min(d),
                None => {
                    // Unless a setitimer re-armed it meanwhile (it takes the state lock first).
                    let mut t = TIMERS.lock();
                    if p.signals.state.lock().timer.deadline().is_none() {
                        t.remove(&pid);
                    }
                }
            }
            if fired {
                let _ = post(&p, None, SigInfo::kernel(g::SIGALRM));
            }
        }
        if next != u64::MAX {
            s.sleep_ns(next.saturating_sub(crate::time::now_ns()).clamp(1, TIMER_SLICE_NS));
        }
    }
}

/// SIGPIPE to the calling thread: its write found no reader (the pipe layer's hook).
pub fn sigpipe() {
    let pid = current().map_or(0, |p| p.pid());
    let _ = send_to_thread(current_tid(), SigInfo::user(g::SIGPIPE, pid, false));
}

/// Signals for process groups raised in interrupt context (the terminal's Ctrl-C, Ctrl-\,
/// Ctrl-Z), handed to [`group_worker`]: the process tree's lock may be held by the interrupted
/// thread, so the handler only queues. A fixed ring (no allocation with interrupts off); when it
/// is full the newest request is dropped with a log line, as a terminal drops input it has no room
/// for.
struct GroupRing {
    slots: [(u32, u32); 16],
    head: usize,
    len: usize,
}

static GROUP_RING: SpinMutex<RawIrqSpin, GroupRing> = SpinMutex::new(GroupRing { slots: [(0, 0); 16], head: 0, len: 0 });
static GROUP_QUEUE: sched::WaitQueue = sched::WaitQueue::new();

/// Queue `signal` for every process of group `pgid` (callable with interrupts off).
pub fn send_to_group_later(pgid: u32, signal: u32) {
    let queued = {
        let mut r = GROUP_RING.lock();
        if r.len == r.slots.len() {
            false
        } else {
            let i = (r.head + r.len) % r.slots.len();
            r.slots[i] = (pgid, signal);
            r.len += 1;
            true
        }
    };
    if queued {
        GROUP_QUEUE.wake_all(task::sched());
    } else {
        log::warn!("signal: {} for group {pgid} dropped: 16 group signals already wait", signal_name(signal));
    }
}

fn pop_group() -> Option<(u32, u32)> {
    let mut r = GROUP_RING.lock();
    (r.len > 0).then(|| {
        let v = r.slots[r.head];
        r.head = (r.head + 1) % r.slots.len();
        r.len -= 1;
        v
    })
}

fn group_worker() {
    loop {
        GROUP_QUEUE.wait_until(task::sched(), || GROUP_RING.lock().len > 0);
        while let Some((pgid, signal)) = pop_group() {
            for pid in super::tree::group_members(pgid) {
                let _ = send_to_process(pid, SigInfo::kernel(signal));
            }
        }
    }
}

/// Start the thread that sends [`send_to_group_later`]'s signals (once, at boot).
pub fn start_group_worker() {
    if task::sched().spawn(sched::Builder::new("sig-group"), group_worker).is_err() {
        log::error!("signal: no thread for terminal signals; Ctrl-C will not reach programs");
    }
}
