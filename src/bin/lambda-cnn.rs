//! `lambda-cnn`: train, evaluate and run the seed's MNIST CNN locally.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lambda_cnn::card::ModelCard;
use lambda_cnn::data::{self, SplitKind};
use lambda_cnn::model::Cnn;
use lambda_cnn::output::Output;
use lambda_cnn::predict::{image_to_pixels, predict};
use lambda_cnn::train::{self, EpochMetrics, OptimizerKind, TrainConfig, TrainObserver};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use lambda_cnn::SHIPPED_WEIGHTS;

#[derive(Parser)]
#[command(
    name = "lambda-cnn",
    version = lambda_cnn::VERSION,
    about = "Train, evaluate and run the seed's MNIST CNN (candle, with our own SGD and Adam)",
    long_about = "Train, evaluate and run the seed's MNIST CNN: Conv2d(1→32, 3×3) + ReLU → MaxPool 2×2 → \
Dense 128 + ReLU → Dense 10, trained with our own SGD or Adam.\n\n\
The MNIST files (the four standard IDX files, raw or .gz) are read from --mnist-dir or MNIST_DIR; \
`make data` downloads them into data/mnist. Weights are safetensors with PyTorch's names and layouts.",
    after_help = "Examples:\n  lambda-cnn train --epochs 1 --limit 2000 --mnist-dir ../shared/mnist --out /tmp/quick.safetensors\n  \
lambda-cnn eval --weights model-weights/mnist-cnn.safetensors --mnist-dir ../shared/mnist --json\n  \
lambda-cnn predict --weights model-weights/mnist-cnn.safetensors digit.png"
)]
struct Cli {
    /// Print the result as one line of JSON instead of text: train's metrics, weights and
    /// their SHA-256 (and per-epoch figures); eval's accuracy and loss; bench's figures.
    /// `predict` always prints JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a fresh model on MNIST, evaluate it on the 10k test images, save the weights and
    /// a model card (NAME.json) beside them.
    Train(TrainArgs),
    /// Evaluate saved weights on the 10k MNIST test images.
    Eval(EvalArgs),
    /// Predict the digit in a PNG or JPEG image: a photo or a drawing, any size, dark ink on
    /// light or light on dark (scaled and centred as MNIST is); a 28×28 MNIST-like image is
    /// used as it is.
    Predict(PredictArgs),
    /// Import a CNN trained elsewhere (Keras .keras/.h5, ONNX, a PyTorch state dict) as a
    /// lambda-cnn model file: one safetensors file holding the weights and their description.
    #[command(after_help = IMPORT_HELP)]
    Import(ImportArgs),
    /// Check that a folder holds the four MNIST files, intact (shapes and SHA-256).
    CheckData(DataArgs),
    /// Measure training throughput, prediction latency and throughput, cold start and peak
    /// memory on this machine (what `make bench` prints).
    Bench(BenchArgs),
    /// Load the weights and exit: what `bench` times as exec-to-ready.
    #[command(hide = true)]
    ReadyProbe(ReadyProbeArgs),
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The weights used for the prediction figures.
    #[arg(long, env = "MODEL_PATH", default_value = SHIPPED_WEIGHTS)]
    weights: PathBuf,
    /// Timed training steps (batch 32, Adam), after the warm-up.
    #[arg(long, default_value_t = 600)]
    steps: usize,
    /// Untimed training steps first.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Only the training figures (what the peer comparison needs).
    #[arg(long)]
    train_only: bool,
    /// Only the prediction figures of this model file (one `lambda-cnn import` wrote, or the
    /// seed's weights): one image and batches of 256, on MNIST's test images for a 28×28×1
    /// model, else on fixed pseudo-random inputs.
    #[arg(long, value_name = "FILE", conflicts_with = "train_only")]
    model: Option<PathBuf>,
}

#[derive(Args)]
struct ReadyProbeArgs {
    #[arg(long)]
    weights: PathBuf,
}

#[derive(Args)]
struct DataArgs {
    /// Folder with the four MNIST IDX files (raw or .gz).
    #[arg(long, env = "MNIST_DIR", default_value = lambda_cnn::data::DEFAULT_DIR)]
    mnist_dir: PathBuf,
}

