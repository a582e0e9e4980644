//! Loom models of the run-queue protocol (`sched::rq`): stealing, wake-ups racing steals and local
//! pops, the `on_cpu` handshake, a blocked thread halting in place, and a wake-up racing a
//! waiter's check-then-sleep. Each loom thread
//! plays one CPU; a task's "window" is a loom cell, so a CPU resuming a task whose window is still
//! being saved elsewhere is reported as a data race, and "running" a task counts its runs.
//!
//! Run with: `RUSTFLAGS="--cfg loom" cargo test -p sched --release --test loom`. The preemption
//! bound defaults to 3 (override with `LOOM_MAX_PREEMPTIONS`).
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use sched::rq::{CpuQueue, Entity, Queued, State, Wake, wake};
use std::ptr::NonNull;

/// A modelled thread.
struct Task {
    entity: Entity<Task>,
    /// Stands for the saved registers: written when a CPU switches away, read when one resumes.
    window: UnsafeCell<u64>,
    runs: AtomicUsize,
}

// SAFETY: `window` is only accessed by the CPU that owns the task under the `on_cpu` protocol; that
// ownership is exactly what these models check (loom flags any overlap).
unsafe impl Sync for Task {}

// SAFETY: `entity` is a field of `self`.
unsafe impl Queued for Task {
    fn entity(&self) -> &Entity<Task> {
        &self.entity
    }
}

impl Task {
    fn new(cpu: usize, pinned: bool) -> Task {
        Task {
            entity: Entity::new(cpu, pinned),
            window: UnsafeCell::new(0),
            runs: AtomicUsize::new(0),
        }
    }

