//! The process tree with its process groups and sessions, as a data structure: `fork`, `exit`
//! with re-parenting to init, zombies, `wait4`/`waitid` selection and reaping, stop and continue
//! reports, `setpgid`/`setsid` with POSIX's rules, and the targets of `kill` by pid, group or all.
//!
//! Threads, signal queues and sleeping are the kernel's: this module says *which* processes and
//! *what* event; the kernel delivers and wakes. A process here is a thread group (pid = tgid).
//!
//! Trade-off: pids count up from 2 and wrap at [`PID_MAX`] to [`PID_WRAP`], skipping those in use
//! (as process ids, group ids or session ids), like Linux without its pid namespaces.

use alloc::{
    collections::{BTreeMap, BTreeSet},
    vec::Vec,
};

use crate::{linux::errno, signal::ChildEvent};

pub type Pid = u32;
/// The first process; orphans are re-parented to it.
pub const INIT: Pid = 1;
/// Pids stay below this (Linux's default `pid_max`).
pub const PID_MAX: Pid = 32768;
/// Where allocation starts again after wrapping (Linux's `RESERVED_PIDS`).
pub const PID_WRAP: Pid = 300;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    Running,
    Stopped,
    /// Exited and not yet reaped.
    Zombie(ChildEvent),
}

#[derive(Clone, Debug)]
struct Proc {
    ppid: Pid,
    pgid: Pid,
    sid: Pid,
    execed: bool,
    life: Life,
    /// A stop or continue not yet reported to `wait` (`WUNTRACED`, `WCONTINUED`).
    report: Option<ChildEvent>,
    children: BTreeSet<Pid>,
}

/// Which children a wait looks at (`wait4`'s pid argument, `waitid`'s idtype).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    Pid(Pid),
    Any,
    /// Members of this process group.
    Group(Pid),
}

impl Select {
    /// `wait4(pid, ...)`: `> 0` one child, `-1` any, `0` the caller's group, `< -1` group `-pid`.
    pub fn from_wait4(pid: i32, caller_pgid: Pid) -> Self {
        match pid {
            p if p > 0 => Select::Pid(p as Pid),
            -1 => Select::Any,
            0 => Select::Group(caller_pgid),
            p => Select::Group(p.unsigned_abs()),
        }
    }
}

/// Which events a wait accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitOpts {
    pub exited: bool,
    pub stopped: bool,
    pub continued: bool,
    pub nohang: bool,
    /// Leave the child waitable (`WNOWAIT`).
    pub nowait: bool,
}

impl WaitOpts {
    /// From `wait4`'s options: exits always, stops with `WUNTRACED`, continues with `WCONTINUED`.
    pub fn from_wait4(options: u32) -> Result<Self, u32> {
        use linux_raw_sys::general::{WCONTINUED, WNOHANG, WUNTRACED};
        // __WNOTHREAD, __WALL, __WCLONE are accepted and mean nothing without ptrace.
        let known = WNOHANG | WUNTRACED | WCONTINUED | 0x2000_0000 | 0x4000_0000 | 0x8000_0000;
        if options & !known != 0 {
            return Err(errno::EINVAL);
        }
        Ok(WaitOpts { exited: true, stopped: options & WUNTRACED != 0, continued: options & WCONTINUED != 0, nohang: options & WNOHANG != 0, nowait: false })
    }

    /// From `waitid`'s options, which must ask for at least one kind of event.
    pub fn from_waitid(options: u32) -> Result<Self, u32> {
        use linux_raw_sys::general::{WCONTINUED, WEXITED, WNOHANG, WNOWAIT, WSTOPPED};
        let known = WNOHANG | WSTOPPED | WCONTINUED | WEXITED | WNOWAIT | 0x2000_0000 | 0x4000_0000 | 0x8000_0000;
        if options & !known != 0 || options & (WEXITED | WSTOPPED | WCONTINUED) == 0 {
            return Err(errno::EINVAL);
        }
        Ok(WaitOpts {
            exited: options & WEXITED != 0,
            stopped: options & WSTOPPED != 0,
            continued: options & WCONTINUED != 0,
            nohang: options & WNOHANG != 0,
            nowait: options & WNOWAIT != 0,
        })
    }
}

