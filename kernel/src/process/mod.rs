//! Processes: an address space, its mappings, its threads and its exit status; starting a program
//! from the initramfs; ending a process on a fault it caused.
//!
//! Key items: [`Process`], [`spawn`] (a new process running a program of the initramfs), [`current`]
//! (the process of the calling thread), [`exit_current`] (the end of a thread or a whole process),
//! [`init`] (the initramfs and the fault hooks).
//!
//! Neighbours: `vm::space` (page tables and shootdowns), `vm::user` (the way into ring 3), `abi` (ELF
//! plan, stack image, mapping set), `arch::usercopy` (all user memory access), `syscall` (above).
//! No unsafe code: everything privileged is reached through those.
//!
//! Threads and processes: every user thread is a scheduler thread spawned with
//! `Builder::user_thread` and `with_fpu` (its extended state is saved at each switch, so no thread
//! sees another's registers). The table [`THREADS`] maps each to its process.

mod exec;
mod fault;
pub mod initramfs;
mod list;

pub use exec::user_prot;
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

/// A running program.
pub struct Process {
    /// The process id: the id of its first thread, as on Linux (getpid() == gettid() there).
    pid: AtomicU32,
    /// The program's name (the last part of its path), for reports.
    pub name: String,
    pub space: Arc<AddressSpace>,
    pub mem: sched::Mutex<MemState>,
    /// Live threads.
    threads: AtomicU32,
    /// The wait status (Linux encoding) once the process has ended.
    status: AtomicI32,
    status_claimed: AtomicBool,
    /// Set (Release) after `status` is written.
    exited: AtomicBool,
    /// Syscall numbers already reported as unimplemented for this process.
    pub unknown_logged: spin::Mutex<Vec<u64>>,
    /// `Some`: the console output of the process is collected here instead of printed (tests).
    pub captured: spin::Mutex<Option<Vec<u8>>>,
    /// The status an exit_group or a fatal signal ended the process with, which its other threads
    /// take at their next entry into the kernel ([`NOT_KILLED`] until then).
    kill_status: AtomicI32,

    // Files: the descriptor table (shared under CLONE_FILES), the working directory and umask
    // (shared under CLONE_FS), the resource limits, and what /proc shows of the program.
    pub files: Arc<crate::fs::Files>,
    pub fs: Arc<crate::fs::FsContext>,
    pub limits: spin::Mutex<abi::limits::Limits>,
    /// The arguments the program was started with (`/proc/<pid>/cmdline`).
    pub argv: spin::Mutex<Vec<String>>,
    /// The path of the program (`/proc/<pid>/exe`).
    pub exe: spin::Mutex<String>,
}

/// The file state of a process the kernel starts: descriptors 0-2 on the console, `/` as the
/// working directory, umask 022, Linux's default limits.
fn files_block() -> (Arc<crate::fs::Files>, Arc<crate::fs::FsContext>, spin::Mutex<abi::limits::Limits>) {
    (crate::fs::Files::with_console(), crate::fs::FsContext::new(), spin::Mutex::new(abi::limits::Limits::default()))
}

const NOT_KILLED: i32 = -1;

/// Whether the calling thread's process is being ended. Safe with interrupts off (a spin lock only).
pub fn is_being_killed() -> bool {
    let t = THREADS.lock();
    t.get(&current_tid()).is_some_and(|p| p.kill_status.load(Ordering::Acquire) != NOT_KILLED)
}

