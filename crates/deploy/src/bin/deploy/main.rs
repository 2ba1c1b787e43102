//! `deploy`: the pipeline that ships the functions to Lambda — build → image (→ push → release
//! → api → monitor). Each stage runs on its own; see `deploy --help`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use lambda_cnn_core::cost::Api;
use lambda_cnn_deploy::apigw::Auth;
use lambda_cnn_deploy::binary::Arch;
use lambda_cnn_deploy::build;
use lambda_cnn_deploy::image::{self, Function, Image};
use lambda_cnn_deploy::pipeline::containerize::mb;

mod stages;

/// Where `--config` points unless told otherwise.
const DEFAULT_CONFIG: &str = "infra/deploy.toml";

#[derive(Parser)]
#[command(
    name = "deploy",
    version = lambda_cnn_core::VERSION,
    about = "Ship the lambda-cnn functions to AWS Lambda: build, containerize, push, release, monitor",
    long_about = "Ship the lambda-cnn functions to AWS Lambda.\n\n\
        The pipeline runs build → image → push → release → api → monitor; each stage can run on \
        its own. Images are assembled from the compiled binary directly (no Docker daemon, no \
        base image), reproducibly: the same inputs give the same digest."
)]
struct Cli {
    /// The deploy configuration (names, region fallback, memory, timeouts, API, ...).
    #[arg(long, global = true, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Print what would be done, without calling AWS or writing anything.
    #[arg(long, global = true)]
    dry_run: bool,
    /// Print results as JSON, one object per line, instead of text (any subcommand).
    #[arg(long, global = true)]
    json: bool,
    /// The AWS profile (of ~/.aws/config) to deploy with; default: AWS_PROFILE, else
    /// `default`. Any kind works: keys, role_arn, web identity, credential_process, IAM
    /// Identity Center (SSO), aws login.
    #[arg(long, global = true, value_name = "NAME")]
    profile: Option<String>,
    /// The AWS region to deploy in; default: AWS_REGION, AWS_DEFAULT_REGION, the profile's
    /// region, then the config's `region`. For `cost`: the region whose prices apply (tables
    /// for us-east-1, us-east-2, us-west-2; another region is priced at us-east-1's rates,
    /// with a note).
    #[arg(long, global = true, value_name = "REGION")]
    region: Option<String>,
    /// Deploy a second copy beside the first: `-NAME` after every name the deploy creates
    /// (functions, repository, role, bucket, API), e.g. --stage dev.
    #[arg(long, global = true, env = "DEPLOY_STAGE", value_name = "NAME")]
    stage: Option<String>,
    /// More detail on stderr: -v the AWS SDK's own warnings and retries, -vv its debug lines
    /// (RUST_LOG, when set, decides instead).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    /// No progress lines on stderr: only results (stdout), warnings and errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Release-build the function binaries, for this machine's architecture or cross-compiled
    /// for the other one (`--arch`; default: the config's `architecture`).
    #[command(long_about = "Release-build the function binaries.\n\n\
        For this machine's architecture: `cargo build --release --locked --workspace --bins`. \
        For the other one (arm64 on x86_64): the two functions cross-compiled with `--target \
        aarch64-unknown-linux-gnu`, linked by Debian's gcc-aarch64-linux-gnu (`make cross-tools` \
        installs it and the Rust target). The architecture defaults to the config's \
        `architecture` (infra/deploy.toml).")]
    Build(BuildArgs),
    /// Build a function's OCI image: an image layout directory, optionally a `docker load` tar.
    #[command(
        long_about = "Build a function's OCI image from its release binary.\n\n\
        Writes an OCI image layout (oci-layout, index.json, blobs/sha256/…) and prints the \
        manifest digest and each layer's size. Layers, most stable first: the dynamic loader, \
        shared libraries and CA bundle; the model weights (predict) or MNIST (train); the \
        binary at /var/runtime/bootstrap. Unchanged layers come from a cache keyed by content.\n\n\
        --arch (default: the binary's, or the config's `architecture` when deploy builds the \
        binary) picks x86_64 or arm64; an arm64 image is cross-built on x86_64 and carries the \
        arm64 loader and libraries from Debian's cross sysroot (/usr/aarch64-linux-gnu), never \
        the host's."
    )]
    Image(Box<ImageArgs>),
    /// Push images to ECR (or `--registry`): create the repository if missing, skip blobs the
    /// registry has, tag with the digest's short form and the git revision.
    Push(PushArgs),
    /// Point the functions at the pushed images (by digest), publish versions, smoke-test
    /// them, then move the `live` alias. A failed smoke test leaves `live` where it was.
    Release(ReleaseArgs),
    // The routes come from their one table (lambda_cnn_core::routes), so the help cannot drift.
    #[command(about = format!(
        "The HTTPS endpoint: an API Gateway HTTP API ({}) on predict's `live` alias, with \
        throttling, CORS and optional IAM/JWT auth. Prints the page's URL. Needs a release first.",
        lambda_cnn_core::routes::summary()
    ))]
    Api(ApiArgs),
    /// Ensure the functions' execution role (trust and least-privilege policies from
    /// infra/iam/); `release` does this too.
    Role,
    /// Undo the last release: drop a canary, or point `live` back at the last version that
    /// passed its smoke test and went live (or `--to VERSION`), smoke-testing it first. An
    /// unchanged re-release then leaves it rolled back.
    Rollback(RollbackArgs),
    /// Remove what deploy created: API, permission, batch state machine and its role,
    /// aliases, functions, role, log groups (the repository and bucket too with --all).
    Destroy(DestroyArgs),
    /// Invocations from the functions' REPORT log lines: counts, cold starts, durations,
    /// memory headroom, errors, cost.
    Monitor(MonitorArgs),
    /// What is deployed: per function the version `live` serves, its image digest, model,
    /// memory and architecture, a canary, how the last release ended; the API's URLs.
    /// Read-only.
    Status(StatusArgs),
    /// Invoke a deployed function's `live` alias once and print the answer: predict with an
    /// image file (sent as API Gateway sends it) or a JSON body, train with a JSON event.
    #[command(
        long_about = "Invoke a deployed function's `live` alias once and print the \
        answer.\n\n\
        Examples:\n  deploy invoke --image digit.png\n  \
        deploy invoke --body '{\"pixels\":[0,0,…784 values…]}'\n  \
        deploy invoke --function train --body '{\"epochs\":1,\"limit\":1000}'\n\n\
        predict gets the input as API Gateway's HTTP API would deliver POST /predict (a PNG or \
        JPEG file as image/png or image/jpeg, a body as application/json); train gets the body \
        as its event. The answer's body is printed (--json: the whole answer, with the version \
        that ran). Exit status 1 when the function fails or answers an HTTP error."
    )]
    Invoke(InvokeArgs),
    /// The functions' own log lines from CloudWatch Logs, oldest first; --follow keeps
    /// printing new ones.
    Logs(LogsArgs),
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    #[command(long_about = "Print a shell completion script for deploy.\n\n\
        Examples:\n  deploy completions bash > ~/.local/share/bash-completion/completions/deploy\n  \
        deploy completions zsh > \"${fpath[1]}/_deploy\"\n  \
        deploy completions fish > ~/.config/fish/completions/deploy.fish")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The cost model C = C0 + C1·t + C2·Σ rᵢ·tᵢ with Lambda's prices, for a what-if.
    Cost(CostArgs),
    /// build → image → push → release → api, for both functions (after `doctor`, which stops
    /// it on any FAIL).
    All(AllArgs),
    /// What would stop `deploy all` in this account and region, before anything is created:
    /// identity, permissions, Lambda quotas (concurrency, memory), names already taken, image
    /// architecture, data. Creates nothing. Exits non-zero on any FAIL.
    #[command(
        long_about = "What would stop `deploy all` in this account and region, found before \
        anything is created, with what to do about each.\n\n\
        Checks: the caller's identity and partition; whether the caller may call what the \
        deploy calls (infra/iam/deployer-policy.json, by iam:SimulatePrincipalPolicy where \
        allowed, else 'not checked'); the account's Lambda concurrency (GetAccountSettings) \
        against predict's reserved_concurrency; memory sizes against the 3008 MB cap of new \
        accounts; the images' architecture against the config; the MNIST files the train \
        image packs; whether the bucket name is taken by another account; whether an existing \
        role lets Lambda assume it.\n\n\
        Prints one OK / WARN / FAIL line each (--json: one object each), also when it cannot \
        sign in (the identity FAILs; the local checks still run).\n\n\
        Exit status: 0 nothing FAILed, 1 a check FAILed, 2 a usage error, 3 the doctor could \
        not run (e.g. an unreadable config)."
    )]
    Doctor(DoctorArgs),
    /// Print the least-privilege policy to deploy with: infra/iam/deployer-policy.json with
    /// this config's names (functions, repository, role, bucket, log groups), the account and
    /// region filled in; PassRole only for the execution role and only to Lambda.
    #[command(
        long_about = "Print the least-privilege IAM policy to deploy with.\n\n\
        infra/iam/deployer-policy.json with the names of the deploy config (functions, ECR \
        repository, execution role, models bucket, log groups; API Gateway in the region), \
        the account, region and partition filled in. iam:PassRole is allowed for the \
        execution role only, and only to lambda.amazonaws.com. Renaming a resource in the \
        config renames it here. `deploy doctor` simulates each statement on the resources it \
        names. With --account nothing is asked of AWS; without it, STS says which account.\n\n\
        Example: deploy policy --account 123456789012 --region eu-west-1 > deployer.json"
    )]
    Policy(PolicyArgs),
    /// Pick a function's memory size from measured invocations: each size published as a
    /// version behind a temporary alias, invoked, its REPORT lines read; a table, a chart, a
    /// recommendation by cost, speed or both (balanced). Cleans up after itself.
    #[command(
        long_about = "Pick a function's memory size from measured invocations.\n\n\
        On Lambda, memory is the one dial, and it also buys CPU: 1 vCPU at 1769 MB, \
        proportionally less below, up to 6 at 10240 MB. For each --memory size, tune sets it \
        on $LATEST, publishes a version, points a temporary alias (tune-<MB>) at it and invokes \
        it --invocations times with LogType=Tail, reading each REPORT line from the log tail. \
        The first invocation of a size is its cold start, reported apart; the warm ones give \
        the billed-duration p50/p95/mean, and with the peak memory and Lambda's prices (by \
        the function's architecture) the cost per invocation and per million.\n\n\
        Strategies, as AWS Lambda Power Tuning defines them: cost (the cheapest), speed (the \
        fastest), balanced (the least weight·cost/max cost + (1−weight)·duration/max \
        duration). A pick with under 20% memory headroom over the measured peak is flagged. \
        A size whose invocation fails (out of memory, a timeout, an error) is shown and not \
        ranked.\n\n\
        Nothing to deploy first: tune needs only the function (deploy release). Afterwards \
        the temporary aliases and versions are gone and $LATEST has its memory back, also \
        after an error or Ctrl-C. --apply then releases the pick through the normal path: a \
        new version of the live image at that size, smoke-tested before the live alias moves."
    )]
    Tune(TuneArgs),
    /// Two deployments of a function side by side, from two `deploy tune --json` reports of
    /// the same memory sizes: a Markdown table (init, warm, peak memory, cost, and the ratios)
    /// and a chart. Reads files only.
    #[command(
        long_about = "Two deployments of a function side by side, from two `deploy tune --json` \
        reports of the same memory sizes.\n\n\
        Prints a Markdown table: per memory size, each side's cold start (Init Duration), mean \
        warm billed duration, peak memory and USD per million invocations, as theirs / ours, \
        and theirs ÷ ours; a size one side could not run at says why. With --ours-image and \
        --theirs-image (OCI layouts, as `deploy image` writes them), each image's compressed \
        size too. --chart writes an SVG of duration and cost by memory size, both sides on \
        logarithmic axes. `make bench-seed` compares lambda-cnn with the seed article's \
        Python/TensorFlow function this way (docs/seed.md).\n\n\
        Example:\n  deploy tune --function predict --json > ours.json\n  \
        deploy --stage seed tune --function predict --json > seed.json\n  \
        deploy compare --ours ours.json --theirs seed.json --theirs-name seed --chart predict.svg"
    )]
    Compare(CompareArgs),
    /// Score every image under an S3 prefix with predict's released model, on Step Functions'
    /// Distributed Map: results as JSON lines under --output, a summary with the cost.
    #[command(
        long_about = "Score every image under an S3 prefix with predict's released model, on \
        Step Functions' Distributed Map.\n\n\
        Makes (or brings up to date, by name: the config's batch.state_machine) a state machine \
        whose map lists the objects under --input and hands predict's alias --batch-size keys \
        per invocation, --concurrency at once. Its role may invoke that alias, list the input \
        prefix and run its own children, nothing else; predict's execution role gets an inline \
        policy to read the input prefix and write the output prefix. Each image gets the API's \
        limits (6 MB, the pixel budget); one bad image fails its own line, not the run, unless \
        more than --tolerated-failure percent fail. Results: one JSON-lines object per batch \
        under --output (key, label, probabilities, model; or the error), named by the batch's \
        keys, so a re-run overwrites rather than duplicates.\n\n\
        Starts a run and shows its progress, then prints items, succeeded, failed with reasons, \
        counts per label, wall time and cost (Lambda from predict's REPORT lines over the run, \
        Step Functions from its transitions and requests). --no-wait prints the run's ARN; \
        `deploy batch status ARN` follows a run; Ctrl-C leaves the run going and says how to \
        follow or stop it. Exit status 1 when the run did not succeed.\n\n\
        --form emulator writes the map in the dialect moto's interpreter runs (one key per \
        STANDARD child, no ItemBatcher); AWS takes both, `aws` (ItemBatcher, EXPRESS children) \
        is the cheaper. Examples:\n  \
        deploy batch --input s3://my-images/2026-12/ --output s3://my-results/2026-12/\n  \
        deploy batch --input s3://my-images/ --no-wait\n  \
        deploy batch status arn:aws:states:us-east-1:123456789012:execution:lambda-cnn-batch:batch-20261205-101500",
        args_conflicts_with_subcommands = true,
        subcommand_negates_reqs = true
    )]
    Batch(BatchArgs),
}

