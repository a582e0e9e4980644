//! Kernel command line: `key=value` and bare-flag words separated by spaces.
//!
//! Known options (anything else is reported back as a warning and ignored, never fatal):
//!
//! | option              | meaning                                                        |
//! |---------------------|----------------------------------------------------------------|
//! | `exit-after=SECS`   | power off by itself after SECS seconds (scripts, CI)           |
//! | `test=all\|list\|A,B` | test kernel: which in-kernel tests to run                     |
//! | `soak=SECS`         | test kernel: the stress tests over and over for SECS seconds   |
//! | `slice-us=N`        | scheduler time slice in microseconds (default 10000)           |
//! | `idle-poll-us=N`    | longest poll of an idle CPU before it halts, us (default 200; 0: off) |
//! | `nopcid`            | do not use PCID even where the CPU has it                      |
//! | `nox2apic`          | drive the local APIC in xAPIC mode even where x2APIC exists    |
//! | `notscdeadline`     | use the one-shot LAPIC timer even where TSC-deadline exists   |
//! | `noxsave`           | save FPU threads' state with FXSAVE even where XSAVE exists   |
//! | `eagerfpu`          | save and restore FPU threads' state at every switch (no CR0.TS trap) |
//! | `nosmap`            | leave SMAP off even where the CPU has it (no `stac`/`clac`)    |
//! | `maxcpus=N`         | bring up at most N CPUs                                        |
//! | `demo=0\|1`         | `make run`'s demonstration workload (default on)               |
//! | `loglevel=L`        | error, warn, info, debug or trace                              |
//! | `bench`             | run the in-kernel benchmarks, print `kbench` lines, power off  |
//! | `bench=quick`       | the same with tiny sample counts (checks the code paths)       |

/// Most warnings kept; the rest are counted.
pub const MAX_WARNINGS: usize = 8;

/// The longest `exit-after=` accepted: a year, so that no multiplication into nanoseconds overflows.
pub const MAX_EXIT_AFTER_S: u64 = 365 * 24 * 3600;

/// The longest command line kept, in bytes. Linux's x86 limit is 2048; a loader may pass more.
pub const MAX_LEN: usize = 4096;

/// Default scheduler time slice.
pub const DEFAULT_SLICE_US: u64 = 10_000;

/// Default bound of an idle CPU's poll before it halts: Linux's `guest_halt_poll_ns` default.
pub const DEFAULT_IDLE_POLL_US: u64 = 200;

/// Log verbosity, as the `log` crate's levels (kept here so this module has no dependency).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// The parsed command line. Borrowed strings point into the command line itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options<'a> {
    pub exit_after_s: Option<u64>,
    pub test: Option<&'a str>,
    /// Test kernel: the soak's length in seconds (`soak=SECS`).
    pub soak_s: Option<u64>,
    pub slice_us: u64,
    /// `idle-poll-us=N`: the longest an idle CPU polls its run queue before it halts (0: never).
    pub idle_poll_us: u64,
    pub nopcid: bool,
    pub nox2apic: bool,
    pub notscdeadline: bool,
    pub noxsave: bool,
    /// `eagerfpu`: no lazy extended-state switching (CR0.TS trap on first use): every switch of a
    /// user thread saves and restores its vector state.
    pub eagerfpu: bool,
    /// `nosmap`: leave CR4.SMAP off and use no `stac`/`clac` (for emulators that cannot run them).
    pub nosmap: bool,
    pub maxcpus: Option<u32>,
    pub demo: bool,
    pub loglevel: LogLevel,
    /// Run the in-kernel benchmarks instead of the workload, then power off.
    pub bench: bool,
    /// With `bench`: tiny sample counts (`bench=quick`).
    pub bench_quick: bool,
    /// The trace categories to record (`trace`, `trace=sched,ipi,...`); empty: no trace.
    pub trace: trace::Mask,
    /// Records each CPU's trace ring keeps (`trace-buf=`).
    pub trace_buf: u32,
    /// `init=/path`: the first user program, from the initramfs.
    pub init: &'a str,
    /// What follows `--`: the first user program's arguments after its name, space-separated.
    pub init_args: &'a str,
    /// `init-list=/path`: instead of one init, run the programs listed in that initramfs file (one
    /// a line: its path and arguments), one after another, each as a new process; then power off.
    pub init_list: Option<&'a str>,
}

