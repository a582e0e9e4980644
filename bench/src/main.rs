//! `bench`: the kernel's context switch and run queue measured natively, beside Linux doing the
//! same hand-offs on the same machine, and the kernel's whole paths measured in QEMU, in one run.
//!
//! Part 1, native: the very switch routine, FPU save/restore and scheduler the kernel uses are
//! built for the host and driven from this user-space process, pinned to one CPU (`ours`, with
//! live vector state from `vector`); the Linux side is a set of small ping-pong programs of our
//! own (`linux`), and a coroutine crate gives the user-space floor (`coro`). Every figure is TSC
//! cycles per operation, median and p99, read with the fenced `arch::tsc::{start, end}`
//! (`measure`, `stats`); `host` pins threads and describes the machine.
//!
//! Part 2, in QEMU (`qemu`): the release kernel boots with `bench` on its command line and times
//! its own switch, preemption, wake-up and shootdown paths; its rows join the same report,
//! labelled with the accelerator they ran under, with the events the kernel counted per
//! operation. Where the accelerator emulates the CPU the kernel says its cycles mean nothing and
//! only the counts are reported.
//!
//! Under TCG a plugin counts the guest instructions of each in-kernel row between the kernel's
//! marker NOPs (`icount`); each row gains kernel instructions and expensive instructions per
//! operation. Where the plugin cannot run, the report says why and the rows keep their other
//! counts.
//!
//! Output: a table on stdout, then `results.json` and `results.svg` (`report`) in the output
//! directory.
//!
//! The two-guest part (`guests`, `bench --guests ...`, `make bench-linux`): the same static
//! programs on Debian's Linux and on this kernel in the same QEMU, per operation.
//!
//! Usage: `bench [--quick] [--cpu N] [--out DIR] [--accel auto|tcg|kvm] [--no-qemu] [--qemu PATH]
//! [--icount OPTS] [--no-count]`. `--quick`
//! shrinks every sample count so the whole run takes seconds; it exercises every row's code path
//! but its figures mean little.

mod coro;
mod guests;
mod host;
mod icount;
mod linux;
mod measure;
mod ours;
mod qemu;
mod report;
mod stats;
mod vector;

use std::{
    io,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    thread,
    time::Duration,
};

use host::{Host, allowed_cpus};
use measure::{BATCH, BATCHED, PER_ITERATION, YIELD_BATCH};
use qemu::{AccelChoice, LinuxPeers};
use report::{Figure, Peer, Report, Row};
use vector::LiveVectors;

/// What the command line asked for.
#[derive(Debug)]
struct Options {
    quick: bool,
    /// The CPU every one-CPU row runs on; by default the last CPU the process may use.
    cpu: Option<usize>,
    /// Where results.json and results.svg go.
    out_dir: PathBuf,
    /// The accelerator of part 2.
    accel: AccelChoice,
    /// Skip part 2 (no QEMU here).
    no_qemu: bool,
    /// Part 2's QEMU, instead of the one in `PATH`.
    qemu: Option<PathBuf>,
    /// QEMU's `-icount` option for part 2.
    icount: Option<String>,
    /// Boot part 2 without the instruction counter.
    no_count: bool,
}

const USAGE: &str = "usage: bench [--quick] [--cpu N] [--out DIR] [--accel auto|tcg|kvm] [--no-qemu]
  --quick      tiny sample counts: checks every row's code path in a few seconds
  --cpu N      the CPU the one-CPU rows run on (default: the last allowed CPU)
  --out DIR    where results.json and results.svg go (default: target/bench in the workspace,
               target/bench/quick for --quick, so a smoke run never replaces real results)
  --accel A    part 2's QEMU accelerator: auto (default: KVM only where /dev/kvm opens and the
               CPU shows vmx/svm, else TCG), tcg or kvm
  --no-qemu    skip part 2, the in-kernel rows in QEMU (for machines without QEMU)
  --qemu PATH  part 2's qemu-system-x86_64 (default: the one in PATH)
  --icount O   pass -icount O to part 2's QEMU (QEMU 10: shift=auto,sleep=off)
  --no-count   no instruction counter in part 2 (it runs under TCG otherwise)";

