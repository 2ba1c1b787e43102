//! Power tuning, the arithmetic half: from the REPORT lines of invocations at several memory
//! sizes, each size's figures (warm billed-duration percentiles, the cold start apart, peak
//! memory, cost per invocation), and the size a strategy picks — `cost`, `speed`, or `balanced`
//! as AWS Lambda Power Tuning defines it (the weighted sum of cost and duration, each divided by
//! its largest value). `deploy tune` measures; this module judges; [`chart`] draws.

#![warn(missing_docs)]

pub mod chart;
pub mod compare;

use std::fmt;

use crate::cost::{self, Arch, Prices, Usage};
use crate::report::Report;

/// Which size wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The cheapest per invocation (the faster of equals).
    Cost,
    /// The fastest (the cheaper of equals).
    Speed,
    /// The least `weight·cost/max cost + (1−weight)·duration/max duration`.
    Balanced,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Cost => "cost",
            Strategy::Speed => "speed",
            Strategy::Balanced => "balanced",
        })
    }
}

/// Below this share of memory left over the measured peak, a pick is flagged: the next input
/// may need more, and Lambda kills a function that runs out.
pub const MIN_HEADROOM: f64 = 0.2;

/// One memory size, measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SizeResult {
    /// The memory size, MB.
    pub memory_mb: u32,
    /// Invocations measured warm (the cold one excluded).
    pub warm_invocations: usize,
    /// Median warm billed duration, ms.
    #[serde(deserialize_with = "nan_if_null")]
    pub billed_p50_ms: f64,
    /// 95th percentile warm billed duration, ms.
    #[serde(deserialize_with = "nan_if_null")]
    pub billed_p95_ms: f64,
    /// Mean warm billed duration, ms: what cost and ranking use.
    #[serde(deserialize_with = "nan_if_null")]
    pub billed_mean_ms: f64,
    /// The cold invocation's billed duration, ms (its handler time; init is apart).
    pub cold_billed_ms: Option<f64>,
    /// The cold start's `Init Duration`, ms.
    pub cold_init_ms: Option<f64>,
    /// The largest `Max Memory Used` of any invocation, MB.
    pub max_memory_used_mb: u32,
    /// USD per warm invocation at the mean billed duration.
    #[serde(deserialize_with = "nan_if_null")]
    pub cost_per_invocation: f64,
    /// USD per million warm invocations.
    #[serde(deserialize_with = "nan_if_null")]
    pub cost_per_million: f64,
    /// Why this size could not be measured (a function error, a timeout): it is not ranked.
    pub error: Option<String>,
}

impl SizeResult {
    /// The figures of the reports of one size, in invocation order (the first is the cold
    /// start when it has an `Init Duration`). Priced for `arch` at `prices`, without an API in
    /// front.
    pub fn from_reports(memory_mb: u32, reports: &[Report], arch: Arch, prices: &Prices) -> Self {
        let (cold, warm): (Vec<&Report>, Vec<&Report>) =
            reports.iter().partition(|r| r.init_ms.is_some());
        // With every invocation cold (a fresh environment each time), the first stands apart
        // and the rest still count as the measurement.
        let warm: Vec<&Report> = if warm.is_empty() {
            cold.iter().skip(1).copied().collect()
        } else {
            warm
        };
        let mut billed: Vec<f64> = warm.iter().map(|r| r.billed_ms).collect();
        billed.sort_by(f64::total_cmp);
        let mean = if billed.is_empty() {
            f64::NAN
        } else {
            billed.iter().sum::<f64>() / billed.len() as f64
        };
        let price = |n: u64| {
            if mean.is_finite() {
                cost::cost(&Usage::what_if(n, mean, memory_mb, arch), prices).total
            } else {
                f64::NAN
            }
        };
        let error = reports
            .iter()
            .find_map(|r| r.status.as_ref())
            .map(|s| format!("an invocation ended with status {s}"));
        SizeResult {
            memory_mb,
            warm_invocations: billed.len(),
            billed_p50_ms: percentile(&billed, 50.0),
            billed_p95_ms: percentile(&billed, 95.0),
            billed_mean_ms: mean,
            cold_billed_ms: cold.first().map(|r| r.billed_ms),
            cold_init_ms: cold.first().and_then(|r| r.init_ms),
            max_memory_used_mb: reports
                .iter()
                .map(|r| r.max_memory_used_mb)
                .max()
                .unwrap_or(0),
            cost_per_invocation: price(1),
            cost_per_million: price(1_000_000),
            error: error.or_else(|| {
                billed
                    .is_empty()
                    .then(|| "no warm invocation was measured".to_owned())
            }),
        }
    }

