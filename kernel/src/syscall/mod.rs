//! The Linux system-call layer: one function per call, grouped by family ([`io`], [`fs`], [`mem`],
//! [`proc`]),
//! Linux's numbers and errno values from `linux-raw-sys` (through `abi::linux`).
//!
//! [`init`] installs the table as `arch::syscall`'s hooks. The entry stub calls a number's handler
//! straight from [`TABLE`] (one bounds test, one indirect call), with interrupts on and the user
//! registers in a [`UserFrame`] on the thread's kernel stack; the handler returns the result for
//! `rax`: a value, or `-errno`. An unknown number answers `ENOSYS` and is logged once per process
//! and number, with Linux's name for it (beyond Linux's table, only the first numbers of a process:
//! `abi::linux::MissingCalls`). As on Linux, the number is the low 32 bits of `rax`: upper bits
//! set send the call through the slow hook, which drops them. The calls that copy or rewrite the
//! whole frame ([`WHOLE_FRAME_CALLS`]) go through `arch::syscall::WHOLE_FRAME`, which writes the registers the
//! stub left live into the frame first; numbers beyond the table, and every call while the
//! system-call trace is on, go to [`dispatch_slow`].
//!
//! The way out tests one word, the calling thread's work word (`task::uctx`): zero, and the result
//! goes straight back by SYSRET. Everything rare hides behind that word (signals, a restart code,
//! a rewritten frame, the end of a killed process, a traced call) and runs in [`exit_slow`]. The
//! cheap calls (`getpid`, `getppid`) read the caller's context through `arch::syscall::InSyscall`:
//! no lock, no reference count.
//!
//! User memory is reached only through `arch::usercopy` (a bad pointer is `EFAULT`, never a kernel
//! fault). No unsafe code.

mod fs;
mod futex;
mod io;
mod mem;
mod proc;
mod signal;
mod stats;
mod time;

use ::trace::{Category, Record};
use abi::linux::{errno, errno_ret, general as nr};
use arch::syscall::{InSyscall, SyscallFn, TABLE_LEN, UserEntryHooks, UserFrame, WHOLE_FRAME};

use crate::{cpu::trace, task::uctx};

/// A call's outcome: a value for `rax` or an errno.
pub type SysResult = Result<u64, u32>;

static HOOKS: UserEntryHooks =
    UserEntryHooks { table: &TABLE, slow: dispatch_slow, whole_frame, exit_work: exit_slow, invalid_return };

/// Route `syscall` from every CPU here (once, before the first user program).
pub fn init() {
    arch::syscall::set_hooks(&HOOKS).expect("system-call hooks set twice");
    crate::fs::dev::set_console(&io::CONSOLE);
}

fn invalid_return(frame: &mut UserFrame) -> ! {
    crate::process::signal::impossible_return(frame)
}

/// The slow hook (interrupts on): the numbers beyond the table, and every call while the
/// system-call trace is on (`cpu::trace` routes them here), with its trace points.
extern "C" fn dispatch_slow(frame: &mut UserFrame, proof: &InSyscall) -> u64 {
    if trace::enabled(Category::Syscall) {
        return dispatch_traced(frame, proof);
    }
    call(frame, proof)
}

/// The calls the table sends through `arch::syscall::WHOLE_FRAME` (they copy or rewrite the whole
/// register frame), now that their frame is complete.
extern "C" fn whole_frame(frame: &mut UserFrame, proof: &InSyscall) -> u64 {
    call(frame, proof)
}

/// [`dispatch_slow`] with its trace points, and with the kill test on the way in.
#[cold]
#[inline(never)]
fn dispatch_traced(frame: &mut UserFrame, proof: &InSyscall) -> u64 {
    uctx::current(proof).set(uctx::work::TRACE);
    crate::process::exit_if_killed();
    let number = frame.orig_rax;
    trace::event(Category::Syscall, |tsc, cpu| Record::syscall_enter(tsc, cpu, number, crate::process::current_tid()));
    call(frame, proof)
}

/// The way out with work to do (`frame.rax` holds the result): the end of a killed thread, the
/// trace point, signals (and restarts). Enables interrupts; the arch exit disables them again.
fn exit_slow(frame: &mut UserFrame, proof: &InSyscall) {
    arch::interrupts::enable();
    // Cleared before the status is read: a kill after this sets the bit again.
    uctx::current(proof).clear(uctx::work::KILL | uctx::work::TRACE | uctx::work::RESTART);
    crate::process::exit_if_killed();
    let (number, ret) = (frame.orig_rax, frame.rax);
    trace::event(Category::Syscall, |tsc, cpu| Record::syscall_exit(tsc, cpu, number, crate::process::current_tid(), ret));
    // Signals on the way out; rt_sigreturn's rax is a restored register, never a restart code.
    let sigreturn = number as u32 == nr::__NR_rt_sigreturn;
    crate::process::signal::on_syscall_return(frame, !sigreturn);
    if sigreturn {
        uctx::current(proof).clear(uctx::work::FRAME);
    }
}

