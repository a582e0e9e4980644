//! The running system's process tree: pids, parents, process groups and sessions (the portable
//! `abi::jobs::ProcTree` under one lock), the live processes by pid, zombies and their reaping by
//! `wait4`/`waitid`, and the targets of `kill`.
//!
//! Key items: [`new_pid`], [`register`], [`exited`] (a process's last thread ended: it becomes a
//! zombie, its children go to pid 1), [`wait`] (block until a child has an event), [`kill`] (target
//! selection) and [`signal_send`] (the delivery, SIGKILL only here).
//!
//! Pid 1: the first program `make run` starts ([`super::spawn_init`]) holds it. Until then, and after
//! it ends, pid 1 is the kernel itself, which reaps at once every child it gets: the programs the
//! kernel starts for its tests ([`super::spawn`]) and every orphan. Those programs' ends are seen by
//! their starter through [`super::Process::wait_exit`], which needs no parent process.
//!
//! Waiting: every exit bumps [`EVENTS_SEEN`] and wakes [`CHILD_EVENTS`]; a waiter reads the counter
//! under the tree's lock and sleeps until it moves, so no exit between its look and its sleep is
//! missed (one queue for every parent: a few spurious wake-ups instead of a queue per process).
//!
//! Neighbours: `process` (the `Process` and its threads), `syscall::proc` (the calls). No unsafe.

use alloc::{collections::BTreeMap, sync::Arc, vec::Vec};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use abi::{
    jobs::{INIT, Pid, ProcTree, Select, WaitOpts, Waited},
    linux::{errno, general as g},
    signal::{ChildEvent, SigInfo},
};

use super::Process;
use crate::task;

/// The tree (thread context only: a spin lock held for short, allocation-bounded steps).
static TREE: spin::Mutex<Option<ProcTree>> = spin::Mutex::new(None);
/// The processes that have not ended, by pid (a zombie is only in the tree).
static LIVE: spin::Mutex<BTreeMap<Pid, Arc<Process>>> = spin::Mutex::new(BTreeMap::new());
/// Whether a user program holds pid 1 (otherwise the kernel does, and reaps its children at once).
static USER_INIT: AtomicBool = AtomicBool::new(false);
/// Bumped by every exit, after the tree shows it.
static EVENTS_SEEN: AtomicU64 = AtomicU64::new(0);
/// Where waiters (parents in `wait4`, vfork parents, the kernel's own waits) sleep.
static CHILD_QUEUE: spin::Once<Arc<sched::WaitQueue>> = spin::Once::new();

/// The queue of [`notify`]: waiters in `wait4` sleep on it interruptibly (`ipc::intr` keeps the
/// queues it may kick as `Arc`s).
pub fn child_events() -> &'static Arc<sched::WaitQueue> {
    CHILD_QUEUE.call_once(|| Arc::new(sched::WaitQueue::new()))
}

fn with_tree<R>(f: impl FnOnce(&mut ProcTree) -> R) -> R {
    f(TREE.lock().get_or_insert_with(ProcTree::new))
}

/// A pid for a new child of `parent` (in its group and session); `EAGAIN` when none is free.
pub fn new_pid(parent: Pid) -> Result<Pid, u32> {
    with_tree(|t| t.fork(parent))
}

/// Claim pid 1 for the first user program; `false` if a user program holds it already.
pub fn claim_init() -> bool {
    !USER_INIT.swap(true, Ordering::AcqRel)
}

/// `p` runs: `kill` can reach it.
pub fn register(p: &Arc<Process>) {
    LIVE.lock().insert(p.pid(), p.clone());
}

/// Wake every waiter: a process ended or a vfork child let its parent go.
pub fn notify() {
    EVENTS_SEEN.fetch_add(1, Ordering::AcqRel);
    child_events().wake_all(task::sched());
}

/// The wait status (Linux encoding) as the event a parent sees.
pub fn event_of(status: i32) -> ChildEvent {
    if status & 0x7f == 0 {
        ChildEvent::Exited(((status >> 8) & 0xff) as u8)
    } else {
        ChildEvent::Killed { sig: (status & 0x7f) as u32, core: status & 0x80 != 0 }
    }
}

