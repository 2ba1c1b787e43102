//! `deploy monitor` and `deploy logs`: what the functions' log groups say from a point in time
//! on, read again and again to follow. Each poll returns what is new; the caller prints it
//! and decides when to poll again.

#![warn(missing_docs)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::arch::Arch;
use crate::aws::AwsError;
use crate::cost::{self, Api, Prices};
use crate::image::Function;
use crate::logs::{self, LogLine};
use crate::report::{self, Report, Summary};
use crate::session::Session;

/// One function's log group, read from `since_ms` on.
struct Watched {
    function: Function,
    name: String,
    group: String,
    since_ms: i64,
}

/// `functions`' log groups, from `since` ago on.
fn watch(s: &Session, functions: &[Function], since: Duration) -> Vec<Watched> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    functions
        .iter()
        .map(|&function| {
            let name = s.config.function(function).name.clone();
            Watched {
                function,
                group: logs::log_group(&name),
                name,
                since_ms: now_ms - since.as_millis() as i64,
            }
        })
        .collect()
}

/// One function's invocations so far, summed up and priced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FunctionSummary {
    /// The function's name.
    pub function: String,
    /// Its invocations since the start.
    pub summary: Summary,
}

/// The REPORT lines of each function, summed up as they come (`deploy monitor`).
pub struct Monitor {
    logs: aws_sdk_cloudwatchlogs::Client,
    watched: Vec<Watched>,
    /// Per function: the architecture it runs on, its /tmp, what it reported so far.
    priced: Vec<(Arch, u32, Vec<Report>)>,
    api: Api,
    prices: &'static Prices,
    /// Said when the region's prices are not in the table (another region's are used).
    pub price_note: Option<String>,
}

impl Monitor {
    /// Watches `functions` from `since` ago, priced by the architecture each really runs on
    /// (`deploy release` takes it from the image, whatever the config says), predict with
    /// `api` in front.
    pub async fn start(
        s: &Session,
        functions: &[Function],
        since: Duration,
        api: Api,
    ) -> Result<Self, super::pipeline::StageError> {
        let config_arch = s
            .config
            .arch()
            .map_err(super::pipeline::StageError::Refused)?;
        let mut priced = Vec::new();
        for &f in functions {
            let fc = s.config.function(f);
            let arch = crate::lambda::function_arch(&s.clients.lambda, &fc.name).await?;
            priced.push((
                arch.unwrap_or(config_arch),
                fc.ephemeral_mb as u32,
                Vec::new(),
            ));
        }
        let (prices, price_note) = cost::prices_for(&s.account.region);
        Ok(Monitor {
            logs: s.clients.logs.clone(),
            watched: watch(s, functions, since),
            priced,
            api,
            prices,
            price_note,
        })
    }

    /// Reads what is new and returns each function's summary of everything seen so far.
    pub async fn poll(&mut self) -> Result<Vec<FunctionSummary>, AwsError> {
        let mut out = Vec::new();
        for (w, (arch, ephemeral_mb, seen)) in self.watched.iter_mut().zip(&mut self.priced) {
            let (reports, newest) = logs::reports(&self.logs, &w.group, w.since_ms).await?;
            w.since_ms = newest + 1;
            seen.extend(reports);
            let api = if w.function == Function::Predict {
                self.api
            } else {
                Api::None
            };
            out.push(FunctionSummary {
                function: w.name.clone(),
                summary: report::summarize(seen, *arch, api, *ephemeral_mb, self.prices),
            });
        }
        Ok(out)
    }
}

/// A log line and whose it is.
#[derive(Debug, Clone)]
pub struct TailLine {
    /// Which function.
    pub function: Function,
    /// Its name.
    pub name: String,
    /// The line.
    pub line: LogLine,
}

/// The functions' log lines as they come (`deploy logs`).
pub struct Tail {
    logs: aws_sdk_cloudwatchlogs::Client,
    watched: Vec<Watched>,
    pattern: Option<String>,
}

impl Tail {
    /// `functions`' lines from `since` ago on, matching `pattern` (a CloudWatch Logs filter
    /// pattern) when given.
    pub fn start(
        s: &Session,
        functions: &[Function],
        since: Duration,
        pattern: Option<String>,
    ) -> Self {
        Tail {
            logs: s.clients.logs.clone(),
            watched: watch(s, functions, since),
            pattern,
        }
    }

    /// The lines written since the last poll, function by function, each in time order.
    pub async fn poll(&mut self) -> Result<Vec<TailLine>, AwsError> {
        let mut out = Vec::new();
        for w in &mut self.watched {
            let (lines, newest) = logs::lines(
                &self.logs,
                &w.group,
                w.since_ms,
                None,
                self.pattern.as_deref(),
            )
            .await?;
            if !lines.is_empty() {
                w.since_ms = newest + 1;
            }
            out.extend(lines.into_iter().map(|line| TailLine {
                function: w.function,
                name: w.name.clone(),
                line,
            }));
        }
        Ok(out)
    }
}