/// Default records per CPU of the trace rings: 64 Ki records, 2.5 MiB per CPU.
pub const DEFAULT_TRACE_BUF: u32 = 1 << 16;

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            exit_after_s: None,
            test: None,
            soak_s: None,
            slice_us: DEFAULT_SLICE_US,
            idle_poll_us: DEFAULT_IDLE_POLL_US,
            nopcid: false,
            nox2apic: false,
            notscdeadline: false,
            noxsave: false,
            eagerfpu: false,
            nosmap: false,
            maxcpus: None,
            demo: true,
            loglevel: LogLevel::Info,
            bench: false,
            bench_quick: false,
            trace: trace::Mask::NONE,
            trace_buf: DEFAULT_TRACE_BUF,
            init: "/init",
            init_args: "",
            init_list: None,
        }
    }
}

/// What was wrong with one word of the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warning<'a> {
    Unknown(&'a str),
    BadValue { key: &'a str, value: &'a str, expected: &'static str },
    MissingValue(&'a str),
}

impl core::fmt::Display for Warning<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Warning::Unknown(w) => write!(f, "unknown option `{w}` ignored"),
            Warning::BadValue { key, value, expected } => {
                write!(f, "option `{key}={value}` ignored: expected {expected}")
            }
            Warning::MissingValue(k) => write!(f, "option `{k}` ignored: it needs a value (`{k}=...`)"),
        }
    }
}

/// The warnings of one parse: the first [`MAX_WARNINGS`] kept, all counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Warnings<'a> {
    kept: [Option<Warning<'a>>; MAX_WARNINGS],
    pub total: usize,
}

impl<'a> Warnings<'a> {
    fn push(&mut self, w: Warning<'a>) {
        if let Some(slot) = self.kept.get_mut(self.total) {
            *slot = Some(w);
        }
        self.total += 1;
    }

    pub fn iter(&self) -> impl Iterator<Item = &Warning<'a>> {
        self.kept.iter().flatten()
    }
}

/// `value` as a number in `range`; otherwise a warning that states the range, whether the value
/// was not a number at all or a number too large for any integer type.
fn number_in<'a>(
    key: &'a str,
    value: &'a str,
    range: core::ops::RangeInclusive<u64>,
    expected: &'static str,
    w: &mut Warnings<'a>,
) -> Option<u64> {
    match value.parse::<u64>() {
        Ok(n) if range.contains(&n) => Some(n),
        _ => {
            w.push(Warning::BadValue { key, value, expected });
            None
        }
    }
}

/// What [`keep`] did to the loader's bytes, so the kernel can say it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kept {
    /// The line was longer than the buffer: the byte length it had, and how many bytes were kept
    /// (the cut falls on a word boundary, so no option is shortened into another value).
    pub truncated: Option<(usize, usize)>,
    /// Bytes that were not printable UTF-8 (invalid sequences, control characters such as ESC),
    /// each replaced by `?` so they neither reach the terminal nor end the line early.
    pub replaced: usize,
}

/// Copy the loader's command line into `buf` as printable UTF-8 and return the text with what was
/// changed. A NUL ends the line; tabs and newlines become spaces (they separate words anyway);
/// any other control character or invalid UTF-8 byte becomes `?`. A line longer than `buf` is cut
/// before the word that straddles the end, never inside it: `exit-after=100` cut after `exit-after=1`
/// would otherwise become a different, valid option.
pub fn keep<'b>(bytes: &[u8], buf: &'b mut [u8]) -> (&'b str, Kept) {
    let bytes = bytes.split(|&b| b == 0).next().unwrap_or(&[]);
    let mut kept = Kept::default();
    let mut n = 0;
    let mut rest = bytes;
    let mut full = false;
    while !rest.is_empty() && !full {
        let (chunk, bad) = match core::str::from_utf8(rest) {
            Ok(s) => (s, 0),
            Err(e) => {
                // The first `valid_up_to` bytes are valid UTF-8 by the error's contract.
                let good = core::str::from_utf8(&rest[..e.valid_up_to()]).unwrap_or("");
                (good, e.error_len().unwrap_or(rest.len() - e.valid_up_to()))
            }
        };
        for c in chunk.chars() {
            let mut tmp = [0u8; 4];
            let enc: &[u8] = match c {
                '\t' | '\n' | '\r' => b" ",
                c if c.is_control() => {
                    kept.replaced += 1;
                    b"?"
                }
                c => c.encode_utf8(&mut tmp).as_bytes(),
            };
            if n + enc.len() > buf.len() {
                full = true;
                break;
            }
            buf[n..n + enc.len()].copy_from_slice(enc);
            n += enc.len();
        }
        rest = &rest[chunk.len()..];
        if full {
            break;
        }
        for _ in 0..bad {
            if n == buf.len() {
                full = true;
                break;
            }
            buf[n] = b'?';
            n += 1;
            kept.replaced += 1;
        }
        rest = &rest[bad.min(rest.len())..];
    }
    if full {
        // Back up to the last space, dropping the straddling word whole.
        let cut = buf[..n].iter().rposition(|&b| b == b' ').unwrap_or(0);
        kept.truncated = Some((bytes.len(), cut));
        n = cut;
    }
    // Only whole characters were written, so this cannot fail; "" keeps the kernel going if it did.
    (core::str::from_utf8(&buf[..n]).unwrap_or(""), kept)
}

