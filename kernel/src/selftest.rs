//! The test kernel's runner: picks tests from the registry ([`crate::testing`]) and the services'
//! lists by the command
//! line's `test=`: `test=all`, `test=list` (print the catalogue for the host harness), or
//! `test=NAME[,NAME...]`. Each prints `test NAME ... ok` or `test NAME ... FAILED` (with the reason
//! on the lines before), and the run ends with `N passed, N failed, N skipped` and the matching
//! exit code. `soak=SECS` ([`soak`]) repeats the stress tests instead, for `make soak`.
//!
//! Layer: a service (the top); it reaches the console and the exit device below.

use crate::{cpu::power, mm, println_raw, task, testing::{self, Test}, time};

/// Every test: the linker-section registry of the layers below the services, then the services'
/// own lists (a service forbids unsafe code, and a `link_section` static counts as unsafe, so the
/// services hand their tests over as plain slices).
fn all() -> impl Iterator<Item = &'static Test> {
    testing::all().chain(crate::fs::tests::TESTS.iter()).chain(crate::user_tests::TESTS.iter()).chain(crate::tty::TESTS.iter())
}

/// Run the selection named on the command line and leave QEMU with the verdict.
pub fn run(selection: &str, cpus_online: u32) -> ! {
    if selection == "list" {
        for t in all() {
            println_raw!("testcase {} smp>={}{}", t.name, t.min_cpus, if t.expect_fault { " expect-fault" } else { "" });
        }
        power::exit(power::Exit::Success);
    }
    let wanted = |t: &Test| {
        if selection == "all" { !t.expect_fault } else { selection.split(',').any(|n| n == t.name) }
    };
    let (mut passed, mut failed, mut skipped) = (0u32, 0u32, 0u32);
    for name in selection.split(',').filter(|n| *n != "all") {
        if !all().any(|t| t.name == name) {
            println_raw!("error: no test named `{name}`");
            failed += 1;
        }
    }
    for t in all().filter(|t| wanted(t)) {
        if cpus_online < t.min_cpus {
            println_raw!("test {} ... skipped (needs {} CPUs, {} online)", t.name, t.min_cpus, cpus_online);
            skipped += 1;
            continue;
        }
        match (t.run)() {
            Ok(()) => {
                println_raw!("test {} ... ok", t.name);
                passed += 1;
            }
            Err(why) => {
                println_raw!("  {}: {why}", t.name);
                println_raw!("test {} ... FAILED", t.name);
                failed += 1;
            }
        }
    }
    println_raw!("{passed} passed, {failed} failed, {skipped} skipped");
    power::exit(if failed == 0 { power::Exit::Success } else { power::Exit::Failure })
}

/// The stress tests a soak repeats: each checks conservation itself (every thread spawned ran and
/// was joined, every message and wake-up received, every counter sums) and waits with a deadline,
/// so a lost wake-up or a stuck CPU fails it instead of hanging the soak.
const SOAK_TESTS: &[&str] = &[
    "sched_pingpong_storm",
    "sched_spawn_exit_churn",
    "sched_mutex_contention",
    "sched_no_lost_wakeup",
    "sched_migration_storm",
    "frames_contention",
    "heap_alloc_free",
    "ipi_all_others_storm",
    "xcall_exact_targets",
    "tlb_torture",
    "aspace_destroy_returns_frames",
];

/// Rounds a soak runs at least, however short: enough to tell a leak from a high-water mark.
const SOAK_MIN_ROUNDS: u64 = 3;

/// Seconds between two statistics blocks of a soak.
const SOAK_REPORT_S: u64 = 60;

