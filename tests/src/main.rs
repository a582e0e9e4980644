//! `ktest`: boots the test kernel in QEMU and reports its in-kernel tests like a test runner.
//!
//! First one boot with `test=list` asks the kernel which tests it has. Then, for every
//! configuration of the matrix (`plan::Config`: CPU count x CPU model), one boot runs the
//! ordinary tests together and one boot per expected-fault test checks its fault report. Each
//! result is printed as `test LABEL/NAME ... ok|FAILED`, every boot's serial output is kept under
//! the log folder, and the last line is always `N passed, N failed` over everything. Boots run one
//! after another: TCG is CPU-bound and a configuration with many vCPUs already fills the machine.
//!
//! Modules: `options` (command line), `plan` (matrix and selection), `qemu` (one boot),
//! `serial` (reading the console), `verdict` (judging a boot), `exit` (QEMU's exit status).

mod exit;
mod options;
mod plan;
mod qemu;
mod serial;
mod verdict;

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use options::{Options, Parsed};
use plan::Config;
use qemu::{BootRecord, BootRequest};
use serial::{Event, Outcome};
use verdict::Finding;

/// Serial lines shown when a boot went wrong.
const TAIL_LINES: usize = 20;

fn main() -> ExitCode {
    let options = match options::parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(options)) => options,
        Ok(Parsed::Help) => {
            println!("{}", options::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("ktest: {error}\n\n{}", options::USAGE);
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(totals) => totals.finish(),
        Err(error) => {
            eprintln!("ktest: {error}");
            ExitCode::from(2)
        }
    }
}

/// Passes and failures over every boot.
#[derive(Default)]
struct Totals {
    passed: u32,
    failed: u32,
}

