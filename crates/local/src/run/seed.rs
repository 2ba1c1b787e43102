//! `make bench-seed`'s part of the job: the seed's two functions (Python, TensorFlow) released
//! as stage `seed` by our own deploy on the same data plane as ours; then both sides tuned at
//! the same memory sizes and compared from their REPORT lines, into docs/seed.md and the
//! README's Performance section.

use super::deploy_cli::DeployCli;
use super::{say, text, RunRequest};
use crate::stack::Stack;
use anyhow::{bail, Context as _};
use std::path::Path;

/// What is measured: predict with the recorded test digit (10 invocations a size, the first
/// cold), train with the seed's own `{}` (5 epochs of 60,000) where it fits Lambda's 15
/// minutes: at 1 and 2 vCPUs (one cold and one warm run each).
const SEED_BENCH: [(&str, &str, &str, Option<&str>); 2] = [
    ("predict", "512,1024,1769,3008", "10", None),
    ("train", "1769,3538", "2", Some("{}")),
];
const SEED_NAME: &str = "seed (Python, TensorFlow)";
const BEGIN: &str = "<!-- bench-seed:begin -->";
const END: &str = "<!-- bench-seed:end -->";

pub async fn bench_seed(
    req: &RunRequest,
    deploy: &DeployCli,
    stack: &Stack,
    seed_images: &Path,
    images: &Path,
) -> anyhow::Result<()> {
    let seed = std::path::absolute(seed_images).unwrap_or_else(|_| seed_images.to_owned());
    let seed_arg = seed.to_string_lossy().into_owned();
    let endpoint = stack.runtime_endpoint();
    let registry = stack.registry();
    say("deploy --stage seed push: the seed's Python/TensorFlow images (bench/seed), to the same registry");
    deploy
        .show(&[
            "--stage",
            "seed",
            "push",
            "--registry",
            &registry,
            "--images",
            &seed_arg,
        ])
        .await?;
    say("deploy --stage seed release: each version smoke-tested on the data plane as ours are");
    for r in deploy
        .json_lines(&[
            "--stage",
            "seed",
            "release",
            "--registry",
            &registry,
            "--images",
            &seed_arg,
            "--invoke-endpoint",
            &endpoint,
            "--json",
        ])
        .await?
    {
        crate::outln!(
            "  {:24} version {} is {}; smoke: {}",
            text(&r["function"]),
            text(&r["version"]),
            text(&r["alias"]),
            text(&r["smoke"])
        );
    }
    let Some(out) = &req.bench_seed else {
        return Ok(());
    };
    let out = std::path::absolute(out).unwrap_or_else(|_| out.clone());
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut tables = Vec::new();
    for (f, memory, invocations, payload) in SEED_BENCH {
        let mut reports = Vec::new();
        for stage in [None, Some("seed")] {
            let mut args: Vec<String> = Vec::new();
            if let Some(stage) = stage {
                args.extend(["--stage".into(), stage.into()]);
            }
            args.extend(
                [
                    "tune",
                    "--function",
                    f,
                    "--memory",
                    memory,
                    "--invocations",
                    invocations,
                    "--invoke-endpoint",
                    &endpoint,
                    "--json",
                ]
                .map(str::to_owned),
            );
            if let Some(payload) = payload {
                let path = stack.state.join(format!("bench-seed-{f}.json"));
                std::fs::write(&path, payload)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                args.extend(["--payload".into(), path.to_string_lossy().into_owned()]);
            }
            let who = if stage.is_some() {
                SEED_NAME
            } else {
                "lambda-cnn"
            };
            say(&format!(
                "deploy tune --function {f} of {who} (memory {memory} MB, {invocations} invocations each)"
            ));
            let report = stack.state.join(format!(
                "bench-seed-tune-{f}-{}.json",
                stage.unwrap_or("ours")
            ));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, stdout) = deploy.status(&args).await?;
            // Exit status 1 with a report: no size could be measured (e.g. out of memory at
            // each): a finding for the table, not the end of the bench.
            let last = stdout.trim().lines().last().unwrap_or_default();
            if code != Some(0) && !(code == Some(1) && last.starts_with('{')) {
                bail!("failed ({code:?}): deploy {}", args.join(" "));
            }
            std::fs::write(&report, &stdout)
                .with_context(|| format!("cannot write {}", report.display()))?;
            reports.push(report);
        }
        let chart = out.join(format!("seed-{f}.svg"));
        let title = format!("{f}: {SEED_NAME} and lambda-cnn on the local Lambda");
        let table = deploy
            .output(&[
                "compare",
                "--ours",
                &reports[0].to_string_lossy(),
                "--theirs",
                &reports[1].to_string_lossy(),
                "--theirs-name",
                SEED_NAME,
                "--ours-image",
                &images.join(f).to_string_lossy(),
                "--theirs-image",
                &seed.join(f).to_string_lossy(),
                "--chart",
                &chart.to_string_lossy(),
                "--title",
                &title,
            ])
            .await?;
        crate::outln!("{table}");
        let n = invocations;
        let what = if f == "predict" {
            format!("predict: one real test digit through API Gateway's event, {n} invocations a size (the first cold)")
        } else {
            format!(
                "train: the seed's own event `{}` (5 epochs of 60,000 images, both functions' default), {n} runs \
                 a size (the first cold)",
                payload.unwrap_or("{}")
            )
        };
        tables.push((f, what, table.trim().to_owned()));
    }
    let when = humantime::format_rfc3339(std::time::SystemTime::now()).to_string();
    let when = when.get(..10).unwrap_or_default();
    let machine = machine();
    let head = format!(
        "Measured {when} by `make bench-seed` on {machine}: both functions released by `deploy` on the local data \
         plane (AWS's Runtime Interface Emulator in Docker, CPU as Lambda gives it for the memory), every figure \
         from the REPORT lines of the same run; cost at us-east-1's x86_64 prices.\n\n"
    );
    let doc: Vec<String> = tables
        .iter()
        .map(|(f, what, table)| format!("**{what}.**\n\n{table}\n\n![{f}: duration and cost by memory size](seed-{f}.svg)\n"))
        .collect();
    replace_between(&out.join("seed.md"), &(head + &doc.join("\n")))?;
    let readme: Vec<String> = tables
        .iter()
        .map(|(f, _, table)| format!("**{f}**: {table}\n"))
        .collect();
    replace_between(
        &req.root.join("README.md"),
        &format!("Measured {when} on {machine}.\n\n{}", readme.join("\n")),
    )?;
    say(&format!(
        "wrote {}, the charts beside it, and the README's Performance section",
        out.join("seed.md").display()
    ));
    Ok(())
}

/// This machine, for the record: CPU model, cores, memory.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cpu}, {cores} cores, {mem_gb:.0} GiB")
}

/// Replaces what is between the bench's markers in `path` with `text`.
fn replace_between(path: &Path, text: &str) -> anyhow::Result<()> {
    let doc =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let replaced = between(&doc, text).with_context(|| {
        format!(
            "{} has no {BEGIN} … {END} section to write the results into",
            path.display()
        )
    })?;
    std::fs::write(path, replaced).with_context(|| format!("cannot write {}", path.display()))
}

fn between(doc: &str, text: &str) -> Option<String> {
    let (head, rest) = doc.split_once(BEGIN)?;
    let (_, tail) = rest.split_once(END)?;
    Some(format!("{head}{BEGIN}\n{}\n{END}{tail}", text.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_between_the_markers_is_replaced_and_the_rest_kept() {
        let doc = format!("intro\n{BEGIN}\nold\n{END}\nafter\n");
        assert_eq!(
            between(&doc, "new\n\n").unwrap(),
            format!("intro\n{BEGIN}\nnew\n{END}\nafter\n")
        );
        assert_eq!(between("no markers", "x"), None);
        assert_eq!(between(&format!("{BEGIN} only"), "x"), None);
    }
}
