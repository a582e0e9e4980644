//! Tests of the foundation itself: boot information, per-CPU state, faults on purpose.

use alloc::{string::String, vec::Vec};

use crate::{ensure, ktest::Test};

pub const TESTS: &[Test] = &[
    Test { name: "heap_alloc_free", min_cpus: 1, expect_fault: false, run: heap_alloc_free },
    Test { name: "fault_page", min_cpus: 1, expect_fault: true, run: fault_page },
];

fn heap_alloc_free() -> Result<(), String> {
    let before = crate::mm::heap::allocated_bytes();
    let v: Vec<u64> = (0..10_000).collect();
    ensure!(v.iter().sum::<u64>() == 10_000 * 9_999 / 2, "vector contents wrong");
    drop(v);
    let after = crate::mm::heap::allocated_bytes();
    ensure!(after == before, "heap grew from {before} to {after} bytes after freeing everything");
    Ok(())
}

/// Read an unmapped address: the fault report must name the page fault, CR2 and a backtrace.
fn fault_page() -> Result<(), String> {
    let p = 0xdead_0000_usize as *const u64;
    // SAFETY: not sound on purpose: this test exists to fault, and the harness expects the report.
    let v = unsafe { core::ptr::read_volatile(p) };
    Err(alloc::format!("read {v:#x} from an unmapped address without a fault"))
}
