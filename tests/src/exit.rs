//! What QEMU's exit status says about the guest.
//!
//! The kernel ends a run by writing a code to the isa-debug-exit port (0xf4); QEMU then exits
//! with `(code << 1) | 1`. The kernel writes 0x10 for success and 0x11 for failure, so 33 means
//! success and 35 failure. Every other status is never a success: 0 is what QEMU returns when
//! the guest reset itself under `-no-reboot` (a triple fault) or powered off, 1 is a QEMU error.
//! Key type: [`GuestExit`], made by [`decode`] from the child's status; `verdict` compares it
//! with what the tests reported.

use std::fmt;

/// The code the kernel writes to the exit port when every test passed.
pub const KERNEL_SUCCESS: u32 = 0x10;
/// The code the kernel writes when a test failed or the kernel faulted.
pub const KERNEL_FAILURE: u32 = 0x11;

/// How a boot ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestExit {
    /// The kernel wrote [`KERNEL_SUCCESS`].
    Success,
    /// The kernel wrote [`KERNEL_FAILURE`].
    Failure,
    /// The kernel wrote some other code to the exit port.
    OtherCode(u32),
    /// QEMU exited 0: the guest reset (a triple fault, with `-no-reboot`) or powered off.
    ResetOrPowerOff,
    /// QEMU exited 1: QEMU itself failed (bad option, missing kernel file, ...).
    QemuError,
    /// QEMU died from a signal, or the harness killed it.
    Killed,
    /// The harness stopped QEMU because the boot ran out of time.
    TimedOut,
}

/// Decodes QEMU's exit status (`None` when a signal ended it).
pub fn decode(status: Option<i32>) -> GuestExit {
    match status {
        None => GuestExit::Killed,
        Some(0) => GuestExit::ResetOrPowerOff,
        Some(1) => GuestExit::QemuError,
        Some(code) if code > 1 && code & 1 == 1 => match (code as u32) >> 1 {
            KERNEL_SUCCESS => GuestExit::Success,
            KERNEL_FAILURE => GuestExit::Failure,
            other => GuestExit::OtherCode(other),
        },
        // An even status above 1 is not something isa-debug-exit produces.
        Some(_) => GuestExit::QemuError,
    }
}

impl fmt::Display for GuestExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestExit::Success => write!(
                f,
                "kernel reported success (exit code 0x{KERNEL_SUCCESS:x})"
            ),
            GuestExit::Failure => write!(
                f,
                "kernel reported failure (exit code 0x{KERNEL_FAILURE:x})"
            ),
            GuestExit::OtherCode(code) => write!(f, "kernel wrote unknown exit code 0x{code:x}"),
            GuestExit::ResetOrPowerOff => {
                write!(
                    f,
                    "QEMU exited 0: the guest reset (triple fault?) or powered off without an exit code"
                )
            }
            GuestExit::QemuError => write!(f, "QEMU failed (see its error output)"),
            GuestExit::Killed => write!(f, "QEMU was killed by a signal"),
            GuestExit::TimedOut => write!(f, "timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_codes_decode_to_success_and_failure() {
        assert_eq!(decode(Some(33)), GuestExit::Success);
        assert_eq!(decode(Some(35)), GuestExit::Failure);
    }

    #[test]
    fn zero_and_one_are_never_success() {
        assert_eq!(decode(Some(0)), GuestExit::ResetOrPowerOff);
        assert_eq!(decode(Some(1)), GuestExit::QemuError);
    }

    #[test]
    fn other_odd_statuses_name_the_code_the_kernel_wrote() {
        assert_eq!(decode(Some(3)), GuestExit::OtherCode(1));
        assert_eq!(decode(Some(0x25)), GuestExit::OtherCode(0x12));
    }

    #[test]
    fn even_statuses_and_signals_are_failures_of_qemu() {
        assert_eq!(decode(Some(2)), GuestExit::QemuError);
        assert_eq!(decode(Some(34)), GuestExit::QemuError);
        assert_eq!(decode(None), GuestExit::Killed);
    }

    #[test]
    fn descriptions_say_what_happened() {
        assert!(GuestExit::ResetOrPowerOff.to_string().contains("reset"));
        assert!(GuestExit::OtherCode(0x12).to_string().contains("0x12"));
    }
}