/// The handler of each number, indexed by the number ([`TABLE_LEN`] covers every Linux x86-64
/// number): the caller's frame (arguments per [`UserFrame::syscall_args`]) and the proof that
/// reaches its context in, the result as `rax` holds it (a value, or `-errno`) out.
static HANDLERS: [SyscallFn; TABLE_LEN] = table();

/// [`HANDLERS`] as the entry stub calls it: the calls of [`WHOLE_FRAME_CALLS`] go through
/// `arch::syscall::WHOLE_FRAME`, which completes the register frame first.
static TABLE: [SyscallFn; TABLE_LEN] = {
    let mut t = table();
    let mut i = 0;
    while i < WHOLE_FRAME_CALLS.len() {
        t[WHOLE_FRAME_CALLS[i] as usize] = WHOLE_FRAME;
        i += 1;
    }
    t
};

/// The calls that copy the caller's whole register frame (to a child) or rewrite it.
const WHOLE_FRAME_CALLS: [u32; 4] = [nr::__NR_clone, nr::__NR_fork, nr::__NR_vfork, nr::__NR_rt_sigreturn];

/// `calls!(t, frame, proof, [a0, .., a5]; NR | NR => expr, ...)`: an entry per number, a handler
/// fn per arm, in which `expr` sees the frame, the proof and the six arguments under those names.
macro_rules! calls {
    ($t:ident, $frame:ident, $proof:ident, [$a0:ident, $a1:ident, $a2:ident, $a3:ident, $a4:ident, $a5:ident];
     $( $($nr:path)|+ => $body:expr ),* $(,)?) => {
        $(
            {
                #[allow(unused_variables)]
                extern "C" fn handler($frame: &mut UserFrame, $proof: &InSyscall) -> u64 {
                    let [$a0, $a1, $a2, $a3, $a4, $a5] = $frame.syscall_args();
                    let r: SysResult = $body;
                    match r {
                        Ok(v) => v,
                        Err(e) => error_ret($proof, e),
                    }
                }
                $( $t[$nr as usize] = handler; )+
            }
        )*
    };
}

