//! The peer side: the same hand-offs done through Linux, by small programs of our own.
//!
//! Each function pins its threads or processes, runs a ping-pong where the measuring side (the
//! calling thread, "A") hands the turn to a partner ("B") and times until it comes back, and
//! checks that every hand-off was answered exactly once before returning per-switch samples.
//! Rows: `sched_yield` between two threads on one CPU (optionally with vector state touched
//! between yields), a futex hand-off on one or two CPUs, the bare `getppid` system call, and a
//! one-byte pipe ping-pong between two processes. Neighbours: `measure` for timing, `host` for
//! pinning, `main` for the row list.

use std::{
    hint::black_box,
    io::{self, Read, Write},
    os::fd::AsRawFd,
    ptr,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread,
};

use crate::{
    host::pin_to_cpu,
    measure::{BATCH, Sampling, cycles_per_op},
};

/// The turn word's values: whose move it is, or that the partner should leave.
const TURN_A: u32 = 0;
const TURN_B: u32 = 1;
const STOP: u32 = 2;

/// Per-switch samples of a `sched_yield` ping-pong, and how many yields A needed per round trip
/// (1.0 when every yield switched straight to the partner).
pub struct YieldPingPong {
    pub per_switch_cycles: Vec<f64>,
    pub yields_per_round_trip: f64,
}

/// Two threads pinned to `cpu` pass a turn back and forth, each calling `sched_yield` until the
/// turn is its own, and each calling `between_yields` before every yield (to keep vector state
/// live, or nothing). A round trip is two switches; samples are per switch.
pub fn sched_yield_pair(
    sampling: Sampling,
    cpu: usize,
    between_yields: impl Fn() + Clone + Send + 'static,
) -> io::Result<YieldPingPong> {
    pin_to_cpu(cpu)?;
    let turn = Arc::new(AtomicU32::new(TURN_A));
    let partner = {
        let turn = Arc::clone(&turn);
        let between_yields = between_yields.clone();
        spawn_pinned(cpu, move || {
            let mut nr_answers = 0;
            loop {
                match turn.load(Ordering::Acquire) {
                    TURN_B => {
                        nr_answers += 1;
                        turn.store(TURN_A, Ordering::Release);
                    }
                    STOP => return nr_answers,
                    _ => {
                        between_yields();
                        sched_yield();
                    }
                }
            }
        })?
    };
    let mut nr_yields = 0_usize;
    let per_switch_cycles = cycles_per_op(sampling, 2, || {
        turn.store(TURN_B, Ordering::Release);
        while turn.load(Ordering::Acquire) != TURN_A {
            between_yields();
            sched_yield();
            nr_yields += 1;
        }
    });
    turn.store(STOP, Ordering::Release);
    let nr_answers = partner.join().expect("the yield partner panicked").expect("the partner was pinned");
    assert_eq!(nr_answers, sampling.nr_calls(), "every hand-off must be answered exactly once");
    Ok(YieldPingPong { per_switch_cycles, yields_per_round_trip: nr_yields as f64 / sampling.nr_calls() as f64 })
}

/// Start a partner thread pinned to `cpu` and return once it is pinned, so a pinning failure is
/// an error here rather than a measurer waiting forever for a partner that never answers. The
/// handle yields `None` only when pinning failed, which this function has already reported.
fn spawn_pinned<T: Send + 'static>(
    cpu: usize,
    body: impl FnOnce() -> T + Send + 'static,
) -> io::Result<thread::JoinHandle<Option<T>>> {
    let (pinned_tx, pinned_rx) = mpsc::channel();
    let partner = thread::spawn(move || {
        let pinned = pin_to_cpu(cpu);
        let ok = pinned.is_ok();
        // The receiver is alive: `spawn_pinned` waits for this message.
        let _ = pinned_tx.send(pinned);
        ok.then(body)
    });
    match pinned_rx.recv() {
        Ok(Ok(())) => Ok(partner),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(io::Error::other("the partner thread died before pinning itself")),
    }
}

fn sched_yield() {
    // SAFETY: sched_yield takes no arguments and touches no memory of ours.
    unsafe { libc::sched_yield() };
}

