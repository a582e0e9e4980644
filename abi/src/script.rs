//! `#!` scripts for `execve` (Linux's `fs/binfmt_script.c`): the first line names an interpreter
//! and at most one argument; the kernel then runs `interpreter [arg] path-of-script args...`.
//!
//! Rules kept from Linux: only the first [`BINPRM_BUF_SIZE`] bytes are looked at; blanks after
//! `#!` are skipped; the interpreter ends at the first blank; everything after it, trimmed, is one
//! argument (not split); a line that does not end within the buffer is `ENOEXEC` if the
//! interpreter name itself is cut off. Nested scripts are up to the caller (Linux allows a depth
//! of 4 via `BINPRM_MAX_RECURSION`), see [`MAX_DEPTH`].

use crate::linux::errno;

/// Bytes of the file examined (Linux's `BINPRM_BUF_SIZE`).
pub const BINPRM_BUF_SIZE: usize = 256;
/// Interpreters that are scripts themselves, followed at most this deep (`ELOOP` beyond).
pub const MAX_DEPTH: usize = 4;

/// The interpreter line of a script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shebang<'a> {
    pub interpreter: &'a str,
    pub arg: Option<&'a str>,
}

/// `None` when `file` does not start with `#!` (try other formats); `Err(ENOEXEC)` for a `#!`
/// line without an interpreter or with one cut off by the buffer limit.
pub fn parse(file: &[u8]) -> Option<Result<Shebang<'_>, u32>> {
    let rest = file.strip_prefix(b"#!")?;
    let buf = &rest[..rest.len().min(BINPRM_BUF_SIZE - 2)];
    let (line, complete) = match buf.iter().position(|&c| c == b'\n') {
        Some(i) => (&buf[..i], true),
        None => (buf, buf.len() < BINPRM_BUF_SIZE - 2),
    };
    let blank = |c: &u8| *c == b' ' || *c == b'\t';
    let Ok(line) = core::str::from_utf8(line) else { return Some(Err(errno::ENOEXEC)) };
    let line = line.trim_start_matches([' ', '\t']).trim_end_matches([' ', '\t', '\r']);
    if line.is_empty() {
        return Some(Err(errno::ENOEXEC));
    }
    let end = line.bytes().position(|c| blank(&c)).unwrap_or(line.len());
    let (interpreter, tail) = line.split_at(end);
    if !complete && tail.is_empty() {
        // The interpreter's name runs to the end of the buffer: it may be cut short.
        return Some(Err(errno::ENOEXEC));
    }
    let arg = tail.trim_matches([' ', '\t']);
    Some(Ok(Shebang { interpreter, arg: (!arg.is_empty()).then_some(arg) }))
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;

    #[test]
    fn interpreter_and_one_argument() {
        assert_eq!(parse(b"#!/bin/sh\necho hi\n"), Some(Ok(Shebang { interpreter: "/bin/sh", arg: None })));
        assert_eq!(parse(b"#! /bin/busybox  sh -e \nx"), Some(Ok(Shebang { interpreter: "/bin/busybox", arg: Some("sh -e") })));
        assert_eq!(parse(b"#!/usr/bin/awk -f\r\n"), Some(Ok(Shebang { interpreter: "/usr/bin/awk", arg: Some("-f") })));
        assert_eq!(parse(b"#!/bin/sh"), Some(Ok(Shebang { interpreter: "/bin/sh", arg: None })), "no newline, short file");
        assert_eq!(parse(b"\x7fELF"), None);
        assert_eq!(parse(b"#!\n"), Some(Err(errno::ENOEXEC)));
        assert_eq!(parse(b"#!   \t\n"), Some(Err(errno::ENOEXEC)));
    }

    #[test]
    fn long_lines() {
        let mut f = b"#!/bin/sh ".to_vec();
        f.extend(vec![b'x'; 400]);
        let s = parse(&f).unwrap().unwrap();
        assert_eq!(s.interpreter, "/bin/sh");
        assert_eq!(s.arg.unwrap().len(), BINPRM_BUF_SIZE - 2 - 8, "the argument is cut at the buffer");
        let mut f = b"#!/".to_vec();
        f.extend(vec![b'y'; 400]);
        assert_eq!(parse(&f), Some(Err(errno::ENOEXEC)), "interpreter name cut off");
    }
}
