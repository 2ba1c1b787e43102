//! What a batch run came to, read back from where it left it: the result objects under the
//! output prefix (one JSON line per item: its label or why it failed), the map run's counts
//! (items in a batch that failed as a whole have no line), and the bill — Lambda from predict's
//! REPORT lines over the run, the engine from its transitions and requests.

#![warn(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use futures_util::{stream, StreamExt, TryStreamExt};
use serde::Serialize;

use super::definition::Form;
use super::engine::{Counts, Progress};
use super::S3Prefix;
use crate::aws::{aws_err, AwsError};
use crate::cost::{self, Arch, Cost, Prices, StatesUsage};
use crate::records::{ItemResult, LISTED_KEYS, RESULT_PREFIX, RESULT_SUFFIX};
use crate::report::Report;

/// The most result objects a summary reads (1 M images at the default batch of 100); past
/// it, the counts come from the map run alone and the summary says so.
pub const MAX_RESULT_OBJECTS: usize = 10_000;
/// The largest result object read: 1,000 items of at most a message's length each, with room.
const MAX_RESULT_BYTES: i64 = 16 << 20;
/// Result objects fetched at once.
const CONCURRENT_READS: usize = 16;
/// Standard transitions of the parent run: entering and leaving the map state, and the end.
const PARENT_TRANSITIONS: u64 = 3;
/// Standard transitions of one child in the emulator's form: its task, and its end.
const CHILD_TRANSITIONS: u64 = 2;

/// The lines of one run's result objects, tallied.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Tally {
    /// Items with a result line.
    pub items: usize,
    /// Predicted.
    pub succeeded: usize,
    /// Failed, each with its reason.
    pub failed: usize,
    /// The first failures: key and reason.
    pub failures: Vec<(String, String)>,
    /// Failures by reason (the reason with the object's name taken out, see [`reason_kind`]).
    pub reasons: BTreeMap<String, usize>,
    /// Predictions per label.
    pub labels: BTreeMap<String, usize>,
    /// The weights that answered (more than one: a release happened during the run).
    pub models: BTreeSet<String>,
    /// Result objects read.
    pub objects: usize,
    /// Result objects of the run not read (over [`MAX_RESULT_OBJECTS`]).
    pub objects_not_read: usize,
    /// Lines that were not a result (a damaged object).
    pub unreadable_lines: usize,
}

impl Tally {
    /// Adds one result object's text.
    pub fn add(&mut self, text: &str) {
        self.objects += 1;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(r) = serde_json::from_str::<ItemResult>(line) else {
                self.unreadable_lines += 1;
                continue;
            };
            self.items += 1;
            self.models.insert(r.model);
            match (r.label, r.error) {
                (Some(label), _) => {
                    self.succeeded += 1;
                    *self.labels.entry(label).or_insert(0) += 1;
                }
                (None, error) => {
                    self.failed += 1;
                    let why = error.unwrap_or_else(|| "no label and no reason".into());
                    *self.reasons.entry(reason_kind(&why)).or_insert(0) += 1;
                    if self.failures.len() < LISTED_KEYS {
                        self.failures.push((r.key, why));
                    }
                }
            }
        }
    }
}

/// A failure's reason without what names its object (`s3://…` URIs), so that the same kind of
/// failure of many objects counts as one reason.
pub fn reason_kind(why: &str) -> String {
    let words: Vec<&str> = why
        .split_whitespace()
        .map(|w| {
            if w.starts_with("s3://") {
                "the object"
            } else {
                w
            }
        })
        .collect();
    crate::clip::clip(&words.join(" "))
}

/// Reads the result objects under `output` written at or after `since_ms` (this run's and
/// its retries': a re-run rewrites its objects, so older ones are another run's).
pub async fn read_results(
    s3: &aws_sdk_s3::Client,
    output: &S3Prefix,
    since_ms: i64,
) -> Result<Tally, AwsError> {
    // S3 keeps LastModified to the second.
    let since_s = since_ms.div_euclid(1000);
    let mut keys = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(&output.bucket)
        .prefix(format!("{}{RESULT_PREFIX}", output.prefix))
        .into_paginator()
        .send();
    let listing = format!("listing the results under {output}");
    while let Some(page) = pages.next().await {
        let page = page.map_err(aws_err(listing.clone()))?;
        for o in page.contents() {
            let fresh = o.last_modified().is_some_and(|t| t.secs() >= since_s);
            if let (Some(k), true) = (o.key(), fresh) {
                if k.ends_with(RESULT_SUFFIX) {
                    keys.push(k.to_owned());
                }
            }
        }
    }
    let mut tally = Tally {
        objects_not_read: keys.len().saturating_sub(MAX_RESULT_OBJECTS),
        ..Tally::default()
    };
    keys.truncate(MAX_RESULT_OBJECTS);
    let texts: Vec<String> = stream::iter(keys)
        .map(|key| read_one(s3, &output.bucket, key))
        .buffer_unordered(CONCURRENT_READS)
        .try_collect()
        .await?;
    for t in &texts {
        tally.add(t);
    }
    Ok(tally)
}