/// `soak=SECS`: run [`SOAK_TESTS`] round after round for `seconds`, print every CPU's scheduler
/// counters each minute, then the verdict: every run passed, no CPU went a minute without a
/// switch, and free frames and heap bytes (less the sleep queues' capacity, a bounded high-water
/// mark) are exactly back where they were after the first round (which warms up what stays
/// allocated for good), at least [`SOAK_MIN_ROUNDS`] rounds in. Powers off with success only then.
pub fn soak(seconds: u64, cpus_online: u32) -> ! {
    let s = task::sched();
    let tests: alloc::vec::Vec<&Test> = all().filter(|t| SOAK_TESTS.contains(&t.name) && cpus_online >= t.min_cpus).collect();
    println_raw!("soak: {seconds} s of {} stress tests on {cpus_online} CPUs", tests.len());
    let t0 = time::now_ns();
    let end = t0 + seconds.saturating_mul(1_000_000_000);
    let mut next_report = t0 + SOAK_REPORT_S * 1_000_000_000;
    let nr_cpus = s.nr_cpus();
    let mut last: alloc::vec::Vec<sched::Counters> = (0..nr_cpus).map(|c| s.counters(sched::CpuIndex(c as u32))).collect();
    let (mut rounds, mut runs) = (0u64, 0u64);
    // Kernel stacks take their slots round-robin over the whole stack area, and the page tables of
    // a slot stay once made: until the slot cursor has gone round once, fresh slots cost fresh
    // table frames. Going round once here makes them all, so the rounds' levels compare.
    let warm: alloc::vec::Vec<mm::stacks::KernelStack> =
        (0..mm::stacks::MAX_STACKS).map_while(|_| mm::stacks::KernelStack::new(4096, "soak-warm-up")).collect();
    drop(warm);
    // Allocated before the first level is read, so that recording levels does not move them.
    let mut levels: alloc::vec::Vec<(usize, usize)> = alloc::vec::Vec::with_capacity(4096);
    let mut last_left: alloc::vec::Vec<i64> = alloc::vec::Vec::with_capacity(tests.len());
    let start = settled_memory_level();
    let fail = |name: &str, why: &str| -> ! {
        println_raw!("  {name}: {why}");
        println_raw!("soak: FAILED in {name}");
        power::exit(power::Exit::Failure)
    };
    while rounds < SOAK_MIN_ROUNDS || time::now_ns() < end {
        for (i, t) in tests.iter().enumerate() {
            // Each test starts on a settled machine: the threads of the one before reaped, their
            // stacks' frames back (some tests count free frames).
            let before = settled_memory_level();
            if let Err(why) = (t.run)() {
                fail(t.name, &why);
            }
            // What the test left behind, against the round before (round 1 warms up, so from
            // round 3 on): a test that leaks says so.
            let after = settled_memory_level();
            let left = after.1 as i64 - before.1 as i64;
            if rounds == 0 {
                last_left.push(left);
            } else {
                if rounds >= 2 && left != last_left[i] {
                    println_raw!("  note: {} left {left:+} heap bytes in round {}, {:+} in the round before", t.name, rounds + 1, last_left[i]);
                }
                last_left[i] = left;
            }
            runs += 1;
            if time::now_ns() >= next_report {
                next_report += SOAK_REPORT_S * 1_000_000_000;
                println_raw!("soak: {} s, round {}, {runs} test runs; frames free {}, heap {} bytes", (time::now_ns() - t0) / 1_000_000_000, rounds + 1, mm::frames::stats().0, mm::heap::allocated_bytes());
                for (cpu, prev) in last.iter_mut().enumerate() {
                    let c = s.counters(sched::CpuIndex(cpu as u32));
                    println_raw!(
                        "soak: cpu{cpu:<3} switches {:>8} preempt {:>7} yield {:>7} mig-in {:>6} mig-out {:>6} ipi {:>6}",
                        c.context_switches - prev.context_switches,
                        c.preemptions - prev.preemptions,
                        c.voluntary_yields - prev.voluntary_yields,
                        c.migrations_in - prev.migrations_in,
                        c.migrations_out - prev.migrations_out,
                        c.ipis_sent - prev.ipis_sent,
                    );
                    if c.context_switches == prev.context_switches {
                        fail("soak", &alloc::format!("cpu{cpu} did not switch once in the last {SOAK_REPORT_S} s: stalled"));
                    }
                    *prev = c;
                }
            }
        }
        rounds += 1;
        let level = settled_memory_level();
        println_raw!("soak: round {rounds} done at {} s: {} frames free, {} heap bytes", (time::now_ns() - t0) / 1_000_000_000, level.0, level.1);
        if levels.len() < levels.capacity() {
            levels.push(level);
        } else if let Some(last) = levels.last_mut() {
            *last = level;
        }
    }
    let (frames_s, heap_s) = start;
    let (frames1, heap1) = settled_memory_level();
    let (frames0, heap0) = levels[0];
    println_raw!("soak: {rounds} rounds, {runs} test runs in {} s", (time::now_ns() - t0) / 1_000_000_000);
    println_raw!(
        "soak: frames free / heap bytes at the start {frames_s} / {heap_s}, after round 1 {frames0} / {heap0}, at the end {frames1} / {heap1}"
    );
    if frames1 != frames0 {
        fail("soak", &alloc::format!("free frames not back to their level after round 1: {:+}", frames1 as i64 - frames0 as i64));
    }
    // The level leaves out the one high-water mark the tests move (the sleep queues' capacity), so
    // after the first round, which warms up what stays allocated for good, it must not move at all.
    if heap1 != heap0 {
        fail("soak", &alloc::format!("the heap is not back to its level after round 1: {heap0} -> {heap1} bytes ({:+})", heap1 as i64 - heap0 as i64));
    }
    println_raw!("soak: PASSED");
    power::exit(power::Exit::Success)
}

/// `(free frames, heap bytes allocated less the sleep queues' capacity)` once reaping has caught
/// up: the same reading twice in a row, 10 ms apart (exited threads give their stacks back at their
/// CPU's next switch). The sleep queues keep the capacity of the most sleepers a CPU ever held at
/// once, a high-water mark bounded by the threads that exist, which the tests raise now and then
/// (a CPU's queue going from 8 to 16 entries of 24 bytes is the 192 bytes a soak round once
/// showed); [`sched::Scheduler::sleep_queue_bytes`] counts it, so it is left out of the level.
fn settled_memory_level() -> (usize, usize) {
    let read = || (mm::frames::stats().0, mm::heap::allocated_bytes() - task::sched().sleep_queue_bytes());
    let mut before = read();
    for _ in 0..100 {
        task::sched().sleep_ns(10_000_000);
        let now = read();
        if now == before {
            return now;
        }
        before = now;
    }
    before
}
