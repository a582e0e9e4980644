//! The manifest, `user/programs.toml`: every user test program, its arguments, and how it must end.

use std::{fmt, fs, path::Path};

use serde::Deserialize;

/// How a program must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A normal exit with this status.
    Exit(i32),
    /// Death by this signal (its number on x86-64 Linux).
    Signal(i32),
}

/// The signals a user program may be expected to die of, with their x86-64 Linux numbers.
const SIGNALS: &[(&str, i32)] = &[
    ("SIGHUP", 1),
    ("SIGINT", 2),
    ("SIGQUIT", 3),
    ("SIGILL", 4),
    ("SIGTRAP", 5),
    ("SIGABRT", 6),
    ("SIGBUS", 7),
    ("SIGFPE", 8),
    ("SIGKILL", 9),
    ("SIGUSR1", 10),
    ("SIGSEGV", 11),
    ("SIGUSR2", 12),
    ("SIGPIPE", 13),
    ("SIGALRM", 14),
    ("SIGTERM", 15),
    ("SIGSYS", 31),
];

/// The name of a signal number, or `signal N` for one outside the table.
pub fn signal_name(number: i32) -> String {
    SIGNALS.iter().find(|(_, n)| *n == number).map_or_else(
        || format!("signal {number}"),
        |(name, _)| (*name).to_string(),
    )
}

impl Expect {
    fn parse(text: &str) -> Result<Self, String> {
        let mut words = text.split_whitespace();
        let expect = match (words.next(), words.next(), words.next()) {
            (Some("exit"), Some(code), None) => Expect::Exit(
                code.parse()
                    .map_err(|_| format!("bad exit status in {text:?}"))?,
            ),
            (Some("signal"), Some(name), None) => SIGNALS
                .iter()
                .find(|(known, _)| *known == name)
                .map(|(_, number)| Expect::Signal(*number))
                .ok_or_else(|| format!("unknown signal in {text:?}"))?,
            _ => {
                return Err(format!(
                    "expect must be \"exit N\" or \"signal SIGNAME\", not {text:?}"
                ));
            }
        };
        Ok(expect)
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Exit(code) => write!(f, "exit {code}"),
            Expect::Signal(number) => write!(f, "signal {}", signal_name(*number)),
        }
    }
}

/// One program of the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    pub name: String,
    pub args: Vec<String>,
    /// Its arguments when it runs on one CPU, where they differ from `args` (e.g. a larger count
    /// that only a single CPU runs fast enough): the kernel booted with one CPU, and a host run of
    /// its own, restricted to one CPU, whose lines go to `NAME.1cpu.txt`.
    pub args_one_cpu: Option<Vec<String>>,
    pub expect: Expect,
    pub timeout_s: u64,
    /// In the kernel, its end must come with exactly one user-fault report naming it and the
    /// signal of `expect` (the report of a fault in ring 3; Linux prints none, so only checked there).
    pub fault_report: bool,
    /// Regular expressions each of which exactly one line of its part of the kernel's serial log
    /// must match (what the kernel itself says about the program; Linux prints none of it).
    pub kernel_log_once: Vec<String>,
}

impl Program {
    /// Its arguments on a machine with `cpus` CPUs.
    pub fn args_at(&self, cpus: u32) -> &[String] {
        match &self.args_one_cpu {
            Some(args) if cpus == 1 => args,
            _ => &self.args,
        }
    }

