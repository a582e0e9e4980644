//! `user-oracle`: Linux is the oracle for the user test programs.
//!
//! ```text
//! user-oracle run        run every program of user/programs.toml on the host Linux, once on all
//!                        CPUs and once on one CPU; each must end as the manifest says and print
//!                        the same compared lines both times; those go to target/user/expected/NAME.txt
//!                        (a program with `args_one_cpu` runs once more with them on one CPU:
//!                        NAME.1cpu.txt, what a kernel booted with one CPU must print)
//! user-oracle compare    cut programs' output from a kernel's serial log and compare it with
//!                        what Linux printed
//! user-oracle initramfs  write target/initramfs.cpio: /init, /bin/<every program>, /etc/run-list
//!                        and /etc/run-list-1cpu (every program with its arguments, for the kernel's
//!                        init-list=, on several CPUs and on one), extra files
//! user-oracle kernel     boot our kernel in QEMU once per program and CPU count, with the program
//!                        as init (or, --one-boot, once per CPU count running them all in turn);
//!                        judge how each ended and compare its lines with Linux's
//! user-oracle list       the manifest, one program a line: NAME, expected end, arguments
//! user-oracle shell      the scripted shell session (user/shell/session.toml): typed into busybox
//!                        sh on our kernel's serial console and on the host Linux through a pty
//! ```
//!
//! Modules: `manifest` (programs.toml), `output` (compared lines, verdicts, serial logs), `host`
//! (one run on the host), `initramfs` (the cpio archive), `kernel` (boots in QEMU), `shell` (the
//! shell session).

mod host;
mod initramfs;
mod kernel;
mod manifest;
mod output;
mod shell;

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use lexopt::prelude::*;
use manifest::{Expect, Program};
use regex_lite::Regex;

const USAGE: &str = "\
usage: user-oracle run [--only NAME]... [--cpus LIST]... [PATHS]
       user-oracle compare --log SERIAL_LOG [--ignore REGEX]... [--expected-dir DIR] NAME...
       user-oracle initramfs [--init NAME] [--busybox FILE] [--add SOURCE:PATH]... [--out FILE] [PATHS]
       user-oracle kernel --kernel ELF [--smp LIST] [--only NAME]... [QEMU OPTIONS] [PATHS]
       user-oracle list [--manifest FILE]
       user-oracle shell [--host] [--kernel ELF] [--only STEP]... [SHELL OPTIONS] [QEMU OPTIONS]

  --only NAME          run only this program (repeatable)
  --cpus LIST          a taskset CPU list to run every program on (repeatable); the default is
                       twice: all CPUs, then the first CPU this process may use
  --log FILE           serial output of a kernel that ran the programs
  --ignore REGEX       serial lines to drop (repeatable); default: the kernel's `[cpuN] ` log lines
  --init NAME|PATH     the binary (of --bin-dir, or at PATH) that becomes /init (default init)
  --busybox FILE       busybox as /bin/busybox, and a link per applet it lists on this host
  --add SOURCE:PATH    one more file in the archive (repeatable), e.g. target/user/bin/kstat:/bin/kstat
  --out FILE           the archive (default target/initramfs.cpio)
