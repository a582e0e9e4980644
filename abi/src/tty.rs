//! The terminal line discipline of the console, as a data structure: bytes come in from the
//! serial port ([`Tty::input`]), go out to readers ([`Tty::read`]) and back to the screen as echo
//! ([`Tty::take_output`]); writes pass through output processing ([`Tty::output`]).
//!
//! - Canonical mode (`ICANON`): a line is edited in place (ERASE, WERASE, KILL with their echoes)
//!   and becomes readable at newline, EOL or EOF; a read returns at most one line, and an EOF on an
//!   empty line makes a read return 0.
//! - Raw mode: bytes are readable at once, with `VMIN`/`VTIME` deciding when a read returns (the
//!   four cases of termios(3); the kernel runs the timer and calls back with `timed_out`).
//! - `ISIG`: INTR, QUIT and SUSP become SIGINT, SIGQUIT and SIGTSTP for the foreground process
//!   group, and flush pending input unless `NOFLSH`.
//! - Input maps `ICRNL`, `INLCR`, `IGNCR`, `ISTRIP`; output maps `ONLCR` under `OPOST`.
//! - `struct termios` (36 bytes, `TCGETS`/`TCSETS*`) and `struct winsize` as bytes; the default
//!   settings are Linux's `tty_std_termios`.
//!
//! - Job control's bookkeeping: the session a terminal controls (`TIOCSCTTY`, `TIOCNOTTY`) and its
//!   foreground group (`TIOCGPGRP`/`TIOCSPGRP`), with Linux's errno for each refusal; and the
//!   rule for a background group's access ([`Tty::job_check`]: SIGTTIN, SIGTTOU or EIO).
//!
//! Not done, as trade-offs: flow control (IXON's ^S/^Q), LNEXT and REPRINT.

use alloc::{collections::VecDeque, vec::Vec};

use linux_raw_sys::general as g;

use crate::{linux::errno, signal};

/// Size of `struct termios` on x86-64.
pub const TERMIOS_SIZE: usize = 36;
/// Longest canonical line (Linux's `N_TTY_BUF_SIZE` less one for the newline).
pub const MAX_LINE: usize = 4095;
/// Input kept before further bytes are dropped (Linux's `N_TTY_BUF_SIZE`).
pub const MAX_INPUT: usize = 4096;

/// `struct termios`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Termios {
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    pub line: u8,
    pub cc: [u8; 19],
}

impl Default for Termios {
    /// Linux's `tty_std_termios`: cooked mode with echo and signals.
    fn default() -> Self {
        let mut cc = [0u8; 19];
        for (i, v) in [
            (g::VINTR, 0x03),
            (g::VQUIT, 0x1c),
            (g::VERASE, 0x7f),
            (g::VKILL, 0x15),
            (g::VEOF, 0x04),
            (g::VTIME, 0),
            (g::VMIN, 1),
            (g::VSTART, 0x11),
            (g::VSTOP, 0x13),
            (g::VSUSP, 0x1a),
            (g::VREPRINT, 0x12),
            (g::VDISCARD, 0x0f),
            (g::VWERASE, 0x17),
            (g::VLNEXT, 0x16),
        ] {
            cc[i as usize] = v;
        }
        Termios {
            iflag: g::ICRNL | g::IXON,
            oflag: g::OPOST | g::ONLCR,
            cflag: g::B38400 | g::CS8 | g::CREAD | g::HUPCL,
            lflag: g::ISIG | g::ICANON | g::ECHO | g::ECHOE | g::ECHOK | g::ECHOCTL | g::ECHOKE | g::IEXTEN,
            line: 0,
            cc,
        }
    }
}

impl Termios {
    pub fn to_bytes(&self) -> [u8; TERMIOS_SIZE] {
        let mut b = [0u8; TERMIOS_SIZE];
        for (i, v) in [self.iflag, self.oflag, self.cflag, self.lflag].into_iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        b[16] = self.line;
        b[17..36].copy_from_slice(&self.cc);
        b
    }

    pub fn from_bytes(b: &[u8; TERMIOS_SIZE]) -> Self {
        let w = |i: usize| u32::from_le_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]);
        let mut cc = [0u8; 19];
        cc.copy_from_slice(&b[17..36]);
        Termios { iflag: w(0), oflag: w(1), cflag: w(2), lflag: w(3), line: b[16], cc }
    }

    fn l(&self, f: u32) -> bool {
        self.lflag & f != 0
    }

    fn i(&self, f: u32) -> bool {
        self.iflag & f != 0
    }

    /// Control character `v` (`VINTR`, ...); 0 (`_POSIX_VDISABLE`) means "disabled".
    fn cc_is(&self, v: u32, c: u8) -> bool {
        let x = self.cc[v as usize];
        x != 0 && x == c
    }

    pub fn canonical(&self) -> bool {
        self.l(g::ICANON)
    }
}

