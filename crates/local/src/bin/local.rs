//! `local`: lambda-cnn's local stack (docs/local.md). Parses, calls the library, prints.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use lambda_cnn_local::dataplane::{self, server::Forward, Settings};
use lambda_cnn_local::run::{self, RunRequest};
use lambda_cnn_local::serve::{self, ServeRequest};
use lambda_cnn_local::stack::{Emulator, Tools};
use std::path::PathBuf;

/// lambda-cnn's local stack: the pieces that stand in for Lambda on this machine.
#[derive(Parser)]
#[command(
    version,
    after_help = "docs/local.md explains the local stack; `make run` and `make serve` use these."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Lambda's Invoke API on 127.0.0.1: each version's image, pulled by digest, run under AWS's
    /// Runtime Interface Emulator in Docker with its memory, CPU, timeout and environment.
    ///
    /// Prints `listening on http://127.0.0.1:PORT` once it serves; SIGTERM or Ctrl-C stops it
    /// and removes its containers.
    Dataplane(DataplaneArgs),
    /// The whole pipeline on local stand-ins, no AWS account needed (`make run`): moto, a
    /// registry as ECR and the data plane; build, image, doctor, push, release, api, then real
    /// test digits, a short training run and a summary.
    Run(Box<RunArgs>),
    /// The digit page on this machine (`make serve`): predict under the Runtime API emulator,
    /// until Ctrl-C.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The deploy binary.
    #[arg(long)]
    deploy: PathBuf,
    /// The predict function binary.
    #[arg(long)]
    predict: PathBuf,
    /// The train function binary.
    #[arg(long)]
    train: PathBuf,
    /// Where the stack's state (logs, the registry's blobs: a second run pushes no layer
    /// bytes) and the images go.
    #[arg(long, default_value = ".local")]
    work: PathBuf,
    /// The tools' venv: moto_server, cargo-lambda (`make tools`).
    #[arg(long, default_value = ".venv")]
    venv: PathBuf,
    /// LocalStack's venv (`make localstack`), for `--emulator localstack`.
    #[arg(long, default_value = ".venv-localstack")]
    localstack_venv: PathBuf,
    /// AWS's Runtime Interface Emulator binaries (`make tools`).
    #[arg(long, default_value = ".rie")]
    rie_dir: PathBuf,
    #[arg(long, env = "MNIST_DIR")]
    mnist_dir: PathBuf,
    /// How many real test digits to predict.
    #[arg(long, default_value_t = 10)]
    digits: usize,
    /// How many stored test digits `deploy batch` scores (needs the data plane).
    #[arg(long, value_name = "N", default_value_t = 100)]
    batch: usize,
    /// Also store three objects that must fail alone (not an image, a lying header, over the
    /// size cap), and measure batch sizes.
    #[arg(long)]
    batch_broken: bool,
    /// The architecture the function binaries are built for (default: this machine's).
    #[arg(long, value_parser = ["x86_64", "arm64"], default_value = dataplane::host_arch())]
    arch: String,
    /// The AWS emulator; with localstack, moto serves what it lacks here.
    #[arg(long, env = "AWS_EMULATOR", value_enum, default_value = "moto")]
    emulator: Emulator,
    /// Then `deploy tune` both functions on the data plane (needs Docker), charts into DIR.
    #[arg(long, value_name = "DIR")]
    tune: Option<PathBuf>,
    /// At the end, release predict with this model file (one `lambda-cnn import` wrote) as
    /// `make deploy` would: uploaded, smoke-tested with its stored sample on the data plane
    /// (needs Docker), and its page fetched through predict:live.
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// The seed's Python/TensorFlow function as images (make seed-images): released as stage
    /// `seed` on the same data plane, each smoke-tested as ours are.
    #[arg(long, value_name = "DIR")]
    seed_images: Option<PathBuf>,
    /// With --seed-images: then tune both predicts and both trains at the same memory sizes and
    /// write the comparison (tables, charts) into DIR/seed.md and the README's Performance.
    #[arg(long, value_name = "DIR", requires = "seed_images")]
    bench_seed: Option<PathBuf>,
}