/// The workspace root, where part 2 builds the kernel.
const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The workspace's `target/bench`, where results go unless `--out` says otherwise.
const DEFAULT_OUT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench");

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let (mut quick, mut cpu, mut out_dir) = (false, None, None);
    let (mut accel, mut no_qemu) = (AccelChoice::Auto, false);
    let (mut qemu, mut icount, mut no_count) = (None, None, false);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--cpu" => {
                let value = args.next().ok_or("--cpu needs a CPU number")?;
                cpu = Some(value.parse().map_err(|_| format!("--cpu: not a CPU number: {value}"))?);
            }
            "--out" => out_dir = Some(PathBuf::from(args.next().ok_or("--out needs a directory")?)),
            "--accel" => accel = AccelChoice::parse(&args.next().ok_or("--accel needs auto, tcg or kvm")?)?,
            "--no-qemu" => no_qemu = true,
            "--qemu" => qemu = Some(PathBuf::from(args.next().ok_or("--qemu needs a path")?)),
            "--icount" => icount = Some(args.next().ok_or("--icount needs QEMU's -icount options")?),
            "--no-count" => no_count = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    let out_dir = out_dir.unwrap_or_else(|| {
        let dir = PathBuf::from(DEFAULT_OUT_DIR);
        if quick { dir.join("quick") } else { dir }
    });
    Ok(Options { quick, cpu, out_dir, accel, no_qemu, qemu, icount, no_count })
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().is_some_and(|arg| arg == "--guests") {
        args.next();
        return match guests::parse_args(args, Path::new(DEFAULT_OUT_DIR)) {
            Ok(options) => match guests::run(&options, Path::new(WORKSPACE)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("bench: {err}");
                    ExitCode::FAILURE
                }
            },
            Err(message) => {
                eprintln!("bench: {message}\n{}", guests::USAGE);
                ExitCode::from(2)
            }
        };
    }
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("bench: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench: {err}");
            ExitCode::FAILURE
        }
    }
}

fn measured(per_op_cycles: Vec<f64>) -> Figure {
    Figure::Cycles(stats::summarize(per_op_cycles))
}

fn absent(reason: &str) -> Figure {
    Figure::Absent(reason.to_owned())
}

fn peer(name: &str, figure: Figure) -> Option<Peer> {
    Some(Peer { name: name.to_owned(), figure })
}

/// Our run-queue sizes for the pick rows: the cost must not grow with them.
const PICK_NR_RUNNABLE: [usize; 3] = [2, 100, 10_000];

/// Part 1's results: the host, its rows and footnotes, and the Linux figures part 2's rows stand
/// beside.
struct Native {
    host: Host,
    rows: Vec<Row>,
    footnotes: Vec<String>,
    peers: LinuxPeers,
}

