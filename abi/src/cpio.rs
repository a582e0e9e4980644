//! A reader of cpio "newc" archives (the initramfs format: `cpio -H newc`, Linux's
//! `Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! ```text
//!  +-------------------------------------------+
//!  | "070701" | 13 fields, 8 hex digits each   |  110-byte header: ino mode uid gid nlink mtime
//!  +-------------------------------------------+  filesize devmajor devminor rdevmajor rdevminor
//!  | name, NUL, padding to 4 bytes             |  namesize check
//!  | data (filesize bytes), padding to 4 bytes |
//!  +-------------------------------------------+  ... repeated, ending with the entry "TRAILER!!!"
//! ```
//!
//! Our own reader rather than the `cpio_reader` crate: that crate ends its iteration silently at the
//! first malformed header, so a damaged initramfs would look like a short one, and it drops entries
//! whose mode has bits it does not know. Here every malformed byte is an error naming its offset, and
//! the reader is small enough to check by eye. `070702` (the CRC variant) is read too; its checksum
//! is not verified (the archive comes from our own build, in memory).

/// One archive member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The path without a leading `./` or `/` (`bin/sh`); the root directory is `.` in archives and
    /// "" here.
    pub path: &'a str,
    /// `st_mode`: file type and permission bits.
    pub mode: u32,
    pub ino: u32,
    pub nlink: u32,
    /// File contents, or the target of a symbolic link.
    pub data: &'a [u8],
}

/// File type bits of `mode` (Linux's `S_IFMT`, `S_IFREG`, `S_IFDIR`, `S_IFLNK`).
pub const S_IFMT: u32 = linux_raw_sys::general::S_IFMT;
pub const S_IFREG: u32 = linux_raw_sys::general::S_IFREG;
pub const S_IFDIR: u32 = linux_raw_sys::general::S_IFDIR;
pub const S_IFLNK: u32 = linux_raw_sys::general::S_IFLNK;

impl Entry<'_> {
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }

    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }

    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }
}

/// What is wrong with an archive, and at which byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpioError {
    /// The archive ends inside a header, a name or a file's data.
    Truncated { offset: usize },
    /// A header does not start with `070701` or `070702`.
    BadMagic { offset: usize },
    /// A header field is not eight hex digits.
    BadField { offset: usize },
    /// A name is empty, lacks its NUL, or is not UTF-8.
    BadName { offset: usize },
    /// The archive ends without the `TRAILER!!!` entry.
    NoTrailer,
}

const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

/// The members of `archive`, in order. After an error the iterator ends.
pub fn entries(archive: &[u8]) -> Entries<'_> {
    Entries { archive, offset: 0, done: false }
}

