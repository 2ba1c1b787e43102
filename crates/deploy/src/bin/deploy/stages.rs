//! The stages that talk to AWS (push, release, api, rollback, destroy, monitor, all), on one
//! tokio runtime, with the SDK configured from the standard chain.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use oci_client::secrets::RegistryAuth;

use lambda_cnn_core::cost::{self, Api};
use lambda_cnn_core::report;
use lambda_cnn_deploy::apigw::{self, ApiSpec, Auth};
use lambda_cnn_deploy::aws::Clients;
use lambda_cnn_deploy::aws::{self, Account};
use lambda_cnn_deploy::config::DeployConfig;
use lambda_cnn_deploy::image::{self, Function, Image};
use lambda_cnn_deploy::registry::{self, Destination, PushOutcome, PushReport};
use lambda_cnn_deploy::release::{self, ReleaseOutcome, ReleaseRequest};
use lambda_cnn_deploy::{ecr, lambda, logs};

mod batch;

use super::{
    AllArgs, ApiArgs, Command, DestroyArgs, DoctorArgs, InvokeArgs, LogsArgs, MonitorArgs,
    ReleaseArgs, RollbackArgs, StatusArgs, Target, TuneArgs,
};
use lambda_cnn_core::output::Output;

#[derive(Clone)]
struct Ctx {
    config: DeployConfig,
    config_dir: PathBuf,
    account: Account,
    clients: Clients,
    sdk: aws_config::SdkConfig,
    out: Output,
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
        refuse_model_without_predict(a.model.as_deref(), &a.which.functions())?;
        check_model_flag(a.model.as_deref())?;
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
        let ctx = match connect(config.clone(), config_dir.clone(), target, out).await {
            Ok(ctx) => ctx,
            // The doctor still prints its table: the identity FAIL, and every local check.
            Err(e) => match (&cmd, e.downcast_ref::<aws::AwsError>()) {
                (Command::Doctor(a), Some(why)) => {
                    let checks = lambda_cnn_deploy::doctor::without_account(
                        &config,
                        &lambda_cnn_deploy::doctor::Local {
                            images: &a.target.images,
                            mnist_dir: &a.mnist_dir,
                            deployer_policy: "",
                            model: a.model.as_deref(),
                        },
                        why,
                    );
                    for c in &checks {
                        out.print(c)?;
                    }
                    return fail_on(&checks);
                }
                _ => return Err(e),
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
            Command::Push(a) => push(&ctx, &a.which.functions(), &a.target)
                .await
                .map(|_| ()),
            Command::Release(a) => release_stage(&ctx, &a).await.map(|_| ()),
            Command::Api(a) => api(&ctx, &a).await.map(|_| ()),
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
                digest: read_image(target, function)
                    .map(|i| i.manifest_digest)
                    .map_err(|e| lambda_cnn_core::errors::one_line(&e)),
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

async fn connect(
    config: DeployConfig,
    config_dir: PathBuf,
    target: &aws::Target,
    out: Output,
) -> Result<Ctx> {
    let conn = aws::connect(&config.region, target).await;
    let account = aws::account(&conn).await?;
    let sdk = conn.sdk;
    Ok(Ctx {
        clients: Clients::new(&sdk),
        account,
        config,
        config_dir,
        sdk,
        out,
    })
}

fn smoke_client(
    sdk: &aws_config::SdkConfig,
    endpoint: Option<&str>,
) -> Option<aws_sdk_lambda::Client> {
    endpoint.map(|url| {
        aws_sdk_lambda::Client::from_conf(
            aws_sdk_lambda::config::Builder::from(sdk)
                .endpoint_url(url)
                .build(),
        )
    })
}

fn bytes_bar(len: u64, what: String) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what);
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

fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    let rev = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !rev.is_empty()).then_some(rev)
}

fn is_loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

fn read_image(target: &Target, f: Function) -> Result<Image> {
    let dir = target.images.join(f.name());
    image::read_layout(&dir, f).with_context(|| format!("cannot read the {f} image"))
}

