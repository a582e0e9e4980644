//! Linux's numbers, errno values and struct layouts, re-exported from `linux-raw-sys` (generated from
//! the kernel's own UAPI headers, so nothing here is typed by hand), and the names of system calls.

pub use linux_raw_sys::{auxvec, errno, general, ioctl, prctl, system};

/// Linux's name of system call `nr` on x86-64 (`"openat"`), for the log line of an unimplemented call.
pub fn syscall_name(nr: u64) -> Option<&'static str> {
    syscalls::Sysno::new(usize::try_from(nr).ok()?).map(|s| s.name())
}

/// The value a system call returns for errno `e`: `-e` as the raw `rax`.
pub const fn errno_ret(e: u32) -> u64 {
    (-(e as i64)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_linux_numbers() {
        assert_eq!(syscall_name(u64::from(general::__NR_write)), Some("write"));
        assert_eq!(syscall_name(u64::from(general::__NR_rseq)), Some("rseq"));
        assert_eq!(syscall_name(u64::from(general::__NR_clone3)), Some("clone3"));
        assert_eq!(syscall_name(100_000), None);
        assert_eq!(syscall_name(u64::MAX), None);
    }

    #[test]
    fn errno_return_is_negative() {
        assert_eq!(errno_ret(errno::ENOSYS) as i64, -38);
        assert_eq!(errno_ret(errno::EFAULT) as i64, -14);
    }
}