/// Sleep while `word` holds `expected` (returns at once if it no longer does, or on a wake-up).
fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: `word` is a live, aligned u32 for the whole call; a null timeout means no timeout,
    // and FUTEX_WAIT ignores the remaining arguments.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ptr::null::<libc::timespec>(),
            ptr::null::<u32>(),
            0_u32,
        )
    };
}

/// Wake one thread sleeping on `word`.
fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE only uses it as a key, and ignores the
    // remaining arguments.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1_u32,
            ptr::null::<libc::timespec>(),
            ptr::null::<u32>(),
            0_u32,
        )
    };
}

/// A, pinned to `cpu_a`, hands the turn to B, pinned to `cpu_b`, with FUTEX_WAKE and sleeps in
/// FUTEX_WAIT until B hands it back the same way. With `cpu_a == cpu_b` that is a sleep/wake
/// hand-off on one CPU; otherwise each hop is a cross-CPU wake-up. Samples are per hop (half a
/// round trip).
pub fn futex_pair(sampling: Sampling, cpu_a: usize, cpu_b: usize) -> io::Result<Vec<f64>> {
    pin_to_cpu(cpu_a)?;
    let turn = Arc::new(AtomicU32::new(TURN_A));
    let partner = {
        let turn = Arc::clone(&turn);
        spawn_pinned(cpu_b, move || {
            let mut nr_answers = 0;
            loop {
                match turn.load(Ordering::Acquire) {
                    TURN_B => {
                        nr_answers += 1;
                        turn.store(TURN_A, Ordering::Release);
                        futex_wake(&turn);
                    }
                    STOP => return nr_answers,
                    _ => futex_wait(&turn, TURN_A),
                }
            }
        })?
    };
    let per_hop_cycles = cycles_per_op(sampling, 2, || {
        turn.store(TURN_B, Ordering::Release);
        futex_wake(&turn);
        while turn.load(Ordering::Acquire) == TURN_B {
            futex_wait(&turn, TURN_B);
        }
    });
    turn.store(STOP, Ordering::Release);
    futex_wake(&turn);
    let nr_answers = partner.join().expect("the futex partner panicked").expect("the partner was pinned");
    assert_eq!(nr_answers, sampling.nr_calls(), "every hand-off must be answered exactly once");
    Ok(per_hop_cycles)
}

/// The bare cost of entering and leaving the kernel: `getppid` through `syscall(2)`, timed in
/// batches of [`BATCH`] calls; samples are per call.
pub fn getppid(sampling: Sampling) -> Vec<f64> {
    cycles_per_op(sampling, BATCH, || {
        for _ in 0..BATCH {
            // SAFETY: getppid takes no arguments and cannot fail.
            black_box(unsafe { libc::syscall(libc::SYS_getppid) });
        }
    })
}

