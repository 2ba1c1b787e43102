//! `make run`: the whole pipeline on local stand-ins, no AWS account needed.
//!
//! Starts the [stack](crate::stack) on 127.0.0.1, builds both images and runs `deploy doctor,
//! push, release, api` against it. Where Docker works, invocations go to the local data plane:
//! the smoke tests, the digit predictions and the training run go to what the `live` alias
//! points at, as deployed, with its memory, CPU and timeout. Without Docker (or for an image of
//! the other architecture — arm64 on x86_64 — which runs under bubblewrap with qemu-user), the
//! locally built images run under bubblewrap against the Runtime API emulator: the same code,
//! but memory, timeout and the released version make no difference there, and the summary says
//! so. Sends real test digits and a short training run, prints a summary, and stops everything
//! it started. `make tune`, `make batch` and `make bench-seed` are this job with more at the end.

mod batch;
pub mod deploy_cli;
pub mod invoke;
mod seed;

use crate::dataplane::host_arch;
use crate::digits;
use crate::stack::{self, lambda_name, Emulator, Runner, Stack, Tools, NAMES};
use anyhow::{bail, Context as _};
use deploy_cli::DeployCli;
use invoke::invoke;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// What `local run` was asked.
pub struct RunRequest {
    /// The project: its infra/deploy.toml, IAM policies, event fixtures, README.
    pub root: PathBuf,
    /// Where the stack keeps its state (`stack/`: logs, the registry's blobs) and the images
    /// (`images/`).
    pub work: PathBuf,
    pub deploy: PathBuf,
    pub predict: PathBuf,
    pub train: PathBuf,
    pub tools: Tools,
    pub mnist_dir: PathBuf,
    /// How many test digits to predict.
    pub digits: usize,
    /// How many stored digits `deploy batch` scores.
    pub batch: usize,
    /// Also three objects that must fail alone, and the batch sizes measured.
    pub batch_broken: bool,
    pub arch: String,
    pub emulator: Emulator,
    /// Then `deploy tune` both functions, charts into this folder.
    pub tune: Option<PathBuf>,
    /// At the end, release predict with this model file.
    pub model: Option<PathBuf>,
    /// The seed's images, released as stage `seed`.
    pub seed_images: Option<PathBuf>,
    /// With `seed_images`: compare them with ours, tables and charts into this folder.
    pub bench_seed: Option<PathBuf>,
}

pub fn say(msg: &str) {
    crate::outln!("==> {msg}");
}

/// Whether Docker answers here (and is not turned off with `LAMBDA_CNN_NO_DOCKER`).
pub async fn docker_works() -> bool {
    if std::env::var_os("LAMBDA_CNN_NO_DOCKER").is_some() {
        return false;
    }
    let info = tokio::process::Command::new("docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(20), info).await,
        Ok(Ok(s)) if s.success()
    )
}

/// Checks the request, starts the stack, runs the job, stops the stack.
pub async fn run(req: RunRequest) -> anyhow::Result<()> {
    if let Some(model) = &req.model {
        if !model.is_file() {
            bail!(
                "MODEL={}: no such file (make one with `lambda-cnn import`; see docs/import.md)",
                model.display()
            );
        }
    }
    if req.bench_seed.is_some() && req.seed_images.is_none() {
        bail!("--bench-seed needs --seed-images (make bench-seed passes both)");
    }
    // Docker runs only this machine's architecture here (no binfmt handlers are registered).
    let use_docker = req.arch == host_arch() && docker_works().await;
    if req.seed_images.is_some() && !use_docker {
        bail!("the seed's images run on the local data plane, which needs Docker (`docker info` must work)");
    }
    if req.tune.is_some() && !use_docker {
        bail!(
            "make tune needs the local data plane, which runs images in Docker (of this machine's \
             architecture, {}): `docker info` must work; without it, memory buys nothing locally",
            host_arch()
        );
    }
    if req.model.is_some() && !use_docker {
        bail!(
            "MODEL= needs the local data plane, which runs each released version in Docker with its \
             MODEL_S3_URI (Docker, and images of this machine's architecture); without it, serve the \
             file with `MODEL_PATH=FILE cargo lambda watch`"
        );
    }
    let state = req.work.join("stack");
    std::fs::create_dir_all(&state)
        .with_context(|| format!("cannot create {}", state.display()))?;
    let runner = if use_docker {
        Runner::DataPlane
    } else {
        Runner::Sandbox
    };
    let mut stack = Stack::new(&state, runner)?;
    let interrupted = crate::procs::interrupted()?;
    let outcome = tokio::select! {
        done = async {
            stack.start(&req.tools, req.emulator, say).await?;
            pipeline(&req, &mut stack).await
        } => done,
        () = interrupted => Err(anyhow::anyhow!("interrupted")),
    };
    stack.stop().await;
    say("stopped the stand-ins");
    outcome
}

