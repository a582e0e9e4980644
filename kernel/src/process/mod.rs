//! Processes: an address space, its mappings, its threads and its exit status; starting a program
//! from the initramfs; `fork` by copy-on-write; `execve`; ending a process on a fault it caused.
//!
//! Key items: [`Process`], [`spawn`] (a new process running a program of the initramfs, child of
//! the kernel), [`spawn_init`] (the same as pid 1), [`fork`] (a copy-on-write child of the caller),
//! [`execve`] (a new image for the caller), [`current`] (the process of the calling thread),
//! [`exit_current`] (the end of a thread or a whole process), [`tree`] (pids, parents, groups,
//! sessions, zombies, waits, kill targets), [`init`] (the initramfs and the fault hooks).
//!
//! Neighbours: `vm::space` (page tables, shootdowns, copy-on-write), `vm::user` (the way into ring
//! 3), `abi` (ELF plan, stack image, mapping set, process tree, `#!` lines), `arch::usercopy` (all
//! user memory access), `syscall` (above). No unsafe code: everything privileged is reached through
//! those.
//!
//! Threads and processes: every user thread is a scheduler thread spawned with
//! `Builder::user_thread` and `with_fpu` (its extended state is saved at each switch, so no thread
//! sees another's registers; a fork child starts from a copy of its parent's). The table
//! [`THREADS`] maps each to its process. Pids come from the process tree and are not thread ids
//! (the first thread's id differs from its pid, unlike Linux's).
//!
//! Ending: `exit_group`, a fatal fault or a kill set the process's kill status; its other threads
//! end at their next kernel entry or return to user mode (a thread asleep in a futex wait or a
//! sleep ends when that returns). The last thread to end turns the process into a zombie
//! ([`tree::exited`]) and wakes waiters. `execve` uses the same path to end the caller's siblings,
//! exempting the caller.

mod exec;
mod fault;
pub mod initramfs;
pub mod signal;
pub mod tree;

pub use exec::{execve, user_prot};
#[cfg(feature = "ktest")]
pub use fault::COW_BREAKS;
mod list;
pub use list::list;

use alloc::{collections::BTreeMap, string::String, sync::Arc, vec::Vec};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};

use abi::{futex::FutexKey, vma::VmaSet};
use arch::syscall::UserFrame;

use talc::lock_api::Mutex as SpinMutex;

use crate::{
    cpu::irqlock::RawIrqSpin,
    task,
    vm::space::{AddressSpace, AsError},
};

/// The mappings of a process and its heap break, under one sleeping lock.
pub struct MemState {
    pub vmas: VmaSet,
    /// Start of the heap (the page after the image).
    pub brk_start: u64,
    /// The current break (what `brk(0)` returns).
    pub brk: u64,
}

/// The mappings of one address space, as every process running in it shares them.
pub type Memory = sched::Mutex<MemState>;

/// A running program.
pub struct Process {
    /// The process id, from the process tree ([`tree`]); thread ids are the scheduler's, so the
    /// first thread's id differs from it (unlike Linux, where they are equal).
    pid: AtomicU32,
    /// The program's name (the last part of its path), for reports.
    pub name: spin::Mutex<String>,
    /// The address space (replaced by `execve`).
    space: spin::Mutex<Arc<AddressSpace>>,
    /// The mappings, shared with every process that shares the address space (`CLONE_VM`);
    /// replaced, like `space`, by `execve`. Read it through [`Process::mem`].
    mem: spin::Mutex<Arc<Memory>>,
    /// Live threads.
    threads: AtomicU32,
    /// The wait status (Linux encoding) once the process has ended.
    status: AtomicI32,
    status_claimed: AtomicBool,
    /// Set (Release) after `status` is written.
    exited: AtomicBool,
    /// Syscall numbers already reported as unimplemented for this process.
    pub unknown_logged: spin::Mutex<abi::linux::MissingCalls>,
    /// `Some`: the console output of the process is collected here instead of printed (tests); a
    /// forked child shares its parent's.
    pub captured: Arc<spin::Mutex<Option<Vec<u8>>>>,
    /// The status an exit_group or a fatal signal ended the process with, which its other threads
    /// take at their next entry into the kernel ([`NOT_KILLED`] until then).
    kill_status: AtomicI32,

