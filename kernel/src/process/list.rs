//! The process list: [`list`] (what `/proc`, `ps` and `sysinfo` see) and the
//! `fs::proc::ProcSource` the file layer's `/proc` reads it through.

use alloc::{collections::BTreeMap, string::String, sync::Arc, vec::Vec};
use core::sync::atomic::Ordering;

use super::{NOT_KILLED, Process, THREADS, current};
use crate::task;

/// One line of the process list ([`list`]).
pub struct ProcessEntry {
    pub pid: u32,
    pub ppid: u32,
    pub pgrp: u32,
    pub session: u32,
    pub name: String,
    pub state: abi::procfs::TaskState,
    pub threads: u32,
    /// CPU time of the threads of its current image (the scheduler charges it to the address space).
    pub cpu_ns: u64,
    /// Bytes of user mappings.
    pub vsize: u64,
}

/// Every process with a live thread, by pid.
pub fn list() -> Vec<ProcessEntry> {
    let (procs, tids): (BTreeMap<u32, Arc<Process>>, Vec<(u32, u64)>) = {
        let t = THREADS.lock();
        (t.values().map(|p| (p.pid(), p.clone())).collect(), t.iter().map(|(&tid, p)| (p.pid(), tid)).collect())
    };
    // A process shows its main thread's state, as Linux's shows its leader's: S while that thread
    // waits for a wake-up, R while it runs or may run; once the main thread has ended, R while any
    // thread of it does. (The scheduler is asked outside the THREADS lock.)
    let sched = task::sched();
    let mut awake = alloc::collections::BTreeSet::new();
    for p in procs.values() {
        let main = p.ids.main_tid.load(Ordering::Acquire);
        match sched.is_blocked(sched::ThreadId(main)) {
            Some(blocked) => {
                if !blocked {
                    awake.insert(p.pid());
                }
            }
            None => {
                if tids.iter().any(|&(pid, tid)| pid == p.pid() && sched.is_blocked(sched::ThreadId(tid)) != Some(true)) {
                    awake.insert(p.pid());
                }
            }
        }
    }
    let out = procs
        .values()
        .map(|p| ProcessEntry {
            vsize: p.mem().lock(task::sched()).vmas.mapped_bytes(),
            pid: p.pid(),
            ppid: super::tree::ppid(p.pid()).unwrap_or(0),
            pgrp: super::tree::pgid(p.pid()).unwrap_or(p.pid()),
            session: super::tree::sid(p.pid()).unwrap_or(p.pid()),
            name: p.name(),
            state: if p.kill_status.load(Ordering::Relaxed) != NOT_KILLED {
                abi::procfs::TaskState::Zombie
            } else if p.signals.is_stopped() {
                abi::procfs::TaskState::Stopped
            } else if awake.contains(&p.pid()) {
                abi::procfs::TaskState::Running
            } else {
                abi::procfs::TaskState::Sleeping
            },
            threads: p.threads.load(Ordering::Relaxed),
            cpu_ns: p.space().cpu_ns(),
        })
        .collect();
    // The processes are dropped here, outside the interrupts-off lock.
    drop(procs);
    out
}

fn find(pid: u32) -> Option<Arc<Process>> {
    THREADS.lock().values().find(|p| p.pid() == pid).cloned()
}

/// What `/proc` knows of processes, from [`list`].
pub(super) struct ProcSource;

pub(super) static PROC_SOURCE: ProcSource = ProcSource;

impl crate::fs::proc::ProcSource for ProcSource {
    fn list(&self) -> Vec<abi::procfs::ProcInfo> {
        list()
            .into_iter()
            .map(|e| abi::procfs::ProcInfo { pid: e.pid, comm: e.name, state: e.state, ppid: e.ppid, pgrp: e.pgrp, session: e.session, tpgid: -1, num_threads: e.threads, utime_ns: e.cpu_ns, vsize: e.vsize, ..Default::default() })
            .collect()
    }

    fn cmdline(&self, pid: u32) -> Option<Vec<u8>> {
        let p = find(pid)?;
        let argv = p.argv.lock().clone();
        drop(p);
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        Some(abi::procfs::pid_cmdline(&refs))
    }

    fn exe(&self, pid: u32) -> Option<String> {
        let p = find(pid)?;
        let exe = p.exe.lock().clone();
        Some(exe)
    }

    fn current_pid(&self) -> u32 {
        current().map_or(0, |p| p.pid())
    }
}
