//! The Linux system-call layer: one function per call, grouped by family ([`io`], [`mem`], [`proc`]),
//! Linux's numbers and errno values from `linux-raw-sys` (through `abi::linux`).
//!
//! [`init`] installs [`dispatch`] as `arch::syscall`'s hook. The dispatcher runs on the calling
//! thread's kernel stack with the user registers in a [`UserFrame`]; it enables interrupts (a call
//! may sleep and must be preemptible), decodes the number and arguments, and leaves the result in
//! `rax`: a value, or `-errno`. An unknown number answers `ENOSYS` and is logged once per process
//! and number, with Linux's name for it.
//!
//! User memory is reached only through `arch::usercopy` (a bad pointer is `EFAULT`, never a kernel
//! fault). No unsafe code.

mod futex;
mod io;
mod mem;
mod proc;
mod stats;
mod time;

use ::trace::{Category, Record};
use abi::linux::{errno, errno_ret, general as nr};
use arch::syscall::{UserEntryHooks, UserFrame};

use crate::cpu::trace;

/// A call's outcome: a value for `rax` or an errno.
pub type SysResult = Result<u64, u32>;

static HOOKS: UserEntryHooks = UserEntryHooks { syscall: dispatch, invalid_return };

/// Route `syscall` from every CPU here (once, before the first user program).
pub fn init() {
    arch::syscall::set_hooks(&HOOKS).expect("system-call hooks set twice");
}

fn invalid_return(frame: &mut UserFrame) -> ! {
    arch::interrupts::enable();
    log::error!(
        "user fault: pid {} tid {}: return to rip {:#x} rsp {:#x} is impossible: killed by SIGSEGV",
        crate::process::current().map_or(0, |p| p.pid()),
        crate::process::current_tid(),
        frame.rip,
        frame.rsp
    );
    crate::process::exit_current(11, true)
}

fn dispatch(frame: &mut UserFrame) {
    arch::interrupts::enable();
    crate::process::exit_if_killed();
    let [a0, a1, a2, a3, a4, a5] = frame.syscall_args();
    let number = frame.orig_rax;
    trace::event(Category::Syscall, |tsc, cpu| Record::syscall_enter(tsc, cpu, number, crate::process::current_tid()));
    let Ok(n) = u32::try_from(number) else {
        frame.rax = errno_ret(errno::ENOSYS);
        return;
    };
    let r: SysResult = match n {
        nr::__NR_read => io::read(a0, a1, a2),
        nr::__NR_write => io::write(a0, a1, a2),
        nr::__NR_readv => io::readv(a0, a1, a2),
        nr::__NR_writev => io::writev(a0, a1, a2),
        nr::__NR_ioctl => io::ioctl(a0, a1, a2),
        nr::__NR_brk => mem::brk(a0),
        nr::__NR_mmap => mem::mmap(a0, a1, a2, a3, a4, a5),
        nr::__NR_munmap => mem::munmap(a0, a1),
        nr::__NR_mprotect => mem::mprotect(a0, a1, a2),
        nr::__NR_madvise => mem::madvise(a0, a1, a2),
        nr::__NR_mremap => mem::mremap(a0, a1, a2, a3, a4),
        nr::__NR_exit => proc::exit(a0),
        nr::__NR_exit_group => proc::exit_group(a0),
        nr::__NR_getpid => proc::getpid(),
        nr::__NR_gettid => proc::gettid(),
        nr::__NR_set_tid_address => proc::set_tid_address(a0),
        nr::__NR_arch_prctl => proc::arch_prctl(a0, a1),
        nr::__NR_uname => proc::uname(a0),
        nr::__NR_sched_yield => proc::sched_yield(),
        nr::__NR_getuid | nr::__NR_geteuid | nr::__NR_getgid | nr::__NR_getegid => Ok(0),
        nr::__NR_rt_sigprocmask => proc::rt_sigprocmask(a0, a1, a2, a3),
        nr::__NR_rt_sigaction => proc::rt_sigaction(a0, a1, a2, a3),
        nr::__NR_clone => proc::clone(frame, a0, a1, a2, a3, a4),
        nr::__NR_futex => futex::futex(a0, a1, a2, a3, a4, a5),
        nr::__NR_clock_gettime => time::clock_gettime(a0, a1),
        nr::__NR_clock_getres => time::clock_getres(a0, a1),
        nr::__NR_nanosleep => time::nanosleep(a0, a1),
        nr::__NR_clock_nanosleep => time::clock_nanosleep(a0, a1, a2, a3),
        nr::__NR_getcpu => proc::getcpu(a0, a1),
        nr::__NR_sched_getaffinity => proc::sched_getaffinity(a0, a1, a2),
        nr::__NR_sched_setaffinity => proc::sched_setaffinity(a0, a1, a2),
        nr::__NR_getrandom => proc::getrandom(a0, a1, a2),
        nr::__NR_tkill => proc::tgkill(None, a0, a1),
        nr::__NR_tgkill => proc::tgkill(Some(a0), a1, a2),
        nr::__NR_set_robust_list | nr::__NR_rseq => Err(errno::ENOSYS),
        abi::SYS_KERNEL_TLB_COUNTERS => stats::tlb_counters(a0),
        _ => unknown(number),
    };
    crate::process::exit_if_killed();
    frame.rax = match r {
        Ok(v) => v,
        Err(e) => errno_ret(e),
    };
    let ret = frame.rax;
    trace::event(Category::Syscall, |tsc, cpu| Record::syscall_exit(tsc, cpu, number, crate::process::current_tid(), ret));
}

fn unknown(number: u64) -> SysResult {
    if let Some(p) = crate::process::current() {
        let mut seen = p.unknown_logged.lock();
        if !seen.contains(&number) {
            seen.push(number);
            drop(seen);
            log::warn!(
                "syscall: pid {} '{}' called {} ({number}), which is not implemented: ENOSYS",
                p.pid(),
                p.name,
                abi::linux::syscall_name(number).unwrap_or("an unknown number")
            );
        }
    }
    Err(errno::ENOSYS)
}
