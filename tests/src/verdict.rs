//! Judging a finished boot: did every selected test report, does the exit code agree with the
//! results, did an expected fault print its report?
//!
//! Key types: [`Finding`] (one pass or failure that the harness adds to what the kernel printed)
//! and [`SuiteVerdict`] (the counts of a test boot plus its findings). Inputs are the
//! `serial::Transcript` of the boot and its `exit::GuestExit`; `main` prints the verdicts. Pure
//! functions only, so every rule is unit-tested here.

use std::collections::HashSet;

use crate::exit::GuestExit;
use crate::plan::FaultSpec;
use crate::serial::{Outcome, TestCase, Transcript};

/// One line of the harness's own verdict: `test LABEL/NAME ... ok|FAILED (note)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub name: String,
    pub passed: bool,
    pub note: Option<String>,
}

impl Finding {
    fn failed(name: &str, note: String) -> Finding {
        Finding {
            name: name.to_string(),
            passed: false,
            note: Some(note),
        }
    }
}

/// The name of the finding that carries problems of a boot as a whole.
pub const BOOT_FINDING: &str = "boot";

/// The judgement of one boot of ordinary tests.
#[derive(Debug, PartialEq, Eq)]
pub struct SuiteVerdict {
    /// Result lines that said `ok`.
    pub passed: u32,
    /// Result lines that said `FAILED`, plus every failing finding.
    pub failed: u32,
    /// What the harness adds: selected tests that never reported, and at most one
    /// [`BOOT_FINDING`] for an exit code or summary that contradicts the results.
    pub findings: Vec<Finding>,
}

/// Judges a boot that ran `selected`. `running` is the test in progress when the boot timed out.
pub fn judge_suite(
    selected: &[String],
    transcript: &Transcript,
    exit: GuestExit,
    running: Option<&str>,
) -> SuiteVerdict {
    let wanted: HashSet<&str> = selected.iter().map(String::as_str).collect();
    let mut seen = HashSet::new();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut duplicates = Vec::new();
    let mut unexpected = Vec::new();
    let mut findings = Vec::new();
    for result in &transcript.results {
        match result.outcome {
            Outcome::Ok => passed += 1,
            Outcome::Failed => failed += 1,
            Outcome::Skipped => skipped += 1,
        }
        if !wanted.contains(result.name.as_str()) {
            unexpected.push(result.name.as_str());
        } else if !seen.insert(result.name.as_str()) {
            duplicates.push(result.name.as_str());
        } else if result.outcome == Outcome::Skipped {
            // Only tests the configuration has CPUs for are selected: a skip means CPUs went missing.
            let note = "skipped by the kernel although QEMU was given enough CPUs".to_string();
            findings.push(Finding::failed(&result.name, note));
        }
    }

    let missing: Vec<&String> = selected
        .iter()
        .filter(|name| !seen.contains(name.as_str()))
        .collect();
    for name in &missing {
        let note = match (exit, running) {
            (GuestExit::TimedOut, Some(current)) if current == name.as_str() => {
                "timed out while running".to_string()
            }
            (GuestExit::TimedOut, Some(current)) => {
                format!("never ran: the boot timed out in {current}")
            }
            (GuestExit::TimedOut, None) => {
                "never ran: the boot timed out outside any test".to_string()
            }
            (other, _) => format!("no result before the boot ended: {other}"),
        };
        findings.push(Finding::failed(name, note));
    }

    let mut problems = Vec::new();
    let any_failed = transcript
        .results
        .iter()
        .any(|result| result.outcome == Outcome::Failed);
    if missing.is_empty() {
        match exit {
            GuestExit::Success if any_failed => problems.push("a test failed but the kernel reported success".to_string()),
            GuestExit::Failure if !any_failed => problems.push("every test passed but the kernel reported failure".to_string()),
            GuestExit::Success | GuestExit::Failure => match transcript.summary {
                None => problems.push("no closing 'N passed, N failed' line".to_string()),
                Some(summary) if (summary.passed, summary.failed, summary.skipped) != (passed, failed, skipped) => {
                    problems.push(format!(
                        "the kernel's summary says {} passed, {} failed, {} skipped; its result lines say \
                         {passed} passed, {failed} failed, {skipped} skipped",
                        summary.passed, summary.failed, summary.skipped
                    ))
                }
                Some(_) => {}
            },
            other => problems.push(other.to_string()),
        }
    }
    if !duplicates.is_empty() {
        problems.push(format!(
            "reported more than once: {}",
            duplicates.join(", ")
        ));
    }
    if !unexpected.is_empty() {
        problems.push(format!(
            "reported but not selected: {}",
            unexpected.join(", ")
        ));
    }
    if !problems.is_empty() {
        findings.push(Finding::failed(BOOT_FINDING, problems.join("; ")));
    }

    failed += findings.iter().filter(|finding| !finding.passed).count() as u32;
    SuiteVerdict {
        passed,
        failed,
        findings,
    }
}

