//! Lambda's `REPORT` log lines — one per invocation, written by Lambda itself — parsed into
//! figures: counts, cold starts, duration percentiles, memory headroom, errors and cost.
//!
//! ```text
//! REPORT RequestId: 8f5…  Duration: 41.27 ms  Billed Duration: 42 ms  Memory Size: 512 MB  Max Memory Used: 53 MB  Init Duration: 11.93 ms
//! ```
//! Fields are tab-separated `Name: value unit`; `Init Duration` appears on cold starts only,
//! `Status`/`Error Type` on failed ones (timeouts, crashes), and newer runtimes may add fields
//! (`XRAY TraceId`, `Restore Duration`) that are ignored.

#![warn(missing_docs)]

use crate::cost::{self, Api, Arch, Cost, Prices, Usage};

/// One invocation, from its REPORT line.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The invocation's request id.
    pub request_id: String,
    /// `Duration`: the handler's time.
    pub duration_ms: f64,
    /// `Billed Duration`: what was charged (the duration rounded up to the millisecond).
    pub billed_ms: f64,
    /// `Memory Size`: the configured memory.
    pub memory_size_mb: u32,
    /// `Max Memory Used`: the invocation's peak.
    pub max_memory_used_mb: u32,
    /// Present on cold starts.
    pub init_ms: Option<f64>,
    /// `Status` when not a success (`error`, `timeout`).
    pub status: Option<String>,
    /// `Error Type` beside a failed status (`Runtime.ExitError`, `Runtime.OutOfMemory`).
    pub error_type: Option<String>,
}

/// The line as Lambda writes it: tab-separated fields in Lambda's order, a trailing tab;
/// what [`parse`] reads back. Durations keep two decimals, the billed one none.
impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "REPORT RequestId: {}\tDuration: {:.2} ms\tBilled Duration: {:.0} ms\tMemory Size: {} MB\tMax Memory Used: {} MB\t",
            self.request_id, self.duration_ms, self.billed_ms, self.memory_size_mb, self.max_memory_used_mb
        )?;
        if let Some(init) = self.init_ms {
            write!(f, "Init Duration: {init:.2} ms\t")?;
        }
        if let Some(status) = &self.status {
            write!(f, "Status: {status}\t")?;
        }
        if let Some(kind) = &self.error_type {
            write!(f, "Error Type: {kind}\t")?;
        }
        Ok(())
    }
}

/// Parses one log message; `None` when it is not a REPORT line or lacks a required field.
pub fn parse(line: &str) -> Option<Report> {
    let rest = line.trim().strip_prefix("REPORT ")?;
    let mut r = Report {
        request_id: String::new(),
        duration_ms: f64::NAN,
        billed_ms: f64::NAN,
        memory_size_mb: 0,
        max_memory_used_mb: 0,
        init_ms: None,
        status: None,
        error_type: None,
    };
    for field in rest.split('\t').map(str::trim).filter(|f| !f.is_empty()) {
        let Some((name, value)) = field.split_once(": ") else {
            continue;
        };
        let number = || value.split_whitespace().next()?.parse::<f64>().ok();
        match name {
            "RequestId" => r.request_id = value.trim().to_owned(),
            "Duration" => r.duration_ms = number()?,
            "Billed Duration" => r.billed_ms = number()?,
            "Memory Size" => r.memory_size_mb = number()? as u32,
            "Max Memory Used" => r.max_memory_used_mb = number()? as u32,
            "Init Duration" => r.init_ms = Some(number()?),
            "Status" if value.trim() != "success" => r.status = Some(value.trim().to_owned()),
            "Error Type" => r.error_type = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    let complete = !r.request_id.is_empty()
        && r.duration_ms.is_finite()
        && r.billed_ms.is_finite()
        && r.memory_size_mb > 0;
    complete.then_some(r)
}

/// What a set of invocations adds up to.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    /// How many invocations.
    pub invocations: usize,
    /// Those with an `Init Duration`.
    pub cold_starts: usize,
    /// Those with a failure `Status` (error, timeout).
    pub errors: usize,
    /// Median duration.
    pub duration_p50_ms: f64,
    /// 95th percentile duration.
    pub duration_p95_ms: f64,
    /// Longest duration.
    pub duration_max_ms: f64,
    /// Longest cold-start init, if there was a cold start.
    pub init_max_ms: Option<f64>,
    /// The configured memory (the largest seen).
    pub memory_size_mb: u32,
    /// The largest peak any invocation used.
    pub max_memory_used_mb: u32,
    /// Share of the configured memory never used by any invocation.
    pub memory_headroom: f64,
    /// What the invocations cost.
    pub cost: Cost,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Sums up `reports`; cost from their billed durations and memory sizes (each invocation at
/// its own memory size, so a mid-period memory change is priced right).
/// One line for people: counts, durations, memory, cost.
impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} invocations ({} cold, {} errors); \
             duration p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
            self.invocations,
            self.cold_starts,
            self.errors,
            self.duration_p50_ms,
            self.duration_p95_ms,
            self.duration_max_ms
        )?;
        if let Some(init) = self.init_max_ms {
            write!(f, ", init max {init:.1} ms")?;
        }
        write!(
            f,
            "; memory {} of {} MB used ({:.0}% headroom); cost {}",
            self.max_memory_used_mb,
            self.memory_size_mb,
            self.memory_headroom * 100.0,
            self.cost
        )
    }
}