    /// A size that could not be measured, with why.
    pub fn failed(memory_mb: u32, why: String) -> Self {
        SizeResult {
            memory_mb,
            warm_invocations: 0,
            billed_p50_ms: f64::NAN,
            billed_p95_ms: f64::NAN,
            billed_mean_ms: f64::NAN,
            cold_billed_ms: None,
            cold_init_ms: None,
            max_memory_used_mb: 0,
            cost_per_invocation: f64::NAN,
            cost_per_million: f64::NAN,
            error: Some(why),
        }
    }

    /// Share of the size left over the measured peak.
    pub fn headroom(&self) -> f64 {
        1.0 - f64::from(self.max_memory_used_mb) / f64::from(self.memory_mb.max(1))
    }

    fn ranked(&self) -> bool {
        self.error.is_none() && self.billed_mean_ms.is_finite()
    }
}

/// A figure JSON wrote as `null` (serde_json's NaN: a size not measured) reads back as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(<Option<f64> as serde::Deserialize>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Nearest-rank percentile of sorted values (NaN when there are none).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// The pick among `sizes` (those measured without error) by `strategy`; `weight` (0..=1, 1 =
/// all cost) for `balanced`. `None` when no size was measured.
pub fn recommend(sizes: &[SizeResult], strategy: Strategy, weight: f64) -> Option<&SizeResult> {
    let ok: Vec<&SizeResult> = sizes.iter().filter(|s| s.ranked()).collect();
    let by = |a: f64, b: f64| a.total_cmp(&b);
    match strategy {
        Strategy::Cost => ok.into_iter().min_by(|a, b| {
            by(a.cost_per_invocation, b.cost_per_invocation)
                .then(by(a.billed_mean_ms, b.billed_mean_ms))
        }),
        Strategy::Speed => ok.into_iter().min_by(|a, b| {
            by(a.billed_mean_ms, b.billed_mean_ms)
                .then(by(a.cost_per_invocation, b.cost_per_invocation))
        }),
        Strategy::Balanced => {
            let w = weight.clamp(0.0, 1.0);
            let max_cost = ok.iter().map(|s| s.cost_per_invocation).fold(0.0, f64::max);
            let max_ms = ok.iter().map(|s| s.billed_mean_ms).fold(0.0, f64::max);
            let value = |s: &SizeResult| {
                w * s.cost_per_invocation / max_cost.max(f64::MIN_POSITIVE)
                    + (1.0 - w) * s.billed_mean_ms / max_ms.max(f64::MIN_POSITIVE)
            };
            ok.into_iter().min_by(|a, b| by(value(a), value(b)))
        }
    }
}

/// What `deploy tune` found for one function.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TuneReport {
    /// The function tuned.
    pub function: String,
    /// The architecture it runs on (priced by).
    pub arch: Arch,
    /// How the pick was made.
    pub strategy: Strategy,
    /// `balanced`'s weight of cost (1) against speed (0).
    pub weight: f64,
    /// Each size measured, ascending.
    pub sizes: Vec<SizeResult>,
    /// The size picked, MB (none when no size could be measured).
    pub recommended_mb: Option<u32>,
    /// Warnings about the pick (memory headroom).
    pub warnings: Vec<String>,
    /// The memory the function had before (restored unless applied).
    pub previous_mb: u32,
    /// What `--apply` did, if asked.
    pub applied: Option<String>,
    /// Where the chart was written.
    pub chart: Option<String>,
}

