//! Running one program on the host Linux: stdin from /dev/null, stdout and stderr captured, a
//! deadline, optionally restricted to some CPUs (through util-linux's `taskset`, so this crate
//! needs no unsafe `sched_setaffinity`), and how it ended.

use std::{
    io::Read,
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::manifest::Expect;

/// What one run gave.
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    /// How it ended; None when it was killed at the deadline.
    pub ended: Option<Expect>,
    pub elapsed: Duration,
}

/// Runs `binary args` to its end or its deadline; `cpus` is a taskset CPU list such as `0` or `0-3`.
pub fn run(
    binary: &Path,
    args: &[String],
    cpus: Option<&str>,
    timeout: Duration,
) -> Result<Run, String> {
    let mut command = match cpus {
        Some(list) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(list).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    // Readers on their own threads, so a program that fills a pipe never stalls on it.
    let out_reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = out.read_to_end(&mut bytes);
        bytes
    });
    let err_reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = err.read_to_end(&mut bytes);
        bytes
    });
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    let ended = status.map(|s| match (s.code(), s.signal()) {
        (Some(code), _) => Expect::Exit(code),
        (None, Some(signal)) => Expect::Signal(signal),
        (None, None) => Expect::Exit(-1),
    });
    Ok(Run {
        stdout,
        stderr,
        ended,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Duration) -> Run {
        run(
            Path::new("/bin/sh"),
            &["-c".to_string(), script.to_string()],
            None,
            timeout,
        )
        .unwrap()
    }

    #[test]
    fn exit_status_and_output_are_captured() {
        let r = sh("echo out; echo err >&2; exit 3", Duration::from_secs(30));
        assert_eq!(r.ended, Some(Expect::Exit(3)));
        assert_eq!(r.stdout, "out\n");
        assert_eq!(r.stderr, "err\n");
    }

    #[test]
    fn death_by_a_signal_is_told_apart_from_an_exit() {
        let r = sh("echo before; kill -SEGV $$", Duration::from_secs(30));
        assert_eq!(r.ended, Some(Expect::Signal(11)));
        assert_eq!(r.stdout, "before\n");
    }

    #[test]
    fn a_program_past_its_deadline_is_killed() {
        let r = sh("exec sleep 30", Duration::from_millis(200));
        assert_eq!(r.ended, None);
    }

    #[test]
    fn stdin_is_empty() {
        let r = sh("cat; echo done", Duration::from_secs(30));
        assert_eq!(r.ended, Some(Expect::Exit(0)));
        assert_eq!(r.stdout, "done\n");
    }
}
