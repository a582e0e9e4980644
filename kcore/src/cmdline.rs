//! Kernel command line: `key=value` and bare-flag words separated by spaces.
//!
//! Known options (anything else is reported back as a warning and ignored, never fatal):
//!
//! | option              | meaning                                                        |
//! |---------------------|----------------------------------------------------------------|
//! | `exit-after=SECS`   | power off by itself after SECS seconds (scripts, CI)           |
//! | `test=all\|list\|A,B` | test kernel: which in-kernel tests to run                     |
//! | `slice-us=N`        | scheduler time slice in microseconds (default 10000)           |
//! | `nopcid`            | do not use PCID even where the CPU has it                      |
//! | `nox2apic`          | drive the local APIC in xAPIC mode even where x2APIC exists    |
//! | `notscdeadline`     | use the one-shot LAPIC timer even where TSC-deadline exists   |
//! | `noxsave`           | save FPU threads' state with FXSAVE even where XSAVE exists   |
//! | `maxcpus=N`         | bring up at most N CPUs                                        |
//! | `demo=0\|1`         | `make run`'s demonstration workload (default on)               |
//! | `loglevel=L`        | error, warn, info, debug or trace                              |
//! | `bench`             | run the in-kernel benchmarks, print `kbench` lines, power off  |
//! | `bench=quick`       | the same with tiny sample counts (checks the code paths)       |

/// Most warnings kept; the rest are counted.
pub const MAX_WARNINGS: usize = 8;

/// Default scheduler time slice.
pub const DEFAULT_SLICE_US: u64 = 10_000;

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
    pub slice_us: u64,
    pub nopcid: bool,
    pub nox2apic: bool,
    pub notscdeadline: bool,
    pub noxsave: bool,
    pub maxcpus: Option<u32>,
    pub demo: bool,
    pub loglevel: LogLevel,
    /// Run the in-kernel benchmarks instead of the workload, then power off.
    pub bench: bool,
    /// With `bench`: tiny sample counts (`bench=quick`).
    pub bench_quick: bool,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            exit_after_s: None,
            test: None,
            slice_us: DEFAULT_SLICE_US,
            nopcid: false,
            nox2apic: false,
            notscdeadline: false,
            noxsave: false,
            maxcpus: None,
            demo: true,
            loglevel: LogLevel::Info,
            bench: false,
            bench_quick: false,
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

fn number<'a>(key: &'a str, value: &'a str, w: &mut Warnings<'a>) -> Option<u64> {
    match value.parse::<u64>() {
        Ok(n) => Some(n),
        Err(_) => {
            w.push(Warning::BadValue { key, value, expected: "a whole number" });
            None
        }
    }
}

/// Parse a command line. Never fails: bad words become warnings and the defaults stand.
pub fn parse<'a>(line: &'a str) -> (Options<'a>, Warnings<'a>) {
    let mut o = Options::default();
    let mut w = Warnings::default();
    for word in line.split_ascii_whitespace() {
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
                    o.exit_after_s = number(key, v, &mut w).or(o.exit_after_s);
                }
            }
            "test" => o.test = needs(&mut w).or(o.test),
            "slice-us" => {
                if let Some(v) = needs(&mut w) {
                    match number(key, v, &mut w) {
                        Some(n) if (100..=1_000_000).contains(&n) => o.slice_us = n,
                        Some(_) => w.push(Warning::BadValue {
                            key,
                            value: v,
                            expected: "100 to 1000000 microseconds",
                        }),
                        None => {}
                    }
                }
            }
            "maxcpus" => {
                if let Some(v) = needs(&mut w) {
                    match number(key, v, &mut w) {
                        Some(n) if n >= 1 && n <= u64::from(u32::MAX) => o.maxcpus = Some(n as u32),
                        Some(_) => w.push(Warning::BadValue { key, value: v, expected: "at least 1" }),
                        None => {}
                    }
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
            "bench" => match value {
                None => o.bench = true,
                Some("quick") => (o.bench, o.bench_quick) = (true, true),
                Some(v) => w.push(Warning::BadValue { key, value: v, expected: "nothing (`bench`) or quick" }),
            },
            "nopcid" | "nox2apic" | "notscdeadline" | "noxsave" if value.is_none() => match key {
                "nopcid" => o.nopcid = true,
                "nox2apic" => o.nox2apic = true,
                "noxsave" => o.noxsave = true,
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
    fn known_options_parse() {
        let (o, w) = parse("exit-after=5  test=a,b slice-us=2000 nopcid nox2apic notscdeadline noxsave maxcpus=3 demo=0 loglevel=debug");
        assert_eq!(w.total, 0, "{:?}", w);
        assert_eq!(o.exit_after_s, Some(5));
        assert_eq!(o.test, Some("a,b"));
        assert_eq!(o.slice_us, 2000);
        assert!(o.nopcid && o.nox2apic && o.notscdeadline && o.noxsave);
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
        let v: Vec<_> = w.iter().copied().collect();
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
    fn warnings_beyond_capacity_are_counted() {
        let line = "a b c d e f g h i j k";
        let (_, w) = parse(line);
        assert_eq!(w.total, 11);
        assert_eq!(w.iter().count(), MAX_WARNINGS);
    }

    #[test]
    fn warning_messages_name_the_word() {
        extern crate std;
        use std::string::ToString;
        assert_eq!(Warning::Unknown("x").to_string(), "unknown option `x` ignored");
    }
}