#[derive(Args, Clone)]
struct BatchArgs {
    #[command(subcommand)]
    follow: Option<BatchCommand>,
    /// The images: s3://bucket/prefix/ (every object under it; a trailing / is implied).
    #[arg(long, required = true)]
    input: Option<lambda_cnn_deploy::batch::S3Prefix>,
    /// Where the results go, s3://bucket/prefix/ (not under --input). Default: the config's
    /// batch.output (in the models bucket).
    #[arg(long)]
    output: Option<lambda_cnn_deploy::batch::S3Prefix>,
    /// Keys per invocation (1 to 1000). Default: the config's batch.batch_size.
    #[arg(long)]
    batch_size: Option<u32>,
    /// Invocations at once (1 to 10000). Default: the config's batch.concurrency.
    #[arg(long)]
    concurrency: Option<u32>,
    /// The percentage of images that may fail with the run still succeeding. Default: the
    /// config's batch.tolerated_failure_percent.
    #[arg(long)]
    tolerated_failure: Option<f64>,
    /// The alias or version of predict to score with. Default: the release alias.
    #[arg(long)]
    qualifier: Option<String>,
    /// The map's dialect: aws, or emulator (moto's interpreter).
    #[arg(long, value_enum, default_value_t = lambda_cnn_deploy::batch::definition::Form::Aws, env = "DEPLOY_BATCH_FORM")]
    form: lambda_cnn_deploy::batch::definition::Form,
    /// Start the run, print its ARN and return.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Subcommand, Clone)]
enum BatchCommand {
    /// Follow a run (started with --no-wait, or left by Ctrl-C) to its end and print its summary.
    Status {
        /// The run's execution ARN.
        arn: String,
    },
}

#[derive(Args, Clone)]
struct TuneArgs {
    /// The function to tune: predict or train.
    #[arg(long, value_parser = parse_function)]
    function: Function,
    /// The memory sizes to try, in MB (Lambda allows 128 to 10240).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "128,256,512,1024,1769,3008",
        value_parser = parse_memory_mb
    )]
    memory: Vec<u32>,
    /// Invocations per size; the first is the cold start and is reported apart.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=1000))]
    invocations: u32,
    /// The event to send, a JSON file. Default: for predict, a recorded API Gateway event
    /// carrying a real test digit; for train, one epoch over 1000 samples.
    #[arg(long)]
    payload: Option<PathBuf>,
    /// After each size's cold start, send its other invocations all at once.
    #[arg(long)]
    parallel: bool,
    /// How to pick: cost, speed, or balanced (see --weight).
    #[arg(long, value_enum, default_value_t = lambda_cnn_core::tune::Strategy::Cost)]
    strategy: lambda_cnn_core::tune::Strategy,
    /// For balanced: the weight of cost against speed, from 0 (speed only) to 1 (cost only).
    #[arg(long, default_value_t = 0.5, value_parser = parse_weight)]
    weight: f64,
    /// Release the pick: a new version of the live image at that size, smoke-tested, then the
    /// live alias.
    #[arg(long)]
    apply: bool,
    /// Write the chart (duration and cost against memory) as SVG to this file.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Invoke through this Lambda Invoke API endpoint (a local data plane) instead of Lambda's.
    #[arg(long, env = "DEPLOY_INVOKE_ENDPOINT")]
    invoke_endpoint: Option<String>,
}

