//! Part 2: the kernel's own paths measured inside QEMU on the real kernel, and their rows for
//! the report.
//!
//! [`prepare`] finds QEMU, picks the accelerator the way the Makefile's `ACCEL=auto` does (KVM
//! only where `/dev/kvm` opens and `/proc/cpuinfo` shows `vmx` or `svm`; a `/dev/kvm` without
//! them is a nested hypervisor that emulates guest ring 0, slower than TCG) and builds the release
//! kernel (`cargo build -p kernel --target x86_64-unknown-none --release --features kbench`, without `RUSTFLAGS`,
//! which would replace the kernel's own flags). [`run`] boots it by direct boot with `bench` (or
//! `bench=quick`) on its command line, reads the `kbench` lines it prints on the serial port
//! (protocol in the kernel's `kbench` module) and checks its exit code; [`parse`] turns them
//! into a [`KernelRun`]. [`rows`] makes report rows of it: where the kernel found its cycle
//! figures meaningless (its add-chain probe says the accelerator emulates), the cycle columns say
//! so and only the counts, which no accelerator changes, stand.
//!
//! Key types: [`AccelChoice`] (`--accel`), [`Plan`] (what to boot, and how), [`KernelRun`] and
//! [`KernelRow`] (what the kernel reported), [`LinuxPeers`] (part 1's Linux figures the in-kernel
//! rows stand beside). Neighbours: `main` drives it, `report` prints its rows and the [`Guest`]
//! facts.

use std::{
    env, fs,
    io::{self, BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    report::{Figure, Guest, Peer, Row},
    stats::Summary,
};

/// The QEMU binary, looked up in `PATH`.
pub const QEMU: &str = "qemu-system-x86_64";
/// The guest's CPUs and memory: one CPU for the main thread, one for the rows that need their
/// own; the same memory as the Makefile gives larger machines.
const GUEST_CPUS: u32 = 2;
const GUEST_MEMORY: &str = "1G";
/// How long a boot may take before QEMU is killed: the kernel bounds each of its seven rows
/// (12 s each in a full run, 2 s in a quick one), so this only catches a hung guest.
const TIMEOUT_FULL: Duration = Duration::from_secs(300);
const TIMEOUT_QUICK: Duration = Duration::from_secs(90);
/// isa-debug-exit turns the kernel's success code 0x10 into QEMU's exit status 0x10 * 2 + 1.
const EXIT_SUCCESS: i32 = 33;
/// Output lines kept for an error report.
const TAIL_LINES: usize = 25;

/// `--accel`: which accelerator to boot with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccelChoice {
    /// KVM where it is hardware-assisted, else TCG (as the Makefile's `ACCEL=auto`).
    Auto,
    Tcg,
    Kvm,
}

impl AccelChoice {
    pub fn parse(text: &str) -> Result<AccelChoice, String> {
        match text {
            "auto" => Ok(AccelChoice::Auto),
            "tcg" => Ok(AccelChoice::Tcg),
            "kvm" => Ok(AccelChoice::Kvm),
            other => Err(format!("--accel takes auto, tcg or kvm, not {other}")),
        }
    }
}

/// The accelerator picked, what to call it in the report, and why it was picked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accel {
    /// QEMU's `-accel` value.
    pub qemu_name: &'static str,
    /// "TCG", "nested KVM" or "hardware KVM": the report's `where` column.
    pub label: &'static str,
    pub why: String,
}

