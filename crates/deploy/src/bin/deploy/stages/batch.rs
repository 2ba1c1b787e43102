//! `deploy batch`: parse, call the library's batch pipeline, print.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;

use lambda_cnn_deploy::batch::engine::{self, Progress};
use lambda_cnn_deploy::batch::{BatchRequest, BatchSpec, S3Prefix};

use super::{interrupted, say, Ctx};
use crate::{BatchArgs, BatchCommand};

/// How often a run's progress is read.
const POLL: Duration = Duration::from_secs(2);

/// The request `args` make with the config's defaults, named in the account.
pub(super) fn spec(ctx: &Ctx, args: &BatchArgs) -> Result<BatchSpec> {
    let cfg = &ctx.config;
    let b = &cfg.batch;
    let Some(input) = args.input.clone() else {
        bail!("deploy batch needs --input s3://bucket/prefix/ (or `deploy batch status ARN`)");
    };
    let output = match &args.output {
        Some(o) => o.clone(),
        None => {
            let default = cfg.batch_output(&ctx.account.id, &ctx.account.region);
            default.parse::<S3Prefix>().map_err(|e| {
                anyhow::anyhow!("the config's batch.output: {e}; give --output s3://bucket/prefix/")
            })?
        }
    };
    let request = BatchRequest {
        input,
        output,
        batch_size: args.batch_size.unwrap_or(b.batch_size),
        concurrency: args.concurrency.unwrap_or(b.concurrency),
        tolerated_failure_percent: args
            .tolerated_failure
            .unwrap_or(b.tolerated_failure_percent),
        qualifier: args
            .qualifier
            .clone()
            .unwrap_or_else(|| cfg.release.alias.clone()),
        form: args.form,
    };
    let a = &ctx.account;
    Ok(request.spec(cfg, &a.partition, &a.region, &a.id)?)
}

/// `deploy batch --dry-run`: what would be made, as it would be made.
pub(super) fn plan(ctx: &Ctx, args: &BatchArgs) -> Result<()> {
    use lambda_cnn_deploy::batch::{definition, grants};
    let spec = spec(ctx, args)?;
    let plan = serde_json::json!({
        "state_machine": spec.state_machine_arn(),
        "role": spec.role,
        "definition": definition::definition(&spec, spec.form),
        "role_policy": grants::state_machine_policy(&spec),
        "predict_grants": {
            "role": ctx.config.role.name,
            "policy": grants::function_policy_name(&spec.state_machine),
            "document": grants::function_policy(&spec),
        },
        "then": "start a run and follow it to its end, then read the results and price the run",
    });
    if ctx.out.json {
        println!("{plan}");
    } else {
        println!(
            "would make or update state machine {} (role {}), grant {} {} and {}, then score every object under {} into {} \
             ({} keys per invocation, {} at once, {}% may fail):\n{}",
            spec.state_machine,
            spec.role,
            ctx.config.role.name,
            spec.input.objects_arn(&spec.partition),
            spec.output.objects_arn(&spec.partition),
            spec.input,
            spec.output,
            spec.batch_size,
            spec.concurrency,
            spec.tolerated_failure_percent,
            serde_json::to_string_pretty(&plan).unwrap_or_default()
        );
    }
    Ok(())
}

pub(super) async fn batch(ctx: &Ctx, args: &BatchArgs) -> Result<()> {
    if let Some(BatchCommand::Status { arn }) = &args.follow {
        return follow_and_summarize(ctx, arn).await;
    }
    let spec = spec(ctx, args)?;
    let arn = lambda_cnn_deploy::batch::start(ctx, &spec, &ctx.printer()).await?;
    if args.no_wait {
        if ctx.out.json {
            println!("{}", serde_json::json!({"execution_arn": arn}));
        } else {
            println!("{arn}");
            say(format!("follow it with: deploy batch status {arn}"));
        }
        return Ok(());
    }
    say(format!("run {arn} started"));
    follow_and_summarize(ctx, &arn).await
}

async fn follow_and_summarize(ctx: &Ctx, arn: &str) -> Result<()> {
    let bar = progress_bar();
    let mut last_line = std::time::Instant::now();
    let seen = |p: &Progress| {
        let i = &p.items;
        bar.set_length(i.total.max(1) as u64);
        bar.set_position(i.finished().max(0) as u64);
        bar.set_message(format!(
            "{} running, {} failed",
            i.running,
            i.failed + i.timed_out + i.aborted
        ));
        // Without a terminal, a line every 10 s.
        if bar.is_hidden() && last_line.elapsed() >= Duration::from_secs(10) {
            say(format!(
                "{}: {}/{} items done ({} failed), {} running",
                p.status,
                i.finished(),
                i.total,
                i.failed + i.timed_out + i.aborted,
                i.running
            ));
            last_line = std::time::Instant::now();
        }
    };
    let followed = tokio::select! {
        p = engine::follow(&ctx.clients.states, arn, POLL, seen) => p,
        _ = interrupted() => {
            bar.abandon();
            eprintln!(
                "interrupted: the run goes on. Follow it with `deploy batch status {arn}`; stop it with \
                 `aws stepfunctions stop-execution --execution-arn {arn}`"
            );
            std::process::exit(130);
        }
    };
    let run = followed.with_context(|| format!("failed to follow run {arn}"))?;
    bar.finish_and_clear();
    let summary = lambda_cnn_deploy::batch::summarize(ctx, run).await?;
    ctx.out.print(&summary)?;
    if summary.run.status != "SUCCEEDED" {
        bail!(
            "run {} ended {}{}",
            summary.run.execution_arn,
            summary.run.status,
            summary
                .run
                .error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn progress_bar() -> ProgressBar {
    if super::QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        return ProgressBar::hidden();
    }
    super::bar(
        1,
        String::new(),
        "scoring [{bar:30}] {pos}/{len} items, {msg}, {elapsed}",
    )
}
