//! The scripted shell session: types commands into busybox `sh` and checks what comes back, on
//! our kernel (the serial console of a QEMU whose stdin and stdout are pipes) and on the host
//! Linux (the same busybox on a pseudo-terminal), so every expected answer is Linux's too.
//!
//! ```text
//!  boot (or spawn) --> first prompt --> PS1=SHELL_PROMPT> ; stty cols 1000 --> prompt
//!  per step: type `send` + CR [Ctrl-C after interrupt_after_s] --> read to the next prompt
//!            output = what came between the echoed command line and that prompt
//!            (CRs, escape sequences and the kernel's `[cpuN] ` log lines removed)
//!            test NAME ... ok | FAILED: the output, when `expect` does not match it
//!  a step marked `ends`: the shell must end; its report is "status N" (the kernel's line saying
//!  how init ended, or the host process's exit status)
//! ```
//!
//! A step whose prompt never comes fails; the harness then types Ctrl-C and Enter to get a prompt
//! back and goes on, so one missing system call costs one step, not the session. The window is
//! made 1000 columns wide first, so no command line wraps in busybox's line editor.
//!
//! The session is `user/shell/session.toml` (its header says what each field means).

use std::{
    fs,
    io::{Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use regex_lite::Regex;
use serde::Deserialize;

/// One typed command and what its answer must match.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    pub send: String,
    pub expect: String,
    #[serde(default)]
    pub interrupt_after_s: Option<f64>,
    #[serde(default)]
    pub timeout_s: Option<u64>,
    #[serde(default)]
    pub kernel_only: bool,
    #[serde(default)]
    pub ends: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Session {
    step: Vec<Step>,
}

/// The session's steps, their patterns checked.
pub fn load(path: &Path) -> Result<Vec<Step>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let session: Session = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    for s in &session.step {
        Regex::new(&s.expect).map_err(|e| format!("{}: step {}: {e}", path.display(), s.name))?;
    }
    Ok(session.step)
}

/// The prompt the harness sets: typed as `${P}_PROMPT> ` so that the echo of the command that sets
/// it never contains it.
const PROMPT: &str = "SHELL_PROMPT> ";
const SET_PROMPT: &str = "P=SHELL; PS1=\"${P}_PROMPT> \"; stty cols 1000 rows 50";
/// Any shell's first prompt: `# ` or `$ ` at the end of what was printed.
const FIRST_PROMPT: &str = r"[#$] \s*\z";
/// The kernel's log lines, dropped from the output.
pub const KERNEL_LOG_LINE: &str = r"(?m)^\[cpu[0-9]+\] [^\n]*\n";
/// The kernel's report of how init ended.
const INIT_ENDED: &str = r"init: \S+ (exited with status|was killed by signal) ([0-9]+)";

/// A shell at the other end of a byte stream.
struct Terminal {
    input: Box<dyn Write + Send>,
    output: Receiver<Vec<u8>>,
    child: Child,
    /// What arrived since the last prompt was cut off.
    pending: Vec<u8>,
    /// Everything that arrived, for the log file.
    log: Vec<u8>,
    drop: Vec<Regex>,
}

/// A step's prompt never came.
struct NoPrompt {
    got: String,
    ended: bool,
}

impl Terminal {
    fn new(
        input: Box<dyn Write + Send>,
        mut output: Box<dyn Read + Send>,
        child: Child,
        drop: Vec<Regex>,
    ) -> Terminal {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match output.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Terminal {
            input,
            output: rx,
            child,
            pending: Vec::new(),
            log: Vec::new(),
            drop,
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.input
            .write_all(bytes)
            .and_then(|()| self.input.flush())
            .map_err(|e| format!("typing into the shell: {e}"))
    }

    /// What arrived since the last prompt, cleaned.
    fn text(&self) -> String {
        clean(&String::from_utf8_lossy(&self.pending), &self.drop)
    }

    /// Read until the cleaned text ends with a match of `prompt`; returns the text before it.
    fn until(&mut self, prompt: &Regex, timeout: Duration) -> Result<String, NoPrompt> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text();
            if let Some(m) = prompt.find(&text) {
                self.pending.clear();
                return Ok(text[..m.start()].to_string());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) => {
                    self.log.extend_from_slice(&bytes);
                    self.pending.extend_from_slice(&bytes);
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(NoPrompt {
                        got: text,
                        ended: false,
                    });
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(NoPrompt {
                        got: text,
                        ended: true,
                    });
                }
            }
        }
    }

    /// Read to the end of the stream (the shell, or the machine, ended), at most `timeout`.
    fn until_end(&mut self, timeout: Duration) -> (String, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) => {
                    self.log.extend_from_slice(&bytes);
                    self.pending.extend_from_slice(&bytes);
                }
                Err(RecvTimeoutError::Timeout) => return (self.text(), false),
                Err(RecvTimeoutError::Disconnected) => return (self.text(), true),
            }
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CRs, escape sequences (CSI and two-byte ones), backspace-erasures and the `drop` patterns out.
pub fn clean(raw: &str, drop: &[Regex]) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' | '\x07' => {}
            '\x08' => {
                out.pop();
            }
            '\x1b' => match chars.next() {
                Some('[') => {
                    // Parameters and intermediates, then one final byte in @..~.
                    for f in chars.by_ref() {
                        if ('@'..='~').contains(&f) {
                            break;
                        }
                    }
                }
                Some('(' | ')') => {
                    chars.next();
                }
                _ => {}
            },
            _ => out.push(c),
        }
    }
    for d in drop {
        out = d.replace_all(&out, "").into_owned();
    }
    out
}