/// Pick the accelerator for `choice` from whether `/dev/kvm` opens and the text of
/// `/proc/cpuinfo`.
pub fn decide_accel(choice: AccelChoice, kvm_opens: bool, cpuinfo: &str) -> Accel {
    let cpu_virt = cpuinfo
        .lines()
        .filter(|line| line.starts_with("flags"))
        .any(|line| line.split_whitespace().any(|flag| flag == "vmx" || flag == "svm"));
    let kvm_label = if cpu_virt { "hardware KVM" } else { "nested KVM" };
    match choice {
        AccelChoice::Tcg => Accel { qemu_name: "tcg", label: "TCG", why: "--accel tcg".to_owned() },
        AccelChoice::Kvm => Accel {
            qemu_name: "kvm",
            label: kvm_label,
            why: format!("--accel kvm; /proc/cpuinfo {} vmx/svm", if cpu_virt { "shows" } else { "shows no" }),
        },
        AccelChoice::Auto if kvm_opens && cpu_virt => Accel {
            qemu_name: "kvm",
            label: kvm_label,
            why: "auto: /dev/kvm opens and the CPU has vmx/svm".to_owned(),
        },
        AccelChoice::Auto => Accel {
            qemu_name: "tcg",
            label: "TCG",
            why: if kvm_opens {
                "auto: /dev/kvm opens but /proc/cpuinfo shows no vmx/svm (a nested KVM emulates ring 0, slower than TCG)"
            } else {
                "auto: /dev/kvm does not open"
            }
            .to_owned(),
        },
    }
}

/// Everything needed to boot the benchmark kernel.
#[derive(Clone, Debug)]
pub struct Plan {
    pub qemu: PathBuf,
    /// QEMU's `-icount` option, if any (`shift=auto,sleep=off`): guest time follows the
    /// instruction count (QEMU 10; 7.2 hangs starting CPU 1). It puts all vCPUs on one thread,
    /// where QEMU 10 misreports vCPUs to plugins, so the instruction counter stays off with it.
    pub icount: Option<String>,
    /// QEMU's own `--version` line.
    pub qemu_version: String,
    pub accel: Accel,
    pub kernel: PathBuf,
}

/// QEMU's arguments for booting `plan` with `bench` (or `bench=quick`) on the kernel's command
/// line, with the Makefile's machine, serial and exit device settings.
pub fn qemu_args(plan: &Plan, quick: bool) -> Vec<String> {
    let mut args = machine_args(plan, quick);
    if let Some(icount) = &plan.icount {
        args.extend(["-icount".to_owned(), icount.clone()]);
    }
    args
}

fn machine_args(plan: &Plan, quick: bool) -> Vec<String> {
    let cpu_model = if plan.accel.qemu_name == "kvm" { "host" } else { "qemu64" };
    let cmdline = if quick { "bench=quick" } else { "bench" };
    let mut args: Vec<String> = ["-machine", "q35", "-accel", plan.accel.qemu_name, "-cpu", cpu_model, "-smp"]
        .map(String::from)
        .into();
    args.push(GUEST_CPUS.to_string());
    args.extend(
        [
            "-m",
            GUEST_MEMORY,
            "-serial",
            "stdio",
            "-display",
            "none",
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-kernel",
        ]
        .map(String::from),
    );
    args.push(plan.kernel.display().to_string());
    args.extend(["-append".to_owned(), cmdline.to_owned()]);
    args
}

/// `name` in a directory of `PATH`, if there is one.
fn find_in_path(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?).map(|dir| dir.join(name)).find(|path| path.is_file())
}

/// Find QEMU (`qemu`, or the one in `PATH`), pick the accelerator and build the release kernel.
/// Fails, saying how to skip part 2, when QEMU is missing.
pub fn prepare(choice: AccelChoice, workspace: &Path, qemu: Option<PathBuf>, icount: Option<String>) -> io::Result<Plan> {
    let qemu = qemu.or_else(|| find_in_path(QEMU)).ok_or_else(|| {
        io::Error::other(format!("no {QEMU} in PATH: install QEMU (make deps) or pass --no-qemu to skip part 2"))
    })?;
    let version = Command::new(&qemu).arg("--version").output()?;
    let qemu_version = String::from_utf8_lossy(&version.stdout).lines().next().unwrap_or("").trim().to_owned();
    let kvm_opens = fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    let accel = decide_accel(choice, kvm_opens, &fs::read_to_string("/proc/cpuinfo").unwrap_or_default());
    let kernel = build_kernel(workspace)?;
    Ok(Plan { qemu, icount, qemu_version, accel, kernel })
}