impl TuneReport {
    /// The report for `sizes`, with the pick and its warnings.
    pub fn new(
        function: String,
        arch: Arch,
        strategy: Strategy,
        weight: f64,
        mut sizes: Vec<SizeResult>,
        previous_mb: u32,
    ) -> Self {
        sizes.sort_by_key(|s| s.memory_mb);
        let pick = recommend(&sizes, strategy, weight).cloned();
        let mut warnings = Vec::new();
        if let Some(p) = &pick {
            if p.headroom() < MIN_HEADROOM {
                warnings.push(format!(
                    "{} MB leaves {:.0}% over the {} MB the function used at most (under {:.0}%): the next input may need more, and Lambda stops a function that runs out",
                    p.memory_mb,
                    p.headroom() * 100.0,
                    p.max_memory_used_mb,
                    MIN_HEADROOM * 100.0
                ));
            }
        }
        TuneReport {
            function,
            arch,
            strategy,
            weight,
            recommended_mb: pick.map(|p| p.memory_mb),
            sizes,
            warnings,
            previous_mb,
            applied: None,
            chart: None,
        }
    }
}

fn ms(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0}")
    } else {
        "-".to_owned()
    }
}

impl fmt::Display for TuneReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} ({}), strategy {}{}:",
            self.function,
            self.arch,
            self.strategy,
            if self.strategy == Strategy::Balanced {
                format!(" (weight {})", self.weight)
            } else {
                String::new()
            }
        )?;
        writeln!(
            f,
            "  {:>7} {:>5} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>12}",
            "memory",
            "warm",
            "p50 ms",
            "p95 ms",
            "mean ms",
            "cold ms",
            "init ms",
            "peak MB",
            "$ per 1M"
        )?;
        for s in &self.sizes {
            let mark = if Some(s.memory_mb) == self.recommended_mb {
                "  ← pick"
            } else {
                ""
            };
            write!(
                f,
                "  {:>4} MB {:>5} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>12}{mark}",
                s.memory_mb,
                s.warm_invocations,
                ms(s.billed_p50_ms),
                ms(s.billed_p95_ms),
                ms(s.billed_mean_ms),
                s.cold_billed_ms.map_or("-".into(), ms),
                s.cold_init_ms.map_or("-".into(), ms),
                if s.max_memory_used_mb > 0 {
                    s.max_memory_used_mb.to_string()
                } else {
                    "-".into()
                },
                if s.cost_per_million.is_finite() {
                    format!("{:.2}", s.cost_per_million)
                } else {
                    "-".into()
                },
            )?;
            match &s.error {
                Some(e) => writeln!(f, "  (not ranked: {e})")?,
                None => writeln!(f)?,
            }
        }
        match self.recommended_mb {
            Some(mb) => write!(f, "  recommended: {mb} MB (was {} MB)", self.previous_mb)?,
            None => write!(f, "  no size could be measured: nothing recommended")?,
        }
        for w in &self.warnings {
            write!(f, "\n  warning: {w}")?;
        }
        if let Some(c) = &self.chart {
            write!(f, "\n  chart: {c}")?;
        }
        if let Some(a) = &self.applied {
            write!(f, "\n  applied: {a}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(billed: f64, mem: u32, used: u32, init: Option<f64>) -> Report {
        Report {
            request_id: "r".into(),
            duration_ms: billed - 0.5,
            billed_ms: billed,
            memory_size_mb: mem,
            max_memory_used_mb: used,
            init_ms: init,
            status: None,
            error_type: None,
        }
    }

    fn size(mem: u32, billed: &[f64], used: u32) -> SizeResult {
        let mut reports = vec![report(billed[0] * 3.0, mem, used, Some(40.0))];
        reports.extend(billed.iter().map(|&b| report(b, mem, used, None)));
        let (prices, _) = cost::prices_for("us-east-1");
        SizeResult::from_reports(mem, &reports, Arch::X86_64, prices)
    }

    #[test]
    fn the_cold_start_is_reported_apart_from_the_warm_figures() {
        let s = size(512, &[10.0, 12.0, 30.0], 60);
        assert_eq!(s.warm_invocations, 3);
        assert_eq!(s.billed_p50_ms, 12.0);
        assert_eq!(s.billed_p95_ms, 30.0);
        assert!((s.billed_mean_ms - 52.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.cold_billed_ms, Some(30.0));
        assert_eq!(s.cold_init_ms, Some(40.0));
        assert_eq!(s.max_memory_used_mb, 60);
        // 1M × ceil(17.33) = 18 ms at 0.5 GB.
        let (prices, _) = cost::prices_for("us-east-1");
        let expect = cost::cost(
            &Usage::what_if(1_000_000, 52.0 / 3.0, 512, Arch::X86_64),
            prices,
        );
        assert!((s.cost_per_million - expect.total).abs() < 1e-12);
    }

    #[test]
    fn each_strategy_picks_as_power_tuning_defines_it() {
        // A CPU-bound function: twice the memory, a bit more than half the time.
        let sizes = vec![
            size(128, &[800.0], 50),
            size(512, &[190.0], 50),
            size(1024, &[100.0], 50),
            size(2048, &[90.0], 50),
        ];
        assert_eq!(
            recommend(&sizes, Strategy::Speed, 0.5).unwrap().memory_mb,
            2048
        );
        // Cost per invocation: 128·800 = 102400 > 512·190 = 97280 < 1024·100 = 102400.
        assert_eq!(
            recommend(&sizes, Strategy::Cost, 0.5).unwrap().memory_mb,
            512
        );
        // All weight on cost is the cost pick; none is the speed pick.
        assert_eq!(
            recommend(&sizes, Strategy::Balanced, 1.0)
                .unwrap()
                .memory_mb,
            512
        );
        assert_eq!(
            recommend(&sizes, Strategy::Balanced, 0.0)
                .unwrap()
                .memory_mb,
            2048
        );
        // Half and half: 1024 (cost 0.58 of the largest, time 0.125) beats 512 (0.56, 0.24).
        assert_eq!(
            recommend(&sizes, Strategy::Balanced, 0.5)
                .unwrap()
                .memory_mb,
            1024
        );
    }

    #[test]
    fn a_size_that_failed_is_never_picked_and_none_measured_picks_nothing() {
        let (prices, _) = cost::prices_for("us-east-1");
        let mut timed_out = report(3000.0, 128, 128, None);
        timed_out.status = Some("timeout".into());
        let sizes = vec![
            SizeResult::from_reports(
                128,
                &[report(3000.0, 128, 128, Some(5.0)), timed_out],
                Arch::X86_64,
                prices,
            ),
            size(512, &[100.0], 50),
        ];
        assert!(sizes[0].error.as_deref().unwrap().contains("timeout"));
        assert_eq!(
            recommend(&sizes, Strategy::Cost, 0.5).unwrap().memory_mb,
            512
        );
        let none = [SizeResult::failed(128, "the function failed".into())];
        assert!(recommend(&none, Strategy::Speed, 0.5).is_none());
        let r = TuneReport::new(
            "f".into(),
            Arch::X86_64,
            Strategy::Cost,
            0.5,
            none.to_vec(),
            128,
        );
        assert_eq!(r.recommended_mb, None);
        assert!(r.to_string().contains("nothing recommended"), "{r}");
    }

    #[test]
    fn a_pick_with_little_memory_headroom_is_flagged() {
        let tight = TuneReport::new(
            "f".into(),
            Arch::X86_64,
            Strategy::Cost,
            0.5,
            vec![size(128, &[10.0], 110), size(256, &[10.0], 110)],
            1024,
        );
        assert_eq!(tight.recommended_mb, Some(128));
        assert_eq!(tight.warnings.len(), 1);
        assert!(tight.warnings[0].contains("14%"), "{:?}", tight.warnings);
        let table = tight.to_string();
        assert!(
            table.contains("128 MB") && table.contains("← pick"),
            "{table}"
        );
        assert!(
            table.contains("recommended: 128 MB (was 1024 MB)"),
            "{table}"
        );
    }
}
