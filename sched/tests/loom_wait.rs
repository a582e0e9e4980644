//! Loom models of the sleeping paths built on the run-queue protocol: the wait queue
//! (`sched::wait::WaitQueue`), the timed sleep (`Scheduler::sleep_ns` against the expiry of
//! sleepers by the timer and the idle loop), and `PreemptGuard`.
//!
//! `WaitQueue` and the `Scheduler` use `core` atomics and `spin` locks directly (the `sync` shim
//! covers `rq` only), so they cannot run under loom. These models mirror them step by step with the
//! real `rq` primitives (`CpuQueue`, `Entity`, `wake`) and loom locks in place of the spin locks:
//!
//! - `wait_until`, `wake_one` and `wake_all` mirror `WaitQueue::wait_until`, `wake_one` and
//!   `wake_all` in `sched/src/wait.rs`: the waiter marks itself blocked and links its node under the queue lock,
//!   re-checks its condition, and either unlinks itself (under the lock) or blocks; the waker makes
//!   the condition true, then pops a node and wakes its thread under the queue lock. The waiter's
//!   node lives in a loom cell standing for the waiter's stack frame, which the waiter overwrites
//!   once it has left `wait_until` (as the next call on that stack would): a waker that touched a
//!   node after its waiter left is reported by loom as a race, or by the node's `live` check. The
//!   list itself is a `VecDeque` of waiter indices: the intrusive list's pointer surgery is not
//!   modelled (the host tests run it), only who may touch a node and when.
//! - `block` mirrors `Scheduler::block` (`switch_path` with `Reason::Block`) and the idle loop of
//!   the CPU it leaves: `put_prev_pick_next`, the window save, `clear_on_cpu`, then picking from the
//!   CPU's queue with the `on_cpu` handshake, or `try_halt`, a halt until the reschedule interrupt
//!   (a loom condition variable) and `unhalt`; `World::wake_thread` sends that interrupt when
//!   `rq::wake` says to kick, as `Scheduler::wake_thread` does.
//! - `park_until` and `unpark` mirror `Parker::park_until` and `Parker::wake`: no lock, `Blocked`
//!   then a `SeqCst` fence then the condition on one side, the condition then a fence then
//!   `rq::wake` on the other; the model runs the futex hand-off on them, where late wakes land on
//!   later parks.
//! - The slot model mirrors `ParkSlot` (`offer`, `withdraw`, `wake`, one fence for its take and
//!   its wake) with
//!   `Parker::park_until_blocked`, as a pipe's one sleeping reader uses them: the offer before the
//!   reader's test of the readable flag, the flag's store before the writer's read of the slot.
//! - `keyed_wait` and `keyed_wake_one` mirror `KeyedWaitQueue::wait` and `wake` in
//!   `sched/src/keyed.rs` (a futex bucket): the waiter links its node under the list's lock if its
//!   check passes, parks on its parker until the node is unlinked or its stop condition holds, and
//!   leaves once its waker is `done` (taken) or under the lock (stopped); the waker unlinks the
//!   node, clears its `queued`, fences, wakes the thread and sets `done`, under the lock. A stop (a
//!   signal's flag and parker wake) races with the wake: the wait is `Ok` exactly when a waker
//!   took it.
//! - `keyed_requeue_one` mirrors `KeyedWaitQueue::requeue` moving one node to a second bucket (both
//!   locks, the lower first, the node's `home` rewritten under them); the stopped waiter leaves as
//!   `KeyedWaitQueue::leave` does, locking the bucket `home` names and checking under that lock
//!   that `home` did not move. The model checks it unlinks its node from the bucket that holds it
//!   then, never the one the node was moved out of.
//! - The sleeping-mutex model mirrors `wait::Mutex::lock` and `MutexGuard::drop` on top of the two
//!   above.
//! - The sleep model mirrors `Scheduler::sleep_ns` and `Scheduler::expire_due_sleepers` in
//!   `sched/src/scheduler.rs`: the sleeper registers on its home CPU's sleep queue (under its lock)
//!   with `sleep_fired` cleared, blocks, and after every wake-up, wherever it runs, leaves only if it
//!   sees `sleep_fired` under the home CPU's sleep-queue lock; the expiry pops due entries, sets
//!   `sleep_fired` and wakes the thread under that lock.
//! - The timed-park model mirrors `Parker::park_until_deadline_irqs_off` on
//!   `Scheduler::block_until`: the parker's protocol (blocked, fence, condition), then the sleep
//!   queue entry and a block that any wake-up ends; after it, under the home CPU's sleep-queue
//!   lock, the sleeper either sees `sleep_fired` or takes its own entry out, so no expiry reaches
//!   it once it has left.
//! - The preemption model mirrors `Scheduler::preempt_disable`, `PreemptGuard::drop`,
//!   `Scheduler::tick` (`need_resched`) and `preempt_if_needed`. A timer interrupt runs only where
//!   interrupts are enabled and stops the interrupted code while it runs: the CPU is a loom mutex
//!   that the interrupted thread holds for each of its steps (and through its interrupts-off
//!   sections) and the interrupt holds for its whole handler.
//!
//! A lost wake-up in the wait-queue models leaves every CPU halted in its idle loop, which loom
//! reports as a deadlock; in the sleep model, whose idle loops poll (to expire and to steal), it
//! shows as loom's "exceeded maximum number of branches".
//!
//! Run with: `RUSTFLAGS="--cfg loom" cargo test -p sched --release --test loom_wait`. The preemption
//! bound defaults to 3 (override with `LOOM_MAX_PREEMPTIONS`).
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use sched::rq::{CpuQueue, Entity, Queued, State, Wake, wake};
use std::collections::VecDeque;
use std::ptr::NonNull;

/// A waiter's node, on its stack while it is inside `wait_until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Node {
    /// False once the waiter has left `wait_until` (its frame is reused).
    live: bool,
    /// Linked in the wait queue's list (changed only under the list's lock).
    linked: bool,
}

/// A modelled thread.
struct Task {
    entity: Entity<Task>,
    /// Stands for the saved registers: written when a CPU switches away, read when one resumes.
    window: UnsafeCell<u64>,
    /// Stands for the thread's stack: its wait-queue node, or its memory once it has left.
    frame: UnsafeCell<Node>,
    /// `Thread::sleep_fired`: set by the expiry under the home CPU's sleep-queue lock.
    sleep_fired: AtomicBool,
}

// SAFETY: `window` is only accessed by the CPU that owns the task under the `on_cpu` protocol, and
// `frame` under the wait-queue protocol; that ownership is what these models check (loom flags any
// overlap).
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
            frame: UnsafeCell::new(Node {
                live: false,
                linked: false,
            }),
            sleep_fired: AtomicBool::new(false),
        }
    }

    fn ptr(&self) -> NonNull<Task> {
        NonNull::from(self)
    }
}