/// A step's answer: what follows the echoed command line, trailing blank space trimmed. Blank
/// lines before the echo (the console starts a kernel log line on a fresh line, and the log line
/// itself is dropped) are not the echo.
pub fn answer(segment: &str) -> &str {
    let segment = segment.trim_start_matches('\n');
    let after_echo = segment.split_once('\n').map_or("", |(_, rest)| rest);
    after_echo.trim_end()
}

/// Where a session runs.
pub enum Target {
    /// Our kernel in QEMU: the QEMU command line without `-append`, and the kernel command line.
    Kernel {
        qemu: String,
        args: Vec<String>,
        cmdline: String,
        smp: u32,
    },
    /// Busybox on the host, on a pty, from `cwd`, with `path_dir` as its whole PATH.
    Host {
        busybox: PathBuf,
        path_dir: PathBuf,
        cwd: PathBuf,
    },
}

impl Target {
    fn label(&self) -> String {
        match self {
            Target::Kernel { smp, .. } => format!("smp{smp}"),
            Target::Host { .. } => "host".into(),
        }
    }
}

/// Options of a session run.
pub struct Run<'a> {
    pub steps: &'a [Step],
    pub only: &'a [String],
    pub timeout: Duration,
    pub boot_timeout: Duration,
    pub drop: &'a [Regex],
    pub log: PathBuf,
}

fn start(target: &Target, drop: Vec<Regex>) -> Result<Terminal, String> {
    match target {
        Target::Kernel {
            qemu,
            args,
            cmdline,
            ..
        } => {
            let mut child = Command::new(qemu)
                .args(args)
                .arg("-append")
                .arg(cmdline)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("{qemu}: {e}"))?;
            let input = Box::new(child.stdin.take().expect("stdin is piped"));
            let output = Box::new(child.stdout.take().expect("stdout is piped"));
            Ok(Terminal::new(input, output, child, drop))
        }
        Target::Host {
            busybox,
            path_dir,
            cwd,
        } => {
            use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
            let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
                .map_err(|e| format!("openpt: {e}"))?;
            grantpt(&master).map_err(|e| format!("grantpt: {e}"))?;
            unlockpt(&master).map_err(|e| format!("unlockpt: {e}"))?;
            let name = ptsname(&master, Vec::new()).map_err(|e| format!("ptsname: {e}"))?;
            let name = name.to_string_lossy().into_owned();
            // O_NOCTTY: the pty becomes the shell's controlling terminal (setsid -c), not ours.
            let slave = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
                .open(&name)
                .map_err(|e| format!("{name}: {e}"))?;
            // Signals ignored where the harness started (a job run with `&` by a script ignores
            // SIGINT and SIGQUIT) would stay ignored in the shell's children, and Ctrl-C would
            // not end `sleep`: coreutils' env gives the session their default actions back.
            let child = Command::new("/usr/bin/env")
                .arg("--default-signal=INT,QUIT,TSTP,TTIN,TTOU")
                .arg("setsid")
                .arg("-c")
                .arg(busybox)
                .arg("sh")
                .env_clear()
                .env("PATH", path_dir)
                .env("HOME", "/")
                .env("TERM", "linux")
                .current_dir(cwd)
                .stdin(slave.try_clone().map_err(|e| e.to_string())?)
                .stdout(slave.try_clone().map_err(|e| e.to_string())?)
                .stderr(slave)
                .spawn()
                .map_err(|e| format!("setsid -c {}: {e}", busybox.display()))?;
            let master = fs::File::from(master);
            let reader = master.try_clone().map_err(|e| e.to_string())?;
            Ok(Terminal::new(
                Box::new(master),
                Box::new(reader),
                child,
                drop,
            ))
        }
    }
}