/// `struct winsize`: rows, columns, and pixel sizes (8 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
    pub xpixel: u16,
    pub ypixel: u16,
}

impl Default for WinSize {
    fn default() -> Self {
        WinSize { rows: 24, cols: 80, xpixel: 0, ypixel: 0 }
    }
}

impl WinSize {
    pub fn to_bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        for (i, v) in [self.rows, self.cols, self.xpixel, self.ypixel].into_iter().enumerate() {
            b[i * 2..i * 2 + 2].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    pub fn from_bytes(b: &[u8; 8]) -> Self {
        let h = |i: usize| u16::from_le_bytes([b[i * 2], b[i * 2 + 1]]);
        WinSize { rows: h(0), cols: h(1), xpixel: h(2), ypixel: h(3) }
    }
}

/// A read that cannot finish now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Sleep until more input.
    Input,
    /// Sleep until more input or `deciseconds` pass, then call `read` again with `timed_out`.
    Timeout { deciseconds: u8 },
}

/// What [`Tty::input`] asks the kernel to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InputEffect {
    /// Send this signal to the foreground process group.
    pub signal: Option<u32>,
    /// Readers may now succeed: wake them.
    pub wake_readers: bool,
}

/// What a background access gets ([`Tty::job_check`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobCheck {
    /// It goes on.
    Allow,
    /// Send the signal to the caller's group and answer `ERESTARTSYS` (it is retried once the
    /// group is continued, or gives `EINTR` after a handler without `SA_RESTART`).
    Signal,
    /// It fails with this errno.
    Fail(u32),
}

/// Who asks a terminal for job control: the calling process's ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub pid: u32,
    pub pgrp: u32,
    pub sid: u32,
}

/// The line discipline state of one terminal.
#[derive(Clone, Debug, Default)]
pub struct Tty {
    pub termios: Termios,
    pub winsize: WinSize,
    /// The foreground process group (`TIOCSPGRP`); 0 for none.
    pub fg_pgrp: u32,
    /// The session this is the controlling terminal of (`TIOCSCTTY`); 0 for none.
    pub session: u32,
    /// The line being edited (canonical mode).
    line: Vec<u8>,
    /// Readable input; `None` is an end-of-file mark (canonical mode).
    ready: VecDeque<Option<u8>>,
    /// Echo and processed output waiting for the device.
    out: Vec<u8>,
}

