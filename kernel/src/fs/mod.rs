//! Files: the RAM filesystem at `/` (filled from the initramfs at boot), open file descriptions,
//! the devices of `/dev`, pipes, `/proc`, and each process's descriptor table and working
//! directory.
//!
//! ```text
//!  Process ── files: Arc<Files> ──> FdTable<Arc<File>>      (shared under CLONE_FILES)
//!          └─ fs:    Arc<FsContext> (cwd inode, umask)      (shared under CLONE_FS)
//!  File { node, state: offset + status flags }
//!    node: Inode(ino) ──> FS (abi::ramfs::Fs, one sleeping lock)
//!        | Pipe(Arc<PipeObj>, end)   [`pipe`]
//!        | Dev(Device)               [`dev`]: console, tty, null, zero, urandom
//!        | Text(bytes) | Listing(entries)   [`proc`]: a /proc file or directory generated at open
//! ```
//!
//! Hooks the layers above set: [`dev::set_console`] (the terminal), [`proc::set_source`] (the
//! process list), [`pipe::set_sigpipe_hook`] (`SIGPIPE`). Sleeps go through
//! [`pipe::sleep_until`] (pipes) and [`poll_wait`] (poll and select), so an interruptible sleep
//! replaces them in two places; a terminal whose input arrives calls [`poll_notify`].
//!
//! Key items: [`init`], [`read_file`] (what the program loader reads), [`File`], [`Files`],
//! [`FsContext`], [`open`].
//!
//! Lock order: a file's state -> [`FS`] -> a pipe's buffer. A [`File`] is never dropped under
//! [`FS`] or a descriptor table's lock (its drop may take [`FS`]): the table hands closed files
//! back to the caller, which drops them after unlocking.
//!
//! Neighbours: `abi::{ramfs, openfile, fdtable, pipe, poll, procfs}` hold the rules; `task` gives
//! the sleeping locks and wait queues; the process layer above holds the tables and provides the
//! process list for `/proc` ([`proc::set_source`]); the system-call layer decodes the calls.

pub mod dev;
pub mod file;
pub mod pipe;
pub mod proc;
#[cfg(feature = "ktest")]
pub mod tests;

use alloc::{string::String, sync::Arc, vec::Vec};

use abi::{
    fdtable::FdTable,
    linux::{errno, general as g},
    ramfs::{Errno, Fs, Ino, ROOT},
};
pub use file::{File, Node};

use crate::task;

/// The filesystem, under one sleeping lock (calls may copy megabytes; nothing here runs with
/// interrupts off).
pub static FS: sched::Mutex<Option<Fs>> = sched::Mutex::new(None);

/// Run `f` on the filesystem under its lock. Before [`init`] the filesystem is an empty `/`.
pub fn with_fs<R>(f: impl FnOnce(&mut Fs) -> R) -> R {
    let mut guard = FS.lock(task::sched());
    let fs = guard.get_or_insert_with(Fs::new);
    fs.set_now(crate::time::wall_clock_ns());
    f(fs)
}

/// Fill the filesystem from the initramfs (symbolic links included) and create `/dev`, `/proc`
/// and `/tmp`. Called once at boot, before the first program starts.
pub fn init(archive: Option<&'static [u8]>) {
    let now = crate::time::wall_clock_ns();
    let mut fs = match archive.map(|a| Fs::from_cpio_at(a, now)) {
        Some(Ok(fs)) => fs,
        Some(Err(e)) => {
            log::warn!("fs: the initramfs is damaged ({e:?}); / starts empty");
            Fs::new()
        }
        None => Fs::new(),
    };
    fs.set_now(now);
    if let Err(e) = fs.populate_dev() {
        log::warn!("fs: /dev could not be created (errno {e})");
    }
    let inodes = fs.inode_count();
    *FS.lock(task::sched()) = Some(fs);
    log::info!("fs: RAM filesystem at / with {inodes} inodes; /dev, /proc, /tmp");
}

/// The contents of the regular file at `path` (absolute, symbolic links followed), for the
/// program loader.
pub fn read_file(path: &str) -> Result<Vec<u8>, Errno> {
    read_program(ROOT, path, false)
}

/// `execve`'s read of its program: `path` from directory `cwd`, symbolic links followed; a
/// directory is `EACCES` (as Linux says), so is anything but a regular file, and with
/// `need_exec` a file without any execute bit (root may execute a file with at least one).
pub fn read_program(cwd: Ino, path: &str, need_exec: bool) -> Result<Vec<u8>, Errno> {
    with_fs(|fs| {
        let ino = fs.lookup(cwd, path, true)?;
        let st = fs.stat(ino)?;
        if st.mode & abi::ramfs::S_IFMT != abi::ramfs::S_IFREG || (need_exec && st.mode & 0o111 == 0) {
            return Err(errno::EACCES);
        }
        fs.contents(ino).map(|c| c.to_vec())
    })
}

/// A process's working directory and file-creation mask (`CLONE_FS` shares one).
pub struct FsContext {
    state: spin::Mutex<FsState>,
}

