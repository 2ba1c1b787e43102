//! Two deployments of one function tuned at the same memory sizes, side by side: for each size,
//! each side's cold start, warm billed duration, peak memory and cost per million invocations,
//! and how many times the other side's figure is ours. `make bench-seed` sets lambda-cnn against
//! the seed article's Python/TensorFlow function this way; the inputs are two `deploy tune
//! --json` reports, so every figure comes from REPORT lines of the same run.

use std::fmt::{self, Write};

use super::chart::{escape, label};
use super::SizeResult;

/// What a comparison reads of a `deploy tune --json` report.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Tuned {
    /// The function measured (its Lambda name).
    pub function: String,
    /// Each size measured.
    pub sizes: Vec<SizeResult>,
}

/// One side: a name, its tune report's sizes, and its image's size.
#[derive(Debug, Clone)]
pub struct Side {
    /// What to call it ("lambda-cnn", "seed (Python, TensorFlow)").
    pub name: String,
    /// The function `deploy tune` measured (its Lambda name).
    pub function: String,
    /// Each size measured.
    pub sizes: Vec<SizeResult>,
    /// The image's compressed size (the layers pushed and pulled), bytes.
    pub image_bytes: Option<u64>,
}

/// One side at one memory size.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Cell {
    /// The cold start's `Init Duration`, ms.
    pub init_ms: Option<f64>,
    /// The mean warm billed duration, ms.
    pub warm_ms: Option<f64>,
    /// The largest `Max Memory Used`, MB.
    pub peak_mb: Option<u32>,
    /// USD per million warm invocations.
    pub cost_per_million: Option<f64>,
    /// Why this size was not measured (out of memory, a timeout...).
    pub error: Option<String>,
}

impl Cell {
    fn of(size: Option<&SizeResult>) -> Cell {
        let Some(s) = size else {
            return Cell {
                init_ms: None,
                warm_ms: None,
                peak_mb: None,
                cost_per_million: None,
                error: Some("not measured at this size".into()),
            };
        };
        // A size with an error (an invocation timed out, ran out of memory) has no duration or
        // cost worth comparing: its mean mixes in the failure. Its init and peak are facts.
        let measured = |v: f64| (v.is_finite() && s.error.is_none()).then_some(v);
        Cell {
            init_ms: s.cold_init_ms,
            warm_ms: measured(s.billed_mean_ms),
            peak_mb: (s.max_memory_used_mb > 0).then_some(s.max_memory_used_mb),
            cost_per_million: measured(s.cost_per_million),
            error: s.error.clone(),
        }
    }
}

/// One memory size: both sides, and theirs ÷ ours for each figure.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    /// The memory size, MB.
    pub memory_mb: u32,
    /// Our figures.
    pub ours: Cell,
    /// The other side's.
    pub theirs: Cell,
    /// Their init ÷ ours.
    pub init_ratio: Option<f64>,
    /// Their warm duration ÷ ours.
    pub warm_ratio: Option<f64>,
    /// Their cost ÷ ours.
    pub cost_ratio: Option<f64>,
}

/// The comparison of one function.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    /// Our side's name.
    pub ours: String,
    /// Our function's Lambda name.
    pub ours_function: String,
    /// Our image, MB (compressed).
    pub ours_image_mb: Option<f64>,
    /// The other side's name.
    pub theirs: String,
    /// Their function's Lambda name.
    pub theirs_function: String,
    /// Their image, MB (compressed).
    pub theirs_image_mb: Option<f64>,
    /// Every size either side measured, ascending.
    pub rows: Vec<Row>,
}

fn ratio(theirs: Option<f64>, ours: Option<f64>) -> Option<f64> {
    match (theirs, ours) {
        (Some(t), Some(o)) if o > 0.0 && t.is_finite() => Some(t / o),
        _ => None,
    }
}

const MB: f64 = 1024.0 * 1024.0;