/// The last thread of process `pid` ended with wait status `status`: it becomes a zombie for its
/// parent to reap (or is reaped at once when its parent is the kernel), and its children go to
/// pid 1.
pub fn exited(pid: Pid, status: i32) {
    let gone = LIVE.lock().remove(&pid);
    let user_init = USER_INIT.load(Ordering::Acquire);
    let ev = event_of(status);
    let (parent, hangup) = with_tree(|t| {
        if pid == INIT && user_init {
            // The user's init ended: the kernel is pid 1 again, and reaps what it left.
            USER_INIT.store(false, Ordering::Release);
            reap_kernel_children(t);
            return (None, Vec::new());
        }
        let autoreap = !user_init && t.ppid(pid) == Ok(INIT);
        let out = t.exit(pid, ev, autoreap);
        if out.init_has_zombies && !user_init {
            reap_kernel_children(t);
        }
        // The orphans' threads read their parent pid without the tree's lock.
        for c in &out.reparented {
            if let Some(cp) = LIVE.lock().get(c) {
                cp.ids().set_ppid(INIT);
            }
        }
        (out.notify, out.hangup)
    });
    // A group this exit orphaned with a stopped member: SIGHUP, then SIGCONT, to every member
    // (nobody is left to continue it; the hangup ends whoever does not handle it).
    for g in hangup {
        for sig in [g::SIGHUP, g::SIGCONT] {
            for m in group_members(g) {
                let _ = super::signal::send_to_process(m, SigInfo::kernel(sig));
            }
        }
    }
    // SIGCHLD to the parent, outside the tree's lock (a parent that is the kernel has no threads:
    // ESRCH, nothing to tell), before its waits are woken: as on Linux, a wait that returns this
    // child finds the signal already pending.
    if let Some(pp) = parent {
        let _ = super::signal::send_to_process(pp, SigInfo::child(pid, ev));
    }
    notify();
    // Dropped outside every lock: it may be the last handle of the process.
    drop(gone);
}

/// Reap every zombie child of pid 1 while the kernel holds it.
fn reap_kernel_children(t: &mut ProcTree) {
    let opts = WaitOpts { exited: true, stopped: false, continued: false, nohang: true, nowait: false };
    while let Ok(Waited::Event(..)) = t.wait(INIT, Select::Any, opts) {}
}

/// A child that never ran (its thread could not start) leaves no trace.
pub fn abandon(pid: Pid) {
    let gone = LIVE.lock().remove(&pid);
    with_tree(|t| {
        t.exit(pid, ChildEvent::Exited(0), false);
        let opts = WaitOpts { exited: true, stopped: false, continued: false, nohang: true, nowait: false };
        if let Ok(parent) = t.ppid(pid) {
            let _ = t.wait(parent, Select::Pid(pid), opts);
        }
    });
    drop(gone);
}

/// `wait4`/`waitid` by process `me`: the child and its event, `None` under `WNOHANG` when no child
/// has one yet, `ECHILD` when none matches, `EINTR` when the caller is being killed meanwhile.
pub fn wait(me: Pid, sel: Select, opts: WaitOpts) -> Result<Option<(Pid, ChildEvent)>, u32> {
    // A signal that cut the sleep short: the children are looked at once more first (Linux's
    // do_wait), so a child whose SIGCHLD came before its waiters were woken is returned, not lost
    // to EINTR.
    let mut interrupted = false;
    loop {
        let (found, seen) = {
            let mut tree = TREE.lock();
            let t = tree.get_or_insert_with(ProcTree::new);
            (t.wait(me, sel, opts)?, EVENTS_SEEN.load(Ordering::Acquire))
        };
        match found {
            Waited::Event(pid, ev) => return Ok(Some((pid, ev))),
            Waited::Nothing => return Ok(None),
            Waited::Block if interrupted => return Err(abi::signal::restart::ERESTARTSYS),
            Waited::Block => {
                // A signal cuts the wait short: restarted under SA_RESTART, EINTR otherwise.
                let woken = crate::ipc::intr::wait(child_events(), || EVENTS_SEEN.load(Ordering::Acquire) != seen || super::is_being_killed());
                if super::is_being_killed() {
                    return Err(errno::EINTR);
                }
                interrupted = woken.is_err();
            }
        }
    }
}

pub fn ppid(pid: Pid) -> Result<Pid, u32> {
    with_tree(|t| t.ppid(pid))
}

pub fn pgid(pid: Pid) -> Result<Pid, u32> {
    with_tree(|t| t.pgid(pid))
}

pub fn sid(pid: Pid) -> Result<Pid, u32> {
    with_tree(|t| t.sid(pid))
}

