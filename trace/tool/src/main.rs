//! `tracetool`: reads a kernel trace dump (what the kernel writes to QEMU's debugcon with
//! `trace`) and writes the Chrome/Perfetto JSON, the timeline SVG and the text summary, and checks
//! the trace's conservation.
//!
//! ```text
//! tracetool DUMP [--out DIR] [--check] [--complete] [--title TEXT]
//! tracetool synth [--cpus N] [--seed S] [--steps N] --dump FILE     (a simulated trace, for demos)
//! ```
//!
//! With `--out DIR` it writes `DIR/trace.json`, `DIR/timeline.svg` and `DIR/summary.txt` (the
//! summary also goes to standard output). `--check` runs `trace::check` and fails on a violation;
//! `--complete` says the trace ran from a quiet system to a quiet system, so unmatched events at
//! its edges fail too. The JSON is always checked against the trace-event format before it is
//! written.
//!
//! Modules: `model` (the dump as slices, wake-up links and IPIs), `json`, `schema`, `svg`, `summary`.

mod json;
mod model;
mod schema;
mod summary;
mod svg;

use std::{fs, path::PathBuf, process::ExitCode};

use trace::{Dump, check};

struct Args {
    input: Option<PathBuf>,
    out: Option<PathBuf>,
    check: bool,
    complete: bool,
    title: Option<String>,
    synth: bool,
    cpus: usize,
    seed: u64,
    steps: usize,
    dump: Option<PathBuf>,
}

const USAGE: &str = "usage: tracetool DUMP [--out DIR] [--check] [--complete] [--title TEXT]\n       tracetool synth [--cpus N] [--seed S] [--steps N] --dump FILE";

fn parse_args() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut args = Args {
        input: None,
        out: None,
        check: false,
        complete: false,
        title: None,
        synth: false,
        cpus: 4,
        seed: 1,
        steps: 4000,
        dump: None,
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("out") | Short('o') => args.out = Some(parser.value()?.into()),
            Long("check") => args.check = true,
            Long("complete") => args.complete = true,
            Long("title") => args.title = Some(parser.value()?.string()?),
            Long("cpus") => args.cpus = parser.value()?.parse()?,
            Long("seed") => args.seed = parser.value()?.parse()?,
            Long("steps") => args.steps = parser.value()?.parse()?,
            Long("dump") => args.dump = Some(parser.value()?.into()),
            Long("help") | Short('h') => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Value(v) if v == "synth" && args.input.is_none() && !args.synth => args.synth = true,
            Value(v) if args.input.is_none() => args.input = Some(v.into()),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tracetool: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tracetool: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    if args.synth {
        let path = args.dump.as_ref().ok_or("synth needs --dump FILE")?;
        let dump = trace::synth::generate(&trace::synth::Config {
            nr_cpus: args.cpus,
            threads: 2 * args.cpus,
            steps: args.steps,
            seed: args.seed,
            ..Default::default()
        });
        let mut bytes = Vec::new();
        dump.write(&mut bytes);
        fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let input = args.input.as_ref().ok_or(USAGE)?;
    let bytes = fs::read(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let dump = Dump::parse(&bytes).map_err(|e| format!("{}: {e}", input.display()))?;
    let timeline = model::Timeline::new(&dump);
    let text = summary::to_text(&timeline);
    print!("{text}");
    if let Some(dir) = &args.out {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let json = json::to_json(&timeline);
        if let Err(errors) = schema::validate(&json) {
            for e in errors.iter().take(20) {
                eprintln!("tracetool: trace.json: {e}");
            }
            return Err(format!(
                "the JSON breaks the trace-event format in {} places",
                errors.len()
            ));
        }
        let write = |name: &str, body: &[u8]| {
            let path = dir.join(name);
            fs::write(&path, body).map_err(|e| format!("{}: {e}", path.display()))
        };
        write(
            "trace.json",
            serde_json::to_string(&json)
                .map_err(|e| e.to_string())?
                .as_bytes(),
        )?;
        let title = args.title.clone().unwrap_or_else(|| {
            format!(
                "{} CPUs, {:.1} ms",
                timeline.nr_cpus,
                timeline.ticks_us(timeline.span()) / 1000.0
            )
        });
        write("timeline.svg", svg::to_svg(&timeline, &title).as_bytes())?;
        write("summary.txt", text.as_bytes())?;
        println!(
            "wrote {0}/trace.json (open in ui.perfetto.dev or chrome://tracing), {0}/timeline.svg, {0}/summary.txt",
            dir.display()
        );
    }
    if args.check {
        let report = check::check(
            &dump,
            check::Options {
                complete: args.complete,
                running_at_end: None,
            },
        );
        println!("{report}");
        if !report.is_ok() {
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}
