//! The latency-vs-load plot: hand-written SVG (no plotting dependency), one panel per fan
//! scenario, p50 (solid) and p99 (dashed) per target against offered msgs/s, both axes
//! logarithmic, with the 25 ms line that decides "sustained".

use std::fmt::Write;

use crate::{scenarios::P99_LIMIT_MS, targets::Kind};

/// One target's curve: (offered msgs/s, p50 ms, p99 ms) per step.
pub struct Series {
    /// Which target.
    pub kind: Kind,
    /// Points in step order (sorted by rate when drawn).
    pub points: Vec<(f64, f64, f64)>,
}

/// One panel.
pub struct Panel {
    /// Title, e.g. "fan-in: 1000 modules → 4 dashboards".
    pub title: String,
    /// Curves.
    pub series: Vec<Series>,
}

const PANEL_W: f64 = 480.0;
const PANEL_H: f64 = 380.0;
const MARGIN_L: f64 = 62.0;
const MARGIN_R: f64 = 16.0;
const MARGIN_T: f64 = 34.0;
const MARGIN_B: f64 = 78.0;

fn color(kind: Kind) -> &'static str {
    match kind {
        Kind::Hub => "#1f77b4",
        Kind::HubMosquitto => "#9467bd",
        Kind::NodeRef => "#d62728",
        Kind::Mosquitto => "#2ca02c",
    }
}

/// Decades and their 2× and 5× between `lo` and `hi`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if v >= lo && v <= hi {
                out.push(v);
            }
        }
        decade *= 10.0;
    }
    out
}

fn label(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}k", v / 1000.0)
    } else if v >= 1.0 {
        format!("{v}")
    } else {
        format!("{v:.1}")
    }
}

fn panel(svg: &mut String, p: &Panel, x0: f64) {
    let finite = |v: f64| v.is_finite() && v > 0.0;
    let rates: Vec<f64> = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|pt| pt.0))
        .filter(|v| finite(*v))
        .collect();
    let lats: Vec<f64> = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().flat_map(|pt| [pt.1, pt.2]))
        .filter(|v| finite(*v))
        .collect();
    let (xlo, xhi) = (
        rates.iter().copied().fold(f64::MAX, f64::min).min(1e9) / 1.5,
        rates.iter().copied().fold(1.0, f64::max) * 1.5,
    );
    let ylo = lats.iter().copied().fold(1.0, f64::min).max(0.01) / 1.5;
    let yhi = lats
        .iter()
        .copied()
        .fold(P99_LIMIT_MS, f64::max)
        .min(60_000.0)
        * 1.5;
    let (w, h) = (PANEL_W - MARGIN_L - MARGIN_R, PANEL_H - MARGIN_T - MARGIN_B);
    let x = |v: f64| x0 + MARGIN_L + (v.ln() - xlo.ln()) / (xhi.ln() - xlo.ln()) * w;
    let y = |v: f64| {
        let v = v.clamp(ylo, yhi);
        MARGIN_T + h - (v.ln() - ylo.ln()) / (yhi.ln() - ylo.ln()) * h
    };
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="20" font-size="14" text-anchor="middle">{}</text>"#,
        x0 + MARGIN_L + w / 2.0,
        p.title
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{:.1}" y="{MARGIN_T}" width="{w:.1}" height="{h:.1}" fill="none" stroke="#444"/>"##,
        x0 + MARGIN_L
    );
    if rates.is_empty() {
        return;
    }
    for t in ticks(xlo, xhi) {
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{MARGIN_T}" y2="{1:.1}" stroke="#ddd"/><text x="{0:.1}" y="{2:.1}" font-size="11" text-anchor="middle">{3}</text>"##,
            x(t),
            MARGIN_T + h,
            MARGIN_T + h + 14.0,
            label(t)
        );
    }
    for t in ticks(ylo, yhi) {
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" x2="{1:.1}" y1="{2:.1}" y2="{2:.1}" stroke="#ddd"/><text x="{3:.1}" y="{4:.1}" font-size="11" text-anchor="end">{5}</text>"##,
            x0 + MARGIN_L,
            x0 + MARGIN_L + w,
            y(t),
            x0 + MARGIN_L - 4.0,
            y(t) + 4.0,
            label(t)
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{0:.1}" x2="{1:.1}" y1="{2:.1}" y2="{2:.1}" stroke="#888" stroke-dasharray="2,3"/><text x="{1:.1}" y="{3:.1}" font-size="10" text-anchor="end" fill="#666">p99 limit 25 ms</text>"##,
        x0 + MARGIN_L,
        x0 + MARGIN_L + w,
        y(P99_LIMIT_MS),
        y(P99_LIMIT_MS) - 3.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">offered load, msgs/s (log)</text>"#,
        x0 + MARGIN_L + w / 2.0,
        MARGIN_T + h + 32.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{0:.1}" y="{1:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 {0:.1} {1:.1})">latency, ms (log)</text>"#,
        x0 + 16.0,
        MARGIN_T + h / 2.0
    );
    for (i, s) in p.series.iter().enumerate() {
        let mut pts = s.points.clone();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (which, dash) in [(1usize, ""), (2, r#" stroke-dasharray="6,4""#)] {
            let path: Vec<String> = pts
                .iter()
                .filter_map(|pt| {
                    let v = if which == 1 { pt.1 } else { pt.2 };
                    finite(v).then(|| format!("{:.1},{:.1}", x(pt.0), y(v)))
                })
                .collect();
            if path.is_empty() {
                continue;
            }
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
                path.join(" "),
                color(s.kind)
            );
            for pt in &path {
                if let Some((px, py)) = pt.split_once(',') {
                    let _ = writeln!(
                        svg,
                        r#"<circle cx="{px}" cy="{py}" r="2.5" fill="{}"/>"#,
                        color(s.kind)
                    );
                }
            }
        }
        let ly = MARGIN_T + h + 50.0 + (i / 2) as f64 * 14.0;
        let lx = x0 + MARGIN_L + (i % 2) as f64 * w / 2.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx:.1}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2"/><text x="{:.1}" y="{:.1}" font-size="11">{} (p50 solid, p99 dashed)</text>"#,
            lx + 18.0,
            color(s.kind),
            lx + 22.0,
            ly + 4.0,
            s.kind.name()
        );
    }
}

/// The SVG document for `panels`, side by side.
pub fn svg(panels: &[Panel], caption: &str) -> String {
    let width = PANEL_W * panels.len().max(1) as f64;
    let height = PANEL_H + 20.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    for (i, p) in panels.iter().enumerate() {
        panel(&mut svg, p, i as f64 * PANEL_W);
    }
    let _ = writeln!(
        svg,
        r##"<text x="8" y="{:.1}" font-size="10" fill="#666">{caption}</text>"##,
        height - 6.0
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_series_and_survives_empty_panels() {
        let panels = [
            Panel {
                title: "fan-in".into(),
                series: vec![Series {
                    kind: Kind::Hub,
                    points: vec![(1000.0, 0.5, 2.0), (2000.0, 0.7, f64::NAN)],
                }],
            },
            Panel {
                title: "fan-out".into(),
                series: vec![],
            },
        ];
        let s = svg(&panels, "test");
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert_eq!(s.matches("<polyline").count(), 2);
    }
}