    fn ptr(&self) -> NonNull<Task> {
        NonNull::from(self)
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// What a CPU does with a task it picked: wait until its old CPU has finished saving it, take it,
/// "run" it (read and write its window), and switch away from it.
fn run(t: NonNull<Task>) {
    // SAFETY: every task lives in an `Arc` held by the model for its whole duration.
    let t = unsafe { t.as_ref() };
    t.entity.wait_off_cpu();
    t.entity.set_on_cpu();
    t.window.with_mut(|w| {
        // SAFETY: this CPU owns the task until `clear_on_cpu`.
        unsafe { *w += 1 };
    });
    t.runs.fetch_add(1, Ordering::Relaxed);
    t.entity.clear_on_cpu();
}

/// Run everything still queued.
fn drain(q: &CpuQueue<Task>) {
    loop {
        let next = q.lock().pop();
        match next {
            Some(t) => run(t),
            None => break,
        }
    }
}

/// CPU 0 pops locally while CPU 1 steals from CPU 0: each queued task runs exactly once, and the
/// pinned one never moves.
#[test]
fn steal_racing_a_local_pop_runs_every_task_once() {
    model(|| {
        let q0 = Arc::new(CpuQueue::<Task>::new());
        let q1 = Arc::new(CpuQueue::<Task>::new());
        let tasks = Arc::new([Task::new(0, true), Task::new(0, false)]);
        for t in tasks.iter() {
            // SAFETY: new tasks, on no queue, belonging to CPU 0; alive for the model.
            unsafe { q0.activate(t.ptr()) };
        }
        let thief = {
            let (q0, q1, tasks) = (q0.clone(), q1.clone(), tasks.clone());
            thread::spawn(move || {
                if let Some(t) = q0.steal(1) {
                    assert_eq!(t, tasks[1].ptr(), "a pinned task was stolen");
                    // SAFETY: stolen, so on no queue; `steal` made it CPU 1's.
                    unsafe { q1.activate(t) };
                    drain(&q1);
                }
            })
        };
        let next = q0.lock().pop();
        if let Some(t) = next {
            run(t);
        }
        thief.join().unwrap();
        drain(&q0);
        drain(&q1);
        for t in tasks.iter() {
            assert_eq!(t.runs.load(Ordering::Relaxed), 1);
        }
        assert_eq!(tasks[0].entity.cpu(), 0);
    });
}

/// A blocked task is woken (onto CPU 0) while CPU 1 steals from CPU 0 and CPU 0 pops: neither the
/// woken task nor the queued one is lost or run twice.
#[test]
fn wake_racing_a_steal_and_a_local_pop_loses_nothing() {
    model(|| {
        let q0 = Arc::new(CpuQueue::<Task>::new());
        let q1 = Arc::new(CpuQueue::<Task>::new());
        let tasks = Arc::new([Task::new(0, false), Task::new(0, false)]);
        // Task 0 blocked (off its queue), task 1 queued.
        tasks[0].entity.set_blocked();
        // SAFETY: new task, on no queue, CPU 0's.
        unsafe { q0.activate(tasks[1].ptr()) };
        let waker = {
            let (q0, q1, tasks) = (q0.clone(), q1.clone(), tasks.clone());
            thread::spawn(move || {
                let queue_of = |c: usize| if c == 0 { &*q0 } else { &*q1 };
                // SAFETY: the task lives for the model.
                let outcome = unsafe { wake(queue_of, tasks[0].ptr()) };
                assert!(
                    matches!(outcome, Wake::Enqueued { cpu: 0, .. }),
                    "{outcome:?}"
                );
            })
        };
        let thief = {
            let (q0, q1) = (q0.clone(), q1.clone());
            thread::spawn(move || {
                if let Some(t) = q0.steal(1) {
                    // SAFETY: stolen, so on no queue; now CPU 1's.
                    unsafe { q1.activate(t) };
                    drain(&q1);
                }
            })
        };
        let next = q0.lock().pop();
        if let Some(t) = next {
            run(t);
        }
        waker.join().unwrap();
        thief.join().unwrap();
        drain(&q0);
        drain(&q1);
        for t in tasks.iter() {
            assert_eq!(t.runs.load(Ordering::Relaxed), 1);
            assert_eq!(t.entity.state(), State::Running);
        }
    });
}

/// CPU 1 of the `on_cpu` models: steals from CPU 0, and if it got the task, waits for CPU 0 to
/// let go of it (`on_cpu`) before it resumes the task's window, which must then be complete (42),
/// and counts the run.
fn spawn_thief(q0: &Arc<CpuQueue<Task>>, q1: &Arc<CpuQueue<Task>>, task: &Arc<Task>) -> thread::JoinHandle<()> {
    let (q0, q1, task) = (q0.clone(), q1.clone(), task.clone());
    thread::spawn(move || {
        if let Some(t) = q0.steal(1) {
            // SAFETY: stolen, so on no queue; now CPU 1's.
            unsafe { q1.activate(t) };
            let t = q1.lock().pop().unwrap();
            // SAFETY: alive for the model.
            let t = unsafe { t.as_ref() };
            t.entity.wait_off_cpu();
            t.entity.set_on_cpu();
            // SAFETY: ours after the handshake.
            let window = t.window.with(|w| unsafe { *w });
            assert_eq!(window, 42, "resumed a window that was not completely saved");
            task.runs.fetch_add(1, Ordering::Relaxed);
            t.entity.clear_on_cpu();
        }
    })
}

/// CPU 0 of the `on_cpu` models switches away from `task`: it saves the window, then the next
/// thread clears `on_cpu`.
fn switch_away(task: &Task) {
    task.window.with_mut(|w| {
        // SAFETY: CPU 0 still owns the task (on_cpu is set).
        unsafe { *w = 42 };
    });
    task.entity.clear_on_cpu();
}

/// The end of an `on_cpu` model, once every CPU is done: exactly one of these befell the task: CPU
/// 0 kept it (`kept`), the thief ran it, or it still waits on CPU 0's queue; and it is runnable.
fn assert_one_fate(q0: &CpuQueue<Task>, task: &Task, kept: bool) {
    let queued = q0.lock().pop();
    let fates = [kept, task.runs.load(Ordering::Relaxed) == 1, queued == Some(task.ptr())];
    assert_eq!(fates.iter().filter(|&&f| f).count(), 1, "kept, stolen, queued: {fates:?}");
    assert_eq!(task.entity.state(), State::Running);
}

/// CPU 0 runs a task that blocks and switches away (saving its window, then clearing `on_cpu`);
/// CPU 2 wakes it onto CPU 0's queue; CPU 1 steals it. The thief must see the complete window
/// (loom reports a race otherwise), and the task is never lost.
#[test]
fn on_cpu_handshake_orders_the_save_before_a_thief_resumes() {
    model(|| {
        let q0 = Arc::new(CpuQueue::<Task>::new());
        let q1 = Arc::new(CpuQueue::<Task>::new());
        let task = Arc::new(Task::new(0, false));
        // CPU 0 picked it and runs it.
        // SAFETY: new task, on no queue, CPU 0's.
        unsafe { q0.activate(task.ptr()) };
        assert_eq!(q0.lock().pop(), Some(task.ptr()));
        task.entity.set_on_cpu();

        // Set once the task has marked itself blocked: a real waker only wakes a thread it found
        // on a wait queue, which the thread joins after marking itself blocked.
        let published = Arc::new(AtomicBool::new(false));
        let waker = {
            let (q0, q1, task, published) =
                (q0.clone(), q1.clone(), task.clone(), published.clone());
            thread::spawn(move || {
                while !published.load(Ordering::Acquire) {
                    thread::yield_now();
                }
                let queue_of = |c: usize| if c == 0 { &*q0 } else { &*q1 };
                // SAFETY: the task lives for the model.
                unsafe { wake(queue_of, task.ptr()) };
            })
        };
        let thief = spawn_thief(&q0, &q1, &task);
        // CPU 0: the task blocks and calls the switch path.
        task.entity.set_blocked();
        published.store(true, Ordering::Release);
        let next = {
            let mut rq = q0.lock();
            // SAFETY: the task runs on CPU 0.
            unsafe { rq.put_prev_pick_next(task.ptr(), false) }
        };
        let kept = next == Some(task.ptr());
        if !kept {
            assert_eq!(next, None);
            switch_away(&task);
        }
        waker.join().unwrap();
        thief.join().unwrap();
        // Kept means a wake-up came before the switch path.
        assert_one_fate(&q0, &task, kept);
    });
}

/// The wait-queue protocol against a waker on another CPU: the waiter marks itself blocked and
/// links itself (under the wait-queue lock) before its last check of the condition; the waker sets
/// the condition before looking at the queue. Whatever the interleaving, the waiter ends up
/// running or queued: never asleep with the wake-up gone.
#[test]
fn wake_up_racing_check_then_sleep_is_never_lost() {
    model(|| {
        let q0 = Arc::new(CpuQueue::<Task>::new());
        let task = Arc::new(Task::new(0, false));
        // SAFETY: new task, on no queue, CPU 0's.
        unsafe { q0.activate(task.ptr()) };
        assert_eq!(q0.lock().pop(), Some(task.ptr()));
        task.entity.set_on_cpu();
        let linked = Arc::new(Mutex::new(false));
        let condition = Arc::new(AtomicBool::new(false));

        let waker = {
            let (q0, task, linked, condition) =
                (q0.clone(), task.clone(), linked.clone(), condition.clone());
            thread::spawn(move || {
                condition.store(true, Ordering::Release);
                let mut l = linked.lock().unwrap();
                if *l {
                    *l = false;
                    // SAFETY: the waiter cannot leave its wait while we hold the wait-queue lock.
                    unsafe { wake(|_| &*q0, task.ptr()) };
                }
            })
        };
        // The waiter, on CPU 0.
        {
            let mut l = linked.lock().unwrap();
            task.entity.set_blocked();
            *l = true;
        }
        let running = if condition.load(Ordering::Acquire) {
            *linked.lock().unwrap() = false;
            task.entity.set_running();
            true
        } else {
            let next = {
                let mut rq = q0.lock();
                // SAFETY: the task runs on CPU 0.
                unsafe { rq.put_prev_pick_next(task.ptr(), false) }
            };
            if next != Some(task.ptr()) {
                task.entity.clear_on_cpu();
            }
            next == Some(task.ptr())
        };
        waker.join().unwrap();
        let queued = q0.lock().pop() == Some(task.ptr());
        assert!(
            running ^ queued,
            "running {running}, queued {queued}: the wake-up was lost or doubled"
        );
        assert_eq!(task.entity.state(), State::Running);
    });
}

/// A task that blocks on CPU 0 with nothing else there halts in place: CPU 0 halts still holding
/// it (`on_cpu`), while CPU 2 wakes it onto CPU 0's queue and CPU 1 (its idle loop) steals from
/// CPU 0. After the halt CPU 0 takes the task back only if it is next in its queue. CPU 0 halts
/// only while the task is blocked (`try_halt_blocked`), so a thief never waits for the `on_cpu` of
/// a task whose CPU halted with nobody to kick it: every interleaving ends (a halt that is never
/// kicked is a deadlock), the thief sees the complete window, and the task runs on,
/// is run by the thief, or waits on CPU 0's queue, exactly one of them.
#[test]
fn halt_in_place_is_always_kicked_before_a_thief_waits_on_it() {
    model(|| {
        let q0 = Arc::new(CpuQueue::<Task>::new());
        let q1 = Arc::new(CpuQueue::<Task>::new());
        let task = Arc::new(Task::new(0, false));
        // SAFETY: new task, on no queue, CPU 0's.
        unsafe { q0.activate(task.ptr()) };
        assert_eq!(q0.lock().pop(), Some(task.ptr()));
        task.entity.set_on_cpu();

        // As in `on_cpu_handshake_orders_the_save_before_a_thief_resumes`.
        let published = Arc::new(AtomicBool::new(false));
        // The reschedule IPI: set by the waker when its enqueue claimed the kick; CPU 0's halt
        // blocks on it (a halt never kicked is then a deadlock, which loom reports).
        let kicked = Arc::new((Mutex::new(false), Condvar::new()));
        let waker = {
            let (q0, q1, task, published, kicked) =
                (q0.clone(), q1.clone(), task.clone(), published.clone(), kicked.clone());
            thread::spawn(move || {
                while !published.load(Ordering::Acquire) {
                    thread::yield_now();
                }
                let queue_of = |c: usize| if c == 0 { &*q0 } else { &*q1 };
                // SAFETY: the task lives for the model.
                if let Wake::Enqueued { info, .. } = unsafe { wake(queue_of, task.ptr()) }
                    && info.kick
                {
                    *kicked.0.lock().unwrap() = true;
                    kicked.1.notify_one();
                }
            })
        };
        let thief = spawn_thief(&q0, &q1, &task);
        // CPU 0: the task blocks, and the switch path finds nothing else to run.
        task.entity.set_blocked();
        published.store(true, Ordering::Release);
        let next = {
            let mut rq = q0.lock();
            // SAFETY: the task runs on CPU 0.
            unsafe { rq.put_prev_pick_next(task.ptr(), false) }
        };
        let mut kept = next == Some(task.ptr());
        if !kept {
            assert_eq!(next, None);
            // Halt in place, until the kick.
            // SAFETY: the task lives for the model.
            if unsafe { q0.try_halt_blocked(task.ptr()) } {
                let mut k = kicked.0.lock().unwrap();
                while !*k {
                    k = kicked.1.wait(k).unwrap();
                }
                drop(k);
                q0.unhalt();
            }
            kept = q0.lock().pop_if_oldest(task.ptr());
            if !kept {
                // Not queued here (not woken, or stolen): switch to the idle thread.
                switch_away(&task);
            }
        }
        waker.join().unwrap();
        thief.join().unwrap();
        assert_one_fate(&q0, &task, kept);
    });
}
