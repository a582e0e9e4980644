//! Reading the test kernel's serial console: bytes become lines, lines become [`Event`]s.
//!
//! The kernel prints one line per test (`test NAME ... ok`, `... FAILED` or `... skipped`), a
//! closing `N passed, N failed` (`, N skipped` may follow), and for `test=list` one
//! `testcase NAME smp>=K` per test, marked ` expect-fault` for a test that crashes the kernel on
//! purpose. Any of these may carry a prefix such as `[cpu3] ` or colour codes, so lines are
//! matched anywhere, never at their start. Key types: [`LineSplitter`] (bytes in, whole lines out, the unfinished line kept),
//! [`Event`] (what one line means) and [`Transcript`] (everything one boot said). The boot loop in
//! `qemu` feeds them; `verdict` judges the finished [`Transcript`].

use std::sync::LazyLock;

use regex_lite::Regex;

/// How one test ended, as the kernel reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    /// The kernel did not run the test (it needs more CPUs than came online).
    Skipped,
}

/// One `test NAME ... ok|FAILED|skipped` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestResult {
    pub name: String,
    pub outcome: Outcome,
}

/// One `testcase NAME smp>=K [expect-fault]` line of the kernel's test list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestCase {
    pub name: String,
    /// The fewest CPUs the test needs.
    pub min_cpus: u32,
    /// The test ends the boot with a fault report; it runs alone, selected by name.
    pub expect_fault: bool,
}

/// The kernel's closing `N passed, N failed[, N skipped]` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
}

/// What one serial line means to the harness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `test NAME ...` with no verdict (yet): the kernel has started NAME.
    Started(String),
    Result(TestResult),
    Listed(TestCase),
    Summary(Summary),
    /// Any other line: log output, fault reports, banners.
    Other,
}

static ANSI_ESCAPE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]").expect("valid regex"));
static RESULT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\btest (\S+) \.\.\. (ok|FAILED|skipped)\b").expect("valid regex")
});
static STARTED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\btest (\S+) \.\.\.").expect("valid regex"));
static LISTED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\btestcase (\S+) smp>=(\d+)( expect-fault)?").expect("valid regex")
});
static SUMMARY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(\d+) passed, (\d+) failed\b(?:, (\d+) skipped\b)?").expect("valid regex")
});

/// Removes terminal colour and cursor sequences, so a green `ok` still reads as `ok`.
pub fn strip_ansi(line: &str) -> std::borrow::Cow<'_, str> {
    ANSI_ESCAPE.replace_all(line, "")
}

/// Classifies one serial line (without its line break).
pub fn classify(line: &str) -> Event {
    let line = strip_ansi(line);
    if let Some(captures) = RESULT.captures(&line) {
        let outcome = match &captures[2] {
            "ok" => Outcome::Ok,
            "FAILED" => Outcome::Failed,
            _ => Outcome::Skipped,
        };
        return Event::Result(TestResult {
            name: captures[1].to_string(),
            outcome,
        });
    }
    if let Some(captures) = STARTED.captures(&line) {
        return Event::Started(captures[1].to_string());
    }
    if let Some(captures) = LISTED.captures(&line)
        && let Ok(min_cpus) = captures[2].parse()
    {
        return Event::Listed(TestCase {
            name: captures[1].to_string(),
            min_cpus,
            expect_fault: captures.get(3).is_some(),
        });
    }
    if let Some(captures) = SUMMARY.captures(&line)
        && let (Ok(passed), Ok(failed)) = (captures[1].parse(), captures[2].parse())
        && let Ok(skipped) = captures
            .get(3)
            .map_or(Ok(0), |count| count.as_str().parse())
    {
        return Event::Summary(Summary {
            passed,
            failed,
            skipped,
        });
    }
    Event::Other
}

/// Cuts a byte stream into lines; the unfinished last line stays readable through
/// [`LineSplitter::partial`] (the kernel prints `test NAME ... ` before running NAME).
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Takes the next bytes and returns every line they complete, without `\n` or `\r`.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(end) = self.pending.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            lines.push(decode_line(&line[..end]));
        }
        lines
    }

    /// The bytes after the last line break, as text.
    pub fn partial(&self) -> String {
        decode_line(&self.pending)
    }
}

fn decode_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches('\r')
        .to_string()
}

/// Everything one boot printed, in order, with the lines that matter picked out.
#[derive(Default)]
pub struct Transcript {
    /// The whole serial output, lines joined with `\n`.
    pub text: String,
    pub results: Vec<TestResult>,
    pub listed: Vec<TestCase>,
    pub summary: Option<Summary>,
    /// The last test started and not yet finished.
    running: Option<String>,
}

impl Transcript {
    /// Records one complete line and returns what it meant.
    pub fn feed(&mut self, line: &str) -> Event {
        self.text.push_str(line);
        self.text.push('\n');
        let event = classify(line);
        match &event {
            Event::Started(name) => self.running = Some(name.clone()),
            Event::Result(result) => {
                if self.running.as_deref() == Some(result.name.as_str()) {
                    self.running = None;
                }
                self.results.push(result.clone());
            }
            Event::Listed(case) => self.listed.push(case.clone()),
            Event::Summary(summary) => self.summary = Some(*summary),
            Event::Other => {}
        }
        event
    }

    /// The test in progress, judged from the complete lines and the unfinished one.
    pub fn running(&self, partial: &str) -> Option<String> {
        match classify(partial) {
            Event::Started(name) => Some(name),
            _ => self.running.clone(),
        }
    }

