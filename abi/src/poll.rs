//! `poll`, `ppoll`, `select` and `pselect6` as data: the `struct pollfd` array, the `fd_set`
//! bitmaps, how select's three sets map to poll events and back (Linux's `POLLIN_SET`,
//! `POLLOUT_SET`, `POLLEX_SET` of `fs/select.c`), and timeout validation. The kernel asks each
//! file for its readiness bits and sleeps on their wait queues; the bookkeeping is here.

use alloc::vec::Vec;

use linux_raw_sys::general as g;

use crate::linux::errno;

pub const POLLIN: u16 = g::POLLIN as u16;
pub const POLLPRI: u16 = g::POLLPRI as u16;
pub const POLLOUT: u16 = g::POLLOUT as u16;
pub const POLLERR: u16 = g::POLLERR as u16;
pub const POLLHUP: u16 = g::POLLHUP as u16;
pub const POLLNVAL: u16 = g::POLLNVAL as u16;
pub const POLLRDNORM: u16 = g::POLLRDNORM as u16;
pub const POLLRDBAND: u16 = g::POLLRDBAND as u16;
pub const POLLWRNORM: u16 = g::POLLWRNORM as u16;
pub const POLLWRBAND: u16 = g::POLLWRBAND as u16;

/// What makes an fd readable, writable or exceptional for `select`.
pub const POLLIN_SET: u16 = POLLRDNORM | POLLRDBAND | POLLIN | POLLHUP | POLLERR;
pub const POLLOUT_SET: u16 = POLLWRBAND | POLLWRNORM | POLLOUT | POLLERR;
pub const POLLEX_SET: u16 = POLLPRI;

/// `select`'s largest `nfds` (`FD_SETSIZE`; glibc's `fd_set` holds 1024 bits).
pub const FD_SETSIZE: usize = 1024;

/// One `struct pollfd` (8 bytes: fd, events, revents).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollFd {
    pub fd: i32,
    pub events: u16,
    pub revents: u16,
}

/// Parse `nfds` records; `EINVAL` beyond the descriptor limit, as Linux's `RLIMIT_NOFILE` check.
pub fn parse_pollfds(bytes: &[u8], nfds: u64, limit: usize) -> Result<Vec<PollFd>, u32> {
    if nfds > limit as u64 {
        return Err(errno::EINVAL);
    }
    let n = nfds as usize;
    let b = bytes.get(..n * 8).ok_or(errno::EFAULT)?;
    Ok(b.chunks_exact(8).map(|c| PollFd { fd: i32::from_le_bytes([c[0], c[1], c[2], c[3]]), events: u16::from_le_bytes([c[4], c[5]]), revents: 0 }).collect())
}

/// The records back as bytes (only `revents` changed).
pub fn encode_pollfds(fds: &[PollFd]) -> Vec<u8> {
    let mut v = Vec::with_capacity(fds.len() * 8);
    for p in fds {
        v.extend_from_slice(&p.fd.to_le_bytes());
        v.extend_from_slice(&p.events.to_le_bytes());
        v.extend_from_slice(&p.revents.to_le_bytes());
    }
    v
}

/// `revents` of a record from the file's readiness `ready` (`None`: the fd is not open, giving
/// `POLLNVAL`). A negative fd is skipped (0). POLLERR, POLLHUP and POLLNVAL are reported even when
/// not asked for.
pub fn revents(fd: i32, events: u16, ready: Option<u16>) -> u16 {
    if fd < 0 {
        return 0;
    }
    match ready {
        None => POLLNVAL,
        Some(r) => r & (events | POLLERR | POLLHUP),
    }
}

/// Fill every record's `revents`; returns how many are non-zero (poll's return value).
pub fn poll_round(fds: &mut [PollFd], mut ready: impl FnMut(i32) -> Option<u16>) -> usize {
    let mut n = 0;
    for p in fds.iter_mut() {
        p.revents = revents(p.fd, p.events, if p.fd < 0 { Some(0) } else { ready(p.fd) });
        if p.revents != 0 {
            n += 1;
        }
    }
    n
}

/// An `fd_set` of `nfds` bits as 64-bit words.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FdSet(pub Vec<u64>);

impl FdSet {
    /// Read `nfds` bits (`(nfds + 63) / 64` words) from user bytes.
    pub fn from_bytes(b: &[u8], nfds: usize) -> Result<Self, u32> {
        let words = nfds.div_ceil(64);
        let b = b.get(..words * 8).ok_or(errno::EFAULT)?;
        let mut v: Vec<u64> = b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())).collect();
        if !nfds.is_multiple_of(64)
            && let Some(last) = v.last_mut()
        {
            *last &= (1u64 << (nfds % 64)) - 1;
        }
        Ok(FdSet(v))
    }

    pub fn empty(nfds: usize) -> Self {
        FdSet(alloc::vec![0; nfds.div_ceil(64)])
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    pub fn contains(&self, fd: usize) -> bool {
        self.0.get(fd / 64).is_some_and(|w| w & (1 << (fd % 64)) != 0)
    }

    pub fn insert(&mut self, fd: usize) {
        if let Some(w) = self.0.get_mut(fd / 64) {
            *w |= 1 << (fd % 64);
        }
    }
}