/// Two CPUs, two threads (thread `i` starts running on CPU `i`), one wait queue.
struct World {
    queues: [CpuQueue<Task>; 2],
    tasks: [Task; 2],
    /// The wait queue's list: indices of the tasks whose nodes are linked, oldest first.
    list: Mutex<VecDeque<usize>>,
    /// A second keyed bucket, the target of the requeue model (`list` is the first).
    other: Mutex<VecDeque<usize>>,
    /// Each CPU's reschedule interrupt, pending or not: a halted CPU sleeps on it.
    doorbells: [(Mutex<bool>, Condvar); 2],
}

impl World {
    fn new(pinned: bool) -> Arc<World> {
        let world = Arc::new(World {
            queues: [CpuQueue::new(), CpuQueue::new()],
            tasks: [Task::new(0, pinned), Task::new(1, pinned)],
            list: Mutex::new(VecDeque::new()),
            other: Mutex::new(VecDeque::new()),
            doorbells: [
                (Mutex::new(false), Condvar::new()),
                (Mutex::new(false), Condvar::new()),
            ],
        });
        for (cpu, task) in world.tasks.iter().enumerate() {
            // SAFETY: a new task, on no queue, belonging to `cpu`; alive for the model.
            unsafe { world.queues[cpu].activate(task.ptr()) };
            // CPU `cpu` picks it and runs it.
            assert_eq!(world.queues[cpu].lock().pop(), Some(task.ptr()));
            task.entity.set_on_cpu();
        }
        world
    }

    /// Keyed bucket `i`: 0 is `list`, where `keyed_wait` queues; 1 is `other`.
    fn bucket(&self, i: usize) -> &Mutex<VecDeque<usize>> {
        if i == 0 { &self.list } else { &self.other }
    }

    fn queue_of<'a>(&'a self) -> impl Fn(usize) -> &'a CpuQueue<Task> + 'a {
        |cpu| &self.queues[cpu]
    }

    /// `Platform::idle_wait` on `cpu`: halt until its reschedule interrupt is pending, and take it.
    fn halt(&self, cpu: usize) {
        let (pending, cv) = &self.doorbells[cpu];
        let mut pending = pending.lock().unwrap();
        while !*pending {
            pending = cv.wait(pending).unwrap();
        }
        *pending = false;
    }

    /// Send `cpu` its reschedule interrupt.
    fn kick(&self, cpu: usize) {
        let (pending, cv) = &self.doorbells[cpu];
        *pending.lock().unwrap() = true;
        cv.notify_one();
    }

    /// `Scheduler::wake_thread_deferred`: `rq::wake`, and the CPU whose reschedule interrupt its
    /// outcome asks for, which the caller sends ([`World::kick`], `Scheduler::send_kick`) after it
    /// has dropped the wait list's lock.
    ///
    /// # Safety
    /// As for `rq::wake`.
    unsafe fn wake_thread_deferred(&self, task: &Task) -> Option<usize> {
        // SAFETY: as for this function.
        match unsafe { wake(self.queue_of(), task.ptr()) } {
            Wake::Enqueued { cpu, info } if info.kick => Some(cpu),
            _ => None,
        }
    }

    /// `Scheduler::block` for `task`, running on `cpu`, then `cpu`'s idle loop until it picks the
    /// task again. The idle loop halts (`try_halt`, then [`World::halt`], then `unhalt`) rather
    /// than spin, so a wake-up that never comes leaves every CPU halted: loom reports a deadlock.
    fn block(&self, cpu: usize, task: &Task) {
        let next = {
            let mut rq = self.queues[cpu].lock();
            // SAFETY: the task runs on `cpu` and is alive.
            unsafe { rq.put_prev_pick_next(task.ptr(), false) }
        };
        if next == Some(task.ptr()) {
            // Woken before it switched away: it runs on.
            return;
        }
        assert_eq!(next, None, "only the blocking task lives on this CPU");
        save_and_release(task);
        let queue = &self.queues[cpu];
        loop {
            let picked = queue.lock().pop();
            if let Some(t) = picked {
                assert_eq!(t, task.ptr());
                resume(task);
                return;
            }
            if queue.try_halt() {
                self.halt(cpu);
                queue.unhalt();
            }
        }
    }
}

/// The switch away from `task` on its CPU: save its window, then let other CPUs run it.
fn save_and_release(task: &Task) {
    task.window.with_mut(|w| {
        // SAFETY: this CPU still owns the task (`on_cpu` is set).
        unsafe { *w += 1 };
    });
    task.entity.clear_on_cpu();
}

