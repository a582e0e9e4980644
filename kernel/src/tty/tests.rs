//! In-kernel tests of the terminal: bytes fed as the interrupt handler feeds them, read by a
//! thread that sleeps on the readers' queue, and the signal characters reaching the hook with the
//! foreground group. The UART is not involved (the host harness types into it: `make shell-test`).

use alloc::{format, string::String, vec::Vec};
use core::sync::atomic::{AtomicU64, Ordering};

use abi::{linux::errno, tty::Termios};

use crate::{ensure, task, testing::Test, time};

pub static TESTS: &[Test] = &[
    Test { name: "tty_reader_wakes_on_a_line", min_cpus: 1, expect_fault: false, run: reader_wakes_on_a_line },
    Test { name: "tty_signal_chars_reach_the_foreground_group", min_cpus: 1, expect_fault: false, run: signal_chars },
];

const MS: u64 = 1_000_000;

/// Run `f` with echo off (so nothing reaches the console) and a clean input queue; restore after.
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    let saved = {
        let mut t = super::tty().lock();
        let saved = t.termios;
        let mut quiet: Termios = saved;
        quiet.lflag &= !abi::linux::general::ECHO;
        t.set_termios(quiet, true);
        saved
    };
    let r = f();
    let mut t = super::tty().lock();
    t.set_termios(saved, true);
    t.take_output();
    r
}

fn reader_wakes_on_a_line() -> Result<(), String> {
    quietly(|| {
        let mut buf = [0u8; 16];
        ensure!(super::read(&mut buf, true) == Err(errno::EAGAIN), "a non-blocking read of nothing is EAGAIN");
        static DONE: AtomicU64 = AtomicU64::new(0);
        DONE.store(0, Ordering::SeqCst);
        let reader = task::sched()
            .spawn(sched::Builder::new("tty-reader").stack_bytes(16 * 1024), || {
                let mut buf = [0u8; 64];
                let r = super::read(&mut buf, false).map(|n| buf[..n].to_vec());
                DONE.store(1, Ordering::SeqCst);
                r
            })
            .map_err(|e| format!("spawn: {e:?}"))?;
        task::sched().sleep_ns(20 * MS);
        ensure!(DONE.load(Ordering::SeqCst) == 0, "the reader returned before any input");
        super::feed(b"par");
        task::sched().sleep_ns(20 * MS);
        ensure!(DONE.load(Ordering::SeqCst) == 0, "the reader returned before the line ended");
        super::feed(b"tial\r");
        let deadline = time::now_ns() + 2_000 * MS;
        while DONE.load(Ordering::SeqCst) == 0 && time::now_ns() < deadline {
            task::sched().sleep_ns(MS);
        }
        if DONE.load(Ordering::SeqCst) == 0 {
            // Let it go before failing, so no thread is left asleep on the queue.
            super::feed(b"\r");
            let _ = reader.join();
            return Err("the reader was not woken by a complete line within 2 s".into());
        }
        let got: Vec<u8> = match reader.join() {
            Some(Ok(bytes)) => bytes,
            other => return Err(format!("the reader ended with {other:?}")),
        };
        ensure!(got == b"partial\n", "read {:?}, wanted \"partial\\n\" (CR mapped by ICRNL)", String::from_utf8_lossy(&got));
        ensure!(!super::readable(), "the line was consumed");
        Ok(())
    })
}

static SIGNALLED: AtomicU64 = AtomicU64::new(0);

fn record_signal(pgid: u32, signal: u32) {
    SIGNALLED.store((u64::from(pgid) << 32) | u64::from(signal), Ordering::SeqCst);
}

fn signal_chars() -> Result<(), String> {
    let saved_hooks = super::HOOKS.load();
    super::set_hooks(super::Hooks { signal_group: record_signal, caller: || abi::tty::Caller { pid: 42, pgrp: 42, sid: 42 } });
    let saved_job = {
        let mut t = super::tty().lock();
        let saved = (t.session, t.fg_pgrp);
        t.session = 0;
        t.fg_pgrp = 0;
        saved
    };
    let result = quietly(|| {
        SIGNALLED.store(0, Ordering::SeqCst);
        super::feed(b"\x03");
        ensure!(SIGNALLED.load(Ordering::SeqCst) == 0, "Ctrl-C on nobody's terminal signalled someone");
        super::tty().lock().set_controlling(abi::tty::Caller { pid: 42, pgrp: 42, sid: 42 }, false).map_err(|e| format!("TIOCSCTTY: errno {e}"))?;
        super::tty().lock().fg_pgrp = 77;
        super::feed(b"sleep 100\x03");
        ensure!(SIGNALLED.load(Ordering::SeqCst) == (77 << 32) | u64::from(abi::signal::SIGINT), "Ctrl-C gave {:#x}", SIGNALLED.load(Ordering::SeqCst));
        ensure!(super::tty().lock().readable_bytes() == 0 && !super::readable(), "the interrupted line was not discarded");
        super::feed(b"\x1c");
        ensure!(SIGNALLED.load(Ordering::SeqCst) == (77 << 32) | u64::from(abi::signal::SIGQUIT), "Ctrl-\\ gave {:#x}", SIGNALLED.load(Ordering::SeqCst));
        Ok(())
    });
    {
        let mut t = super::tty().lock();
        (t.session, t.fg_pgrp) = saved_job;
        t.flush_input();
    }
    match saved_hooks {
        Some(h) => super::set_hooks(h),
        None => super::HOOKS.store(None),
    }
    result
}
