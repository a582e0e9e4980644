//! Running the user programs in our kernel under QEMU and judging them against Linux.
//!
//! One boot per program and CPU count: `-kernel ELF -initrd ARCHIVE -append "init=/bin/NAME
//! OPTIONS -- ARGS"`, the serial console captured into the log folder. A program passes when the
//! boot ended before its deadline, the kernel's report of how init ended matches the manifest, and
//! its compared lines are the ones Linux printed (`target/user/expected/NAME.txt`, written by
//! `user-oracle run`).
//!
//! How init ended is read from the kernel's log with two patterns, each capturing one number:
//! `init: PATH exited with status N` and `init: PATH was killed by signal N` by default.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use regex_lite::Regex;

use crate::{
    host,
    manifest::{Expect, Program},
    output,
};

/// Everything a kernel run needs besides the programs.
pub struct Setup {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub qemu: String,
    pub smp: Vec<u32>,
    pub accel: String,
    pub cpu: Option<String>,
    pub mem: String,
    /// Kernel options before `--`, e.g. `loglevel=warn`.
    pub append: String,
    pub timeout_s: u64,
    pub log_dir: PathBuf,
    pub expected_dir: PathBuf,
    pub exited: Regex,
    pub killed: Regex,
}

pub const EXITED: &str = r"init: \S+ exited with status ([0-9]+)";
pub const KILLED: &str = r"init: \S+ was killed by signal ([0-9]+)";

/// How init ended, from the last report in the log.
pub fn ended(log: &str, exited: &Regex, killed: &Regex) -> Option<Expect> {
    let mut last = None;
    for line in log.lines() {
        if let Some(c) = exited.captures(line) {
            last = c
                .get(1)
                .and_then(|m| m.as_str().parse().ok())
                .map(Expect::Exit);
        } else if let Some(c) = killed.captures(line) {
            last = c
                .get(1)
                .and_then(|m| m.as_str().parse().ok())
                .map(Expect::Signal);
        }
    }
    last
}

/// Boots every program at every CPU count; prints one line each and a total. Returns whether all passed.
pub fn run(setup: &Setup, programs: &[&Program]) -> Result<bool, String> {
    fs::create_dir_all(&setup.log_dir).map_err(|e| format!("{}: {e}", setup.log_dir.display()))?;
    let kernel_log = Regex::new(output::KERNEL_LOG).expect("a valid pattern");
    let (mut passed, mut failed) = (0, 0);
    for &smp in &setup.smp {
        for program in programs {
            let label = format!("smp{smp}/{}", program.name);
            let expected_path = setup.expected_dir.join(format!("{}.txt", program.name));
            let expected = fs::read_to_string(&expected_path).map_err(|e| {
                format!(
                    "{}: {e} (run `make user-oracle` first)",
                    expected_path.display()
                )
            })?;
            let expected = output::compared_lines(&expected);
            let mut cmdline = format!("init=/bin/{} {}", program.name, setup.append);
            if !program.args.is_empty() {
                cmdline = format!("{cmdline} -- {}", program.args.join(" "));
            }
            let mut args: Vec<String> = [
                "-machine",
                "q35",
                "-accel",
                &setup.accel,
                "-smp",
                &smp.to_string(),
                "-m",
                &setup.mem,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if let Some(cpu) = &setup.cpu {
                args.extend(["-cpu".to_string(), cpu.clone()]);
            }
            args.extend(
                [
                    "-serial",
                    "stdio",
                    "-display",
                    "none",
                    "-no-reboot",
                    "-device",
                    "isa-debug-exit,iobase=0xf4,iosize=0x04",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
            args.extend([
                "-kernel".into(),
                setup.kernel.display().to_string(),
                "-initrd".into(),
                setup.initramfs.display().to_string(),
            ]);
            args.extend(["-append".into(), cmdline]);
            let boot = host::run(
                Path::new(&setup.qemu),
                &args,
                None,
                Duration::from_secs(setup.timeout_s),
            )?;
            let log_path = setup.log_dir.join(format!("smp{smp}-{}.log", program.name));
            fs::write(&log_path, &boot.stdout)
                .map_err(|e| format!("{}: {e}", log_path.display()))?;
            let verdict = judge(setup, program, &boot, &expected, &kernel_log);
            match verdict {
                Ok(()) => {
                    println!(
                        "kernel {label} ... ok, {}, {:.1} s",
                        program.expect,
                        boot.elapsed.as_secs_f64()
                    );
                    passed += 1;
                }
                Err(why) => {
                    println!(
                        "kernel {label} ... FAILED: {why}\n  serial log: {}",
                        log_path.display()
                    );
                    failed += 1;
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

fn judge(
    setup: &Setup,
    program: &Program,
    boot: &host::Run,
    expected: &[String],
    kernel_log: &Regex,
) -> Result<(), String> {
    if boot.ended.is_none() {
        return Err(format!(
            "the boot was still running after {} s: QEMU killed",
            setup.timeout_s
        ));
    }
    let ended = ended(&boot.stdout, &setup.exited, &setup.killed)
        .ok_or("the kernel never said how init ended")?;
    let got = output::from_serial(
        &boot.stdout,
        &program.name,
        std::slice::from_ref(kernel_log),
    );
    if ended != program.expect {
        let last = got
            .as_ref()
            .and_then(|lines| lines.last())
            .map_or(String::new(), |l| format!("; its last line: {l}"));
        return Err(format!(
            "init ended by {ended}, expected {}{last}",
            program.expect
        ));
    }
    let got = got.ok_or_else(|| format!("no \"start {}\" line on the console", program.name))?;
    match output::diff(expected, &got) {
        None => Ok(()),
        Some(diff) => Err(format!("Linux (-) and the kernel (+) differ:\n{diff}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_report_of_how_init_ended_counts() {
        let exited = Regex::new(EXITED).unwrap();
        let killed = Regex::new(KILLED).unwrap();
        let log =
            "[cpu0] init: /bin/x started as pid 1\n[cpu1] init: /bin/x was killed by signal 11\n";
        assert_eq!(ended(log, &exited, &killed), Some(Expect::Signal(11)));
        let log = "[cpu0] init: /bin/x exited with status 3\n";
        assert_eq!(ended(log, &exited, &killed), Some(Expect::Exit(3)));
        assert_eq!(
            ended("[cpu0] init: /bin/x started\n", &exited, &killed),
            None
        );
    }
}
