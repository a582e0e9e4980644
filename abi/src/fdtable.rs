//! A process's file-descriptor table as a data structure, generic over what a descriptor refers
//! to (the kernel uses a shared open-file handle). It holds the rules of `open`'s lowest free
//! number, `close`, `dup`, `dup2`, `dup3`, `fcntl(F_DUPFD[_CLOEXEC], F_GETFD, F_SETFD)` and the
//! close-on-exec sweep of `execve`, with Linux's errno for each misuse.
//!
//! Calls that drop a reference give it back ([`FdTable::close`], the replaced file of
//! [`FdTable::dup2`], the sweep of [`FdTable::exec`]) so the caller releases it outside its lock.
//! `fork` is `clone`; `CLONE_FILES` shares one table behind the kernel's lock.

use alloc::vec::Vec;

use crate::linux::errno;

/// The default `RLIMIT_NOFILE` soft limit (Linux's `INR_OPEN_CUR`).
pub const NOFILE_DEFAULT: usize = 1024;

#[derive(Clone, Debug)]
struct Slot<F> {
    file: F,
    cloexec: bool,
}

/// The table: descriptor `n` is slot `n`.
#[derive(Clone, Debug)]
pub struct FdTable<F> {
    slots: Vec<Option<Slot<F>>>,
    limit: usize,
}

impl<F: Clone> Default for FdTable<F> {
    fn default() -> Self {
        Self::new(NOFILE_DEFAULT)
    }
}

impl<F: Clone> FdTable<F> {
    /// An empty table whose descriptors stay below `limit`.
    pub fn new(limit: usize) -> Self {
        Self { slots: Vec::new(), limit }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// `setrlimit(RLIMIT_NOFILE)`: open descriptors above the new limit stay open, as on Linux.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    fn slot(&self, fd: i32) -> Result<&Slot<F>, u32> {
        usize::try_from(fd).ok().and_then(|i| self.slots.get(i)).and_then(Option::as_ref).ok_or(errno::EBADF)
    }

    /// The file behind `fd` (`EBADF` when not open).
    pub fn get(&self, fd: i32) -> Result<&F, u32> {
        self.slot(fd).map(|s| &s.file)
    }