/// `deploy release` on this stack: the images built here, pushed to its registry, each new
/// version smoke-tested through `rt`; `narrow` picks what is released (`--function`, `--model`).
fn release_args<'a>(
    registry: &'a str,
    images: &'a str,
    rt: &'a str,
    narrow: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec!["release"];
    args.extend_from_slice(narrow);
    args.extend([
        "--registry",
        registry,
        "--images",
        images,
        "--invoke-endpoint",
        rt,
        "--json",
    ]);
    args
}

/// The API Gateway (HTTP API) event a request to the page or to POST /predict makes.
fn api_event(root: &Path) -> anyhow::Result<Value> {
    let path = root.join("tests/fixtures/events/apigw-v2-predict.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// The event as `GET /`: the digit page.
fn page_event(template: &Value) -> Value {
    let mut get = template.clone();
    get["routeKey"] = json!("GET /");
    get["rawPath"] = json!("/");
    get["body"] = Value::Null;
    get["requestContext"]["routeKey"] = json!("GET /");
    get["requestContext"]["http"]["method"] = json!("GET");
    get["requestContext"]["http"]["path"] = json!("/");
    if let Some(headers) = get["headers"].as_object_mut() {
        headers.remove("content-length");
        headers.remove("content-type");
    }
    get
}

/// The event as `POST /predict` with `body` of `content_type`.
fn predict_event(template: &Value, body: Value, base64: bool, content_type: &str) -> Value {
    let mut event = template.clone();
    event["body"] = body;
    event["isBase64Encoded"] = json!(base64);
    event["headers"]["content-type"] = json!(content_type);
    event
}

async fn pipeline(req: &RunRequest, stack: &mut Stack) -> anyhow::Result<()> {
    let images = req.work.join("images");
    let use_docker = stack.runner == Runner::DataPlane;
    let rt = stack.runtime_endpoint();
    let mnist = req.mnist_dir.to_string_lossy().into_owned();

    for f in ["predict", "train"] {
        say(&format!("building the {f} image"));
        let binary = if f == "predict" {
            &req.predict
        } else {
            &req.train
        };
        let out = images.join(f);
        let tar = images.join(format!("{f}.tar"));
        let image_cli = DeployCli {
            bin: req.deploy.clone(),
            config: req.root.join("infra/deploy.toml"),
            env: vec![],
            root: req.root.clone(),
        };
        image_cli
            .last_json(&[
                "image",
                "--function",
                f,
                "--binary",
                &binary.to_string_lossy(),
                "--out",
                &out.to_string_lossy(),
                "--tar",
                &tar.to_string_lossy(),
                "--mnist-dir",
                &mnist,
                "--json",
            ])
            .await?;
    }
    if !use_docker {
        start_sandboxes(req, stack, &images).await?;
    }

    let deploy = DeployCli {
        bin: req.deploy.clone(),
        config: deploy_cli::write_config(&req.root, &stack.state, &req.arch)?,
        env: stack.aws_env(),
        root: req.root.clone(),
    };
    let registry = stack.registry();
    let images_arg = images.to_string_lossy().into_owned();
    say("deploy doctor (what would stop a deploy in this account; it creates nothing)");
    let mut doctor = deploy.clone();
    doctor.env.push(("MNIST_DIR".into(), mnist.clone()));
    doctor.show(&["doctor", "--images", &images_arg]).await?;
    say("deploy push (to the local registry; ECR's control plane is moto)");
    let pushed = deploy
        .json_lines(&[
            "push",
            "--registry",
            &registry,
            "--images",
            &images_arg,
            "--json",
        ])
        .await?;
    say(&format!(
        "deploy release (smoke tests run each new version {}",
        if use_docker {
            "through the data plane)"
        } else {
            "'s code through the Runtime API emulator)"
        }
    ));
    let released = deploy
        .json_lines(&release_args(&registry, &images_arg, &rt, &[]))
        .await?;
    say("deploy api");
    let api = deploy.last_json(&["api", "--json"]).await?;
    let rest = if stack.localstack_port.is_some() {
        say("deploy api --rest (a REST API, on LocalStack's API Gateway v1)");
        Some(deploy.last_json(&["api", "--rest", "--json"]).await?)
    } else {
        None
    };

    let template = api_event(&req.root)?;
    let get = page_event(&template);
    // Through the data plane, the `live` alias: the released version, as API Gateway calls it.
    let live = use_docker.then_some("live");
    let predict_name = lambda_name("predict");
    let page_bytes = if use_docker {
        say(&format!(
            "the digit page: GET / through API Gateway's event to {predict_name}:live"
        ));
        let page = invoke(&rt, predict_name, &get, live).await?.answer;
        check_page(&page, "GET /")?
    } else {
        // The digit page, from the built image, through the emulator's Function URL front door.
        let url = format!("{rt}/lambda-url/{predict_name}/");
        say(&format!("the digit page: {url}"));
        let answer = crate::http::request(
            hyper::Method::GET,
            &url,
            &[],
            bytes::Bytes::new(),
            std::time::Duration::from_secs(60),
        )
        .await?;
        let kind = answer.header("content-type").unwrap_or_default();
        if answer.status != 200 || !kind.starts_with("text/html") {
            bail!("{url} answered {} {kind}", answer.status);
        }
        answer.body.len()
    };

    say(&format!(
        "predicting {} real test digits through the deployed predict code{}",
        req.digits,
        if live.is_some() {
            " (predict:live)"
        } else {
            ""
        }
    ));
    let (mut right, mut durations) = (0, Vec::new());
    let mut predict_version = String::new();
    for (i, (pixels, label)) in digits::test_digits(&req.mnist_dir, req.digits)?
        .iter()
        .enumerate()
    {
        let body = json!({"pixels": pixels}).to_string();
        let event = predict_event(&template, json!(body), false, "application/json");
        let invoked = invoke(&rt, predict_name, &event, live).await?;
        let answer: Value = invoked
            .answer
            .get("body")
            .and_then(Value::as_str)
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        let Some(digit) = answer.get("digit").and_then(Value::as_u64) else {
            bail!(
                "predict answered test digit {i} without a digit: {}",
                invoked.answer
            );
        };
        durations.push(invoked.ms);
        predict_version = invoked.version;
        right += usize::from(digit == u64::from(*label));
        crate::outln!(
            "    test digit {i}: label {label}, predicted {digit} ({:.1} ms)",
            invoked.ms
        );
    }
    say(&format!(
        "a short training run through the deployed train code (epochs 1, limit 2000){}",
        if live.is_some() { " (train:live)" } else { "" }
    ));
    let trained = invoke(
        &rt,
        lambda_name("train"),
        &json!({"epochs": 1, "limit": 2000}),
        live,
    )
    .await?;

    let scored = if use_docker {
        let scored = batch::score_stored_digits(req, &deploy, stack).await?;
        if req.batch_broken {
            batch::measure_batch_sizes(req, &deploy, &rt, &scored, &template).await?;
        }
        Some(scored)
    } else {
        None
    };

    let imported = match &req.model {
        Some(model) => {
            let model_arg = model.to_string_lossy().into_owned();
            say(&format!(
                "deploy release --function predict --model {model_arg} (uploaded under its SHA-256; the new \
                 version must answer the sample stored at import, on the data plane)"
            ));
            let mut release = deploy
                .json_lines(&release_args(
                    &registry,
                    &images_arg,
                    &rt,
                    &["--function", "predict", "--model", &model_arg],
                ))
                .await?
                .pop()
                .context("deploy release printed no result")?;
            say(&format!(
                "the imported model's page: GET / through {predict_name}:live"
            ));
            let page = invoke(&rt, predict_name, &get, live).await?.answer;
            if page.get("statusCode") != Some(&json!(200)) {
                bail!("the imported model's page answered {}", page["statusCode"]);
            }
            release["page_bytes"] = json!(page
                .get("body")
                .and_then(Value::as_str)
                .map_or(0, |b| b.chars().count()));
            Some(release)
        }
        None => None,
    };

    let mean_ms = durations.iter().sum::<f64>() / durations.len().max(1) as f64;
    let cost = deploy
        .last_json(&[
            "cost",
            "--invocations",
            "1000000",
            "--duration-ms",
            &format!("{mean_ms:.2}"),
            "--memory-mb",
            "1024",
            "--arch",
            &req.arch,
            "--json",
        ])
        .await?;
    let ran = if use_docker {
        format!(
            "version {predict_version} of predict and {} of train (what live points at), pulled by digest, \
             under AWS's RIE in Docker with their configured memory and CPU",
            trained.version
        )
    } else {
        "the images as built, under bubblewrap: memory, timeout and the released version not emulated".into()
    };
    crate::outln!();
    crate::outln!("summary");
    crate::outln!(
        "  digit page: {} once deployed to AWS (`make serve` serves it here: {page_bytes} bytes of HTML)",
        text(&api["page"])
    );
    for p in &pushed {
        let note = if p["bytes_pushed"] == json!(0) {
            "  (layers already in the registry)"
        } else {
            ""
        };
        crate::outln!(
            "  {:8} {}  pushed {} bytes, skipped {}{note}",
            text(&p["function"]),
            text(&p["digest"]),
            p["bytes_pushed"],
            p["bytes_skipped"]
        );
    }
    for r in &released {
        crate::outln!(
            "  {:20} version {} is {} ({}); smoke: {}",
            text(&r["function"]),
            text(&r["version"]),
            text(&r["alias"]),
            text(&r["change"]),
            text(&r["smoke"])
        );
    }
    crate::outln!(
        "  API {}: {}/predict (moto records it; it does not serve it)",
        text(&api["api_id"]),
        text(&api["url"])
    );
    if let Some(rest) = &rest {
        crate::outln!(
            "  REST API {}: {}/predict (on LocalStack)",
            text(&rest["api_id"]),
            text(&rest["url"])
        );
    }
    crate::outln!("  ran: {ran}");
    crate::outln!(
        "  predictions: {right}/{} right, {mean_ms:.1} ms mean round trip",
        req.digits
    );
    crate::outln!(
        "  training: {} in {:.1} s",
        text(&trained.answer["body"]),
        trained.ms / 1000.0
    );
    if let (Some(imported), Some(model)) = (&imported, &req.model) {
        crate::outln!(
            "  imported model {}: {} version {} is {} ({}); smoke: {}; its page: {} bytes",
            model.file_name().map_or("".into(), |n| n.to_string_lossy()),
            text(&imported["function"]),
            text(&imported["version"]),
            text(&imported["alias"]),
            text(&imported["change"]),
            text(&imported["smoke"]),
            imported["page_bytes"]
        );
    }
    match &scored {
        Some(scored) => batch::print_summary(scored),
        None => crate::outln!(
            "  batch: not run (predict's batch event needs the data plane: Docker, and images of this machine's architecture)"
        ),
    }
    crate::outln!(
        "  cost of 1M predictions at that duration, 1024 MB, {}, HTTP API: ${:.2}{}",
        req.arch,
        cost["cost"]["total"].as_f64().unwrap_or(f64::NAN),
        if req.arch != host_arch() {
            format!(
                " (the duration measured under qemu on {}: not Graviton's)",
                host_arch()
            )
        } else {
            String::new()
        }
    );

    if let Some(seed_images) = &req.seed_images {
        seed::bench_seed(req, &deploy, stack, seed_images, &images).await?;
    }
    if let Some(dir) = &req.tune {
        tune(&deploy, stack, dir).await?;
    }
    Ok(())
}

/// The page's answer checked: 200, HTML; its size.
fn check_page(page: &Value, what: &str) -> anyhow::Result<usize> {
    let kind = page["headers"]["content-type"].as_str().unwrap_or_default();
    if page.get("statusCode") != Some(&json!(200)) || !kind.starts_with("text/html") {
        bail!("{what} answered {} {kind}", page["statusCode"]);
    }
    Ok(page
        .get("body")
        .and_then(Value::as_str)
        .map_or(0, |b| b.chars().count()))
}

/// A JSON value as text: strings without their quotes.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The images as built, under bubblewrap, attached to the Runtime API emulator: without Docker
/// (or for the other architecture), memory, timeout and the released version are not emulated.
async fn start_sandboxes(req: &RunRequest, stack: &mut Stack, images: &Path) -> anyhow::Result<()> {
    let how = if req.arch != host_arch() {
        let qemu = if req.arch == "arm64" {
            "qemu-aarch64-static"
        } else {
            "qemu-x86_64-static"
        };
        format!(
            "under bubblewrap with {qemu} ({} on {})",
            req.arch,
            host_arch()
        )
    } else {
        "under bubblewrap (no Docker engine here)".into()
    };
    say(&format!(
        "running the {} images as built, the way Lambda does: read-only root, writable /tmp, uid 993, {how}; \
         memory, timeout and the released version are NOT emulated on this path (the data plane needs Docker)",
        req.arch
    ));
    for (f, name) in NAMES {
        let bundle = stack.state.join(format!("bundle-{f}"));
        let _ = std::fs::remove_dir_all(&bundle);
        let unpacked = tokio::process::Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:latest", images.join(f).display()))
            .arg(&bundle)
            .output()
            .await
            .context("cannot run umoci (make tools installs it)")?;
        if !unpacked.status.success() {
            bail!(
                "umoci unpack of the {f} image failed: {}",
                String::from_utf8_lossy(&unpacked.stderr).trim()
            );
        }
        let config_path = bundle.join("config.json");
        let config: Value = serde_json::from_str(
            &std::fs::read_to_string(&config_path)
                .with_context(|| format!("cannot read {}", config_path.display()))?,
        )
        .with_context(|| format!("{} is not JSON", config_path.display()))?;
        let mut cmd = stack::sandbox(&bundle.join("rootfs"), &req.arch, host_arch())?;
        cmd.env_clear();
        for pair in config["process"]["env"].as_array().into_iter().flatten() {
            if let Some((k, v)) = pair.as_str().and_then(|p| p.split_once('=')) {
                cmd.env(k, v);
            }
        }
        cmd.env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("{}/.rt/{name}", stack.runtime_endpoint()),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024");
        stack.procs.start(&format!("function-{f}"), cmd)?;
    }
    Ok(())
}

/// `deploy tune` of both functions on the data plane: predict with the recorded digit, train
/// with 20,000 samples (seconds of CPU-bound work); charts into `dir`.
async fn tune(deploy: &DeployCli, stack: &Stack, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let rt = stack.runtime_endpoint();
    for (f, memory, invocations, strategy, payload) in [
        ("predict", "128,256,512,1024,1769", "10", "cost", None),
        (
            "train",
            "512,1024,1769,3538",
            "3",
            "speed",
            Some(json!({"epochs": 1, "limit": 20000})),
        ),
    ] {
        let chart = dir
            .join(format!("tune-{f}.svg"))
            .to_string_lossy()
            .into_owned();
        let mut args = vec![
            "tune".to_owned(),
            "--function".into(),
            f.into(),
            "--memory".into(),
            memory.into(),
            "--invocations".into(),
            invocations.into(),
            "--strategy".into(),
            strategy.into(),
            "--chart".into(),
            chart,
            "--invoke-endpoint".into(),
            rt.clone(),
        ];
        if let Some(payload) = payload {
            let path = stack.state.join(format!("tune-{f}.json"));
            std::fs::write(&path, payload.to_string())
                .with_context(|| format!("cannot write {}", path.display()))?;
            args.extend(["--payload".into(), path.to_string_lossy().into_owned()]);
        }
        say(&format!(
            "deploy tune --function {f} (memory {memory} MB, {invocations} invocations each)"
        ));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let report = deploy.output(&args).await?;
        crate::outln!("{}", report.trim_end());
    }
    Ok(())
}
