//! The integration tests' kit, compiled once for every test binary (as a module of each, it
//! was compiled once per binary): where the data is, running the binaries, the emulators and
//! the strict layers in front of them, test images. A test file names it `common`:
//! `use lambda_cnn_test_kit as common;`.

pub mod aws_emulator;
pub mod aws_states;
pub mod call_recorder;
pub mod dataplane;
pub mod emulator;
pub mod events;
pub mod faulty_proxy;
pub mod iam_simulator;
pub mod image_run;
pub mod lambda_view;
pub mod localstack;
pub mod moto;
pub mod registry;
pub mod sign_in;
pub mod strict_lambda;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The project's root (the workspace's top directory): where the fixtures, `.venv` and the
/// binaries' `infra/` are.
pub fn root() -> &'static Path {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        // This crate is crates/test-kit of the workspace.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        root.canonicalize().unwrap_or(root)
    })
}

/// The real MNIST files: `MNIST_DIR`, or `../shared/mnist` beside the project (as in CI).
pub fn mnist_dir() -> PathBuf {
    std::env::var_os("MNIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("../shared/mnist"))
}

pub fn shipped_weights() -> PathBuf {
    crate::root().join(lambda_cnn::SHIPPED_WEIGHTS)
}

/// Runs `lambda-cnn` with `args`, feeding `stdin`, with no MNIST_DIR/MODEL_PATH inherited.
pub fn cli(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(emulator::workspace_binary("lambda-cnn"))
        .args(args)
        .env_remove("MNIST_DIR")
        .env_remove("MODEL_PATH")
        .env("RAYON_NUM_THREADS", "2")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the lambda-cnn binary starts");
    child.stdin.take().unwrap().write_all(stdin).ok();
    child.wait_with_output().unwrap()
}

/// The imported-model fixtures (tests/fixtures/models, made by its make.py).
pub fn model_fixtures() -> PathBuf {
    crate::root().join("tests/fixtures/models")
}

/// The RGB fixture's class labels, as its expect file's import flags name them.
pub const RGB_LABELS: [&str; 5] = ["circle", "square", "triangle", "star", "heart"];

/// A PyTorch user's RGB model (24×24×3, ImageNet mean/std, [`RGB_LABELS`]), exported to ONNX
/// by torch and imported with `lambda-cnn import` and the fixture's own flags into `dir`.
pub fn imported_rgb_model(dir: &Path) -> PathBuf {
    let expect: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model_fixtures().join("rgb-torch.expect.json")).unwrap(),
    )
    .unwrap();
    let out = dir.join("shapes.safetensors");
    let source = model_fixtures().join("rgb-torch.onnx");
    let mut args = vec![
        "import",
        source.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(
        expect["import_flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap()),
    );
    let o = cli(&args, b"");
    assert!(o.status.success(), "{}", stderr(&o));
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the `deploy` binary (crates/deploy, built by `make build`) with `args`.
pub fn deploy(args: &[&str]) -> Output {
    deploy_with_env(args, &[])
}

/// `deploy` with extra environment (an emulator's endpoint and credentials).
pub fn deploy_with_env(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(emulator::workspace_binary("deploy"));
    cmd.args(args)
        .current_dir(crate::root())
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("DEPLOY_REGISTRY")
        .env_remove("DEPLOY_INVOKE_ENDPOINT")
        .env("MNIST_DIR", mnist_dir())
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the deploy binary starts")
}

/// `deploy` with none of this process's `AWS_*` variables, only `env`: a sign-in test sees
/// exactly the configuration it wrote.
pub fn deploy_with_clean_aws_env(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(emulator::workspace_binary("deploy"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .current_dir(crate::root())
        .env_remove("DEPLOY_REGISTRY")
        .env_remove("DEPLOY_INVOKE_ENDPOINT")
        .env("MNIST_DIR", mnist_dir())
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::null());
    cmd.output().expect("the deploy binary starts")
}

/// A program `make test` installs from Debian's packages; fails the test, saying how to get
/// it, when it is missing.
pub fn system_tool(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{name} not found: run `make test` (it installs the Debian package {package}), or `apt-get install {package}`")
    })
}

/// The last line of stdout, parsed as the JSON object `--json` promises.
pub fn last_json(out: &Output) -> serde_json::Value {
    let text = stdout(out);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line {line:?} is not JSON: {e}"))
}

/// Asserts the CLI failed the way a user should see it: non-zero exit, one line on stderr
/// starting with "error:", no panic.
pub fn assert_clean_failure(out: &Output, expect_in_message: &str) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "panic: {err}"
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(
        err.contains(expect_in_message),
        "{expect_in_message:?} not in: {err}"
    );
}

/// The real MNIST test set, read and checked once per test binary.
pub fn mnist_test() -> &'static lambda_cnn::data::Split {
    static TEST: std::sync::OnceLock<lambda_cnn::data::Split> = std::sync::OnceLock::new();
    TEST.get_or_init(|| {
        lambda_cnn::data::load_split(&mnist_dir(), lambda_cnn::data::SplitKind::Test)
            .expect("the MNIST test set loads")
    })
}

/// Test digit `i` of the real test set as a 28×28 grey PNG, with its label.
pub fn test_digit_png(i: usize) -> (Vec<u8>, u8) {
    let test = mnist_test();
    let img = image::GrayImage::from_raw(28, 28, test.image(i).to_vec()).unwrap();
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    (png, test.labels[i])
}

/// A valid 8×8 JPEG whose header declares `side` × `side` pixels: a lying header, tiny on
/// the wire, that a decoder must refuse from its declared size.
pub fn jpeg_declaring(side: u16) -> Vec<u8> {
    let mut jpeg = Vec::new();
    image::DynamicImage::from(image::GrayImage::from_pixel(8, 8, image::Luma([128])))
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    jpeg[sof + 5..sof + 7].copy_from_slice(&side.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&side.to_be_bytes());
    let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let len = u16::from_be_bytes([jpeg[sos + 2], jpeg[sos + 3]]) as usize;
    jpeg.truncate(sos + 2 + len);
    jpeg.extend([0xFF, 0xD9]);
    jpeg
}

/// The cross-built arm64 function `name`, beside this test binary's target directory; `None`
/// (the test says SKIPPED) only where `LAMBDA_CNN_REQUIRE` does not name `arm64`.
pub fn arm64_function(name: &str) -> Option<PathBuf> {
    let native = emulator::workspace_binary(name);
    // target/release/<name> → target/aarch64-unknown-linux-gnu/release/<name>
    let target = native.parent().and_then(Path::parent).unwrap();
    let path = target.join("aarch64-unknown-linux-gnu/release").join(name);
    if path.is_file() {
        return Some(path);
    }
    lambda_cnn::simd::skip(
        "arm64",
        &format!(
            "no arm64 {name} at {} (`make build-arm64` cross-builds it)",
            path.display()
        ),
    );
    None
}
