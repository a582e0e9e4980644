//! Probes of the machine itself: fixed instruction sequences whose cost in TSC ticks says what
//! kind of processor runs them.
//!
//! [`dependent_adds`] is a chain of additions, each needing the previous one's result: a real
//! core (bare metal, or a guest under hardware-assisted virtualisation) retires one per cycle, so
//! the chain costs about one TSC tick per add (a little less under turbo, a little more when the
//! core clocks below the TSC's rate). An emulator translating or interpreting each instruction
//! costs several host ticks per add, and a hypervisor that emulates guest ring 0 instruction by
//! instruction costs over a thousand. the kernel's benchmark module (`kbench`) times it to decide whether its cycle
//! figures mean anything. Portable: it runs the same on a Linux host, where its tests check it.

/// Run `nr_adds` additions of 1 to `start`, each depending on the one before, and return the
/// result (`start + nr_adds`, wrapping). One add and a decrement-and-branch per loop turn, not
/// unrolled: a real core still keeps its one-add-per-cycle pace (the branch runs beside the chain),
/// while an emulator pays its per-block overhead on every add.
#[inline(never)]
pub fn dependent_adds(nr_adds: u64, start: u64) -> u64 {
    if nr_adds == 0 {
        return start;
    }
    let mut acc = start;
    let mut left = nr_adds;
    // SAFETY: register arithmetic and a backward branch within the block; no memory, no stack.
    unsafe {
        core::arch::asm!(
            "2:",
            "add {acc}, 1",
            "dec {left}",
            "jnz 2b",
            acc = inout(reg) acc,
            left = inout(reg) left,
            options(nomem, nostack),
        );
    }
    debug_assert_eq!(left, 0);
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_add_lands_once() {
        assert_eq!(dependent_adds(0, 7), 7);
        assert_eq!(dependent_adds(1, 7), 8);
        assert_eq!(dependent_adds(1_000_000, 5), 1_000_005);
    }

    #[test]
    fn the_sum_wraps_like_a_register() {
        assert_eq!(dependent_adds(3, u64::MAX - 1), 1);
    }
}