    // Files: the descriptor table (shared under CLONE_FILES), the working directory and umask
    // (shared under CLONE_FS), the resource limits, and what /proc shows of the program.
    /// Behind a lock only so that `execve` can trade a shared table for a copy of its own and the
    /// end can drop it ([`Process::files`], [`Process::with_files`]).
    files: spin::Mutex<Arc<crate::fs::Files>>,
    pub fs: Arc<crate::fs::FsContext>,
    pub limits: spin::Mutex<abi::limits::Limits>,
    /// The arguments the program was started with (`/proc/<pid>/cmdline`).
    pub argv: spin::Mutex<Vec<String>>,
    /// The path of the program (`/proc/<pid>/exe`).
    pub exe: spin::Mutex<String>,
    // -- signals --
    /// Actions, pending sets, masks, the stop state and the real-time timer.
    pub signals: signal::Signals,

    // Process tree and fork.
    /// Set when a vfork child has exited or exec'd: its parent, waiting in vfork, goes on.
    vfork_done: AtomicBool,
    /// The thread running `execve` while the others end ([`EXEC_KILL`]).
    exec_tid: AtomicU64,
    /// The pid and parent pid as the threads' system calls read them without a lock (each thread's
    /// `task::uctx` context shares this).
    ids: Arc<task::uctx::ProcIds>,
}

/// The file state of a process the kernel starts: descriptors 0-2 on the console, `/` as the
/// working directory, umask 022, Linux's default limits.
fn files_block() -> (Arc<crate::fs::Files>, Arc<crate::fs::FsContext>, spin::Mutex<abi::limits::Limits>) {
    (crate::fs::Files::with_console(), crate::fs::FsContext::new(), spin::Mutex::new(abi::limits::Limits::default()))
}

const NOT_KILLED: i32 = -1;
/// `kill_status` while one thread execs: the others end, the exec'ing thread ([`Process::exec_tid`])
/// does not.
const EXEC_KILL: i32 = -2;

/// How many processes have their `kill_status` set (a kill, or an exec ending the other threads)
/// and threads left: the one word the system-call
/// and interrupt paths test before they look their process up, so the common case (nothing to
/// end anywhere) costs a load, not a table lookup. Raised in [`exit_current`] by the thread whose
/// `kill_status` store won, before it counts itself out of `threads`; lowered by the thread that
/// counts the last one out, so every raise happens before its lowering and the word is never
/// zero while a killed process still has a thread. A thread that passes the test just before a
/// raise takes the kill at its next entry, as it would have had it read `kill_status` just before
/// the store.
static KILLS_PENDING: AtomicU32 = AtomicU32::new(0);

/// Whether the calling thread's process is being ended. Safe with interrupts off (a spin lock only).
pub fn is_being_killed() -> bool {
    if KILLS_PENDING.load(Ordering::Acquire) == 0 {
        return false;
    }
    let tid = current_tid();
    let t = THREADS.lock();
    t.get(&tid).is_some_and(|p| p.must_end(tid).is_some())
}

/// End the calling thread if its process is being ended (exit_group, a fatal fault, SIGKILL in
/// another thread). The system-call entry calls it.
#[inline]
pub fn exit_if_killed() {
    if KILLS_PENDING.load(Ordering::Acquire) != 0 {
        exit_if_killed_slow();
    }
}

/// [`exit_if_killed`] once some process is being ended: look the caller's up.
#[cold]
#[inline(never)]
fn exit_if_killed_slow() {
    if let Some(p) = current() {
        let tid = current_tid();
        match p.must_end(tid) {
            None => {}
            Some(s) if p.kill_status.load(Ordering::Acquire) == EXEC_KILL => {
                drop(p);
                exit_current(s, false);
            }
            Some(s) => {
                drop(p);
                exit_current(s, true);
            }
        }
    }
}

/// A user thread being created, and its entry in the tables that make it a thread of its process
/// (the thread table, its signal state with the creator's mask, its clear-tid word; with `main`,
/// the process's main thread). The creator enters it right after the scheduler gave it an id, before
/// `clone` or `fork` returns, so a signal sent at once finds it (Linux: the thread exists from
/// clone's return on); the new thread enters it itself if it runs first. Whichever comes second
/// waits for the first to finish ([`spin::Once`]): the thread never reaches user mode unregistered,
/// and it cannot have ended (and left the tables) before the creator's turn, because it ends only
/// after its own turn.
struct NewThread {
    process: Arc<Process>,
    blocked: abi::signal::SigSet,
    clear_tid: Option<u64>,
    main: bool,
    done: spin::Once<()>,
}

impl NewThread {
    fn new(process: Arc<Process>, blocked: abi::signal::SigSet, clear_tid: Option<u64>, main: bool) -> Self {
        NewThread { process, blocked, clear_tid, main, done: spin::Once::new() }
    }

