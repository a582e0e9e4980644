//! Which boots to make: the matrix of QEMU configurations and the tests each one runs.
//!
//! Key types: [`Config`] (CPU count and CPU model of one QEMU configuration, with the label that
//! prefixes its results), [`Selection`] (the tests of one configuration: one boot for the ordinary
//! tests, one boot per expected-fault test) and [`FaultSpec`] (what an expected-fault test must
//! print). The test list comes from the kernel (`serial::TestCase`); `main` runs the plan.

use crate::serial::TestCase;

/// A test that ends the boot on purpose with a fault report and the failure exit code. It runs
/// alone, one boot each, and passes when the report holds every piece (compared ignoring case).
#[derive(Debug, PartialEq, Eq)]
pub struct FaultSpec {
    pub name: &'static str,
    pub pieces: &'static [&'static str],
}

/// The thread the kernel's stack overflow test overflows; its name must appear in the report.
pub const STACK_OVERFLOW_THREAD: &str = "overflower";

/// The address the kernel's page-fault test reads, as its fault report prints CR2: a report of a
/// fault at any other address is some other fault.
pub const FAULT_PAGE_CR2: &str = "CR2 0x00000000dead0000";

/// Every expected-fault test the harness knows how to judge.
pub const EXPECTED_FAULTS: &[FaultSpec] = &[
    FaultSpec {
        name: "fault_page",
        pieces: &["page fault", FAULT_PAGE_CR2, "backtrace"],
    },
    FaultSpec {
        name: "fault_stack_overflow",
        pieces: &["stack overflow", STACK_OVERFLOW_THREAD],
    },
];

/// Looks up how to judge an expected-fault test; one the kernel marks `expect-fault` but this
/// table lacks cannot pass.
pub fn fault_spec(name: &str) -> Option<&'static FaultSpec> {
    EXPECTED_FAULTS.iter().find(|spec| spec.name == name)
}

/// One QEMU configuration of the matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub nr_cpus: u32,
    /// The `-cpu` argument, e.g. `qemu64` or `qemu64,+x2apic`.
    pub cpu_model: String,
    /// Prefix for this configuration's results and log files, e.g. `smp4` or `smp4-qemu64+x2apic`.
    pub label: String,
}

/// Every combination of CPU count and CPU model; the model enters the label only when there
/// is more than one.
pub fn matrix(cpu_counts: &[u32], cpu_models: &[String]) -> Vec<Config> {
    let mut configs = Vec::new();
    for model in cpu_models {
        for &nr_cpus in cpu_counts {
            let label = if cpu_models.len() > 1 {
                format!("smp{nr_cpus}-{}", model_label(model))
            } else {
                format!("smp{nr_cpus}")
            };
            configs.push(Config {
                nr_cpus,
                cpu_model: model.clone(),
                label,
            });
        }
    }
    configs
}

/// A CPU model as a file-name-friendly word: `qemu64,+x2apic` becomes `qemu64+x2apic`.
fn model_label(model: &str) -> String {
    model
        .chars()
        .filter(|&c| c != ',')
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The tests one configuration runs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Ordinary tests, run together in one boot.
    pub suite: Vec<String>,
    /// True when `suite` is every ordinary test the kernel listed, so `test=all` asks for it.
    pub suite_is_all: bool,
    /// Expected-fault tests, one boot each.
    pub faults: Vec<String>,
    /// Listed tests needing more CPUs than the configuration has.
    pub skipped_for_cpus: Vec<String>,
}

impl Selection {
    /// The `test=` option that asks the kernel for `suite`.
    pub fn suite_option(&self) -> String {
        if self.suite_is_all {
            "test=all".to_string()
        } else {
            format!("test={}", self.suite.join(","))
        }
    }
}

