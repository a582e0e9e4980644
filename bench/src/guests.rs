//! The two-guest part: the same static programs (`user/bench/`) on Debian's Linux kernel and on
//! ours, in the same QEMU (TCG, the instruction counter loaded) with the same `-cpu`, `-smp` and
//! memory, compared per operation.
//!
//! - **Linux** boots once a round with an initramfs of our own (`/init` from `user/bench/init.c`,
//!   the programs in `/bin`, the list to run in `/bench.list`). Debian ships no System.map, so a
//!   first boot without the counter reads the interrupt entry points from `/proc/kallsyms` (`guest
//!   symbol` lines, cached in `vectors.txt` next to the kernel; `nokaslr` keeps them fixed).
//! - **Ours** boots once per program and round with the same archive, `init=/bin/NAME -- ARGS`;
//!   its entry stubs are the `trap_stub_N` symbols of its ELF, as in part 2. Every program runs on
//!   both kernels; a row a program cannot run there is marked `ours_needs` and said in the table.
//!
//! Each program prints `bench ROW tag=T ops=N ns_per_op=X cycles_per_op=Y laps=L ...` (see
//! `user/bench/gb.h`; X is the median of the L laps of its timed loop); the plugin's totals for
//! tag T, summed over the vCPUs, divided by N give the per-operation counts. `calibrate` runs a
//! loop of known user instruction count on both kernels: the counter must find exactly that many
//! user instructions on each, or the run fails.
//!
//! Rounds (`--rounds R`, 3 by default): the whole comparison runs R times, Linux then ours each
//! time, so both kernels meet the host's load of the moment alike. Time is reported only as the
//! ratio ours / Linux of the guests' own CLOCK_MONOTONIC per operation (under TCG: emulation wall
//! time), one ratio per round, the median of the rounds' ratios with their range; the counts are
//! the median of the rounds' counts per operation.
//!
//! Output: a table on stdout, `guests.json` and `guests.svg` in the output directory.
//!
//! Neighbours: `icount` (the plugin build and its output), `main` (the `--guests` option).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::{self, Read},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    icount::{self, TagTotals},
    stats,
};

/// What `--guests` was given.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub qemu: PathBuf,
    /// The built programs (`target/user/bench`).
    pub bin: PathBuf,
    /// Where `make linux-guest` put vmlinuz and its version (`target/linux-guest`).
    pub linux: PathBuf,
    /// Our release kernel ELF.
    pub kernel: PathBuf,
    pub cpu_model: String,
    pub smp: u32,
    pub mem: String,
    pub out_dir: PathBuf,
    /// `--only NAME,...`: run only these programs (empty: all).
    pub only: Vec<String>,
    /// `--no-linux`: skip the Linux guest (for measuring ours alone while cutting a path).
    pub no_linux: bool,
    /// `--profile`: our guest's instructions in each window by kernel function (see [`profile`]).
    pub profile: bool,
    /// `--rounds R`: the whole comparison R times, Linux then ours in each round; the time ratio
    /// is the median of the rounds' ratios. Default: 3, or 1 with `--quick` (the smoke run of
    /// `make test`) or `--no-linux` (no ratio to take).
    pub rounds: u32,
    /// `--ours-append OPTIONS`: kernel options added to our guest's command line (e.g.
    /// `idle-poll-us=0`, to measure ours with a feature off); said in the header and the JSON.
    pub ours_append: String,
}

pub const USAGE: &str = "usage: bench --guests --qemu PATH --bin DIR --linux DIR --kernel ELF [--cpu-model M] [--smp N]
               [--mem SIZE] [--out DIR] [--quick] [--only PROGRAM,...] [--no-linux] [--profile]
               [--rounds R (default 3; 1 with --quick or --no-linux)] [--ours-append 'KERNEL OPTIONS']";

/// Parse the arguments after `--guests`.
pub fn parse_args(args: impl IntoIterator<Item = String>, default_out: &Path) -> Result<Options, String> {
    let mut options = Options {
        quick: false,
        qemu: "qemu-system-x86_64".into(),
        bin: "target/user/bench".into(),
        linux: "target/linux-guest".into(),
        kernel: "target/x86_64-unknown-none/release/kernel".into(),
        cpu_model: "max,-la57".into(),
        smp: 2,
        mem: "1G".into(),
        out_dir: PathBuf::new(),
        only: Vec::new(),
        no_linux: false,
        profile: false,
        rounds: 0,
        ours_append: String::new(),
    };
    let mut out_dir = None;
    let mut rounds = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |what: &str| args.next().ok_or_else(|| format!("{arg} needs {what}"));
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--qemu" => options.qemu = value("a path")?.into(),
            "--bin" => options.bin = value("a directory")?.into(),
            "--linux" => options.linux = value("a directory")?.into(),
            "--kernel" => options.kernel = value("a kernel ELF")?.into(),
            "--cpu-model" => options.cpu_model = value("a QEMU CPU model")?,
            "--smp" => {
                let v = value("a CPU count")?;
                options.smp = v.parse().ok().filter(|n| *n > 0).ok_or(format!("--smp: not a CPU count: {v}"))?;
            }
            "--mem" => options.mem = value("a size")?,
            "--out" => out_dir = Some(PathBuf::from(value("a directory")?)),
            "--only" => {
                let names = value("program names")?;
                for name in names.split(',') {
                    if !PROGRAMS.iter().any(|p| p.name == name) {
                        return Err(format!("--only: no program `{name}`"));
                    }
                    options.only.push(name.to_owned());
                }
            }
            "--no-linux" => options.no_linux = true,
            "--profile" => options.profile = true,
            "--ours-append" => options.ours_append = value("kernel options")?,
            "--rounds" => {
                let v = value("a count")?;
                rounds = Some(v.parse().ok().filter(|n| *n > 0).ok_or(format!("--rounds: not a count: {v}"))?);
            }
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    options.rounds = rounds.unwrap_or(if options.quick || options.no_linux { 1 } else { 3 });
    options.out_dir = out_dir.unwrap_or_else(|| {
        let dir = default_out.join("guests");
        if options.quick { dir.join("quick") } else { dir }
    });
    Ok(options)
}

/// One program of the list: its name, its arguments at full size and on tiny N, and whether our
/// kernel can run it yet.
struct Program {
    name: &'static str,
    args: &'static [&'static str],
    quick_args: &'static [&'static str],
    /// Rows it prints (each one tag).
    rows: &'static [&'static str],
    /// Why our kernel cannot run it yet, if it cannot.
    ours_needs: Option<&'static str>,
}

const PROGRAMS: &[Program] = &[
    Program { name: "calibrate", args: &[], quick_args: &[], rows: &["calibrate"], ours_needs: None },
    Program { name: "yield", args: &["10000"], quick_args: &["100"], rows: &["yield_1cpu"], ours_needs: None },
    Program {
        name: "futex",
        args: &["10000"],
        quick_args: &["100"],
        rows: &["futex_1cpu", "futex_2cpu"],
        ours_needs: None,
    },
    Program {
        name: "pipe",
        args: &["10000"],
        quick_args: &["100"],
        rows: &["pipe_1cpu", "pipe_2cpu"],
        ours_needs: None,
    },
    Program {
        name: "getppid",
        args: &["10000"],
        quick_args: &["100"],
        rows: &["getppid"],
        ours_needs: None,
    },
    Program { name: "getpid", args: &["10000"], quick_args: &["100"], rows: &["getpid"], ours_needs: None },
    Program {
        name: "munmap",
        args: &["2000"],
        quick_args: &["50"],
        rows: &["munmap_remote", "munmap_local"],
        ours_needs: None,
    },
    Program { name: "mmap", args: &["1000"], quick_args: &["20"], rows: &["mmap_touch_munmap_16"], ours_needs: None },
    Program {
        name: "fork",
        args: &["300", "/bin/tiny"],
        quick_args: &["5", "/bin/tiny"],
        rows: &["fork_exit_wait", "fork_execve_wait"],
        ours_needs: None,
    },
    Program {
        name: "hackbench",
        args: &["100", "2"],
        quick_args: &["5", "1"],
        rows: &["hackbench_procs"],
        ours_needs: None,
    },
    Program {
        name: "hackbench",
        args: &["100", "2", "threads"],
        quick_args: &["5", "1", "threads"],
        rows: &["hackbench_threads"],
        ours_needs: None,
    },
];