#[derive(Clone, Copy)]
struct FsState {
    cwd: Ino,
    umask: u32,
}

impl FsContext {
    /// `/` and umask 022, what the first process gets.
    pub fn new() -> Arc<Self> {
        with_fs(|fs| {
            let _ = fs.open(ROOT);
        });
        Arc::new(Self { state: spin::Mutex::new(FsState { cwd: ROOT, umask: 0o022 }) })
    }

    /// A copy for a child that does not share (`fork` without `CLONE_FS`).
    pub fn fork_copy(&self) -> Arc<Self> {
        let st = *self.state.lock();
        with_fs(|fs| {
            let _ = fs.open(st.cwd);
        });
        Arc::new(Self { state: spin::Mutex::new(st) })
    }

    pub fn cwd(&self) -> Ino {
        self.state.lock().cwd
    }

    /// Change the working directory to `dir` (which must be one: `ENOTDIR`).
    pub fn chdir(&self, dir: Ino) -> Result<(), Errno> {
        let old = with_fs(|fs| {
            if !fs.is_dir(dir) {
                return Err(errno::ENOTDIR);
            }
            fs.open(dir)?;
            let mut st = self.state.lock();
            Ok(core::mem::replace(&mut st.cwd, dir))
        })?;
        with_fs(|fs| fs.release(old));
        Ok(())
    }

    pub fn umask(&self) -> u32 {
        self.state.lock().umask
    }

    /// Set the mask; returns the old one.
    pub fn set_umask(&self, mask: u32) -> u32 {
        core::mem::replace(&mut self.state.lock().umask, mask & 0o777)
    }
}

impl Drop for FsContext {
    fn drop(&mut self) {
        let cwd = self.state.lock().cwd;
        with_fs(|fs| fs.release(cwd));
    }
}

/// A descriptor table (`CLONE_FILES` shares one `Arc<Files>`).
pub struct Files {
    table: spin::Mutex<FdTable<Arc<File>>>,
}

impl Files {
    /// Descriptors 0, 1 and 2 open on the console, what a process started by the kernel gets.
    pub fn with_console() -> Arc<Self> {
        let mut t = FdTable::default();
        let console = Arc::new(File::device(dev::Device::Console, g::O_RDWR));
        for _ in 0..3 {
            let _ = t.alloc(console.clone(), false);
        }
        Arc::new(Self { table: spin::Mutex::new(t) })
    }

    /// A table with no descriptor (what an ended process keeps).
    pub fn empty() -> Arc<Self> {
        Arc::new(Self { table: spin::Mutex::new(FdTable::default()) })
    }

    /// `fork` without `CLONE_FILES`: the same open files under the same numbers, in a new table.
    pub fn fork_copy(&self) -> Arc<Self> {
        Arc::new(Self { table: spin::Mutex::new(self.table.lock().clone()) })
    }

    /// `execve`: close every descriptor marked close-on-exec.
    pub fn close_on_exec(&self) {
        let closed = self.table.lock().exec();
        drop(closed);
    }

    /// The file behind `fd`. `#[inline]`: offered to the read and write calls' handlers, which
    /// look a descriptor up at every call, so the lookup costs no frame of its own.
    #[inline]
    pub fn get(&self, fd: i32) -> Result<Arc<File>, Errno> {
        self.table.lock().get(fd).cloned()
    }

    /// Install `file` at the lowest free number (at least `min`).
    pub fn install(&self, file: Arc<File>, cloexec: bool, min: usize) -> Result<i32, Errno> {
        self.table.lock().alloc_from(file, cloexec, min)
    }

    pub fn close(&self, fd: i32) -> Result<(), Errno> {
        let f = self.table.lock().close(fd)?;
        drop(f);
        Ok(())
    }

    /// Run `f` on the table under its lock; whatever files it returns are dropped after the unlock.
    pub fn with<R>(&self, f: impl FnOnce(&mut FdTable<Arc<File>>) -> R) -> R {
        f(&mut self.table.lock())
    }

    pub fn limit(&self) -> usize {
        self.table.lock().limit()
    }

    pub fn set_limit(&self, limit: usize) {
        self.table.lock().set_limit(limit)
    }
}

/// Open `path` relative to directory `dir`, `mode` with the umask applied. Paths under `/proc`
/// are generated here; device nodes become their devices.
pub fn open(dir: Ino, path: &str, flags: u32, mode: u32) -> Result<File, Errno> {
    if let Some(text) = proc::open(dir, path, flags)? {
        return Ok(text);
    }
    let of = with_fs(|fs| {
        let of = abi::openfile::open_at(fs, dir, path, flags, mode)?;
        let rdev = fs.char_dev(of.ino);
        Ok::<_, Errno>((of, rdev))
    })?;
    match of.1 {
        Some(rdev) => {
            // A device: the inode reference is not needed beyond this point.
            with_fs(|fs| fs.release(of.0.ino));
            Ok(File::device(dev::Device::from_rdev(rdev).ok_or(errno::ENXIO)?, of.0.flags))
        }
        None => Ok(File::inode(of.0)),
    }
}

