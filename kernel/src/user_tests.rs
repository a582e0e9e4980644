//! In-kernel tests of user programs: real static musl executables from the initramfs (built by the
//! Makefile from `user/`), run as processes, their output and wait status checked. They need the
//! initramfs (`make ktest` passes it); without it they fail, naming what is missing.
//!
//! A service like the code it tests, so it forbids unsafe code and hands its list to the runner
//! (`selftest`) as a plain slice instead of the linker-section registry.

use alloc::{format, string::String, vec::Vec};

use crate::{process, testing::Test};

pub static TESTS: &[Test] = &[
    Test { name: "user_smoke_exit_status", min_cpus: 1, expect_fault: false, run: smoke_exit_status },
    Test { name: "user_faults_end_only_their_process", min_cpus: 1, expect_fault: false, run: faults_end_only_their_process },
    Test { name: "user_pthreads_mutex_condvar_join", min_cpus: 1, expect_fault: false, run: pthreads },
    Test { name: "user_programs_return_every_frame", min_cpus: 1, expect_fault: false, run: no_leak },
    Test { name: "user_threads_keep_their_vector_registers", min_cpus: 1, expect_fault: false, run: fpu_isolation },
    Test { name: "user_syscall_fuzzer_leaves_the_kernel_whole", min_cpus: 1, expect_fault: false, run: fuzz },
    Test { name: "user_sigstop_parks_sigcont_resumes_sigkill_ends", min_cpus: 1, expect_fault: false, run: stop_continue_kill },
    Test { name: "user_stopped_sleep_resumes_without_eintr", min_cpus: 1, expect_fault: false, run: stopped_sleep },
];

/// A nanosleep interrupted by SIGSTOP and resumed by SIGCONT (no handler ran) continues through
/// `restart_syscall` and returns 0: the program never sees EINTR.
fn stopped_sleep() -> Result<(), String> {
    use abi::signal::{SIGCONT, SIGSTOP, SigInfo};
    let argv = Vec::from([String::from("/bin/fault"), String::from("sleep")]);
    let (p, thread) = process::spawn("/bin/fault", argv, Vec::new(), true).map_err(|e| format!("cannot start /bin/fault: {e:?}"))?;
    let s = crate::task::sched();
    for _ in 0..3000 {
        if p.captured.lock().as_ref().is_some_and(|v| !v.is_empty()) {
            break;
        }
        s.sleep_ns(10_000_000);
    }
    s.sleep_ns(100_000_000);
    let send = |sig: u32| process::signal::send_to_process(p.pid(), SigInfo::user(sig, 0, false)).map_err(|e| format!("send {sig}: errno {e}"));
    send(SIGSTOP)?;
    s.sleep_ns(100_000_000);
    send(SIGCONT)?;
    thread.join();
    let out = p.captured.lock().take().unwrap_or_default();
    let out = String::from_utf8_lossy(&out).into_owned();
    match p.status() {
        Some(0) if out.contains("sleep: 0") => Ok(()),
        other => Err(format!("status {other:?}, output {out:?}: the stopped sleep did not resume")),
    }
}

/// A program that prints a dot per stretch of user-mode work: SIGSTOP parks it (its output stops
/// growing for good), SIGCONT resumes it (it grows again), SIGKILL ends it with status 9.
fn stop_continue_kill() -> Result<(), String> {
    use abi::signal::{SIGCONT, SIGKILL, SIGSTOP, SigInfo};
    let argv = Vec::from([String::from("/bin/fault"), String::from("spin")]);
    let (p, thread) = process::spawn("/bin/fault", argv, Vec::new(), true).map_err(|e| format!("cannot start /bin/fault: {e:?}"))?;
    let len = || p.captured.lock().as_ref().map_or(0, |v| v.len());
    let s = crate::task::sched();
    let wait_for = |what: &str, cond: &dyn Fn() -> bool| -> Result<(), String> {
        for _ in 0..3000 {
            if cond() {
                return Ok(());
            }
            s.sleep_ns(10_000_000);
        }
        Err(format!("{what}: not within 30 s"))
    };
    let send = |sig: u32| process::signal::send_to_process(p.pid(), SigInfo::user(sig, 0, false)).map_err(|e| format!("send {sig}: errno {e}"));
    wait_for("the first dots", &|| len() > 16)?;
    send(SIGSTOP)?;
    // Parked at its next return to ring 3: the output settles, then never changes.
    wait_for("the output to settle after SIGSTOP", &|| {
        let a = len();
        s.sleep_ns(30_000_000);
        a == len()
    })?;
    let parked = len();
    s.sleep_ns(300_000_000);
    if len() != parked {
        return Err(format!("output grew from {parked} to {} bytes while stopped", len()));
    }
    send(SIGCONT)?;
    wait_for("dots after SIGCONT", &|| len() > parked + 4)?;
    send(SIGKILL)?;
    thread.join();
    match p.status() {
        Some(9) => Ok(()),
        other => Err(format!("wait status {other:?} after SIGKILL, expected 9")),
    }
}

