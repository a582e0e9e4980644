//! The Makefile's front door as a new user meets it, checked without QEMU or a kernel build: the
//! targets `make run` and its neighbours depend on for building are taken as done (`make -o`), and
//! QEMU is a stand-in script that records its arguments and exits with the status the test asks
//! for. Each test names a mistake the Makefile once made and asserts what it does now:
//!
//! - `make help` left out stages of `make test` and the `kernel` target;
//! - an empty `SMP=` reached QEMU, which then complained about `512M`;
//! - a guest of 10 MiB or less triple-faulted silently, and `make run` passed on a guest reset
//!   (QEMU exits 0 with `-no-reboot`);
//! - an apostrophe in `ARGS` broke the recipe's quoting, and a newline went into limine.conf;
//! - `make run ACCEL=kvm` passed `-cpu host`, which QEMU aborts on under some nested KVMs;
//! - OVMF was looked up when the Makefile was read, before `make deps` had installed it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Writes each argument on its own line to `$FAKE_ARGS`, then exits with `$FAKE_STATUS`.
const FAKE_QEMU: &str = r#"#!/bin/sh
for a in "$@"; do printf '%s\n' "$a"; done > "$FAKE_ARGS"
exit "${FAKE_STATUS:-0}"
"#;

/// Variables the Makefile reads from the environment (`?=`) or a calling make passes down; the
/// tests set what they mean to and nothing else may leak in.
const CLEARED: &[&str] = &[
    "MAKEFLAGS",
    "MAKELEVEL",
    "MFLAGS",
    "MAKEOVERRIDES",
    "SMP",
    "ACCEL",
    "BOOT",
    "FIRMWARE",
    "ARGS",
    "LIMINE_DIR",
    "QEMU_ARGS",
    "MEM",
    "RELEASE",
    "CPU",
    "KERNEL_CMDLINE",
    "SECONDS",
];

/// Targets whose recipes build or install: taken as up to date, so nothing is built.
const BUILT: &[&str] = &["kernel", "host-deps", "rust-deps", "target/initramfs.cpio"];

struct Make {
    dir: PathBuf,
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    /// QEMU's arguments, if the stand-in ran.
    qemu: Option<Vec<String>>,
}

impl Make {
    fn new(name: &str) -> Make {
        let dir = std::env::temp_dir().join(format!("make-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp folder");
        let script = dir.join("fake-qemu");
        fs::write(&script, FAKE_QEMU).expect("write script");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod script");
        Make { dir }
    }

    fn root() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the workspace root")
    }

    /// `make VARS... TARGET` in the workspace root with QEMU replaced, QEMU exiting `status`.
    fn run(&self, args: &[&str], status: i32) -> Run {
        let record = self.dir.join("qemu-args");
        let _ = fs::remove_file(&record);
        let mut cmd = Command::new("make");
        cmd.current_dir(Make::root()).arg("--no-print-directory");
        for var in CLEARED {
            cmd.env_remove(var);
        }
        for target in BUILT {
            cmd.args(["-o", target]);
        }
        let output: Output = cmd
            .arg(format!("QEMU={}", self.dir.join("fake-qemu").display()))
            .args(args)
            .env("FAKE_ARGS", &record)
            .env("FAKE_STATUS", status.to_string())
            .output()
            .expect("run make");
        let qemu = fs::read_to_string(&record)
            .ok()
            .map(|s| s.lines().map(String::from).collect());
        Run {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            qemu,
        }
    }
}

impl Drop for Make {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The value after `flag` in QEMU's arguments.
fn after<'a>(qemu: &'a [String], flag: &str) -> Option<&'a str> {
    qemu.iter()
        .position(|a| a == flag)
        .and_then(|i| qemu.get(i + 1))
        .map(String::as_str)
}

#[test]
fn help_names_every_stage_of_make_test_and_the_build_targets() {
    let makefile = fs::read_to_string(Make::root().join("Makefile")).expect("read the Makefile");
    let recipe = makefile
        .split("\ntest: ")
        .nth(1)
        .expect("a test: rule")
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with('\t'));
    let stages: Vec<String> = recipe
        .filter_map(|l| l.split("--no-print-directory ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(String::from)
        .collect();
    assert!(
        stages.len() >= 8,
        "the test: rule lists its stages: {stages:?}"
    );
    let run = Make::new("help").run(&["help"], 0);
    assert!(run.ok, "make help fails: {}", run.stderr);
    let line = |target: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(&format!("make {target} ")))
            .map(String::from)
            .unwrap_or_else(|| panic!("make help does not name `make {target}`:\n{}", run.stdout))
    };
    // make help says of make test: "everything below marked (test)".
    for stage in &stages {
        let l = line(stage);
        assert!(
            l.contains("(test"),
            "make help does not mark {stage} as a stage of make test: {l}"
        );
    }
    for target in ["run", "kernel", "test-kernel", "iso", "image"] {
        line(target);
    }
}