    /// Enter thread `tid` (the scheduler's id) in the tables, once.
    fn register(&self, tid: u64) {
        self.done.call_once(|| {
            let p = &self.process;
            if self.main {
                p.ids.main_tid.store(tid, Ordering::Release);
            }
            // The context first: a signal attached below may set its work word.
            task::uctx::register(tid, p.ids.clone(), p.clone());
            p.signals.attach(tid, self.blocked);
            let old = THREADS.lock().insert(tid, p.clone());
            debug_assert!(old.is_none(), "a thread id is entered once");
            if let Some(addr) = self.clear_tid {
                CLEAR_TID.lock().insert(tid, addr);
            }
        });
    }
}

/// `clone` of a thread: a new user thread of the calling process, starting from a copy of the
/// caller's registers with `rax` = 0 and, when given, `stack` as its stack pointer and `tls` as its
/// FS base. `parent_tid`/`child_tid`: where to store the new thread's id (`CLONE_PARENT_SETTID`,
/// `CLONE_CHILD_SETTID`), `clear_tid`: where it is cleared and woken at exit
/// (`CLONE_CHILD_CLEARTID`). Returns the new thread's id.
pub fn clone_thread(parent: &UserFrame, stack: u64, tls: Option<u64>, parent_tid: Option<u64>, child_tid: Option<u64>, clear_tid: Option<u64>) -> Result<u64, u32> {
    use abi::linux::errno;
    let p = current().ok_or(errno::ESRCH)?;
    let mut frame = *parent;
    frame.rax = 0;
    if stack != 0 {
        frame.rsp = stack;
    }
    if tls.is_some_and(|t| t >= abi::USER_TOP) {
        return Err(errno::EPERM);
    }
    // The new thread starts with the caller's live FS base (unless CLONE_SETTLS) and GS base.
    let fs_base = tls.unwrap_or_else(arch::fsbase::read);
    let gs_base = arch::fsbase::read_user_gs();
    p.threads.fetch_add(1, Ordering::AcqRel);
    let entry = Arc::new(NewThread::new(p.clone(), signal::current_blocked(), clear_tid, false));
    let child = entry.clone();
    let builder = sched::Builder::new("user").user_thread().with_fpu().stack_bytes(64 * 1024).in_mm(p.space().mm());
    let spawned = task::sched().spawn(builder, move || {
        let tid = current_tid();
        child.register(tid);
        // CLONE_PARENT_SETTID as well as CLONE_CHILD_SETTID, before the first user instruction:
        // the space is shared, and the thread may run (and end) before its creator writes the id
        // below. Linux writes it before the child can run; musl's thread-list lock takes its id
        // from that word, so a thread that found it still 0 would lock with 0, unlocked.
        for addr in [parent_tid, child_tid].into_iter().flatten() {
            let _ = arch::usercopy::copy_to_user(addr, &((THREAD_ID_BASE + tid) as u32).to_ne_bytes());
        }
        task::sched().set_current_fs_base(fs_base);
        let _ = arch::fsbase::write(fs_base);
        // Read from the CPU: canonical. A no-op without FSGSBASE, where it is 0 anyway.
        let _ = arch::fsbase::write_user_gs(gs_base);
        let root = child.process.space().root();
        drop(child);
        crate::vm::user::enter(root, &frame)
    });
    let handle = match spawned {
        Ok(h) => h,
        Err(_) => {
            p.threads.fetch_sub(1, Ordering::AcqRel);
            return Err(errno::EAGAIN);
        }
    };
    // The thread exists from here on for tkill, tgkill and kill, whether or not it ran yet.
    entry.register(handle.id().0);
    drop(entry);
    let tid = THREAD_ID_BASE + handle.id().0;
    if let Some(addr) = parent_tid {
        // As on Linux, a bad address here does not undo the clone: the thread exists.
        let _ = arch::usercopy::copy_to_user(addr, &(tid as u32).to_ne_bytes());
    }
    Ok(tid)
}