/// `cargo build` the release kernel and return its ELF, as cargo names it.
fn build_kernel(workspace: &Path) -> io::Result<PathBuf> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench: building the kernel (cargo build -p kernel --target x86_64-unknown-none --release --features kbench)");
    let output = Command::new(cargo)
        .current_dir(workspace)
        .env_remove("RUSTFLAGS")
        .args(["build", "-p", "kernel", "--target", "x86_64-unknown-none", "--release", "--features", "kbench"])
        .arg("--message-format=json-render-diagnostics")
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!("building the kernel failed ({})", output.status)));
    }
    kernel_executable(&String::from_utf8_lossy(&output.stdout))
        .ok_or_else(|| io::Error::other("cargo built the kernel but named no executable for it"))
}

/// The kernel binary's path from cargo's JSON messages.
fn kernel_executable(messages: &str) -> Option<PathBuf> {
    messages
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact" && message["target"]["name"] == "kernel")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
}

/// One measured row as the kernel printed it: TSC ticks per `unit`.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelRow {
    pub name: String,
    pub unit: String,
    pub nr_samples: usize,
    pub median_ticks: f64,
    pub p99_ticks: f64,
    /// Ratios by name, `None` where the kernel printed `-` (nothing to divide by).
    pub counts: Vec<(String, Option<f64>)>,
    /// The row's counting windows, for the instruction counter.
    pub markers: Vec<Marker>,
}

/// One tag of counting windows a row announced (`kbench marker`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub tag: u16,
    /// `cpu`, or the side of a two-CPU operation (`sender`, `receiver`, `initiator`, `target`).
    pub side: String,
    /// What one operation is (`switch`, `interrupt`, ...).
    pub per: String,
    /// Operations inside the windows; `None`: one per window.
    pub ops: Option<u64>,
}

fn parse_marker(words: &str) -> Result<Marker, String> {
    let ops = match field(words, "ops")? {
        "windows" => None,
        _ => Some(number(words, "ops")?),
    };
    Ok(Marker { tag: number(words, "tag")?, side: field(words, "side")?.to_owned(), per: field(words, "per")?.to_owned(), ops })
}

/// Everything one `bench` boot reported.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelRun {
    pub quick: bool,
    pub nr_cpus: u32,
    pub tsc_hz: u64,
    pub slice_ns: u64,
    pub pcid: bool,
    /// TSC ticks per dependent add in guest ring 0, and whether the kernel judged its cycle
    /// figures meaningful from it.
    pub ticks_per_add: f64,
    pub cycles_meaningful: bool,
    pub rows: Vec<KernelRow>,
    /// Rows the kernel skipped, with its reason.
    pub skipped: Vec<(String, String)>,
}

/// The `key=value` words of a protocol line.
fn fields(words: &str) -> impl Iterator<Item = (&str, &str)> {
    words.split_whitespace().filter_map(|word| word.split_once('='))
}

fn field<'a>(words: &'a str, key: &str) -> Result<&'a str, String> {
    fields(words).find(|(k, _)| *k == key).map(|(_, v)| v).ok_or_else(|| format!("no {key}= in `{words}`"))
}

fn number<T: std::str::FromStr>(words: &str, key: &str) -> Result<T, String> {
    let text = field(words, key)?;
    text.parse().map_err(|_| format!("{key}={text} is not a number"))
}

fn yes_no(words: &str, key: &str) -> Result<bool, String> {
    match field(words, key)? {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => Err(format!("{key}={other}: expected yes or no")),
    }
}

/// `name=NAME reason=TEXT...`: the name and the rest of the line after `reason=`.
fn name_and_reason(words: &str) -> Result<(String, String), String> {
    let name = field(words, "name")?.to_owned();
    let reason = words.split_once("reason=").map_or("", |(_, reason)| reason).trim().to_owned();
    Ok((name, reason))
}