#[test]
fn an_smp_that_is_not_a_cpu_count_is_refused_before_qemu() {
    let make = Make::new("smp");
    for smp in ["SMP=", "SMP=0", "SMP=four", "SMP=2x"] {
        let run = make.run(&["run", "BOOT=pvh", "ACCEL=tcg", smp], 33);
        assert!(!run.ok, "make run {smp} passed");
        assert!(run.qemu.is_none(), "make run {smp} started QEMU");
        assert!(
            run.stderr.contains("SMP must be a CPU count"),
            "make run {smp}: {}",
            run.stderr
        );
    }
}

#[test]
fn memory_below_the_minimum_is_refused_before_qemu() {
    let make = Make::new("mem");
    for mem in ["MEM=8M", "MEM=10M", "MEM=15", "MEM=lots"] {
        let run = make.run(&["run", "BOOT=pvh", "ACCEL=tcg", "SMP=2", mem], 33);
        assert!(!run.ok, "make run {mem} passed");
        assert!(run.qemu.is_none(), "make run {mem} started QEMU");
        assert!(run.stderr.contains("MEM"), "make run {mem}: {}", run.stderr);
    }
    let run = make.run(&["run", "BOOT=pvh", "ACCEL=tcg", "SMP=2", "MEM=16M"], 33);
    assert!(run.ok, "make run MEM=16M: {}", run.stderr);
    assert_eq!(after(run.qemu.as_deref().unwrap(), "-m"), Some("16M"));
}

#[test]
fn only_the_kernels_success_code_makes_make_run_pass() {
    let make = Make::new("status");
    let args = ["run", "BOOT=pvh", "ACCEL=tcg", "SMP=2"];
    let success = make.run(&args, 33);
    assert!(
        success.ok,
        "exit code 0x10 (QEMU 33) failed: {}",
        success.stderr
    );
    let failure = make.run(&args, 35);
    assert!(!failure.ok, "the kernel's failure code (QEMU 35) passed");
    let reset = make.run(&args, 0);
    assert!(!reset.ok, "a guest reset (QEMU 0 under -no-reboot) passed");
    assert!(
        reset.stderr.contains("reset"),
        "a reset is not named: {}",
        reset.stderr
    );
    assert!(
        reset.qemu.unwrap().iter().any(|a| a == "-no-reboot"),
        "a reset would reboot"
    );
}

#[test]
fn args_reach_the_kernel_as_typed_and_a_newline_is_refused() {
    let make = Make::new("args");
    // Shell characters only: `$` is make's own (`$$` in ARGS is one dollar sign).
    let typed = r#"exit-after=2 init=/bin/echo -- it's "quoted" `x` ; | & \n"#;
    let run = make.run(
        &[
            "run",
            "BOOT=pvh",
            "ACCEL=tcg",
            "SMP=2",
            &format!("ARGS={typed}"),
        ],
        33,
    );
    assert!(run.ok, "make run with quotes in ARGS: {}", run.stderr);
    assert_eq!(after(run.qemu.as_deref().unwrap(), "-append"), Some(typed));
    for target in ["run", "iso", "image"] {
        let run = make.run(
            &[
                target,
                "BOOT=pvh",
                "ACCEL=tcg",
                "ARGS=exit-after=2\nloglevel=debug",
            ],
            33,
        );
        assert!(!run.ok, "make {target} with a newline in ARGS passed");
        assert!(run.qemu.is_none(), "make {target} started QEMU");
        assert!(
            run.stderr.contains("ARGS holds a newline"),
            "make {target}: {}",
            run.stderr
        );
    }
}

#[test]
fn make_run_under_kvm_takes_the_cpu_model_make_test_uses() {
    let make = Make::new("kvm");
    let run = make.run(&["run", "BOOT=pvh", "ACCEL=kvm", "SMP=2"], 33);
    assert!(run.ok, "make run ACCEL=kvm: {}", run.stderr);
    assert_eq!(
        after(run.qemu.as_deref().unwrap(), "-cpu"),
        Some("host,-arch-capabilities")
    );
    let chosen = make.run(&["run", "BOOT=pvh", "ACCEL=kvm", "SMP=2", "CPU=max"], 33);
    assert_eq!(
        after(chosen.qemu.as_deref().unwrap(), "-cpu"),
        Some("max"),
        "CPU= is overridden"
    );
    let tcg = make.run(&["run", "BOOT=pvh", "ACCEL=tcg", "SMP=2"], 33);
    assert_eq!(
        after(tcg.qemu.as_deref().unwrap(), "-cpu"),
        None,
        "TCG keeps QEMU's default model"
    );
}

#[test]
fn ovmf_is_looked_for_when_a_target_needs_it_not_when_the_makefile_is_read() {
    // `make -p` prints the variable database: a recursive variable (`=`) is expanded where it is
    // used, after `make deps` may have installed OVMF in the same run; `:=` froze it at start.
    let run = Make::new("ovmf").run(&["-p", "-n", "help"], 0);
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("OVMF_CODE ") || l.starts_with("OVMF_CODE:"))
        .unwrap_or_else(|| panic!("no OVMF_CODE in make -p:\n{}", run.stderr));
    assert!(
        line.starts_with("OVMF_CODE = $("),
        "OVMF_CODE is expanded when the Makefile is read: {line}"
    );
}
