//! The tool as a user runs it: on a synthetic dump it writes the three files and passes
//! `--check --complete`; on the same dump with one event lost, `--check` fails and names it.

use std::{path::PathBuf, process::Command};

use trace::{Dump, Kind, synth};

fn tool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tracetool"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_dump(dump: &Dump, path: &PathBuf) {
    let mut bytes = b"console noise before the dump\n".to_vec();
    dump.write(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_synthetic_dump_becomes_json_svg_and_summary_and_passes_the_check() {
    let dir = scratch("whole");
    let dump = synth::generate(&synth::Config {
        nr_cpus: 4,
        ..Default::default()
    });
    write_dump(&dump, &dir.join("raw.bin"));
    let out = tool()
        .arg(dir.join("raw.bin"))
        .arg("--out")
        .arg(&dir)
        .args(["--check", "--complete"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("conservation: ok"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("trace.json")).unwrap()).unwrap();
    assert!(json["traceEvents"].as_array().unwrap().len() > 100);
    let svg = std::fs::read_to_string(dir.join("timeline.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("CPU 3") && svg.contains("worker-0"));
    let summary = std::fs::read_to_string(dir.join("summary.txt")).unwrap();
    assert!(summary.contains("wake-to-run") && summary.contains("Max delay"));
    assert_eq!(
        summary
            .lines()
            .filter(|l| l.trim_start().starts_with("worker-"))
            .count(),
        summary.matches("worker-").count()
    );
}

#[test]
fn a_lost_switch_fails_the_check() {
    let dir = scratch("lost");
    let mut dump = synth::generate(&synth::Config {
        nr_cpus: 2,
        ..Default::default()
    });
    let block = &mut dump.cpus[1];
    let i = block
        .records
        .iter()
        .position(|r| r.kind() == Some(Kind::Switch))
        .unwrap();
    block.records.remove(i);
    let i = block
        .records
        .iter()
        .rposition(|r| r.kind() == Some(Kind::Switch))
        .unwrap();
    block.records.remove(i);
    write_dump(&dump, &dir.join("raw.bin"));
    let out = tool()
        .arg(dir.join("raw.bin"))
        .args(["--check", "--complete"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("VIOLATION") && stdout.contains("conservation: FAILED"),
        "{stdout}"
    );
}

#[test]
fn a_truncated_dump_is_refused() {
    let dir = scratch("truncated");
    let dump = synth::generate(&synth::Config {
        nr_cpus: 2,
        ..Default::default()
    });
    let mut bytes = Vec::new();
    dump.write(&mut bytes);
    bytes.truncate(bytes.len() / 2);
    std::fs::write(dir.join("raw.bin"), bytes).unwrap();
    let out = tool().arg(dir.join("raw.bin")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));
}