/// A CPU picked `task`: wait until its last CPU has saved it, take it, restore its window.
fn resume(task: &Task) {
    task.entity.wait_off_cpu();
    task.entity.set_on_cpu();
    // SAFETY: this CPU owns the task after the handshake.
    task.window.with(|w| unsafe { *w });
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// `WaitQueue::wait_until` by task `me` running on CPU `cpu`.
fn wait_until(w: &World, me: usize, cpu: usize, cond: impl Fn() -> bool) {
    if cond() {
        return;
    }
    let task = &w.tasks[me];
    task.frame.with_mut(|n| {
        // SAFETY: nobody reaches a node that is not linked (the check of this model).
        unsafe {
            *n = Node {
                live: true,
                linked: false,
            }
        }
    });
    loop {
        {
            let mut list = w.list.lock().unwrap();
            task.entity.set_blocked();
            task.frame.with_mut(|n| {
                // SAFETY: the node is only touched under the list's lock while it may be linked.
                let n = unsafe { &mut *n };
                if !n.linked {
                    n.linked = true;
                    list.push_back(me);
                }
            });
        }
        if cond() {
            let mut list = w.list.lock().unwrap();
            task.frame.with_mut(|n| {
                // SAFETY: as above.
                let n = unsafe { &mut *n };
                if n.linked {
                    n.linked = false;
                    list.retain(|&i| i != me);
                }
            });
            drop(list);
            task.entity.set_running();
            break;
        }
        w.block(cpu, task);
        // Woken: the condition first; leave (under the lock, unlinked) without linking again.
        if cond() {
            let mut list = w.list.lock().unwrap();
            task.frame.with_mut(|n| {
                // SAFETY: as above.
                let n = unsafe { &mut *n };
                if n.linked {
                    n.linked = false;
                    list.retain(|&i| i != me);
                }
            });
            drop(list);
            break;
        }
    }
    // Left `wait_until`: the frame that held the node is reused.
    task.frame.with_mut(|n| {
        // SAFETY: the node is unlinked (checked under the lock above), so no waker reaches it.
        unsafe {
            *n = Node {
                live: false,
                linked: false,
            }
        }
    });
}

/// `WaitQueue::wake_one`: pop the longest waiter and wake it under the list's lock; its reschedule
/// interrupt after the lock.
fn wake_one(w: &World) -> bool {
    let mut list = w.list.lock().unwrap();
    let Some(i) = list.pop_front() else {
        return false;
    };
    let task = &w.tasks[i];
    task.frame.with_mut(|n| {
        // SAFETY: linked nodes are only touched under the list's lock.
        let n = unsafe { &mut *n };
        assert_eq!(
            *n,
            Node {
                live: true,
                linked: true
            },
            "a waker reached a node whose waiter had left"
        );
        n.linked = false;
    });
    // SAFETY: the waiter cannot leave `wait_until` (so stays alive) before we drop the list's lock.
    let kick = unsafe { w.wake_thread_deferred(task) };
    drop(list);
    // The interrupt after the lock: the woken thread's first step takes that lock.
    if let Some(cpu) = kick {
        w.kick(cpu);
    }
    true
}

/// Task 0 waits on CPU 0 for a flag; CPU 1 sets it and wakes one waiter. Whatever the
/// interleaving, the waiter ends (never asleep with the wake-up gone), no node is touched after its
/// waiter left, and the task ends running, on no queue.
#[test]
fn wait_queue_wake_racing_the_last_check_is_never_lost() {
    model(|| {
        let w = World::new(true);
        let flag = Arc::new(AtomicBool::new(false));
        let waker = {
            let (w, flag) = (w.clone(), flag.clone());
            thread::spawn(move || {
                flag.store(true, Ordering::Release);
                wake_one(&w);
            })
        };
        wait_until(&w, 0, 0, || flag.load(Ordering::Acquire));
        waker.join().unwrap();
        assert_eq!(
            w.queues[0].lock().pop(),
            None,
            "the waiter was queued twice"
        );
        assert!(w.list.lock().unwrap().is_empty());
        assert_eq!(w.tasks[0].entity.state(), State::Running);
    });
}

/// `Parker::park_until` by task `me` (the parker's owner) running on CPU `cpu`: no list and no
/// lock; `Blocked`, a `SeqCst` fence, then the condition.
fn park_until(w: &World, me: usize, cpu: usize, cond: impl Fn() -> bool) {
    if cond() {
        return;
    }
    park_until_blocked(w, me, cpu, cond);
}

/// `Parker::wake` of task `i`'s parker, after the caller made its condition true: a `SeqCst`
/// fence, then `Scheduler::wake_thread` (the wake and its interrupt, no lock held).
fn unpark(w: &World, i: usize) {
    fence(Ordering::SeqCst);
    unpark_fenced(w, i);
}

/// [`unpark`] without its fence, for a waker whose last fence already follows its change of the
/// sleeper's condition (`ParkSlot::wake`: the fence before its read of the slot).
fn unpark_fenced(w: &World, i: usize) {
    // SAFETY: the tasks live as long as the world, as a parker's reference keeps its thread.
    if let Some(cpu) = unsafe { w.wake_thread_deferred(&w.tasks[i]) } {
        w.kick(cpu);
    }
}

/// Hand-offs each way in the parker model.
const HANDOFFS: usize = 2;

/// The futex hand-off on parkers: task 0 (CPU 0) and task 1 (CPU 1) pass a turn back and forth,
/// each sleeping on its own parker and waking the other's after giving the turn away. A wake can
/// land after its sleeper already saw the turn and left (it then hits that thread's next park, as
/// a spurious wake-up): whatever the interleaving, no wake-up is lost (loom would report every
/// CPU halted), every turn is taken once, and both tasks end running, on no queue.
#[test]
fn parker_hand_off_loses_no_wake_up() {
    model(|| {
        let w = World::new(true);
        let turn = Arc::new(AtomicUsize::new(0));
        let partner = {
            let (w, turn) = (w.clone(), turn.clone());
            thread::spawn(move || {
                for _ in 0..HANDOFFS {
                    park_until(&w, 1, 1, || turn.load(Ordering::Acquire) == 1);
                    turn.store(0, Ordering::Release);
                    unpark(&w, 0);
                }
            })
        };
        for _ in 0..HANDOFFS {
            turn.store(1, Ordering::Release);
            unpark(&w, 1);
            park_until(&w, 0, 0, || turn.load(Ordering::Acquire) == 0);
        }
        partner.join().unwrap();
        assert_eq!(turn.load(Ordering::Relaxed), 0);
        for (cpu, task) in w.tasks.iter().enumerate() {
            assert_eq!(w.queues[cpu].lock().pop(), None, "a task was left queued");
            assert_eq!(task.entity.state(), State::Running);
        }
    });
}

/// Bytes the slot model's writer sends.
const SLOT_BYTES: usize = 2;

/// A pipe's sleeping reader on a `ParkSlot` (`sched/src/wait.rs`; `PipeObj::park_reader` and
/// `wake_readers` in the kernel's `fs/pipe.rs`): task 0 (CPU 0) reads `SLOT_BYTES` bytes. On seeing
/// the readable flag false it offers itself to the slot (a compare-exchange from empty), parks
/// without a test before `Blocked` (`Parker::park_until_blocked`) until the flag is true or the
/// slot no longer holds it, withdraws its offer if it is still there, and reads under the buffer's
/// lock (which clears the flag with the last byte). Task 1 (CPU 1) writes the bytes one at a time
/// under that lock, stores the flag, then takes the slot (a `SeqCst` read, then a swap) and wakes
/// whoever it held. Whatever the interleaving, no wake-up is lost (loom would report every CPU
/// halted), every byte is read once, the slot ends empty, and both tasks end running, on no queue.
#[test]
fn park_slot_reader_loses_no_wake_up() {
    /// The slot's value: empty, or task 0's offer.
    const EMPTY: usize = 0;
    const READER: usize = 1;
    model(|| {
        let w = World::new(true);
        let buf = Arc::new(Mutex::new(0usize));
        let readable = Arc::new(AtomicBool::new(false));
        let slot = Arc::new(AtomicUsize::new(EMPTY));
        let writer = {
            let (w, buf, readable, slot) = (w.clone(), buf.clone(), readable.clone(), slot.clone());
            thread::spawn(move || {
                for _ in 0..SLOT_BYTES {
                    {
                        let mut b = buf.lock().unwrap();
                        *b += 1;
                        readable.store(true, Ordering::SeqCst);
                    }
                    // `ParkSlot::wake`: one fence, then the slot's read and the wake.
                    fence(Ordering::SeqCst);
                    if slot.load(Ordering::SeqCst) != EMPTY
                        && slot.swap(EMPTY, Ordering::SeqCst) == READER
                    {
                        unpark_fenced(&w, 0);
                    }
                }
            })
        };
        let mut got = 0;
        while got < SLOT_BYTES {
            if !readable.load(Ordering::SeqCst)
                && slot
                    .compare_exchange(EMPTY, READER, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
            {
                // `ParkSlot::offer`'s fence.
                fence(Ordering::SeqCst);
                park_until_blocked(&w, 0, 0, || {
                    readable.load(Ordering::SeqCst) || slot.load(Ordering::SeqCst) != READER
                });
                let _ = slot.compare_exchange(READER, EMPTY, Ordering::SeqCst, Ordering::Relaxed);
            }
            let mut b = buf.lock().unwrap();
            if *b > 0 {
                *b -= 1;
                got += 1;
                if *b == 0 {
                    readable.store(false, Ordering::SeqCst);
                }
            }
        }
        writer.join().unwrap();
        assert_eq!(*buf.lock().unwrap(), 0);
        assert_eq!(
            slot.load(Ordering::Relaxed),
            EMPTY,
            "an offer was left in the slot"
        );
        for (cpu, task) in w.tasks.iter().enumerate() {
            assert_eq!(w.queues[cpu].lock().pop(), None, "a task was left queued");
            assert_eq!(task.entity.state(), State::Running);
        }
    });
}

/// `Parker::park_until_blocked`: [`park_until`] without its first test.
fn park_until_blocked(w: &World, me: usize, cpu: usize, cond: impl Fn() -> bool) {
    let task = &w.tasks[me];
    loop {
        task.entity.set_blocked();
        fence(Ordering::SeqCst);
        if cond() {
            task.entity.set_running();
            break;
        }
        w.block(cpu, task);
        // Woken, maybe by a wake meant for an earlier park: check again.
        if cond() {
            break;
        }
    }
}

/// Messages each way in the mailbox model.
const MESSAGES: u64 = 2;

/// The one-slot mailbox of the in-kernel ping-pong storm (`Mailbox` in the kernel's task tests):
/// one wait queue serves both the sender (waiting while the slot is full) and the receiver
/// (waiting while it is empty). Task 0 sends `1..=MESSAGES` from CPU 0, task 1 receives on CPU 1:
/// every message arrives once and in order, both sides end, and nothing is left queued.
#[test]
fn mailbox_one_queue_serves_sender_and_receiver() {
    model(|| {
        let w = World::new(true);
        let value = Arc::new(AtomicU64::new(0));
        let full = Arc::new(AtomicBool::new(false));
        let receiver = {
            let (w, value, full) = (w.clone(), value.clone(), full.clone());
            thread::spawn(move || {
                let mut sum = 0;
                for expected in 1..=MESSAGES {
                    wait_until(&w, 1, 1, || full.load(Ordering::Acquire));
                    let got = value.load(Ordering::Relaxed);
                    assert_eq!(got, expected, "a message was lost or read twice");
                    sum += got;
                    full.store(false, Ordering::Release);
                    wake_one(&w);
                }
                sum
            })
        };
        for message in 1..=MESSAGES {
            wait_until(&w, 0, 0, || !full.load(Ordering::Acquire));
            value.store(message, Ordering::Relaxed);
            full.store(true, Ordering::Release);
            wake_one(&w);
        }
        let sum = receiver.join().unwrap();
        assert_eq!(
            sum,
            MESSAGES * (MESSAGES + 1) / 2,
            "sent and received differ"
        );
        assert!(w.list.lock().unwrap().is_empty(), "a node was left linked");
        for (cpu, task) in w.tasks.iter().enumerate() {
            assert_eq!(w.queues[cpu].lock().pop(), None, "a task was left queued");
            assert_eq!(task.entity.state(), State::Running);
        }
    });
}

/// The timed sleep's state: CPU 0's sleep queue (indices of the sleeping tasks) and whether the
/// sleeper has left `sleep_ns`.
struct Sleep {
    w: Arc<World>,
    /// CPU 0's sleep queue; every entry in it is due (the clock has passed its deadline).
    sleepers: Mutex<Vec<usize>>,
    left: AtomicBool,
    /// How many times the expiry fired the sleeper.
    fired: AtomicUsize,
    /// Which sleep task 0 takes.
    mode: Mode,
    /// The timed park's condition (the futex waiter's `taken`), set by its waker.
    cond: AtomicBool,
}

/// The sleep the sleeper takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `Scheduler::sleep_ns`: only the expiry ends it.
    Sleep,
    /// `Parker::park_until_deadline_irqs_off` on `Scheduler::block_until`: a wake-up ends it, or
    /// the expiry, which runs only if `expire` (else the deadline is out of reach).
    Timed { expire: bool },
}

/// What the sleeper did on the CPU that ran it.
enum Step {
    Left,
    SwitchedAway,
}

impl Sleep {
    /// The start of `Scheduler::sleep_ns` by task 0 on CPU 0, its home: register on the sleep queue
    /// (under its lock) with `sleep_fired` cleared and the task blocked, then block.
    fn start(&self) -> Step {
        let task = &self.w.tasks[0];
        task.frame.with_mut(|n| {
            // SAFETY: only the expiry reads it, under the sleep-queue lock taken below.
            unsafe {
                *n = Node {
                    live: true,
                    linked: false,
                }
            }
        });
        if matches!(self.mode, Mode::Timed { .. }) {
            // `park_until_deadline_irqs_off`: blocked, the fence, the condition, then
            // `block_until`: register with `sleep_fired` cleared, block.
            task.entity.set_blocked();
            fence(Ordering::SeqCst);
            if self.cond.load(Ordering::Relaxed) {
                task.entity.set_running();
                self.leave();
                return Step::Left;
            }
            {
                let mut sleepers = self.sleepers.lock().unwrap();
                task.sleep_fired.store(false, Ordering::Relaxed);
                sleepers.push(0);
            }
            return self.block_loop(0);
        }
        {
            let mut sleepers = self.sleepers.lock().unwrap();
            task.sleep_fired.store(false, Ordering::Relaxed);
            task.entity.set_blocked();
            sleepers.push(0);
        }
        self.block_loop(0)
    }

    /// `sleep_ns`'s loop from its `schedule(Block)` on `cpu`: the switch, and while the switch
    /// keeps the task (woken before it switched away), the check after a wake-up.
    fn block_loop(&self, cpu: usize) -> Step {
        let task = &self.w.tasks[0];
        loop {
            let next = {
                let mut rq = self.w.queues[cpu].lock();
                // SAFETY: the task runs on `cpu` and is alive.
                unsafe { rq.put_prev_pick_next(task.ptr(), false) }
            };
            if next != Some(task.ptr()) {
                assert_eq!(next, None);
                save_and_release(task);
                return Step::SwitchedAway;
            }
            if self.check() {
                return Step::Left;
            }
        }
    }

    /// After a wake-up, wherever the task runs: leave if the expiry fired it (seen under the home
    /// CPU's sleep-queue lock), else mark it blocked again (under that lock).
    fn check(&self) -> bool {
        let task = &self.w.tasks[0];
        if let Mode::Timed { .. } = self.mode {
            return self.check_timed();
        }
        let sleepers = self.sleepers.lock().unwrap();
        if task.sleep_fired.load(Ordering::Relaxed) {
            drop(sleepers);
            assert_eq!(
                self.fired.load(Ordering::Relaxed),
                1,
                "left before its deadline"
            );
            // Left `sleep_ns`: the thread goes on (or exits, its memory reused).
            task.frame.with_mut(|n| {
                // SAFETY: the expiry only reaches the thread under the lock we took.
                unsafe {
                    *n = Node {
                        live: false,
                        linked: false,
                    }
                }
            });
            self.left.store(true, Ordering::Release);
            return true;
        }
        task.entity.set_blocked();
        false
    }

    /// After a wake-up in `block_until`, wherever the task runs: under the home CPU's sleep-queue
    /// lock, either the expiry fired it (and popped its entry) or it takes its entry out; then the
    /// parker's condition. It leaves if the condition holds or the deadline passed; else (a wake
    /// meant for an earlier wait) it parks again.
    fn check_timed(&self) -> bool {
        let task = &self.w.tasks[0];
        let fired = {
            let mut sleepers = self.sleepers.lock().unwrap();
            let fired = task.sleep_fired.load(Ordering::Relaxed);
            if !fired {
                sleepers.retain(|&i| i != 0);
            }
            fired
        };
        if self.cond.load(Ordering::Relaxed) || fired {
            if fired {
                assert_eq!(self.fired.load(Ordering::Relaxed), 1);
            }
            self.leave();
            return true;
        }
        task.entity.set_blocked();
        fence(Ordering::SeqCst);
        if self.cond.load(Ordering::Relaxed) {
            task.entity.set_running();
            self.leave();
            return true;
        }
        let mut sleepers = self.sleepers.lock().unwrap();
        task.sleep_fired.store(false, Ordering::Relaxed);
        sleepers.push(0);
        false
    }

    /// The timed park returns: the thread goes on (or exits, its memory reused).
    fn leave(&self) {
        self.w.tasks[0].frame.with_mut(|n| {
            // SAFETY: the expiry only reaches the thread under the sleep-queue lock, through an
            // entry, and the thread has none left.
            unsafe {
                *n = Node {
                    live: false,
                    linked: false,
                }
            }
        });
        self.left.store(true, Ordering::Release);
    }

    /// `Scheduler::expire_due_sleepers` on CPU 0 (its timer interrupt or its idle loop).
    fn expire(&self) {
        let mut sleepers = self.sleepers.lock().unwrap();
        while let Some(i) = sleepers.pop() {
            let task = &self.w.tasks[i];
            task.sleep_fired.store(true, Ordering::Relaxed);
            self.fired.fetch_add(1, Ordering::Relaxed);
            // SAFETY: alive until it sees `sleep_fired`, which needs this lock.
            unsafe { wake(self.w.queue_of(), task.ptr()) };
            // `wake_thread` still reaches the thread here (its run-queue links, its CPU's state).
            task.frame.with(|n| {
                // SAFETY: the sleeper stays in `sleep_ns` until it sees `sleep_fired` under this lock.
                let n = unsafe { *n };
                assert!(
                    n.live,
                    "the expiry reached a thread that had left its sleep"
                );
            });
        }
    }

    /// CPU `cpu`'s idle loop: CPU 0 expires its sleepers, CPU 1 steals from CPU 0; either runs the
    /// sleeper when it picks it. Ends once the sleeper has left.
    fn idle(&self, cpu: usize) {
        let task = &self.w.tasks[0];
        loop {
            if self.left.load(Ordering::Acquire) {
                return;
            }
            if cpu == 0 {
                if self.mode != (Mode::Timed { expire: false }) {
                    self.expire();
                }
            } else if let Some(t) = self.w.queues[0].steal(1) {
                // SAFETY: stolen, so on no queue; `steal` made it CPU 1's.
                unsafe { self.w.queues[1].activate(t) };
            }
            let picked = self.w.queues[cpu].lock().pop();
            if let Some(t) = picked {
                assert_eq!(t, task.ptr());
                resume(task);
                if self.check() || matches!(self.block_loop(cpu), Step::Left) {
                    return;
                }
            }
            thread::yield_now();
        }
    }
}

/// Task 0 sleeps on CPU 0, whose idle loop expires it once due; meanwhile task 1, on CPU 1, wakes
/// it spuriously and exits, and CPU 1's idle loop steals it. The sleeper never leaves before the
/// expiry fired it (whichever CPU it was on when woken), leaves exactly once, and the expiry never
/// reaches it after it has left.
#[test]
fn sleep_expiry_racing_a_stray_wake_and_a_steal() {
    model(|| {
        let s = Arc::new(Sleep {
            w: World::new(false),
            sleepers: Mutex::new(Vec::new()),
            left: AtomicBool::new(false),
            fired: AtomicUsize::new(0),
            mode: Mode::Sleep,
            cond: AtomicBool::new(false),
        });
        let cpu1 = {
            let s = s.clone();
            thread::spawn(move || {
                let w = &s.w;
                // SAFETY: the task lives for the model.
                unsafe { wake(w.queue_of(), w.tasks[0].ptr()) };
                // Task 1 exits; CPU 1 goes idle.
                let t1 = &w.tasks[1];
                t1.entity.set_dead();
                let next = {
                    let mut rq = w.queues[1].lock();
                    // SAFETY: task 1 runs on CPU 1 and is alive.
                    unsafe { rq.put_prev_pick_next(t1.ptr(), false) }
                };
                // CPU 1 steals only from its idle loop: nothing is queued here yet.
                assert_eq!(next, None);
                save_and_release(t1);
                s.idle(1);
            })
        };
        if matches!(s.start(), Step::SwitchedAway) {
            s.idle(0);
        }
        cpu1.join().unwrap();
        assert!(s.left.load(Ordering::Relaxed));
        assert_eq!(s.fired.load(Ordering::Relaxed), 1);
        assert!(s.sleepers.lock().unwrap().is_empty());
        assert_eq!(w_state(&s.w), [None, None]);
        assert_eq!(s.w.tasks[0].entity.state(), State::Running);
    });
}

/// Task 0 parks with a deadline on CPU 0 (`Parker::park_until_deadline` on
/// `Scheduler::block_until`); task 1, on CPU 1, makes its condition true, wakes it and exits, and
/// CPU 1's idle loop steals it. With `expire`, CPU 0's idle loop expires it (the deadline passed)
/// racing that wake-up; without, the deadline is never reached, so only the wake-up can end the
/// park (a lost one hangs the model). The sleeper leaves exactly once, with its entry gone from
/// the sleep queue, and the expiry never reaches it after it has left.
fn timed_park_racing_a_wake(expire: bool) {
    model(move || {
        let s = Arc::new(Sleep {
            w: World::new(false),
            sleepers: Mutex::new(Vec::new()),
            left: AtomicBool::new(false),
            fired: AtomicUsize::new(0),
            mode: Mode::Timed { expire },
            cond: AtomicBool::new(false),
        });
        let cpu1 = {
            let s = s.clone();
            thread::spawn(move || {
                let w = &s.w;
                // The waker (`KeyedWaitQueue`'s `take`): the condition, the fence, the wake.
                s.cond.store(true, Ordering::Relaxed);
                fence(Ordering::SeqCst);
                // SAFETY: the task lives for the model.
                unsafe { wake(w.queue_of(), w.tasks[0].ptr()) };
                let t1 = &w.tasks[1];
                t1.entity.set_dead();
                let next = {
                    let mut rq = w.queues[1].lock();
                    // SAFETY: task 1 runs on CPU 1 and is alive.
                    unsafe { rq.put_prev_pick_next(t1.ptr(), false) }
                };
                assert_eq!(next, None);
                save_and_release(t1);
                s.idle(1);
            })
        };
        if matches!(s.start(), Step::SwitchedAway) {
            s.idle(0);
        }
        cpu1.join().unwrap();
        assert!(s.left.load(Ordering::Relaxed));
        assert!(s.fired.load(Ordering::Relaxed) <= usize::from(expire));
        assert!(s.sleepers.lock().unwrap().is_empty(), "a timer entry outlived its park");
        assert_eq!(w_state(&s.w), [None, None]);
        assert_eq!(s.w.tasks[0].entity.state(), State::Running);
    });
}

#[test]
fn timed_park_ended_by_a_wake_up() {
    timed_park_racing_a_wake(false);
}

#[test]
fn timed_park_expiry_racing_a_wake_up_and_a_steal() {
    timed_park_racing_a_wake(true);
}

/// What is left on the two run queues.
fn w_state(w: &World) -> [Option<NonNull<Task>>; 2] {
    [w.queues[0].lock().pop(), w.queues[1].lock().pop()]
}

/// One CPU's preemption state (`Cpu::local` in the scheduler), behind a loom mutex standing for
/// the CPU itself: whoever holds it runs, with interrupts (its own) held off.
struct PreemptCpu {
    preempt_count: u32,
    need_resched: bool,
    /// Preemptions of the running thread so far.
    preemptions: u32,
}

/// `Scheduler::preempt_if_needed` (interrupts disabled, the CPU held).
fn preempt_if_needed(c: &mut PreemptCpu) {
    if c.preempt_count != 0 || !c.need_resched {
        return;
    }
    // `schedule_preempt`: the switch clears the request; the thread runs again later.
    c.need_resched = false;
    c.preemptions += 1;
}

/// `Scheduler::preempt_disable`.
fn preempt_disable(cpu: &Mutex<PreemptCpu>) {
    let mut c = cpu.lock().unwrap();
    c.preempt_count += 1;
}

/// `PreemptGuard::drop`, called with interrupts enabled: whether a preemption was requested when
/// it ran, and whether it preempted.
fn preempt_enable(cpu: &Mutex<PreemptCpu>) -> (bool, bool) {
    let mut c = cpu.lock().unwrap();
    let requested = c.need_resched;
    c.preempt_count -= 1;
    let before = c.preemptions;
    if c.preempt_count == 0 {
        preempt_if_needed(&mut c);
    }
    (requested, c.preemptions != before)
}

/// A thread takes two nested guards and drops them, while the timer interrupt (the tick with an
/// expired slice and others waiting, then `preempt_if_needed`) arrives twice at any point where
/// interrupts are enabled. No preemption happens while a guard lives, the inner drop never
/// preempts, a request made while guarded is served by the outermost drop, and none is left
/// pending once preemption is enabled again.
#[test]
fn preempt_guard_nests_and_the_outermost_drop_preempts() {
    model(|| {
        let cpu = Arc::new(Mutex::new(PreemptCpu {
            preempt_count: 0,
            need_resched: false,
            preemptions: 0,
        }));
        let timer = {
            let cpu = cpu.clone();
            thread::spawn(move || {
                for _ in 0..2 {
                    let mut c = cpu.lock().unwrap();
                    c.need_resched = true;
                    preempt_if_needed(&mut c);
                }
            })
        };
        preempt_disable(&cpu);
        let at_outer = cpu.lock().unwrap().preemptions;
        preempt_disable(&cpu);
        let (_, preempted) = preempt_enable(&cpu);
        assert!(!preempted, "the inner drop preempted");
        let during = cpu.lock().unwrap().preemptions - at_outer;
        assert_eq!(during, 0, "preempted while a guard lived");
        let (requested, preempted) = preempt_enable(&cpu);
        assert_eq!(
            preempted, requested,
            "the outermost drop did not serve exactly the pending request"
        );
        timer.join().unwrap();
        let c = cpu.lock().unwrap();
        assert_eq!(c.preempt_count, 0);
        assert!(
            !c.need_resched,
            "a preemption request was left pending with preemption enabled"
        );
        assert!(c.preemptions >= 1);
    });
}

/// Critical sections per task in the sleeping-mutex model.
const LOCKS: usize = 2;

/// `wait::Mutex` (a flag taken with an Acquire compare-exchange, waiters counted in `waiting` and
/// sleeping on a wait queue, the guard's drop a Release store, a `SeqCst` fence and `wake_one` only
/// if the count is not zero): tasks 0 and 1, on CPUs 0 and 1, each take it `LOCKS` times and add
/// one to the value it guards. No two sections overlap (loom reports a race on the value
/// otherwise), no waiter sleeps through the unlock it waits for (an unlock that skips the wake
/// while a waiter is on its way to sleep would leave it halted), and the value counts every
/// section.
#[test]
fn sleeping_mutex_hands_over_without_a_lost_wake_up() {
    struct Lock {
        locked: AtomicBool,
        waiting: AtomicUsize,
        value: UnsafeCell<usize>,
    }
    // SAFETY: `value` is only reached by the holder of `locked`; that is what the model checks.
    unsafe impl Sync for Lock {}
    impl Lock {
        fn try_acquire(&self) -> bool {
            !self.locked.load(Ordering::Relaxed)
                && self
                    .locked
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
        }
    }
    fn side(w: &World, l: &Lock, me: usize) {
        for _ in 0..LOCKS {
            if !l.try_acquire() {
                l.waiting.fetch_add(1, Ordering::Relaxed);
                fence(Ordering::SeqCst);
                wait_until(w, me, me, || l.try_acquire());
                l.waiting.fetch_sub(1, Ordering::Relaxed);
            }
            l.value.with_mut(|v| {
                // SAFETY: this task holds the lock.
                unsafe { *v += 1 };
            });
            l.locked.store(false, Ordering::Release);
            fence(Ordering::SeqCst);
            if l.waiting.load(Ordering::Relaxed) != 0 {
                wake_one(w);
            }
        }
    }
    model(|| {
        let w = World::new(true);
        let l = Arc::new(Lock {
            locked: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            value: UnsafeCell::new(0),
        });
        let other = {
            let (w, l) = (w.clone(), l.clone());
            thread::spawn(move || side(&w, &l, 1))
        };
        side(&w, &l, 0);
        other.join().unwrap();
        // SAFETY: both tasks are done.
        let value = l.value.with(|v| unsafe { *v });
        assert_eq!(value, 2 * LOCKS, "a critical section was lost");
        assert!(!l.locked.load(Ordering::Relaxed));
        assert!(w.list.lock().unwrap().is_empty(), "a node was left linked");
        assert_eq!(w_state(&w), [None, None], "a task was left queued");
    });
}

/// `WaitQueue::wake_all`: pop and wake every waiter under the list's lock (the last one's interrupt
/// after it); how many there were.
fn wake_all(w: &World) -> usize {
    let mut woken = 0;
    // The last interrupt goes out after the lock, the ones before it (several woken) under it.
    let mut last: Option<usize> = None;
    let mut list = w.list.lock().unwrap();
    while let Some(i) = list.pop_front() {
        let task = &w.tasks[i];
        task.frame.with_mut(|n| {
            // SAFETY: linked nodes are only touched under the list's lock.
            let n = unsafe { &mut *n };
            assert_eq!(
                *n,
                Node {
                    live: true,
                    linked: true
                },
                "a waker reached a node whose waiter had left"
            );
            n.linked = false;
        });
        // SAFETY: as in `wake_one`.
        if let Some(cpu) = unsafe { w.wake_thread_deferred(task) }
            && let Some(earlier) = last.replace(cpu)
        {
            w.kick(earlier);
        }
        woken += 1;
    }
    drop(list);
    if let Some(cpu) = last {
        w.kick(cpu);
    }
    woken
}

/// Tasks 0 and 1 wait for one flag on CPUs 0 and 1; a third CPU sets it and wakes all. Both end
/// (neither sleeps through the wake-up), whether each found the flag, unlinked itself, or was
/// woken, and no node is reached after its waiter left.
#[test]
fn wake_all_racing_two_waiters_loses_neither() {
    model(|| {
        let w = World::new(true);
        let flag = Arc::new(AtomicBool::new(false));
        let waker = {
            let (w, flag) = (w.clone(), flag.clone());
            thread::spawn(move || {
                flag.store(true, Ordering::Release);
                assert!(wake_all(&w) <= 2);
            })
        };
        let other = {
            let (w, flag) = (w.clone(), flag.clone());
            thread::spawn(move || wait_until(&w, 1, 1, || flag.load(Ordering::Acquire)))
        };
        wait_until(&w, 0, 0, || flag.load(Ordering::Acquire));
        other.join().unwrap();
        waker.join().unwrap();
        assert!(w.list.lock().unwrap().is_empty(), "a node was left linked");
        assert_eq!(w_state(&w), [None, None], "a task was left queued");
    });
}

/// Why a keyed wait ended without being taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyedWhy {
    /// The check under the lock failed (the futex word changed): nothing was queued.
    Changed,
    /// The waiter's stop condition held (a signal) before a waker took it.
    Stopped,
}