/// Run `path` with `args` to its end; its wait status and captured output.
fn run(path: &str, args: &[&str]) -> Result<(i32, String), String> {
    let mut argv = Vec::from([String::from(path)]);
    argv.extend(args.iter().map(|a| String::from(*a)));
    let (p, thread) = process::spawn(path, argv, Vec::new(), true).map_err(|e| format!("cannot start {path}: {e:?}"))?;
    thread.join();
    let status = p.status().ok_or_else(|| format!("{path}: its only thread ended but the process has no status"))?;
    let out = p.captured.lock().take().unwrap_or_default();
    Ok((status, String::from_utf8_lossy(&out).into_owned()))
}

fn smoke_exit_status() -> Result<(), String> {
    let demand_before = process::DEMAND_PAGES.load(core::sync::atomic::Ordering::Relaxed);
    let (status, out) = run("/init", &["7"])?;
    for line in ["smoke: hello from ring 3, argc 2, argv[0] /init", "smoke: heap ok (9000000)", "smoke: mmap ok (130560)", "smoke: mremap ok", "smoke: errno ok", "smoke: auxv and uname ok", "smoke: exiting with 7"] {
        if !out.lines().any(|l| l == line) {
            return Err(format!("output lacks {line:?}; it was:\n{out}"));
        }
    }
    if status != 7 << 8 {
        return Err(format!("wait status {status:#x}, expected exit 7 ({:#x})", 7 << 8));
    }
    let demand = process::DEMAND_PAGES.load(core::sync::atomic::Ordering::Relaxed) - demand_before;
    // The 4 MiB mapping alone is touched page by page: 1024 demand-zero faults at least.
    if demand < 1024 {
        return Err(format!("only {demand} demand-zero pages for a program that touches 1024 mmap pages"));
    }
    Ok(())
}

fn faults_end_only_their_process() -> Result<(), String> {
    // (argument, signal Linux kills the process with)
    let cases = [("null", 11), ("ud2", 4), ("hlt", 11), ("int3", 5), ("div0", 8), ("stack", 11), ("syscall-top", 11)];
    for (what, signal) in cases {
        let (status, out) = run("/bin/fault", &[what])?;
        if !out.contains(&format!("fault: {what}")) {
            return Err(format!("{what}: the program did not run to its fault; output {out:?}"));
        }
        if status != signal {
            return Err(format!("{what}: wait status {status:#x}, expected signal {signal}"));
        }
    }
    // The kernel lives on: a program after all of them still runs to its end.
    let (status, _) = run("/init", &[])?;
    if status != 0 {
        return Err(format!("/init after the faults: status {status:#x}"));
    }
    Ok(())
}

fn pthreads() -> Result<(), String> {
    let (status, out) = run("/bin/threads", &[])?;
    let expected = [
        "threads: counter 160000 of 160000",
        "threads: hand-offs 2000 and 2000 of 2000 each",
        "threads: timed wait timed out",
        "threads: ok",
    ];
    let got: Vec<&str> = out.lines().collect();
    if got != expected || status != 0 {
        return Err(format!("status {status:#x}, output:\n{out}"));
    }
    Ok(())
}

