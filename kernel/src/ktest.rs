//! The in-kernel test runner (test kernel only: `--features ktest`).
//!
//! Tests are plain functions registered in [`TESTS`] (each module contributes a slice). The command
//! line picks them: `test=all`, `test=list` (print the catalogue for the host harness), or
//! `test=NAME[,NAME...]`. Each prints `test NAME ... ok` or `test NAME ... FAILED` (with the reason
//! on the lines before), and the run ends with `N passed, N failed` and the matching exit code.
//!
//! Tests that expect the kernel to die (a deliberate page fault, a stack overflow) are marked
//! `expect_fault`: they run only when named alone, and the host harness checks the fault report and
//! the failure exit code.

use alloc::{format, string::String};
use core::sync::atomic::{AtomicU64, Ordering};

/// One in-kernel test.
pub struct Test {
    pub name: &'static str,
    /// Skipped (and reported as skipped) with fewer CPUs online.
    pub min_cpus: u32,
    /// Deliberately crashes the kernel; runs only when selected by name.
    pub expect_fault: bool,
    pub run: fn() -> Result<(), String>,
}

/// Every registered test, module by module.
pub fn all() -> impl Iterator<Item = &'static Test> {
    let groups: &[&[Test]] = &[crate::selftest::TESTS, crate::mm::tests::TESTS, crate::smpboot::TESTS, crate::xcall::TESTS, crate::time::TESTS, crate::sched_tests::TESTS, crate::aspace::TESTS];
    groups.iter().flat_map(|g| g.iter())
}

/// Run the selection named on the command line and leave QEMU with the verdict.
pub fn run(selection: &str, cpus_online: u32) -> ! {
    if selection == "list" {
        for t in all() {
            crate::println_raw!("testcase {} smp>={}{}", t.name, t.min_cpus, if t.expect_fault { " expect-fault" } else { "" });
        }
        crate::power::exit(crate::power::Exit::Success);
    }
    let wanted = |t: &Test| {
        if selection == "all" { !t.expect_fault } else { selection.split(',').any(|n| n == t.name) }
    };
    let (mut passed, mut failed, mut skipped) = (0u32, 0u32, 0u32);
    for name in selection.split(',').filter(|n| *n != "all") {
        if !all().any(|t| t.name == name) {
            crate::println_raw!("error: no test named `{name}`");
            failed += 1;
        }
    }
    for t in all().filter(|t| wanted(t)) {
        if cpus_online < t.min_cpus {
            crate::println_raw!("test {} ... skipped (needs {} CPUs, {} online)", t.name, t.min_cpus, cpus_online);
            skipped += 1;
            continue;
        }
        match (t.run)() {
            Ok(()) => {
                crate::println_raw!("test {} ... ok", t.name);
                passed += 1;
            }
            Err(why) => {
                crate::println_raw!("  {}: {why}", t.name);
                crate::println_raw!("test {} ... FAILED", t.name);
                failed += 1;
            }
        }
    }
    crate::println_raw!("{passed} passed, {failed} failed, {skipped} skipped");
    crate::power::exit(if failed == 0 { crate::power::Exit::Success } else { crate::power::Exit::Failure })
}

/// Failures seen by a test's threads: all counted, the first described.
#[derive(Default)]
pub struct Failures {
    count: AtomicU64,
    first: spin::Mutex<Option<String>>,
}

impl Failures {
    /// Count a failure; describe it (only the first is described).
    pub fn record(&self, what: impl FnOnce() -> String) {
        if self.count.fetch_add(1, Ordering::SeqCst) == 0 {
            *self.first.lock() = Some(what());
        }
    }

    /// `Err` naming how many failures there were and the first, if any.
    pub fn check(&self) -> Result<(), String> {
        match self.count.load(Ordering::SeqCst) {
            0 => Ok(()),
            n => Err(format!("{n} failures, the first: {}", self.first.lock().clone().unwrap_or_default())),
        }
    }
}

/// `ensure!(cond, "format", args)`: fail the test with a message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(alloc::format!($($arg)+));
        }
    };
}