/// The programs `options` selects (`--only`), with their places in [`PROGRAMS`].
fn selected(options: &Options) -> impl Iterator<Item = (usize, &'static Program)> + '_ {
    PROGRAMS.iter().enumerate().filter(|(_, p)| options.only.is_empty() || options.only.iter().any(|n| n == p.name))
}

/// What each row measures, per operation.
fn row_label(row: &str) -> &'static str {
    match row {
        "calibrate" => "calibration loop (1 + 2*10^5 user insns, per run)",
        "yield_1cpu" => "sched_yield ping-pong, 2 threads 1 CPU, per hand-off",
        "futex_1cpu" => "futex hand-off, 2 threads 1 CPU, per hand-off",
        "futex_2cpu" => "futex hand-off, 2 threads 2 CPUs, per hand-off",
        "pipe_1cpu" => "pipe ping-pong, 2 processes 1 CPU, per hand-off",
        "pipe_2cpu" => "pipe ping-pong, 2 processes 2 CPUs, per hand-off",
        "getppid" => "getppid, per call",
        "getpid" => "null system call round trip (getpid, syscall inline), per call",
        "munmap_remote" => "munmap of a page touched on the other CPU, per unmap",
        "munmap_local" => "munmap of a page touched locally, per unmap",
        "mmap_touch_munmap_16" => "mmap + touch + munmap of 16 pages, per round",
        "fork_exit_wait" => "fork + _exit + waitpid, per process",
        "fork_execve_wait" => "fork + execve(tiny) + waitpid, per process",
        "hackbench_procs" => "hackbench, processes over pipes, per 64-byte message",
        "hackbench_threads" => "hackbench, threads over pipes, per 64-byte message",
        _ => "",
    }
}

/// One row as one kernel ran it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measured {
    pub tag: u16,
    pub ops: u64,
    /// The median lap's CLOCK_MONOTONIC ns and rdtsc cycles per operation.
    pub ns_per_op: f64,
    pub cycles_per_op: f64,
    /// The laps the program timed its loop in (1: timed whole; see `user/bench/gb.h`).
    pub laps: u32,
    /// The fastest and the slowest lap's ns per operation, and the whole loop's.
    pub ns_per_op_min: f64,
    pub ns_per_op_max: f64,
    pub ns_per_op_all: f64,
    /// The counter's totals for the row's tag, all vCPUs; `None` when it wrote none.
    pub counts: Option<TagTotals>,
}

/// A row's outcome on one kernel.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Ran(Measured),
    /// Not run, or failed: why.
    Missing(String),
}

/// One guest's run of every program.
#[derive(Debug, Default)]
pub struct GuestRun {
    /// `Linux 6.1.0-57-amd64 #1 SMP ...` or our kernel's name.
    pub version: String,
    pub rows: BTreeMap<String, Outcome>,
    /// The calibration program's expected user instruction count.
    pub calibrate_expect_user: Option<u64>,
    pub notes: Vec<String>,
}

/// A program's `bench` lines, `calibrate expect_user=` and whether it said `ok NAME`.
#[derive(Debug, Default, PartialEq)]
pub struct ProgramOutput {
    pub rows: Vec<(String, Measured)>,
    pub expect_user: Option<u64>,
    pub ok: Vec<String>,
    pub failed: Vec<String>,
    /// `bench-skip ROW why`: rows a program left out, and why.
    pub skipped: Vec<(String, String)>,
}

/// Read the programs' lines out of a guest's serial output.
pub fn parse_output(text: &str) -> ProgramOutput {
    let mut out = ProgramOutput::default();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("bench ") {
            let mut words = rest.split_whitespace();
            let Some(row) = words.next() else { continue };
            let mut m = Measured::default();
            for word in words {
                let Some((key, value)) = word.split_once('=') else { continue };
                match key {
                    "tag" => m.tag = value.parse().unwrap_or(0),
                    "ops" => m.ops = value.parse().unwrap_or(0),
                    "ns_per_op" => m.ns_per_op = value.parse().unwrap_or(f64::NAN),
                    "cycles_per_op" => m.cycles_per_op = value.parse().unwrap_or(f64::NAN),
                    "laps" => m.laps = value.parse().unwrap_or(0),
                    "ns_per_op_min" => m.ns_per_op_min = value.parse().unwrap_or(f64::NAN),
                    "ns_per_op_max" => m.ns_per_op_max = value.parse().unwrap_or(f64::NAN),
                    "ns_per_op_all" => m.ns_per_op_all = value.parse().unwrap_or(f64::NAN),
                    // Keys this reader does not know yet are skipped.
                    _ => {}
                }
            }
            // A line without laps (a program from before them) timed its window whole: one lap.
            if m.laps == 0 {
                m.laps = 1;
                (m.ns_per_op_min, m.ns_per_op_max, m.ns_per_op_all) = (m.ns_per_op, m.ns_per_op, m.ns_per_op);
            }
            out.rows.push((row.to_owned(), m));
        } else if let Some(rest) = line.strip_prefix("bench-skip ") {
            let (row, why) = rest.split_once(' ').unwrap_or((rest, ""));
            out.skipped.push((row.to_owned(), why.to_owned()));
        } else if let Some(value) = line.strip_prefix("calibrate expect_user=") {
            out.expect_user = value.trim().parse().ok();
        } else if let Some(name) = line.strip_prefix("ok ") {
            out.ok.push(name.trim().to_owned());
        } else if line.starts_with("FAILED ") {
            out.failed.push(line.to_owned());
        }
    }
    out
}

/// The interrupt entry points of the Linux guest from its `guest symbol ADDRESS NAME` lines: the
/// two stub arrays as ranges (each stub starts a block), every other `asm_exc_*`/`asm_sysvec_*`
/// as its first byte only (blocks later in those functions start after calls return), and the
/// common handlers the stubs jump to left out (entering them is no second interrupt).
pub fn linux_vectors(text: &str) -> Vec<(u64, u64)> {
    let mut symbols: Vec<(u64, String)> = text
        .lines()
        .filter_map(|line| {
            let mut words = line.trim_end_matches('\r').strip_prefix("guest symbol ")?.split_whitespace();
            let addr = u64::from_str_radix(words.next()?, 16).ok()?;
            Some((addr, words.next()?.to_owned()))
        })
        .collect();
    symbols.sort();
    let mut ranges = Vec::new();
    for (i, (addr, name)) in symbols.iter().enumerate() {
        match name.as_str() {
            "asm_common_interrupt" | "asm_spurious_interrupt" => {}
            "irq_entries_start" | "spurious_entries_start" => {
                if let Some((next, _)) = symbols.get(i + 1) {
                    ranges.push((*addr, *next));
                }
            }
            _ => ranges.push((*addr, addr + 1)),
        }
    }
    ranges
}

/// A `newc` cpio archive of `files` (path in the archive, contents, mode), directories first,
/// written with the `cpio` crate as `user-oracle` writes the kernel's initramfs.
pub fn cpio(files: &[(String, Vec<u8>, u32)]) -> Vec<u8> {
    use std::io::Write as _;
    let mut dirs: Vec<&str> = files.iter().filter_map(|(path, _, _)| path.rsplit_once('/').map(|(dir, _)| dir)).collect();
    dirs.sort();
    dirs.dedup();
    let entries = dirs
        .into_iter()
        .map(|dir| (dir, &[][..], 0o040_755, 2))
        .chain(files.iter().map(|(path, data, mode)| (path.as_str(), data.as_slice(), 0o100_000 | mode, 1)));
    let mut out = Vec::new();
    for (ino, (name, data, mode, nlink)) in (1u32..).zip(entries) {
        let size = u32::try_from(data.len()).expect("a guest program under 4 GiB");
        let mut writer = cpio::newc::Builder::new(name)
            .ino(ino)
            .mode(mode)
            .uid(0)
            .gid(0)
            .nlink(nlink)
            .mtime(0)
            .write(out, size);
        writer.write_all(data).expect("writing to memory cannot fail");
        out = writer.finish().expect("writing to memory cannot fail");
    }
    cpio::newc::trailer(out).expect("writing to memory cannot fail")
}