/// A memory size Lambda allows (its one range: `lambda::MEMORY_MB`).
fn parse_memory_mb(s: &str) -> Result<u32, String> {
    let range = lambda_cnn_deploy::lambda::MEMORY_MB;
    match s.trim().parse::<i32>() {
        Ok(mb) if range.contains(&mb) => Ok(mb as u32),
        _ => Err(format!(
            "{s} MB: Lambda allows {} to {} MB",
            range.start(),
            range.end()
        )),
    }
}

fn parse_duration_ms(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(ms) if ms > 0.0 && ms <= 900_000.0 => Ok(ms),
        _ => Err(format!(
            "{s} ms: give a duration above 0 and at most 900000 (Lambda's 15-minute limit)"
        )),
    }
}

fn parse_invocations(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(n) if n >= 0.0 && n.is_finite() => Ok(n),
        _ => Err(format!("{s}: give a number of invocations, 0 or more")),
    }
}

fn parse_weight(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(w) if (0.0..=1.0).contains(&w) => Ok(w),
        _ => Err(format!("{s:?} is not a weight from 0 to 1")),
    }
}

#[derive(Args, Clone)]
struct PolicyArgs {
    /// The 12-digit account to write the policy for; default: the signed-in one (STS).
    #[arg(long, value_parser = parse_account)]
    account: Option<String>,
}