/// End the calling thread if its process is being ended (exit_group, a fatal fault, SIGKILL in
/// another thread). The system-call entry calls it.
pub fn exit_if_killed() {
    if let Some(p) = current() {
        let s = p.kill_status.load(Ordering::Acquire);
        if s != NOT_KILLED {
            drop(p);
            exit_current(s, true);
        }
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
    p.threads.fetch_add(1, Ordering::AcqRel);
    let child = p.clone();
    let builder = sched::Builder::new("user").user_thread().with_fpu().stack_bytes(64 * 1024).in_mm(p.space.mm());
    let spawned = task::sched().spawn(builder, move || {
        let tid = current_tid();
        THREADS.lock().insert(tid, child.clone());
        if let Some(addr) = clear_tid {
            CLEAR_TID.lock().insert(tid, addr);
        }
        if let Some(addr) = child_tid {
            let _ = arch::usercopy::copy_to_user(addr, &(tid as u32).to_ne_bytes());
        }
        if let Some(t) = tls {
            task::sched().set_current_fs_base(t);
            let _ = arch::fsbase::write(t);
        }
        let root = child.space.root();
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
    let tid = handle.id().0;
    if let Some(addr) = parent_tid {
        // As on Linux, a bad address here does not undo the clone: the thread exists.
        let _ = arch::usercopy::copy_to_user(addr, &(tid as u32).to_ne_bytes());
    }
    Ok(tid)
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
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

/// The process of the calling thread, if it is a user thread.
pub fn current() -> Option<Arc<Process>> {
    THREADS.lock().get(&current_tid()).cloned()
}

/// Whether thread `tid` belongs to `p`.
pub fn is_thread_of(p: &Arc<Process>, tid: u64) -> bool {
    THREADS.lock().get(&tid).is_some_and(|q| Arc::ptr_eq(p, q))
}

pub use exec::random_bytes;

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
    BadImage(abi::elf::ElfError),
    Memory(AsError),
    Thread(sched::SpawnError),
}

/// Start the program at `path` in the initramfs as a new process with arguments `argv` (argv[0]
/// included) and environment `envp`; with `capture`, its console output is kept in
/// [`Process::captured`] rather than printed. Returns the process and its first thread's handle.
pub fn spawn(
    path: &str,
    argv: Vec<String>,
    envp: Vec<String>,
    capture: bool,
) -> Result<(Arc<Process>, sched::JoinHandle<(), task::KernelPlatform>), SpawnError> {
    let image = initramfs::file(path).ok_or(SpawnError::NotFound)?;
    let plan = abi::elf::plan(image, exec::PIE_BASE).map_err(SpawnError::BadImage)?;
    let space = AddressSpace::new().map_err(SpawnError::Memory)?;
    let name = String::from(path.rsplit('/').next().unwrap_or(path));
    let brk_start = plan.image_end();
    let (files, fs, limits) = files_block();
    let process = Arc::new(Process {
        pid: AtomicU32::new(0),
        name,
        space: space.clone(),
        mem: sched::Mutex::new(MemState { vmas: VmaSet::new(abi::elf::MIN_USER_ADDR), brk_start, brk: brk_start }),
        threads: AtomicU32::new(1),
        status: AtomicI32::new(0),
        status_claimed: AtomicBool::new(false),
        exited: AtomicBool::new(false),
        unknown_logged: spin::Mutex::new(Vec::new()),
        captured: spin::Mutex::new(capture.then(Vec::new)),
        kill_status: AtomicI32::new(NOT_KILLED),
        files,
        fs,
        limits,
        argv: spin::Mutex::new(argv.clone()),
        exe: spin::Mutex::new(String::from(path)),
    });
    let p = process.clone();
    let path = String::from(path);
    let builder = sched::Builder::new("user").user_thread().with_fpu().stack_bytes(64 * 1024).in_mm(space.mm());
    let handle = task::sched()
        .spawn(builder, move || {
            // The first thread's id is the process id (the spawner stores the same value).
            p.pid.store(current_tid() as u32, Ordering::Relaxed);
            THREADS.lock().insert(current_tid(), p.clone());
            exec::start(p, image, plan, path, argv, envp)
        })
        .map_err(SpawnError::Thread)?;
    process.pid.store(handle.id().0 as u32, Ordering::Relaxed);
    Ok((process, handle))
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
            crate::ipc::futex::wake(FutexKey { space: u64::from(p.pid()), addr }, 1, abi::futex::MATCH_ANY);
        }
    }
    crate::ipc::futex::forget(tid);
    let p = THREADS.lock().remove(&tid);
    if let Some(p) = p {
        if whole {
            // The other threads end at their next system call or fault.
            let _ = p.kill_status.compare_exchange(NOT_KILLED, status, Ordering::AcqRel, Ordering::Acquire);
        }
        let remaining = p.threads.fetch_sub(1, Ordering::AcqRel) - 1;
        // The first exit_group (or the last thread's exit) decides the status.
        if (whole || remaining == 0) && !p.status_claimed.swap(true, Ordering::AcqRel) {
            p.status.store(status, Ordering::Relaxed);
            p.exited.store(true, Ordering::Release);
        }
        // The last thread closes the process's descriptors (unless another process shares the
        // table), so a pipe's other end sees EOF or EPIPE now, not when the process is reaped.
        if remaining == 0 && Arc::strong_count(&p.files) == 1 {
            p.files.close_all();
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
}

/// A counter of the pages demand-zero faults mapped (for tests and reports).
pub static DEMAND_PAGES: AtomicU64 = AtomicU64::new(0);
