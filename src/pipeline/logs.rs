//! CloudWatch Logs: the functions' log groups (created with a retention, so they do not grow
//! forever) and reading REPORT lines back for `deploy monitor`.

#![warn(missing_docs)]

use super::aws::{aws_err, AwsError};
use crate::report::{self, Report};

/// The log group Lambda writes `function_name`'s logs to.
pub fn log_group(function_name: &str) -> String {
    format!("/aws/lambda/{function_name}")
}

/// Creates the log group when missing and sets its retention.
pub async fn ensure_log_group(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    retention_days: i32,
) -> Result<(), AwsError> {
    match logs
        .create_log_group()
        .log_group_name(group)
        .send()
        .await
        .map_err(aws_err(format!("creating log group {group}")))
    {
        Ok(_) => {}
        Err(e) if e.is("ResourceAlreadyExistsException") => {}
        Err(e) => return Err(e),
    }
    logs.put_retention_policy()
        .log_group_name(group)
        .retention_in_days(retention_days)
        .send()
        .await
        .map_err(aws_err(format!("setting the retention of {group}")))?;
    Ok(())
}

/// Deletes a log group; `false` when there was none.
pub async fn delete_log_group(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
) -> Result<bool, AwsError> {
    match logs
        .delete_log_group()
        .log_group_name(group)
        .send()
        .await
        .map_err(aws_err(format!("deleting log group {group}")))
    {
        Ok(_) => Ok(true),
        Err(e) if e.is("ResourceNotFoundException") => Ok(false),
        Err(e) => Err(e),
    }
}

/// The REPORT lines of `group` from `since_ms` (epoch ms) on, oldest first, with the
/// timestamp of the newest event seen (to follow from).
pub async fn reports(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    since_ms: i64,
) -> Result<(Vec<Report>, i64), AwsError> {
    let mut out = Vec::new();
    let mut newest = since_ms;
    let mut pages = logs
        .filter_log_events()
        .log_group_name(group)
        .start_time(since_ms)
        // A single term: what every implementation of filter patterns understands.
        .filter_pattern("REPORT")
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = match page.map_err(aws_err(format!("reading the logs of {group}"))) {
            Ok(p) => p,
            // A function never invoked has no log group yet: nothing to report.
            Err(e) if e.is("ResourceNotFoundException") => break,
            Err(e) => return Err(e),
        };
        for event in page.events() {
            newest = newest.max(event.timestamp().unwrap_or(0));
            if let Some(r) = event.message().and_then(report::parse) {
                out.push(r);
            }
        }
    }
    Ok((out, newest))
}
