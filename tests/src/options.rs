//! The harness's command line. Key types: [`Options`] and [`Parsed`]; [`parse`] reads them with
//! `lexopt`, and `main` acts on them.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
usage: ktest [OPTIONS]

Boots the test kernel in QEMU once per configuration (CPU count x CPU model) with test=all,
then once per expected-fault test, and prints one line per test and a closing
'N passed, N failed'. Exits non-zero on any failure.

options:
  --kernel PATH      test kernel ELF                       [target/kernel-test.elf]
  --initrd PATH      initramfs for QEMU's -initrd (the user programs)     [none]
  --smp LIST         CPU counts, comma-separated           [1,2,4,8]
  --cpu MODEL        QEMU CPU model; repeat for several.  'auto': qemu64, plus
                     qemu64,+x2apic where QEMU emulates x2APIC        [auto]
  --qemu PROGRAM     QEMU binary                           [qemu-system-x86_64]
  --accel tcg|kvm    QEMU accelerator                      [tcg]
  --timeout SECONDS  deadline of each boot                 [120]
  --filter TEXT      only tests whose name contains TEXT; repeat for several
  --mem SIZE         guest memory (QEMU -m)                [512M, 1G above 4 CPUs]
  --append OPTIONS   more kernel command-line options for every boot
  --log-dir DIR      serial logs of every boot             [target/ktest/logs]
  --verbose          echo every serial line
  --help             this text";

/// Everything the harness was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cpu_counts: Vec<u32>,
    /// `None`: probe QEMU and pick the models.
    pub cpu_models: Option<Vec<String>>,
    pub qemu: String,
    pub accel: String,
    pub timeout: Duration,
    pub filters: Vec<String>,
    /// `None`: [`crate::plan::default_mem`] per configuration.
    pub mem: Option<String>,
    pub append: Vec<String>,
    pub log_dir: PathBuf,
    pub verbose: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            kernel: PathBuf::from("target/kernel-test.elf"),
            initrd: None,
            cpu_counts: vec![1, 2, 4, 8],
            cpu_models: None,
            qemu: "qemu-system-x86_64".to_string(),
            accel: "tcg".to_string(),
            timeout: Duration::from_secs(120),
            filters: Vec::new(),
            mem: None,
            append: Vec::new(),
            log_dir: PathBuf::from("target/ktest/logs"),
            verbose: false,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Run(Box<Options>),
    Help,
}

/// Reads the arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, String> {
    use lexopt::prelude::*;

    let mut options = Options::default();
    let mut models: Vec<String> = Vec::new();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|error| error.to_string())? {
        match arg {
            Long("kernel") => options.kernel = PathBuf::from(text(&mut parser)?),
            Long("initrd") => options.initrd = Some(PathBuf::from(text(&mut parser)?)),
            Long("smp") => options.cpu_counts = parse_cpu_counts(&text(&mut parser)?)?,
            Long("cpu") => models.push(text(&mut parser)?),
            Long("qemu") => options.qemu = text(&mut parser)?,
            Long("accel") => {
                options.accel = text(&mut parser)?;
                if options.accel != "tcg" && options.accel != "kvm" {
                    return Err(format!("--accel takes tcg or kvm, not {}", options.accel));
                }
            }
            Long("timeout") => {
                let text = text(&mut parser)?;
                let seconds: u64 = text
                    .parse()
                    .map_err(|_| format!("--timeout takes whole seconds, not {text}"))?;
                if seconds == 0 {
                    return Err("--timeout must be at least 1 second".to_string());
                }
                options.timeout = Duration::from_secs(seconds);
            }
            Long("filter") => options.filters.push(text(&mut parser)?),
            Long("mem") => options.mem = Some(text(&mut parser)?),
            Long("append") => options.append.push(text(&mut parser)?),
            Long("log-dir") => options.log_dir = PathBuf::from(text(&mut parser)?),
            Long("verbose") => options.verbose = true,
            Long("help") | Short('h') => return Ok(Parsed::Help),
            other => return Err(other.unexpected().to_string()),
        }
    }
    if !models.is_empty() && !models.iter().any(|model| model == "auto") {
        options.cpu_models = Some(models);
    }
    Ok(Parsed::Run(Box::new(options)))
}

/// The value of the option just read, as text.
fn text(parser: &mut lexopt::Parser) -> Result<String, String> {
    let value = parser.value().map_err(|error| error.to_string())?;
    value
        .into_string()
        .map_err(|value| format!("not valid text: {value:?}"))
}

fn parse_cpu_counts(text: &str) -> Result<Vec<u32>, String> {
    let counts: Vec<u32> = text
        .split(',')
        .map(|part| {
            part.trim()
                .parse()
                .ok()
                .filter(|&count| (1..=255).contains(&count))
        })
        .collect::<Option<_>>()
        .ok_or_else(|| format!("--smp takes CPU counts from 1 to 255 like 1,2,4,8, not {text}"))?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Parsed, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn no_arguments_give_the_defaults() {
        assert_eq!(run(&[]), Ok(Parsed::Run(Box::default())));
    }

    #[test]
    fn every_option_is_read() {
        let parsed = run(&[
            "--kernel",
            "k.elf",
            "--smp",
            "1,4",
            "--cpu",
            "qemu64",
            "--cpu",
            "qemu64,+x2apic",
            "--qemu",
            "q",
            "--accel",
            "kvm",
            "--timeout",
            "30",
            "--filter",
            "ipi",
            "--mem",
            "2G",
            "--append",
            "loglevel=debug",
            "--log-dir",
            "logs",
            "--verbose",
        ]);
        let Ok(Parsed::Run(options)) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(options.kernel, PathBuf::from("k.elf"));
        assert_eq!(options.cpu_counts, [1, 4]);
        assert_eq!(
            options.cpu_models,
            Some(vec!["qemu64".to_string(), "qemu64,+x2apic".to_string()])
        );
        assert_eq!(
            (options.qemu.as_str(), options.accel.as_str()),
            ("q", "kvm")
        );
        assert_eq!(options.timeout, Duration::from_secs(30));
        assert_eq!(options.filters, ["ipi"]);
        assert_eq!(options.mem.as_deref(), Some("2G"));
        assert_eq!(options.append, ["loglevel=debug"]);
        assert_eq!(options.log_dir, PathBuf::from("logs"));
        assert!(options.verbose);
    }

    #[test]
    fn cpu_auto_leaves_the_choice_to_the_probe() {
        let Ok(Parsed::Run(options)) = run(&["--cpu", "auto"]) else {
            panic!()
        };
        assert_eq!(options.cpu_models, None);
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        assert!(run(&["--smp", "1,x"]).is_err_and(|error| error.contains("--smp")));
        assert!(run(&["--smp", "0"]).is_err());
        assert!(run(&["--accel", "hvf"]).is_err_and(|error| error.contains("tcg or kvm")));
        assert!(run(&["--timeout", "0"]).is_err());
        assert!(run(&["--bogus"]).is_err());
        assert!(run(&["--kernel"]).is_err());
    }

    #[test]
    fn help_is_recognised() {
        assert_eq!(run(&["--help"]), Ok(Parsed::Help));
    }
}
