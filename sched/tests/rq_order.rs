//! The run queue's round-robin order through the switch path's `put_prev_pick_next`, with pinned
//! and migratable threads mixed: the thread queued longest runs next and the one stopping goes
//! behind everything queued, whichever of the two FIFOs each is on (including the case of one
//! queued thread trading places with the running one).
#![cfg(not(loom))]

use sched::rq::{CpuQueue, Entity, Queued};
use std::ptr::NonNull;

struct Task {
    entity: Entity<Task>,
}

// SAFETY: `entity` is a field of `self`.
unsafe impl Queued for Task {
    fn entity(&self) -> &Entity<Task> {
        &self.entity
    }
}

fn tasks(pinned: &[bool]) -> Vec<Box<Task>> {
    pinned
        .iter()
        .map(|&p| Box::new(Task { entity: Entity::new(0, p) }))
        .collect()
}

/// Run `n` switches from `running`, all yields, and return the indices of the threads that ran.
fn yields(q: &CpuQueue<Task>, ts: &[Box<Task>], mut running: usize, n: usize) -> Vec<usize> {
    let index = |p: NonNull<Task>| ts.iter().position(|t| NonNull::from(&**t) == p).unwrap();
    let mut ran = Vec::new();
    for _ in 0..n {
        let next = {
            let mut rq = q.lock();
            // SAFETY: `running` is the running thread of this queue's CPU, valid for the test.
            unsafe { rq.put_prev_pick_next(NonNull::from(&*ts[running]), false) }
        };
        running = index(next.unwrap());
        ran.push(running);
    }
    ran
}

fn check(pinned: &[bool]) {
    let ts = tasks(pinned);
    let q = CpuQueue::new();
    // All queued in order, then the oldest, thread 0, taken to run.
    for t in &ts {
        // SAFETY: the task is valid for the test, on no queue, and belongs to CPU 0.
        unsafe { q.activate(NonNull::from(&**t)) };
    }
    let first = q.lock().pop();
    assert_eq!(first, Some(NonNull::from(&*ts[0])));
    let ts_len = ts.len();
    let n = 3 * ts_len;
    let ran = yields(&q, &ts, 0, n);
    let want: Vec<usize> = (0..n).map(|i| (i + 1) % ts_len).collect();
    assert_eq!(ran, want, "pinned {pinned:?}");
    assert_eq!(q.len_hint(), ts_len - 1);
}

#[test]
fn round_robin_two_threads() {
    check(&[true, true]);
    check(&[false, false]);
    check(&[true, false]);
    check(&[false, true]);
}

#[test]
fn round_robin_mixed() {
    for bits in 0..16u32 {
        let pinned: Vec<bool> = (0..4).map(|i| bits & (1 << i) != 0).collect();
        check(&pinned);
    }
    check(&[true, false, true]);
}

/// Threads traded places a few times (two on one FIFO), then one pushed on the other FIFO: it
/// runs after the one queued before it, whichever FIFO each is on.
#[test]
fn push_after_trades_keeps_order() {
    for (a, b, c) in [(true, true, false), (false, false, true), (true, true, true), (false, false, false)] {
        let ts = tasks(&[a, b, c]);
        let q = CpuQueue::new();
        for t in &ts[..2] {
            // SAFETY: the task is valid for the test, on no queue, and belongs to CPU 0.
            unsafe { q.activate(NonNull::from(&**t)) };
        }
        assert_eq!(q.lock().pop(), Some(NonNull::from(&*ts[0])));
        // 0 runs, 1 queued; three trades leave 1 running and 0 queued.
        assert_eq!(yields(&q, &ts, 0, 3), [1, 0, 1]);
        // SAFETY: as above.
        unsafe { q.activate(NonNull::from(&*ts[2])) };
        assert_eq!(yields(&q, &ts, 1, 6), [0, 2, 1, 0, 2, 1], "pinned {:?}", (a, b, c));
    }
}
