//! In-kernel tests of the terminal: bytes fed as the interrupt handler feeds them, read by a
//! thread that sleeps on the readers' queue, and the signal characters reaching the hook with the
//! foreground group. The UART is not involved (the host harness types into it: `make shell-test`).

use alloc::{format, string::String, vec::Vec};
use core::sync::atomic::{AtomicU64, Ordering};

use abi::{linux::errno, tty::Termios};

use crate::{
    cpu::irqlock::IrqSafeOnce,
    ensure,
    irq::{apic, trap},
    task,
    testing::Test,
    time,
};

pub static TESTS: &[Test] = &[
    Test { name: "tty_reader_wakes_on_a_line", min_cpus: 1, expect_fault: false, run: reader_wakes_on_a_line },
    Test { name: "tty_signal_chars_reach_the_foreground_group", min_cpus: 1, expect_fault: false, run: signal_chars },
    Test { name: "tty_queue_made_on_first_use_survives_an_interrupt_that_uses_it", min_cpus: 1, expect_fault: false, run: first_use_under_interrupt },
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

/// A vector no device uses, for [`first_use_under_interrupt`]'s self-IPI.
const VECTOR_FIRST_USE_TEST: u8 = 0x5e;
/// The value [`first_use_under_interrupt`] makes on first use, as the terminal's queues are made.
static FIRST_USE: IrqSafeOnce<u64> = IrqSafeOnce::new();
/// What the test vector's handler got from [`FIRST_USE`] (0: it has not run).
static HANDLER_GOT: AtomicU64 = AtomicU64::new(0);

fn on_first_use_vector(_frame: &mut arch::trap::TrapFrame) {
    HANDLER_GOT.store(*FIRST_USE.call_once(|| 1), Ordering::SeqCst);
    apic::eoi();
}

/// The console froze for good when its input interrupt came while a thread was making `poll`'s
/// queue on first use (busybox's first untimed `poll`, right after the first prompt): the handler
/// wanted the same queue and spun on the unfinished `spin::Once`, on the CPU whose initialiser it had
/// interrupted. Here an interrupt whose handler uses the value is raised on this CPU from inside the
/// initialiser: the initialiser must run with interrupts off (else the interrupt would come at once
/// and spin forever, so the test does not raise it then), and the handler runs once the value is
/// there and finds it.
fn first_use_under_interrupt() -> Result<(), String> {
    ensure!(FIRST_USE.get().is_none(), "the value exists before its first use (the test ran twice in one boot?)");
    trap::register(VECTOR_FIRST_USE_TEST, on_first_use_vector);
    HANDLER_GOT.store(0, Ordering::SeqCst);
    let mut interrupts_on_in_init = None;
    let mut raised = false;
    let v = *FIRST_USE.call_once(|| {
        let on = arch::interrupts::are_enabled();
        interrupts_on_in_init = Some(on);
        if !on {
            apic::send(apic::Dest::Apic(apic::id()), apic::Delivery::Fixed(VECTOR_FIRST_USE_TEST));
            // The IPI is in this CPU's IRR before the value exists (bounded: a lost IPI fails below).
            for _ in 0..1_000_000 {
                if apic::is_pending(VECTOR_FIRST_USE_TEST) {
                    raised = true;
                    break;
                }
                core::hint::spin_loop();
            }
        }
        42
    });
    ensure!(interrupts_on_in_init.is_some(), "the initialiser never ran");
    ensure!(
        interrupts_on_in_init == Some(false),
        "the initialiser ran with interrupts on: an interrupt whose handler wants the value would spin forever on this CPU"
    );
    ensure!(v == 42, "the first use got {v}, not its initialiser's 42");
    ensure!(raised, "the test interrupt never became pending during the initialiser");
    apic::deliver_pending(VECTOR_FIRST_USE_TEST);
    let deadline = time::now_ns() + 2_000 * MS;
    while HANDLER_GOT.load(Ordering::SeqCst) == 0 && time::now_ns() < deadline {
        task::sched().sleep_ns(MS);
    }
    let got = HANDLER_GOT.load(Ordering::SeqCst);
    ensure!(got == 42, "the handler of the interrupt raised during the initialiser got {got}, wanted the value 42");
    Ok(())
}