/// Run QEMU to its end or `timeout`; returns its serial output (stdout) and wall time.
fn run_qemu(qemu: &Path, args: &[String], timeout: Duration) -> io::Result<(String, Duration)> {
    let start = Instant::now();
    let mut child = Command::new(qemu).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            // The serial text so far, then the reason as its last line (what `collect` quotes).
            let text = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
            return Ok((format!("{text}\nQEMU did not finish within {} s and was stopped\n", timeout.as_secs()), start.elapsed()));
        }
        thread::sleep(Duration::from_millis(100));
    }
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let text = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    if !stderr.trim().is_empty() {
        eprintln!("bench: QEMU said: {}", stderr.trim());
    }
    Ok((text, start.elapsed()))
}

fn machine_args(options: &Options) -> Vec<String> {
    [
        "-machine", "q35", "-accel", "tcg", "-cpu", &options.cpu_model, "-smp", &options.smp.to_string(), "-m", &options.mem,
        "-serial", "stdio", "-display", "none", "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn plugin_args(plugin: &Path, out: &Path, vectors: &[(u64, u64)]) -> Vec<String> {
    let mut arg = format!("{},out={}", plugin.display(), out.display());
    for (start, end) in vectors {
        let _ = write!(arg, ",vectors={start:#x}-{end:#x}");
    }
    vec!["-plugin".to_owned(), arg]
}

fn program_args(program: &Program, quick: bool) -> &'static [&'static str] {
    if quick { program.quick_args } else { program.args }
}

/// The archive both guests boot with: `/init`, `/bin/*`, `/bench.list`.
fn archive(options: &Options) -> io::Result<Vec<u8>> {
    let mut files = Vec::new();
    let read = |name: &str| fs::read(options.bin.join(name)).map_err(|e| io::Error::other(format!("{}: {e}", options.bin.join(name).display())));
    files.push(("init".to_owned(), read("init")?, 0o755));
    let mut names: Vec<&str> = PROGRAMS.iter().map(|p| p.name).collect();
    names.push("tiny");
    names.sort();
    names.dedup();
    for name in names {
        files.push((format!("bin/{name}"), read(name)?, 0o755));
    }
    let mut list = String::new();
    for (_, program) in selected(options) {
        let _ = writeln!(list, "/bin/{} {}", program.name, program_args(program, options.quick).join(" "));
    }
    files.push(("bench.list".to_owned(), list.into_bytes(), 0o644));
    Ok(cpio(&files))
}

/// Fill `run.rows` for `programs` from one boot's serial output and plugin totals.
fn collect(
    run: &mut GuestRun,
    programs: &[&Program],
    text: &str,
    totals: &Result<BTreeMap<u16, TagTotals>, String>,
    what: &str,
) {
    let output = parse_output(text);
    if output.expect_user.is_some() {
        run.calibrate_expect_user = output.expect_user;
    }
    for failed in &output.failed {
        run.notes.push(format!("{what}: {failed}"));
    }
    for program in programs {
        for row in program.rows {
            let outcome = match output.rows.iter().find(|(name, _)| name == row) {
                Some((_, m)) => {
                    let mut m = m.clone();
                    m.counts = totals.as_ref().ok().and_then(|t| t.get(&m.tag).cloned());
                    Outcome::Ran(m)
                }
                None => Outcome::Missing(if let Some((_, why)) = output.skipped.iter().find(|(name, _)| name == row) {
                    format!("skipped: {why}")
                } else if output.ok.iter().any(|ok| ok == program.name) {
                    "the program printed no line for it".to_owned()
                } else {
                    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").trim();
                    format!("{} did not finish: {last}", program.name)
                }),
            };
            run.rows.insert((*row).to_owned(), outcome);
        }
    }
    if let Err(why) = totals {
        run.notes.push(format!("{what}: no instruction counts ({why})"));
    }
}

/// One boot of the Linux guest running every selected program; its files go to `dir`.
fn linux_run(options: &Options, plugin: &Path, cpio_path: &Path, dir: &Path) -> Result<GuestRun, String> {
    let vmlinuz = options.linux.join("vmlinuz");
    if !vmlinuz.is_file() {
        return Err(format!(
            "no Linux kernel in {} (the download of Debian's linux-image-amd64 failed or was not run: make linux-guest)",
            options.linux.display()
        ));
    }
    let package = fs::read_to_string(options.linux.join("version")).unwrap_or_default().trim().to_owned();
    let append = "console=ttyS0 nokaslr quiet panic=-1 rdinit=/init".to_owned();
    let mut boot = machine_args(options);
    boot.extend(["-kernel".to_owned(), vmlinuz.display().to_string(), "-initrd".to_owned(), cpio_path.display().to_string()]);
    boot.extend(["-append".to_owned(), append]);
    let timeout = Duration::from_secs(if options.quick { 300 } else { 1800 });

    // The entry points, once per kernel: a boot without the counter, its list emptied by
    // `bench.list` being read only after the symbols are printed (the programs run too; cheap).
    let vectors_file = options.linux.join("vectors.txt");
    let vectors = match fs::read_to_string(&vectors_file).ok().map(|t| linux_vectors(&t)).filter(|v| !v.is_empty()) {
        Some(v) => v,
        None => {
            eprintln!("bench: Linux guest: a first boot reads the interrupt entry points from /proc/kallsyms");
            let (text, _) = run_qemu(&options.qemu, &boot, timeout).map_err(|e| e.to_string())?;
            let symbols: String = text.lines().filter(|l| l.starts_with("guest symbol ")).map(|l| format!("{l}\n")).collect();
            let _ = fs::write(&vectors_file, &symbols);
            let v = linux_vectors(&symbols);
            if v.is_empty() {
                return Err("the Linux guest printed no interrupt entry points (no /proc/kallsyms?)".to_owned());
            }
            v
        }
    };
    let out = dir.join("icount-linux.txt");
    let _ = fs::remove_file(&out);
    let mut args = boot.clone();
    args.extend(plugin_args(plugin, &out, &vectors));
    eprintln!("bench: Linux guest: every program in one boot, with the counter");
    let (text, wall) = run_qemu(&options.qemu, &args, timeout).map_err(|e| e.to_string())?;
    let _ = fs::write(dir.join("linux-serial.txt"), &text);
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("guest kernel "))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| "Linux (no version line)".to_owned());
    let mut run = GuestRun { version, ..GuestRun::default() };
    if !package.is_empty() {
        run.version = format!("{} (Debian {package})", run.version);
    }
    let totals = fs::read_to_string(&out).map_err(|e| e.to_string()).and_then(|t| icount::parse(&t));
    let programs: Vec<&Program> = selected(options).map(|(_, p)| p).collect();
    collect(&mut run, &programs, &text, &totals, "Linux");
    run.notes.push(format!("Linux guest: one boot, {:.0} s", wall.as_secs_f64()));
    Ok(run)
}