impl Totals {
    fn record(&mut self, label: &str, finding: &Finding) {
        print_result(
            label,
            &finding.name,
            finding.passed,
            finding.note.as_deref(),
        );
        if finding.passed {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }

    /// Prints the closing line (always the last one) and turns the totals into the exit code.
    fn finish(self) -> ExitCode {
        if self.passed + self.failed == 0 {
            println!("ktest: no test ran, which is not a pass");
        }
        println!("{} passed, {} failed", self.passed, self.failed);
        if self.failed == 0 && self.passed > 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

fn print_result(label: &str, name: &str, passed: bool, note: Option<&str>) {
    let verdict = if passed { "ok" } else { "FAILED" };
    match note {
        Some(note) => println!("test {label}/{name} ... {verdict} ({note})"),
        None => println!("test {label}/{name} ... {verdict}"),
    }
}

/// Runs the whole plan. Errors are the harness's own trouble (QEMU missing, no log folder);
/// everything the kernel does wrong is a failed test instead.
fn run(options: &Options) -> Result<Totals, String> {
    if !options.kernel.is_file() {
        return Err(format!(
            "no test kernel at {} (make test builds it)",
            options.kernel.display()
        ));
    }
    prepare_log_dir(&options.log_dir)
        .map_err(|error| format!("log folder {}: {error}", options.log_dir.display()))?;
    let version = qemu::version(&options.qemu)
        .map_err(|error| format!("cannot run {}: {error}", options.qemu))?;
    println!("ktest: {version}; accelerator {}", options.accel);
    let cpu_models = match &options.cpu_models {
        Some(models) => models.clone(),
        None => probe_cpu_models(options),
    };
    println!(
        "ktest: kernel {}; CPU models {}",
        options.kernel.display(),
        cpu_models.join(" | ")
    );
    println!("ktest: serial logs in {}", options.log_dir.display());

    let mut totals = Totals::default();
    let configs = plan::matrix(&options.cpu_counts, &cpu_models);
    let Some(first) = configs.first() else {
        return Ok(totals);
    };
    let listing_config = Config {
        nr_cpus: 1,
        label: "list".to_string(),
        ..first.clone()
    };
    let listing = boot_once(options, &listing_config, "test=list", "list", |_, _| {})?;
    let listed = match verdict::judge_listing(&listing.transcript, listing.exit) {
        Ok(listed) => listed,
        Err(problem) => {
            totals.record(
                "kernel",
                &Finding {
                    name: "list".to_string(),
                    passed: false,
                    note: Some(problem),
                },
            );
            show_tail(&listing, &qemu::log_path(&options.log_dir, "list"));
            return Ok(totals);
        }
    };
    if listed.is_empty() {
        println!(
            "ktest: the kernel lists no tests (test=list printed no 'testcase NAME smp>=K' line)"
        );
        return Ok(totals);
    }
    println!("ktest: the kernel lists {} tests", listed.len());

    for config in &configs {
        run_config(options, config, &listed, &mut totals)?;
    }
    Ok(totals)
}

/// Log files of an earlier run would pass for this one's: they go first. Only names the harness
/// writes (`list.log`, `smp*.log`) are removed, whatever else the folder holds.
fn prepare_log_dir(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        if name == "list.log" || (name.starts_with("smp") && name.ends_with(".log")) {
            fs::remove_file(path)?;
        }
    }
    Ok(())
}

/// `qemu64` always; `qemu64,+x2apic` too where this QEMU and accelerator emulate x2APIC.
fn probe_cpu_models(options: &Options) -> Vec<String> {
    let mut models = vec!["qemu64".to_string()];
    match qemu::x2apic_emulated(&options.qemu, &options.accel) {
        Ok(true) => models.push("qemu64,+x2apic".to_string()),
        Ok(false) => println!(
            "ktest: this QEMU does not emulate x2APIC under {}: xAPIC only",
            options.accel
        ),
        Err(error) => println!("ktest: the x2APIC probe failed ({error}): xAPIC only"),
    }
    models
}

/// One configuration: the ordinary tests in one boot, then each expected-fault test alone.
fn run_config(
    options: &Options,
    config: &Config,
    listed: &[serial::TestCase],
    totals: &mut Totals,
) -> Result<(), String> {
    let selection = plan::select(listed, config, &options.filters);
    let mut about = format!(
        "ktest: {}: -smp {} -cpu {}: ordinary tests {} (one boot), expected-fault tests {} (one boot each)",
        config.label,
        config.nr_cpus,
        config.cpu_model,
        selection.suite.len(),
        selection.faults.len()
    );
    if !selection.skipped_for_cpus.is_empty() {
        about += &format!(
            "; needing more CPUs: {}",
            selection.skipped_for_cpus.join(", ")
        );
    }
    println!("{about}");

    if !selection.suite.is_empty() {
        let label = config.label.as_str();
        let record = boot_once(
            options,
            config,
            &selection.suite_option(),
            label,
            |event, _| {
                if let Event::Result(result) = event {
                    print_result(label, &result.name, result.outcome == Outcome::Ok, None);
                }
            },
        )?;
        let judged = verdict::judge_suite(
            &selection.suite,
            &record.transcript,
            record.exit,
            record.running.as_deref(),
        );
        for finding in &judged.findings {
            print_result(
                label,
                &finding.name,
                finding.passed,
                finding.note.as_deref(),
            );
        }
        totals.passed += judged.passed;
        totals.failed += judged.failed;
        println!(
            "ktest: {label}: {:.1} s, {}",
            record.elapsed.as_secs_f64(),
            record.exit
        );
        if !judged.findings.is_empty() {
            show_tail(&record, &qemu::log_path(&options.log_dir, label));
        }
    }

    for name in &selection.faults {
        let stem = format!("{}-{name}", config.label);
        let record = boot_once(options, config, &format!("test={name}"), &stem, |_, _| {})?;
        let finding = verdict::judge_fault(
            name,
            plan::fault_spec(name),
            &record.transcript,
            record.exit,
        );
        totals.record(&config.label, &finding);
        if !finding.passed {
            show_tail(&record, &qemu::log_path(&options.log_dir, &stem));
        }
    }
    Ok(())
}

/// Boots once with `test_option` plus the user's options, logging to `<log_stem>.log`.
fn boot_once(
    options: &Options,
    config: &Config,
    test_option: &str,
    log_stem: &str,
    mut on_event: impl FnMut(&Event, &str),
) -> Result<BootRecord, String> {
    let mut cmdline = test_option.to_string();
    for extra in &options.append {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    let request = BootRequest {
        qemu: options.qemu.clone(),
        accel: options.accel.clone(),
        cpu_model: config.cpu_model.clone(),
        nr_cpus: config.nr_cpus,
        mem: options
            .mem
            .clone()
            .unwrap_or_else(|| plan::default_mem(config.nr_cpus).to_string()),
        kernel: options.kernel.clone(),
        initrd: options.initrd.clone(),
        cmdline,
        timeout: options.timeout,
        log_path: qemu::log_path(&options.log_dir, log_stem),
    };
    let verbose = options.verbose;
    let record = qemu::boot(&request, |event, line| {
        if verbose {
            println!("  | {line}");
        }
        on_event(event, line);
    })
    .map_err(|error| format!("{}: {error}", request.log_path.display()))?;
    if record.exit == exit::GuestExit::TimedOut {
        let running = record.running.as_deref().unwrap_or("no test");
        println!(
            "ktest: {log_stem}: killed QEMU after {} s while running {running}",
            options.timeout.as_secs()
        );
    }
    if !record.stderr.trim().is_empty() {
        println!("ktest: {log_stem}: QEMU said: {}", record.stderr.trim());
    }
    if verbose {
        println!("ktest: {log_stem}: {}", request.shell_line());
    }
    Ok(record)
}

/// The end of a boot's output and where the rest is, after a failure.
fn show_tail(record: &BootRecord, log_path: &Path) {
    println!("ktest: last serial lines (all in {}):", log_path.display());
    for line in record.transcript.tail(TAIL_LINES) {
        println!("  | {line}");
    }
}
