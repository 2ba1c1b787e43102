//! `deploy batch` as two calls around the follow: [`start`] checks what the run needs, makes
//! or updates the state machine and starts a run; [`summarize`] reads a finished run's results
//! and REPORT lines and prices it. Following in between is the caller's (a bar, Ctrl-C).

use std::time::{SystemTime, UNIX_EPOCH};

use super::engine::{self, Progress as RunProgress};
use super::summary::{self, Summary};
use super::{BatchSpec, S3Prefix};
use crate::image::Function;
use crate::pipeline::{Progress, StageError};
use crate::report;
use crate::session::Session;
use crate::{lambda, logs};

/// Checks that `spec`'s function is released, makes or updates the state machine and its
/// role, and starts a run: its execution ARN.
pub async fn start(s: &Session, spec: &BatchSpec, p: &dyn Progress) -> Result<String, StageError> {
    let cfg = &s.config;
    let predict = cfg.function(Function::Predict);
    // The children invoke released code: an alias that exists (or a published version).
    if !spec.qualifier.bytes().all(|b| b.is_ascii_digit())
        && lambda::read_alias(&s.clients.lambda, &spec.function, &spec.qualifier)
            .await?
            .is_none()
    {
        return Err(StageError::Refused(format!(
            "{} has no alias {}: run `deploy release` first (a batch scores the released model)",
            spec.function, spec.qualifier
        )));
    }
    if let Some(reserved) = predict.reserved_concurrency {
        if spec.concurrency as i32 > reserved {
            p.say(format!(
                "warning: --concurrency {} is over predict's reserved concurrency ({reserved}): \
                 the extra invocations are throttled and retried, and the API shares those {reserved}",
                spec.concurrency
            ));
        }
    }
    let made = engine::ensure(&s.clients.states, &s.clients.iam, spec, &cfg.role.name)
        .await
        .map_err(|e| StageError::During {
            what: "failed to set up the batch state machine".into(),
            source: Box::new(e.into()),
        })?;
    p.say(format!(
        "state machine {} {} (role {}{}); scoring s3://{}/{}* with {} into {}",
        spec.state_machine,
        if made.created {
            "created"
        } else {
            "up to date"
        },
        spec.role,
        if made.role_created { ", created" } else { "" },
        spec.input.bucket,
        spec.input.prefix,
        spec.function_arn,
        spec.output
    ));
    Ok(engine::start(&s.clients.states, &made.state_machine_arn, &run_name()).await?)
}

/// A run's name: unique per start (the name is the execution's id), the time to the
/// millisecond.
fn run_name() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let t = humantime::format_rfc3339_millis(UNIX_EPOCH + now).to_string();
    format!(
        "batch-{}",
        t.replace([':', '.'], "")
            .replace('T', "-")
            .trim_end_matches('Z')
    )
}

/// What a finished run did: its result lines, its REPORT lines and its bill.
pub async fn summarize(s: &Session, run: RunProgress) -> Result<Summary, StageError> {
    let output: Option<S3Prefix> = run.output.as_deref().and_then(|o| o.parse().ok());
    let results = match &output {
        Some(out) => summary::read_results(&s.clients.s3, out, run.start_ms)
            .await
            .map_err(|e| StageError::During {
                what: format!(
                    "the run ended {}, but its results under {out} cannot be read (the deployer \
                     needs s3:ListBucket and s3:GetObject there; the default output, in the \
                     models bucket, has both)",
                    run.status
                ),
                source: Box::new(e.into()),
            })?,
        None => summary::Tally::default(),
    };
    let stop_ms = run.stop_ms.unwrap_or(run.start_ms);
    let function = &s.config.function(Function::Predict).name;
    // Lambda writes a REPORT line when an invocation ends: a few seconds of slack after the
    // run's stop.
    let (lines, _) = logs::lines(
        &s.clients.logs,
        &logs::log_group(function),
        run.start_ms,
        Some(stop_ms + 10_000),
        Some("REPORT"),
    )
    .await?;
    let reports: Vec<report::Report> = lines
        .iter()
        .filter_map(|l| report::parse(&l.message))
        .collect();
    let arch = match lambda::function_arch(&s.clients.lambda, function).await? {
        Some(arch) => arch,
        None => s.config.arch().map_err(StageError::Refused)?,
    };
    let (prices, note) = crate::cost::prices_for(&s.account.region);
    let bill = summary::bill(&reports, &run.children, run.form, arch, prices);
    let items_in_failed_batches = run.items.failed + run.items.timed_out + run.items.aborted;
    Ok(Summary {
        wall_s: (stop_ms - run.start_ms).max(0) as f64 / 1000.0,
        priced: format!(
            "{} prices of {} (Lambda) and {} (Step Functions){}",
            prices.region,
            prices.as_of,
            prices.states_as_of,
            note.map(|n| format!("; {n}")).unwrap_or_default()
        ),
        items_in_failed_batches,
        results,
        bill,
        run,
    })
}