fn parse_account(s: &str) -> Result<String, String> {
    if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a 12-digit AWS account id"))
    }
}

#[derive(Args, Clone)]
struct DoctorArgs {
    #[command(flatten)]
    target: Target,
    /// The MNIST files the train image packs.
    #[arg(long, env = "MNIST_DIR", default_value = lambda_cnn_core::data::DEFAULT_DIR)]
    mnist_dir: PathBuf,
    /// Also check this model file (one `lambda-cnn import` wrote) as `deploy release --model`
    /// will: its limits, its tensors, the memory predict needs for it.
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
}

/// Which function(s) a stage acts on.
#[derive(Args, Clone)]
struct Which {
    /// predict or train; default: both.
    #[arg(long, value_parser = parse_function)]
    function: Option<Function>,
}

impl Which {
    fn functions(&self) -> Vec<Function> {
        match self.function {
            Some(f) => vec![f],
            None => vec![Function::Predict, Function::Train],
        }
    }
}

#[derive(Args, Clone)]
struct Target {
    /// The registry standing in for ECR's own (HOST:PORT, plain HTTP on loopback): push sends
    /// the images there and registers each manifest with ECR's PutImage, so Lambda's control
    /// plane knows it. Other stages accept it and need nothing from it.
    #[arg(long, env = "DEPLOY_REGISTRY")]
    registry: Option<String>,
    /// Where the images are (as `deploy image` writes them): DIR/<function>.
    #[arg(long, default_value = ".local/images")]
    images: PathBuf,
}

#[derive(Args, Clone)]
struct PushArgs {
    #[command(flatten)]
    which: Which,
    #[command(flatten)]
    target: Target,
}

#[derive(Args, Clone)]
struct ReleaseArgs {
    #[command(flatten)]
    which: Which,
    #[command(flatten)]
    target: Target,
    /// Send this percentage of traffic to the new version; the rest stays on the current one.
    #[arg(long, value_parser = parse_percent)]
    canary: Option<f64>,
    /// The model predict serves: a model file here (one `lambda-cnn import` wrote, uploaded to
    /// the models bucket under its SHA-256), s3://bucket/key in the models bucket (e.g. a train
    /// result; checked first), or `image` for the image's own. An imported model's stored
    /// sample is its smoke test. Default: what `live` serves now (a release of new code keeps
    /// trained weights).
    #[arg(long, value_name = "FILE|s3://BUCKET/KEY|image")]
    model: Option<String>,
    /// Smoke-test through this Lambda Invoke API endpoint instead of Lambda's (a Runtime API
    /// emulator running the image).
    #[arg(long, env = "DEPLOY_INVOKE_ENDPOINT")]
    invoke_endpoint: Option<String>,
}

#[derive(Args, Clone)]
struct ApiArgs {
    /// Who may call the API; default: the config's `[api] auth`.
    #[arg(long, value_enum)]
    auth: Option<Auth>,
    /// A REST API (API Gateway v1) instead of an HTTP API: resources, proxy integrations, a
    /// `prod` stage with throttling (no CORS or JWT there).
    #[arg(long)]
    rest: bool,
}

#[derive(Args, Clone)]
struct RollbackArgs {
    #[command(flatten)]
    which: Which,
    /// The version to point `live` at; default: the last one that passed its smoke test and
    /// went live before the current (during a canary: drop the canary instead).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    to: Option<u64>,
    /// Smoke-test through this Lambda Invoke API endpoint instead of Lambda's (see `deploy
    /// release --help`).
    #[arg(long, env = "DEPLOY_INVOKE_ENDPOINT")]
    invoke_endpoint: Option<String>,
}

#[derive(Args, Clone)]
struct DestroyArgs {
    /// Also delete the ECR repository (with its images) and the models bucket.
    #[arg(long)]
    all: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
}