/// Parse a command line. Never fails: bad words become warnings and the defaults stand.
pub fn parse<'a>(line: &'a str) -> (Options<'a>, Warnings<'a>) {
    let mut o = Options::default();
    let mut w = Warnings::default();
    // Everything after a lone `--` belongs to the init program.
    let mut kernel_part = line;
    let mut rest = line;
    while let Some(i) = rest.find("--") {
        let at = line.len() - rest.len() + i;
        let before_ok = at == 0 || line.as_bytes()[at - 1].is_ascii_whitespace();
        let after_ok = line.as_bytes().get(at + 2).is_none_or(|b| b.is_ascii_whitespace());
        if before_ok && after_ok {
            kernel_part = &line[..at];
            o.init_args = line[at + 2..].trim();
            break;
        }
        rest = &rest[i + 2..];
    }
    for word in kernel_part.split_ascii_whitespace() {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        let needs = |w: &mut Warnings<'a>| {
            if value.is_none() {
                w.push(Warning::MissingValue(key));
            }
            value
        };
        match key {
            "exit-after" => {
                if let Some(v) = needs(&mut w) {
                    let n = number_in(key, v, 0..=MAX_EXIT_AFTER_S, "0 to 31536000 seconds", &mut w);
                    o.exit_after_s = n.or(o.exit_after_s);
                }
            }
            "test" => o.test = needs(&mut w).or(o.test),
            "init" => o.init = needs(&mut w).unwrap_or(o.init),
            "init-list" => o.init_list = needs(&mut w).or(o.init_list),
            "soak" => {
                if let Some(v) = needs(&mut w) {
                    let n = number_in(key, v, 1..=MAX_EXIT_AFTER_S, "1 to 31536000 seconds", &mut w);
                    o.soak_s = n.or(o.soak_s);
                }
            }
            "slice-us" => {
                if let Some(v) = needs(&mut w) {
                    let n = number_in(key, v, 100..=1_000_000, "100 to 1000000 microseconds", &mut w);
                    o.slice_us = n.unwrap_or(o.slice_us);
                }
            }
            "idle-poll-us" => {
                if let Some(v) = needs(&mut w) {
                    let n = number_in(key, v, 0..=10_000, "0 to 10000 microseconds", &mut w);
                    o.idle_poll_us = n.unwrap_or(o.idle_poll_us);
                }
            }
            "maxcpus" => {
                if let Some(v) = needs(&mut w) {
                    let n = number_in(key, v, 1..=u64::from(u32::MAX), "a CPU count from 1 to 4294967295", &mut w);
                    // The range check above keeps the value within u32.
                    o.maxcpus = n.map(|n| n as u32).or(o.maxcpus);
                }
            }
            "demo" => match value {
                Some("0") | Some("off") => o.demo = false,
                Some("1") | Some("on") | None => o.demo = true,
                Some(v) => w.push(Warning::BadValue { key, value: v, expected: "0 or 1" }),
            },
            "loglevel" => {
                if let Some(v) = needs(&mut w) {
                    o.loglevel = match v {
                        "error" => LogLevel::Error,
                        "warn" => LogLevel::Warn,
                        "info" => LogLevel::Info,
                        "debug" => LogLevel::Debug,
                        "trace" => LogLevel::Trace,
                        _ => {
                            w.push(Warning::BadValue {
                                key,
                                value: v,
                                expected: "error, warn, info, debug or trace",
                            });
                            o.loglevel
                        }
                    }
                }
            }
            "trace" => match trace::Mask::from_option(value) {
                Ok(mask) => o.trace = mask,
                Err(_) => w.push(Warning::BadValue {
                    key,
                    value: value.unwrap_or(""),
                    expected: "categories from sched, ipi, tlb, timer, idle, syscall, fault, signal, all, none",
                }),
            },
            "trace-buf" => {
                if let Some(v) = needs(&mut w) {
                    let n = number_in(key, v, 64..=1 << 24, "64 to 16777216 records", &mut w);
                    // The range check above keeps the value within u32.
                    o.trace_buf = n.map_or(o.trace_buf, |n| n as u32);
                }
            }
            "bench" => match value {
                None => o.bench = true,
                Some("quick") => (o.bench, o.bench_quick) = (true, true),
                Some(v) => w.push(Warning::BadValue { key, value: v, expected: "nothing (`bench`) or quick" }),
            },
            "nopcid" | "nox2apic" | "notscdeadline" | "noxsave" | "eagerfpu" | "nosmap" if value.is_none() => match key {
                "nopcid" => o.nopcid = true,
                "eagerfpu" => o.eagerfpu = true,
                "nox2apic" => o.nox2apic = true,
                "noxsave" => o.noxsave = true,
                "nosmap" => o.nosmap = true,
                _ => o.notscdeadline = true,
            },
            _ => w.push(Warning::Unknown(word)),
        }
    }
    (o, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_line_gives_defaults() {
        let (o, w) = parse("");
        assert_eq!(o, Options::default());
        assert_eq!(w.total, 0);
    }

    #[test]
    fn idle_poll_is_bounded_and_may_be_off() {
        assert_eq!(parse("idle-poll-us=0").0.idle_poll_us, 0);
        assert_eq!(parse("idle-poll-us=50").0.idle_poll_us, 50);
        let (o, w) = parse("idle-poll-us=20000");
        assert_eq!(o.idle_poll_us, DEFAULT_IDLE_POLL_US, "out of range: the default stays");
        assert_eq!(w.total, 1);
    }

    #[test]
    fn known_options_parse() {
        let (o, w) = parse("exit-after=5  test=a,b slice-us=2000 nopcid nox2apic notscdeadline noxsave eagerfpu maxcpus=3 demo=0 loglevel=debug");
        assert_eq!(w.total, 0, "{:?}", w);
        assert_eq!(o.exit_after_s, Some(5));
        assert_eq!(o.test, Some("a,b"));
        assert_eq!(o.slice_us, 2000);
        assert_eq!(o.idle_poll_us, DEFAULT_IDLE_POLL_US);
        assert!(o.nopcid && o.nox2apic && o.notscdeadline && o.noxsave && o.eagerfpu);
        assert_eq!(o.maxcpus, Some(3));
        assert!(!o.demo);
        assert_eq!(o.loglevel, LogLevel::Debug);
    }

    #[test]
    fn unknown_and_bad_options_warn_and_keep_defaults() {
        let (o, w) = parse("frobnicate exit-after=soon slice-us=5 maxcpus=0 test nopcid=1 loglevel=loud");
        assert_eq!(o.exit_after_s, None);
        assert_eq!(o.slice_us, DEFAULT_SLICE_US);
        assert_eq!(o.maxcpus, None);
        assert_eq!(o.test, None);
        assert!(!o.nopcid);
        assert_eq!(o.loglevel, LogLevel::Info);
        let v: std::vec::Vec<_> = w.iter().copied().collect();
        assert_eq!(w.total, 7);
        assert_eq!(v[0], Warning::Unknown("frobnicate"));
        assert!(matches!(v[1], Warning::BadValue { key: "exit-after", .. }));
        assert!(matches!(v[4], Warning::MissingValue("test")));
        assert_eq!(v[5], Warning::Unknown("nopcid=1"));
    }

    #[test]
    fn bench_is_a_bare_flag_with_a_quick_form() {
        let (o, w) = parse("bench");
        assert_eq!(w.total, 0, "{:?}", w);
        assert!(o.bench && !o.bench_quick);
        let (o, w) = parse("bench=quick");
        assert_eq!(w.total, 0, "{:?}", w);
        assert!(o.bench && o.bench_quick);
        let (o, w) = parse("bench=slow");
        assert!(!o.bench && !o.bench_quick);
        assert!(matches!(w.iter().next(), Some(Warning::BadValue { key: "bench", value: "slow", .. })), "{:?}", w);
        assert!(!Options::default().bench);
    }

    #[test]
    fn trace_takes_all_categories_or_a_list_and_a_buffer_size() {
        use trace::{Category, Mask};
        assert_eq!(Options::default().trace, Mask::NONE);
        let (o, w) = parse("trace");
        assert_eq!((o.trace, w.total), (Mask::ALL, 0));
        let (o, w) = parse("trace=sched,ipi trace-buf=4096");
        assert_eq!(w.total, 0, "{:?}", w);
        assert_eq!(o.trace, Mask::NONE.with(Category::Sched).with(Category::Ipi));
        assert_eq!(o.trace_buf, 4096);
        let (o, w) = parse("trace=sched,bogus trace-buf=1");
        assert_eq!(o.trace, Mask::NONE);
        assert_eq!(o.trace_buf, DEFAULT_TRACE_BUF);
        assert!(matches!(w.iter().next(), Some(Warning::BadValue { key: "trace", value: "sched,bogus", .. })), "{:?}", w);
        assert_eq!(w.total, 2);
    }

    #[test]
    fn warnings_beyond_capacity_are_counted() {
        let line = "a b c d e f g h i j k";
        let (_, w) = parse(line);
        assert_eq!(w.total, 11);
        assert_eq!(w.iter().count(), MAX_WARNINGS);
    }

    fn kept(bytes: &[u8], cap: usize) -> (std::string::String, Kept) {
        extern crate std;
        let mut buf = std::vec![0u8; cap];
        let (s, k) = keep(bytes, &mut buf);
        (s.into(), k)
    }

    #[test]
    fn keep_cuts_before_the_straddling_word_and_says_so() {
        // `exit-after=100` straddles a cut after `exit-after=1`: the whole word goes, not two digits.
        let line = b"demo=0 exit-after=100";
        let (s, k) = kept(line, 19);
        assert_eq!(s, "demo=0");
        assert_eq!(k.truncated, Some((line.len(), 6)));
        assert_eq!(parse(&s).0.exit_after_s, None);
        let (s, k) = kept(line, 64);
        assert_eq!((s.as_str(), k), ("demo=0 exit-after=100", Kept::default()));
    }

    #[test]
    fn keep_replaces_invalid_utf8_and_control_bytes_and_keeps_the_rest() {
        let (s, k) = kept(b"demo=0 x=\xff\xfe exit-after=3 \x1b[2Jy", 64);
        assert_eq!(s, "demo=0 x=?? exit-after=3 ?[2Jy");
        assert_eq!(k.replaced, 3);
        let (o, _) = parse(&s);
        assert_eq!(o.exit_after_s, Some(3), "the words after the bad bytes still count");
        assert!(!o.demo);
        // Tabs and newlines separate words; a NUL ends the line.
        let (s, k) = kept(b"a\tb\nc\0exit-after=1", 64);
        assert_eq!((s.as_str(), k.replaced), ("a b c", 0));
    }

    #[test]
    fn out_of_range_numbers_state_the_range() {
        let (o, w) = parse("maxcpus=99999999999999999999 slice-us=18446744073709551616 maxcpus=4294967296");
        assert_eq!(o.maxcpus, None);
        assert_eq!(o.slice_us, DEFAULT_SLICE_US);
        let v: Vec<_> = w.iter().copied().collect();
        assert!(matches!(v[0], Warning::BadValue { key: "maxcpus", expected: "a CPU count from 1 to 4294967295", .. }));
        assert!(matches!(v[1], Warning::BadValue { key: "slice-us", expected: "100 to 1000000 microseconds", .. }));
        assert!(matches!(v[2], Warning::BadValue { key: "maxcpus", .. }));
        let (o, w) = parse("exit-after=99999999999");
        assert_eq!((o.exit_after_s, w.total), (None, 1));
    }

    #[test]
    fn warning_messages_name_the_word() {
        extern crate std;
        use std::string::ToString;
        assert_eq!(Warning::Unknown("x").to_string(), "unknown option `x` ignored");
    }

    #[test]
    fn init_and_its_arguments() {
        let (o, w) = parse("loglevel=info init=/bin/t -- -v --x  y");
        assert_eq!(w.total, 0);
        assert_eq!(o.init, "/bin/t");
        assert_eq!(o.init_args, "-v --x  y");
        let (o, _) = parse("exit-after=3");
        assert_eq!((o.init, o.init_args), ("/init", ""));
        let (o, w) = parse("--x init=/a --");
        assert_eq!(w.total, 1, "`--x` is an unknown option, not the separator");
        assert_eq!((o.init, o.init_args), ("/a", ""));
    }

    #[test]
    fn init_list_names_a_file() {
        assert_eq!(parse("init-list=/etc/run-list").0.init_list, Some("/etc/run-list"));
        assert_eq!(parse("init=/a").0.init_list, None);
        let (o, w) = parse("init-list");
        assert_eq!((o.init_list, w.total), (None, 1));
    }

    #[test]
    fn soak_takes_seconds() {
        assert_eq!(parse("soak=30").0.soak_s, Some(30));
        assert_eq!(parse("").0.soak_s, None);
        let (o, w) = parse("soak=0");
        assert_eq!((o.soak_s, w.total), (None, 1));
    }
}