fn run(options: &Options) -> io::Result<()> {
    // Part 2's kernel is built first, so a build failure ends the run before part 1's minutes, and
    // its compiler does not run beside part 1's measurements.
    let plan = if options.no_qemu {
        None
    } else {
        Some(qemu::prepare(options.accel, Path::new(WORKSPACE), options.qemu.clone(), options.icount.clone())?)
    };
    // Part 1 pins the thread it runs on; QEMU, started later from this unpinned thread, keeps
    // every CPU for its virtual CPUs.
    let native = thread::scope(|scope| {
        scope.spawn(|| native(options, plan.is_some())).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
    let Native { host, mut rows, mut footnotes, peers } = native;
    let guest = match &plan {
        Some(plan) => {
            eprintln!("bench: part 2: the kernel's own paths in QEMU ({}; {})", plan.accel.label, plan.accel.why);
            let (kernel_run, wall) = counted_run(plan, options, &mut footnotes)?;
            let (kernel_rows, guest) = qemu::rows(plan, &kernel_run, wall, &peers);
            rows.extend(kernel_rows);
            Some(guest)
        }
        None => {
            footnotes.push("Part 2, the in-kernel rows in QEMU, was skipped (--no-qemu).".to_owned());
            None
        }
    };
    let report = Report { host, quick: options.quick, guest, rows, footnotes };
    print!("{}", report.table());
    report.write_files(&options.out_dir)?;
    let out_dir = std::fs::canonicalize(&options.out_dir)?;
    eprintln!("bench: wrote {0}/results.json and {0}/results.svg", out_dir.display());
    Ok(())
}

/// Part 2's boot, with the instruction counter where it can run: its counts join the rows and a
/// footnote says how they were taken, or why there are none. A smoke run (`--quick`) fails when
/// the counter ran but a row's windows are missing or its markers did not match; a counter that
/// could not be built or loaded only costs the counts.
fn counted_run(
    plan: &qemu::Plan,
    options: &Options,
    footnotes: &mut Vec<String>,
) -> io::Result<(qemu::KernelRun, Duration)> {
    let progress = |line: &str| eprintln!("bench: in QEMU: {line}");
    let counter = if options.no_count {
        Err("--no-count".to_owned())
    } else {
        std::fs::create_dir_all(&options.out_dir)?;
        icount::prepare(plan, Path::new(WORKSPACE), &options.out_dir.join("icount.txt"))
    };
    let counter = match counter {
        Ok(counter) => counter,
        Err(why) => {
            eprintln!("bench: no instruction counts: {why}");
            footnotes.push(format!("In-kernel instruction counts: not measured ({why})."));
            return qemu::run(plan, options.quick, &[], progress);
        }
    };
    let (mut run, wall) = match qemu::run(plan, options.quick, &counter.qemu_args(), progress) {
        Ok(done) => done,
        Err(why) => {
            eprintln!("bench: the boot with the instruction counter failed ({why}); booting again without it");
            footnotes.push(format!("In-kernel instruction counts: not measured (the boot with the plugin failed: {why})."));
            return qemu::run(plan, options.quick, &[], progress);
        }
    };
    let problems = match counter.read() {
        Ok(totals) => icount::annotate(&mut run, &totals),
        Err(why) => vec![why],
    };
    if !problems.is_empty() {
        let text = problems.join("; ");
        if options.quick {
            return Err(io::Error::other(format!("the instruction counter's check failed: {text}")));
        }
        eprintln!("bench: instruction counter: {text}");
        footnotes.push(format!("In-kernel instruction counts: incomplete ({text})."));
    }
    footnotes.push(format!(
        "In-kernel instruction counts: guest instructions between the kernel's marker NOPs, counted by a \
         TCG plugin (plugin API {}, {}){}; per operation, \"kernel insns\" are ring-0 instructions on the \
         vCPU of the window, both threads of a switch included. Interrupt windows run from the entry \
         stub to the first instruction after its iretq. Spin-waits inside a window count every turn, so \
         rows that wait for another vCPU depend on how QEMU schedules the vCPUs.",
        counter.api,
        plan.qemu_version,
        plan.icount.as_ref().map_or_else(|| " without -icount".to_owned(), |icount| format!(", -icount {icount}"))
    ));
    Ok((run, wall))
}

/// Part 1: every native row, on a thread pinned to the chosen CPU. `in_kernel_follows` says part 2
/// will add the in-kernel rows the native side cannot measure.
fn native(options: &Options, in_kernel_follows: bool) -> io::Result<Native> {
    let cpus = allowed_cpus()?;
    let cpu = options.cpu.unwrap_or(*cpus.last().expect("a process runs on at least one CPU"));
    if !cpus.contains(&cpu) {
        return Err(io::Error::other(format!("CPU {cpu} is not one this process may use ({cpus:?})")));
    }
    let other_cpu = cpus.iter().copied().find(|&other| other != cpu);
    host::pin_to_cpu(cpu)?;
    let per_iteration = PER_ITERATION.scaled(options.quick);
    let batched = BATCHED.scaled(options.quick);
    let calibration = Duration::from_millis(if options.quick { 20 } else { 500 });
    let host = Host::probe(calibration)?;
    let progress = |what: &str| eprintln!("bench: part 1: measuring {what}");
    let per_batch = format!("batches of {BATCH}");
    let vectors = Arc::new(LiveVectors::new().ok_or_else(|| io::Error::other("no memory for a vector image"))?);

    progress("our window switch and the coroutine floor");
    let window_switch = stats::summarize(ours::window_switch(batched));
    let corosensei = measured(coro::corosensei_switch(batched));

    progress("our yield and Linux's (sched_yield, futex) on one CPU");
    let our_yield = ours::sched_yield_pair(per_iteration, YIELD_BATCH, None);
    let our_yield_figure = measured(our_yield.per_switch_cycles);
    let linux_yield = linux::sched_yield_pair(per_iteration, cpu, || {})?;
    let futex_one_cpu = measured(linux::futex_pair(per_iteration, cpu, cpu)?);
    let getppid = measured(linux::getppid(batched));

    progress("our yield and Linux's with live vector state");
    let our_fpu_yield = ours::sched_yield_pair(per_iteration, YIELD_BATCH, Some(Arc::clone(&vectors)));
    let linux_fpu_yield = {
        let vectors = Arc::clone(&vectors);
        linux::sched_yield_pair(per_iteration, cpu, move || vectors.touch())?
    };
    let touch = stats::summarize(measure::cycles_per_op(batched, BATCH, || {
        for _ in 0..BATCH {
            vectors.touch();
        }
    }));
    let fpu_save = stats::summarize(ours::fpu_save(batched, &vectors));
    let fpu_restore = stats::summarize(ours::fpu_restore(batched, &vectors));
    // How the switch path moves vector state here: plain stores and loads while x87 is in its
    // init state, where `arch::fpu` allows them, else the instruction pair.
    let fpu_path = if arch::fpu::FpuFeatures::detect().for_threads().fast_switch() {
        "vector stores and loads (x87 in its init state)".to_owned()
    } else {
        format!("{:?}", vectors.kind())
    };

    progress("our pick with 2, 100 and 10,000 runnable threads");
    let picks: Vec<(usize, stats::Summary)> =
        PICK_NR_RUNNABLE.iter().map(|&n| (n, stats::summarize(ours::pick(batched, n)))).collect();

    progress("Linux pipe ping-pong between two processes");
    let pipe = measured(linux::pipe_pingpong(per_iteration, cpu)?);
    let linux_yield_figure = measured(linux_yield.per_switch_cycles);
    let cross_cpu = match other_cpu {
        Some(other) => {
            progress("Linux cross-CPU futex wake-up");
            measured(linux::futex_pair(per_iteration, cpu, other)?)
        }
        None => absent("n/a (one CPU)"),
    };

    let row = |metric: String, ours: Figure, peer: Option<Peer>, note: Option<String>| Row {
        metric,
        where_ran: "native",
        ours,
        peer,
        note,
        counts: Vec::new(),
    };
    let per_switch = format!("per switch; ours in batches of {YIELD_BATCH} round trips, Linux per round trip / 2");
    let mut rows = vec![
        row(
            format!("raw window switch (per switch; {per_batch} round trips)"),
            Figure::Cycles(window_switch),
            peer("corosensei resume/suspend", corosensei),
            None,
        ),
        row(
            format!("yield, 2 threads, 1 CPU ({per_switch})"),
            our_yield_figure.clone(),
            peer("Linux sched_yield", linux_yield_figure.clone()),
            Some(format!(
                "ours is sched's yield_now on its host platform, whose cpu_id (a thread-local) runs on \
                 the path (a voluntary switch reads no clock; the clock is the kernel's, the TSC); sched \
                 counted {:.2} switches per round trip; Linux needed {:.2} sched_yield calls per round trip",
                per_round_trip(our_yield.counters.context_switches, per_iteration),
                linux_yield.yields_per_round_trip
            )),
        ),
        row(
            format!("yield, 2 threads, 1 CPU ({per_switch})"),
            our_yield_figure,
            peer("Linux futex wake+wait", futex_one_cpu),
            Some("same samples of ours as the row above; Linux hands off with FUTEX_WAKE then FUTEX_WAIT".to_owned()),
        ),
        row(format!("bare system call (per call; {per_batch})"), absent("-"), peer("Linux getppid", getppid), None),
        row(
            format!(
                "yield, 2 threads, 1 CPU, live {} state in both ({per_switch})",
                if vectors.ymm_enabled() { "AVX (ymm)" } else { "SSE (xmm; no AVX state enabled)" }
            ),
            measured(our_fpu_yield.per_switch_cycles),
            peer("Linux sched_yield", measured(linux_fpu_yield.per_switch_cycles)),
            Some(format!(
                "both sides load a live vector pattern (16 ymm loads) before each yield, so each switch \
                 includes one such touch ({:.0} cycles, the touch phase below); ours are sched threads \
                 spawned with_fpu: sched counted {:.2} FPU saves ({:.2} by stores) and {:.2} restores ({:.2} \
                 by loads) per switch; Linux needed {:.2} sched_yield calls per round trip",
                touch.median_cycles,
                ratio(our_fpu_yield.counters.fpu_saves, our_fpu_yield.counters.context_switches),
                ratio(our_fpu_yield.counters.fpu_fast_saves, our_fpu_yield.counters.context_switches),
                ratio(our_fpu_yield.counters.fpu_restores, our_fpu_yield.counters.context_switches),
                ratio(our_fpu_yield.counters.fpu_fast_restores, our_fpu_yield.counters.context_switches),
                linux_fpu_yield.yields_per_round_trip
            )),
        ),
    ];
    for (nr_runnable, summary) in &picks {
        rows.push(row(
            format!("pick, {} runnable threads (per pick; {per_batch})", with_commas(*nr_runnable)),
            Figure::Cycles(*summary),
            None,
            None,
        ));
    }
    if let Some(last) = rows.last_mut() {
        last.note = Some(
            "a pick is the queue work of a yield: lock the CPU's queue, put the running thread back, \
             pop the next, unlock; one 64-byte stand-in control block per thread"
                .to_owned(),
        );
    }
    rows.extend([
        row(
            "2 processes, 1 CPU, 1-byte pipe ping-pong (per half round trip) [1]".to_owned(),
            absent("n/a [1]"),
            peer("Linux pipe", pipe.clone()),
            None,
        ),
        row(
            "cross-CPU wake-up and answer (per half round trip)".to_owned(),
            absent("n/a (needs hardware KVM)"),
            peer("Linux futex, 2 CPUs", cross_cpu.clone()),
            None,
        ),
        row(
            format!("our yield, phase: pick, 2 runnable (per pick; {per_batch})"),
            Figure::Cycles(picks[0].1),
            None,
            Some("same samples as the 2-runnable pick row".to_owned()),
        ),
        row(
            format!("our yield, phase: window switch (per switch; {per_batch} round trips)"),
            Figure::Cycles(window_switch),
            None,
            Some("same samples as the raw window switch row".to_owned()),
        ),
        row(
            format!("our yield, phase: FPU save, {fpu_path} (per save; {per_batch})"),
            Figure::Cycles(fpu_save),
            None,
            None,
        ),
        row(
            format!("our yield, phase: FPU restore, {fpu_path} (per restore; {per_batch})"),
            Figure::Cycles(fpu_restore),
            None,
            Some("the restore reads XINUSE, which the switch skips right after a save by stores".to_owned()),
        ),
        row(
            format!("live-vector touch, 16 ymm loads (per touch; {per_batch})"),
            Figure::Cycles(touch),
            None,
            Some("phases are timed apart; the yield rows above minus their sum is the rest of the path \
                  (bookkeeping, counters, the platform's clock and CPU-number reads)"
                .to_owned()),
        ),
    ]);
    let footnotes = vec![format!(
        "Our cross-address-space switch adds a CR3 write (with PCID, no TLB flush) to the window switch; \
         a user-space process cannot write CR3, so only hardware can show its cost{}.",
        if in_kernel_follows {
            ": the in-kernel two-address-space yield row below measures it, in cycles only under hardware KVM"
        } else {
            ""
        }
    )];
    let peers = LinuxPeers { sched_yield: linux_yield_figure, pipe, futex_cross_cpu: cross_cpu };
    Ok(Native { host, rows, footnotes, peers })
}

/// `count` per round trip of our yield ping-pong sampled with `sampling` (warm-up included).
fn per_round_trip(count: u64, sampling: measure::Sampling) -> f64 {
    count as f64 / (sampling.nr_calls() * YIELD_BATCH as usize) as f64
}

/// `n` with a comma between groups of three digits, as the row labels write counts.
fn with_commas(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `part / whole`, or 0 when there is no whole.
fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn no_arguments_mean_a_full_run_into_the_workspace_target_dir() {
        let options = parse_args(args("")).unwrap();
        assert!(!options.quick);
        assert_eq!(options.cpu, None);
        assert_eq!(options.accel, AccelChoice::Auto, "part 2 picks its accelerator as ACCEL=auto does");
        assert!(!options.no_qemu, "part 2 runs unless asked not to");
        assert!(options.out_dir.ends_with("target/bench"));
    }

    #[test]
    fn a_quick_run_writes_beside_the_full_results_not_over_them() {
        let options = parse_args(args("--quick")).unwrap();
        assert!(options.out_dir.ends_with("target/bench/quick"));
    }

    #[test]
    fn every_flag_is_understood() {
        let options = parse_args(args(
            "--quick --cpu 1 --out /tmp/x --accel tcg --no-qemu --qemu /q/qemu --icount shift=auto --no-count",
        ))
        .unwrap();
        assert_eq!(options.qemu, Some(PathBuf::from("/q/qemu")));
        assert_eq!(options.icount.as_deref(), Some("shift=auto"));
        assert!(options.no_count);
        assert!(options.quick);
        assert_eq!(options.cpu, Some(1));
        assert_eq!(options.out_dir, PathBuf::from("/tmp/x"));
        assert_eq!(options.accel, AccelChoice::Tcg);
        assert!(options.no_qemu);
    }

    #[test]
    fn counts_get_commas_between_groups_of_three() {
        assert_eq!(with_commas(2), "2");
        assert_eq!(with_commas(100), "100");
        assert_eq!(with_commas(10_000), "10,000");
        assert_eq!(with_commas(1_234_567), "1,234,567");
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        assert!(parse_args(args("--cpu")).unwrap_err().contains("--cpu"));
        assert!(parse_args(args("--cpu one")).unwrap_err().contains("one"));
        assert!(parse_args(args("--fast")).unwrap_err().contains("--fast"));
        assert!(parse_args(args("--accel hvf")).unwrap_err().contains("hvf"));
        assert!(parse_args(args("--accel")).unwrap_err().contains("--accel"));
    }
}
