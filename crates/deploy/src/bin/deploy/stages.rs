//! The stages that talk to AWS (push, release, api, rollback, destroy, monitor, all), on one
//! tokio runtime, with the SDK configured from the standard chain.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use lambda_cnn_deploy::apigw::Auth;
use lambda_cnn_deploy::aws;
use lambda_cnn_deploy::config::DeployConfig;
use lambda_cnn_deploy::image::Function;
use lambda_cnn_deploy::lambda;
use lambda_cnn_deploy::pipeline::{self, Progress, Step};
use lambda_cnn_deploy::session::{self, Session};

mod batch;

use super::{
    AllArgs, ApiArgs, Command, DestroyArgs, DoctorArgs, InvokeArgs, LogsArgs, MonitorArgs,
    PushArgs, ReleaseArgs, RollbackArgs, StatusArgs, Target, TuneArgs,
};
use lambda_cnn_core::output::Output;

/// A connected session and where its results are printed.
#[derive(Clone)]
struct Ctx {
    session: Session,
    out: Output,
}

impl std::ops::Deref for Ctx {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl Ctx {
    fn printer(&self) -> Printer {
        Printer::new(self.out)
    }
}

pub fn run(
    cmd: Command,
    config_path: &Path,
    stage: Option<&str>,
    target: &aws::Target,
    dry_run: bool,
    out: Output,
) -> Result<()> {
    let mut config = DeployConfig::load(config_path)?;
    if let Some(stage) = stage {
        config = config.for_stage(stage).map_err(anyhow::Error::msg)?;
    }
    // What can be refused without AWS is refused before connecting.
    let tune_inputs = match &cmd {
        Command::Tune(a) => Some(TuneInputs::read(a)?),
        _ => None,
    };
    if let Command::Release(a) = &cmd {
        pipeline::deploy::refuse_model_without_predict(a.model.as_deref(), &a.which.functions())?;
        pipeline::deploy::check_model_flag(a.model.as_deref())?;
    }
    let mut invoke_input = match &cmd {
        Command::Invoke(a) => Some(invoke_event(a)?),
        _ => None,
    };
    if let Command::Api(ApiArgs {
        auth: Some(Auth::Jwt),
        ..
    }) = &cmd
    {
        if config.api.jwt_issuer.is_empty() || config.api.jwt_audience.is_empty() {
            bail!("api --auth jwt needs api.jwt_issuer and api.jwt_audience in the deploy config (the issuer's URL and the audiences its tokens carry)");
        }
    }
    if let Command::Destroy(a) = &cmd {
        if !dry_run && !a.yes && !std::io::stdin().is_terminal() {
            bail!("deploy destroy deletes the functions, API and role: confirm with --yes");
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let config_dir = config_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    rt.block_on(async move {
        if let Command::Policy(a) = &cmd {
            if let Some(account) = &a.account {
                // Nothing to ask AWS: the region from the flag, environment, profile or config.
                let conn = aws::connect(&config.region, target).await;
                let region = conn.sdk.region().map(|r| r.to_string()).unwrap_or_default();
                let partition = aws::partition_of_region(&region);
                return print_deployer_policy(&config, &config_dir, account, &region, partition);
            }
        }
        let ctx = match Session::connect(config.clone(), config_dir.clone(), target).await {
            Ok(session) => Ctx { session, out },
            // The doctor still prints its table: the identity FAIL, and every local check.
            Err(why) => match &cmd {
                Command::Doctor(a) => {
                    let checks = lambda_cnn_deploy::doctor::without_account(
                        &config,
                        &lambda_cnn_deploy::doctor::Local {
                            images: &a.target.images,
                            mnist_dir: &a.mnist_dir,
                            deployer_policy: "",
                            model: a.model.as_deref(),
                        },
                        &why,
                    );
                    for c in &checks {
                        out.print(c)?;
                    }
                    return Ok(lambda_cnn_deploy::doctor::fail_on(&checks)?);
                }
                _ => return Err(why.into()),
            },
        };
        // Where it acts, before it acts (doctor's first row says the same).
        if !matches!(cmd, Command::Doctor(_)) {
            say(format!("deploying to {}", ctx.account));
        }
        if dry_run {
            if let Command::Batch(a) = &cmd {
                return batch::plan(&ctx, a);
            }
            return dry_run_plan(&ctx, &cmd).await;
        }
        match cmd {
            Command::Push(a) => push(&ctx, &a).await,
            Command::Release(a) => release(&ctx, &a).await,
            Command::Api(a) => api(&ctx, &a).await,
            Command::Role => role(&ctx).await,
            Command::Rollback(a) => rollback(&ctx, &a).await,
            Command::Destroy(a) => destroy(&ctx, &a).await,
            Command::Monitor(a) => monitor(&ctx, &a).await,
            Command::All(a) => all(&ctx, &a).await,
            Command::Doctor(a) => doctor(&ctx, &a).await,
            Command::Policy(_) => print_deployer_policy(
                &ctx.config,
                &ctx.config_dir,
                &ctx.account.id,
                &ctx.account.region,
                &ctx.account.partition,
            ),
            Command::Tune(a) => {
                let inputs = tune_inputs.map_or_else(|| TuneInputs::read(&a), Ok)?;
                tune(&ctx, &a, inputs).await
            }
            Command::Status(a) => status(&ctx, &a).await,
            Command::Invoke(a) => invoke(&ctx, &a, invoke_input.take()).await,
            Command::Logs(a) => follow_logs(&ctx, &a).await,
            Command::Batch(a) => batch::batch(&ctx, &a).await,
            Command::Build(_)
            | Command::Image(_)
            | Command::Cost(_)
            | Command::Compare(_)
            | Command::Completions { .. } => {
                unreachable!("run locally")
            }
        }
    })
}

/// `--dry-run`: the plan of `cmd` from the account's state as it is now.
async fn dry_run_plan(ctx: &Ctx, cmd: &Command) -> Result<()> {
    use lambda_cnn_deploy::plan::{self, LocalImage, Request};
    let local = |target: &Target, functions: &[Function]| -> Vec<LocalImage> {
        functions
            .iter()
            .map(|&function| LocalImage {
                function,
                digest: pipeline::read_image(&target.images, function)
                    .map(|i| i.manifest_digest)
                    .map_err(|e| lambda_cnn_core::errors::chain(&e)),
            })
            .collect()
    };
    let cfg = &ctx.config;
    let request = match cmd {
        Command::Push(a) => Request::Push {
            images: local(&a.target, &a.which.functions()),
            registry: a.target.registry.clone(),
        },
        Command::Release(a) => Request::Release {
            images: local(&a.target, &a.which.functions()),
            canary: a.canary,
            model: a.model.clone(),
        },
        Command::Api(a) => Request::Api {
            rest: a.rest,
            auth: match a.auth {
                Some(auth) => auth,
                None => cfg.api.auth.parse().map_err(anyhow::Error::msg)?,
            },
        },
        Command::Role => Request::Role,
        Command::Rollback(a) => Request::Rollback {
            functions: a.which.functions(),
            to: a.to,
        },
        Command::Destroy(a) => Request::Destroy { all: a.all },
        Command::All(a) => Request::All {
            arch: match a.arch {
                Some(arch) => arch,
                None => cfg.arch().map_err(anyhow::Error::msg)?,
            },
            no_api: a.no_api,
            images_dir: a.target.images.display().to_string(),
        },
        Command::Tune(a) => Request::Tune {
            function: a.function,
            sizes: TuneInputs::sizes(a),
            invocations: a.invocations,
            strategy: a.strategy,
            apply: a.apply,
        },
        Command::Invoke(a) => Request::Invoke {
            function: a.function,
        },
        Command::Monitor(a) => Request::Monitor {
            functions: a.which.functions(),
            since: a.since,
        },
        Command::Logs(a) => Request::Logs {
            functions: a.which.functions(),
            since: a.since,
        },
        Command::Status(_) => Request::Status,
        Command::Doctor(_) => Request::Doctor,
        Command::Policy(_) => Request::Policy,
        Command::Batch(_)
        | Command::Build(_)
        | Command::Image(_)
        | Command::Cost(_)
        | Command::Compare(_)
        | Command::Completions { .. } => unreachable!("planned elsewhere or run locally"),
    };
    let state = plan::read_state(&ctx.clients, cfg, &ctx.account).await?;
    let plan = plan::plan(&request, cfg, &ctx.account, &state);
    ctx.out.print(&plan)?;
    if plan.stops() {
        bail!("the real run would stop where the plan says STOP");
    }
    Ok(())
}

/// The binary's side of the pipeline's reports: progress lines on stderr (unless `--quiet`),
/// bars on a terminal, results on stdout (Display, or JSON with `--json`).
pub(crate) struct Printer {
    out: Output,
}

impl Printer {
    pub(crate) fn new(out: Output) -> Self {
        Printer { out }
    }
}

impl Progress for Printer {
    fn say(&self, line: String) {
        say(line);
    }

    fn bytes(&self, len: u64, what: String) -> ProgressBar {
        bar(
            len,
            what,
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
    }

    fn count(&self, len: u64, what: &'static str) -> ProgressBar {
        bar(
            len,
            String::new(),
            &format!("{{msg}} [{{bar:30}}] {{pos}}/{{len}} {what}, {{elapsed}}"),
        )
    }

    fn done(&self, step: Step) {
        // Serializing these types cannot fail; a closed stdout is the caller's choice.
        let _ = match step {
            Step::Preflight(c) if !self.out.json => {
                say(c.to_string());
                Ok(())
            }
            Step::Preflight(c) => self.out.print(&c),
            Step::Plan(plan) => {
                say(plan.to_string());
                Ok(())
            }
            Step::Image(i) => self.out.print(&i),
            Step::Pushed(r) => self.out.print(&r),
            Step::Released(o) => self.out.print(&o),
            Step::Exposed(a) => self.out.print(&a),
        };
    }
}

/// A bar drawn on a terminal only.
fn bar(len: u64, what: String, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // A message draws the bar at once: only when there is one (tune's comes per size).
    if !what.is_empty() {
        bar.set_message(what);
    }
    bar
}

/// `--quiet`: progress lines are not printed.
pub static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A progress line on stderr (results go to stdout), unless `--quiet`.
fn say(line: String) {
    if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("{line}");
    }
}

/// `deploy policy`: the deployer's least-privilege policy for this config, account and region.
fn print_deployer_policy(
    config: &DeployConfig,
    config_dir: &Path,
    account: &str,
    region: &str,
    partition: &str,
) -> Result<()> {
    let text = lambda_cnn_deploy::policy::render(
        &session::read_policy(config_dir, "deployer-policy.json")?,
        &lambda_cnn_deploy::policy::vars(config, partition, account, region),
    );
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not JSON once rendered",
            config_dir.join("iam/deployer-policy.json").display()
        )
    })?;
    say(format!(
        "the deployer policy for account {account} in {region}: attach it to the IAM user or role you deploy as, e.g. aws iam put-role-policy --role-name NAME --policy-name lambda-cnn-deployer --policy-document file://deployer.json"
    ));
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

async fn push(ctx: &Ctx, args: &PushArgs) -> Result<()> {
    let images = pipeline::read_images(&args.target.images, &args.which.functions())?;
    pipeline::upload(
        ctx,
        &images,
        args.target.registry.as_deref(),
        &ctx.printer(),
    )
    .await?;
    Ok(())
}

async fn release(ctx: &Ctx, args: &ReleaseArgs) -> Result<()> {
    let s = ctx.invoking_at(args.invoke_endpoint.as_deref());
    // The images first: a missing one stops the release before the role or bucket exist.
    let images = pipeline::read_images(&args.target.images, &args.which.functions())?;
    pipeline::deploy(
        &s,
        &images,
        args.canary,
        args.model.as_deref(),
        &ctx.printer(),
    )
    .await?;
    Ok(())
}

async fn api(ctx: &Ctx, args: &ApiArgs) -> Result<()> {
    pipeline::expose(ctx, args.auth, args.rest, &ctx.printer()).await?;
    Ok(())
}

/// `deploy role`'s result.
#[derive(serde::Serialize)]
struct RoleReport {
    role: String,
    arn: String,
}

impl std::fmt::Display for RoleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "role {}: {}", self.role, self.arn)
    }
}