#[derive(Args, Clone)]
struct MonitorArgs {
    #[command(flatten)]
    which: Which,
    /// How far back: 15m, 1h, 2d, ...
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    since: std::time::Duration,
    /// Keep reading new invocations every 5 s until interrupted.
    #[arg(long)]
    follow: bool,
    /// API Gateway in front, for the cost.
    #[arg(long, value_enum, default_value_t = Api::Http)]
    api: Api,
}

#[derive(Args, Clone)]
struct StatusArgs {
    #[command(flatten)]
    which: Which,
}

#[derive(Args, Clone)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["image", "body"])))]
struct InvokeArgs {
    /// predict or train.
    #[arg(long, value_parser = parse_function, default_value = "predict")]
    function: Function,
    /// A PNG or JPEG file for predict.
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// A JSON body (predict's request body, train's event), or @FILE to read it from a file.
    #[arg(long, value_name = "JSON|@FILE")]
    body: Option<String>,
    /// Invoke through this Lambda Invoke API endpoint (a local data plane) instead of Lambda's.
    #[arg(long, env = "DEPLOY_INVOKE_ENDPOINT")]
    invoke_endpoint: Option<String>,
}

#[derive(Args, Clone)]
struct LogsArgs {
    #[command(flatten)]
    which: Which,
    /// How far back: 15m, 1h, 2d, ...
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    since: std::time::Duration,
    /// Only lines matching this CloudWatch Logs filter pattern (e.g. ERROR, or "REPORT").
    #[arg(long, value_name = "PATTERN")]
    filter: Option<String>,
    /// Keep printing new lines (every 2 s) until interrupted.
    #[arg(long, short = 'f')]
    follow: bool,
}

#[derive(Args, Clone)]
struct CompareArgs {
    /// Our side: a `deploy tune --json` report (its last line is read).
    #[arg(long, value_name = "FILE")]
    ours: PathBuf,
    /// The other side's report, of the same function at the same sizes.
    #[arg(long, value_name = "FILE")]
    theirs: PathBuf,
    /// What to call our side.
    #[arg(long, default_value = "lambda-cnn")]
    ours_name: String,
    /// What to call the other side.
    #[arg(long, default_value = "theirs")]
    theirs_name: String,
    /// Our image (an OCI layout directory), for its size.
    #[arg(long, value_name = "DIR")]
    ours_image: Option<PathBuf>,
    /// Their image (an OCI layout directory), for its size.
    #[arg(long, value_name = "DIR")]
    theirs_image: Option<PathBuf>,
    /// Write the chart (SVG) to this file.
    #[arg(long, value_name = "FILE")]
    chart: Option<PathBuf>,
    /// The chart's title. Default: the two sides' names.
    #[arg(long)]
    title: Option<String>,
}

#[derive(Args, Clone)]
struct CostArgs {
    /// How many invocations (e.g. 1e6).
    #[arg(long, default_value_t = 1_000_000.0, value_parser = parse_invocations)]
    invocations: f64,
    /// Duration of one invocation, ms (billed rounded up to the millisecond; Lambda stops a
    /// function at 900000).
    #[arg(long, default_value_t = 40.0, value_parser = parse_duration_ms)]
    duration_ms: f64,
    /// The function whose configured memory, /tmp and architecture are priced (the config's
    /// [functions.NAME] and `architecture`), unless the flags below say otherwise.
    #[arg(long, default_value = "predict", value_parser = parse_function)]
    function: Function,
    /// The function's memory, MB (Lambda allows 128 to 10240; it also sets the CPU).
    /// Default: the config's.
    #[arg(long, value_parser = parse_memory_mb)]
    memory_mb: Option<u32>,
    /// The function's /tmp, MB (Lambda allows 512 to 10240; over 512 is billed).
    /// Default: the config's.
    #[arg(long, value_parser = clap::value_parser!(u32).range(512..=10240))]
    ephemeral_mb: Option<u32>,
    /// x86_64 or arm64. Default: the config's `architecture`.
    #[arg(long, value_parser = parse_arch)]
    arch: Option<Arch>,
    /// API Gateway in front.
    #[arg(long, value_enum, default_value_t = Api::Http)]
    api: Api,
    /// Price batch scoring instead (`deploy batch` on AWS): --invocations counts images,
    /// this many to an invocation of --duration-ms, through Step Functions' Distributed Map
    /// with EXPRESS children (no API Gateway).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
    batch_size: Option<u64>,
    /// With --batch-size: invocations at once, for the wall time (Lambda's default account
    /// quota is 1000).
    #[arg(long, default_value_t = 1000, requires = "batch_size", value_parser = clap::value_parser!(u64).range(1..=10000))]
    concurrency: u64,
}

#[derive(Args, Clone, Copy)]
struct BuildArgs {
    /// x86_64 or arm64. Default: the config's `architecture`.
    #[arg(long, value_parser = parse_arch)]
    arch: Option<Arch>,
}

#[derive(Args, Clone)]
struct AllArgs {
    #[command(flatten)]
    target: Target,
    /// Build, push and release images for this architecture (x86_64 or arm64). Default: the
    /// config's `architecture`.
    #[arg(long, value_parser = parse_arch)]
    arch: Option<Arch>,
    /// The release's smoke-test endpoint (see `deploy release --help`).
    #[arg(long, env = "DEPLOY_INVOKE_ENDPOINT")]
    invoke_endpoint: Option<String>,
    /// Skip `deploy api`.
    #[arg(long)]
    no_api: bool,
    /// Do not ask before creating anything the first time in an account (the question is
    /// asked on a terminal only).
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    sources: ImageSources,
}