impl Comparison {
    /// `ours` against `theirs`, size by size.
    pub fn new(ours: Side, theirs: Side) -> Comparison {
        let mut sizes: Vec<u32> = ours
            .sizes
            .iter()
            .chain(&theirs.sizes)
            .map(|s| s.memory_mb)
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        let find = |side: &Side, mb: u32| side.sizes.iter().find(|s| s.memory_mb == mb).cloned();
        let rows = sizes
            .into_iter()
            .map(|mb| {
                let (o, t) = (
                    Cell::of(find(&ours, mb).as_ref()),
                    Cell::of(find(&theirs, mb).as_ref()),
                );
                Row {
                    memory_mb: mb,
                    init_ratio: ratio(t.init_ms, o.init_ms),
                    warm_ratio: ratio(t.warm_ms, o.warm_ms),
                    cost_ratio: ratio(t.cost_per_million, o.cost_per_million),
                    ours: o,
                    theirs: t,
                }
            })
            .collect();
        Comparison {
            ours_image_mb: ours.image_bytes.map(|b| b as f64 / MB),
            theirs_image_mb: theirs.image_bytes.map(|b| b as f64 / MB),
            ours: ours.name,
            ours_function: ours.function,
            theirs: theirs.name,
            theirs_function: theirs.function,
            rows,
        }
    }

    /// The chart: mean warm billed duration (left) and USD per million invocations (right)
    /// against memory size, both sides on each, on logarithmic axes (the two sides are orders
    /// of magnitude apart). Self-contained SVG.
    pub fn svg(&self, title: &str) -> String {
        const W: f64 = 900.0;
        const H: f64 = 380.0;
        const PANEL_W: f64 = 340.0;
        const TOP: f64 = 60.0;
        const PLOT_H: f64 = 250.0;
        const OURS: &str = "#1f6feb";
        const THEIRS: &str = "#d1242f";
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, "<title>{}</title>", escape(title));
        let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
            W / 2.0,
            escape(title)
        );
        let _ = writeln!(
            s,
            r#"<text x="80" y="44" fill="{OURS}">● {}</text><text x="320" y="44" fill="{THEIRS}">● {}</text>"#,
            escape(&self.ours),
            escape(&self.theirs)
        );
        let n = self.rows.len().max(1) as f64;
        type Pick = fn(&Cell) -> Option<f64>;
        let panels: [(&str, &str, f64, Pick); 2] = [
            ("warm", "mean warm billed duration (ms)", 80.0, |c| {
                c.warm_ms
            }),
            ("cost", "USD per 1M invocations", 530.0, |c| {
                c.cost_per_million
            }),
        ];
        for (class, axis, left, pick) in panels {
            let values: Vec<f64> = self
                .rows
                .iter()
                .flat_map(|r| [pick(&r.ours), pick(&r.theirs)])
                .flatten()
                .filter(|v| *v > 0.0)
                .collect();
            let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = values.iter().copied().fold(0.0, f64::max);
            let (lo, hi) = if values.is_empty() {
                (0.0, 1.0)
            } else {
                (
                    lo.log10().floor(),
                    hi.log10().ceil().max(lo.log10().floor() + 1.0),
                )
            };
            let y = |v: f64| TOP + PLOT_H * (1.0 - (v.log10() - lo) / (hi - lo));
            let x = |i: usize| left + PANEL_W * (i as f64 + 0.5) / n;
            for p in lo as i32..=hi as i32 {
                let v = 10f64.powi(p);
                let _ = writeln!(
                    s,
                    r##"<line x1="{left}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{2:.1}" y="{3:.1}" text-anchor="end">{4}</text>"##,
                    y(v),
                    left + PANEL_W,
                    left - 6.0,
                    y(v) + 4.0,
                    label(v)
                );
            }
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{axis} — log scale</text>"#,
                left + PANEL_W / 2.0,
                TOP - 4.0
            );
            for (i, r) in self.rows.iter().enumerate() {
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{} MB</text>"#,
                    x(i),
                    TOP + PLOT_H + 18.0,
                    r.memory_mb
                );
            }
            for (side, color, cell) in [
                ("ours", OURS, (|r: &Row| &r.ours) as fn(&Row) -> &Cell),
                ("theirs", THEIRS, |r: &Row| &r.theirs),
            ] {
                let points: Vec<(usize, f64)> = self
                    .rows
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| pick(cell(r)).filter(|v| *v > 0.0).map(|v| (i, v)))
                    .collect();
                // One line per run of neighbouring sizes: a size this side could not run at is
                // a gap, not a straight line over it.
                for run in points.chunk_by(|a, b| b.0 == a.0 + 1) {
                    let line: Vec<String> = run
                        .iter()
                        .map(|(i, v)| format!("{:.1},{:.1}", x(*i), y(*v)))
                        .collect();
                    let _ = writeln!(
                        s,
                        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                        line.join(" ")
                    );
                }
                for (i, v) in points {
                    let _ = writeln!(
                        s,
                        r#"<circle class="{class} {side}" cx="{:.1}" cy="{:.1}" r="4" fill="{color}"><title>{} MB: {}</title></circle>"#,
                        x(i),
                        y(v),
                        self.rows[i].memory_mb,
                        label(v)
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">memory size (a missing point: that side could not run at that size)</text>"#,
            W / 2.0,
            H - 12.0
        );
        s.push_str("</svg>\n");
        s
    }
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
        None => "—".into(),
    }
}

