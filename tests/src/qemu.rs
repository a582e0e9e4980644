//! Running QEMU: one boot of the kernel with its serial console read live and a deadline.
//!
//! Key types: [`BootRequest`] (everything one boot needs) and [`BootRecord`] (what came of it).
//! [`boot`] starts QEMU with the serial port on a pipe and stdin closed (nothing ever waits for a
//! terminal), hands each serial line to `serial::Transcript` and to the caller as it arrives,
//! keeps the raw output in a log file, and kills QEMU when the deadline passes.
//! [`x2apic_emulated`] asks QEMU whether it can give a guest x2APIC.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::exit::{self, GuestExit};
use crate::serial::{Event, LineSplitter, Transcript};

/// The port and width of the exit device the kernel writes its exit code to.
const EXIT_DEVICE: &str = "isa-debug-exit,iobase=0xf4,iosize=0x04";

/// Everything one boot needs.
#[derive(Clone, Debug)]
pub struct BootRequest {
    pub qemu: String,
    /// `tcg` or `kvm`.
    pub accel: String,
    pub cpu_model: String,
    pub nr_cpus: u32,
    /// QEMU's `-m` argument, e.g. `512M`.
    pub mem: String,
    pub kernel: PathBuf,
    /// The initramfs, passed as `-initrd` (PVH module 0).
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub timeout: Duration,
    /// Where the raw serial output goes.
    pub log_path: PathBuf,
}

impl BootRequest {
    /// QEMU's arguments: direct (PVH) boot of the ELF, no devices beyond the board's own, the
    /// serial port on stdout, the exit device, and no reboot, so a triple fault ends QEMU.
    pub fn qemu_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "-machine",
            "q35",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
            "-device",
            EXIT_DEVICE,
        ]
        .map(String::from)
        .into();
        args.extend([
            "-accel".to_string(),
            self.accel.clone(),
            "-cpu".to_string(),
            self.cpu_model.clone(),
            "-smp".to_string(),
            self.nr_cpus.to_string(),
            "-m".to_string(),
            self.mem.clone(),
            "-kernel".to_string(),
            self.kernel.display().to_string(),
            "-append".to_string(),
            self.cmdline.clone(),
        ]);
        if let Some(initrd) = &self.initrd {
            args.extend(["-initrd".to_string(), initrd.display().to_string()]);
        }
        args
    }

    /// The command as a shell line, to repeat a boot by hand.
    pub fn shell_line(&self) -> String {
        let quoted: Vec<String> = self
            .qemu_args()
            .iter()
            .map(|arg| shell_quote(arg))
            .collect();
        format!("{} {}", self.qemu, quoted.join(" "))
    }
}

fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_=,.:/+".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// What came of one boot.
pub struct BootRecord {
    pub transcript: Transcript,
    pub exit: GuestExit,
    /// The test in progress when the deadline passed.
    pub running: Option<String>,
    /// QEMU's own error output.
    pub stderr: String,
    pub elapsed: Duration,
}

/// Boots once and waits for QEMU to exit or the deadline to pass. `on_event` sees every serial
/// line as it arrives. Fails only when QEMU cannot be started or the log cannot be written.
pub fn boot(
    request: &BootRequest,
    mut on_event: impl FnMut(&Event, &str),
) -> io::Result<BootRecord> {
    let started = Instant::now();
    let mut child = Command::new(&request.qemu)
        .args(request.qemu_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot start {}: {error}", request.qemu),
            )
        })?;
    let (chunks, stderr_reader) = spawn_readers(&mut child);
    let mut log = BufWriter::new(File::create(&request.log_path)?);
    let mut splitter = LineSplitter::default();
    let mut transcript = Transcript::default();
    let mut take = |bytes: &[u8], transcript: &mut Transcript| -> io::Result<()> {
        log.write_all(bytes)?;
        for line in splitter.push(bytes) {
            let event = transcript.feed(&line);
            on_event(&event, &line);
        }
        Ok(())
    };

    let deadline = started + request.timeout;
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match chunks.recv_timeout(left) {
            Ok(bytes) => take(&bytes, &mut transcript)?,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
        }
    }
    if timed_out {
        // QEMU may have exited in the same instant; a failed kill then changes nothing.
        let _ = child.kill();
    }
    let status = child.wait()?;
    // Whatever QEMU wrote before it died is still in the pipe.
    for bytes in chunks.iter() {
        take(&bytes, &mut transcript)?;
    }
    let rest = splitter.partial();
    if !rest.is_empty() {
        let event = transcript.feed(&rest);
        on_event(&event, &rest);
    }
    log.flush()?;
    let stderr = stderr_reader.join().unwrap_or_default();
    let (exit, running) = if timed_out {
        (GuestExit::TimedOut, transcript.running(""))
    } else {
        (exit::decode(status.code()), None)
    };
    Ok(BootRecord {
        transcript,
        exit,
        running,
        stderr,
        elapsed: started.elapsed(),
    })
}