/// What a wait found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// A child and its event; an exit was reaped (the pid is free) unless `nowait`.
    Event(Pid, ChildEvent),
    /// Children exist but none has an event, and `WNOHANG` was given: return 0.
    Nothing,
    /// Sleep until a child changes, then wait again.
    Block,
}

/// What an exit changed, for the kernel to act on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitOutcome {
    /// The parent to send SIGCHLD to (none if it was reaped at once).
    pub notify: Option<Pid>,
    /// Children handed to init; init must be woken if any is already a zombie.
    pub reparented: Vec<Pid>,
    pub init_has_zombies: bool,
    /// Groups this exit orphaned while one of their members is stopped: each gets SIGHUP, then
    /// SIGCONT (POSIX `_exit`; Linux's `kill_orphaned_pgrp`), since no job-control shell is left
    /// to continue them.
    pub hangup: Vec<Pid>,
}

/// The tree.
#[derive(Clone, Debug)]
pub struct ProcTree {
    procs: BTreeMap<Pid, Proc>,
    last_pid: Pid,
}

impl Default for ProcTree {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcTree {
    /// A tree holding init (pid 1), leader of its own group and session.
    pub fn new() -> Self {
        let mut procs = BTreeMap::new();
        procs.insert(INIT, Proc { ppid: 0, pgid: INIT, sid: INIT, execed: true, life: Life::Running, report: None, children: BTreeSet::new() });
        Self { procs, last_pid: INIT }
    }

    fn get(&self, pid: Pid) -> Result<&Proc, u32> {
        self.procs.get(&pid).ok_or(errno::ESRCH)
    }

    pub fn exists(&self, pid: Pid) -> bool {
        self.procs.contains_key(&pid)
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn pids(&self) -> impl Iterator<Item = Pid> + '_ {
        self.procs.keys().copied()
    }

    pub fn ppid(&self, pid: Pid) -> Result<Pid, u32> {
        self.get(pid).map(|p| p.ppid)
    }

    pub fn pgid(&self, pid: Pid) -> Result<Pid, u32> {
        self.get(pid).map(|p| p.pgid)
    }

    pub fn sid(&self, pid: Pid) -> Result<Pid, u32> {
        self.get(pid).map(|p| p.sid)
    }

    pub fn life(&self, pid: Pid) -> Result<Life, u32> {
        self.get(pid).map(|p| p.life)
    }

    fn in_use(&self, id: Pid) -> bool {
        self.procs.contains_key(&id) || self.procs.values().any(|p| p.pgid == id || p.sid == id)
    }

    /// `fork`: a child of `parent` in its group and session. `EAGAIN` when every pid is taken.
    pub fn fork(&mut self, parent: Pid) -> Result<Pid, u32> {
        let (pgid, sid) = {
            let p = self.get(parent)?;
            (p.pgid, p.sid)
        };
        let mut pid = self.last_pid;
        for _ in 0..PID_MAX {
            pid = if pid + 1 >= PID_MAX { PID_WRAP } else { pid + 1 };
            if !self.in_use(pid) {
                self.last_pid = pid;
                self.procs.insert(pid, Proc { ppid: parent, pgid, sid, execed: false, life: Life::Running, report: None, children: BTreeSet::new() });
                if let Some(p) = self.procs.get_mut(&parent) {
                    p.children.insert(pid);
                }
                return Ok(pid);
            }
        }
        Err(errno::EAGAIN)
    }