fn usd(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.2}"))
}

/// A ratio to two significant digits at least (0.042×, 1.5×, 12×, 340×).
fn times(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v >= 10.0 => format!("{v:.0}×"),
        Some(v) if v >= 1.0 => format!("{v:.1}×"),
        Some(v) if v >= 0.01 => format!("{v:.2}×"),
        Some(v) => format!("{v:.1e}×"),
    }
}

fn mb(v: Option<u32>) -> String {
    v.map_or("—".into(), |v| v.to_string())
}

/// A Markdown table: one row per memory size, each figure as theirs / ours, then theirs ÷ ours.
impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let image = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.1} MB"));
        writeln!(
            f,
            "{} ({}) against {} ({}); images (compressed): {} and {}. Each cell: {} / {}.",
            self.theirs,
            self.theirs_function,
            self.ours,
            self.ours_function,
            image(self.theirs_image_mb),
            image(self.ours_image_mb),
            self.theirs,
            self.ours
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "| memory | init ms | × | warm ms | × | peak MB | $ per 1M | × |"
        )?;
        writeln!(f, "|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for r in &self.rows {
            let both = |t: String, o: String| format!("{t} / {o}");
            writeln!(
                f,
                "| {} MB | {} | {} | {} | {} | {} | {} | {} |",
                r.memory_mb,
                both(ms(r.theirs.init_ms), ms(r.ours.init_ms)),
                times(r.init_ratio),
                both(ms(r.theirs.warm_ms), ms(r.ours.warm_ms)),
                times(r.warm_ratio),
                both(mb(r.theirs.peak_mb), mb(r.ours.peak_mb)),
                both(usd(r.theirs.cost_per_million), usd(r.ours.cost_per_million)),
                times(r.cost_ratio),
            )?;
        }
        let failures: Vec<String> = self
            .rows
            .iter()
            .flat_map(|r| {
                [(&self.theirs, &r.theirs), (&self.ours, &r.ours)]
                    .into_iter()
                    .filter_map(move |(who, c)| {
                        c.error
                            .as_ref()
                            .map(|e| format!("- {} at {} MB: {e}", who, r.memory_mb))
                    })
            })
            .collect();
        if !failures.is_empty() {
            writeln!(f)?;
            for l in failures {
                writeln!(f, "{l}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(mb: u32, init: f64, warm: f64, peak: u32, cost: f64) -> SizeResult {
        SizeResult {
            memory_mb: mb,
            warm_invocations: 4,
            billed_p50_ms: warm,
            billed_p95_ms: warm,
            billed_mean_ms: warm,
            cold_billed_ms: Some(warm),
            cold_init_ms: Some(init),
            max_memory_used_mb: peak,
            cost_per_invocation: cost / 1e6,
            cost_per_million: cost,
            error: None,
        }
    }

    fn sides() -> (Side, Side) {
        let ours = Side {
            name: "lambda-cnn".into(),
            function: "lambda-cnn-predict".into(),
            sizes: vec![
                size(128, 30.0, 2.0, 20, 0.2),
                size(1024, 10.0, 1.0, 21, 0.22),
            ],
            image_bytes: Some(9 * 1024 * 1024),
        };
        let theirs = Side {
            name: "seed".into(),
            function: "lambda-cnn-predict-seed".into(),
            sizes: vec![
                SizeResult::failed(128, "an invocation ended with status error".into()),
                size(1024, 4000.0, 60.0, 400, 1.2),
            ],
            image_bytes: Some(600 * 1024 * 1024),
        };
        (ours, theirs)
    }

    #[test]
    fn a_tune_report_reads_back_with_its_failed_sizes() {
        let report = super::super::TuneReport::new(
            "f".into(),
            crate::cost::Arch::X86_64,
            super::super::Strategy::Cost,
            0.5,
            vec![
                size(512, 9.0, 1.0, 30, 0.3),
                SizeResult::failed(128, "OOM".into()),
            ],
            512,
        );
        let back: Tuned = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!(back.function, "f");
        let (failed, measured) = (&back.sizes[0], &back.sizes[1]);
        assert_eq!(measured, &report.sizes[1]);
        assert!(failed.billed_mean_ms.is_nan());
        assert_eq!(failed.error.as_deref(), Some("OOM"));
    }

    #[test]
    fn each_size_holds_both_sides_and_their_ratios() {
        let (ours, theirs) = sides();
        let c = Comparison::new(ours, theirs);
        assert_eq!(c.rows.len(), 2);
        let r = &c.rows[1];
        assert_eq!(r.memory_mb, 1024);
        assert_eq!(r.theirs.warm_ms, Some(60.0));
        assert_eq!(r.warm_ratio, Some(60.0));
        assert_eq!(r.init_ratio, Some(400.0));
        assert!((r.cost_ratio.unwrap() - 1.2 / 0.22).abs() < 1e-9);
        // The size the seed could not run at has our figures and no ratio.
        let failed = &c.rows[0];
        assert_eq!(failed.ours.warm_ms, Some(2.0));
        assert_eq!(failed.theirs.warm_ms, None);
        assert_eq!(failed.warm_ratio, None);
        assert_eq!(c.theirs_image_mb, Some(600.0));
    }

    #[test]
    fn the_table_has_a_row_per_size_and_says_why_a_size_failed() {
        let (ours, theirs) = sides();
        let text = Comparison::new(ours, theirs).to_string();
        assert!(
            text.contains("| 1024 MB | 4000 / 10.0 | 400× | 60.0 / 1.0 | 60× | 400 / 21 | 1.20 / 0.22 | 5.5× |"),
            "{text}"
        );
        assert!(
            text.contains("| 128 MB | — / 30.0 | — | — / 2.0 | — |"),
            "{text}"
        );
        assert!(text.contains("- seed at 128 MB: an invocation ended with status error"));
        assert!(text.contains("600.0 MB and 9.0 MB"), "{text}");
    }

    #[test]
    fn the_chart_draws_a_point_per_measured_figure_on_log_axes() {
        let (ours, theirs) = sides();
        let svg = Comparison::new(ours, theirs).svg("predict <x>");
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains("predict &lt;x&gt;"));
        assert_eq!(svg.matches(r#"class="warm ours""#).count(), 2);
        assert_eq!(svg.matches(r#"class="warm theirs""#).count(), 1);
        assert_eq!(svg.matches(r#"class="cost theirs""#).count(), 1);
        assert!(svg.contains("log scale"));
    }

    #[test]
    fn a_size_with_an_error_compares_neither_duration_nor_cost_and_ratios_keep_two_digits() {
        let (ours, mut theirs) = sides();
        theirs.sizes[1].error = Some("an invocation ended with status timeout".into());
        let c = Comparison::new(ours, theirs);
        let r = &c.rows[1];
        assert_eq!((r.theirs.warm_ms, r.theirs.cost_per_million), (None, None));
        assert_eq!((r.warm_ratio, r.cost_ratio), (None, None));
        // Init and peak were measured all the same.
        assert_eq!(
            (r.theirs.init_ms, r.theirs.peak_mb),
            (Some(4000.0), Some(400))
        );
        assert_eq!(times(Some(0.042)), "0.04×");
        assert_eq!(times(Some(0.0042)), "4.2e-3×");
        assert_eq!(times(Some(1.54)), "1.5×");
        assert_eq!(times(Some(339.6)), "340×");
    }
}
