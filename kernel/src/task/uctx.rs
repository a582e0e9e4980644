//! The context of a user thread that its system calls read without a lock: the thread's *work*
//! word and the ids of its process.
//!
//! Key items: [`UserCtx`] (one per user thread, registered by tid while the thread lives),
//! [`ProcIds`] (one per process, shared by its threads' contexts), [`work`] (the bits of the work
//! word), [`current`] (the caller's context inside a system call).
//!
//! The system-call exit tests the work word once: zero, and the call returns straight to user mode;
//! anything rare (a signal to act on, a frame a handler rewrote) sets a bit, and the exit takes the
//! slow path, which does the work and clears what it handled. Whoever makes work sets the bit: the
//! signal layer through `ipc::intr::set_pending` ([`set_work`]), `rt_sigreturn` on itself, the
//! process layer on every thread of a process it ends (the exit clears that bit before it reads the
//! process's status, so a later kill is never lost).
//!
//! Where the caller's context is found: `vm::user::enter` gives its address to
//! `arch::syscall::enter_user`, which keeps it in the thread's slot at the top of the thread's kernel
//! stack; [`current`] reads it back with two loads (`arch::syscall::thread_slot`). The registry holds
//! the context alive until the thread ends ([`forget`], from the thread's own exit, after which it
//! makes no more system calls).
//!
//! Neighbours: `arch::syscall` (the slot and the exit path), `process` (registers threads, keeps the
//! ids), `ipc::intr` (the signal bit), `syscall` (reads them).

use alloc::{collections::BTreeMap, sync::Arc};
use core::{
    any::{Any, TypeId},
    sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
};

use arch::syscall::InSyscall;
use talc::lock_api::Mutex as SpinMutex;

use crate::cpu::irqlock::RawIrqSpin;

/// The bits of [`UserCtx`]'s work word.
pub mod work {
    /// A signal this thread would act on is pending (kept equal to `ipc::intr`'s flag).
    pub const SIGNAL: u32 = 1 << 0;
    /// A system call rewrote the caller's register frame (`rt_sigreturn`): the exit must check it.
    pub const FRAME: u32 = 1 << 1;
    /// The call ran with the system-call trace on: the exit records it.
    pub const TRACE: u32 = 1 << 3;
    /// The call returns a restart code (`-ERESTARTSYS` and kin): the exit must restart it or turn
    /// it into `EINTR`.
    pub const RESTART: u32 = 1 << 4;
    /// The thread's process is being ended (or another thread of it execs): look at its status.
    pub const KILL: u32 = 1 << 2;
}

/// The ids of a process that its threads' cheap system calls return.
#[derive(Debug, Default)]
pub struct ProcIds {
    pid: AtomicU32,
    /// Updated by the process tree when the parent ends (the orphan goes to init).
    ppid: AtomicU32,
    /// The scheduler id of the main thread, the one whose Linux thread id is the pid (the first
    /// thread, or the one that last called `execve`); 0 until it runs.
    pub main_tid: AtomicU64,
    /// What names the process's memory in a private futex key (`process::Process::futex_space`),
    /// kept here so a futex call finds it without the process table; changes at `execve`.
    futex_space: AtomicU64,
}

impl ProcIds {
    pub fn new(pid: u32, ppid: u32) -> Self {
        Self { pid: AtomicU32::new(pid), ppid: AtomicU32::new(ppid), main_tid: AtomicU64::new(0), futex_space: AtomicU64::new(0) }
    }

    /// The private futex key's space of the process (see the field).
    #[inline]
    pub fn futex_space(&self) -> u64 {
        self.futex_space.load(Ordering::Relaxed)
    }

    /// Set by the process layer whenever the process's memory is put in place.
    pub fn set_futex_space(&self, space: u64) {
        self.futex_space.store(space, Ordering::Relaxed);
    }

    #[inline]
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }

    #[inline]
    pub fn ppid(&self) -> u32 {
        self.ppid.load(Ordering::Relaxed)
    }

    pub fn set_ppid(&self, ppid: u32) {
        self.ppid.store(ppid, Ordering::Relaxed);
    }
}