/// One boot of our kernel per selected program; its files go to `dir`, and with `with_profile`
/// the window profiles too.
fn ours_run(options: &Options, plugin: &Path, cpio_path: &Path, dir: &Path, with_profile: bool) -> Result<GuestRun, String> {
    let elf = fs::read(&options.kernel).map_err(|e| format!("reading {}: {e}", options.kernel.display()))?;
    let vectors = icount::vector_range(&elf)?;
    let commit = Command::new("git")
        .args(["-C", &options.kernel.parent().unwrap_or(Path::new(".")).display().to_string(), "log", "-1", "--format=%h %cs"])
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    let version = if commit.is_empty() {
        format!("this kernel, {}", options.kernel.display())
    } else {
        format!("this kernel, commit {commit}")
    };
    let mut run = GuestRun { version, ..GuestRun::default() };
    let timeout = Duration::from_secs(if options.quick { 120 } else { 900 });
    let (mut boots, mut wall) = (0, Duration::ZERO);
    for (index, program) in selected(options) {
        if let Some(why) = program.ours_needs {
            for row in program.rows {
                run.rows.insert((*row).to_owned(), Outcome::Missing(why.to_owned()));
            }
            continue;
        }
        let out = dir.join(format!("icount-ours-{index}-{}.txt", program.name));
        let _ = fs::remove_file(&out);
        // The kernel powers off when init ends.
        let mut cmdline = format!("init=/bin/{}", program.name);
        if !options.ours_append.is_empty() {
            cmdline = format!("{cmdline} {}", options.ours_append);
        }
        let args = program_args(program, options.quick);
        if !args.is_empty() {
            cmdline = format!("{cmdline} -- {}", args.join(" "));
        }
        let mut qemu_args = machine_args(options);
        qemu_args.extend([
            "-kernel".to_owned(),
            options.kernel.display().to_string(),
            "-initrd".to_owned(),
            cpio_path.display().to_string(),
            "-append".to_owned(),
            cmdline,
        ]);
        qemu_args.extend(plugin_args(plugin, &out, &[vectors]));
        let profile_raw = dir.join(format!("profile-ours-{index}-{}.raw", program.name));
        if with_profile {
            let _ = fs::remove_file(&profile_raw);
            if let Some(last) = qemu_args.last_mut() {
                let _ = write!(last, ",profile={}", profile_raw.display());
            }
        }
        eprintln!("bench: our kernel: /bin/{} {}", program.name, args.join(" "));
        let text = match run_qemu(&options.qemu, &qemu_args, timeout) {
            Ok((text, took)) => {
                (boots, wall) = (boots + 1, wall + took);
                text
            }
            Err(why) => why.to_string(),
        };
        let _ = fs::write(dir.join(format!("ours-serial-{index}-{}.txt", program.name)), &text);
        // A kernel without user space yet runs none of them: say that once, as a skipped guest.
        if index == 0 && !text.lines().any(|l| l.trim_end_matches('\r') == format!("start {}", program.name)) {
            let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output").trim().to_owned();
            return Err(format!("this kernel did not start /bin/{} (no user space in this build?); its last line: {last}", program.name));
        }
        let totals = fs::read_to_string(&out).map_err(|e| e.to_string()).and_then(|t| icount::parse(&t));
        collect(&mut run, &[program], &text, &totals, "ours");
        if with_profile {
            let ops: BTreeMap<u16, u64> = parse_output(&text).rows.iter().map(|(_, m)| (m.tag, m.ops)).collect();
            let histogram = fs::read_to_string(&profile_raw)
                .map_err(|e| format!("{}: {e}", profile_raw.display()))
                .and_then(|raw| profile(&elf, &raw, &ops));
            let path = dir.join(format!("profile-ours-{index}-{}.txt", program.name));
            match histogram {
                Ok(text) => {
                    let _ = fs::write(&path, &text);
                    eprint!("{text}");
                }
                Err(why) => eprintln!("bench: no profile of /bin/{}: {why}", program.name),
            }
        }
    }
    run.notes.push(format!("our kernel: {boots} boots, {:.0} s", wall.as_secs_f64()));
    Ok(run)
}

/// A window profile (the plugin's `icount profile tag=T addr=A execs=N insns=M` lines) as
/// instructions per operation by function of the kernel `elf` (user addresses as one line), per
/// tag, most first; `ops` gives each tag's operations (a tag without is counted per window total).
pub fn profile(elf: &[u8], raw: &str, ops: &BTreeMap<u16, u64>) -> Result<String, String> {
    use object::{Object, ObjectSymbol, SymbolKind};
    let file = object::File::parse(elf).map_err(|e| format!("the kernel is no ELF: {e}"))?;
    let mut symbols: Vec<(u64, String)> = file
        .symbols()
        // Labels of `global_asm!` (the system-call entry) are NOTYPE symbols in a section.
        .filter(|s| s.address() != 0 && (s.kind() == SymbolKind::Text || (s.kind() == SymbolKind::Unknown && s.section_index().is_some())))
        .filter_map(|s| s.name().ok().map(|n| (s.address(), format!("{:#}", rustc_demangle::demangle(n)))))
        .collect();
    symbols.sort();
    let name_of = |addr: u64| -> String {
        if addr < 1 << 63 {
            return "(user)".to_owned();
        }
        match symbols.partition_point(|(a, _)| *a <= addr) {
            0 => format!("{addr:#x}"),
            i => symbols[i - 1].1.clone(),
        }
    };
    let mut by_tag: BTreeMap<u16, BTreeMap<String, u64>> = BTreeMap::new();
    for line in raw.lines() {
        let Some(words) = line.strip_prefix("icount profile ") else { continue };
        let (mut tag, mut addr, mut insns) = (None, None, None);
        for word in words.split_whitespace() {
            match word.split_once('=') {
                Some(("tag", v)) => tag = v.parse::<u16>().ok(),
                Some(("addr", v)) => addr = u64::from_str_radix(v.trim_start_matches("0x"), 16).ok(),
                Some(("insns", v)) => insns = v.parse::<u64>().ok(),
                _ => {}
            }
        }
        let (Some(tag), Some(addr), Some(insns)) = (tag, addr, insns) else {
            return Err(format!("a malformed profile line: {line}"));
        };
        *by_tag.entry(tag).or_default().entry(name_of(addr)).or_default() += insns;
    }
    let mut out = String::new();
    for (tag, functions) in by_tag {
        let per = ops.get(&tag).copied().unwrap_or(1).max(1) as f64;
        let total: u64 = functions.iter().filter(|(n, _)| *n != "(user)").map(|(_, v)| v).sum();
        let _ = writeln!(out, "profile tag={tag} ops={per} kernel_insns_per_op={:.1}", total as f64 / per);
        let mut sorted: Vec<(String, u64)> = functions.into_iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (name, insns) in sorted {
            if insns as f64 / per >= 0.5 {
                let _ = writeln!(out, "  {:>8.1}  {name}", insns as f64 / per);
            }
        }
    }
    Ok(out)
}

/// Counts per operation of a measured row: (name, value).
fn per_op(m: &Measured) -> Vec<(String, f64)> {
    let Some(t) = &m.counts else { return Vec::new() };
    let ops = m.ops.max(1) as f64;
    let mut out = vec![
        ("kernel_insns".to_owned(), t.kernel as f64 / ops),
        ("user_insns".to_owned(), t.user as f64 / ops),
        ("interrupts".to_owned(), t.interrupts as f64 / ops),
    ];
    for (name, n) in &t.special {
        out.push((name.clone(), *n as f64 / ops));
    }
    out
}

fn get(counts: &[(String, f64)], name: &str) -> Option<f64> {
    counts.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

/// The laps each program times its loop in (`GB_LAPS` of `user/bench/gb.h`), for the legend.
const GB_LAPS: u32 = 8;

/// One round of the comparison: Linux, then ours.
pub struct Round {
    pub linux: Result<GuestRun, String>,
    pub ours: Result<GuestRun, String>,
}

/// The whole comparison.
pub struct Comparison {
    pub qemu_version: String,
    pub options: Options,
    /// Where it ran: the host's CPU model and count, and its load average at the start and end.
    pub host: String,
    /// The rounds in the order they ran.
    pub rounds: Vec<Round>,
}

fn fmt_num(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
        None => "-".to_owned(),
    }
}

