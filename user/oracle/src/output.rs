//! What a program printed: its compared lines, its verdict line, and its output found in a
//! kernel's serial log.
//!
//! The convention (user/README.md): a line starting with `# ` (or a lone `#`) is information and
//! is never compared; every other line is. A program's output starts with `start NAME` and, when
//! it ends normally, finishes with `ok NAME` or `FAILED NAME: why`.

use regex_lite::Regex;

/// The lines that must be identical on Linux and on our kernel, carriage returns removed.
pub fn compared_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !(line.starts_with("# ") || *line == "#"))
        .map(str::to_string)
        .collect()
}

/// The verdict among compared lines: `Ok(())` when the last is `ok NAME`, else why not.
pub fn verdict(name: &str, lines: &[String]) -> Result<(), String> {
    match lines.last() {
        Some(last) if *last == format!("ok {name}") => Ok(()),
        Some(last) if last.starts_with(&format!("FAILED {name}")) => Err(last.clone()),
        Some(last) => Err(format!("its last line is {last:?}, not \"ok {name}\"")),
        None => Err("it printed nothing".to_string()),
    }
}

/// The kernel's own log lines, which may fall between a program's lines on the serial console.
pub const KERNEL_LOG: &str = r"^\[cpu[0-9]+\] ";

/// A program's compared lines cut from a serial log: from its last `start NAME` line up to its
/// `ok NAME` or `FAILED NAME...` line (or the end of the log, for a program that died), without
/// the lines that `ignore` matches.
pub fn from_serial(log: &str, name: &str, ignore: &[Regex]) -> Option<Vec<String>> {
    let start = format!("start {name}");
    let lines: Vec<&str> = log
        .lines()
        .map(|line| line.trim_end_matches('\r'))
        .collect();
    let first = lines.iter().rposition(|line| *line == start)?;
    let ok = format!("ok {name}");
    let failed = format!("FAILED {name}");
    let mut out = Vec::new();
    for line in &lines[first..] {
        if ignore.iter().any(|re| re.is_match(line)) {
            continue;
        }
        out.extend(compared_lines(line));
        if *line == ok || line.starts_with(&failed) {
            break;
        }
    }
    Some(out)
}

/// A line-by-line difference, `-` for expected and `+` for got, or None when they are equal.
pub fn diff(expected: &[String], got: &[String]) -> Option<String> {
    if expected == got {
        return None;
    }
    let mut text = String::new();
    for i in 0..expected.len().max(got.len()) {
        match (expected.get(i), got.get(i)) {
            (Some(e), Some(g)) if e == g => text.push_str(&format!("  {e}\n")),
            (e, g) => {
                if let Some(e) = e {
                    text.push_str(&format!("- {e}\n"));
                }
                if let Some(g) = g {
                    text.push_str(&format!("+ {g}\n"));
                }
            }
        }
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn information_lines_are_not_compared() {
        let lines = compared_lines("start x\r\n# took 5 ms\n#\nline\n#not-info\nok x\n");
        assert_eq!(lines, strings(&["start x", "line", "#not-info", "ok x"]));
    }

    #[test]
    fn verdicts() {
        assert!(verdict("x", &strings(&["start x", "ok x"])).is_ok());
        assert_eq!(
            verdict("x", &strings(&["start x", "FAILED x: line 3"])).unwrap_err(),
            "FAILED x: line 3"
        );
        assert!(verdict("x", &strings(&["start x", "ok y"])).is_err());
        assert!(verdict("x", &[]).is_err());
    }

    #[test]
    fn serial_extraction_skips_kernel_lines_and_stops_at_the_verdict() {
        let log = "boot banner\n[cpu0] info: booting\nstart x\r\n[cpu1] warning: unknown syscall 500\n\
                   a line\n# 3 ms\nok x\n[cpu0] info: init exited\nstart y\n";
        let ignore = [Regex::new(KERNEL_LOG).unwrap()];
        assert_eq!(
            from_serial(log, "x", &ignore).unwrap(),
            strings(&["start x", "a line", "ok x"])
        );
        assert_eq!(
            from_serial(log, "y", &ignore).unwrap(),
            strings(&["start y"])
        );
        assert!(from_serial(log, "z", &ignore).is_none());
    }

    #[test]
    fn serial_extraction_of_a_program_that_died() {
        let log = "start fault_ud\nexecuting ud2\n[cpu0] user fault: pid 1 #UD\n";
        let ignore = [Regex::new(KERNEL_LOG).unwrap()];
        assert_eq!(
            from_serial(log, "fault_ud", &ignore).unwrap(),
            strings(&["start fault_ud", "executing ud2"])
        );
    }

    #[test]
    fn diffs() {
        assert!(diff(&strings(&["a", "b"]), &strings(&["a", "b"])).is_none());
        assert_eq!(
            diff(&strings(&["a", "b"]), &strings(&["a", "c", "d"])).unwrap(),
            "  a\n- b\n+ c\n+ d\n"
        );
    }
}