fn parse_row(words: &str) -> Result<KernelRow, String> {
    let counts = field(words, "counts")?
        .split(',')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once(':').ok_or_else(|| format!("count `{pair}` has no value"))?;
            let value = if value == "-" {
                None
            } else {
                Some(value.parse().map_err(|_| format!("count {name}:{value} is not a number"))?)
            };
            Ok((name.to_owned(), value))
        })
        .collect::<Result<_, String>>()?;
    Ok(KernelRow {
        name: field(words, "name")?.to_owned(),
        unit: field(words, "unit")?.to_owned(),
        nr_samples: number(words, "n")?,
        median_ticks: number(words, "median")?,
        p99_ticks: number(words, "p99")?,
        counts,
        markers: Vec::new(),
    })
}

/// Read the `kbench` lines out of the kernel's serial output (log lines around them are
/// ignored). Fails on a malformed line, a row the kernel reported as failed, or a run without its
/// `begin`, `accel` or `end` line.
pub fn parse(output: &str) -> Result<KernelRun, String> {
    let (mut begin, mut accel, mut end) = (None, None, false);
    let (mut rows, mut skipped, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for line in output.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("kbench ") else { continue };
        let (kind, words) = rest.split_once(' ').unwrap_or((rest, ""));
        match kind {
            "begin" => begin = Some(words.to_owned()),
            "accel" => accel = Some((number::<f64>(words, "ticks_per_add")?, yes_no(words, "meaningful")?)),
            "row" => rows.push(parse_row(words)?),
            "marker" => {
                let name = field(words, "name")?;
                let row = rows
                    .iter_mut()
                    .rev()
                    .find(|row: &&mut KernelRow| row.name == name)
                    .ok_or_else(|| format!("a marker line for {name}, which has no row before it"))?;
                row.markers.push(parse_marker(words)?);
            }
            "skip" => skipped.push(name_and_reason(words)?),
            "error" => errors.push(name_and_reason(words)?),
            "end" => end = true,
            other => return Err(format!("unknown kbench line kind `{other}`")),
        }
    }
    if let Some((name, reason)) = errors.first() {
        return Err(format!("the kernel's {name} row failed: {reason}"));
    }
    let begin = begin.ok_or("no `kbench begin` line: the kernel did not start the benchmarks")?;
    let (ticks_per_add, cycles_meaningful) = accel.ok_or("no `kbench accel` line")?;
    if !end {
        return Err("no `kbench end` line: the benchmarks did not finish".to_owned());
    }
    Ok(KernelRun {
        quick: yes_no(&begin, "quick")?,
        nr_cpus: number(&begin, "cpus")?,
        tsc_hz: number(&begin, "tsc_hz")?,
        slice_ns: number(&begin, "slice_ns")?,
        pcid: yes_no(&begin, "pcid")?,
        ticks_per_add,
        cycles_meaningful,
        rows,
        skipped,
    })
}

/// The last `TAIL_LINES` lines of `text`, for an error message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// Boot the kernel of `plan` with the benchmarks, report each row's line through `progress` as
/// it arrives, and return what the kernel reported and how long QEMU ran. Kills QEMU after the
/// timeout.
pub fn run(plan: &Plan, quick: bool, extra_args: &[String], progress: impl Fn(&str)) -> io::Result<(KernelRun, Duration)> {
    let mut args = qemu_args(plan, quick);
    args.extend_from_slice(extra_args);
    let started = Instant::now();
    eprintln!("bench: {} {}", plan.qemu.display(), args.join(" "));
    let mut child =
        Command::new(&plan.qemu).args(&args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let (lines_tx, lines) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr_reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + if quick { TIMEOUT_QUICK } else { TIMEOUT_FULL };
    let mut output = String::new();
    let mut timed_out = false;
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let line = line.trim_end().to_owned();
                if let Some(rest) = line.strip_prefix("kbench ") {
                    progress(rest);
                }
                output.push_str(&line);
                output.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                let _ = child.kill();
                break;
            }
        }
    }
    let status = child.wait()?;
    let wall = started.elapsed();
    let _ = reader.join();
    let qemu_errors = stderr_reader.join().unwrap_or_default();
    if timed_out {
        return Err(io::Error::other(format!(
            "the kernel did not finish within {:?}; its last lines:\n{}",
            if quick { TIMEOUT_QUICK } else { TIMEOUT_FULL },
            tail(&output)
        )));
    }
    if status.code() != Some(EXIT_SUCCESS) {
        return Err(io::Error::other(format!(
            "QEMU ended with {status} (the kernel's success is exit status {EXIT_SUCCESS}); {}its last lines:\n{}",
            if qemu_errors.trim().is_empty() { String::new() } else { format!("QEMU said: {}; ", qemu_errors.trim()) },
            tail(&output)
        )));
    }
    let run =
        parse(&output).map_err(|why| io::Error::other(format!("{why}; the kernel's last lines:\n{}", tail(&output))))?;
    Ok((run, wall))
}