/// One session on `target`; prints a line per step and returns (passed, failed).
pub fn session(target: &Target, run: &Run<'_>) -> Result<(u32, u32), String> {
    let label = target.label();
    let mut term = start(target, run.drop.to_vec())?;
    let prompt = Regex::new(&format!("{}\\s*\\z", regex_lite::escape(PROMPT))).expect("valid");
    let (mut passed, mut failed) = (0u32, 0u32);
    let mut result = (|| -> Result<(), String> {
        let first = Regex::new(FIRST_PROMPT).expect("valid");
        if let Err(e) = term.until(&first, run.boot_timeout) {
            let why = if e.ended {
                "the console ended before a shell prompt".to_string()
            } else {
                format!("no shell prompt within {} s", run.boot_timeout.as_secs())
            };
            return Err(format!("{why}; the last lines:\n{}", tail(&e.got, 15)));
        }
        // Type at once, as a paste or a fast typist does: input that arrives while busybox goes
        // to sleep in its first poll is part of what this tests (it once froze the console, when
        // the interrupt came while that poll made its wait queue on first use).
        term.send(format!("{SET_PROMPT}\r").as_bytes())?;
        if let Err(e) = term.until(&prompt, run.timeout) {
            return Err(format!(
                "the prompt could not be set:\n{}",
                tail(&e.got, 15)
            ));
        }
        let ended_re = Regex::new(INIT_ENDED).expect("valid");
        for step in run.steps {
            let chosen = run.only.is_empty() || run.only.iter().any(|o| o == &step.name);
            let on_target = !(step.kernel_only && matches!(target, Target::Host { .. }));
            if !chosen || !on_target {
                continue;
            }
            let name = format!("{label}/{}", step.name);
            let expect = Regex::new(&step.expect).expect("checked by load");
            let timeout = step.timeout_s.map_or(run.timeout, Duration::from_secs);
            term.send(format!("{}\r", step.send).as_bytes())?;
            if let Some(after) = step.interrupt_after_s {
                thread::sleep(Duration::from_secs_f64(after));
                term.send(b"\x03")?;
            }
            if step.ends {
                let (_, ended) = term.until_end(timeout);
                // The kernel's report is one of its log lines: read it before they are dropped.
                let text = String::from_utf8_lossy(&term.pending).into_owned();
                let status = match target {
                    Target::Kernel { .. } => {
                        ended_re.captures_iter(&text).last().map(|c| match &c[1] {
                            "exited with status" => format!("status {}", &c[2]),
                            _ => format!("signal {}", &c[2]),
                        })
                    }
                    Target::Host { .. } => term.child.wait().ok().map(|s| match s.code() {
                        Some(code) => format!("status {code}"),
                        None => "signal".into(),
                    }),
                };
                match status {
                    Some(s) if ended && expect.is_match(&s) => {
                        println!("test {name} ... ok");
                        passed += 1;
                    }
                    other => {
                        println!(
                            "test {name} ... FAILED: the shell {}; report {:?}, wanted /{}/",
                            if ended { "ended" } else { "did not end" },
                            other,
                            step.expect
                        );
                        failed += 1;
                    }
                }
                return Ok(());
            }
            match term.until(&prompt, timeout) {
                Ok(segment) => {
                    let got = answer(&segment);
                    if expect.is_match(got) {
                        println!("test {name} ... ok");
                        passed += 1;
                    } else {
                        println!(
                            "test {name} ... FAILED: wanted /{}/, got:\n{}",
                            step.expect,
                            indent(got)
                        );
                        failed += 1;
                    }
                }
                Err(e) => {
                    println!(
                        "test {name} ... FAILED: no prompt within {} s{}; got:\n{}",
                        timeout.as_secs(),
                        if e.ended { " (the shell ended)" } else { "" },
                        indent(&tail(&e.got, 10))
                    );
                    failed += 1;
                    if e.ended {
                        return Err("the shell ended before the session did".into());
                    }
                    // Get a prompt back: interrupt whatever runs, then an empty line.
                    term.send(b"\x03\r")?;
                    if term.until(&prompt, run.timeout).is_err() {
                        return Err("no prompt after Ctrl-C and Enter either".into());
                    }
                }
            }
        }
        Ok(())
    })();
    if let Some(dir) = run.log.parent() {
        let _ = fs::create_dir_all(dir);
    }
    let _ = fs::write(&run.log, &term.log);
    if let Err(why) = result.as_mut() {
        println!(
            "test {label}/session ... FAILED: {why}\n  log: {}",
            run.log.display()
        );
        failed += 1;
    }
    Ok((passed, failed))
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  | {l}\n"))
        .collect::<String>()
}