/// The atomics of a keyed waiter's node (its links are the model's list and `Node`).
#[derive(Default)]
struct KeyedFlags {
    /// Linked: set by the waiter under the lock, cleared by whoever unlinks it.
    queued: AtomicBool,
    /// Set by the waker that took it, after its last access to the node and the thread.
    done: AtomicBool,
    /// The bucket ([`World::bucket`]) whose list holds the node: changed by a requeue under both
    /// buckets' locks.
    home: AtomicUsize,
}

/// `KeyedWaitQueue::wait` (`sched/src/keyed.rs`) by task `me` on CPU `cpu`: link the node under the
/// list's lock if `check` passes, park (`Parker::park_until_irqs_off`) until the node is unlinked
/// (`queued` false) or `stop` holds; then, taken, wait for the waker's `done`, or, stopped, leave
/// under the lock, unlinking the node if no waker did. `Ok` if and only if a waker took it.
fn keyed_wait(
    w: &World,
    me: usize,
    cpu: usize,
    flags: &KeyedFlags,
    check: impl Fn() -> bool,
    stop: impl Fn() -> bool,
) -> Result<(), KeyedWhy> {
    let task = &w.tasks[me];
    {
        let mut list = w.list.lock().unwrap();
        if !check() {
            return Err(KeyedWhy::Changed);
        }
        task.frame.with_mut(|n| {
            // SAFETY: the node is only touched under the list's lock while it may be linked.
            unsafe {
                *n = Node {
                    live: true,
                    linked: true,
                }
            }
        });
        flags.queued.store(true, Ordering::Relaxed);
        flags.done.store(false, Ordering::Relaxed);
        flags.home.store(0, Ordering::Relaxed);
        list.push_back(me);
    }
    let taken = || !flags.queued.load(Ordering::Acquire);
    let mut why = None;
    loop {
        task.entity.set_blocked();
        fence(Ordering::SeqCst);
        if taken() {
            task.entity.set_running();
            break;
        }
        if stop() {
            why = Some(KeyedWhy::Stopped);
            task.entity.set_running();
            break;
        }
        w.block(cpu, task);
        // Woken, maybe spuriously (a stop's wake for a wait that was taken meanwhile).
        if taken() {
            break;
        }
        if stop() {
            why = Some(KeyedWhy::Stopped);
            break;
        }
    }
    // Taken: leave once the waker is done. Stopped: leave under the lock, which a waker that took
    // the node meanwhile holds until it is done.
    let was_linked = if why.is_none() {
        while !flags.done.load(Ordering::Acquire) {
            thread::yield_now();
        }
        false
    } else {
        // `KeyedWaitQueue::leave`: lock the bucket `home` names, and if a requeue moved the node
        // between the load and the lock, the other one.
        loop {
            let home = flags.home.load(Ordering::Acquire);
            let mut list = w.bucket(home).lock().unwrap();
            if flags.home.load(Ordering::Relaxed) != home {
                continue;
            }
            break task.frame.with_mut(|n| {
                // SAFETY: as above.
                let n = unsafe { &mut *n };
                assert_eq!(
                    list.contains(&me),
                    n.linked,
                    "the stopped waiter locked a bucket other than the one holding its node"
                );
                let was = n.linked;
                if was {
                    n.linked = false;
                    flags.queued.store(false, Ordering::Relaxed);
                    list.retain(|&i| i != me);
                }
                was
            });
        }
    };
    // Left `wait`: the frame that held the node is reused.
    task.frame.with_mut(|n| {
        // SAFETY: the node is unlinked (checked under the lock above), so no waker reaches it.
        unsafe {
            *n = Node {
                live: false,
                linked: false,
            }
        }
    });
    match why {
        Some(why) if was_linked => Err(why),
        _ => Ok(()),
    }
}

