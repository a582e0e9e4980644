//! Resource limits (`prlimit64`, `getrlimit`, `setrlimit`) and `struct sysinfo`, as data.
//!
//! The defaults are Linux's for a process started by the kernel (`INIT_RLIMITS`): everything
//! unlimited but the stack (8 MiB soft), open files (1024 soft, 4096 hard), pending signals and
//! message queues. Everything runs as root here, so raising a hard limit is allowed; only the
//! open-file limit above [`NR_OPEN`] is refused, as on Linux.

use linux_raw_sys::general as g;

use crate::linux::errno;

/// `RLIM_INFINITY` as the kernel's `rlimit64` carries it.
pub const RLIM_INFINITY: u64 = u64::MAX;
/// Number of resources (`RLIM_NLIMITS`).
pub const RLIM_NLIMITS: usize = 16;
/// Largest open-file limit (`/proc/sys/fs/nr_open` default).
pub const NR_OPEN: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RLimit {
    pub cur: u64,
    pub max: u64,
}

impl RLimit {
    pub fn from_bytes(b: &[u8; 16]) -> Self {
        RLimit { cur: u64::from_le_bytes(b[..8].try_into().unwrap_or_default()), max: u64::from_le_bytes(b[8..].try_into().unwrap_or_default()) }
    }

    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.cur.to_le_bytes());
        b[8..].copy_from_slice(&self.max.to_le_bytes());
        b
    }
}

/// A process's limits; inherited by `fork` (copy) and kept by `execve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits(pub [RLimit; RLIM_NLIMITS]);

impl Default for Limits {
    fn default() -> Self {
        let inf = RLimit { cur: RLIM_INFINITY, max: RLIM_INFINITY };
        let mut l = [inf; RLIM_NLIMITS];
        l[g::RLIMIT_STACK as usize] = RLimit { cur: 8 << 20, max: RLIM_INFINITY };
        l[g::RLIMIT_CORE as usize] = RLimit { cur: 0, max: RLIM_INFINITY };
        l[g::RLIMIT_NOFILE as usize] = RLimit { cur: 1024, max: 4096 };
        l[g::RLIMIT_MEMLOCK as usize] = RLimit { cur: 8 << 20, max: 8 << 20 };
        l[g::RLIMIT_SIGPENDING as usize] = RLimit { cur: 63_432, max: 63_432 };
        l[g::RLIMIT_MSGQUEUE as usize] = RLimit { cur: 819_200, max: 819_200 };
        l[g::RLIMIT_NICE as usize] = RLimit { cur: 0, max: 0 };
        l[g::RLIMIT_RTPRIO as usize] = RLimit { cur: 0, max: 0 };
        Limits(l)
    }
}

impl Limits {
    /// `getrlimit(resource)`.
    pub fn get(&self, resource: u32) -> Result<RLimit, u32> {
        self.0.get(resource as usize).copied().ok_or(errno::EINVAL)
    }

    /// `setrlimit` / the new-limit half of `prlimit64`: returns the old limit.
    pub fn set(&mut self, resource: u32, new: RLimit) -> Result<RLimit, u32> {
        let slot = self.0.get_mut(resource as usize).ok_or(errno::EINVAL)?;
        if new.cur > new.max {
            return Err(errno::EINVAL);
        }
        if resource == g::RLIMIT_NOFILE && new.max > NR_OPEN {
            return Err(errno::EPERM);
        }
        Ok(core::mem::replace(slot, new))
    }
}

/// What `sysinfo` reports, in bytes and seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct SysInfo {
    pub uptime_s: i64,
    /// Load averages in the `procfs::LoadAvg` fixed point (11 bits).
    pub loads_fixed11: [u64; 3],
    pub total_ram: u64,
    pub free_ram: u64,
    pub shared_ram: u64,
    pub buffer_ram: u64,
    pub procs: u16,
}

/// Size of `struct sysinfo` on x86-64.
pub const SYSINFO_SIZE: usize = 112;

impl SysInfo {
    /// The bytes of `struct sysinfo`, with `mem_unit` 1 and loads shifted to `SI_LOAD_SHIFT` (16).
    pub fn to_bytes(&self) -> [u8; SYSINFO_SIZE] {
        let mut b = [0u8; SYSINFO_SIZE];
        let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        put(0, &self.uptime_s.to_le_bytes());
        for (i, l) in self.loads_fixed11.iter().enumerate() {
            put(8 + i * 8, &(l << 5).to_le_bytes());
        }
        put(32, &self.total_ram.to_le_bytes());
        put(40, &self.free_ram.to_le_bytes());
        put(48, &self.shared_ram.to_le_bytes());
        put(56, &self.buffer_ram.to_le_bytes());
        // totalswap, freeswap: 0.
        put(80, &self.procs.to_le_bytes());
        // totalhigh, freehigh: 0.
        put(104, &1u32.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use core::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn defaults_and_rules() {
        let mut l = Limits::default();
        assert_eq!(l.get(g::RLIMIT_NOFILE), Ok(RLimit { cur: 1024, max: 4096 }));
        assert_eq!(l.get(g::RLIMIT_STACK).unwrap().cur, 8 << 20);
        assert_eq!(l.get(99), Err(errno::EINVAL));
        assert_eq!(l.set(g::RLIMIT_NOFILE, RLimit { cur: 10, max: 5 }), Err(errno::EINVAL));
        assert_eq!(l.set(g::RLIMIT_NOFILE, RLimit { cur: 10, max: NR_OPEN + 1 }), Err(errno::EPERM));
        assert_eq!(l.set(g::RLIMIT_NOFILE, RLimit { cur: 64, max: 64 }), Ok(RLimit { cur: 1024, max: 4096 }));
        assert_eq!(l.get(g::RLIMIT_NOFILE).unwrap().cur, 64);
        let r = RLimit { cur: 1, max: RLIM_INFINITY };
        assert_eq!(RLimit::from_bytes(&r.to_bytes()), r);
        assert_eq!(g::RLIM_INFINITY as u64, RLIM_INFINITY);
    }

    #[test]
    fn sysinfo_layout_is_linuxs() {
        use linux_raw_sys::system::sysinfo;
        assert_eq!(size_of::<sysinfo>(), SYSINFO_SIZE);
        let s = SysInfo { uptime_s: 5, loads_fixed11: [2048, 0, 0], total_ram: 1 << 30, free_ram: 1 << 29, procs: 7, ..Default::default() };
        let b = s.to_bytes();
        let w = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        assert_eq!(w(offset_of!(sysinfo, uptime)), 5);
        assert_eq!(w(offset_of!(sysinfo, loads)), 65536, "load 1.0 with SI_LOAD_SHIFT 16");
        assert_eq!(w(offset_of!(sysinfo, totalram)), 1 << 30);
        assert_eq!(w(offset_of!(sysinfo, freeram)), 1 << 29);
        let p = offset_of!(sysinfo, procs);
        assert_eq!(u16::from_le_bytes([b[p], b[p + 1]]), 7);
        let m = offset_of!(sysinfo, mem_unit);
        assert_eq!(u32::from_le_bytes(b[m..m + 4].try_into().unwrap()), 1);
    }
}
