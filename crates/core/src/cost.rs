//! The seed's cost model (§4.2), `C = C0 + C1·t + C2·Σ rᵢ·tᵢ`, with Lambda's prices:
//!
//! - `C0`: the fixed charge per event — Lambda's request charge;
//! - `C1·t`: execution time — billed seconds × memory in GB × the price of a GB-second for the
//!   architecture;
//! - `C2·Σ rᵢ·tᵢ`: other resources, each used for a time at a unit price — ephemeral storage
//!   above the free 512 MB (GB-seconds), and API Gateway requests in front of the function.
//!
//! The free tier is left out: it is per account, not per function.

#![warn(missing_docs)]

use std::fmt;

pub use crate::arch::Arch;

/// API Gateway in front of the function, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Api {
    /// The function is invoked directly.
    None,
    /// HTTP API (v2).
    Http,
    /// REST API (v1).
    Rest,
}

impl std::str::FromStr for Api {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Api::None),
            "http" => Ok(Api::Http),
            "rest" => Ok(Api::Rest),
            other => Err(format!("--api {other:?}: none, http or rest")),
        }
    }
}

/// One price table, with where and when it was read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    /// The AWS region these prices are for.
    pub region: &'static str,
    /// When these were read off the public price pages.
    pub as_of: &'static str,
    /// USD per request.
    pub request: f64,
    /// USD per GB-second of execution, x86_64 (first pricing tier).
    pub gb_second_x86_64: f64,
    /// USD per GB-second of execution, arm64 (first pricing tier).
    pub gb_second_arm64: f64,
    /// USD per GB-second of ephemeral storage above the free 512 MB.
    pub ephemeral_gb_second: f64,
    /// USD per API Gateway HTTP API request (first 300 M a month).
    pub http_api_request: f64,
    /// USD per API Gateway REST API request (first 333 M a month).
    pub rest_api_request: f64,
    /// Step Functions, read off aws.amazon.com/step-functions/pricing on this date.
    pub states_as_of: &'static str,
    /// USD per state transition of a Standard workflow.
    pub standard_transition: f64,
    /// USD per Express workflow request.
    pub express_request: f64,
    /// USD per GB-second of Express workflow duration (first 1,000 GB-hours a month), billed
    /// in 64 MB chunks and 100 ms steps.
    pub express_gb_second: f64,
}

/// us-east-1 on-demand prices from aws.amazon.com/lambda/pricing and /api-gateway/pricing.
pub const US_EAST_1: Prices = Prices {
    region: "us-east-1",
    as_of: "2025-06",
    request: 0.20 / 1e6,
    gb_second_x86_64: 0.000_016_666_7,
    gb_second_arm64: 0.000_013_333_4,
    ephemeral_gb_second: 0.000_000_030_9,
    http_api_request: 1.00 / 1e6,
    rest_api_request: 3.50 / 1e6,
    states_as_of: "2026-12",
    standard_transition: 0.025 / 1000.0,
    express_request: 1.00 / 1e6,
    // $0.06 per GB-hour.
    express_gb_second: 0.06 / 3600.0,
};

/// The price tables carried, one per region read. Lambda's and API Gateway's rates differ by
/// region; only tables read off AWS's pages belong here. US East (Ohio) and US West (Oregon)
/// share N. Virginia's Lambda and API Gateway rates (the pricing pages give their examples for
/// "US East (N. Virginia, Ohio), US West (Oregon)").
pub const TABLES: [Prices; 3] = [
    US_EAST_1,
    Prices {
        region: "us-east-2",
        ..US_EAST_1
    },
    Prices {
        region: "us-west-2",
        ..US_EAST_1
    },
];

/// The prices of `region`, and a note when there is no table for it (then us-east-1's, said
/// so: a figure for another region is an estimate).
pub fn prices_for(region: &str) -> (&'static Prices, Option<String>) {
    match TABLES.iter().find(|p| p.region == region) {
        Some(p) => (p, None),
        None => (
            &TABLES[0],
            Some(format!(
                "no price table for {region}: priced at {}'s rates of {}, which may differ from {region}'s",
                TABLES[0].region, TABLES[0].as_of
            )),
        ),
    }
}

impl Prices {
    /// USD per GB-second of execution on `arch`.
    pub fn gb_second(&self, arch: Arch) -> f64 {
        match arch {
            Arch::X86_64 => self.gb_second_x86_64,
            Arch::Arm64 => self.gb_second_arm64,
        }
    }

    /// USD per request through `api` (0 without one).
    pub fn api_request(&self, api: Api) -> f64 {
        match api {
            Api::None => 0.0,
            Api::Http => self.http_api_request,
            Api::Rest => self.rest_api_request,
        }
    }
}

/// What was (or would be) run: the inputs of the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// How many invocations.
    pub invocations: u64,
    /// Σ billed duration over all invocations, in milliseconds.
    pub billed_ms: f64,
    /// The function's memory size.
    pub memory_mb: u32,
    /// The function's ephemeral storage (512 MB are free).
    pub ephemeral_mb: u32,
    /// The architecture it runs on (priced differently).
    pub arch: Arch,
    /// API Gateway in front, if any.
    pub api: Api,
}