async fn role(ctx: &Ctx) -> Result<()> {
    let (arn, _) = pipeline::deploy::role(ctx, &ctx.config, &[]).await?;
    ctx.out.print(&RoleReport {
        role: ctx.config.role.name.clone(),
        arn,
    })?;
    Ok(())
}

async fn rollback(ctx: &Ctx, args: &RollbackArgs) -> Result<()> {
    let s = ctx.invoking_at(args.invoke_endpoint.as_deref());
    let to = args.to.map(|v| v.to_string());
    for f in args.which.functions() {
        let outcome = lambda_cnn_deploy::rollback::rollback(
            &s.clients,
            &s.config,
            &s.account,
            f,
            to.as_deref(),
            &say,
        )
        .await?;
        ctx.out.print(&outcome)?;
    }
    Ok(())
}

/// The answer to a [y/N] question just asked on stderr: yes only when typed.
fn confirmed() -> bool {
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).ok();
    matches!(answer.trim(), "y" | "Y" | "yes")
}

/// One thing `deploy destroy` removed.
#[derive(serde::Serialize)]
struct Deleted {
    deleted: String,
}

impl std::fmt::Display for Deleted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "deleted {}", self.deleted)
    }
}

async fn destroy(ctx: &Ctx, args: &DestroyArgs) -> Result<()> {
    let cfg = &ctx.config;
    let mut count = 0;
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!("deploy destroy deletes the functions, API and role: confirm with --yes");
        }
        let bucket = cfg.bucket_name(&ctx.account.id, &ctx.account.region);
        eprint!(
            "in account {} region {}: delete API {}, functions {} and {}, role {}{}? [y/N] ",
            ctx.account.id,
            ctx.account.region,
            cfg.api.name,
            cfg.function(Function::Predict).name,
            cfg.function(Function::Train).name,
            cfg.role.name,
            if args.all {
                format!(
                    ", the ECR repository {} with its images and the bucket {bucket} with its objects",
                    cfg.repository.name
                )
            } else {
                format!(
                    " (keeping the ECR repository {} and the bucket {bucket}: --all deletes them too)",
                    cfg.repository.name
                )
            }
        );
        if !confirmed() {
            bail!("nothing deleted");
        }
    }
    lambda_cnn_deploy::destroy::destroy(&ctx.clients, cfg, &ctx.account, args.all, &mut |what| {
        count += 1;
        // Printing cannot fail for a String; a closed stdout is the caller's choice.
        let _ = ctx.out.print(&Deleted { deleted: what });
    })
    .await?;
    if count == 0 {
        say(format!(
            "nothing to delete in account {} region {}",
            ctx.account.id, ctx.account.region
        ));
    }
    Ok(())
}