#[derive(Args)]
struct TrainArgs {
    /// Passes over the training set.
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    epochs: usize,
    /// Samples per optimizer step.
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    batch_size: usize,
    #[arg(long, value_enum, default_value_t = TrainConfig::default().optimizer)]
    optimizer: OptimizerKind,
    /// Learning rate.
    #[arg(long, default_value_t = TrainConfig::default().learning_rate)]
    lr: f64,
    /// Momentum (SGD only; 0 is the seed's plain SGD).
    #[arg(long, default_value_t = TrainConfig::default().momentum)]
    momentum: f64,
    /// Seeds the initial weights and the shuffling: the same seed gives the same model.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
    /// Train on the first N training samples only (for quick runs).
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    data: DataArgs,
    /// Where to write the weights; the model card goes beside them as NAME.json.
    #[arg(long, default_value = "mnist-cnn.safetensors")]
    out: PathBuf,
}

const IMPORT_HELP: &str = "\
What the file cannot say comes from flags: how raw pixel values (0..=255) are scaled before the \
model's first layer (default x/255, as the seed and torchvision's ToTensor do; --input-scale none \
when the model scales them itself, as a Keras Rescaling layer does; --mean/--std for \
torchvision's Normalize), and the class labels (default 0, 1, ...).

A PyTorch state dict holds no layers: describe them with --layers FILE.json, e.g.
  {\"input\": {\"height\": 28, \"width\": 28, \"channels\": 1},
   \"layers\": [{\"conv2d\": {\"from\": \"0\", \"stride\": 1, \"padding\": 1}}, {\"batch_norm\": {\"from\": \"1\"}},
              \"relu\", {\"max_pool2d\": {\"kernel\": 2}}, \"dropout\", \"flatten\",
              {\"linear\": {\"from\": \"5\"}}, \"softmax\"]}
where \"from\" is the module's prefix in the state dict (\"features.0\" for features.0.weight).

Supported layers: Conv2d (no dilation, no groups), MaxPool2d, AvgPool2d (no padding), global \
average pooling, BatchNorm (folded into the layer before), Dropout (dropped), Flatten, \
Dense/Linear, ReLU, sigmoid, tanh, softmax, linear, Keras Rescaling. Anything else is refused \
with the layer and where it is.

Examples:
  lambda-cnn import model.keras --out my-model.safetensors
  lambda-cnn import model.onnx --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --labels cat,dog --out pets.safetensors
  lambda-cnn import state.pt --layers layers.json --out my-model.safetensors
  lambda-cnn predict --model my-model.safetensors photo.png";

#[derive(Args)]
struct ImportArgs {
    /// The model: .keras, .h5, .onnx, or a state dict (.pt, .safetensors) with --layers.
    file: PathBuf,
    /// Where to write the lambda-cnn model file.
    #[arg(long)]
    out: PathBuf,
    /// How raw pixel values reach the model: `unit` is x/255, `none` leaves them 0..=255.
    #[arg(long, value_enum, default_value_t = ScaleArg::Unit, conflicts_with_all = ["mean", "std"])]
    input_scale: ScaleArg,
    /// Per-channel means of x/255 to subtract (torchvision's Normalize); needs --std.
    #[arg(long, value_delimiter = ',', requires = "std")]
    mean: Option<Vec<f32>>,
    /// Per-channel standard deviations to divide by, after --mean.
    #[arg(long, value_delimiter = ',', requires = "mean")]
    std: Option<Vec<f32>>,
    /// The class labels in output order, comma-separated (default 0, 1, ...).
    #[arg(long, value_delimiter = ',')]
    labels: Option<Vec<String>>,
    /// What an uploaded image goes through (default: digit for 28×28 grey models, else resize).
    #[arg(long, value_enum)]
    preprocess: Option<lambda_cnn::net::Preprocess>,
    /// A state dict's layers (JSON; see below).
    #[arg(long)]
    layers: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ScaleArg {
    Unit,
    None,
}

#[derive(Args)]
struct EvalArgs {
    /// The weights file (safetensors).
    #[arg(long, env = "MODEL_PATH", default_value = SHIPPED_WEIGHTS)]
    weights: PathBuf,
    /// An imported model (see `import`) instead of the seed's weights: it must read 28×28 grey
    /// images and answer 10 classes in digit order.
    #[arg(long, conflicts_with = "weights")]
    model: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Args)]
struct PredictArgs {
    /// The weights file (safetensors).
    #[arg(long, env = "MODEL_PATH", default_value = SHIPPED_WEIGHTS)]
    weights: PathBuf,
    /// An imported model (see `import`): answers its label, class and probabilities.
    #[arg(long, conflicts_with = "weights")]
    model: Option<PathBuf>,
    /// A PNG or JPEG file, or - to read the image from standard input.
    image: PathBuf,
}

fn main() -> ExitCode {
    lambda_cnn::runtime::init_threads();
    lambda_cnn::errors::init_stderr_logging();
    let cli = Cli::parse();
    let out = Output { json: cli.json };
    let result = match cli.command {
        Command::Train(args) => run_train(args, out),
        Command::Eval(args) => run_eval(args, out),
        Command::Predict(args) => run_predict(args),
        Command::Import(args) => run_import(args, out),
        Command::CheckData(args) => run_check_data(args, out),
        Command::Bench(args) => run_bench(args, out),
        Command::ReadyProbe(args) => load_weights(&args.weights).map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", lambda_cnn::errors::one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// What `check-data` found.
#[derive(serde::Serialize)]
struct DataCheck {
    mnist_dir: PathBuf,
    train_images: usize,
    test_images: usize,
    checksums_verified: bool,
    seconds: f64,
}

impl std::fmt::Display for DataCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MNIST in {} is intact: {} training and {} test images, checksums verified ({:.1} s)",
            self.mnist_dir.display(),
            self.train_images,
            self.test_images,
            self.seconds
        )
    }
}

fn run_check_data(args: DataArgs, out: Output) -> Result<()> {
    let start = Instant::now();
    let mnist = data::load(&args.mnist_dir)
        .with_context(|| format!("MNIST in {} is not usable", args.mnist_dir.display()))?;
    out.print(&DataCheck {
        mnist_dir: args.mnist_dir.clone(),
        train_images: mnist.train.len(),
        test_images: mnist.test.len(),
        checksums_verified: true,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// A bar per epoch on a terminal; plain lines (a few per epoch) otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    terminal: bool,
    batches: usize,
}

impl TrainObserver for Progress {
    fn epoch_started(&mut self, epoch: usize, epochs: usize, batches: usize) {
        self.batches = batches;
        if self.terminal {
            let bar =
                ProgressBar::new(batches as u64).with_prefix(format!("epoch {epoch}/{epochs}"));
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} batches · loss {msg} · {per_sec} · eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            self.bar = Some(bar);
        } else {
            eprintln!("epoch {epoch}/{epochs}: {batches} batches");
        }
    }

    fn batch_done(&mut self, batch: usize, loss: f32) {
        if let Some(bar) = &self.bar {
            bar.set_position(batch as u64);
            if batch.is_multiple_of(20) {
                bar.set_message(format!("{loss:.4}"));
            }
        } else if self.batches >= 4
            && batch.is_multiple_of(self.batches / 4)
            && batch < self.batches
        {
            eprintln!("  {batch}/{} batches, loss {loss:.4}", self.batches);
        }
    }

    fn epoch_done(&mut self, m: &EpochMetrics, epochs: usize) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        eprintln!(
            "epoch {}/{epochs}: train loss {:.4}, {:.1} s, {:.0} samples/s",
            m.epoch, m.train_loss, m.seconds, m.samples_per_second
        );
    }
}

fn run_train(args: TrainArgs, out: Output) -> Result<()> {
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        optimizer: args.optimizer,
        learning_rate: args.lr,
        momentum: args.momentum,
        seed: args.seed,
        limit: args.limit,
    };
    config.validate()?;
    let dir = &args.data.mnist_dir;
    let mnist =
        data::load(dir).with_context(|| format!("cannot load MNIST from {}", dir.display()))?;
    let mut progress = Progress {
        bar: None,
        terminal: std::io::stderr().is_terminal(),
        batches: 0,
    };
    let (model, metrics) = train::train(&mnist.train, &mnist.test, &config, &mut progress)?;
    let sha = model
        .save(&args.out)
        .with_context(|| format!("cannot save the weights to {}", args.out.display()))?;
    let card_path = ModelCard::path_for(&args.out);
    ModelCard::new(&config, &metrics, &args.out, &sha)
        .write(&card_path)
        .with_context(|| format!("cannot write the model card {}", card_path.display()))?;
    out.print(&train::TrainOutcome {
        metrics,
        weights: args.out.clone(),
        weights_sha256: sha,
        card: card_path,
    })?;
    Ok(())
}