/// The absolute path of directory `ino` (for getcwd).
pub fn path_of(ino: Ino) -> Result<String, Errno> {
    with_fs(|fs| fs.path_of(ino))
}

/// Sleepers of `poll` and `select` wait here for any readiness change; a change bumps
/// [`POLL_GEN`] and wakes them all, and each re-checks its own descriptors.
/// An [`IrqSafeOnce`](crate::cpu::irqlock::IrqSafeOnce): the terminal's input interrupt wakes it.
static POLL_QUEUE: crate::cpu::irqlock::IrqSafeOnce<Arc<sched::WaitQueue>> = crate::cpu::irqlock::IrqSafeOnce::new();

fn poll_queue() -> &'static Arc<sched::WaitQueue> {
    POLL_QUEUE.call_once(|| Arc::new(sched::WaitQueue::new()))
}
static POLL_GEN: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// Threads in (or entering) the untimed sleep of [`poll_wait`] on [`POLL_QUEUE`]: while there is
/// none, [`poll_notify`] (every pipe read and write calls it) leaves the queue's lock alone.
static POLL_SLEEPERS: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
/// Threads inside `poll` or `select` ([`Polling`]), counted from before their first sample of
/// [`POLL_GEN`] to their return: while there is none, [`poll_notify`] leaves the generation, a
/// word every CPU's pipe calls would otherwise write, alone.
static POLLERS: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// A `poll` or `select` call's count in [`POLLERS`], held from before its first
/// [`poll_generation`] to its return ([`polling`]).
pub struct Polling(());

impl Drop for Polling {
    fn drop(&mut self) {
        POLLERS.fetch_sub(1, core::sync::atomic::Ordering::SeqCst);
    }
}

/// Count the caller as a poller until the handle drops: take it before the first
/// [`poll_generation`] of the call.
pub fn polling() -> Polling {
    POLLERS.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
    Polling(())
}

/// Something became readable, writable or hung up: wake `poll` sleepers to look again. The caller
/// made the change under the lock that the object's readiness test takes (a pipe's buffer, the
/// terminal's state), and released it.
///
/// The bump and the sleepers' count are both SeqCst, as a sleeper's count and its read of the
/// generation: either this sees the sleeper counted and wakes the queue, or the sleeper sees the
/// new generation and does not sleep.
///
/// No poller counted: no bump. The pollers' count, SeqCst on both sides, orders this read of it
/// and a poller's raise of it, and a poller tests readiness under the object's lock only after its
/// raise. Were the poller's test to take that lock before this change did, its raise would come
/// before this read (the raise before the test, the test's unlock before the change's lock, the
/// change before this read), which would then see it. So the poller's test takes the lock after
/// the change, and sees it.
///
/// `#[inline(always)]`: the test alone, in every pipe read and write; the rest is out of line.
#[inline(always)]
pub fn poll_notify() {
    if POLLERS.load(core::sync::atomic::Ordering::SeqCst) != 0 {
        poll_bump();
    }
}

/// [`poll_notify`] with a poller counted: bump the generation, wake the sleepers if any.
#[cold]
fn poll_bump() {
    use core::sync::atomic::Ordering::SeqCst;
    POLL_GEN.fetch_add(1, SeqCst);
    if POLL_SLEEPERS.load(SeqCst) != 0 {
        poll_queue().wake_all(task::sched());
    }
}

/// The readiness generation a poller samples before it checks its descriptors.
pub fn poll_generation() -> u64 {
    POLL_GEN.load(core::sync::atomic::Ordering::SeqCst)
}

/// Sleep until the generation moves past `seen` or `deadline_ns` (monotonic) passes. Without a
/// deadline the sleep is on the queue; with one it goes in slices of at most
/// [`POLL_SLICE_NS`] (the scheduler has no timed wait on a queue; the futex service makes the
/// same trade-off), and a terminal whose input arrives without a notification is seen within a
/// slice.
pub fn poll_wait(seen: u64, deadline_ns: Option<u64>) -> Result<(), Errno> {
    match deadline_ns {
        // Linux's poll: restarted when no handler ran, EINTR after one.
        None => {
            use core::sync::atomic::Ordering::SeqCst;
            POLL_SLEEPERS.fetch_add(1, SeqCst);
            let woken = crate::ipc::intr::wait(poll_queue(), || poll_generation() != seen);
            POLL_SLEEPERS.fetch_sub(1, SeqCst);
            woken.map_err(|_| abi::signal::restart::ERESTARTNOHAND)
        }
        Some(d) => {
            let now = crate::time::now_ns();
            if now < d && poll_generation() == seen {
                crate::ipc::intr::sleep_ns((d - now).min(POLL_SLICE_NS)).map_err(|_| errno::EINTR)?;
            }
            Ok(())
        }
    }
}

/// Longest sleep of a timed `poll` between checks.
pub const POLL_SLICE_NS: u64 = 1_000_000;