/// `KeyedWaitQueue::wake` of one waiter: under the list's lock, unlink the oldest node, clear its
/// `queued`, a `SeqCst` fence, `rq::wake`, then set its `done`; the reschedule interrupt after the
/// lock.
fn keyed_wake_one(w: &World, flags: &[KeyedFlags; 2]) -> bool {
    keyed_wake_one_in(w, 0, flags)
}

/// [`keyed_wake_one`] on bucket `b`.
fn keyed_wake_one_in(w: &World, b: usize, flags: &[KeyedFlags; 2]) -> bool {
    let mut list = w.bucket(b).lock().unwrap();
    let Some(i) = list.pop_front() else {
        return false;
    };
    let task = &w.tasks[i];
    task.frame.with_mut(|n| {
        // SAFETY: linked nodes are only touched under the list's lock.
        let n = unsafe { &mut *n };
        assert_eq!(
            *n,
            Node {
                live: true,
                linked: true
            },
            "a waker reached a node whose waiter had left"
        );
        n.linked = false;
    });
    flags[i].queued.store(false, Ordering::Relaxed);
    fence(Ordering::SeqCst);
    // SAFETY: the waiter cannot leave `wait` (so stays alive) before it sees `done`.
    let kick = unsafe { w.wake_thread_deferred(task) };
    flags[i].done.store(true, Ordering::Release);
    drop(list);
    if let Some(cpu) = kick {
        w.kick(cpu);
    }
    true
}