    /// Number of open descriptors.
    pub fn count(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Open descriptors in increasing order.
    pub fn fds(&self) -> impl Iterator<Item = (i32, &F)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|s| (i as i32, &s.file)))
    }

    fn put(&mut self, fd: usize, file: F, cloexec: bool) -> Option<F> {
        if self.slots.len() <= fd {
            self.slots.resize_with(fd + 1, || None);
        }
        self.slots[fd].replace(Slot { file, cloexec }).map(|s| s.file)
    }

    /// Install `file` at the lowest free descriptor at or above `min` (`EMFILE` when none is below
    /// the limit).
    pub fn alloc_from(&mut self, file: F, cloexec: bool, min: usize) -> Result<i32, u32> {
        let fd = (min..self.limit).find(|&i| self.slots.get(i).is_none_or(Option::is_none)).ok_or(errno::EMFILE)?;
        self.put(fd, file, cloexec);
        Ok(fd as i32)
    }

    /// Install `file` at the lowest free descriptor (`open`, `pipe`, `dup`).
    pub fn alloc(&mut self, file: F, cloexec: bool) -> Result<i32, u32> {
        self.alloc_from(file, cloexec, 0)
    }

    /// `close`: the file, for the caller to release.
    pub fn close(&mut self, fd: i32) -> Result<F, u32> {
        self.slot(fd)?;
        let s = self.slots[fd as usize].take().map(|s| s.file).ok_or(errno::EBADF)?;
        while self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
        Ok(s)
    }

    /// `dup`: the lowest free descriptor, without close-on-exec.
    pub fn dup(&mut self, old: i32) -> Result<i32, u32> {
        let f = self.get(old)?.clone();
        self.alloc(f, false)
    }

    /// `fcntl(F_DUPFD / F_DUPFD_CLOEXEC, min)`: `EINVAL` when `min` is out of range.
    pub fn dup_from(&mut self, old: i32, min: i64, cloexec: bool) -> Result<i32, u32> {
        let f = self.get(old)?.clone();
        let min = usize::try_from(min).ok().filter(|&m| m < self.limit).ok_or(errno::EINVAL)?;
        self.alloc_from(f, cloexec, min)
    }

    /// `dup2(old, new)`: `new` now refers to `old`'s file (close-on-exec clear). Returns `new` and
    /// the file `new` held before, to release. `dup2(fd, fd)` only checks that `fd` is open.
    pub fn dup2(&mut self, old: i32, new: i32) -> Result<(i32, Option<F>), u32> {
        let f = self.get(old)?.clone();
        let n = usize::try_from(new).ok().filter(|&n| n < self.limit).ok_or(errno::EBADF)?;
        if old == new {
            return Ok((new, None));
        }
        Ok((new, self.put(n, f, false)))
    }

    /// `dup3(old, new, flags)`: as `dup2` with `O_CLOEXEC` allowed in `flags`; `EINVAL` when
    /// `old == new` or for any other flag.
    pub fn dup3(&mut self, old: i32, new: i32, flags: u32) -> Result<(i32, Option<F>), u32> {
        let o_cloexec = linux_raw_sys::general::O_CLOEXEC;
        if flags & !o_cloexec != 0 || old == new {
            return Err(errno::EINVAL);
        }
        let f = self.get(old)?.clone();
        let n = usize::try_from(new).ok().filter(|&n| n < self.limit).ok_or(errno::EBADF)?;
        Ok((new, self.put(n, f, flags & o_cloexec != 0)))
    }

    /// `fcntl(F_GETFD)`: whether close-on-exec is set.
    pub fn cloexec(&self, fd: i32) -> Result<bool, u32> {
        self.slot(fd).map(|s| s.cloexec)
    }

    /// `fcntl(F_SETFD)`.
    pub fn set_cloexec(&mut self, fd: i32, on: bool) -> Result<(), u32> {
        self.slot(fd)?;
        if let Some(Some(s)) = self.slots.get_mut(fd as usize) {
            s.cloexec = on;
        }
        Ok(())
    }

    /// The `execve` sweep: close every close-on-exec descriptor, returning their files.
    pub fn exec(&mut self) -> Vec<F> {
        let mut closed = Vec::new();
        for s in self.slots.iter_mut() {
            if s.as_ref().is_some_and(|s| s.cloexec) {
                closed.extend(s.take().map(|s| s.file));
            }
        }
        while self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
        closed
    }

    /// Close everything (process exit), returning the files.
    pub fn close_all(&mut self) -> Vec<F> {
        core::mem::take(&mut self.slots).into_iter().flatten().map(|s| s.file).collect()
    }
}

#[cfg(test)]
mod tests {
    use alloc::{collections::BTreeMap, rc::Rc};

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn lowest_free_and_emfile() {
        let mut t = FdTable::new(4);
        assert_eq!(t.alloc('a', false), Ok(0));
        assert_eq!(t.alloc('b', false), Ok(1));
        assert_eq!(t.alloc('c', false), Ok(2));
        assert_eq!(t.close(1), Ok('b'));
        assert_eq!(t.alloc('d', false), Ok(1), "lowest free number");
        assert_eq!(t.alloc('e', false), Ok(3));
        assert_eq!(t.alloc('f', false), Err(errno::EMFILE));
        assert_eq!(t.close(7), Err(errno::EBADF));
        assert_eq!(t.close(-1), Err(errno::EBADF));
        assert_eq!(t.get(3), Ok(&'e'));
    }

    #[test]
    fn dup_family() {
        let mut t = FdTable::new(16);
        t.alloc('a', true).unwrap();
        assert_eq!(t.dup(0), Ok(1));
        assert_eq!(t.cloexec(1), Ok(false), "dup clears close-on-exec");
        assert_eq!(t.dup2(0, 0), Ok((0, None)));
        assert_eq!(t.dup2(5, 0), Err(errno::EBADF));
        assert_eq!(t.dup2(0, 16), Err(errno::EBADF));
        t.alloc('z', false).unwrap();
        assert_eq!(t.dup2(0, 2), Ok((2, Some('z'))), "the replaced file comes back to release");
        assert_eq!(t.dup3(0, 0, 0), Err(errno::EINVAL));
        assert_eq!(t.dup3(0, 3, 1), Err(errno::EINVAL));
        assert_eq!(t.dup3(0, 3, linux_raw_sys::general::O_CLOEXEC), Ok((3, None)));
        assert_eq!(t.cloexec(3), Ok(true));
        assert_eq!(t.dup_from(0, 10, true), Ok(10));
        assert_eq!(t.dup_from(0, 16, false), Err(errno::EINVAL));
        assert_eq!(t.dup_from(0, -1, false), Err(errno::EINVAL));
        assert_eq!(t.dup_from(9, 0, false), Err(errno::EBADF));
    }

