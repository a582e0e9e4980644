//! Turning measured rows into the three outputs: a table on stdout, `results.json` and a bar
//! chart of the medians, `results.svg` (hand-written SVG on a log scale, since the figures span
//! from tens to tens of thousands of cycles).
//!
//! Key types: [`Report`] (host facts, the [`Guest`] the in-QEMU rows ran in, rows, footnotes),
//! [`Row`] (one metric: ours beside a peer, with counts for in-kernel rows), [`Figure`] (a
//! measured [`Summary`], one measured where cycles mean nothing, or the reason there is none).
//! `main` builds the report; `stats`, `host` and `qemu` supply its parts.

use std::{fmt::Write as _, fs, io, path::Path, time::SystemTime};

use serde_json::{Value, json};

use crate::{host::Host, stats::Summary};

/// One side of a row: measured, or a short reason why not ("pending", "n/a (...)", "-").
#[derive(Clone, Debug)]
pub enum Figure {
    Cycles(Summary),
    /// Measured in a guest whose accelerator emulates the CPU, where a TSC tick is no cycle: the
    /// table shows `reason` ("not meaningful (TCG)"), the JSON keeps the raw figures apart.
    NotMeaningful { reason: String, raw: Summary },
    Absent(String),
}

impl Figure {
    /// The figures that mean cycles (for the table, the ratio and the chart).
    fn summary(&self) -> Option<&Summary> {
        match self {
            Figure::Cycles(summary) => Some(summary),
            Figure::NotMeaningful { .. } | Figure::Absent(_) => None,
        }
    }

    fn median_text(&self) -> String {
        match self {
            Figure::Cycles(summary) => format!("{:.1}", summary.median_cycles),
            Figure::NotMeaningful { reason, .. } | Figure::Absent(reason) => reason.clone(),
        }
    }

    fn p99_text(&self) -> String {
        self.summary().map_or_else(String::new, |summary| format!("{:.1}", summary.p99_cycles))
    }
}

/// The system the row is compared against, and its figure.
#[derive(Clone, Debug)]
pub struct Peer {
    pub name: String,
    pub figure: Figure,
}

/// One metric: our figure beside a peer's, where it ran, and an optional note for the reader.
#[derive(Clone, Debug)]
pub struct Row {
    /// What is measured, including the unit of a sample ("per switch; batches of 100 round trips").
    pub metric: String,
    /// "native", "TCG", "nested KVM" or "hardware KVM".
    pub where_ran: &'static str,
    pub ours: Figure,
    pub peer: Option<Peer>,
    pub note: Option<String>,
    /// Events per operation the kernel counted while it measured (`cr3_writes_per_switch`, ...),
    /// `None` where there was nothing to divide by. They hold under any accelerator.
    pub counts: Vec<(String, Option<f64>)>,
}

impl Row {
    /// How many times our median the peer's median is, when both were measured.
    fn ratio_peer_over_ours(&self) -> Option<f64> {
        let ours = self.ours.summary()?;
        let peer = self.peer.as_ref()?.figure.summary()?;
        Some(peer.median_cycles / ours.median_cycles)
    }
}

/// The QEMU guest the in-kernel rows ran in, as the host chose it and the kernel found it.
#[derive(Clone, Debug)]
pub struct Guest {
    /// "TCG", "nested KVM" or "hardware KVM".
    pub accelerator: &'static str,
    /// Why that accelerator (the `ACCEL=auto` reasoning, or the option that forced it).
    pub why: String,
    pub qemu_version: String,
    pub nr_cpus: u32,
    /// The guest's TSC rate as the kernel calibrated it.
    pub tsc_hz: u64,
    /// The kernel's time slice (the preemption rows wait one per sample).
    pub slice_ns: u64,
    /// Whether CR3 carried PCIDs in the guest.
    pub pcid: bool,
    /// TSC ticks per dependent add in guest ring 0: about 1 on a real core.
    pub ticks_per_add: f64,
    /// The kernel's verdict from `ticks_per_add`: whether its cycle figures mean cycles.
    pub cycles_meaningful: bool,
    /// Rows the kernel skipped, and why.
    pub skipped: Vec<(String, String)>,
    /// Seconds QEMU ran, boot and power-off included.
    pub wall_s: f64,
}