/// Picks the tests of `listed` that `config` can run and that match a filter (any filter, as a
/// substring; no filters select everything).
pub fn select(listed: &[TestCase], config: &Config, filters: &[String]) -> Selection {
    let mut selection = Selection::default();
    let mut ordinary_total = 0;
    for case in listed {
        if !case.expect_fault {
            ordinary_total += 1;
        }
        if !filters.is_empty()
            && !filters
                .iter()
                .any(|filter| case.name.contains(filter.as_str()))
        {
            continue;
        }
        if case.min_cpus > config.nr_cpus {
            selection.skipped_for_cpus.push(case.name.clone());
        } else if case.expect_fault {
            selection.faults.push(case.name.clone());
        } else {
            selection.suite.push(case.name.clone());
        }
    }
    selection.suite_is_all = !selection.suite.is_empty() && selection.suite.len() == ordinary_total;
    selection
}

/// The default guest memory: 512 MiB, 1 GiB above four CPUs (each CPU has its own stacks).
pub fn default_mem(nr_cpus: u32) -> &'static str {
    if nr_cpus > 4 { "1G" } else { "512M" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str, min_cpus: u32) -> TestCase {
        TestCase {
            name: name.to_string(),
            min_cpus,
            expect_fault: name.starts_with("fault_"),
        }
    }

    fn config(nr_cpus: u32) -> Config {
        Config {
            nr_cpus,
            cpu_model: "qemu64".to_string(),
            label: format!("smp{nr_cpus}"),
        }
    }

    fn listing() -> Vec<TestCase> {
        vec![
            case("boot_ok", 1),
            case("ipi_pingpong", 2),
            case("fault_page", 1),
            case("steal_many", 4),
        ]
    }

    #[test]
    fn matrix_labels_name_the_model_only_when_there_are_several() {
        let one = matrix(&[1, 4], &["qemu64".to_string()]);
        assert_eq!(
            one.iter().map(|c| c.label.as_str()).collect::<Vec<_>>(),
            ["smp1", "smp4"]
        );
        let two = matrix(&[2], &["qemu64".to_string(), "qemu64,+x2apic".to_string()]);
        assert_eq!(
            two.iter().map(|c| c.label.as_str()).collect::<Vec<_>>(),
            ["smp2-qemu64", "smp2-qemu64+x2apic"]
        );
        assert_eq!(two[1].cpu_model, "qemu64,+x2apic");
    }

    #[test]
    fn model_labels_are_safe_file_names() {
        assert_eq!(
            model_label("Skylake-Server,vmx=off"),
            "Skylake-Servervmx_off"
        );
    }

    #[test]
    fn selection_splits_ordinary_and_fault_tests_and_respects_cpu_needs() {
        let selection = select(&listing(), &config(2), &[]);
        assert_eq!(selection.suite, ["boot_ok", "ipi_pingpong"]);
        assert_eq!(selection.faults, ["fault_page"]);
        assert_eq!(selection.skipped_for_cpus, ["steal_many"]);
        assert!(!selection.suite_is_all);
        assert_eq!(selection.suite_option(), "test=boot_ok,ipi_pingpong");
    }

    #[test]
    fn a_configuration_that_runs_everything_asks_for_all() {
        let selection = select(&listing(), &config(8), &[]);
        assert!(selection.suite_is_all);
        assert_eq!(selection.suite_option(), "test=all");
    }

    #[test]
    fn filters_match_substrings_and_never_widen_to_all() {
        let selection = select(
            &listing(),
            &config(8),
            &["ipi".to_string(), "page".to_string()],
        );
        assert_eq!(selection.suite, ["ipi_pingpong"]);
        assert_eq!(selection.faults, ["fault_page"]);
        assert_eq!(selection.suite_option(), "test=ipi_pingpong");
    }

    #[test]
    fn an_empty_listing_selects_nothing() {
        let selection = select(&[], &config(4), &[]);
        assert_eq!(selection, Selection::default());
    }

    #[test]
    fn known_fault_tests_have_report_pieces() {
        assert_eq!(fault_spec("fault_page").map(|s| s.pieces.len()), Some(3));
        assert!(
            fault_spec("fault_stack_overflow")
                .is_some_and(|s| s.pieces.contains(&STACK_OVERFLOW_THREAD))
        );
        assert!(fault_spec("boot_ok").is_none());
    }
}