    #[test]
    fn exec_closes_only_cloexec() {
        let mut t = FdTable::new(16);
        t.alloc('a', false).unwrap();
        t.alloc('b', true).unwrap();
        t.alloc('c', false).unwrap();
        t.set_cloexec(2, true).unwrap();
        t.set_cloexec(0, false).unwrap();
        let mut closed = t.exec();
        closed.sort();
        assert_eq!(closed, ['b', 'c']);
        assert_eq!(t.fds().map(|(fd, f)| (fd, *f)).collect::<Vec<_>>(), [(0, 'a')]);
        assert_eq!(t.set_cloexec(1, true), Err(errno::EBADF));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Open(bool),
        Close(i32),
        Dup(i32),
        Dup2(i32, i32),
        Exec,
        Fork,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<bool>().prop_map(Op::Open),
            (-1i32..10).prop_map(Op::Close),
            (-1i32..10).prop_map(Op::Dup),
            (-1i32..10, -1i32..10).prop_map(|(a, b)| Op::Dup2(a, b)),
            Just(Op::Exec),
            Just(Op::Fork),
        ]
    }

    proptest! {
        /// Against a map model; and every reference handed out comes back exactly once (the
        /// reference count of each file returns to 1 once the tables are closed).
        #[test]
        fn matches_model_and_conserves_references(ops in proptest::collection::vec(op(), 1..80)) {
            let mut t: FdTable<Rc<u32>> = FdTable::new(8);
            let mut model: BTreeMap<i32, (u32, bool)> = BTreeMap::new();
            let mut files = Vec::new();
            let mut forks = Vec::new();
            for o in ops {
                match o {
                    Op::Open(cx) => {
                        let f = Rc::new(files.len() as u32);
                        files.push(f.clone());
                        let want = (0..8).find(|i| !model.contains_key(i));
                        let got = t.alloc(f.clone(), cx);
                        match want {
                            Some(fd) => { prop_assert_eq!(got, Ok(fd)); model.insert(fd, (*f, cx)); }
                            None => prop_assert_eq!(got, Err(errno::EMFILE)),
                        }
                    }
                    Op::Close(fd) => {
                        let r = t.close(fd).map(|f| *f);
                        prop_assert_eq!(r, model.remove(&fd).map(|m| m.0).ok_or(errno::EBADF));
                    }
                    Op::Dup(fd) => {
                        let r = t.dup(fd);
                        match model.get(&fd).copied() {
                            None => prop_assert_eq!(r, Err(errno::EBADF)),
                            Some((f, _)) => match (0..8).find(|i| !model.contains_key(i)) {
                                Some(n) => { prop_assert_eq!(r, Ok(n)); model.insert(n, (f, false)); }
                                None => prop_assert_eq!(r, Err(errno::EMFILE)),
                            },
                        }
                    }
                    Op::Dup2(a, b) => {
                        let r = t.dup2(a, b).map(|(n, old)| (n, old.map(|f| *f)));
                        match model.get(&a).copied() {
                            None => prop_assert_eq!(r, Err(errno::EBADF)),
                            Some(_) if !(0..8).contains(&b) => prop_assert_eq!(r, Err(errno::EBADF)),
                            Some(_) if a == b => prop_assert_eq!(r, Ok((b, None))),
                            Some((f, _)) => { let old = model.insert(b, (f, false)).map(|m| m.0); prop_assert_eq!(r, Ok((b, old))); }
                        }
                    }
                    Op::Exec => {
                        let mut closed: Vec<u32> = t.exec().iter().map(|f| **f).collect();
                        let mut want: Vec<u32> = model.values().filter(|m| m.1).map(|m| m.0).collect();
                        model.retain(|_, m| !m.1);
                        closed.sort();
                        want.sort();
                        prop_assert_eq!(closed, want);
                    }
                    Op::Fork => forks.push(t.clone()),
                }
                let seen: BTreeMap<i32, (u32, bool)> = t.fds().map(|(fd, f)| (fd, (**f, t.cloexec(fd).unwrap()))).collect();
                prop_assert_eq!(&seen, &model);
            }
            drop(t.close_all());
            for mut f in forks { drop(f.close_all()); }
            for f in &files { prop_assert_eq!(Rc::strong_count(f), 1); }
        }
    }
}