/// Starts one thread that forwards QEMU's stdout in chunks (the channel closes at end of file)
/// and one that collects its stderr.
fn spawn_readers(child: &mut Child) -> (mpsc::Receiver<Vec<u8>>, thread::JoinHandle<String>) {
    let (sender, receiver) = mpsc::channel();
    let mut stdout = child.stdout.take().expect("stdout is piped");
    thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(count @ 1..) = stdout.read(&mut buffer) {
            if sender.send(buffer[..count].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stderr_reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        // A read error leaves what was read so far, which is all there is to show.
        let _ = stderr.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    (receiver, stderr_reader)
}

/// Asks QEMU whether `accel` can give the guest x2APIC: QEMU refuses to start with `enforce`
/// when the accelerator lacks a requested CPU feature. The probe starts a stopped machine and
/// quits it through the monitor.
pub fn x2apic_emulated(qemu: &str, accel: &str) -> io::Result<bool> {
    let mut child = Command::new(qemu)
        .args([
            "-accel",
            accel,
            "-cpu",
            "qemu64,+x2apic,enforce",
            "-S",
            "-nodefaults",
            "-display",
            "none",
        ])
        .args(["-monitor", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut monitor) = child.stdin.take() {
        // QEMU that refused the CPU has already exited and closed its stdin: that is an answer too.
        let _ = monitor.write_all(b"quit\n");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            child.wait()?;
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the x2APIC probe of QEMU did not quit",
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// QEMU's version line, e.g. `QEMU emulator version 7.2.22 (Debian ...)`.
pub fn version(qemu: &str) -> io::Result<String> {
    let output = Command::new(qemu)
        .arg("--version")
        .stdin(Stdio::null())
        .output()?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or("unknown version")
        .to_string())
}

/// The log file of one boot.
pub fn log_path(dir: &Path, stem: &str) -> PathBuf {
    dir.join(format!("{stem}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> BootRequest {
        BootRequest {
            qemu: "qemu-system-x86_64".to_string(),
            accel: "tcg".to_string(),
            cpu_model: "qemu64,+x2apic".to_string(),
            nr_cpus: 4,
            mem: "512M".to_string(),
            kernel: PathBuf::from("target/kernel-test.elf"),
            initrd: None,
            cmdline: "test=all loglevel=debug".to_string(),
            timeout: Duration::from_secs(5),
            log_path: PathBuf::from("unused.log"),
        }
    }

    #[test]
    fn arguments_carry_the_configuration_and_the_exit_device() {
        let args = request().qemu_args();
        let after = |flag: &str| {
            args.iter()
                .position(|arg| arg == flag)
                .map(|at| args[at + 1].as_str())
        };
        assert_eq!(after("-smp"), Some("4"));
        assert_eq!(after("-cpu"), Some("qemu64,+x2apic"));
        assert_eq!(after("-m"), Some("512M"));
        assert_eq!(after("-append"), Some("test=all loglevel=debug"));
        assert_eq!(after("-device"), Some(EXIT_DEVICE));
        assert_eq!(after("-serial"), Some("stdio"));
        assert!(args.iter().any(|arg| arg == "-no-reboot"));
    }

    #[test]
    fn the_shell_line_quotes_what_needs_it() {
        let line = request().shell_line();
        assert!(line.starts_with("qemu-system-x86_64 -machine q35"));
        assert!(line.contains("-append 'test=all loglevel=debug'"));
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
