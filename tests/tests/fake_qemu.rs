//! The harness end to end against a stand-in for QEMU: a shell script that answers `--version`,
//! reads `-append` and `-smp` like QEMU would hand them to the kernel, prints what a kernel would
//! print and exits with the status QEMU's isa-debug-exit device would give. This checks what
//! unit tests cannot: spawning, live reading, killing on timeout, logs and the exit code.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Lists `quick` (1 CPU), `pair` (2 CPUs) and `fault_page`; `mode=...` in the command line
/// changes how the run goes wrong.
const FAKE_QEMU: &str = r#"#!/bin/sh
if [ "$1" = "--version" ]; then echo "QEMU emulator version 0.0.0 (stand-in)"; exit 0; fi
cmdline=""; smp=1
while [ $# -gt 0 ]; do
  case "$1" in -append) cmdline="$2"; shift ;; -smp) smp="$2"; shift ;; esac
  shift
done
case " $cmdline " in
  *" mode=nolist "*) [ "${cmdline#test=list}" != "$cmdline" ] && exit 33 ;;
esac
case "$cmdline" in
  test=list*) printf '[cpu0] testcase quick smp>=1\n[cpu0] testcase pair smp>=2\ntestcase fault_page smp>=1 expect-fault\n'; exit 33 ;;
  test=fault_page*) printf '[cpu0] page fault: CR2 0x00000000dead0000, error 0x0\nbacktrace:\n  #0 0xffffffff80000000\n'; exit 35 ;;
esac
case " $cmdline " in
  *" mode=hang "*) printf '[cpu0] test quick ... '; exec sleep 30 ;;
esac
printf '[cpu0] test quick ... ok\n'
count=1
if [ "$smp" -ge 2 ]; then printf '[cpu1] test pair ... \033[32mok\033[0m\n'; count=2; fi
printf '%s passed, 0 failed\n' "$count"
case " $cmdline " in *" mode=reset "*) exit 0 ;; esac
exit 33
"#;

struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    fn new(name: &str) -> Sandbox {
        let dir = std::env::temp_dir().join(format!("ktest-{name}-{}", std::process::id()));
        // A folder left by an earlier, interrupted run of the same test is simply replaced.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp folder");
        let script = dir.join("fake-qemu");
        fs::write(&script, FAKE_QEMU).expect("write script");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod script");
        Sandbox { dir }
    }

    /// Runs the harness with the stand-in and returns (exit code, stdout lines).
    fn run(&self, extra: &[&str]) -> (Option<i32>, Vec<String>) {
        let script = self.dir.join("fake-qemu");
        let output = Command::new(env!("CARGO_BIN_EXE_ktest"))
            .arg("--qemu")
            .arg(&script)
            .arg("--kernel")
            .arg(&script)
            .arg("--log-dir")
            .arg(self.dir.join("logs"))
            .args(["--cpu", "qemu64", "--smp", "1,2"])
            .args(extra)
            .output()
            .expect("run ktest");
        let stdout = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(String::from)
            .collect();
        (output.status.code(), stdout)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Leftovers in the temp folder are harmless; a failure to remove them is no test failure.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_clean_run_passes_every_listed_test_in_every_configuration() {
    let sandbox = Sandbox::new("clean");
    let (code, lines) = sandbox.run(&[]);
    for expected in [
        "test smp1/quick ... ok",
        "test smp1/fault_page ... ok",
        "test smp2/pair ... ok",
        "test smp2/fault_page ... ok",
    ] {
        assert!(
            lines.iter().any(|line| line == expected),
            "missing {expected:?} in {lines:#?}"
        );
    }
    assert!(
        !lines.iter().any(|line| line == "test smp1/pair ... ok"),
        "pair needs 2 CPUs: {lines:#?}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("5 passed, 0 failed"));
    assert_eq!(code, Some(0));
    for log in ["list", "smp1", "smp1-fault_page", "smp2", "smp2-fault_page"] {
        assert!(
            sandbox
                .dir
                .join("logs")
                .join(format!("{log}.log"))
                .is_file(),
            "no log for {log}"
        );
    }
}

#[test]
fn a_hung_boot_is_killed_at_the_deadline_and_names_the_running_test() {
    let sandbox = Sandbox::new("hang");
    let started = Instant::now();
    let (code, lines) = sandbox.run(&["--smp", "1", "--timeout", "1", "--append", "mode=hang"]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the harness waited for the hung boot"
    );
    assert!(
        lines
            .iter()
            .any(|line| line == "test smp1/quick ... FAILED (timed out while running)"),
        "{lines:#?}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("1 passed, 1 failed"));
    assert_eq!(code, Some(1));
}

#[test]
fn passing_results_with_a_reset_exit_still_fail() {
    let sandbox = Sandbox::new("reset");
    let (code, lines) = sandbox.run(&["--smp", "1", "--append", "mode=reset"]);
    assert!(
        lines.iter().any(|line| line == "test smp1/quick ... ok"),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("test smp1/boot ... FAILED (QEMU exited 0")),
        "{lines:#?}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("2 passed, 1 failed"));
    assert_eq!(code, Some(1));
}

#[test]
fn a_kernel_without_tests_is_reported_and_not_a_pass() {
    let sandbox = Sandbox::new("nolist");
    let (code, lines) = sandbox.run(&["--append", "mode=nolist"]);
    assert!(
        lines.iter().any(|line| line.contains("lists no tests")),
        "{lines:#?}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("0 passed, 0 failed"));
    assert_eq!(code, Some(1));
}