/// Everything one run produced.
pub struct Report {
    pub host: Host,
    /// Whether this was a `--quick` run (tiny sample counts: the figures mean little).
    pub quick: bool,
    /// The guest of the in-QEMU rows, or `None` when every row ran natively.
    pub guest: Option<Guest>,
    pub rows: Vec<Row>,
    pub footnotes: Vec<String>,
}

/// `name_per_unit` as the table writes it: `name/unit`, spaces for underscores.
fn count_label(name: &str) -> String {
    name.replacen("_per_", "/", 1).replace('_', " ")
}

/// A row's counts as one cell: `cr3 writes/switch 1.00, ...`.
fn counts_text(counts: &[(String, Option<f64>)]) -> String {
    let text: Vec<String> = counts
        .iter()
        .map(|(name, value)| match value {
            Some(value) => format!("{} {value:.2}", count_label(name)),
            None => format!("{} -", count_label(name)),
        })
        .collect();
    text.join(", ")
}

impl Report {
    /// The header lines and the table, as printed on stdout.
    pub fn table(&self) -> String {
        let host = &self.host;
        let mut out = String::new();
        let mhz = host.cpuinfo_mhz.map_or_else(String::new, |mhz| format!("; /proc/cpuinfo says {mhz:.0} MHz"));
        let [load_1, load_5, load_15] = host.load_avg;
        let _ = writeln!(
            out,
            "CPU: {}   kernel: Linux {}   load average at start: {load_1:.2} {load_5:.2} {load_15:.2}",
            host.cpu_model, host.kernel_release
        );
        let _ = writeln!(
            out,
            "TSC: {:.3} GHz, calibrated against CLOCK_MONOTONIC{mhz} (1000 cycles = {:.0} ns)",
            host.tsc_hz / 1e9,
            host.ns(1000.0)
        );
        let _ = writeln!(
            out,
            "Figures are TSC cycles per operation (median and p99 of the samples); a per-iteration \
             sample includes the {:.0}-cycle start/end read overhead.",
            host.timer_overhead_cycles
        );
        if let Some(guest) = &self.guest {
            let _ = writeln!(
                out,
                "In-kernel rows: the kernel in QEMU under {} ({}), {} CPUs, {}, time slice {} ms, PCIDs {}, {:.0} s in all.",
                guest.accelerator,
                guest.why,
                guest.nr_cpus,
                guest.qemu_version,
                guest.slice_ns as f64 / 1e6,
                if guest.pcid { "on" } else { "off" },
                guest.wall_s,
            );
            let _ = writeln!(
                out,
                "A dependent add costs {:.2} TSC ticks in its ring 0 (about 1 on a real core): its cycle figures are {}.",
                guest.ticks_per_add,
                if guest.cycles_meaningful { "meaningful" } else { "NOT meaningful there, only its counts are" }
            );
        }
        if self.quick {
            let _ = writeln!(out, "QUICK RUN: tiny sample counts, for checking the code paths only; do not quote.");
        }
        let header =
            ["#", "metric", "where", "ours med", "ours p99", "peer", "peer med", "peer p99", "peer/ours", "counts"]
                .map(String::from);
        let mut cells: Vec<[String; 10]> = vec![header];
        for (index, row) in self.rows.iter().enumerate() {
            let (peer_name, peer_median, peer_p99) = row.peer.as_ref().map_or_else(
                || ("-".to_owned(), String::new(), String::new()),
                |peer| (peer.name.clone(), peer.figure.median_text(), peer.figure.p99_text()),
            );
            cells.push([
                (index + 1).to_string(),
                row.metric.clone(),
                row.where_ran.to_owned(),
                row.ours.median_text(),
                row.ours.p99_text(),
                peer_name,
                peer_median,
                peer_p99,
                row.ratio_peer_over_ours().map_or_else(String::new, |ratio| format!("{ratio:.2}x")),
                counts_text(&row.counts),
            ]);
        }
        let mut widths = [0_usize; 10];
        for line in &cells {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for (line_no, line) in cells.iter().enumerate() {
            let mut text = String::new();
            for (column, (cell, width)) in line.iter().zip(widths).enumerate() {
                // Text columns align left, figures right.
                if matches!(column, 1 | 2 | 5 | 9) {
                    let _ = write!(text, "{cell:<width$}  ");
                } else {
                    let _ = write!(text, "{cell:>width$}  ");
                }
            }
            let _ = writeln!(out, "{}", text.trim_end());
            if line_no == 0 {
                let _ = writeln!(out, "{}", "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
            }
        }
        for (index, row) in self.rows.iter().enumerate() {
            if let Some(note) = &row.note {
                let _ = writeln!(out, "  row {}: {note}", index + 1);
            }
        }
        for (name, reason) in self.guest.iter().flat_map(|guest| &guest.skipped) {
            let _ = writeln!(out, "  in-kernel {name}: skipped ({reason})");
        }
        for (index, footnote) in self.footnotes.iter().enumerate() {
            let _ = writeln!(out, "  [{}] {footnote}", index + 1);
        }
        out
    }

    /// The machine-readable results.
    pub fn json(&self) -> Value {
        let figures = |figure: &Figure| match figure {
            Figure::Cycles(s) => (json!(s.median_cycles), json!(s.p99_cycles), json!(s.nr_samples), Value::Null),
            Figure::NotMeaningful { reason, raw } => (Value::Null, Value::Null, json!(raw.nr_samples), json!(reason)),
            Figure::Absent(reason) => (Value::Null, Value::Null, Value::Null, json!(reason)),
        };
        // TSC ticks measured where they are not cycles: kept apart, for comparing runs under the
        // same accelerator.
        let raw = |figure: &Figure| match figure {
            Figure::NotMeaningful { raw, .. } => (json!(raw.median_cycles), json!(raw.p99_cycles)),
            Figure::Cycles(_) | Figure::Absent(_) => (Value::Null, Value::Null),
        };
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let (ours_median, ours_p99, ours_samples, ours_status) = figures(&row.ours);
                let (ours_raw_median, ours_raw_p99) = raw(&row.ours);
                let counts: serde_json::Map<String, Value> =
                    row.counts.iter().map(|(name, value)| (name.clone(), json!(value))).collect();
                let (peer, (peer_median, peer_p99, peer_samples, peer_status)) = match &row.peer {
                    Some(peer) => (json!(peer.name), figures(&peer.figure)),
                    None => (Value::Null, (Value::Null, Value::Null, Value::Null, Value::Null)),
                };
                json!({
                    "metric": row.metric,
                    "where": row.where_ran,
                    "ours_median_cycles": ours_median,
                    "ours_p99_cycles": ours_p99,
                    "ours_samples": ours_samples,
                    "ours_status": ours_status,
                    "ours_raw_median_ticks": ours_raw_median,
                    "ours_raw_p99_ticks": ours_raw_p99,
                    "peer": peer,
                    "peer_median_cycles": peer_median,
                    "peer_p99_cycles": peer_p99,
                    "peer_samples": peer_samples,
                    "peer_status": peer_status,
                    "ratio_peer_over_ours": row.ratio_peer_over_ours(),
                    "note": row.note,
                    "counts": counts,
                })
            })
            .collect();
        json!({
            "date": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            "cpu_model": self.host.cpu_model,
            "host_kernel": self.host.kernel_release,
            "load_avg_at_start": self.host.load_avg,
            "accelerator": self.guest.as_ref().map(|guest| guest.accelerator),
            "guest": self.guest.as_ref().map(|guest| json!({
                "accelerator": guest.accelerator,
                "why": guest.why,
                "qemu_version": guest.qemu_version,
                "nr_cpus": guest.nr_cpus,
                "tsc_hz": guest.tsc_hz,
                "slice_ns": guest.slice_ns,
                "pcid": guest.pcid,
                "ticks_per_add": guest.ticks_per_add,
                "cycles_meaningful": guest.cycles_meaningful,
                "wall_seconds": guest.wall_s,
                "skipped": guest.skipped.iter().map(|(name, reason)| json!({"name": name, "reason": reason})).collect::<Vec<_>>(),
            })),
            "tsc_hz": self.host.tsc_hz,
            "cpuinfo_mhz": self.host.cpuinfo_mhz,
            "timer_overhead_cycles": self.host.timer_overhead_cycles,
            "unit": "TSC cycles per operation",
            "quick": self.quick,
            "rows": rows,
            "footnotes": self.footnotes,
        })
    }