const fn table() -> [SyscallFn; TABLE_LEN] {
    extern "C" fn not_implemented(frame: &mut UserFrame, _: &InSyscall) -> u64 {
        unknown(number_of(frame)).unwrap_or_else(errno_ret)
    }
    let mut t: [SyscallFn; TABLE_LEN] = [not_implemented; TABLE_LEN];
    calls! { t, frame, proof, [a0, a1, a2, a3, a4, a5];
        nr::__NR_read => io::read(proof, a0, a1, a2),
        nr::__NR_write => io::write(proof, a0, a1, a2),
        nr::__NR_readv => io::readv(a0, a1, a2),
        nr::__NR_writev => io::writev(a0, a1, a2),
        nr::__NR_ioctl => io::ioctl(a0, a1, a2),
        nr::__NR_pread64 => io::pread64(a0, a1, a2, a3),
        nr::__NR_pwrite64 => io::pwrite64(a0, a1, a2, a3),
        nr::__NR_poll => io::poll(a0, a1, a2),
        nr::__NR_ppoll => io::ppoll(a0, a1, a2, a3, a4),
        nr::__NR_select => io::select(a0, a1, a2, a3, a4),
        nr::__NR_pselect6 => io::pselect6(a0, a1, a2, a3, a4, a5),
        nr::__NR_open => fs::open(a0, a1, a2),
        nr::__NR_openat => fs::openat(a0, a1, a2, a3),
        nr::__NR_creat => fs::creat(a0, a1),
        nr::__NR_close => fs::close(a0),
        nr::__NR_lseek => fs::lseek(a0, a1, a2),
        nr::__NR_stat => fs::stat(a0, a1),
        nr::__NR_lstat => fs::lstat(a0, a1),
        nr::__NR_fstat => fs::fstat(a0, a1),
        nr::__NR_newfstatat => fs::newfstatat(a0, a1, a2, a3),
        nr::__NR_access => fs::access(a0, a1),
        nr::__NR_faccessat => fs::faccessat(a0, a1, a2, 0),
        nr::__NR_faccessat2 => fs::faccessat(a0, a1, a2, a3),
        nr::__NR_getdents64 => fs::getdents64(a0, a1, a2),
        nr::__NR_dup => fs::dup(a0),
        nr::__NR_dup2 => fs::dup2(a0, a1),
        nr::__NR_dup3 => fs::dup3(a0, a1, a2),
        nr::__NR_fcntl => fs::fcntl(a0, a1, a2),
        nr::__NR_pipe => fs::pipe(a0),
        nr::__NR_pipe2 => fs::pipe2(a0, a1),
        nr::__NR_truncate => fs::truncate(a0, a1),
        nr::__NR_ftruncate => fs::ftruncate(a0, a1),
        nr::__NR_getcwd => fs::getcwd(a0, a1),
        nr::__NR_chdir => fs::chdir(a0),
        nr::__NR_fchdir => fs::fchdir(a0),
        nr::__NR_mkdir => fs::mkdir(a0, a1),
        nr::__NR_mkdirat => fs::mkdirat(a0, a1, a2),
        nr::__NR_rmdir => fs::rmdir(a0),
        nr::__NR_unlink => fs::unlink(a0),
        nr::__NR_unlinkat => fs::unlinkat(a0, a1, a2),
        nr::__NR_rename => fs::rename(a0, a1),
        nr::__NR_renameat => fs::renameat2(a0, a1, a2, a3, 0),
        nr::__NR_renameat2 => fs::renameat2(a0, a1, a2, a3, a4),
        nr::__NR_link => fs::link(a0, a1),
        nr::__NR_linkat => fs::linkat(a0, a1, a2, a3, a4),
        nr::__NR_symlink => fs::symlink(a0, a1),
        nr::__NR_symlinkat => fs::symlinkat(a0, a1, a2),
        nr::__NR_readlink => fs::readlink(a0, a1, a2),
        nr::__NR_readlinkat => fs::readlinkat(a0, a1, a2, a3),
        nr::__NR_chmod => fs::chmod(a0, a1),
        nr::__NR_fchmodat => fs::fchmodat(a0, a1, a2),
        nr::__NR_umask => fs::umask(a0),
        nr::__NR_fchmod => fs::fchmod(a0, a1),
        nr::__NR_utimensat => fs::utimensat(a0, a1, a2, a3),
        nr::__NR_chown => fs::chown(a0, a1, a2),
        nr::__NR_lchown => fs::lchown(a0, a1, a2),
        nr::__NR_fchownat => fs::fchownat(a0, a1, a2, a3, a4),
        nr::__NR_fchown | nr::__NR_fsync | nr::__NR_fdatasync | nr::__NR_flock => fs::fd_only(a0),
        nr::__NR_sync => Ok(0),
        nr::__NR_statfs => fs::statfs(a0, a1),
        nr::__NR_fstatfs => fs::fstatfs(a0, a1),
        nr::__NR_prlimit64 => fs::prlimit64(a0, a1, a2, a3),
        nr::__NR_getrlimit => fs::getrlimit(a0, a1),
        nr::__NR_setrlimit => fs::setrlimit(a0, a1),
        nr::__NR_sysinfo => fs::sysinfo(a0),
        nr::__NR_brk => mem::brk(a0),
        nr::__NR_mmap => mem::mmap(a0, a1, a2, a3, a4, a5),
        nr::__NR_munmap => mem::munmap(a0, a1),
        nr::__NR_mprotect => mem::mprotect(a0, a1, a2),
        nr::__NR_madvise => mem::madvise(a0, a1, a2),
        nr::__NR_mremap => mem::mremap(a0, a1, a2, a3, a4),
        nr::__NR_exit => proc::exit(a0),
        nr::__NR_exit_group => proc::exit_group(a0),
        nr::__NR_getpid => proc::getpid(proof),
        nr::__NR_gettid => proc::gettid(proof),
        nr::__NR_set_tid_address => proc::set_tid_address(a0),
        nr::__NR_arch_prctl => proc::arch_prctl(a0, a1),
        nr::__NR_uname => proc::uname(a0),
        nr::__NR_prctl => proc::prctl(a0, a1),
        nr::__NR_sendfile => io::sendfile(a0, a1, a2, a3),
        nr::__NR_sched_yield => proc::sched_yield(),
        nr::__NR_getuid | nr::__NR_geteuid | nr::__NR_getgid | nr::__NR_getegid => Ok(0),
        nr::__NR_getresuid | nr::__NR_getresgid => proc::getres_ids(a0, a1, a2),
        nr::__NR_getgroups => proc::getgroups(a0),
        nr::__NR_rt_sigprocmask => signal::rt_sigprocmask(a0, a1, a2, a3),
        nr::__NR_rt_sigaction => signal::rt_sigaction(a0, a1, a2, a3),
        nr::__NR_rt_sigpending => signal::rt_sigpending(a0, a1),
        nr::__NR_rt_sigsuspend => signal::rt_sigsuspend(a0, a1),
        nr::__NR_rt_sigtimedwait => signal::rt_sigtimedwait(a0, a1, a2, a3),
        nr::__NR_pause => signal::pause(),
        nr::__NR_sigaltstack => signal::sigaltstack(a0, a1, frame.rsp),
        nr::__NR_rt_sigreturn => {
        // The frame is rewritten: the exit must check it.
        uctx::current(proof).set(uctx::work::FRAME);
        signal::rt_sigreturn(frame)
    },
        nr::__NR_alarm => signal::alarm(a0),
        nr::__NR_setitimer => signal::setitimer(a0, a1, a2),
        nr::__NR_getitimer => signal::getitimer(a0, a1),
        nr::__NR_clone => proc::clone(frame, a0, a1, a2, a3, a4),
        nr::__NR_fork => proc::fork(frame, false),
        nr::__NR_vfork => proc::fork(frame, true),
        nr::__NR_wait4 => proc::wait4(a0, a1, a2, a3),
        nr::__NR_waitid => proc::waitid(a0, a1, a2, a3, a4),
        nr::__NR_getppid => proc::getppid(proof),
        nr::__NR_getpgid => proc::getpgid(a0),
        nr::__NR_getpgrp => proc::getpgid(0),
        nr::__NR_getsid => proc::getsid(a0),
        nr::__NR_setpgid => proc::setpgid(a0, a1),
        nr::__NR_setsid => proc::setsid(),
        nr::__NR_kill => proc::kill(a0, a1),
        nr::__NR_execve => crate::process::execve(a0, a1, a2).map(|never| match never {}),
        nr::__NR_futex => futex::futex(proof, a0, a1, a2, a3, a4, a5),
        nr::__NR_clock_gettime => time::clock_gettime(a0, a1),
        nr::__NR_clock_getres => time::clock_getres(a0, a1),
        nr::__NR_time => time::time(a0),
        nr::__NR_gettimeofday => time::gettimeofday(a0, a1),
        nr::__NR_nanosleep => time::nanosleep(a0, a1),
        nr::__NR_restart_syscall => time::restart_syscall(),
        nr::__NR_clock_nanosleep => time::clock_nanosleep(a0, a1, a2, a3),
        nr::__NR_getcpu => proc::getcpu(a0, a1),
        nr::__NR_sched_getaffinity => proc::sched_getaffinity(a0, a1, a2),
        nr::__NR_sched_setaffinity => proc::sched_setaffinity(a0, a1, a2),
        nr::__NR_getrandom => proc::getrandom(a0, a1, a2),
        nr::__NR_tkill => signal::tgkill(None, a0, a1),
        nr::__NR_tgkill => signal::tgkill(Some(a0), a1, a2),
        nr::__NR_set_robust_list | nr::__NR_rseq => Err(errno::ENOSYS),
    }
    t
}

