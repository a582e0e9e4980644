//! The in-kernel test registry (test kernel only: `--features ktest`).
//!
//! Tests are plain functions described by a [`Test`] and registered next to the code they test with
//! [`register_tests!`](crate::register_tests), which puts the module's slice of tests into the
//! `.ktests` linker section. The linker script brackets that section with `__ktests_start` and
//! `__ktests_end`, so [`all`] finds every registered slice without a central list importing every
//! module. The runner that picks tests from the command line is `selftest`.
//!
//! Tests that expect the kernel to die (a deliberate page fault, a stack overflow) are marked
//! `expect_fault`: they run only when named alone, and the host harness checks the fault report and
//! the failure exit code.
//!
//! Layer: the lowest of all; it uses nothing of the kernel.

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

/// One module's tests, as [`register_tests!`](crate::register_tests) places them in `.ktests`.
pub type Group = &'static [Test];

unsafe extern "C" {
    /// First and one-past-last [`Group`] of the `.ktests` section (linker.ld).
    static __ktests_start: u8;
    static __ktests_end: u8;
}

/// Every registered test, module by module in link order.
pub fn all() -> impl Iterator<Item = &'static Test> {
    // Only the addresses of the linker-script symbols are taken, which is safe.
    let start = (&raw const __ktests_start).cast::<Group>();
    let end = (&raw const __ktests_end).cast::<Group>();
    let groups = (end as usize - start as usize) / core::mem::size_of::<Group>();
    // SAFETY: the linker script places every `.ktests` input section, and nothing else, between the
    // two symbols, 8-byte aligned; each input section is one `static` of type `Group` emitted by
    // `register_tests!`, so the range is an array of `groups` initialised, immutable `Group`s.
    let groups: &'static [Group] = unsafe { core::slice::from_raw_parts(start, groups) };
    groups.iter().flat_map(|g| g.iter())
}

/// `register_tests![Test { .. }, ..]`: register this module's tests with the runner.
#[macro_export]
macro_rules! register_tests {
    ($($test:expr),* $(,)?) => {
        #[used]
        #[unsafe(link_section = ".ktests")]
        static REGISTERED_TESTS: $crate::testing::Group = &[$($test),*];
    };
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