fn load_weights(path: &Path) -> Result<Cnn> {
    let (model, _) = Cnn::load(path).with_context(|| {
        format!(
            "cannot load the weights {} (train some with `lambda-cnn train` or `make train`)",
            path.display()
        )
    })?;
    Ok(model)
}

fn load_model(path: &Path) -> Result<lambda_cnn::net::Network> {
    let (network, _) = lambda_cnn::net::file::load(path).with_context(|| {
        format!(
            "cannot load the model {} (make one with `lambda-cnn import`)",
            path.display()
        )
    })?;
    Ok(network)
}

/// What `import` made.
#[derive(serde::Serialize)]
struct ImportOutcome {
    model: PathBuf,
    sha256: String,
    source: String,
    summary: String,
    parameters: usize,
    multiply_adds: u64,
    seed_kernels: bool,
    labels: Vec<String>,
}

impl std::fmt::Display for ImportOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "imported {} → {}", self.source, self.model.display())?;
        writeln!(f, "  {}", self.summary)?;
        writeln!(
            f,
            "  {} parameters, {} multiply-adds per image{}",
            self.parameters,
            self.multiply_adds,
            if self.seed_kernels {
                ", runs on the seed's kernels"
            } else {
                ""
            }
        )?;
        writeln!(f, "  labels: {}", self.labels.join(", "))?;
        write!(f, "  sha256 {}", self.sha256)
    }
}

