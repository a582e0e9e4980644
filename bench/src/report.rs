//! Turning measured rows into the three outputs: a table on stdout, `results.json` and a bar
//! chart of the medians, `results.svg` (hand-written SVG on a log scale, since the figures span
//! from tens to tens of thousands of cycles).
//!
//! Key types: [`Report`] (host facts, rows, footnotes), [`Row`] (one metric: ours beside a peer),
//! [`Figure`] (a measured [`Summary`] or the reason there is none). `main` builds the report;
//! `stats` and `host` supply its parts.

use std::{fmt::Write as _, fs, io, path::Path, time::SystemTime};

use serde_json::{Value, json};

use crate::{host::Host, stats::Summary};

/// One side of a row: measured, or a short reason why not ("pending", "n/a (...)", "-").
#[derive(Clone, Debug)]
pub enum Figure {
    Cycles(Summary),
    Absent(String),
}

impl Figure {
    fn summary(&self) -> Option<&Summary> {
        match self {
            Figure::Cycles(summary) => Some(summary),
            Figure::Absent(_) => None,
        }
    }

    fn median_text(&self) -> String {
        match self {
            Figure::Cycles(summary) => format!("{:.1}", summary.median_cycles),
            Figure::Absent(reason) => reason.clone(),
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
    /// "native", "TCG" or "hardware KVM".
    pub where_ran: &'static str,
    pub ours: Figure,
    pub peer: Option<Peer>,
    pub note: Option<String>,
}

impl Row {
    /// How many times our median the peer's median is, when both were measured.
    fn ratio_peer_over_ours(&self) -> Option<f64> {
        let ours = self.ours.summary()?;
        let peer = self.peer.as_ref()?.figure.summary()?;
        Some(peer.median_cycles / ours.median_cycles)
    }
}

/// Everything one run produced.
pub struct Report {
    pub host: Host,
    /// Whether this was a `--quick` run (tiny sample counts: the figures mean little).
    pub quick: bool,
    /// The accelerator of any in-QEMU row, or `None` when every row ran natively.
    pub accelerator: Option<String>,
    pub rows: Vec<Row>,
    pub footnotes: Vec<String>,
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
        if self.quick {
            let _ = writeln!(out, "QUICK RUN: tiny sample counts, for checking the code paths only; do not quote.");
        }
        let header =
            ["#", "metric", "where", "ours med", "ours p99", "peer", "peer med", "peer p99", "peer/ours"].map(String::from);
        let mut cells: Vec<[String; 9]> = vec![header];
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
            ]);
        }
        let mut widths = [0_usize; 9];
        for line in &cells {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for (line_no, line) in cells.iter().enumerate() {
            let mut text = String::new();
            for (column, (cell, width)) in line.iter().zip(widths).enumerate() {
                // Text columns align left, figures right.
                if matches!(column, 1 | 2 | 5) {
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
        for (index, footnote) in self.footnotes.iter().enumerate() {
            let _ = writeln!(out, "  [{}] {footnote}", index + 1);
        }
        out
    }

    /// The machine-readable results.
    pub fn json(&self) -> Value {
        let figures = |figure: &Figure| match figure {
            Figure::Cycles(s) => (json!(s.median_cycles), json!(s.p99_cycles), json!(s.nr_samples), Value::Null),
            Figure::Absent(reason) => (Value::Null, Value::Null, Value::Null, json!(reason)),
        };
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let (ours_median, ours_p99, ours_samples, ours_status) = figures(&row.ours);
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
                    "peer": peer,
                    "peer_median_cycles": peer_median,
                    "peer_p99_cycles": peer_p99,
                    "peer_samples": peer_samples,
                    "peer_status": peer_status,
                    "ratio_peer_over_ours": row.ratio_peer_over_ours(),
                    "note": row.note,
                })
            })
            .collect();
        json!({
            "date": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            "cpu_model": self.host.cpu_model,
            "host_kernel": self.host.kernel_release,
            "load_avg_at_start": self.host.load_avg,
            "accelerator": self.accelerator,
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
            .filter(|(_, ours, peer)| ours.is_some() || peer.is_some())
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
            accelerator: None,
            rows: vec![
                Row {
                    metric: "switch & co".to_owned(),
                    where_ran: "native",
                    ours: Figure::Cycles(summary(100.0)),
                    peer: Some(Peer { name: "Linux".to_owned(), figure: Figure::Cycles(summary(1500.0)) }),
                    note: Some("a note".to_owned()),
                },
                Row {
                    metric: "pending one".to_owned(),
                    where_ran: "native",
                    ours: Figure::Absent("pending".to_owned()),
                    peer: None,
                    note: None,
                },
            ],
            footnotes: vec!["a footnote".to_owned()],
        }
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
