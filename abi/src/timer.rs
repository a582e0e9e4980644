//! `alarm` and `setitimer(ITIMER_REAL)` as a data structure: one timer per process counting real
//! time, with an optional interval, that raises SIGALRM when it expires. The kernel arms its own
//! timer at [`RealTimer::deadline`] and calls [`RealTimer::expire`] when it fires.
//!
//! `struct itimerval` is two `timeval`s (interval first, then value), 32 bytes.

use crate::linux::errno;

const NS_PER_S: u64 = 1_000_000_000;
const NS_PER_US: u64 = 1000;

/// A time as `struct timeval` fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeVal {
    pub sec: i64,
    pub usec: i64,
}

impl TimeVal {
    /// Nanoseconds; `EINVAL` for a negative value or microseconds outside `0..1_000_000`.
    pub fn to_ns(self) -> Result<u64, u32> {
        if self.sec < 0 || !(0..1_000_000).contains(&self.usec) {
            return Err(errno::EINVAL);
        }
        Ok((self.sec as u64).saturating_mul(NS_PER_S).saturating_add(self.usec as u64 * NS_PER_US))
    }

    /// From nanoseconds, rounding up to a whole microsecond so a running timer never reads 0.
    pub fn from_ns(ns: u64) -> Self {
        let us = ns.div_ceil(NS_PER_US);
        TimeVal { sec: (us / 1_000_000) as i64, usec: (us % 1_000_000) as i64 }
    }
}

/// `struct itimerval`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ITimerVal {
    pub interval: TimeVal,
    pub value: TimeVal,
}

impl ITimerVal {
    pub fn from_bytes(b: &[u8; 32]) -> Self {
        let w = |i: usize| i64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        ITimerVal { interval: TimeVal { sec: w(0), usec: w(1) }, value: TimeVal { sec: w(2), usec: w(3) } }
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        for (i, v) in [self.interval.sec, self.interval.usec, self.value.sec, self.value.usec].into_iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }
}

/// The process's real-time interval timer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealTimer {
    deadline_ns: Option<u64>,
    interval_ns: u64,
}

impl RealTimer {
    /// When it fires next (monotonic nanoseconds), if armed.
    pub fn deadline(&self) -> Option<u64> {
        self.deadline_ns
    }

    /// `getitimer`: time left and the interval.
    pub fn get(&self, now_ns: u64) -> ITimerVal {
        let left = self.deadline_ns.map_or(0, |d| d.saturating_sub(now_ns).max(1));
        ITimerVal { interval: TimeVal::from_ns(self.interval_ns), value: TimeVal::from_ns(left) }
    }

    /// `setitimer`: arm (a zero value disarms) and return the old setting. The kernel re-arms its
    /// timer at the new [`deadline`](Self::deadline).
    pub fn set(&mut self, now_ns: u64, new: ITimerVal) -> Result<ITimerVal, u32> {
        let value = new.value.to_ns()?;
        let interval = new.interval.to_ns()?;
        let old = self.get(now_ns);
        if value == 0 {
            *self = RealTimer::default();
        } else {
            *self = RealTimer { deadline_ns: Some(now_ns.saturating_add(value)), interval_ns: interval };
        }
        Ok(old)
    }

    /// `alarm(seconds)`: returns the seconds left on the previous alarm, rounded to nearest, and
    /// at least 1 if one was pending (Linux's `alarm_setitimer`).
    pub fn alarm(&mut self, now_ns: u64, seconds: u32) -> u32 {
        let old = self.get(now_ns).value;
        self.deadline_ns = (seconds > 0).then(|| now_ns.saturating_add(u64::from(seconds) * NS_PER_S));
        self.interval_ns = 0;
        let mut s = old.sec as u32;
        if (old.sec == 0 && old.usec > 0) || old.usec >= 500_000 {
            s += 1;
        }
        s
    }

    /// The kernel's timer fired at `now_ns`: returns true to send SIGALRM, and re-arms a periodic
    /// timer at its next multiple of the interval after now (missed periods are skipped, one
    /// signal per expiry as Linux's pending SIGALRM coalesces anyway).
    pub fn expire(&mut self, now_ns: u64) -> bool {
        let Some(d) = self.deadline_ns else { return false };
        if now_ns < d {
            return false;
        }
        // A zero interval (one shot) has no quotient: the timer disarms.
        self.deadline_ns = (now_ns - d).checked_div(self.interval_ns).map(|late| d.saturating_add((late + 1).saturating_mul(self.interval_ns)));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(vs: i64, vus: i64, is: i64, ius: i64) -> ITimerVal {
        ITimerVal { value: TimeVal { sec: vs, usec: vus }, interval: TimeVal { sec: is, usec: ius } }
    }

    #[test]
    fn one_shot_and_periodic() {
        let mut t = RealTimer::default();
        assert_eq!(t.set(0, iv(1, 0, 0, 0)), Ok(ITimerVal::default()));
        assert_eq!(t.deadline(), Some(NS_PER_S));
        assert!(!t.expire(NS_PER_S - 1));
        assert_eq!(t.get(NS_PER_S / 4).value, TimeVal { sec: 0, usec: 750_000 });
        assert!(t.expire(NS_PER_S));
        assert_eq!(t.deadline(), None, "one shot");
        assert!(!t.expire(2 * NS_PER_S));
        t.set(0, iv(0, 100_000, 0, 250_000)).unwrap();
        assert!(t.expire(100_000_000));
        assert_eq!(t.deadline(), Some(350_000_000));
        // Late by three periods: the next deadline is the first one after now.
        assert!(t.expire(1_000_000_000));
        assert_eq!(t.deadline(), Some(1_100_000_000));
        let old = t.set(1_000_000_000, ITimerVal::default()).unwrap();
        assert_eq!(old.interval, TimeVal { sec: 0, usec: 250_000 });
        assert_eq!(old.value, TimeVal { sec: 0, usec: 100_000 });
        assert_eq!(t.deadline(), None, "zero disarms");
        assert_eq!(t.set(0, iv(0, 1_000_000, 0, 0)), Err(errno::EINVAL));
        assert_eq!(t.set(0, iv(-1, 0, 0, 0)), Err(errno::EINVAL));
    }

    #[test]
    fn alarm_rounds_like_linux() {
        let mut t = RealTimer::default();
        assert_eq!(t.alarm(0, 10), 0);
        assert_eq!(t.alarm(NS_PER_S * 3 + 400_000_000, 5), 7, "6.6 s left rounds to 7");
        assert_eq!(t.alarm(NS_PER_S * 3 + 400_000_000 + 4_900_000_000, 0), 1, "0.1 s left still says 1");
        assert_eq!(t.deadline(), None);
        assert_eq!(t.alarm(0, 0), 0);
    }

    #[test]
    fn itimerval_bytes() {
        let v = iv(1, 2, 3, 4);
        assert_eq!(ITimerVal::from_bytes(&v.to_bytes()), v);
        assert_eq!(&v.to_bytes()[0..8], &3i64.to_le_bytes(), "interval first");
    }
}