async fn push(ctx: &Ctx, functions: &[Function], target: &Target) -> Result<Vec<PushOutcome>> {
    let cfg = &ctx.config;
    // Every image read before anything is created: a missing one leaves no empty repository.
    let images = functions
        .iter()
        .map(|&f| read_image(target, f))
        .collect::<Result<Vec<_>>>()?;
    let (repo, created) = ecr::ensure_repository(
        &ctx.clients.ecr,
        &cfg.repository.name,
        cfg.repository.keep_images,
        &ctx.account,
    )
    .await?;
    if created {
        say(format!("created ECR repository {}", repo.uri));
    }
    let (user, pass) = ecr::login(&ctx.clients.ecr).await?;
    let dest = Destination {
        registry: target
            .registry
            .clone()
            .unwrap_or_else(|| repo.registry.clone()),
        repository: repo.name.clone(),
        plain_http: target.registry.as_deref().is_some_and(is_loopback),
    };
    let auth = RegistryAuth::Basic(user, pass);
    let mut outcomes = Vec::new();
    for (&f, img) in functions.iter().zip(images) {
        let mut tags = vec![format!(
            "{f}-{}",
            lambda_cnn_deploy::plan::short_digest(&img.manifest_digest)
        )];
        if let Some(rev) = git_revision() {
            tags.push(format!("{f}-git-{rev}"));
        }
        let bar = bytes_bar(img.compressed_size(), format!("pushing {f}"));
        let outcome = registry::push(&img, &dest, &auth, &tags, &bar)
            .await
            .with_context(|| {
                format!(
                    "failed to push the {f} image to {}/{}",
                    dest.registry, dest.repository
                )
            })?;
        bar.finish_and_clear();
        if target.registry.is_some() {
            ecr::register_manifest(
                &ctx.clients.ecr,
                &repo.name,
                &img.manifest,
                &img.manifest_digest,
                &tags[0],
            )
            .await?;
        }
        let report = PushReport {
            function: f.name().to_owned(),
            outcome,
        };
        ctx.out.print(&report)?;
        let outcome = report.outcome;
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

fn policy(ctx: &Ctx, file: &str) -> Result<String> {
    read_policy(&ctx.config_dir, file)
}

/// A policy template of `iam/` beside the deploy config.
fn read_policy(config_dir: &Path, file: &str) -> Result<String> {
    let path = config_dir.join("iam").join(file);
    std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the IAM policy {}", path.display()))
}

/// A policy of `infra/iam/` with this deploy's names, account, region and partition.
fn rendered_policy(ctx: &Ctx, file: &str) -> Result<String> {
    let a = &ctx.account;
    Ok(lambda_cnn_deploy::policy::render(
        &policy(ctx, file)?,
        &lambda_cnn_deploy::policy::vars(&ctx.config, &a.partition, &a.id, &a.region),
    ))
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
        &read_policy(config_dir, "deployer-policy.json")?,
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

async fn release_stage(ctx: &Ctx, args: &ReleaseArgs) -> Result<Vec<ReleaseOutcome>> {
    let ctx = &with_smoke(ctx, args.invoke_endpoint.as_deref());
    release_functions(
        ctx,
        &args.which.functions(),
        &args.target,
        args.canary,
        args.model.as_deref(),
    )
    .await
}

/// The same context with smoke tests sent to `endpoint` when given.
fn with_smoke(ctx: &Ctx, endpoint: Option<&str>) -> Ctx {
    let mut ctx = ctx.clone();
    if let Some(client) = smoke_client(&ctx.sdk, endpoint) {
        ctx.clients.smoke = client;
    }
    ctx
}

/// What every release needs first: the execution role (its ARN), the models bucket and the
/// ECR repository.
/// The bucket, role and repository a release needs; what it created goes into `created`.
async fn release_prerequisites(
    ctx: &Ctx,
    cfg: &DeployConfig,
    created: &mut Vec<String>,
) -> Result<(String, ecr::Repository)> {
    // The bucket first: a name another account holds stops the release before anything of
    // ours is created.
    let bucket = cfg.bucket_name(&ctx.account.id, &ctx.account.region);
    if lambda_cnn_deploy::bucket::ensure(
        &ctx.clients.s3,
        &bucket,
        &ctx.account.region,
        &ctx.account.id,
        Default::default(),
        &say,
    )
    .await?
    {
        say(format!("created bucket {bucket} (private, encrypted)"));
        created.push(format!("bucket {bucket}"));
    }
    let (role_arn, role_created) = release::ensure_role(
        &ctx.clients,
        cfg,
        &ctx.account,
        &policy(ctx, "trust-policy.json")?,
        &policy(ctx, "execution-policy.json")?,
    )
    .await
    .map_err(|e| made_before_failing(created, e.into()))?;
    if role_created {
        created.push(format!("role {}", cfg.role.name));
    }
    let (repo, _) = ecr::ensure_repository(
        &ctx.clients.ecr,
        &cfg.repository.name,
        cfg.repository.keep_images,
        &ctx.account,
    )
    .await
    .map_err(|e| made_before_failing(created, e.into()))?;
    Ok((role_arn, repo))
}

/// A failure after this run created `created`: said, with how to remove them.
fn made_before_failing(created: &[String], e: anyhow::Error) -> anyhow::Error {
    if created.is_empty() {
        return e;
    }
    e.context(format!(
        "failed after creating {} (kept for the next run, which picks up from here; `deploy \
         destroy --all` removes them)",
        created.join(" and ")
    ))
}

/// `--model` names the model predict serves: a release without predict has no use for one.
fn refuse_model_without_predict(model: Option<&str>, functions: &[Function]) -> Result<()> {
    if model.is_some() && !functions.contains(&Function::Predict) {
        bail!("--model is the model predict serves; train has none: drop --model, or release predict (--function predict)");
    }
    Ok(())
}

/// `--model`: `image`, an S3 URI, or a model file here (read and checked now, uploaded once
/// the bucket exists).
fn check_model_flag(model: Option<&str>) -> Result<Option<Vec<u8>>> {
    match model {
        None | Some("image") => Ok(None),
        Some(m) if m.starts_with("s3://") => {
            m.parse::<lambda_cnn_core::store::S3Uri>().map_err(|e| {
                anyhow::anyhow!("--model: {e} (or `image` for the weights in the image)")
            })?;
            Ok(None)
        }
        Some(path) => Ok(Some(release::read_model_file(std::path::Path::new(path))?)),
    }
}

async fn release_functions(
    ctx: &Ctx,
    functions: &[Function],
    target: &Target,
    canary: Option<f64>,
    model: Option<&str>,
) -> Result<Vec<ReleaseOutcome>> {
    let cfg = &ctx.config;
    refuse_model_without_predict(model, functions)?;
    let local_model = check_model_flag(model)?;
    // The images first: a missing one stops the release before the role or bucket exist.
    let images = functions
        .iter()
        .map(|&f| read_image(target, f))
        .collect::<Result<Vec<_>>>()?;
    let mut created = Vec::new();
    let (role_arn, repo) = release_prerequisites(ctx, cfg, &mut created).await?;
    let uploaded = match local_model {
        Some(bytes) => Some(
            release::upload_model(
                &ctx.clients.s3,
                &cfg.bucket_name(&ctx.account.id, &ctx.account.region),
                &ctx.account.id,
                bytes,
                &say,
            )
            .await
            .map_err(|e| made_before_failing(&created, e.into()))?,
        ),
        None => None,
    };
    let model = uploaded.as_deref().or(model);
    let mut outcomes = Vec::new();
    for (&f, img) in functions.iter().zip(images) {
        let req = ReleaseRequest {
            function: f,
            repository_uri: &repo.uri,
            repository: &repo.name,
            digest: &img.manifest_digest,
            model: release::Model::from_flag(model),
            canary_percent: canary,
            arch: img.arch,
        };
        let outcome = release::release(&ctx.clients, cfg, &ctx.account, &role_arn, &req, &say)
            .await
            .map_err(|e| made_before_failing(&created, e.into()))?;
        ctx.out.print(&outcome)?;
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

async fn api(ctx: &Ctx, args: &ApiArgs) -> Result<apigw::ApiOutcome> {
    let cfg = &ctx.config;
    // An API in front of nothing would answer 500s: predict's alias must exist first.
    let predict = &cfg.function(Function::Predict).name;
    if lambda::alias_version(&ctx.clients.lambda, predict, &cfg.release.alias)
        .await?
        .is_none()
    {
        bail!(
            "{predict} has no {} alias yet, so the API would have nothing to call: run deploy \
             release first (nothing was created)",
            cfg.release.alias
        );
    }
    let auth: Auth = match args.auth {
        Some(a) => a,
        None => cfg.api.auth.parse().map_err(anyhow::Error::msg)?,
    };
    let spec = ApiSpec {
        name: cfg.api.name.clone(),
        stage: cfg.api.stage.clone(),
        throttle_rate: cfg.api.throttle_rate,
        throttle_burst: cfg.api.throttle_burst,
        cors_origins: cfg.api.cors_origins.clone(),
        auth,
        jwt_issuer: cfg.api.jwt_issuer.clone(),
        jwt_audience: cfg.api.jwt_audience.clone(),
        function_name: cfg.function(Function::Predict).name.clone(),
        alias: cfg.release.alias.clone(),
        region: ctx.account.region.clone(),
        account: ctx.account.id.clone(),
        partition: ctx.account.partition.clone(),
        dns_suffix: ctx.account.dns_suffix().to_owned(),
    };
    let out = if args.rest {
        lambda_cnn_deploy::apigw_rest::ensure_rest_api(
            &ctx.clients.rest_apis,
            &ctx.clients.lambda,
            &spec,
        )
        .await?
    } else {
        apigw::ensure_http_api(&ctx.clients.http_apis, &ctx.clients.lambda, &spec).await?
    };
    ctx.out.print(&out)?;
    Ok(out)
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
    let (arn, _) = release::ensure_role(
        &ctx.clients,
        &ctx.config,
        &ctx.account,
        &policy(ctx, "trust-policy.json")?,
        &policy(ctx, "execution-policy.json")?,
    )
    .await?;
    ctx.out.print(&RoleReport {
        role: ctx.config.role.name.clone(),
        arn,
    })?;
    Ok(())
}

async fn rollback(ctx: &Ctx, args: &RollbackArgs) -> Result<()> {
    let ctx = &with_smoke(ctx, args.invoke_endpoint.as_deref());
    let to = args.to.map(|v| v.to_string());
    for f in args.which.functions() {
        let outcome = lambda_cnn_deploy::rollback::rollback(
            &ctx.clients,
            &ctx.config,
            &ctx.account,
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
    let cfg = &ctx.config;
    let config_arch = cfg.arch().map_err(anyhow::Error::msg)?;
    // Priced by the architecture each function really runs on, which `deploy release` takes
    // from its image, whatever the config says.
    let mut archs = Vec::new();
    for f in args.which.functions() {
        let name = &cfg.function(f).name;
        let arch = lambda::function_arch(&ctx.clients.lambda, name).await?;
        archs.push(arch.unwrap_or(config_arch));
    }
    let api = args.api;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let mut since: Vec<i64> = vec![now_ms - args.since.as_millis() as i64; 2];
    let mut seen: Vec<Vec<report::Report>> = vec![Vec::new(), Vec::new()];
    if let (_, Some(note)) = cost::prices_for(&ctx.account.region) {
        say(format!("note: {note}"));
    }
    loop {
        for (i, f) in args.which.functions().into_iter().enumerate() {
            let fc = cfg.function(f);
            let group = logs::log_group(&fc.name);
            let (reports, newest) = logs::reports(&ctx.clients.logs, &group, since[i]).await?;
            since[i] = newest + 1;
            seen[i].extend(reports);
            let api = if f == Function::Predict {
                api
            } else {
                Api::None
            };
            let (prices, _) = cost::prices_for(&ctx.account.region);
            let s = report::summarize(&seen[i], archs[i], api, fc.ephemeral_mb as u32, prices);
            if ctx.out.json {
                println!("{}", serde_json::json!({"function": fc.name, "summary": s}));
            } else if s.invocations == 0 {
                if !args.follow {
                    println!(
                        "{}: no invocations in the last {}",
                        fc.name,
                        humantime::format_duration(args.since)
                    );
                }
            } else {
                println!("{}: {s}", fc.name);
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
    let checks = examine(ctx, &args.target, &args.mnist_dir, args.model.as_deref()).await?;
    for c in &checks {
        ctx.out.print(c)?;
    }
    fail_on(&checks)
}

async fn examine(
    ctx: &Ctx,
    target: &Target,
    mnist_dir: &Path,
    model: Option<&Path>,
) -> Result<Vec<lambda_cnn_deploy::doctor::Check>> {
    use lambda_cnn_deploy::doctor;
    let deployer_policy = rendered_policy(ctx, "deployer-policy.json")?;
    Ok(doctor::examine(
        &ctx.clients,
        &ctx.config,
        &ctx.account,
        &doctor::Local {
            images: &target.images,
            mnist_dir,
            deployer_policy: &deployer_policy,
            model,
        },
    )
    .await)
}

/// The doctor ran and found what would stop the deploy (exit status 1; "could not run" is 3).
#[derive(Debug, thiserror::Error)]
#[error("deploy doctor found {count} problem(s): {list}")]
pub struct ProblemsFound {
    count: usize,
    list: String,
}

fn fail_on(checks: &[lambda_cnn_deploy::doctor::Check]) -> Result<()> {
    use lambda_cnn_deploy::doctor::Level;
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c.level == Level::Fail)
        .map(|c| format!("{} ({})", c.found, c.fix.as_deref().unwrap_or_default()))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(ProblemsFound {
            count: failed.len(),
            list: failed.join("; "),
        }
        .into())
    }
}

async fn all(ctx: &Ctx, args: &AllArgs) -> Result<()> {
    // The preflight first: nothing is created when something would stop the deploy.
    let mnist_dir = args.sources.mnist_dir.clone();
    let checks = examine(ctx, &args.target, &mnist_dir, None).await?;
    for c in checks
        .iter()
        .filter(|c| c.level != lambda_cnn_deploy::doctor::Level::Ok)
    {
        if ctx.out.json {
            ctx.out.print(c)?;
        } else {
            say(c.to_string());
        }
    }
    fail_on(&checks)?;
    let arch = match args.arch {
        Some(arch) => arch,
        None => ctx.config.arch().map_err(anyhow::Error::msg)?,
    };
    // The plan, then (the first time in this account and region, on a terminal) a question.
    let state =
        lambda_cnn_deploy::plan::read_state(&ctx.clients, &ctx.config, &ctx.account).await?;
    let plan = lambda_cnn_deploy::plan::plan(
        &lambda_cnn_deploy::plan::Request::All {
            arch,
            no_api: args.no_api,
            images_dir: args.target.images.display().to_string(),
        },
        &ctx.config,
        &ctx.account,
        &state,
    );
    say(plan.to_string());
    let first_time =
        !state.repository && !state.role && state.status.functions.iter().all(|f| !f.deployed);
    if first_time && !args.yes && std::io::stdin().is_terminal() {
        eprint!(
            "nothing of lambda-cnn's is in account {} region {} yet: create all of the above? [y/N] ",
            ctx.account.id, ctx.account.region
        );
        if !confirmed() {
            bail!("nothing created (deploy all --yes skips this question)");
        }
    }
    let built = super::run_build(arch)?;
    for f in [Function::Predict, Function::Train] {
        let out = args.target.images.join(f.name());
        super::image_from(f, built.binary(f), &out, &args.sources)?;
    }
    let both = [Function::Predict, Function::Train];
    push(ctx, &both, &args.target).await?;
    let ctx = &with_smoke(ctx, args.invoke_endpoint.as_deref());
    release_functions(ctx, &both, &args.target, None, None).await?;
    if !args.no_api {
        api(
            ctx,
            &ApiArgs {
                auth: None,
                rest: false,
            },
        )
        .await?;
    }
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
    use lambda_cnn_core::tune::{chart, TuneReport};
    use lambda_cnn_deploy::tune as measuring;

    let TuneInputs { sizes, payload } = inputs;
    let ctx = &with_smoke(ctx, args.invoke_endpoint.as_deref());
    let name = ctx.config.function(args.function).name.clone();
    let (prices, note) = cost::prices_for(&ctx.account.region);
    if let Some(note) = note {
        say(format!("note: {note}"));
    }
    let tuner = measuring::start(
        &ctx.clients.lambda,
        &ctx.clients.smoke,
        &ctx.clients.s3,
        &ctx.account.id,
        &name,
        &ctx.config.release.alias,
    )
    .await
    .map_err(|e| {
        if e.is("ResourceNotFoundException") {
            anyhow::anyhow!(
                "{e}: there is no {name} to tune; release it first (deploy release --function {})",
                args.function
            )
        } else {
            e.into()
        }
    })?;
    if let Some(note) = &tuner.measuring_alias {
        say(note.clone());
    }
    let invocations = args.invocations as usize;
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new((sizes.len() * invocations) as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} invocations, {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    say(format!(
        "tuning {name} ({}): {} sizes × {invocations} invocations; it had {} MB",
        tuner.arch,
        sizes.len(),
        tuner.previous_mb
    ));
    let progress = |_: measuring::Invocation| bar.inc(1);
    let measured = async {
        let mut results = Vec::new();
        for &mb in &sizes {
            bar.set_message(format!("{mb} MB"));
            let r = tuner
                .measure(mb, invocations, &payload, args.parallel, prices, &progress)
                .await?;
            let line = match &r.error {
                Some(e) => format!("{mb} MB: not ranked: {e}"),
                None => format!(
                    "{mb} MB: mean {:.0} ms warm (p95 {:.0}), peak {} MB, ${:.2} per 1M",
                    r.billed_mean_ms, r.billed_p95_ms, r.max_memory_used_mb, r.cost_per_million
                ),
            };
            bar.suspend(|| say(line));
            results.push(r);
        }
        anyhow::Ok(results)
    };
    let outcome = tokio::select! {
        r = measured => r,
        _ = interrupted() => Err(anyhow::anyhow!("interrupted")),
    };
    bar.finish_and_clear();
    say(format!(
        "cleaning up: removing the tune-* aliases and versions, {name} back to {} MB",
        tuner.previous_mb
    ));
    if let Err(errors) = tuner.clean_up().await {
        for e in &errors {
            say(format!("error: cleanup: {e}"));
        }
        let first = errors
            .into_iter()
            .next()
            .map(|e| e.to_string())
            .unwrap_or_default();
        let why = match &outcome {
            Err(e) => format!("{e}; and the cleanup failed too: {first}"),
            Ok(_) => format!("the cleanup failed: {first}"),
        };
        bail!("{why} (run deploy tune again or remove the tune-* aliases by hand)");
    }
    let results = outcome?;
    let mut report = TuneReport::new(
        name.clone(),
        tuner.arch,
        args.strategy,
        args.weight,
        results,
        tuner.previous_mb,
    );
    if let Some(path) = &args.chart {
        std::fs::write(path, chart::svg(&report))
            .with_context(|| format!("cannot write the chart to {}", path.display()))?;
        report.chart = Some(path.display().to_string());
    }
    if args.apply {
        if let Some(mb) = report.recommended_mb {
            report.applied = Some(apply_memory(ctx, args.function, mb).await?);
        }
    }
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

/// Releases what `live` runs at `memory_mb`, through the normal path: the same image and
/// model, a new version, the smoke test, then the alias.
async fn apply_memory(ctx: &Ctx, f: Function, memory_mb: u32) -> Result<String> {
    let cfg = &ctx.config;
    let name = cfg.function(f).name.clone();
    let alias = cfg.release.alias.clone();
    let live = lambda_cnn_deploy::tune::alias_target(&ctx.clients.lambda, &name, &alias)
        .await?
        .with_context(|| {
            format!("{name} has no {alias} alias: release it first (deploy release)")
        })?;
    let mut config = cfg.clone();
    if let Some(fc) = config.functions.get_mut(f.name()) {
        fc.memory_mb = memory_mb as i32;
    }
    let (role_arn, repo) = release_prerequisites(ctx, &config, &mut Vec::new()).await?;
    let req = ReleaseRequest {
        function: f,
        repository_uri: &repo.uri,
        repository: &repo.name,
        digest: &live.digest,
        model: live
            .model_s3_uri
            .as_deref()
            .map_or(release::Model::Image, release::Model::S3),
        canary_percent: None,
        arch: live.arch,
    };
    let outcome = release::release(&ctx.clients, &config, &ctx.account, &role_arn, &req, &say)
        .await
        .with_context(|| format!("releasing {name} at {memory_mb} MB"))?;
    say(format!(
        "note: {memory_mb} MB is live; set functions.{}.memory_mb = {memory_mb} in the deploy config, or the next deploy release puts back {} MB",
        f.name(),
        cfg.function(f).memory_mb
    ));
    Ok(format!(
        "version {} at {memory_mb} MB is {} ({})",
        outcome.version, outcome.alias, outcome.smoke
    ))
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
    let ctx = &with_smoke(ctx, args.invoke_endpoint.as_deref());
    let name = &ctx.config.function(args.function).name;
    let alias = &ctx.config.release.alias;
    let invoked = lambda::invoke(&ctx.clients.smoke, name, Some(alias), &event)
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
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let mut since = vec![now_ms - args.since.as_millis() as i64; functions.len()];
    loop {
        for (i, f) in functions.iter().enumerate() {
            let name = &ctx.config.function(*f).name;
            let group = logs::log_group(name);
            let (lines, newest) = logs::lines(
                &ctx.clients.logs,
                &group,
                since[i],
                None,
                args.filter.as_deref(),
            )
            .await?;
            if !lines.is_empty() {
                since[i] = newest + 1;
            }
            for l in &lines {
                if ctx.out.json {
                    println!(
                        "{}",
                        serde_json::json!({"function": name, "timestamp_ms": l.timestamp_ms,
                            "stream": l.stream, "message": l.message})
                    );
                } else if functions.len() > 1 {
                    println!("{} {l}", f.name());
                } else {
                    println!("{l}");
                }
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