pub fn setpgid(caller: Pid, pid: Pid, pgid: i64) -> Result<(), u32> {
    with_tree(|t| t.setpgid(caller, pid, pgid))
}

pub fn setsid(caller: Pid) -> Result<Pid, u32> {
    with_tree(|t| t.setsid(caller))
}

/// `execve` succeeded in `pid`: its parent may no longer change its group.
pub fn execed(pid: Pid) {
    with_tree(|t| t.exec(pid));
}

/// `kill(pid, sig)` from process `caller`: `pid > 0` one process, `0` the caller's group, `-1`
/// every process but init and the caller, `< -1` group `-pid`; each target gets
/// [`signal_send`]. `ESRCH` when nobody is reached.
pub fn kill(caller: Pid, pid: i32, sig: u32) -> Result<(), u32> {
    if sig > 64 {
        return Err(errno::EINVAL);
    }
    if pid == i32::MIN {
        return Err(errno::ESRCH);
    }
    let targets: Vec<Pid> = with_tree(|t| t.kill_targets(caller, pid))?;
    let mut any = false;
    for target in targets {
        any |= signal_send(caller, target, sig).is_ok();
    }
    if any { Ok(()) } else { Err(errno::ESRCH) }
}

/// Process `pid`, from its registration (before its first thread runs) to its end.
pub fn live(pid: Pid) -> Option<Arc<Process>> {
    LIVE.lock().get(&pid).cloned()
}

/// Whether group `pgid` is orphaned (POSIX: no member has a parent in another group of its
/// session); the terminal's job control asks.
pub fn is_orphaned(pgid: Pid) -> bool {
    with_tree(|t| t.is_orphaned(pgid))
}

/// Send `sig` from the calling process to every process of group `pgid`, now (the terminal's
/// SIGTTIN, SIGTTOU and SIGWINCH, which the caller must find pending on its way out). The group's
/// members are named directly, as Linux's `kill_pgrp`: through kill's encoding, group 1 (init's,
/// the foreground group while a shell that is pid 1 waits at its prompt) would be `kill(-1)`, a
/// signal to every process of the system.
pub fn signal_group_now(pgid: Pid, sig: u32) {
    let me = super::current().map_or(INIT, |p| p.pid());
    for target in group_members(pgid) {
        let _ = signal_send(me, target, sig);
    }
}

/// The session of group `pgid`, for the terminal's `TIOCSPGRP` (`abi::jobs::ProcTree::session_of_group`).
pub fn group_session(pgid: Pid) -> Result<Option<Pid>, u32> {
    with_tree(|t| t.session_of_group(pgid))
}

/// The live processes of group `pgid` (the terminal's signals).
pub fn group_members(pgid: Pid) -> Vec<Pid> {
    with_tree(|t| t.group(pgid))
}

/// Send `sig` from process `caller` to process `target` through the signal layer; signal 0 only
/// checks that the target exists. A zombie accepts and ignores any signal.
pub fn signal_send(caller: Pid, target: Pid, sig: u32) -> Result<(), u32> {
    let live = LIVE.lock().contains_key(&target);
    if !live || sig == 0 {
        return if with_tree(|t| t.exists(target)) { Ok(()) } else { Err(errno::ESRCH) };
    }
    match super::signal::send_to_process(target, SigInfo::user(sig, caller, false)) {
        // Between its last thread's end and its removal from LIVE a process has no threads.
        Err(errno::ESRCH) => Ok(()),
        r => r,
    }
}

/// The signal layer's report of a stop or a continue: the parent's `WUNTRACED`/`WCONTINUED` wait
/// sees it, and the parent gets SIGCHLD (`SA_NOCLDSTOP` is the parent's to ignore).
fn job_stopped(pid: Pid, sig: u32) {
    if let Some(pp) = with_tree(|t| t.stop(pid, sig)) {
        notify();
        let _ = super::signal::send_to_process(pp, SigInfo::child(pid, ChildEvent::Stopped(sig)));
    }
}

fn job_continued(pid: Pid) {
    if let Some(pp) = with_tree(|t| t.cont(pid)) {
        notify();
        let _ = super::signal::send_to_process(pp, SigInfo::child(pid, ChildEvent::Continued));
    }
}

/// Connect the signal layer's stop and continue reports to the tree (once, at boot).
pub fn init() {
    super::signal::set_job_hooks(super::signal::JobHooks { stopped: job_stopped, continued: job_continued });
}