/// The futex wait against a wake and a signal: task 0 waits on CPU 0 while the word is 0; one
/// thread sets the word and wakes one waiter, another stops the wait (a signal: its flag, then
/// the parker's wake). Whatever the interleaving, the wait ends, `Ok` exactly when the waker took
/// it (and `Changed` only when the word had changed before the check); no node is touched after
/// its waiter left; the task ends running, on no queue, and the list is empty.
#[test]
fn keyed_wait_against_a_wake_and_a_stop_ends_once() {
    model(|| {
        let w = World::new(true);
        let word = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let flags: Arc<[KeyedFlags; 2]> = Arc::new(Default::default());
        let waker = {
            let (w, word, flags) = (w.clone(), word.clone(), flags.clone());
            thread::spawn(move || {
                word.store(1, Ordering::Release);
                keyed_wake_one(&w, &flags)
            })
        };
        let stopper = {
            let (w, stop) = (w.clone(), stop.clone());
            thread::spawn(move || {
                stop.store(true, Ordering::SeqCst);
                unpark(&w, 0);
            })
        };
        let r = keyed_wait(
            &w,
            0,
            0,
            &flags[0],
            || word.load(Ordering::Acquire) == 0,
            || stop.load(Ordering::SeqCst),
        );
        let took = waker.join().unwrap();
        stopper.join().unwrap();
        match r {
            Ok(()) => assert!(took, "returned taken, but no waker took it"),
            Err(KeyedWhy::Stopped) => assert!(!took, "taken by a waker, yet reported stopped"),
            Err(KeyedWhy::Changed) => assert!(!took, "not queued, yet taken"),
        }
        assert!(w.list.lock().unwrap().is_empty());
        assert_eq!(
            w.queues[0].lock().pop(),
            None,
            "the waiter was queued twice"
        );
        assert_eq!(w.tasks[0].entity.state(), State::Running);
    });
}

