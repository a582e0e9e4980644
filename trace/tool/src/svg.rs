//! The timeline picture: one row per CPU, one colour per thread, halts hatched grey, a time axis
//! in milliseconds and a legend. Plain SVG 1.1 that browsers and GitHub render.
//!
//! Slices narrower than a tenth of a pixel are left out and runs of one thread closer than half
//! a pixel are joined, so a busy trace stays a file of reasonable size.

use std::fmt::Write;

use crate::model::Timeline;

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const ROW: f64 = 26.0;
const GAP: f64 = 6.0;

/// A distinct, readable colour for the `i`th thread (golden-angle hues).
fn colour(i: usize) -> String {
    let hue = (i as f64 * 137.508) % 360.0;
    let light = [48, 62, 40][i % 3];
    format!("hsl({hue:.0},65%,{light}%)")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG of `t`, titled `title`.
pub fn to_svg(t: &Timeline, title: &str) -> String {
    let plot = WIDTH - LEFT - RIGHT;
    let span = t.span().max(1) as f64;
    let x = |tsc: u64| LEFT + (tsc.saturating_sub(t.start)) as f64 / span * plot;
    // Threads in order of first appearance get the colours.
    let mut threads: Vec<u64> = Vec::new();
    for s in t.slices.iter().filter(|s| !s.idle) {
        if !threads.contains(&s.tid) {
            threads.push(s.tid);
        }
    }
    let legend_cols = 4;
    let legend_rows = threads.len().div_ceil(legend_cols);
    let rows_bottom = TOP + t.nr_cpus as f64 * (ROW + GAP);
    let height = rows_bottom + 40.0 + legend_rows as f64 * 18.0 + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        out,
        r##"<defs><pattern id="halt" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#f2f2f2"/><line x1="0" y1="0" x2="0" y2="6" stroke="#c8c8c8" stroke-width="2"/></pattern></defs>"##
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="18" font-size="13" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for cpu in 0..t.nr_cpus {
        let y = TOP + cpu as f64 * (ROW + GAP);
        let _ = writeln!(
            out,
            r#"<text x="{:.0}" y="{:.1}" text-anchor="end">CPU {cpu}</text>"#,
            LEFT - 8.0,
            y + ROW / 2.0 + 4.0
        );
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{y:.1}" width="{plot:.1}" height="{ROW}" fill="#fafafa" stroke="#ddd"/>"##
        );
        for &(_, start, end) in t.halts.iter().filter(|h| h.0 as usize == cpu) {
            let (x0, x1) = (x(start), x(end));
            if x1 - x0 >= 0.1 {
                let _ = writeln!(
                    out,
                    r#"<rect x="{x0:.2}" y="{y:.1}" width="{:.2}" height="{ROW}" fill="url(#halt)"/>"#,
                    x1 - x0
                );
            }
        }
        // Join runs of one thread that nearly touch, then draw.
        let mut runs: Vec<(u64, f64, f64)> = Vec::new();
        for s in t.slices.iter().filter(|s| s.cpu as usize == cpu && !s.idle) {
            let (x0, x1) = (x(s.start), x(s.end));
            match runs.last_mut() {
                Some(last) if last.0 == s.tid && x0 - last.2 < 0.5 => last.2 = x1,
                _ => runs.push((s.tid, x0, x1)),
            }
        }
        for (tid, x0, x1) in runs.into_iter().filter(|r| r.2 - r.1 >= 0.1) {
            let i = threads.iter().position(|&t| t == tid).unwrap_or(0);
            let _ = writeln!(
                out,
                r#"<rect x="{x0:.2}" y="{:.1}" width="{:.2}" height="{:.1}" fill="{}"><title>{}</title></rect>"#,
                y + 1.0,
                x1 - x0,
                ROW - 2.0,
                colour(i),
                escape(&t.label(tid))
            );
        }
    }
    // Time axis: about eight ticks at a round step.
    let span_ms = t.ticks_us(t.span()) / 1000.0;
    let raw = (span_ms / 8.0).max(1e-6);
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{rows_bottom:.1}" x2="{:.1}" y2="{rows_bottom:.1}" stroke="#444"/>"##,
        LEFT + plot
    );
    let mut tick = 0.0;
    while tick <= span_ms + 1e-9 {
        let tx = LEFT + tick / span_ms.max(1e-9) * plot;
        let _ = writeln!(
            out,
            r##"<line x1="{tx:.1}" y1="{rows_bottom:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#444"/>"##,
            rows_bottom + 4.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{tx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            rows_bottom + 16.0,
            trim(tick)
        );
        tick += step;
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end">ms</text>"#,
        LEFT + plot,
        rows_bottom + 28.0
    );
    // Legend.
    let legend_top = rows_bottom + 40.0;
    let col_width = (WIDTH - LEFT) / legend_cols as f64;
    for (i, tid) in threads.iter().enumerate() {
        let lx = LEFT + (i % legend_cols) as f64 * col_width;
        let ly = legend_top + (i / legend_cols) as f64 * 18.0;
        let _ = writeln!(
            out,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{}"/>"#,
            ly - 10.0,
            colour(i)
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{ly:.1}">{}</text>"#,
            lx + 16.0,
            escape(&t.label(*tid))
        );
    }
    out.push_str("</svg>\n");
    out
}

/// A tick label without trailing zeros.
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_lose_trailing_zeros() {
        assert_eq!(trim(2.0), "2");
        assert_eq!(trim(0.25), "0.25");
    }

    #[test]
    fn colours_differ_for_neighbours() {
        assert_ne!(colour(0), colour(1));
        assert_ne!(colour(1), colour(2));
    }
}
