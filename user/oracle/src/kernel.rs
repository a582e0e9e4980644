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
//!
//! With `one_boot`, one boot per CPU count runs every program of the archive's [`RUN_LIST`] in
//! turn (`init-list=`; [`RUN_LIST_ONE_CPU`] at one CPU, where some programs take arguments of
//! their own), each a new process once the one before has ended. The kernel writes
//! `init-list: running PATH` before each, and each program is judged on its part of the log,
//! from its line to the next: the same verdicts at a fraction of the boots.

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
    /// One boot per CPU count for all the programs (`init-list=`).
    pub one_boot: bool,
}

/// The initramfs file listing every program with its arguments, for the kernel's `init-list=`.
pub const RUN_LIST: &str = "/etc/run-list";
/// The same for a boot with one CPU: the programs with their one-CPU arguments (`args_one_cpu`).
pub const RUN_LIST_ONE_CPU: &str = "/etc/run-list-1cpu";

/// The run list a boot with `cpus` CPUs uses.
pub fn run_list_path(cpus: u32) -> &'static str {
    if cpus == 1 { RUN_LIST_ONE_CPU } else { RUN_LIST }
}

/// The text of a run list for `cpus` CPUs: `/bin/NAME ARGS...`, one program a line, in manifest
/// order.
pub fn run_list(programs: &[Program], cpus: u32) -> String {
    let mut text = String::from("# user/programs.toml, for init-list= (user-oracle kernel --one-boot)\n");
    for p in programs {
        text.push_str(&format!("/bin/{}", p.name));
        for a in p.args_at(cpus) {
            text.push(' ');
            text.push_str(a);
        }
        text.push('\n');
    }
    text
}