/// The futex hand-off on the keyed queue: task 0 (CPU 0) and task 1 (CPU 1) pass a turn, each
/// waiting while the word says it is the other's, and waking one waiter after giving the turn
/// away. No wake-up is lost (loom would report every CPU halted), every turn is taken once, and
/// nothing is left queued.
#[test]
fn keyed_hand_off_loses_no_wake_up() {
    model(|| {
        let w = World::new(true);
        let turn = Arc::new(AtomicUsize::new(0));
        let flags: Arc<[KeyedFlags; 2]> = Arc::new(Default::default());
        let side = |w: &World, me: usize, turn: &AtomicUsize, flags: &[KeyedFlags; 2]| {
            while turn.load(Ordering::Acquire) != me {
                let _ = keyed_wait(
                    w,
                    me,
                    me,
                    &flags[me],
                    || turn.load(Ordering::Relaxed) != me,
                    || false,
                );
            }
            turn.store(1 - me, Ordering::Release);
            keyed_wake_one(w, flags);
        };
        let partner = {
            let (w, turn, flags) = (w.clone(), turn.clone(), flags.clone());
            thread::spawn(move || side(&w, 1, &turn, &flags))
        };
        side(&w, 0, &turn, &flags);
        partner.join().unwrap();
        assert_eq!(turn.load(Ordering::Relaxed), 0);
        assert!(w.list.lock().unwrap().is_empty());
        for (cpu, task) in w.tasks.iter().enumerate() {
            assert_eq!(w.queues[cpu].lock().pop(), None, "a task was left queued");
            assert_eq!(task.entity.state(), State::Running);
        }
    });
}

