//! `deploy tune` as one call: measure each size, then clean up whatever happened (an error,
//! a failed invocation, the caller's `cancel`), judge the figures, draw the chart, and with
//! `apply` release the winner through the normal path.

use std::future::Future;
use std::path::Path;

use crate::cost;
use crate::image::Function;
use crate::judging::{chart, Strategy, TuneReport};
use crate::pipeline::{Progress, StageError};
use crate::release::{self, ReleaseRequest};
use crate::session::Session;

/// What `deploy tune` was asked.
pub struct TuneRequest<'a> {
    /// The function tuned.
    pub function: Function,
    /// The sizes, MB: ascending, once each, each one Lambda allows ([`super::check_sizes`]).
    pub sizes: &'a [u32],
    /// Invocations per size (the first is the cold start).
    pub invocations: usize,
    /// The event each invocation sends.
    pub payload: &'a [u8],
    /// A size's invocations all at once instead of one after another.
    pub parallel: bool,
    /// Which size wins.
    pub strategy: Strategy,
    /// The weight of cost against speed, for [`Strategy::Balanced`].
    pub weight: f64,
    /// Where to write the chart (SVG).
    pub chart: Option<&'a Path>,
    /// Release the winner.
    pub apply: bool,
}

/// Measures, cleans up, judges. `cancel` (Ctrl-C) ends the measuring, never the cleanup.
/// Invocations are counted on the bar [`Progress::count`] gives.
pub async fn run(
    s: &Session,
    req: &TuneRequest<'_>,
    cancel: impl Future<Output = ()>,
    p: &dyn Progress,
) -> Result<TuneReport, StageError> {
    let name = s.config.function(req.function).name.clone();
    let (prices, note) = cost::prices_for(&s.account.region);
    if let Some(note) = note {
        p.say(format!("note: {note}"));
    }
    let tuner = super::start(
        &s.clients.lambda,
        &s.clients.smoke,
        &s.clients.s3,
        &s.account.id,
        &name,
        &s.config.release.alias,
    )
    .await
    .map_err(|e| {
        if e.is("ResourceNotFoundException") {
            StageError::Refused(format!(
                "{e}: there is no {name} to tune; release it first (deploy release --function {})",
                req.function
            ))
        } else {
            e.into()
        }
    })?;
    if let Some(note) = &tuner.measuring_alias {
        p.say(note.clone());
    }
    let bar = p.count((req.sizes.len() * req.invocations) as u64, "invocations");
    p.say(format!(
        "tuning {name} ({}): {} sizes × {} invocations; it had {} MB",
        tuner.arch,
        req.sizes.len(),
        req.invocations,
        tuner.previous_mb
    ));
    let progress = |_: super::Invocation| bar.inc(1);
    let measured = async {
        let mut results = Vec::new();
        for &mb in req.sizes {
            bar.set_message(format!("{mb} MB"));
            let r = tuner
                .measure(
                    mb,
                    req.invocations,
                    req.payload,
                    req.parallel,
                    prices,
                    &progress,
                )
                .await?;
            let line = match &r.error {
                Some(e) => format!("{mb} MB: not ranked: {e}"),
                None => format!(
                    "{mb} MB: mean {:.0} ms warm (p95 {:.0}), peak {} MB, ${:.2} per 1M",
                    r.billed_mean_ms, r.billed_p95_ms, r.max_memory_used_mb, r.cost_per_million
                ),
            };
            bar.suspend(|| p.say(line));
            results.push(r);
        }
        Ok::<_, StageError>(results)
    };
    let outcome = tokio::select! {
        r = measured => r,
        _ = cancel => Err(StageError::Interrupted),
    };
    bar.finish_and_clear();
    p.say(format!(
        "cleaning up: removing the tune-* aliases and versions, {name} back to {} MB",
        tuner.previous_mb
    ));
    if let Err(errors) = tuner.clean_up().await {
        for e in &errors {
            p.say(format!("error: cleanup: {e}"));
        }
        let first = errors
            .into_iter()
            .next()
            .map(|e| e.to_string())
            .unwrap_or_default();
        return Err(StageError::Refused(format!(
            "{} (run deploy tune again or remove the tune-* aliases by hand)",
            match &outcome {
                Err(e) => format!("{e}; and the cleanup failed too: {first}"),
                Ok(_) => format!("the cleanup failed: {first}"),
            }
        )));
    }
    let mut report = TuneReport::new(
        name.clone(),
        tuner.arch,
        req.strategy,
        req.weight,
        outcome?,
        tuner.previous_mb,
    );
    if let Some(path) = req.chart {
        std::fs::write(path, chart::svg(&report)).map_err(|source| StageError::Write {
            what: "the chart",
            path: path.to_owned(),
            source,
        })?;
        report.chart = Some(path.display().to_string());
    }
    if req.apply {
        if let Some(mb) = report.recommended_mb {
            report.applied = Some(apply(s, req.function, mb, p).await?);
        }
    }
    Ok(report)
}

/// Releases what `live` runs at `memory_mb`, through the normal path: the same image and
/// model, a new version, the smoke test, then the alias. Says what it did.
pub async fn apply(
    s: &Session,
    f: Function,
    memory_mb: u32,
    p: &dyn Progress,
) -> Result<String, StageError> {
    let cfg = &s.config;
    let name = cfg.function(f).name.clone();
    let alias = cfg.release.alias.clone();
    let live = super::alias_target(&s.clients.lambda, &name, &alias)
        .await?
        .ok_or_else(|| {
            StageError::Refused(format!(
                "{name} has no {alias} alias: release it first (deploy release)"
            ))
        })?;
    let mut config = cfg.clone();
    if let Some(fc) = config.functions.get_mut(f.name()) {
        fc.memory_mb = memory_mb as i32;
    }
    let pre = crate::pipeline::deploy::prerequisites(s, &config, &mut Vec::new(), p).await?;
    let req = ReleaseRequest {
        function: f,
        repository_uri: &pre.repository.uri,
        repository: &pre.repository.name,
        digest: &live.digest,
        model: live
            .model_s3_uri
            .as_deref()
            .map_or(release::Model::Image, release::Model::S3),
        canary_percent: None,
        arch: live.arch,
    };
    let say = |line| p.say(line);
    let outcome = release::release(&s.clients, &config, &s.account, &pre.role_arn, &req, &say)
        .await
        .map_err(|e| StageError::During {
            what: format!("releasing {name} at {memory_mb} MB"),
            source: Box::new(e.into()),
        })?;
    p.say(format!(
        "note: {memory_mb} MB is live; set functions.{}.memory_mb = {memory_mb} in the deploy config, or the next deploy release puts back {} MB",
        f.name(),
        cfg.function(f).memory_mb
    ));
    Ok(format!(
        "version {} at {memory_mb} MB is {} ({})",
        outcome.version, outcome.alias, outcome.smoke
    ))
}