    /// The last `count` lines of output, for a failure report.
    pub fn tail(&self, count: usize) -> Vec<&str> {
        let lines: Vec<&str> = self.text.lines().collect();
        lines[lines.len().saturating_sub(count)..].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, outcome: Outcome) -> Event {
        Event::Result(TestResult {
            name: name.to_string(),
            outcome,
        })
    }

    #[test]
    fn result_lines_match_with_or_without_a_prefix() {
        assert_eq!(
            classify("test cpus_online ... ok"),
            result("cpus_online", Outcome::Ok)
        );
        assert_eq!(
            classify("[cpu3] test sched::ipi ... FAILED"),
            result("sched::ipi", Outcome::Failed)
        );
        assert_eq!(
            classify("12.5 [cpu0] test a ... ok (3 ms)"),
            result("a", Outcome::Ok)
        );
    }

    #[test]
    fn colour_codes_do_not_hide_a_result() {
        assert_eq!(
            classify("test a ... \x1b[32mok\x1b[0m"),
            result("a", Outcome::Ok)
        );
        assert_eq!(
            classify("\x1b[1m[cpu1]\x1b[0m test b ... \x1b[31mFAILED\x1b[0m"),
            result("b", Outcome::Failed)
        );
    }

    #[test]
    fn a_line_without_verdict_is_a_started_test() {
        assert_eq!(
            classify("[cpu0] test slow_one ... "),
            Event::Started("slow_one".to_string())
        );
        assert_eq!(
            classify("test slow_one ... okay"),
            Event::Started("slow_one".to_string())
        );
    }

    #[test]
    fn words_that_merely_contain_test_are_other_lines() {
        assert_eq!(classify("latest x ... ok"), Event::Other);
        assert_eq!(classify("test x .. ok"), Event::Other);
        assert_eq!(classify("running the tests"), Event::Other);
    }

    #[test]
    fn skipped_is_a_verdict_too() {
        assert_eq!(
            classify("test pair ... skipped (needs 2 CPUs, 1 online)"),
            result("pair", Outcome::Skipped)
        );
    }

    #[test]
    fn listing_lines_give_name_cpu_need_and_fault_mark() {
        assert_eq!(
            classify("[cpu0] testcase ipi_roundtrip smp>=2"),
            Event::Listed(TestCase {
                name: "ipi_roundtrip".to_string(),
                min_cpus: 2,
                expect_fault: false,
            })
        );
        assert_eq!(
            classify("testcase fault_page smp>=1 expect-fault"),
            Event::Listed(TestCase {
                name: "fault_page".to_string(),
                min_cpus: 1,
                expect_fault: true,
            })
        );
        assert_eq!(classify("testcase broken smp>=x"), Event::Other);
    }

    #[test]
    fn summary_line_is_read_with_a_prefix_and_optional_skips() {
        assert_eq!(
            classify("[cpu0] 7 passed, 1 failed"),
            Event::Summary(Summary {
                passed: 7,
                failed: 1,
                skipped: 0,
            })
        );
        assert_eq!(
            classify("7 passed, 0 failed, 2 skipped"),
            Event::Summary(Summary {
                passed: 7,
                failed: 0,
                skipped: 2,
            })
        );
        assert_eq!(classify("7 passed"), Event::Other);
    }

    #[test]
    fn splitter_returns_whole_lines_and_keeps_the_rest() {
        let mut splitter = LineSplitter::default();
        assert_eq!(splitter.push(b"test a ... o"), Vec::<String>::new());
        assert_eq!(splitter.partial(), "test a ... o");
        assert_eq!(
            splitter.push(b"k\r\ntest b ... ok\ntest c ..."),
            vec!["test a ... ok", "test b ... ok"]
        );
        assert_eq!(splitter.partial(), "test c ...");
    }

    #[test]
    fn splitter_survives_invalid_utf8() {
        let mut splitter = LineSplitter::default();
        assert_eq!(
            splitter.push(b"\xff test a ... ok\n"),
            vec!["\u{fffd} test a ... ok"]
        );
    }

    #[test]
    fn transcript_tracks_the_running_test() {
        let mut transcript = Transcript::default();
        transcript.feed("test a ... ");
        assert_eq!(transcript.running(""), Some("a".to_string()));
        transcript.feed("test a ... ok");
        assert_eq!(transcript.running(""), None);
        assert_eq!(
            transcript.running("[cpu1] test b ... "),
            Some("b".to_string())
        );
        transcript.feed("test c ... ");
        transcript.feed("some log line from c");
        assert_eq!(transcript.running("half a log li"), Some("c".to_string()));
    }

    #[test]
    fn transcript_collects_results_listing_and_summary() {
        let mut transcript = Transcript::default();
        for line in [
            "boot banner",
            "testcase a smp>=1",
            "test a ... ok",
            "test b ... FAILED",
            "1 passed, 1 failed",
        ] {
            transcript.feed(line);
        }
        assert_eq!(transcript.listed.len(), 1);
        assert_eq!(transcript.results.len(), 2);
        assert_eq!(transcript.results[1].outcome, Outcome::Failed);
        assert_eq!(
            transcript.summary,
            Some(Summary {
                passed: 1,
                failed: 1,
                skipped: 0,
            })
        );
        assert_eq!(
            transcript.tail(2),
            vec!["test b ... FAILED", "1 passed, 1 failed"]
        );
        assert_eq!(transcript.text.lines().count(), 5);
    }
}