#[derive(clap::Args)]
struct DataplaneArgs {
    /// Where to serve the Invoke API (0: a free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The Lambda control plane (the AWS emulator), http://127.0.0.1:PORT.
    #[arg(long)]
    lambda_endpoint: String,
    /// CloudWatch Logs (default: --lambda-endpoint).
    #[arg(long)]
    logs_endpoint: Option<String>,
    /// AWS_ENDPOINT_URL inside the functions (default: --lambda-endpoint).
    #[arg(long)]
    function_endpoint: Option<String>,
    /// Relay every request that is not an Invoke to this endpoint (the AWS emulator).
    #[arg(long)]
    forward: Option<String>,
    /// Relay this service's requests (by their signature's scope, e.g. s3) to URL instead.
    #[arg(long, value_name = "SERVICE=URL", requires = "forward")]
    forward_service: Vec<String>,
    /// The local registry, 127.0.0.1:PORT, that stands for ECR.
    #[arg(long)]
    registry: String,
    #[arg(long, default_value = "AWS")]
    registry_user: String,
    #[arg(long)]
    registry_password: String,
    /// Holds aws-lambda-rie-x86_64 and aws-lambda-rie-arm64 (`make tools` puts them in .rie).
    #[arg(long, default_value = ".rie")]
    rie_dir: PathBuf,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// For the Docker client's registry login.
    #[arg(long)]
    state_dir: PathBuf,
    /// The most execution environments running at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    max_environments: u16,
    /// An environment idle this long is stopped.
    #[arg(long, default_value_t = 300)]
    idle_seconds: u64,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The release-built predict binary.
    #[arg(long)]
    predict: PathBuf,
    /// The cargo-lambda binary (`make tools` installs it into .venv).
    #[arg(long)]
    cargo_lambda: PathBuf,
    #[arg(long, default_value = "model-weights/mnist-cnn.safetensors")]
    weights: PathBuf,
    /// Port to serve on (a free one if taken).
    #[arg(long, env = "PORT", default_value_t = 9000)]
    port: u16,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            lambda_cnn_local::errln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Dataplane(a) => {
            let forward = match a.forward {
                Some(default) => {
                    let mut f = Forward {
                        default: default.trim_end_matches('/').to_owned(),
                        ..Forward::default()
                    };
                    for pair in &a.forward_service {
                        f.add_service(pair).map_err(anyhow::Error::msg)?;
                    }
                    Some(f)
                }
                None => None,
            };
            std::fs::create_dir_all(&a.state_dir)
                .with_context(|| format!("cannot create {}", a.state_dir.display()))?;
            let settings = Settings {
                function_endpoint: a
                    .function_endpoint
                    .unwrap_or_else(|| a.lambda_endpoint.clone()),
                lambda_endpoint: a.lambda_endpoint,
                logs_endpoint: a.logs_endpoint,
                registry: a.registry,
                registry_user: a.registry_user,
                registry_password: a.registry_password,
                rie_dir: std::path::absolute(&a.rie_dir).unwrap_or(a.rie_dir),
                region: a.region,
                state_dir: a.state_dir,
                max_environments: usize::from(a.max_environments),
                idle_seconds: a.idle_seconds,
                cpus: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
            };
            dataplane::run(settings, a.port, forward).await
        }
        Cmd::Run(a) => {
            let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
            run::run(RunRequest {
                root: std::env::current_dir().context("no current directory")?,
                work: absolute(a.work),
                deploy: absolute(a.deploy),
                predict: absolute(a.predict),
                train: absolute(a.train),
                tools: Tools {
                    venv: absolute(a.venv),
                    localstack_venv: absolute(a.localstack_venv),
                    rie_dir: absolute(a.rie_dir),
                    local: std::env::current_exe().context("cannot find this binary")?,
                },
                mnist_dir: absolute(a.mnist_dir),
                digits: a.digits,
                batch: a.batch,
                batch_broken: a.batch_broken,
                arch: a.arch,
                emulator: a.emulator,
                tune: a.tune.map(absolute),
                model: a.model.map(absolute),
                seed_images: a.seed_images.map(absolute),
                bench_seed: a.bench_seed.map(absolute),
            })
            .await
        }
        Cmd::Serve(a) => {
            let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
            serve::serve(ServeRequest {
                predict: absolute(a.predict),
                cargo_lambda: absolute(a.cargo_lambda),
                weights: absolute(a.weights),
                port: a.port,
                root: std::env::current_dir().context("no current directory")?,
            })
            .await
        }
    }
}
