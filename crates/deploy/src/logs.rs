//! CloudWatch Logs: the functions' log groups (created with a retention, so they do not grow
//! forever) and reading REPORT lines back for `deploy monitor`.

#![warn(missing_docs)]

use super::aws::{aws_err, Absent, AwsError};
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
    logs.create_log_group()
        .log_group_name(group)
        .send()
        .await
        .map_err(aws_err(format!("creating log group {group}")))
        .already_if("ResourceAlreadyExistsException")?;
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
    Ok(logs
        .delete_log_group()
        .log_group_name(group)
        .send()
        .await
        .map_err(aws_err(format!("deleting log group {group}")))
        .absent_if("ResourceNotFoundException")?
        .is_some())
}

/// One log line of a function.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LogLine {
    /// When it was written, ms since 1970.
    pub timestamp_ms: i64,
    /// The log stream (one per execution environment).
    pub stream: String,
    /// The line, without its trailing newline.
    pub message: String,
}

impl std::fmt::Display for LogLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let when = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(self.timestamp_ms.max(0) as u64);
        write!(
            f,
            "{} {}",
            humantime::format_rfc3339_millis(when),
            self.message
        )
    }
}

/// The lines of `group` from `since_ms` (epoch ms) on, up to `until_ms` when given, oldest
/// first, matching `pattern` (a CloudWatch Logs filter pattern) when given; with the
/// timestamp of the newest line (to follow from). A group not made yet (a function never
/// invoked) has no lines.
pub async fn lines(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    since_ms: i64,
    until_ms: Option<i64>,
    pattern: Option<&str>,
) -> Result<(Vec<LogLine>, i64), AwsError> {
    let mut out = Vec::new();
    let mut newest = since_ms;
    let mut pages = logs
        .filter_log_events()
        .log_group_name(group)
        .start_time(since_ms)
        .set_end_time(until_ms)
        .set_filter_pattern(pattern.map(str::to_owned))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = match page.map_err(aws_err(format!("reading the logs of {group}"))) {
            Ok(p) => p,
            Err(e) if e.is("ResourceNotFoundException") => break,
            Err(e) => return Err(e),
        };
        for event in page.events() {
            let timestamp_ms = event.timestamp().unwrap_or(0);
            newest = newest.max(timestamp_ms);
            out.push(LogLine {
                timestamp_ms,
                stream: event.log_stream_name().unwrap_or_default().to_owned(),
                message: event
                    .message()
                    .unwrap_or_default()
                    .trim_end_matches('\n')
                    .to_owned(),
            });
        }
    }
    // Pages come per stream; people read in time order.
    out.sort_by_key(|l| l.timestamp_ms);
    Ok((out, newest))
}

/// The REPORT lines of `group` from `since_ms` (epoch ms) on, oldest first, with the
/// timestamp of the newest event seen (to follow from).
pub async fn reports(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    since_ms: i64,
) -> Result<(Vec<Report>, i64), AwsError> {
    // A single term: what every implementation of filter patterns understands.
    let (found, newest) = lines(logs, group, since_ms, None, Some("REPORT")).await?;
    Ok((
        found
            .iter()
            .filter_map(|l| report::parse(&l.message))
            .collect(),
        newest,
    ))
}