/// `KeyedWaitQueue::requeue` of one waiter from bucket `from` to bucket `to` (no wakes): both
/// buckets' locks, the lower first; the oldest node of `from` moves to the tail of `to`, still
/// linked, and its `home` names `to` before the locks go. Whether it moved one.
fn keyed_requeue_one(w: &World, from: usize, to: usize, flags: &[KeyedFlags; 2]) -> bool {
    assert_ne!(from, to);
    let lower = w.bucket(from.min(to)).lock().unwrap();
    let upper = w.bucket(from.max(to)).lock().unwrap();
    let (mut src, mut dst) = if from < to {
        (lower, upper)
    } else {
        (upper, lower)
    };
    let Some(i) = src.pop_front() else {
        return false;
    };
    w.tasks[i].frame.with(|n| {
        // SAFETY: linked nodes are only touched under their list's lock, which we hold.
        let n = unsafe { *n };
        assert_eq!(
            n,
            Node {
                live: true,
                linked: true
            },
            "a requeue reached a node whose waiter had left"
        );
    });
    dst.push_back(i);
    flags[i].home.store(to, Ordering::Release);
    true
}

/// The futex requeue against a stopped waiter: task 0 waits on CPU 0 in bucket 0; one thread
/// requeues it to bucket 1 (both locks, lower first, moving its `home`), another stops the wait (a
/// timeout or a signal: its flag, then the parker's wake), a third wakes one waiter of bucket 1.
/// Whatever the interleaving, the wait ends once, `Ok` exactly when the waker took it; a stopped
/// waiter unlinks its node from the bucket that holds it at that moment, never the one it was
/// moved out of; no node is touched after its waiter left; both buckets end empty and the task
/// running, on no queue.
#[test]
fn keyed_requeue_against_a_stop_leaves_the_right_bucket() {
    model(|| {
        let w = World::new(true);
        let stop = Arc::new(AtomicBool::new(false));
        let flags: Arc<[KeyedFlags; 2]> = Arc::new(Default::default());
        let requeuer = {
            let (w, flags) = (w.clone(), flags.clone());
            thread::spawn(move || keyed_requeue_one(&w, 0, 1, &flags))
        };
        let stopper = {
            let (w, stop) = (w.clone(), stop.clone());
            thread::spawn(move || {
                stop.store(true, Ordering::SeqCst);
                unpark(&w, 0);
            })
        };
        let waker = {
            let (w, flags) = (w.clone(), flags.clone());
            thread::spawn(move || keyed_wake_one_in(&w, 1, &flags))
        };
        let r = keyed_wait(&w, 0, 0, &flags[0], || true, || stop.load(Ordering::SeqCst));
        let moved = requeuer.join().unwrap();
        stopper.join().unwrap();
        let took = waker.join().unwrap();
        assert!(
            !took || moved,
            "woken in bucket 1 without being moved there"
        );
        match r {
            Ok(()) => assert!(took, "returned taken, but no waker took it"),
            Err(KeyedWhy::Stopped) => assert!(!took, "taken by a waker, yet reported stopped"),
            Err(KeyedWhy::Changed) => panic!("the check cannot fail here"),
        }
        assert!(
            w.list.lock().unwrap().is_empty(),
            "bucket 0 was left non-empty"
        );
        assert!(
            w.other.lock().unwrap().is_empty(),
            "bucket 1 was left non-empty"
        );
        assert_eq!(
            w.queues[0].lock().pop(),
            None,
            "the waiter was queued twice"
        );
        assert_eq!(w.tasks[0].entity.state(), State::Running);
    });
}