fn ratio(ours: Option<f64>, linux: Option<f64>) -> Option<f64> {
    match (ours, linux) {
        (Some(o), Some(l)) if l > 0.0 => Some(o / l),
        _ => None,
    }
}

/// The median of each count per operation over `runs` (the rounds that ran the row), in the
/// order the counts first appear.
fn median_per_op(runs: &[&Measured]) -> Vec<(String, f64)> {
    let all: Vec<Vec<(String, f64)>> = runs.iter().map(|m| per_op(m)).collect();
    let mut names: Vec<&String> = Vec::new();
    for (name, _) in all.iter().flatten() {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
        .into_iter()
        .filter_map(|name| {
            let values: Vec<f64> = all.iter().filter_map(|counts| get(counts, name)).collect();
            Some((name.clone(), stats::median(&values)?))
        })
        .collect()
}

/// The time ratio's median over the rounds and its range: `0.31 (0.28..0.36)`, or the one ratio.
fn fmt_time(ratios: &[f64]) -> String {
    match (stats::median(ratios), stats::range(ratios)) {
        (Some(median), Some((min, max))) if ratios.len() > 1 => {
            format!("{} ({}..{})", fmt_num(Some(median)), fmt_num(Some(min)), fmt_num(Some(max)))
        }
        (median, _) => fmt_num(median),
    }
}

impl Comparison {
    /// The rows of the selected programs.
    fn rows(&self) -> Vec<&'static str> {
        selected(&self.options).flat_map(|(_, p)| p.rows.iter().copied()).collect()
    }

    fn side(round: &Round, linux: bool) -> &Result<GuestRun, String> {
        if linux { &round.linux } else { &round.ours }
    }

    /// The row's outcome on one side, per round.
    fn outcomes(&self, linux: bool, row: &str) -> Vec<Outcome> {
        self.rounds
            .iter()
            .map(|round| match Self::side(round, linux) {
                Ok(run) => run.rows.get(row).cloned().unwrap_or_else(|| Outcome::Missing("not run".to_owned())),
                Err(why) => Outcome::Missing(why.clone()),
            })
            .collect()
    }

    /// The rounds' measurements of the row on one side, those that ran it.
    fn ran(&self, linux: bool, row: &str) -> Vec<Measured> {
        self.outcomes(linux, row).into_iter().filter_map(|o| if let Outcome::Ran(m) = o { Some(m) } else { None }).collect()
    }

    /// The median over the rounds of each count per operation of the row on one side.
    fn counts(&self, linux: bool, row: &str) -> Vec<(String, f64)> {
        median_per_op(&self.ran(linux, row).iter().collect::<Vec<_>>())
    }

    /// ours / Linux of the median lap's ns per operation, per round (`None` where a side did not
    /// run the row): each round's two kernels ran back to back.
    fn time_ratios_by_round(&self, row: &str) -> Vec<Option<f64>> {
        self.outcomes(false, row)
            .into_iter()
            .zip(self.outcomes(true, row))
            .map(|pair| match pair {
                (Outcome::Ran(o), Outcome::Ran(l)) => ratio(Some(o.ns_per_op), Some(l.ns_per_op)),
                _ => None,
            })
            .collect()
    }

    fn time_ratios(&self, row: &str) -> Vec<f64> {
        self.time_ratios_by_round(row).into_iter().flatten().collect()
    }

    fn version(&self, linux: bool) -> String {
        let sides: Vec<&Result<GuestRun, String>> = self.rounds.iter().map(|r| Self::side(r, linux)).collect();
        match sides.iter().find_map(|side| side.as_ref().ok()) {
            Some(run) => run.version.clone(),
            None => match sides.first() {
                Some(Err(why)) => format!("not run: {why}"),
                _ => "not run".to_owned(),
            },
        }
    }

    /// `round K: ` before a round's problems and notes when there are several rounds.
    fn round_prefix(&self, index: usize) -> String {
        if self.rounds.len() > 1 { format!("round {}: ", index + 1) } else { String::new() }
    }

    /// What failed the checks, in any round: a program that did not run, a row without counts, a
    /// calibration whose user count is not exact. Rows that our kernel cannot run yet are not
    /// failures.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (index, round) in self.rounds.iter().enumerate() {
            let prefix = self.round_prefix(index);
            for (linux, name) in [(true, "Linux"), (false, "ours")] {
                let Ok(run) = Self::side(round, linux) else { continue };
                for (row, outcome) in &run.rows {
                    match outcome {
                        Outcome::Ran(m) => match &m.counts {
                            None => problems.push(format!("{prefix}{name} {row}: no instruction counts for tag {}", m.tag)),
                            Some(t) if t.windows == 0 => problems.push(format!("{prefix}{name} {row}: no closed window")),
                            Some(t) if t.unmatched > 0 => {
                                problems.push(format!("{prefix}{name} {row}: {} end markers without a window", t.unmatched))
                            }
                            Some(_) => {}
                        },
                        // Rows our kernel cannot run yet (no processes, no pinning) are said in the
                        // table; Linux must run every one.
                        Outcome::Missing(why) if !linux && (why.starts_with("needs ") || why.starts_with("skipped: ")) => {}
                        Outcome::Missing(why) => problems.push(format!("{prefix}{name} {row}: {why}")),
                    }
                }
                if let (Some(expect), Some(Outcome::Ran(Measured { counts: Some(t), .. }))) =
                    (run.calibrate_expect_user, run.rows.get("calibrate"))
                    && t.user != expect
                {
                    problems.push(format!("{prefix}{name}: the calibration loop counted {} user insns, {expect} expected", t.user));
                }
            }
        }
        problems
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Two guests, same static programs, same QEMU: {}", self.qemu_version);
        let _ = writeln!(
            s,
            "  -accel tcg -cpu {} -smp {} -m {}{}",
            self.options.cpu_model,
            self.options.smp,
            self.options.mem,
            if self.options.quick { "  (--quick: tiny N, figures not for quoting)" } else { "" }
        );
        let _ = writeln!(s, "  host: {}", self.host);
        let _ = writeln!(s, "  Linux: {}", self.version(true));
        let _ = writeln!(s, "  ours:  {}", self.version(false));
        if !self.options.ours_append.is_empty() {
            let _ = writeln!(s, "  ours booted with: {}", self.options.ours_append);
        }
        let _ = writeln!(s, "  rounds: {} (each: Linux, then ours)", self.rounds.len());
        let _ = writeln!(
            s,
            "{:<54} {:>9} {:>9} {:>7} | {:>7} {:>7} | {:>5} {:>5} | {:>5} {:>5} | {:>17}",
            "per operation", "k-ins us", "k-ins Lx", "us/Lx", "u-ins us", "u-ins Lx", "irq us", "irq Lx", "cr3 us", "cr3 Lx", "time us/Lx"
        );
        for row in self.rows() {
            let (co, cl) = (self.counts(false, row), self.counts(true, row));
            let _ = writeln!(
                s,
                "{:<54} {:>9} {:>9} {:>7} | {:>7} {:>7} | {:>5} {:>5} | {:>5} {:>5} | {:>17}",
                row_label(row),
                fmt_num(get(&co, "kernel_insns")),
                fmt_num(get(&cl, "kernel_insns")),
                fmt_num(ratio(get(&co, "kernel_insns"), get(&cl, "kernel_insns"))),
                fmt_num(get(&co, "user_insns")),
                fmt_num(get(&cl, "user_insns")),
                fmt_num(get(&co, "interrupts")),
                fmt_num(get(&cl, "interrupts")),
                fmt_num(get(&co, "cr3_writes")),
                fmt_num(get(&cl, "cr3_writes")),
                fmt_time(&self.time_ratios(row)),
            );
            for (linux, who) in [(false, "ours"), (true, "Linux")] {
                let outcomes = self.outcomes(linux, row);
                let missing: Vec<(usize, &String)> = outcomes
                    .iter()
                    .enumerate()
                    .filter_map(|(i, o)| if let Outcome::Missing(why) = o { Some((i, why)) } else { None })
                    .collect();
                // One line when every round missed it for the same reason, else one per round.
                if missing.len() == outcomes.len() && missing.iter().all(|(_, why)| *why == missing[0].1) {
                    let _ = writeln!(s, "    {who}: {}", missing[0].1);
                } else {
                    for (i, why) in missing {
                        let _ = writeln!(s, "    {who}, round {}: {why}", i + 1);
                    }
                }
            }
        }
        let _ = writeln!(
            s,
            "k-ins/u-ins: guest kernel/user instructions (TCG plugin, between the programs' user-mode markers, \
             all vCPUs that opened the row's window); irq: interrupts and exceptions taken; cr3: CR3 writes; \
             each count the median of the rounds' counts per operation. time: ours/Linux of the guests' \
             CLOCK_MONOTONIC ns per operation under the same TCG, each side's the median of its loop's {GB_LAPS} \
             laps (calibration and hackbench: the whole run), one ratio per round, the median of the rounds' \
             ratios (their range). Expensive instructions in full: guests.json."
        );
        for (index, round) in self.rounds.iter().enumerate() {
            for run in [&round.linux, &round.ours].into_iter().flatten() {
                for note in &run.notes {
                    let _ = writeln!(s, "  {}{note}", self.round_prefix(index));
                }
            }
        }
        s
    }

    pub fn json(&self) -> Value {
        let side = |linux: bool, row: &str| {
            let runs = self.ran(linux, row);
            let Some(first) = runs.first() else {
                let why = self.outcomes(linux, row).into_iter().find_map(|o| match o {
                    Outcome::Missing(why) => Some(why),
                    Outcome::Ran(_) => None,
                });
                return json!({ "missing": why });
            };
            let mut counts = serde_json::Map::new();
            for (name, v) in median_per_op(&runs.iter().collect::<Vec<_>>()) {
                counts.insert(format!("{name}_per_op"), json!(v));
            }
            let rounds: Vec<Value> = self
                .outcomes(linux, row)
                .into_iter()
                .map(|o| match o {
                    Outcome::Ran(m) => json!({
                        "ns_per_op": m.ns_per_op, "ns_per_op_min": m.ns_per_op_min, "ns_per_op_max": m.ns_per_op_max,
                        "ns_per_op_all": m.ns_per_op_all, "laps": m.laps, "rdtsc_cycles_per_op": m.cycles_per_op,
                        "kernel_insns_per_op": get(&per_op(&m), "kernel_insns"),
                    }),
                    Outcome::Missing(why) => json!({ "missing": why }),
                })
                .collect();
            let ns: Vec<f64> = runs.iter().map(|m| m.ns_per_op).collect();
            let cycles: Vec<f64> = runs.iter().map(|m| m.cycles_per_op).collect();
            json!({
                "ops": first.ops, "tag": first.tag, "ns_per_op": stats::median(&ns),
                "rdtsc_cycles_per_op": stats::median(&cycles), "windows": first.counts.as_ref().map(|t| t.windows),
                "counts": counts, "rounds": rounds,
            })
        };
        let rows: Vec<Value> = self
            .rows()
            .into_iter()
            .map(|row| {
                let (co, cl) = (self.counts(false, row), self.counts(true, row));
                let ratios = self.time_ratios(row);
                let range = stats::range(&ratios);
                json!({
                    "row": row, "label": row_label(row), "ours": side(false, row), "linux": side(true, row),
                    "kernel_insns_ours_over_linux": ratio(get(&co, "kernel_insns"), get(&cl, "kernel_insns")),
                    "time_ours_over_linux": stats::median(&ratios),
                    "time_ours_over_linux_min": range.map(|r| r.0), "time_ours_over_linux_max": range.map(|r| r.1),
                    "time_ours_over_linux_rounds": self.time_ratios_by_round(row),
                })
            })
            .collect();
        json!({
            "qemu": self.qemu_version, "accel": "tcg", "cpu_model": self.options.cpu_model, "smp": self.options.smp,
            "mem": self.options.mem, "quick": self.options.quick, "host": self.host, "linux_version": self.version(true),
            "ours_version": self.version(false), "ours_append": self.options.ours_append,
            "rounds": self.rounds.len(), "laps": GB_LAPS,
            "method": format!(
                "rounds run Linux then ours; a side's ns_per_op is the median of its loop's {GB_LAPS} laps (calibrate and \
                 hackbench: timed whole), per round; time_ours_over_linux is the median of the rounds' ratios, _min and _max \
                 their range; counts and ns_per_op per side are the medians over the rounds"
            ),
            "rows": rows, "problems": self.problems(),
        })
    }

    /// Bars of ours/Linux per row on a log scale around 1: kernel instructions and time (the
    /// median of the rounds, a whisker over their range).
    pub fn svg(&self) -> String {
        let rows = self.rows();
        let (row_h, left, width) = (34.0, 330.0, 900.0);
        let height = 70.0 + row_h * rows.len() as f64 + 30.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let title = format!("ours / Linux per operation (log scale, 1 = equal). Linux: {}. {}", self.version(true), self.qemu_version);
        let _ = writeln!(s, r#"<text x="10" y="18" font-size="12">{}</text>"#, escape(&title));
        let _ = writeln!(
            s,
            r##"<text x="10" y="36"><tspan fill="#3366cc">kernel instructions</tspan>  <tspan fill="#dd8833">TCG time, median of {} round(s), whisker: their range</tspan>; a missing bar: not measured on one side</text>"##,
            self.rounds.len()
        );
        // log10 ratio from -2 (1/100) to +1 (10x) over the plot width.
        let plot = width - left - 20.0;
        let x_of = |r: f64| left + (r.log10().clamp(-2.0, 1.0) + 2.0) / 3.0 * plot;
        let top = 50.0;
        for (label, r) in [("1/100", 0.01), ("1/10", 0.1), ("1", 1.0), ("10", 10.0)] {
            let x = x_of(r);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#bbb"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
                top + row_h * rows.len() as f64,
                top + row_h * rows.len() as f64 + 14.0
            );
        }
        for (i, row) in rows.iter().enumerate() {
            let y = top + row_h * i as f64;
            let _ = writeln!(s, r#"<text x="10" y="{:.1}">{}</text>"#, y + 20.0, escape(row_label(row)));
            let (co, cl) = (self.counts(false, row), self.counts(true, row));
            let k = ratio(get(&co, "kernel_insns"), get(&cl, "kernel_insns"));
            let ratios = self.time_ratios(row);
            let t = stats::median(&ratios);
            for (j, (value, colour)) in [(k, "#3366cc"), (t, "#dd8833")].into_iter().enumerate() {
                let Some(value) = value.filter(|v| *v > 0.0) else { continue };
                let (x0, x1) = (x_of(1.0), x_of(value));
                let yb = y + 6.0 + 12.0 * j as f64;
                let _ = writeln!(
                    s,
                    r#"<rect x="{:.1}" y="{yb:.1}" width="{:.1}" height="10" fill="{colour}"/><text x="{:.1}" y="{:.1}">{:.3}</text>"#,
                    x0.min(x1),
                    (x1 - x0).abs().max(1.0),
                    x0.max(x1) + 4.0,
                    yb + 9.0,
                    value
                );
            }
            if let Some((min, max)) = stats::range(&ratios).filter(|(min, _)| ratios.len() > 1 && *min > 0.0) {
                let yw = y + 6.0 + 12.0 + 5.0;
                let _ = writeln!(s, r##"<line x1="{:.1}" y1="{yw:.1}" x2="{:.1}" y2="{yw:.1}" stroke="#333"/>"##, x_of(min), x_of(max));
            }
            if k.is_none() {
                let missing = |linux: bool| {
                    self.outcomes(linux, row).into_iter().find_map(|o| match o {
                        Outcome::Missing(w) => Some(w),
                        Outcome::Ran(_) => None,
                    })
                };
                let why = match (missing(false), missing(true)) {
                    (Some(w), _) => format!("ours: {w}"),
                    (_, Some(w)) => format!("Linux: {w}"),
                    _ => "no counts".to_owned(),
                };
                let _ = writeln!(s, r##"<text x="{:.1}" y="{:.1}" fill="#888">{}</text>"##, left, y + 20.0, escape(&why));
            }
        }
        let _ = writeln!(s, "</svg>");
        s
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Where the run is: the host's CPU model and CPU count, with the load average now.
fn host_line() -> String {
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.trim() == "model name").map(|(_, v)| v.trim().to_owned()))
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cpus} CPUs")
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// Run both guests `options.rounds` times (Linux, ours, Linux, ours, ...), print the table, write
/// the files. With several rounds each round's boot files go to `round-K/` in the output
/// directory, and only the first round profiles (`--profile`). Fails a `--quick` run when a guest
/// that ran left a program or a count missing; a Linux kernel that could not be downloaded is
/// reported and skipped.
pub fn run(options: &Options, workspace: &Path) -> io::Result<()> {
    let started = Instant::now();
    let load_start = load_average();
    fs::create_dir_all(&options.out_dir)?;
    let version = Command::new(&options.qemu).arg("--version").output()?;
    let qemu_version = String::from_utf8_lossy(&version.stdout).lines().next().unwrap_or("QEMU ?").to_owned();
    let api = icount::plugin_api(&qemu_version).map_err(io::Error::other)?;
    let plugin = icount::build_plugin(api, workspace).map_err(io::Error::other)?;
    let cpio_path = options.out_dir.join("guests.cpio");
    fs::write(&cpio_path, archive(options)?)?;
    let mut rounds = Vec::new();
    for round in 1..=options.rounds {
        let dir = if options.rounds > 1 { options.out_dir.join(format!("round-{round}")) } else { options.out_dir.clone() };
        fs::create_dir_all(&dir)?;
        if options.rounds > 1 {
            eprintln!("bench: round {round} of {}", options.rounds);
        }
        let linux = if options.no_linux { Err("not run (--no-linux)".to_owned()) } else { linux_run(options, &plugin, &cpio_path, &dir) };
        if let Err(why) = &linux {
            eprintln!("bench: Linux guest skipped: {why}");
        }
        let ours = ours_run(options, &plugin, &cpio_path, &dir, options.profile && round == 1);
        if let Err(why) = &ours {
            eprintln!("bench: our guest skipped: {why}");
        }
        rounds.push(Round { linux, ours });
    }
    let host = format!("{}; load average {load_start} at the start, {} at the end", host_line(), load_average());
    let comparison = Comparison { qemu_version, options: options.clone(), host, rounds };
    print!("{}", comparison.table());
    println!("  the run: {} round(s) in {:.0} s", options.rounds, started.elapsed().as_secs_f64());
    fs::write(options.out_dir.join("guests.json"), serde_json::to_string_pretty(&comparison.json())? + "\n")?;
    fs::write(options.out_dir.join("guests.svg"), comparison.svg())?;
    eprintln!("bench: wrote {0}/guests.json and {0}/guests.svg", options.out_dir.display());
    let problems = comparison.problems();
    if !problems.is_empty() {
        let text = problems.join("; ");
        if options.quick {
            return Err(io::Error::other(format!("the two-guest smoke run: {text}")));
        }
        eprintln!("bench: two guests: {text}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_lines_are_read_with_their_figures() {
        let text = "start futex\r\nbench futex_1cpu tag=3 ops=2000 ns_per_op=7033.5 cycles_per_op=18217.4\n\
                    calibrate expect_user=200001\nbench-skip futex_2cpu only 1 CPU(s)\nok futex\nFAILED pipe: line 3\n";
        let out = parse_output(text);
        assert_eq!(out.rows.len(), 1);
        assert_eq!(out.rows[0].0, "futex_1cpu");
        assert_eq!((out.rows[0].1.tag, out.rows[0].1.ops), (3, 2000));
        assert_eq!(out.rows[0].1.ns_per_op, 7033.5);
        assert_eq!(out.expect_user, Some(200_001));
        assert_eq!(out.ok, vec!["futex".to_owned()]);
        assert_eq!(out.failed.len(), 1);
        assert_eq!(out.skipped, vec![("futex_2cpu".to_owned(), "only 1 CPU(s)".to_owned())]);
        // A line from before the laps is one lap: its window timed whole.
        assert_eq!(out.rows[0].1.laps, 1);
        assert_eq!((out.rows[0].1.ns_per_op_min, out.rows[0].1.ns_per_op_all), (7033.5, 7033.5));
    }

    #[test]
    fn the_laps_are_read_and_keys_not_known_are_skipped() {
        let text = "bench yield_1cpu tag=2 ops=20000 ns_per_op=2381.5 cycles_per_op=6180.2 laps=8 \
                    ns_per_op_min=2302.0 ns_per_op_max=3810.9 ns_per_op_all=2500.1 later_key=7\n";
        let out = parse_output(text);
        let m = &out.rows[0].1;
        assert_eq!((m.tag, m.ops, m.laps), (2, 20000, 8));
        assert_eq!((m.ns_per_op, m.cycles_per_op), (2381.5, 6180.2));
        assert_eq!((m.ns_per_op_min, m.ns_per_op_max, m.ns_per_op_all), (2302.0, 3810.9, 2500.1));
    }

    #[test]
    fn linux_entry_points_are_stub_arrays_and_first_bytes() {
        let text = "guest symbol ffffffff81c00290 irq_entries_start\nguest symbol ffffffff81c008f0 spurious_entries_start\n\
                    guest symbol ffffffff81c00990 asm_exc_divide_error\nguest symbol ffffffff81c00e40 asm_common_interrupt\n\
                    noise\n";
        assert_eq!(
            linux_vectors(text),
            vec![
                (0xffff_ffff_81c0_0290, 0xffff_ffff_81c0_08f0),
                (0xffff_ffff_81c0_08f0, 0xffff_ffff_81c0_0990),
                (0xffff_ffff_81c0_0990, 0xffff_ffff_81c0_0991),
            ]
        );
    }

    #[test]
    fn the_archive_is_newc_with_directories_first_and_a_trailer() {
        let bytes = cpio(&[("bin/a".to_owned(), b"xyz".to_vec(), 0o755)]);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("070701"));
        let dir = text.find("bin\0").unwrap();
        let file = text.find("bin/a\0").unwrap();
        assert!(dir < file && text.contains("xyz") && text.contains("TRAILER!!!"));
        assert_eq!(bytes.len() % 4, 0);
    }

    fn all_rows() -> Vec<&'static str> {
        PROGRAMS.iter().flat_map(|p| p.rows.iter().copied()).collect()
    }

    #[test]
    fn every_row_has_a_label_and_tags_are_unique_per_row() {
        for row in all_rows() {
            assert!(!row_label(row).is_empty(), "{row}");
        }
        let mut rows = all_rows();
        rows.sort();
        let before = rows.len();
        rows.dedup();
        assert_eq!(rows.len(), before);
    }

    fn measured(tag: u16, ops: u64, kernel: u64, user: u64) -> Outcome {
        timed(tag, ops, kernel, user, 100.0)
    }

    fn timed(tag: u16, ops: u64, kernel: u64, user: u64, ns_per_op: f64) -> Outcome {
        Outcome::Ran(Measured {
            tag,
            ops,
            ns_per_op,
            cycles_per_op: 1.0,
            laps: 8,
            ns_per_op_min: ns_per_op * 0.9,
            ns_per_op_max: ns_per_op * 1.2,
            ns_per_op_all: ns_per_op,
            counts: Some(TagTotals { windows: 1, kernel, user, ..TagTotals::default() }),
        })
    }

    fn options(rounds: u32) -> Options {
        Options {
            quick: true,
            qemu: "q".into(),
            bin: "b".into(),
            linux: "l".into(),
            kernel: "k".into(),
            cpu_model: "max".into(),
            smp: 2,
            mem: "1G".into(),
            out_dir: "o".into(),
            only: Vec::new(),
            no_linux: false,
            profile: false,
            rounds,
            ours_append: String::new(),
        }
    }

    fn comparison(ours_calibrate_user: u64) -> Comparison {
        let mut linux = GuestRun { version: "Linux 6.1".into(), calibrate_expect_user: Some(201), ..GuestRun::default() };
        let mut ours = GuestRun { version: "ours".into(), calibrate_expect_user: Some(201), ..GuestRun::default() };
        linux.rows.insert("calibrate".into(), measured(1, 1, 0, 201));
        ours.rows.insert("calibrate".into(), measured(1, 1, 0, ours_calibrate_user));
        linux.rows.insert("getppid".into(), measured(7, 10, 1000, 50));
        ours.rows.insert("getppid".into(), measured(7, 10, 250, 50));
        ours.rows.insert("pipe_1cpu".into(), Outcome::Missing("needs processes".into()));
        Comparison {
            qemu_version: "QEMU 7.2".into(),
            options: options(1),
            host: "a CPU, 2 CPUs".into(),
            rounds: vec![Round { linux: Ok(linux), ours: Ok(ours) }],
        }
    }

    /// Three rounds of getppid: Linux at 100 ns per call each time, ours at 100, 300 and 200 (the
    /// ratios 1, 3, 2); ours' kernel instructions per call 250, 260 and 1000, Linux's 1000. Ours
    /// misses the row in a fourth round when `fourth` is set.
    fn rounds(fourth: bool) -> Comparison {
        let mut rounds = Vec::new();
        for (ns, kernel) in [(100.0, 2500), (300.0, 2600), (200.0, 10_000)] {
            let mut linux = GuestRun { version: "Linux 6.1".into(), ..GuestRun::default() };
            let mut ours = GuestRun { version: "ours".into(), ..GuestRun::default() };
            linux.rows.insert("getppid".into(), timed(7, 10, 10_000, 500, 100.0));
            ours.rows.insert("getppid".into(), timed(7, 10, kernel, 500, ns));
            rounds.push(Round { linux: Ok(linux), ours: Ok(ours) });
        }
        if fourth {
            let mut linux = GuestRun { version: "Linux 6.1".into(), ..GuestRun::default() };
            linux.rows.insert("getppid".into(), timed(7, 10, 10_000, 500, 100.0));
            rounds.push(Round { linux: Ok(linux), ours: Err("QEMU did not start".into()) });
        }
        let mut options = options(rounds.len() as u32);
        options.only = vec!["getppid".into()];
        Comparison { qemu_version: "QEMU 7.2".into(), options, host: "a CPU, 2 CPUs".into(), rounds }
    }

    #[test]
    fn the_time_ratio_is_the_median_of_the_rounds_with_their_range() {
        let c = rounds(false);
        assert_eq!(c.time_ratios("getppid"), [1.0, 3.0, 2.0]);
        let table = c.table();
        assert!(table.contains("2.00 (1.00..3.00)"), "{table}");
        assert!(table.contains("rounds: 3"));
        let json = c.json();
        assert_eq!(json["rounds"], 3);
        let row = &json["rows"][0];
        assert_eq!((row["time_ours_over_linux"].as_f64(), row["time_ours_over_linux_min"].as_f64()), (Some(2.0), Some(1.0)));
        assert_eq!(row["time_ours_over_linux_max"], 3.0);
        assert_eq!(row["time_ours_over_linux_rounds"], json!([1.0, 3.0, 2.0]));
        assert_eq!(row["ours"]["ns_per_op"], 200.0);
        assert_eq!(row["ours"]["rounds"].as_array().unwrap().len(), 3);
        assert_eq!(row["ours"]["rounds"][1]["ns_per_op_max"], 360.0);
    }

    #[test]
    fn counts_are_the_median_of_the_rounds() {
        let c = rounds(false);
        // 250, 260 and 1000 per call: the outlier round does not move the median.
        assert_eq!(get(&c.counts(false, "getppid"), "kernel_insns"), Some(260.0));
        let row = &c.json()["rows"][0];
        assert_eq!(row["ours"]["counts"]["kernel_insns_per_op"], 260.0);
        assert_eq!(row["kernel_insns_ours_over_linux"], 0.26);
    }

    #[test]
    fn a_round_that_missed_a_row_is_said_and_left_out_of_the_median() {
        let c = rounds(true);
        assert_eq!(c.time_ratios_by_round("getppid"), [Some(1.0), Some(3.0), Some(2.0), None]);
        // Four rounds, three ratios: the median is still the middle one.
        assert!(c.table().contains("2.00 (1.00..3.00)"));
        assert!(c.table().contains("ours, round 4: QEMU did not start"));
        assert_eq!(c.version(false), "ours");
    }

    #[test]
    fn rounds_default_to_three_and_to_one_for_the_smoke_run_and_ours_alone() {
        let parse = |args: &[&str]| parse_args(args.iter().map(|a| a.to_string()), Path::new("t"));
        assert_eq!(parse(&[]).unwrap().rounds, 3);
        assert_eq!(parse(&["--quick"]).unwrap().rounds, 1);
        assert_eq!(parse(&["--no-linux"]).unwrap().rounds, 1);
        assert_eq!(parse(&["--quick", "--rounds", "5"]).unwrap().rounds, 5);
        assert!(parse(&["--rounds", "0"]).is_err());
        assert!(parse(&["--rounds"]).is_err());
    }

    #[test]
    fn ours_append_reaches_the_options() {
        let parse = |args: &[&str]| parse_args(args.iter().map(|a| a.to_string()), Path::new("t"));
        assert_eq!(parse(&[]).unwrap().ours_append, "");
        assert_eq!(parse(&["--ours-append", "idle-poll-us=0"]).unwrap().ours_append, "idle-poll-us=0");
        assert!(parse(&["--ours-append"]).is_err());
    }

    #[test]
    fn only_selects_known_programs_and_their_rows() {
        let args = ["--only", "futex,pipe", "--no-linux", "--profile"].map(String::from);
        let options = parse_args(args, Path::new("t")).unwrap();
        assert_eq!(options.only, ["futex", "pipe"]);
        assert!(options.no_linux && options.profile);
        let c = Comparison {
            qemu_version: "q".into(),
            options,
            host: "h".into(),
            rounds: vec![Round { linux: Err("x".into()), ours: Err("x".into()) }],
        };
        assert_eq!(c.rows(), ["futex_1cpu", "futex_2cpu", "pipe_1cpu", "pipe_2cpu"]);
        assert!(parse_args(["--only", "nope"].map(String::from), Path::new("t")).is_err());
    }

    #[test]
    fn the_calibration_must_count_the_same_user_instructions() {
        assert!(comparison(201).problems().iter().all(|p| !p.contains("calibration")));
        assert!(comparison(202).problems().iter().any(|p| p.contains("calibration")));
    }

    #[test]
    fn rows_our_kernel_cannot_run_yet_are_said_but_are_no_problem() {
        let c = comparison(201);
        assert!(c.problems().iter().all(|p| !p.contains("pipe_1cpu") || p.starts_with("Linux")));
        assert!(c.table().contains("needs processes"));
    }

    #[test]
    fn the_json_carries_versions_and_the_ratio_of_kernel_instructions() {
        let c = comparison(201);
        let json = c.json();
        assert_eq!(json["linux_version"], "Linux 6.1");
        let row = json["rows"].as_array().unwrap().iter().find(|r| r["row"] == "getppid").unwrap();
        assert_eq!(row["kernel_insns_ours_over_linux"], 0.25);
        assert_eq!(row["time_ours_over_linux"], 1.0);
        assert!(c.svg().contains("0.250"));
    }
}