    /// The name of the file of its compared lines on `cpus` CPUs, in the expected folder:
    /// `NAME.txt`, or `NAME.1cpu.txt` for one CPU when it has arguments of its own there.
    pub fn expected_file(&self, cpus: u32) -> String {
        if cpus == 1 && self.args_one_cpu.is_some() {
            format!("{}.1cpu.txt", self.name)
        } else {
            format!("{}.txt", self.name)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    program: Vec<RawProgram>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProgram {
    name: String,
    #[serde(default)]
    args: Vec<String>,
    args_one_cpu: Option<Vec<String>>,
    expect: Option<String>,
    timeout: Option<u64>,
    #[serde(default)]
    fault_report: bool,
    #[serde(default)]
    kernel_log_once: Vec<String>,
}

/// Parses the manifest text; names must be unique and usable as file names.
pub fn parse(text: &str) -> Result<Vec<Program>, String> {
    let raw: RawManifest = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut programs: Vec<Program> = Vec::new();
    for p in raw.program {
        if p.name.is_empty()
            || !p
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "program name {:?}: letters, digits, _ and - only",
                p.name
            ));
        }
        if programs.iter().any(|q| q.name == p.name) {
            return Err(format!("program {} is listed twice", p.name));
        }
        let expect = match &p.expect {
            Some(text) => Expect::parse(text).map_err(|e| format!("program {}: {e}", p.name))?,
            None => Expect::Exit(0),
        };
        if p.fault_report && !matches!(expect, Expect::Signal(_)) {
            return Err(format!("program {}: fault_report needs expect = \"signal SIGNAME\"", p.name));
        }
        programs.push(Program {
            name: p.name,
            args: p.args,
            args_one_cpu: p.args_one_cpu,
            expect,
            timeout_s: p.timeout.unwrap_or(120),
            fault_report: p.fault_report,
            kernel_log_once: p.kernel_log_once,
        });
    }
    Ok(programs)
}

/// Reads and parses the manifest file.
pub fn load(path: &Path) -> Result<Vec<Program>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_signals() {
        let programs = parse(
            "[[program]]\nname = \"hello\"\n\n[[program]]\nname = \"fault_ud\"\nexpect = \"signal SIGILL\"\n\
             args = [\"1\", \"x\"]\ntimeout = 5\n",
        )
        .unwrap();
        assert_eq!(
            programs[0],
            Program {
                name: "hello".into(),
                args: vec![],
                args_one_cpu: None,
                expect: Expect::Exit(0),
                timeout_s: 120,
                fault_report: false,
                kernel_log_once: vec![],
            }
        );
        assert_eq!(programs[1].expect, Expect::Signal(4));
        assert_eq!(programs[1].args, ["1", "x"]);
        assert_eq!(programs[1].timeout_s, 5);
        assert_eq!(programs[1].expect.to_string(), "signal SIGILL");
        assert_eq!(programs[1].args_at(1), ["1", "x"]);
        assert_eq!(programs[1].expected_file(1), "fault_ud.txt");
    }

    #[test]
    fn one_cpu_arguments_apply_at_one_cpu_only() {
        let programs = parse("[[program]]\nname = \"churn\"\nargs = [\"10\"]\nargs_one_cpu = [\"100\"]\n").unwrap();
        let churn = &programs[0];
        assert_eq!(churn.args_at(1), ["100"]);
        assert_eq!(churn.args_at(2), ["10"]);
        assert_eq!(churn.args_at(8), ["10"]);
        assert_eq!(churn.expected_file(1), "churn.1cpu.txt");
        assert_eq!(churn.expected_file(4), "churn.txt");
    }

    #[test]
    fn rejects_duplicates_bad_names_and_bad_expectations() {
        assert!(parse("[[program]]\nname = \"a\"\n[[program]]\nname = \"a\"\n").is_err());
        assert!(parse("[[program]]\nname = \"a/b\"\n").is_err());
        assert!(parse("[[program]]\nname = \"a\"\nexpect = \"signal SIGNOPE\"\n").is_err());
        assert!(parse("[[program]]\nname = \"a\"\nexpect = \"exits 0\"\n").is_err());
        assert!(parse("[[program]]\nname = \"a\"\nspeed = 3\n").is_err());
        assert!(parse("[[program]]\nname = \"a\"\nfault_report = true\n").is_err());
        assert!(parse("[[program]]\nname = \"a\"\nexpect = \"signal SIGSEGV\"\nfault_report = true\n").unwrap()[0].fault_report);
    }

    #[test]
    fn the_project_manifest_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../programs.toml");
        let programs = load(&path).unwrap();
        assert!(programs.iter().any(|p| p.name == "init"));
        assert!(programs.iter().any(|p| p.expect == Expect::Signal(11)));
    }
}