fn run_import(args: ImportArgs, out: Output) -> Result<()> {
    use lambda_cnn::import::{self, InputScale, Options};
    let scale = match (args.mean, args.std, args.input_scale) {
        (Some(mean), Some(std), _) => InputScale::Normalize { mean, std },
        (_, _, ScaleArg::None) => InputScale::None,
        _ => InputScale::Unit,
    };
    let options = Options {
        scale,
        labels: args.labels,
        preprocess: args.preprocess,
        layers: args.layers,
    };
    let imported = import::import(&args.file, &options)
        .with_context(|| format!("cannot import {}", args.file.display()))?;
    let sha = lambda_cnn::net::file::save(&args.out, &imported.spec, &imported.tensors)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let (network, _) = lambda_cnn::net::file::load(&args.out)
        .with_context(|| format!("the model written to {} does not load", args.out.display()))?;
    let plan = network.plan();
    out.print(&ImportOutcome {
        model: args.out.clone(),
        sha256: sha,
        source: imported.spec.source.clone(),
        summary: imported.spec.summary(),
        parameters: plan.params,
        multiply_adds: plan.macs,
        seed_kernels: network.is_seed_layout(),
        labels: imported.spec.labels.clone(),
    })
}

fn run_eval(args: EvalArgs, out: Output) -> Result<()> {
    let dir = &args.data.mnist_dir;
    let test = data::load_split(dir, SplitKind::Test)
        .with_context(|| format!("cannot load the MNIST test set from {}", dir.display()))?;
    if let Some(path) = &args.model {
        let network = load_model(path)?;
        return out.print(&lambda_cnn::net::eval::on_mnist(&network, &test)?);
    }
    let model = load_weights(&args.weights)?;
    let m = train::evaluate(&model, &test)?;
    out.print(&m)
}