async fn read_one(s3: &aws_sdk_s3::Client, bucket: &str, key: String) -> Result<String, AwsError> {
    let action = format!("reading s3://{bucket}/{key}");
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .map_err(aws_err(action.clone()))?;
    if out.content_length().unwrap_or(0) > MAX_RESULT_BYTES {
        return Err(AwsError::new(
            action,
            format!("over {MAX_RESULT_BYTES} bytes: not a result object this tool wrote"),
        ));
    }
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| AwsError::new(action, e.to_string()))?;
    Ok(String::from_utf8_lossy(&bytes.into_bytes()).into_owned())
}

/// The bill of a run.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Bill {
    /// Lambda: predict's invocations over the run, from their REPORT lines.
    pub lambda: Cost,
    /// Invocations those lines counted.
    pub invocations: usize,
    /// The engine's use.
    pub states: StatesUsage,
    /// Its cost, USD.
    pub states_usd: f64,
    /// Both, USD.
    pub total_usd: f64,
}

/// Prices a run: Lambda from `reports` (predict's REPORT lines between the run's start and
/// stop), the engine from the children the map ran in `form`.
pub fn bill(
    reports: &[Report],
    children: &Counts,
    form: Form,
    arch: Arch,
    prices: &Prices,
) -> Bill {
    // Each invocation priced as monitor prices it (one home: report::summarize).
    let lambda = crate::report::summarize(reports, arch, cost::Api::None, 512, prices).cost;
    let runs = children.total.max(0) as u64;
    let states = match form {
        // Each Express child lasts about its invocation: rounded up to Step Functions' 100 ms.
        Form::Aws => StatesUsage {
            standard_transitions: PARENT_TRANSITIONS,
            express_requests: runs,
            express_billed_ms: reports
                .iter()
                .map(|r| cost::express_billed_ms(r.duration_ms))
                .sum(),
        },
        Form::Emulator => StatesUsage {
            standard_transitions: PARENT_TRANSITIONS + runs * CHILD_TRANSITIONS,
            ..StatesUsage::default()
        },
    };
    let states_usd = cost::states_cost(&states, prices);
    Bill {
        lambda,
        invocations: reports.len(),
        states,
        states_usd,
        total_usd: lambda.total + states_usd,
    }
}

