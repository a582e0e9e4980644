//! Helpers shared by the host test files: a watchdog that turns a hang (a lost wake-up, a thread
//! that never runs) into a failure with a message instead of a stuck test run; the lock that runs
//! one scheduler at a time; the stray waker of the hand-off storms.
//!
//! Each test file compiles this module on its own and uses a part of it, hence `dead_code`.
#![allow(dead_code)]

use sched::host::HostPlatform;
use sched::{Builder, CpuIndex, JoinHandle, Parker, Scheduler};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, MutexGuard, OnceLock};
use std::time::Duration;

/// One scheduler at a time. Host CPUs are OS threads, so two schedulers running at once would
/// share the host's cores, and a spin-wait on an OS thread that Linux has descheduled stalls for a
/// whole Linux time slice. Tests that bring up several CPUs hold this lock while they run.
pub fn one_scheduler_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A thread pinned to `cpu` that wakes the two `parkers` in turn (spurious wake-ups, as signals'
/// kicks give a futex waiter) until `done` counts both sides of a hand-off storm finished,
/// yielding every 64 wakes.
pub fn spawn_stray_waker(
    s: &'static Scheduler<HostPlatform>,
    cpu: CpuIndex,
    parkers: Arc<[OnceLock<Parker>; 2]>,
    done: Arc<AtomicUsize>,
) -> JoinHandle<(), HostPlatform> {
    s.spawn(Builder::new("stray").pinned(cpu), move || {
        let mut n = 0u64;
        while done.load(Ordering::Acquire) < 2 {
            if let Some(p) = parkers[(n % 2) as usize].get() {
                p.wake(s);
            }
            n += 1;
            if n.is_multiple_of(64) {
                s.yield_now();
            }
        }
    })
    .unwrap()
}

/// Aborts the process with a message if not dropped within its time limit.
pub struct Watchdog {
    done: Sender<()>,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.done.send(());
    }
}

/// Start a watchdog for the test `name`.
pub fn watchdog(name: &'static str, limit: Duration) -> Watchdog {
    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
            eprintln!(
                "{name}: no progress within {limit:?} (hang: a lost wake-up or a thread that never ran)"
            );
            std::process::abort();
        }
    });
    Watchdog { done }
}
