//! Our side of the native rows: the kernel's own switch routine (`arch::switch`) driven from this
//! user-space process.
//!
//! [`window_switch`] ping-pongs between the calling thread's stack and a second context on a heap
//! stack through `arch::switch::switch_window`, the very routine the scheduler switches threads
//! with. Neighbours: `measure` for timing; `coro` measures the coroutine-crate floor the same way.

use arch::switch::{Window, switch_window};

use crate::measure::{BATCH, Sampling, cycles_per_op};

/// Bytes of the second context's stack: room for the partner loop and any signal frame Linux may
/// push while it runs.
const PARTNER_STACK_BYTES: usize = 256 * 1024;

/// The two windows of a ping-pong, and the partner's count of round trips.
#[derive(Default)]
struct Pair {
    caller: Window,
    partner: Window,
    nr_round_trips: u64,
}

/// The second context: count a round trip, switch back to the caller, forever. It is never
/// resumed after the last round trip; its stack is freed with it suspended.
extern "C" fn partner(pair_addr: usize) -> ! {
    let pair = pair_addr as *mut Pair;
    loop {
        // SAFETY: the caller is suspended in its switch while this context runs, so this is the
        // only access to `*pair`; the caller's window was stored by that switch, and the partner's
        // window is ours to store into.
        unsafe {
            (*pair).nr_round_trips += 1;
            switch_window(&raw mut (*pair).partner, &raw const (*pair).caller);
        }
    }
}

/// Per-switch samples of `switch_window` round trips between two contexts on one thread, timed in
/// batches of [`BATCH`] round trips. The partner counts its round trips and the count is checked.
pub fn window_switch(sampling: Sampling) -> Vec<f64> {
    let mut stack = vec![0_u8; PARTNER_STACK_BYTES];
    let stack_top = stack.as_mut_ptr_range().end;
    let pair = Box::into_raw(Box::<Pair>::default());
    // SAFETY: `pair` comes from Box::into_raw and nothing else refers to it yet.
    unsafe { (*pair).partner = Window::new_thread(stack_top, partner, pair as usize) };
    let samples = cycles_per_op(sampling, 2 * BATCH, || {
        for _ in 0..BATCH {
            // SAFETY: `*pair` outlives every switch; the partner's window is either fresh from
            // new_thread or stored by the partner's own switch back to us, and its stack is alive;
            // the caller's window is ours to store into. Everything runs on this one thread.
            unsafe { switch_window(&raw mut (*pair).caller, &raw const (*pair).partner) };
        }
    });
    // SAFETY: the partner is suspended, so nothing else touches `*pair`; it came from Box::into_raw.
    let pair = unsafe { Box::from_raw(pair) };
    drop(stack);
    let expected = (sampling.nr_calls() * BATCH as usize) as u64;
    assert_eq!(pair.nr_round_trips, expected, "every switch to the partner must come back once");
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_switch_counts_every_round_trip_and_returns_one_sample_per_batch() {
        let sampling = Sampling { nr_warmup: 2, nr_samples: 10 };
        assert_eq!(window_switch(sampling).len(), 10);
    }
}