/// Everything `deploy batch` prints at the end.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The run as the engine last saw it.
    pub run: Progress,
    /// The result lines.
    pub results: Tally,
    /// Items whose batch failed as a whole (no result line): the map's failed, timed-out and
    /// aborted items.
    pub items_in_failed_batches: i64,
    /// Wall time, seconds.
    pub wall_s: f64,
    /// The bill.
    pub bill: Bill,
    /// Prices' region and dates.
    pub priced: String,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.results;
        writeln!(f, "run {}: {}", self.run.execution_arn, self.run.status)?;
        if let Some(e) = &self.run.error {
            writeln!(f, "  why: {e}")?;
        }
        writeln!(
            f,
            "  items: {} listed, {} succeeded, {} failed, {} in batches that failed as a whole; {:.1} s",
            self.run.items.total, r.succeeded, r.failed, self.items_in_failed_batches, self.wall_s
        )?;
        if !r.labels.is_empty() {
            let labels: Vec<String> = r.labels.iter().map(|(l, n)| format!("{l}: {n}")).collect();
            writeln!(f, "  labels: {}", labels.join(", "))?;
        }
        if !r.reasons.is_empty() {
            let reasons: Vec<String> = r
                .reasons
                .iter()
                .map(|(w, n)| format!("{n} × {w}"))
                .collect();
            writeln!(f, "  failed: {}", reasons.join("; "))?;
            for (key, why) in r.failures.iter().take(5) {
                writeln!(f, "    {key}: {why}")?;
            }
        }
        if r.objects_not_read > 0 {
            writeln!(
                f,
                "  ({} more result objects not read: labels and reasons are of the first {MAX_RESULT_OBJECTS})",
                r.objects_not_read
            )?;
        }
        if r.models.len() > 1 {
            writeln!(
                f,
                "  note: {} different weights answered (a release during the run)",
                r.models.len()
            )?;
        }
        if let Some(out) = &self.run.output {
            writeln!(f, "  results: {out} (one JSON line per image)")?;
        }
        let b = &self.bill;
        write!(
            f,
            "  cost: ${:.6} = Lambda ${:.6} ({} invocations, {:.3} GB-s) + Step Functions ${:.6} ({} transitions, {} express runs); {}",
            b.total_usd,
            b.lambda.total,
            b.invocations,
            b.lambda.gb_seconds,
            b.states_usd,
            b.states.standard_transitions,
            b.states.express_requests,
            self.priced
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::US_EAST_1;

    #[test]
    fn result_lines_are_tallied_by_label_and_by_reason() {
        let mut t = Tally::default();
        t.add(concat!(
            r#"{"key":"a.png","digit":7,"label":"7","probabilities":[0.1],"model":"m1"}"#,
            "\n",
            r#"{"key":"b.png","digit":7,"label":"7","probabilities":[0.1],"model":"m1"}"#,
            "\n",
            r#"{"key":"c.txt","error":"not an image: unknown format","model":"m1"}"#,
            "\n",
            r#"{"key":"e.png","error":"s3://b/e.png is over 6291456 bytes: not read","model":"m1"}"#,
            "\n",
            r#"{"key":"f.png","error":"s3://b/f.png is over 6291456 bytes: not read","model":"m1"}"#,
            "\n",
            "\n",
            "garbage\n",
        ));
        t.add(r#"{"key":"d.png","error":"too large: 6291457 bytes","model":"m1"}"#);
        assert_eq!((t.objects, t.items, t.succeeded, t.failed), (2, 6, 2, 4));
        assert_eq!(t.labels["7"], 2);
        assert_eq!(t.reasons["not an image: unknown format"], 1);
        assert_eq!(t.reasons["too large: 6291457 bytes"], 1);
        assert_eq!(t.reasons["the object is over 6291456 bytes: not read"], 2);
        assert_eq!(t.unreadable_lines, 1);
        assert_eq!(t.failures[0].0, "c.txt");
        assert_eq!(t.models.len(), 1);
    }

    fn report(duration_ms: f64) -> Report {
        Report {
            request_id: "r".into(),
            duration_ms,
            billed_ms: duration_ms.ceil(),
            memory_size_mb: 1024,
            max_memory_used_mb: 100,
            init_ms: None,
            status: None,
            error_type: None,
        }
    }

    #[test]
    fn a_run_is_billed_lambda_from_its_reports_and_the_engine_by_form() {
        let reports = vec![report(950.0), report(1001.0)];
        let children = Counts {
            total: 2,
            succeeded: 2,
            ..Counts::default()
        };
        let aws = bill(&reports, &children, Form::Aws, Arch::X86_64, &US_EAST_1);
        // Lambda: 1.951 s at 1 GB, and two requests.
        assert!((aws.lambda.gb_seconds - 1.951).abs() < 1e-9, "{aws:?}");
        assert!(
            (aws.lambda.total - (1.951 * US_EAST_1.gb_second_x86_64 + 2.0 * US_EAST_1.request))
                .abs()
                < 1e-12
        );
        // Express: two runs of 1.0 s and 1.1 s at 64 MB, and the parent's transitions.
        assert_eq!(aws.states.express_requests, 2);
        assert_eq!(aws.states.express_billed_ms, 2100.0);
        let express = 2.0 * US_EAST_1.express_request
            + 2.1 / 16.0 * US_EAST_1.express_gb_second
            + 3.0 * US_EAST_1.standard_transition;
        assert!((aws.states_usd - express).abs() < 1e-12, "{aws:?}");
        let emulator = bill(
            &reports,
            &children,
            Form::Emulator,
            Arch::X86_64,
            &US_EAST_1,
        );
        assert_eq!(emulator.states.standard_transitions, 3 + 2 * 2);
        assert!(
            (emulator.total_usd - emulator.lambda.total - 7.0 * US_EAST_1.standard_transition)
                .abs()
                < 1e-12
        );
    }
}