/// Free frames and heap bytes now.
/// Frames not held by anything but the heap's arena (free frames plus the pages the heap has
/// claimed: its growth stays, and the heap's own level is checked by its allocated bytes), and the
/// heap's allocated bytes; measured after the cached kernel stacks of dead threads are handed back
/// (they are kept per CPU for the next spawn, which would otherwise count as a leak).
fn levels() -> (usize, usize) {
    crate::mm::stacks::trim();
    let heap_pages = crate::mm::heap::claimed_bytes() / 4096;
    (crate::mm::frames::stats().0 + heap_pages, crate::mm::heap::allocated_bytes())
}

/// Programs that map, fault in, grow, move and free memory, start threads and die of faults give
/// back every frame: page tables, user pages, kernel stacks. (The heap is checked too, with a margin
/// for the scheduler's and the futex table's own growth, which stays.)
fn no_leak() -> Result<(), String> {
    // A first round warms the lazily grown kernel tables (futex slots, id maps, log buffers).
    run("/init", &[])?;
    run("/bin/threads", &[])?;
    // The kernel stacks' region gets its page tables on demand and keeps them (kernel-half tables
    // are shared by every space and never freed): make them all now, by mapping every free slot
    // once, so that a thread's stack landing in a new slot later is not counted as a leak.
    let mut every_free_slot = Vec::new();
    while let Some(stack) = crate::mm::stacks::KernelStack::new(4096, "user-test-warm-up") {
        every_free_slot.push(stack);
    }
    drop(every_free_slot);
    let (frames_before, heap_before) = levels();
    for _ in 0..3 {
        run("/init", &[])?;
        run("/bin/threads", &[])?;
        run("/bin/fault", &["stack"])?;
    }
    back_to(frames_before, heap_before, "9 programs")
}

/// Wait until the free frames are back to `frames` (dead threads' stacks go back when their CPU
/// next switches: every CPU gets a few chances) and check that the heap grew by no more than a
/// margin for the tables that only grow (futex slots, thread ids).
fn back_to(frames: usize, heap: usize, what: &str) -> Result<(), String> {
    let s = crate::task::sched();
    let mut frames_after = 0;
    for _ in 0..200 {
        frames_after = levels().0;
        if frames_after >= frames {
            break;
        }
        s.sleep_ns(1_000_000);
    }
    let heap_after = levels().1;
    if frames_after < frames {
        return Err(format!("{} frames not returned after {what} ({frames} free before, {frames_after} after)", frames - frames_after));
    }
    if heap_after > heap + 64 * 1024 {
        return Err(format!("heap grew by {} bytes over {what}", heap_after - heap));
    }
    Ok(())
}

/// The fuzzer (one thread per CPU, random calls and arguments: kernel, unmapped, misaligned and
/// non-canonical pointers, huge lengths, bad flags) runs to its end, and the kernel has every frame
/// back afterwards.
fn fuzz() -> Result<(), String> {
    run("/bin/fuzz", &["500"])?;
    let (frames_before, heap_before) = levels();
    let calls = 20_000;
    let (status, out) = run("/bin/fuzz", &[&format!("{calls}")])?;
    let cpus = crate::task::sched().nr_cpus();
    let expected = format!("fuzz: {cpus} threads x {calls} calls answered");
    if status != 0 || out.trim_end() != expected {
        return Err(format!("status {status:#x}, output {out:?}, expected {expected:?}"));
    }
    back_to(frames_before, heap_before, "the fuzzer")
}

/// Four threads yield to each other 2000 times each with their own xmm0-15 and MXCSR loaded; none
/// may find a register changed (every user thread is an FPU thread of the scheduler).
fn fpu_isolation() -> Result<(), String> {
    let (status, out) = run("/bin/fpu", &[])?;
    let expected = ["fpu: 4 threads x 2000 yields, 0 registers changed under them", "fpu: ok"];
    if out.lines().collect::<Vec<_>>() != expected || status != 0 {
        return Err(format!("status {status:#x}, output:\n{out}"));
    }
    Ok(())
}