/// Find the member at `path` (compared without a leading `/` or `./`).
pub fn find<'a>(archive: &'a [u8], path: &str) -> Result<Option<Entry<'a>>, CpioError> {
    let want = normalize(path);
    for e in entries(archive) {
        let e = e?;
        if e.path == want {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

fn normalize(path: &str) -> &str {
    let mut p = path;
    loop {
        if let Some(rest) = p.strip_prefix("./") {
            p = rest;
        } else if let Some(rest) = p.strip_prefix('/') {
            p = rest;
        } else {
            break;
        }
    }
    if p == "." { "" } else { p }
}

/// Iterator over an archive's members; see [`entries`].
pub struct Entries<'a> {
    archive: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> Entries<'a> {
    fn next_entry(&mut self) -> Result<Option<Entry<'a>>, CpioError> {
        let start = self.offset;
        let Some(rest) = self.archive.get(start..) else {
            return Err(CpioError::NoTrailer);
        };
        if rest.is_empty() {
            return Err(CpioError::NoTrailer);
        }
        let header = rest.get(..HEADER_LEN).ok_or(CpioError::Truncated { offset: start })?;
        if &header[..6] != b"070701" && &header[..6] != b"070702" {
            return Err(CpioError::BadMagic { offset: start });
        }
        let field = |i: usize| -> Result<u32, CpioError> {
            let at = 6 + 8 * i;
            let digits = core::str::from_utf8(&header[at..at + 8]).map_err(|_| CpioError::BadField { offset: start + at })?;
            u32::from_str_radix(digits, 16).map_err(|_| CpioError::BadField { offset: start + at })
        };
        let (ino, mode, nlink, file_size, name_size) = (field(0)?, field(1)?, field(4)?, field(6)?, field(11)?);

        let name_at = start + HEADER_LEN;
        let name_len = name_size as usize;
        let name_bytes = self
            .archive
            .get(name_at..name_at.checked_add(name_len).ok_or(CpioError::Truncated { offset: name_at })?)
            .ok_or(CpioError::Truncated { offset: name_at })?;
        let (&nul, name) = name_bytes.split_last().ok_or(CpioError::BadName { offset: name_at })?;
        if nul != 0 || name.contains(&0) {
            return Err(CpioError::BadName { offset: name_at });
        }
        let name = core::str::from_utf8(name).map_err(|_| CpioError::BadName { offset: name_at })?;

        let data_at = (name_at + name_len).next_multiple_of(4);
        let data_end = data_at.checked_add(file_size as usize).ok_or(CpioError::Truncated { offset: data_at })?;
        let data = self.archive.get(data_at..data_end).ok_or(CpioError::Truncated { offset: data_at })?;
        self.offset = data_end.next_multiple_of(4);
        if name == TRAILER {
            return Ok(None);
        }
        Ok(Some(Entry { path: normalize(name), mode, ino, nlink, data }))
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, CpioError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_entry() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(err) => {
                self.done = true;
                Some(Err(err))
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use alloc::{format, string::String, vec::Vec};

    use proptest::prelude::*;

    use super::*;

    /// Writes a newc archive the way `cpio -o -H newc` does.
    pub fn archive(members: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut add = |name: &str, mode: u32, data: &[u8], ino: u32| {
            let header = format!(
                "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                ino,
                mode,
                0,
                0,
                1,
                0,
                data.len(),
                0,
                0,
                0,
                0,
                name.len() + 1,
                0
            );
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            while out.len() % 4 != 0 {
                out.push(0);
            }
            out.extend_from_slice(data);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        };
        for (i, (name, mode, data)) in members.iter().enumerate() {
            add(name, *mode, data, i as u32 + 1);
        }
        add(TRAILER, 0, &[], 0);
        // cpio pads to 512-byte blocks.
        while out.len() % 512 != 0 {
            out.push(0);
        }
        out
    }

    #[test]
    fn reads_members_in_order() {
        let a = archive(&[(".", 0o40755, b""), ("init", 0o100755, b"\x7fELF..."), ("bin/hello", 0o100755, b"abc"), ("bin/sh", 0o120777, b"hello")]);
        let got: Vec<Entry<'_>> = entries(&a).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!((got[0].path, got[0].is_dir()), ("", true));
        assert_eq!((got[1].path, got[1].data, got[1].is_file()), ("init", &b"\x7fELF..."[..], true));
        assert_eq!(got[2].data, b"abc");
        assert!(got[3].is_symlink());
        assert_eq!(got[3].data, b"hello");
        assert_eq!(find(&a, "/bin/hello").unwrap().unwrap().data, b"abc");
        assert_eq!(find(&a, "./init").unwrap().unwrap().mode, 0o100755);
        assert_eq!(find(&a, "/nope").unwrap(), None);
    }

    #[test]
    fn errors_name_their_offset() {
        let a = archive(&[("init", 0o100755, b"12345")]);
        let mut bad = a.clone();
        bad[0] = b'1';
        assert_eq!(entries(&bad).next(), Some(Err(CpioError::BadMagic { offset: 0 })));
        let mut bad = a.clone();
        bad[6 + 8] = b'g'; // mode field
        assert_eq!(entries(&bad).next(), Some(Err(CpioError::BadField { offset: 14 })));
        // No trailer: the archive ends right after the last member.
        let first_len = (HEADER_LEN + 5).next_multiple_of(4) + 8;
        assert_eq!(entries(&a[..first_len]).nth(1), Some(Err(CpioError::NoTrailer)));
        assert_eq!(entries(&[]).next(), Some(Err(CpioError::NoTrailer)));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let a = archive(&[("init", 0o100755, b"0123456789"), ("bin/x", 0o100644, b"zz")]);
        let end = a.iter().rposition(|&b| b != 0).unwrap() + 1; // before the block padding
        for len in 0..end {
            let r: Result<Vec<_>, _> = entries(&a[..len]).collect();
            assert!(r.is_err(), "cut at {len} accepted");
        }
    }

    proptest! {
        /// Random members round-trip, and random damage gives errors, never panics.
        #[test]
        fn round_trip_and_damage(
            members in proptest::collection::vec(("[a-z]{1,12}(/[a-z]{1,8}){0,2}", proptest::collection::vec(any::<u8>(), 0..100)), 0..8),
            damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let list: Vec<(&str, u32, &[u8])> = members.iter().map(|(n, d)| (n.as_str(), 0o100644, d.as_slice())).collect();
            let a = archive(&list);
            let got: Vec<(String, Vec<u8>)> = entries(&a).map(|e| e.map(|e| (String::from(e.path), e.data.to_vec()))).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(got, members);
            let mut bad = a.clone();
            for (at, b) in damage {
                let i = at.index(bad.len());
                bad[i] = b;
            }
            for e in entries(&bad).flatten() {
                prop_assert!(e.data.len() <= bad.len());
            }
        }
    }
}
