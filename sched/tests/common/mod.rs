//! Helpers shared by the host test files: a watchdog that turns a hang (a lost wake-up, a thread
//! that never runs) into a failure with a message instead of a stuck test run.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

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
