//! The tuning chart as an SVG file: memory sizes along the bottom (evenly spaced, as Power
//! Tuning draws them), mean warm billed duration on the left axis, cost per million invocations
//! on the right, one marked point per measured size for each, the pick ringed. Self-contained
//! (no script, no external font or stylesheet), so any browser and docs/tuning.md render it.

use std::fmt::Write;

use super::TuneReport;

const W: f64 = 720.0;
const H: f64 = 400.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 90.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const DURATION: &str = "#1f6feb";
const COST: &str = "#d1242f";

pub(super) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" upper bound for an axis: 1, 2 or 5 × 10ⁿ at or above `max`.
fn nice_max(max: f64) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&v| v >= max)
        .unwrap_or(10.0 * p)
}

pub(super) fn label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// The chart of `report`, as an SVG document.
pub fn svg(report: &TuneReport) -> String {
    let sizes: Vec<_> = report
        .sizes
        .iter()
        .filter(|s| s.billed_mean_ms.is_finite() && s.cost_per_million.is_finite())
        .collect();
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let n = report.sizes.len().max(1) as f64;
    let x_of = |mb: u32| {
        let i = report
            .sizes
            .iter()
            .position(|s| s.memory_mb == mb)
            .unwrap_or(0) as f64;
        LEFT + plot_w * (i + 0.5) / n
    };
    let max_ms = nice_max(sizes.iter().map(|s| s.billed_mean_ms).fold(0.0, f64::max));
    let max_cost = nice_max(sizes.iter().map(|s| s.cost_per_million).fold(0.0, f64::max));
    let y_ms = |v: f64| TOP + plot_h * (1.0 - v / max_ms);
    let y_cost = |v: f64| TOP + plot_h * (1.0 - v / max_cost);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<title>{} ({}): duration and cost by memory size</title>"#,
        escape(&report.function),
        report.arch
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{} ({}) — strategy {}{}</text>"#,
        W / 2.0,
        escape(&report.function),
        report.arch,
        report.strategy,
        report
            .recommended_mb
            .map(|mb| format!(", pick {mb} MB"))
            .unwrap_or_default()
    );
    // Grid and axes: five steps on each.
    for i in 0..=5 {
        let f = f64::from(i) / 5.0;
        let y = TOP + plot_h * (1.0 - f);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            W - RIGHT
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{DURATION}">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            label(max_ms * f)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" fill="{COST}">{}</text>"#,
            W - RIGHT + 6.0,
            y + 4.0,
            label(max_cost * f)
        );
    }
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle" fill="{DURATION}">mean warm billed duration (ms)</text>"#,
        TOP + plot_h / 2.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate({:.1} {:.1}) rotate(90)" text-anchor="middle" fill="{COST}">USD per 1M invocations</text>"#,
        W - 16.0,
        TOP + plot_h / 2.0
    );
    for size in &report.sizes {
        let x = x_of(size.memory_mb);
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{} MB</text>"#,
            H - BOTTOM + 18.0,
            size.memory_mb
        );
        if size.error.is_some() {
            let _ = writeln!(
                s,
                r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#888">failed</text>"##,
                H - BOTTOM + 34.0
            );
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">memory size</text>"#,
        LEFT + plot_w / 2.0,
        H - 8.0
    );
    // The two series.
    for (class, color, y) in [
        (
            "duration",
            DURATION,
            &(|r: &super::SizeResult| y_ms(r.billed_mean_ms)) as &dyn Fn(&super::SizeResult) -> f64,
        ),
        ("cost", COST, &|r: &super::SizeResult| {
            y_cost(r.cost_per_million)
        }),
    ] {
        let points: Vec<String> = sizes
            .iter()
            .map(|r| format!("{:.1},{:.1}", x_of(r.memory_mb), y(r)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline class="{class}" points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            points.join(" ")
        );
        for r in &sizes {
            let value = if class == "duration" {
                format!("{:.1} ms", r.billed_mean_ms)
            } else {
                format!("${:.2} per 1M", r.cost_per_million)
            };
            let _ = writeln!(
                s,
                r#"<circle class="{class}" cx="{:.1}" cy="{:.1}" r="4" fill="{color}"><title>{} MB: {value}</title></circle>"#,
                x_of(r.memory_mb),
                y(r),
                r.memory_mb
            );
        }
    }
    if let Some(pick) = sizes
        .iter()
        .find(|r| Some(r.memory_mb) == report.recommended_mb)
    {
        let _ = writeln!(
            s,
            r##"<circle class="pick" cx="{:.1}" cy="{:.1}" r="9" fill="none" stroke="#2da44e" stroke-width="2"/>"##,
            x_of(pick.memory_mb),
            y_cost(pick.cost_per_million)
        );
    }
    // Legend.
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{:.1}" fill="{DURATION}">● duration</text><text x="{:.1}" y="{:.1}" fill="{COST}">● cost</text>"#,
        TOP - 8.0,
        LEFT + 90.0,
        TOP - 8.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::Arch;
    use crate::tune::{SizeResult, Strategy, TuneReport};

    fn sized(mb: u32, ms: f64, cost: f64) -> SizeResult {
        SizeResult {
            billed_mean_ms: ms,
            cost_per_million: cost,
            cost_per_invocation: cost / 1e6,
            warm_invocations: 3,
            ..SizeResult::failed(mb, String::new())
        }
    }

    #[test]
    fn the_chart_has_one_point_per_measured_size_on_each_series_and_rings_the_pick() {
        let mut failed = SizeResult::failed(64, "the function failed".into());
        failed.error = Some("x <y> & z".into());
        let mut sizes = vec![sized(128, 800.0, 1.9), sized(512, 190.0, 1.8), failed];
        for s in sizes.iter_mut().take(2) {
            s.error = None;
        }
        let report = TuneReport::new("f<&>".into(), Arch::X86_64, Strategy::Cost, 0.5, sizes, 128);
        let svg = svg(&report);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert_eq!(svg.matches(r#"<circle class="duration""#).count(), 2);
        assert_eq!(svg.matches(r#"<circle class="cost""#).count(), 2);
        assert_eq!(svg.matches(r#"class="pick""#).count(), 1);
        assert!(svg.contains("f&lt;&amp;&gt;") && !svg.contains("f<&>"));
        for mb in ["64 MB", "128 MB", "512 MB"] {
            assert!(svg.contains(mb), "{mb}");
        }
        // The slower size sits higher on the duration axis (smaller y).
        let ys: Vec<f64> = svg
            .lines()
            .filter(|l| l.starts_with(r#"<circle class="duration""#))
            .map(|l| {
                l.split("cy=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(ys[0] < ys[1], "{ys:?}");
    }

    #[test]
    fn axes_end_at_a_round_number_above_the_largest_value() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(130.0), 200.0);
        assert_eq!(nice_max(0.42), 0.5);
        assert_eq!(nice_max(f64::NAN), 1.0);
        assert_eq!(label(0.8), "0.8");
        assert_eq!(label(0.25), "0.25");
        assert_eq!(label(1.6), "1.6");
    }
}