/// `select` on up to three sets (absent sets are `None`): the fds to ask and the events each
/// wants, in increasing fd order. `EINVAL` for a bad `nfds`.
pub fn select_interest(nfds: i64, r: Option<&FdSet>, w: Option<&FdSet>, e: Option<&FdSet>) -> Result<Vec<(i32, u16)>, u32> {
    if !(0..=FD_SETSIZE as i64).contains(&nfds) {
        return Err(errno::EINVAL);
    }
    let mut v = Vec::new();
    for fd in 0..nfds as usize {
        let mut ev = 0;
        if r.is_some_and(|s| s.contains(fd)) {
            ev |= POLLIN_SET;
        }
        if w.is_some_and(|s| s.contains(fd)) {
            ev |= POLLOUT_SET;
        }
        if e.is_some_and(|s| s.contains(fd)) {
            ev |= POLLEX_SET;
        }
        if ev != 0 {
            v.push((fd as i32, ev));
        }
    }
    Ok(v)
}

/// The result sets of one `select` round from each interesting fd's readiness (`None`: not open,
/// which fails the whole call with `EBADF`). Returns the three sets and the count of set bits.
pub fn select_round(nfds: usize, interest: &[(i32, u16)], mut ready: impl FnMut(i32) -> Option<u16>) -> Result<(FdSet, FdSet, FdSet, usize), u32> {
    let (mut r, mut w, mut e) = (FdSet::empty(nfds), FdSet::empty(nfds), FdSet::empty(nfds));
    let mut n = 0;
    for &(fd, ev) in interest {
        let got = ready(fd).ok_or(errno::EBADF)?;
        for (want, set) in [(POLLIN_SET, &mut r), (POLLOUT_SET, &mut w), (POLLEX_SET, &mut e)] {
            if ev & want == want && got & want != 0 {
                set.insert(fd as usize);
                n += 1;
            }
        }
    }
    Ok((r, w, e, n))
}

/// A `struct timespec` timeout as nanoseconds; `EINVAL` for a negative or malformed one.
pub fn timespec_ns(sec: i64, nsec: i64) -> Result<u64, u32> {
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return Err(errno::EINVAL);
    }
    Ok((sec as u64).saturating_mul(1_000_000_000).saturating_add(nsec as u64))
}

/// A `struct timeval` timeout (select) as nanoseconds.
pub fn timeval_ns(sec: i64, usec: i64) -> Result<u64, u32> {
    if sec < 0 || !(0..1_000_000).contains(&usec) {
        return Err(errno::EINVAL);
    }
    Ok((sec as u64).saturating_mul(1_000_000_000).saturating_add(usec as u64 * 1000))
}

/// `poll`'s millisecond timeout: negative waits forever (`None`).
pub fn poll_timeout_ns(ms: i32) -> Option<u64> {
    (ms >= 0).then(|| ms as u64 * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pollfd_bytes_round_trip_and_nval() {
        let fds = [PollFd { fd: 3, events: POLLIN, revents: 0 }, PollFd { fd: -1, events: POLLIN, revents: 0 }, PollFd { fd: 9, events: POLLOUT, revents: 0 }];
        let b = encode_pollfds(&fds);
        assert_eq!(b.len(), 24);
        let mut back = parse_pollfds(&b, 3, 1024).unwrap();
        assert_eq!(back, fds);
        assert_eq!(parse_pollfds(&b, 4, 1024), Err(errno::EFAULT));
        assert_eq!(parse_pollfds(&b, 2000, 1024), Err(errno::EINVAL));
        let n = poll_round(&mut back, |fd| if fd == 3 { Some(POLLIN | POLLHUP | POLLOUT) } else { None });
        assert_eq!(n, 2);
        assert_eq!(back[0].revents, POLLIN | POLLHUP, "HUP always, OUT not asked");
        assert_eq!(back[1].revents, 0, "negative fd skipped");
        assert_eq!(back[2].revents, POLLNVAL);
    }

    #[test]
    fn select_maps_sets_both_ways() {
        let mut r = FdSet::empty(70);
        r.insert(0);
        r.insert(65);
        let mut w = FdSet::empty(70);
        w.insert(1);
        let rb = FdSet::from_bytes(&r.to_bytes(), 70).unwrap();
        assert_eq!(rb, r);
        let i = select_interest(70, Some(&r), Some(&w), None).unwrap();
        assert_eq!(i, [(0, POLLIN_SET), (1, POLLOUT_SET), (65, POLLIN_SET)]);
        let (ro, wo, eo, n) = select_round(70, &i, |fd| Some(if fd == 0 { POLLHUP } else if fd == 1 { POLLOUT } else { 0 })).unwrap();
        assert_eq!(n, 2);
        assert!(ro.contains(0) && !ro.contains(65) && wo.contains(1) && eo == FdSet::empty(70));
        assert_eq!(select_round(70, &i, |fd| if fd == 65 { None } else { Some(0) }).map(|x| x.3), Err(errno::EBADF));
        assert_eq!(select_interest(-1, None, None, None), Err(errno::EINVAL));
        assert_eq!(select_interest(1025, None, None, None), Err(errno::EINVAL));
        // Bits at or above nfds in the user's words are ignored.
        let all = [0xffu8; 8];
        assert_eq!(FdSet::from_bytes(&all, 3).unwrap().0, [0b111]);
    }

    #[test]
    fn timeouts() {
        assert_eq!(timespec_ns(1, 5), Ok(1_000_000_005));
        assert_eq!(timespec_ns(0, 1_000_000_000), Err(errno::EINVAL));
        assert_eq!(timespec_ns(-1, 0), Err(errno::EINVAL));
        assert_eq!(timeval_ns(2, 500_000), Ok(2_500_000_000));
        assert_eq!(timeval_ns(0, 1_000_000), Err(errno::EINVAL));
        assert_eq!(poll_timeout_ns(-1), None);
        assert_eq!(poll_timeout_ns(0), Some(0));
        assert_eq!(timespec_ns(i64::MAX, 0), Ok(u64::MAX));
    }
}