/// The figures of `reports`, priced for `arch` with `api` in front at `prices`.
pub fn summarize(
    reports: &[Report],
    arch: Arch,
    api: Api,
    ephemeral_mb: u32,
    prices: &Prices,
) -> Summary {
    let mut durations: Vec<f64> = reports.iter().map(|r| r.duration_ms).collect();
    durations.sort_by(f64::total_cmp);
    let memory_size_mb = reports.iter().map(|r| r.memory_size_mb).max().unwrap_or(0);
    let max_memory_used_mb = reports
        .iter()
        .map(|r| r.max_memory_used_mb)
        .max()
        .unwrap_or(0);
    let mut total = Cost::default();
    for r in reports {
        let c = cost::cost(
            &Usage {
                invocations: 1,
                billed_ms: r.billed_ms,
                memory_mb: r.memory_size_mb,
                ephemeral_mb,
                arch,
                api,
            },
            prices,
        );
        total.requests += c.requests;
        total.compute += c.compute;
        total.ephemeral_storage += c.ephemeral_storage;
        total.api_gateway += c.api_gateway;
        total.total += c.total;
        total.gb_seconds += c.gb_seconds;
    }
    Summary {
        invocations: reports.len(),
        cold_starts: reports.iter().filter(|r| r.init_ms.is_some()).count(),
        errors: reports.iter().filter(|r| r.status.is_some()).count(),
        duration_p50_ms: percentile(&durations, 50.0),
        duration_p95_ms: percentile(&durations, 95.0),
        duration_max_ms: durations.last().copied().unwrap_or(0.0),
        init_max_ms: reports.iter().filter_map(|r| r.init_ms).reduce(f64::max),
        memory_size_mb,
        max_memory_used_mb,
        memory_headroom: if memory_size_mb > 0 {
            1.0 - f64::from(max_memory_used_mb) / f64::from(memory_size_mb)
        } else {
            0.0
        },
        cost: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::US_EAST_1;

    // Real formats, as Lambda writes them (tabs between fields, trailing tab).
    const COLD: &str = "REPORT RequestId: 6f1c1b6e-0f39-4a63-9d62-3c2f4b8f0a11\tDuration: 41.27 ms\tBilled Duration: 42 ms\tMemory Size: 512 MB\tMax Memory Used: 53 MB\tInit Duration: 11.93 ms\t";
    const WARM: &str = "REPORT RequestId: 0b4c7f5e-5a8e-4f0e-8b7c-1d2e3f4a5b6c\tDuration: 3.05 ms\tBilled Duration: 4 ms\tMemory Size: 512 MB\tMax Memory Used: 54 MB\t";
    const XRAY: &str = "REPORT RequestId: 9a8b7c6d-1111-2222-3333-444455556666\tDuration: 120.00 ms\tBilled Duration: 120 ms\tMemory Size: 1024 MB\tMax Memory Used: 131 MB\t\nXRAY TraceId: 1-5e1b4151-5ac6c58f5b0a9d8e4e8f7a6b\tSegmentId: 6b0a9d8e4e8f7a6b\tSampled: true\t";
    const TIMEOUT: &str = "REPORT RequestId: 12345678-aaaa-bbbb-cccc-1234567890ab\tDuration: 3000.00 ms\tBilled Duration: 3000 ms\tMemory Size: 512 MB\tMax Memory Used: 60 MB\tStatus: timeout";

    #[test]
    fn parses_cold_and_warm_lines() {
        let c = parse(COLD).unwrap();
        assert_eq!(c.request_id, "6f1c1b6e-0f39-4a63-9d62-3c2f4b8f0a11");
        assert_eq!((c.duration_ms, c.billed_ms), (41.27, 42.0));
        assert_eq!((c.memory_size_mb, c.max_memory_used_mb), (512, 53));
        assert_eq!(c.init_ms, Some(11.93));
        let w = parse(WARM).unwrap();
        assert_eq!(w.init_ms, None);
        assert_eq!(w.status, None);
        let x = parse(XRAY).unwrap();
        assert_eq!(x.billed_ms, 120.0);
        assert_eq!(parse(TIMEOUT).unwrap().status.as_deref(), Some("timeout"));
    }

    #[test]
    fn a_line_written_reads_back_the_same() {
        for line in [COLD, WARM, TIMEOUT] {
            let r = parse(line).unwrap();
            assert_eq!(parse(&r.to_string()), Some(r.clone()), "{line}");
        }
        assert_eq!(parse(WARM).unwrap().to_string(), WARM);
        assert_eq!(parse(COLD).unwrap().to_string(), COLD);
        let crashed = "REPORT RequestId: unknown\tDuration: 0.00 ms\tBilled Duration: 0 ms\tMemory Size: 128 MB\tMax Memory Used: 128 MB\tStatus: error\tError Type: Runtime.ExitError\t";
        let r = parse(crashed).unwrap();
        assert_eq!(
            (r.status.as_deref(), r.error_type.as_deref()),
            (Some("error"), Some("Runtime.ExitError"))
        );
        assert_eq!(r.to_string(), crashed);
    }

    #[test]
    fn other_lines_are_not_reports() {
        for line in [
            "START RequestId: 6f1c1b6e Version: $LATEST",
            "END RequestId: 6f1c1b6e",
            "{\"level\":\"INFO\",\"message\":\"REPORT this\"}",
            "REPORT RequestId: x\tDuration: fast ms",
            "",
        ] {
            assert_eq!(parse(line), None, "{line}");
        }
    }

    #[test]
    fn sums_up_durations_cold_starts_errors_memory_and_cost() {
        let reports: Vec<Report> = [COLD, WARM, WARM, TIMEOUT]
            .iter()
            .map(|l| parse(l).unwrap())
            .collect();
        let s = summarize(&reports, Arch::X86_64, Api::Http, 512, &US_EAST_1);
        assert_eq!((s.invocations, s.cold_starts, s.errors), (4, 1, 1));
        assert_eq!(s.duration_p50_ms, 3.05);
        assert_eq!(s.duration_p95_ms, 3000.0);
        assert_eq!(s.duration_max_ms, 3000.0);
        assert_eq!(s.init_max_ms, Some(11.93));
        assert_eq!((s.memory_size_mb, s.max_memory_used_mb), (512, 60));
        assert!((s.memory_headroom - (1.0 - 60.0 / 512.0)).abs() < 1e-12);
        // By hand: billed 42 + 4 + 4 + 3000 = 3050 ms at 0.5 GB = 1.525 GB-s.
        assert!((s.cost.gb_seconds - 1.525).abs() < 1e-12);
        let expected = 1.525 * 0.000_016_666_7 + 4.0 * 0.20e-6 + 4.0 * 1.0e-6;
        assert!((s.cost.total - expected).abs() < 1e-15, "{}", s.cost.total);
        let line = s.to_string();
        assert!(
            line.starts_with("4 invocations (1 cold, 1 errors); duration p50 3.0 ms")
                && line.contains(", init max 11.9 ms; memory 60 of 512 MB used (88% headroom)"),
            "{line}"
        );
    }

    #[test]
    fn an_empty_period_is_all_zeros() {
        let s = summarize(&[], Arch::Arm64, Api::None, 512, &US_EAST_1);
        assert_eq!(
            (s.invocations, s.duration_p95_ms, s.cost.total),
            (0, 0.0, 0.0)
        );
    }
}