#[derive(Args)]
struct ImageArgs {
    /// The function to package.
    #[arg(long, value_parser = parse_function)]
    function: Function,
    /// The function binary to pack; default: release-build it first.
    #[arg(long)]
    binary: Option<PathBuf>,
    /// The image's architecture (x86_64 or arm64); must be the binary's. Default: the binary's,
    /// or, when deploy builds it, the config's `architecture`.
    #[arg(long, value_parser = parse_arch)]
    arch: Option<Arch>,
    /// Where to write the OCI image layout. Default: .local/images/<function>.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write a tar that `docker load -i FILE` reads.
    #[arg(long)]
    tar: Option<PathBuf>,
    /// The image's tag (the layout's ref name; the docker tar loads as lambda-cnn-<function>:TAG).
    #[arg(long, default_value = "latest")]
    tag: String,
    #[command(flatten)]
    sources: ImageSources,
}

/// What goes into an image besides the binary: the one set of flags `deploy image` and
/// `deploy all` both read, so that the two build the same image from the same inputs.
#[derive(Args, Clone)]
struct ImageSources {
    /// Model weights for the predict image (the card beside it, *.json, goes in too).
    #[arg(long, default_value = lambda_cnn_core::SHIPPED_WEIGHTS)]
    weights: PathBuf,
    /// The four MNIST files for the train image (checked before packing).
    #[arg(long, env = "MNIST_DIR", default_value = lambda_cnn_core::data::DEFAULT_DIR)]
    mnist_dir: PathBuf,
    /// PEM certificates the functions trust for HTTPS. Default: this machine's CA bundle.
    #[arg(long)]
    ca_bundle: Option<PathBuf>,
    /// Every timestamp in the image, in seconds since 1970 (reproducible builds).
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 0)]
    source_date_epoch: u64,
    /// The cache of compressed layers. Default: ~/.cache/lambda-cnn/layers.
    #[arg(long, env = "LAMBDA_CNN_LAYER_CACHE")]
    cache_dir: Option<PathBuf>,
}

impl ImageSources {
    fn read(&self) -> lambda_cnn_deploy::pipeline::Sources {
        lambda_cnn_deploy::pipeline::Sources {
            weights: self.weights.clone(),
            mnist_dir: self.mnist_dir.clone(),
            ca_bundle: self.ca_bundle.clone(),
            source_date_epoch: self.source_date_epoch,
            cache_dir: self.cache_dir.clone(),
        }
    }
}

fn parse_function(s: &str) -> Result<Function, String> {
    s.parse()
}