/// The call's number: the low 32 bits of `rax`, as Linux reads it (`do_syscall_64` takes an
/// `int`), so a number with upper bits set is the call its low bits name.
fn number_of(frame: &UserFrame) -> u64 {
    u64::from(frame.orig_rax as u32)
}

/// Run the call `frame` holds, its frame complete. `proof` reaches the caller's context.
fn call(frame: &mut UserFrame, proof: &InSyscall) -> u64 {
    match HANDLERS.get(number_of(frame) as usize) {
        Some(handler) => handler(frame, proof),
        None => call_beyond_table(frame),
    }
}

/// The kernel's own numbers, above Linux's.
#[cold]
#[inline(never)]
fn call_beyond_table(frame: &mut UserFrame) -> u64 {
    let r = match number_of(frame) {
        n if n == u64::from(abi::SYS_KERNEL_TLB_COUNTERS) => stats::tlb_counters(frame.rdi),
        n => unknown(n),
    };
    r.unwrap_or_else(errno_ret)
}

/// `rax` for error `e`; a restart code also sets the caller's restart bit, so the exit sees it.
#[cold]
#[inline(never)]
fn error_ret(proof: &InSyscall, e: u32) -> u64 {
    use abi::signal::restart::{ERESTART_RESTARTBLOCK, ERESTARTSYS};
    if (ERESTARTSYS..=ERESTART_RESTARTBLOCK).contains(&e) {
        uctx::current(proof).set(uctx::work::RESTART);
    }
    errno_ret(e)
}

fn unknown(number: u64) -> SysResult {
    use abi::linux::Note;
    if let Some(p) = crate::process::current() {
        let note = p.unknown_logged.lock().note(number as u32);
        if note != Note::Quiet {
            log::warn!(
                "syscall: pid {} '{}' called {} ({number}), which is not implemented: ENOSYS{}",
                p.pid(),
                p.name(),
                abi::linux::syscall_name(number).unwrap_or("an unknown number"),
                if note == Note::FirstOfTheLast { "; further new numbers beyond Linux's table are not logged" } else { "" }
            );
        }
    }
    Err(errno::ENOSYS)
}