fn run_predict(args: PredictArgs) -> Result<()> {
    let bytes = if args.image == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read the image from standard input")?;
        if buf.is_empty() {
            bail!("no image on standard input: pipe a PNG or JPEG in, or give a file name");
        }
        buf
    } else {
        std::fs::read(&args.image)
            .with_context(|| format!("cannot read the image {}", args.image.display()))?
    };
    if let Some(path) = &args.model {
        let network = load_model(path)?;
        let raw = lambda_cnn::net::input::image_to_input(&bytes, &network.spec().input)
            .with_context(|| format!("cannot use {} as input", args.image.display()))?;
        let answer = lambda_cnn::net::Answer::of(&network, &raw)?;
        println!("{}", serde_json::to_string(&answer)?);
        return Ok(());
    }
    let pixels = image_to_pixels(&bytes)
        .with_context(|| format!("cannot use {} as input", args.image.display()))?;
    let model = load_weights(&args.weights)?;
    let prediction = predict(&model, &pixels)?
        .pop()
        .context("the model returned no prediction")?;
    println!("{}", serde_json::to_string(&prediction)?);
    Ok(())
}

/// `bench --model FILE`: one model's inference figures.
fn bench_model(path: &Path, mnist_dir: &Path, out: Output) -> Result<()> {
    use lambda_cnn::bench;
    let (network, _) = lambda_cnn::net::file::load(path).with_context(|| {
        format!(
            "cannot load the model {} (write one with `lambda-cnn import`)",
            path.display()
        )
    })?;
    // MNIST only for a digit-sized model, and only when it is there: other models need none.
    let test = (network.spec().input_len() == lambda_cnn::data::IMAGE_PIXELS)
        .then(|| data::load(mnist_dir).ok())
        .flatten();
    let (raw, inputs) = bench::model_inputs(&network, test.as_ref().map(|m| &m.test));
    eprintln!("timing {} ({inputs})…", network.spec().summary());
    let predict = bench::network_speed(&network, &raw, 3000, 40)?;
    out.print(&bench::ModelBenchReport {
        model: path.display().to_string(),
        summary: network.spec().summary(),
        seed_kernels: network.is_seed_layout(),
        inputs: inputs.to_owned(),
        predict,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu: lambda_cnn::arch::cpu_model(),
        measured_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    })
}

fn run_bench(args: BenchArgs, out: Output) -> Result<()> {
    use lambda_cnn::bench;
    if let Some(path) = &args.model {
        return bench_model(path, &args.data.mnist_dir, out);
    }
    let dir = &args.data.mnist_dir;
    let mnist =
        data::load(dir).with_context(|| format!("cannot load MNIST from {}", dir.display()))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_default();
    let isa = lambda_cnn::simd::Isa::detect();
    eprintln!(
        "training {} steps after {} warm-up ({cores} cores, {threads} threads, {isa} kernels)…",
        args.steps, args.warmup
    );
    let train = bench::train_throughput(&mnist.train, args.warmup, args.steps)?;
    let mut report = bench::BenchReport {
        train,
        warmup: args.warmup,
        cores,
        isa: isa.to_string(),
        cpu: lambda_cnn::arch::cpu_model(),
        measured_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        predict: None,
        cold_start_ms: None,
    };
    if !args.train_only {
        let model = load_weights(&args.weights)?;
        report.predict = Some(bench::predict_speed(&model, &mnist.test, 3000, 40)?);
        let exe =
            std::env::current_exe().context("cannot find this executable to time its start")?;
        let mut cold = Vec::new();
        for _ in 0..15 {
            let start = Instant::now();
            let status = std::process::Command::new(&exe)
                .args(["ready-probe", "--weights"])
                .arg(&args.weights)
                .status()
                .context("cannot start the ready probe")?;
            if !status.success() {
                bail!("the ready probe failed ({status})");
            }
            cold.push(start.elapsed().as_secs_f64() * 1e3);
        }
        report.cold_start_ms = Some(bench::median(cold));
    }
    out.print(&report)?;
    Ok(())
}
