//! `bench`: the kernel's context switch and run queue measured natively, beside Linux doing the
//! same hand-offs on the same machine, in one run.
//!
//! The very switch routine and run queue the kernel uses are built for the host and driven from
//! this user-space process, pinned to one CPU; the Linux side is a set of small ping-pong
//! programs of our own (`linux`), and a coroutine crate gives the user-space floor (`coro`).
//! Every figure is TSC cycles per operation, median and p99, read with the fenced
//! `arch::tsc::{start, end}` (`measure`, `stats`). Output: a table on stdout, then
//! `results.json` and `results.svg` (`report`) in the output directory.
//!
//! Usage: `bench [--quick] [--cpu N] [--out DIR]`. `--quick` shrinks every sample count so the
//! whole run takes seconds; it exercises every row's code path but its figures mean little.

mod coro;
mod host;
mod linux;
mod measure;
mod ours;
mod report;
mod stats;
mod vector;

use std::{io, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use host::{Host, allowed_cpus};
use measure::{BATCH, BATCHED, PER_ITERATION};
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
}

const USAGE: &str = "usage: bench [--quick] [--cpu N] [--out DIR]
  --quick    tiny sample counts: checks every row's code path in a few seconds
  --cpu N    the CPU the one-CPU rows run on (default: the last allowed CPU)
  --out DIR  where results.json and results.svg go (default: target/bench in the workspace)";

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        quick: false,
        cpu: None,
        out_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench")),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--cpu" => {
                let value = args.next().ok_or("--cpu needs a CPU number")?;
                options.cpu = Some(value.parse().map_err(|_| format!("--cpu: not a CPU number: {value}"))?);
            }
            "--out" => options.out_dir = args.next().ok_or("--out needs a directory")?.into(),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
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

fn run(options: &Options) -> io::Result<()> {
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
    let progress = |what: &str| eprintln!("bench: measuring {what}");
    let per_batch = format!("batches of {BATCH}");

    progress("our window switch");
    let window_switch = measured(ours::window_switch(batched));
    progress("the coroutine switch floor");
    let corosensei = measured(coro::corosensei_switch(batched));

    progress("Linux sched_yield between two threads");
    let yield_pair = linux::sched_yield_pair(per_iteration, cpu, || {})?;
    progress("Linux sched_yield with live vector state");
    let vectors = Arc::new(LiveVectors::new().ok_or_else(|| io::Error::other("no memory for a vector image"))?);
    let ymm = vectors.ymm_enabled();
    let yield_pair_vector = {
        let vectors = Arc::clone(&vectors);
        linux::sched_yield_pair(per_iteration, cpu, move || vectors.touch())?
    };
    let touch = stats::summarize(measure::cycles_per_op(batched, BATCH, || {
        for _ in 0..BATCH {
            vectors.touch();
        }
    }));
    progress("Linux futex hand-off on one CPU");
    let futex_one_cpu = measured(linux::futex_pair(per_iteration, cpu, cpu)?);
    progress("Linux getppid");
    let getppid = measured(linux::getppid(batched));
    progress("Linux pipe ping-pong between two processes");
    let pipe = measured(linux::pipe_pingpong(per_iteration, cpu)?);
    let cross_cpu = match other_cpu {
        Some(other) => {
            progress("Linux cross-CPU futex wake-up");
            measured(linux::futex_pair(per_iteration, cpu, other)?)
        }
        None => absent("n/a (one CPU)"),
    };
    host::pin_to_cpu(cpu)?;

    let rows = vec![
        Row {
            metric: format!("raw window switch (per switch; {per_batch} round trips)"),
            where_ran: "native",
            ours: window_switch,
            peer: peer("corosensei resume/suspend", corosensei),
            note: None,
        },
        Row {
            metric: "yield, 2 threads, 1 CPU (per switch; round trip / 2)".to_owned(),
            where_ran: "native",
            ours: absent("pending"),
            peer: peer("Linux sched_yield", measured(yield_pair.per_switch_cycles)),
            note: Some(format!(
                "Linux needed {:.2} sched_yield calls per round trip on the measuring side",
                yield_pair.yields_per_round_trip
            )),
        },
        Row {
            metric: "yield, 2 threads, 1 CPU (per switch; round trip / 2)".to_owned(),
            where_ran: "native",
            ours: absent("pending"),
            peer: peer("Linux futex wake+wait", futex_one_cpu),
            note: None,
        },
        Row {
            metric: format!(
                "yield, 2 threads, 1 CPU, live {} state in both (per switch; round trip / 2)",
                if ymm { "AVX (ymm)" } else { "SSE (xmm; no AVX state enabled)" }
            ),
            where_ran: "native",
            ours: absent("pending"),
            peer: peer("Linux sched_yield", measured(yield_pair_vector.per_switch_cycles)),
            note: Some(format!(
                "both threads load a live vector image (arch::fpu::restore) before each yield, so each \
                 switch includes one load, which alone takes {:.0} cycles (median; p99 {:.0}); Linux needed {:.2} \
                 sched_yield calls per round trip",
                touch.median_cycles, touch.p99_cycles, yield_pair_vector.yields_per_round_trip
            )),
        },
        Row {
            metric: format!("bare system call (per call; {per_batch})"),
            where_ran: "native",
            ours: absent("-"),
            peer: peer("Linux getppid", getppid),
            note: None,
        },
        Row {
            metric: "2 processes, 1 CPU, 1-byte pipe ping-pong (per half round trip) [1]".to_owned(),
            where_ran: "native",
            ours: absent("n/a [1]"),
            peer: peer("Linux pipe", pipe),
            note: None,
        },
        Row {
            metric: "cross-CPU wake-up and answer (per half round trip)".to_owned(),
            where_ran: "native",
            ours: absent("n/a (needs hardware KVM)"),
            peer: peer("Linux futex, 2 CPUs", cross_cpu),
            note: None,
        },
    ];
    let report = Report {
        host,
        quick: options.quick,
        accelerator: None,
        rows,
        footnotes: vec![
            "Our cross-address-space switch adds a CR3 write (with PCID, no TLB flush) to the window switch; \
             a user-space process cannot write CR3, so only hardware can show its cost."
                .to_owned(),
        ],
    };
    print!("{}", report.table());
    report.write_files(&options.out_dir)?;
    eprintln!("bench: wrote {0}/results.json and {0}/results.svg", options.out_dir.display());
    Ok(())
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
        assert!(options.out_dir.ends_with("target/bench"));
    }

    #[test]
    fn every_flag_is_understood() {
        let options = parse_args(args("--quick --cpu 1 --out /tmp/x")).unwrap();
        assert!(options.quick);
        assert_eq!(options.cpu, Some(1));
        assert_eq!(options.out_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        assert!(parse_args(args("--cpu")).unwrap_err().contains("--cpu"));
        assert!(parse_args(args("--cpu one")).unwrap_err().contains("one"));
        assert!(parse_args(args("--fast")).unwrap_err().contains("--fast"));
    }
}