/// lmbench `lat_ctx` style: a parent and a forked child, both on the calling thread's CPU (the
/// child inherits the affinity), pass one byte back and forth through two pipes; the child
/// answers each byte with its successor. Samples are per half round trip (one process switch
/// plus a pipe write and read).
pub fn pipe_pingpong(sampling: Sampling, cpu: usize) -> io::Result<Vec<f64>> {
    pin_to_cpu(cpu)?;
    let (to_child_rx, mut to_child_tx) = io::pipe()?;
    let (mut to_parent_rx, to_parent_tx) = io::pipe()?;
    // SAFETY: the child only calls async-signal-safe functions (read, write, _exit) and never
    // allocates or unwinds, so no lock another thread held at the fork can block or corrupt it;
    // it leaves with _exit, so no destructor of the parent's objects runs twice.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let (rx, tx) = (to_child_rx.as_raw_fd(), to_parent_tx.as_raw_fd());
        // Close the child's copies of the parent's ends, or the child would never see EOF when
        // the parent closes its write end. The owners are never dropped here (we leave by _exit).
        // SAFETY: both descriptors are open and nothing else in the child uses them.
        unsafe {
            libc::close(to_child_tx.as_raw_fd());
            libc::close(to_parent_rx.as_raw_fd());
        }
        let mut byte = 0_u8;
        loop {
            // SAFETY: `byte` is one writable byte; `rx` is the open read end of the parent's pipe.
            let nr_read = unsafe { libc::read(rx, (&raw mut byte).cast(), 1) };
            if nr_read != 1 {
                // EOF (the parent closed its end) is the normal way out; an error is not.
                // SAFETY: _exit ends the child at once, running no destructors or atexit handlers.
                unsafe { libc::_exit(if nr_read == 0 { 0 } else { 1 }) };
            }
            byte = byte.wrapping_add(1);
            // SAFETY: `byte` is one readable byte; `tx` is the open write end back to the parent.
            if unsafe { libc::write(tx, (&raw const byte).cast(), 1) } != 1 {
                // SAFETY: as above.
                unsafe { libc::_exit(1) };
            }
        }
    }
    drop((to_child_rx, to_parent_tx));
    let mut sent = 0_u8;
    let mut nr_wrong_answers = 0_usize;
    let mut io_error = None;
    let per_half_round_trip_cycles = cycles_per_op(sampling, 2, || {
        let mut answer = [0_u8];
        let result = to_child_tx.write_all(&[sent]).and_then(|()| to_parent_rx.read_exact(&mut answer));
        if let Err(err) = result {
            io_error.get_or_insert(err);
        } else if answer[0] != sent.wrapping_add(1) {
            nr_wrong_answers += 1;
        }
        sent = sent.wrapping_add(1);
    });
    drop(to_child_tx);
    let mut status = 0;
    // SAFETY: `pid` is our own child and `status` is a writable int.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(io::Error::last_os_error());
    }
    if let Some(err) = io_error {
        return Err(err);
    }
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the pipe child failed: status {status}");
    assert_eq!(nr_wrong_answers, 0, "every byte must come back as its successor");
    Ok(per_half_round_trip_cycles)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{host::allowed_cpus, vector::LiveVectors};

    const TINY: Sampling = Sampling { nr_warmup: 5, nr_samples: 50 };

    fn first_cpu() -> usize {
        allowed_cpus().unwrap()[0]
    }

    #[test]
    fn sched_yield_pair_answers_every_hand_off_and_yields_at_least_once_per_round_trip() {
        let cpu = first_cpu();
        let pong = thread::spawn(move || sched_yield_pair(TINY, cpu, || {})).join().unwrap().unwrap();
        assert_eq!(pong.per_switch_cycles.len(), TINY.nr_samples);
        assert!(pong.yields_per_round_trip >= 1.0);
    }

    #[test]
    fn sched_yield_pair_with_live_vector_state_answers_every_hand_off() {
        let cpu = first_cpu();
        let vectors = Arc::new(LiveVectors::new().unwrap());
        let touch = move || vectors.touch();
        let pong = thread::spawn(move || sched_yield_pair(TINY, cpu, touch)).join().unwrap().unwrap();
        assert_eq!(pong.per_switch_cycles.len(), TINY.nr_samples);
    }

    #[test]
    fn futex_pair_on_one_cpu_answers_every_hand_off_with_one_sample_per_round_trip() {
        let cpu = first_cpu();
        let samples = thread::spawn(move || futex_pair(TINY, cpu, cpu)).join().unwrap().unwrap();
        assert_eq!(samples.len(), TINY.nr_samples);
    }

    #[test]
    fn futex_pair_across_cpus_answers_every_hand_off_with_one_sample_per_round_trip() {
        let cpus = allowed_cpus().unwrap();
        let (a, b) = (cpus[0], *cpus.last().unwrap());
        let samples = thread::spawn(move || futex_pair(TINY, a, b)).join().unwrap().unwrap();
        assert_eq!(samples.len(), TINY.nr_samples);
    }

    #[test]
    fn pipe_pingpong_gets_every_byte_back_as_its_successor() {
        // pipe_pingpong itself asserts the answers and the child's clean exit.
        let cpu = first_cpu();
        let samples = thread::spawn(move || pipe_pingpong(TINY, cpu)).join().unwrap().unwrap();
        assert_eq!(samples.len(), TINY.nr_samples);
    }

    #[test]
    fn a_partner_that_cannot_be_pinned_is_an_error_not_a_hang() {
        let not_allowed = allowed_cpus().unwrap().last().unwrap() + 1;
        assert!(spawn_pinned(not_allowed, || ()).is_err());
    }

    #[test]
    fn getppid_returns_one_sample_per_batch() {
        assert_eq!(getppid(TINY).len(), TINY.nr_samples);
    }
}