/// Where a user thread sleeps in a futex wait: its scheduler parker. A futex waker reaches the
/// thread through the entry the thread queued in the bucket; a signal for the thread wakes the
/// parker ([`kick_park`]), and the sleeper then sees its pending flag ([`Interrupt`]).
#[derive(Default)]
pub struct Park {
    /// Made by the thread's first wait (the parker names the thread that makes it); a waker that
    /// finds none has no sleeper to wake, since the thread made it before it first slept.
    parker: spin::Once<sched::Parker>,
}

impl Park {
    /// The calling thread's parker; call only from the thread that owns this park.
    pub fn parker(&self) -> &sched::Parker {
        self.parker.call_once(|| sched::Parker::for_current(super::sched()))
    }

    /// Wake the owner if it sleeps (after changing what its wait checks).
    pub fn wake(&self) {
        if let Some(parker) = self.parker.get() {
            parker.wake(super::sched());
        }
    }
}

impl core::fmt::Debug for Park {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Park").field("parker", &self.parker.is_completed()).finish()
    }
}

/// One user thread's context. Its address is the work word's (first, `repr(C)`), which the
/// system-call exit in `arch` reads through the thread's slot.
#[derive(Debug)]
#[repr(C)]
pub struct UserCtx {
    work: AtomicU32,
    /// The process's pid (which never changes), here to save a load.
    pid: u32,
    /// The thread's scheduler id.
    tid: u64,
    ids: Arc<ProcIds>,
    pub park: Park,
    /// The interruptible-sleep state `ipc::intr` keeps for the thread.
    pub intr: Interrupt,
    /// The thread's process (the process layer's type, which this layer cannot name): a system
    /// call finds it here without the process table's lock.
    owner: Arc<dyn Any + Send + Sync>,
    /// The type of `owner`'s value, read once at registration: [`UserCtx::owner_as`] compares it
    /// instead of asking `owner` through its vtable at every system call.
    owner_type: TypeId,
    /// The address of `owner`'s value, read once at registration: [`UserCtx::owner_as`] starts
    /// from it instead of finding the value past the `Arc`'s counts by the alignment the vtable
    /// gives, at every system call.
    owner_addr: usize,
    /// The scheduler (which exists before any thread has a context), read once at registration:
    /// the hand-off paths of the system calls take it here with one load, where
    /// [`super::sched`] tests that it was made at every call.
    sched: SchedRef,
}

/// The scheduler as a context holds it: a reference, shown by name in the context's `Debug`.
#[derive(Clone, Copy)]
struct SchedRef(&'static super::platform::KSched);

impl core::fmt::Debug for SchedRef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("KSched")
    }
}

/// The state of `ipc::intr` for one thread (see there): whether a signal it would act on is
/// pending, and the wait queue it sleeps on interruptibly, if any.
pub struct Interrupt {
    pub pending: AtomicBool,
    pub sleeping_on: SpinMutex<RawIrqSpin, Option<Arc<sched::WaitQueue>>>,
    /// The address of the queue `sleeping_on` holds (0 for none), changed with it under its lock:
    /// the thread, the only one that records a queue there, compares it without the lock.
    pub recorded: AtomicUsize,
}

impl core::fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Interrupt").field("pending", &self.pending).finish_non_exhaustive()
    }
}

impl UserCtx {
    /// Set `bits` of the work word.
    pub fn set(&self, bits: u32) {
        self.work.fetch_or(bits, Ordering::SeqCst);
    }

    /// Clear `bits` of the work word.
    pub fn clear(&self, bits: u32) {
        self.work.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The pid of the thread's process.
    #[inline(always)]
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The thread's scheduler id.
    #[inline(always)]
    pub fn tid(&self) -> u64 {
        self.tid
    }

    #[inline(always)]
    pub fn ids(&self) -> &ProcIds {
        &self.ids
    }

    /// The scheduler, without [`super::sched`]'s test that it was made (it was before this
    /// context).
    #[inline(always)]
    pub fn sched(&self) -> &'static super::platform::KSched {
        self.sched.0
    }