impl Tty {
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes to send to the device (echo), taken.
    pub fn take_output(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.out)
    }

    /// Output processing of what a program writes: the device bytes.
    pub fn output(&self, data: &[u8]) -> Vec<u8> {
        let t = &self.termios;
        let mut v = Vec::with_capacity(data.len() + data.len() / 16);
        let onlcr = t.oflag & g::OPOST != 0 && t.oflag & g::ONLCR != 0;
        for &c in data {
            if c == b'\n' && onlcr {
                v.push(b'\r');
            }
            v.push(c);
        }
        v
    }

    fn echo_char(&mut self, c: u8) {
        let t = self.termios;
        if !t.l(g::ECHO) {
            return;
        }
        if t.l(g::ECHOCTL) && (c < 0x20 && c != b'\n' && c != b'\t' || c == 0x7f) {
            self.out.push(b'^');
            self.out.push(if c == 0x7f { b'?' } else { c + 0x40 });
        } else {
            let o = self.output(&[c]);
            self.out.extend_from_slice(&o);
        }
    }

    /// Width of `c` as it was echoed (control characters take two columns under ECHOCTL).
    fn echo_width(&self, c: u8) -> usize {
        if self.termios.l(g::ECHOCTL) && (c < 0x20 && c != b'\t' || c == 0x7f) { 2 } else { 1 }
    }

    fn erase_one(&mut self) -> bool {
        let Some(c) = self.line.pop() else { return false };
        if self.termios.l(g::ECHO) && self.termios.l(g::ECHOE) {
            for _ in 0..self.echo_width(c) {
                self.out.extend_from_slice(b"\x08 \x08");
            }
        }
        true
    }

    fn ready_len(&self) -> usize {
        self.ready.len() + self.line.len()
    }

    /// Forget pending input (after a signal character, `TCFLSH`, `TCSETSF`).
    pub fn flush_input(&mut self) {
        self.line.clear();
        self.ready.clear();
    }

    /// One byte from the device.
    pub fn input(&mut self, c: u8) -> InputEffect {
        let t = self.termios;
        let mut c = c;
        if t.i(g::ISTRIP) {
            c &= 0x7f;
        }
        if c == b'\r' {
            if t.i(g::IGNCR) {
                return InputEffect::default();
            }
            if t.i(g::ICRNL) {
                c = b'\n';
            }
        } else if c == b'\n' && t.i(g::INLCR) {
            c = b'\r';
        }
        if t.l(g::ISIG) {
            let sig = if t.cc_is(g::VINTR, c) {
                Some(signal::SIGINT)
            } else if t.cc_is(g::VQUIT, c) {
                Some(signal::SIGQUIT)
            } else if t.cc_is(g::VSUSP, c) {
                Some(signal::SIGTSTP)
            } else {
                None
            };
            if let Some(sig) = sig {
                if !t.l(g::NOFLSH) {
                    self.flush_input();
                }
                self.echo_char(c);
                return InputEffect { signal: Some(sig), wake_readers: false };
            }
        }
        if !t.canonical() {
            if self.ready.len() < MAX_INPUT {
                self.ready.push_back(Some(c));
                self.echo_char(c);
            }
            return InputEffect { signal: None, wake_readers: true };
        }
        if t.cc_is(g::VERASE, c) {
            self.erase_one();
            return InputEffect::default();
        }
        if t.l(g::IEXTEN) && t.cc_is(g::VWERASE, c) {
            while self.line.last() == Some(&b' ') {
                self.erase_one();
            }
            while self.line.last().is_some_and(|&x| x != b' ') {
                self.erase_one();
            }
            return InputEffect::default();
        }
        if t.cc_is(g::VKILL, c) {
            if t.l(g::ECHO) && t.l(g::ECHOKE) {
                while self.erase_one() {}
            } else {
                self.line.clear();
                if t.l(g::ECHO) && t.l(g::ECHOK) {
                    self.echo_char(c);
                    self.out.extend_from_slice(&self.output(b"\n"));
                }
            }
            return InputEffect::default();
        }
        if t.cc_is(g::VEOF, c) {
            self.ready.extend(self.line.drain(..).map(Some));
            self.ready.push_back(None);
            return InputEffect { signal: None, wake_readers: true };
        }
        let ends_line = c == b'\n' || t.cc_is(g::VEOL, c) || t.cc_is(g::VEOL2, c);
        if !ends_line && (self.line.len() >= MAX_LINE || self.ready_len() >= MAX_INPUT) {
            // A full line takes nothing but its end, as Linux's n_tty (which rings the bell).
            return InputEffect::default();
        }
        self.line.push(c);
        if ends_line {
            if t.l(g::ECHO) || (c == b'\n' && t.l(g::ECHONL)) {
                let o = self.output(&[c]);
                self.out.extend_from_slice(&o);
            }
            self.ready.extend(self.line.drain(..).map(Some));
            return InputEffect { signal: None, wake_readers: true };
        }
        self.echo_char(c);
        InputEffect::default()
    }

    /// Whether a complete line (or EOF) is readable in canonical mode.
    fn has_line(&self) -> bool {
        let t = &self.termios;
        self.ready.iter().any(|x| match x {
            None => true,
            Some(c) => *c == b'\n' || t.cc_is(g::VEOL, *c) || t.cc_is(g::VEOL2, *c),
        })
    }

    /// Bytes a read would find now (`FIONREAD`).
    pub fn readable_bytes(&self) -> usize {
        self.ready.iter().filter(|x| x.is_some()).count()
    }

    /// `poll`: would a read return now?
    pub fn poll_readable(&self) -> bool {
        if self.termios.canonical() {
            self.has_line()
        } else {
            !self.ready.is_empty() || self.termios.cc[g::VMIN as usize] == 0
        }
    }

    fn take(&mut self, out: &mut [u8], canonical: bool) -> usize {
        let mut n = 0;
        while n < out.len() {
            match self.ready.front().copied() {
                None => break,
                Some(None) => {
                    // The EOF mark ends a canonical read and is consumed with it: "abc^D" reads
                    // "abc", a lone ^D reads 0, and the next read waits for new input.
                    self.ready.pop_front();
                    if canonical {
                        break;
                    }
                }
                Some(Some(c)) => {
                    self.ready.pop_front();
                    out[n] = c;
                    n += 1;
                    if canonical && (c == b'\n' || self.termios.cc_is(g::VEOL, c) || self.termios.cc_is(g::VEOL2, c)) {
                        break;
                    }
                }
            }
        }
        n
    }

    /// A read of up to `out.len()` bytes. `timed_out` is true when the kernel calls again after the
    /// timeout a previous [`Wait::Timeout`] asked for.
    pub fn read(&mut self, out: &mut [u8], nonblock: bool, timed_out: bool) -> Result<Result<usize, Wait>, u32> {
        if out.is_empty() {
            return Ok(Ok(0));
        }
        let t = self.termios;
        let wait = |w: Wait| if nonblock { Err(errno::EAGAIN) } else { Ok(Err(w)) };
        if t.canonical() {
            if !self.has_line() {
                return wait(Wait::Input);
            }
            return Ok(Ok(self.take(out, true)));
        }
        let (vmin, vtime) = (t.cc[g::VMIN as usize] as usize, t.cc[g::VTIME as usize]);
        let have = self.readable_bytes();
        let want = vmin.min(out.len());
        let ready = match (vmin, vtime) {
            (0, 0) => true,
            (0, _) => have > 0 || timed_out,
            (_, 0) => have >= want,
            (_, _) => have >= want || (have > 0 && timed_out),
        };
        if ready {
            return Ok(Ok(self.take(out, false)));
        }
        if nonblock {
            return Err(errno::EAGAIN);
        }
        Ok(Err(if vtime > 0 && (vmin == 0 || have > 0) { Wait::Timeout { deciseconds: vtime } } else { Wait::Input }))
    }

    /// `TIOCSCTTY`: make this the caller's controlling terminal, its group the foreground. Only
    /// a session leader may (EPERM), and a terminal another session holds is taken only with
    /// `steal` (Linux: arg 1 with CAP_SYS_ADMIN). Asking again from the same session is a no-op.
    pub fn set_controlling(&mut self, caller: Caller, steal: bool) -> Result<(), u32> {
        if self.session == caller.sid && caller.sid != 0 {
            return Ok(());
        }
        if caller.pid != caller.sid {
            return Err(errno::EPERM);
        }
        if self.session != 0 && !steal {
            return Err(errno::EPERM);
        }
        self.session = caller.sid;
        self.fg_pgrp = caller.pgrp;
        Ok(())
    }

    /// `TIOCNOTTY` by the session's leader (others just lose the terminal: nothing to record
    /// here). Returns the foreground group, which Linux sends SIGHUP and SIGCONT, if the leader
    /// gave it up.
    pub fn give_up(&mut self, caller: Caller) -> Result<Option<u32>, u32> {
        if self.session == 0 || caller.sid != self.session {
            return Err(errno::ENOTTY);
        }
        if caller.pid != caller.sid {
            return Ok(None);
        }
        let fg = self.fg_pgrp;
        self.session = 0;
        self.fg_pgrp = 0;
        Ok(Some(fg).filter(|&g| g != 0))
    }

    /// Whether the caller is in a background group of the session this terminal controls: the
    /// only callers [`Tty::job_check`] may stop.
    pub fn is_background(&self, caller: Caller) -> bool {
        self.session != 0 && caller.sid == self.session && self.fg_pgrp != 0 && caller.pgrp != self.fg_pgrp
    }

    /// Whether writes from a background group are checked (`TOSTOP`).
    pub fn stops_background_output(&self) -> bool {
        self.termios.l(g::TOSTOP)
    }

    /// Linux's `__tty_check_change` for an access that `sig` guards (SIGTTIN: a read; SIGTTOU: a
    /// write under `TOSTOP`, `TIOCSPGRP`, a termios change). `ignored`: the calling thread blocks
    /// `sig` or its action is SIG_IGN; `orphaned`: the caller's group is orphaned.
    pub fn job_check(&self, caller: Caller, sig: u32, ignored: bool, orphaned: bool) -> JobCheck {
        if !self.is_background(caller) {
            JobCheck::Allow
        } else if ignored {
            // A read that cannot stop the reader fails; a write or a setting goes through.
            if sig == g::SIGTTIN { JobCheck::Fail(errno::EIO) } else { JobCheck::Allow }
        } else if orphaned {
            // Nobody would continue a stopped orphaned group.
            JobCheck::Fail(errno::EIO)
        } else {
            JobCheck::Signal
        }
    }

    /// `TIOCGPGRP` (and `TIOCGSID` with `sid`): only for a process of the terminal's session,
    /// else ENOTTY, as Linux answers for a terminal that is not the caller's controlling one.
    pub fn foreground(&self, caller: Caller) -> Result<u32, u32> {
        if self.session == 0 || caller.sid != self.session {
            return Err(errno::ENOTTY);
        }
        Ok(self.fg_pgrp)
    }

    /// `TIOCSPGRP`, after the background check, in the order of Linux's `tiocspgrp`: a negative
    /// group is EINVAL, then a caller whose controlling terminal this is not ENOTTY, then the
    /// group: `group_session` is what `abi::jobs::ProcTree::session_of_group` answered for it
    /// (ESRCH when the id is not in use; a session other than the caller's, or none, is EPERM),
    /// looked up by the process layer before the terminal is locked.
    pub fn set_foreground(&mut self, caller: Caller, pgrp: i32, group_session: Result<Option<u32>, u32>) -> Result<(), u32> {
        let pgrp = u32::try_from(pgrp).map_err(|_| errno::EINVAL)?;
        if self.session == 0 || caller.sid != self.session {
            return Err(errno::ENOTTY);
        }
        if group_session? != Some(caller.sid) {
            return Err(errno::EPERM);
        }
        self.fg_pgrp = pgrp;
        Ok(())
    }

    /// `TCSETS`, `TCSETSW` (same here: output is never queued) and, with `flush`, `TCSETSF`.
    /// Leaving canonical mode makes the partial line readable, as Linux does.
    pub fn set_termios(&mut self, t: Termios, flush: bool) {
        if flush {
            self.flush_input();
        }
        if self.termios.canonical() && !t.canonical() {
            self.ready.extend(self.line.drain(..).map(Some));
            self.ready.retain(|x| x.is_some());
        }
        self.termios = t;
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;

    fn feed(t: &mut Tty, s: &[u8]) -> Vec<InputEffect> {
        s.iter().map(|&c| t.input(c)).collect()
    }

    #[test]
    fn background_access_is_signalled_refused_or_allowed_as_on_linux() {
        let mut t = Tty::new();
        let leader = Caller { pid: 10, pgrp: 10, sid: 10 };
        t.set_controlling(leader, false).unwrap();
        let bg = Caller { pid: 11, pgrp: 11, sid: 10 };
        let other_session = Caller { pid: 12, pgrp: 12, sid: 12 };
        assert!(!t.is_background(leader) && t.is_background(bg) && !t.is_background(other_session));
        assert_eq!(t.job_check(leader, g::SIGTTIN, false, false), JobCheck::Allow);
        assert_eq!(t.job_check(other_session, g::SIGTTIN, false, false), JobCheck::Allow, "not its controlling terminal");
        assert_eq!(t.job_check(bg, g::SIGTTIN, false, false), JobCheck::Signal);
        assert_eq!(t.job_check(bg, g::SIGTTOU, false, false), JobCheck::Signal);
        assert_eq!(t.job_check(bg, g::SIGTTIN, true, false), JobCheck::Fail(errno::EIO), "a read that cannot stop fails");
        assert_eq!(t.job_check(bg, g::SIGTTOU, true, false), JobCheck::Allow, "a write or setting with SIGTTOU ignored goes on");
        assert_eq!(t.job_check(bg, g::SIGTTIN, false, true), JobCheck::Fail(errno::EIO));
        assert_eq!(t.job_check(bg, g::SIGTTOU, false, true), JobCheck::Fail(errno::EIO));
        assert!(!t.stops_background_output());
        t.termios.lflag |= g::TOSTOP;
        assert!(t.stops_background_output());
    }

    fn read_all(t: &mut Tty) -> Result<Result<Vec<u8>, Wait>, u32> {
        let mut buf = [0u8; 256];
        t.read(&mut buf, false, false).map(|r| r.map(|n| buf[..n].to_vec()))
    }

    #[test]
    fn termios_layout_and_defaults() {
        use core::mem::{offset_of, size_of};
        assert_eq!(size_of::<g::termios>(), TERMIOS_SIZE);
        assert_eq!(offset_of!(g::termios, c_cc), 17);
        let t = Termios::default();
        assert_eq!(Termios::from_bytes(&t.to_bytes()), t);
        assert_eq!(t.to_bytes()[17 + g::VINTR as usize], 3);
        // The values `stty -g` prints on Linux for a fresh tty: iflag 0x500, oflag 0x5, lflag 0x8a3b.
        assert_eq!((t.iflag, t.oflag, t.lflag), (0x500, 0x5, 0x8a3b));
        assert_eq!(core::mem::size_of::<g::winsize>(), 8);
        let w = WinSize { rows: 50, cols: 132, xpixel: 1, ypixel: 2 };
        assert_eq!(WinSize::from_bytes(&w.to_bytes()), w);
        assert_eq!(crate::linux::ioctl::TCGETS, 0x5401);
    }

    #[test]
    fn canonical_lines_with_echo_and_crnl() {
        let mut t = Tty::new();
        feed(&mut t, b"ls -l");
        assert_eq!(read_all(&mut t), Ok(Err(Wait::Input)), "no line yet");
        assert_eq!(t.read(&mut [0u8; 4], true, false), Err(errno::EAGAIN));
        let fx = t.input(b'\r');
        assert!(fx.wake_readers);
        assert_eq!(t.take_output(), b"ls -l\r\n", "echo, and ONLCR on the echoed newline");
        feed(&mut t, b"two\rthree\r");
        assert_eq!(read_all(&mut t), Ok(Ok(b"ls -l\n".to_vec())), "one line per read");
        let mut small = [0u8; 2];
        assert_eq!(t.read(&mut small, false, false), Ok(Ok(2)));
        assert_eq!(&small, b"tw");
        assert_eq!(read_all(&mut t), Ok(Ok(b"o\n".to_vec())));
        assert_eq!(read_all(&mut t), Ok(Ok(b"three\n".to_vec())));
        assert_eq!(t.readable_bytes(), 0);
    }

    #[test]
    fn erase_kill_werase() {
        let mut t = Tty::new();
        feed(&mut t, b"abc\x7f\x7fx");
        assert_eq!(t.take_output(), b"abc\x08 \x08\x08 \x08x");
        feed(&mut t, b"\x7f\x7f\x7f\x7f");
        t.take_output();
        feed(&mut t, b"junk\x15ok");
        feed(&mut t, b"one two  \x17three\n");
        assert_eq!(read_all(&mut t), Ok(Ok(b"okone three\n".to_vec())));
        t.take_output();
        // A control character echoed as ^A erases two columns.
        feed(&mut t, b"\x01");
        assert_eq!(t.take_output(), b"^A");
        feed(&mut t, b"\x7f");
        assert_eq!(t.take_output(), b"\x08 \x08\x08 \x08");
    }

    #[test]
    fn eof_ends_a_line_or_reads_zero() {
        let mut t = Tty::new();
        feed(&mut t, b"abc\x04");
        assert_eq!(read_all(&mut t), Ok(Ok(b"abc".to_vec())));
        assert_eq!(read_all(&mut t), Ok(Err(Wait::Input)), "the mark went with the line");
        feed(&mut t, b"\x04");
        assert_eq!(read_all(&mut t), Ok(Ok(vec![])), "EOF on an empty line reads 0");
        assert_eq!(read_all(&mut t), Ok(Err(Wait::Input)));
    }

    #[test]
    fn isig_makes_signals_and_flushes() {
        let mut t = Tty::new();
        t.fg_pgrp = 7;
        feed(&mut t, b"sleep 100");
        let fx = t.input(0x03);
        assert_eq!(fx.signal, Some(signal::SIGINT));
        assert!(t.take_output().ends_with(b"^C"));
        feed(&mut t, b"\n");
        assert_eq!(read_all(&mut t), Ok(Ok(b"\n".to_vec())), "the interrupted line was flushed");
        assert_eq!(t.input(0x1c).signal, Some(signal::SIGQUIT));
        assert_eq!(t.input(0x1a).signal, Some(signal::SIGTSTP));
        let mut raw = t.termios;
        raw.lflag &= !g::ISIG;
        t.set_termios(raw, false);
        assert_eq!(t.input(0x03).signal, None, "no signals without ISIG");
    }

    #[test]
    fn raw_mode_vmin_vtime() {
        let mut t = Tty::new();
        let mut raw = t.termios;
        raw.lflag &= !(g::ICANON | g::ECHO);
        raw.iflag &= !g::ICRNL;
        feed(&mut t, b"par");
        t.take_output();
        t.set_termios(raw, false);
        assert_eq!(read_all(&mut t), Ok(Ok(b"par".to_vec())), "the partial line becomes readable");
        // VMIN=1 VTIME=0: block until one byte.
        assert_eq!(read_all(&mut t), Ok(Err(Wait::Input)));
        t.input(b'\r');
        assert_eq!(read_all(&mut t), Ok(Ok(b"\r".to_vec())), "no ICRNL");
        assert!(t.take_output().is_empty(), "no echo");
        // VMIN=3 VTIME=0.
        raw.cc[g::VMIN as usize] = 3;
        t.set_termios(raw, false);
        feed(&mut t, b"ab");
        assert_eq!(read_all(&mut t), Ok(Err(Wait::Input)));
        feed(&mut t, b"c");
        assert_eq!(read_all(&mut t), Ok(Ok(b"abc".to_vec())));
        // VMIN=0 VTIME=0: poll.
        raw.cc[g::VMIN as usize] = 0;
        t.set_termios(raw, false);
        assert_eq!(read_all(&mut t), Ok(Ok(vec![])));
        // VMIN=0 VTIME=5: wait up to half a second, then 0.
        raw.cc[g::VTIME as usize] = 5;
        t.set_termios(raw, false);
        assert_eq!(read_all(&mut t), Ok(Err(Wait::Timeout { deciseconds: 5 })));
        let mut buf = [0u8; 8];
        assert_eq!(t.read(&mut buf, false, true), Ok(Ok(0)));
        // VMIN=4 VTIME=2: inter-byte timer once something arrived.
        raw.cc[g::VMIN as usize] = 4;
        raw.cc[g::VTIME as usize] = 2;
        t.set_termios(raw, false);
        assert_eq!(read_all(&mut t), Ok(Err(Wait::Input)));
        feed(&mut t, b"xy");
        assert_eq!(read_all(&mut t), Ok(Err(Wait::Timeout { deciseconds: 2 })));
        assert_eq!(t.read(&mut buf, false, true), Ok(Ok(2)));
    }

    #[test]
    fn output_processing() {
        let mut t = Tty::new();
        assert_eq!(t.output(b"a\nb\n"), b"a\r\nb\r\n");
        t.termios.oflag &= !g::OPOST;
        assert_eq!(t.output(b"a\n"), b"a\n");
    }

    proptest::proptest! {
        /// Any input in any mode: buffers stay bounded, canonical reads return at most one line,
        /// and every byte that became readable is read back once (nothing invented or lost
        /// between `readable_bytes` and the reads).
        #[test]
        fn bounded_and_conserving(input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..6000), raw in proptest::prelude::any::<bool>()) {
            let mut t = Tty::new();
            if raw {
                let mut r = t.termios;
                r.lflag &= !g::ICANON;
                t.set_termios(r, false);
            }
            for c in input {
                t.input(c);
                proptest::prop_assert!(t.line.len() <= MAX_LINE + 1 && t.ready.len() <= MAX_INPUT + MAX_LINE + 2);
            }
            let avail = t.readable_bytes();
            let mut got = 0;
            let mut buf = [0u8; 512];
            loop {
                match t.read(&mut buf, true, false) {
                    Ok(Ok(0)) if t.ready.is_empty() => break,
                    Ok(Ok(n)) => {
                        if t.termios.canonical() {
                            proptest::prop_assert!(buf[..n.saturating_sub(1)].iter().all(|&c| c != b'\n'));
                        }
                        got += n;
                    }
                    _ => break,
                }
            }
            proptest::prop_assert_eq!(got, avail);
        }
    }

    #[test]
    fn controlling_terminal_and_foreground_group() {
        let leader = Caller { pid: 5, pgrp: 5, sid: 5 };
        let member = Caller { pid: 9, pgrp: 9, sid: 5 };
        let stranger = Caller { pid: 7, pgrp: 7, sid: 7 };
        let mut t = Tty::new();
        assert_eq!(t.foreground(leader), Err(errno::ENOTTY), "nobody's terminal yet");
        assert_eq!(t.set_foreground(leader, 5, Ok(Some(5))), Err(errno::ENOTTY));
        assert_eq!(t.set_foreground(leader, -1, Ok(Some(5))), Err(errno::EINVAL), "EINVAL comes before ENOTTY");
        assert_eq!(t.set_controlling(member, false), Err(errno::EPERM), "only a session leader");
        assert_eq!(t.set_controlling(leader, false), Ok(()));
        assert_eq!((t.session, t.foreground(member)), (5, Ok(5)));
        assert_eq!(t.set_controlling(leader, false), Ok(()), "again: nothing changes");
        assert_eq!(t.set_controlling(stranger, false), Err(errno::EPERM), "held by another session");
        assert_eq!(t.foreground(stranger), Err(errno::ENOTTY));
        assert_eq!(t.set_foreground(member, 9, Ok(Some(5))), Ok(()));
        assert_eq!(t.fg_pgrp, 9);
        assert_eq!(t.set_foreground(member, -1, Err(errno::ESRCH)), Err(errno::EINVAL));
        assert_eq!(t.set_foreground(stranger, 7, Ok(Some(7))), Err(errno::ENOTTY), "not its terminal");
        assert_eq!(t.set_foreground(member, 7, Ok(Some(7))), Err(errno::EPERM), "a group of another session");
        assert_eq!(t.set_foreground(member, 8, Err(errno::ESRCH)), Err(errno::ESRCH), "no such group");
        assert_eq!(t.set_foreground(member, 0, Err(errno::ESRCH)), Err(errno::ESRCH), "0 names no group");
        assert_eq!(t.set_foreground(member, 6, Ok(None)), Err(errno::EPERM), "an id left only as a session's");
        assert_eq!(t.fg_pgrp, 9, "refusals leave the foreground as it was");
        // ISIG signals go to whichever group is in the foreground now.
        assert_eq!(t.input(0x03).signal, Some(signal::SIGINT));
        assert_eq!(t.give_up(member), Ok(None), "a member only detaches itself");
        assert_eq!(t.session, 5);
        assert_eq!(t.give_up(leader), Ok(Some(9)), "the leader's give-up hangs up the foreground");
        assert_eq!((t.session, t.fg_pgrp), (0, 0));
        assert_eq!(t.set_controlling(stranger, false), Ok(()));
        assert_eq!(t.set_controlling(leader, true), Ok(()), "stolen");
        assert_eq!(t.foreground(leader), Ok(5));
    }

    /// `TIOCSPGRP` decided from a process tree, as the kernel asks it: a pipeline's group whose
    /// leader was reaped while its other member lives, a group of another session, a group that
    /// is gone.
    #[test]
    fn tiocspgrp_with_the_process_tree() {
        use crate::jobs::{INIT, ProcTree, Select, WaitOpts};
        use crate::signal::ChildEvent;
        let w = WaitOpts { exited: true, stopped: false, continued: false, nohang: true, nowait: false };
        let mut tree = ProcTree::new();
        let sh = tree.fork(INIT).unwrap();
        tree.setsid(sh).unwrap();
        let caller = |tree: &ProcTree, pid: u32| Caller { pid, pgrp: tree.pgid(pid).unwrap(), sid: tree.sid(pid).unwrap() };
        let mut t = Tty::new();
        t.set_controlling(caller(&tree, sh), false).unwrap();
        let set = |t: &mut Tty, tree: &ProcTree, who: u32, pg: i32| t.set_foreground(caller(tree, who), pg, tree.session_of_group(pg as u32));
        // `a | b`: a ends and is reaped before b asks for the group.
        let a = tree.fork(sh).unwrap();
        tree.setpgid(a, 0, 0).unwrap();
        tree.exit(a, ChildEvent::Exited(0), false);
        let b = tree.fork(sh).unwrap();
        tree.setpgid(b, 0, i64::from(a)).unwrap();
        tree.wait(sh, Select::Pid(a), w).unwrap();
        assert_eq!(set(&mut t, &tree, b, a as i32), Ok(()), "the group lives on in b");
        assert_eq!(t.fg_pgrp, a);
        assert_eq!(set(&mut t, &tree, sh, sh as i32), Ok(()));
        // Another session's group.
        let o = tree.fork(sh).unwrap();
        tree.setsid(o).unwrap();
        assert_eq!(set(&mut t, &tree, sh, o as i32), Err(errno::EPERM));
        assert_eq!(set(&mut t, &tree, o, o as i32), Err(errno::ENOTTY), "not o's terminal");
        // b ends and is reaped: nothing holds group a any more.
        tree.exit(b, ChildEvent::Exited(0), false);
        tree.wait(sh, Select::Pid(b), w).unwrap();
        assert_eq!(set(&mut t, &tree, sh, a as i32), Err(errno::ESRCH));
        assert_eq!(t.fg_pgrp, sh);
    }

    #[test]
    fn long_lines_are_capped_but_still_end() {
        let mut t = Tty::new();
        t.termios.lflag &= !g::ECHO;
        for _ in 0..5000 {
            t.input(b'x');
        }
        t.input(b'\n');
        let mut buf = vec![0u8; 8192];
        assert_eq!(t.read(&mut buf, false, false), Ok(Ok(MAX_LINE + 1)));
        assert_eq!(buf[MAX_LINE], b'\n');
    }
}