    /// `execve` succeeded: the parent can no longer move the process to another group.
    pub fn exec(&mut self, pid: Pid) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.execed = true;
        }
    }

    /// The process ended with `ev` (an exit or a kill). Its children go to init. With `autoreap`
    /// (the parent ignores SIGCHLD or set `SA_NOCLDWAIT`) it disappears at once; otherwise it is a
    /// zombie until waited for.
    pub fn exit(&mut self, pid: Pid, ev: ChildEvent, autoreap: bool) -> ExitOutcome {
        let mut out = ExitOutcome::default();
        let Some(p) = self.procs.get(&pid) else { return out };
        if matches!(p.life, Life::Zombie(_)) || pid == INIT {
            return out;
        }
        // The groups this exit may orphan: its own (through its parent) and its children's.
        let mut groups: Vec<Pid> = p.children.iter().filter_map(|c| self.procs.get(c)).map(|c| c.pgid).collect();
        groups.push(p.pgid);
        groups.sort_unstable();
        groups.dedup();
        let attached: Vec<Pid> = groups.into_iter().filter(|&g| !self.is_orphaned(g)).collect();
        let Some(p) = self.procs.get_mut(&pid) else { return out };
        p.life = Life::Zombie(ev);
        p.report = None;
        let children = core::mem::take(&mut p.children);
        let ppid = p.ppid;
        for c in &children {
            if let Some(cp) = self.procs.get_mut(c) {
                cp.ppid = INIT;
                out.init_has_zombies |= matches!(cp.life, Life::Zombie(_));
            }
        }
        if let Some(init) = self.procs.get_mut(&INIT) {
            init.children.extend(children.iter().copied());
        }
        out.reparented = children.into_iter().collect();
        out.hangup = attached.into_iter().filter(|&g| self.is_orphaned(g) && self.has_stopped(g)).collect();
        if autoreap {
            self.reap(pid);
        } else {
            out.notify = Some(ppid);
        }
        out
    }

    fn reap(&mut self, pid: Pid) {
        if let Some(p) = self.procs.remove(&pid)
            && let Some(parent) = self.procs.get_mut(&p.ppid)
        {
            parent.children.remove(&pid);
        }
    }

    /// The process stopped on `sig`: the parent's `WUNTRACED` wait sees it once.
    pub fn stop(&mut self, pid: Pid, sig: u32) -> Option<Pid> {
        let p = self.procs.get_mut(&pid)?;
        if p.life != Life::Running {
            return None;
        }
        p.life = Life::Stopped;
        p.report = Some(ChildEvent::Stopped(sig));
        Some(p.ppid)
    }

    /// The process continued: the parent's `WCONTINUED` wait sees it once.
    pub fn cont(&mut self, pid: Pid) -> Option<Pid> {
        let p = self.procs.get_mut(&pid)?;
        if p.life != Life::Stopped {
            return None;
        }
        p.life = Life::Running;
        p.report = Some(ChildEvent::Continued);
        Some(p.ppid)
    }

    /// `wait4`/`waitid` by `parent`: the first matching child (lowest pid) with an event the
    /// options accept. `ECHILD` when no child matches at all.
    pub fn wait(&mut self, parent: Pid, sel: Select, opts: WaitOpts) -> Result<Waited, u32> {
        let kids: Vec<Pid> = self.get(parent).map_err(|_| errno::ECHILD)?.children.iter().copied().collect();
        let mut any = false;
        for c in kids {
            let p = &self.procs[&c];
            let matches = match sel {
                Select::Pid(x) => c == x,
                Select::Any => true,
                Select::Group(g) => p.pgid == g,
            };
            if !matches {
                continue;
            }
            any = true;
            match (p.life, p.report) {
                (Life::Zombie(ev), _) if opts.exited => {
                    if !opts.nowait {
                        self.reap(c);
                    }
                    return Ok(Waited::Event(c, ev));
                }
                (_, Some(ev @ ChildEvent::Stopped(_))) if opts.stopped => {
                    if !opts.nowait
                        && let Some(p) = self.procs.get_mut(&c)
                    {
                        p.report = None;
                    }
                    return Ok(Waited::Event(c, ev));
                }
                (_, Some(ev @ ChildEvent::Continued)) if opts.continued => {
                    if !opts.nowait
                        && let Some(p) = self.procs.get_mut(&c)
                    {
                        p.report = None;
                    }
                    return Ok(Waited::Event(c, ev));
                }
                _ => {}
            }
        }
        if !any {
            Err(errno::ECHILD)
        } else if opts.nohang {
            Ok(Waited::Nothing)
        } else {
            Ok(Waited::Block)
        }
    }

    /// `setpgid(pid, pgid)` called by `caller` (0 for either means the caller / the target).
    pub fn setpgid(&mut self, caller: Pid, pid: Pid, pgid: i64) -> Result<(), u32> {
        if pgid < 0 {
            return Err(errno::EINVAL);
        }
        let pid = if pid == 0 { caller } else { pid };
        let pgid = if pgid == 0 { pid } else { Pid::try_from(pgid).map_err(|_| errno::EINVAL)? };
        let csid = self.get(caller)?.sid;
        let t = self.get(pid)?;
        if pid != caller {
            if t.ppid != caller {
                return Err(errno::ESRCH);
            }
            if t.sid != csid {
                return Err(errno::EPERM);
            }
            if t.execed {
                return Err(errno::EACCES);
            }
        }
        if t.sid == pid {
            return Err(errno::EPERM);
        }
        // The group must have a member in the session; a zombie not yet reaped is one (Linux
        // finds the group through its pid, which a zombie keeps until it is reaped). A shell
        // putting a pipeline's second process into the group of a first one that has already
        // ended relies on that.
        if pgid != pid && !self.procs.values().any(|p| p.pgid == pgid && p.sid == csid) {
            return Err(errno::EPERM);
        }
        if let Some(t) = self.procs.get_mut(&pid) {
            t.pgid = pgid;
        }
        Ok(())
    }

    /// `setsid`: a new session and group led by `caller`; `EPERM` if it already leads a group.
    pub fn setsid(&mut self, caller: Pid) -> Result<Pid, u32> {
        self.get(caller)?;
        // Linux refuses when any process group already has the caller's pid as its id.
        if self.procs.values().any(|x| x.pgid == caller) {
            return Err(errno::EPERM);
        }
        let p = self.procs.get_mut(&caller).ok_or(errno::ESRCH)?;
        p.sid = caller;
        p.pgid = caller;
        Ok(caller)
    }

    /// The session that `TIOCSPGRP` compares with the caller's when it is asked to make `id` the
    /// foreground group (Linux's `find_vpid` and `session_of_pgrp`). `ESRCH` when no process that
    /// is not yet reaped (a zombie counts) has `id` as its pid, group or session id: a group lives
    /// on after its leader was reaped while another member remains. Otherwise the session of a
    /// member of group `id`, else that of process `id` (Linux accepts a plain pid of the caller's
    /// session), else none (`id` names only a session whose leader is gone: EPERM for everyone).
    pub fn session_of_group(&self, id: Pid) -> Result<Option<Pid>, u32> {
        if !self.in_use(id) {
            return Err(errno::ESRCH);
        }
        let member = self.procs.values().find(|p| p.pgid == id);
        Ok(member.or_else(|| self.procs.get(&id)).map(|p| p.sid))
    }

    /// Live members of group `pgid`.
    pub fn group(&self, pgid: Pid) -> Vec<Pid> {
        self.procs.iter().filter(|(_, p)| p.pgid == pgid && !matches!(p.life, Life::Zombie(_))).map(|(&pid, _)| pid).collect()
    }

    /// Whether group `pgid` is orphaned: no member has a parent in another group of the same
    /// session (POSIX; such a group gets SIGHUP and SIGCONT when it becomes orphaned while stopped).
    pub fn is_orphaned(&self, pgid: Pid) -> bool {
        self.group(pgid).iter().all(|m| {
            let p = &self.procs[m];
            match self.procs.get(&p.ppid) {
                Some(pp) => pp.pgid == pgid || pp.sid != p.sid,
                None => true,
            }
        })
    }

    /// Whether a live member of group `pgid` is stopped.
    fn has_stopped(&self, pgid: Pid) -> bool {
        self.procs.values().any(|p| p.pgid == pgid && p.life == Life::Stopped)
    }

    /// Whom `kill(pid, sig)` from `caller` reaches: `> 0` one process, `0` the caller's group,
    /// `-1` everyone but init and the caller, `< -1` group `-pid`. `ESRCH` when nobody. A
    /// group's zombies are among its targets (a signal to one is accepted and does nothing), so
    /// a group whose members have all ended but are not yet reaped is still found, as on Linux.
    pub fn kill_targets(&self, caller: Pid, pid: i32) -> Result<Vec<Pid>, u32> {
        let members = |pgid: Pid| self.procs.iter().filter(|(_, p)| p.pgid == pgid).map(|(&pid, _)| pid).collect();
        let v = match pid {
            p if p > 0 => {
                let p = p as Pid;
                self.get(p)?;
                alloc::vec![p]
            }
            0 => members(self.get(caller)?.pgid),
            -1 => self.procs.iter().filter(|(p, x)| **p != INIT && **p != caller && !matches!(x.life, Life::Zombie(_))).map(|(p, _)| *p).collect(),
            p => members(p.unsigned_abs()),
        };
        if v.is_empty() { Err(errno::ESRCH) } else { Ok(v) }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const W4: WaitOpts = WaitOpts { exited: true, stopped: false, continued: false, nohang: false, nowait: false };

    #[test]
    fn fork_exit_wait_reaps_once() {
        let mut t = ProcTree::new();
        let sh = t.fork(INIT).unwrap();
        let a = t.fork(sh).unwrap();
        let b = t.fork(sh).unwrap();
        assert_eq!(t.wait(sh, Select::Any, W4), Ok(Waited::Block));
        assert_eq!(t.wait(sh, Select::Any, WaitOpts { nohang: true, ..W4 }), Ok(Waited::Nothing));
        let out = t.exit(b, ChildEvent::Exited(3), false);
        assert_eq!(out.notify, Some(sh));
        assert_eq!(t.wait(sh, Select::Pid(a), WaitOpts { nohang: true, ..W4 }), Ok(Waited::Nothing), "b is not a");
        assert_eq!(t.wait(sh, Select::Any, W4), Ok(Waited::Event(b, ChildEvent::Exited(3))));
        assert!(!t.exists(b), "reaped");
        assert_eq!(t.wait(sh, Select::Pid(b), W4), Err(errno::ECHILD));
        assert_eq!(t.wait(a, Select::Any, W4), Err(errno::ECHILD), "no children");
        assert_eq!(ChildEvent::Exited(3).wait_status() >> 8, 3);
    }

    #[test]
    fn orphans_go_to_init_and_autoreap() {
        let mut t = ProcTree::new();
        let p = t.fork(INIT).unwrap();
        let c = t.fork(p).unwrap();
        let z = t.fork(p).unwrap();
        t.exit(z, ChildEvent::Exited(0), false);
        let out = t.exit(p, ChildEvent::Killed { sig: 9, core: false }, false);
        assert_eq!(out.reparented, [c, z]);
        assert!(out.init_has_zombies);
        assert_eq!(t.ppid(c), Ok(INIT));
        assert_eq!(t.wait(INIT, Select::Pid(z), W4), Ok(Waited::Event(z, ChildEvent::Exited(0))));
        assert_eq!(t.wait(INIT, Select::Pid(p), W4), Ok(Waited::Event(p, ChildEvent::Killed { sig: 9, core: false })));
        let out = t.exit(c, ChildEvent::Exited(1), true);
        assert_eq!(out.notify, None);
        assert!(!t.exists(c), "autoreaped");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_zombie_keeps_its_group_joinable() {
        let mut t = ProcTree::new();
        let sh = t.fork(INIT).unwrap();
        t.setsid(sh).unwrap();
        // `a | b`: a leads the group and has ended before b joins it.
        let a = t.fork(sh).unwrap();
        t.setpgid(a, 0, 0).unwrap();
        t.exit(a, ChildEvent::Exited(0), false);
        let b = t.fork(sh).unwrap();
        assert_eq!(t.setpgid(sh, b, i64::from(a)), Ok(()), "the parent's side");
        assert_eq!(t.setpgid(b, 0, i64::from(a)), Ok(()), "the child's side");
        assert_eq!(t.pgid(b), Ok(a));
        assert_eq!(t.wait(sh, Select::Pid(a), W4), Ok(Waited::Event(a, ChildEvent::Exited(0))));
        let c = t.fork(sh).unwrap();
        assert_eq!(t.setpgid(c, 0, i64::from(a)), Ok(()), "b still holds the group after a was reaped");
        t.exit(b, ChildEvent::Exited(0), false);
        t.exit(c, ChildEvent::Exited(0), false);
        t.wait(sh, Select::Pid(b), W4).unwrap();
        t.wait(sh, Select::Pid(c), W4).unwrap();
        let d = t.fork(sh).unwrap();
        assert_eq!(t.setpgid(d, 0, i64::from(a)), Err(errno::EPERM), "every member reaped: no group");
    }

    #[test]
    fn tiocspgrp_finds_groups_as_linux_does() {
        let mut t = ProcTree::new();
        let sh = t.fork(INIT).unwrap();
        t.setsid(sh).unwrap();
        let a = t.fork(sh).unwrap();
        t.setpgid(a, 0, 0).unwrap();
        let b = t.fork(sh).unwrap();
        t.setpgid(b, 0, i64::from(a)).unwrap();
        assert_eq!(t.session_of_group(a), Ok(Some(sh)), "a group of the shell's session");
        // The leader ends: a zombie still holds the group.
        t.exit(a, ChildEvent::Exited(0), false);
        assert_eq!(t.session_of_group(a), Ok(Some(sh)), "leader a zombie");
        // Reaped: b keeps the group alive.
        t.wait(sh, Select::Pid(a), W4).unwrap();
        assert!(!t.exists(a));
        assert_eq!(t.session_of_group(a), Ok(Some(sh)), "leader reaped, a member alive");
        // A plain pid (b leads no group): its own session, as Linux's session_of_pgrp falls back to.
        assert_eq!(t.session_of_group(b), Ok(Some(sh)));
        // Every member gone and reaped: no such group.
        t.exit(b, ChildEvent::Exited(0), false);
        assert_eq!(t.session_of_group(a), Ok(Some(sh)), "the last member a zombie");
        assert_eq!(t.kill_targets(sh, -(a as i32)), Ok(alloc::vec![b]), "kill finds the group of a zombie");
        t.wait(sh, Select::Pid(b), W4).unwrap();
        assert_eq!(t.session_of_group(a), Err(errno::ESRCH));
        assert_eq!(t.kill_targets(sh, -(a as i32)), Err(errno::ESRCH), "and no longer once it is reaped");
        assert_eq!(t.session_of_group(9999), Err(errno::ESRCH), "never used");
        // A group of another session: found, with that session (the terminal answers EPERM).
        let other = t.fork(sh).unwrap();
        t.setsid(other).unwrap();
        assert_eq!(t.session_of_group(other), Ok(Some(other)));
        // A session whose leader was reaped while a member in another group lives: the id is
        // in use, but names no group and no process.
        let m = t.fork(other).unwrap();
        t.setpgid(m, 0, 0).unwrap();
        t.exit(other, ChildEvent::Exited(0), false);
        t.wait(sh, Select::Pid(other), W4).unwrap();
        assert_eq!(t.session_of_group(other), Ok(None));
    }

    #[test]
    fn stop_and_continue_reports() {
        let mut t = ProcTree::new();
        let sh = t.fork(INIT).unwrap();
        let j = t.fork(sh).unwrap();
        assert_eq!(t.stop(j, 20), Some(sh));
        assert_eq!(t.wait(sh, Select::Any, WaitOpts { nohang: true, ..W4 }), Ok(Waited::Nothing), "plain wait ignores stops");
        let untraced = WaitOpts::from_wait4(linux_raw_sys::general::WUNTRACED).unwrap();
        assert_eq!(t.wait(sh, Select::Any, untraced), Ok(Waited::Event(j, ChildEvent::Stopped(20))));
        assert_eq!(t.wait(sh, Select::Any, WaitOpts { nohang: true, ..untraced }), Ok(Waited::Nothing), "reported once");
        assert_eq!(t.cont(j), Some(sh));
        let cont = WaitOpts::from_wait4(linux_raw_sys::general::WCONTINUED | 1).unwrap();
        assert_eq!(t.wait(sh, Select::Any, cont), Ok(Waited::Event(j, ChildEvent::Continued)));
        assert_eq!(WaitOpts::from_wait4(0x100), Err(errno::EINVAL));
        assert_eq!(WaitOpts::from_waitid(1), Err(errno::EINVAL), "waitid needs an event kind");
        let peek = WaitOpts::from_waitid(linux_raw_sys::general::WEXITED | linux_raw_sys::general::WNOWAIT).unwrap();
        t.exit(j, ChildEvent::Exited(5), false);
        assert_eq!(t.wait(sh, Select::Any, peek), Ok(Waited::Event(j, ChildEvent::Exited(5))));
        assert!(t.exists(j), "WNOWAIT leaves it");
    }

    #[test]
    fn job_control_groups() {
        let mut t = ProcTree::new();
        let sh = t.fork(INIT).unwrap();
        assert_eq!(t.setsid(sh), Ok(sh));
        assert_eq!(t.setsid(sh), Err(errno::EPERM), "already a group leader");
        let a = t.fork(sh).unwrap();
        let b = t.fork(sh).unwrap();
        // The shell puts a pipeline a | b in a new group led by a, from both sides (the race
        // shells close by calling setpgid in parent and child).
        assert_eq!(t.setpgid(sh, a, 0), Ok(()));
        assert_eq!(t.setpgid(a, 0, i64::from(a)), Ok(()));
        assert_eq!(t.setpgid(sh, b, i64::from(a)), Ok(()));
        assert_eq!(t.group(a), [a, b]);
        assert_eq!(t.kill_targets(sh, -(a as i32)), Ok(alloc::vec![a, b]));
        assert_eq!(t.kill_targets(a, 0), Ok(alloc::vec![a, b]));
        assert_eq!(t.setpgid(sh, sh, 0), Err(errno::EPERM), "a session leader cannot move");
        assert_eq!(t.setpgid(sh, b, 999), Err(errno::EPERM), "no such group in the session");
        assert_eq!(t.setpgid(sh, b, -1), Err(errno::EINVAL));
        assert_eq!(t.setpgid(a, b, 0), Err(errno::ESRCH), "not a child");
        t.exec(b);
        assert_eq!(t.setpgid(sh, b, i64::from(b)), Err(errno::EACCES), "after execve");
        let c = t.fork(INIT).unwrap();
        assert_eq!(t.setpgid(INIT, c, i64::from(a)), Err(errno::EPERM), "another session's group");
        assert_eq!(t.kill_targets(sh, 5000), Err(errno::ESRCH));
        assert_eq!(t.kill_targets(sh, -5000), Err(errno::ESRCH));
        let all = t.kill_targets(sh, -1).unwrap();
        assert!(!all.contains(&INIT) && !all.contains(&sh) && all.contains(&c));
        assert!(!t.is_orphaned(a), "its parent sh is in another group of the session");
        t.exit(sh, ChildEvent::Exited(0), true);
        assert!(t.is_orphaned(a), "parent gone: init is in another session");
    }

    #[test]
    fn a_group_orphaned_while_stopped_is_hung_up() {
        let mut t = ProcTree::new();
        let sh = t.fork(INIT).unwrap();
        t.setsid(sh).unwrap();
        // sh -> mid (its own group) -> g (mid's group), g stopped by SIGTTIN.
        let mid = t.fork(sh).unwrap();
        t.setpgid(mid, 0, 0).unwrap();
        let g = t.fork(mid).unwrap();
        let other = t.fork(sh).unwrap();
        t.setpgid(other, 0, 0).unwrap();
        assert_eq!(t.stop(g, 21), Some(mid));
        // mid's exit leaves g's group without a parent in the session: stopped, so hung up.
        assert_eq!(t.exit(mid, ChildEvent::Exited(0), false).hangup, [mid]);
        // A group orphaned with nobody stopped, or already orphaned, is left alone.
        let o = t.fork(other).unwrap();
        assert!(t.exit(other, ChildEvent::Exited(0), false).hangup.is_empty(), "nobody stopped");
        assert_eq!(t.stop(o, 19), Some(INIT));
        let o2 = t.fork(o).unwrap();
        assert!(t.exit(o, ChildEvent::Exited(0), false).hangup.is_empty(), "already orphaned");
        // A stopped group whose own member's exit cuts its last link: hung up too.
        let a = t.fork(sh).unwrap();
        t.setpgid(a, 0, 0).unwrap();
        let b = t.fork(a).unwrap();
        assert_eq!(t.stop(b, 19), Some(a));
        assert_eq!(t.exit(a, ChildEvent::Exited(0), false).hangup, [a]);
        // The session leader's exit: its children's groups in its session lose their link.
        let c = t.fork(sh).unwrap();
        t.setpgid(c, 0, 0).unwrap();
        assert_eq!(t.stop(c, 20), Some(sh));
        assert_eq!(t.exit(sh, ChildEvent::Exited(0), false).hangup, [c]);
        let _ = o2;
    }

    #[test]
    fn pids_wrap_and_skip_used() {
        let mut t = ProcTree::new();
        t.last_pid = PID_MAX - 2;
        let a = t.fork(INIT).unwrap();
        assert_eq!(a, PID_MAX - 1);
        let b = t.fork(INIT).unwrap();
        assert_eq!(b, PID_WRAP);
        t.setsid(b).unwrap();
        t.exit(b, ChildEvent::Exited(0), true);
        t.last_pid = PID_WRAP - 1;
        assert_eq!(t.fork(INIT), Ok(PID_WRAP), "free again after its session ended");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Fork(usize),
        Exit(usize, bool),
        Wait(usize),
    }

    proptest! {
        /// Random fork/exit/wait: every process that was forked is reaped at most once, the parent
        /// links and children sets agree, and once everything exits and init waits, only init is
        /// left (no leaked entry).
        #[test]
        fn churn_conserves_processes(ops in proptest::collection::vec(prop_oneof![
            (0usize..16).prop_map(Op::Fork),
            (0usize..16, any::<bool>()).prop_map(|(a, b)| Op::Exit(a, b)),
            (0usize..16).prop_map(Op::Wait),
        ], 1..120)) {
            let mut t = ProcTree::new();
            let mut forked = 0usize;
            let mut reaped = BTreeSet::new();
            let pick = |t: &ProcTree, i: usize| { let v: Vec<Pid> = t.pids().collect(); v[i % v.len()] };
            for o in ops {
                match o {
                    Op::Fork(i) => {
                        let p = pick(&t, i);
                        if !matches!(t.life(p), Ok(Life::Zombie(_))) {
                            t.fork(p).unwrap();
                            forked += 1;
                        }
                    }
                    Op::Exit(i, auto) => {
                        let p = pick(&t, i);
                        let before = t.len();
                        t.exit(p, ChildEvent::Exited(1), auto);
                        if auto && p != INIT && before != t.len() { prop_assert!(reaped.insert(p)); }
                    }
                    Op::Wait(i) => {
                        let p = pick(&t, i);
                        if let Ok(Waited::Event(c, _)) = t.wait(p, Select::Any, WaitOpts { nohang: true, ..W4 }) {
                            prop_assert!(!t.exists(c));
                            prop_assert!(reaped.insert(c), "reaped twice");
                        }
                    }
                }
                for pid in t.pids() {
                    let p = &t.procs[&pid];
                    if pid != INIT { prop_assert!(t.procs[&p.ppid].children.contains(&pid)); }
                    for c in &p.children { prop_assert_eq!(t.procs[c].ppid, pid); }
                }
            }
            let live: Vec<Pid> = t.pids().filter(|&p| p != INIT).collect();
            for p in live { t.exit(p, ChildEvent::Exited(0), false); }
            while let Ok(Waited::Event(c, _)) = t.wait(INIT, Select::Any, W4) { prop_assert!(reaped.insert(c)); }
            prop_assert_eq!(t.len(), 1);
            prop_assert_eq!(reaped.len(), forked);
        }
    }
}