/// Part 1's Linux figures that in-kernel rows are set beside.
pub struct LinuxPeers {
    /// Two threads of one process passing a turn with `sched_yield`, per switch.
    pub sched_yield: Figure,
    /// Two processes passing a byte through pipes, per half round trip.
    pub pipe: Figure,
    /// A futex hand-off to a thread on another CPU and back, per half round trip.
    pub futex_cross_cpu: Figure,
}

/// What the report says about each kernel row: its label, its Linux peer if it has one, and a
/// note.
fn describe(name: &str, peers: &LinuxPeers) -> (String, Option<Peer>, &'static str) {
    let peer = |name: &str, figure: &Figure| Some(Peer { name: format!("{name} (native)"), figure: figure.clone() });
    match name {
        "yield_same_as" => (
            "in-kernel yield, 2 kernel threads, 1 CPU (per switch; batches of 10 round trips)".to_owned(),
            peer("Linux sched_yield", &peers.sched_yield),
            "the kernel's scheduler on its own CPU in QEMU: two pinned kernel-only threads passing the turn \
             with yield_now; no CR3 write; the peer is part 1's Linux figure on the host",
        ),
        "yield_cross_as" => (
            "in-kernel yield, 2 threads in 2 address spaces, 1 CPU (per switch; batches of 10 round trips)".to_owned(),
            peer("Linux pipe, 2 processes", &peers.pipe),
            "as the row above with each thread in its own address space, so every switch writes CR3 \
             (with PCIDs a hit keeps the TLB); the peer's process switch also carries two system calls",
        ),
        "preempt_timer" => (
            "in-kernel timer preemption, interrupt to resumed thread (per preemption)".to_owned(),
            None,
            "two busy threads on one CPU each stamp the TSC without pause; a sample is the gap from one \
             thread's last stamp to the other's first after the slice timer switched them",
        ),
        "wake_cross_cpu_idle" => (
            "in-kernel cross-CPU wake-up and answer, target idle (per half round trip)".to_owned(),
            peer("Linux futex, 2 CPUs", &peers.futex_cross_cpu),
            "a semaphore ping-pong between a thread on CPU 0 and one on CPU 1; both CPUs halt while they \
             wait (the idle poll off for this row), so a wake-up costs a reschedule IPI and a wake from halt",
        ),
        "wake_cross_cpu_polling" => (
            "in-kernel cross-CPU wake-up and answer, target polling (per half round trip)".to_owned(),
            peer("Linux futex, 2 CPUs", &peers.futex_cross_cpu),
            "the same ping-pong with the idle poll on (its default bound): a waiting CPU polls its queue \
             before it would halt, so a wake-up needs no IPI; the counts include the poll's own instructions",
        ),
        "wake_cross_cpu_busy" => (
            "in-kernel cross-CPU wake-up onto a busy CPU (per half round trip; waits out a time slice)".to_owned(),
            None,
            "the same ping-pong while a busy thread holds CPU 1: round robin wake-ups never preempt, so \
             each answer waits for the busy thread's slice; the counts are the point (no IPI to a busy CPU)",
        ),
        "shootdown_remote" => (
            "in-kernel unmap with TLB shootdown to 1 CPU (per unmap, ack included)".to_owned(),
            None,
            "a kernel thread on CPU 0 unmaps one page of an address space whose only thread spins on CPU 1: \
             one shootdown IPI, CPU 1 invalidates the page and acknowledges, then the frame is freed",
        ),
        "shootdown_local" => (
            "in-kernel unmap, address space on this CPU only (per unmap)".to_owned(),
            None,
            "the unmapping thread runs in the address space and no other CPU has it loaded: a local INVLPG, \
             no IPI",
        ),
        other => (format!("in-kernel {other}"), None, "a row this version of bench has no description of"),
    }
}

