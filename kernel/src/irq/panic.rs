//! Panics and fatal faults: one report naming the CPU, the thread, the place and a backtrace, then
//! every other CPU is stopped (NMI: it arrives even with interrupts off) and the machine powers off
//! with the failure code (QEMU's isa-debug-exit) or, without that device, halts.
//!
//! Two layers above this one add to the report through typed hooks they install: `cpus` the NMI
//! broadcast that stops the other CPUs ([`set_stop_others`]), `task` the running thread's name
//! ([`set_thread_name`]). A page fault in a kernel stack's guard page is named through `mm`.

use core::{
    fmt::Write,
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
};

use arch::trap::TrapFrame;
use crossbeam_utils::atomic::AtomicCell;

use crate::cpu::{console, percpu, power};

static STOPPING: AtomicBool = AtomicBool::new(false);
/// 1 + the CPU that owns the failure report (the first to fail).
static REPORTER: AtomicU32 = AtomicU32::new(0);
static STOP_OTHERS: AtomicCell<Option<fn()>> = AtomicCell::new(None);
/// Writes the running thread's name.
type ThreadName = fn(&mut dyn Write);

static THREAD_NAME: AtomicCell<Option<ThreadName>> = AtomicCell::new(None);

/// Install the function that stops every other CPU (an NMI broadcast, once the APs run).
pub fn set_stop_others(f: fn()) {
    STOP_OTHERS.store(Some(f));
}

/// Install the function that writes the current thread's name (once the scheduler is up).
pub fn set_thread_name(f: fn(&mut dyn Write)) {
    THREAD_NAME.store(Some(f));
}

/// True once some CPU has begun a failure report: NMIs then mean "stop".
pub fn stop_requested() -> bool {
    STOPPING.load(Ordering::Acquire)
}

/// Where a stopped CPU ends.
pub fn park_this_cpu() -> ! {
    arch::cpu::halt_forever()
}

fn write_thread(c: &mut dyn Write) {
    match THREAD_NAME.load() {
        Some(f) => f(c),
        None => {
            let _ = c.write_str("boot");
        }
    }
}

/// Become the reporting CPU or, if another CPU is already reporting, stop quietly.
fn begin_report() {
    arch::interrupts::disable();
    let me = percpu::cpu_index() + 1;
    if let Err(owner) = REPORTER.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
        && owner != me
    {
        park_this_cpu();
    }
    STOPPING.store(true, Ordering::Release);
    if let Some(f) = STOP_OTHERS.load() {
        f();
    }
}

/// Walk the frame-pointer chain from `rbp`, printing return addresses.
fn backtrace(c: &mut dyn Write, mut rbp: u64) {
    let _ = writeln!(c, "backtrace (resolve with `addr2line -e <kernel elf> ADDR`):");
    for depth in 0..48 {
        // A frame record must sit in the kernel half, aligned, and frames only go up the stack.
        if rbp == 0 || !rbp.is_multiple_of(8) || rbp < 0xffff_8000_0000_0000 || !crate::mm::is_mapped(rbp, 16) {
            break;
        }
        // SAFETY: rbp is a mapped, aligned kernel address (checked above) holding a frame record
        // pushed by a prologue: [rbp] = caller's rbp, [rbp + 8] = return address.
        let (next, ret) = unsafe { (*(rbp as *const u64), *((rbp + 8) as *const u64)) };
        if ret == 0 {
            break;
        }
        let _ = writeln!(c, "  #{depth:<2} {ret:#018x}");
        // Above the system-call entry, `next` is the user's rbp.
        if next <= rbp || arch::syscall::is_entry_return(ret) {
            break;
        }
        rbp = next;
    }
}

/// A fatal exception: report and stop. Never returns.
pub fn fault(frame: &TrapFrame, what: &str) -> ! {
    begin_report();
    let cr2 = arch::cr::cr2();
    let mut c = console::lock(true);
    let _ = write!(c, "\n*** FATAL: {what} on cpu{} in thread `", percpu::cpu_index());
    write_thread(&mut c);
    let _ = writeln!(c, "` at rip {:#018x}", frame.rip);
    if frame.vector == 14 || frame.vector == 8 {
        let _ = crate::mm::stacks::guard_hit(cr2, &mut c);
    }
    if frame.vector == 14 {
        let e = frame.error_code;
        let _ = writeln!(
            c,
            "page fault: CR2 {cr2:#018x}, error {e:#x}: {} {} in {} mode{}{}",
            if e & 1 != 0 { "protection violation on a" } else { "not-present page on a" },
            if e & 0x10 != 0 {
                "instruction fetch"
            } else if e & 2 != 0 {
                "write"
            } else {
                "read"
            },
            if e & 4 != 0 { "user" } else { "supervisor" },
            if e & 8 != 0 { ", reserved bit set in a paging entry" } else { "" },
            if e & 0x20 != 0 { ", protection key" } else { "" },
        );
    } else {
        let _ = writeln!(c, "vector {}, error code {:#x}, CR2 {cr2:#018x}", frame.vector, frame.error_code);
    }
    let f = frame;
    let _ = writeln!(c, "rax {:#018x} rbx {:#018x} rcx {:#018x} rdx {:#018x}", f.rax, f.rbx, f.rcx, f.rdx);
    let _ = writeln!(c, "rsi {:#018x} rdi {:#018x} rbp {:#018x} rsp {:#018x}", f.rsi, f.rdi, f.rbp, f.rsp);
    let _ = writeln!(c, "r8  {:#018x} r9  {:#018x} r10 {:#018x} r11 {:#018x}", f.r8, f.r9, f.r10, f.r11);
    let _ = writeln!(c, "r12 {:#018x} r13 {:#018x} r14 {:#018x} r15 {:#018x}", f.r12, f.r13, f.r14, f.r15);
    let _ = writeln!(c, "cs {:#x} ss {:#x} rflags {:#x}", f.cs, f.ss, f.rflags);
    let _ = writeln!(c, "  #0  {:#018x} (faulting instruction)", f.rip);
    backtrace(&mut c, f.rbp);
    drop(c);
    power::exit(power::Exit::Failure)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    begin_report();
    let mut c = console::lock(true);
    let _ = write!(c, "\n*** PANIC on cpu{} in thread `", percpu::cpu_index());
    write_thread(&mut c);
    let _ = write!(c, "`");
    if let Some(l) = info.location() {
        let _ = write!(c, " at {}:{}:{}", l.file(), l.line(), l.column());
    }
    let _ = writeln!(c, ": {}", info.message());
    backtrace(&mut c, arch::cpu::frame_pointer());
    drop(c);
    power::exit(power::Exit::Failure)
}

#[cfg(feature = "ktest")]
mod tests {
    use alloc::string::String;

    use crate::testing::Test;

    crate::register_tests![Test { name: "fault_page", min_cpus: 1, expect_fault: true, run: fault_page }];

    /// Read an unmapped address: the fault report must name the page fault, CR2 equal to that
    /// address (the harness looks for `CR2 0x00000000dead0000`) and a backtrace.
    fn fault_page() -> Result<(), String> {
        let p = 0xdead_0000_usize as *const u64;
        // SAFETY: not sound on purpose: this test exists to fault, and the harness expects the report.
        let v = unsafe { core::ptr::read_volatile(p) };
        Err(alloc::format!("read {v:#x} from an unmapped address without a fault"))
    }
}
