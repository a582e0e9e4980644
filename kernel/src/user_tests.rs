//! In-kernel tests of user programs: real static musl executables from the initramfs (built by the
//! Makefile from `user/`), run as processes, their output and wait status checked. They need the
//! initramfs (`make ktest` passes it); without it they fail, naming what is missing.
//!
//! A service like the code it tests, so it forbids unsafe code and hands its list to the runner
//! (`selftest`) as a plain slice instead of the linker-section registry.

use alloc::{format, string::String, vec::Vec};

use crate::{println_raw, process, task::sched, testing::Test};
use ::sched::Platform as _;

pub static TESTS: &[Test] = &[
    Test { name: "user_smoke_exit_status", min_cpus: 1, expect_fault: false, run: smoke_exit_status },
    Test { name: "user_faults_end_only_their_process", min_cpus: 1, expect_fault: false, run: faults_end_only_their_process },
    Test { name: "user_pthreads_mutex_condvar_join", min_cpus: 1, expect_fault: false, run: pthreads },
    Test { name: "user_programs_return_every_frame", min_cpus: 1, expect_fault: false, run: no_leak },
    Test { name: "user_threads_keep_their_vector_registers", min_cpus: 1, expect_fault: false, run: fpu_isolation },
    Test { name: "user_unused_vector_state_is_not_switched_within_a_process", min_cpus: 1, expect_fault: false, run: fpu_lazy },
    Test { name: "user_syscall_fuzzer_leaves_the_kernel_whole", min_cpus: 1, expect_fault: false, run: fuzz },
    Test { name: "user_fuzzer_with_processes_returns_every_frame", min_cpus: 1, expect_fault: false, run: fuzz_processes },
    Test { name: "user_sigstop_parks_sigcont_resumes_sigkill_ends", min_cpus: 1, expect_fault: false, run: stop_continue_kill },
    Test { name: "user_wait_statuses_groups_and_orphans", min_cpus: 1, expect_fault: false, run: wait_program },
    Test { name: "user_fork_cow_under_writers", min_cpus: 1, expect_fault: false, run: forkcow },
    Test { name: "user_fork_churn_returns_every_frame", min_cpus: 1, expect_fault: false, run: churn },
    Test { name: "user_map_shared_crosses_fork_and_returns_every_frame", min_cpus: 1, expect_fault: false, run: shmem },
    Test { name: "user_execve_ends_the_other_threads_first", min_cpus: 1, expect_fault: false, run: execmt },
    Test { name: "user_stopped_sleep_resumes_without_eintr", min_cpus: 1, expect_fault: false, run: stopped_sleep },
    Test { name: "user_execve_follows_shebang_lines", min_cpus: 1, expect_fault: false, run: shebang },
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
    let status = p.wait_exit();
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

/// The fuzzer of `user/src/fuzz.c` (as `/bin/fuzzmix`): its random calls with forks, execs, pipes
/// and signals among them (every child reaped with its status, every byte and signal accounted,
/// which the program checks) leave the kernel with every frame and its heap back at their level.
fn fuzz_processes() -> Result<(), String> {
    // A first, identical run brings the kernel's lazily grown tables (pids, futex slots, thread
    // ids) to their working size; every kernel-stack slot gets its page tables now, as in
    // `no_leak`, so a stack landing in a new slot is not counted as a leak.
    // One copy per CPU (the program's default), 10^5 calls in all. The copies start together
    // behind a barrier: a thread stack mapped while other copies already ran could land in a hole
    // they made in the scratch area, and they then unmapped it under its thread (at -smp 8 a
    // copy's read at its own rsp faulted "outside every mapping").
    // At -smp 4 the measured run is the fuzzer's own run of `make user-kernel` (10^6 calls, seeds
    // 1..4), so that count is leak-checked too; elsewhere 10^5 calls, seed 7, as the warm-up.
    let cpus = crate::cpu::map::online().len().max(1);
    let seed = if cpus == 4 { "1" } else { "7" };
    let calls = alloc::format!("{}", 100_000 / cpus);
    let measured_calls = alloc::format!("{}", if cpus == 4 { 1_000_000 / cpus } else { 100_000 / cpus });
    let args = [calls.as_str(), seed];
    run("/bin/fuzzmix", &args)?;
    let mut every_free_slot = Vec::new();
    while let Some(stack) = crate::mm::stacks::KernelStack::new(4096, "user-test-warm-up") {
        every_free_slot.push(stack);
    }
    drop(every_free_slot);
    let (frames_before, heap_before) = levels();
    let (status, out) = run("/bin/fuzzmix", &[measured_calls.as_str(), seed])?;
    let want = ["fuzz: every child reaped with its status, every pipe byte read back, every signal handled", "ok fuzz"];
    let got: Vec<&str> = out.lines().filter(|l| !l.starts_with("# ")).collect();
    if status != 0 || !want.iter().all(|w| got.contains(w)) {
        return Err(format!("status {status:#x}, output:\n{out}"));
    }
    back_to(frames_before, heap_before, "the fuzzer's processes")
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

/// The same four threads, all on CPU 0, touch their vector registers only before and after their
/// 2000 yields each: within one process the scheduler switches them lazily (trap on first use,
/// `sched`'s `switch_fpu`), so most of their switches neither save nor restore, and every thread
/// takes its state back through the trap at its first use after a yield. Counted over the run
/// (nothing else runs user code meanwhile): at least 1000 switches (8000 yields, four threads on
/// one CPU), at least half of them lazy, and fewer than 100 saves (an eager switch saves at every
/// one). Without the trap (`eagerfpu`) the test has nothing to check and says so.
fn fpu_lazy() -> Result<(), String> {
    let before = sched().total_counters();
    fpu_isolation()?;
    let after = sched().total_counters();
    let (switches, lazy) = (after.context_switches - before.context_switches, after.fpu_lazy_switches - before.fpu_lazy_switches);
    let (saves, traps) = (after.fpu_saves - before.fpu_saves, after.fpu_traps - before.fpu_traps);
    println_raw!("  note: fpu: {switches} switches, {lazy} lazy, {saves} saves, {traps} traps");
    if !sched().platform().lazy_fpu() {
        println_raw!("  note: eagerfpu: every switch saves and restores; nothing to check");
        return Ok(());
    }
    if switches < 1000 || lazy * 2 < switches || saves >= 100 || traps < 4 {
        return Err(format!(
            "{switches} switches (want 1000 or more): {lazy} lazy (want half or more), {saves} saves (want fewer than 100), {traps} traps (want 4 or more)"
        ));
    }
    Ok(())
}

/// `path args` ends with status 0 and prints exactly `lines` (the host Linux prints the same).
fn expect_lines(path: &str, args: &[&str], lines: &[&str]) -> Result<(), String> {
    let (status, out) = run(path, args)?;
    let got: Vec<&str> = out.lines().filter(|l| !l.starts_with("# ")).collect();
    if status != 0 || got != lines {
        return Err(format!("status {status:#x}, output:\n{out}"));
    }
    Ok(())
}

/// Exit codes and signals in wait4's and waitid's words, WNOHANG, WNOWAIT, ECHILD, groups, setsid,
/// kill of a process and of a group, and an orphan going to pid 1 (the kernel, here).
fn wait_program() -> Result<(), String> {
    expect_lines(
        "/bin/wait",
        &[],
        &[
            "start wait",
            "exit 0 seen as status 0, code 0",
            "exit 3 seen as status 0x300, code 3",
            "exit 255 seen as status 0xff00, code 255",
            "exit 263 seen as status 0x700, code 7",
            "self-kill: signaled by 9",
            "abort: signaled by 6",
            "spinner: WNOHANG found nothing, kill ended it by 9",
            "waitid WNOWAIT: signo 17 code 1 status 5",
            "waitid P_ALL: signo 17 code 1 (CLD_EXITED 1) status 5",
            "waitid killed: code 2 (CLD_KILLED 2) status 9",
            "waitid: ECHILD after the reap, EINVAL without an event kind or with a bad idtype",
            "no children: ECHILD (also for the parent's pid), EINVAL for a bad option",
            "child: getppid is the parent, own group by setpgid: code 0",
            "group of 2: 2 killed by kill(-pgrp), then ECHILD and ESRCH for the group",
            "setsid in a child: code 0",
            "fork: the child keeps the parent's rounding mode: yes",
            "orphan: its parent changed when its parent exited: yes",
            "ok wait",
        ],
    )
}

/// Forks under writer threads on the other CPUs: every child sees the parent's memory at the fork
/// and only its own writes, the parent never sees a child's; copy-on-write breaks happened, and
/// once every process has ended no frame is shared any more.
fn forkcow() -> Result<(), String> {
    let breaks = process::COW_BREAKS.load(core::sync::atomic::Ordering::Relaxed);
    let forks = 200;
    expect_lines(
        "/bin/forkcow",
        &[&format!("{forks}")],
        &[
            "start forkcow",
            "forkcow: a page read-only at the fork, made writable on one side: the other keeps its value: yes",
            &format!("forkcow: {forks} forks under writers, {forks} children saw the parent's memory and only their own writes"),
            "ok forkcow",
        ],
    )?;
    let breaks = process::COW_BREAKS.load(core::sync::atomic::Ordering::Relaxed) - breaks;
    // Each child writes its regions and the quiet pages: one break per page at least.
    if breaks < forks {
        return Err(format!("only {breaks} copy-on-write breaks for {forks} children that wrote their pages"));
    }
    let shared = crate::vm::space::shared_frames();
    if shared != 0 {
        return Err(format!("{shared} frames still shared after every process ended"));
    }
    Ok(())
}

/// fork+exit+wait many times: the counts agree, and every frame and the heap come back.
fn churn() -> Result<(), String> {
    let rounds = "300";
    let lines = ["start churn", "churn: 300 forks, 300 exits with their code, 300 reaped, none left", "ok churn"];
    expect_lines("/bin/churn", &[rounds], &lines)?;
    let (frames_before, heap_before) = levels();
    expect_lines("/bin/churn", &[rounds], &lines)?;
    back_to(frames_before, heap_before, "300 forks, exits and waits")
}

/// MAP_SHARED anonymous memory: parent, children and a grandchild see each other's writes (atomic
/// counters conserve across CPUs), MAP_PRIVATE stays private, mprotect and munmap act on one side,
/// mremap moves the shared frames instead of copying them, a futex wake in one process reaches a waiter in another;
/// a second run gives back every frame (the shared frames are freed by their last process).
fn shmem() -> Result<(), String> {
    let rounds = "2000";
    let lines = [
        "start shmem",
        "counters: the parent and every child added to one shared counter; totals conserved",
        "handshake: writes cross the fork both ways through MAP_SHARED",
        "private: MAP_PRIVATE writes stay on their side",
        "again: a grandchild's write reaches the first parent",
        "one side: a child's mprotect and munmap leave the parent's mapping as it was",
        "moved: writes through a shared mapping moved by mremap reach the other process",
        "futex: a wake in the child reaches a waiter in the parent through a shared word",
        "file: MAP_SHARED of a bad descriptor is EBADF",
        "ok shmem",
    ];
    expect_lines("/bin/shmem", &[rounds], &lines)?;
    let shared_before = crate::vm::space::shared_frames();
    let (frames_before, heap_before) = levels();
    expect_lines("/bin/shmem", &[rounds], &lines)?;
    back_to(frames_before, heap_before, "forks sharing MAP_SHARED pages")?;
    let shared_after = crate::vm::space::shared_frames();
    if shared_after != shared_before {
        return Err(format!("{shared_before} frames shared before the second run, {shared_after} after"));
    }
    Ok(())
}

/// execve's error paths leave the caller running; vfork's parent goes on after the child's exec;
/// an exec from one of several threads ends the others and keeps the pid. Twice, and every frame
/// comes back (the old images' spaces go).
fn execmt() -> Result<(), String> {
    let lines = [
        "start execmt",
        "execmt: ENOENT, E2BIG, EFAULT leave the caller running",
        "execmt: vfork + execve: the child's new image exited with 42",
        "execmt: clone(CLONE_VM | CLONE_VFORK) + execve: exited with 42",
        "execmt: 3 threads spin, one more execs",
        "execmt: the new image runs, environment 1",
        "execmt: same pid after exec: yes",
        "execmt: old threads gone: 3 of 3",
        "ok execmt",
    ];
    expect_lines("/bin/execmt", &[], &lines)?;
    let (frames_before, heap_before) = levels();
    expect_lines("/bin/execmt", &[], &lines)?;
    back_to(frames_before, heap_before, "an exec from a multithreaded process")
}

/// `#!` lines, as Linux follows them: the interpreter with its one argument, then the script's
/// path, then the caller's arguments after argv[0]; a script whose interpreter is a script; ENOEXEC
/// for a file that is neither and for an empty `#!` line (scripts of the test archive).
fn shebang() -> Result<(), String> {
    expect_lines(
        "/bin/execmt",
        &["scripts", "/scripts"],
        &[
            "start execmt",
            "execmt: ENOEXEC for a file that is no program and for an empty #! line",
            "execmt: #! gave argv: /bin/execmt from-script /scripts/script last",
            "ok execmt",
            "execmt: #! gave argv: /bin/execmt from-script /scripts/script inner /scripts/nested last",
            "ok execmt",
        ],
    )
}
