//! `make serve`: the digit page on this machine, until Ctrl-C.
//!
//! Starts the Lambda Runtime API emulator (`cargo lambda watch --only-lambda-apis`, whose front
//! door turns browser requests into Function URL events), attaches the release-built predict
//! function to it with the shipped weights, waits until it answers, and prints the address to
//! open. Nothing else is needed: no AWS account, no Docker.

use crate::procs::{self, Procs};
use anyhow::{bail, Context as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::process::Command;

const FUNCTION: &str = "predict";

pub struct ServeRequest {
    /// The release-built predict binary.
    pub predict: PathBuf,
    /// The cargo-lambda binary.
    pub cargo_lambda: PathBuf,
    pub weights: PathBuf,
    /// Where to serve; a free one when taken.
    pub port: u16,
    /// The project's root: predict's working directory.
    pub root: PathBuf,
}

pub async fn serve(req: ServeRequest) -> anyhow::Result<()> {
    for (path, what) in [
        (&req.predict, "the predict binary: run `make build`"),
        (&req.cargo_lambda, "cargo-lambda: run `make tools`"),
        (&req.weights, "the weights: `make train` writes them"),
    ] {
        if !path.exists() {
            bail!("{} not found ({what})", path.display());
        }
    }
    let port = if procs::port_is_free(req.port) {
        req.port
    } else {
        let free = procs::free_port()?;
        crate::outln!("port {} is taken; using {free}", req.port);
        free
    };
    let work = std::env::temp_dir().join(format!("lambda-cnn-serve-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let mut procs = Procs::new(&work);
    let interrupted = procs::interrupted()?;
    let outcome = tokio::select! {
        outcome = run(&req, port, &work, &mut procs) => outcome,
        () = interrupted => Ok(()),
    };
    procs.stop_all(Duration::from_secs(5)).await;
    crate::outln!("stopped");
    outcome
}

async fn run(
    req: &ServeRequest,
    port: u16,
    work: &std::path::Path,
    procs: &mut Procs,
) -> anyhow::Result<()> {
    crate::outln!(
        "starting the Runtime API emulator on 127.0.0.1:{port} and the predict function…"
    );
    let emulator =
        procs::runtime_api_command(&req.cargo_lambda, port, &work.join("stub"), &[FUNCTION])?;
    procs.start("cargo-lambda-watch", emulator)?;
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some((name, status, log)) = procs.exited() {
            bail!("{name} exited ({status}); its log: {}", log.display());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "cargo lambda watch did not open 127.0.0.1:{port} within 60 s; its log: {}",
                work.join("cargo-lambda-watch.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut predict = Command::new(&req.predict);
    predict
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://127.0.0.1:{port}/.rt/{FUNCTION}"),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", FUNCTION)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env("MODEL_PATH", &req.weights)
        .env_remove("MODEL_S3_URI")
        .env_remove("MODEL_BUCKET")
        .current_dir(&req.root);
    procs.start(FUNCTION, predict)?;
    let base = format!("http://127.0.0.1:{port}/lambda-url/{FUNCTION}/");
    wait_ok(&format!("{base}health"), procs, Duration::from_secs(120)).await?;
    crate::outln!(
        "\nthe digit page: {base}\n(draw a digit; Ctrl-C stops; logs in {})",
        work.display()
    );
    // Until Ctrl-C (the caller's), or until one of them exits.
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some((name, status, log)) = procs.exited() {
            bail!("{name} exited ({status}); its log: {}", log.display());
        }
    }
}

/// Waits until `url` answers 200, or a process exits, or `timeout` passes.
async fn wait_ok(url: &str, procs: &mut Procs, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Some((name, status, log)) = procs.exited() {
            bail!("{name} exited ({status}); its log: {}", log.display());
        }
        let answered = crate::http::request(
            hyper::Method::GET,
            url,
            &[],
            bytes::Bytes::new(),
            Duration::from_secs(2),
        )
        .await;
        if answered.is_ok_and(|a| a.status == 200) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("{url} did not answer 200 within {} s", timeout.as_secs())
}