fn parse_arch(s: &str) -> Result<Arch, String> {
    s.parse()
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if p > 0.0 && p < 100.0 => Ok(p),
        _ => Err(format!(
            "{s:?} is not a percentage between 0 and 100 (exclusive)"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    lambda_cnn_core::errors::init_stderr_logging_at(cli.verbose);
    stages::QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
    let dry_run = cli.dry_run;
    let output = lambda_cnn_core::output::Output { json: cli.json };
    let config_path = cli.config.clone();
    let target = lambda_cnn_deploy::aws::Target {
        profile: cli.profile,
        region: cli.region,
    };
    let is_doctor = matches!(cli.command, Command::Doctor(_));
    let result = match cli.command {
        Command::Build(args) => {
            let arch = args.arch.unwrap_or_else(|| config_arch(&config_path));
            if dry_run && output.json {
                println!(
                    "{}",
                    serde_json::json!({"arch": arch.lambda_name(), "would_run": build::command_line(arch)})
                );
                Ok(())
            } else if dry_run {
                println!("would run: {}", build::command_line(arch));
                Ok(())
            } else {
                run_build(arch, output).map(|built| {
                    let binaries = [Function::Predict, Function::Train]
                        .map(|f| (f.name(), built.binary(f).display().to_string()));
                    if output.json {
                        let binaries: serde_json::Map<String, serde_json::Value> = binaries
                            .into_iter()
                            .map(|(f, p)| (f.to_owned(), p.into()))
                            .collect();
                        println!(
                            "{}",
                            serde_json::json!({"arch": arch.lambda_name(), "binaries": binaries})
                        );
                    } else {
                        for (f, path) in binaries {
                            println!("{f}: {path}");
                        }
                    }
                })
            }
        }
        Command::Image(args) => run_image(*args, &config_path, dry_run, output),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "deploy", &mut std::io::stdout());
            Ok(())
        }
        Command::Cost(args) => run_cost(args, &config_path, target.region.as_deref(), output),
        Command::Compare(args) => run_compare(args, output),
        other => stages::run(
            other,
            &config_path,
            cli.stage.as_deref(),
            &target,
            dry_run,
            output,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", lambda_cnn_core::errors::one_line(&e));
            if let Some(hint) = aws_hint(&e) {
                eprintln!("hint: {hint}");
            }
            // The doctor tells "found problems" (1) from "could not run" (3).
            if is_doctor
                && e.downcast_ref::<lambda_cnn_deploy::doctor::ProblemsFound>()
                    .is_none()
            {
                ExitCode::from(DOCTOR_COULD_NOT_RUN)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `deploy doctor`'s exit status when it could not check (an unreadable config, say); 1 is
/// "checked, and found problems", 2 a usage error.
const DOCTOR_COULD_NOT_RUN: u8 = 3;

/// What to do about the AWS error behind `e`, when it is one AWS documents.
fn aws_hint(e: &anyhow::Error) -> Option<String> {
    use lambda_cnn_deploy::aws::AwsError;
    use lambda_cnn_deploy::pipeline::StageError;
    use lambda_cnn_deploy::release::ReleaseError;
    e.chain().find_map(|c| {
        let aws = c
            .downcast_ref::<AwsError>()
            .or_else(|| match c.downcast_ref::<ReleaseError>() {
                Some(ReleaseError::Aws(a)) => Some(a),
                _ => None,
            })
            .or_else(|| c.downcast_ref::<StageError>().and_then(StageError::aws))?;
        lambda_cnn_deploy::doctor::explain(aws)
    })
}

/// The architecture the config asks for; this machine's where the config cannot be read (the
/// commands that need the config say why).
fn config_arch(config_path: &Path) -> Arch {
    lambda_cnn_deploy::config::DeployConfig::load(config_path)
        .ok()
        .and_then(|c| c.arch().ok())
        .or(Arch::host())
        .unwrap_or(Arch::X86_64)
}

fn run_build(arch: Arch, out: lambda_cnn_core::output::Output) -> Result<build::Built> {
    let root = build::workspace_root()?;
    Ok(lambda_cnn_deploy::pipeline::build(
        &root,
        arch,
        &stages::Printer::new(out),
    )?)
}

fn run_image(
    args: ImageArgs,
    config_path: &Path,
    dry_run: bool,
    output: lambda_cnn_core::output::Output,
) -> Result<()> {
    if dry_run {
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(".local/images").join(args.function.name()));
        let from = match &args.binary {
            Some(b) => b.display().to_string(),
            None => format!(
                "a release build ({})",
                build::command_line(args.arch.unwrap_or_else(|| config_arch(config_path)))
            ),
        };
        println!(
            "would build the {} image from {from} into {}{}",
            args.function,
            out.display(),
            args.tar
                .as_ref()
                .map(|t| format!(", and a docker tar {}", t.display()))
                .unwrap_or_default()
        );
        return Ok(());
    }
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => {
            let arch = args.arch.unwrap_or_else(|| config_arch(config_path));
            run_build(arch, output)?.binary(args.function)
        }
    };
    let start = Instant::now();
    let img = lambda_cnn_deploy::pipeline::containerize(
        args.function,
        binary,
        args.arch,
        &args.sources.read(),
    )?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(".local/images").join(args.function.name()));
    lambda_cnn_deploy::pipeline::containerize::write(&img, &out, &args.tag)?;
    let repo_tag = format!("lambda-cnn-{}:{}", args.function, args.tag);
    if let Some(tar) = &args.tar {
        image::write_docker_archive(&img, tar, &repo_tag, args.sources.source_date_epoch)
            .with_context(|| format!("cannot write the docker tar {}", tar.display()))?;
    }
    let seconds = start.elapsed().as_secs_f64();
    if output.json {
        println!("{}", image_json(&img, &out, args.tar.as_deref(), seconds));
    } else {
        print_image(&img, &out, &args, &repo_tag, seconds);
    }
    Ok(())
}

fn image_json(img: &Image, out: &Path, tar: Option<&Path>, seconds: f64) -> serde_json::Value {
    serde_json::json!({
        "function": img.function.name(),
        "architecture": img.arch.lambda_name(),
        "manifest_digest": img.manifest_digest,
        "config_digest": img.config_digest,
        "compressed_size": img.compressed_size(),
        "layers": img.layers.iter().map(|l| serde_json::json!({
            "name": l.name,
            "digest": l.digest,
            "diff_id": l.diff_id,
            "size": l.size,
            "uncompressed_size": l.uncompressed_size,
            "cached": l.cached,
        })).collect::<Vec<_>>(),
        "layout": out,
        "tar": tar,
        "seconds": seconds,
    })
}

fn print_image(img: &Image, out: &Path, args: &ImageArgs, repo_tag: &str, seconds: f64) {
    println!(
        "{} image ({}): {}",
        img.function,
        img.arch.lambda_name(),
        img.manifest_digest
    );
    for (i, l) in img.layers.iter().enumerate() {
        println!(
            "  layer {}  {:<48} {:>9} ({} unpacked){}",
            i + 1,
            l.name,
            mb(l.size),
            mb(l.uncompressed_size),
            if l.cached { "  cached" } else { "" }
        );
    }
    println!(
        "  total {} compressed, assembled in {seconds:.2} s",
        mb(img.compressed_size())
    );
    println!("  OCI layout: {} (ref {})", out.display(), args.tag);
    if let Some(tar) = &args.tar {
        println!(
            "  docker tar: {} (`docker load -i {}` gives {repo_tag})",
            tar.display(),
            tar.display()
        );
    }
}

/// What `deploy cost` prices: the region, memory, /tmp and architecture (each flag, else the
/// config's value for `--function`), and where the values the flags did not give came from.
struct CostInputs {
    region: String,
    memory_mb: u32,
    ephemeral_mb: u32,
    arch: Arch,
    from: String,
}

/// [`CostInputs`] from the flags, `--config` (else, where the default config is not there,
/// the shipped one). A config that is there but broken, or one named that is not there, is an
/// error, as for every other command.
fn cost_inputs(args: &CostArgs, config_path: &Path, region: Option<&str>) -> Result<CostInputs> {
    use lambda_cnn_deploy::config::DeployConfig;
    let (config, from) = if config_path.exists() || config_path != Path::new(DEFAULT_CONFIG) {
        let c = DeployConfig::load(config_path).with_context(|| {
            format!(
                "cannot price from {}: give --config an existing deploy.toml, or run where \
                 {DEFAULT_CONFIG} is (or nowhere near one) to price the shipped defaults",
                config_path.display()
            )
        })?;
        (c, config_path.display().to_string())
    } else {
        let c = DeployConfig::parse(lambda_cnn_deploy::config::SHIPPED)
            .map_err(|e| anyhow::anyhow!("the shipped deploy.toml does not parse: {e}"))?;
        (c, format!("the shipped {DEFAULT_CONFIG}"))
    };
    let arch = config.arch().map_err(anyhow::Error::msg)?;
    let f = config.function(args.function);
    let mut missing = Vec::new();
    let mut or_config = |flag: Option<u32>, name: &'static str, configured: i32| -> u32 {
        flag.unwrap_or_else(|| {
            missing.push(name);
            u32::try_from(configured).unwrap_or(0)
        })
    };
    let memory_mb = or_config(args.memory_mb, "memory", f.memory_mb);
    let ephemeral_mb = or_config(args.ephemeral_mb, "/tmp", f.ephemeral_mb);
    let arch = args.arch.unwrap_or_else(|| {
        missing.push("architecture");
        arch
    });
    Ok(CostInputs {
        region: region.map_or_else(|| config.region.clone(), str::to_owned),
        memory_mb,
        ephemeral_mb,
        arch,
        from: if missing.is_empty() {
            String::new()
        } else {
            format!(
                "{} from {from} [functions.{}]",
                missing.join(", "),
                args.function.name()
            )
        },
    })
}

