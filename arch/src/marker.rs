//! Markers: no-op instructions that bracket a measured region for the guest instruction counter.
//!
//! A marker is the seven-byte NOP `nopl disp32(%rax)`, `0f 1f 80` followed by a little-endian
//! 32-bit displacement. A NOP with a memory operand never touches memory (SDM vol. 2B, "NOP"), so
//! the displacement is free to carry a message; every x86_64 CPU executes it as a NOP, and the
//! same code runs unchanged on hardware and under any accelerator. Under QEMU's TCG the
//! instruction counter (`bench/icount`) reads the bytes at translation time:
//!
//! ```text
//!   0f 1f 80 | tag lo | tag hi | kind | 0x4d ('M')
//!            '---------- disp32, little-endian ----------'
//!   disp32 = 0x4d00_0000 | kind << 16 | tag
//! ```
//!
//! Kinds:
//! - [`begin`] `'B'`: open a counting window for `TAG` on this CPU;
//! - [`end`] `'E'`: close it;
//! - [`arm`] `'I'`: the next interrupt or exception taken on this CPU opens a window for `TAG`,
//!   which closes when its `iretq` has returned (the first instruction of the resumed context is
//!   not counted). This measures an interrupt path, whose start no marker can precede.
//!
//! The C header `user/include/marker.h` emits the same bytes from user programs.
//!
//! Neighbours: the kernel's `kbench` brackets its rows with these; the counter plugin's decoder
//! (`bench/icount/src/decode.rs`) recognises them.

/// The high byte of every marker's displacement.
pub const MAGIC: u8 = 0x4d;
/// The kind byte of a window's start, end, and of an interrupt-armed window.
pub const KIND_BEGIN: u8 = b'B';
pub const KIND_END: u8 = b'E';
pub const KIND_ARM: u8 = b'I';

/// The displacement of the marker of `kind` and `tag`.
pub const fn displacement(kind: u8, tag: u16) -> u32 {
    (MAGIC as u32) << 24 | (kind as u32) << 16 | tag as u32
}

/// The marker's assembly, with its displacement as the `disp` operand.
macro_rules! template {
    () => {
        ".byte 0x0f, 0x1f, 0x80\n.4byte {disp}"
    };
}

/// Emit the marker of `$kind` and `$tag` (constants).
macro_rules! marker {
    ($kind:expr, $tag:expr) => {
        // SAFETY: a NOP with a memory operand neither reads nor writes memory, registers or flags
        // (SDM vol. 2B, "NOP"); the displacement is data for an observer. `nomem` is not claimed,
        // so the compiler keeps the marker ordered with the memory accesses around it.
        unsafe {
            core::arch::asm!(
                template!(),
                disp = const displacement($kind, $tag),
                options(nostack, preserves_flags),
            )
        }
    };
}

/// Open the counting window `TAG` on this CPU.
#[inline(always)]
pub fn begin<const TAG: u16>() {
    marker!(KIND_BEGIN, TAG);
}

/// Close the counting window `TAG` on this CPU.
#[inline(always)]
pub fn end<const TAG: u16>() {
    marker!(KIND_END, TAG);
}

/// Let the next interrupt taken on this CPU open the window `TAG`, up to its `iretq`.
#[inline(always)]
pub fn arm<const TAG: u16>() {
    marker!(KIND_ARM, TAG);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displacement_carries_magic_kind_and_tag() {
        assert_eq!(displacement(KIND_BEGIN, 0x0102), 0x4d42_0102);
        assert_eq!(displacement(KIND_END, 0xffff), 0x4d45_ffff);
        assert_eq!(displacement(KIND_ARM, 0), 0x4d49_0000);
    }

    /// The markers run natively as NOPs: registers and flags survive them.
    #[test]
    fn markers_execute_as_nops() {
        let before = core::hint::black_box(0x1234_5678_u64);
        begin::<7>();
        arm::<7>();
        end::<7>();
        assert_eq!(core::hint::black_box(before), 0x1234_5678);
    }

    /// The markers' template assembles to exactly `0f 1f 80` and the displacement, as the counter
    /// expects.
    #[test]
    fn marker_bytes_are_nopl_disp32() {
        let bytes: [u8; 7];
        // SAFETY: reads the seven bytes assembled at a local label, which this block emits into
        // the text section and jumps over; no memory is written.
        unsafe {
            let addr: *const u8;
            core::arch::asm!(
                "lea {addr}, [rip + 2f]",
                "jmp 3f",
                "2:",
                template!(),
                "3:",
                addr = out(reg) addr,
                disp = const displacement(KIND_END, 0x0a0b),
                options(nostack, preserves_flags),
            );
            bytes = core::ptr::read(addr.cast::<[u8; 7]>());
        }
        assert_eq!(bytes, [0x0f, 0x1f, 0x80, 0x0b, 0x0a, KIND_END, MAGIC]);
    }
}