/// Judges the boot of one expected-fault test: it passes when the kernel exited with the
/// failure code and its output holds every piece of the expected report.
pub fn judge_fault(
    name: &str,
    spec: Option<&FaultSpec>,
    transcript: &Transcript,
    exit: GuestExit,
) -> Finding {
    let Some(spec) = spec else {
        return Finding::failed(
            name,
            "the harness knows no report to expect from this expected-fault test".to_string(),
        );
    };
    let text = transcript.text.to_lowercase();
    let absent: Vec<String> = spec
        .pieces
        .iter()
        .filter(|piece| !text.contains(&piece.to_lowercase()))
        .map(|piece| format!("'{piece}'"))
        .collect();
    let mut problems = Vec::new();
    if exit != GuestExit::Failure {
        problems.push(format!("expected the failure exit code, got: {exit}"));
    }
    if !absent.is_empty() {
        problems.push(format!("the fault report lacks {}", absent.join(", ")));
    }
    if problems.is_empty() {
        Finding {
            name: name.to_string(),
            passed: true,
            note: None,
        }
    } else {
        Finding::failed(name, problems.join("; "))
    }
}

/// Judges the `test=list` boot and returns the listed tests (possibly none).
pub fn judge_listing(transcript: &Transcript, exit: GuestExit) -> Result<Vec<TestCase>, String> {
    if exit != GuestExit::Success {
        return Err(format!("the test=list boot did not end in success: {exit}"));
    }
    let mut names = HashSet::new();
    for case in &transcript.listed {
        if !names.insert(case.name.as_str()) {
            return Err(format!("the kernel lists {} twice", case.name));
        }
    }
    Ok(transcript.listed.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fault_spec;

    fn transcript(lines: &[&str]) -> Transcript {
        let mut transcript = Transcript::default();
        for line in lines {
            transcript.feed(line);
        }
        transcript
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn a_clean_boot_counts_every_result_and_adds_nothing() {
        let serial = transcript(&[
            "[cpu0] test a ... ok",
            "[cpu1] test b ... ok",
            "2 passed, 0 failed",
        ]);
        let verdict = judge_suite(&names(&["a", "b"]), &serial, GuestExit::Success, None);
        assert_eq!(
            verdict,
            SuiteVerdict {
                passed: 2,
                failed: 0,
                findings: vec![]
            }
        );
    }

    #[test]
    fn a_reported_failure_with_the_failure_code_is_one_failure() {
        let serial = transcript(&["test a ... ok", "test b ... FAILED", "1 passed, 1 failed"]);
        let verdict = judge_suite(&names(&["a", "b"]), &serial, GuestExit::Failure, None);
        assert_eq!(
            verdict,
            SuiteVerdict {
                passed: 1,
                failed: 1,
                findings: vec![]
            }
        );
    }

    #[test]
    fn a_timeout_names_the_running_test_and_fails_the_rest() {
        let serial = transcript(&["test a ... ok", "test b ... "]);
        let verdict = judge_suite(
            &names(&["a", "b", "c"]),
            &serial,
            GuestExit::TimedOut,
            Some("b"),
        );
        assert_eq!((verdict.passed, verdict.failed), (1, 2));
        assert_eq!(
            verdict.findings[0],
            Finding::failed("b", "timed out while running".to_string())
        );
        assert_eq!(
            verdict.findings[1],
            Finding::failed("c", "never ran: the boot timed out in b".to_string())
        );
    }

    #[test]
    fn fewer_results_than_selected_fails_even_with_the_success_code() {
        let serial = transcript(&["test a ... ok", "1 passed, 0 failed"]);
        let verdict = judge_suite(&names(&["a", "b"]), &serial, GuestExit::Success, None);
        assert_eq!((verdict.passed, verdict.failed), (1, 1));
        assert_eq!(verdict.findings[0].name, "b");
        assert!(
            verdict.findings[0]
                .note
                .as_deref()
                .is_some_and(|note| note.contains("success"))
        );
    }

    #[test]
    fn all_passing_but_a_reset_is_a_boot_failure() {
        let serial = transcript(&["test a ... ok"]);
        let verdict = judge_suite(&names(&["a"]), &serial, GuestExit::ResetOrPowerOff, None);
        assert_eq!((verdict.passed, verdict.failed), (1, 1));
        assert_eq!(verdict.findings[0].name, BOOT_FINDING);
        assert!(
            verdict.findings[0]
                .note
                .as_deref()
                .is_some_and(|note| note.contains("QEMU exited 0"))
        );
    }

    #[test]
    fn exit_code_contradicting_results_is_a_boot_failure() {
        let failed = transcript(&["test a ... FAILED", "0 passed, 1 failed"]);
        let verdict = judge_suite(&names(&["a"]), &failed, GuestExit::Success, None);
        assert_eq!(verdict.failed, 2);
        assert!(
            verdict.findings[0]
                .note
                .as_deref()
                .is_some_and(|note| note.contains("reported success"))
        );
        let passed = transcript(&["test a ... ok", "1 passed, 0 failed"]);
        let verdict = judge_suite(&names(&["a"]), &passed, GuestExit::Failure, None);
        assert_eq!((verdict.passed, verdict.failed), (1, 1));
    }

    #[test]
    fn a_missing_or_wrong_summary_is_a_boot_failure() {
        let verdict = judge_suite(
            &names(&["a"]),
            &transcript(&["test a ... ok"]),
            GuestExit::Success,
            None,
        );
        assert!(
            verdict.findings[0]
                .note
                .as_deref()
                .is_some_and(|note| note.contains("no closing"))
        );
        let wrong = transcript(&["test a ... ok", "2 passed, 0 failed"]);
        let verdict = judge_suite(&names(&["a"]), &wrong, GuestExit::Success, None);
        assert_eq!(verdict.failed, 1);
        assert!(
            verdict.findings[0]
                .note
                .as_deref()
                .is_some_and(|note| note.contains("summary says 2 passed"))
        );
    }

    #[test]
    fn a_selected_test_the_kernel_skipped_is_a_failure() {
        let serial = transcript(&[
            "test a ... ok",
            "test pair ... skipped (needs 2 CPUs, 1 online)",
            "1 passed, 0 failed, 1 skipped",
        ]);
        let verdict = judge_suite(&names(&["a", "pair"]), &serial, GuestExit::Success, None);
        assert_eq!((verdict.passed, verdict.failed), (1, 1));
        assert_eq!(verdict.findings.len(), 1);
        assert_eq!(verdict.findings[0].name, "pair");
        assert!(
            verdict.findings[0]
                .note
                .as_deref()
                .is_some_and(|note| note.contains("skipped by the kernel"))
        );
    }

    #[test]
    fn duplicate_and_unselected_results_are_boot_failures() {
        let serial = transcript(&[
            "test a ... ok",
            "test a ... ok",
            "test z ... ok",
            "3 passed, 0 failed",
        ]);
        let verdict = judge_suite(&names(&["a"]), &serial, GuestExit::Success, None);
        assert_eq!((verdict.passed, verdict.failed), (3, 1));
        let note = verdict.findings[0].note.clone().unwrap_or_default();
        assert!(
            note.contains("more than once: a") && note.contains("not selected: z"),
            "{note}"
        );
    }

    #[test]
    fn an_expected_fault_passes_with_the_failure_code_and_every_piece() {
        let serial = transcript(&[
            "[cpu0] page fault: CR2 0x00000000dead0000, error 0x0: read not-present in kernel mode",
            "backtrace:",
            "  #0 0xffffffff80001000",
        ]);
        let finding = judge_fault(
            "fault_page",
            fault_spec("fault_page"),
            &serial,
            GuestExit::Failure,
        );
        assert_eq!(
            finding,
            Finding {
                name: "fault_page".to_string(),
                passed: true,
                note: None
            }
        );
    }

    #[test]
    fn an_expected_fault_fails_on_success_code_or_missing_pieces() {
        let serial = transcript(&["page fault, CR2=0x1000"]);
        let finding = judge_fault(
            "fault_page",
            fault_spec("fault_page"),
            &serial,
            GuestExit::Failure,
        );
        assert!(!finding.passed);
        assert!(
            finding
                .note
                .as_deref()
                .is_some_and(|note| note.contains("'backtrace'"))
        );
        let full = transcript(&["page fault CR2 0x00000000dead0000 backtrace"]);
        let finding = judge_fault(
            "fault_page",
            fault_spec("fault_page"),
            &full,
            GuestExit::ResetOrPowerOff,
        );
        assert!(!finding.passed);
        assert!(
            finding
                .note
                .as_deref()
                .is_some_and(|note| note.contains("failure exit code"))
        );
    }

    #[test]
    fn a_page_fault_at_another_address_fails_fault_page() {
        let elsewhere = transcript(&[
            "[cpu0] page fault: CR2 0x0000000000001000, error 0x0: read not-present in kernel mode",
            "backtrace:",
            "  #0 0xffffffff80001000",
        ]);
        let finding = judge_fault("fault_page", fault_spec("fault_page"), &elsewhere, GuestExit::Failure);
        assert!(!finding.passed, "a fault at 0x1000 passed for the read of 0xdead0000");
    }

    #[test]
    fn the_stack_overflow_report_must_name_the_thread() {
        let spec = fault_spec("fault_stack_overflow");
        let anonymous = transcript(&["stack overflow in a kernel thread"]);
        assert!(!judge_fault("fault_stack_overflow", spec, &anonymous, GuestExit::Failure).passed);
        let named = transcript(&["stack overflow in thread 'overflower' (guard page hit)"]);
        assert!(judge_fault("fault_stack_overflow", spec, &named, GuestExit::Failure).passed);
    }

    #[test]
    fn an_unknown_expected_fault_cannot_pass() {
        let serial = transcript(&["whatever"]);
        assert!(!judge_fault("fault_new", None, &serial, GuestExit::Failure).passed);
    }

    #[test]
    fn a_listing_needs_the_success_code_and_unique_names() {
        let listing = transcript(&["testcase a smp>=1", "testcase b smp>=2"]);
        assert_eq!(
            judge_listing(&listing, GuestExit::Success).map(|cases| cases.len()),
            Ok(2)
        );
        assert!(judge_listing(&listing, GuestExit::ResetOrPowerOff).is_err());
        assert_eq!(
            judge_listing(&transcript(&["no tests here"]), GuestExit::Success),
            Ok(vec![])
        );
        let twice = transcript(&["testcase a smp>=1", "testcase a smp>=1"]);
        assert!(judge_listing(&twice, GuestExit::Success).is_err());
    }
}