/// The report rows of `run`, booted from `plan` and lasting `wall`, and the facts of the guest for
/// the header.
pub fn rows(plan: &Plan, run: &KernelRun, wall: Duration, peers: &LinuxPeers) -> (Vec<Row>, Guest) {
    let accel = &plan.accel;
    let rows = run
        .rows
        .iter()
        .map(|row| {
            let summary = Summary { median_cycles: row.median_ticks, p99_cycles: row.p99_ticks, nr_samples: row.nr_samples };
            let ours = if run.cycles_meaningful {
                Figure::Cycles(summary)
            } else {
                Figure::NotMeaningful { reason: format!("not meaningful ({})", accel.label), raw: summary }
            };
            let (metric, peer, note) = describe(&row.name, peers);
            let note = format!("{note}; {} samples", row.nr_samples);
            Row { metric, where_ran: accel.label, ours, peer, note: Some(note), counts: row.counts.clone() }
        })
        .collect();
    let guest = Guest {
        accelerator: accel.label,
        why: accel.why.clone(),
        qemu_version: plan.qemu_version.clone(),
        nr_cpus: run.nr_cpus,
        tsc_hz: run.tsc_hz,
        slice_ns: run.slice_ns,
        pcid: run.pcid,
        ticks_per_add: run.ticks_per_add,
        cycles_meaningful: run.cycles_meaningful,
        skipped: run.skipped.clone(),
        wall_s: wall.as_secs_f64(),
    };
    (rows, guest)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const CPUINFO_VMX: &str = "processor\t: 0\nflags\t\t: fpu vme vmx sse2\n";
    const CPUINFO_PLAIN: &str = "processor\t: 0\nflags\t\t: fpu vme hypervisor sse2\nmodel name\t: vmx-like name\n";

    /// What a quick TCG run at -smp 2 prints, log lines included.
    pub(crate) const OUTPUT: &str = "\
[cpu0] boot: pvh (QEMU direct boot (PVH))\r
kbench begin quick=yes cpus=2 bench_cpu=1 tsc_hz=2445413664 slice_ns=10000000 pcid=no\r
kbench accel ticks_per_add=4.36 meaningful=no\r
kbench row name=yield_same_as unit=switch n=100 median=956.7 p99=6965.4 counts=switches_per_yield:1.00,cr3_writes_per_switch:0.00\r
kbench marker name=yield_same_as tag=1 side=cpu per=switch ops=2000\r
[cpu1] a log line from another CPU\r
kbench row name=preempt_timer unit=preemption n=1 median=449183.0 p99=449183.0 counts=timer_interrupts_per_preemption:-\r
kbench marker name=preempt_timer tag=3 side=cpu per=interrupt ops=windows\r
kbench skip name=shootdown_remote reason=needs 2 CPUs, 1 online\r
kbench end rows=2 skipped=1 failed=0\r
";

    fn plan(accel: Accel) -> Plan {
        Plan {
            qemu: PathBuf::from("/usr/bin/qemu-system-x86_64"),
            icount: None,
            qemu_version: "QEMU emulator version 7.2.0".to_owned(),
            accel,
            kernel: PathBuf::from("/ws/target/x86_64-unknown-none/release/kernel"),
        }
    }

    fn peers() -> LinuxPeers {
        let figure = |median_cycles| Figure::Cycles(Summary { median_cycles, p99_cycles: median_cycles, nr_samples: 10 });
        LinuxPeers { sched_yield: figure(1000.0), pipe: figure(3000.0), futex_cross_cpu: figure(5000.0) }
    }

    #[test]
    fn auto_takes_kvm_only_with_vmx_or_svm_and_an_open_dev_kvm() {
        assert_eq!(decide_accel(AccelChoice::Auto, true, CPUINFO_VMX).label, "hardware KVM");
        assert_eq!(decide_accel(AccelChoice::Auto, true, CPUINFO_VMX).qemu_name, "kvm");
        let nested = decide_accel(AccelChoice::Auto, true, CPUINFO_PLAIN);
        assert_eq!((nested.qemu_name, nested.label), ("tcg", "TCG"));
        assert!(nested.why.contains("no vmx/svm"), "{}", nested.why);
        let closed = decide_accel(AccelChoice::Auto, false, CPUINFO_VMX);
        assert_eq!(closed.qemu_name, "tcg");
        assert!(closed.why.contains("does not open"));
    }

    #[test]
    fn forced_kvm_without_vmx_is_called_nested() {
        let kvm = decide_accel(AccelChoice::Kvm, true, CPUINFO_PLAIN);
        assert_eq!((kvm.qemu_name, kvm.label), ("kvm", "nested KVM"));
        assert_eq!(decide_accel(AccelChoice::Tcg, true, CPUINFO_VMX).label, "TCG");
    }

    #[test]
    fn accel_choices_parse_and_others_are_refused() {
        assert_eq!(AccelChoice::parse("auto"), Ok(AccelChoice::Auto));
        assert_eq!(AccelChoice::parse("kvm"), Ok(AccelChoice::Kvm));
        assert!(AccelChoice::parse("hvf").unwrap_err().contains("hvf"));
    }

    #[test]
    fn qemu_boots_the_kernel_directly_with_the_bench_flag_and_the_exit_device() {
        let tcg = qemu_args(&plan(decide_accel(AccelChoice::Tcg, false, "")), true);
        let after = |args: &[String], flag: &str| args.iter().position(|a| a == flag).map(|i| args[i + 1].clone());
        assert_eq!(after(&tcg, "-accel").as_deref(), Some("tcg"));
        assert_eq!(after(&tcg, "-cpu").as_deref(), Some("qemu64"));
        assert_eq!(after(&tcg, "-smp").as_deref(), Some("2"));
        assert_eq!(after(&tcg, "-m").as_deref(), Some("1G"));
        assert_eq!(after(&tcg, "-serial").as_deref(), Some("stdio"));
        assert_eq!(after(&tcg, "-display").as_deref(), Some("none"));
        assert_eq!(after(&tcg, "-device").as_deref(), Some("isa-debug-exit,iobase=0xf4,iosize=0x04"));
        assert_eq!(after(&tcg, "-kernel").as_deref(), Some("/ws/target/x86_64-unknown-none/release/kernel"));
        assert_eq!(after(&tcg, "-append").as_deref(), Some("bench=quick"));
        assert!(tcg.iter().any(|a| a == "-no-reboot"));
        let kvm = qemu_args(&plan(decide_accel(AccelChoice::Kvm, true, CPUINFO_VMX)), false);
        assert_eq!(after(&kvm, "-cpu").as_deref(), Some("host"));
        assert_eq!(after(&kvm, "-append").as_deref(), Some("bench"));
        assert!(!tcg.iter().any(|a| a == "-icount"));
        let counted = Plan { icount: Some("shift=auto,sleep=off".to_owned()), ..plan(decide_accel(AccelChoice::Tcg, false, "")) };
        assert_eq!(after(&qemu_args(&counted, true), "-icount").as_deref(), Some("shift=auto,sleep=off"));
    }

    #[test]
    fn the_kernel_path_comes_from_cargos_artifact_message() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"arch"},"executable":null}
{"reason":"compiler-artifact","target":{"name":"kernel"},"executable":"/ws/target/x86_64-unknown-none/release/kernel"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(kernel_executable(messages), Some(PathBuf::from("/ws/target/x86_64-unknown-none/release/kernel")));
        assert_eq!(kernel_executable(r#"{"reason":"build-finished","success":true}"#), None);
    }

    #[test]
    fn every_kbench_line_is_read_and_log_lines_are_ignored() {
        let run = parse(OUTPUT).unwrap();
        assert!(run.quick && !run.pcid && !run.cycles_meaningful);
        assert_eq!((run.nr_cpus, run.tsc_hz, run.slice_ns), (2, 2_445_413_664, 10_000_000));
        assert_eq!(run.ticks_per_add, 4.36);
        assert_eq!(run.rows.len(), 2);
        let first = &run.rows[0];
        assert_eq!((first.name.as_str(), first.unit.as_str(), first.nr_samples), ("yield_same_as", "switch", 100));
        assert_eq!((first.median_ticks, first.p99_ticks), (956.7, 6965.4));
        assert_eq!(
            first.counts,
            vec![("switches_per_yield".to_owned(), Some(1.0)), ("cr3_writes_per_switch".to_owned(), Some(0.0))]
        );
        assert_eq!(run.rows[1].counts, vec![("timer_interrupts_per_preemption".to_owned(), None)]);
        let marker = |tag, per: &str, ops| Marker { tag, side: "cpu".to_owned(), per: per.to_owned(), ops };
        assert_eq!(first.markers, vec![marker(1, "switch", Some(2000))]);
        assert_eq!(run.rows[1].markers, vec![marker(3, "interrupt", None)]);
        assert!(parse(&OUTPUT.replace("kbench marker name=yield_same_as", "kbench marker name=nothing")).is_err());
        assert_eq!(run.skipped, vec![("shootdown_remote".to_owned(), "needs 2 CPUs, 1 online".to_owned())]);
    }

    #[test]
    fn a_failed_row_or_an_unfinished_run_is_an_error() {
        let failed = OUTPUT.replace(
            "kbench end",
            "kbench error name=shootdown_local reason=unmap: 0x10000000 is not mapped\nkbench end",
        );
        let why = parse(&failed).unwrap_err();
        assert!(why.contains("shootdown_local") && why.contains("not mapped"), "{why}");
        let unfinished: String = OUTPUT.lines().filter(|line| !line.starts_with("kbench end")).map(|l| format!("{l}\n")).collect();
        assert!(parse(&unfinished).unwrap_err().contains("did not finish"));
        assert!(parse("[cpu0] panic").unwrap_err().contains("did not start"));
        assert!(parse(&OUTPUT.replace("median=956.7", "median=fast")).unwrap_err().contains("median=fast"));
    }

    #[test]
    fn rows_from_an_emulator_keep_counts_and_mark_the_cycles_not_meaningful() {
        let run = parse(OUTPUT).unwrap();
        let plan = plan(decide_accel(AccelChoice::Auto, true, CPUINFO_PLAIN));
        let (rows, guest) = rows(&plan, &run, Duration::from_secs(5), &peers());
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|row| row.where_ran == "TCG"));
        match &rows[0].ours {
            Figure::NotMeaningful { reason, raw } => {
                assert_eq!(reason, "not meaningful (TCG)");
                assert_eq!((raw.median_cycles, raw.nr_samples), (956.7, 100));
            }
            other => panic!("expected a not-meaningful figure, got {other:?}"),
        }
        assert_eq!(rows[0].counts.len(), 2);
        assert!(rows[0].note.as_ref().is_some_and(|note| note.ends_with("; 100 samples")));
        assert!(rows[0].peer.as_ref().is_some_and(|peer| peer.name.contains("sched_yield")));
        assert!(rows[1].peer.is_none());
        assert_eq!(guest.accelerator, "TCG");
        assert!(!guest.cycles_meaningful);
        assert_eq!(guest.skipped.len(), 1);
        assert_eq!(guest.wall_s, 5.0);
    }

    #[test]
    fn rows_from_hardware_kvm_carry_their_cycles() {
        let run = parse(&OUTPUT.replace("meaningful=no", "meaningful=yes")).unwrap();
        let plan = plan(decide_accel(AccelChoice::Auto, true, CPUINFO_VMX));
        let (rows, guest) = rows(&plan, &run, Duration::from_secs(5), &peers());
        assert!(rows.iter().all(|row| row.where_ran == "hardware KVM"));
        assert!(matches!(&rows[0].ours, Figure::Cycles(s) if s.median_cycles == 956.7 && s.p99_cycles == 6965.4));
        assert!(guest.cycles_meaningful);
    }
}