async fn monitor(ctx: &Ctx, args: &MonitorArgs) -> Result<()> {
    use lambda_cnn_deploy::monitor::Monitor;
    let mut monitor = Monitor::start(ctx, &args.which.functions(), args.since, args.api).await?;
    if let Some(note) = &monitor.price_note {
        say(format!("note: {note}"));
    }
    loop {
        for f in monitor.poll().await? {
            if ctx.out.json {
                println!(
                    "{}",
                    serde_json::json!({"function": f.function, "summary": f.summary})
                );
            } else if f.summary.invocations == 0 {
                if !args.follow {
                    println!(
                        "{}: no invocations in the last {}",
                        f.function,
                        humantime::format_duration(args.since)
                    );
                }
            } else {
                println!("{}: {}", f.function, f.summary);
            }
        }
        if !args.follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Runs every check and prints them; an error when any FAILs.
async fn doctor(ctx: &Ctx, args: &DoctorArgs) -> Result<()> {
    let checks = pipeline::preflight(
        ctx,
        &args.target.images,
        &args.mnist_dir,
        args.model.as_deref(),
    )
    .await?;
    for c in &checks {
        ctx.out.print(c)?;
    }
    Ok(lambda_cnn_deploy::doctor::fail_on(&checks)?)
}

async fn all(ctx: &Ctx, args: &AllArgs) -> Result<()> {
    let sources = args.sources.read();
    let req = pipeline::AllRequest {
        arch: args.arch,
        no_api: args.no_api,
        images: &args.target.images,
        registry: args.target.registry.as_deref(),
        sources: &sources,
    };
    // The first time in an account and region, on a terminal, a question after the plan.
    let confirm = || {
        if args.yes || !std::io::stdin().is_terminal() {
            return true;
        }
        eprint!(
            "nothing of lambda-cnn's is in account {} region {} yet: create all of the above? [y/N] ",
            ctx.account.id, ctx.account.region
        );
        confirmed()
    };
    let s = ctx.invoking_at(args.invoke_endpoint.as_deref());
    pipeline::all(&s, &req, &confirm, &ctx.printer()).await?;
    Ok(())
}

/// What `deploy tune` checks and reads before it connects: the sizes (ascending, once each,
/// each one Lambda allows) and the event.
struct TuneInputs {
    sizes: Vec<u32>,
    payload: Vec<u8>,
}

impl TuneInputs {
    /// `--memory`, ascending, once each.
    fn sizes(args: &TuneArgs) -> Vec<u32> {
        let mut sizes = args.memory.clone();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }

    fn read(args: &TuneArgs) -> Result<Self> {
        let sizes = Self::sizes(args);
        lambda_cnn_deploy::tune::check_sizes(&sizes).map_err(anyhow::Error::msg)?;
        Ok(TuneInputs {
            sizes,
            payload: tune_payload(args.function, args.payload.as_deref())?,
        })
    }
}

/// The default event for tuning `f`: predict's smoke event (a real digit through API Gateway),
/// or a short training run.
fn tune_payload(f: Function, file: Option<&Path>) -> Result<Vec<u8>> {
    match file {
        Some(path) => {
            // Lambda's limit for a synchronous request: a larger event fails every invocation.
            const MAX: u64 = lambda_cnn_deploy::invoke::MAX_SYNC_PAYLOAD as u64;
            let len = std::fs::metadata(path)
                .with_context(|| format!("cannot read the payload {}", path.display()))?
                .len();
            if len > MAX {
                bail!(
                    "the payload {} is {len} bytes; Lambda takes at most {MAX} bytes in a synchronous invocation",
                    path.display()
                );
            }
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read the payload {}", path.display()))?;
            serde_json::from_slice::<serde_json::Value>(&bytes).with_context(|| {
                format!(
                    "the payload {} is not JSON (Lambda takes a JSON event)",
                    path.display()
                )
            })?;
            Ok(bytes)
        }
        None => Ok(match f {
            Function::Predict => lambda_cnn_deploy::smoke::Smoke::Digit.payload(),
            Function::Train => br#"{"epochs":1,"limit":1000}"#.to_vec(),
        }),
    }
}

async fn tune(ctx: &Ctx, args: &TuneArgs, inputs: TuneInputs) -> Result<()> {
    let s = ctx.invoking_at(args.invoke_endpoint.as_deref());
    let req = lambda_cnn_deploy::tune::TuneRequest {
        function: args.function,
        sizes: &inputs.sizes,
        invocations: args.invocations as usize,
        payload: &inputs.payload,
        parallel: args.parallel,
        strategy: args.strategy,
        weight: args.weight,
        chart: args.chart.as_deref(),
        apply: args.apply,
    };
    let report = lambda_cnn_deploy::tune::run(&s, &req, interrupted(), &ctx.printer()).await?;
    ctx.out.print(&report)?;
    if report.recommended_mb.is_none() {
        bail!(
            "no memory size could be measured{}: see why beside each size above",
            if args.apply {
                ", so nothing was applied"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// Ctrl-C, or never where signals cannot be watched.
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn status(ctx: &Ctx, args: &StatusArgs) -> Result<()> {
    let status = lambda_cnn_deploy::status::status(
        &ctx.clients,
        &ctx.config,
        &ctx.account,
        &args.which.functions(),
    )
    .await?;
    ctx.out.print(&status)
}

/// The event `deploy invoke` sends, read and checked before connecting.
fn invoke_event(args: &InvokeArgs) -> Result<Vec<u8>> {
    use lambda_cnn_deploy::invoke::{self, Input, MAX_SYNC_PAYLOAD};
    let read = |path: &Path| -> Result<Vec<u8>> {
        let len = std::fs::metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        if len > MAX_SYNC_PAYLOAD as u64 {
            bail!(
                "{} is {len} bytes; Lambda takes at most {MAX_SYNC_PAYLOAD} bytes in a synchronous invocation",
                path.display()
            );
        }
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let input = match (&args.image, &args.body) {
        (Some(path), _) => Input::Image(read(path)?),
        (None, Some(body)) => {
            let (text, from) = match body.strip_prefix('@') {
                Some(file) => (read(Path::new(file))?, format!("the body in {file}")),
                None => (body.clone().into_bytes(), "--body".to_owned()),
            };
            Input::Body(
                serde_json::from_slice(&text).with_context(|| format!("{from} is not JSON"))?,
            )
        }
        (None, None) => bail!("give --image FILE or --body JSON"),
    };
    invoke::event(args.function, &input).map_err(anyhow::Error::from)
}

async fn invoke(ctx: &Ctx, args: &InvokeArgs, event: Option<Vec<u8>>) -> Result<()> {
    use lambda_cnn_deploy::invoke::Answer;
    let event = match event {
        Some(e) => e,
        None => invoke_event(args)?,
    };
    let s = ctx.invoking_at(args.invoke_endpoint.as_deref());
    let name = &s.config.function(args.function).name;
    let alias = &s.config.release.alias;
    let invoked = lambda::invoke(&s.clients.smoke, name, Some(alias), &event)
        .await
        .map_err(|e| {
            if e.is("ResourceNotFoundException") {
                anyhow::anyhow!("{e}; release it first (deploy release)")
            } else {
                e.into()
            }
        })?;
    let answer = Answer::read(name, alias, &invoked);
    ctx.out.print(&answer)?;
    if !answer.succeeded() {
        bail!(
            "{name}:{alias} {}",
            match (&answer.function_error, answer.status) {
                (Some(e), _) => format!("failed ({e})"),
                (None, Some(s)) => format!("answered HTTP {s}"),
                _ => "failed".to_owned(),
            }
        );
    }
    Ok(())
}

async fn follow_logs(ctx: &Ctx, args: &LogsArgs) -> Result<()> {
    let functions = args.which.functions();
    let mut tail =
        lambda_cnn_deploy::monitor::Tail::start(ctx, &functions, args.since, args.filter.clone());
    loop {
        for t in tail.poll().await? {
            let l = &t.line;
            if ctx.out.json {
                println!(
                    "{}",
                    serde_json::json!({"function": t.name, "timestamp_ms": l.timestamp_ms,
                        "stream": l.stream, "message": l.message})
                );
            } else if functions.len() > 1 {
                println!("{} {l}", t.function.name());
            } else {
                println!("{l}");
            }
        }
        if !args.follow {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = interrupted() => return Ok(()),
        }
    }
}