impl Process {
    /// A process with one thread (not started yet) in `space`, with the mappings `mem`.
    /// With `parent` (fork), the child gets copies of its descriptor table, working directory,
    /// limits, command line and signal actions and mask, as Linux's fork gives them; without, the
    /// state of a program the kernel starts ([`files_block`]), with `argv` and `exe` for /proc.
    fn new(
        pid: u32,
        name: String,
        space: Arc<AddressSpace>,
        mem: Arc<Memory>,
        captured: Arc<spin::Mutex<Option<Vec<u8>>>>,
        parent: Option<&Process>,
        argv: Vec<String>,
        exe: String,
    ) -> Arc<Process> {
        let (files, fs, limits, signals, argv, exe) = match parent {
            Some(p) => (
                p.files().fork_copy(),
                p.fs.fork_copy(),
                spin::Mutex::new(p.limits.lock().clone()),
                p.signals.fork_copy(),
                spin::Mutex::new(p.argv.lock().clone()),
                spin::Mutex::new(p.exe.lock().clone()),
            ),
            None => {
                let (files, fs, limits) = files_block();
                (files, fs, limits, signal::Signals::new(), spin::Mutex::new(argv), spin::Mutex::new(exe))
            }
        };
        let ids = Arc::new(task::uctx::ProcIds::new(pid, tree::ppid(pid).unwrap_or(0)));
        ids.set_futex_space(Arc::as_ptr(&mem) as u64);
        Arc::new(Process {
            files: spin::Mutex::new(files),
            fs,
            limits,
            argv,
            exe,
            signals,
            pid: AtomicU32::new(pid),
            name: spin::Mutex::new(name),
            space: spin::Mutex::new(space),
            mem: spin::Mutex::new(mem),
            threads: AtomicU32::new(1),
            status: AtomicI32::new(0),
            status_claimed: AtomicBool::new(false),
            exited: AtomicBool::new(false),
            unknown_logged: spin::Mutex::new(abi::linux::MissingCalls::default()),
            captured,
            kill_status: AtomicI32::new(NOT_KILLED),
            vfork_done: AtomicBool::new(false),
            exec_tid: AtomicU64::new(0),
            ids,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// The descriptor table (another process's too under `CLONE_FILES`).
    pub fn files(&self) -> Arc<crate::fs::Files> {
        self.files.lock().clone()
    }

    /// Run `f` on the descriptor table without taking a handle on it (the read and write paths).
    #[inline]
    pub fn with_files<R>(&self, f: impl FnOnce(&crate::fs::Files) -> R) -> R {
        f(&self.files.lock())
    }

    /// `execve` in a process that shares its descriptor table with another (`CLONE_FILES`): the
    /// table becomes a copy of its own first, so its close-on-exec closes leave the other's alone
    /// (Linux's `unshare_files`). The caller is the process's only thread.
    pub fn unshare_files(&self) {
        let mut files = self.files.lock();
        if Arc::strong_count(&files) > 1 {
            *files = files.fork_copy();
        }
    }

    /// The ids the process's threads' system calls read without a lock.
    pub fn ids(&self) -> &task::uctx::ProcIds {
        &self.ids
    }

    /// The address space the process runs in now.
    pub fn space(&self) -> Arc<AddressSpace> {
        self.space.lock().clone()
    }

    /// The mappings of the address space the process runs in now (lock it to read or change them).
    pub fn mem(&self) -> Arc<Memory> {
        self.mem.lock().clone()
    }

    /// What names the process's memory in a private futex key: the same for every process that
    /// shares the address space (`CLONE_VM`), a new one after `execve`. The address of the shared
    /// mappings serves, a kernel address that no pid and no frame key can equal.
    pub fn futex_space(&self) -> u64 {
        self.ids.futex_space()
    }

    /// Put `mem` in place of the mappings (`execve`).
    fn replace_mem(&self, mem: Arc<Memory>) -> Arc<Memory> {
        let mut slot = self.mem.lock();
        self.ids.set_futex_space(Arc::as_ptr(&mem) as u64);
        core::mem::replace(&mut *slot, mem)
    }

    /// The program's name, for reports.
    pub fn name(&self) -> String {
        self.name.lock().clone()
    }

    /// The calling thread starts an exec: every other thread ends at its next kernel entry or
    /// return to user mode. `false` if the process is being ended (or another thread execs).
    fn begin_exec(&self) -> bool {
        self.exec_tid.store(current_tid(), Ordering::Release);
        let began = self.kill_status.compare_exchange(NOT_KILLED, EXEC_KILL, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if began {
            KILLS_PENDING.fetch_add(1, Ordering::AcqRel);
            self.mark_threads_killed();
        }
        began
    }

    /// Set the kill bit of every thread's work word, after `kill_status` changed: each looks at
    /// the status on its way out of its next system call.
    fn mark_threads_killed(&self) {
        for (tid, q) in THREADS.lock().iter() {
            if core::ptr::eq(Arc::as_ptr(q), self) {
                task::uctx::set_work(*tid, task::uctx::work::KILL, true);
            }
        }
    }

    /// A kill came while the exec waited for the other threads.
    fn killed_during_exec(&self) -> bool {
        self.kill_status.load(Ordering::Acquire) != EXEC_KILL
    }

    /// The exec is past its wait: the process lives on in its new image.
    fn end_exec(&self) {
        if self.kill_status.compare_exchange(EXEC_KILL, NOT_KILLED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            KILLS_PENDING.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Whether the calling thread of this process must end now.
    fn must_end(&self, tid: u64) -> Option<i32> {
        match self.kill_status.load(Ordering::Acquire) {
            NOT_KILLED => None,
            EXEC_KILL if self.exec_tid.load(Ordering::Acquire) == tid => None,
            // A sibling of an exec ends quietly; its status is not the process's.
            EXEC_KILL => Some(0),
            s => Some(s),
        }
    }

    /// Put `space` in place of the address space; returns the old one.
    fn replace_space(&self, space: Arc<AddressSpace>) -> Arc<AddressSpace> {
        core::mem::replace(&mut *self.space.lock(), space)
    }

    /// Block until every thread has ended; the wait status. For the kernel's own waits (the test
    /// runner, the boot's init), which have no parent process to call `wait4` from.
    pub fn wait_exit(&self) -> i32 {
        tree::child_events().wait_until(task::sched(), || self.status().is_some());
        self.status().expect("the wait ended on a status")
    }

    /// Let a parent waiting in vfork go on (the child exited or exec'd).
    fn release_vfork(&self) {
        if !self.vfork_done.swap(true, Ordering::AcqRel) {
            tree::notify();
        }
    }

    /// The wait status, once every thread has ended.
    pub fn status(&self) -> Option<i32> {
        (self.exited.load(Ordering::Acquire) && self.threads.load(Ordering::Acquire) == 0).then(|| self.status.load(Ordering::Acquire))
    }
}

/// Thread id -> process, for the calling thread's process. An interrupts-off lock: the interrupt
/// path reads it before returning to ring 3 ([`is_being_killed`]), so no holder may be interrupted
/// on its CPU. No `Arc<Process>` is ever dropped under it (that could destroy an address space).
static THREADS: SpinMutex<RawIrqSpin, BTreeMap<u64, Arc<Process>>> = SpinMutex::new(BTreeMap::new());
/// Thread id -> the user address the kernel clears and wakes at the thread's exit
/// (`set_tid_address`, `CLONE_CHILD_CLEARTID`).
static CLEAR_TID: spin::Mutex<BTreeMap<u64, u64>> = spin::Mutex::new(BTreeMap::new());


/// The calling thread's id.
pub fn current_tid() -> u64 {
    task::sched().current().map_or(0, |t| t.id.0)
}

/// The process of the thread whose context is `ctx` (inside one of its system calls: no lock).
pub fn of(ctx: &task::uctx::UserCtx) -> &Process {
    ctx.owner_as::<Process>().expect("a user thread's context names its process")
}

/// The process of the calling thread, if it is a user thread.
pub fn current() -> Option<Arc<Process>> {
    THREADS.lock().get(&current_tid()).cloned()
}

/// Whether thread `tid` belongs to `p`.
pub fn is_thread_of(p: &Arc<Process>, tid: u64) -> bool {
    THREADS.lock().get(&tid).is_some_and(|q| Arc::ptr_eq(p, q))
}

pub use exec::random_bytes;

/// Whether thread `tid` belongs to the process whose id is `pid`.
pub fn thread_in_process(tid: u64, pid: u32) -> bool {
    THREADS.lock().get(&tid).is_some_and(|q| q.pid() == pid)
}

/// Where the Linux thread ids of threads other than a main thread start: a process's main thread
/// has the pid as its id, as on Linux; every other user thread has `THREAD_ID_BASE` plus its
/// scheduler id. Pids stay below `abi::jobs::PID_MAX`, so the two never collide, and both fit the
/// positive `pid_t` range (trade-off: a second thread's id is a large number where Linux would
/// hand out the next small one).
pub const THREAD_ID_BASE: u64 = 1 << 30;
const _: () = assert!((abi::jobs::PID_MAX as u64) < THREAD_ID_BASE);

/// The Linux thread id of `p`'s thread with scheduler id `sched_tid`.
pub fn linux_tid(p: &Process, sched_tid: u64) -> u64 {
    if p.ids.main_tid.load(Ordering::Acquire) == sched_tid { u64::from(p.pid()) } else { THREAD_ID_BASE + sched_tid }
}

/// The calling thread's Linux id (`gettid`).
pub fn current_linux_tid() -> u64 {
    match current() {
        Some(p) => linux_tid(&p, current_tid()),
        None => current_tid(),
    }
}

/// The scheduler id of the live user thread whose Linux id is `tid`, if there is one.
pub fn sched_tid(tid: u64) -> Option<u64> {
    if tid >= THREAD_ID_BASE {
        let t = tid - THREAD_ID_BASE;
        return THREADS.lock().contains_key(&t).then_some(t);
    }
    let p = tree::live(u32::try_from(tid).ok()?)?;
    let main = p.ids.main_tid.load(Ordering::Acquire);
    let alive = main != 0 && THREADS.lock().get(&main).is_some_and(|q| Arc::ptr_eq(q, &p));
    // `p` is dropped here, outside the thread table's lock.
    drop(p);
    alive.then_some(main)
}

/// Record where the calling thread's id is cleared at its exit.
pub fn set_clear_tid(addr: u64) {
    CLEAR_TID.lock().insert(current_tid(), addr);
}

/// Why a program could not be started (each variant carries the lower layer's reason, printed by
/// its `Debug`).
#[derive(Debug)]
#[allow(dead_code, reason = "the fields are read through Debug in the log line that reports the failure")]
pub enum SpawnError {
    NotFound,
    /// `spawn_init` while a user program holds pid 1.
    InitTaken,
    /// Every pid is taken.
    NoPid,
    BadImage(abi::elf::ElfError),
    Memory(AsError),
    Thread(sched::SpawnError),
}

/// Start the program at `path` in the initramfs as a new process with arguments `argv` (argv[0]
/// included) and environment `envp`; with `capture`, its console output is kept in
/// [`Process::captured`] rather than printed. Its parent is the kernel (pid 1 while no user program
/// holds it), which reaps it at its end; wait for that with [`Process::wait_exit`]. Returns the
/// process and its first thread's handle.
pub fn spawn(
    path: &str,
    argv: Vec<String>,
    envp: Vec<String>,
    capture: bool,
) -> Result<(Arc<Process>, sched::JoinHandle<(), task::KernelPlatform>), SpawnError> {
    spawn_as(None, path, argv, envp, capture)
}

/// [`spawn`] as pid 1, the parent of orphans: the first program of the system (`make run`'s init).
pub fn spawn_init(path: &str, argv: Vec<String>, envp: Vec<String>) -> Result<(Arc<Process>, sched::JoinHandle<(), task::KernelPlatform>), SpawnError> {
    if !tree::claim_init() {
        return Err(SpawnError::InitTaken);
    }
    spawn_as(Some(abi::jobs::INIT), path, argv, envp, false)
}

fn spawn_as(
    pid: Option<u32>,
    path: &str,
    argv: Vec<String>,
    envp: Vec<String>,
    capture: bool,
) -> Result<(Arc<Process>, sched::JoinHandle<(), task::KernelPlatform>), SpawnError> {
    let image = crate::fs::read_file(path).map_err(|_| SpawnError::NotFound)?;
    let plan = abi::elf::plan(&image, exec::PIE_BASE).map_err(SpawnError::BadImage)?;
    let space = AddressSpace::new().map_err(SpawnError::Memory)?;
    let name = String::from(path.rsplit('/').next().unwrap_or(path));
    let brk_start = plan.image_end();
    let pid = match pid {
        Some(pid) => pid,
        None => tree::new_pid(abi::jobs::INIT).map_err(|_| SpawnError::NoPid)?,
    };
    let mem = MemState { vmas: VmaSet::new(abi::elf::MIN_USER_ADDR), brk_start, brk: brk_start };
    let process = Process::new(pid, name, space.clone(), Arc::new(sched::Mutex::new(mem)), Arc::new(spin::Mutex::new(capture.then(Vec::new))), None, argv.clone(), String::from(path));
    tree::register(&process);
    let p = process.clone();
    let path = String::from(path);
    let builder = sched::Builder::new("user").user_thread().with_fpu().stack_bytes(64 * 1024).in_mm(space.mm());
    let spawned = task::sched().spawn(builder, move || {
        p.ids.main_tid.store(current_tid(), Ordering::Release);
        task::uctx::register(current_tid(), p.ids.clone(), p.clone());
        p.signals.attach(current_tid(), abi::signal::SigSet::EMPTY);
        THREADS.lock().insert(current_tid(), p.clone());
        exec::start(p, image, plan, path, argv, envp)
    });
    match spawned {
        Ok(handle) => Ok((process, handle)),
        Err(e) => {
            tree::abandon(pid);
            Err(SpawnError::Thread(e))
        }
    }
}

/// How `fork` and its relatives make the child (`clone` without `CLONE_THREAD`).
pub struct ForkArgs {
    /// The child's stack pointer (0: the parent's).
    pub stack: u64,
    /// The parent waits until the child exits or execs (`vfork`, `CLONE_VFORK`).
    pub vfork: bool,
    /// `CLONE_VM`: the child runs in the caller's address space with the same mappings (each
    /// side's writes, maps and unmaps are the other's) instead of a copy-on-write copy.
    pub share_vm: bool,
    /// `CLONE_FILES`: the child uses the caller's descriptor table (each side's opens, closes and
    /// dups are the other's) instead of a copy.
    pub share_files: bool,
    /// `CLONE_SIGHAND` (with `CLONE_VM`): the child uses the caller's table of signal actions
    /// (each side's `sigaction` is the other's) instead of a copy, until it execs.
    pub share_sighand: bool,
    /// `CLONE_SETTLS`: the child's FS base (otherwise the parent's).
    pub tls: Option<u64>,
    /// `CLONE_PARENT_SETTID`, `CLONE_CHILD_SETTID`, `CLONE_CHILD_CLEARTID` addresses.
    pub parent_tid: Option<u64>,
    pub child_tid: Option<u64>,
    pub clear_tid: Option<u64>,
}

/// `fork`: a new process, child of the caller's, with a copy-on-write copy of its memory (see
/// `AddressSpace::fork_cow`: the caller's writable pages are read-only everywhere before this
/// returns), its mappings, and one thread starting from the caller's registers with `rax` = 0,
/// its FS base and its extended state.
/// With `CLONE_VM` (and no `CLONE_THREAD`: `vfork`, `posix_spawn`'s `CLONE_VM|CLONE_VFORK`) the
/// child is a process of its own (its pid, its descriptors, its signal state, SIGCHLD and a zombie
/// for its parent at its end) running in the caller's address space: nothing is copied and no
/// page turns read-only. Its `execve` gives it a space of its own and leaves the caller's alone.
/// `CLONE_FILES` and `CLONE_SIGHAND` share the descriptor table and the signal actions in the
/// same way, until the child's `execve` takes copies of its own.
/// Returns the child's pid.
pub fn fork(parent: &UserFrame, args: ForkArgs) -> Result<u64, u32> {
    use abi::linux::errno;
    let p = current().ok_or(errno::ESRCH)?;
    if args.tls.is_some_and(|t| t >= abi::USER_TOP) {
        return Err(errno::EPERM);
    }
    let s = task::sched();
    let mut frame = *parent;
    frame.rax = 0;
    if args.stack != 0 {
        frame.rsp = args.stack;
    }
    // The child starts with the caller's live FS base (unless CLONE_SETTLS) and GS base.
    let fs_base = args.tls.unwrap_or_else(arch::fsbase::read);
    let gs_base = arch::fsbase::read_user_gs();
    // The mappings and the pages are copied under the mapping lock, so they agree.
    let (space, mem) = if args.share_vm {
        (p.space(), p.mem())
    } else {
        let memory = p.mem();
        let mem = memory.lock(s);
        // MAP_SHARED anonymous ranges keep one set of frames for both (PROT_NONE ones have no
        // present page to share: x86 cannot keep one present and inaccessible).
        let shared: Vec<_> = mem
            .vmas
            .iter()
            .filter(|v| v.kind == abi::vma::VmaKind::Shared && v.prot != 0)
            .map(|v| (v.start..v.end, exec::user_prot(v.prot)))
            .collect();
        let space = p.space().fork_cow(&shared).map_err(|_| errno::ENOMEM)?;
        (space, Arc::new(sched::Mutex::new(MemState { vmas: mem.vmas.clone(), brk_start: mem.brk_start, brk: mem.brk })))
    };
    let pid = tree::new_pid(p.pid())?;
    let child = Process::new(pid, p.name(), space.clone(), mem, p.captured.clone(), Some(&p), Vec::new(), String::new());
    if args.share_files {
        *child.files.lock() = p.files();
    }
    if args.share_sighand {
        child.signals.share_actions_of(&p.signals);
    }
    tree::register(&child);
    let builder = sched::Builder::new("user").user_thread().with_fpu_of_caller().stack_bytes(64 * 1024).in_mm(space.mm());
    drop(space);
    let child_tid = args.child_tid;
    let entry = Arc::new(NewThread::new(child.clone(), signal::current_blocked(), args.clear_tid, true));
    let c = entry.clone();
    let spawned = s.spawn(builder, move || {
        c.register(current_tid());
        let p = &c.process;
        if let Some(addr) = child_tid {
            // The child's only thread is its main thread: its id is the pid.
            let _ = arch::usercopy::copy_to_user(addr, &p.pid().to_ne_bytes());
        }
        task::sched().set_current_fs_base(fs_base);
        let _ = arch::fsbase::write(fs_base);
        // Read from the CPU: canonical. A no-op without FSGSBASE, where it is 0 anyway.
        let _ = arch::fsbase::write_user_gs(gs_base);
        let root = p.space().root();
        drop(c);
        crate::vm::user::enter(root, &frame)
    });
    let handle = match spawned {
        Ok(h) => h,
        Err(_) => {
            tree::abandon(pid);
            return Err(errno::EAGAIN);
        }
    };
    // The child's thread exists from here on (tkill of the new pid finds it).
    entry.register(handle.id().0);
    drop((entry, handle));
    if let Some(addr) = args.parent_tid {
        let _ = arch::usercopy::copy_to_user(addr, &pid.to_ne_bytes());
    }
    if args.vfork {
        tree::child_events().wait_until(s, || child.vfork_done.load(Ordering::Acquire) || is_being_killed());
    }
    Ok(u64::from(pid))
}

/// End the calling user thread; with `whole` (exit_group, a fatal fault), its whole process, whose
/// wait status becomes `status` (Linux encoding: `code << 8`, or the signal number).
pub fn exit_current(status: i32, whole: bool) -> ! {
    let tid = current_tid();
    let clear = CLEAR_TID.lock().remove(&tid);
    if let (Some(addr), Some(p)) = (clear, current()) {
        // CLONE_CHILD_CLEARTID: the id word goes to 0 first, then one waiter is woken (a
        // non-private wake), in that order, or a pthread_join could sleep for ever.
        if arch::usercopy::copy_to_user(addr, &0u32.to_ne_bytes()).is_ok() {
            crate::ipc::futex::wake(FutexKey { space: p.futex_space(), addr }, 1, abi::futex::MATCH_ANY);
        }
    }
    let p = THREADS.lock().remove(&tid);
    task::uctx::forget(tid);
    if let Some(p) = p {
        if whole {
            // The other threads end at their next system call or fault, or now if they sleep.
            if p.kill_status.compare_exchange(NOT_KILLED, status, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                KILLS_PENDING.fetch_add(1, Ordering::AcqRel);
                p.mark_threads_killed();
            }
            p.signals.dying();
        }
        p.signals.detach(tid);
        // The first exit_group (or the last thread's exit) decides the status; an exit_group claims
        // it before its thread stops counting, so the last thread finds it set.
        let claim = |p: &Process| {
            if !p.status_claimed.swap(true, Ordering::AcqRel) {
                p.status.store(status, Ordering::Relaxed);
                p.exited.store(true, Ordering::Release);
            }
        };
        if whole {
            claim(&p);
        }
        let remaining = p.threads.fetch_sub(1, Ordering::AcqRel) - 1;
        if remaining == 0 && p.kill_status.load(Ordering::Acquire) != NOT_KILLED {
            KILLS_PENDING.fetch_sub(1, Ordering::AcqRel);
        }
        if p.kill_status.load(Ordering::Acquire) == EXEC_KILL {
            // An exec in this process waits for its siblings to end.
            tree::notify();
        }
        if remaining == 0 {
            claim(&p);
            // The process has ended: a zombie for its parent, and a vfork parent goes on.
            p.release_vfork();
            tree::exited(p.pid(), p.status.load(Ordering::Acquire));
        }
        // The last thread gives up the process's share of its descriptor table; the last sharer's
        // drop closes every descriptor, so a pipe's other end sees EOF or EPIPE now, not when the
        // process is reaped.
        if remaining == 0 {
            let files = core::mem::replace(&mut *p.files.lock(), crate::fs::Files::empty());
            drop(files);
        }
        // The thread gives up its share of the process here; the space stays alive as long as the
        // spawner (or a sibling) holds the process, and its destruction moves any CPU still on it
        // to the kernel's tables.
        drop(p);
    }
    task::exit_user_thread()
}

/// Make the first program run: the initramfs from the boot modules and the fault hooks.
pub fn init(initrd: Option<&'static [u8]>) {
    initramfs::init(initrd);
    crate::fs::init(initrd);
    crate::fs::proc::set_source(&list::PROC_SOURCE);
    fault::init();
    tree::init();
    crate::fs::pipe::set_sigpipe_hook(signal::sigpipe);
    crate::tty::set_job_control(crate::tty::JobControl { ignores: signal::current_ignores, orphaned: tree::is_orphaned, signal_group: tree::signal_group_now, group_session: tree::group_session });
}

/// A counter of the pages demand-zero faults mapped (for tests and reports).
pub static DEMAND_PAGES: AtomicU64 = AtomicU64::new(0);