/// The part of a one-boot log that belongs to `/bin/NAME`: from the kernel's `init-list: running
/// /bin/NAME` line to the next such line (or the end).
pub fn part_of(log: &str, name: &str) -> Option<String> {
    let marker = "init-list: running ";
    let mine = format!("{marker}/bin/{name}");
    let mut out: Option<String> = None;
    for line in log.lines() {
        let trimmed = line.trim_end_matches('\r');
        if trimmed.ends_with(&mine) {
            out = Some(String::new());
            continue;
        } else if trimmed.contains(marker) {
            if out.is_some() {
                break;
            }
            continue;
        }
        if let Some(o) = out.as_mut() {
            o.push_str(line);
            o.push('\n');
        }
    }
    out
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
        if setup.one_boot {
            let (p, f) = run_one_boot(setup, programs, smp, &kernel_log)?;
            passed += p;
            failed += f;
            continue;
        }
        for program in programs {
            let label = format!("smp{smp}/{}", program.name);
            let expected_path = setup.expected_dir.join(program.expected_file(smp));
            let expected = fs::read_to_string(&expected_path).map_err(|e| {
                format!(
                    "{}: {e} (run `make user-oracle` first)",
                    expected_path.display()
                )
            })?;
            let expected = output::compared_lines(&expected);
            let mut cmdline = format!("init=/bin/{} {}", program.name, setup.append);
            let program_args = program.args_at(smp);
            if !program_args.is_empty() {
                cmdline = format!("{cmdline} -- {}", program_args.join(" "));
            }
            let args = qemu_args(setup, smp, cmdline);
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

/// The QEMU arguments every boot of this tool shares: a q35 machine with `smp` CPUs, the serial
/// console on stdio, the exit device, the kernel and its initramfs; no command line (`-append`).
pub fn machine_args(accel: &str, smp: u32, mem: &str, cpu: Option<&str>, kernel: &Path, initramfs: &Path) -> Vec<String> {
    let mut args: Vec<String> = ["-machine", "q35", "-accel", accel, "-smp", &smp.to_string(), "-m", mem]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(cpu) = cpu {
        args.extend(["-cpu".to_string(), cpu.to_string()]);
    }
    args.extend(
        ["-serial", "stdio", "-display", "none", "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
            .iter()
            .map(|s| s.to_string()),
    );
    args.extend(["-kernel".into(), kernel.display().to_string(), "-initrd".into(), initramfs.display().to_string()]);
    args
}

/// The QEMU arguments of one boot at `smp` CPUs with kernel command line `cmdline`.
fn qemu_args(setup: &Setup, smp: u32, cmdline: String) -> Vec<String> {
    let mut args = machine_args(&setup.accel, smp, &setup.mem, setup.cpu.as_deref(), &setup.kernel, &setup.initramfs);
    args.extend(["-append".into(), cmdline]);
    args
}

/// One boot at `smp` CPUs running every program of the run list; judges `programs` on their
/// parts of the log. Returns (passed, failed).
fn run_one_boot(setup: &Setup, programs: &[&Program], smp: u32, kernel_log: &Regex) -> Result<(u32, u32), String> {
    let cmdline = format!("init-list={} {}", run_list_path(smp), setup.append);
    let boot = host::run(Path::new(&setup.qemu), &qemu_args(setup, smp, cmdline), None, Duration::from_secs(setup.timeout_s))?;
    let log_path = setup.log_dir.join(format!("smp{smp}-all.log"));
    fs::write(&log_path, &boot.stdout).map_err(|e| format!("{}: {e}", log_path.display()))?;
    println!("kernel smp{smp}: one boot for {} programs, {:.1} s (serial log: {})", programs.len(), boot.elapsed.as_secs_f64(), log_path.display());
    let (mut passed, mut failed) = (0, 0);
    for program in programs {
        let expected_path = setup.expected_dir.join(program.expected_file(smp));
        let expected = fs::read_to_string(&expected_path)
            .map_err(|e| format!("{}: {e} (run `make user-oracle` first)", expected_path.display()))?;
        let expected = output::compared_lines(&expected);
        let verdict = match part_of(&boot.stdout, &program.name) {
            None if boot.ended.is_none() => Err(format!("never started: the boot was killed after {} s", setup.timeout_s)),
            None => Err(format!("never started (no \"init-list: running /bin/{}\" line)", program.name)),
            Some(part) => judge_log(setup, program, &part, true, &expected, kernel_log),
        };
        match verdict {
            Ok(()) => {
                println!("kernel smp{smp}/{} ... ok, {}", program.name, program.expect);
                passed += 1;
            }
            Err(why) => {
                println!("kernel smp{smp}/{} ... FAILED: {why}", program.name);
                failed += 1;
            }
        }
    }
    Ok((passed, failed))
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
    judge_log(setup, program, &boot.stdout, false, expected, kernel_log)
}

/// Judge `program` on `log`, the serial output of its boot or its part of a one-boot log.
fn judge_log(
    setup: &Setup,
    program: &Program,
    log: &str,
    part: bool,
    expected: &[String],
    kernel_log: &Regex,
) -> Result<(), String> {
    let ended = ended(log, &setup.exited, &setup.killed).ok_or(if part {
        "the kernel never said how it ended (the boot ended or was killed while it ran)"
    } else {
        "the kernel never said how init ended"
    })?;
    let got = output::from_serial(
        log,
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
    if program.fault_report {
        fault_reported(log, program)?;
    }
    logged_once(log, &program.kernel_log_once)?;
    let got = got.ok_or_else(|| format!("no \"start {}\" line on the console", program.name))?;
    match output::diff(expected, &got) {
        None => Ok(()),
        Some(diff) => Err(format!("Linux (-) and the kernel (+) differ:\n{diff}")),
    }
}

/// The kernel's report of a fault in ring 3 (`kernel/src/process/fault.rs`, and the impossible
/// return of `kernel/src/syscall`): pid, tid, program name, then either the exception with its
/// vector, rip, fault address and decoded error code, or the return address; the killing signal.
const FAULT_REPORT: &str = concat!(
    r"user fault: pid [0-9]+ tid [0-9]+ '([^']*)': ",
    r"(?:[^(]+ \(vector [0-9]+\) at rip 0x[0-9a-f]+, address 0x[0-9a-f]+, error 0x[0-9a-f]+ \(.+\)",
    r"|return to rip 0x[0-9a-f]+ rsp 0x[0-9a-f]+ is impossible)",
    r": killed by (SIG[A-Z]+)$",
);

/// `log` (the program's part of the serial log) holds exactly one fault report, naming `program`
/// and the signal it is expected to die of.
fn fault_reported(log: &str, program: &Program) -> Result<(), String> {
    let report = Regex::new(FAULT_REPORT).expect("a valid pattern");
    let reports: Vec<(String, String)> = log
        .lines()
        .filter_map(|l| report.captures(l.trim_end_matches('\r')))
        .map(|c| (c[1].to_string(), c[2].to_string()))
        .collect();
    let want = (program.name.clone(), program.expect.to_string().trim_start_matches("signal ").to_string());
    match reports.as_slice() {
        [one] if *one == want => Ok(()),
        [] => Err("no user-fault report line (pid, tid, name, vector, rip, address, error)".to_string()),
        _ => Err(format!("user-fault reports {reports:?}, expected one for {} killed by {}", want.0, want.1)),
    }
}

/// Each of `patterns` matches exactly one line of `log`.
fn logged_once(log: &str, patterns: &[String]) -> Result<(), String> {
    for pattern in patterns {
        let re = Regex::new(pattern).map_err(|e| format!("kernel_log_once {pattern:?}: {e}"))?;
        match log.lines().filter(|l| re.is_match(l.trim_end_matches('\r'))).count() {
            1 => {}
            n => return Err(format!("{n} kernel log lines match {pattern:?}, expected exactly one")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_boot_log_is_cut_at_the_run_list_markers() {
        let log = "[cpu0] init-list: running /bin/a\nstart a\nok a\n[cpu0] init: /bin/a exited with status 0\n\
                   [cpu0] init-list: running /bin/ab\nstart ab\n[cpu1] init: /bin/ab was killed by signal 11\n";
        assert_eq!(
            part_of(log, "a").unwrap(),
            "start a\nok a\n[cpu0] init: /bin/a exited with status 0\n"
        );
        assert_eq!(
            part_of(log, "ab").unwrap(),
            "start ab\n[cpu1] init: /bin/ab was killed by signal 11\n"
        );
        assert!(part_of(log, "b").is_none());
    }

    #[test]
    fn a_fault_report_must_name_the_program_and_its_signal() {
        let mut p = Program {
            name: "fault_read".into(),
            args: vec![],
            args_one_cpu: None,
            expect: Expect::Signal(11),
            timeout_s: 1,
            fault_report: true,
            kernel_log_once: vec![],
        };
        let line = "[cpu1] error: user fault: pid 595 tid 693 'fault_read': page fault (vector 14) at rip 0x4010c7, \
                    address 0x10000, error 0x4 (no page at read in user mode, outside every mapping): killed by SIGSEGV";
        assert_eq!(fault_reported(&format!("start fault_read\n{line}\r\n"), &p), Ok(()));
        assert!(fault_reported("start fault_read\n", &p).is_err());
        assert!(fault_reported(&format!("{line}\n{line}\n"), &p).is_err());
        let ret = "[cpu0] error: user fault: pid 9 tid 9 'fault_read': return to rip 0x800000000000 rsp 0x7ffe0 is impossible: killed by SIGSEGV";
        assert_eq!(fault_reported(ret, &p), Ok(()));
        p.expect = Expect::Signal(4);
        assert!(fault_reported(line, &p).is_err());
        p.expect = Expect::Signal(11);
        p.name = "fault_write".into();
        assert!(fault_reported(line, &p).is_err());
    }

    #[test]
    fn a_kernel_log_line_must_come_exactly_once() {
        let pats = vec![r"called tuxcall \(184\)".to_string()];
        let line = "[cpu0] warning: syscall: pid 3 'misc' called tuxcall (184), which is not implemented: ENOSYS\r";
        assert_eq!(logged_once(&format!("start misc\n{line}\nok misc\n"), &pats), Ok(()));
        assert!(logged_once("start misc\nok misc\n", &pats).is_err());
        assert!(logged_once(&format!("{line}\n{line}\n"), &pats).is_err());
        assert!(logged_once("", &["(".to_string()]).is_err());
    }

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
