//! The test kernel's runner: picks tests from the registry ([`crate::testing`]) and the services'
//! lists by the command
//! line's `test=`: `test=all`, `test=list` (print the catalogue for the host harness), or
//! `test=NAME[,NAME...]`. Each prints `test NAME ... ok` or `test NAME ... FAILED` (with the reason
//! on the lines before), and the run ends with `N passed, N failed, N skipped` and the matching
//! exit code.
//!
//! Layer: a service (the top); it reaches the console and the exit device below.

use crate::{cpu::power, println_raw, testing::{self, Test}};

/// Every test: the linker-section registry of the layers below the services, then the services'
/// own lists (a service forbids unsafe code, and a `link_section` static counts as unsafe, so the
/// services hand their tests over as plain slices).
fn all() -> impl Iterator<Item = &'static Test> {
    testing::all().chain(crate::user_tests::TESTS.iter())
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