/// A folder of links for the host run: one per busybox applet, to `busybox`, and the `tools`.
pub fn host_path_dir(dir: &Path, busybox: &Path, tools: &[PathBuf]) -> Result<(), String> {
    let busybox = fs::canonicalize(busybox).map_err(|e| format!("{}: {e}", busybox.display()))?;
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let list = Command::new(&busybox)
        .arg("--list")
        .output()
        .map_err(|e| format!("{} --list: {e}", busybox.display()))?;
    let link = |target: &Path, name: &str| {
        std::os::unix::fs::symlink(target, dir.join(name)).map_err(|e| format!("{name}: {e}"))
    };
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        link(&busybox, applet.trim())?;
    }
    for tool in tools {
        let abs = fs::canonicalize(tool).map_err(|e| format!("{}: {e}", tool.display()))?;
        let name = tool.file_name().and_then(|n| n.to_str()).unwrap_or("tool");
        let _ = fs::remove_file(dir.join(name));
        link(&abs, name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_removes_crs_escapes_erasures_and_log_lines() {
        let drop = [Regex::new(KERNEL_LOG_LINE).unwrap()];
        let raw = "ab\x08c\r\n\x1b[6n\x1b[1;32mgreen\x1b[0m\r\n[cpu1] warning: x\r\nend";
        assert_eq!(clean(raw, &drop), "ac\ngreen\nend");
    }

    #[test]
    fn the_answer_follows_the_echoed_command() {
        assert_eq!(answer("echo hi\nhi\n"), "hi");
        assert_eq!(answer("sleep 100\n^C\n"), "^C");
        assert_eq!(answer("true\n"), "");
        assert_eq!(answer(""), "");
        assert_eq!(answer("\necho hi\nhi\n"), "hi", "a dropped log line's fresh line");
    }

    #[test]
    fn the_session_file_loads_and_its_patterns_compile() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shell/session.toml");
        let steps = load(&path).unwrap();
        assert!(steps.iter().any(|s| s.name == "pipeline"));
        assert!(
            steps.last().is_some_and(|s| s.ends),
            "the session ends the shell"
        );
        let pipeline = steps.iter().find(|s| s.name == "pipeline").unwrap();
        assert!(
            Regex::new(&pipeline.expect)
                .unwrap()
                .is_match("1000\n999\n998")
        );
    }

    #[test]
    fn the_prompt_setter_never_echoes_the_prompt() {
        assert!(!SET_PROMPT.contains(PROMPT));
    }

    #[test]
    fn a_busybox_session_on_the_host_pty() {
        // Only where busybox is installed on the host (Debian's busybox-static or busybox).
        let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
        else {
            return;
        };
        let dir = std::env::temp_dir().join(format!("shell-test-{}", std::process::id()));
        host_path_dir(&dir.join("bin"), busybox, &[]).unwrap();
        let steps = vec![
            Step {
                name: "echo".into(),
                send: "echo a b".into(),
                expect: "^a b$".into(),
                interrupt_after_s: None,
                timeout_s: None,
                kernel_only: false,
                ends: false,
            },
            Step {
                name: "wrong".into(),
                send: "echo x".into(),
                expect: "^y$".into(),
                interrupt_after_s: None,
                timeout_s: None,
                kernel_only: false,
                ends: false,
            },
            Step {
                name: "exit".into(),
                send: "exit 4".into(),
                expect: "^status 4$".into(),
                interrupt_after_s: None,
                timeout_s: None,
                kernel_only: false,
                ends: true,
            },
        ];
        let target = Target::Host {
            busybox: busybox.to_path_buf(),
            path_dir: dir.join("bin"),
            cwd: dir.clone(),
        };
        let run = Run {
            steps: &steps,
            only: &[],
            timeout: Duration::from_secs(20),
            boot_timeout: Duration::from_secs(20),
            drop: &[],
            log: dir.join("log"),
        };
        let counts = session(&target, &run).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(counts, (2, 1), "echo and exit pass, the wrong answer fails");
    }
}