impl Usage {
    /// A what-if: `invocations` runs of `duration_ms` each. Lambda bills each run rounded up
    /// to the millisecond.
    pub fn what_if(invocations: u64, duration_ms: f64, memory_mb: u32, arch: Arch) -> Usage {
        Usage {
            invocations,
            billed_ms: invocations as f64 * duration_ms.max(0.0).ceil(),
            memory_mb,
            ephemeral_mb: 512,
            arch,
            api: Api::None,
        }
    }
}

/// The cost, term by term, in USD.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Cost {
    /// C0 per event × events.
    pub requests: f64,
    /// C1·t: GB-seconds of execution.
    pub compute: f64,
    /// Part of C2·Σ rᵢ·tᵢ: ephemeral storage above 512 MB.
    pub ephemeral_storage: f64,
    /// Part of C2·Σ rᵢ·tᵢ: API Gateway requests.
    pub api_gateway: f64,
    /// The sum of the terms.
    pub total: f64,
    /// The GB-seconds of execution behind `compute`.
    pub gb_seconds: f64,
}

/// `C = C0 + C1·t + C2·Σ rᵢ·tᵢ` of `usage` at `prices`, term by term.
pub fn cost(usage: &Usage, prices: &Prices) -> Cost {
    let seconds = usage.billed_ms / 1000.0;
    let gb_seconds = seconds * f64::from(usage.memory_mb) / 1024.0;
    let requests = usage.invocations as f64 * prices.request;
    let compute = gb_seconds * prices.gb_second(usage.arch);
    let extra_gb = f64::from(usage.ephemeral_mb.saturating_sub(512)) / 1024.0;
    let ephemeral_storage = extra_gb * seconds * prices.ephemeral_gb_second;
    let api_gateway = usage.invocations as f64 * prices.api_request(usage.api);
    Cost {
        requests,
        compute,
        ephemeral_storage,
        api_gateway,
        total: requests + compute + ephemeral_storage + api_gateway,
        gb_seconds,
    }
}

/// A Step Functions workflow's use: what a batch run's engine is billed for.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct StatesUsage {
    /// State transitions of Standard workflows (the parent run, and Standard children).
    pub standard_transitions: u64,
    /// Express workflow runs (Express children).
    pub express_requests: u64,
    /// Σ Express run durations, each rounded up to 100 ms, in ms.
    pub express_billed_ms: f64,
}

/// What an Express run of `duration_ms` is billed for: 100 ms steps, at least one.
pub fn express_billed_ms(duration_ms: f64) -> f64 {
    (duration_ms / 100.0).ceil().max(1.0) * 100.0
}

/// Step Functions' bill for `usage`: transitions, plus Express requests and duration at the
/// smallest memory step (64 MB: a child that only calls Lambda stays under it).
pub fn states_cost(usage: &StatesUsage, prices: &Prices) -> f64 {
    let express_gb_s = usage.express_billed_ms / 1000.0 * (64.0 / 1024.0);
    usage.standard_transitions as f64 * prices.standard_transition
        + usage.express_requests as f64 * prices.express_request
        + express_gb_s * prices.express_gb_second
}

/// Scoring `images` stored images in batches of `batch_size` through Step Functions'
/// Distributed Map with EXPRESS children (AWS's form of `deploy batch`), each batch one
/// invocation of `batch_ms`, `concurrency` at once: what it costs and how long it takes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct BatchWhatIf {
    /// Invocations (batches).
    pub invocations: u64,
    /// Lambda's part.
    pub lambda: Cost,
    /// The engine's use.
    pub states: StatesUsage,
    /// Its part, USD.
    pub states_usd: f64,
    /// Both, USD.
    pub total_usd: f64,
    /// Wall time at `concurrency`, seconds (the listing and the engine's own overhead aside).
    pub wall_s: f64,
}

