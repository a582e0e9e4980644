//! What happens when a user program faults: demand-zero pages for the mappings that have none yet,
//! and, for anything else, one report line and the end of the process (never of the kernel).
//!
//! The report: `user fault: pid P tid T 'name': <exception> (vector V) at rip R, address A,
//! error E (<decoded>): killed by <signal>`. The wait status is the signal's number, as Linux gives
//! it for a process killed by that signal.

use core::fmt::Write;

use abi::vma::{PROT_EXEC, PROT_WRITE, VmaKind};
use arch::trap::TrapFrame;

use ::trace::{Category, Record};

use crate::{
    cpu::trace,
    irq::trap::{self, UserFaultHooks},
    vm::space::CowBreak,
};

/// Copy-on-write faults resolved (a copy or a take-back), for tests and reports.
pub static COW_BREAKS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

pub fn init() {
    trap::set_user_fault_hooks(UserFaultHooks { resolve_page, fault, before_user_return });
}

/// Page-fault error code bits (SDM vol. 3A, 4.7).
const PF_PRESENT: u64 = 1 << 0;
const PF_WRITE: u64 = 1 << 1;
const PF_FETCH: u64 = 1 << 4;

fn before_user_return(frame: &mut TrapFrame) {
    match frame.user_frame_mut() {
        Some(f) => super::signal::on_interrupt_return(f),
        None => {
            if super::is_being_killed() {
                arch::interrupts::enable();
                super::exit_if_killed();
            }
        }
    }
}

/// A fault no page resolves: to the handler of its signal if the process has one that the thread
/// does not block (with Linux's `si_code` and `si_addr`), else the end of the process.
fn fault(frame: &mut TrapFrame, addr: u64) {
    use abi::linux::general as g;
    // From ring 3: interrupts were on; the mapping lookup sleeps on the process's lock.
    arch::interrupts::enable();
    let (signo, _) = signal_of(frame.vector);
    let (code, si_addr) = match frame.vector {
        14 => {
            let mapped = super::current().and_then(|p| p.mem().lock(crate::task::sched()).vmas.find(addr).copied()).is_some_and(|v| v.kind != VmaKind::Guard);
            (if frame.error_code & PF_PRESENT != 0 || mapped { g::SEGV_ACCERR } else { g::SEGV_MAPERR }, addr)
        }
        0 => (g::FPE_INTDIV, frame.rip),
        6 => (g::ILL_ILLOPN, frame.rip),
        17 => (g::BUS_ADRALN, 0),
        // #GP, int3 and the rest: the kernel's own code, no address (Linux's force_sig).
        _ => (g::SI_KERNEL, 0),
    };
    if super::signal::force_fault(abi::signal::SigInfo::fault(signo as u32, code, si_addr)) {
        return;
    }
    kill(frame, addr)
}

fn resolve_page(addr: u64, error: u64) -> bool {
    trace::event(Category::Fault, |tsc, cpu| Record::page_fault(tsc, cpu, addr, super::current_tid(), error));
    let Some(p) = super::current() else { return false };
    let page = addr & !(abi::PAGE_SIZE - 1);
    let memory = p.mem();
    let mem = memory.lock(crate::task::sched());
    let Some(vma) = mem.vmas.find(addr).copied() else { return false };
    if error & PF_PRESENT != 0 {
        // A protection violation on a mapped page: a write to a copy-on-write page the mapping
        // allows is resolved by a copy; anything else, the mapping's rights say no.
        if error & PF_WRITE == 0 || vma.prot & PROT_WRITE == 0 || vma.kind == VmaKind::Guard {
            return false;
        }
        return match p.space().break_cow(page) {
            Ok(CowBreak::Copied | CowBreak::Reclaimed) => {
                COW_BREAKS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                true
            }
            Ok(CowBreak::Retry) => true,
            Ok(CowBreak::NotCow) | Err(_) => false,
        };
    }
    let allowed = match vma.kind {
        VmaKind::Guard => false,
        _ if error & PF_WRITE != 0 => vma.prot & PROT_WRITE != 0,
        _ if error & PF_FETCH != 0 => vma.prot & PROT_EXEC != 0,
        _ => vma.prot != 0,
    };
    if !allowed {
        return false;
    }
    match p.space().map_user_range(page, 1, super::exec::user_prot(vma.prot)) {
        // AlreadyMapped: a sibling thread faulted on the same page first.
        Ok(()) | Err(crate::vm::space::AsError::AlreadyMapped(_)) => {
            super::DEMAND_PAGES.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            true
        }
        Err(_) => false,
    }
}

/// The signal Linux sends for exception `vector`.
fn signal_of(vector: u64) -> (i32, &'static str) {
    match vector {
        0 => (8, "SIGFPE"),
        1 | 3 => (5, "SIGTRAP"),
        6 => (4, "SIGILL"),
        16 | 19 => (8, "SIGFPE"),
        17 => (7, "SIGBUS"),
        _ => (11, "SIGSEGV"),
    }
}

fn kill(frame: &TrapFrame, addr: u64) -> ! {
    // The thread was in ring 3, so interrupts were on; the report may sleep on the process's lock.
    arch::interrupts::enable();
    let (signo, signame) = signal_of(frame.vector);
    let (pid, name) = match super::current() {
        Some(p) => (p.pid(), p.name()),
        None => (0, alloc::string::String::from("?")),
    };
    let mut why = alloc::string::String::new();
    if frame.vector == 14 {
        let e = frame.error_code;
        let _ = write!(
            why,
            "{} {} in user mode{}",
            if e & PF_PRESENT != 0 { "protection violation on" } else { "no page at" },
            if e & PF_FETCH != 0 {
                "instruction fetch"
            } else if e & PF_WRITE != 0 {
                "write"
            } else {
                "read"
            },
            match super::current().and_then(|p| p.mem().lock(crate::task::sched()).vmas.find(addr).copied()) {
                Some(v) if v.kind == VmaKind::Guard => ", in the stack guard gap: stack overflow",
                Some(_) => "",
                None => ", outside every mapping",
            }
        );
    } else if frame.vector == 13 && frame.error_code == 0 {
        why.push_str("privileged instruction or non-canonical address");
    } else {
        why.push('-');
    }
    log::error!(
        "user fault: pid {pid} tid {} '{name}': {} (vector {}) at rip {:#x}, address {addr:#x}, error {:#x} ({why}): killed by {signame}",
        super::current_tid(),
        trap::exception_name(frame.vector),
        frame.vector,
        frame.rip,
        frame.error_code,
    );
    // The thread never returns here: nothing may stay owned on its stack.
    drop((name, why));
    super::exit_current(signo, true)
}