    /// A horizontal bar chart of every measured median, ours and the peer's side by side, on a
    /// log10 axis.
    pub fn svg(&self) -> String {
        const LABEL_WIDTH: f64 = 560.0;
        const PLOT_WIDTH: f64 = 520.0;
        const BAR_HEIGHT: f64 = 12.0;
        const ROW_GAP: f64 = 10.0;
        const TOP: f64 = 50.0;
        let bars: Vec<(&Row, Option<f64>, Option<f64>)> = self
            .rows
            .iter()
            .map(|row| {
                let ours = row.ours.summary().map(|s| s.median_cycles);
                let peer = row.peer.as_ref().and_then(|peer| peer.figure.summary()).map(|s| s.median_cycles);
                (row, ours, peer)
            })
            .filter(|(row, ours, peer)| ours.is_some() || peer.is_some() || !instructions_text(row).is_empty())
            .collect();
        let values = bars.iter().flat_map(|(_, ours, peer)| [*ours, *peer]).flatten();
        let (min, max) = values.fold((f64::INFINITY, 1.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let lo_decade = if min.is_finite() { min.max(1.0).log10().floor() } else { 0.0 };
        let hi_decade = max.log10().ceil().max(lo_decade + 1.0);
        let x_of = |cycles: f64| {
            LABEL_WIDTH + PLOT_WIDTH * (cycles.max(1.0).log10() - lo_decade) / (hi_decade - lo_decade)
        };
        let row_height = 2.0 * BAR_HEIGHT + ROW_GAP;
        let height = TOP + row_height * bars.len() as f64 + 40.0;
        let width = LABEL_WIDTH + PLOT_WIDTH + 220.0;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let title = format!(
            "Median TSC cycles per operation (log scale), {}, TSC {:.3} GHz{}",
            self.host.cpu_model,
            self.host.tsc_hz / 1e9,
            if self.quick { ", QUICK RUN" } else { "" }
        );
        let _ = writeln!(svg, r#"<text x="10" y="18" font-size="13">{}</text>"#, escape(&title));
        let _ = writeln!(
            svg,
            r##"<rect x="{LABEL_WIDTH}" y="28" width="10" height="10" fill="#2a6fbb"/><text x="{}" y="37">ours</text><rect x="{}" y="28" width="10" height="10" fill="#d9822b"/><text x="{}" y="37">peer (named after the value)</text>"##,
            LABEL_WIDTH + 14.0,
            LABEL_WIDTH + 60.0,
            LABEL_WIDTH + 74.0
        );
        let bottom = TOP + row_height * bars.len() as f64;
        let mut decade = lo_decade;
        while decade <= hi_decade {
            let x = x_of(10f64.powf(decade));
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{bottom}" stroke="#ccc"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                bottom + 14.0,
                10f64.powf(decade)
            );
            decade += 1.0;
        }
        for (index, (row, ours, peer)) in bars.iter().enumerate() {
            let y = TOP + row_height * index as f64;
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LABEL_WIDTH - 6.0,
                y + BAR_HEIGHT + 4.0,
                escape(&row.metric)
            );
            // Guest instruction counts hold where the cycles do not: written beside the bars, or
            // in their place.
            let instructions = instructions_text(row);
            if !instructions.is_empty() {
                let x = if ours.is_some() || peer.is_some() { LABEL_WIDTH + PLOT_WIDTH + 60.0 } else { LABEL_WIDTH + 4.0 };
                let _ = writeln!(
                    svg,
                    r##"<text x="{x:.1}" y="{:.1}" fill="#555">{}</text>"##,
                    y + BAR_HEIGHT + 4.0,
                    escape(&instructions)
                );
            }
            let peer_name = row.peer.as_ref().map_or("", |peer| peer.name.as_str());
            for (slot, value, colour, name) in [(0.0, ours, "#2a6fbb", "ours"), (1.0, peer, "#d9822b", peer_name)] {
                if let Some(cycles) = value {
                    let bar_y = y + slot * BAR_HEIGHT;
                    let bar_end = x_of(*cycles);
                    let _ = writeln!(
                        svg,
                        r#"<rect x="{LABEL_WIDTH}" y="{bar_y:.1}" width="{:.1}" height="{:.1}" fill="{colour}"/><text x="{:.1}" y="{:.1}">{cycles:.0} {}</text>"#,
                        (bar_end - LABEL_WIDTH).max(1.0),
                        BAR_HEIGHT - 1.0,
                        bar_end + 4.0,
                        bar_y + BAR_HEIGHT - 2.0,
                        escape(name)
                    );
                }
            }
        }
        let _ = writeln!(svg, "</svg>");
        svg
    }

    /// Write `results.json` and `results.svg` into `dir`, creating it if needed.
    pub fn write_files(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(&self.json()).map_err(io::Error::other)?;
        fs::write(dir.join("results.json"), json + "\n")?;
        fs::write(dir.join("results.svg"), self.svg())
    }
}

/// A row's guest instruction counts (`kernel_insns_per_*`, per side), for the chart.
fn instructions_text(row: &Row) -> String {
    let counts: Vec<(String, Option<f64>)> =
        row.counts.iter().filter(|(name, _)| name.contains("kernel_insns_per_")).cloned().collect();
    counts_text(&counts)
}

/// Escape the characters XML gives meaning to.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            cpu_model: "Test CPU <x>".to_owned(),
            cpuinfo_mhz: Some(2000.0),
            kernel_release: "6.1.0".to_owned(),
            load_avg: [0.5, 0.25, 0.125],
            tsc_hz: 2e9,
            timer_overhead_cycles: 30.0,
        }
    }

    fn summary(median_cycles: f64) -> Summary {
        Summary { median_cycles, p99_cycles: 2.0 * median_cycles, nr_samples: 100 }
    }

    fn report() -> Report {
        Report {
            host: host(),
            quick: true,
            guest: None,
            rows: vec![
                Row {
                    metric: "switch & co".to_owned(),
                    where_ran: "native",
                    ours: Figure::Cycles(summary(100.0)),
                    peer: Some(Peer { name: "Linux".to_owned(), figure: Figure::Cycles(summary(1500.0)) }),
                    note: Some("a note".to_owned()),
                    counts: Vec::new(),
                },
                Row {
                    metric: "pending one".to_owned(),
                    where_ran: "native",
                    ours: Figure::Absent("pending".to_owned()),
                    peer: None,
                    note: None,
                    counts: Vec::new(),
                },
            ],
            footnotes: vec!["a footnote".to_owned()],
        }
    }

    /// The report with an in-kernel row from a TCG guest: no meaningful cycles, two counts.
    fn report_with_guest() -> Report {
        let mut report = report();
        report.guest = Some(Guest {
            accelerator: "TCG",
            why: "auto: /dev/kvm does not open".to_owned(),
            qemu_version: "QEMU emulator version 7.2.0".to_owned(),
            nr_cpus: 2,
            tsc_hz: 2_000_000_000,
            slice_ns: 10_000_000,
            pcid: false,
            ticks_per_add: 4.36,
            cycles_meaningful: false,
            skipped: vec![("shootdown_remote".to_owned(), "needs 2 CPUs, 1 online".to_owned())],
            wall_s: 42.0,
        });
        report.rows.push(Row {
            metric: "in-kernel yield".to_owned(),
            where_ran: "TCG",
            ours: Figure::NotMeaningful { reason: "not meaningful (TCG)".to_owned(), raw: summary(900.0) },
            peer: Some(Peer { name: "Linux sched_yield (native)".to_owned(), figure: Figure::Cycles(summary(1500.0)) }),
            note: None,
            counts: vec![("cr3_writes_per_switch".to_owned(), Some(1.0)), ("pcid_hits_per_switch".to_owned(), None)],
        });
        report
    }

    #[test]
    fn json_carries_host_facts_and_one_entry_per_row_with_the_ratio() {
        let json = report().json();
        assert_eq!(json["cpu_model"], "Test CPU <x>");
        assert_eq!(json["host_kernel"], "6.1.0");
        assert_eq!(json["load_avg_at_start"][1], 0.25);
        assert!(json["accelerator"].is_null());
        assert!(json["date"].as_str().unwrap().ends_with('Z'));
        let rows = json["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["where"], "native");
        assert_eq!(rows[0]["ours_median_cycles"], 100.0);
        assert_eq!(rows[0]["ours_p99_cycles"], 200.0);
        assert_eq!(rows[0]["peer_median_cycles"], 1500.0);
        assert_eq!(rows[0]["ratio_peer_over_ours"], 15.0);
        assert!(rows[1]["ours_median_cycles"].is_null());
        assert_eq!(rows[1]["ours_status"], "pending");
        assert!(rows[1]["ratio_peer_over_ours"].is_null());
    }

    #[test]
    fn json_names_the_guest_and_keeps_counts_and_raw_ticks_of_in_kernel_rows() {
        let json = report_with_guest().json();
        assert_eq!(json["accelerator"], "TCG");
        assert_eq!(json["guest"]["ticks_per_add"], 4.36);
        assert_eq!(json["guest"]["cycles_meaningful"], false);
        assert_eq!(json["guest"]["wall_seconds"], 42.0);
        assert_eq!(json["guest"]["skipped"][0]["name"], "shootdown_remote");
        let row = &json["rows"][2];
        assert_eq!(row["where"], "TCG");
        assert!(row["ours_median_cycles"].is_null() && row["ours_p99_cycles"].is_null());
        assert_eq!(row["ours_status"], "not meaningful (TCG)");
        assert_eq!(row["ours_samples"], 100);
        assert_eq!(row["ours_raw_median_ticks"], 900.0);
        assert_eq!(row["ours_raw_p99_ticks"], 1800.0);
        assert!(row["ratio_peer_over_ours"].is_null(), "no ratio against figures that are not cycles");
        assert_eq!(row["counts"]["cr3_writes_per_switch"], 1.0);
        assert!(row["counts"]["pcid_hits_per_switch"].is_null());
        assert!(json["rows"][0]["ours_raw_median_ticks"].is_null());
    }

    #[test]
    fn table_marks_emulated_cycles_and_shows_the_counts() {
        let table = report_with_guest().table();
        assert!(table.contains("QEMU under TCG (auto: /dev/kvm does not open)"), "{table}");
        assert!(table.contains("A dependent add costs 4.36 TSC ticks"));
        assert!(table.contains("NOT meaningful"));
        let row = table.lines().find(|line| line.starts_with("3 ")).unwrap();
        for expected in ["in-kernel yield", "TCG", "not meaningful (TCG)", "1500.0", "cr3 writes/switch 1.00, pcid hits/switch -"]
        {
            assert!(row.contains(expected), "{expected:?} missing from {row:?}");
        }
        assert!(!row.contains("900.0"), "raw ticks stay out of the table: {row:?}");
        assert!(table.contains("in-kernel shootdown_remote: skipped (needs 2 CPUs, 1 online)"));
    }

    #[test]
    fn svg_draws_no_bar_for_figures_that_are_not_cycles() {
        let svg = report_with_guest().svg();
        assert!(!svg.contains(">900 ours<"));
        assert!(svg.contains("1500 Linux sched_yield (native)"), "the peer's native figure is still drawn");
    }

    #[test]
    fn svg_writes_the_guest_instruction_counts_of_a_row() {
        let mut report = report_with_guest();
        let row = report.rows.last_mut().unwrap();
        row.counts.push(("kernel_insns_per_switch".to_owned(), Some(61.55)));
        row.counts.push(("target_kernel_insns_per_interrupt".to_owned(), Some(500.0)));
        let svg = report.svg();
        assert!(svg.contains("kernel insns/switch 61.55, target kernel insns/interrupt 500.00"), "{svg}");
    }

    #[test]
    fn table_lists_every_row_with_its_figures_notes_and_footnotes() {
        let table = report().table();
        assert!(table.contains("QUICK RUN"));
        let row_one = table.lines().find(|line| line.starts_with("1 ")).unwrap();
        for expected in ["switch & co", "native", "100.0", "200.0", "Linux", "1500.0", "3000.0", "15.00x"] {
            assert!(row_one.contains(expected), "{expected:?} missing from {row_one:?}");
        }
        let row_two = table.lines().find(|line| line.starts_with("2 ")).unwrap();
        assert!(row_two.contains("pending"));
        assert!(table.contains("row 1: a note"));
        assert!(table.contains("[1] a footnote"));
    }

    #[test]
    fn svg_draws_one_bar_per_measured_median_and_escapes_text() {
        let svg = report().svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Two measured medians in row 1; row 2 has none and gets no label.
        assert_eq!(svg.matches("fill=\"#2a6fbb\"/><text").count(), 1 + 1, "legend plus one bar");
        assert_eq!(svg.matches("fill=\"#d9822b\"/><text").count(), 1 + 1, "legend plus one bar");
        assert!(svg.contains("switch &amp; co"));
        assert!(svg.contains("Test CPU &lt;x&gt;"));
        assert!(!svg.contains("pending one"));
    }

    #[test]
    fn files_are_written_where_asked() {
        let dir = std::env::temp_dir().join(format!("bench-report-test-{}", std::process::id()));
        report().write_files(&dir).unwrap();
        let json: Value = serde_json::from_str(&fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
        assert_eq!(json["rows"].as_array().unwrap().len(), 2);
        assert!(fs::read_to_string(dir.join("results.svg")).unwrap().contains("</svg>"));
        fs::remove_dir_all(dir).unwrap();
    }
}