    /// The thread's process as a `T`, if that is its type (the process layer registered it):
    /// `downcast_ref` without the call through the vtable, for the system calls that reach their
    /// process at every call.
    #[inline(always)]
    pub fn owner_as<T: Any>(&self) -> Option<&T> {
        if self.owner_type != TypeId::of::<T>() {
            return None;
        }
        debug_assert!(self.owner.is::<T>());
        debug_assert_eq!(self.owner_addr, Arc::as_ptr(&self.owner).cast::<()>() as usize);
        // SAFETY: `owner_type` is the type of `owner`'s value and `owner_addr` its address (read
        // from it at registration; no field changes after), which is therefore a `T`'s; it lives
        // as long as `self` holds `owner`.
        Some(unsafe { &*(self.owner_addr as *const T) })
    }
}

static CONTEXTS: SpinMutex<RawIrqSpin, BTreeMap<u64, Arc<UserCtx>>> = SpinMutex::new(BTreeMap::new());

/// Give user thread `tid` a context with its process's `ids` and the process itself, `owner` (at
/// the thread's start, before anyone can make work for it).
pub fn register(tid: u64, ids: Arc<ProcIds>, owner: Arc<dyn Any + Send + Sync>) {
    let ctx = Arc::new(UserCtx {
        work: AtomicU32::new(0),
        pid: ids.pid(),
        tid,
        ids,
        park: Park::default(),
        intr: Interrupt { pending: AtomicBool::new(false), sleeping_on: SpinMutex::new(None), recorded: AtomicUsize::new(0) },
        owner_type: Any::type_id(&*owner),
        owner_addr: Arc::as_ptr(&owner).cast::<()>() as usize,
        owner,
        sched: SchedRef(super::sched()),
    });
    let old = CONTEXTS.lock().insert(tid, ctx);
    drop(old);
}

/// Thread `tid` ends: drop its context. Called by the thread itself on its way out, after its last
/// system call.
pub fn forget(tid: u64) {
    let ctx = CONTEXTS.lock().remove(&tid);
    drop(ctx);
}

/// Set (`on`) or clear `bits` of thread `tid`'s work word; nothing if it has no context. Safe
/// with interrupts off and from interrupt handlers (an interrupts-off lock, no allocation).
pub fn set_work(tid: u64, bits: u32, on: bool) {
    if let Some(ctx) = CONTEXTS.lock().get(&tid) {
        if on {
            ctx.set(bits);
        } else {
            ctx.clear(bits);
        }
    }
}

/// Thread `tid`'s context, if it has one.
pub fn get(tid: u64) -> Option<Arc<UserCtx>> {
    CONTEXTS.lock().get(&tid).cloned()
}

/// Wake thread `tid` if it sleeps in a futex wait (a signal came for it; see [`Park`]). Safe with
/// interrupts off and from interrupt handlers, like [`set_work`].
// lock order: CONTEXTS -> a run queue
pub fn kick_park(tid: u64) {
    if let Some(ctx) = CONTEXTS.lock().get(&tid) {
        ctx.park.wake();
    }
}

/// The calling thread's context as the address `arch::syscall::enter_user` keeps; `None` for a
/// thread that has none.
pub fn current_address() -> Option<u64> {
    let tid = super::sched().current()?.id.0;
    CONTEXTS.lock().get(&tid).map(|ctx| Arc::as_ptr(ctx) as u64)
}

/// The calling thread's context, inside one of its system calls.
#[inline(always)]
pub fn current(proof: &InSyscall) -> &UserCtx {
    let p = arch::syscall::thread_slot(proof) as *const UserCtx;
    // SAFETY: every user thread reaches ring 3 only through `vm::user::enter`, which passes
    // `current_address()` (it panics without one), so the slot holds a pointer to this thread's
    // context from CONTEXTS. The registry keeps it alive until `forget`, which the thread calls
    // only on its way out of its last system call (`process::exit_current`, which never returns);
    // the borrow ends with the call `proof` stands for.
    unsafe { &*p }
}
