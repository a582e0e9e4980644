//! Trace points: the scheduling events the scheduler reports to [`Platform::trace`], so the kernel
//! can record a timeline (switches with their reason, wake-ups, steals, spawns).
//!
//! Key types: [`TraceEvent`] (and [`TraceEvent::record`], its `trace` crate record),
//! [`SwitchReason`]. Neighbours: `Scheduler` reports them; the kernel records them with the `trace`
//! crate; `host::HostPlatform` hands them to an installed hook.
//!
//! Each event is reported where its order against the other CPUs is fixed: a switch and a wake-up
//! under the run-queue lock that makes them visible, a spawn before its thread is queued, a steal
//! before the thief queues the thread. A platform that time-stamps in `trace` therefore gets stamps
//! in causal order (a wake-up before the switch-in it causes), which is what a conservation check
//! of the trace relies on.
//!
//! [`Platform::trace`]: crate::Platform::trace

use trace::{
    Record,
    event::{Reason, SWITCH_NEXT_IDLE, SWITCH_PREV_IDLE, SWITCH_PREV_QUEUED, WAKE_NEW, WAKE_RUNNING},
};

use crate::{platform::CpuIndex, thread::ThreadId};

/// Why the CPU switched away from a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchReason {
    /// The thread yielded (it stays runnable).
    Yield,
    /// The thread was preempted (it stays runnable).
    Preempt,
    /// The thread blocked (a wake-up may have overtaken it: then it stays runnable, see
    /// [`TraceEvent::Wakeup`]`{ queued: false }` and `prev_queued`).
    Block,
    /// The thread exited.
    Exit,
    /// The idle thread hands the CPU to work.
    Idle,
}

/// One scheduling event on the calling CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// The CPU switches from `prev` to `next`; `prev_queued`: `prev` stays runnable on this CPU's
    /// queue (after a yield or preemption, or a block that a wake-up overtook).
    Switch {
        prev: ThreadId,
        next: ThreadId,
        reason: SwitchReason,
        prev_queued: bool,
        prev_idle: bool,
        next_idle: bool,
    },
    /// `thread` was woken and is runnable on `target`: queued there (`queued`), or, when it had not
    /// yet left `target`, just marked runnable again (no switch-in follows).
    Wakeup {
        thread: ThreadId,
        target: CpuIndex,
        queued: bool,
    },
    /// `thread`, named `name`, was created and is about to be queued on `target`.
    Spawn {
        thread: ThreadId,
        name: &'static str,
        target: CpuIndex,
    },
    /// The calling CPU's idle thread is `thread`.
    Idle { thread: ThreadId },
    /// The calling CPU stole runnable `thread` from `victim`'s queue.
    Steal { thread: ThreadId, victim: CpuIndex },
    /// The calling CPU (`from`) handed its running `thread` to `to`'s queue, because its affinity
    /// no longer allows `from`. Recorded as `to` taking it from `from`, a steal in all but who
    /// acted, so a reader sees the thread leave one queue for the other.
    Migrate { thread: ThreadId, from: CpuIndex, to: CpuIndex },
}

impl TraceEvent {
    /// The trace record of this event, stamped `tsc` on `cpu` (`None` for [`TraceEvent::Idle`],
    /// which only names a thread), and the name it gives a thread, if any.
    pub fn record(self, tsc: u64, cpu: u16) -> (Option<Record>, Option<(u64, &'static str)>) {
        match self {
            TraceEvent::Switch {
                prev,
                next,
                reason,
                prev_queued,
                prev_idle,
                next_idle,
            } => {
                let reason = match reason {
                    SwitchReason::Yield => Reason::Yield,
                    SwitchReason::Preempt => Reason::Preempt,
                    SwitchReason::Block => Reason::Block,
                    SwitchReason::Exit => Reason::Exit,
                    SwitchReason::Idle => Reason::Idle,
                };
                let flags = if prev_idle { SWITCH_PREV_IDLE } else { 0 }
                    | if next_idle { SWITCH_NEXT_IDLE } else { 0 }
                    | if prev_queued { SWITCH_PREV_QUEUED } else { 0 };
                (
                    Some(Record::switch(tsc, cpu, prev.0, next.0, reason, flags)),
                    None,
                )
            }
            TraceEvent::Wakeup {
                thread,
                target,
                queued,
            } => {
                let flags = if queued { 0 } else { WAKE_RUNNING };
                (
                    Some(Record::wakeup(tsc, cpu, thread.0, target.0, flags)),
                    None,
                )
            }
            TraceEvent::Spawn {
                thread,
                name,
                target,
            } => (
                Some(Record::wakeup(tsc, cpu, thread.0, target.0, WAKE_NEW)),
                Some((thread.0, name)),
            ),
            TraceEvent::Idle { thread } => (None, Some((thread.0, "idle"))),
            TraceEvent::Steal { thread, victim } => {
                (Some(Record::steal(tsc, cpu, thread.0, victim.0)), None)
            }
            TraceEvent::Migrate { thread, from, to } => {
                (Some(Record::steal(tsc, to.0 as u16, thread.0, from.0)), None)
            }
        }
    }
}