/// See [`BatchWhatIf`].
pub fn batch_what_if(
    images: u64,
    batch_size: u64,
    batch_ms: f64,
    concurrency: u64,
    memory_mb: u32,
    arch: Arch,
    prices: &Prices,
) -> BatchWhatIf {
    let invocations = images.div_ceil(batch_size.max(1));
    let lambda = cost(
        &Usage::what_if(invocations, batch_ms, memory_mb, arch),
        prices,
    );
    let states = StatesUsage {
        // The parent run: entering and leaving the map state, and its end.
        standard_transitions: 3,
        express_requests: invocations,
        // An Express child lasts about its invocation, billed in 100 ms steps.
        express_billed_ms: invocations as f64 * express_billed_ms(batch_ms),
    };
    let states_usd = states_cost(&states, prices);
    let waves = invocations.div_ceil(concurrency.max(1));
    BatchWhatIf {
        invocations,
        lambda,
        states,
        states_usd,
        total_usd: lambda.total + states_usd,
        wall_s: waves as f64 * batch_ms / 1000.0,
    }
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "${:.6} (requests ${:.6}, compute ${:.6} for {:.3} GB-s, ephemeral storage ${:.6}, API Gateway ${:.6})",
            self.total, self.requests, self.compute, self.gb_seconds, self.ephemeral_storage, self.api_gateway
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_without_a_table_is_priced_at_us_east_1_and_says_so() {
        assert_eq!(prices_for("us-east-1"), (&US_EAST_1, None));
        assert_eq!(prices_for("us-west-2").0.region, "us-west-2");
        assert!(prices_for("us-west-2").1.is_none());
        let (p, note) = prices_for("ap-southeast-2");
        assert_eq!(p.region, "us-east-1");
        assert!(note.unwrap().contains("no price table for ap-southeast-2"));
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9_f64.max(b.abs() * 1e-9)
    }

    /// AWS's own worked example (lambda pricing page, x86): 3 M requests a month, 120 ms each,
    /// 1536 MB → 540,000 GB-s → $9.00 compute; $0.60 requests (free tier ignored).
    #[test]
    fn matches_the_pricing_pages_worked_example() {
        let usage = Usage::what_if(3_000_000, 120.0, 1536, Arch::X86_64);
        let c = cost(&usage, &US_EAST_1);
        assert!(close(c.gb_seconds, 540_000.0), "{}", c.gb_seconds);
        assert!(
            close(c.compute, 540_000.0 * 0.000_016_666_7),
            "{}",
            c.compute
        );
        assert!((c.compute - 9.0).abs() < 0.001, "{}", c.compute);
        assert!(close(c.requests, 0.60));
        assert!(close(c.total, c.compute + 0.60));
    }

    /// By hand: 1 M predictions of 40 ms at 512 MB on arm64 behind an HTTP API.
    /// GB-s = 1e6 × 0.040 × 0.5 = 20,000 → × 0.0000133334 = $0.266668; requests $0.20;
    /// API $1.00; total $1.466668.
    #[test]
    fn a_hand_worked_arm64_api_example() {
        let mut usage = Usage::what_if(1_000_000, 40.0, 512, Arch::Arm64);
        usage.api = Api::Http;
        let c = cost(&usage, &US_EAST_1);
        assert!(close(c.gb_seconds, 20_000.0));
        assert!(close(c.compute, 0.266_668));
        assert!(close(c.api_gateway, 1.0));
        assert!(close(c.total, 1.466_668), "{}", c.total);
    }

    /// Durations are billed rounded up to the millisecond; ephemeral storage counts above
    /// 512 MB only: 10 runs of 0.2 ms with 2560 MB storage, 1024 MB memory →
    /// billed 10 ms = 0.01 s; storage 2 GB × 0.01 s × 0.0000000309.
    #[test]
    fn rounds_each_run_up_and_charges_storage_above_512_mb() {
        let mut usage = Usage::what_if(10, 0.2, 1024, Arch::X86_64);
        assert!(close(usage.billed_ms, 10.0));
        usage.ephemeral_mb = 2560;
        let c = cost(&usage, &US_EAST_1);
        assert!(close(c.ephemeral_storage, 2.0 * 0.01 * 0.000_000_030_9));
        usage.ephemeral_mb = 512;
        assert_eq!(cost(&usage, &US_EAST_1).ephemeral_storage, 0.0);
    }

    #[test]
    fn arm64_costs_a_fifth_less_per_gb_second() {
        let x = cost(&Usage::what_if(1000, 100.0, 1024, Arch::X86_64), &US_EAST_1);
        let a = cost(&Usage::what_if(1000, 100.0, 1024, Arch::Arm64), &US_EAST_1);
        assert!((a.compute / x.compute - 0.8).abs() < 1e-3);
    }

    #[test]
    fn a_million_images_in_batches_cost_lambda_and_the_express_children() {
        let w = batch_what_if(1_000_000, 100, 950.0, 1000, 1024, Arch::X86_64, &US_EAST_1);
        assert_eq!(w.invocations, 10_000);
        // 10,000 × 0.95 s at 1 GB, and 10,000 requests.
        assert!((w.lambda.gb_seconds - 9_500.0).abs() < 1e-6, "{w:?}");
        assert_eq!(w.states.express_requests, 10_000);
        assert_eq!(w.states.express_billed_ms, 10_000.0 * 1000.0);
        let express = 10_000.0 * US_EAST_1.express_request
            + 10_000.0 * (1.0 / 16.0) * US_EAST_1.express_gb_second
            + 3.0 * US_EAST_1.standard_transition;
        assert!((w.states_usd - express).abs() < 1e-9, "{w:?}");
        // 10 waves of 1000 batches, 0.95 s each.
        assert!((w.wall_s - 9.5).abs() < 1e-9, "{w:?}");
        assert!((w.total_usd - w.lambda.total - w.states_usd).abs() < 1e-12);
    }
}