SHELL OPTIONS (shell):
  --host               run the session on the host Linux (busybox on a pty) too
  --kernel ELF         run it on our kernel, one boot per --smp count (the kernel boots /init
                       unless --append says init=...)
  --only STEP          only this step (repeatable; the prompt set-up always runs)
  --session FILE       default user/shell/session.toml
  --busybox FILE       the host run's busybox (default target/busybox/busybox)
  --root DIR           the host run's working directory (default user/rootfs)
  --boot-timeout S     seconds until the first prompt (default 300)
  --drop REGEX         text to remove from the output (repeatable; default the kernel's log lines)
  --timeout S          seconds each step may take (default 120)
QEMU OPTIONS (kernel, shell):
  --kernel ELF         the kernel to boot (PVH entry)
  --initramfs FILE     default target/initramfs.cpio
  --smp LIST           CPU counts, comma-separated (default 1,2,4,8)
  --accel tcg|kvm      default tcg
  --cpu MODEL          QEMU CPU model (default QEMU's; `max` brings AVX under TCG)
  --mem SIZE           default 512M
  --append OPTIONS     kernel options before `--` (default none: the kernel powers off when init ends)
  --timeout SECONDS    deadline of each boot (default 300)
  --log-dir DIR        serial logs (default target/user/logs)
  --exited REGEX       the kernel's line saying init exited, status captured (default: see kernel.rs)
  --killed REGEX       the kernel's line saying init was killed, signal captured
  --one-boot           one boot per CPU count, running every program of the archive's
                       /etc/run-list in turn (init-list=; /etc/run-list-1cpu at one CPU, with the
                       programs' args_one_cpu); each judged on its part of the log
  --qemu PROGRAM       default qemu-system-x86_64
PATHS:
  --manifest FILE      default user/programs.toml
  --bin-dir DIR        default target/user/bin
  --expected-dir DIR   default target/user/expected";

struct Paths {
    manifest: PathBuf,
    bin_dir: PathBuf,
    expected_dir: PathBuf,
}

enum Command {
    Run {
        only: Vec<String>,
        cpus: Vec<String>,
    },
    Compare {
        log: PathBuf,
        ignore: Vec<String>,
        names: Vec<String>,
    },
    Initramfs {
        init: String,
        add: Vec<(PathBuf, String)>,
        busybox: Option<PathBuf>,
        out: PathBuf,
    },
    Kernel {
        only: Vec<String>,
        options: Box<KernelOptions>,
    },
    List,
    Shell(Box<ShellOptions>),
}

/// The `shell` command's options.
struct ShellOptions {
    host: bool,
    only: Vec<String>,
    session: PathBuf,
    busybox: PathBuf,
    root: PathBuf,
    boot_timeout_s: u64,
    drop: Vec<String>,
    kernel: KernelOptions,
}

/// The `kernel` command's options, before their patterns are compiled.
struct KernelOptions {
    kernel: Option<PathBuf>,
    initramfs: PathBuf,
    qemu: String,
    smp: String,
    accel: String,
    cpu: Option<String>,
    mem: String,
    append: String,
    timeout_s: u64,
    log_dir: PathBuf,
    exited: String,
    killed: String,
    one_boot: bool,
}

fn parse_args() -> Result<(Command, Paths), lexopt::Error> {
    let mut parser = lexopt::Parser::from_env();
    let mut paths = Paths {
        manifest: "user/programs.toml".into(),
        bin_dir: "target/user/bin".into(),
        expected_dir: "target/user/expected".into(),
    };
    let sub = match parser.next()? {
        Some(Value(v)) => v.string()?,
        Some(Long("help")) | Some(Short('h')) => {
            println!("{USAGE}");
            std::process::exit(0);
        }
        Some(other) => return Err(other.unexpected()),
        None => return Err("a command is needed: run, compare, initramfs or list".into()),
    };
    let (mut only, mut cpus, mut ignore, mut names, mut add) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut busybox = None;
    let (mut host, mut session, mut root, mut boot_timeout_s, mut drop) = (
        false,
        PathBuf::from("user/shell/session.toml"),
        PathBuf::from("user/rootfs"),
        300u64,
        vec![],
    );
    let (mut log, mut init, mut out) = (
        None,
        "init".to_string(),
        PathBuf::from("target/initramfs.cpio"),
    );
    let mut k = KernelOptions {
        kernel: None,
        initramfs: "target/initramfs.cpio".into(),
        qemu: "qemu-system-x86_64".into(),
        smp: "1,2,4,8".into(),
        accel: "tcg".into(),
        cpu: None,
        mem: "512M".into(),
        append: String::new(),
        timeout_s: 300,
        log_dir: "target/user/logs".into(),
        exited: kernel::EXITED.into(),
        killed: kernel::KILLED.into(),
        one_boot: false,
    };
    let qemu_sub = sub == "kernel" || sub == "shell";
    while let Some(arg) = parser.next()? {
        match arg {
            Long("host") if sub == "shell" => host = true,
            Long("only") if sub == "shell" => only.push(parser.value()?.string()?),
            Long("session") if sub == "shell" => session = parser.value()?.into(),
            Long("busybox") if sub == "shell" => busybox = Some(parser.value()?.into()),
            Long("root") if sub == "shell" => root = parser.value()?.into(),
            Long("boot-timeout") if sub == "shell" => boot_timeout_s = parser.value()?.parse()?,
            Long("drop") if sub == "shell" => drop.push(parser.value()?.string()?),
            Long("manifest") => paths.manifest = parser.value()?.into(),
            Long("bin-dir") => paths.bin_dir = parser.value()?.into(),
            Long("expected-dir") => paths.expected_dir = parser.value()?.into(),
            Long("only") if sub == "run" || sub == "kernel" => only.push(parser.value()?.string()?),
            Long("kernel") if qemu_sub => k.kernel = Some(parser.value()?.into()),
            Long("initramfs") if qemu_sub => k.initramfs = parser.value()?.into(),
            Long("qemu") if qemu_sub => k.qemu = parser.value()?.string()?,
            Long("smp") if qemu_sub => k.smp = parser.value()?.string()?,
            Long("accel") if qemu_sub => k.accel = parser.value()?.string()?,
            Long("cpu") if qemu_sub => k.cpu = Some(parser.value()?.string()?),
            Long("mem") if qemu_sub => k.mem = parser.value()?.string()?,
            Long("append") if qemu_sub => k.append = parser.value()?.string()?,
            Long("timeout") if qemu_sub => k.timeout_s = parser.value()?.parse()?,
            Long("log-dir") if qemu_sub => k.log_dir = parser.value()?.into(),
            Long("exited") if sub == "kernel" => k.exited = parser.value()?.string()?,
            Long("killed") if sub == "kernel" => k.killed = parser.value()?.string()?,
            Long("one-boot") if sub == "kernel" => k.one_boot = true,
            Long("cpus") if sub == "run" => cpus.push(parser.value()?.string()?),
            Long("log") if sub == "compare" => log = Some(PathBuf::from(parser.value()?)),
            Long("ignore") if sub == "compare" => ignore.push(parser.value()?.string()?),
            Value(v) if sub == "compare" => names.push(v.string()?),
            Long("init") if sub == "initramfs" => init = parser.value()?.string()?,
            Long("out") if sub == "initramfs" => out = parser.value()?.into(),
            Long("busybox") if sub == "initramfs" => busybox = Some(parser.value()?.into()),
            Long("add") if sub == "initramfs" => {
                let spec = parser.value()?.string()?;
                let (source, path) = spec.split_once(':').ok_or("--add wants SOURCE:PATH")?;
                add.push((PathBuf::from(source), path.to_string()));
            }
            Long("help") | Short('h') => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    let command = match sub.as_str() {
        "run" => Command::Run { only, cpus },
        "compare" => {
            if names.is_empty() {
                return Err("compare: name at least one program".into());
            }
            Command::Compare {
                log: log.ok_or("compare needs --log FILE")?,
                ignore,
                names,
            }
        }
        "initramfs" => Command::Initramfs {
            init,
            add,
            busybox,
            out,
        },
        "kernel" => Command::Kernel {
            only,
            options: Box::new(k),
        },
        "list" => Command::List,
        "shell" => {
            if !host && k.kernel.is_none() {
                return Err("shell: name --host, --kernel ELF or both".into());
            }
            if k.log_dir == Path::new("target/user/logs") {
                k.log_dir = "target/shell-test".into();
            }
            if k.timeout_s == 300 {
                k.timeout_s = 120;
            }
            Command::Shell(Box::new(ShellOptions {
                host,
                only,
                session,
                busybox: busybox.unwrap_or_else(|| "target/busybox/busybox".into()),
                root,
                boot_timeout_s,
                drop,
                kernel: k,
            }))
        }
        other => return Err(format!("unknown command {other:?}").into()),
    };
    Ok((command, paths))
}

fn main() -> ExitCode {
    let (command, paths) = match parse_args() {
        Ok(parsed) => parsed,
        Err(error) => {
            eprintln!("user-oracle: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = manifest::load(&paths.manifest).and_then(|programs| match command {
        Command::Run { only, cpus } => run(&programs, &paths, &only, cpus),
        Command::Compare { log, ignore, names } => {
            compare(&programs, &paths, &log, &ignore, &names)
        }
        Command::Initramfs {
            init,
            add,
            busybox,
            out,
        } => build_initramfs(&programs, &paths, &init, &add, busybox.as_deref(), &out),
        Command::Kernel { only, options } => run_kernel(&programs, &paths, &only, *options),
        Command::Shell(options) => run_shell(&paths, *options),
        Command::List => {
            for p in &programs {
                match &p.args_one_cpu {
                    None => println!("{}\t{}\t{}", p.name, p.expect, p.args.join(" ")),
                    Some(one) => println!("{}\t{}\t{} (one CPU: {})", p.name, p.expect, p.args.join(" "), one.join(" ")),
                }
            }
            Ok(true)
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("user-oracle: {error}");
            ExitCode::from(2)
        }
    }
}

/// The first CPU this process may run on, from /proc/self/status.
fn first_allowed_cpu() -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    let first = list.split([',', '-']).next()?;
    Some(first.to_string())
}

/// Judges one host run against the manifest; returns its compared lines or why it failed.
fn judge(program: &Program, run: &host::Run) -> Result<Vec<String>, String> {
    let lines = output::compared_lines(&run.stdout);
    let ended = run
        .ended
        .ok_or_else(|| format!("still running after {} s: killed", program.timeout_s))?;
    if ended != program.expect {
        return Err(format!("ended by {ended}, expected {}", program.expect));
    }
    match program.expect {
        Expect::Exit(0) => output::verdict(&program.name, &lines)?,
        _ => {
            if lines
                .iter()
                .any(|l| l.starts_with(&format!("FAILED {}", program.name)))
            {
                return Err("it printed FAILED".to_string());
            }
        }
    }
    if lines.first().map(String::as_str) != Some(&format!("start {}", program.name)) {
        return Err(format!("its first line is not \"start {}\"", program.name));
    }
    Ok(lines)
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    | {l}\n"))
        .collect()
}

fn run(
    programs: &[Program],
    paths: &Paths,
    only: &[String],
    cpus: Vec<String>,
) -> Result<bool, String> {
    for name in only {
        if !programs.iter().any(|p| &p.name == name) {
            return Err(format!(
                "--only {name}: no such program in {}",
                paths.manifest.display()
            ));
        }
    }
    // None: every CPU this process may use; Some(list): restricted with taskset.
    let cpu_sets: Vec<Option<String>> = if cpus.is_empty() {
        let mut sets = vec![None];
        if let Some(first) = first_allowed_cpu() {
            sets.push(Some(first));
        }
        sets
    } else {
        cpus.into_iter()
            .map(|c| if c == "all" { None } else { Some(c) })
            .collect()
    };
    // A program built but missing from the manifest would never run: refuse that.
    if let Ok(entries) = fs::read_dir(&paths.bin_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !programs.iter().any(|p| p.name == name) {
                return Err(format!(
                    "{}/{name} is not in {}: say there how it must end",
                    paths.bin_dir.display(),
                    paths.manifest.display()
                ));
            }
        }
    }
    fs::create_dir_all(&paths.expected_dir)
        .map_err(|e| format!("{}: {e}", paths.expected_dir.display()))?;
    let (mut passed, mut failed) = (0, 0);
    for program in programs
        .iter()
        .filter(|p| only.is_empty() || only.contains(&p.name))
    {
        let binary = paths.bin_dir.join(&program.name);
        let mut first: Option<(Vec<String>, String)> = None;
        let mut problem = None;
        for set in &cpu_sets {
            let label = set
                .as_deref()
                .map_or("all CPUs".to_string(), |s| format!("CPUs {s}"));
            let run = host::run(
                &binary,
                &program.args,
                set.as_deref(),
                Duration::from_secs(program.timeout_s),
            )?;
            match judge(program, &run) {
                Ok(lines) => {
                    println!(
                        "user {} ({label}) ... ok, {}, {:.2} s",
                        program.name,
                        program.expect,
                        run.elapsed.as_secs_f64()
                    );
                    match &first {
                        None => first = Some((lines, label)),
                        Some((lines0, label0)) => {
                            if let Some(diff) = output::diff(lines0, &lines) {
                                problem = Some(format!(
                                    "its compared lines differ between {label0} (-) and {label} (+):\n{diff}"
                                ));
                            }
                        }
                    }
                }
                Err(why) => {
                    problem = Some(format!(
                        "{label}: {why}\n  stdout (last lines):\n{}  stderr (last lines):\n{}",
                        tail(&run.stdout, 12),
                        tail(&run.stderr, 6)
                    ));
                }
            }
            if problem.is_some() {
                break;
            }
        }
        // The one-CPU arguments run once more, on the last CPU set (one CPU unless --cpus says
        // otherwise): the lines a kernel booted with one CPU must print.
        let mut one_cpu_lines = None;
        if let (None, Some(args)) = (&problem, &program.args_one_cpu) {
            let set = cpu_sets.last().cloned().flatten();
            let label = set.as_deref().map_or("all CPUs".to_string(), |s| format!("CPUs {s}"));
            let run = host::run(&binary, args, set.as_deref(), Duration::from_secs(program.timeout_s))?;
            match judge(program, &run) {
                Ok(lines) => {
                    println!(
                        "user {} {} ({label}) ... ok, {}, {:.2} s",
                        program.name,
                        args.join(" "),
                        program.expect,
                        run.elapsed.as_secs_f64()
                    );
                    one_cpu_lines = Some(lines);
                }
                Err(why) => {
                    problem = Some(format!(
                        "{label}, one-CPU arguments: {why}\n  stdout (last lines):\n{}  stderr (last lines):\n{}",
                        tail(&run.stdout, 12),
                        tail(&run.stderr, 6)
                    ));
                }
            }
        }
        match (problem, first) {
            (None, Some((lines, _))) => {
                let mut files = vec![(program.expected_file(2), lines)];
                files.extend(one_cpu_lines.map(|lines| (program.expected_file(1), lines)));
                for (file, lines) in files {
                    let path = paths.expected_dir.join(file);
                    let mut text = lines.join("\n");
                    text.push('\n');
                    fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
                }
                passed += 1;
            }
            (problem, _) => {
                println!(
                    "user {} ... FAILED: {}",
                    program.name,
                    problem.unwrap_or_default()
                );
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

fn compare(
    programs: &[Program],
    paths: &Paths,
    log: &Path,
    ignore: &[String],
    names: &[String],
) -> Result<bool, String> {
    let text = fs::read(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let text = String::from_utf8_lossy(&text);
    let patterns: Vec<&str> = if ignore.is_empty() {
        vec![output::KERNEL_LOG]
    } else {
        ignore.iter().map(String::as_str).collect()
    };
    let ignore: Vec<Regex> = patterns
        .iter()
        .map(|p| Regex::new(p).map_err(|e| format!("--ignore {p}: {e}")))
        .collect::<Result<_, _>>()?;
    let mut all_equal = true;
    for name in names {
        if !programs.iter().any(|p| &p.name == name) {
            return Err(format!(
                "{name}: no such program in {}",
                paths.manifest.display()
            ));
        }
        let path = paths.expected_dir.join(format!("{name}.txt"));
        let expected = fs::read_to_string(&path)
            .map_err(|e| format!("{}: {e} (run `make user-oracle` first)", path.display()))?;
        let expected = output::compared_lines(&expected);
        match output::from_serial(&text, name, &ignore) {
            None => {
                println!(
                    "compare {name} ... FAILED: no \"start {name}\" line in {}",
                    log.display()
                );
                all_equal = false;
            }
            Some(got) => match output::diff(&expected, &got) {
                None => println!("compare {name} ... ok"),
                Some(diff) => {
                    println!(
                        "compare {name} ... FAILED: Linux (-) and the kernel (+) differ:\n{diff}"
                    );
                    all_equal = false;
                }
            },
        }
    }
    Ok(all_equal)
}

fn build_initramfs(
    programs: &[Program],
    paths: &Paths,
    init: &str,
    add: &[(PathBuf, String)],
    busybox: Option<&Path>,
    out: &Path,
) -> Result<bool, String> {
    let init_path = if init.contains('/') {
        PathBuf::from(init)
    } else {
        paths.bin_dir.join(init)
    };
    if !init_path.is_file() {
        return Err(format!("--init {init}: no {}", init_path.display()));
    }
    let binaries: Vec<PathBuf> = programs
        .iter()
        .map(|p| paths.bin_dir.join(&p.name))
        .collect();
    let busybox = busybox.map(initramfs::Busybox::probe).transpose()?;
    let (mut items, shadowed) = initramfs::items(&init_path, &binaries, add, busybox.as_ref())?;
    if !shadowed.is_empty() {
        println!(
            "initramfs: busybox applets not linked, a program of ours has the name: {}",
            shadowed.join(" ")
        );
    }
    for cpus in [1, 2] {
        items.push(initramfs::Item::File {
            path: kernel::run_list_path(cpus).trim_start_matches('/').into(),
            data: kernel::run_list(programs, cpus).into_bytes(),
            mode: 0o644,
        });
    }
    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let file = fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let writer = initramfs::write(std::io::BufWriter::new(file), &mut items)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    writer
        .into_inner()
        .map_err(|e| format!("{}: {e}", out.display()))?;
    let size = fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    println!(
        "initramfs: {} ({} entries, {} KiB)",
        out.display(),
        items.len(),
        size.div_ceil(1024)
    );
    Ok(true)
}

fn run_kernel(
    programs: &[Program],
    paths: &Paths,
    only: &[String],
    k: KernelOptions,
) -> Result<bool, String> {
    for name in only {
        if !programs.iter().any(|p| &p.name == name) {
            return Err(format!(
                "--only {name}: no such program in {}",
                paths.manifest.display()
            ));
        }
    }
    let selected: Vec<&Program> = programs
        .iter()
        .filter(|p| only.is_empty() || only.contains(&p.name))
        .collect();
    let smp = k
        .smp
        .split(',')
        .map(|n| {
            n.trim()
                .parse::<u32>()
                .map_err(|_| format!("--smp {}: a comma-separated list of CPU counts", k.smp))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pattern = |p: &str| Regex::new(p).map_err(|e| format!("{p}: {e}"));
    let setup = kernel::Setup {
        kernel: k.kernel.ok_or("kernel needs --kernel ELF")?,
        initramfs: k.initramfs,
        qemu: k.qemu,
        smp,
        accel: k.accel,
        cpu: k.cpu,
        mem: k.mem,
        append: k.append,
        timeout_s: k.timeout_s,
        log_dir: k.log_dir,
        expected_dir: paths.expected_dir.clone(),
        exited: pattern(&k.exited)?,
        killed: pattern(&k.killed)?,
        one_boot: k.one_boot,
    };
    kernel::run(&setup, &selected)
}

fn run_shell(paths: &Paths, o: ShellOptions) -> Result<bool, String> {
    let steps = shell::load(&o.session)?;
    for name in &o.only {
        if !steps.iter().any(|s| &s.name == name) {
            return Err(format!(
                "--only {name}: no such step in {}",
                o.session.display()
            ));
        }
    }
    let patterns: Vec<&str> = if o.drop.is_empty() {
        vec![shell::KERNEL_LOG_LINE]
    } else {
        o.drop.iter().map(String::as_str).collect()
    };
    let drop: Vec<Regex> = patterns
        .iter()
        .map(|p| Regex::new(p).map_err(|e| format!("--drop {p}: {e}")))
        .collect::<Result<_, _>>()?;
    let k = &o.kernel;
    let mut run = shell::Run {
        steps: &steps,
        only: &o.only,
        timeout: Duration::from_secs(k.timeout_s),
        boot_timeout: Duration::from_secs(o.boot_timeout_s),
        drop: &drop,
        log: PathBuf::new(),
    };
    let (mut passed, mut failed) = (0, 0);
    if o.host {
        let path_dir = k.log_dir.join("host-bin");
        let tools: Vec<PathBuf> = ["stress"]
            .iter()
            .map(|t| paths.bin_dir.join(t))
            .filter(|p| p.exists())
            .collect();
        shell::host_path_dir(&path_dir, &o.busybox, &tools)?;
        let target = shell::Target::Host {
            busybox: fs::canonicalize(&o.busybox)
                .map_err(|e| format!("{}: {e}", o.busybox.display()))?,
            path_dir: fs::canonicalize(&path_dir).map_err(|e| e.to_string())?,
            cwd: o.root.clone(),
        };
        run.log = k.log_dir.join("host.log");
        let (p, f) = shell::session(&target, &run)?;
        passed += p;
        failed += f;
    }
    if let Some(kernel) = &k.kernel {
        for smp in k.smp.split(',') {
            let smp: u32 = smp
                .trim()
                .parse()
                .map_err(|_| format!("--smp {}: a comma-separated list of CPU counts", k.smp))?;
            let mut args = kernel::machine_args(&k.accel, smp, &k.mem, k.cpu.as_deref(), kernel, &k.initramfs);
            // The session types into the serial line: no monitor on it.
            args.extend(["-monitor".to_string(), "none".to_string()]);
            let target = shell::Target::Kernel {
                qemu: k.qemu.clone(),
                args,
                cmdline: k.append.clone(),
                smp,
            };
            run.log = k.log_dir.join(format!("smp{smp}.log"));
            let (p, f) = shell::session(&target, &run)?;
            passed += p;
            failed += f;
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}