fn run_compare(args: CompareArgs, output: lambda_cnn_core::output::Output) -> Result<()> {
    use lambda_cnn_core::tune::compare::{Comparison, Side, Tuned};
    let side = |name: &str, report: &Path, image: &Option<PathBuf>| -> Result<Side> {
        let text = std::fs::read_to_string(report)
            .with_context(|| format!("cannot read the tune report {}", report.display()))?;
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let tuned: Tuned = serde_json::from_str(last).with_context(|| {
            format!(
                "{} is not a `deploy tune --json` report (its last line is read)",
                report.display()
            )
        })?;
        let image_bytes = match image {
            Some(dir) => Some(lambda_cnn_deploy::image::layout_size(dir).with_context(|| {
                format!("cannot size the image at {} (an OCI layout)", dir.display())
            })?),
            None => None,
        };
        Ok(Side {
            name: name.to_owned(),
            function: tuned.function,
            sizes: tuned.sizes,
            image_bytes,
        })
    };
    let comparison = Comparison::new(
        side(&args.ours_name, &args.ours, &args.ours_image)?,
        side(&args.theirs_name, &args.theirs, &args.theirs_image)?,
    );
    if let Some(path) = &args.chart {
        let title = args.title.clone().unwrap_or_else(|| {
            format!(
                "{} and {}: duration and cost by memory size",
                args.theirs_name, args.ours_name
            )
        });
        std::fs::write(path, comparison.svg(&title))
            .with_context(|| format!("cannot write the chart to {}", path.display()))?;
    }
    if output.json {
        println!("{}", serde_json::to_string(&comparison)?);
    } else {
        print!("{comparison}");
    }
    Ok(())
}

fn run_cost(
    args: CostArgs,
    config_path: &Path,
    region: Option<&str>,
    output: lambda_cnn_core::output::Output,
) -> Result<()> {
    use lambda_cnn_core::cost::{self, Usage};
    let CostInputs {
        region,
        memory_mb,
        ephemeral_mb,
        arch,
        from,
    } = cost_inputs(&args, config_path, region)?;
    let region = region.as_str();
    let (prices, note) = cost::prices_for(region);
    if let Some(note) = &note {
        eprintln!("note: {note}");
    }
    if let Some(batch_size) = args.batch_size {
        let images = args.invocations.round() as u64;
        let w = cost::batch_what_if(
            images,
            batch_size,
            args.duration_ms,
            args.concurrency,
            memory_mb,
            arch,
            prices,
        );
        if output.json {
            println!(
                "{}",
                serde_json::json!({"images": images, "batch_size": batch_size, "batch_ms": args.duration_ms,
                    "concurrency": args.concurrency, "memory_mb": memory_mb, "arch": arch.lambda_name(),
                    "batch": w, "prices": {"region": prices.region, "as_of": prices.as_of,
                    "states_as_of": prices.states_as_of, "for_region": region, "note": note}})
            );
        } else {
            println!(
                "{images} images, {batch_size} an invocation of {} ms at {memory_mb} MB ({arch}), {} at once: \
                 ${:.2} (Lambda ${:.2} for {} invocations, Step Functions ${:.2}), {:.0} s of wall time",
                args.duration_ms,
                args.concurrency,
                w.total_usd,
                w.lambda.total,
                w.invocations,
                w.states_usd,
                w.wall_s
            );
            println!(
                "  prices: {} as of {} (Lambda) and {} (Step Functions: Express requests and 64 MB duration), free tier not deducted",
                prices.region, prices.as_of, prices.states_as_of
            );
        }
        return Ok(());
    }
    let api = args.api;
    let mut usage = Usage::what_if(
        args.invocations.round() as u64,
        args.duration_ms,
        memory_mb,
        arch,
    );
    usage.ephemeral_mb = ephemeral_mb;
    usage.api = api;
    let c = cost::cost(&usage, prices);
    if output.json {
        println!(
            "{}",
            serde_json::json!({"usage": {
                "invocations": usage.invocations, "billed_ms": usage.billed_ms,
                "memory_mb": usage.memory_mb, "ephemeral_mb": usage.ephemeral_mb,
                "arch": usage.arch.lambda_name(), "from": from,
            }, "cost": c, "prices": {"region": prices.region, "as_of": prices.as_of, "for_region": region, "note": note}})
        );
    } else {
        println!(
            "{} invocations × {} ms at {} MB ({}): {c}",
            usage.invocations, args.duration_ms, usage.memory_mb, usage.arch
        );
        if !from.is_empty() {
            println!("  {from}");
        }
        println!(
            "  C0 (per request) + C1·t (GB-seconds) + C2·Σ rᵢ·tᵢ (storage, API Gateway); prices: {} as of {}, free tier not deducted",
            prices.region, prices.as_of
        );
    }
    Ok(())
}
